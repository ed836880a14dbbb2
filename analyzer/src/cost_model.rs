//! The cost model behind every recommendation: how a saving is estimated from what the profile measured.
//!
//! Every estimate is arithmetic over times and counts measured for *this* run — by the agent in
//! the program, and by `ffiprof run`/`attach` right after it on the program's own interpreter
//! (the profile's `measured_changes`: each change the advice proposes, timed untraced in a loop
//! that also calls C, on the shapes the profile saw; see [`crate::measure`]) — never over
//! constants baked into ffiprof. Thresholds in [`crate::AdviceOptions`] decide only *whether* to
//! advise; they never enter a saving. Each recommendation carries its `estimate`: `measured` when
//! it rests on a timed change (with the timing's spread), `modeled` when only on the profile.
//!
//! A saving is the time a change removes from the profiled run, in nanoseconds summed over the
//! threads, and as a percentage of the time it is part of ([`thread_ns`]: the run's duration for
//! one thread, duration × threads for several), never above 100 %. **A saving never exceeds what
//! the change can remove**: the cost of the calls it changes and of their construction, plus only
//! the loop overhead measured to go with them — the Python time between calls (the `gap`) holds
//! the program's own work too, and bounds a saving, never adds to one. Each recommendation stands
//! alone: two recommendations on the same call site overlap, so their savings do not add up.
//!
//! # Measured quantities
//!
//! A *place* ([`Measured`]) is one Python call site of one C function, or the whole function when the
//! profile has no sites for it. Its totals come straight from the profile (times already scaled to all
//! calls when timing was sampled, and already corrected for the probe's own cost):
//!
//! * `overhead per call` = (marshal-in + marshal-out + GIL wait) / calls — what crossing the boundary
//!   costs each time, apart from the C code.
//! * `native per call` = native / calls.
//! * `moved bytes` = argument bytes + buffer bytes — the data that crossed.
//! * `gap per call` ([`Measured::gap_per_call_ns`]) = gap / gap samples: the Python time between two
//!   consecutive calls of the same site on one thread — the loop around the call, including whatever is
//!   built for the call (constructions) and whatever else the loop body does. The agent measures it on a
//!   sample of pairs (the stack-sampled calls); it is unknown for a function without sites, for C callers
//!   and for profiles written before it existed. The rules use it only when measured on at least
//!   `min_timed_calls` pairs, and never let (calls − 1) × gap exceed what the run leaves for it.
//! * `marshal cost per byte` ([`marshal_ns_per_byte`]) — the *marginal* marshaling time per byte, over the
//!   whole profile: the Theil–Sen slope (median of pairwise slopes, robust to a few odd functions) of
//!   per-call marshal time against per-call moved bytes across every place with Python calls, clamped at 0.
//!   It is unknown (and taken as 0, which lowers confidence) when fewer than two places moved different
//!   amounts of data.
//! * timed changes ([`crate::measure`]): per call, what building an `n`-byte object afresh costs in a
//!   loop (three ways: `T()`, `(c_char * n)()`, `create_string_buffer(n)`), converting `k` values into a new array
//!   against a `from_buffer` view, declaring argtypes, a `PyDLL` against a `CDLL`, and the loop around
//!   a per-element call without the call. A figure whose spread exceeds it is ignored.
//!
//! # Estimates per kind of advice
//!
//! * **batch** — what goes: every crossing but one, (calls − 1) × overhead per call, and the loop
//!   around the calls as far as it was *measured* to go with them: (calls − 1) × the timed per-element
//!   loop overhead (`loop`; at most the gap). What stays: all of today's native time (native work is
//!   assumed not to shrink, which keeps the estimate conservative), the construction of any buffers
//!   built per call (one buffer over all the data costs what the per-call buffers did), and getting
//!   the data into one buffer — moved bytes × marshal cost per byte.
//!   saving = (calls − 1) × (overhead per call + measured loop) − moved bytes × cost per byte.
//!   `measured` when the loop was timed; without it only the crossings are claimed (`modeled`).
//!   The rest of the gap — the program's own work between calls — is not claimed: it partly stays
//!   after batching, in another form. `high` confidence needs a bulk sibling, a measured per-byte cost
//!   and a gap per call at most `batch_max_gap_ratio` × (overhead + native per call) measured on at
//!   least `min_timed_calls` pairs. Advised only where overhead per call ≥ `batch_min_overhead_ratio` ×
//!   native per call: a function that already takes many elements per call spends its time in C.
//! * **reuse-buffer** — saving = (fresh-buffer calls − 1) × the timed in-loop cost of building the
//!   object afresh, for the way of building its `n` bytes — `T()` with the type made once,
//!   `(c_char * n)()` with the type looked up per call, `create_string_buffer(n)` — whose own cost
//!   (timed alone) is nearest the construction the probes measured per call; at most the gap. On
//!   CPython 3.11 a `create_string_buffer` call is timed by its constructor inside only, so a
//!   construction matching `(c_char * n)()` counts as the helper where the gap, less the timed loop
//!   around a call and the construction, holds at least the helper's own extra cost. A probe around a
//!   constructor sees only part of what building per call costs in a loop that also calls C
//!   (`scripts/construction-in-context`: 1.1–1.7 × its own time); the timed loop sees it all.
//!   Without timed figures (`modeled`): construction time at the place × (fresh-buffer calls − 1) / calls,
//!   a lower bound, with `saving_upper_bound_ns` = (fresh-buffer calls − 1) × gap per call beside it.
//! * **zero-copy** — saving = (fresh-buffer calls − 1) × the timed cost of converting the values into
//!   a new array rather than passing a view (`zero-copy`, on the bytes per buffer as doubles), at most
//!   the gap; modeled as reuse-buffer. Zero-copy rather than reuse-buffer where the construction converts
//!   Python values (≥ `zero_copy_min_ns_per_byte`, buffers of ≥ `zero_copy_min_bytes`).
//! * **declare-argtypes** — a correctness finding, never a time claim: the timed change of declaring
//!   (`declare-argtypes`, on the argument sizes the profile saw), usually a cost, is stated with its sign
//!   in `estimate.per_call_ns`; a saving is claimed only where it was measured to be one.
//! * **use-pydll** — saving = calls × the timed GIL round trip (`use-pydll`: the same call from a
//!   `PyDLL` against a `CDLL`), at most the crossings; modeled, the measured GIL wait (the
//!   re-acquisition only: a lower bound). Measured to save nothing: no advice. The gates compare
//!   the median native call (not the mean, which a few preempted calls move) with the round trip,
//!   and ask it to be a tenth of the crossing, or of the timed call (`measured_share`: calm figures
//!   both, where a loaded run inflates the traced crossing).
//! * **gil-contention** — the waits overlap other threads' work (summed over threads they are no loss
//!   of wall time), so they are evidence only; saving = calls × the GIL round trip timed with the
//!   threads the profile saw calling (`gil-contention`: use-pydll's loops shared among that many
//!   threads; with others waiting a release signals them and costs more than in one thread), at most
//!   the crossings; where only the one-thread round trip was timed, that (a lower bound,
//!   `measured_threads` 1); not advised without a measurement, nor where the C work (its median call)
//!   is longer than the wait, nor where the waits are under half of what follows the C work unless
//!   the threaded change saves a tenth of the timed call (`measured_share`: threads that traded the
//!   GIL at the switch interval wait little at each call, yet each release signals the waiters).
//!   Where the profiled run fell into a convoy (each release handing the GIL to a woken waiter, about
//!   one context switch a call), the hand-offs it made count instead when larger: the calling
//!   threads' loops ran one at a time, so the run lasted each thread's time per call (the call's
//!   whole split and the gap to its next call) shared among the threads; a call and its loop with the
//!   GIL kept hold it for the threaded change's timed "after" and the gap; the rest is the GIL
//!   changing hands (`handoff_per_call_ns`, a modeled estimate). Not where the waits reach a tenth of
//!   the switch interval (0.5 ms): those are other threads' Python work, which keeping the GIL does
//!   not remove. The timed rounds keep the calm ones, in which short loops do not convoy.
//! * **leak** — no time is claimed (a leak costs memory); the evidence is allocator calls − release calls.
//!
//! # Confidence
//!
//! `high`: the figures come from at least `min_timed_calls` timed calls and the change needs no
//! assumption beyond the model above (e.g. batch with a bulk sibling found, a measured per-byte cost and
//! a measured loop that does little besides calling).
//! `medium`: one assumption is unverified (no bulk sibling known, per-byte cost unknown). `low`: few
//! timed calls, or evidence the profile cannot complete (declare-argtypes: the Python types of the
//! arguments are not recorded).

use ffiprof_profile::{FunctionRecord, Profile, SiteRecord, Split};

/// The measured totals of one place: a call site of a function, or the whole function.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Measured {
    pub calls: u64,
    /// Calls whose times were measured; equals `calls` when the agent did not say.
    pub timed_calls: u64,
    pub time: Split,
    pub construction_bytes: u64,
    pub arg_bytes: u64,
    pub buffer_bytes: u64,
    pub fresh_buffer_calls: u64,
    /// Python time between consecutive calls of the site on one thread, summed over `gap_samples`
    /// measured pairs (0 for a whole function: the gap is a property of one site's loop).
    pub gap_ns: u64,
    pub gap_samples: u64,
}

fn timed_or_all(timed: u64, calls: u64) -> u64 {
    if timed == 0 {
        calls
    } else {
        timed
    }
}

impl Measured {
    pub fn of_site(s: &SiteRecord) -> Self {
        Self {
            calls: s.calls,
            timed_calls: timed_or_all(s.timed_calls, s.calls),
            time: s.time,
            construction_bytes: s.construction_bytes,
            arg_bytes: s.arg_bytes,
            buffer_bytes: s.buffer_bytes,
            fresh_buffer_calls: s.fresh_buffer_calls,
            gap_ns: s.gap_ns,
            gap_samples: s.gap_samples,
        }
    }

    pub fn of_function(f: &FunctionRecord) -> Self {
        Self {
            calls: f.calls,
            timed_calls: timed_or_all(f.timed_calls, f.calls),
            time: f.time,
            construction_bytes: f.construction_bytes,
            arg_bytes: f.arg_bytes,
            buffer_bytes: f.buffer_bytes,
            fresh_buffer_calls: f.fresh_buffer_calls,
            gap_ns: 0,
            gap_samples: 0,
        }
    }

    /// Marshal-in + marshal-out + GIL wait: the part of a call that is not the C code.
    pub fn overhead_ns(&self) -> u64 {
        self.time.overhead()
    }

    /// Overhead + native: construction is left out because it happens before the call.
    pub fn call_ns(&self) -> u64 {
        self.overhead_ns() + self.time.native
    }

    pub fn overhead_per_call_ns(&self) -> f64 {
        per(self.overhead_ns(), self.calls)
    }

    pub fn native_per_call_ns(&self) -> f64 {
        per(self.time.native, self.calls)
    }

    pub fn moved_bytes(&self) -> u64 {
        self.arg_bytes + self.buffer_bytes
    }

    /// The mean Python time between two consecutive calls of the site, or `None` when no pair of
    /// calls was measured.
    pub fn gap_per_call_ns(&self) -> Option<f64> {
        (self.gap_samples > 0).then(|| per(self.gap_ns, self.gap_samples))
    }
}

/// `total / count` as a float, 0 when nothing was counted.
pub fn per(total: u64, count: u64) -> f64 {
    if count == 0 {
        0.0
    } else {
        total as f64 / count as f64
    }
}

/// One place of the profile: a function and, when the profile has them, one of its call sites.
#[derive(Debug, Clone, Copy)]
pub struct Place<'a> {
    pub function: &'a FunctionRecord,
    pub site: Option<&'a SiteRecord>,
}

impl Place<'_> {
    pub fn measured(&self) -> Measured {
        match self.site {
            Some(s) => Measured::of_site(s),
            None => Measured::of_function(self.function),
        }
    }
}

/// Every place where Python called C: each call site, or the function as a whole when it has Python
/// calls but no recorded sites.
pub fn python_places(profile: &Profile) -> Vec<Place<'_>> {
    let mut places = Vec::new();
    for f in &profile.functions {
        if f.sites.is_empty() {
            if f.python_calls > 0 {
                places.push(Place {
                    function: f,
                    site: None,
                });
            }
        } else {
            places.extend(f.sites.iter().map(|s| Place {
                function: f,
                site: Some(s),
            }));
        }
    }
    places
}

/// The length of the profiled run that savings are a percentage of: the recorded duration, or — when
/// the profile has none — the total boundary time, so that percentages stay meaningful upper bounds.
pub fn run_ns(profile: &Profile) -> u64 {
    if profile.meta.duration_ns > 0 {
        profile.meta.duration_ns
    } else {
        profile.functions.iter().map(|f| f.total_ns()).sum()
    }
}

/// The time savings are a part of: the run's duration summed over the threads that called
/// (duration × threads — each thread's own time when there is one), or, in a profile without a
/// duration, the total boundary time. Savings are summed over threads, so they are compared with
/// time summed over threads; no saving exceeds it.
pub fn thread_ns(profile: &Profile) -> u64 {
    if profile.meta.duration_ns > 0 {
        profile
            .meta
            .duration_ns
            .saturating_mul(u64::from(profile.meta.threads.max(1)))
    } else {
        run_ns(profile)
    }
}

/// `saving` as a percentage of `run`, rounded to hundredths, never above 100.
pub fn percent_of(saving: u64, run: u64) -> f64 {
    if run == 0 {
        return 0.0;
    }
    ((saving.min(run) as f64 * 10_000.0 / run as f64).round() / 100.0).min(100.0)
}

/// How many places at most enter the per-byte slope: pairwise slopes are quadratic in their number.
const SLOPE_MAX_POINTS: usize = 200;

/// The marginal marshaling time per moved byte over the whole profile (see the module docs), or `None`
/// when the profile does not show two places moving different amounts of data per call.
pub fn marshal_ns_per_byte(profile: &Profile) -> Option<f64> {
    let mut points: Vec<(u64, f64, f64)> = python_places(profile)
        .iter()
        .map(|p| p.measured())
        .filter(|m| m.calls > 0 && m.timed_calls > 0)
        .map(|m| {
            (
                m.calls,
                per(m.moved_bytes(), m.calls),
                per(m.time.marshal_in + m.time.marshal_out, m.calls),
            )
        })
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.0));
    points.truncate(SLOPE_MAX_POINTS);
    let mut slopes = Vec::new();
    for (i, a) in points.iter().enumerate() {
        for b in &points[i + 1..] {
            let dx = b.1 - a.1;
            if dx.abs() >= 1.0 {
                slopes.push((b.2 - a.2) / dx);
            }
        }
    }
    if slopes.is_empty() {
        return None;
    }
    slopes.sort_by(|a, b| a.total_cmp(b));
    let n = slopes.len();
    let median = if n % 2 == 1 {
        slopes[n / 2]
    } else {
        (slopes[n / 2 - 1] + slopes[n / 2]) / 2.0
    };
    Some(median.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(calls: u64, bytes: u64, marshal: u64) -> SiteRecord {
        SiteRecord {
            file: "w.py".into(),
            line: 1,
            calls,
            arg_bytes: bytes,
            time: Split {
                marshal_in: marshal,
                ..Split::default()
            },
            ..SiteRecord::default()
        }
    }

    fn profile_with(sites: Vec<SiteRecord>) -> Profile {
        let mut p = Profile::new();
        for (i, s) in sites.into_iter().enumerate() {
            let mut f = FunctionRecord::new("/l/libx.so", format!("f{i}"));
            f.calls = s.calls;
            f.python_calls = s.calls;
            f.sites.push(s);
            p.functions.push(f);
        }
        p
    }

    #[test]
    fn slope_is_the_median_of_pairwise_slopes() {
        // 8 bytes → 200 ns, 16 → 240, 24 → 280, 40 → 360: 5 ns per byte; an outlier does not move the median.
        let p = profile_with(vec![
            site(100, 800, 20_000),
            site(100, 1_600, 24_000),
            site(100, 2_400, 28_000),
            site(100, 4_000, 36_000),
            site(100, 3_200, 90_000),
        ]);
        let slope = marshal_ns_per_byte(&p).unwrap();
        assert!((slope - 5.0).abs() < 1e-9, "{slope}");
    }

    #[test]
    fn slope_unknown_with_one_size_and_never_negative() {
        assert_eq!(
            marshal_ns_per_byte(&profile_with(vec![site(10, 80, 1_000)])),
            None
        );
        let p = profile_with(vec![site(10, 80, 5_000), site(10, 160, 1_000)]);
        assert_eq!(marshal_ns_per_byte(&p), Some(0.0));
    }

    #[test]
    fn run_falls_back_to_boundary_time() {
        let mut p = profile_with(vec![site(10, 80, 1_000)]);
        p.functions[0].time.native = 500;
        p.functions[0].time.marshal_in = 1_000;
        assert_eq!(run_ns(&p), 1_500);
        p.meta.duration_ns = 10_000;
        assert_eq!(run_ns(&p), 10_000);
        assert_eq!(percent_of(1_234, 10_000), 12.34);
    }
}
