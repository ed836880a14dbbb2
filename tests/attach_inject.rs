//! The injector against real Python processes: every kind of target, 20 cycles on one process,
//! and each error a user can meet. Each target prints "ready" when working (the handshake), stops
//! when its stop file appears, checks its own results and must exit 0 with its output intact.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use ffiprof_inject::{self as inject, InjectError, InjectOptions, Method, Payload, PtraceDenial};

/// The two 3.11 interpreters (pyenv's and Debian's), each through its test venv.
fn pythons() -> Vec<PathBuf> {
    common::pythons_3_11()
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/scripts/attach_target.py")
}

/// A target process, killed and reaped when dropped whatever happened (by its `KillOnDrop`).
struct Target {
    child: common::KillOnDrop,
    lines: mpsc::Receiver<String>,
    stop_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Target {
    fn spawn(python: &Path, mode: &str) -> Target {
        Self::spawn_with(python, mode, |_| {})
    }

    fn spawn_with(python: &Path, mode: &str, tweak: impl FnOnce(&mut Command)) -> Target {
        let dir = tempfile::tempdir().unwrap();
        let stop_file = dir.path().join("stop");
        let mut cmd = Command::new(python);
        cmd.arg(script())
            .arg(mode)
            .arg(&stop_file)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        tweak(&mut cmd);
        let mut child = common::KillOnDrop(cmd.spawn().unwrap());
        let lines = common::stdout_lines(&mut child.0);
        let target = Target {
            child,
            lines,
            stop_file,
            _dir: dir,
        };
        assert_eq!(
            target.line(Duration::from_secs(20)),
            "ready",
            "{mode} target did not start"
        );
        target
    }

    fn pid(&self) -> i32 {
        self.child.0.id() as i32
    }

    fn line(&self, timeout: Duration) -> String {
        self.lines
            .recv_timeout(timeout)
            .unwrap_or_else(|e| panic!("no line from the target: {e}"))
    }

    /// Tells the target to stop and checks it finished normally, its own checks passing and no
    /// name left behind in `__main__`. Returns its call count.
    fn finish(mut self) -> u64 {
        std::fs::write(&self.stop_file, b"").unwrap();
        let mut done = self.line(Duration::from_secs(30));
        while done.starts_with("tick ") {
            done = self.line(Duration::from_secs(30));
        }
        let status = self.child.0.wait().unwrap();
        assert!(status.success(), "target exited with {status}");
        let fields: Vec<&str> = done.split_whitespace().collect();
        assert_eq!(fields.first(), Some(&"done"), "{done}");
        assert_eq!(fields.get(2), Some(&"-"), "names left in __main__: {done}");
        assert_eq!(fields.get(3), Some(&"intact"), "type slots changed: {done}");
        fields[1].parse().unwrap()
    }
}

/// A snippet that appends `tag` to `marker` and reports 0.
fn marker_payload(marker: &Path, tag: &str) -> Payload {
    Payload::Python(format!(
        "with open({:?}, 'a') as f:\n    f.write({:?} + '\\n')\nresult = 0\n",
        marker.to_str().unwrap(),
        tag
    ))
}

fn options(payload: Payload) -> InjectOptions {
    InjectOptions {
        method: Method::Ptrace,
        wait: Duration::from_secs(20),
        ..InjectOptions::new(payload)
    }
}

fn mapped(pid: i32, addr: u64) -> bool {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    maps.lines().any(|l| {
        let (range, _) = l.split_once(' ').unwrap();
        let (a, b) = range.split_once('-').unwrap();
        let (a, b) = (
            u64::from_str_radix(a, 16).unwrap(),
            u64::from_str_radix(b, 16).unwrap(),
        );
        addr >= a && addr < b
    })
}

fn inject_marker(target: &Target, marker: &Path, tag: &str) -> inject::InjectReport {
    let report = inject::inject(target.pid(), &options(marker_payload(marker, tag)))
        .unwrap_or_else(|e| panic!("inject {tag}: {e}"));
    let outcome = report.outcome.clone().unwrap();
    assert_eq!(outcome.result, 0);
    let page = report.page.expect("ptrace reports its page");
    assert!(
        !mapped(target.pid(), page),
        "the page at {page:#x} is still mapped after the code ran"
    );
    report
}

fn run_mode(mode: &str, cycles: usize) {
    for python in pythons() {
        let target = Target::spawn(&python, mode);
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("marker");
        let mut slowest = Duration::ZERO;
        for i in 0..cycles {
            let report = inject_marker(&target, &marker, &format!("cycle {i}"));
            slowest = slowest.max(report.scheduled_after);
            eprintln!(
                "{mode} {} #{i}: thread {:?} in syscall {} after {} attempt(s), queued in {:?}, ran after {:?}",
                python.display(),
                report.thread,
                report.thread_was_in_syscall,
                report.attempts,
                report.scheduled_after,
                report.outcome.as_ref().unwrap().ran_after
            );
        }
        let written = std::fs::read_to_string(&marker).unwrap();
        let expected: String = (0..cycles).map(|i| format!("cycle {i}\n")).collect();
        assert_eq!(written, expected);
        assert!(slowest < Duration::from_secs(1), "queuing took {slowest:?}");
        assert!(target.finish() > 0, "{mode} target made no calls");
    }
}

#[test]
fn busy_target_twenty_cycles() {
    run_mode("busy", 20);
}

#[test]
fn sleeping_target() {
    run_mode("sleep", 3);
}

#[test]
fn target_blocked_in_a_long_c_call() {
    run_mode("ccall", 2);
}

#[test]
fn four_thread_target() {
    run_mode("threads", 5);
}

#[test]
fn allocating_target() {
    run_mode("alloc", 5);
}

#[test]
fn every_supported_pyenv_version() {
    for version in ["3.8", "3.9", "3.10", "3.12", "3.13"] {
        let py = common::pyenv_venv(version);
        if let Some(reason) = py.missing() {
            eprintln!("skipped {}: {reason}", py.label);
            continue;
        }
        let target = Target::spawn(&py.command, "busy");
        let dir = tempfile::tempdir().unwrap();
        let report = inject_marker(&target, &dir.path().join("m"), "x");
        assert_eq!(report.python_version, version);
        target.finish();
    }
}

#[test]
fn library_payload_calls_the_exported_function() {
    // libc's `atoi` is an `int f(const char *)`: 42 comes back as a non-zero result, an error.
    let target = Target::spawn(&pythons()[0], "busy");
    let libc = [
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib/x86_64-linux-gnu/libc.so.6",
    ]
    .into_iter()
    .find(|p| Path::new(p).exists())
    .unwrap();
    let call = |arg: &str| {
        inject::inject(
            target.pid(),
            &options(Payload::Library {
                path: libc.into(),
                function: "atoi".into(),
                argument: arg.into(),
            }),
        )
    };
    assert_eq!(call("0").unwrap().outcome.unwrap().result, 0);
    match call("42") {
        Err(InjectError::PayloadFailed { message, .. }) => {
            assert!(message.contains("returned 42"), "{message}")
        }
        other => panic!("expected a payload failure, got {other:?}"),
    }
    target.finish();
}

#[test]
fn payload_exception_is_reported_and_the_target_carries_on() {
    let target = Target::spawn(&pythons()[0], "busy");
    match inject::inject(
        target.pid(),
        &options(Payload::Python("raise KeyError('nope')".into())),
    ) {
        Err(InjectError::PayloadFailed { message, .. }) => {
            assert!(message.contains("KeyError"), "{message}")
        }
        other => panic!("expected a payload failure, got {other:?}"),
    }
    target.finish();
}

#[test]
fn no_such_process() {
    let err = inject::inject(i32::MAX - 7, &options(Payload::Python(String::new()))).unwrap_err();
    assert!(matches!(err, InjectError::NoSuchProcess { .. }), "{err}");
    assert!(err.to_string().contains("pgrep"), "{err}");
}

#[test]
fn not_a_python_process() {
    let child = common::KillOnDrop(Command::new("sleep").arg("30").spawn().unwrap());
    let err = inject::inject(
        child.0.id() as i32,
        &options(Payload::Python(String::new())),
    )
    .unwrap_err();
    drop(child);
    assert!(matches!(err, InjectError::NotPython { .. }), "{err}");
}

#[test]
fn unsupported_python_version() {
    // Nothing to import: pyenv's own 3.7 (test-setup makes no venv for it).
    let Some(python) = common::pyenv_version("3.7") else {
        eprintln!("skipped: no pyenv 3.7");
        return;
    };
    let target = Target::spawn(&python, "sleep");
    let err = inject::inject(target.pid(), &options(Payload::Python(String::new()))).unwrap_err();
    assert!(
        matches!(err, InjectError::UnsupportedVersion { ref version, .. } if version == "3.7"),
        "{err}"
    );
    target.finish();
}

#[test]
fn remote_exec_needs_3_14() {
    let target = Target::spawn(&pythons()[0], "sleep");
    let opts = InjectOptions {
        method: Method::RemoteExec,
        ..options(Payload::Python(String::new()))
    };
    let err = inject::inject(target.pid(), &opts).unwrap_err();
    assert!(matches!(err, InjectError::RemoteExecTooOld { .. }), "{err}");
    assert!(err.to_string().contains("--method ptrace"), "{err}");
    target.finish();
}

#[test]
fn stopped_target_is_refused() {
    let target = Target::spawn(&pythons()[0], "sleep");
    // SAFETY-free: kill(2) through the libc crate is declared unsafe only because it is FFI.
    assert_eq!(unsafe { libc::kill(target.pid(), libc::SIGSTOP) }, 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(format!("/proc/{}/stat", target.pid()))
        .unwrap()
        .contains(") T")
    {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(5));
    }
    let err = inject::inject(target.pid(), &options(Payload::Python(String::new()))).unwrap_err();
    assert!(matches!(err, InjectError::TargetStopped { .. }), "{err}");
    assert_eq!(unsafe { libc::kill(target.pid(), libc::SIGCONT) }, 0);
    target.finish();
}

#[test]
fn target_exiting_before_the_code_runs() {
    let target = Target::spawn(&pythons()[0], "exit-soon");
    let err = inject::inject(target.pid(), &options(Payload::Python(String::new()))).unwrap_err();
    assert!(matches!(err, InjectError::TargetExited { .. }), "{err}");
    assert_eq!(target.line(Duration::from_secs(5)), "exiting");
}

const NOBODY: u32 = 65534;

/// Whether another user can reach `path` (every directory above searchable, the file readable):
/// a checkout under a private home cannot run its scripts or binaries as nobody.
fn world_accessible(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode())
            .unwrap_or(0)
    };
    path.ancestors()
        .skip(1)
        .all(|d| d.as_os_str().is_empty() || mode(d) & 0o001 != 0)
        && mode(path) & 0o004 != 0
}

#[test]
fn target_of_another_user() {
    if unsafe { libc::geteuid() } != 0
        || !Path::new("/usr/bin/python3.11").exists()
        || !world_accessible(&script())
    {
        eprintln!("skipped: needs root, /usr/bin/python3.11 and a checkout other users can read");
        return;
    }
    use std::os::unix::process::CommandExt;
    let target = Target::spawn_with(Path::new("/usr/bin/python3.11"), "busy", |cmd| {
        cmd.uid(NOBODY).gid(NOBODY);
    });
    let status = std::fs::read_to_string(format!("/proc/{}/status", target.pid())).unwrap();
    assert!(status.contains("Uid:\t65534\t65534"), "{status}");
    // Root may inject, and the status directory is handed to the target's user.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    inject_marker(&target, &dir.path().join("m"), "as nobody");
    // A library in a private directory cannot be opened by that user: said before touching it.
    let private = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        private.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let lib = private.path().join("agent.so");
    std::fs::write(&lib, b"").unwrap();
    let err = inject::inject(
        target.pid(),
        &options(Payload::Library {
            path: lib,
            function: "f".into(),
            argument: String::new(),
        }),
    )
    .unwrap_err();
    assert!(
        matches!(err, InjectError::AgentNotReadable { uid: NOBODY, .. }),
        "{err}"
    );
    std::fs::write(&target.stop_file, b"").unwrap();
    target.finish();
}

/// Runs this same test binary as nobody against a root-owned target: the refusal must be
/// diagnosed as "another user", with the remedy.
#[test]
fn ptrace_denied_for_another_user() {
    if let Ok(pid) = std::env::var("FFIPROF_TEST_DENIED_PID") {
        let err = inject::inject(
            pid.parse().unwrap(),
            &options(Payload::Python(String::new())),
        )
        .unwrap_err();
        println!("ERROR: {err}");
        assert!(
            matches!(
                err,
                InjectError::PtraceDenied {
                    reason: PtraceDenial::OtherUser {
                        target_uid: 0,
                        our_uid: NOBODY
                    },
                    ..
                }
            ),
            "{err:?}"
        );
        return;
    }
    let me = std::env::current_exe().unwrap();
    if unsafe { libc::geteuid() } != 0 || !world_accessible(&me) {
        eprintln!("skipped: needs root and a test binary other users can run");
        return;
    }
    use std::os::unix::process::CommandExt;
    let target = Target::spawn(&pythons()[0], "sleep");
    let out = Command::new(&me)
        .args(["--exact", "ptrace_denied_for_another_user", "--nocapture"])
        .env("FFIPROF_TEST_DENIED_PID", target.pid().to_string())
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("ERROR: not permitted to ptrace") && stdout.contains("sudo"),
        "{stdout}"
    );
    target.finish();
}
