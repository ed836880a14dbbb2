//! declare-argtypes: ctypes functions called without `argtypes` / `restype`.
//!
//! Without `argtypes` ctypes guesses each argument's C type from the Python object, per call; without
//! `restype` it reads the result as a C `int`, which cuts a 64-bit pointer in half — the program works
//! until an allocation lands above 4 GiB. The time side is measured against the profile's own functions
//! that do declare their argument types.

use serde::Serialize;
use serde_json::json;

use super::{names, AdviceKind, Candidate, Confidence, Context};
use crate::cost_model::{per, Place};
use crate::text::fmt_ns;

#[derive(Debug, Serialize)]
struct ArgtypesEvidence {
    calls: u64,
    python_calls: u64,
    undeclared_argtypes_calls: u64,
    undeclared_restype_calls: u64,
    arg_count: u32,
    marshal_in_per_call_ns: f64,
    /// Median marshal-in per call of functions with argtypes and as many arguments; null when none.
    declared_marshal_in_per_call_ns: Option<f64>,
    declared_reference_functions: usize,
    /// The name suggests a pointer result, read through the default `c_int` restype.
    likely_truncated_pointer: bool,
}

pub(super) fn rule(ctx: &Context<'_>) -> Vec<Candidate> {
    let mut out = Vec::new();
    for f in &ctx.profile.functions {
        if f.python_calls == 0
            || (f.undeclared_argtypes_calls == 0 && f.undeclared_restype_calls == 0)
        {
            continue;
        }
        // Functions that declare argtypes and take as many arguments: what marshal-in costs when declared.
        let mut reference: Vec<f64> = ctx
            .profile
            .functions
            .iter()
            .filter(|g| {
                g.python_calls > 0 && g.undeclared_argtypes_calls == 0 && g.arg_count == f.arg_count
            })
            .map(|g| per(g.time.marshal_in, g.python_calls))
            .collect();
        reference.sort_by(|a, b| a.total_cmp(b));
        let declared = (!reference.is_empty()).then(|| {
            let n = reference.len();
            if n % 2 == 1 {
                reference[n / 2]
            } else {
                (reference[n / 2 - 1] + reference[n / 2]) / 2.0
            }
        });
        let marshal_in = per(f.time.marshal_in, f.python_calls);
        let saving = match declared {
            Some(d) if f.undeclared_argtypes_calls > 0 && marshal_in > d => {
                ((marshal_in - d) * f.undeclared_argtypes_calls as f64).round() as u64
            }
            _ => 0,
        };
        let likely_bug =
            f.undeclared_restype_calls > 0 && names::looks_like_pointer_result(&f.function);

        let mut parts = Vec::new();
        if f.undeclared_argtypes_calls > 0 {
            parts.push(format!(
                "{} calls without argtypes",
                f.undeclared_argtypes_calls
            ));
        }
        if f.undeclared_restype_calls > 0 {
            parts.push(format!("{} without restype", f.undeclared_restype_calls));
        }
        let mut suggestion = format!(
            "{} was called through ctypes with {}.",
            f.function,
            parts.join(" and ")
        );
        if likely_bug {
            suggestion.push_str(
                " Its name suggests it returns a pointer, which the default c_int restype truncates to 32 bits: \
                 a likely bug. Set restype = ctypes.c_void_p (or the POINTER type).",
            );
        }
        if let Some(d) = declared.filter(|_| saving > 0) {
            suggestion.push_str(&format!(
                " Marshal-in costs {} per call here against {} for this program's functions with {} declared \
                 arguments.",
                fmt_ns(marshal_in.round() as u64),
                fmt_ns(d.round() as u64),
                f.arg_count
            ));
        }
        suggestion.push_str(" Declare argtypes and restype with the C prototype's types, once, after loading the library.");

        let confidence = if likely_bug {
            Confidence::Medium
        } else {
            ctx.cap_by_timing(Confidence::Medium, f.timed_calls.max(1))
        };
        let evidence = ArgtypesEvidence {
            calls: f.calls,
            python_calls: f.python_calls,
            undeclared_argtypes_calls: f.undeclared_argtypes_calls,
            undeclared_restype_calls: f.undeclared_restype_calls,
            arg_count: f.arg_count,
            marshal_in_per_call_ns: (marshal_in * 10.0).round() / 10.0,
            declared_marshal_in_per_call_ns: declared.map(|d| (d * 10.0).round() / 10.0),
            declared_reference_functions: reference.len(),
            likely_truncated_pointer: likely_bug,
        };
        let place = Place {
            function: f,
            site: None,
        };
        let rec = ctx.recommendation(
            AdviceKind::DeclareArgtypes,
            place,
            saving,
            confidence,
            json!(evidence),
            suggestion,
        );
        out.push(Candidate {
            rec,
            correctness: likely_bug,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::*;

    fn argtypes_recs(p: &Profile) -> Vec<Recommendation> {
        recommend(p, &AdviceOptions::default())
            .into_iter()
            .filter(|r| r.kind == AdviceKind::DeclareArgtypes)
            .collect()
    }

    fn undeclared(name: &str, marshal_in: u64, calls: u64) -> FunctionRecord {
        let c = PerCall {
            native: 500,
            marshal_in,
            marshal_out: 100,
            arg_bytes: 16,
            ..PerCall::default()
        };
        let mut f = function(name, vec![site("app.py", 3, calls, c)]);
        f.undeclared_argtypes_calls = calls;
        f.undeclared_restype_calls = calls;
        f
    }

    #[test]
    fn pointer_result_without_restype_is_flagged_whatever_it_saves() {
        let p = profile(vec![undeclared("fx_obj_new", 300, 5)], 1_000_000);
        let recs = argtypes_recs(&p);
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].estimated_savings_ns, 0);
        assert_eq!(recs[0].evidence["likely_truncated_pointer"], true);
        assert!(recs[0].suggestion.contains("c_void_p"));
    }

    #[test]
    fn slower_marshal_in_than_declared_functions_is_a_saving() {
        let declared = function(
            "fx_add",
            vec![site(
                "app.py",
                9,
                1_000,
                PerCall {
                    native: 500,
                    marshal_in: 200,
                    marshal_out: 100,
                    arg_bytes: 16,
                    ..PerCall::default()
                },
            )],
        );
        let p = profile(
            vec![undeclared("fx_mul", 700, 100_000), declared],
            200_000_000,
        );
        let r = &argtypes_recs(&p)[0];
        assert_eq!(r.function, "fx_mul");
        assert_eq!(r.estimated_savings_ns, 500 * 100_000);
        assert_eq!(r.evidence["declared_marshal_in_per_call_ns"], 200.0);
        assert_eq!(r.evidence["likely_truncated_pointer"], false);
    }

    #[test]
    fn no_reference_and_no_pointer_means_no_advice() {
        let p = profile(vec![undeclared("fx_mul", 700, 100_000)], 200_000_000);
        assert!(argtypes_recs(&p).is_empty());
    }

    #[test]
    fn declared_functions_get_no_advice() {
        let mut f = undeclared("fx_obj_new", 300, 5);
        f.undeclared_argtypes_calls = 0;
        f.undeclared_restype_calls = 0;
        assert!(argtypes_recs(&profile(vec![f], 1_000_000)).is_empty());
    }
}
