//! Shared by the end-to-end tests: the interpreters to test on, running `ffiprof` and Python
//! scripts from tests/scripts against the C fixture library, and guards that kill what they start.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

// Not every test binary that includes this module uses every item.
#[allow(unused_imports)]
pub use ffiprof_fixture::LIBRARY as FIXTURE;

/// A Python interpreter the suite runs against.
#[derive(Clone, Debug)]
pub struct Interpreter {
    /// Short name used in test names, e.g. `pyenv-3.11`, `debian-3.11`.
    pub label: String,
    /// Command to run: the python of the interpreter's private venv, or `python3` through PATH
    /// and the pyenv shim.
    pub command: PathBuf,
    /// Why it cannot run here (not installed, no venv yet), decided when listed.
    missing: Option<String>,
    /// The root it runs chrooted in (CPython 3.14, scripts/setup-python314), or None: this host.
    pub root: Option<PathBuf>,
}

impl Interpreter {
    /// The interpreter `label` through its private venv (made by scripts/test-setup from `base`,
    /// the interpreter itself): the venv has the modules the tests import, the user's own
    /// interpreter is left as it is. Its python is a symlink to `base`, so the process's
    /// executable and libpython are `base`'s.
    pub fn venv(label: &str, base: Option<PathBuf>, what: &str) -> Interpreter {
        let command = venvs_dir().join(label).join("bin/python");
        let missing = match base {
            None => Some(format!("{what} is not installed")),
            Some(_) if !command.exists() => Some(format!(
                "no venv {}: run scripts/test-setup",
                command.display()
            )),
            Some(_) => None,
        };
        Interpreter {
            label: label.into(),
            command,
            missing,
            root: None,
        }
    }

    /// Marks the interpreter as unable to run a suite's cases, for `reason`.
    pub fn mark_missing(&mut self, reason: String) {
        self.missing.get_or_insert(reason);
    }

    /// Why this interpreter cannot run the tests, or None when it can.
    pub fn missing(&self) -> Option<String> {
        self.missing.clone().or_else(|| {
            (!self.has_module("ctypes")).then(|| format!("{} does not run", self.command.display()))
        })
    }

    /// A command for `program` (ffiprof, the interpreter itself, ...) where this interpreter
    /// runs: on this host, or inside its root through scripts/py314-exec, which shows the paths
    /// the tests use (the checkout, ffiprof's and the fixture's build directories, /tmp) at the
    /// same paths there, so a command line written for the host works unchanged. The command
    /// keeps the pid of the returned Command's child (signals reach it).
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let Some(root) = &self.root else {
            return Command::new(program);
        };
        let mut cmd = Command::new(project_dir().join("scripts/py314-exec"));
        cmd.env("FFIPROF_PY314_ROOT", root);
        for dir in paths_the_tests_use() {
            cmd.arg("--bind").arg(dir);
        }
        cmd.arg("--").arg(program);
        cmd
    }

    /// A command for `program` beside the running process `pid` that [`Interpreter::cmd`]
    /// started: in its mount namespace and root, where `ffiprof attach --pid` sees the target's
    /// files at the paths the target sees them.
    pub fn cmd_beside(&self, pid: u32, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let Some(root) = &self.root else {
            return Command::new(program);
        };
        let mut cmd = Command::new(project_dir().join("scripts/py314-exec"));
        cmd.env("FFIPROF_PY314_ROOT", root)
            .args(["--beside", &pid.to_string(), "--"])
            .arg(program);
        cmd
    }

    pub fn has_module(&self, module: &str) -> bool {
        self.cmd(&self.command)
            .args(["-c", &format!("import {module}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }
}

fn project_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Host directories a test's command line may name: the checkout (scripts), ffiprof's and the
/// fixture's build directories, the extension fixtures' (`FFIPROF_TEST_PYEXT`, when set: they may
/// live outside the checkout), the temporary directory.
fn paths_the_tests_use() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = vec![project_dir().to_path_buf()];
    dirs.extend(std::env::var_os("FFIPROF_TEST_PYEXT").map(PathBuf::from));
    for file in [ffiprof_bin(), FIXTURE] {
        if let Some(d) = Path::new(file).parent() {
            dirs.push(d.to_path_buf());
        }
    }
    dirs.push(std::env::temp_dir());
    let mut out: Vec<PathBuf> = Vec::new();
    for d in dirs {
        let d = d.canonicalize().unwrap_or(d);
        if !out.iter().any(|o| d.starts_with(o)) {
            out.retain(|o| !o.starts_with(&d));
            out.push(d);
        }
    }
    out
}

/// CPython 3.14 in the Debian forky root scripts/setup-python314 builds (once; later calls find
/// it ready), with cffi and numpy: Debian's `python3.14`, libpython linked into the executable.
/// Where the root cannot be built (not root, no mirror), the reason makes its cases ignored.
pub fn py314() -> Interpreter {
    static ROOT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    let root = ROOT.get_or_init(|| {
        let script = project_dir().join("scripts/setup-python314");
        let out = Command::new(&script)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        let last = |b: &[u8]| {
            String::from_utf8_lossy(b)
                .lines()
                .last()
                .unwrap_or("")
                .trim()
                .to_string()
        };
        if out.status.success() {
            Ok(PathBuf::from(last(&out.stdout)))
        } else {
            Err(format!(
                "no CPython 3.14 root: {}",
                last(&out.stderr).trim_start_matches("setup-python314: ")
            ))
        }
    });
    Interpreter {
        label: "forky-3.14".into(),
        command: "/usr/bin/python3.14".into(),
        missing: root.as_ref().err().cloned(),
        root: root.as_ref().ok().cloned(),
    }
}

/// PyPy in the same root (Debian forky's `pypy3`, which setup-python314 installs there too): an
/// interpreter the Python layer does not know.
pub fn pypy_in_root() -> Interpreter {
    let mut py = py314();
    py.label = "forky-pypy3".into();
    py.command = "/usr/bin/pypy3".into();
    if let (None, Some(root)) = (&py.missing, &py.root) {
        if !root.join("usr/bin/pypy3").exists() {
            py.missing = Some(format!(
                "no pypy3 in {}: run scripts/setup-python314",
                root.display()
            ));
        }
    }
    py
}

/// Where scripts/test-setup makes the test interpreters' venvs: `target/venvs` of the checkout,
/// or `FFIPROF_TEST_VENVS` (the script reads the same variable).
pub fn venvs_dir() -> PathBuf {
    std::env::var_os("FFIPROF_TEST_VENVS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/venvs"))
}

fn pyenv_root() -> PathBuf {
    std::env::var_os("PYENV_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into())).join(".pyenv")
        })
}

/// The newest installed pyenv interpreter of `minor` (e.g. "3.11"), if any: the user's own,
/// for what needs no module beyond the standard library.
pub fn pyenv_version(minor: &str) -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(pyenv_root().join("versions"))
        .ok()?
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let patch = name
                .strip_prefix(&format!("{minor}."))?
                .parse::<u32>()
                .ok()?;
            let exe = e.path().join("bin").join(format!("python{minor}"));
            exe.exists().then_some((patch, exe))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, p)| p)
}

/// pyenv's newest `minor` itself, no venv: for cases that need only the standard library.
pub fn pyenv_plain(minor: &str) -> Interpreter {
    let base = pyenv_version(minor);
    let missing = base
        .is_none()
        .then(|| format!("pyenv {minor} is not installed"));
    Interpreter {
        label: format!("pyenv-{minor}"),
        command: base.unwrap_or_else(|| format!("python{minor}").into()),
        missing,
        root: None,
    }
}

/// pyenv's `minor` through its private venv (scripts/test-setup makes it from the same newest
/// patch release `pyenv_version` picks).
pub fn pyenv_venv(minor: &str) -> Interpreter {
    Interpreter::venv(
        &format!("pyenv-{minor}"),
        pyenv_version(minor),
        &format!("pyenv {minor}"),
    )
}

/// Debian's `/usr/bin/python3.11` (libpython linked into the executable) through its venv.
pub fn debian_venv() -> Interpreter {
    let base = Path::new("/usr/bin/python3.11");
    Interpreter::venv(
        "debian-3.11",
        base.exists().then(|| base.to_path_buf()),
        "/usr/bin/python3.11",
    )
}

/// `python3` through PATH, when that is pyenv's shim (a bash script that execs the interpreter):
/// the agent must stay inert in bash and record in the Python it becomes. Only for cases that
/// need no module beyond the standard library (the user's interpreter is used as it is).
pub fn pyenv_shim() -> Interpreter {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("python3"))
            .find(|p| p.exists())
    });
    let missing = match &found {
        Some(p) if p.parent().is_some_and(|d| d.ends_with("shims")) => None,
        Some(p) => Some(format!(
            "python3 on PATH is {}, not pyenv's shim",
            p.display()
        )),
        None => Some("no python3 on PATH".into()),
    };
    Interpreter {
        label: "pyenv-shim".into(),
        command: "python3".into(),
        missing,
        root: None,
    }
}

/// The two 3.11 interpreters: pyenv's (shared libpython) and Debian's (libpython linked
/// into the executable), each through its venv.
pub fn main_interpreters() -> Vec<Interpreter> {
    vec![pyenv_venv("3.11"), debian_venv()]
}

/// The commands of `interpreters` that can run here (the others reported as skipped); `none`
/// is the failure message when there is not one.
pub fn runnable(interpreters: Vec<Interpreter>, none: &str) -> Vec<PathBuf> {
    runnable_interpreters(interpreters, none)
        .into_iter()
        .map(|py| py.command)
        .collect()
}

/// The `interpreters` that can run here (the others reported as skipped); `none` is the failure
/// message when there is not one.
pub fn runnable_interpreters(interpreters: Vec<Interpreter>, none: &str) -> Vec<Interpreter> {
    let mut out = Vec::new();
    for py in interpreters {
        match py.missing() {
            None => out.push(py),
            Some(reason) => eprintln!("skipped {}: {reason}", py.label),
        }
    }
    assert!(!out.is_empty(), "{none}");
    out
}

/// The commands of `main_interpreters` that can run here; at least one.
pub fn pythons_3_11() -> Vec<PathBuf> {
    runnable(
        main_interpreters(),
        "neither pyenv's 3.11 nor /usr/bin/python3.11 can run: install one, then scripts/test-setup",
    )
}

/// Every CPython 3.8–3.13 that pyenv may have, plus Debian's 3.11, each through its venv, and
/// Debian forky's 3.14 in its root; missing ones still listed so the harness can show them as
/// ignored, with the reason.
pub fn version_matrix() -> Vec<Interpreter> {
    let mut v: Vec<Interpreter> = ["3.8", "3.9", "3.10", "3.11", "3.12", "3.13"]
        .iter()
        .map(|m| pyenv_venv(m))
        .collect();
    v.push(debian_venv());
    v.push(py314());
    v
}

pub fn ffiprof_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ffiprof")
}

pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/scripts")
        .join(name)
}

/// `ffiprof run -o OUT EXTRA... -- PY SCRIPT ARGS...`, waited for.
pub fn run_profiled(
    py: &Interpreter,
    out: &Path,
    extra: &[&str],
    script_name: &str,
    args: &[&str],
) -> Output {
    let mut cmd = py.cmd(ffiprof_bin());
    cmd.arg("run")
        .arg("-o")
        .arg(out)
        .args(extra)
        .arg("--")
        .arg(&py.command)
        .arg(script(script_name))
        .args(args);
    cmd.stdin(Stdio::null());
    cmd.output().expect("run ffiprof")
}

pub fn check_ok(output: &Output) {
    assert!(
        output.status.success(),
        "ffiprof run failed: {:?}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

pub fn read_profile(path: &Path) -> ffiprof_profile::Profile {
    ffiprof_profile::read_file(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// A child process killed when the guard is dropped, whatever the test did.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The child's stdout, line by line, read on a thread of its own (so a test can wait with a
/// timeout).
pub fn stdout_lines(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let stdout = child.stdout.take().expect("piped stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Reads lines from the child's stdout until one starts with `prefix`; fails after `timeout`.
pub fn wait_for_line(child: &mut Child, prefix: &str, timeout: Duration) -> String {
    let lines = stdout_lines(child);
    let end = Instant::now() + timeout;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.starts_with(prefix) => return line,
            Ok(_) => continue,
            Err(_) => panic!("the child never printed its readiness line"),
        }
    }
}

/// Polls `f` until it returns Some, for at most `timeout`.
pub fn wait_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn send_signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill -{sig} {pid} failed");
}

/// Calls per function name.
pub fn calls_by_name(p: &ffiprof_profile::Profile) -> std::collections::BTreeMap<String, u64> {
    p.functions
        .iter()
        .map(|f| (f.function.clone(), f.calls))
        .collect()
}

/// The calls `scripts/calls_basic.py` makes, per function name: exact, whatever the mode.
pub fn calls_basic_expected() -> std::collections::BTreeMap<String, u64> {
    [
        ("fx_add_int", 1000),
        ("fx_scale", 500),
        ("fx_sum", 30),
        ("fx_point_norm2", 20),
        ("fx_strdup_upper", 7),
        ("fx_free", 7),
        ("labs", 3),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// A libtest-mimic trial whose panics (failed assertions) become its failure message.
pub fn trial(
    name: String,
    f: impl FnOnce() -> Result<(), libtest_mimic::Failed> + Send + 'static,
) -> libtest_mimic::Trial {
    libtest_mimic::Trial::test(name, move || {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|e| {
            Err(libtest_mimic::Failed::from(
                e.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panicked".into()),
            ))
        })
    })
}

/// Calls of `function` in each profile a descendant left beside `out` (`p.json` → `p.PID.json`),
/// in pid order as the file names sort.
pub fn child_calls(out: &Path, function: &str) -> Vec<u64> {
    let dir = out.parent().expect("the profile's directory");
    let stem = out.file_stem().unwrap().to_string_lossy().into_owned();
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p != out
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(&format!("{stem}.")))
        })
        .collect();
    names.sort();
    names
        .iter()
        .map(|p| read_profile(p).function(function).map_or(0, |f| f.calls))
        .collect()
}

/// Starts `cmd` with stdin closed and stdout/stderr piped, killed when the guard drops.
pub fn spawn_piped(cmd: &mut Command) -> KillOnDrop {
    KillOnDrop(
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the program"),
    )
}

/// Everything the child wrote on its piped stderr (read to its end).
pub fn stderr_of(child: &mut Child) -> String {
    use std::io::Read;
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    err
}

/// The pid a script announced on its `ready PID` line.
pub fn ready_pid(line: &str) -> u32 {
    line.split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("not a `ready PID` line: {line:?}"))
}

/// A case of an end-to-end suite: one interpreter, a fresh temporary directory.
pub type MatrixCase = fn(&Interpreter, &Path) -> Result<(), libtest_mimic::Failed>;

/// Every case on every interpreter, named `LABEL::CASE`; an interpreter that cannot run here
/// makes its trials ignored, with the reason.
pub fn matrix_trials(
    interpreters: Vec<Interpreter>,
    cases: &[(&'static str, MatrixCase)],
) -> Vec<libtest_mimic::Trial> {
    let mut trials = Vec::new();
    for py in interpreters {
        let missing = py.missing();
        for &(name, f) in cases {
            let py = py.clone();
            let t = trial(format!("{}::{name}", py.label), move || {
                let dir = tempfile::tempdir().unwrap();
                f(&py, dir.path())
            });
            trials.push(match &missing {
                None => t,
                Some(reason) => t.with_ignored_flag(true).with_kind(reason.clone()),
            });
        }
    }
    trials
}

/// The directory holding the extension module `fxext` (tests/fixture/fxext.cc) built for `py`
/// against its own headers with the system g++ (for an interpreter in a root, the root's own
/// g++ there, which scripts/setup-python314 installs with the headers), linked to
/// `libfxnative.so` (RUNPATH to its directory); cached under target/fxext/LABEL, rebuilt when the
/// source is newer.
pub fn fxext_dir(py: &Interpreter) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/fxext")
        .join(&py.label);
    std::fs::create_dir_all(&dir).unwrap();
    let query = py
        .cmd(&py.command)
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['include']); \
             print(sysconfig.get_config_var('EXT_SUFFIX'))",
        ])
        .output()
        .expect("ask the interpreter for its headers");
    let text = String::from_utf8_lossy(&query.stdout).into_owned();
    let mut lines = text.lines();
    let (include, suffix) = (lines.next().unwrap(), lines.next().unwrap());
    let module = dir.join(format!("fxext{suffix}"));
    let source = Path::new(ffiprof_fixture::FXEXT_SOURCE);
    let newer = |a: &Path, b: &Path| {
        let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
        m(a) >= m(b)
    };
    if module.exists()
        && newer(&module, source)
        && newer(&module, Path::new(ffiprof_fixture::FXNATIVE_LIBRARY))
    {
        return dir;
    }
    let lib_dir = Path::new(ffiprof_fixture::FXNATIVE_LIBRARY)
        .parent()
        .unwrap();
    // Trials of one binary build at once: each into a file of its own, renamed over the module.
    static BUILDS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = BUILDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!("fxext.{}.{n}.tmp", std::process::id()));
    let status = py
        .cmd("g++")
        .args(["-shared", "-fPIC", "-O2", "-g", "-pthread"])
        .arg(format!("-I{include}"))
        .arg(source)
        .arg("-o")
        .arg(&tmp)
        .arg(format!("-L{}", lib_dir.display()))
        .arg(format!("-Wl,-rpath,{}", lib_dir.display()))
        .arg("-lfxnative")
        .status()
        .expect("run g++");
    assert!(status.success(), "building fxext for {} failed", py.label);
    std::fs::rename(&tmp, &module).unwrap();
    dir
}
