//! declare-argtypes: ctypes functions called without `argtypes`.
//!
//! Without `argtypes`, ctypes converts each argument by its Python type, on every call: a Python
//! int becomes a C `int` (4 bytes; a larger value is silently cut to 32 bits), bytes and str become
//! pointers, None a NULL pointer, a ctypes object passes as itself, a float is refused. That is
//! right where the C parameter is an `int`; a `double` parameter receives garbage, and a 64-bit
//! integer or a pointer only the values that fit in 32 bits. The profile records every call's
//! argument sizes (the libffi cif's), so the 4-byte arguments of a function called without
//! argtypes were Python ints — or ctypes objects of 4 bytes, which the profile cannot tell apart:
//! the Python type of each argument is not recorded (that would take per-call recording in the
//! agent). Hence `low` confidence: a check the user makes against the C prototype. Functions whose
//! arguments all crossed as 8 bytes (pointers, ctypes objects) get no advice: nothing was guessed
//! wrong that the profile could see. No declared sibling is needed.
//!
//! The time side is never a made-up saving: declaring argtypes usually makes each call slower (one
//! `from_param` per argument; DESIGN.md's measured table). Where the change was timed on this
//! interpreter (`declare-argtypes` in the profile's measured changes) the advice states the
//! measured change per call, with its sign; a saving is claimed only if it was measured.
//!
//! A result read through the default `c_int` restype is evidence of nothing by itself (most
//! functions that are left so return an int) and is only reported beside the arguments; a value
//! returned that way and later passed back as a pointer would be a truncation bug, which needs
//! the pointer flow between calls (not recorded yet). A `restype` set explicitly — to `c_int`
//! too — is a declaration (the agent reads the function object's own field).

use std::collections::BTreeMap;

use ffiprof_profile::FunctionRecord;
use serde::Serialize;
use serde_json::json;

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
    /// Arguments that crossed as 4 bytes (what ctypes makes of a Python int).
    int_sized_args: u32,
    /// Arguments that crossed as 8 bytes (pointers, ctypes objects).
    pointer_sized_args: u32,
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

/// A function called without argtypes whose arguments include int-sized ones, every call with
/// the same sizes (4 or 8 bytes each): (function, its argument codes, int-sized count).
fn int_sized_calls(f: &FunctionRecord) -> Option<(String, u32)> {
    if f.python_calls == 0 || f.undeclared_argtypes_calls == 0 || f.arg_count == 0 {
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
    (narrow > 0).then_some((codes, narrow))
}

pub(super) fn rule(ctx: &Context<'_>) -> Vec<Candidate> {
    // One recommendation per library, about its most called such function.
    let mut by_library: BTreeMap<&str, Vec<(&FunctionRecord, String, u32)>> = BTreeMap::new();
    for f in &ctx.profile.functions {
        if let Some((codes, narrow)) = int_sized_calls(f) {
            by_library
                .entry(f.library.as_str())
                .or_default()
                .push((f, codes, narrow));
        }
    }
    let mut out = Vec::new();
    for (_, mut group) in by_library {
        group.sort_by(|a, b| {
            b.0.undeclared_argtypes_calls
                .cmp(&a.0.undeclared_argtypes_calls)
                .then(a.0.function.cmp(&b.0.function))
        });
        let (f, codes, narrow) = &group[0];
        let (f, narrow) = (*f, *narrow);
        let k = f.arg_count;
        let timed = measure::timed(ctx.profile, measure::DECLARE_ARGTYPES, codes);
        let (saving, estimate) = match timed {
            Some(t) => (
                ((t.saving_ns.max(0.0)) * f.undeclared_argtypes_calls as f64).round() as u64,
                Estimate::measured(t.saving_ns, t.spread_ns),
            ),
            None => (0, Estimate::modeled(0.0)),
        };
        let which = match narrow {
            n if n == k && k == 1 => "its argument crossed".to_string(),
            n if n == k => format!("all {k} of its arguments crossed"),
            n => format!("{n} of its {k} arguments crossed"),
        };
        let mut suggestion = format!(
            "{} was called {} times without argtypes, so ctypes converted each argument by its Python type: \
             {which} as a 4-byte C int, which is what it makes of a Python int. That is right where the C \
             parameter is an int; a double parameter receives garbage, and a 64-bit integer or a pointer only \
             the values that fit in 32 bits. Check the C prototype and declare argtypes with its types, once, \
             after loading the library: ctypes then converts (or refuses) each argument.",
            f.function, f.undeclared_argtypes_calls,
        );
        if f.undeclared_restype_calls > 0 {
            suggestion.push_str(
                " Its result is read through the default c_int restype: right if it returns an int; declare \
                 restype too if it does not.",
            );
        }
        let others = &group[1..];
        if !others.is_empty() {
            let named: Vec<String> = others
                .iter()
                .take(5)
                .map(|(g, _, _)| format!("{} ({} calls)", g.function, g.undeclared_argtypes_calls))
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
        let evidence = ArgtypesEvidence {
            calls: f.calls,
            python_calls: f.python_calls,
            undeclared_argtypes_calls: f.undeclared_argtypes_calls,
            undeclared_restype_calls: f.undeclared_restype_calls,
            arg_count: k,
            arg_bytes_per_call: round1(crate::cost_model::per(f.arg_bytes, f.calls)),
            int_sized_args: narrow,
            pointer_sized_args: k - narrow,
            declare_saving_per_call_ns: timed.map(|t| round1(t.saving_ns)),
            other_functions: others
                .iter()
                .map(|(g, _, n)| OtherFunction {
                    function: g.function.clone(),
                    undeclared_argtypes_calls: g.undeclared_argtypes_calls,
                    arg_count: g.arg_count,
                    int_sized_args: *n,
                })
                .collect(),
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
            Confidence::Low,
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
}
