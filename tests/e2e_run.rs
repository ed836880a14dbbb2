//! End to end: `ffiprof run` on real Python processes calling a real C library.
//!
//! Runs with its own harness (libtest-mimic) so an interpreter that is not installed shows up as
//! *ignored* with its name, never as passed.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use libtest_mimic::{Arguments, Failed};

type Case = fn(&Interpreter, &Path) -> Result<(), Failed>;
/// A case's name, its function, and the module it needs beyond the standard library.
type NamedCase = (&'static str, Case, Option<&'static str>);

fn basic_counts_and_bytes(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    let out = dir.join("p.json");
    let o = run_profiled(
        py,
        &out,
        &["--timing-sample", "1"],
        "calls_basic.py",
        &[FIXTURE],
    );
    check_ok(&o);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "ok\n");
    let p = read_profile(&out);
    let expected = calls_basic_expected();
    // ctypes.string_at is itself a foreign call, into ctypes' own _ctypes: ctypes' cost at the
    // script's line, kept apart from the library functions (and named even where Debian stripped
    // _ctypes' static symbols).
    let internal: Vec<(&str, u64)> = p
        .ctypes_internal
        .iter()
        .map(|f| (f.function.as_str(), f.calls))
        .collect();
    assert_eq!(internal, [("string_at", 7)], "{:?}", p.ctypes_internal);
    assert!(p.ctypes_internal[0].library_name().starts_with("_ctypes."));
    let by_name = calls_by_name(&p);
    assert_eq!(by_name, expected);
    let f = |name: &str| p.function(name).unwrap();
    // C argument bytes from the cif: int+int, double, pointer+size_t, a 24-byte struct by value,
    // pointers, and an undeclared int for labs.
    assert_eq!(f("fx_add_int").arg_bytes, 1000 * 8);
    assert_eq!(f("fx_add_int").ret_bytes, 1000 * 4);
    assert_eq!(f("fx_scale").arg_bytes, 500 * 8);
    assert_eq!(f("fx_sum").arg_bytes, 30 * 16);
    assert_eq!(f("fx_point_norm2").arg_bytes, 20 * 24);
    assert_eq!(f("fx_strdup_upper").arg_bytes, 7 * 8);
    assert_eq!(f("fx_strdup_upper").ret_bytes, 7 * 8);
    assert_eq!(f("fx_free").ret_bytes, 0);
    assert_eq!(f("labs").arg_bytes, 3 * 4);
    assert_eq!(f("fx_sum").arg_count, 2);
    for name in [
        "fx_add_int",
        "fx_scale",
        "fx_sum",
        "fx_point_norm2",
        "fx_strdup_upper",
        "fx_free",
    ] {
        assert_eq!(Path::new(&f(name).library), Path::new(FIXTURE), "{name}");
    }
    assert_eq!(f("labs").library_name(), "libc.so.6");
    let add = f("fx_add_int");
    // Every call timed, the first too (the recorder's set-up happens before its clock reads).
    assert_eq!(add.timed_calls, 1000);
    assert_eq!(add.native_hist.len(), 1000);
    assert!(add.time.native > 0 && add.native_hist.summary().p50_ns < 10_000);
    assert!(p.meta.complete);
    assert_eq!(p.meta.write_reason, "exit");
    let version = if py.root.is_some() { "3.14" } else { "3.11" };
    assert!(
        p.meta.python.as_deref().unwrap_or("").starts_with(version),
        "{:?}",
        p.meta.python
    );
    assert!(p.meta.duration_ns > 0);
    assert!(p
        .hooks
        .iter()
        .any(|h| h.hook == "ffi_call" && h.installed && h.module.contains("_ctypes")));
    // The summary went to stderr and names the functions.
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("fx_add_int") && err.contains("1000"), "{err}");
    Ok(())
}

fn threads_8x50k(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    let out = dir.join("p.json");
    let o = run_profiled(py, &out, &[], "calls_threads.py", &[FIXTURE, "8", "50000"]);
    check_ok(&o);
    let p = read_profile(&out);
    assert_eq!(
        calls_by_name(&p),
        BTreeMap::from([("fx_add_int".to_string(), 400_000)])
    );
    assert_eq!(p.function("fx_add_int").unwrap().arg_bytes, 400_000 * 8);
    // A thread that starts after another ended may reuse its recorder: 1..=8 recorders.
    assert!(
        (1..=8).contains(&p.meta.threads),
        "threads {}",
        p.meta.threads
    );
    assert_eq!(p.meta.dropped_calls, 0);
    Ok(())
}

fn cffi_abi_mode(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    let out = dir.join("p.json");
    let o = run_profiled(py, &out, &[], "calls_cffi.py", &[FIXTURE]);
    check_ok(&o);
    let p = read_profile(&out);
    let expected = BTreeMap::from([
        ("fx_add_int".to_string(), 300),
        ("fx_scale".to_string(), 40),
        ("fx_sum".to_string(), 5),
    ]);
    assert_eq!(calls_by_name(&p), expected);
    assert_eq!(p.function("fx_sum").unwrap().arg_bytes, 5 * 16);
    // ffi.new("double[]", 10) passed 5 times: the array behind the pointer.
    assert_eq!(p.function("fx_sum").unwrap().buffer_bytes, 5 * 80);
    // Timing: the first 8 calls of a site, then ~1 in 8 of the other 292 (sd ~3.3) — so the
    // wrapper found the pair from the cdata's own C address, or every call would be a first.
    let add = p.function("fx_add_int").unwrap();
    assert!(
        (8 + 20..=8 + 55).contains(&add.timed_calls),
        "{}",
        add.timed_calls
    );
    assert_eq!(p.function("fx_sum").unwrap().timed_calls, 5);
    // The Python layer wraps cffi's cdata call too: every call has its split and its site.
    for f in &p.functions {
        assert_eq!(f.python_calls, f.calls, "{}", f.function);
        assert_eq!(
            f.sites.iter().map(|s| s.calls).sum::<u64>(),
            f.calls,
            "{}",
            f.function
        );
    }
    assert!(
        p.hooks
            .iter()
            .any(|h| h.installed && h.module.contains("_cffi_backend")),
        "{:?}",
        p.hooks
    );
    Ok(())
}

fn lib_filter(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    let out = dir.join("p.json");
    let o = run_profiled(
        py,
        &out,
        &["--lib", "libffifixture"],
        "calls_basic.py",
        &[FIXTURE],
    );
    check_ok(&o);
    let p = read_profile(&out);
    assert!(p.function("labs").is_none());
    assert_eq!(p.function("fx_add_int").unwrap().calls, 1000);
    assert_eq!(p.meta.lib_filter, vec!["libffifixture".to_string()]);
    let out2 = dir.join("q.json");
    let o = run_profiled(
        py,
        &out2,
        &["--lib", "libc.so*"],
        "calls_basic.py",
        &[FIXTURE],
    );
    check_ok(&o);
    let q = read_profile(&out2);
    assert_eq!(calls_by_name(&q), BTreeMap::from([("labs".to_string(), 3)]));
    Ok(())
}

fn ffi_only_layer(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    let out = dir.join("p.json");
    let o = run_profiled(py, &out, &["--ffi-only"], "calls_basic.py", &[FIXTURE]);
    check_ok(&o);
    let p = read_profile(&out);
    let f = p.function("fx_add_int").unwrap();
    assert_eq!((f.calls, f.arg_bytes), (1000, 8000));
    assert_eq!(
        (f.python_calls, f.time.marshal_in, f.sites.len()),
        (0, 0, 0)
    );
    assert_eq!(f.timed_calls, 1000, "every call timed, the first too");
    Ok(())
}

fn fork_child_profile(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    let out = dir.join("p.json");
    let o = run_profiled(py, &out, &[], "calls_fork.py", &[FIXTURE, "120", "35"]);
    check_ok(&o);
    let child_pid: u32 = String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .expect("child pid");
    let p = read_profile(&out);
    assert_eq!(
        calls_by_name(&p),
        BTreeMap::from([("fx_add_int".to_string(), 120)])
    );
    let c = read_profile(&dir.join(format!("p.{child_pid}.json")));
    assert_eq!(
        calls_by_name(&c),
        BTreeMap::from([("fx_scale".to_string(), 35)])
    );
    assert_eq!(c.meta.pid, child_pid);
    assert_eq!(
        (c.meta.ppid, p.meta.ppid == p.meta.pid),
        (p.meta.pid, false)
    );
    assert_eq!(c.meta.write_reason, "exit");
    assert!(String::from_utf8_lossy(&o.stderr).contains(&format!("p.{child_pid}.json")));
    // The JSON report carries the parent's pid too.
    let json = py
        .cmd(ffiprof_bin())
        .args(["report", "--format", "json"])
        .arg(dir.join(format!("p.{child_pid}.json")))
        .output()
        .unwrap();
    check_ok(&json);
    let report: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(report["meta"]["pid"], child_pid);
    assert_eq!(report["meta"]["ppid"], p.meta.pid);
    Ok(())
}

/// A parent that called from 1600 sites, each with its own stack, forks a child that calls 27
/// times from one line: the child's profile holds those 27 calls, that site, and the one stack
/// and frame they were made from — nothing of the parent's tables.
fn fork_child_holds_only_its_own(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    let out = dir.join("p.json");
    let o = py
        .cmd(ffiprof_bin())
        .args(["run", "-q", "-o"])
        .arg(&out)
        .arg("--")
        .arg(&py.command)
        .arg(script("calls_fork_tables.py"))
        .args([FIXTURE, "2000", "27"])
        .env("FFIPROF_STACKS", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    check_ok(&o);
    let printed = String::from_utf8_lossy(&o.stdout);
    let (child_pid, line) = printed.trim().split_once(' ').expect("pid and line");
    let line: u32 = line.parse().unwrap();
    let p = read_profile(&out);
    let parent = p.function("fx_add_int").unwrap();
    // 1 + 39 chains of 41 sites: every call its own site and its own whole stack.
    assert_eq!(
        (parent.calls, parent.sites.len(), p.stacks.len()),
        (1600, 1600, 1600)
    );
    let child_path = dir.join(format!("p.{child_pid}.json"));
    let c = read_profile(&child_path);
    assert_eq!(
        calls_by_name(&c),
        BTreeMap::from([("fx_scale".to_string(), 27)])
    );
    let f = &c.functions[0];
    let file = script("calls_fork_tables.py")
        .to_string_lossy()
        .into_owned();
    assert_eq!(
        f.sites
            .iter()
            .map(|s| (s.file.as_str(), s.line, s.calls))
            .collect::<Vec<_>>(),
        vec![(file.as_str(), line, 27)]
    );
    assert_eq!(
        c.frames,
        vec![ffiprof_profile::Frame {
            file: file.clone(),
            function: "<module>".into(),
            line
        }]
    );
    assert_eq!(c.stacks, vec![vec![0]]);
    assert_eq!(
        f.sites[0]
            .stacks
            .iter()
            .map(|s| (s.stack, s.calls))
            .collect::<Vec<_>>(),
        vec![(0, 27)]
    );
    assert_eq!(
        (c.meta.pid.to_string(), c.meta.ppid),
        (child_pid.to_string(), p.meta.pid)
    );
    // What is left is the child's own: meta (its command line is the parent's, paths included),
    // the hooks it inherited (five for ctypes), one function with its histogram, one site, one
    // frame: 3.6 KB here. The parent's tables alone were 2 MB, which the child used to carry.
    let size = std::fs::metadata(&child_path).unwrap().len();
    assert!(size < 8 * 1024, "the child's profile is {size} bytes");
    Ok(())
}

/// `run -q` prints nothing of ffiprof's own: no summary, no list of the profiles children left.
fn quiet_prints_nothing(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    let out = dir.join("p.json");
    let o = run_profiled(py, &out, &["-q"], "calls_fork.py", &[FIXTURE, "12", "5"]);
    check_ok(&o);
    let child_pid = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert_eq!(String::from_utf8_lossy(&o.stderr), "");
    assert_eq!(read_profile(&out).total_calls(), 12);
    let child = read_profile(&dir.join(format!("p.{child_pid}.json")));
    assert_eq!(child.total_calls(), 5);
    Ok(())
}

fn pool_workers_terminated(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    // Workers end by SIGTERM (terminate) or by _exit, possibly while already writing at exit:
    // every call they made must be in their profiles, none in the parent's.
    let out = dir.join("p.json");
    let o = run_profiled(py, &out, &[], "calls_pool.py", &[FIXTURE]);
    check_ok(&o);
    let total: u64 = String::from_utf8_lossy(&o.stdout).trim().parse().unwrap();
    assert_eq!(total, 6000);
    assert!(read_profile(&out).function("fx_add_int").is_none());
    let recorded: u64 = child_calls(&out, "fx_add_int").iter().sum();
    assert_eq!(recorded, total, "calls recorded by the workers' profiles");
    Ok(())
}

fn relative_library_path(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    // A library loaded by a relative path is recorded by its absolute one (the working directory
    // of a later `ffiprof report` is another).
    std::fs::copy(FIXTURE, dir.join("libffifixture.so")).unwrap();
    let out = dir.join("p.json");
    let o = py
        .cmd(ffiprof_bin())
        .args(["run", "-o"])
        .arg(&out)
        .arg("--")
        .arg(&py.command)
        .arg(script("calls_threads.py"))
        .args(["./libffifixture.so", "1", "10"])
        .current_dir(dir)
        .output()
        .unwrap();
    check_ok(&o);
    let p = read_profile(&out);
    let f = p.function("fx_add_int").unwrap();
    assert_eq!(f.calls, 10);
    assert_eq!(
        Path::new(&f.library),
        dir.join("libffifixture.so").canonicalize().unwrap()
    );
    Ok(())
}

fn spawn_waiting(py: &Interpreter, out: &Path, calls: &str, interval: &str) -> KillOnDrop {
    let child = py
        .cmd(ffiprof_bin())
        .args(["run", "--interval", interval, "-o"])
        .arg(out)
        .arg("--")
        .arg(&py.command)
        .arg(script("calls_then_wait.py"))
        .args([FIXTURE, calls])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn ffiprof");
    KillOnDrop(child)
}

fn sigterm_writes_complete_profile(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    let out = dir.join("p.json");
    let mut guard = spawn_waiting(py, &out, "777", "30");
    let line = wait_for_line(&mut guard.0, "ready", Duration::from_secs(20));
    let pid: u32 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    send_signal(pid, "TERM");
    let status = guard.0.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(15),
        "ffiprof should end as the program did: {status:?}"
    );
    let p = read_profile(&out);
    assert_eq!(
        calls_by_name(&p),
        BTreeMap::from([("fx_add_int".to_string(), 777)])
    );
    assert!(p.meta.complete);
    assert_eq!(p.meta.write_reason, "signal");
    Ok(())
}

fn sigkill_keeps_last_snapshot(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    let out = dir.join("p.json");
    let mut guard = spawn_waiting(py, &out, "555", "0.1");
    let line = wait_for_line(&mut guard.0, "ready", Duration::from_secs(20));
    let pid: u32 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    // Wait for a periodic snapshot that holds every call made before `ready`.
    let seen = wait_until(Duration::from_secs(10), || {
        ffiprof_profile::read_file(&out)
            .ok()
            .filter(|p| p.total_calls() == 555)
    });
    assert!(
        seen.is_some(),
        "no periodic snapshot with all calls appeared"
    );
    send_signal(pid, "KILL");
    let status = guard.0.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9));
    let p = read_profile(&out);
    assert_eq!(
        calls_by_name(&p),
        BTreeMap::from([("fx_add_int".to_string(), 555)])
    );
    assert!(!p.meta.complete);
    assert_eq!(p.meta.write_reason, "periodic");
    Ok(())
}

fn passthrough(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    use std::io::Write;
    let out = dir.join("p.json");
    let mut child = py
        .cmd(ffiprof_bin())
        .args(["run", "-o"])
        .arg(&out)
        .arg("--")
        .arg(&py.command)
        .arg(script("passthrough.py"))
        .arg(FIXTURE)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"hello\nworld\n")
        .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(7));
    assert_eq!(o.stdout, b"HELLO\nWORLD\n");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.starts_with("to stderr\n"), "{err}");
    assert_eq!(read_profile(&out).function("fx_noop").unwrap().calls, 1);
    Ok(())
}

fn exec_writes_before_exec(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    let out = dir.join("p.json");
    let o = run_profiled(py, &out, &[], "calls_exec.py", &[FIXTURE, "42"]);
    check_ok(&o);
    let p = read_profile(&out);
    assert_eq!(
        calls_by_name(&p),
        BTreeMap::from([("fx_add_int".to_string(), 42)])
    );
    assert_eq!(p.meta.write_reason, "exec");
    // The new image (same pid) wrote its own profile beside it.
    let after = read_profile(&dir.join(format!("p.{}.json", p.meta.pid)));
    assert_eq!(after.function("fx_add_int").unwrap().calls, 1000);
    Ok(())
}

/// Two Python processes a shell starts one after the other are nobody's descendant in the run:
/// the first takes the output path, the second writes `NAME.PID.json` beside it (it used to
/// overwrite the first's profile).
fn sibling_processes_keep_their_profiles(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    let out = dir.join("p.json");
    let counts = script("calls_count.py");
    let o = py
        .cmd(ffiprof_bin())
        .args(["run", "-q", "--no-calibrate", "-o"])
        .arg(&out)
        .args([
            "--",
            "sh",
            "-c",
            r#""$0" "$1" "$2" 120 && "$0" "$1" "$2" 35"#,
        ])
        .arg(&py.command)
        .arg(&counts)
        .arg(FIXTURE)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run ffiprof");
    check_ok(&o);
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    let pids: Vec<u32> = stdout
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2, "{stdout}");
    let first = read_profile(&out);
    assert_eq!(
        (first.meta.pid, calls_by_name(&first)),
        (pids[0], BTreeMap::from([("fx_add_int".to_string(), 120)]))
    );
    let second = read_profile(&dir.join(format!("p.{}.json", pids[1])));
    assert_eq!(
        (second.meta.pid, calls_by_name(&second)),
        (pids[1], BTreeMap::from([("fx_add_int".to_string(), 35)]))
    );
    assert!(
        !dir.join(".p.json.claim").exists(),
        "run removes its claim file"
    );
    Ok(())
}

fn unwritable_output(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    // Root may write anywhere on a normal file system; sysfs refuses new files even to root.
    let out = if ffiprof_inject::launch::current_uid() == 0 {
        Path::new("/sys/kernel/ffiprof-test.json").to_path_buf()
    } else {
        let ro = dir.join("ro");
        std::fs::create_dir(&ro).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
        ro.join("p.json")
    };
    let o = run_profiled(
        py,
        &out,
        &["--interval", "0.05"],
        "calls_threads.py",
        &[FIXTURE, "1", "200000"],
    );
    assert!(o.status.success(), "{o:?}");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "ok\n");
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.matches("cannot write the profile").count(), 1, "{err}");
    Ok(())
}

fn run_without_command() -> Result<(), Failed> {
    let o = Command::new(ffiprof_bin()).arg("run").output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("Usage"));
    let o = Command::new(ffiprof_bin())
        .args(["run", "--", "/nonexistent/prog"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("command not found"));
    Ok(())
}

fn report_bad_files() -> Result<(), Failed> {
    let dir = tempfile::tempdir().unwrap();
    let good = ffiprof_profile::Profile::new().to_json();
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("missing.json", None, "cannot read"),
        ("empty.json", Some(String::new()), "empty"),
        (
            "truncated.json",
            Some(good[..good.len() / 2].to_string()),
            "truncated",
        ),
        (
            "notjson.json",
            Some("PK\u{3}\u{4} zip file".into()),
            "not an ffiprof profile",
        ),
        (
            "other.json",
            Some("{\"format\":\"speedscope\",\"version\":1}".into()),
            "not an ffiprof profile",
        ),
        (
            "newer.json",
            Some(good.replacen("\"version\": 1", "\"version\": 99", 1)),
            "newer",
        ),
    ];
    for (name, content, expect) in cases {
        let path = dir.path().join(name);
        if let Some(c) = content {
            std::fs::write(&path, c).unwrap();
        }
        for format in ["text", "json"] {
            let o = Command::new(ffiprof_bin())
                .args(["report", "--format", format])
                .arg(&path)
                .output()
                .unwrap();
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(2), "{name}: {err}");
            assert_eq!(err.lines().count(), 1, "{name}: one line expected: {err}");
            assert!(err.contains(name) && err.contains(expect), "{name}: {err}");
            assert!(!err.contains("panicked"));
        }
    }
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let cases: Vec<NamedCase> = vec![
        ("basic_counts_and_bytes", basic_counts_and_bytes, None),
        ("threads_8x50k", threads_8x50k, None),
        ("cffi_abi_mode", cffi_abi_mode, Some("cffi")),
        ("lib_filter", lib_filter, None),
        ("ffi_only_layer", ffi_only_layer, None),
        ("fork_child_profile", fork_child_profile, None),
        (
            "fork_child_holds_only_its_own",
            fork_child_holds_only_its_own,
            None,
        ),
        ("quiet_prints_nothing", quiet_prints_nothing, None),
        ("pool_workers_terminated", pool_workers_terminated, None),
        ("relative_library_path", relative_library_path, None),
        (
            "sigterm_writes_complete_profile",
            sigterm_writes_complete_profile,
            None,
        ),
        (
            "sigkill_keeps_last_snapshot",
            sigkill_keeps_last_snapshot,
            None,
        ),
        ("passthrough", passthrough, None),
        ("exec_writes_before_exec", exec_writes_before_exec, None),
        (
            "sibling_processes_keep_their_profiles",
            sibling_processes_keep_their_profiles,
            None,
        ),
        ("unwritable_output", unwritable_output, None),
    ];
    let mut trials = vec![
        trial("run_without_command".into(), run_without_command),
        trial("report_bad_files".into(), report_bad_files),
    ];
    // pyenv's shim (bash) before the interpreter, as a user types `python3`: every case that
    // imports nothing beyond the standard library (the shim runs the user's own interpreter).
    let mut interpreters: Vec<(Interpreter, Vec<&NamedCase>)> = main_interpreters()
        .into_iter()
        .map(|py| (py, cases.iter().collect()))
        .collect();
    // CPython 3.14 in its root: every case (it has cffi).
    interpreters.push((py314(), cases.iter().collect()));
    interpreters.push((
        pyenv_shim(),
        cases
            .iter()
            .filter(|(_, _, module)| module.is_none())
            .collect(),
    ));
    for (py, cases) in interpreters {
        let not_here = py.missing();
        for (name, f, module) in cases {
            let test_name = format!("{}::{name}", py.label);
            let missing = not_here.clone().or_else(|| {
                module
                    .filter(|m| !py.has_module(m))
                    .map(|m| format!("{m} is not installed for {}", py.label))
            });
            let py = py.clone();
            let f = *f;
            let t = trial(test_name, move || {
                let dir = tempfile::tempdir().unwrap();
                f(&py, dir.path())
            });
            trials.push(match missing {
                Some(reason) => t.with_ignored_flag(true).with_kind(reason),
                None => t,
            });
        }
    }
    libtest_mimic::run(&args, trials).exit();
}
