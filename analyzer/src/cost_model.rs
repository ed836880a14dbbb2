//! The cost model behind every recommendation: how a saving is estimated from what the profile measured.
//!
//! Every estimate is arithmetic over times and counts the agent measured in *this* run — never over
//! constants baked into ffiprof. Thresholds in [`crate::AdviceOptions`] decide only *whether* to
//! advise; they never enter a saving. A saving is the boundary time a change removes from the profiled
//! run, in nanoseconds, and as a percentage of the run ([`run_ns`]). Each recommendation stands alone:
//! two recommendations on the same call site overlap, so their savings do not add up.
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
//!   and for profiles written before it existed. The profile has only its sum, so one pair during which
//!   the thread was descheduled (milliseconds, on a busy machine) weighs on the mean: the rules use the
//!   gap only when measured on at least `min_timed_calls` pairs, and never let (calls − 1) × gap exceed
//!   what the run leaves for it (duration × threads − the place's call time).
//! * `marshal cost per byte` ([`marshal_ns_per_byte`]) — the *marginal* marshaling time per byte, over the
//!   whole profile: the Theil–Sen slope (median of pairwise slopes, robust to a few odd functions) of
//!   per-call marshal time against per-call moved bytes across every place with Python calls, clamped at 0.
//!   It is unknown (and taken as 0, which lowers confidence) when fewer than two places moved different
//!   amounts of data.
//!
//! # Estimates per kind of advice
//!
//! * **batch** — today = marshal-in + marshal-out + GIL wait + native at the place, plus the loop:
//!   (calls − 1) × gap per call (the loop runs between consecutive calls; the code before the first call
//!   stays). After batching, what is left to do is one call over all elements: one call's overhead, all
//!   of today's native time (native work is assumed not to shrink, which keeps the estimate conservative:
//!   libffi's own per-call cost inside "native" is in fact saved too), getting the data into one buffer —
//!   moved bytes × marshal cost per byte, the measured marginal cost of converting data for a call —
//!   and the construction of any buffers built per call today (one buffer over all the data is assumed
//!   to cost what the per-call buffers did, since building is per byte; this construction was inside the
//!   gap, so it is counted once as removed and once as still done).
//!   saving = today − batched = (calls − 1) × (overhead per call + gap per call) − moved bytes × cost per
//!   byte − construction.
//!   Counting the whole gap as removed assumes the loop does little besides calling: Python work of the
//!   program's own between calls (computing each element) partly stays after batching, in another form.
//!   The estimate cannot tell the two apart, so it is `high` confidence only where the gap per call is at
//!   most `batch_max_gap_ratio` × (overhead + native per call) and was measured on at least
//!   `min_timed_calls` pairs. When the elements are not in a buffer already (a Python list, values
//!   computed one by one), filling one costs what the per-byte term charges (putting them in an
//!   `array.array` from a list is typically cheaper than converting each as a call argument).
//!   Advised only where overhead per call ≥ `batch_min_overhead_ratio` × native per call: a function that
//!   already takes many elements per call spends its time in C and is left alone.
//!   Not in the estimate: making the views for the bulk call (`from_buffer`, a few µs in all) and the
//!   bulk function's own loop, both well under the kept native time.
//! * **reuse-buffer** and **zero-copy** — saving = construction time at the place × (fresh-buffer calls − 1)
//!   / calls: every fresh build but one goes away (the reused buffer or the shared view is built once).
//!   The two differ by what the construction does: converting Python values element by element (per-byte
//!   construction cost ≥ `zero_copy_min_ns_per_byte`, buffers of at least `zero_copy_min_bytes`) calls for
//!   sharing memory (zero-copy); building empty or small objects calls for reusing one (reuse-buffer).
//!   The estimate is a lower bound, and an upper one is given beside it. Construction is what the agent
//!   times around the building: the ctypes type's constructor (the metaclass call, with `c_double * n`
//!   when the statement looks the array type up), the release of an object that was passed fresh to a
//!   call (`tp_dealloc`; not on 3.13, whose ctypes types are heap types), and for `create_string_buffer`
//!   / `create_unicode_buffer` the whole Python helper call — except on 3.11, which calls one Python
//!   function from another past every hook, so there the helper is timed by its constructor alone.
//!   Not measured: the interpreter's own work for the statement that builds the object (loading the
//!   type, the call, storing the result: dictionary operations at module level) and its indirect costs
//!   (caches and branch predictors shared with the call). Untraced, with no probe at all,
//!   `scripts/construction-in-context` finds a construction costing 1.5–1.7 × its own time in a loop
//!   that also calls C (`(c_double * n)()`, even a plain `bytearray(4096)`), 1.1–1.3 × for
//!   `create_string_buffer(4096)`: the difference shows up in the rest of the loop, where no probe of
//!   the construction can see it. On the development machine
//!   (`scripts/validate-advice`, fastest runs) the realized saving of `(c_double * 512)()` per call was
//!   1.4–2 × the measured construction (3.11 and 3.12, module level), and of `create_string_buffer(4096)`
//!   1.2 × on 3.12 and 2 × on 3.11 (helper not timed). Both lie inside the site's gap, which also holds
//!   the rest of the loop body: the evidence gives `saving_upper_bound_ns` = (fresh-buffer calls − 1) ×
//!   gap per call — the whole Python time between calls, which is all a change of what happens between
//!   the calls can remove — so the realized saving lies between the estimate and that bound (up to the
//!   noise of timing on a busy machine).
//! * **declare-argtypes** — saving = (marshal-in per call − the median marshal-in per call of the profile's
//!   functions with argtypes declared and the same number of arguments) × undeclared calls, when such
//!   functions exist; otherwise no time is claimed and the advice stands only on correctness (a function
//!   whose name suggests it returns a pointer, called without `restype`, has its result truncated to a
//!   C `int`).
//! * **use-pydll** — saving = the measured GIL wait of the function (re-acquiring the GIL after each call).
//!   The release half of the round trip is not measured, so the estimate is a lower bound.
//! * **gil-contention** — saving = GIL wait / threads: the waits of `threads` threads overlap in wall time,
//!   so on average one thread's share of the summed waiting stands for time the run loses.
//!   Crude by nature; always `low` confidence.
//! * **leak** — no time is claimed (a leak costs memory); the evidence is allocator calls − release calls.
//!
//! # Confidence
//!
//! `high`: the figures come from at least `min_timed_calls` timed calls and the change needs no
//! assumption beyond the model above (e.g. batch with a bulk sibling found, a measured per-byte cost and
//! a measured loop that does little besides calling).
//! `medium`: one assumption is unverified (no bulk sibling known, per-byte cost unknown, a comparison
//! across different functions). `low`: few timed calls, or a model as crude as gil-contention's.

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
        profile.functions.iter().map(|f| f.time.total()).sum()
    }
}

/// `saving` as a percentage of `run`, rounded to hundredths.
pub fn percent_of(saving: u64, run: u64) -> f64 {
    if run == 0 {
        return 0.0;
    }
    (saving as f64 * 10_000.0 / run as f64).round() / 100.0
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
