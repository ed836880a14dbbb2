//! The two JSON contracts byte for byte: the profile file (what the agent writes, what every tool
//! reads) and the report of `ffiprof report --format json`. The golden files under
//! tests/golden/ were written by the code before the time split became one type (issue 12): a
//! change of field name, order or number shows here. Rewrite them only for an intended change of
//! the contract (adding a field), with `FFIPROF_BLESS=1 cargo test -p ffiprof-flamegraph --test
//! golden_json`, and review the diff in git.

mod common;

use std::path::PathBuf;

use ffiprof_profile::{Frame, Profile};

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("golden")
        .join(name)
}

fn check(name: &str, actual: &str) {
    let path = golden(name);
    if std::env::var("FFIPROF_BLESS").is_ok_and(|v| v == "1") {
        std::fs::write(&path, actual).expect("write the golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("golden file {} is missing: {e}", path.display()));
    if expected != actual {
        let line = expected
            .lines()
            .zip(actual.lines())
            .position(|(e, a)| e != a)
            .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
        panic!(
            "{} differs, first at line {}:\n  expected: {:?}\n  actual:   {:?}",
            path.display(),
            line + 1,
            expected.lines().nth(line).unwrap_or("<end>"),
            actual.lines().nth(line).unwrap_or("<end>"),
        );
    }
}

/// The demo profile with what it lacks of the format: a call site reached through a pass-through
/// frame, a measured gap, and one of ctypes' own foreign calls. Only fields outside the time
/// split are set here, so this builder reads the same before and after the split's refactoring.
fn full_profile() -> Profile {
    let mut p = common::demo_profile();
    let site = &mut p.functions[0].sites[0];
    site.gap_ns = 1_234_000;
    site.gap_samples = 999;
    site.through = Some(Frame {
        file: "wrap.py".into(),
        function: "__call__".into(),
        line: 7,
    });
    let mut cast = p.functions[0].clone();
    cast.library = "/usr/lib/python3.11/lib-dynload/_ctypes.cpython-311-x86_64-linux-gnu.so".into();
    cast.function = "cast".into();
    cast.offset = 0x1f2e0;
    p.ctypes_internal.push(cast);
    p
}

#[test]
fn profile_file_is_unchanged() {
    check("demo.profile.json", &full_profile().to_json());
}

#[test]
fn profile_file_reads_back_to_the_same_bytes() {
    let text = std::fs::read_to_string(golden("demo.profile.json")).unwrap();
    let p = ffiprof_profile::read_str(&text, "demo.profile.json").unwrap();
    assert_eq!(p, full_profile());
    assert!(p.to_json() == text, "a read profile writes other bytes");
}

#[test]
fn json_report_is_unchanged() {
    let report = ffiprof_analyzer::summarize(&full_profile(), &Default::default());
    // As `ffiprof report --format json` prints it (src/report_cmd.rs).
    check(
        "demo.report.json",
        &serde_json::to_string_pretty(&report).unwrap(),
    );
}

/// A profile the agent wrote (tests/scripts/py_forwarder.py, CPython 3.11) before the split
/// type: it reads and writes back to the very same bytes.
#[test]
fn agent_written_profile_reads_back_to_the_same_bytes() {
    let name = "agent.forwarder.profile.json";
    let text = std::fs::read_to_string(golden(name)).unwrap();
    let p = ffiprof_profile::read_str(&text, name).unwrap();
    assert!(p.functions.iter().any(|f| f.time.marshal_in > 0));
    assert!(p.to_json() == text, "a read profile writes other bytes");
}
