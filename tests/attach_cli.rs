//! `ffiprof attach` end to end: the agent goes into a running Python process calling the C fixture,
//! records the window, detaches, and the process carries on and exits normally with its own output
//! intact. The profile's count is checked against the script's own count for the window, its call
//! site against the script's own line, and the type slots the Python layer replaces against their
//! values before any attach (the script watches them).

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{Interpreter, FIXTURE};
use ffiprof_inject::AgentStatus;

/// The two 3.11 interpreters (pyenv's and Debian's), each through its test venv.
fn pythons() -> Vec<Interpreter> {
    common::runnable_interpreters(
        common::main_interpreters(),
        "neither pyenv's 3.11 nor /usr/bin/python3.11 can run: install one, then scripts/test-setup",
    )
}

/// The 3.11 interpreters and CPython 3.14 in its root (where it can be built), for the cases that
/// attach by both methods there.
fn pythons_and_314() -> Vec<Interpreter> {
    let mut v = pythons();
    let py = common::py314();
    match py.missing() {
        None => v.push(py),
        Some(why) => eprintln!("skipped {}: {why}", py.label),
    }
    v
}

/// Each attach of a session on `py`, in turn: 3.14 by remote exec (its default), then by ptrace;
/// earlier versions by ptrace (their only way), as chosen by default.
fn method_for(py: &Interpreter, session: usize) -> &'static [&'static str] {
    if py.root.is_some() && session % 2 == 1 {
        &["--method", "ptrace"]
    } else {
        &[]
    }
}

/// One "tick" line of the target: when, its call count then, and whether the watched type slots
/// differed from their start-up values.
#[derive(Debug, Clone, Copy)]
struct Tick {
    ns: u64,
    calls: u64,
    patched: bool,
}

fn parse_tick(line: &str) -> Option<Tick> {
    let mut f = line.strip_prefix("tick ")?.split_whitespace();
    Some(Tick {
        ns: f.next()?.parse().ok()?,
        calls: f.next()?.parse().ok()?,
        patched: f.next()? == "1",
    })
}

/// A target, killed and reaped when dropped whatever happened (by its `KillOnDrop`).
struct Target {
    py: Interpreter,
    child: common::KillOnDrop,
    lines: mpsc::Receiver<String>,
    stop_file: PathBuf,
    ticks: Vec<Tick>,
    _dir: tempfile::TempDir,
}

impl Target {
    fn spawn(python: &Interpreter, mode: &str) -> Target {
        Self::spawn_ticking(python, mode, "0.05")
    }

    /// `tick_secs`: how often a busy target reports its count.
    fn spawn_ticking(python: &Interpreter, mode: &str, tick_secs: &str) -> Target {
        Self::spawn_with_env(python, mode, tick_secs, &[])
    }

    fn spawn_with_env(
        python: &Interpreter,
        mode: &str,
        tick_secs: &str,
        env: &[(&str, &Path)],
    ) -> Target {
        let dir = tempfile::tempdir().unwrap();
        let stop_file = dir.path().join("stop");
        let mut child = common::KillOnDrop(
            python
                .cmd(&python.command)
                .arg(script())
                .args([mode, stop_file.to_str().unwrap(), FIXTURE])
                .env("ATTACH_TICK_SECS", tick_secs)
                .envs(env.iter().map(|(k, v)| (k, v)))
                .stdout(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let lines = common::stdout_lines(&mut child.0);
        let mut t = Target {
            py: python.clone(),
            child,
            lines,
            stop_file,
            ticks: Vec::new(),
            _dir: dir,
        };
        assert_eq!(t.line(), "ready");
        t
    }

    fn pid(&self) -> i32 {
        self.child.0.id() as i32
    }

    /// `ffiprof` where the target runs (beside it in its root, for 3.14).
    fn ffiprof(&self) -> Command {
        self.py
            .cmd_beside(self.child.0.id(), env!("CARGO_BIN_EXE_ffiprof"))
    }

    /// `ffiprof attach` to this target for `secs`, writing `out`.
    fn attach(&self, secs: &str, out: &Path, extra: &[&str]) -> std::process::Output {
        self.ffiprof()
            .args([
                "attach",
                "--pid",
                &self.pid().to_string(),
                "--duration",
                secs,
                "-o",
            ])
            .arg(out)
            .args(extra)
            .output()
            .unwrap()
    }

    /// The next line that is not a tick (ticks are kept).
    fn line(&mut self) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(30))
                .expect("a line from the target");
            match parse_tick(&line) {
                Some(t) => self.ticks.push(t),
                None => return line,
            }
        }
    }

    /// Reads ticks until one is later than `ns` (wall clock).
    fn ticks_past(&mut self, ns: u64) {
        while self.ticks.last().is_none_or(|t| t.ns <= ns) {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(10))
                .expect("ticks from the target");
            if let Some(t) = parse_tick(&line) {
                self.ticks.push(t);
            }
        }
    }

    /// Between how many calls the script made in `start_ns..end_ns`, from its ticks: at least
    /// those counted between the first tick inside and the last tick inside, at most those
    /// between the last tick before and the first tick after.
    fn made_between(&self, start_ns: u64, end_ns: u64) -> (u64, u64) {
        let before = |t: u64| self.ticks.iter().rev().find(|x| x.ns <= t).map(|x| x.calls);
        let after = |t: u64| self.ticks.iter().find(|x| x.ns >= t).map(|x| x.calls);
        // Before its first tick the script had made no call yet.
        let lo_a = before(start_ns).unwrap_or(0);
        let (Some(hi_a), Some(lo_b), Some(hi_b)) = (after(start_ns), before(end_ns), after(end_ns))
        else {
            panic!(
                "no ticks around the window {start_ns}..{end_ns}: {} ticks, first {:?} last {:?}",
                self.ticks.len(),
                self.ticks.first(),
                self.ticks.last()
            );
        };
        (lo_b.saturating_sub(hi_a), hi_b - lo_a)
    }

    /// Stops the target and checks it ended normally: its own checks passed, no name left in
    /// `__main__`, every watched type slot back to its start-up value.
    fn finish(mut self) {
        std::fs::write(&self.stop_file, b"").unwrap();
        let done = self.line();
        assert!(
            done.starts_with("done ") && done.ends_with(" - intact"),
            "{done}"
        );
        let status = self.child.0.wait().unwrap();
        assert!(status.success(), "target exited with {status}");
    }
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts/attach_target.py")
}

/// The 1-based line of the script that contains `needle` (the call a site must name).
fn script_line(needle: &str) -> u32 {
    let text = std::fs::read_to_string(script()).unwrap();
    let lines: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(needle))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(lines.len(), 1, "{needle:?} must appear once in the script");
    lines[0] as u32
}

fn unix_ns_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// Names of the agent's threads still alive in `pid`.
fn agent_threads(pid: i32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_to_string(e.path().join("comm")).ok())
                .map(|c| c.trim().to_owned())
                .filter(|c| c.starts_with("ffiprof"))
                .collect()
        })
        .unwrap_or_default()
}

fn rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn ffiprof() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ffiprof"))
}

fn attach(pid: i32, secs: &str, out: &Path) -> std::process::Output {
    attach_with(pid, secs, out, &[])
}

fn attach_with(pid: i32, secs: &str, out: &Path, extra: &[&str]) -> std::process::Output {
    ffiprof()
        .args([
            "attach",
            "--pid",
            &pid.to_string(),
            "--duration",
            secs,
            "-o",
        ])
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

fn fixture_calls(profile: &Path) -> (u64, u64, u64) {
    let p = ffiprof_profile::read_file(profile).unwrap();
    let calls = p
        .functions
        .iter()
        .filter(|f| f.function == "fx_add_int")
        .map(|f| f.calls)
        .sum();
    (calls, p.meta.start_unix_ns, p.meta.duration_ns)
}

#[test]
fn attach_records_the_window_and_detaches() {
    for python in pythons_and_314() {
        let mut target = Target::spawn(&python, "busy");
        target.ticks_past(0);
        target.ticks_past(target.ticks[0].ns);
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("p.json");
        let html = dir.path().join("p.html");
        let started = Instant::now();
        let res = target
            .ffiprof()
            .args([
                "attach",
                "--pid",
                &target.pid().to_string(),
                "--duration",
                "1.5",
                "-o",
            ])
            .arg(&out)
            .arg("--html")
            .arg(&html)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&res.stderr);
        assert!(res.status.success(), "{stderr}");
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "attach took {:?}",
            started.elapsed()
        );
        assert!(stderr.contains("first call recorded"), "{stderr}");
        assert!(std::fs::read_to_string(&html).unwrap().contains("<html"));
        let (calls, start_ns, dur_ns) = fixture_calls(&out);
        target.ticks_past(start_ns + dur_ns);
        let (least, most) = target.made_between(start_ns, start_ns + dur_ns);
        eprintln!(
            "{}: profile {calls} calls; the script made between {least} and {most} in the window",
            python.label
        );
        assert!(calls > 0);
        assert!(
            calls <= most + most / 50,
            "profile {calls} > script's {most}"
        );
        assert!(
            calls + calls / 50 >= least,
            "profile {calls} < script's {least}"
        );
        target.finish();
    }
}

#[test]
fn attach_to_each_kind_of_target() {
    // Twice each: the second session starts from a clean agent left by the first.
    for mode in ["sleep", "threads", "alloc", "ccall"] {
        for python in pythons_and_314() {
            let target = Target::spawn(&python, mode);
            let dir = tempfile::tempdir().unwrap();
            for i in 0..2 {
                let out = dir.path().join(format!("p{i}.json"));
                let res = target.attach("1", &out, method_for(&python, i));
                let stderr = String::from_utf8_lossy(&res.stderr);
                assert!(res.status.success(), "{mode} #{i}: {stderr}");
                let (calls, _, _) = fixture_calls(&out);
                eprintln!("{mode} {} #{i}: {calls} calls recorded", python.label);
                assert!(calls > 0, "{mode} #{i}: no call recorded\n{stderr}");
            }
            target.finish();
        }
    }
}

#[test]
fn ctrl_c_stops_early_and_still_writes_the_profile() {
    let target = Target::spawn(&pythons()[0], "busy");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.json");
    let mut cli = common::KillOnDrop(
        ffiprof()
            .args(["attach", "--pid", &target.pid().to_string(), "-o"])
            .arg(&out)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    wait_for_first_recorded_call(cli.0.id(), target.pid());
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(cli.0.id() as i32, libc::SIGINT) }, 0);
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = cli.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "attach did not stop on Ctrl-C");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    assert!(fixture_calls(&out).0 > 0);
    target.finish();
}

/// Waits until the agent that `ffiprof attach` (pid `cli`) put into `target` has recorded a
/// call: its worker rewrites the status file of the session directory the moment it sees the
/// first one (`calls` > 0), so once it says so, a stop cannot leave the profile empty.
fn wait_for_first_recorded_call(cli: u32, target: i32) {
    let prefix = format!("ffiprof-inject-{cli}-{target}-");
    let seen = common::wait_until(Duration::from_secs(30), || {
        std::fs::read_dir("/tmp")
            .ok()?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .find_map(|e| AgentStatus::read(&e.path()).filter(|s| s.calls > 0))
    });
    assert!(
        seen.is_some(),
        "no call recorded in PID {target} within 30 s (no /tmp/{prefix}*/status with calls > 0)"
    );
}

#[test]
fn errors_carry_remedies() {
    let res = ffiprof()
        .args(["attach", "--pid", "2147483000", "--duration", "1"])
        .output()
        .unwrap();
    assert_eq!(res.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&res.stderr).contains("no process with PID"));
    let sleeper = common::KillOnDrop(Command::new("sleep").arg("30").spawn().unwrap());
    let res = ffiprof()
        .args([
            "attach",
            "--pid",
            &sleeper.0.id().to_string(),
            "--duration",
            "1",
        ])
        .output()
        .unwrap();
    drop(sleeper);
    assert_eq!(res.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&res.stderr).contains("not a Python process"));
}

/// What one attach window recorded, checked against the script: calls within the script's own
/// count for the window (2 % on top of the tick bracket), every call on the script's one call
/// line, marshal-in measured, the Python layer's slots replaced during the window and back after.
fn check_window(
    target: &mut Target,
    out: &Path,
    call_line: u32,
    returned_ns: u64,
) -> (u64, u64, u64) {
    let p = ffiprof_profile::read_file(out).unwrap();
    let f: Vec<_> = p
        .functions
        .iter()
        .filter(|f| f.function == "fx_add_int")
        .collect();
    assert_eq!(f.len(), 1, "one fx_add_int record: {:?}", p.functions);
    let f = f[0];
    let site = f
        .sites
        .iter()
        .find(|s| s.file.ends_with("attach_target.py") && s.line == call_line)
        .unwrap_or_else(|| panic!("no site at attach_target.py:{call_line}: {:?}", f.sites));
    assert_eq!(site.calls, f.calls, "every call comes from that one line");
    assert!(f.time.marshal_in > 0, "marshal-in not measured");
    assert!(site.time.marshal_in > 0, "marshal-in not measured per site");
    let (start, end) = (
        p.meta.start_unix_ns,
        p.meta.start_unix_ns + p.meta.duration_ns,
    );
    target.ticks_past(returned_ns + 1_000_000);
    let (least, most) = target.made_between(start, end);
    assert!(
        f.calls <= most + most / 50 && f.calls + f.calls / 50 >= least,
        "profile {} calls; the script made between {least} and {most} in the window",
        f.calls
    );
    let margin = 5_000_000;
    for t in &target.ticks {
        if t.ns >= start + margin && t.ns + margin <= end {
            assert!(
                t.patched,
                "a tick inside the window saw the original slots: {t:?}"
            );
        }
        if t.ns > returned_ns + 1_000_000 {
            assert!(!t.patched, "a tick after detach saw a replaced slot: {t:?}");
        }
    }
    (f.calls, least, most)
}

/// 20 attach/detach cycles on one process: each window's profile holds that window's calls
/// (and only those), the Python layer goes in and comes out each time, the agent's threads end
/// at each detach, and the process ends normally with its output intact.
#[test]
fn twenty_attach_detach_cycles_on_one_process() {
    let call_line = script_line("return _add(-v, 0)");
    for python in pythons() {
        let mut target = Target::spawn_ticking(&python, "busy", "0.01");
        target.ticks_past(0);
        let rss_before = rss_kib(target.pid());
        let mut rss_first = 0;
        let dir = tempfile::tempdir().unwrap();
        let mut rows = Vec::new();
        for i in 0..20 {
            if i == 1 {
                // The first session loaded the agent; what follows should add almost nothing.
                rss_first = rss_kib(target.pid());
            }
            let out = dir.path().join(format!("p{i}.json"));
            let res = attach(target.pid(), "0.3", &out);
            let returned = unix_ns_now();
            let stderr = String::from_utf8_lossy(&res.stderr);
            assert!(res.status.success(), "cycle {i}: {stderr}");
            rows.push(check_window(&mut target, &out, call_line, returned));
            // The agent's threads are gone once it said it detached (allow them a moment to
            // return from their last function).
            let deadline = Instant::now() + Duration::from_secs(2);
            while !agent_threads(target.pid()).is_empty() {
                assert!(
                    Instant::now() < deadline,
                    "cycle {i}: agent threads still running after detach: {:?}",
                    agent_threads(target.pid())
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        let hooks = |i: usize| {
            ffiprof_profile::read_file(dir.path().join(format!("p{i}.json")))
                .unwrap()
                .hooks
        };
        assert_eq!(hooks(0), hooks(19), "each session lists its hooks once");
        let rss_after = rss_kib(target.pid());
        eprintln!(
            "{}: 20 cycles, calls per window (profile / script's bracket): {}; RSS {} -> {} -> {} KiB",
            python.label,
            rows.iter()
                .map(|(c, lo, hi)| format!("{c}/{lo}..{hi}"))
                .collect::<Vec<_>>()
                .join(" "),
            rss_before,
            rss_first,
            rss_after
        );
        // Sessions reuse the recorders (dropping them would add ~50 KiB a session here).
        assert!(
            rss_after < rss_first + 1024,
            "RSS grew from {rss_first} to {rss_after} KiB over 19 cycles"
        );
        target.finish();
    }
}

/// The Python layer on attach, on every supported interpreter: ctypes and cffi calls get their
/// exact call site and marshal-in, the slots come back at detach, and a second attach works.
#[test]
fn python_layer_on_attach_every_version() {
    let pythons = common::runnable_interpreters(
        common::version_matrix(),
        "no interpreter: run scripts/test-setup",
    );
    for python in pythons {
        for (mode, needle) in [
            ("busy", "return _add(-v, 0)"),
            ("cffi", "return _cadd(-v, 0)"),
        ] {
            let mut target = Target::spawn_ticking(&python, mode, "0.01");
            target.ticks_past(0);
            let dir = tempfile::tempdir().unwrap();
            for i in 0..2 {
                let out = dir.path().join(format!("p{i}.json"));
                let res = target.attach("0.3", &out, method_for(&python, i));
                let returned = unix_ns_now();
                let stderr = String::from_utf8_lossy(&res.stderr);
                assert!(
                    res.status.success(),
                    "{} {mode} #{i}: {stderr}",
                    python.label
                );
                // 3.14: remote exec, then ptrace; before: ptrace.
                let method = match method_for(&python, i) {
                    [] if python.root.is_some() => "remote-exec",
                    _ => "ptrace",
                };
                assert!(
                    stderr.contains(&format!(", {method});")),
                    "{} {mode} #{i}: not by {method}: {stderr}",
                    python.label
                );
                let (calls, ..) = check_window(&mut target, &out, script_line(needle), returned);
                eprintln!("{} {mode} #{i}: {calls} calls", python.label);
            }
            target.finish();
        }
    }
}

/// A process `ffiprof run` preloaded the agent into is already recording: attach says so and
/// leaves it alone, and the run's own profile is complete at exit.
#[test]
fn attach_to_a_process_under_ffiprof_run_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let stop_file = dir.path().join("stop");
    let run_out = dir.path().join("run.json");
    let mut run = ffiprof()
        .args(["run", "-q", "-o"])
        .arg(&run_out)
        .arg("--")
        .arg(&pythons()[0].command)
        .arg(script())
        .args(["busy", stop_file.to_str().unwrap(), FIXTURE])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(run.stdout.take().unwrap());
    let mut run = common::KillOnDrop(run);
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "ready");
    let children =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", run.0.id())).unwrap();
    let python: i32 = children
        .split_whitespace()
        .next()
        .expect("ffiprof run has a child")
        .parse()
        .unwrap();
    let res = attach(python, "0.5", &dir.path().join("a.json"));
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success());
    assert!(
        stderr.contains("already being profiled by `ffiprof run`"),
        "{stderr}"
    );
    std::fs::write(&stop_file, b"").unwrap();
    let rest: Vec<String> = stdout.lines().map_while(Result::ok).collect();
    let done = rest.iter().find(|l| l.starts_with("done ")).expect("done");
    assert!(done.ends_with(" - intact"), "{done}");
    assert!(run.0.wait().unwrap().success());
    assert!(fixture_calls(&run_out).0 > 0);
}

/// The detach restores the type slots with the GIL held: when the main thread keeps the GIL in a
/// long C call, the profile is written at once and the detach completes when the GIL comes back.
#[test]
fn detach_waits_for_a_main_thread_holding_the_gil() {
    let dir = tempfile::tempdir().unwrap();
    let hold_file = dir.path().join("hold");
    let mut target = Target::spawn_with_env(
        &pythons()[0],
        "busy",
        "0.01",
        &[("ATTACH_HOLD_FILE", &hold_file)],
    );
    target.ticks_past(0);
    let pid = target.pid();
    let out = dir.path().join("p.json");
    let cli = {
        let out = out.clone();
        std::thread::spawn(move || {
            let res = attach(pid, "1", &out);
            (res, unix_ns_now())
        })
    };
    // Recording once the script sees the slots replaced.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !target.ticks.last().is_some_and(|t| t.patched) {
        assert!(Instant::now() < deadline, "the agent never started");
        let last = target.ticks.last().map_or(0, |t| t.ns);
        target.ticks_past(last);
    }
    std::fs::write(&hold_file, "3").unwrap();
    let stamp = |line: String, word: &str| -> u64 {
        let ns = line
            .strip_prefix(word)
            .unwrap_or_else(|| panic!("expected {word:?}, got {line:?}"));
        ns.trim().parse().unwrap()
    };
    let held = stamp(target.line(), "holding ");
    let released = stamp(target.line(), "released ");
    let (res, returned) = cli.join().unwrap();
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success(), "{stderr}");
    assert!(!stderr.contains("held the GIL"), "{stderr}");
    assert!(
        returned > released,
        "the detach finished before the GIL came back ({returned} <= {released})"
    );
    let (calls, start, dur) = fixture_calls(&out);
    assert!(calls > 0);
    assert!(
        start + dur < released,
        "the window ended while the GIL was held, so the profile did not wait for it"
    );
    eprintln!(
        "GIL held {:.1} s; the window ended {:.2} s into the hold; detach confirmed {:.0} ms after the GIL came back",
        (released - held) as f64 / 1e9,
        (start + dur).saturating_sub(held) as f64 / 1e9,
        (returned - released) as f64 / 1e6
    );
    target.ticks_past(returned + 1_000_000);
    for t in target.ticks.iter().filter(|t| t.ns > returned + 1_000_000) {
        assert!(!t.patched, "a tick after detach saw a replaced slot: {t:?}");
    }
    target.finish();
}

/// Each session has its own `--lib` filter: one that excludes the fixture records nothing, the
/// next ones (no filter, then the fixture's) record exactly their windows.
#[test]
fn each_session_has_its_own_lib_filter() {
    let call_line = script_line("return _add(-v, 0)");
    let mut target = Target::spawn_ticking(&pythons()[0], "busy", "0.01");
    target.ticks_past(0);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("libc.json");
    let res = attach_with(target.pid(), "0.3", &out, &["--lib", "libc.so"]);
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success(), "{stderr}");
    assert!(stderr.contains("no boundary call was recorded"), "{stderr}");
    assert!(!out.exists());
    for (name, filter) in [
        ("all", None),
        ("fixture", Some("ffifixture")),
        ("all2", None),
    ] {
        let out = dir.path().join(format!("{name}.json"));
        let extra: Vec<&str> = filter.iter().flat_map(|f| ["--lib", *f]).collect();
        let res = attach_with(target.pid(), "0.3", &out, &extra);
        let returned = unix_ns_now();
        assert!(
            res.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&res.stderr)
        );
        let (calls, least, most) = check_window(&mut target, &out, call_line, returned);
        eprintln!("{name}: {calls} calls, the script made {least}..{most}");
    }
    target.finish();
}
