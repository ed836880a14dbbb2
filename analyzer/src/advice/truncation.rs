//! declare-argtypes (the result's half): a pointer cut to 32 bits. A function called with no
//! `restype` has its result read as ctypes' default `c_int`; when that value comes back, sign-
//! extended from 32 bits, in a pointer argument of another call (the pointer flow's `truncated`),
//! it was a pointer whose high half was thrown away — a crash or a corruption waiting for the
//! address to move above 4 GiB (every heap and library address on x86-64 is). High confidence,
//! whatever the function is called: the values themselves showed it.

use serde::Serialize;
use serde_json::json;

use super::{AdviceKind, Candidate, Confidence, Context, Estimate};
use crate::cost_model::Place;

#[derive(Debug, Serialize)]
struct TruncationEvidence {
    /// Always true: the recommendation is about a result cut to 32 bits.
    truncated_pointer: bool,
    /// The functions the cut value came back to, and how many times each.
    passed_back_to: Vec<PassedBack>,
    passed_back: u64,
    /// Calls whose result was read through the default `c_int` restype.
    undeclared_restype_calls: u64,
    calls: u64,
}

#[derive(Debug, Serialize)]
struct PassedBack {
    function: String,
    count: u64,
}

pub(super) fn rule(ctx: &Context<'_>) -> Vec<Candidate> {
    let Some(flow) = &ctx.profile.pointer_flow else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut done: Vec<(&str, &str)> = Vec::new();
    for t in &flow.truncated {
        if done.contains(&(t.library.as_str(), t.function.as_str())) {
            continue;
        }
        done.push((&t.library, &t.function));
        let Some(function) = ctx
            .profile
            .functions
            .iter()
            .find(|f| f.library == t.library && f.function == t.function)
        else {
            continue;
        };
        let passed_back_to: Vec<PassedBack> = flow
            .truncated
            .iter()
            .filter(|o| o.library == t.library && o.function == t.function)
            .map(|o| PassedBack {
                function: o.passed_to.function.clone(),
                count: o.count,
            })
            .collect();
        let passed_back: u64 = passed_back_to.iter().map(|p| p.count).sum();
        let targets = passed_back_to
            .iter()
            .map(|p| p.function.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let suggestion = format!(
            "{f} returns a pointer, but with no restype ctypes reads it as a C int: its high 32 bits are thrown \
             away. The cut value came back as a pointer argument {passed_back} times (to {targets}). Declare \
             lib.{f}.restype = ctypes.c_void_p (or the POINTER type it returns) — a correctness fix, whatever it \
             costs per call.",
            f = t.function,
        );
        let evidence = TruncationEvidence {
            truncated_pointer: true,
            passed_back_to,
            passed_back,
            undeclared_restype_calls: function.undeclared_restype_calls,
            calls: function.calls,
        };
        let place = Place {
            function,
            site: None,
        };
        let rec = ctx.recommendation(
            AdviceKind::DeclareArgtypes,
            place,
            0,
            Estimate::modeled(0.0),
            Confidence::High,
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
    use ffiprof_profile::{FunctionRef, PointerFlow, TruncatedPointer};

    #[test]
    fn a_cut_pointer_passed_back_is_high_confidence_whatever_the_name() {
        let mut make = function(
            "fx_handle_make",
            vec![site("app.py", 3, 1, PerCall::default())],
        );
        make.undeclared_restype_calls = 1;
        let check = function(
            "fx_handle_check",
            vec![site("app.py", 4, 5, PerCall::default())],
        );
        let mut p = profile(vec![make, check], 1_000_000_000);
        assert!(of_kind(&p, AdviceKind::DeclareArgtypes).is_empty());
        p.pointer_flow = Some(PointerFlow {
            truncated: vec![TruncatedPointer {
                library: LIB.into(),
                function: "fx_handle_make".into(),
                passed_to: FunctionRef {
                    library: LIB.into(),
                    function: "fx_handle_check".into(),
                },
                count: 5,
            }],
            ..PointerFlow::default()
        });
        let recs = of_kind(&p, AdviceKind::DeclareArgtypes);
        assert_eq!(recs.len(), 1);
        let r = &recs[0];
        assert_eq!(r.function, "fx_handle_make");
        assert_eq!(r.confidence, Confidence::High);
        assert_eq!(r.evidence["truncated_pointer"], true);
        assert_eq!(r.evidence["passed_back"], 5);
        assert_eq!(
            r.evidence["passed_back_to"][0]["function"],
            "fx_handle_check"
        );
        assert!(r.example().unwrap().contains("restype = ctypes.c_void_p"));
    }
}
