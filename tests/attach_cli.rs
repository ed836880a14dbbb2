//! `ffiprof attach` end to end: the agent goes into a running Python process calling the C fixture,
//! records the window, detaches, and the process carries on and exits normally with its own output
//! intact. The profile's count is checked against the script's own count for the window.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const FIXTURE: &str = ffiprof_fixture::LIBRARY;

fn pythons() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(home) = std::env::var_os("HOME") {
        let root = PathBuf::from(home).join(".pyenv/versions");
        if let Ok(entries) = std::fs::read_dir(root) {
            let mut found: Vec<PathBuf> = entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with("3.11."))
                .map(|e| e.path().join("bin/python"))
                .filter(|p| p.exists())
                .collect();
            found.sort();
            out.extend(found.pop());
        }
    }
    if Path::new("/usr/bin/python3.11").exists() {
        out.push("/usr/bin/python3.11".into());
    }
    assert!(!out.is_empty(), "no Python 3.11 to test with");
    out
}

/// A target that is killed and reaped when dropped, whatever happened.
struct Target {
    child: Child,
    lines: mpsc::Receiver<String>,
    stop_file: PathBuf,
    /// `(unix_ns, calls)` ticks seen so far.
    ticks: Vec<(u64, u64)>,
    _dir: tempfile::TempDir,
}

impl Target {
    fn spawn(python: &Path, mode: &str) -> Target {
        let dir = tempfile::tempdir().unwrap();
        let stop_file = dir.path().join("stop");
        let mut child = Command::new(python)
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts/attach_target.py"))
            .args([mode, stop_file.to_str().unwrap(), FIXTURE])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut t = Target {
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
        self.child.id() as i32
    }

    /// The next line that is not a tick (ticks are kept).
    fn line(&mut self) -> String {
        loop {
            let line = self
                .lines
                .recv_timeout(Duration::from_secs(30))
                .expect("a line from the target");
            if let Some(rest) = line.strip_prefix("tick ") {
                let (ns, calls) = rest.split_once(' ').unwrap();
                self.ticks
                    .push((ns.parse().unwrap(), calls.parse().unwrap()));
                continue;
            }
            return line;
        }
    }

    fn drain_ticks(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            if let Some(rest) = line.strip_prefix("tick ") {
                let (ns, calls) = rest.split_once(' ').unwrap();
                self.ticks
                    .push((ns.parse().unwrap(), calls.parse().unwrap()));
            }
        }
    }

    fn finish(mut self) {
        std::fs::write(&self.stop_file, b"").unwrap();
        let done = self.line();
        assert!(done.starts_with("done ") && done.ends_with(" -"), "{done}");
        let status = self.child.wait().unwrap();
        assert!(status.success(), "target exited with {status}");
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ffiprof() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ffiprof"))
}

fn attach(pid: i32, secs: &str, out: &Path) -> std::process::Output {
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
    for python in pythons() {
        let mut target = Target::spawn(&python, "busy");
        while target.ticks.len() < 2 {
            let line = target
                .lines
                .recv_timeout(Duration::from_secs(10))
                .expect("ticks");
            if let Some(rest) = line.strip_prefix("tick ") {
                let (ns, calls) = rest.split_once(' ').unwrap();
                target
                    .ticks
                    .push((ns.parse().unwrap(), calls.parse().unwrap()));
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("p.json");
        let html = dir.path().join("p.html");
        let started = Instant::now();
        let res = ffiprof()
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
        std::thread::sleep(Duration::from_millis(200));
        target.drain_ticks();
        // The script's own count over the window, bracketed by its ticks (~50 ms apart).
        let end_ns = start_ns + dur_ns;
        let at = |t: u64, before: bool| {
            let ticks = &target.ticks;
            if before {
                ticks.iter().rev().find(|(ns, _)| *ns <= t).map(|x| x.1)
            } else {
                ticks.iter().find(|(ns, _)| *ns >= t).map(|x| x.1)
            }
        };
        // Before its first tick the script had made no call yet.
        let lo_a = at(start_ns, true).unwrap_or(0);
        let (Some(hi_a), Some(lo_b), Some(hi_b)) =
            (at(start_ns, false), at(end_ns, true), at(end_ns, false))
        else {
            panic!(
                "no ticks around the window {start_ns}..{end_ns}: {} ticks, first {:?} last {:?}",
                target.ticks.len(),
                target.ticks.first(),
                target.ticks.last()
            );
        };
        let (most, least) = (hi_b - lo_a, lo_b.saturating_sub(hi_a));
        eprintln!(
            "{}: profile {calls} calls; the script made between {least} and {most} in the window",
            python.display()
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
    for mode in ["sleep", "threads", "alloc", "ccall"] {
        for python in pythons() {
            let target = Target::spawn(&python, mode);
            let dir = tempfile::tempdir().unwrap();
            let out = dir.path().join("p.json");
            let res = attach(target.pid(), "1", &out);
            let stderr = String::from_utf8_lossy(&res.stderr);
            assert!(res.status.success(), "{mode}: {stderr}");
            let (calls, _, _) = fixture_calls(&out);
            eprintln!("{mode} {}: {calls} calls recorded", python.display());
            assert!(calls > 0, "{mode}: no call recorded\n{stderr}");
            target.finish();
        }
    }
}

#[test]
fn ctrl_c_stops_early_and_still_writes_the_profile() {
    let target = Target::spawn(&pythons()[0], "busy");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("p.json");
    let mut cli = ffiprof()
        .args(["attach", "--pid", &target.pid().to_string(), "-o"])
        .arg(&out)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(cli.id() as i32, libc::SIGINT) }, 0);
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = cli.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "attach did not stop on Ctrl-C");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
    assert!(fixture_calls(&out).0 > 0);
    target.finish();
}

#[test]
fn errors_carry_remedies() {
    let res = ffiprof()
        .args(["attach", "--pid", "2147483000", "--duration", "1"])
        .output()
        .unwrap();
    assert_eq!(res.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&res.stderr).contains("no process with PID"));
    let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    let res = ffiprof()
        .args([
            "attach",
            "--pid",
            &sleeper.id().to_string(),
            "--duration",
            "1",
        ])
        .output()
        .unwrap();
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert_eq!(res.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&res.stderr).contains("not a Python process"));
}

/// Until the agent can reset its recorders between sessions, a second attach to the same process is
/// refused with the reason, and the process is unharmed.
#[test]
fn second_attach_is_refused_with_a_reason() {
    let target = Target::spawn(&pythons()[0], "busy");
    let dir = tempfile::tempdir().unwrap();
    let first = attach(target.pid(), "0.5", &dir.path().join("a.json"));
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let second = attach(target.pid(), "0.5", &dir.path().join("b.json"));
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success());
    assert!(stderr.contains("already profiled once"), "{stderr}");
    target.finish();
}
