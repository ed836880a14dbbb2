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

/// declare-argtypes: the real number of arguments, each as ctypes passed it today (a 4-byte one
/// as `ctypes.c_int`, from a Python int) when the sizes tell, with the remark that the C
/// prototype's types are what to write.
fn declare_example(rec: &Recommendation) -> String {
    let f = &rec.function;
    let k = evidence_u64(rec, "arg_count").unwrap_or(0) as usize;
    let ints = evidence_u64(rec, "int_sized_args").map(|n| n as usize);
    let wide = evidence_u64(rec, "pointer_sized_args").map(|n| n as usize);
    let placeholders = || (1..=k).map(|i| format!("T{i}")).collect::<Vec<_>>();
    let (types, note) = match (ints, wide) {
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
            None if evidence_u64(rec, "buffer_bytes_per_call").unwrap_or(0) > 0 => format!(
                "# before: one call per chunk of data\n\
                 for chunk in chunks:\n    lib.{f}(chunk_buffer(chunk), len(chunk), ...)\n\
                 # after: the chunks in one buffer, one call\n\
                 whole = array.array(code, itertools.chain.from_iterable(chunks))  # or keep them there\n\
                 lib.{f}((T * len(whole)).from_buffer(whole), len(whole), ...)"
            ),
            Some(bulk) => format!(
                "# before: one call per element\n\
                 for i, x in enumerate(xs):\n    out[i] = lib.{f}(x)\n\
                 # after: one call over all elements (xs, out: array.array or numpy, kept as buffers)\n\
                 n = len(xs)\n\
                 lib.{bulk}((T * n).from_buffer(xs), (T * n).from_buffer(out), n)  # check {bulk}'s prototype"
            ),
            None => format!(
                "/* C, next to {f}: one entry point over a whole array */\n\
                 void {f}_many(const T *in, R *out, size_t n) {{\n    \
                 for (size_t i = 0; i < n; i++) out[i] = {f}(in[i]);\n}}\n\
                 # Python: one call instead of a loop\n\
                 lib.{f}_many((T * n).from_buffer(xs), (R * n).from_buffer(out), n)"
            ),
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
}
