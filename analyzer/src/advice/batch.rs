//! batch: many calls from one site where crossing the boundary costs more than the C code.

use serde::Serialize;
use serde_json::json;

use super::{at_site, names, AdviceKind, Candidate, Confidence, Context};
use crate::cost_model::Place;
use crate::text::{fmt_bytes, fmt_ns};

/// The figures behind a batch estimate (see the cost model).
#[derive(Debug, Serialize)]
struct BatchEvidence {
    calls: u64,
    timed_calls: u64,
    marshal_in_ns: u64,
    marshal_out_ns: u64,
    gil_wait_ns: u64,
    native_ns: u64,
    overhead_per_call_ns: f64,
    native_per_call_ns: f64,
    /// Mean Python time between two consecutive calls of the site (the loop around the call);
    /// null when too few pairs of calls were measured (then taken as 0).
    gap_per_call_ns: Option<f64>,
    /// Pairs of consecutive calls the gap was measured on.
    gap_samples: u64,
    /// The loop the batched call removes: (calls - 1) × gap per call.
    loop_ns: u64,
    /// Construction of the buffers passed per call, which the batched call still needs (one buffer
    /// over all the data, built at the same per-byte cost).
    construction_ns: u64,
    moved_bytes: u64,
    /// null when the profile could not measure it (then taken as 0).
    marshal_ns_per_byte: Option<f64>,
    current_ns: u64,
    batched_ns: u64,
    bulk_sibling: Option<String>,
    /// Whether the library's exported symbols were known, so that "no sibling" means none exists.
    exports_known: bool,
    /// Buffer bytes per call: non-zero when the function already takes a buffer.
    buffer_bytes_per_call: u64,
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

pub(super) fn advise(ctx: &Context<'_>, place: Place<'_>) -> Option<Candidate> {
    let m = place.measured();
    if m.calls < 2 {
        return None;
    }
    let overhead = m.overhead_per_call_ns();
    let native = m.native_per_call_ns();
    if overhead <= 0.0 || overhead < ctx.options.batch_min_overhead_ratio * native {
        return None;
    }
    let per_byte = ctx.marshal_ns_per_byte;
    let gap = ctx.gap_per_call(&m);
    // Today: every call's crossing and C code, the Python loop between consecutive calls (which
    // contains the construction of any buffer built per call), and that construction.
    let loop_ns = ((m.calls - 1) as f64 * gap.unwrap_or(0.0)).round() as u64;
    let current = m.call_ns() + loop_ns;
    // Batched: one crossing, all of today's C work, the data converted into one buffer, and the
    // buffers' construction (one buffer over all the data costs what the per-call buffers did).
    let batched = (overhead
        + m.time.native as f64
        + m.moved_bytes() as f64 * per_byte.unwrap_or(0.0)
        + m.time.construction as f64)
        .round() as u64;
    let saving = current.saturating_sub(batched);
    if saving == 0 {
        return None;
    }

    let f = place.function;
    let known = ctx.known_names(&f.library);
    let sibling = names::bulk_siblings(&f.function, &known)
        .first()
        .map(|s| s.to_string());
    let exports_known = ctx.exports_known(&f.library);
    // A function that already takes a buffer is batched by passing more per call, which only works
    // when the calls differ in their data alone: less certain than swapping in a bulk sibling.
    let buffer_per_call = m.buffer_bytes / m.calls;
    // The gap counts as removed only where the loop does little besides the call: Python work of the
    // program's own between calls (computing each element) partly stays after batching.
    let loop_is_plain =
        gap.is_some_and(|g| g <= ctx.options.batch_max_gap_ratio * (overhead + native));
    let wanted = match (&sibling, per_byte.is_some() && loop_is_plain) {
        (Some(_), true) => Confidence::High,
        (None, _) if buffer_per_call > 0 => Confidence::Low,
        _ => Confidence::Medium,
    };
    let confidence = ctx.cap_by_timing(wanted, m.timed_calls);

    let lib = f.library_name();
    let looping = match gap {
        Some(g) => format!(
            ", and {} of Python runs between consecutive calls",
            fmt_ns(g.round() as u64)
        ),
        None => String::new(),
    };
    let head = format!(
        "{} is called {} times{}: each call spends {} on marshaling and the GIL against {} in C{looping}.",
        f.function,
        m.calls,
        at_site(&place),
        fmt_ns(overhead.round() as u64),
        fmt_ns(native.round() as u64),
    );
    let change = match (&sibling, exports_known) {
        (Some(s), _) => format!(
            " {lib} exports {s}: put the elements in one buffer (array.array, numpy or a ctypes array) and \
             call {s} once over all of them (or once per large chunk)."
        ),
        (None, _) if buffer_per_call > 0 => format!(
            " It already takes a buffer ({} per call): where the calls differ only in their data, put that data \
             in one larger buffer and make one call over it (or one per large chunk).",
            fmt_bytes(buffer_per_call)
        ),
        (None, true) => format!(
            " {lib} exports no bulk variant (looked for {}): add one on the C side that takes a pointer and a \
             length and loops in C, then call it once over all the elements.",
            names::bulk_candidates(&f.function)[..6].join(", ")
        ),
        (None, false) => format!(
            " If {lib} has a bulk variant (such as {}_many, or a function over a pointer and a length), call it \
             once over all the elements; otherwise add one on the C side.",
            f.function
        ),
    };
    let evidence = BatchEvidence {
        calls: m.calls,
        timed_calls: m.timed_calls,
        marshal_in_ns: m.time.marshal_in,
        marshal_out_ns: m.time.marshal_out,
        gil_wait_ns: m.time.gil_wait,
        native_ns: m.time.native,
        overhead_per_call_ns: round1(overhead),
        native_per_call_ns: round1(native),
        gap_per_call_ns: gap.map(round1),
        gap_samples: m.gap_samples,
        loop_ns,
        construction_ns: m.time.construction,
        moved_bytes: m.moved_bytes(),
        marshal_ns_per_byte: per_byte.map(|x| (x * 1000.0).round() / 1000.0),
        current_ns: current,
        batched_ns: batched,
        bulk_sibling: sibling,
        exports_known,
        buffer_bytes_per_call: buffer_per_call,
    };
    let rec = ctx.recommendation(
        AdviceKind::Batch,
        place,
        saving,
        confidence,
        json!(evidence),
        head + &change,
    );
    Some(Candidate {
        rec,
        correctness: false,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::*;

    fn batch_only(p: &Profile, o: &AdviceOptions) -> Vec<Recommendation> {
        of_kind_with(p, o, AdviceKind::Batch)
    }

    #[test]
    fn saving_is_all_calls_but_one_of_overhead() {
        let p = loop_profile(200_000, 300, 30);
        let recs = batch_only(&p, &AdviceOptions::default());
        assert_eq!(recs.len(), 1);
        let r = &recs[0];
        // No per-byte cost measurable with one place: saving = (calls - 1) × overhead.
        assert_eq!(r.estimated_savings_ns, 199_999 * 300);
        assert_eq!(r.evidence["marshal_ns_per_byte"], Value::Null);
        assert_eq!(r.evidence["overhead_per_call_ns"], 300.0);
        assert_eq!(
            r.confidence,
            Confidence::Medium,
            "no sibling known, per-byte cost unknown"
        );
        assert!(
            (r.savings_percent - 75.76).abs() < 0.01,
            "{}",
            r.savings_percent
        );
        assert!(r.suggestion.contains("work.py:12"));
    }

    #[test]
    fn names_the_exported_bulk_sibling() {
        let p = loop_profile(200_000, 300, 30);
        let o = AdviceOptions::default().with_exported_symbols(
            "libffifixture.so",
            vec!["fx_scale".into(), "fx_scale_many".into()],
        );
        let r = &batch_only(&p, &o)[0];
        assert_eq!(r.evidence["bulk_sibling"], "fx_scale_many");
        assert!(r.suggestion.contains("exports fx_scale_many"));
        let o = AdviceOptions::default().with_exported_symbols(LIB, vec!["fx_scale".into()]);
        let r = &batch_only(&p, &o)[0];
        assert_eq!(r.evidence["bulk_sibling"], Value::Null);
        assert!(
            r.suggestion.contains("exports no bulk variant"),
            "{}",
            r.suggestion
        );
    }

    #[test]
    fn measured_per_byte_cost_is_charged_to_the_batched_call() {
        let mut p = loop_profile(200_000, 300, 30);
        p.functions.push(kib_mover());
        let r = &batch_only(&p, &AdviceOptions::default())[0];
        assert_eq!(r.function, "fx_scale");
        assert_eq!(r.evidence["marshal_ns_per_byte"], 5.0);
        let moved = 200_000 * 16;
        assert_eq!(r.estimated_savings_ns, 199_999 * 300 - 5 * moved);
    }

    #[test]
    fn the_loop_between_calls_is_saved_too() {
        // 250 ns of Python between consecutive calls: batching removes the loop around each call.
        let p = loop_profile_with_gap(200_000, 300, 30, 250);
        let r = &batch_only(&p, &AdviceOptions::default())[0];
        assert_eq!(r.estimated_savings_ns, 199_999 * (300 + 250));
        assert_eq!(r.evidence["gap_per_call_ns"], 250.0);
        assert_eq!(r.evidence["gap_samples"], 199_999);
        assert_eq!(r.evidence["loop_ns"], 199_999 * 250);
        assert!(
            r.suggestion
                .contains("250ns of Python runs between consecutive calls"),
            "{}",
            r.suggestion
        );
        // Without a measured gap, only the crossings are claimed, and the text says nothing of a loop.
        let p = loop_profile(200_000, 300, 30);
        let r = &batch_only(&p, &AdviceOptions::default())[0];
        assert_eq!(r.estimated_savings_ns, 199_999 * 300);
        assert_eq!(r.evidence["gap_per_call_ns"], Value::Null);
        assert!(!r.suggestion.contains("between consecutive calls"));
    }

    /// A second function moving 1 KiB per call, with 5 ns more marshaling per extra byte: what makes
    /// the per-byte cost measurable.
    fn kib_mover() -> FunctionRecord {
        let c = PerCall {
            native: 2_000,
            marshal_in: 210 + 5 * (1024 - 16),
            marshal_out: 90,
            arg_bytes: 1024,
            ..PerCall::default()
        };
        function("fx_sum", vec![site("work.py", 20, 100, c)])
    }

    /// A loop profile plus a second function that makes the per-byte cost measurable, with the bulk
    /// sibling exported: everything `high` confidence needs except, perhaps, a plain loop.
    fn with_sibling_and_slope(gap: u64) -> (Profile, AdviceOptions) {
        let mut p = loop_profile_with_gap(200_000, 300, 30, gap);
        p.functions.push(kib_mover());
        let o = AdviceOptions::default().with_exported_symbols(LIB, vec!["fx_scale_many".into()]);
        (p, o)
    }

    #[test]
    fn high_confidence_needs_a_measured_plain_loop() {
        let (p, o) = with_sibling_and_slope(250);
        assert_eq!(batch_only(&p, &o)[0].confidence, Confidence::High);
        // 2 µs of Python between calls of 330 ns: the loop does work of its own, part of which stays.
        let (p, o) = with_sibling_and_slope(2_000);
        let r = &batch_only(&p, &o)[0];
        assert_eq!(r.confidence, Confidence::Medium);
        assert_eq!(r.evidence["loop_ns"], 199_999 * 2_000);
        // No gap measured: the estimate leaves the loop out, and says less.
        let (p, o) = with_sibling_and_slope(0);
        assert_eq!(batch_only(&p, &o)[0].confidence, Confidence::Medium);
        // Gap measured on too few pairs: not used at all.
        let (mut p, o) = with_sibling_and_slope(250);
        p.functions[0].sites[0].gap_samples = 10;
        p.functions[0].sites[0].gap_ns = 2_500;
        let r = &batch_only(&p, &o)[0];
        assert_eq!(r.confidence, Confidence::Medium);
        assert_eq!(r.evidence["loop_ns"], 0);
        assert_eq!(r.evidence["gap_per_call_ns"], Value::Null);
        assert_eq!(r.evidence["gap_samples"], 10);
    }

    #[test]
    fn the_loop_never_outlasts_the_run() {
        // A mean inflated by a descheduled thread: 200k × 1 ms would be 200 s of a 0.2 s run.
        let mut p = loop_profile_with_gap(200_000, 300, 30, 1_000_000);
        p.meta.duration_ns = 200_000_000;
        let r = &batch_only(&p, &AdviceOptions::default())[0];
        let calls_ns = 200_000 * 330;
        assert_eq!(r.evidence["loop_ns"], 200_000_000 - calls_ns);
        assert!(r.savings_percent <= 100.0, "{}", r.savings_percent);
    }

    #[test]
    fn buffers_built_per_call_are_still_built_when_batched() {
        // 1 µs of construction per call, inside the 1.5 µs gap: the loop goes, the building stays
        // (one buffer over all the data costs what the per-call buffers did).
        let c = PerCall {
            construction: 1_000,
            construction_bytes: 4096,
            fresh: true,
            gap: 1_500,
            ..fill_call()
        };
        let p = profile(
            vec![function("fx_fill", vec![site("io.py", 8, 50_000, c)])],
            200_000_000,
        );
        let r = &batch_only(&p, &AdviceOptions::default())[0];
        assert_eq!(
            r.estimated_savings_ns,
            49_999 * (550 + 1_500) - 50_000 * 1_000
        );
        assert_eq!(r.evidence["construction_ns"], 50_000_000);
    }

    #[test]
    fn already_batched_function_gets_no_advice() {
        // Few calls, each over a large buffer: native time dominates the per-call overhead.
        let c = PerCall {
            native: 400_000,
            marshal_in: 250,
            marshal_out: 80,
            arg_bytes: 16,
            buffer_bytes: 800_000,
            ..PerCall::default()
        };
        let p = profile(
            vec![function("fx_sum", vec![site("work.py", 5, 50, c)])],
            30_000_000,
        );
        assert!(batch_only(&p, &AdviceOptions::default()).is_empty());
    }

    /// A call of a function that takes a 4 KiB buffer, with more overhead than C work.
    fn fill_call() -> PerCall {
        PerCall {
            native: 300,
            marshal_in: 400,
            marshal_out: 150,
            arg_bytes: 24,
            buffer_bytes: 4096,
            ..PerCall::default()
        }
    }

    #[test]
    fn function_taking_a_buffer_is_told_to_pass_more_per_call() {
        let p = profile(
            vec![function(
                "fx_fill",
                vec![site("io.py", 8, 50_000, fill_call())],
            )],
            60_000_000,
        );
        let r = &batch_only(&p, &AdviceOptions::default())[0];
        assert!(
            r.suggestion
                .contains("already takes a buffer (4.0KiB per call)"),
            "{}",
            r.suggestion
        );
        assert_eq!(r.confidence, Confidence::Low);
        assert_eq!(r.evidence["buffer_bytes_per_call"], 4096);
        assert!(!r.example().unwrap().contains("fx_fill_many"));
    }

    #[test]
    fn saving_under_threshold_gets_no_advice() {
        // 200 calls × 300 ns = 60 µs < 100 µs.
        let p = loop_profile(200, 300, 30);
        assert!(batch_only(&p, &AdviceOptions::default()).is_empty());
        // Over the ns threshold but under 1 % of a long run.
        let mut p = loop_profile(2_000, 300, 30);
        p.meta.duration_ns = 1_000_000_000;
        assert!(batch_only(&p, &AdviceOptions::default()).is_empty());
        let lenient = AdviceOptions {
            min_savings_percent: 0.0,
            ..AdviceOptions::default()
        };
        assert_eq!(batch_only(&p, &lenient).len(), 1);
    }

    #[test]
    fn few_timed_calls_lower_confidence() {
        let mut p = loop_profile(200_000, 300, 30);
        p.functions[0].sites[0].timed_calls = 10;
        let o = AdviceOptions::default().with_exported_symbols(LIB, vec!["fx_scale_many".into()]);
        assert_eq!(batch_only(&p, &o)[0].confidence, Confidence::Low);
    }
}
