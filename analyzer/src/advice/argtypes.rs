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
    /// Arguments that crossed as 4 bytes (what ctypes makes of a Python int); null when the sizes
    /// varied between calls.
    int_sized_args: Option<u32>,
    /// Arguments that crossed as 8 bytes (pointers, ctypes objects); null when the sizes varied.
    pointer_sized_args: Option<u32>,
    /// The measured change per call of declaring argtypes, as a saving: negative when declaring
    /// costs time; null when not timed.
    declare_saving_per_call_ns: Option<f64>,
}

pub(super) fn rule(ctx: &Context<'_>) -> Vec<Candidate> {
    let mut out = Vec::new();
    for f in &ctx.profile.functions {
        if f.python_calls == 0 || f.undeclared_argtypes_calls == 0 || f.arg_count == 0 {
            continue;
        }
        let place = Place {
            function: f,
            site: None,
        };
        let k = f.arg_count;
        let per_call_bytes = crate::cost_model::per(f.arg_bytes, f.calls);
        let codes = measure::guessed_args(&place);
        let narrow = codes.as_ref().map(|c| c.matches('i').count() as u32);
        // Some argument narrower than a pointer: exactly counted when every call had the same
        // sizes; otherwise seen on average.
        let any_narrow = narrow.map_or(per_call_bytes < 8.0 * f64::from(k), |n| n > 0);
        if !any_narrow {
            continue;
        }
        let timed = codes
            .as_deref()
            .and_then(|c| measure::timed(ctx.profile, measure::DECLARE_ARGTYPES, c));
        let (saving, estimate) = match timed {
            Some(t) => (
                ((t.saving_ns.max(0.0)) * f.undeclared_argtypes_calls as f64).round() as u64,
                Estimate::measured(t.saving_ns, t.spread_ns),
            ),
            None => (0, Estimate::modeled(0.0)),
        };

        let which = match narrow {
            Some(n) if n == k && k == 1 => "its argument crossed".to_string(),
            Some(n) if n == k => format!("all {k} of its arguments crossed"),
            Some(n) => format!("{n} of its {k} arguments crossed"),
            None => "some of its arguments crossed".to_string(),
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
            arg_bytes_per_call: round1(per_call_bytes),
            int_sized_args: narrow,
            pointer_sized_args: narrow.map(|n| k - n),
            declare_saving_per_call_ns: timed.map(|t| round1(t.saving_ns)),
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
    fn declared_functions_get_no_advice() {
        let mut f = undeclared("fx_mul", 8, 5_000);
        f.undeclared_argtypes_calls = 0;
        assert!(argtypes_recs(&profile(vec![f.clone()], 1_000_000)).is_empty());
        // Only the restype left at its default: evidence of nothing by itself.
        f.undeclared_restype_calls = 5_000;
        assert!(argtypes_recs(&profile(vec![f], 1_000_000)).is_empty());
    }
}
