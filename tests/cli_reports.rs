//! The report-writing commands end to end through the real binary: `report --html`,
//! `report --format folded|speedscope|pprof`, `flamegraph`, `diff`.

use std::path::Path;
use std::process::Command;

use ffiprof_profile::{Frame, FunctionRecord, Profile, SiteRecord, Split, StackSample};

fn profile(calls: u64) -> Profile {
    let mut p = Profile::new();
    p.meta.command = vec!["python3".into(), "app.py".into()];
    p.meta.python = Some("3.11.2".into());
    p.meta.duration_ns = 1_000_000_000;
    p.meta.complete = true;
    p.frames = vec![
        Frame {
            file: "app.py".into(),
            function: "<module>".into(),
            line: 9,
        },
        Frame {
            file: "app.py".into(),
            function: "step".into(),
            line: 4,
        },
    ];
    p.stacks = vec![vec![0, 1]];
    let mut f = FunctionRecord::new("/lib/libm.so.6", "cos");
    f.calls = calls;
    f.python_calls = calls;
    f.time.native = 30 * calls;
    f.time.marshal_in = 200 * calls;
    f.native_hist.record_n(30, calls);
    f.sites.push(SiteRecord {
        file: "app.py".into(),
        line: 4,
        function: "step".into(),
        calls,
        time: Split {
            native: 30 * calls,
            marshal_in: 200 * calls,
            ..Split::default()
        },
        stacks: vec![StackSample {
            stack: 0,
            calls,
            time: Split {
                native: 30 * calls,
                marshal_in: 200 * calls,
                ..Split::default()
            },
        }],
        ..Default::default()
    });
    p.functions.push(f);
    p
}

fn ffiprof(args: &[&str]) -> std::process::Output {
    let out = Command::new(env!("CARGO_BIN_EXE_ffiprof"))
        .args(args)
        .output()
        .expect("run ffiprof");
    assert!(
        out.status.success(),
        "ffiprof {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn write(dir: &Path, name: &str, p: &Profile) -> String {
    let path = dir.join(name);
    std::fs::write(&path, p.to_json()).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn report_html_and_exports() {
    let dir = tempfile::tempdir().unwrap();
    let prof = write(dir.path(), "prof.json", &profile(1000));
    let html = dir.path().join("r.html");
    ffiprof(&["report", &prof, "--html", html.to_str().unwrap()]);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("<svg")
            && page.contains("id=\"functions-table\"")
            && page.contains("libm.so.6!cos")
    );

    let folded = ffiprof(&["report", &prof, "--format", "folded"]);
    assert_eq!(
        String::from_utf8(folded.stdout).unwrap(),
        "<module> (app.py:9);step (app.py:4);libm.so.6!cos;marshal-in 200000\n\
         <module> (app.py:9);step (app.py:4);libm.so.6!cos;native 30000\n"
    );
    let calls = ffiprof(&["report", &prof, "--format", "folded", "--weight", "calls"]);
    assert_eq!(
        String::from_utf8(calls.stdout).unwrap(),
        "<module> (app.py:9);step (app.py:4);libm.so.6!cos 1000\n"
    );

    let speedscope = ffiprof(&["report", &prof, "--format", "speedscope"]);
    let doc: serde_json::Value = serde_json::from_slice(&speedscope.stdout).unwrap();
    assert_eq!(
        doc["$schema"],
        "https://www.speedscope.app/file-format-schema.json"
    );

    let pb = dir.path().join("p.pb.gz");
    ffiprof(&[
        "report",
        &prof,
        "--format",
        "pprof",
        "-o",
        pb.to_str().unwrap(),
    ]);
    assert_eq!(&std::fs::read(&pb).unwrap()[..2], &[0x1f, 0x8b]);
}

#[test]
fn flamegraph_svg_and_diff() {
    let dir = tempfile::tempdir().unwrap();
    let before = write(dir.path(), "before.json", &profile(1000));
    let after = write(dir.path(), "after.json", &profile(10));
    let svg = dir.path().join("f.svg");
    ffiprof(&[
        "flamegraph",
        &before,
        "-o",
        svg.to_str().unwrap(),
        "--weight",
        "calls",
    ]);
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(
        text.starts_with("<?xml")
            && text.contains("function search(")
            && text.contains("libm.so.6!cos")
    );

    let html = dir.path().join("d.html");
    let out = ffiprof(&["diff", &before, &after, "--html", html.to_str().unwrap()]);
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(
        table.contains("cos") && table.contains("1000 → 10"),
        "{table}"
    );
    assert!(std::fs::read_to_string(&html)
        .unwrap()
        .contains("Differential flamegraph"));
    let folded = ffiprof(&["diff", &before, &after, "--format", "folded"]);
    assert!(String::from_utf8(folded.stdout)
        .unwrap()
        .contains("libm.so.6!cos;native 30000 300\n"));

    let empty = write(dir.path(), "empty.json", &Profile::new());
    let out = Command::new(env!("CARGO_BIN_EXE_ffiprof"))
        .args(["flamegraph", &empty])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no recorded boundary calls"));
}

#[test]
fn merge_profiles() {
    let dir = tempfile::tempdir().unwrap();
    let mut second = profile(10);
    second.meta.duration_ns = 500_000_000;
    second
        .functions
        .push(FunctionRecord::new("/opt/libffifixture.so", "fx_add_int"));
    second.functions[1].calls = 7;
    let a = write(dir.path(), "a.json", &profile(1000));
    let b = write(dir.path(), "b.json", &second);
    let out = dir.path().join("m.json");
    let out_s = out.to_str().unwrap();

    ffiprof(&["merge", &a, &b, "-o", out_s]);
    let m = ffiprof_profile::read_file(&out).unwrap();
    assert_eq!(m.function("cos").unwrap().calls, 1010);
    assert_eq!(m.function("fx_add_int").unwrap().calls, 7);
    assert_eq!(m.function("cos").unwrap().sites[0].calls, 1010);
    assert_eq!(m.meta.duration_ns, 1_000_000_000, "overlapping: the longer");

    ffiprof(&[
        "merge",
        "--consecutive",
        "--lib",
        "libm",
        &a,
        &b,
        "-o",
        out_s,
    ]);
    let m = ffiprof_profile::read_file(&out).unwrap();
    assert_eq!(m.functions.len(), 1);
    assert_eq!(m.function("cos").unwrap().calls, 1010);
    assert_eq!(m.meta.duration_ns, 1_500_000_000, "consecutive: added up");
    assert_eq!(m.meta.lib_filter, vec!["libm".to_string()]);

    ffiprof(&["merge", "-o", out_s]);
    let m = ffiprof_profile::read_file(&out).unwrap();
    assert!(m.functions.is_empty() && m.meta.complete);
}
