//! End to end, what the advice stands on: which ctypes calls count as declared (a `restype`
//! assigned to the function — `c_int` included — or given by its prototype is a declaration; only
//! one never set is the default), on every CPython 3.8–3.13 pyenv has, Debian's 3.11 and 3.14; the
//! argtypes advice a program that declares nothing gets; and the changes timed after `ffiprof run`
//! on the program's own interpreter (`measured_changes`), which turn the estimates from modeled
//! into measured, cached per interpreter, skipped by `--no-calibrate` (own harness: an
//! interpreter that is not installed shows as *ignored*).

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use ffiprof_profile::Profile;
use libtest_mimic::{Arguments, Failed};
use serde_json::Value;

/// `ffiprof run -o DIR/p.json EXTRA -- PY SCRIPT FIXTURE` with the cache in `cache`; the profile.
fn run(py: &Interpreter, dir: &Path, cache: &Path, extra: &[&str], script_name: &str) -> Profile {
    let out = dir.join("p.json");
    let o = py
        .cmd(ffiprof_bin())
        .args(["run", "-q", "-o"])
        .arg(&out)
        .args(extra)
        .arg("--")
        .arg(&py.command)
        .arg(script(script_name))
        .arg(FIXTURE)
        .env("XDG_CACHE_HOME", cache)
        .output()
        .expect("run ffiprof");
    check_ok(&o);
    read_profile(&out)
}

/// `ffiprof run` of calls_threads.py: `threads` threads calling fx_add_int(int, int) `calls` times
/// each, through a CDLL; the profile.
fn run_threads(py: &Interpreter, dir: &Path, cache: &Path, threads: u32, calls: u32) -> Profile {
    let out = dir.join("p.json");
    let o = py
        .cmd(ffiprof_bin())
        .args(["run", "-q", "-o"])
        .arg(&out)
        .arg("--")
        .arg(&py.command)
        .arg(script("calls_threads.py"))
        .arg(FIXTURE)
        .arg(threads.to_string())
        .arg(calls.to_string())
        .env("XDG_CACHE_HOME", cache)
        .output()
        .expect("run ffiprof");
    check_ok(&o);
    read_profile(&out)
}

fn report(dir: &Path) -> Value {
    let o = Command::new(ffiprof_bin())
        .arg("report")
        .arg(dir.join("p.json"))
        .args(["--format", "json"])
        .output()
        .expect("run ffiprof report");
    check_ok(&o);
    serde_json::from_slice(&o.stdout).expect("report JSON")
}

fn declarations_exact(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    let p = run(py, dir, dir, &["--no-calibrate"], "py_declarations.py");
    let f = p.function("fx_add_int").expect("fx_add_int called");
    // 10 undeclared + 20 with argtypes and restype = c_int set + 5 through a c_int prototype.
    assert_eq!(f.calls, 35, "{}", py.label);
    assert_eq!(f.undeclared_argtypes_calls, 10, "{}", py.label);
    assert_eq!(f.undeclared_restype_calls, 10, "{}", py.label);
    let noop = p.function("fx_noop").expect("fx_noop called");
    assert_eq!(
        (noop.calls, noop.undeclared_restype_calls),
        (4, 0),
        "{}",
        py.label
    );
    let strlen = p.function("fx_strlen").expect("fx_strlen called");
    assert_eq!(
        (
            strlen.calls,
            strlen.undeclared_argtypes_calls,
            strlen.undeclared_restype_calls
        ),
        (7, 7, 7),
        "{}",
        py.label
    );
    assert!(p.measured_changes.is_none(), "--no-calibrate times nothing");

    // The advice: fx_add_int's undeclared calls passed two Python ints as 4-byte C ints (no
    // declared sibling needed); fx_strlen's bytes argument crossed as a pointer: no advice.
    let r = report(dir);
    let recs: Vec<&Value> = r["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "declare-argtypes")
        .collect();
    assert_eq!(recs.len(), 1, "{recs:?}");
    let a = recs[0];
    assert_eq!(a["function"], "fx_add_int");
    assert_eq!(a["evidence"]["undeclared_argtypes_calls"], 10);
    assert_eq!(a["evidence"]["int_sized_args"], 2);
    assert_eq!(a["evidence"]["pointer_sized_args"], 0);
    assert_eq!(a["estimated_savings_ns"], 0);
    assert_eq!(a["estimate"]["method"], "modeled");
    assert_eq!(a["confidence"], "low");
    Ok(())
}

/// The line of `script` whose comment is `# LABEL`.
fn line_of(script_name: &str, label: &str) -> u32 {
    let text = std::fs::read_to_string(script(script_name)).unwrap();
    let tag = format!("# {label}");
    text.lines()
        .position(|l| l.trim_end().ends_with(&tag))
        .unwrap_or_else(|| panic!("no {tag} in {script_name}")) as u32
        + 1
}

/// What one site saw of ctypes' guessing: (arg_types, arg_types_calls, truncated_int_args,
/// restype_default).
type SiteArgs = (Vec<String>, u64, Vec<u32>, bool);

fn site_args(p: &Profile, function: &str, line: u32) -> SiteArgs {
    let f = p
        .function(function)
        .unwrap_or_else(|| panic!("{function} called"));
    let s = f
        .sites
        .iter()
        .find(|s| s.line == line)
        .unwrap_or_else(|| panic!("{function} has no site at line {line}: {:?}", f.sites));
    (
        s.arg_types.clone(),
        s.arg_types_calls,
        s.truncated_int_args.clone(),
        s.restype_default,
    )
}

/// The Python type of each argument ctypes guessed for, per site, exactly; the looked-at calls
/// bounded (a pair's first 8, then its 2^k-th); ints cut to 32 bits; the default restype; and the
/// advice built on them.
fn arg_evidence_exact(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    const SCRIPT: &str = "py_arg_evidence.py";
    let p = run(py, dir, dir, &["--no-calibrate"], SCRIPT);
    let at = |label| line_of(SCRIPT, label);
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let cases: [(&str, &str, SiteArgs); 6] = [
        (
            "fx_add_int",
            "INTS",
            (strings(&["int", "int"]), 9, vec![], true),
        ),
        (
            "fx_add_i64",
            "WIDE",
            (strings(&["int", "int"]), 2, vec![0], true),
        ),
        (
            "fx_strlen",
            "MIXED",
            (
                strings(&["bytes|ctypes:c_char_Array_8|byref:c_int|str"]),
                8,
                vec![],
                true,
            ),
        ),
        (
            "fx_point_norm2",
            "STRUCT",
            (strings(&["ctypes:Point"]), 3, vec![], false),
        ),
        ("fx_add_int", "ARGTYPES_ONLY", (vec![], 0, vec![], true)),
        (
            "fx_add_int",
            "NULL",
            (strings(&["None", "int"]), 1, vec![], true),
        ),
    ];
    for (function, label, want) in cases {
        assert_eq!(
            site_args(&p, function, at(label)),
            want,
            "{function} at {label} ({})",
            py.label
        );
    }
    let r = report(dir);
    let recs: Vec<&Value> = r["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "declare-argtypes")
        .collect();
    let names: Vec<&str> = recs
        .iter()
        .map(|r| r["function"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["fx_add_i64", "fx_add_int"], "{}", py.label);
    let cut = recs[0];
    assert_eq!(cut["confidence"], "high");
    assert_eq!(
        cut["evidence"]["truncated_int_args"],
        serde_json::json!([0])
    );
    let ints = recs[1];
    assert_eq!(ints["confidence"], "low");
    assert_eq!(
        ints["evidence"]["arg_types"],
        serde_json::json!(["int|None", "int"])
    );
    assert_eq!(
        ints["evidence"]["suggested_argtypes"],
        serde_json::json!(["ctypes.c_int", "ctypes.c_int"])
    );
    assert_eq!(ints["evidence"]["undeclared_argtypes_calls"], 21);
    Ok(())
}

/// How the agent saw each site's fresh objects built, exactly: what decides which change
/// reusing them is. CPython 3.11 calls `create_string_buffer` past every hook, so there its array
/// type shows as one made per call.
fn fresh_builds_exact(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    const SCRIPT: &str = "py_fresh_builds.py";
    let p = run(py, dir, dir, &["--no-calibrate"], SCRIPT);
    let f = p.function("fx_strlen").expect("fx_strlen called");
    let helper = if py.label.ends_with("3.11") {
        "type_per_call"
    } else {
        "helper"
    };
    for (label, want) in [
        ("INSTANCE", "instance"),
        ("TYPE", "type_per_call"),
        ("HELPER", helper),
    ] {
        let line = line_of(SCRIPT, label);
        let s = f
            .sites
            .iter()
            .find(|s| s.line == line)
            .unwrap_or_else(|| panic!("no site at {label}: {:?}", f.sites));
        assert_eq!(
            (s.fresh_buffer_calls, s.fresh_buffer_builds.clone()),
            (20, vec![want.to_string()]),
            "{label} ({})",
            py.label
        );
    }
    Ok(())
}

fn measured_changes_recorded(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    let cache = dir.join("cache");
    std::fs::create_dir(&cache).unwrap();
    let p = run(py, dir, &cache, &[], "py_fresh_buffers.py");
    let mc = p
        .measured_changes
        .as_ref()
        .expect("changes timed after the run");
    assert_eq!(mc.executable, p.meta.executable);
    assert!(
        mc.python
            .starts_with(p.meta.python.as_deref().unwrap_or("?")),
        "{} vs {:?}",
        mc.python,
        p.meta.python
    );
    // The budget is 1.7 s of timing, plus the interpreter's start.
    assert!(mc.elapsed_ms < 3_000, "took {} ms", mc.elapsed_ms);
    let shapes: Vec<(&str, &str, bool)> = mc
        .measurements
        .iter()
        .map(|m| (m.change.as_str(), m.shape.as_str(), m.cached))
        .collect();
    // py_fresh_buffers.py builds its arrays at its top level: timed as module-level code.
    for wanted in [
        ("reuse-type", "4096@module"),
        ("reuse-array", "4096@module"),
        ("reuse-string-buffer", "4096@module"),
        ("loop", "i"),
    ] {
        assert!(
            shapes.contains(&(wanted.0, wanted.1, false)),
            "{wanted:?} not timed: {shapes:?} ({:?})",
            mc.note
        );
    }
    for m in &mc.measurements {
        assert!(m.rounds >= 5 && m.iterations >= 1, "{m:?}");
        assert!(
            (m.saving_ns - (m.before_ns - m.after_ns)).abs() < m.before_ns,
            "{m:?}"
        );
    }
    let build = mc.get("reuse-type", "4096@module").unwrap();
    assert!(build.own_ns.is_some(), "{build:?}");
    assert!(
        build.before_ns > build.after_ns,
        "building 4 KiB per call costs something: {build:?}"
    );
    let r = report(dir);
    let reuse = r["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "reuse-buffer" && r["function"] == "fx_fill")
        .unwrap_or_else(|| {
            panic!(
                "no reuse-buffer advice for fx_fill: {:#}\n{:#?}",
                r["recommendations"], p.measured_changes
            )
        });
    assert_eq!(reuse["estimate"]["method"], "measured", "{reuse}");
    assert!(reuse["estimate"]["spread_ns"].is_number());
    assert!(reuse["savings_percent"].as_f64().unwrap() <= 100.0);

    // Again: every figure from the cache, nothing timed.
    let p = run(py, dir, &cache, &[], "py_fresh_buffers.py");
    let mc = p.measured_changes.as_ref().unwrap();
    let again = mc.get("reuse-type", "4096@module").unwrap();
    assert!(again.cached);
    assert_eq!(again.saving_ns, build.saving_ns);

    // --no-calibrate: nothing timed, the estimate modeled.
    let p = run(py, dir, &cache, &["--no-calibrate"], "py_fresh_buffers.py");
    assert!(p.measured_changes.is_none());
    let r = report(dir);
    let reuse = r["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "reuse-buffer")
        .expect("reuse-buffer advice");
    assert_eq!(reuse["estimate"]["method"], "modeled");
    assert_eq!(reuse["estimate"]["spread_ns"], Value::Null);
    Ok(())
}

/// A program whose threads call a short function through a CDLL: the GIL round trip is timed in
/// the program's shape — with as many threads calling at once as the profile saw — not in one
/// thread, and gil-contention advice says so.
fn contention_timed_with_the_threads_seen(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    let cache = dir.join("cache");
    std::fs::create_dir(&cache).unwrap();
    let p = run_threads(py, dir, &cache, 3, 20_000);
    assert_eq!(p.meta.threads, 3);
    let mc = p
        .measured_changes
        .as_ref()
        .expect("changes timed after the run");
    let changes: Vec<(&str, &str)> = mc
        .measurements
        .iter()
        .map(|m| (m.change.as_str(), m.shape.as_str()))
        .collect();
    // fx_add_int(int, int) -> int, from 3 threads; its one-thread round trip is not asked for.
    let m = mc
        .get("gil-contention", "3:ii->i")
        .unwrap_or_else(|| panic!("not timed with 3 threads: {changes:?} ({:?})", mc.note));
    assert!(m.rounds >= 5 && m.iterations >= 1, "{m:?}");
    assert!(!changes.iter().any(|c| c.0 == "use-pydll"), "{changes:?}");
    let r = report(dir);
    for rec in r["recommendations"].as_array().unwrap() {
        if rec["kind"] == "gil-contention" {
            assert_eq!(rec["function"], "fx_add_int", "{rec}");
            assert_eq!(rec["evidence"]["measured_threads"], 3, "{rec}");
            assert_eq!(rec["evidence"]["calling_threads"], 3, "{rec}");
            assert_eq!(rec["evidence"]["contended_calls"], 60_000, "{rec}");
            let per_call = rec["estimate"]["per_call_ns"].as_f64().unwrap();
            // The timed change, or — where the run's threads fell into a convoy — the hand-offs
            // the run made, when more (at most the crossings either way).
            let claimed = match rec["estimate"]["method"].as_str() {
                Some("measured") => m.saving_ns,
                Some("modeled") => {
                    let h = rec["evidence"]["handoff_per_call_ns"].as_f64().unwrap();
                    assert!(h > m.saving_ns, "{rec} vs {m:?}");
                    h
                }
                other => panic!("method {other:?}: {rec}"),
            };
            assert!(
                (per_call - claimed).abs() < 0.5 || per_call < claimed,
                "{rec} vs {m:?}"
            );
        }
    }
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let mut trials = matrix_trials(
        version_matrix(),
        &[
            ("declarations_exact", declarations_exact),
            ("arg_evidence_exact", arg_evidence_exact),
            ("fresh_builds_exact", fresh_builds_exact),
        ],
    );
    let timed: Vec<Interpreter> = version_matrix()
        .into_iter()
        .filter(|p| p.label == "pyenv-3.11" || p.label == "pyenv-3.12")
        .collect();
    trials.extend(matrix_trials(
        timed,
        &[
            ("measured_changes_recorded", measured_changes_recorded),
            (
                "contention_timed_with_the_threads_seen",
                contention_timed_with_the_threads_seen,
            ),
        ],
    ));
    libtest_mimic::run(&args, trials).exit();
}
