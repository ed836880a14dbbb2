//! Merging profiles: a parent and its forked children, or several snapshots, read as one.

use std::collections::HashMap;

use crate::{
    Frame, FunctionRecord, MeasuredChanges, PointerFlow, Profile, SiteRecord, Split, StackSample,
};

/// Adds `other` into `into`: functions by (library, function), sites by (file, line, function),
/// stacks re-interned. Meta keeps `into`'s identity; durations take the longer, counts add up.
pub fn merge(into: &mut Profile, other: &Profile) {
    let mut frame_ids: HashMap<Frame, u32> = into
        .frames
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, f)| (f, i as u32))
        .collect();
    let mut stack_ids: HashMap<Vec<u32>, u32> = into
        .stacks
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, s)| (s, i as u32))
        .collect();
    let stack_map: Vec<u32> = other
        .stacks
        .iter()
        .map(|stack| {
            let frames: Vec<u32> = stack
                .iter()
                .map(|&fi| {
                    let frame = other.frames.get(fi as usize).cloned().unwrap_or_default();
                    *frame_ids.entry(frame.clone()).or_insert_with(|| {
                        into.frames.push(frame);
                        (into.frames.len() - 1) as u32
                    })
                })
                .collect();
            *stack_ids.entry(frames.clone()).or_insert_with(|| {
                into.stacks.push(frames);
                (into.stacks.len() - 1) as u32
            })
        })
        .collect();

    merge_functions(&mut into.functions, &other.functions, &stack_map);
    merge_functions(
        &mut into.ctypes_internal,
        &other.ctypes_internal,
        &stack_map,
    );
    into.meta.duration_ns = into.meta.duration_ns.max(other.meta.duration_ns);
    into.meta.threads += other.meta.threads;
    into.meta.dropped_calls += other.meta.dropped_calls;
    merge_measured(&mut into.measured_changes, other.measured_changes.as_ref());
    merge_pointer_flow(&mut into.pointer_flow, other.pointer_flow.as_ref());
}

/// Two processes' pointer flows (a parent and its forked child), as one: each allocator's
/// objects add up by the function they ended at, and their sites by file and line.
fn merge_pointer_flow(into: &mut Option<PointerFlow>, other: Option<&PointerFlow>) {
    let Some(other) = other else { return };
    let Some(into) = into else {
        *into = Some(other.clone());
        return;
    };
    into.sampled |= other.sampled;
    into.sample_every = into.sample_every.max(other.sample_every);
    into.tracked += other.tracked;
    into.skipped += other.skipped;
    for a in &other.allocators {
        let Some(mine) = into
            .allocators
            .iter_mut()
            .find(|m| m.library == a.library && m.function == a.function)
        else {
            into.allocators.push(a.clone());
            continue;
        };
        mine.made += a.made;
        for e in &a.endings {
            let Some(end) = mine.endings.iter_mut().find(|m| m.last == e.last) else {
                mine.endings.push(e.clone());
                continue;
            };
            end.live += e.live;
            end.reused += e.reused;
            end.continued += e.continued;
            for s in &e.live_sites {
                match end
                    .live_sites
                    .iter_mut()
                    .find(|m| m.file == s.file && m.line == s.line)
                {
                    Some(m) => m.count += s.count,
                    None => end.live_sites.push(s.clone()),
                }
            }
        }
    }
    for t in &other.truncated {
        match into.truncated.iter_mut().find(|m| {
            m.library == t.library && m.function == t.function && m.passed_to == t.passed_to
        }) {
            Some(m) => m.count += t.count,
            None => into.truncated.push(t.clone()),
        }
    }
}

/// Measurements made on the same interpreter are pooled (the first of a shape kept); those of
/// another interpreter are left out, since they would not describe the other process's calls.
fn merge_measured(into: &mut Option<MeasuredChanges>, other: Option<&MeasuredChanges>) {
    let Some(other) = other else { return };
    match into {
        None => *into = Some(other.clone()),
        Some(mine) if mine.executable == other.executable => {
            for m in &other.measurements {
                if mine.get(&m.change, &m.shape).is_none() {
                    mine.measurements.push(m.clone());
                }
            }
        }
        Some(_) => {}
    }
}

/// Adds each of `other` into the record of `into` with the same (library, function).
fn merge_functions(into: &mut Vec<FunctionRecord>, other: &[FunctionRecord], stack_map: &[u32]) {
    for f in other {
        let target = match into
            .iter()
            .position(|g| g.library == f.library && g.function == f.function)
        {
            Some(i) => &mut into[i],
            None => {
                into.push(FunctionRecord {
                    sites: Vec::new(),
                    native_hist: Default::default(),
                    calls: 0,
                    ..f.clone()
                });
                let t = into.last_mut().expect("just pushed");
                t.arg_bytes = 0;
                t.ret_bytes = 0;
                t.buffer_bytes = 0;
                t.timed_calls = 0;
                t.time = Split::default();
                t.construction_bytes = 0;
                t.python_calls = 0;
                t.unsplit_ns = 0;
                t.within_builtin_calls = 0;
                t.calling_threads = 0;
                t.busiest_thread_python_calls = 0;
                t.fresh_buffer_calls = 0;
                t.undeclared_argtypes_calls = 0;
                t.undeclared_restype_calls = 0;
                t
            }
        };
        add_function(target, f, stack_map);
    }
}

fn add_function(t: &mut FunctionRecord, f: &FunctionRecord, stack_map: &[u32]) {
    if t.binding != f.binding || t.binding_detail != f.binding_detail {
        // Reached both ways: no one binding describes the calls.
        t.binding.clear();
        t.binding_detail.clear();
    }
    t.unsplit_ns += f.unsplit_ns;
    t.calls += f.calls;
    t.arg_count = t.arg_count.max(f.arg_count);
    t.arg_bytes += f.arg_bytes;
    t.ret_bytes += f.ret_bytes;
    t.buffer_bytes += f.buffer_bytes;
    t.timed_calls += f.timed_calls;
    t.time += f.time;
    t.construction_bytes += f.construction_bytes;
    t.python_calls += f.python_calls;
    t.within_builtin_calls += f.within_builtin_calls;
    // Processes' threads are distinct: their callers add up; the busiest stays one thread's.
    t.calling_threads += f.calling_threads;
    t.busiest_thread_python_calls = t
        .busiest_thread_python_calls
        .max(f.busiest_thread_python_calls);
    t.fresh_buffer_calls += f.fresh_buffer_calls;
    t.undeclared_argtypes_calls += f.undeclared_argtypes_calls;
    t.undeclared_restype_calls += f.undeclared_restype_calls;
    t.native_hist.add(&f.native_hist);
    for s in &f.sites {
        let site = match t
            .sites
            .iter_mut()
            .position(|x| x.file == s.file && x.line == s.line && x.function == s.function)
        {
            Some(i) => &mut t.sites[i],
            None => {
                t.sites.push(SiteRecord {
                    file: s.file.clone(),
                    line: s.line,
                    function: s.function.clone(),
                    ..SiteRecord::default()
                });
                t.sites.last_mut().expect("just pushed")
            }
        };
        add_site(site, s, stack_map);
    }
}

fn add_site(t: &mut SiteRecord, s: &SiteRecord, stack_map: &[u32]) {
    t.calls += s.calls;
    t.timed_calls += s.timed_calls;
    t.time += s.time;
    t.construction_bytes += s.construction_bytes;
    t.buffer_bytes += s.buffer_bytes;
    t.arg_bytes += s.arg_bytes;
    t.fresh_buffer_calls += s.fresh_buffer_calls;
    t.gap_ns += s.gap_ns;
    t.gap_samples += s.gap_samples;
    t.unsplit_ns += s.unsplit_ns;
    if t.through.is_none() {
        t.through = s.through.clone();
    }
    merge_arg_types(&mut t.arg_types, &s.arg_types);
    t.arg_types_calls += s.arg_types_calls;
    for &i in &s.truncated_int_args {
        if !t.truncated_int_args.contains(&i) {
            t.truncated_int_args.push(i);
        }
    }
    t.truncated_int_args.sort_unstable();
    t.restype_default |= s.restype_default;
    for b in &s.fresh_buffer_builds {
        if !t.fresh_buffer_builds.contains(b) {
            t.fresh_buffer_builds.push(b.clone());
        }
    }
    for st in &s.stacks {
        let stack = stack_map
            .get(st.stack as usize)
            .copied()
            .unwrap_or(st.stack);
        match t.stacks.iter_mut().find(|x| x.stack == stack) {
            Some(x) => {
                x.calls += st.calls;
                x.time += st.time;
            }
            None => t.stacks.push(StackSample {
                stack,
                ..st.clone()
            }),
        }
    }
}

/// Each position's alternatives (`a|b`) of `other` added to those of `into`, in order of sight.
fn merge_arg_types(into: &mut Vec<String>, other: &[String]) {
    if into.len() < other.len() {
        into.resize(other.len(), String::new());
    }
    for (t, o) in into.iter_mut().zip(other) {
        for alt in o.split('|').filter(|a| !a.is_empty()) {
            if !t.split('|').any(|x| x == alt) {
                if !t.is_empty() {
                    t.push('|');
                }
                t.push_str(alt);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(calls: u64) -> Profile {
        let mut p = Profile::new();
        p.frames.push(Frame {
            file: "a.py".into(),
            function: "<module>".into(),
            line: 3,
        });
        p.stacks.push(vec![0]);
        let mut f = FunctionRecord::new("/lib/libx.so", "f");
        f.calls = calls;
        f.native_hist.record_n(100, calls);
        f.sites.push(SiteRecord {
            file: "a.py".into(),
            line: 3,
            function: "<module>".into(),
            calls,
            stacks: vec![StackSample {
                stack: 0,
                calls,
                ..Default::default()
            }],
            ..Default::default()
        });
        p.functions.push(f);
        p
    }

    #[test]
    fn merging_adds_counts_and_reinterns_stacks() {
        let mut a = sample(3);
        merge(&mut a, &sample(4));
        assert_eq!(a.functions.len(), 1);
        let f = &a.functions[0];
        assert_eq!(f.calls, 7);
        assert_eq!(f.native_hist.len(), 7);
        assert_eq!(f.sites.len(), 1);
        assert_eq!(f.sites[0].calls, 7);
        assert_eq!(
            f.sites[0].stacks,
            vec![StackSample {
                stack: 0,
                calls: 7,
                ..Default::default()
            }]
        );
        assert_eq!(a.stacks.len(), 1);
    }

    #[test]
    fn merging_keeps_ctypes_internal_apart_and_through() {
        let mut a = sample(3);
        let mut b = sample(4);
        let mut cast = FunctionRecord::new("/y/_ctypes.so", "cast");
        cast.calls = 2;
        b.ctypes_internal.push(cast);
        b.functions[0].sites[0].through = Some(Frame {
            file: "ffi.py".into(),
            function: "__call__".into(),
            line: 9,
        });
        merge(&mut a, &b);
        merge(&mut a, &b);
        assert_eq!(a.functions.len(), 1);
        assert_eq!(a.functions[0].calls, 11);
        assert_eq!(a.ctypes_internal.len(), 1);
        assert_eq!(a.ctypes_internal[0].calls, 4);
        assert_eq!(a.functions[0].sites[0].through.as_ref().unwrap().line, 9);
    }

    #[test]
    fn merging_adds_the_time_split_of_functions_sites_and_stacks() {
        let timed = |calls| {
            let mut p = sample(calls);
            let time = Split {
                native: 10 * calls,
                marshal_in: 200 * calls,
                gil_wait: calls,
                ..Split::default()
            };
            let f = &mut p.functions[0];
            f.time = time;
            f.sites[0].time = time;
            f.sites[0].stacks[0].time = time;
            p
        };
        let mut a = timed(3);
        merge(&mut a, &timed(4));
        let sum = timed(7).functions[0].time;
        let f = &a.functions[0];
        assert_eq!(sum.total(), 7 * 211);
        assert_eq!(
            (f.time, f.sites[0].time, f.sites[0].stacks[0].time),
            (sum, sum, sum)
        );
    }

    #[test]
    fn merging_adds_pointer_flows_by_allocator_ending_and_site() {
        use crate::{AllocatorFlow, Ending, FunctionRef, SiteCount};
        let flow = |live: u64, line: u32| {
            let mut p = sample(1);
            p.pointer_flow = Some(PointerFlow {
                cap: 65536,
                sample_every: 1,
                tracked: live,
                allocators: vec![AllocatorFlow {
                    library: "l.so".into(),
                    function: "make".into(),
                    made: live + 1,
                    endings: vec![Ending {
                        last: Some(FunctionRef {
                            library: "l.so".into(),
                            function: "keep".into(),
                        }),
                        live,
                        reused: 1,
                        continued: 0,
                        live_sites: vec![SiteCount {
                            file: "a.py".into(),
                            line,
                            function: "f".into(),
                            count: live,
                        }],
                    }],
                }],
                ..PointerFlow::default()
            });
            p
        };
        let mut a = sample(1);
        merge(&mut a, &flow(3, 7));
        assert_eq!(a.pointer_flow.as_ref().unwrap().allocators[0].made, 4);
        merge(&mut a, &flow(5, 7));
        merge(&mut a, &flow(2, 9));
        let f = a.pointer_flow.unwrap();
        assert_eq!(f.tracked, 10);
        let alloc = &f.allocators[0];
        assert_eq!(alloc.made, 13);
        assert_eq!(alloc.endings.len(), 1);
        let e = &alloc.endings[0];
        assert_eq!((e.live, e.reused), (10, 3));
        let sites: Vec<(u32, u64)> = e.live_sites.iter().map(|s| (s.line, s.count)).collect();
        assert_eq!(sites, vec![(7, 8), (9, 2)]);
    }

    #[test]
    fn merging_into_empty_copies() {
        let mut a = Profile::new();
        merge(&mut a, &sample(5));
        assert_eq!(a.functions[0].calls, 5);
        assert_eq!(a.functions[0].sites[0].calls, 5);
    }
}
