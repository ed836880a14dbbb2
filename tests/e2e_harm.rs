//! Do no harm: a program behaves exactly as untraced under `ffiprof run` — its library search, its
//! signal handlers, its file descriptors, its threads at fork, its warnings, Ctrl-C — on every
//! interpreter of the version matrix. Each case runs the same script untraced and traced and
//! compares what the program itself printed.
//!
//! Runs with its own harness (libtest-mimic) so an interpreter that is not installed shows up as
//! *ignored* with its name, never as passed.

mod common;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;
use libtest_mimic::{Arguments, Failed};

type Case = MatrixCase;

/// Runs `cmd` to its end, failing (and killing it) if it takes longer than a minute: a program
/// the profiler made hang (a forkserver Pool did) must fail the test, not stall the suite.
fn output_within(cmd: &mut Command) -> Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the program");
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => out.expect("wait for the program"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{cmd:?} did not finish within 60 s");
        }
    }
}

fn untraced(py: &Interpreter, script_name: &str, args: &[&str]) -> Output {
    output_within(py.cmd(&py.command).arg(script(script_name)).args(args))
}

/// `ffiprof run -q -o OUT -- PY SCRIPT ARGS...`, within a minute.
fn traced(py: &Interpreter, out: &Path, script_name: &str, args: &[&str]) -> Output {
    output_within(
        py.cmd(ffiprof_bin())
            .args(["run", "-q", "-o"])
            .arg(out)
            .arg("--")
            .arg(&py.command)
            .arg(script(script_name))
            .args(args),
    )
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The same program's output untraced and traced must be the same.
fn same_output(py: &Interpreter, dir: &Path, script_name: &str, args: &[&str]) -> Output {
    let plain = untraced(py, script_name, args);
    let out = dir.join("p.json");
    let traced = traced(py, &out, script_name, args);
    assert_eq!(
        text(&traced.stdout),
        text(&plain.stdout),
        "stdout differs traced (left) from untraced (right); traced stderr:\n{}",
        text(&traced.stderr)
    );
    assert_eq!(traced.status.code(), plain.status.code());
    traced
}

fn plugin_beside_its_library(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    // libffihost.so dlopens libffiplugin.so by bare name, found only through its RUNPATH $ORIGIN.
    let traced = same_output(py, dir, "plugin_sibling.py", &[HOST]);
    assert_eq!(text(&traced.stdout), "plugin 42\ndefault 1\n");
    let p = read_profile(&dir.join("p.json"));
    assert_eq!(
        calls_by_name(&p),
        BTreeMap::from([
            ("host_has_default_symbol".to_string(), 1),
            ("host_load_plugin".to_string(), 1)
        ])
    );
    Ok(())
}

fn signals_fds_threads_as_untraced(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    // Every signal's handler as Python reports it, the open descriptors, the thread count, and
    // a blocked signal taken by sigwait — all after calls were recorded.
    let traced = same_output(py, dir, "harm_observe.py", &[FIXTURE]);
    let out = text(&traced.stdout);
    assert!(out.contains("sigwait True"), "{out}");
    assert!(out.contains("signal 2 default_int_handler"), "{out}");
    assert!(
        out.contains("signal 15 0\n"),
        "SIGTERM reads as SIG_DFL: {out}"
    );
    let p = read_profile(&dir.join("p.json"));
    assert_eq!(p.function("fx_add_int").map(|f| f.calls), Some(101));
    Ok(())
}

fn ctrl_c_raises_keyboard_interrupt(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    // SIGINT to the program: KeyboardInterrupt, its `finally` runs, and it ends by SIGINT as
    // CPython does untraced; the profile is complete and exact.
    let interrupt = |cmd: &mut Command| -> (String, String, Option<i32>) {
        let mut child = spawn_piped(cmd);
        let lines = stdout_lines(&mut child.0);
        let ready = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("the script never said ready");
        send_signal(ready_pid(&ready), "INT");
        let mut rest = String::new();
        while let Ok(line) = lines.recv_timeout(Duration::from_secs(30)) {
            rest.push_str(&line);
            rest.push('\n');
        }
        let status = child.0.wait().unwrap();
        (rest, stderr_of(&mut child.0), status.signal())
    };
    let args = [FIXTURE, "300"];
    // The untraced baseline once lost its `finally` line in the 3.14 root on a loaded machine (a
    // clean-clone CI run; never reproduced alone): a baseline that did not behave as CPython does
    // is taken again, at most twice, so that the comparison below is with a sound one.
    let baseline = || {
        interrupt(
            py.cmd(&py.command)
                .arg(script("harm_interrupt.py"))
                .args(args),
        )
    };
    let mut plain = baseline();
    for _ in 0..2 {
        if plain.0 == "finally\n" {
            break;
        }
        eprintln!(
            "{}: untraced baseline printed {:?} (signal {:?}); taking it again",
            py.label, plain.0, plain.2
        );
        plain = baseline();
    }
    let (plain_out, plain_err, plain_sig) = plain;
    let out = dir.join("p.json");
    let (traced_out, traced_err, traced_sig) = interrupt(
        py.cmd(ffiprof_bin())
            .args(["run", "-q", "-o"])
            .arg(&out)
            .arg("--")
            .arg(&py.command)
            .arg(script("harm_interrupt.py"))
            .args(args),
    );
    assert_eq!(plain_out, "finally\n");
    assert_eq!(traced_out, plain_out);
    assert_eq!(plain_sig, Some(libc::SIGINT));
    assert_eq!(traced_sig, plain_sig, "traced stderr:\n{traced_err}");
    assert!(plain_err.contains("KeyboardInterrupt"));
    assert!(
        traced_err.contains("KeyboardInterrupt"),
        "traced stderr:\n{traced_err}"
    );
    let p = read_profile(&out);
    assert_eq!(p.function("fx_add_int").map(|f| f.calls), Some(300));
    assert!(p.meta.complete, "the profile is the final one");
    assert_eq!(p.meta.write_reason, "exit");
    Ok(())
}

fn fork_prints_no_new_warning(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    // CPython 3.12+ warns at os.fork() when it counts another OS thread: the agent's must not
    // be there then. Every warning shown, twice forked, calls before and after each fork.
    let plain = untraced(py, "harm_fork_warning.py", &[FIXTURE]);
    let out = dir.join("p.json");
    let traced = traced(py, &out, "harm_fork_warning.py", &[FIXTURE]);
    check_ok(&traced);
    let warnings = |o: &Output| {
        text(&o.stderr)
            .lines()
            .filter(|l| l.contains("Warning"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(warnings(&traced), warnings(&plain));
    assert!(!text(&traced.stderr).contains("multi-threaded"));
    assert_eq!(text(&traced.stdout), "forked\n");
    let p = read_profile(&out);
    assert_eq!(p.function("fx_add_int").map(|f| f.calls), Some(60));
    assert_eq!(
        child_calls(&out, "fx_add_int"),
        vec![10, 10],
        "each child's own calls"
    );
    Ok(())
}

/// A Pool whose workers are terminated (SIGTERM) after their work: with every start method,
/// the workers' profiles hold every call they made, exactly.
fn pool(py: &Interpreter, dir: &Path, method: &str) -> Result<(), Failed> {
    let out = dir.join("p.json");
    let o = traced(py, &out, "calls_pool.py", &[FIXTURE, method]);
    check_ok(&o);
    let total: u64 = text(&o.stdout).trim().parse().unwrap();
    assert_eq!(total, 6000);
    let recorded: u64 = child_calls(&out, "fx_add_int").iter().sum();
    assert_eq!(recorded, total, "calls recorded by the workers' profiles");
    Ok(())
}

fn pool_fork(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    pool(py, dir, "fork")
}

fn pool_spawn(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    pool(py, dir, "spawn")
}

fn pool_forkserver(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    pool(py, dir, "forkserver")
}

fn sigterm_with_the_programs_own_handler(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    // A program that handles SIGTERM itself keeps its handler: it runs, the program ends its
    // own way (here: exit status 3 from the handler), and the profile is the final one.
    let (status, p) = signal_waiting_program(py, dir, "handle-term", "TERM");
    assert_eq!(status.code(), Some(3), "{status:?}");
    assert_eq!(p.meta.write_reason, "exit");
    Ok(())
}

fn attached_as_untraced(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    // While `ffiprof attach` records: a library finds its plugin beside it, forks print no new
    // warning, a blocked signal reaches sigwait; the profile has the calls made meanwhile.
    let mut target = KillOnDrop(
        py.cmd(&py.command)
            .arg(script("harm_attach_target.py"))
            .args([FIXTURE, HOST])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let lines = stdout_lines(&mut target.0);
    let ready = lines
        .recv_timeout(Duration::from_secs(60))
        .expect("the target never said ready");
    let pid = ready_pid(&ready);
    let out = dir.join("p.json");
    let mut cli = KillOnDrop(
        py.cmd_beside(pid, ffiprof_bin())
            .args(["attach", "-q", "--pid", &pid.to_string(), "-o"])
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let seen: Vec<String> = (0..3)
        .map_while(|_| lines.recv_timeout(Duration::from_secs(60)).ok())
        .collect();
    if seen.len() < 3 {
        // The target ended (or stalled): say how, and what the attach said.
        let _ = target.0.kill();
        let status = target.0.wait().unwrap();
        let _ = cli.0.kill();
        let _ = cli.0.wait();
        panic!(
            "the target stopped talking after {seen:?}: {status:?}\ntarget stderr:\n{}\nattach stderr:\n{}",
            stderr_of(&mut target.0),
            stderr_of(&mut cli.0),
        );
    }
    assert_eq!(seen, ["plugin 42", "sigwait True", "done"]);
    // Ctrl-C ends the attach; the profile is written and every hook restored.
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(cli.0.id() as i32, libc::SIGINT) }, 0);
    let status = cli.0.wait().unwrap();
    assert!(status.success(), "{status}");
    let p = read_profile(&out);
    let calls = p.function("fx_add_int").map_or(0, |f| f.calls);
    assert!(
        calls >= 200,
        "the 200 calls after the forks at least: {calls}"
    );
    assert_eq!(p.function("host_load_plugin").map(|f| f.calls), Some(1));
    use std::io::Write;
    target.0.stdin.take().unwrap().write_all(b"end\n").unwrap();
    let status = target.0.wait().unwrap();
    let err = stderr_of(&mut target.0);
    assert!(status.success(), "{status}: {err}");
    assert!(!err.contains("Warning"), "the target warned:\n{err}");
    Ok(())
}

fn sigterm_after_the_program_set_the_default(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    // The program sets SIGTERM's default action itself (it already had it): SIGTERM still ends
    // it by the signal, and the profile is complete.
    ends_by_signal_with_complete_profile(py, dir, "default-term", "TERM", libc::SIGTERM)
}

fn sighup_leaves_a_complete_profile(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    ends_by_signal_with_complete_profile(py, dir, "-", "HUP", libc::SIGHUP)
}

/// Runs calls_then_wait.py traced in `mode`, sends `sig`, and checks the program ended by it
/// (as untraced) with every call in a complete profile.
fn ends_by_signal_with_complete_profile(
    py: &Interpreter,
    dir: &Path,
    mode: &str,
    sig: &str,
    signo: i32,
) -> Result<(), Failed> {
    let (status, p) = signal_waiting_program(py, dir, mode, sig);
    assert_eq!(status.signal(), Some(signo), "{status:?}");
    assert_eq!(p.meta.write_reason, "signal");
    Ok(())
}

/// `ffiprof run` of calls_then_wait.py (333 calls, then a wait) in `mode`; once it is ready,
/// `sig` to the program. Returns how ffiprof ended and the profile, checked complete and exact.
fn signal_waiting_program(
    py: &Interpreter,
    dir: &Path,
    mode: &str,
    sig: &str,
) -> (std::process::ExitStatus, ffiprof_profile::Profile) {
    let out = dir.join("p.json");
    let mut child = spawn_piped(
        py.cmd(ffiprof_bin())
            .args(["run", "-q", "-o"])
            .arg(&out)
            .arg("--")
            .arg(&py.command)
            .arg(script("calls_then_wait.py"))
            .args([FIXTURE, "333", mode]),
    );
    let line = wait_for_line(&mut child.0, "ready", Duration::from_secs(30));
    send_signal(ready_pid(&line), sig);
    let status = child.0.wait().unwrap();
    let p = read_profile(&out);
    assert_eq!(p.function("fx_add_int").map(|f| f.calls), Some(333));
    assert!(p.meta.complete, "{:?}", p.meta.write_reason);
    (status, p)
}

const FIXTURE: &str = ffiprof_fixture::LIBRARY;
const HOST: &str = ffiprof_fixture::HOST_LIBRARY;

/// A program that links libpython but never starts it (perf links it for its scripting) and
/// forks: the agent loads into it (it has the symbols), and must leave it as it was — perf died
/// by SIGSEGV in our after-fork handler, which queued a pending call on an interpreter that did
/// not exist. Built here against the interpreter's own shared libpython.
fn non_python_program_linking_libpython(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    let vars = py
        .cmd(&py.command)
        .args(["-c", "import sysconfig as s; print(s.get_config_var('Py_ENABLE_SHARED') or 0, s.get_config_var('INCLUDEPY'), s.get_config_var('LIBDIR'), s.get_config_var('LDVERSION'))"])
        .output()
        .expect("run the interpreter");
    let vars = text(&vars.stdout);
    let v: Vec<&str> = vars.split_whitespace().collect();
    if v.first() != Some(&"1") || py.root.is_some() {
        // A libpython built into its executable has no shared library to link a program to.
        return Ok(());
    }
    let (include, libdir, ldversion) = (v[1], v[2], v[3]);
    let program = dir.join("links_libpython");
    let cc = Command::new("cc")
        .arg(format!("-I{include}"))
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests")
                .join("scripts")
                .join("links_libpython.c"),
        )
        .arg("-o")
        .arg(&program)
        .arg(format!("-L{libdir}"))
        .arg(format!("-lpython{ldversion}"))
        .arg(format!("-Wl,-rpath,{libdir}"))
        .output()
        .expect("run cc");
    assert!(cc.status.success(), "cc: {}", text(&cc.stderr));
    let plain = output_within(&mut Command::new(&program));
    assert!(plain.status.success(), "untraced: {plain:?}");
    let out = dir.join("p.json");
    let traced = output_within(
        Command::new(ffiprof_bin())
            .args(["run", "-q", "-o"])
            .arg(&out)
            .arg("--")
            .arg(&program),
    );
    assert_eq!(
        traced.status.code(),
        plain.status.code(),
        "{}",
        text(&traced.stderr)
    );
    assert_eq!(text(&traced.stdout), text(&plain.stdout));
    // Running a Python program, as `perf record -- python3 ...` does: the Python process's
    // profile is the output path (the program itself, which never ran Python, left none).
    let traced = output_within(
        Command::new(ffiprof_bin())
            .args(["run", "--no-calibrate", "-o"])
            .arg(&out)
            .arg("--")
            .arg(&program)
            .arg(&py.command)
            .arg(script("calls_count.py"))
            .args([FIXTURE, "50"]),
    );
    assert!(traced.status.success(), "{}", text(&traced.stderr));
    let child: u32 = text(&traced.stdout)
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .expect("the Python child's pid");
    let p = read_profile(&out);
    assert_eq!(
        (p.meta.pid, p.function("fx_add_int").map(|f| f.calls)),
        (child, Some(50))
    );
    assert!(
        text(&traced.stderr).contains("ran no Python"),
        "{}",
        text(&traced.stderr)
    );
    Ok(())
}

fn main() {
    // The cases compare programs against the dispositions a terminal gives them. A suite started
    // in the background of a shell without job control inherits SIGINT and SIGQUIT ignored (POSIX
    // asynchronous lists), and so would every program it runs: Python then installs no
    // KeyboardInterrupt handler. Put the defaults back for the programs, as a terminal has them.
    // SAFETY: signal() with SIG_DFL before any thread of the harness exists.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_DFL);
        libc::signal(libc::SIGQUIT, libc::SIG_DFL);
    }
    let args = Arguments::from_args();
    let cases: Vec<(&str, Case)> = vec![
        ("plugin_beside_its_library", plugin_beside_its_library),
        (
            "signals_fds_threads_as_untraced",
            signals_fds_threads_as_untraced,
        ),
        (
            "ctrl_c_raises_keyboard_interrupt",
            ctrl_c_raises_keyboard_interrupt,
        ),
        ("fork_prints_no_new_warning", fork_prints_no_new_warning),
        ("pool_fork", pool_fork),
        ("pool_spawn", pool_spawn),
        ("pool_forkserver", pool_forkserver),
        (
            "sigterm_with_the_programs_own_handler",
            sigterm_with_the_programs_own_handler,
        ),
        ("attached_as_untraced", attached_as_untraced),
        (
            "sigterm_after_the_program_set_the_default",
            sigterm_after_the_program_set_the_default,
        ),
        (
            "sighup_leaves_a_complete_profile",
            sighup_leaves_a_complete_profile,
        ),
        (
            "non_python_program_linking_libpython",
            non_python_program_linking_libpython,
        ),
    ];
    let trials = matrix_trials(version_matrix(), &cases);
    libtest_mimic::run(&args, trials).exit();
}
