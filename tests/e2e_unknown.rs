//! Interpreters the Python layer does not know — PyPy (Debian forky's, in the CPython 3.14 root
//! scripts/setup-python314 builds) and CPython 3.7 (pyenv's) — under `ffiprof run` and
//! `ffiprof attach`: each refused in one line that says what to do instead, the program running
//! as it would untraced, and under `run` the ffi layer still recording every call exactly. (A
//! newer CPython and a free-threaded build cannot be installed here: their refusals are unit
//! tests of the decision, agent/src/python/layout.rs.)

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use libtest_mimic::{Arguments, Failed};

/// What an interpreter the Python layer does not know must say: the `python-layer` line's
/// reason and remedy, `attach`'s refusal, and what `meta.python` shows.
#[derive(Clone, Copy)]
struct Unknown {
    layer_says: [&'static str; 2],
    attach_says: &'static str,
    version_has: &'static str,
}

/// The Python layer refuses the interpreter in one line that says what to do instead, the
/// program runs as usual, and the ffi layer still counts every call exactly, with its C
/// argument bytes.
fn unknown_ffi_layer_only(py: &Interpreter, dir: &Path, u: Unknown) -> Result<(), Failed> {
    let out = dir.join("p.json");
    let o = run_profiled(py, &out, &[], "calls_basic.py", &[FIXTURE]);
    check_ok(&o);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "ok\n");
    let err = String::from_utf8_lossy(&o.stderr);
    let skipped: Vec<&str> = err.lines().filter(|l| l.contains("hook skipped")).collect();
    assert_eq!(skipped.len(), 1, "{err}");
    let line = skipped[0];
    assert!(line.contains("python-layer"), "{err}");
    for says in u.layer_says {
        assert!(line.contains(says), "{says:?} missing: {err}");
    }
    assert!(
        line.ends_with("the ffi layer (calls, bytes, native time) is recorded"),
        "{err}"
    );
    let p = read_profile(&out);
    let version = p.meta.python.as_deref().unwrap_or("");
    assert!(version.contains(u.version_has), "{version}");
    let add = p.function("fx_add_int").expect("fx_add_int recorded");
    assert_eq!(
        (add.calls, add.arg_bytes, add.python_calls),
        (1000, 8000, 0)
    );
    assert_eq!(p.function("fx_scale").map(|f| f.calls), Some(500));
    assert!(p.frames.is_empty() && add.sites.is_empty());
    Ok(())
}

/// Attaching is refused in one line with the remedy (exit 2), and the target is left as it was:
/// its own SIGTERM handler ends it afterwards.
fn unknown_attach_refused(py: &Interpreter, dir: &Path, u: Unknown) -> Result<(), Failed> {
    let mut target = KillOnDrop(
        py.cmd(&py.command)
            .arg(script("calls_then_wait.py"))
            .args([FIXTURE, "10", "handle-term"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let line = wait_for_line(&mut target.0, "ready", Duration::from_secs(30));
    let pid: u32 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    let o = py
        .cmd_beside(pid, ffiprof_bin())
        .args(["attach", "--pid", &pid.to_string(), "--duration", "1", "-o"])
        .arg(dir.join("a.json"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(u.attach_says) && err.contains("start the program under `ffiprof run`"),
        "{err}"
    );
    send_signal(pid, "TERM");
    let status = target.0.wait().unwrap();
    assert_eq!(status.code(), Some(3), "{status:?}");
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let mut trials = Vec::new();
    // Interpreters the Python layer does not know: PyPy (in the 3.14 root) and CPython 3.7
    // (pyenv's, used as it is: the cases import nothing beyond ctypes).
    let pypy = Unknown {
        layer_says: ["PyPy is not supported", "run the program under CPython"],
        attach_says: "runs PyPy",
        version_has: "PyPy",
    };
    let cpython37 = Unknown {
        layer_says: [
            "CPython 3.7 is older than the Python layer supports (3.8–3.14)",
            "run the program under CPython 3.8 or later",
        ],
        attach_says: "runs Python 3.7",
        version_has: "3.7.",
    };
    for (py, u) in [(pypy_in_root(), pypy), (pyenv_plain("3.7"), cpython37)] {
        type UnknownCase = fn(&Interpreter, &Path, Unknown) -> Result<(), Failed>;
        let unknown_cases: [(&str, UnknownCase); 2] = [
            ("ffi_layer_only", unknown_ffi_layer_only),
            ("attach_refused", unknown_attach_refused),
        ];
        for (name, f) in unknown_cases {
            let py2 = py.clone();
            let t = trial(format!("{}::{name}", py.label), move || {
                let dir = tempfile::tempdir().unwrap();
                f(&py2, dir.path(), u)
            });
            trials.push(match py.missing() {
                Some(reason) => t.with_ignored_flag(true).with_kind(reason),
                None => t,
            });
        }
    }
    libtest_mimic::run(&args, trials).exit();
}
