//! use-pydll and gil-contention: what releasing the GIL around each call costs.
//!
//! ctypes' `CDLL` functions release the GIL before entering C and take it back after; for a function
//! that runs for less time than that round trip, in a program with no other thread to run meanwhile,
//! the release buys nothing. With several threads, each re-acquisition can wait for another thread.

use serde::Serialize;
use serde_json::json;

use super::{AdviceKind, Candidate, Confidence, Context};
use crate::cost_model::{per, Place};
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
    /// use-pydll: GIL wait / boundary time of the calls; gil-contention: GIL wait / (GIL wait + marshal-out).
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
        let gil = per(f.time.gil_wait, f.python_calls);
        let native = per(f.time.native, f.calls);
        let boundary = f.time.native + f.time.overhead();
        let share = per(f.time.gil_wait, boundary);
        let p99 = native_p99(f);
        if native > gil
            || p99 as f64 > o.use_pydll_max_p99_ratio * gil
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
        let place = Place {
            function: f,
            site: None,
        };
        let rec = ctx.recommendation(
            AdviceKind::UsePydll,
            place,
            f.time.gil_wait,
            confidence,
            evidence(f, threads, share),
            suggestion,
        );
        out.push(Candidate {
            rec,
            correctness: false,
        });
    }
    out
}

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
        let mut suggestion = format!(
            "With {threads} threads, each call to {} waits {} to take the GIL back after {} in C. ",
            f.function,
            fmt_ns(gil.round() as u64),
            fmt_ns(native.round() as u64),
        );
        if native < gil {
            suggestion.push_str(
                "The C work is shorter than the hand-off it causes: batch the calls so the GIL changes hands once \
                 per batch, or keep the GIL across this short call (ctypes.PYFUNCTYPE / PyDLL).",
            );
        } else {
            suggestion.push_str(
                "Make fewer, larger calls so threads trade the GIL less often, or move the parallel part into C \
                 threads or separate processes.",
            );
        }
        let saving = f.time.gil_wait / u64::from(threads);
        let place = Place {
            function: f,
            site: None,
        };
        let rec = ctx.recommendation(
            AdviceKind::GilContention,
            place,
            saving,
            Confidence::Low,
            evidence(f, threads, share),
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
    fn gil_wait_with_threads_is_contention() {
        let p = tiny_calls(17_000, 4);
        let recs = of_kind(&p, AdviceKind::GilContention);
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].estimated_savings_ns, 17_000 * 100_000 / 4);
        assert_eq!(recs[0].confidence, Confidence::Low);
        assert!(recs[0].suggestion.contains("PYFUNCTYPE"));
    }

    #[test]
    fn small_gil_share_is_not_contention() {
        // GIL wait 40 ns against 60 ns of marshal-out: under half.
        assert!(of_kind(&tiny_calls(40, 4), AdviceKind::GilContention).is_empty());
    }
}
