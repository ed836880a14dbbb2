//! reuse-buffer and zero-copy: ctypes objects built afresh for every call from one site.

use serde::Serialize;
use serde_json::json;

use super::{at_site, AdviceKind, Candidate, Confidence, Context};
use crate::cost_model::{per, Place};
use crate::text::{fmt_bytes, fmt_ns};

#[derive(Debug, Serialize)]
struct BufferEvidence {
    calls: u64,
    timed_calls: u64,
    fresh_buffer_calls: u64,
    construction_ns: u64,
    construction_bytes: u64,
    construction_per_call_ns: f64,
    bytes_per_buffer: u64,
    construction_ns_per_byte: f64,
    /// Mean Python time between consecutive calls of the site (null when measured on too few pairs): it holds the
    /// whole building and release of each fresh buffer, and the rest of the loop body.
    gap_per_call_ns: Option<f64>,
    gap_samples: u64,
    /// (fresh-buffer calls - 1) × gap per call: no more than the Python time between calls can go.
    /// The estimate (what was measured of each buffer's life) is the lower bound; null when the
    /// gap is unknown.
    saving_upper_bound_ns: Option<u64>,
}

pub(super) fn advise(ctx: &Context<'_>, place: Place<'_>) -> Option<Candidate> {
    let m = place.measured();
    let fresh = m.fresh_buffer_calls.min(m.calls);
    if fresh < 2 || m.time.construction == 0 {
        return None;
    }
    // Every fresh build but one goes; construction at calls without a fresh buffer (sizes that vary)
    // is left in, hence the division by all calls.
    let saving = (m.time.construction as u128 * (fresh - 1) as u128 / m.calls as u128) as u64;
    let per_call = per(m.time.construction, fresh);
    let bytes_per_buffer = m.construction_bytes / fresh;
    let ns_per_byte = per(m.time.construction, m.construction_bytes);
    let converts_values = m.construction_bytes > 0
        && ns_per_byte >= ctx.options.zero_copy_min_ns_per_byte
        && bytes_per_buffer >= ctx.options.zero_copy_min_bytes;
    let kind = if converts_values {
        AdviceKind::ZeroCopy
    } else {
        AdviceKind::ReuseBuffer
    };
    let wanted = if fresh == m.calls {
        Confidence::High
    } else {
        Confidence::Medium
    };
    let confidence = ctx.cap_by_timing(wanted, m.timed_calls);
    let gap = ctx.gap_per_call(&m);
    let upper = gap.map(|g| (((fresh - 1) as f64 * g).round() as u64).max(saving));

    let f = &place.function.function;
    let (which_calls, s) = if fresh == m.calls {
        (format!("Every call to {f}{}", at_site(&place)), "s")
    } else {
        (
            format!("{fresh} of {} calls to {f}{}", m.calls, at_site(&place)),
            "",
        )
    };
    let size = if bytes_per_buffer > 0 {
        format!("{}, ", fmt_bytes(bytes_per_buffer))
    } else {
        String::new()
    };
    let suggestion = match kind {
        AdviceKind::ZeroCopy => format!(
            "{which_calls} convert{s} Python values into a new ctypes array ({size}{} per call, \
             {ns_per_byte:.1} ns/B). Keep the values in an array.array or numpy array that the program updates \
             in place and pass its memory — a view made once with (ctypes.c_double * n).from_buffer(arr), or \
             arr.ctypes.data_as(...) — or, if the values never change, build the ctypes array once.",
            fmt_ns(per_call.round() as u64),
        ),
        _ => format!(
            "{which_calls} get{s} a freshly built ctypes object of the same type and size \
             ({size}{} to build each). Build it once outside the loop and pass the same one every call \
             (ctypes.memset it first if the C side relies on zeros).{}",
            fmt_ns(per_call.round() as u64),
            match upper {
                Some(u) if u > saving => format!(
                    " The saving shown counts what was measured of each buffer's life (type look-up, \
                     constructor, release; a create_string_buffer call whole, except on CPython 3.11); the \
                     interpreter's own work for the statement that builds it goes too, for up to {} in all \
                     (the Python time between the calls).",
                    fmt_ns(u)
                ),
                _ => String::new(),
            },
        ),
    };
    let evidence = BufferEvidence {
        calls: m.calls,
        timed_calls: m.timed_calls,
        fresh_buffer_calls: fresh,
        construction_ns: m.time.construction,
        construction_bytes: m.construction_bytes,
        construction_per_call_ns: (per_call * 10.0).round() / 10.0,
        bytes_per_buffer,
        construction_ns_per_byte: (ns_per_byte * 1000.0).round() / 1000.0,
        gap_per_call_ns: gap.map(|g| (g * 10.0).round() / 10.0),
        gap_samples: m.gap_samples,
        saving_upper_bound_ns: upper,
    };
    let rec = ctx.recommendation(kind, place, saving, confidence, json!(evidence), suggestion);
    Some(Candidate {
        rec,
        correctness: false,
    })
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::*;

    /// `create_string_buffer(4096)` per call: ~1 µs to zero 4 KiB, 0.25 ns/B.
    fn fresh_string_buffer(fresh: bool) -> Profile {
        let c = PerCall {
            native: 2_000,
            marshal_in: 300,
            marshal_out: 100,
            construction: 1_000,
            construction_bytes: 4096,
            buffer_bytes: 4096,
            arg_bytes: 16,
            fresh,
            ..PerCall::default()
        };
        let calls = 50_000;
        profile(
            vec![function("fx_fill", vec![site("io.py", 40, calls, c)])],
            calls * 4_000,
        )
    }

    #[test]
    fn fresh_empty_buffer_is_reuse_buffer() {
        let p = fresh_string_buffer(true);
        let recs = of_kind(&p, AdviceKind::ReuseBuffer);
        assert_eq!(recs.len(), 1);
        let r = &recs[0];
        assert_eq!(r.estimated_savings_ns, 1_000 * 49_999);
        assert_eq!(r.confidence, Confidence::High);
        assert_eq!(r.evidence["bytes_per_buffer"], 4096);
        assert!(r.suggestion.contains("io.py:40"), "{}", r.suggestion);
        assert!(of_kind(&p, AdviceKind::ZeroCopy).is_empty());
    }

    #[test]
    fn reused_buffer_gets_no_advice() {
        // Construction cost but no fresh buffers: the program already reuses it (or sizes vary).
        let p = fresh_string_buffer(false);
        assert!(of_kind(&p, AdviceKind::ReuseBuffer).is_empty());
        assert!(of_kind(&p, AdviceKind::ZeroCopy).is_empty());
    }

    #[test]
    fn array_built_from_a_list_is_zero_copy() {
        // (c_double * 500)(*values): ~35 µs for 4000 B, ~9 ns/B.
        let c = PerCall {
            native: 300,
            marshal_in: 300,
            marshal_out: 100,
            construction: 35_000,
            construction_bytes: 4000,
            buffer_bytes: 4000,
            arg_bytes: 16,
            fresh: true,
            ..PerCall::default()
        };
        let p = profile(
            vec![function("fx_sum", vec![site("sim.py", 7, 2_000, c)])],
            2_000 * 40_000,
        );
        let r = &of_kind(&p, AdviceKind::ZeroCopy)[0];
        assert_eq!(r.estimated_savings_ns, 35_000 * 1_999);
        assert_eq!(r.evidence["construction_ns_per_byte"], 8.75);
        assert!(r.suggestion.contains("from_buffer"));
        assert!(of_kind(&p, AdviceKind::ReuseBuffer).is_empty());
    }

    #[test]
    fn gap_bounds_the_saving_from_above() {
        // 1 µs to build, 1.5 µs of Python between calls (building, releasing and the rest of the loop).
        let mut p = fresh_string_buffer(true);
        let s = &mut p.functions[0].sites[0];
        s.gap_samples = 49_999;
        s.gap_ns = 1_500 * 49_999;
        let r = &of_kind(&p, AdviceKind::ReuseBuffer)[0];
        assert_eq!(r.estimated_savings_ns, 1_000 * 49_999);
        assert_eq!(r.evidence["gap_per_call_ns"], 1_500.0);
        assert_eq!(r.evidence["saving_upper_bound_ns"], 1_500 * 49_999);
        assert!(
            r.suggestion.contains("for up to 75.00ms in all"),
            "{}",
            r.suggestion
        );
        // Unknown gap: no upper bound.
        let r = &of_kind(&fresh_string_buffer(true), AdviceKind::ReuseBuffer)[0];
        assert_eq!(r.evidence["saving_upper_bound_ns"], Value::Null);
        assert!(!r.suggestion.contains("what was measured of each buffer"));
    }

    #[test]
    fn partly_fresh_site_is_prorated_and_medium() {
        let mut p = fresh_string_buffer(true);
        p.functions[0].sites[0].fresh_buffer_calls = 25_000;
        let r = &of_kind(&p, AdviceKind::ReuseBuffer)[0];
        assert_eq!(r.estimated_savings_ns, 1_000 * 50_000 * 24_999 / 50_000);
        assert_eq!(r.confidence, Confidence::Medium);
    }

    #[test]
    fn small_construction_saving_gets_no_advice() {
        let mut p = fresh_string_buffer(true);
        scale_calls(&mut p.functions[0], 1_000); // 50 calls × 1 µs = 50 µs
        assert!(of_kind(&p, AdviceKind::ReuseBuffer).is_empty());
    }
}
