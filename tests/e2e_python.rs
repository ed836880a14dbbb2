//! End to end, the Python layer: call sites, the marshal/native/GIL split, buffer and construction
//! bytes, callbacks, threads, and timing accuracy against C functions that spin for a known time —
//! on every CPython 3.8–3.13 pyenv has, on Debian's 3.11 and on Debian forky's 3.14 (in its
//! root). An interpreter that is not installed shows as *ignored* with its name (own harness:
//! libtest-mimic), never as passed.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use ffiprof_profile::{FunctionRecord, Profile};
use libtest_mimic::{Arguments, Failed};

type Case = fn(&Interpreter, &Path) -> Result<(), Failed>;

fn profile_of(
    py: &Interpreter,
    dir: &Path,
    extra: &[&str],
    script_name: &str,
) -> (Profile, String) {
    let out = dir.join("p.json");
    let o = run_profiled(py, &out, extra, script_name, &[FIXTURE]);
    check_ok(&o);
    (
        read_profile(&out),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

fn func<'a>(p: &'a Profile, name: &str) -> &'a FunctionRecord {
    p.function(name)
        .unwrap_or_else(|| panic!("{name} not in profile: {:?}", calls_by_name(p)))
}

/// CPython 3.13+ publishes its struct offsets (`_Py_DebugOffsets` in `_PyRuntime`): the Python
/// layer reads the ones it needs at start-up and the profile lists each beside ffiprof's table's
/// value; on every 3.13 and 3.14 here they agree, name by name. Earlier versions publish none.
fn published_offsets_agree_with_the_table(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    let (p, _) = profile_of(py, dir, &[], "py_sites.py");
    assert_eq!(
        func(&p, "fx_add_int").python_calls,
        600,
        "the Python layer is on"
    );
    let version = p.meta.python.clone().unwrap_or_default();
    let minor: u32 = version
        .split('.')
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap();
    let offsets = &p.meta.python_offsets;
    if minor < 13 {
        assert!(offsets.is_empty(), "{version}: {offsets:?}");
        return Ok(());
    }
    let names: Vec<&str> = offsets.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "thread_state.current_frame",
            "interpreter_frame.previous",
            "interpreter_frame.executable",
            "interpreter_frame.instr_ptr",
            "interpreter_frame.owner",
            "code_object.co_code_adaptive",
            "pyobject.ob_type",
            "type_object.tp_name",
            "type_object.tp_flags",
            "tuple_object.ob_item",
            "tuple_object.ob_size",
            "list_object.ob_item",
        ],
        "{version}"
    );
    let table: Vec<String> = offsets
        .iter()
        .map(|o| format!("{} {}/{}", o.name, o.published, o.table))
        .collect();
    eprintln!("{} published/table: {}", py.label, table.join(", "));
    assert!(
        offsets.iter().all(|o| o.published == o.table),
        "{version}: published offsets differ from the table: {table:?}"
    );
    Ok(())
}

fn sites_exact(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    let (p, out) = profile_of(py, dir, &[], "py_sites.py");
    let lines: Vec<u32> = out.split_whitespace().map(|l| l.parse().unwrap()).collect();
    let f = func(&p, "fx_add_int");
    assert_eq!(f.calls, 600);
    assert_eq!(f.python_calls, 600);
    let sites: BTreeMap<u32, (u64, &str, &str)> = f
        .sites
        .iter()
        .map(|s| (s.line, (s.calls, s.function.as_str(), s.file.as_str())))
        .collect();
    let file = script("py_sites.py");
    let file = file.to_str().unwrap();
    assert_eq!(
        sites,
        BTreeMap::from([
            (lines[0], (500, "work", file)),
            (lines[1], (100, "work", file))
        ]),
        "sites of {}",
        py.label
    );
    // The split is there, and the sampled stacks lead from <module> through work() to the site.
    assert!(f.timed_calls > 0 && f.timed_calls <= f.calls);
    assert!(f.time.marshal_in > 0, "{f:?}");
    let site_a = f.sites.iter().find(|s| s.line == lines[0]).unwrap();
    assert!(site_a.time.marshal_in > 0);
    assert!(
        !site_a.stacks.is_empty(),
        "no stack sampled at the busiest site"
    );
    let stack = &p.stacks[site_a.stacks[0].stack as usize];
    let names: Vec<&str> = stack
        .iter()
        .map(|&i| p.frames[i as usize].function.as_str())
        .collect();
    assert_eq!(names, vec!["<module>", "work"], "{stack:?}");
    assert_eq!(p.frames[*stack.last().unwrap() as usize].line, lines[0]);
    assert_eq!(site_a.stacks.iter().map(|s| s.calls).sum::<u64>(), 500);
    // One thread: no GIL hand-off to see, so the release is not hooked (it would cost every call).
    assert!(!save_thread_hooked(&p), "{:?}", p.hooks);
    Ok(())
}

/// Whether the `PyEval_SaveThread` hook was armed (installed in `_ctypes`).
fn save_thread_hooked(p: &ffiprof_profile::Profile) -> bool {
    p.hooks
        .iter()
        .any(|h| h.hook == "PyEval_SaveThread" && h.installed && h.module.contains("_ctypes"))
}

fn buffer_and_construction_bytes(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    let (p, out) = profile_of(py, dir, &[], "py_bytes.py");
    let numpy = out.trim() == "numpy";
    let sum = func(&p, "fx_sum");
    let np_bytes = if numpy { 4 * 400 } else { 0 };
    assert_eq!(
        sum.buffer_bytes,
        30 * 800 + 10 * 8000 + np_bytes,
        "numpy: {numpy}"
    );
    // The reused array was built once (800 bytes) and its first call received it fresh.
    assert_eq!(sum.construction_bytes, 800 + 10 * 8000);
    assert_eq!(sum.fresh_buffer_calls, 1 + 10);
    assert!(sum.time.construction > 0);
    assert_eq!(func(&p, "fx_strlen").buffer_bytes, 10 * 5);
    let byref = func(&p, "fx_point_norm2_ptr");
    assert_eq!(byref.buffer_bytes, 7 * 24);
    // The Point was built once before the loop: only the first of the 7 calls received it fresh.
    assert_eq!(byref.construction_bytes, 24);
    assert_eq!(byref.fresh_buffer_calls, 1);
    let fill = func(&p, "fx_fill");
    let np_fill = if numpy { 2 * 400 } else { 0 };
    assert_eq!(fill.buffer_bytes, 3 * 64 + np_fill, "numpy: {numpy}");
    // from_buffer shares memory: no construction. Each `a.ctypes` builds a new c_void_p for its
    // call, which is a fresh ctypes object (8 bytes) like a pointer() made per call.
    let np_fresh = if numpy { 2 } else { 0 };
    assert_eq!(fill.fresh_buffer_calls, np_fresh, "numpy: {numpy}");
    assert_eq!(fill.construction_bytes, np_fresh * 8, "numpy: {numpy}");
    Ok(())
}

/// ctypes' conversion protocols, all exact: a cif whose shape changes at one site, a custom
/// `from_param`, `_as_parameter_`, `pointer()` and `cast()` pointers (the bytes of what they point
/// into), `c_char_p` / `c_void_p` instances (by value and by reference), paramflags adding an argument, errcheck raising after the C call (counted) and
/// conversions refused before it (not counted).
fn conversion_protocols(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    let (p, out) = profile_of(py, dir, &[], "py_protocols.py");
    let line: u32 = out.trim().parse().unwrap();
    let shape = func(&p, "fx_add_i64");
    assert_eq!((shape.calls, shape.arg_bytes), (10, 5 * 8 + 5 * 16));
    let scale = func(&p, "fx_scale");
    assert_eq!((scale.calls, scale.arg_bytes, scale.ret_bytes), (6, 48, 48));
    let sum = func(&p, "fx_sum");
    assert_eq!((sum.calls, sum.buffer_bytes), (4, 4 * 80));
    let norm = func(&p, "fx_point_norm2_ptr");
    assert_eq!((norm.calls, norm.buffer_bytes), (7, 5 * 24 + 2 * 72));
    let add = func(&p, "fx_add_int");
    assert_eq!((add.calls, add.arg_bytes), (4, 4 * 8));
    let sites: Vec<(u32, u64)> = add.sites.iter().map(|s| (s.line, s.calls)).collect();
    assert_eq!(sites, [(line, 4)]);
    let noop = func(&p, "fx_noop");
    assert_eq!((noop.calls, noop.python_calls), (3, 3));
    let strlen = func(&p, "fx_strlen");
    assert_eq!(
        (strlen.calls, strlen.python_calls, strlen.buffer_bytes),
        (2 + 1, 2 + 1, 2 * 5 + 3)
    );
    let fill = func(&p, "fx_fill");
    assert_eq!((fill.calls, fill.buffer_bytes), (3, 0));
    let sort = func(&p, "fx_sort_ints");
    assert_eq!((sort.calls, sort.buffer_bytes), (2, 2 * 8));
    Ok(())
}

/// A buffer from `create_string_buffer` costs the whole helper call, not only the constructor
/// inside it: everywhere but 3.11, whose calls between Python functions bypass every hook (the
/// helper is then timed by its constructor, like the direct site).
fn helper_construction(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    let mut ratios = Vec::new();
    let mut minor = 0;
    // Three runs, median ratio: one preemption inside a timed construction (milliseconds while
    // the suite runs in parallel) can outweigh a whole site's sum in a single run.
    for _ in 0..3 {
        let (p, out) = profile_of(py, dir, &[], "py_helpers.py");
        let v: Vec<u32> = out.split_whitespace().map(|x| x.parse().unwrap()).collect();
        let (line_helper, line_direct) = (v[0], v[1]);
        minor = v[2];
        let f = func(&p, "fx_strlen");
        let site = |line: u32| {
            f.sites
                .iter()
                .find(|s| s.line == line)
                .unwrap_or_else(|| panic!("no site at line {line}: {:?}", f.sites))
        };
        let (helper, direct) = (site(line_helper), site(line_direct));
        for s in [helper, direct] {
            assert_eq!(s.calls, 300);
            assert_eq!(s.fresh_buffer_calls, 300);
            assert_eq!(s.construction_bytes, 300 * 4096);
            assert!(s.time.construction > 0);
        }
        ratios.push(helper.time.construction as f64 / direct.time.construction as f64);
    }
    ratios.sort_by(f64::total_cmp);
    if minor != 11 {
        // The helper adds a Python call, two isinstance checks and a sys.audit event to the same
        // construction: 2.3-2.7x here; timed by its constructor alone it is ~1.3x (3.11).
        assert!(ratios[1] > 1.6, "{}: helper/direct {ratios:?}", py.label);
    }
    Ok(())
}

fn callback_nested_calls(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    let (p, out) = profile_of(py, dir, &[], "py_callback.py");
    let v: Vec<u64> = out.split_whitespace().map(|x| x.parse().unwrap()).collect();
    let (compares, sort_line, compare_line) = (v[0], v[1] as u32, v[2] as u32);
    let sort = func(&p, "fx_sort_ints");
    assert_eq!(sort.calls, 1);
    assert_eq!(sort.sites.len(), 1);
    assert_eq!(sort.sites[0].line, sort_line);
    let add = func(&p, "fx_add_int");
    assert_eq!(add.calls, compares);
    assert_eq!(add.sites.len(), 1);
    assert_eq!(add.sites[0].line, compare_line);
    assert_eq!(add.sites[0].function, "compare");
    assert_eq!(add.sites[0].calls, compares);
    Ok(())
}

fn threads_gil_wait(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    let out = dir.join("p.json");
    let o = run_profiled(
        py,
        &out,
        &[],
        "calls_threads.py",
        &[FIXTURE, "4", "20000", "30000"],
    );
    check_ok(&o);
    let p = read_profile(&out);
    let f = func(&p, "fx_add_int");
    assert_eq!(f.calls, 110_000);
    assert_eq!(f.python_calls, 110_000);
    assert_eq!(f.sites.iter().map(|s| s.calls).sum::<u64>(), 110_000);
    assert!(f.time.gil_wait > 0, "{f:?}");
    // The main thread and the four workers called it; the main thread most.
    assert_eq!(f.calling_threads, 5, "{f:?}");
    assert_eq!(f.busiest_thread_python_calls, 30_000, "{f:?}");
    // fx_scale: the main thread alone, whatever other threads ran.
    let g = func(&p, "fx_scale");
    assert_eq!((g.python_calls, g.calling_threads), (30_000, 1), "{g:?}");
    assert_eq!(g.busiest_thread_python_calls, 30_000);
    assert_eq!(p.meta.threads, 5);
    // Four threads trading the GIL: a call waited another's turn, and the release is hooked
    // from then on, so that a hand-off inside it is filed as GIL wait, not as marshal-in.
    assert!(save_thread_hooked(&p), "{:?}", p.hooks);
    Ok(())
}

fn within(measured: u64, truth: u64, tolerance: f64) -> bool {
    (measured as f64 - truth as f64).abs() <= truth as f64 * tolerance
}

/// What the profile may differ from a spin function's own measure of itself, beyond the relative
/// tolerance: the profile's interval also holds the jump into the function and the return out of it,
/// which the function's own clock reads cannot see. The agent takes off their cost as measured once
/// (the calibrated floor), warm; after the Python loop between two calls they may miss the caches —
/// or the floor may have been measured while the machine was busy — tens of ns on this VM either way
/// (seen in loaded runs: 1 µs spins read 51 ns long, and 45 ns short).
const CALL_EDGE_NS: u64 = 80;

/// A spin function's median against its own measure: 3 % and the call's edges (see above).
fn within_spin(measured: u64, truth: u64) -> bool {
    measured.abs_diff(truth) as f64 <= truth as f64 * 0.03 + CALL_EDGE_NS as f64
}

/// Timing tests measure clock time, as a benchmark does: they run with nothing else of this suite
/// beside them (every other case holds this shared), or on a 2-core machine the other profiled
/// processes evict the caches the probe's calibrated floor was measured with.
static QUIET: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn timing_accuracy(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    let _alone = QUIET.write().unwrap_or_else(|e| e.into_inner());
    for sample in ["1", "8"] {
        let (p, out) = profile_of(py, dir, &["--timing-sample", sample], "py_timing.py");
        let truths: Vec<u64> = out.split_whitespace().map(|x| x.parse().unwrap()).collect();
        for (name, truth) in ["fx_spin_1us", "fx_spin_10us", "fx_spin_100us"]
            .into_iter()
            .zip(truths)
        {
            let f = func(&p, name);
            let p50 = f.native_hist.summary().p50_ns;
            assert!(
                within_spin(p50, truth),
                "{name}: median {p50} ns vs {truth} ns (timing 1/{sample}; 3 % and \
                 {CALL_EDGE_NS} ns of call edges allowed)"
            );
        }
        let noop = func(&p, "fx_noop");
        assert_eq!(noop.calls, 50_000);
        // The median: a preempted sample or an interrupt may land in any call, and the mean of
        // 50 000 calls carries them; what the probe costs shows in the typical call.
        let p50 = noop.native_hist.summary().p50_ns;
        let mean = noop.time.native / noop.calls;
        assert!(
            p50 <= 25,
            "trivial function: median {p50} ns (mean {mean}) after calibration (timing 1/{sample})"
        );
        assert!(p.meta.probe_overhead_ns > 0);
        assert_eq!(p.meta.timing_sample_every.to_string(), sample);
    }
    Ok(())
}

/// A function called 3 times at 200 µs beside one called 10 000 times: the rare one's calls are
/// all timed (the first calls of every pair are), and the strata add up — the first calls' times
/// as measured, the sampled rest scaled — in the default mode and in ffi-only mode sampled 1 in 8.
fn rare_calls_timed(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    let _alone = QUIET.write().unwrap_or_else(|e| e.into_inner());
    for mode in [
        &["--timing-sample", "8"][..],
        &["--ffi-only", "--timing-sample", "8"],
    ] {
        let (p, out) = profile_of(py, dir, mode, "py_rare.py");
        let v: Vec<u64> = out.split_whitespace().map(|x| x.parse().unwrap()).collect();
        let [rare_py, warm_py, spin_1us, rare_line, hot_line, warm_line] = v[..] else {
            panic!("py_rare.py printed {out}");
        };
        let ffi_only = mode.contains(&"--ffi-only");
        let spin = func(&p, "fx_spin_ns");
        // Each slow call spins 200 µs by the monotonic clock (the TSC's calibration may be off by
        // a fraction of a percent), and lies inside the Python call timed around it.
        let slow = |n: u64| 200_000 * n * 98 / 100;
        if ffi_only {
            // One pair (no sites): its first 8 calls hold the 6 slow ones.
            assert_eq!(spin.sites.len(), 0);
        } else {
            let site = |line: u64| {
                let s = spin.sites.iter().find(|s| s.line as u64 == line);
                s.unwrap_or_else(|| panic!("no site at line {line}: {:?}", spin.sites))
            };
            let (r, w) = (site(rare_line), site(warm_line));
            assert_eq!((r.calls, r.timed_calls), (3, 3), "{mode:?}");
            assert!(
                r.time.native >= slow(3) && r.time.native <= rare_py * 101 / 100,
                "rare: native {} ns, 3 × 200 µs spun, {rare_py} ns around the calls ({mode:?})",
                r.time.native
            );
            let split = r.time.native + r.time.marshal_in + r.time.marshal_out + r.time.gil_wait;
            assert!(
                r.time.marshal_in > 0 && split <= rare_py * 101 / 100,
                "{r:?}"
            );
            // The 3 slow calls come first at WARM, then 61 that return at once (allowed 2 µs
            // each): scaling the first calls like the rest would make it ~4 × 600 µs.
            assert_eq!(w.calls, 64);
            assert!(
                w.time.native >= slow(3) && w.time.native <= warm_py + 61 * 2000,
                "warm: native {} ns, 3 × 200 µs then 61 empty calls, {warm_py} ns around the slow ones ({mode:?})",
                w.time.native
            );
        }
        assert_eq!(spin.calls, 67);
        assert_eq!(
            spin.native_hist.len(),
            67,
            "the histogram counts every call"
        );
        assert!(
            spin.time.native >= slow(6) && spin.time.native <= rare_py + warm_py + 61 * 2000,
            "fx_spin_ns: native {} ns ({mode:?})",
            spin.time.native
        );
        // The hot function: 8 first calls and ~1 in 8 of the other 9992 timed (the count of a
        // renewal process with gaps uniform in 1..=15: sd ~19).
        let hot = func(&p, "fx_spin_1us");
        assert_eq!(hot.calls, 10_000);
        assert!(
            (8 + 1100..=8 + 1400).contains(&hot.timed_calls),
            "timed {} ({mode:?})",
            hot.timed_calls
        );
        assert_eq!(hot.native_hist.len(), 10_000);
        if !ffi_only {
            assert_eq!(hot.sites[0].line as u64, hot_line);
        }
        let lat = hot.native_hist.summary();
        assert!(
            within_spin(lat.p50_ns, spin_1us),
            "hot median {lat:?} vs {spin_1us} (3 % and {CALL_EDGE_NS} ns of call edges allowed)"
        );
        // The total is the calls times the mean of the timed calls, each weighted by the calls
        // it stands for (9992 / ~1250 in the total; 7 or 8 in the histogram, which holds whole
        // counts: up to 1/8 of one dominating outlier apart). No spin is shorter than its
        // median's 97 %. No bound from above: a sampled call preempted for a few ms counts ~8
        // times, in the mean as in the total.
        let mean_total = lat.mean_ns * hot.calls as f64;
        assert!(
            within(hot.time.native, mean_total as u64, 0.15),
            "hot: native {} ns vs 10 000 × mean {} ns ({mode:?})",
            hot.time.native,
            lat.mean_ns
        );
        assert!(
            hot.time.native >= hot.calls * spin_1us * 97 / 100,
            "hot: native {} ns vs 10 000 × {spin_1us} ns ({mode:?})",
            hot.time.native
        );
    }
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let everywhere: Vec<(&str, Case)> = vec![
        ("sites_exact", sites_exact),
        (
            "published_offsets_agree_with_the_table",
            published_offsets_agree_with_the_table,
        ),
        (
            "buffer_and_construction_bytes",
            buffer_and_construction_bytes,
        ),
        ("callback_nested_calls", callback_nested_calls),
        ("helper_construction", helper_construction),
        ("conversion_protocols", conversion_protocols),
        ("rare_calls_timed", rare_calls_timed),
    ];
    let main_only: Vec<(&str, Case)> = vec![
        ("threads_gil_wait", threads_gil_wait),
        ("timing_accuracy", timing_accuracy),
    ];
    let mut trials = Vec::new();
    for py in version_matrix() {
        let missing = py.missing();
        let mut cases = everywhere.clone();
        if py.label == "pyenv-3.11" || py.label == "debian-3.11" {
            cases.extend(main_only.iter().cloned());
        }
        for (name, f) in cases {
            let py2 = py.clone();
            let t = trial(format!("{}::{name}", py.label), move || {
                // The timing cases take the lock exclusively themselves.
                let timing = ["timing_accuracy", "rare_calls_timed"].contains(&name);
                let _shared = (!timing).then(|| QUIET.read().unwrap_or_else(|e| e.into_inner()));
                let dir = tempfile::tempdir().unwrap();
                f(&py2, dir.path())
            });
            trials.push(match &missing {
                None => t,
                Some(reason) => t.with_ignored_flag(true).with_kind(reason.clone()),
            });
        }
    }
    libtest_mimic::run(&args, trials).exit();
}
