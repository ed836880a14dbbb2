//! Synthetic profiles for the rule tests: per-call figures in, totals out.

use ffiprof_profile::{
    ChangeMeasurement, FunctionRecord, MeasuredChanges, Profile, SiteRecord, Split,
};

use super::{recommend, AdviceKind, AdviceOptions, Recommendation};

/// The advice of one kind for `p` under `o`, best first.
pub fn of_kind_with(p: &Profile, o: &AdviceOptions, kind: AdviceKind) -> Vec<Recommendation> {
    recommend(p, o)
        .into_iter()
        .filter(|r| r.kind == kind)
        .collect()
}

/// The leak recommendations of `p`.
pub fn leaks(p: &Profile, o: &AdviceOptions) -> Vec<Recommendation> {
    of_kind_with(p, o, AdviceKind::Leak)
}

/// A function called `calls` times from one site, 100 ns native and 200 ns marshal-in a call.
pub fn counted(name: &str, calls: u64) -> FunctionRecord {
    function(
        name,
        vec![site(
            "app.py",
            1,
            calls,
            PerCall {
                native: 100,
                marshal_in: 200,
                ..PerCall::default()
            },
        )],
    )
}

/// The advice of one kind for `p` with the default options.
pub fn of_kind(p: &Profile, kind: AdviceKind) -> Vec<Recommendation> {
    of_kind_with(p, &AdviceOptions::default(), kind)
}

pub const LIB: &str = "/work/lib/libffifixture.so";

/// Per-call figures of one call site.
#[derive(Debug, Clone, Copy, Default)]
pub struct PerCall {
    pub native: u64,
    pub marshal_in: u64,
    pub marshal_out: u64,
    pub gil: u64,
    pub construction: u64,
    pub construction_bytes: u64,
    pub arg_bytes: u64,
    pub buffer_bytes: u64,
    /// Whether every call got a freshly built buffer.
    pub fresh: bool,
    /// Python time between consecutive calls, measured on every pair; 0 = not measured.
    pub gap: u64,
}

pub fn site(file: &str, line: u32, calls: u64, c: PerCall) -> SiteRecord {
    SiteRecord {
        file: file.into(),
        line,
        function: "main".into(),
        calls,
        timed_calls: calls,
        time: Split {
            native: c.native,
            marshal_in: c.marshal_in,
            marshal_out: c.marshal_out,
            gil_wait: c.gil,
            construction: c.construction,
        }
        .map(|v| v * calls),
        construction_bytes: c.construction_bytes * calls,
        buffer_bytes: c.buffer_bytes * calls,
        arg_bytes: c.arg_bytes * calls,
        fresh_buffer_calls: if c.fresh { calls } else { 0 },
        gap_ns: c.gap * calls.saturating_sub(1),
        gap_samples: if c.gap > 0 {
            calls.saturating_sub(1)
        } else {
            0
        },
        ..SiteRecord::default()
    }
}

/// A function whose totals are the sums of its sites, all calls from Python.
pub fn function(name: &str, sites: Vec<SiteRecord>) -> FunctionRecord {
    let mut f = FunctionRecord::new(LIB, name);
    for s in &sites {
        f.calls += s.calls;
        f.timed_calls += s.timed_calls;
        f.time += s.time;
        f.construction_bytes += s.construction_bytes;
        f.buffer_bytes += s.buffer_bytes;
        f.arg_bytes += s.arg_bytes;
        f.fresh_buffer_calls += s.fresh_buffer_calls;
        let per_call = s.time.native / s.calls.max(1);
        f.native_hist.record_n(per_call.max(1), s.calls);
    }
    f.python_calls = f.calls;
    f.arg_count = 2;
    f.sites = sites;
    f
}

/// A profile of `functions` whose run lasted `duration_ns` in one thread.
pub fn profile(functions: Vec<FunctionRecord>, duration_ns: u64) -> Profile {
    let mut p = Profile::new();
    p.meta.duration_ns = duration_ns;
    p.meta.threads = 1;
    p.meta.complete = true;
    p.functions = functions;
    p
}

/// One site calling `fx_scale(double, double)` in a loop at work.py:12, with the given per-call
/// overhead (70 % marshal-in, 30 % marshal-out) and native time, and no gap measured; the run is 20 %
/// longer than the calls.
pub fn loop_profile(calls: u64, overhead: u64, native: u64) -> Profile {
    loop_profile_with_gap(calls, overhead, native, 0)
}

/// [`loop_profile`] with `gap` ns of Python between consecutive calls, measured on every pair; the
/// run is 20 % longer than the calls and the loop.
pub fn loop_profile_with_gap(calls: u64, overhead: u64, native: u64, gap: u64) -> Profile {
    let c = PerCall {
        native,
        marshal_in: overhead * 7 / 10,
        marshal_out: overhead - overhead * 7 / 10,
        arg_bytes: 16,
        gap,
        ..PerCall::default()
    };
    let f = function("fx_scale", vec![site("work.py", 12, calls, c)]);
    let duration = calls * (overhead + native + gap) * 6 / 5;
    profile(vec![f], duration)
}

/// Divides every count and time of a function (and its sites) by `by`.
pub fn scale_calls(f: &mut FunctionRecord, by: u64) {
    for v in [
        &mut f.calls,
        &mut f.timed_calls,
        &mut f.python_calls,
        &mut f.construction_bytes,
        &mut f.arg_bytes,
        &mut f.buffer_bytes,
        &mut f.fresh_buffer_calls,
    ] {
        *v /= by;
    }
    f.time = f.time.map(|v| v / by);
    for s in &mut f.sites {
        for v in [
            &mut s.calls,
            &mut s.timed_calls,
            &mut s.construction_bytes,
            &mut s.arg_bytes,
            &mut s.buffer_bytes,
            &mut s.fresh_buffer_calls,
            &mut s.gap_ns,
            &mut s.gap_samples,
        ] {
            *v /= by;
        }
        s.time = s.time.map(|v| v / by);
    }
}

/// Adds a measured change to the profile: `saving` per call, from `before` to `before - saving`.
pub fn add_measured(
    p: &mut Profile,
    change: &str,
    shape: &str,
    before: f64,
    saving: f64,
    spread: f64,
) {
    let mc = p.measured_changes.get_or_insert_with(|| MeasuredChanges {
        executable: "/usr/bin/python3".into(),
        ..MeasuredChanges::default()
    });
    mc.measurements.push(ChangeMeasurement {
        change: change.into(),
        shape: shape.into(),
        before_ns: before,
        after_ns: before - saving,
        saving_ns: saving,
        spread_ns: spread,
        rounds: 7,
        iterations: 10_000,
        cached: false,
        own_ns: None,
    });
}

/// [`add_measured`] with the change's own part timed alone (`own_ns`).
pub fn add_measured_own(p: &mut Profile, change: &str, shape: &str, saving: f64, own: f64) {
    add_measured(p, change, shape, saving + 200.0, saving, 5.0);
    let m = p
        .measured_changes
        .as_mut()
        .unwrap()
        .measurements
        .last_mut()
        .unwrap();
    m.own_ns = Some(own);
}

/// The loop around a call on elements `element` (`d`, `i`) measured: `loop_ns` per element more
/// than the bulk call over all elements (10 ns per element).
pub fn add_measured_loop(p: &mut Profile, element: &str, loop_ns: f64, spread: f64) {
    add_measured(
        p,
        crate::measure::LOOP,
        element,
        loop_ns + 10.0,
        loop_ns,
        spread,
    );
}
