//! Short code examples of the change each recommendation asks for, for the text and HTML reports.
//!
//! The profile knows C names and sizes, not the program's variable names or C types, so examples use
//! the real function names and placeholders (`xs`, `T`) for the rest: they show the shape of the change.

use super::{AdviceKind, Recommendation};

fn evidence_str<'a>(rec: &'a Recommendation, key: &str) -> Option<&'a str> {
    rec.evidence.get(key).and_then(|v| v.as_str())
}

fn evidence_u64(rec: &Recommendation, key: &str) -> Option<u64> {
    rec.evidence.get(key).and_then(|v| v.as_u64())
}

/// The call's arguments as an example writes them, from the evidence's `arg_count` (1 when
/// unknown): in Python `x, a2, a3`, and in C the parameters `T2 a2, T3 a3` and arguments `a2, a3`
/// after the element.
fn arity_parts(rec: &Recommendation) -> (String, Vec<String>, Vec<String>) {
    let k = evidence_u64(rec, "arg_count").unwrap_or(1).max(1) as usize;
    let names: Vec<String> = (1..=k)
        .map(|i| if i == 1 { "x".into() } else { format!("a{i}") })
        .collect();
    let params = (1..=k).map(|i| format!("T{i} {}", names[i - 1])).collect();
    (names.join(", "), params, names)
}

/// Whether the calls return a value (evidence `result_bytes_per_call`; assumed when unknown).
fn returns_value(rec: &Recommendation) -> bool {
    evidence_u64(rec, "result_bytes_per_call").is_none_or(|b| b > 0)
}

/// declare-argtypes: the real number of arguments, each as ctypes passed it today (a 4-byte one
/// as `ctypes.c_int`, from a Python int) when the sizes tell, with the remark that the C
/// prototype's types are what to write.
fn declare_example(rec: &Recommendation) -> String {
    let f = &rec.function;
    if rec.evidence.get("truncated_pointer").is_some() {
        return format!(
            "lib.{f}.restype = ctypes.c_void_p  # a pointer: the default c_int cuts it to 32 bits"
        );
    }
    let k = evidence_u64(rec, "arg_count").unwrap_or(0) as usize;
    let ints = evidence_u64(rec, "int_sized_args").map(|n| n as usize);
    let wide = evidence_u64(rec, "pointer_sized_args").map(|n| n as usize);
    let placeholders = || (1..=k).map(|i| format!("T{i}")).collect::<Vec<_>>();
    let suggested: Vec<String> = rec
        .evidence
        .get("suggested_argtypes")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|t| Some(t.as_str()?.to_string()))
                .collect()
        })
        .unwrap_or_default();
    let guessed: Vec<u64> = rec
        .evidence
        .get("guessed_argtypes")
        .and_then(|v| v.as_array())
        .map(|a| a.iter().filter_map(|i| i.as_u64()).collect())
        .unwrap_or_default();
    let (types, note) = match (ints, wide) {
        _ if !suggested.is_empty() => {
            let which: Vec<String> = guessed.iter().map(|i| (i + 1).to_string()).collect();
            let note = if which.is_empty() {
                "the types the program passed".to_string()
            } else {
                format!(
                    "the types seen; argument{} {} guessed (a Python int: c_int is what ctypes passed) — write the C prototype's type",
                    if which.len() == 1 { "" } else { "s" },
                    which.join(", ")
                )
            };
            (suggested, note)
        }
        (Some(n), Some(0)) => (
            vec!["ctypes.c_int".to_string(); n],
            "what ctypes passed: 4-byte ints; write each C parameter's type".to_string(),
        ),
        (Some(n), Some(w)) => (
            placeholders(),
            format!("the {k} C parameter types in order; today {n} crossed as 4-byte ints, {w} as 8 bytes"),
        ),
        _ => (placeholders(), format!("the {k} C parameter types, in order")),
    };
    let mut out = format!("lib.{f}.argtypes = [{}]  # {note}", types.join(", "));
    if evidence_u64(rec, "undeclared_restype_calls").unwrap_or(0) > 0 {
        out.push_str(&format!(
            "\nlib.{f}.restype = ctypes.c_int  # the default today: write the C return type"
        ));
    }
    out
}

/// A few lines of Python (or C) showing the change, or `None` where no example fits.
pub fn code_example(rec: &Recommendation) -> Option<String> {
    let f = &rec.function;
    let text = match rec.kind {
        AdviceKind::Batch => match evidence_str(rec, "bulk_sibling") {
            None if evidence_u64(rec, "buffer_bytes_per_call").unwrap_or(0) >= 64 => format!(
                "# before: one call per chunk of data\n\
                 for chunk in chunks:\n    lib.{f}(chunk_buffer(chunk), len(chunk), ...)\n\
                 # after: the chunks in one buffer, one call\n\
                 whole = array.array(code, itertools.chain.from_iterable(chunks))  # or keep them there\n\
                 lib.{f}((T * len(whole)).from_buffer(whole), len(whole), ...)"
            ),
            Some(bulk) => {
                let (py_args, _, _) = arity_parts(rec);
                let store = if returns_value(rec) { "out[i] = " } else { "" };
                format!(
                    "# before: one call per element\n\
                     for i, x in enumerate(xs):\n    {store}lib.{f}({py_args})\n\
                     # after: one call over all elements (xs, out: array.array or numpy, kept as buffers)\n\
                     n = len(xs)\n\
                     lib.{bulk}((T * n).from_buffer(xs), (T * n).from_buffer(out), n)  # check {bulk}'s prototype"
                )
            }
            None => {
                let (_, c_params, c_args) = arity_parts(rec);
                let (out_param, store, out_arg) = if returns_value(rec) {
                    ("R *out, ", "out[i] = ", "(R * n).from_buffer(out), ")
                } else {
                    ("", "", "")
                };
                let rest: String = c_args.iter().skip(1).map(|a| format!(", {a}")).collect();
                let rest_params: String = c_params.iter().skip(1).map(|p| format!(", {p}")).collect();
                format!(
                    "/* C, next to {f}: one entry point over a whole array */\n\
                     void {f}_many(const T1 *in, {out_param}size_t n{rest_params}) {{\n    \
                     for (size_t i = 0; i < n; i++) {store}{f}(in[i]{rest});\n}}\n\
                     # Python: one call instead of a loop\n\
                     lib.{f}_many((T1 * n).from_buffer(xs), {out_arg}n{rest})"
                )
            }
        },
        AdviceKind::ReuseBuffer => {
            let size = evidence_u64(rec, "bytes_per_buffer").filter(|&b| b > 0).unwrap_or(4096);
            format!(
                "# before: a new buffer on every call\n\
                 for item in items:\n    buf = ctypes.create_string_buffer({size})\n    lib.{f}(buf, ...)\n\
                 # after: built once, reused\n\
                 buf = ctypes.create_string_buffer({size})\n\
                 for item in items:\n    lib.{f}(buf, ...)"
            )
        }
        AdviceKind::ZeroCopy => format!(
            "# before: the values are converted element by element on every call\n\
             lib.{f}((ctypes.c_double * len(values))(*values), len(values))\n\
             # after: keep them in an array.array (updated in place) and share its memory\n\
             values = array.array('d', values)                          # once\n\
             view = (ctypes.c_double * len(values)).from_buffer(values)   # once, while values is not resized\n\
             lib.{f}(view, len(values))\n\
             # numpy: lib.{f}(a.ctypes.data_as(ctypes.POINTER(ctypes.c_double)), a.size)"
        ),
        AdviceKind::DeclareArgtypes => declare_example(rec),
        AdviceKind::UsePydll => format!(
            "# keep the GIL across this short call: the same function from a PyDLL, with the same types\n\
             gil_lib = ctypes.PyDLL(lib._name)\n\
             {f} = gil_lib.{f}\n\
             {f}.argtypes, {f}.restype = lib.{f}.argtypes, lib.{f}.restype\n\
             # (or load the whole library with ctypes.PyDLL if none of its functions block or call back into Python)"
        ),
        AdviceKind::GilContention => return None,
        AdviceKind::Leak => {
            let release = evidence_str(rec, "release_function")?;
            format!(
                "obj = lib.{f}(...)\n\
                 try:\n    ...\n\
                 finally:\n    lib.{release}(obj)\n\
                 # or tie it to the owning Python object: weakref.finalize(owner, lib.{release}, obj)"
            )
        }
    };
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::*;

    #[test]
    fn batch_example_names_the_sibling_or_sketches_one() {
        let p = loop_profile(200_000, 300, 30);
        let o = AdviceOptions::default().with_exported_symbols(LIB, vec!["fx_scale_many".into()]);
        let with = recommend(&p, &o)[0].example().unwrap();
        assert!(with.contains("lib.fx_scale_many("), "{with}");
        let without = recommend(&p, &AdviceOptions::default())[0]
            .example()
            .unwrap();
        assert!(without.contains("void fx_scale_many("), "{without}");
    }

    #[test]
    fn examples_use_the_real_arity() {
        // fx_scale of testutil: two arguments, no result recorded.
        let p = loop_profile(200_000, 300, 30);
        let sketch = recommend(&p, &AdviceOptions::default())[0]
            .example()
            .unwrap();
        assert!(
            sketch.contains("void fx_scale_many(const T1 *in, size_t n, T2 a2) {"),
            "{sketch}"
        );
        assert!(sketch.contains("fx_scale(in[i], a2);"), "{sketch}");
        assert!(
            sketch.contains("lib.fx_scale_many((T1 * n).from_buffer(xs), n, a2)"),
            "{sketch}"
        );
        // With a result of 8 bytes: stored.
        let mut p = loop_profile(200_000, 300, 30);
        p.functions[0].ret_bytes = 8 * 200_000;
        let o = AdviceOptions::default().with_exported_symbols(LIB, vec!["fx_scale_many".into()]);
        let with = recommend(&p, &o)
            .into_iter()
            .find(|r| r.kind == AdviceKind::Batch)
            .unwrap()
            .example()
            .unwrap();
        assert!(with.contains("out[i] = lib.fx_scale(x, a2)"), "{with}");
        // declare-argtypes: one type per argument the calls had.
        let mut f = function(
            "fx_mul",
            vec![site(
                "app.py",
                3,
                5_000,
                PerCall {
                    native: 100,
                    marshal_in: 300,
                    arg_bytes: 12,
                    ..PerCall::default()
                },
            )],
        );
        f.arg_count = 3;
        f.undeclared_argtypes_calls = 5_000;
        let r = of_kind(
            &profile(vec![f], 1_000_000_000),
            AdviceKind::DeclareArgtypes,
        );
        let ex = r[0].example().unwrap();
        assert_eq!(
            ex,
            "lib.fx_mul.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]  \
             # what ctypes passed: 4-byte ints; write each C parameter's type"
        );
    }
}
