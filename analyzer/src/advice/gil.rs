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
    /// calls, or the measured share (`measured_share`) when larger; gil-contention: GIL wait / (GIL
    /// wait + marshal-out).
    gil_share: f64,
}

fn round(x: f64, places: i32) -> f64 {
    let k = 10f64.powi(places);
    (x * k).round() / k
}

/// The native time of a typical call: the median, or the mean when the agent recorded no
/// histogram. The gates compare the C work with the GIL's cost through it: a mean is moved by the
/// few timed calls the scheduler preempted (on a loaded machine a 10 ns function's mean read
/// 180 ns in one profile of five, and its advice was lost).
fn native_typical(f: &FunctionRecord) -> f64 {
    if f.native_hist.is_empty() {
        per(f.time.native, f.calls)
    } else {
        f.native_hist.summary().p50_ns as f64
    }
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
        // moves with the load, and either shows what holding the GIL spares. The share is the
        // larger of the round trip against the crossings the agent saw and the timed saving
        // against the timed call (both from one moment's untraced loop): a loaded run inflates
        // the traced crossings (marshal-in read 900 ns a call where 300 ns is usual, and the
        // share of a 60 ns round trip fell under a tenth), never the calm figure beside them.
        let measured = measure::signature(&place)
            .and_then(|s| measure::measurement(ctx.profile, measure::USE_PYDLL, &s));
        let timed = measured.map(measure::Timed::from);
        let gil = per(f.time.gil_wait, f.python_calls);
        if timed.is_some_and(|t| t.saving_ns <= 0.0) {
            continue;
        }
        let round_trip = timed.map_or(gil, |t| t.saving_ns.max(gil));
        let native = native_typical(f);
        let boundary = f.time.native + f.time.overhead();
        let measured_share = measured.map(|m| m.saving_ns / m.before_ns.max(1.0));
        let share = (round_trip * f.python_calls as f64 / boundary.max(1) as f64)
            .max(measured_share.unwrap_or(0.0));
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
        evidence["measured_share"] = json!(measured_share.map(|x| round(x, 3)));
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
/// re-acquisition it no longer makes, on the one path the GIL serialises, as it costs with the
/// other threads waiting: the change timed on this interpreter with the threads the profile saw
/// calling (`gil-contention`), per call. Where only the one-thread round trip was timed (a profile
/// calibrated before there was a threaded figure), that — a lower bound. Without either, no time
/// is claimed and the advice is not given; nor for C work longer than the hand-off, where
/// releasing the GIL lets other threads run.
pub(super) fn contention_rule(ctx: &Context<'_>) -> Vec<Candidate> {
    if ctx.profile.meta.threads < 2 {
        return Vec::new();
    }
    let mut out = Vec::new();
    for f in &ctx.profile.functions {
        // The threads that called it: one caller's waits are other threads' Python work, which
        // keeping the GIL at its calls does not remove.
        let threads = measure::calling_threads(ctx.profile, f);
        if f.python_calls == 0 || f.time.gil_wait == 0 || threads < 2 {
            continue;
        }
        let gil = per(f.time.gil_wait, f.python_calls);
        let native = native_typical(f);
        if native >= gil {
            continue;
        }
        let place = Place {
            function: f,
            site: None,
        };
        let Some(sig) = measure::signature(&place) else {
            continue;
        };
        // The threaded figure, else the one-thread round trip: (saving, threads it was timed with).
        let shape = measure::contention_shape(threads, &sig);
        let threaded = measure::measurement(ctx.profile, measure::GIL_CONTENTION, &shape)
            .filter(|m| m.saving_ns > 0.0);
        let Some((t, timed_threads)) = threaded
            .map(|m| (measure::Timed::from(m), threads.min(measure::MAX_THREADS)))
            .or_else(|| {
                measure::timed(ctx.profile, measure::USE_PYDLL, &sig)
                    .filter(|t| t.saving_ns > 0.0)
                    .map(|t| (t, 1))
            })
        else {
            continue;
        };
        // Worth it when the calls' waits are most of what follows the C work, or when the change
        // timed in the program's shape saves a share of the call's loop as use-pydll asks: in a
        // run where the GIL seldom changed hands at these calls (the threads traded it at the
        // switch interval) the waits are short, yet each release still signals the waiting
        // threads, which the threaded figure counts.
        let share = per(f.time.gil_wait, f.time.gil_wait + f.time.marshal_out);
        let measured_share = threaded.map(|m| m.saving_ns / m.before_ns.max(1.0));
        if share < ctx.options.gil_contention_min_share
            && measured_share.is_none_or(|x| x < ctx.options.use_pydll_min_gil_share)
        {
            continue;
        }
        // The hand-offs the run itself made, where they cost more than the timed change: the
        // calm rounds a timing keeps are those whose threads did not fall into a convoy, while
        // the profile saw the program's own threads in one.
        let handoff = threaded.and_then(|m| handoff_per_call(f, threads, m.after_ns));
        let modeled = handoff.filter(|h| *h > t.saving_ns);
        let per_call = modeled.unwrap_or(t.saving_ns);
        let contended = contended_calls(f, threads);
        let saving = ((per_call * contended as f64).round() as u64).min(f.time.overhead());
        // What the calm rounds' timed change alone saves: the saving of a run that does not convoy.
        let calm_saving = ((t.saving_ns * contended as f64).round() as u64).min(saving);
        let saved_per_call = saving as f64 / f.python_calls as f64;
        let estimate = match modeled {
            Some(_) => Estimate::modeled(saved_per_call),
            None => Estimate::measured(saved_per_call, t.spread_ns),
        };
        let timed_with = if timed_threads == 1 {
            "in one thread: a lower bound".to_string()
        } else {
            format!("with {timed_threads} threads")
        };
        let counted = match modeled {
            Some(h) => format!(
                "the wall time the GIL spent changing hands at these calls in this run ({} a call: each \
                 thread's call and loop, {} a call, shared among {threads} threads, less the {} a call \
                 takes with the GIL kept, timed on this interpreter {timed_with}). Whether threads fall \
                 into such a convoy varies from run to run with the scheduler and the machine's load; in a \
                 run whose threads do not, the saving is only the release and re-acquisition each call \
                 makes, {} a call ({} in all)",
                fmt_ns(h.round() as u64),
                fmt_ns(thread_loop_per_call(f).round() as u64),
                fmt_ns(handoff_held(f, threaded.map_or(0.0, |m| m.after_ns)).round() as u64),
                fmt_ns(t.saving_ns.round() as u64),
                fmt_ns(calm_saving),
            ),
            _ => format!(
                "the release and re-acquisition each call makes, timed on this interpreter {timed_with} \
                 ({} a call)",
                fmt_ns(t.saving_ns.round() as u64)
            ),
        };
        let suggestion = format!(
            "With {threads} threads, each call to {} waits {} to take the GIL back after {} in C: the C work is \
             shorter than the hand-off it causes. Keep the GIL across this short call (ctypes.PYFUNCTYPE, or the \
             function from a ctypes.PyDLL) so threads trade it at the interpreter's switch interval instead of \
             on every call, or batch the calls so it changes hands once per batch. The waits overlap other \
             threads' work, so the saving counted is {counted}.",
            f.function,
            fmt_ns(gil.round() as u64),
            fmt_ns(native.round() as u64),
        );
        let mut evidence = evidence(f, threads, share);
        evidence["measured_round_trip_per_call_ns"] = json!(round(t.saving_ns, 1));
        evidence["measured_threads"] = json!(timed_threads);
        evidence["measured_share"] = json!(measured_share.map(|x| round(x, 3)));
        evidence["thread_loop_per_call_ns"] = json!(round(thread_loop_per_call(f), 1));
        evidence["calling_threads"] = json!(threads);
        evidence["contended_calls"] = json!(contended);
        evidence["handoff_per_call_ns"] = json!(handoff.map(|h| round(h, 1)));
        if modeled.is_some() {
            evidence["saving_lower_bound_ns"] = json!(calm_saving);
        }
        let rec = ctx.recommendation(
            AdviceKind::GilContention,
            place,
            saving,
            estimate,
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

/// Above this GIL wait a call, the threads traded the GIL at the interpreter's switch interval
/// (5 ms by default), not at these calls: the waits are other threads' Python work, which keeping
/// the GIL does not remove, and no hand-off is counted.
const MAX_HANDOFF_WAIT_NS: f64 = 500_000.0;

/// The calls that could have met another caller waiting for the GIL. With the calls shared
/// unevenly, the busiest thread's calls contend only while the others call: taking turns, one of
/// its calls for each round of the other `threads - 1`, so the others' calls and as many as a
/// `1 / (threads - 1)` share of them. All the calls when the profile does not say.
fn contended_calls(f: &FunctionRecord, threads: u32) -> u64 {
    if f.busiest_thread_python_calls == 0 || threads < 2 {
        return f.python_calls;
    }
    let others = f.python_calls.saturating_sub(f.busiest_thread_python_calls);
    let turns = others as f64 * threads as f64 / (threads - 1) as f64;
    (turns.round() as u64).min(f.python_calls)
}

/// A calling thread's time per call: the call's whole time at the boundary and the Python time
/// between two of its calls (the loop around it, when measured).
fn thread_loop_per_call(f: &FunctionRecord) -> f64 {
    per(f.time.total(), f.calls) + mean_gap(f)
}

/// The mean Python time between two consecutive calls of the function's sites, 0 when unmeasured.
fn mean_gap(f: &FunctionRecord) -> f64 {
    let (ns, samples) = f
        .sites
        .iter()
        .fold((0u64, 0u64), |(n, k), s| (n + s.gap_ns, k + s.gap_samples));
    per(ns, samples)
}

/// What a call and its loop hold the GIL for with the GIL kept: the timed loop of the change's
/// "after" (with the profile's threads, untraced) and the Python work between two calls.
fn handoff_held(f: &FunctionRecord, after_ns: f64) -> f64 {
    after_ns + mean_gap(f)
}

/// The wall time per call the GIL spent changing hands at these calls in the profiled run, when
/// the threads fell into a convoy (each call's release handing the GIL to a waiting thread): the
/// calling threads' loops run one at a time, so the run lasts their time per call shared among
/// the threads — of which the calls with the GIL kept would hold it only `handoff_held`; the rest
/// is the GIL passing between threads, which keeping it across the call removes. `None` when the
/// threads did not convoy (no time left over) or waited at the switch interval instead.
fn handoff_per_call(f: &FunctionRecord, threads: u32, after_ns: f64) -> Option<f64> {
    if threads < 2 || per(f.time.gil_wait, f.python_calls) > MAX_HANDOFF_WAIT_NS {
        return None;
    }
    let shared = thread_loop_per_call(f) / threads as f64;
    Some(shared - handoff_held(f, after_ns)).filter(|h| *h > 0.0)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::*;
    use ffiprof_profile::Histogram;

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

    #[test]
    fn contention_saving_is_the_change_timed_with_the_profiles_threads() {
        let mut p = tiny_calls(1_500, 4);
        p.meta.duration_ns = 100_000 * 1_800 / 4;
        // The one-thread round trip (55 ns) and the same change timed with 4 threads (80 ns,
        // what the releases cost with three threads waiting): the threaded figure counts.
        add_measured(&mut p, crate::measure::USE_PYDLL, "ii->", 480.0, 55.0, 4.0);
        add_measured(
            &mut p,
            crate::measure::GIL_CONTENTION,
            "4:ii->",
            560.0,
            80.0,
            6.0,
        );
        let r = &of_kind(&p, AdviceKind::GilContention)[0];
        assert_eq!(r.estimated_savings_ns, 80 * 100_000);
        assert_eq!(r.estimate, Estimate::measured(80.0, 6.0));
        assert_eq!(r.evidence["measured_threads"], 4);
        assert_eq!(r.evidence["measured_round_trip_per_call_ns"], 80.0);
        assert!(
            r.suggestion.contains("with 4 threads (80ns a call)"),
            "{}",
            r.suggestion
        );
        // Timed with another thread count: not this profile's shape; the one-thread figure is
        // left, a lower bound, and says so.
        p.meta.threads = 3;
        let r = &of_kind(&p, AdviceKind::GilContention)[0];
        assert_eq!(r.estimated_savings_ns, 55 * 100_000);
        assert_eq!(r.evidence["measured_threads"], 1);
        assert!(
            r.suggestion.contains("in one thread: a lower bound"),
            "{}",
            r.suggestion
        );
        // Threaded figures are timed with at most MAX_THREADS threads.
        let mut p = tiny_calls(1_500, 12);
        add_measured(
            &mut p,
            crate::measure::GIL_CONTENTION,
            "8:ii->",
            560.0,
            90.0,
            6.0,
        );
        let r = &of_kind(&p, AdviceKind::GilContention)[0];
        assert_eq!(r.estimated_savings_ns, 90 * 100_000);
        assert_eq!(r.evidence["measured_threads"], 8);
        // Never more than the crossings (1 760 ns a call here).
        let mut p = tiny_calls(1_500, 4);
        p.meta.duration_ns = 100_000 * 1_800 / 4;
        add_measured(
            &mut p,
            crate::measure::GIL_CONTENTION,
            "4:ii->",
            90_000.0,
            20_000.0,
            6.0,
        );
        let r = &of_kind(&p, AdviceKind::GilContention)[0];
        assert_eq!(r.estimated_savings_ns, 1_760 * 100_000);
    }

    #[test]
    fn a_convoy_saves_the_hand_offs_the_run_made() {
        // Four threads in a convoy: each call waits 17 µs for the GIL, its thread's loop lasts
        // 30 + 200 + 60 + 17 000 ns at the boundary and 240 ns between calls. The loops run one at a
        // time, 4 382.5 ns a call shared among the 4; with the GIL kept a call and its loop hold it
        // 560 + 240 ns (the timed "after" and the gap). The rest, 3 582.5 ns a call, is the GIL
        // changing hands: more than the 80 ns the calm timed rounds saw, and what is claimed.
        let c = PerCall {
            native: 30,
            marshal_in: 200,
            marshal_out: 60,
            gil: 17_000,
            arg_bytes: 8,
            gap: 240,
            ..PerCall::default()
        };
        let convoy = |gil: u64| {
            let mut p = profile(
                vec![function(
                    "fx_get",
                    vec![site("hot.py", 8, 100_000, PerCall { gil, ..c })],
                )],
                100_000 * 17_530 / 4,
            );
            p.meta.threads = 4;
            add_measured(
                &mut p,
                crate::measure::GIL_CONTENTION,
                "4:ii->",
                640.0,
                80.0,
                6.0,
            );
            p
        };
        let p = convoy(17_000);
        let r = &of_kind(&p, AdviceKind::GilContention)[0];
        assert_eq!(r.estimated_savings_ns, 358_250_000);
        assert_eq!(r.estimate, Estimate::modeled(3_582.5));
        assert_eq!(r.evidence["handoff_per_call_ns"], 3_582.5);
        // A run that does not convoy saves what the calm rounds timed: 80 ns a call.
        assert_eq!(r.evidence["saving_lower_bound_ns"], 8_000_000);
        assert_eq!(r.evidence["thread_loop_per_call_ns"], 17_530.0);
        assert!(
            r.suggestion.contains("changing hands")
                && r.suggestion.contains("(3.6µs a call")
                && r.suggestion.contains("80ns a call (8.00ms in all)"),
            "{}",
            r.suggestion
        );
        // Waits of a tenth of the switch interval and more are other threads' Python work, not
        // hand-offs at these calls: the timed change is all that is claimed.
        let p = convoy(600_000);
        let r = &of_kind(&p, AdviceKind::GilContention)[0];
        assert_eq!(r.estimate, Estimate::measured(80.0, 6.0));
        assert_eq!(r.evidence["handoff_per_call_ns"], Value::Null);
        assert_eq!(r.evidence.get("saving_lower_bound_ns"), None);
    }

    #[test]
    fn contention_counts_the_calls_that_could_meet_another_caller() {
        // 100 000 calls timed with 4 threads saving 80 ns each, in a calm run.
        let calm = |callers: u64, busiest: u64| {
            let mut p = tiny_calls(1_500, 4);
            p.functions[0].calling_threads = callers;
            p.functions[0].busiest_thread_python_calls = busiest;
            let shape = format!("{}:ii->", callers.clamp(2, 8));
            add_measured(
                &mut p,
                crate::measure::GIL_CONTENTION,
                &shape,
                560.0,
                80.0,
                6.0,
            );
            p
        };
        // Shared evenly among the 4: every call.
        let r = &of_kind(&calm(4, 25_000), AdviceKind::GilContention)[0];
        assert_eq!(r.estimated_savings_ns, 80 * 100_000);
        assert_eq!(r.evidence["contended_calls"], 100_000);
        assert_eq!(r.evidence["calling_threads"], 4);
        // One thread made 70 000 of them, three others 10 000 each: those 30 000 and one of the
        // busiest thread's calls per round of theirs, 40 000.
        let r = &of_kind(&calm(4, 70_000), AdviceKind::GilContention)[0];
        assert_eq!(r.evidence["contended_calls"], 40_000);
        assert_eq!(r.estimated_savings_ns, 80 * 40_000);
        assert_eq!(r.estimate, Estimate::measured(32.0, 6.0));
        // 97 000 of one thread: 4 000 calls, 0.32 ms of a 40 ms run, not worth advising.
        assert!(of_kind(&calm(4, 97_000), AdviceKind::GilContention).is_empty());
        // One caller among 4 threads: its waits are the others' Python work; no advice, nothing
        // timed for it.
        let p = calm(1, 100_000);
        assert!(of_kind(&p, AdviceKind::GilContention).is_empty());
        assert!(crate::measure::plan(&p, &AdviceOptions::default())
            .iter()
            .all(|r| r.change != crate::measure::GIL_CONTENTION));
    }

    #[test]
    fn the_plan_times_contention_with_the_profiles_threads() {
        let options = AdviceOptions::default();
        let shapes = |p: &Profile| -> Vec<(String, String)> {
            crate::measure::plan(p, &options)
                .into_iter()
                .filter(|r| r.change != crate::measure::LOOP)
                .map(|r| (r.change, r.shape))
                .collect()
        };
        assert_eq!(
            shapes(&tiny_calls(60, 1)),
            [("use-pydll".to_string(), "ii->".to_string())]
        );
        assert_eq!(
            shapes(&tiny_calls(17_000, 4)),
            [("gil-contention".to_string(), "4:ii->".to_string())]
        );
        assert_eq!(
            shapes(&tiny_calls(17_000, 30)),
            [("gil-contention".to_string(), "8:ii->".to_string())]
        );
    }

    #[test]
    fn preempted_calls_do_not_hide_use_pydll() {
        // 100 000 calls of 30 ns in C, of which 10 timed ones were preempted for 2 ms: their
        // mean (230 ns) is above the 60 ns round trip, their median is not.
        let mut p = tiny_calls(60, 1);
        let f = &mut p.functions[0];
        f.native_hist = Histogram::new();
        f.native_hist.record_n(30, 99_990);
        f.native_hist.record_n(2_000_000, 10);
        f.time.native = 30 * 99_990 + 2_000_000 * 10;
        let recs = of_kind(&p, AdviceKind::UsePydll);
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].estimated_savings_ns, 60 * 100_000);
        // A function whose typical call is longer than the round trip stays without the advice.
        let mut p = tiny_calls(60, 1);
        let f = &mut p.functions[0];
        f.native_hist = Histogram::new();
        f.native_hist.record_n(200, 100_000);
        assert!(of_kind(&p, AdviceKind::UsePydll).is_empty());
    }

    #[test]
    fn a_loaded_crossing_does_not_hide_use_pydll() {
        // The traced crossing inflated by load (900 ns of marshal-in a call): the 60 ns round
        // trip is 6 % of it, but 13 % of the untraced call it was timed against (466 ns).
        let c = PerCall {
            native: 15,
            marshal_in: 900,
            marshal_out: 200,
            gil: 110,
            arg_bytes: 8,
            ..PerCall::default()
        };
        let mut p = profile(
            vec![function("fx_get", vec![site("hot.py", 8, 100_000, c)])],
            100_000 * 1_600,
        );
        assert!(of_kind(&p, AdviceKind::UsePydll).is_empty());
        add_measured(&mut p, crate::measure::USE_PYDLL, "ii->", 466.0, 60.0, 9.0);
        let r = &of_kind(&p, AdviceKind::UsePydll)[0];
        assert_eq!(r.estimated_savings_ns, 60 * 100_000);
        assert_eq!(r.evidence["measured_share"], 0.129);
        // A change that saves under a tenth of the call it was timed on is still no advice.
        let mut p = tiny_calls(20, 1);
        p.functions[0].time.marshal_in *= 4;
        add_measured(&mut p, crate::measure::USE_PYDLL, "ii->", 900.0, 55.0, 4.0);
        assert!(of_kind(&p, AdviceKind::UsePydll).is_empty());
    }

    #[test]
    fn contention_in_a_run_whose_threads_traded_the_gil_at_the_switch_interval() {
        // Four threads, yet each call waited only 110 ns (the GIL seldom changed hands at these
        // calls) against 190 ns of marshal-out: under half. Timed with 4 threads, keeping the
        // GIL saves 70 of 470 ns a call: advised on that.
        let c = PerCall {
            native: 16,
            marshal_in: 290,
            marshal_out: 190,
            gil: 110,
            arg_bytes: 8,
            ..PerCall::default()
        };
        let mut p = profile(
            vec![function("fx_get", vec![site("hot.py", 8, 100_000, c)])],
            100_000 * 700 / 4,
        );
        p.meta.threads = 4;
        add_measured(&mut p, crate::measure::USE_PYDLL, "ii->", 400.0, 55.0, 4.0);
        assert!(of_kind(&p, AdviceKind::GilContention).is_empty());
        add_measured(
            &mut p,
            crate::measure::GIL_CONTENTION,
            "4:ii->",
            470.0,
            70.0,
            5.0,
        );
        let r = &of_kind(&p, AdviceKind::GilContention)[0];
        assert_eq!(r.estimated_savings_ns, 70 * 100_000);
        assert_eq!(r.evidence["measured_share"], 0.149);
        // Saving under a tenth of the threaded loop: not worth it.
        let m = p
            .measured_changes
            .as_mut()
            .unwrap()
            .measurements
            .last_mut()
            .unwrap();
        m.before_ns = 900.0;
        assert!(of_kind(&p, AdviceKind::GilContention).is_empty());
    }
}
