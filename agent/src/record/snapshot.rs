//! Turning the recorders into a [`Profile`]: sum every thread, convert ticks to nanoseconds, take
//! off the probe's own cost, name the functions and sites, and keep only the frames and stacks
//! the profile's sites refer to.
//!
//! Times are estimated by stratum (see `recorder::CallStats`): the always-timed first calls of
//! each pair add their times as measured; the randomly sampled calls are scaled up to the calls
//! after the first ones. Only when none of those has been sampled yet do the first calls stand
//! for all (the strata collapse into one). The latency histogram is weighted the same way, so its
//! count is the number of calls and its percentiles are those of all calls.

use std::collections::{BTreeMap, HashMap};

use ffiprof_profile::{Frame, FunctionRecord, Histogram, Profile, SiteRecord, Split, StackSample};

use super::clock::Calibration;
use super::recorder::{self, bucket_value, CallStats, Counter, Times, BUCKETS};

/// Every interned frame, and every stack as indexes into them.
pub type FrameTables = (Vec<Frame>, Vec<Vec<u32>>);

/// What names the interned call sites and stacks: the Python layer's tables, registered by the
/// session (this layer sits below them). Called once per snapshot, not per call.
#[derive(Clone, Copy)]
pub struct Sites {
    /// File, function and line of a site (None: the site is not reported).
    pub describe: fn(u32) -> Option<Frame>,
    /// The pass-through frame a site's calls went through, if they did.
    pub through: fn(u32) -> Option<Frame>,
    /// The interned frames and stacks.
    pub frames_and_stacks: fn() -> FrameTables,
    /// Fills what the site saw of the arguments of calls reaching C address `function` made
    /// there (`arg_types` & co.), if anything.
    pub arg_evidence: fn(u32, usize, &mut SiteRecord),
}

static SITES: std::sync::OnceLock<Sites> = std::sync::OnceLock::new();

/// Registers the site tables (once per process).
pub fn set_sites(sites: Sites) {
    let _ = SITES.set(sites);
}

/// The registered site tables; none (no site, no frame) before registration.
fn site_tables() -> Sites {
    SITES.get().copied().unwrap_or(Sites {
        describe: |_| None,
        through: |_| None,
        frames_and_stacks: || (Vec::new(), Vec::new()),
        arg_evidence: |_, _, _| {},
    })
}

/// What the Python layer knows of a function, registered by the session: how it was called
/// and, for a builtin it brackets (whose statistics are keyed by its `PyMethodDef`, no code
/// address), its name and that its time is the whole call's (see `python::builtin_call`).
pub struct Binding {
    pub kind: &'static str,
    pub detail: &'static str,
    pub builtin: Option<BuiltinName>,
}

pub struct BuiltinName {
    pub library: String,
    pub function: String,
    pub offset: u64,
}

static BINDINGS: std::sync::OnceLock<fn(usize) -> Binding> = std::sync::OnceLock::new();

/// Registers what tells a function's binding (once per process).
pub fn set_bindings(f: fn(usize) -> Binding) {
    let _ = BINDINGS.set(f);
}

fn binding_of(function: usize) -> Binding {
    BINDINGS.get().map_or(
        Binding {
            kind: "",
            detail: "",
            builtin: None,
        },
        |f| f(function),
    )
}

/// One stratum's sums over threads (ticks).
#[derive(Default, Clone, Copy)]
struct Sums {
    timed: u64,
    ticks: Split<u64>,
}

impl Sums {
    fn add(&mut self, t: &Times) {
        self.timed += t.timed.get();
        self.ticks += t.ticks.map(Counter::get);
    }
}

#[derive(Default)]
struct Totals {
    calls: u64,
    arg_count: u32,
    arg_bytes: u64,
    ret_bytes: u64,
    buffer_bytes: u64,
    first: Sums,
    sampled: Sums,
    /// Native ticks of each always-timed first call.
    first_native: Vec<u64>,
    construction_ticks: u64,
    construction_bytes: u64,
    python_calls: u64,
    in_builtin_calls: u64,
    /// Timed calls filed whole, and their ticks, by stratum (first, sampled).
    unsplit_timed: [u64; 2],
    unsplit_ticks: [u64; 2],
    fresh_buffer_calls: u64,
    undeclared_argtypes: u64,
    undeclared_restype: u64,
    /// Threads that made Python calls of the function, and the most one of them made.
    calling_threads: u64,
    busiest_thread_python_calls: u64,
    gap_ticks: u64,
    gap_samples: u64,
    /// Native latency buckets of the sampled calls.
    hist: Vec<u64>,
    /// Sampled stacks: stack id → samples.
    stacks: HashMap<u32, u64>,
    /// The native ticks are net of their floor already: a split builtin's, whose wrapper took
    /// the GOT trampoline's floor off each target call inside it.
    floor_taken: bool,
    /// Calls seen through the GOT trampoline, and through libffi.
    got_calls: u64,
    ffi_calls: u64,
    /// What `sampled.timed` holds beyond the calls actually timed (`CallStats::thinned`).
    thinned: u64,
}

impl Totals {
    fn add(&mut self, s: &CallStats) {
        self.calls += s.calls.get();
        if s.via_got {
            self.got_calls += s.calls.get();
        } else {
            self.ffi_calls += s.calls.get();
        }
        self.arg_count = self
            .arg_count
            .max(s.arg_count.load(std::sync::atomic::Ordering::Relaxed));
        self.arg_bytes += s.arg_bytes.get();
        self.ret_bytes += s.ret_bytes.get();
        self.buffer_bytes += s.buffer_bytes.get();
        self.first.add(&s.first);
        self.sampled.add(&s.sampled);
        let kept = (s.first.timed.get() as usize).min(s.first_native.len());
        self.first_native
            .extend(s.first_native[..kept].iter().map(|c| c.get()));
        self.construction_ticks += s.construction_ticks.get();
        self.construction_bytes += s.construction_bytes.get();
        self.python_calls += s.python_calls.get();
        self.in_builtin_calls += s.in_builtin_calls.get();
        for i in 0..2 {
            self.unsplit_timed[i] += s.unsplit_timed[i].get();
            self.unsplit_ticks[i] += s.unsplit_ticks[i].get();
        }
        self.fresh_buffer_calls += s.fresh_buffer_calls.get();
        self.undeclared_argtypes += s.undeclared_argtypes.get();
        self.undeclared_restype += s.undeclared_restype.get();
        self.gap_ticks += s.gap_ticks.get();
        self.gap_samples += s.gap_samples.get();
        self.thinned += s.thinned.get();
        for (id, count) in &s.stacks {
            let v = id.load(std::sync::atomic::Ordering::Relaxed);
            if v != 0 && count.get() > 0 {
                *self.stacks.entry(v - 1).or_default() += count.get();
            }
        }
        if self.hist.is_empty() {
            self.hist = vec![0; BUCKETS];
        }
        for (t, c) in self.hist.iter_mut().zip(s.hist.iter()) {
            *t += c.get();
        }
    }
}

/// `ticks` summed over `intervals` measured intervals, in ns, less what measuring costs each one.
fn net_ns(cal: &Calibration, ticks: u64, intervals: u64, per_interval_ns: u64) -> f64 {
    (cal.ns(ticks) as f64 - per_interval_ns as f64 * intervals as f64).max(0.0)
}

impl Totals {
    /// Calls actually timed: the sampled stratum's count less what thinned pairs' weights
    /// added to it.
    fn timed_calls(&self) -> u64 {
        self.first.timed + self.sampled.timed.saturating_sub(self.thinned)
    }

    /// What each timed native interval over-counts: the GOT trampoline's floor when most of the
    /// calls came through it, else libffi's.
    fn native_floor_ns(&self, cal: &Calibration) -> u64 {
        if self.floor_taken {
            0
        } else if self.got_calls > self.ffi_calls {
            cal.got_floor_ns()
        } else {
            cal.native_floor_ns()
        }
    }

    /// How many calls each timed call of a stratum stands for: (first calls, sampled calls).
    fn weights(&self) -> (f64, f64) {
        let rest = self.calls.saturating_sub(self.first.timed);
        if self.sampled.timed > 0 {
            (1.0, rest as f64 / self.sampled.timed as f64)
        } else if self.first.timed > 0 {
            (self.calls as f64 / self.first.timed as f64, 0.0)
        } else {
            (0.0, 0.0)
        }
    }
}

/// Time totals scaled from the timed calls to all calls, in ns, with the probe cost removed.
fn scale(t: &Totals, cal: &Calibration) -> Split {
    let (w_first, w_sampled) = t.weights();
    let probe = cal.probe_ns();
    let python = t.python_calls != 0;
    let floor = t.native_floor_ns(cal);
    // One stratum's sums in ns, each less the probe's cost per interval it measured: the native
    // part's floor on every timed call, the probe on the marshaling spans of Python calls.
    let net = |s: &Sums| {
        let marshal_intervals = if python { s.timed } else { 0 };
        Split {
            native: net_ns(cal, s.ticks.native, s.timed, floor),
            marshal_in: net_ns(cal, s.ticks.marshal_in, marshal_intervals, probe),
            marshal_out: net_ns(cal, s.ticks.marshal_out, marshal_intervals, probe),
            gil_wait: net_ns(cal, s.ticks.gil_wait, 0, probe),
            construction: 0.0,
        }
    };
    let mut ns = (net(&t.first).scale(w_first) + net(&t.sampled).scale(w_sampled)).round();
    // Every construction is timed: its sum needs no scaling.
    ns.construction = (cal.ns(t.construction_ticks) as f64).round() as u64;
    ns
}

/// The whole-call time of the timed calls that could not be split (a bracketed builtin's),
/// scaled like [`scale`] — each timed call, split or not, stands for its stratum's weight — and
/// less only the probe's cost per interval: it holds no libffi call.
fn unsplit(t: &Totals, cal: &Calibration) -> u64 {
    let (w_first, w_sampled) = t.weights();
    let probe = cal.probe_ns();
    let first = net_ns(cal, t.unsplit_ticks[0], t.unsplit_timed[0], probe);
    let sampled = net_ns(cal, t.unsplit_ticks[1], t.unsplit_timed[1], probe);
    (first * w_first + sampled * w_sampled).round() as u64
}

/// The native latencies of all calls: each first call once, each sampled bucket weighted as the
/// sampled calls are, apportioned to whole counts.
fn histogram(t: &Totals, cal: &Calibration) -> Histogram {
    let (w_first, w_sampled) = t.weights();
    let floor = t.native_floor_ns(cal);
    let ns = |ticks: u64| cal.ns(ticks).saturating_sub(floor);
    let mut weighted: Vec<(u64, f64)> = t
        .first_native
        .iter()
        .filter(|&&v| v != recorder::NO_NATIVE)
        .map(|&v| (ns(v), w_first))
        .collect();
    for (i, &count) in t.hist.iter().enumerate() {
        if count > 0 {
            weighted.push((ns(bucket_value(i)), count as f64 * w_sampled));
        }
    }
    let mut h = Histogram::new();
    for (value, count) in apportion(&weighted) {
        if count > 0 {
            h.record_n(value, count);
        }
    }
    h
}

/// Whole counts for real weights that add up to their rounded sum: each weight's floor, and one
/// more for the largest remainders.
fn apportion(weighted: &[(u64, f64)]) -> Vec<(u64, u64)> {
    let total = weighted.iter().map(|w| w.1).sum::<f64>().round() as u64;
    let mut out: Vec<(u64, u64)> = weighted
        .iter()
        .map(|&(v, w)| (v, w.floor() as u64))
        .collect();
    let given: u64 = out.iter().map(|o| o.1).sum();
    let frac = |i: usize| weighted[i].1 - weighted[i].1.floor();
    let mut order: Vec<usize> = (0..weighted.len()).collect();
    order.sort_by(|&a, &b| frac(b).total_cmp(&frac(a)));
    for &i in order.iter().take(total.saturating_sub(given) as usize) {
        out[i].1 += 1;
    }
    out
}

/// The site's calls and times shared out over its sampled stacks, in proportion to the samples.
/// The calls are whole and add up to the site's exactly (largest remainders): a flame graph's
/// stacks of one site are as many calls as the site.
fn stack_samples(t: &Totals, s: &Split) -> Vec<StackSample> {
    let samples: u64 = t.stacks.values().sum();
    if samples == 0 {
        return Vec::new();
    }
    let mut ids: Vec<(&u32, &u64)> = t.stacks.iter().collect();
    ids.sort();
    let share = |total: u64, n: u64| (total as f64) * (n as f64) / (samples as f64);
    let calls = apportion(
        &ids.iter()
            .map(|&(&stack, &n)| (u64::from(stack), share(t.calls, n)))
            .collect::<Vec<_>>(),
    );
    ids.into_iter()
        .zip(calls)
        .map(|((&stack, &n), (_, calls))| StackSample {
            stack,
            calls,
            time: s.map(|&v| share(v, n).round() as u64),
        })
        .collect()
}

/// Everything recorded so far, as a profile (meta is left for the writer to fill in).
pub fn build(cal: &Calibration) -> Profile {
    let mut by_function: HashMap<usize, (Totals, HashMap<u32, Totals>)> = HashMap::new();
    let mut threads = 0;
    recorder::each_thread(|r| {
        let mut any = false;
        // This thread's Python calls of each function (over its sites).
        let mut python_calls: HashMap<usize, u64> = HashMap::new();
        r.each(|s| {
            if s.excluded || s.calls.get() == 0 {
                return;
            }
            any = true;
            let entry = by_function.entry(s.function).or_default();
            entry.0.add(s);
            if s.site != 0 {
                entry.1.entry(s.site).or_default().add(s);
            }
            *python_calls.entry(s.function).or_default() += s.python_calls.get();
        });
        for (function, calls) in python_calls {
            if calls == 0 {
                continue;
            }
            if let Some((t, _)) = by_function.get_mut(&function) {
                t.calling_threads += 1;
                t.busiest_thread_python_calls = t.busiest_thread_python_calls.max(calls);
            }
        }
        threads += any as u32;
    });
    let bindings: HashMap<usize, Binding> =
        by_function.keys().map(|&a| (a, binding_of(a))).collect();
    let addrs: Vec<usize> = by_function
        .keys()
        .copied()
        .filter(|a| bindings[a].builtin.is_none())
        .collect();
    let names = crate::symbols::describe(&addrs);
    let mut profile = Profile::new();
    let mut functions: Vec<FunctionRecord> = Vec::new();
    for (addr, (t, sites)) in by_function {
        let b = &bindings[&addr];
        let mut t = t;
        t.floor_taken = b.builtin.is_some();
        let mut f = match &b.builtin {
            Some(n) => {
                let mut f = FunctionRecord::new(n.library.clone(), n.function.clone());
                f.offset = n.offset;
                f
            }
            None => {
                let d = &names[&addr];
                if d.excluded {
                    continue;
                }
                let mut f = FunctionRecord::new(d.library.clone(), d.function.clone());
                f.offset = d.offset;
                f
            }
        };
        f.binding = b.kind.to_string();
        f.binding_detail = b.detail.to_string();
        // A builtin's calls that could not be split are reported whole, never as native time.
        let split_or_whole = |t: &Totals| (scale(t, cal), unsplit(t, cal));
        let (s, unsplit_ns) = split_or_whole(&t);
        f.unsplit_ns = unsplit_ns;
        f.calls = t.calls;
        f.arg_count = t.arg_count;
        f.arg_bytes = t.arg_bytes;
        f.ret_bytes = t.ret_bytes;
        f.buffer_bytes = t.buffer_bytes;
        f.timed_calls = t.timed_calls();
        f.time = s;
        f.construction_bytes = t.construction_bytes;
        f.python_calls = t.python_calls;
        f.within_builtin_calls = t.in_builtin_calls;
        f.calling_threads = t.calling_threads;
        f.busiest_thread_python_calls = t.busiest_thread_python_calls;
        f.fresh_buffer_calls = t.fresh_buffer_calls;
        f.undeclared_argtypes_calls = t.undeclared_argtypes;
        f.undeclared_restype_calls = t.undeclared_restype;
        f.native_hist = histogram(&t, cal);
        if t.got_calls > 0 {
            if t.ffi_calls > 0 {
                // Reached both through libffi and a module's GOT: no one binding describes it.
                f.binding.clear();
                f.binding_detail.clear();
            } else if f.binding.is_empty() {
                f.binding = ffiprof_profile::BINDING_EXTENSION.to_string();
            }
        }
        for (site, mut st) in sites {
            let Some(frame) = (site_tables().describe)(site) else {
                continue;
            };
            st.floor_taken = t.floor_taken;
            let (ss, site_unsplit) = split_or_whole(&st);
            f.sites.push(SiteRecord {
                file: frame.file,
                line: frame.line,
                function: frame.function,
                calls: st.calls,
                timed_calls: st.timed_calls(),
                time: ss,
                construction_bytes: st.construction_bytes,
                buffer_bytes: st.buffer_bytes,
                arg_bytes: st.arg_bytes,
                fresh_buffer_calls: st.fresh_buffer_calls,
                // Each gap is one clock interval: take the probe's cost off it like any other.
                gap_ns: net_ns(cal, st.gap_ticks, st.gap_samples, cal.probe_ns()).round() as u64,
                gap_samples: st.gap_samples,
                stacks: stack_samples(&st, &ss),
                through: (site_tables().through)(site),
                unsplit_ns: site_unsplit,
                ..SiteRecord::default()
            });
            if let Some(rec) = f.sites.last_mut() {
                (site_tables().arg_evidence)(site, addr, rec);
            }
        }
        f.sites
            .sort_by(|a, b| (a.file.as_str(), a.line).cmp(&(b.file.as_str(), b.line)));
        functions.push(f);
    }
    functions.sort_by(|a, b| {
        (a.library.as_str(), a.function.as_str()).cmp(&(b.library.as_str(), b.function.as_str()))
    });
    profile.functions = functions;
    // Frames first, over every function: ctypes' own keep sites (and stacks) too.
    keep_referenced_frames(&mut profile);
    profile.separate_ctypes_internal();
    profile.meta.threads = threads;
    profile.meta.dropped_calls = recorder::DROPPED.load(std::sync::atomic::Ordering::Relaxed);
    profile.pointer_flow =
        super::pointers::summary(crate::symbols::describe, |s| (site_tables().describe)(s));
    profile
}

/// Puts in the profile the stacks its sites refer to and the frames of those stacks, renumbered.
/// The interned tables are the process's whole history — in a forked child, its parent's too,
/// which made a child's 27 calls a 4.7 MB file — while a profile holds what it recorded.
fn keep_referenced_frames(profile: &mut Profile) {
    let (frames, stacks) = (site_tables().frames_and_stacks)();
    keep_referenced(profile, &frames, &stacks);
}

/// [`keep_referenced_frames`] over given tables (`stacks[id]`: indexes into `frames`).
fn keep_referenced(profile: &mut Profile, frames: &[Frame], stacks: &[Vec<u32>]) {
    // Old stack id → new, in the old ids' order.
    let mut stack_ids: BTreeMap<u32, u32> = profile
        .functions
        .iter()
        .flat_map(|f| &f.sites)
        .flat_map(|s| &s.stacks)
        .filter(|s| (s.stack as usize) < stacks.len())
        .map(|s| (s.stack, 0))
        .collect();
    let mut frame_ids: BTreeMap<u32, u32> = BTreeMap::new();
    for (new, (old, id)) in stack_ids.iter_mut().enumerate() {
        *id = new as u32;
        for &frame in &stacks[*old as usize] {
            frame_ids.insert(frame, 0);
        }
    }
    for (new, id) in frame_ids.values_mut().enumerate() {
        *id = new as u32;
    }
    profile.frames = frame_ids
        .keys()
        .map(|&old| frames.get(old as usize).cloned().unwrap_or_default())
        .collect();
    profile.stacks = stack_ids
        .keys()
        .map(|&old| stacks[old as usize].iter().map(|f| frame_ids[f]).collect())
        .collect();
    for site in profile.functions.iter_mut().flat_map(|f| &mut f.sites) {
        site.stacks.retain(|s| stack_ids.contains_key(&s.stack));
        for s in &mut site.stacks {
            s.stack = stack_ids[&s.stack];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cal() -> Calibration {
        Calibration {
            ns_per_tick: 1.0,
            probe_ticks: 0,
            native_floor_ticks: 0,
            got_floor_ticks: 0,
            start_unix_ns: 0,
            elapsed_ns: 0,
        }
    }

    fn sums(timed: u64, native: u64) -> Sums {
        Sums {
            timed,
            ticks: Split {
                native,
                marshal_in: native / 2,
                ..Split::default()
            },
        }
    }

    #[test]
    fn first_calls_count_as_measured_and_only_the_rest_is_scaled() {
        // 8 first calls of 1000 ticks each; of the other 992, 124 sampled at 10 ticks each.
        let t = Totals {
            calls: 1000,
            python_calls: 1000,
            first: sums(8, 8000),
            sampled: sums(124, 1240),
            first_native: vec![1000; 8],
            hist: {
                let mut h = vec![0; BUCKETS];
                h[recorder::bucket_of(10)] = 124;
                h
            },
            ..Totals::default()
        };
        let s = scale(&t, &cal());
        assert_eq!(s.native, 8000 + 9920);
        assert_eq!(s.marshal_in, 4000 + 4960);
        let h = histogram(&t, &cal());
        assert_eq!(h.len(), 1000, "one count per call");
        let l = h.summary();
        assert_eq!(l.p50_ns, 10);
        assert!((1000..1010).contains(&l.max_ns), "{l:?}");
    }

    #[test]
    fn first_calls_stand_for_all_until_one_later_call_is_sampled() {
        let t = Totals {
            calls: 12,
            first: sums(8, 800),
            first_native: vec![100; 8],
            hist: vec![0; BUCKETS],
            ..Totals::default()
        };
        assert_eq!(scale(&t, &cal()).native, 1200);
        assert_eq!(histogram(&t, &cal()).len(), 12);
        let few = Totals {
            calls: 3,
            first: sums(3, 600_000),
            first_native: vec![200_000; 3],
            hist: vec![0; BUCKETS],
            ..Totals::default()
        };
        assert_eq!(scale(&few, &cal()).native, 600_000);
    }

    /// Net time: each measured interval over-counts what measuring it costs — the native floor
    /// (clock reads plus libffi's call sequence) for a native interval, the probe for a
    /// marshalling one — which comes off per timed call before scaling, never below zero.
    #[test]
    fn the_floor_comes_off_each_measured_interval_before_scaling() {
        let c = Calibration {
            probe_ticks: 20,
            native_floor_ticks: 50,
            got_floor_ticks: 0,
            ..cal()
        };
        // 8 first calls: 1050 native, 220 marshal-in, 30 GIL each; 124 of the other 992 sampled:
        // 60 native, 120 marshal-in each.
        let t = Totals {
            calls: 1000,
            python_calls: 1000,
            first: Sums {
                timed: 8,
                ticks: Split {
                    native: 8 * 1050,
                    marshal_in: 8 * 220,
                    gil_wait: 8 * 30,
                    ..Split::default()
                },
            },
            sampled: Sums {
                timed: 124,
                ticks: Split {
                    native: 124 * 60,
                    marshal_in: 124 * 120,
                    ..Split::default()
                },
            },
            first_native: vec![1050; 8],
            hist: {
                let mut h = vec![0; BUCKETS];
                h[recorder::bucket_of(60)] = 124;
                h
            },
            ..Totals::default()
        };
        let s = scale(&t, &c);
        assert_eq!(s.native, 8 * 1000 + 992 * 10);
        assert_eq!(s.marshal_in, 8 * 200 + 992 * 100);
        // GIL wait is a sum of waits, not of intervals each timed call measured: nothing comes off.
        assert_eq!(s.gil_wait, 8 * 30);
        // The histogram's latencies are net too.
        let h = histogram(&t, &c).summary();
        let sampled_net = bucket_value(recorder::bucket_of(60)) - 50;
        assert_eq!(h.count, 1000);
        assert!(
            h.p50_ns.abs_diff(sampled_net) <= 1 + sampled_net / 100,
            "{h:?}"
        );
        assert!((1000..1010).contains(&h.max_ns), "{h:?}");
        // Calls faster than the floor count as no time, not as a negative one.
        let fast = Totals {
            sampled: Sums {
                ticks: Split {
                    native: 124 * 30,
                    ..t.sampled.ticks
                },
                ..t.sampled
            },
            ..t
        };
        assert_eq!(scale(&fast, &c).native, 8 * 1000);
        // Without a Python layer no marshalling interval was measured: nothing comes off it.
        let no_python = Totals {
            python_calls: 0,
            first: t.first,
            sampled: t.sampled,
            calls: 1000,
            ..Totals::default()
        };
        assert_eq!(scale(&no_python, &c).marshal_in, 8 * 220 + 992 * 120);
    }

    #[test]
    fn a_sites_calls_and_times_are_shared_over_its_stacks_by_samples() {
        let t = Totals {
            calls: 100,
            stacks: HashMap::from([(7, 10), (3, 30)]),
            ..Totals::default()
        };
        let s = Split {
            native: 1000,
            marshal_in: 400,
            marshal_out: 3,
            gil_wait: 0,
            construction: 80,
        };
        let got: Vec<_> = stack_samples(&t, &s)
            .iter()
            .map(|x| {
                (
                    x.stack,
                    x.calls,
                    x.time.native,
                    x.time.marshal_in,
                    x.time.marshal_out,
                    x.time.construction,
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![(3, 75, 750, 300, 2, 60), (7, 25, 250, 100, 1, 20)]
        );
        let unsampled = Totals {
            calls: 100,
            ..Totals::default()
        };
        assert!(stack_samples(&unsampled, &s).is_empty());
        // Three stacks sampled alike: 100 calls do not divide by 3, and still add up.
        let thirds = Totals {
            calls: 100,
            stacks: HashMap::from([(1, 5), (2, 5), (3, 5)]),
            ..Totals::default()
        };
        let calls: Vec<u64> = stack_samples(&thirds, &s).iter().map(|x| x.calls).collect();
        assert_eq!(calls.iter().sum::<u64>(), 100, "{calls:?}");
        assert!(calls.iter().all(|&c| c == 33 || c == 34), "{calls:?}");
    }

    #[test]
    fn each_part_pays_its_own_probe_cost_and_construction_is_not_scaled() {
        // 4 first calls, then 96 more of which 8 sampled: each sampled call stands for 12.
        let stratum = |timed, each: u64| Sums {
            timed,
            ticks: Split {
                native: timed * each,
                marshal_in: timed * each,
                marshal_out: timed * each,
                gil_wait: timed * each,
                construction: 0,
            },
        };
        let t = Totals {
            calls: 100,
            python_calls: 100,
            first: stratum(4, 100),
            sampled: stratum(8, 50),
            construction_ticks: 7_000,
            ..Totals::default()
        };
        let cal = Calibration {
            probe_ticks: 10,
            native_floor_ticks: 30,
            got_floor_ticks: 0,
            ..cal()
        };
        let s = scale(&t, &cal);
        // Native less the floor per timed call, marshaling less the probe, the GIL wait whole.
        assert_eq!(s.native, 4 * 70 + 96 * 20);
        assert_eq!(s.marshal_in, 4 * 90 + 96 * 40);
        assert_eq!(s.marshal_out, s.marshal_in);
        assert_eq!(s.gil_wait, 4 * 100 + 96 * 50);
        assert_eq!(s.construction, 7_000);
        // A C caller's calls have no marshaling spans to take the probe off.
        let c = scale(
            &Totals {
                python_calls: 0,
                ..t
            },
            &cal,
        );
        assert_eq!(c.marshal_in, 4 * 100 + 96 * 50);
    }

    #[test]
    fn apportioning_keeps_the_total_and_every_weight_near_its_share() {
        let w = [(1, 2.5), (2, 2.5), (3, 0.4), (4, 7.6)];
        let out = apportion(&w);
        assert_eq!(out.iter().map(|o| o.1).sum::<u64>(), 13);
        for ((_, weight), (_, n)) in w.iter().zip(&out) {
            assert!((*n as f64 - weight).abs() < 1.0, "{out:?}");
        }
    }

    #[test]
    fn only_referenced_stacks_and_frames_are_kept_renumbered() {
        let frame = |line| Frame {
            file: "f.py".into(),
            function: "g".into(),
            line,
        };
        let frames: Vec<Frame> = (0..6).map(frame).collect();
        let stacks = vec![vec![0, 1], vec![2, 3], vec![0, 4], vec![5]];
        let mut p = Profile::new();
        let mut f = FunctionRecord::new("lib.so", "f");
        f.sites.push(SiteRecord {
            stacks: vec![
                StackSample {
                    stack: 2,
                    calls: 5,
                    ..Default::default()
                },
                StackSample {
                    stack: 3,
                    calls: 1,
                    ..Default::default()
                },
            ],
            ..Default::default()
        });
        p.functions.push(f);
        keep_referenced(&mut p, &frames, &stacks);
        assert_eq!(p.frames, vec![frame(0), frame(4), frame(5)]);
        assert_eq!(p.stacks, vec![vec![0, 1], vec![2]]);
        let kept: Vec<(u32, u64)> = p.functions[0].sites[0]
            .stacks
            .iter()
            .map(|s| (s.stack, s.calls))
            .collect();
        assert_eq!(kept, vec![(0, 5), (1, 1)]);
    }
}
