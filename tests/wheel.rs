//! The Python wheel end to end: scripts/build-wheel builds it (once per run of this binary,
//! incrementally) and checks its manylinux claim; each case installs it with `pip install
//! --no-index` into a fresh venv of CPython 3.8 and 3.12 (pytest from the wheelhouse
//! scripts/test-setup fills) and runs, from there, the `ffiprof` script on a workload, `python -m
//! ffiprof`, the in-process API and the pytest plugin.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, OnceLock};

use libtest_mimic::{Arguments, Failed, Trial};

mod common;
use common::{calls_basic_expected, calls_by_name, read_profile, script, trial, FIXTURE};

const PYTEST: &str = "pytest==8.3.5";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The wheel scripts/build-wheel wrote, and what its check printed.
struct Built {
    wheel: PathBuf,
    log: String,
}

fn built() -> &'static Result<Built, String> {
    static BUILT: OnceLock<Result<Built, String>> = OnceLock::new();
    BUILT.get_or_init(|| {
        eprintln!("wheel: scripts/build-wheel ...");
        let out = Command::new(root().join("scripts/build-wheel"))
            .output()
            .map_err(|e| format!("cannot run scripts/build-wheel: {e}"))?;
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        if !out.status.success() {
            return Err(format!("scripts/build-wheel failed: {}\n{log}", out.status));
        }
        let wheel = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        Ok(Built {
            wheel: root().join(wheel),
            log,
        })
    })
}

fn wheel() -> &'static Built {
    match built() {
        Ok(b) => b,
        Err(e) => panic!("{e}"),
    }
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

fn check(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A fresh venv of one interpreter with the wheel (and pytest) installed from files only.
struct Venv {
    _dir: tempfile::TempDir,
    bin: PathBuf,
}

impl Venv {
    fn python(&self) -> PathBuf {
        self.bin.join("python")
    }
    fn ffiprof(&self) -> PathBuf {
        self.bin.join("ffiprof")
    }
}

/// An interpreter to install the wheel into: its base interpreter and the wheelhouse holding
/// pytest for it, or why it cannot be tested here.
type Found = Result<(PathBuf, PathBuf), String>;

/// The interpreters the wheel is installed into, by label.
fn interpreters() -> Vec<(String, Found)> {
    ["3.8", "3.12"]
        .iter()
        .map(|minor| {
            let label = format!("pyenv-{minor}");
            let wheelhouse = root().join("target/wheelhouse").join(minor);
            let found = match common::pyenv_version(minor) {
                None => Err(format!("pyenv {minor} is not installed")),
                Some(_) if !wheelhouse.is_dir() => Err(format!(
                    "no pytest wheelhouse {}: run scripts/test-setup",
                    wheelhouse.display()
                )),
                Some(base) => Ok((base, wheelhouse)),
            };
            (label, found)
        })
        .collect()
}

/// Made once per interpreter per run, shared by its cases.
fn venv(label: &str, base: &Path, wheelhouse: &Path) -> &'static Venv {
    static VENVS: OnceLock<Mutex<BTreeMap<String, &'static OnceLock<Venv>>>> = OnceLock::new();
    let cell: &'static OnceLock<Venv> = VENVS
        .get_or_init(Default::default)
        .lock()
        .unwrap()
        .entry(label.to_string())
        .or_insert_with(|| Box::leak(Box::new(OnceLock::new())));
    cell.get_or_init(|| {
        let wheel = &wheel().wheel;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("venv");
        check(Command::new(base).args(["-m", "venv"]).arg(&path));
        let pip = |args: &[&str]| {
            check(
                Command::new(path.join("bin/python"))
                    .args(["-m", "pip", "install", "--quiet", "--no-index"])
                    .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
                    .args(args),
            )
        };
        pip(&[wheel.to_str().unwrap()]);
        pip(&["--find-links", wheelhouse.to_str().unwrap(), PYTEST]);
        Venv {
            bin: path.join("bin"),
            _dir: dir,
        }
    })
}

type Case = fn(&Venv, &Path);

/// The installed `ffiprof` script on a workload: exact counts.
fn cli_run(v: &Venv, tmp: &Path) {
    let out = tmp.join("prof.json");
    let stdout = check(
        Command::new(v.ffiprof())
            .args(["run", "-q", "-o"])
            .arg(&out)
            .arg("--")
            .arg(v.python())
            .arg(script("calls_basic.py"))
            .arg(FIXTURE),
    );
    assert_eq!(stdout, "ok\n");
    let expected = calls_basic_expected();
    let p = read_profile(&out);
    assert_eq!(calls_by_name(&p), expected);
    let site = p.function("fx_add_int").unwrap().sites[0].clone();
    assert_eq!((site.line, site.calls), (29, 1000));
}

/// `python -m ffiprof`: the same binary (found through the distribution's RECORD), its exit
/// status passed through.
fn python_m(v: &Venv, tmp: &Path) {
    let py = v.python();
    let version = check(Command::new(&py).args(["-m", "ffiprof", "--version"]));
    assert_eq!(
        version.trim(),
        format!("ffiprof {}", env!("CARGO_PKG_VERSION"))
    );
    let found =
        check(Command::new(&py).args(["-c", "import ffiprof._binary as b; print(b.binary())"]));
    assert_eq!(
        Path::new(found.trim()),
        std::fs::canonicalize(v.ffiprof()).unwrap()
    );
    let out = tmp.join("threads.json");
    check(
        Command::new(&py)
            .args(["-m", "ffiprof", "run", "-q", "-o"])
            .arg(&out)
            .arg("--")
            .arg(&py)
            .arg(script("calls_threads.py"))
            .args([FIXTURE, "3", "100"]),
    );
    let json = check(
        Command::new(&py)
            .args(["-m", "ffiprof", "report", "--format", "json"])
            .arg(&out),
    );
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    let fx = report["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["function"] == "fx_add_int")
        .unwrap();
    assert_eq!(fx["calls"], 300);
    let missing = run(Command::new(&py).args(["-m", "ffiprof", "report", "/nonexistent.json"]));
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent.json"));
}

/// `ffiprof.profile`: tests/scripts/wheel_inprocess.py checks itself, exactly.
fn in_process(v: &Venv, tmp: &Path) {
    let out = check(
        Command::new(v.python())
            .arg(script("wheel_inprocess.py"))
            .arg(FIXTURE)
            .arg(tmp),
    );
    assert!(out.ends_with("decorator ok\nok\n"), "{out}");
    assert!(out.contains("nested ok 66 26\n"), "{out}");
}

/// The pytest plugin: over-budget tests fail naming the function, the figure, the budget and
/// the top call site; the others pass; `--ffiprof` prints each test's summary.
fn pytest_plugin(v: &Venv, tmp: &Path) {
    let test_file = tmp.join("test_budget.py");
    std::fs::copy(script("wheel_pytest_budget.py"), &test_file).unwrap();
    let pytest = |extra: &[&str]| {
        run(Command::new(v.python())
            .args(["-m", "pytest", "-p", "no:cacheprovider", "-rA"])
            .args(extra)
            .arg(&test_file)
            .current_dir(tmp)
            .env("FFIPROF_FIXTURE", FIXTURE)
            .env("PYTHONDONTWRITEBYTECODE", "1"))
    };
    let out = pytest(&[]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    let line = std::fs::read_to_string(&test_file)
        .unwrap()
        .lines()
        .position(|l| l.contains("# SCALAR-LOOP"))
        .unwrap()
        + 1;
    assert!(
        text.contains(&format!(
            "ffi_budget exceeded: fx_add_int ({FIXTURE}): 1000 calls, budget max_calls=100; \
             top call site: test_budget.py:{line} in test_b_scalar_loop_over_budget (1000 calls, "
        )),
        "{text}"
    );
    assert!(
        text.contains("ms at the boundary, budget max_boundary_ms=0; top call site: "),
        "{text}"
    );
    assert!(
        text.contains("of its boundary time, budget max_marshal_share=0.0; top call site: "),
        "{text}"
    );
    for passed in [
        "test_a_no_marker_pays_nothing",
        "test_c_within_budget",
        "test_f_no_marker_after_marked_ones",
    ] {
        assert!(
            text.contains(&format!("PASSED test_budget.py::{passed}")),
            "{passed}: {text}"
        );
    }
    assert!(text.contains("3 failed, 3 passed"), "{text}");

    let out = pytest(&["--ffiprof", "-k", "within or scalar"]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("ffiprof: native boundary per test"), "{text}");
    assert!(
        text.contains("test_budget.py::test_c_within_budget: 600 calls, "),
        "{text}"
    );
    assert!(
        text.contains("test_budget.py::test_b_scalar_loop_over_budget: 1000 calls, ")
            && text.contains("top fx_add_int (1000 calls, "),
        "{text}"
    );
}

/// The wheel's name and what scripts/check-wheel said of it.
fn wheel_checked() -> Result<(), Failed> {
    let b = wheel();
    let name = b.wheel.file_name().unwrap().to_string_lossy().into_owned();
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        name,
        format!("ffiprof-{version}-py3-none-manylinux2014_x86_64.manylinux_2_17_x86_64.whl")
    );
    let wheels: Vec<_> = std::fs::read_dir(root().join("target/wheels"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".whl"))
        .collect();
    assert_eq!(wheels.len(), 1, "exactly one wheel in target/wheels");
    let binary_line =
        format!("ffiprof-{version}.data/scripts/ffiprof: newest glibc symbol version GLIBC_2.17");
    for expected in [
        binary_line.as_str(),
        "libffiprof_agent.so (embedded in the binary): newest glibc symbol version GLIBC_2.17",
        "no runtime dependency",
        "check-wheel: ok",
    ] {
        assert!(b.log.contains(expected), "{expected}:\n{}", b.log);
    }
    eprintln!(
        "{}",
        b.log
            .lines()
            .filter(|l| !l.contains("Compiling"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let cases: [(&str, Case); 4] = [
        ("cli_run", cli_run),
        ("python_m", python_m),
        ("in_process_api", in_process),
        ("pytest_plugin", pytest_plugin),
    ];
    let mut trials = vec![trial("wheel_built_and_checked".into(), wheel_checked)];
    for (label, found) in interpreters() {
        for (name, case) in cases {
            let test_name = format!("{label}::{name}");
            trials.push(match &found {
                Ok((base, wheelhouse)) => {
                    let (label, base, wheelhouse) =
                        (label.clone(), base.clone(), wheelhouse.clone());
                    trial(test_name, move || {
                        let v = venv(&label, &base, &wheelhouse);
                        let tmp = tempfile::tempdir().unwrap();
                        case(v, tmp.path());
                        Ok(())
                    })
                }
                Err(why) => Trial::test(test_name, || Ok(()))
                    .with_ignored_flag(true)
                    .with_kind(why.clone()),
            });
        }
    }
    libtest_mimic::run(&args, trials).exit();
}
