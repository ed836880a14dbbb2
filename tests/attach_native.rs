//! `ffiprof attach --lib fxnative` on a running Python process calling `libfxnative.so` through
//! the extension module `fxext`: the GOT trampoline is installed on attach (the module's
//! `&fxn_add` becomes a thunk) and every entry restored at detach (it is the function again),
//! the calls made inside the window are counted exactly, and a thread still inside a target call
//! at detach returns through the trampoline afterwards and the program goes on. Later sessions
//! patch what their own `--lib` names, and only that.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use libtest_mimic::{Arguments, Failed};

/// `ffiprof attach --lib LIB` for `secs`, running, where `py` runs (beside the target `pid`).
fn attach_cmd(py: &Interpreter, pid: u32, secs: &str, lib: &str, out: &Path) -> KillOnDrop {
    KillOnDrop(
        py.cmd_beside(pid, ffiprof_bin())
            .args(["attach", "--pid", &pid.to_string(), "--duration", secs])
            .args(["--lib", lib, "--no-calibrate", "-o"])
            .arg(out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn attach_installs_and_detach_restores_the_got_trampoline(
    py: &Interpreter,
    dir: &Path,
) -> Result<(), Failed> {
    let ext = fxext_dir(py);
    let mut target = KillOnDrop(
        py.cmd(&py.command)
            .arg(script("native_attach.py"))
            .arg(&ext)
            .arg(ffiprof_fixture::FXNATIVE_LIBRARY)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stdin = target.0.stdin.take().unwrap();
    let lines = stdout_lines(&mut target.0);
    let mut ask = |cmd: &str| -> String {
        writeln!(stdin, "{cmd}").unwrap();
        stdin.flush().unwrap();
        lines
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no answer to {cmd}"))
    };
    let pid: u32 = {
        let first = lines.recv_timeout(Duration::from_secs(30)).unwrap();
        ready_pid(&first)
    };
    assert_eq!(ask("check"), "real");
    ask("call 10");

    let out = dir.join("p.json");
    let attach = py
        .cmd_beside(pid, ffiprof_bin())
        .args(["attach", "--pid", &pid.to_string(), "--duration", "3"])
        .args(["--lib", "fxnative", "--no-calibrate", "-o"])
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut attach = KillOnDrop(attach);
    let started = Instant::now();
    while ask("check") != "thunk" {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the GOT entry was never patched"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(ask("call 1000"), "done");
    // Still spinning inside fxn_spin_ns, through the trampoline, when the session ends.
    assert_eq!(ask("hold 5000000000"), "holding");
    let status = attach.0.wait().unwrap();
    let stderr = stderr_of(&mut attach.0);
    assert!(status.success(), "attach failed: {stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "detach came after the held call ended: {:?}",
        started.elapsed()
    );

    assert_eq!(ask("check"), "real", "detach left the GOT entry patched");
    assert_eq!(ask("call 500"), "done");
    assert_eq!(ask("join"), "joined");

    // Another session naming another library patches nothing of fxnative's; the next one
    // naming it again patches and counts again.
    let other = dir.join("other.json");
    let mut session = attach_cmd(py, pid, "1", "no-such-library", &other);
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(
        ask("check"),
        "real",
        "a session without fxnative patched it"
    );
    assert_eq!(ask("call 100"), "done");
    assert!(session.0.wait().unwrap().success());
    let again = dir.join("again.json");
    let mut session = attach_cmd(py, pid, "2", "fxnative", &again);
    let started = Instant::now();
    while ask("check") != "thunk" {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the third session never patched"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(ask("call 300"), "done");
    assert!(session.0.wait().unwrap().success());
    assert_eq!(ask("check"), "real");
    writeln!(stdin, "quit").unwrap();
    drop(stdin);
    let status = target.0.wait().unwrap();
    assert!(status.success(), "the target ended with {status}");

    let p = read_profile(&again);
    assert_eq!(
        p.function("fxn_add").map(|f| f.calls),
        Some(300),
        "the third session's calls"
    );
    let p = read_profile(&out);
    let f = p.function("fxn_add").expect("fxn_add recorded");
    assert_eq!(f.calls, 1000, "exactly the window's calls");
    assert_eq!(f.binding, "extension");
    let spin = p.function("fxn_spin_ns").expect("fxn_spin_ns recorded");
    assert_eq!(spin.calls, 1);
    Ok(())
}

/// On pyenv's 3.11 and on forky's 3.14 in its root (there `attach` runs beside the target, in
/// its mount namespace, and fxext is built with the root's g++); one that cannot run here shows
/// as ignored, with the reason.
fn main() {
    let args = Arguments::from_args();
    let trials = matrix_trials(
        vec![pyenv_venv("3.11"), py314()],
        &[(
            "attach_installs_and_detach_restores_the_got_trampoline",
            attach_installs_and_detach_restores_the_got_trampoline,
        )],
    );
    libtest_mimic::run(&args, trials).exit();
}
