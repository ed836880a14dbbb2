//! End to end, calls into a `--lib` target from extension modules (issue 14): a hand-written C
//! extension, a cffi API-mode module, a Cython module and a pybind11 module over the fixture
//! library (tests/pyext/, built per venv by scripts/build-pyext), each function counted exactly
//! at its own line, with its binding kind, its buffer bytes, and its time split around the target
//! calls the GOT trampoline timed inside it (the library's functions counted once, as called from
//! the builtins, none of its internal calls) — or reported whole (`unsplit_ns`) when the library
//! is the extension itself, never an invented split; the pybind11 exception reaches Python
//! unchanged; without `--lib` nothing is bracketed. On every CPython 3.8–3.13
//! pyenv has, on Debian's 3.11 and on Debian forky's 3.14 in its root (an interpreter not
//! installed, or without the built fixtures, shows as *ignored*). And the binding of libffi
//! callers: `ctypes`, `cffi-abi`.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;
use ffiprof_profile::Profile;
use libtest_mimic::{Arguments, Failed};

/// Calls of each kind `pyext_calls.py` makes per round.
const ROUNDS: u64 = 40;

/// Where scripts/build-pyext put the modules built for `label`'s venv.
fn pyext_dir(label: &str) -> PathBuf {
    std::env::var_os("FFIPROF_TEST_PYEXT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyext"))
        .join(label)
}

/// Every CPython 3.8–3.14 the suites run on: pyenv's and Debian's 3.11 through their venvs (their
/// fixtures built by scripts/test-setup), forky's 3.14 in its root.
fn interpreters() -> Vec<Interpreter> {
    version_matrix()
}

/// 3.14's fixtures, built inside its root by `scripts/build-pyext --py314` (nothing to do when
/// built already): the root is made by the first `py314()`, which may be this suite's, after
/// scripts/test-setup ran. A root without the tools (exit 2) makes its cases ignored, saying
/// why; any other failure of the build is the suite's.
fn build_py314_fixtures(py: &mut Interpreter) {
    if py.root.is_none() || py.missing().is_some() {
        return;
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/build-pyext");
    let o = std::process::Command::new(&script)
        .arg("--py314")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run scripts/build-pyext");
    let stderr = String::from_utf8_lossy(&o.stderr);
    match o.status.code() {
        Some(0) => {}
        Some(2) => py.mark_missing(stderr.lines().last().unwrap_or("").to_string()),
        _ => panic!(
            "scripts/build-pyext --py314 failed: {}\n{}{stderr}",
            o.status,
            String::from_utf8_lossy(&o.stdout)
        ),
    }
}

/// `pyext_calls.py ROUNDS` with the fixtures importable: untraced (`ffiprof` None) or under
/// `ffiprof run -o OUT EXTRA`.
fn run_calls(py: &Interpreter, profiled: Option<(&Path, &[&str])>) -> Output {
    run_rounds(py, profiled, "pyext_calls.py", ROUNDS, Some("1"), None)
}

/// `name rounds` (a script of tests/scripts), as [`run_calls`], with `FFIPROF_STACKS` set to
/// `stacks` (`"1"`: every call's stack, so every call takes the full bracket) or left to its
/// default (repeats take the lean paths), and `FFIPROF_TIMING` to `timing` when given.
fn run_rounds(
    py: &Interpreter,
    profiled: Option<(&Path, &[&str])>,
    name: &str,
    rounds: u64,
    stacks: Option<&str>,
    timing: Option<&str>,
) -> Output {
    let dir = pyext_dir(&py.label);
    let mut cmd = match profiled {
        None => py.cmd(&py.command),
        Some((out, extra)) => {
            let mut c = py.cmd(ffiprof_bin());
            c.args(["run", "-q", "--no-calibrate", "-o"])
                .arg(out)
                .args(extra)
                .arg("--")
                .arg(&py.command);
            c
        }
    };
    cmd.arg(script(name))
        .arg(rounds.to_string())
        .env("PYTHONPATH", &dir);
    if let Some(every) = stacks {
        cmd.env("FFIPROF_STACKS", every);
    }
    if let Some(every) = timing {
        cmd.env("FFIPROF_TIMING", every);
    }
    let o = cmd.output().expect("run the fixture script");
    check_ok(&o);
    o
}

/// The `# SITE name` tags of pyext_calls.py: name → line.
fn site_lines() -> BTreeMap<String, u32> {
    site_lines_of("pyext_calls.py")
}

/// The `# SITE name` tags of a script of tests/scripts: name → line.
fn site_lines_of(name: &str) -> BTreeMap<String, u32> {
    std::fs::read_to_string(script(name))
        .unwrap()
        .lines()
        .enumerate()
        .filter_map(|(i, l)| {
            let name = l.split("# SITE ").nth(1)?;
            Some((name.trim().to_string(), i as u32 + 1))
        })
        .collect()
}

/// (function, calls, binding, detail, module file prefix)
fn expected() -> Vec<(&'static str, u64, &'static str, &'static str, &'static str)> {
    vec![
        ("fxext.add_int", ROUNDS, "extension", "c", "fxext."),
        ("fxext.spin_ns", ROUNDS, "extension", "c", "fxext."),
        ("fxext.add3", ROUNDS, "extension", "c", "fxext."),
        ("fxext.sum_buffer", ROUNDS, "extension", "c", "fxext."),
        ("fxcffi.fx_add_int", ROUNDS, "cffi-api", "", "fxcffi."),
        ("fxcffi.fx_add3", ROUNDS, "cffi-api", "", "fxcffi."),
        ("fxcffi.fx_sum", ROUNDS, "cffi-api", "", "fxcffi."),
        ("fxcy.add_int", ROUNDS, "extension", "cython", "fxcy."),
        ("fxcy.add3", ROUNDS, "extension", "cython", "fxcy."),
        ("fxcy.Acc.add", ROUNDS, "extension", "cython", "fxcy."),
        ("fxpb.add_int", ROUNDS, "extension", "pybind11", "fxpb."),
        ("fxpb.sum_list", ROUNDS, "extension", "pybind11", "fxpb."),
        ("fxpb.add3", ROUNDS, "extension", "pybind11", "fxpb."),
        ("fxpb.Counter.add", ROUNDS, "extension", "pybind11", "fxpb."),
        (
            "fxpb.Counter.twice",
            ROUNDS,
            "extension",
            "pybind11",
            "fxpb.",
        ),
        ("fxpb.Counter.__init__", 1, "extension", "pybind11", "fxpb."),
        ("fxpb.spin_ns", 1, "extension", "pybind11", "fxpb."),
        ("fxpb.checked_add", 1, "extension", "pybind11", "fxpb."),
    ]
}

/// The lean paths of repeated calls (the Rust one, and on 3.11 the assembly one, with the GOT
/// trampoline's fast path inside it) count exactly what the full bracket counts: each builtin
/// called 3000 times in a loop of its own (pyext_repeats.py) with the default stack sampling and
/// nothing timed past each pair's first calls: every builtin and every target call exact, at
/// its one site, the arguments' bytes exact, the stacks sampled, and the output as untraced.
fn lean_paths_count_exactly(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    const N: u64 = 3000;
    let out = dir.join("p.json");
    let plain = run_rounds(py, None, "pyext_repeats.py", N, None, None);
    // Past each pair's first calls nothing is timed, so the lean paths take every repeat, and
    // every stack sampled after the first calls is theirs.
    let traced = run_rounds(
        py,
        Some((&out, &["--lib", "ffifixture"])),
        "pyext_repeats.py",
        N,
        None,
        Some("1000000"),
    );
    assert_eq!(
        String::from_utf8_lossy(&traced.stdout),
        String::from_utf8_lossy(&plain.stdout),
        "the program's output changed under ffiprof"
    );
    let p = read_profile(&out);
    let lines = site_lines_of("pyext_repeats.py");
    for (name, calls, _, _, _) in expected() {
        let calls = if calls == ROUNDS { N } else { calls };
        let f = p.function(name).unwrap();
        assert_eq!((f.calls, f.python_calls), (calls, calls), "{name}");
        if let Some(&line) = lines.get(name) {
            let sites: Vec<(u32, u64)> = f.sites.iter().map(|s| (s.line, s.calls)).collect();
            assert_eq!(sites, vec![(line, calls)], "{name}: its one site");
        }
    }
    let target = |name: &str| {
        let f = p.function(name).unwrap();
        (f.calls, f.within_builtin_calls)
    };
    assert_eq!(target("fx_add3"), (4 * N, 4 * N));
    // (fxext.add_then_call(None, 0) adds one fx_add_int call each.)
    assert_eq!(target("fx_add_int"), (8 * N, 8 * N));
    // The lean paths sample stacks as the bracket does: the one site reached through two
    // stacks by turns has both, sharing its calls about evenly.
    let f = p.function("fxext.add_then_call").unwrap();
    assert_eq!((f.calls, f.python_calls), (N, N));
    let line = lines["fxext.add_then_call"];
    let sites: Vec<(u32, u64)> = f.sites.iter().map(|s| (s.line, s.calls)).collect();
    assert_eq!(sites, vec![(line, N)]);
    let stacks: Vec<u64> = f.sites[0].stacks.iter().map(|s| s.calls).collect();
    assert_eq!(stacks.len(), 2, "two stacks sampled: {stacks:?}");
    assert_eq!(stacks.iter().sum::<u64>(), N);
    assert!(
        stacks.iter().all(|&c| c > N / 4),
        "each stack about half the calls: {stacks:?}"
    );
    assert_eq!(target("fx_spin_ns"), (N + 1, N + 1));
    assert_eq!(target("fx_sum"), (3 * N, 3 * N));
    let buffer = |name: &str| p.function(name).unwrap().buffer_bytes;
    assert_eq!(buffer("fxext.sum_buffer"), N * 4 * 8);
    assert_eq!(buffer("fxcffi.fx_sum"), N * 4 * 8);
    assert_eq!(buffer("fxext.add_int"), 0);
    Ok(())
}

/// Every builtin counted exactly at its line, with its binding, and nothing else recorded: no
/// call of the library made inside the extensions (not through libffi, and fx_add3's internal
/// fx_add_int calls never) — and the output, the pybind11 exception included, as untraced.
fn counts_sites_and_binding(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    let out = dir.join("p.json");
    let plain = run_calls(py, None);
    let traced = run_calls(py, Some((&out, &["--lib", "ffifixture"])));
    assert_eq!(
        String::from_utf8_lossy(&traced.stdout),
        String::from_utf8_lossy(&plain.stdout),
        "the program's output (the C++ exception as Python sees it included) changed under ffiprof"
    );
    assert!(
        String::from_utf8_lossy(&plain.stdout)
            .contains("exception builtins ValueError negative operand: -5"),
        "pybind11 translated the C++ exception: {}",
        String::from_utf8_lossy(&plain.stdout)
    );
    let p = read_profile(&out);
    let lines = site_lines();
    let want = expected();
    let fixtures = pyext_dir(&py.label);
    let (builtins, targets): (Vec<_>, Vec<_>) = p
        .functions
        .iter()
        .partition(|f| Path::new(&f.library).starts_with(&fixtures));
    let got: BTreeMap<String, u64> = builtins
        .iter()
        .map(|f| (f.function.clone(), f.calls))
        .collect();
    let want_calls: BTreeMap<String, u64> = want.iter().map(|w| (w.0.to_string(), w.1)).collect();
    assert_eq!(got, want_calls, "exactly the builtins, exactly counted");
    // The library's functions the builtins called, through the GOT trampoline: boundary calls
    // only (fx_add3's two internal fx_add_int calls are not), every one inside a builtin's call,
    // so counted once in the totals (the builtins').
    let got: BTreeMap<String, (u64, u64, &str)> = targets
        .iter()
        .map(|f| {
            let counts = (f.calls, f.within_builtin_calls, f.binding.as_str());
            (f.function.clone(), counts)
        })
        .collect();
    let inside = |n: u64| (n, n, "extension");
    let want_targets: BTreeMap<String, (u64, u64, &str)> = [
        ("fx_add3", inside(4 * ROUNDS)),
        ("fx_add_int", inside(7 * ROUNDS)),
        ("fx_spin_ns", inside(ROUNDS + 1)),
        ("fx_sum", inside(3 * ROUNDS)),
    ]
    .into_iter()
    .map(|(n, c)| (n.to_string(), c))
    .collect();
    assert_eq!(got, want_targets, "the target calls inside the builtins");
    assert_eq!(p.total_calls(), want_calls.values().sum::<u64>());
    for (name, calls, binding, detail, module) in want {
        let f = p.function(name).unwrap();
        assert_eq!(
            (f.binding.as_str(), f.binding_detail.as_str()),
            (binding, detail),
            "{name}"
        );
        assert!(
            f.library_name().starts_with(module),
            "{name} lives in {}",
            f.library
        );
        assert_eq!(f.python_calls, calls, "{name}");
        // Split around the target calls inside (timed through the GOT trampoline): marshal-in
        // before the first, native their sum, marshal-out after the last. A builtin that made
        // no target call had no native entry: its calls are whole, never an invented split.
        let calls_target = !matches!(name, "fxpb.Counter.__init__" | "fxpb.checked_add");
        if calls_target {
            assert_eq!(f.unsplit_ns, 0, "{name}: split, not whole");
            assert!(f.time.marshal_in > 0, "{name}: {:?}", f.time);
            assert!(f.time.native > 0, "{name}: {:?}", f.time);
            assert!(f.time.marshal_out > 0, "{name}: {:?}", f.time);
            assert_eq!(
                f.native_hist.len(),
                calls,
                "{name}: every call's latency (scaled)"
            );
        } else {
            assert!(f.unsplit_ns > 0, "{name}: whole");
            assert_eq!(f.time.total(), 0, "{name}: no invented split: {:?}", f.time);
            assert!(f.native_hist.is_empty(), "{name}: no native latency");
        }
        if let Some(&line) = lines.get(name) {
            let sites: Vec<(u32, u64)> = f.sites.iter().map(|s| (s.line, s.calls)).collect();
            assert_eq!(sites, vec![(line, calls)], "{name}: its one site");
            assert!(f.sites[0].file.ends_with("pyext_calls.py"));
            assert_eq!(f.sites[0].time, f.time, "{name}");
            let stacked: u64 = f.sites[0].stacks.iter().map(|s| s.calls).sum();
            assert_eq!(stacked, calls, "{name}: every stack sampled");
        }
    }
    let buffer = |name: &str| p.function(name).unwrap().buffer_bytes;
    assert_eq!(
        buffer("fxext.sum_buffer"),
        ROUNDS * 4 * 8,
        "array('d', 4 items)"
    );
    assert_eq!(
        buffer("fxcffi.fx_sum"),
        ROUNDS * 4 * 8,
        "ffi.new('double[]', 4): its sizeof"
    );
    assert_eq!(buffer("fxext.add_int"), 0, "numbers refer to no bytes");
    assert_eq!(buffer("fxpb.sum_list"), 0, "a list is no buffer");
    // The native part of 1 µs spins is the spins (timed 1 in 8 after the first 8, scaled): each
    // one's latency, by the median (one preempted spin among the few timed, scaled by 8, can
    // double a 40-call sum on a loaded machine: seen on 3.14), and the sum at least theirs.
    let spin = p.function("fxext.spin_ns").unwrap();
    let p50 = spin.native_hist.summary().p50_ns;
    assert!(
        (900..3000).contains(&p50) && spin.time.native >= ROUNDS * 900,
        "fxext.spin_ns: median {p50} ns, native {} ns in all, for {ROUNDS} spins of 1 µs",
        spin.time.native
    );
    Ok(())
}

/// A builtin called far more often than its timing needs: past ~8 Ki calls its pair times one
/// call in 128 instead of 8, each standing for 16 (`sampling::THIN_AFTER`), and the report is as
/// before — exact counts, the split present, every call's latency in the histogram (scaled), the
/// native sum at least the spins' — while the calls actually timed, which `timed_calls` reports,
/// are far fewer than one in 8: ~1 Ki before the switch, then one in 128.
fn thinned_timing_keeps_the_split(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    const SPINS: u64 = 20_000;
    let out = dir.join("p.json");
    let o = py
        .cmd(ffiprof_bin())
        .args(["run", "-q", "--no-calibrate", "-o"])
        .arg(&out)
        .args(["--lib", "ffifixture", "--"])
        .arg(&py.command)
        .arg(script("pyext_spin_loop.py"))
        .arg(SPINS.to_string())
        .env("PYTHONPATH", pyext_dir(&py.label))
        .output()
        .expect("run the spin loop");
    check_ok(&o);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        format!("spins {SPINS}")
    );
    let p = read_profile(&out);
    let builtin = p.function("fxext.spin_ns").unwrap();
    let target = p.function("fx_spin_ns").unwrap();
    assert_eq!((builtin.calls, builtin.python_calls), (SPINS, SPINS));
    assert_eq!((target.calls, target.within_builtin_calls), (SPINS, SPINS));
    assert_eq!(builtin.unsplit_ns, 0, "split, not whole");
    for f in [builtin, target] {
        let name = &f.function;
        // 8 first calls, ~1016 sampled before the switch (at ~8.2 Ki calls), ~92 after.
        assert!(
            (1_024..1_400).contains(&f.timed_calls),
            "{name}: {} calls timed of {SPINS}",
            f.timed_calls
        );
        assert_eq!(
            f.native_hist.len(),
            SPINS,
            "{name}: every call's latency (scaled)"
        );
        let p50 = f.native_hist.summary().p50_ns;
        assert!(
            (900..3000).contains(&p50) && f.time.native >= SPINS * 900,
            "{name}: median {p50} ns, native {} ns in all, for {SPINS} spins of 1 µs",
            f.time.native
        );
    }
    assert!(
        builtin.time.marshal_in > 0 && builtin.time.marshal_out > 0,
        "{:?}",
        builtin.time
    );
    Ok(())
}

/// Without `--lib` the builtins are left alone: today's default (every library reached through
/// libffi) records nothing here. And a target every module calls (libc) brackets no builtin of
/// the interpreter's own (libpython, lib-dynload): only the extension modules'.
fn default_brackets_nothing(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    let out = dir.join("p.json");
    run_calls(py, Some((&out, &[])));
    let p = read_profile(&out);
    assert!(p.functions.is_empty(), "{:?}", calls_by_name(&p));
    let out = dir.join("libc.json");
    run_calls(py, Some((&out, &["--lib", "libc.so*"])));
    let p = read_profile(&out);
    let fixtures = pyext_dir(&py.label);
    let others: Vec<&str> = p
        .functions
        .iter()
        .filter(|f| !f.binding.is_empty() && !Path::new(&f.library).starts_with(&fixtures))
        .map(|f| f.function.as_str())
        .collect();
    assert!(
        others.is_empty(),
        "the interpreter's own builtins: {others:?}"
    );
    Ok(())
}

/// The binding and the whole call reach the JSON report, the text and the HTML report.
fn reports_show_the_binding(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    let out = dir.join("p.json");
    run_calls(py, Some((&out, &["--lib", "ffifixture"])));
    let text = py
        .cmd(ffiprof_bin())
        .arg("report")
        .arg(&out)
        .output()
        .unwrap();
    check_ok(&text);
    let stderr =
        String::from_utf8_lossy(&text.stdout).into_owned() + &String::from_utf8_lossy(&text.stderr);
    let row = stderr
        .lines()
        .find(|l| l.starts_with("fxpb.sum_list "))
        .unwrap_or_else(|| panic!("no fxpb.sum_list row:\n{stderr}"));
    assert!(row.contains("extension (pybind11)"), "{row}");
    // fxpb.Counter.__init__ and checked_add made no target call: whole calls, said so.
    assert!(
        stderr.contains("whole call: calls of a builtin"),
        "{stderr}"
    );
    let json = py
        .cmd(ffiprof_bin())
        .args(["report", "--format", "json"])
        .arg(&out)
        .output()
        .unwrap();
    check_ok(&json);
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let functions = report["functions"].as_array().unwrap();
    let f = functions
        .iter()
        .find(|f| f["function"] == "fxcffi.fx_add_int")
        .unwrap();
    assert_eq!(f["binding"], "cffi-api");
    assert!(f["native_ns"].as_u64().unwrap() > 0, "{f}");
    assert!(f.get("unsplit_ns").is_none_or(|u| u == 0), "{f}");
    let html = dir.join("r.html");
    let o = py
        .cmd(ffiprof_bin())
        .args(["report", "--html"])
        .arg(&html)
        .arg(&out)
        .output()
        .unwrap();
    check_ok(&o);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<th class=\"num\" data-type=\"num\">whole call</th>"));
    assert!(page.contains("<td class=\"mono\">extension (cython)</td>"));
    Ok(())
}

/// A library compiled into its extension (pymunk's Chipmunk inside its cffi module): `--lib`
/// naming the extension itself brackets its builtins, and only its, each call whole.
fn library_inside_its_extension(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    let out = dir.join("p.json");
    run_calls(py, Some((&out, &["--lib", "fxcy.*"])));
    let p = read_profile(&out);
    let got = calls_by_name(&p);
    let want: BTreeMap<String, u64> = ["fxcy.add_int", "fxcy.add3", "fxcy.Acc.add"]
        .into_iter()
        .map(|k| (k.to_string(), ROUNDS))
        .collect();
    assert_eq!(got, want);
    assert!(p
        .functions
        .iter()
        .all(|f| f.unsplit_ns > 0 && f.time.total() == 0));
    Ok(())
}

/// `ffiprof attach --lib` to a process that imported the extensions (and made a cffi `lib`
/// function) before it came in: their builtins are bracketed from the session's start, and put
/// back as they were at detach; a second session brackets them again.
fn attach_brackets_loaded_modules(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    let stop = dir.join("stop");
    let child = py
        .cmd(&py.command)
        .arg(script("pyext_attach_target.py"))
        .arg(&stop)
        .env("PYTHONPATH", pyext_dir(&py.label))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut target = KillOnDrop(child);
    let lines = stdout_lines(&mut target.0);
    let next = || {
        lines
            .recv_timeout(std::time::Duration::from_secs(30))
            .unwrap()
    };
    assert_eq!(next(), "ready");
    let pid = target.0.id();
    for session in ["p1.json", "p2.json"] {
        let out = dir.join(session);
        let o = py
            .cmd_beside(pid, ffiprof_bin())
            .args(["attach", "-q", "--no-calibrate", "--duration", "1"])
            .args(["--pid", &pid.to_string(), "--lib", "ffifixture", "-o"])
            .arg(&out)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let p = read_profile(&out);
        let mut got = calls_by_name(&p);
        // fx_add_int itself, through the GOT trampoline, every call inside a builtin's: as many
        // as the builtins made in the window (an edge may cut one call on either side).
        let target = p.function("fx_add_int").unwrap();
        assert_eq!(target.within_builtin_calls, target.calls, "{session}");
        got.remove("fx_add_int");
        let made: u64 = got.values().sum();
        assert!(
            target.calls.abs_diff(made) <= 4,
            "{session}: {} vs {got:?}",
            target.calls
        );
        let names: Vec<&str> = got.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "fxcffi.fx_add_int",
                "fxcy.add_int",
                "fxext.add_int",
                "fxpb.add_int"
            ],
            "{session}"
        );
        // Rounds of 100 calls each; the window may cut one round.
        let calls: Vec<u64> = got.values().copied().collect();
        assert!(calls[0] >= 100, "{session}: {got:?}");
        assert!(
            calls.iter().all(|&c| c.abs_diff(calls[0]) <= 100),
            "{session}: {got:?}"
        );
        assert_eq!(p.function("fxcffi.fx_add_int").unwrap().binding, "cffi-api");
    }
    std::fs::write(&stop, b"").unwrap();
    assert!(next().starts_with("done "));
    assert_eq!(
        next(),
        "restored True",
        "detach puts every def and vectorcall back"
    );
    assert!(target.0.wait().unwrap().success());
    Ok(())
}

/// libffi callers keep their own kinds: ctypes, cffi ABI mode.
fn libffi_bindings(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    for (script_name, binding) in [("calls_basic.py", "ctypes"), ("calls_cffi.py", "cffi-abi")] {
        let out = dir.join(format!("{binding}.json"));
        let o = run_profiled(py, &out, &["-q", "--no-calibrate"], script_name, &[FIXTURE]);
        check_ok(&o);
        let p: Profile = read_profile(&out);
        let f = p.function("fx_add_int").expect("fx_add_int recorded");
        assert_eq!(f.binding, binding, "{script_name}");
        assert_eq!(f.unsplit_ns, 0, "libffi calls are split");
    }
    Ok(())
}

/// A builtin called again at the same line from inside its own call (a callback recursing): each
/// inner call repeats the thread's last call while that one is still in progress, which the
/// lean path hands to a context of its own. Counted exactly, every target call inside a builtin,
/// the output as untraced — with the default stack sampling, so the lean path runs.
fn recursion_through_a_callback(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    const ROUNDS: u64 = 30;
    const DEPTH: u64 = 40;
    let run = |profiled: Option<&Path>| {
        let mut cmd = match profiled {
            None => py.cmd(&py.command),
            Some(out) => {
                let mut c = py.cmd(ffiprof_bin());
                c.args(["run", "-q", "--no-calibrate", "--lib", "ffifixture", "-o"])
                    .arg(out)
                    .arg("--")
                    .arg(&py.command);
                c
            }
        };
        let o = cmd
            .arg(script("pyext_recursion.py"))
            .args([ROUNDS.to_string(), DEPTH.to_string()])
            .env("PYTHONPATH", pyext_dir(&py.label))
            .output()
            .expect("run pyext_recursion.py");
        check_ok(&o);
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let out = dir.join("p.json");
    assert_eq!(run(Some(&out)), run(None), "the program's output changed");
    let p = read_profile(&out);
    let calls = ROUNDS * (DEPTH + 1);
    let f = p.function("fxext.add_then_call").expect("the builtin");
    let line = std::fs::read_to_string(script("pyext_recursion.py"))
        .unwrap()
        .lines()
        .position(|l| l.contains("# SITE rec"))
        .unwrap() as u32
        + 1;
    let sites: Vec<(u32, u64)> = f.sites.iter().map(|s| (s.line, s.calls)).collect();
    assert_eq!(
        (f.calls, f.python_calls, sites),
        (calls, calls, vec![(line, calls)])
    );
    let add = p.function("fx_add_int").expect("the target");
    assert_eq!((add.calls, add.within_builtin_calls), (calls, calls));
    assert_eq!(p.total_calls(), calls);
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let mut interpreters = interpreters();
    for py in &mut interpreters {
        build_py314_fixtures(py);
        if !pyext_dir(&py.label).join(".stamp").exists() {
            let remedy = if py.root.is_some() {
                "scripts/setup-python314, then scripts/build-pyext --py314"
            } else {
                "scripts/test-setup"
            };
            py.mark_missing(format!(
                "no extension fixtures in {}: run {remedy}",
                pyext_dir(&py.label).display()
            ));
        }
    }
    let mut trials = matrix_trials(
        interpreters,
        &[
            ("counts_sites_and_binding", counts_sites_and_binding),
            ("lean_paths_count_exactly", lean_paths_count_exactly),
            ("default_brackets_nothing", default_brackets_nothing),
            ("recursion_through_a_callback", recursion_through_a_callback),
        ],
    );
    trials.extend(matrix_trials(
        vec![pyenv_venv("3.11")],
        &[
            ("libffi_bindings", libffi_bindings),
            ("reports_show_the_binding", reports_show_the_binding),
            ("library_inside_its_extension", library_inside_its_extension),
            (
                "thinned_timing_keeps_the_split",
                thinned_timing_keeps_the_split,
            ),
            (
                "attach_brackets_loaded_modules",
                attach_brackets_loaded_modules,
            ),
        ],
    ));
    libtest_mimic::run(&args, trials).exit();
}
