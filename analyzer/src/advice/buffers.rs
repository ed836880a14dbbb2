//! reuse-buffer and zero-copy: ctypes objects built afresh for every call from one site.

use serde::Serialize;
use serde_json::json;

use super::{at_site, round1, AdviceKind, Candidate, Confidence, Context, Estimate};
use crate::cost_model::{per, Place};
use crate::measure;
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
    /// Null when the gap is unknown.
    saving_upper_bound_ns: Option<u64>,
    /// What the change saves per fresh object, timed on this interpreter in a loop that also calls
    /// C (null when not timed): building the object and releasing it, with the interpreter's own
    /// work for the statement and its effect on the rest of the loop.
    measured_per_call_ns: Option<f64>,
    /// reuse-buffer: the way of building it that was timed for the estimate — of `T()`,
    /// `(c_char * n)()` and `create_string_buffer(n)`, the one the agent saw
    /// (`fresh_buffer_builds`), else the one whose own cost is nearest the construction the
    /// probes measured (null when not timed).
    measured_constructor: Option<&'static str>,
    /// How the agent saw the objects built (the site's `fresh_buffer_builds`).
    fresh_buffer_builds: Vec<String>,
    /// The loop's own time per call around a call, timed (null when not).
    loop_overhead_per_call_ns: Option<f64>,
}

/// The measured saving per fresh object, and its spread, with the figures it came from.
struct MeasuredBuild {
    per_call: f64,
    spread: f64,
    /// reuse-buffer: the way of building it the profile's construction matched.
    constructor: Option<&'static str>,
    /// Whether that way is the one the agent saw (else: the nearest in cost).
    seen: bool,
    loop_overhead: Option<f64>,
}

/// The ways of building `n` bytes afresh that reuse-buffer times: the change, and how the
/// advice names it.
const CONSTRUCTORS: [(&str, &str); 3] = [
    (measure::REUSE_TYPE, "T() with the array type made once"),
    (
        measure::REUSE_ARRAY,
        "(ctypes.c_char * n)(), the type looked up per call",
    ),
    (
        measure::REUSE_STRING_BUFFER,
        "ctypes.create_string_buffer(n)",
    ),
];

/// reuse-buffer: the timed saving of the way the agent saw the objects built (the site's
/// `fresh_buffer_builds`, when it saw one way: an instance of a type made before → `T()`, an array
/// type made per call → `(c_char * n)()`, a helper → `create_string_buffer(n)`); else of the way
/// of building `n` bytes whose own cost, timed alone, is nearest what the probes measured of each
/// construction here (`probed` ns) — a choice the load can tip between ways of similar cost,
/// which once read `T()` as `(c_char * n)()` and doubled the estimate. On CPython 3.11
/// a `create_string_buffer` call is timed by the constructor inside it only (the interpreter
/// calls the helper past every hook), so a construction that matches `(c_char * n)()` may be the
/// helper: it is taken for one when the Python time between the calls (the gap, less the timed
/// loop around a call, less the construction) holds at least the helper's own extra cost.
/// zero-copy: the conversion timed on `n` bytes of doubles. Either is at most the gap.
fn measured_build(
    ctx: &Context<'_>,
    zero_copy: bool,
    n: u64,
    probed: f64,
    gap: Option<f64>,
    place: &Place<'_>,
) -> Option<MeasuredBuild> {
    let builds = place
        .site
        .map_or(&[][..], |s| s.fresh_buffer_builds.as_slice());
    let at_most_gap = |x: f64| gap.map_or(x, |g| x.min(g)).max(0.0);
    if zero_copy {
        let t = measure::timed(
            ctx.profile,
            measure::ZERO_COPY,
            &measure::zero_copy_shape(n),
        )?;
        return Some(MeasuredBuild {
            per_call: at_most_gap(t.saving_ns),
            spread: t.spread_ns,
            constructor: None,
            seen: false,
            loop_overhead: None,
        });
    }
    let shape = measure::reuse_shape(n, place);
    let timed: Vec<(usize, &ffiprof_profile::ChangeMeasurement)> = CONSTRUCTORS
        .iter()
        .enumerate()
        .filter_map(|(i, (change, _))| {
            measure::measurement(ctx.profile, change, &shape).map(|m| (i, m))
        })
        .collect();
    let own = |m: &ffiprof_profile::ChangeMeasurement| m.own_ns.unwrap_or(m.saving_ns);
    let seen = match builds {
        [one] => ["instance", "type_per_call", "helper"]
            .iter()
            .position(|b| b == one),
        _ => None,
    };
    let &(mut chosen, mut m) = match seen {
        Some(i) => timed.iter().find(|(j, _)| *j == i)?,
        None => timed.iter().min_by(|a, b| {
            (own(a.1) - probed)
                .abs()
                .total_cmp(&(own(b.1) - probed).abs())
        })?,
    };
    let loop_overhead = measure::loop_time(ctx.profile).map(|t| t.saving_ns);
    let python_311 = ctx
        .profile
        .meta
        .python
        .as_deref()
        .is_some_and(|v| v.starts_with("3.11"));
    if python_311 && chosen == 1 {
        if let (Some(&(_, helper)), Some(g), Some(l)) =
            (timed.iter().find(|(i, _)| *i == 2), gap, loop_overhead)
        {
            if g - l - probed >= own(helper) - own(m) {
                chosen = 2;
                m = helper;
            }
        }
    }
    Some(MeasuredBuild {
        per_call: at_most_gap(m.saving_ns),
        spread: m.spread_ns,
        constructor: Some(CONSTRUCTORS[chosen].1),
        seen: seen.is_some(),
        loop_overhead: loop_overhead.map(round1),
    })
}

pub(super) fn advise(ctx: &Context<'_>, place: Place<'_>) -> Option<Candidate> {
    let m = place.measured();
    let fresh = m.fresh_buffer_calls.min(m.calls);
    if fresh < 2 || m.time.construction == 0 {
        return None;
    }
    let per_call = per(m.time.construction, fresh);
    let bytes_per_buffer = m.construction_bytes / fresh;
    let ns_per_byte = per(m.time.construction, m.construction_bytes);
    let converts_values = measure::converts_values(
        ctx.options,
        m.time.construction,
        m.construction_bytes,
        fresh,
    );
    let kind = if converts_values {
        AdviceKind::ZeroCopy
    } else {
        AdviceKind::ReuseBuffer
    };
    let gap = ctx.gap_per_call(&m);
    let measured = measured_build(
        ctx,
        converts_values,
        bytes_per_buffer,
        per_call,
        gap,
        &place,
    );
    let builds = place
        .site
        .map_or(&[][..], |s| s.fresh_buffer_builds.as_slice());
    // Every fresh build but one goes. Modeled: the construction the probes measured, with the
    // construction at calls without a fresh buffer (sizes that vary) left in, hence the division
    // by all calls. Measured: the timed saving per fresh object.
    let (saving, estimate) = match &measured {
        Some(b) => (
            ((fresh - 1) as f64 * b.per_call).round() as u64,
            Estimate::measured(b.per_call, b.spread),
        ),
        None => {
            let saving =
                (m.time.construction as u128 * (fresh - 1) as u128 / m.calls as u128) as u64;
            (
                saving,
                Estimate::modeled(saving as f64 / (fresh - 1) as f64),
            )
        }
    };
    let wanted = if fresh == m.calls {
        Confidence::High
    } else {
        Confidence::Medium
    };
    let confidence = ctx.cap_by_timing(wanted, m.timed_calls);
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
    let timed = match &measured {
        Some(b) => format!(
            " Timed on this interpreter in a loop that also calls C, building it afresh{} costs ~{} a call.",
            b.constructor
                .map(|c| if b.seen {
                    format!(" as {c} (the way the agent saw it built)")
                } else {
                    format!(" as {c} (the way whose own cost matches what the probes measured here)")
                })
                .unwrap_or_default(),
            fmt_ns(b.per_call.round() as u64),
        ),
        None => String::new(),
    };
    let suggestion = match kind {
        AdviceKind::ZeroCopy => format!(
            "{which_calls} convert{s} Python values into a new ctypes array ({size}{} per call, \
             {ns_per_byte:.1} ns/B). Keep the values in an array.array or numpy array that the program updates \
             in place and pass its memory — a view made once with (ctypes.c_double * n).from_buffer(arr), or \
             arr.ctypes.data_as(...) — or, if the values never change, build the ctypes array once.{timed}",
            fmt_ns(per_call.round() as u64),
        ),
        _ => format!(
            "{which_calls} get{s} a freshly built ctypes object of the same type and size \
             ({size}{} to build each, as the probes saw it). Build it once outside the loop and pass the same one \
             every call (ctypes.memset it first if the C side relies on zeros).{timed}{}",
            fmt_ns(per_call.round() as u64),
            match upper {
                Some(u) if u > saving && measured.is_none() => format!(
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
        construction_per_call_ns: round1(per_call),
        bytes_per_buffer,
        construction_ns_per_byte: (ns_per_byte * 1000.0).round() / 1000.0,
        gap_per_call_ns: gap.map(round1),
        gap_samples: m.gap_samples,
        saving_upper_bound_ns: upper,
        measured_per_call_ns: measured.as_ref().map(|b| round1(b.per_call)),
        measured_constructor: measured.as_ref().and_then(|b| b.constructor),
        fresh_buffer_builds: builds.to_vec(),
        loop_overhead_per_call_ns: measured.as_ref().and_then(|b| b.loop_overhead),
    };
    let rec = ctx.recommendation(
        kind,
        place,
        saving,
        estimate,
        confidence,
        json!(evidence),
        suggestion,
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

    /// 20 000 calls, each with a fresh 4 KiB object that the probes saw cost `probed` ns to build,
    /// `gap` ns of Python between calls, on `python`; the three ways of building 4 KiB timed:
    /// `T()` (own 250, saves 300 in a loop), `(c_char * n)()` (580, 620), create_string_buffer
    /// (840, 814); a loop around a call 48 ns.
    fn timed_constructors(probed: u64, gap: u64, python: &str) -> Recommendation {
        built_as(probed, gap, python, &[])
    }

    /// `timed_constructors` with the site's `fresh_buffer_builds`.
    fn built_as(probed: u64, gap: u64, python: &str, builds: &[&str]) -> Recommendation {
        let c = PerCall {
            native: 2_000,
            marshal_in: 300,
            marshal_out: 100,
            construction: probed,
            construction_bytes: 4096,
            arg_bytes: 16,
            fresh: true,
            gap,
            ..PerCall::default()
        };
        let mut s = site("io.py", 40, 20_000, c);
        s.fresh_buffer_builds = builds.iter().map(|b| b.to_string()).collect();
        let mut p = profile(vec![function("fx_fill", vec![s])], 20_000 * 6_000);
        p.meta.python = Some(python.into());
        add_measured_own(&mut p, crate::measure::REUSE_TYPE, "4096", 300.0, 250.0);
        add_measured_own(&mut p, crate::measure::REUSE_ARRAY, "4096", 620.0, 580.0);
        add_measured_own(
            &mut p,
            crate::measure::REUSE_STRING_BUFFER,
            "4096",
            814.0,
            840.0,
        );
        add_measured(&mut p, crate::measure::LOOP, "i", 48.0, 47.5, 0.5);
        of_kind(&p, AdviceKind::ReuseBuffer).remove(0)
    }

    #[test]
    fn measured_reuse_is_the_constructor_the_probes_saw() {
        let r = timed_constructors(300, 1_500, "3.12.1");
        assert_eq!(r.estimate, Estimate::measured(300.0, 5.0));
        assert_eq!(r.estimated_savings_ns, 300 * 19_999);
        assert_eq!(
            r.evidence["measured_constructor"],
            "T() with the array type made once"
        );
        assert_eq!(r.evidence["loop_overhead_per_call_ns"], 48.0);
        assert!(
            r.suggestion.contains("costs ~300ns a call"),
            "{}",
            r.suggestion
        );
        let r = timed_constructors(600, 1_500, "3.12.1");
        assert_eq!(r.estimated_savings_ns, 620 * 19_999);
        let r = timed_constructors(900, 1_500, "3.12.1");
        assert_eq!(r.estimated_savings_ns, 814 * 19_999);
        assert_eq!(
            r.evidence["measured_constructor"],
            "ctypes.create_string_buffer(n)"
        );
    }

    #[test]
    fn the_way_the_agent_saw_decides_over_the_nearest_cost() {
        // Probed at 600 ns (load), nearest (c_char * n)(): the agent saw T() — that is timed.
        let r = built_as(600, 1_500, "3.12.1", &["instance"]);
        assert_eq!(r.estimated_savings_ns, 300 * 19_999);
        assert_eq!(
            r.evidence["measured_constructor"],
            "T() with the array type made once"
        );
        assert_eq!(
            r.evidence["fresh_buffer_builds"],
            serde_json::json!(["instance"])
        );
        assert!(
            r.suggestion.contains("(the way the agent saw it built)"),
            "{}",
            r.suggestion
        );
        let r = built_as(300, 1_500, "3.12.1", &["helper"]);
        assert_eq!(r.estimated_savings_ns, 814 * 19_999);
        let r = built_as(300, 1_500, "3.12.1", &["type_per_call"]);
        assert_eq!(r.estimated_savings_ns, 620 * 19_999);
        // On 3.11 a helper's array type is the type made per call: the gap still tells.
        let r = built_as(600, 1_500, "3.11.7 (main)", &["type_per_call"]);
        assert_eq!(r.estimated_savings_ns, 814 * 19_999);
        // Two ways at one site: the nearest cost, as without evidence.
        let r = built_as(600, 1_500, "3.12.1", &["instance", "type_per_call"]);
        assert_eq!(r.estimated_savings_ns, 620 * 19_999);
    }

    #[test]
    fn on_3_11_a_helper_hides_in_the_gap() {
        // 3.11 times create_string_buffer by its constructor inside: a construction that looks
        // like (c_char * n)() with 852 ns of unexplained Python between calls (more than the
        // helper's extra 260) is the helper.
        let r = timed_constructors(600, 1_500, "3.11.7 (main)");
        assert_eq!(r.estimated_savings_ns, 814 * 19_999);
        // Only 52 ns unexplained: (c_char * n)() it is.
        let r = timed_constructors(600, 700, "3.11.7 (main)");
        assert_eq!(r.estimated_savings_ns, 620 * 19_999);
        // Elsewhere the profile's construction tells by itself.
        let r = timed_constructors(600, 1_500, "3.12.1");
        assert_eq!(r.estimated_savings_ns, 620 * 19_999);
    }

    #[test]
    fn a_measured_saving_never_exceeds_the_gap() {
        let r = timed_constructors(900, 500, "3.12.1");
        assert_eq!(r.estimated_savings_ns, 500 * 19_999);
    }

    #[test]
    fn measured_zero_copy_never_exceeds_the_gap() {
        let c = PerCall {
            native: 300,
            marshal_in: 300,
            marshal_out: 100,
            construction: 35_000,
            construction_bytes: 4000,
            buffer_bytes: 4000,
            arg_bytes: 16,
            fresh: true,
            gap: 50_000,
            ..PerCall::default()
        };
        let mut p = profile(
            vec![function("fx_sum", vec![site("sim.py", 7, 2_000, c)])],
            2_000 * 90_000,
        );
        add_measured(
            &mut p,
            crate::measure::ZERO_COPY,
            "d*500",
            45_000.0,
            44_000.0,
            900.0,
        );
        let r = &of_kind(&p, AdviceKind::ZeroCopy)[0];
        assert_eq!(r.estimated_savings_ns, 44_000 * 1_999);
        assert_eq!(r.estimate, Estimate::measured(44_000.0, 900.0));
        p.functions[0].sites[0].gap_ns = 40_000 * 1_999;
        let r = &of_kind(&p, AdviceKind::ZeroCopy)[0];
        assert_eq!(r.estimated_savings_ns, 40_000 * 1_999);
    }

    #[test]
    fn small_construction_saving_gets_no_advice() {
        let mut p = fresh_string_buffer(true);
        scale_calls(&mut p.functions[0], 1_000); // 50 calls × 1 µs = 50 µs
        assert!(of_kind(&p, AdviceKind::ReuseBuffer).is_empty());
    }
}
