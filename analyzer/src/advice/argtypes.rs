//! declare-argtypes: ctypes functions called without `argtypes`.
//!
//! Without `argtypes`, ctypes converts each argument by its Python type, on every call (see
//! [`super::arg_evidence`]): a Python int becomes a C `int` (4 bytes; a larger value is silently
//! cut to 32 bits), bytes and str become pointers, None a NULL pointer, a ctypes object passes as
//! itself. That is right where the C parameter is an `int`; a `double` parameter receives garbage,
//! and a 64-bit integer or a pointer only the values that fit in 32 bits.
//!
//! The agent records, per site, the Python type of each argument of such calls and whether an int
//! among them did not fit 32 bits (site records' `arg_types`, `truncated_int_args`). The advice
//! stands on that: a function gets it when a Python int went through the guessing — `low`
//! confidence, since `c_int` is right for an `int` parameter and only the prototype tells — and
//! `high` when an int was cut (a bug whatever the prototype). Bytes, str, None and ctypes objects
//! are converted as the program meant them: no advice for those alone. The suggested `argtypes`
//! line uses the types seen, and says which entries are guesses. Profiles without the per-site
//! evidence fall back to the argument sizes (a 4-byte argument was a Python int, or a 4-byte ctypes
//! object the sizes cannot tell apart). No declared sibling is needed.
//!
//! The time side is never a made-up saving: declaring argtypes usually makes each call slower (one
//! `from_param` per argument; DESIGN.md's measured table). Where the change was timed on this
//! interpreter (`declare-argtypes` in the profile's measured changes) the advice states the
//! measured change per call, with its sign; a saving is claimed only if it was measured.
//!
//! A result read through the default `c_int` restype is evidence of nothing by itself (most
//! functions that are left so return an int) and is only reported beside the arguments, with what
//! it does to a pointer or 64-bit result (cut to 32 bits). A `restype` set explicitly — to `c_int`
//! too — is a declaration (the agent reads the function object's own field).

use std::collections::BTreeMap;

use ffiprof_profile::FunctionRecord;
use serde::Serialize;
use serde_json::json;

use super::arg_evidence::{self, FunctionArgs, SiteArgs};
use super::{round1, AdviceKind, Candidate, Confidence, Context, Estimate};
use crate::cost_model::Place;
use crate::measure;
use crate::text::fmt_ns;

#[derive(Debug, Serialize)]
struct ArgtypesEvidence {
    calls: u64,
    python_calls: u64,
    undeclared_argtypes_calls: u64,
    /// Calls whose result was read through the default `c_int` restype.
    undeclared_restype_calls: u64,
    arg_count: u32,
    arg_bytes_per_call: f64,
    /// Arguments that crossed as 4-byte C ints: Python ints (by the per-site evidence), or by
    /// their sizes when the profile has none.
    int_sized_args: u32,
    /// The other arguments (pointers, ctypes objects).
    pointer_sized_args: u32,
    /// Per argument, the Python types ctypes' guessing was given (over every site; agent's
    /// names, alternatives joined by `|`); empty without per-site evidence.
    arg_types: Vec<String>,
    /// The `argtypes` line's entries, from the types seen.
    suggested_argtypes: Vec<String>,
    /// The positions (from 0) whose suggested entry is a guess (a Python int: the prototype's
    /// type decides).
    guessed_argtypes: Vec<u32>,
    /// Positions where a Python int that does not fit 32 bits was passed (and cut).
    truncated_int_args: Vec<u32>,
    /// Some site read the result through the default `c_int` restype.
    restype_default: bool,
    /// Each site's own evidence.
    sites: Vec<SiteArgs>,
    /// The measured change per call of declaring argtypes, as a saving: negative when declaring
    /// costs time; null when not timed.
    declare_saving_per_call_ns: Option<f64>,
    /// The library's other functions called the same way (int-sized arguments, no argtypes):
    /// one recommendation per library, about its most called one.
    other_functions: Vec<OtherFunction>,
}

#[derive(Debug, Serialize)]
struct OtherFunction {
    function: String,
    undeclared_argtypes_calls: u64,
    arg_count: u32,
    int_sized_args: u32,
}

/// What is known of a function's guessed arguments: the codes its change is timed with (`i` per
/// int, `P` per other), how many were ints, and the per-site evidence when there is some.
struct Guessed {
    codes: Option<String>,
    ints: u32,
    arity: u32,
    evidence: Option<FunctionArgs>,
}

impl Guessed {
    /// Whether a Python int passed to the function was cut to 32 bits.
    fn cuts_ints(&self) -> bool {
        self.evidence
            .as_ref()
            .is_some_and(|e| !e.truncated().is_empty())
    }
}

/// A function called without argtypes that passed Python ints (by the per-site evidence; by the
/// argument sizes, every call the same, when the profile has none).
fn int_sized_calls(f: &FunctionRecord) -> Option<Guessed> {
    if f.python_calls == 0 || f.undeclared_argtypes_calls == 0 {
        return None;
    }
    if let Some(e) = arg_evidence::of_function(f) {
        let ints = e.python_ints();
        return (ints > 0).then(|| Guessed {
            codes: e.codes(),
            ints,
            arity: e.positions.len() as u32,
            evidence: Some(e),
        });
    }
    if f.arg_count == 0 {
        return None;
    }
    let place = Place {
        function: f,
        site: None,
    };
    // Sizes that vary between calls, or of other kinds (a c_ubyte, a struct), say nothing
    // about Python ints.
    let codes = measure::guessed_args(&place)?;
    let narrow = codes.matches('i').count() as u32;
    (narrow > 0).then_some(Guessed {
        codes: Some(codes),
        ints: narrow,
        arity: f.arg_count,
        evidence: None,
    })
}

/// The codes the declare-argtypes change is timed with for `f`, if it gets the advice.
pub(crate) fn timing_codes(f: &FunctionRecord) -> Option<String> {
    int_sized_calls(f)?.codes
}

/// "argument 1", "arguments 1 and 3", "arguments 1, 2 and 4" (positions from 0).
fn arguments(positions: &[u32]) -> String {
    let n: Vec<String> = positions.iter().map(|i| (i + 1).to_string()).collect();
    match n.len() {
        0 => String::new(),
        1 => format!("argument {}", n[0]),
        _ => format!(
            "arguments {} and {}",
            n[..n.len() - 1].join(", "),
            n[n.len() - 1]
        ),
    }
}

/// What ctypes did with each kind of type seen, for the text.
fn described(t: &str) -> String {
    match t {
        "int" => "a Python int (a 4-byte C int)".into(),
        "bool" => "a bool (a 4-byte C int)".into(),
        "float" => "a Python float (a C double: fine)".into(),
        "bytes" => "bytes (a char *: fine)".into(),
        "str" => "a str (a wchar_t *: fine)".into(),
        "None" => "None (a NULL pointer)".into(),
        _ => match (t.strip_prefix("ctypes:"), t.strip_prefix("byref:")) {
            (Some(ty), _) => format!("a {ty} instance (passed as itself)"),
            (_, Some(ty)) => format!("byref() of a {ty} (its address)"),
            _ => format!("a {t} (through its _as_parameter_)"),
        },
    }
}

/// The evidence part of the text: what each argument was, where ints were cut, the line to
/// write, the restype.
fn evidence_text(f: &FunctionRecord, e: &FunctionArgs) -> String {
    let each: Vec<String> = e
        .positions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let kinds: Vec<String> = p.types.iter().map(|t| described(t)).collect();
            format!("argument {} was {}", i + 1, kinds.join(" or "))
        })
        .collect();
    let sites = e.sites.len();
    let looked_at: u64 = e.sites.iter().map(|s| s.arg_types_calls).sum();
    let mut out = format!(
        " Seen at {} site{} ({} call{} looked at): {}.",
        sites,
        if sites == 1 { "" } else { "s" },
        looked_at,
        if looked_at == 1 { "" } else { "s" },
        each.join("; ")
    );
    let truncated = e.truncated();
    if !truncated.is_empty() {
        let at: Vec<String> = e
            .sites
            .iter()
            .filter(|s| !s.truncated_int_args.is_empty())
            .map(|s| format!("{}:{}", s.file, s.line))
            .collect();
        out.push_str(&format!(
            " At {} a Python int that does not fit in 32 bits was passed as {}: ctypes cut it to a 32-bit C int \
             and its high bits were lost — a bug whatever the C prototype says.",
            at.join(", "),
            arguments(&truncated)
        ));
    }
    let ints: Vec<u32> = (0..e.positions.len() as u32)
        .filter(|&i| e.positions[i as usize].python_int)
        .collect();
    out.push_str(&format!(
        " A Python int is right where the C parameter is an int; a double parameter receives garbage, and a \
         64-bit integer or a pointer only the values that fit in 32 bits. Declare argtypes once, after loading \
         the library: lib.{}.argtypes = [{}] — c_int for {} is a guess from the Python ints passed: write the \
         prototype's type there (c_double, c_int64, c_size_t, c_void_p, ...).",
        f.function,
        e.positions
            .iter()
            .map(|p| p.suggested.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        arguments(&ints)
    ));
    out
}

pub(super) fn rule(ctx: &Context<'_>) -> Vec<Candidate> {
    // One recommendation per library, about its most called such function.
    let mut by_library: BTreeMap<&str, Vec<(&FunctionRecord, Guessed)>> = BTreeMap::new();
    for f in &ctx.profile.functions {
        if let Some(g) = int_sized_calls(f) {
            by_library
                .entry(f.library.as_str())
                .or_default()
                .push((f, g));
        }
    }
    let mut groups: Vec<Vec<(&FunctionRecord, Guessed)>> = Vec::new();
    for (_, mut group) in by_library {
        group.sort_by(|a, b| {
            b.0.undeclared_argtypes_calls
                .cmp(&a.0.undeclared_argtypes_calls)
                .then(a.0.function.cmp(&b.0.function))
        });
        // A function whose ints were cut is a bug of its own: its own recommendation.
        let (cut, rest): (Vec<_>, Vec<_>) = group.into_iter().partition(|(_, g)| g.cuts_ints());
        groups.extend(cut.into_iter().map(|one| vec![one]));
        if !rest.is_empty() {
            groups.push(rest);
        }
    }
    let mut out = Vec::new();
    for group in groups {
        let (f, g) = &group[0];
        let f = *f;
        let (narrow, k) = (g.ints, g.arity);
        let timed = g
            .codes
            .as_deref()
            .and_then(|c| measure::timed(ctx.profile, measure::DECLARE_ARGTYPES, c));
        let (saving, estimate) = match timed {
            Some(t) => (
                ((t.saving_ns.max(0.0)) * f.undeclared_argtypes_calls as f64).round() as u64,
                Estimate::measured(t.saving_ns, t.spread_ns),
            ),
            None => (0, Estimate::modeled(0.0)),
        };
        let mut suggestion = match &g.evidence {
            Some(e) => format!(
                "{} was called {} times without argtypes, so ctypes converted each argument by its Python type.{}",
                f.function,
                f.undeclared_argtypes_calls,
                evidence_text(f, e)
            ),
            None => {
                let which = match narrow {
                    n if n == k && k == 1 => "its argument crossed".to_string(),
                    n if n == k => format!("all {k} of its arguments crossed"),
                    n => format!("{n} of its {k} arguments crossed"),
                };
                format!(
                    "{} was called {} times without argtypes, so ctypes converted each argument by its Python type: \
                     {which} as a 4-byte C int, which is what it makes of a Python int. That is right where the C \
                     parameter is an int; a double parameter receives garbage, and a 64-bit integer or a pointer only \
                     the values that fit in 32 bits. Check the C prototype and declare argtypes with its types, once, \
                     after loading the library: ctypes then converts (or refuses) each argument.",
                    f.function, f.undeclared_argtypes_calls,
                )
            }
        };
        if f.undeclared_restype_calls > 0 {
            suggestion.push_str(
                " Its result is read through the default c_int restype: right if it returns an int; a pointer or \
                 a 64-bit result comes back cut to 32 bits — declare restype with the C return type if it is one.",
            );
        }
        let others = &group[1..];
        if !others.is_empty() {
            let named: Vec<String> = others
                .iter()
                .take(5)
                .map(|(g, _)| format!("{} ({} calls)", g.function, g.undeclared_argtypes_calls))
                .collect();
            let more = others.len().saturating_sub(named.len());
            suggestion.push_str(&format!(
                " {} other function{} of {} {} called the same way: {}{}.",
                others.len(),
                if others.len() == 1 { "" } else { "s" },
                f.library_name(),
                if others.len() == 1 { "was" } else { "were" },
                named.join(", "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            ));
        }
        suggestion.push_str(&match timed {
            Some(t) if t.saving_ns < 0.0 => format!(
                " This is for correctness, not speed: declaring makes each call ~{} slower on this interpreter \
                 (measured, ±{}).",
                fmt_ns((-t.saving_ns).round() as u64),
                fmt_ns(t.spread_ns.round() as u64)
            ),
            Some(t) => format!(
                " Declaring also makes each call ~{} faster on this interpreter (measured, ±{}).",
                fmt_ns(t.saving_ns.round() as u64),
                fmt_ns(t.spread_ns.round() as u64)
            ),
            None => " This is for correctness, not speed: declaring usually makes each call slower (one \
                      from_param per argument)."
                .to_string(),
        });
        let e = g.evidence.as_ref();
        let evidence = ArgtypesEvidence {
            calls: f.calls,
            python_calls: f.python_calls,
            undeclared_argtypes_calls: f.undeclared_argtypes_calls,
            undeclared_restype_calls: f.undeclared_restype_calls,
            arg_count: k,
            arg_bytes_per_call: round1(crate::cost_model::per(f.arg_bytes, f.calls)),
            int_sized_args: narrow,
            pointer_sized_args: k - narrow,
            arg_types: e.map_or_else(Vec::new, |e| {
                e.positions.iter().map(|p| p.types.join("|")).collect()
            }),
            suggested_argtypes: e.map_or_else(Vec::new, |e| {
                e.positions.iter().map(|p| p.suggested.clone()).collect()
            }),
            guessed_argtypes: e.map_or_else(Vec::new, |e| {
                (0..e.positions.len() as u32)
                    .filter(|&i| e.positions[i as usize].guessed)
                    .collect()
            }),
            truncated_int_args: e.map_or_else(Vec::new, FunctionArgs::truncated),
            restype_default: e.is_some_and(|e| e.restype_default) || f.undeclared_restype_calls > 0,
            sites: e.map_or_else(Vec::new, |e| e.sites.clone()),
            declare_saving_per_call_ns: timed.map(|t| round1(t.saving_ns)),
            other_functions: others
                .iter()
                .map(|(g, n)| OtherFunction {
                    function: g.function.clone(),
                    undeclared_argtypes_calls: g.undeclared_argtypes_calls,
                    arg_count: n.arity,
                    int_sized_args: n.ints,
                })
                .collect(),
        };
        let confidence = if g.cuts_ints() {
            Confidence::High
        } else {
            Confidence::Low
        };
        let place = Place {
            function: f,
            site: None,
        };
        let rec = ctx.recommendation(
            AdviceKind::DeclareArgtypes,
            place,
            saving,
            estimate,
            confidence,
            json!(evidence),
            suggestion,
        );
        out.push(Candidate {
            rec,
            correctness: true,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::*;
    use crate::measure;
    use ffiprof_profile::{ChangeMeasurement, MeasuredChanges};
    use serde_json::json;

    fn argtypes_recs(p: &Profile) -> Vec<Recommendation> {
        of_kind(p, AdviceKind::DeclareArgtypes)
    }

    /// `calls` calls of a function of two arguments of `arg_bytes` bytes in all, no argtypes and
    /// the default restype.
    fn undeclared(name: &str, arg_bytes: u64, calls: u64) -> FunctionRecord {
        let c = PerCall {
            native: 500,
            marshal_in: 300,
            marshal_out: 100,
            arg_bytes,
            ..PerCall::default()
        };
        let mut f = function(name, vec![site("app.py", 3, calls, c)]);
        f.ret_bytes = 4 * calls;
        f.undeclared_argtypes_calls = calls;
        f.undeclared_restype_calls = calls;
        f
    }

    fn measured(change: &str, shape: &str, saving: f64, spread: f64) -> MeasuredChanges {
        MeasuredChanges {
            executable: "/usr/bin/python3.11".into(),
            measurements: vec![ChangeMeasurement {
                change: change.into(),
                shape: shape.into(),
                before_ns: 130.0,
                after_ns: 130.0 - saving,
                saving_ns: saving,
                spread_ns: spread,
                rounds: 7,
                iterations: 10_000,
                cached: false,
                own_ns: None,
            }],
            ..MeasuredChanges::default()
        }
    }

    #[test]
    fn python_ints_without_argtypes_are_advised_without_a_declared_sibling() {
        // fx_mul(int-sized, int-sized): nothing else in the profile to compare with.
        let p = profile(vec![undeclared("fx_mul", 8, 100_000)], 200_000_000);
        let recs = argtypes_recs(&p);
        assert_eq!(recs.len(), 1);
        let r = &recs[0];
        assert_eq!(r.estimated_savings_ns, 0);
        assert_eq!(r.confidence, Confidence::Low);
        assert_eq!(r.evidence["int_sized_args"], 2);
        assert_eq!(r.evidence["pointer_sized_args"], 0);
        assert_eq!(r.evidence["declare_saving_per_call_ns"], Value::Null);
        assert_eq!(r.estimate, Estimate::modeled(0.0));
        assert!(
            r.suggestion
                .contains("all 2 of its arguments crossed as a 4-byte C int"),
            "{}",
            r.suggestion
        );
        assert!(
            r.suggestion.contains("default c_int restype"),
            "{}",
            r.suggestion
        );
        assert!(!r.suggestion.contains("name"), "{}", r.suggestion);
    }

    #[test]
    fn the_time_side_is_the_measured_change_with_its_sign() {
        let mut p = profile(vec![undeclared("fx_mul", 8, 100_000)], 200_000_000);
        p.measured_changes = Some(measured(measure::DECLARE_ARGTYPES, "ii", -103.4, 6.0));
        let r = &argtypes_recs(&p)[0];
        assert_eq!(r.estimated_savings_ns, 0, "a cost is no saving");
        assert_eq!(r.estimate, Estimate::measured(-103.4, 6.0));
        assert_eq!(r.evidence["declare_saving_per_call_ns"], -103.4);
        assert!(
            r.suggestion
                .contains("~103ns slower on this interpreter (measured, ±6ns)"),
            "{}",
            r.suggestion
        );
        // A measured gain is claimed as measured.
        p.measured_changes = Some(measured(measure::DECLARE_ARGTYPES, "ii", 20.0, 4.0));
        let r = &argtypes_recs(&p)[0];
        assert_eq!(r.estimated_savings_ns, 20 * 100_000);
        assert_eq!(r.estimate.method, Method::Measured);
    }

    #[test]
    fn mixed_sizes_are_counted() {
        // One 4-byte and one 8-byte argument per call.
        let p = profile(vec![undeclared("fx_put", 12, 1_000)], 200_000_000);
        let r = &argtypes_recs(&p)[0];
        assert_eq!(r.evidence["int_sized_args"], 1);
        assert_eq!(r.evidence["pointer_sized_args"], 1);
        assert!(
            r.suggestion.contains("1 of its 2 arguments crossed"),
            "{}",
            r.suggestion
        );
    }

    #[test]
    fn pointer_sized_arguments_only_get_no_advice() {
        // Two 8-byte arguments (bytes objects, ctypes objects): nothing guessed as an int.
        let p = profile(vec![undeclared("fx_obj_new", 16, 5)], 1_000_000);
        assert!(argtypes_recs(&p).is_empty());
        // And the name no longer says anything about a pointer result.
        let p = profile(vec![undeclared("PyBuffer_Release", 16, 5_000)], 1_000_000);
        assert!(argtypes_recs(&p).is_empty());
    }

    #[test]
    fn one_recommendation_per_library_about_its_most_called_function() {
        let p = profile(
            vec![
                undeclared("fx_mul", 8, 100),
                undeclared("fx_add", 8, 3_000),
                undeclared("fx_put", 12, 40),
                undeclared("fx_ptrs", 16, 9_000),
            ],
            200_000_000,
        );
        let recs = argtypes_recs(&p);
        assert_eq!(recs.len(), 1);
        let r = &recs[0];
        assert_eq!(r.function, "fx_add");
        let others: Vec<&str> = r.evidence["other_functions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["function"].as_str().unwrap())
            .collect();
        assert_eq!(
            others,
            ["fx_mul", "fx_put"],
            "pointer-sized only is none of them"
        );
        assert!(
            r.suggestion
                .contains("2 other functions of libffifixture.so were called the same way: fx_mul (100 calls), fx_put (40 calls)."),
            "{}",
            r.suggestion
        );
    }

    #[test]
    fn sizes_of_other_kinds_say_nothing_of_ints() {
        // keccak_init(state, c_size_t(n), c_ubyte(24)): 8 + 8 + 1 bytes.
        let mut f = undeclared("keccak_init", 17, 500);
        f.arg_count = 3;
        assert!(argtypes_recs(&profile(vec![f], 1_000_000)).is_empty());
    }

    #[test]
    fn declared_functions_get_no_advice() {
        let mut f = undeclared("fx_mul", 8, 5_000);
        f.undeclared_argtypes_calls = 0;
        assert!(argtypes_recs(&profile(vec![f.clone()], 1_000_000)).is_empty());
        // Only the restype left at its default: evidence of nothing by itself.
        f.undeclared_restype_calls = 5_000;
        assert!(argtypes_recs(&profile(vec![f], 1_000_000)).is_empty());
    }

    /// `undeclared(name, ...)` with its site's argument evidence.
    fn with_evidence(name: &str, types: &[&str], truncated: &[u32], calls: u64) -> FunctionRecord {
        let mut f = undeclared(name, 4 * types.len() as u64, calls);
        f.arg_count = types.len() as u32;
        f.sites[0].arg_types = types.iter().map(|t| t.to_string()).collect();
        f.sites[0].arg_types_calls = calls.min(8);
        f.sites[0].truncated_int_args = truncated.to_vec();
        f.sites[0].restype_default = true;
        f
    }

    #[test]
    fn the_evidence_names_each_type_and_suggests_the_line() {
        let p = profile(
            vec![with_evidence("fx_put", &["int", "bytes|None"], &[], 1_000)],
            200_000_000,
        );
        let recs = argtypes_recs(&p);
        assert_eq!(recs.len(), 1);
        let r = &recs[0];
        assert_eq!(r.confidence, Confidence::Low);
        assert_eq!(r.evidence["int_sized_args"], 1);
        assert_eq!(r.evidence["pointer_sized_args"], 1);
        assert_eq!(r.evidence["arg_types"], json!(["int", "bytes|None"]));
        assert_eq!(
            r.evidence["suggested_argtypes"],
            json!(["ctypes.c_int", "ctypes.c_char_p"])
        );
        assert_eq!(r.evidence["guessed_argtypes"], json!([0]));
        assert_eq!(r.evidence["restype_default"], true);
        assert_eq!(r.evidence["sites"][0]["line"], 3);
        for part in [
            "argument 1 was a Python int (a 4-byte C int); argument 2 was bytes (a char *: fine) or None (a NULL pointer)",
            "lib.fx_put.argtypes = [ctypes.c_int, ctypes.c_char_p] — c_int for argument 1 is a guess",
            "a pointer or a 64-bit result comes back cut to 32 bits",
        ] {
            assert!(r.suggestion.contains(part), "{part}: {}", r.suggestion);
        }
        let example = r.example().unwrap();
        assert!(
            example.starts_with("lib.fx_put.argtypes = [ctypes.c_int, ctypes.c_char_p]  # the types seen; argument 1 guessed"),
            "{example}"
        );
    }

    #[test]
    fn an_int_cut_to_32_bits_is_a_bug_of_its_own() {
        let p = profile(
            vec![
                with_evidence("fx_mul", &["int", "int"], &[], 5_000),
                with_evidence("fx_add_i64", &["int", "int"], &[0], 2),
            ],
            200_000_000,
        );
        let recs = argtypes_recs(&p);
        let by_name = |n: &str| recs.iter().find(|r| r.function == n).unwrap();
        assert_eq!(recs.len(), 2, "{recs:#?}");
        let cut = by_name("fx_add_i64");
        assert_eq!(cut.confidence, Confidence::High);
        assert_eq!(cut.evidence["truncated_int_args"], json!([0]));
        assert!(
            cut.suggestion.contains(
                "At app.py:3 a Python int that does not fit in 32 bits was passed as argument 1"
            ),
            "{}",
            cut.suggestion
        );
        let other = by_name("fx_mul");
        assert_eq!(other.confidence, Confidence::Low);
        assert_eq!(other.evidence["other_functions"], json!([]));
    }

    #[test]
    fn ctypes_objects_and_bytes_alone_get_no_advice() {
        // 4 bytes a call, which the sizes alone would take for a Python int: a c_int instance.
        let p = profile(
            vec![with_evidence("fx_abs", &["ctypes:c_int"], &[], 1_000)],
            200_000_000,
        );
        assert!(argtypes_recs(&p).is_empty());
        let p = profile(
            vec![with_evidence("fx_strlen", &["bytes"], &[], 1_000)],
            200_000_000,
        );
        assert!(argtypes_recs(&p).is_empty());
    }

    #[test]
    fn the_timed_shape_comes_from_the_evidence() {
        let f = with_evidence("fx_put", &["bytes", "int"], &[], 1_000);
        assert_eq!(
            crate::advice::declare_argtypes_codes(&f).as_deref(),
            Some("iP")
        );
        let f = with_evidence("fx_put", &["int|bytes", "int"], &[], 1_000);
        assert_eq!(
            crate::advice::declare_argtypes_codes(&f),
            None,
            "mixed kinds"
        );
    }
}
