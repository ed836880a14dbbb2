//! End to end: calls into a `--lib` target from a C extension module, seen through the GOT
//! trampoline (`agent/src/hook/native/`). A real C++ library (`libfxnative.so`, built by the
//! fixture crate) called by a real hand-written extension module (`fxext`, built here against
//! each interpreter's headers): exact counts of boundary calls only, native time, registers and
//! return values intact, and a program that keeps working through C++ exceptions, longjmp,
//! signal handlers, threads and fork.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use libtest_mimic::{Arguments, Failed};

/// `ffiprof run --lib fxnative` on native_calls.py SCENARIO; checks it printed "ok" and returns
/// its stdout and the profile.
fn run_scenario(
    py: &Interpreter,
    dir: &Path,
    scenario: &str,
    extra: &[&str],
) -> (String, ffiprof_profile::Profile) {
    run_with(py, dir, &[], scenario, extra)
}

/// As [`run_scenario`], with more `ffiprof run` options.
fn run_with(
    py: &Interpreter,
    dir: &Path,
    options: &[&str],
    scenario: &str,
    extra: &[&str],
) -> (String, ffiprof_profile::Profile) {
    let ext = fxext_dir(py);
    let out = dir.join("p.json");
    let mut args = vec![ext.to_str().unwrap(), scenario];
    args.extend_from_slice(extra);
    let mut opts = vec!["--lib", "fxnative", "--no-calibrate"];
    opts.extend_from_slice(options);
    let o = run_profiled(py, &out, &opts, "native_calls.py", &args);
    check_ok(&o);
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(stdout.starts_with("ok"), "{stdout}");
    (stdout, read_profile(&out))
}

/// Every call timed, so that every call swaps its return address through the shadow stack (by
/// default most calls are only counted, and return straight to their caller).
const EVERY_CALL: &[&str] = &["--timing-sample", "1"];

fn is_target(f: &ffiprof_profile::FunctionRecord) -> bool {
    f.library.ends_with("/libfxnative.so")
}

/// Calls of the target's functions by name (the builtins of fxext that made them have records of
/// their own: see `builtins_bracketed`).
fn target_calls(p: &ffiprof_profile::Profile) -> BTreeMap<String, u64> {
    p.functions
        .iter()
        .filter(|f| is_target(f))
        .map(|f| (f.function.clone(), f.calls))
        .collect()
}

fn expect_calls(p: &ffiprof_profile::Profile, expected: &[(&str, u64)]) {
    let expected: BTreeMap<String, u64> =
        expected.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    assert_eq!(target_calls(p), expected);
    for f in p.functions.iter().filter(|f| is_target(f)) {
        assert_eq!(f.binding, "extension", "{}", f.function);
        assert!(
            f.library.ends_with("/libfxnative.so"),
            "{}: {}",
            f.function,
            f.library
        );
    }
}

/// Every boundary call counted once — through the GOT (JUMP_SLOT), a taken address (GLOB_DAT)
/// and `dlsym` — and none of the library's internal ones (fxn_outer's 50 fxn_add calls); every
/// register-checking function's result intact (the script asserts them).
fn exact_counts(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    let (_, p) = run_scenario(py, dir, "counts", &[]);
    expect_calls(
        &p,
        &[
            ("fxn_add", 1000 + 100 + 100),
            ("fxn_outer", 1),
            ("fxn_scale", 3),
            ("fxn_sum8", 3),
            ("fxn_mix", 3),
            ("fxn_vsum", 6),
            ("fxn_pair_of", 3),
        ],
    );
    // The extension's builtins that made them, bracketed as Python-level calls of their own;
    // every target call was made inside one, so the totals count the builtins' calls only.
    let builtins: BTreeMap<String, u64> = p
        .functions
        .iter()
        .filter(|f| !is_target(f))
        .map(|f| (f.function.clone(), f.calls))
        .collect();
    let want: BTreeMap<String, u64> = [
        ("fxext.add_loop", 1),
        ("fxext.by_pointer", 1),
        ("fxext.outer", 1),
        ("fxext.registers", 3),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    assert_eq!(builtins, want);
    assert!(p
        .functions
        .iter()
        .filter(|f| is_target(f))
        .all(|f| f.within_builtin_calls == f.calls));
    assert_eq!(p.total_calls(), 6);
    let installed: Vec<&str> = p
        .hooks
        .iter()
        .filter(|h| h.installed && h.hook.starts_with("--lib target calls"))
        .map(|h| h.module.as_str())
        .collect();
    assert!(
        installed.iter().any(|m| m.contains("fxext")),
        "{:?}",
        p.hooks
    );
    Ok(())
}

/// One function called through ctypes and through the extension: each call counted once, the
/// ctypes ones as Python calls, and no one binding claimed for the function.
fn mixed_with_ctypes(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    let (_, p) = run_scenario(py, dir, "mixed", &[ffiprof_fixture::FXNATIVE_LIBRARY]);
    assert_eq!(
        target_calls(&p),
        BTreeMap::from([("fxn_add".to_string(), 7 + 5)])
    );
    let f = p.function("fxn_add").unwrap();
    assert_eq!(f.python_calls, 7);
    assert_eq!(f.binding, "", "reached both ways");
    Ok(())
}

/// A function spinning a known time: its native time is that time (the trampoline's own
/// floor is measured and taken off). The total is never less than the spins; a call the scheduler preempted across its end
/// reads long on this shared machine, so the median is checked above, the sum below.
fn native_time(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    let (_, p) = run_with(
        py,
        dir,
        &["--timing-sample", "1"],
        "spin",
        &["1000000", "9"],
    );
    let f = p.function("fxn_spin_ns").expect("fxn_spin_ns recorded");
    assert_eq!(f.calls, 9);
    assert_eq!(f.timed_calls, 9);
    let ns = f.time.native;
    assert!(ns >= 9 * 999_000, "9 × 1 ms spin read {ns} ns");
    let median = f.native_hist.quantile(0.5);
    assert!(
        (999_000..=1_050_000).contains(&median),
        "a 1 ms spin's median read {median} ns"
    );
    // An add: its median is the trampoline's floor taken off (which alone reads ~15-20 ns here).
    let add = p.function("fxn_add").expect("fxn_add recorded");
    assert_eq!((add.calls, add.timed_calls), (2000, 2000));
    let median = add.native_hist.quantile(0.5);
    assert!(median <= 10, "an add's median read {median} ns");
    Ok(())
}

/// 200 C++ exceptions thrown by the target and caught by the extension, through the trampoline:
/// each counted (at entry), and the program goes on (a later call counts and returns right).
fn exceptions(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    let (_, p) = run_with(py, dir, EVERY_CALL, "exceptions", &[]);
    expect_calls(&p, &[("fxn_throw", 200), ("fxn_add", 1)]);
    Ok(())
}

/// 100 longjmps out of a target call: the shadow stack drops their entries, later calls count
/// and return right.
fn longjmp(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    let (_, p) = run_with(py, dir, EVERY_CALL, "longjmp", &[]);
    expect_calls(&p, &[("fxn_longjmp", 100), ("fxn_add", 100 + 10)]);
    Ok(())
}

/// A signal raised inside a target call, whose handler makes a target call: nested on the same
/// shadow stack, both counted exactly.
fn signal_handler(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    let (_, p) = run_with(py, dir, EVERY_CALL, "signal", &[]);
    expect_calls(&p, &[("fxn_raise", 50), ("fxn_add", 50)]);
    Ok(())
}

/// A signal handler on an alternate stack mapped above the thread's stack, making target calls
/// while the call it interrupted is in progress: neither stack's calls are taken for gone.
fn signal_on_another_stack(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    let (_, p) = run_with(py, dir, EVERY_CALL, "altstack", &[]);
    expect_calls(&p, &[("fxn_raise", 20), ("fxn_add", 20)]);
    Ok(())
}

/// A profiling timer interrupting a loop of target calls every 50 µs, its handler making target
/// calls: every result right, the loop's calls all counted, and the handler's too except those
/// that interrupted the trampoline's own few instructions (which pass through uncounted).
fn signal_storm(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    let n: u64 = 3_000_000;
    let (stdout, p) = run_with(py, dir, EVERY_CALL, "storm", &[&n.to_string()]);
    let handled: u64 = stdout.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(handled > 0, "the timer never fired");
    let calls = p.function("fxn_add").map_or(0, |f| f.calls);
    assert!(
        (n..=n + handled).contains(&calls),
        "{calls} calls, {n} in the loop and {handled} in the handler"
    );
    Ok(())
}

/// 8 threads × 100 000 calls in parallel, the GIL released: all counted.
fn threads(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    let (_, p) = run_scenario(py, dir, "threads", &[]);
    expect_calls(&p, &[("fxn_add", 800_000)]);
    Ok(())
}

/// A forked child keeps calling through the trampoline and writes its own profile.
fn fork(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    let (_, p) = run_scenario(py, dir, "fork", &[]);
    expect_calls(&p, &[("fxn_add", 100 + 20)]);
    assert_eq!(child_calls(&dir.join("p.json"), "fxn_add"), [300]);
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    // 3.14's fxext is built in its root, with the root's g++ (scripts/setup-python314).
    let mut trials = matrix_trials(version_matrix(), &[("exact_counts", exact_counts)]);
    trials.extend(matrix_trials(
        vec![pyenv_venv("3.11")],
        &[
            ("native_time", native_time),
            ("mixed_with_ctypes", mixed_with_ctypes),
            ("exceptions", exceptions),
            ("longjmp", longjmp),
            ("signal_handler", signal_handler),
            ("signal_storm", signal_storm),
            ("signal_on_another_stack", signal_on_another_stack),
            ("threads", threads),
            ("fork", fork),
        ],
    ));
    libtest_mimic::run(&args, trials).exit();
}
