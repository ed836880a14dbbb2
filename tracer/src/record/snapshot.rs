//! Turning the recorders into a [`Profile`]: sum every thread, convert ticks to nanoseconds, take
//! off the probe's own cost, name the functions and sites.

use std::collections::HashMap;

use ffiprof_profile::{FunctionRecord, Histogram, Profile, SiteRecord, StackSample};

use super::clock::Calibration;
use super::recorder::{self, bucket_value, CallStats, BUCKETS};

#[derive(Default)]
struct Totals {
    calls: u64,
    arg_count: u32,
    arg_bytes: u64,
    ret_bytes: u64,
    buffer_bytes: u64,
    timed: u64,
    native_ticks: u64,
    marshal_in_ticks: u64,
    marshal_out_ticks: u64,
    gil_ticks: u64,
    construction_ticks: u64,
    construction_bytes: u64,
    python_calls: u64,
    fresh_buffer_calls: u64,
    undeclared_argtypes: u64,
    undeclared_restype: u64,
    gap_ticks: u64,
    gap_samples: u64,
    hist: Vec<u64>,
    /// Sampled stacks: stack id → samples.
    stacks: HashMap<u32, u64>,
}

impl Totals {
    fn add(&mut self, s: &CallStats) {
        self.calls += s.calls.get();
        self.arg_count = self
            .arg_count
            .max(s.arg_count.load(std::sync::atomic::Ordering::Relaxed));
        self.arg_bytes += s.arg_bytes.get();
        self.ret_bytes += s.ret_bytes.get();
        self.buffer_bytes += s.buffer_bytes.get();
        self.timed += s.timed.get();
        self.native_ticks += s.native_ticks.get();
        self.marshal_in_ticks += s.marshal_in_ticks.get();
        self.marshal_out_ticks += s.marshal_out_ticks.get();
        self.gil_ticks += s.gil_ticks.get();
        self.construction_ticks += s.construction_ticks.get();
        self.construction_bytes += s.construction_bytes.get();
        self.python_calls += s.python_calls.get();
        self.fresh_buffer_calls += s.fresh_buffer_calls.get();
        self.undeclared_argtypes += s.undeclared_argtypes.get();
        self.undeclared_restype += s.undeclared_restype.get();
        self.gap_ticks += s.gap_ticks.get();
        self.gap_samples += s.gap_samples.get();
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

/// Time totals scaled from the timed calls to all calls, in ns, with the probe cost removed.
struct Scaled {
    native: u64,
    marshal_in: u64,
    marshal_out: u64,
    gil: u64,
    construction: u64,
}

/// `ticks` summed over `intervals` measured intervals, in ns, less what measuring costs each one.
fn net_ns(cal: &Calibration, ticks: u64, intervals: u64, per_interval_ns: u64) -> f64 {
    (cal.ns(ticks) as f64 - per_interval_ns as f64 * intervals as f64).max(0.0)
}

fn scale(t: &Totals, cal: &Calibration) -> Scaled {
    let factor = if t.timed == 0 {
        0.0
    } else {
        t.calls as f64 / t.timed as f64
    };
    let probe = cal.probe_ns();
    let f = |ticks: u64, intervals: u64, per_interval: u64| -> u64 {
        (net_ns(cal, ticks, intervals, per_interval) * factor).round() as u64
    };
    let py_timed = if t.python_calls == 0 { 0 } else { t.timed };
    Scaled {
        native: f(t.native_ticks, t.timed, cal.native_floor_ns()),
        marshal_in: f(t.marshal_in_ticks, py_timed, probe),
        marshal_out: f(t.marshal_out_ticks, py_timed, probe),
        gil: f(t.gil_ticks, 0, probe),
        construction: (cal.ns(t.construction_ticks) as f64).round() as u64,
    }
}

fn histogram(buckets: &[u64], cal: &Calibration) -> Histogram {
    let mut h = Histogram::new();
    let floor = cal.native_floor_ns();
    for (i, &count) in buckets.iter().enumerate() {
        if count > 0 {
            h.record_n(cal.ns(bucket_value(i)).saturating_sub(floor), count);
        }
    }
    h
}

/// The site's calls and times shared out over its sampled stacks, in proportion to the samples.
fn stack_samples(t: &Totals, s: &Scaled) -> Vec<StackSample> {
    let samples: u64 = t.stacks.values().sum();
    if samples == 0 {
        return Vec::new();
    }
    let mut ids: Vec<(&u32, &u64)> = t.stacks.iter().collect();
    ids.sort();
    let part = |total: u64, n: u64| ((total as f64) * (n as f64) / (samples as f64)).round() as u64;
    ids.into_iter()
        .map(|(&stack, &n)| StackSample {
            stack,
            calls: part(t.calls, n),
            native_ns: part(s.native, n),
            marshal_in_ns: part(s.marshal_in, n),
            marshal_out_ns: part(s.marshal_out, n),
            gil_wait_ns: part(s.gil, n),
            construction_ns: part(s.construction, n),
        })
        .collect()
}

/// Everything recorded so far, as a profile (meta is left for the writer to fill in).
pub fn build(cal: &Calibration) -> Profile {
    let mut by_function: HashMap<usize, (Totals, HashMap<u32, Totals>)> = HashMap::new();
    let mut threads = 0;
    recorder::each_thread(|r| {
        let mut any = false;
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
        });
        threads += any as u32;
    });
    let addrs: Vec<usize> = by_function.keys().copied().collect();
    let names = crate::symbols::describe(&addrs);
    let mut profile = Profile::new();
    let mut functions: Vec<FunctionRecord> = Vec::new();
    for (addr, (t, sites)) in by_function {
        let d = &names[&addr];
        if d.excluded {
            continue;
        }
        let s = scale(&t, cal);
        let mut f = FunctionRecord::new(d.library.clone(), d.function.clone());
        f.offset = d.offset;
        f.calls = t.calls;
        f.arg_count = t.arg_count;
        f.arg_bytes = t.arg_bytes;
        f.ret_bytes = t.ret_bytes;
        f.buffer_bytes = t.buffer_bytes;
        f.timed_calls = t.timed;
        f.native_ns = s.native;
        f.marshal_in_ns = s.marshal_in;
        f.marshal_out_ns = s.marshal_out;
        f.gil_wait_ns = s.gil;
        f.construction_ns = s.construction;
        f.construction_bytes = t.construction_bytes;
        f.python_calls = t.python_calls;
        f.fresh_buffer_calls = t.fresh_buffer_calls;
        f.undeclared_argtypes_calls = t.undeclared_argtypes;
        f.undeclared_restype_calls = t.undeclared_restype;
        f.native_hist = histogram(&t.hist, cal);
        for (site, st) in sites {
            let Some(frame) = crate::python::describe_site(site) else {
                continue;
            };
            let ss = scale(&st, cal);
            f.sites.push(SiteRecord {
                file: frame.file,
                line: frame.line,
                function: frame.function,
                calls: st.calls,
                timed_calls: st.timed,
                native_ns: ss.native,
                marshal_in_ns: ss.marshal_in,
                marshal_out_ns: ss.marshal_out,
                gil_wait_ns: ss.gil,
                construction_ns: ss.construction,
                construction_bytes: st.construction_bytes,
                buffer_bytes: st.buffer_bytes,
                arg_bytes: st.arg_bytes,
                fresh_buffer_calls: st.fresh_buffer_calls,
                // Each gap is one clock interval: take the probe's cost off it like any other.
                gap_ns: net_ns(cal, st.gap_ticks, st.gap_samples, cal.probe_ns()).round() as u64,
                gap_samples: st.gap_samples,
                stacks: stack_samples(&st, &ss),
                through: crate::python::site_through(site),
            });
        }
        f.sites
            .sort_by(|a, b| (a.file.as_str(), a.line).cmp(&(b.file.as_str(), b.line)));
        functions.push(f);
    }
    functions.sort_by(|a, b| {
        (a.library.as_str(), a.function.as_str()).cmp(&(b.library.as_str(), b.function.as_str()))
    });
    profile.functions = functions;
    profile.separate_ctypes_internal();
    profile.meta.threads = threads;
    profile.meta.dropped_calls = recorder::DROPPED.load(std::sync::atomic::Ordering::Relaxed);
    profile
}
