//! use-pydll and gil-contention: what releasing the GIL around each call costs.
//!
//! ctypes' `CDLL` functions release the GIL before entering C and take it back after; for a function
//! that runs for less time than that round trip, in a program with no other thread to run meanwhile,
//! the release buys nothing. With several threads, each re-acquisition can wait for another thread.

use serde::Serialize;
use serde_json::json;

use super::{AdviceKind, Candidate, Confidence, Context, Estimate};
use crate::cost_model::{per, Place};
use crate::measure;
use crate::text::fmt_ns;
use ffiprof_profile::FunctionRecord;

#[derive(Debug, Serialize)]
struct GilEvidence {
    python_calls: u64,
    threads: u32,
    gil_wait_ns: u64,
    gil_wait_per_call_ns: f64,
    native_per_call_ns: f64,
    native_p99_ns: u64,
    marshal_out_ns: u64,
    /// use-pydll: the larger of the GIL wait and its measured round trip × calls / boundary time of the
    /// calls; gil-contention: GIL wait / (GIL wait + marshal-out).
    gil_share: f64,
}

fn round(x: f64, places: i32) -> f64 {
    let k = 10f64.powi(places);
    (x * k).round() / k
}

/// The native p99, or the mean when the agent recorded no histogram.
fn native_p99(f: &FunctionRecord) -> u64 {
    if f.native_hist.is_empty() {
        per(f.time.native, f.calls).round() as u64
    } else {
        f.native_hist.summary().p99_ns
    }
}

fn evidence(f: &FunctionRecord, threads: u32, gil_share: f64) -> serde_json::Value {
    json!(GilEvidence {
        python_calls: f.python_calls,
        threads,
        gil_wait_ns: f.time.gil_wait,
        gil_wait_per_call_ns: round(per(f.time.gil_wait, f.python_calls), 1),
        native_per_call_ns: round(per(f.time.native, f.calls), 1),
        native_p99_ns: native_p99(f),
        marshal_out_ns: f.time.marshal_out,
        gil_share: round(gil_share, 3),
    })
}

pub(super) fn use_pydll_rule(ctx: &Context<'_>) -> Vec<Candidate> {
    let threads = ctx.profile.meta.threads;
    if threads > 1 {
        return Vec::new();
    }
    let o = ctx.options;
    let mut out = Vec::new();
    for f in &ctx.profile.functions {
        if f.python_calls == 0 || f.time.gil_wait == 0 {
            continue;
        }
        let place = Place {
            function: f,
            site: None,
        };
        // Measured: the whole round trip (release and re-acquire) timed on this interpreter, at
        // most the crossing it is part of. Modeled: the GIL wait alone, a lower bound. The gates
        // (C work shorter than the GIL's cost, its p99 bounded by it, a share of the crossing
        // worth it) take the larger of the agent's wait and the measured round trip: the wait
        // moves with the load, and either shows what holding the GIL spares.
        let timed = measure::signature(&place)
            .and_then(|s| measure::timed(ctx.profile, measure::USE_PYDLL, &s));
        let gil = per(f.time.gil_wait, f.python_calls);
        if timed.is_some_and(|t| t.saving_ns <= 0.0) {
            continue;
        }
        let round_trip = timed.map_or(gil, |t| t.saving_ns.max(gil));
        let native = per(f.time.native, f.calls);
        let boundary = f.time.native + f.time.overhead();
        let share = round_trip * f.python_calls as f64 / boundary.max(1) as f64;
        let p99 = native_p99(f);
        if native > round_trip
            || p99 as f64 > o.use_pydll_max_p99_ratio * round_trip
            || share < o.use_pydll_min_gil_share
        {
            continue;
        }
        let suggestion = format!(
            "{} runs for {} in C (p99 {}) but each call waits {} to take the GIL back, in a run with one thread. \
             Call it with the GIL held — a ctypes.PYFUNCTYPE prototype, or ctypes.PyDLL for a library whose \
             functions never block or call back into Python — as long as the program does not need other \
             threads to run during these calls.",
            f.function,
            fmt_ns(native.round() as u64),
            fmt_ns(p99),
            fmt_ns(gil.round() as u64),
        );
        let confidence = ctx.cap_by_timing(Confidence::Medium, f.timed_calls.max(1));
        let (saving, estimate) = match timed {
            Some(t) => {
                let saving =
                    ((t.saving_ns * f.python_calls as f64).round() as u64).min(f.time.overhead());
                (
                    saving,
                    Estimate::measured(saving as f64 / f.python_calls as f64, t.spread_ns),
                )
            }
            None => (f.time.gil_wait, Estimate::modeled(gil)),
        };
        let mut evidence = evidence(f, threads, share);
        evidence["measured_round_trip_per_call_ns"] = json!(timed.map(|t| round(t.saving_ns, 1)));
        let rec = ctx.recommendation(
            AdviceKind::UsePydll,
            place,
            saving,
            estimate,
            confidence,
            evidence,
            suggestion,
        );
        out.push(Candidate {
            rec,
            correctness: false,
        });
    }
    out
}

/// gil-contention: several threads, and a short C function whose calls each wait for the GIL.
/// The waits themselves are not what the program loses — while one thread waits another holds
/// the GIL and runs; summed over threads they overlap the run many times — so they are evidence,
/// never the saving. What a call that keeps the GIL saves in wall time is the release and
/// re-acquisition it no longer makes, on the one path the GIL serialises: the round trip timed on
/// this interpreter (`use-pydll`), per call. Without that measurement, no time is claimed and the
/// advice is not given; nor for C work longer than the hand-off, where releasing the GIL lets
/// other threads run.
pub(super) fn contention_rule(ctx: &Context<'_>) -> Vec<Candidate> {
    let threads = ctx.profile.meta.threads;
    if threads < 2 {
        return Vec::new();
    }
    let mut out = Vec::new();
    for f in &ctx.profile.functions {
        if f.python_calls == 0 || f.time.gil_wait == 0 {
            continue;
        }
        let share = per(f.time.gil_wait, f.time.gil_wait + f.time.marshal_out);
        if share < ctx.options.gil_contention_min_share {
            continue;
        }
        let gil = per(f.time.gil_wait, f.python_calls);
        let native = per(f.time.native, f.calls);
        if native >= gil {
            continue;
        }
        let place = Place {
            function: f,
            site: None,
        };
        let Some(t) = measure::signature(&place)
            .and_then(|s| measure::timed(ctx.profile, measure::USE_PYDLL, &s))
            .filter(|t| t.saving_ns > 0.0)
        else {
            continue;
        };
        let saving = ((t.saving_ns * f.python_calls as f64).round() as u64).min(f.time.overhead());
        let suggestion = format!(
            "With {threads} threads, each call to {} waits {} to take the GIL back after {} in C: the C work is \
             shorter than the hand-off it causes. Keep the GIL across this short call (ctypes.PYFUNCTYPE, or the \
             function from a ctypes.PyDLL) so threads trade it at the interpreter's switch interval instead of \
             on every call, or batch the calls so it changes hands once per batch. The waits overlap other \
             threads' work, so the saving counted is the release and re-acquisition each call makes, timed on \
             this interpreter ({} a call).",
            f.function,
            fmt_ns(gil.round() as u64),
            fmt_ns(native.round() as u64),
            fmt_ns(t.saving_ns.round() as u64),
        );
        let mut evidence = evidence(f, threads, share);
        evidence["measured_round_trip_per_call_ns"] = json!(round(t.saving_ns, 1));
        let rec = ctx.recommendation(
            AdviceKind::GilContention,
            place,
            saving,
            Estimate::measured(saving as f64 / f.python_calls as f64, t.spread_ns),
            Confidence::Medium,
            evidence,
            suggestion,
        );
        out.push(Candidate {
            rec,
            correctness: false,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::*;

    fn tiny_calls(gil: u64, threads: u32) -> Profile {
        let c = PerCall {
            native: 30,
            marshal_in: 200,
            marshal_out: 60,
            gil,
            arg_bytes: 8,
            ..PerCall::default()
        };
        let mut p = profile(
            vec![function("fx_get", vec![site("hot.py", 8, 100_000, c)])],
            100_000 * 400,
        );
        p.meta.threads = threads;
        p
    }

    #[test]
    fn tiny_function_in_one_thread_is_use_pydll() {
        let p = tiny_calls(60, 1);
        let recs = of_kind(&p, AdviceKind::UsePydll);
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].estimated_savings_ns, 60 * 100_000);
        assert_eq!(recs[0].site, None);
        assert!(of_kind(&p, AdviceKind::GilContention).is_empty());
    }

    #[test]
    fn long_or_multithreaded_functions_are_not_use_pydll() {
        assert!(of_kind(&tiny_calls(60, 4), AdviceKind::UsePydll).is_empty());
        let c = PerCall {
            native: 50_000,
            marshal_in: 200,
            marshal_out: 60,
            gil: 60,
            ..PerCall::default()
        };
        let p = profile(
            vec![function("fx_spin_ns", vec![site("hot.py", 8, 100_000, c)])],
            100_000 * 51_000,
        );
        assert!(of_kind(&p, AdviceKind::UsePydll).is_empty());
        // No GIL wait measured: nothing to claim.
        assert!(of_kind(&tiny_calls(0, 1), AdviceKind::UsePydll).is_empty());
    }

    #[test]
    fn gil_wait_with_threads_is_contention_saving_the_measured_round_trip() {
        let mut p = tiny_calls(17_000, 4);
        // Each thread's calls last their crossings and their GIL wait.
        p.meta.duration_ns = 100_000 * 17_300 / 4;
        // Not measured: the waits are no saving, and no other is known.
        assert!(of_kind(&p, AdviceKind::GilContention).is_empty());
        add_measured(&mut p, crate::measure::USE_PYDLL, "ii->", 480.0, 55.0, 4.0);
        let recs = of_kind(&p, AdviceKind::GilContention);
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].estimated_savings_ns, 55 * 100_000);
        assert_eq!(recs[0].estimate, Estimate::measured(55.0, 4.0));
        assert_eq!(recs[0].confidence, Confidence::Medium);
        assert!(recs[0].suggestion.contains("PYFUNCTYPE"));
        assert_eq!(recs[0].evidence["gil_wait_ns"], 17_000 * 100_000);
    }

    #[test]
    fn measured_round_trip_is_the_use_pydll_saving_within_the_crossing() {
        // fx_get: 8 bytes of arguments in 2 (testutil's arity), no result recorded.
        let mut p = tiny_calls(60, 1);
        add_measured(&mut p, crate::measure::USE_PYDLL, "ii->", 480.0, 110.0, 9.0);
        let r = &of_kind(&p, AdviceKind::UsePydll)[0];
        assert_eq!(r.estimated_savings_ns, 110 * 100_000);
        assert_eq!(r.estimate, Estimate::measured(110.0, 9.0));
        assert_eq!(r.evidence["measured_round_trip_per_call_ns"], 110.0);
        // Never more than the crossings it is part of (320 ns a call here).
        let mut p = tiny_calls(60, 1);
        add_measured(&mut p, crate::measure::USE_PYDLL, "ii->", 980.0, 500.0, 9.0);
        let r = &of_kind(&p, AdviceKind::UsePydll)[0];
        assert_eq!(r.estimated_savings_ns, 320 * 100_000);
        // Measured to save nothing: no advice.
        let mut p = tiny_calls(60, 1);
        add_measured(&mut p, crate::measure::USE_PYDLL, "ii->", 480.0, -3.0, 9.0);
        assert!(of_kind(&p, AdviceKind::UsePydll).is_empty());
        // The agent's wait alone is under a tenth of the crossing (20 of 310 ns): no advice; the
        // measured round trip (55 ns) is not.
        let p = tiny_calls(20, 1);
        assert!(of_kind(&p, AdviceKind::UsePydll).is_empty());
        let mut p = tiny_calls(20, 1);
        add_measured(&mut p, crate::measure::USE_PYDLL, "ii->", 480.0, 55.0, 4.0);
        assert_eq!(
            of_kind(&p, AdviceKind::UsePydll)[0].estimated_savings_ns,
            55 * 100_000
        );
        // A measurement whose spread exceeds it says nothing: the estimate stays modeled.
        let mut p = tiny_calls(60, 1);
        add_measured(
            &mut p,
            crate::measure::USE_PYDLL,
            "ii->",
            480.0,
            -70.0,
            170.0,
        );
        let r = &of_kind(&p, AdviceKind::UsePydll)[0];
        assert_eq!(r.estimate, Estimate::modeled(60.0));
        assert_eq!(r.estimated_savings_ns, 60 * 100_000);
    }

    #[test]
    fn small_gil_share_is_not_contention() {
        // GIL wait 40 ns against 60 ns of marshal-out: under half.
        let mut p = tiny_calls(40, 4);
        add_measured(&mut p, crate::measure::USE_PYDLL, "ii->", 480.0, 55.0, 4.0);
        assert!(of_kind(&p, AdviceKind::GilContention).is_empty());
    }
}
