//! End to end, which line a call is charged to: calls made through a generic forwarder (llvmlite's
//! shape: one `__call__(self, *args, **kwargs)` making every C call) are charged to the
//! forwarder's caller, exactly from the first call, with the forwarder kept in the stacks; a plain
//! helper stays the site unless `--site-skip` names it; and ctypes' own foreign calls
//! (`ctypes.cast`, `string_at`) are ctypes' cost at the user's line, never a library function and
//! never advised on — on every CPython 3.8–3.13 pyenv has and on Debian's 3.11 (own harness:
//! an interpreter that is not installed shows as *ignored*).

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use ffiprof_profile::{FunctionRecord, Profile};
use libtest_mimic::{Arguments, Failed};

type Case = MatrixCase;

/// Runs `script` under `ffiprof run` with `extra` options and every stack sampled; returns the
/// profile and the script's `TAG=LINE` pairs.
fn run(
    py: &Interpreter,
    dir: &Path,
    extra: &[&str],
    script_name: &str,
) -> (Profile, BTreeMap<String, u32>) {
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
        .env("FFIPROF_STACKS", "1")
        .output()
        .expect("run ffiprof");
    check_ok(&o);
    let tags = String::from_utf8_lossy(&o.stdout)
        .split_whitespace()
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("TAG=LINE");
            (k.to_string(), v.parse().expect("a line number"))
        })
        .collect();
    (read_profile(&out), tags)
}

fn func<'a>(p: &'a Profile, name: &str) -> &'a FunctionRecord {
    p.function(name)
        .unwrap_or_else(|| panic!("{name} not in profile: {:?}", calls_by_name(p)))
}

/// line → (calls, Python function, line of the frame the calls went through).
fn sites(f: &FunctionRecord, file: &str) -> BTreeMap<u32, (u64, String, Option<u32>)> {
    f.sites
        .iter()
        .map(|s| {
            assert_eq!(s.file, file, "{s:?}");
            if let Some(t) = &s.through {
                assert!(
                    t.file == file || t.file.ends_with("/ctypes/__init__.py"),
                    "{t:?}"
                );
            }
            (
                s.line,
                (
                    s.calls,
                    s.function.clone(),
                    s.through.as_ref().map(|t| t.line),
                ),
            )
        })
        .collect()
}

fn entry(calls: u64, function: &str, through: Option<u32>) -> (u64, String, Option<u32>) {
    (calls, function.to_string(), through)
}

fn forwarder_sites_exact(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    let (p, t) = run(py, dir, &[], "py_forwarder.py");
    let file = script("py_forwarder.py");
    let file = file.to_str().unwrap();
    let fwd = Some(t["FORWARD"]);
    assert_eq!(
        calls_by_name(&p),
        BTreeMap::from([("fx_add_int".into(), 420), ("fx_scale".into(), 140)]),
        "{}",
        py.label
    );
    // The forwarder's three callers are the sites, each exact; the helper's own line stays one.
    assert_eq!(
        sites(func(&p, "fx_add_int"), file),
        BTreeMap::from([
            (t["SITE-A"], entry(300, "work", fwd)),
            (t["SITE-C"], entry(50, "work", fwd)),
            (t["HELPER"], entry(70, "add", None)),
        ]),
        "{}",
        py.label
    );
    // Two forwarders nested (a decorator's wrapper around it): the caller of both is the site.
    assert_eq!(
        sites(func(&p, "fx_scale"), file),
        BTreeMap::from([
            (t["SITE-B"], entry(100, "work", fwd)),
            (t["SITE-D"], entry(40, "work", fwd)),
        ]),
        "{}",
        py.label
    );
    // The forwarder stays in the stacks, innermost, below the line that is the site.
    let lines_of = |site_line: u32, f: &str| -> Vec<Vec<u32>> {
        let s = func(&p, f)
            .sites
            .iter()
            .find(|s| s.line == site_line)
            .unwrap();
        assert_eq!(s.stacks.iter().map(|x| x.calls).sum::<u64>(), s.calls);
        s.stacks
            .iter()
            .map(|x| {
                p.stacks[x.stack as usize]
                    .iter()
                    .map(|&i| p.frames[i as usize].line)
                    .collect()
            })
            .collect()
    };
    for stack in lines_of(t["SITE-A"], "fx_add_int") {
        assert!(stack.ends_with(&[t["SITE-A"], t["FORWARD"]]), "{stack:?}");
    }
    for stack in lines_of(t["SITE-D"], "fx_scale") {
        assert!(
            stack.ends_with(&[t["SITE-D"], t["DECORATOR"], t["FORWARD"]]),
            "{stack:?}"
        );
    }
    Ok(())
}

fn site_skip_names_a_helper(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    let (p, t) = run(
        py,
        dir,
        &["--site-skip", "*/py_forwarder.py:add"],
        "py_forwarder.py",
    );
    let file = script("py_forwarder.py");
    let file = file.to_str().unwrap();
    assert_eq!(p.meta.site_skip, ["*/py_forwarder.py:add"]);
    assert_eq!(
        sites(func(&p, "fx_add_int"), file),
        BTreeMap::from([
            (t["SITE-A"], entry(300, "work", Some(t["FORWARD"]))),
            (t["SITE-C"], entry(50, "work", Some(t["FORWARD"]))),
            (t["CALLER"], entry(70, "work", Some(t["HELPER"]))),
        ]),
        "{}",
        py.label
    );
    Ok(())
}

fn ctypes_internal_apart(py: &Interpreter, dir: &Path) -> Result<(), Failed> {
    let (p, t) = run(py, dir, &[], "py_ctypes_internal.py");
    let file = script("py_ctypes_internal.py");
    let file = file.to_str().unwrap();
    assert_eq!(
        calls_by_name(&p),
        BTreeMap::from([("fx_sum".into(), 200)]),
        "only the library function is a function ({})",
        py.label
    );
    // As written by the agent, not only as read back.
    let raw: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("p.json")).unwrap()).unwrap();
    assert_eq!(
        raw["functions"].as_array().unwrap().len(),
        1,
        "{}",
        raw["functions"]
    );
    assert_eq!(raw["ctypes_internal"].as_array().unwrap().len(), 2);
    let sum = func(&p, "fx_sum");
    assert_eq!(
        sites(sum, file),
        BTreeMap::from([(t["SUM"], entry(200, "work", None))])
    );
    // cast's result is built inside cast: no construction of fx_sum's.
    assert_eq!(
        (sum.fresh_buffer_calls, sum.construction_bytes),
        (0, 0),
        "{sum:?}"
    );
    let internal: BTreeMap<&str, &FunctionRecord> = p
        .ctypes_internal
        .iter()
        .map(|f| (f.function.as_str(), f))
        .collect();
    assert_eq!(
        internal.keys().copied().collect::<Vec<_>>(),
        ["cast", "string_at"],
        "{}",
        py.label
    );
    for (name, tag, calls, via) in [
        ("cast", "CAST", 200, "cast"),
        ("string_at", "STRING-AT", 150, "string_at"),
    ] {
        let f = internal[name];
        assert!(f.library.contains("_ctypes"), "{}", f.library);
        assert_eq!((f.calls, f.python_calls), (calls, calls));
        let s = sites(f, file);
        assert_eq!(s.len(), 1, "{s:?}");
        let (line, (n, function, _)) = s.into_iter().next().unwrap();
        assert_eq!((line, n, function.as_str()), (t[tag], calls, "work"));
        let through = f.sites[0].through.as_ref().unwrap();
        assert_eq!(through.function, via);
        assert!(f.time.marshal_in + f.time.native > 0, "{f:?}");
    }
    // The report: a section of its own, no function, no advice.
    let o = py
        .cmd(ffiprof_bin())
        .args(["report", "--format", "json"])
        .arg(dir.join("p.json"))
        .output()
        .unwrap();
    assert!(o.status.success());
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let names = |key: &str| -> Vec<String> {
        report[key]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["function"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names("functions"), ["fx_sum"]);
    let mut internal = names("ctypes_internal");
    internal.sort();
    assert_eq!(internal, ["cast", "string_at"]);
    for r in report["recommendations"].as_array().unwrap() {
        assert_eq!(r["function"], "fx_sum", "{r}");
    }
    Ok(())
}

fn main() {
    let args = Arguments::from_args();
    let cases: Vec<(&str, Case)> = vec![
        ("forwarder_sites_exact", forwarder_sites_exact),
        ("site_skip_names_a_helper", site_skip_names_a_helper),
        ("ctypes_internal_apart", ctypes_internal_apart),
    ];
    let trials = matrix_trials(version_matrix(), &cases);
    libtest_mimic::run(&args, trials).exit();
}
