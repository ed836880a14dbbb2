//! Golden tests: the folded output, the text report and the diff text of the demo profile must match
//! the files under tests/golden/ byte for byte. After an intended change, rewrite them with
//! `FFIPROF_BLESS=1 cargo test -p ffiprof-flamegraph --test golden` and review the diff in git.

mod common;

use std::path::PathBuf;

use ffiprof_flamegraph::{diff, folded};

fn golden_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("golden")
        .join(name)
}

fn blessing() -> bool {
    std::env::var("FFIPROF_BLESS").is_ok_and(|v| v == "1")
}

/// Compares `actual` with the golden file, or rewrites it when FFIPROF_BLESS=1.
fn check(name: &str, actual: &str) {
    let path = golden_path(name);
    if blessing() {
        std::fs::write(&path, actual)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        return;
    }
    let how = "if the change is intended, rewrite the golden files with \
               `FFIPROF_BLESS=1 cargo test -p ffiprof-flamegraph --test golden` and review the diff in git";
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("golden file {} is missing ({e}); {how}", path.display()));
    if expected != actual {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(e, a)| e != a)
            .unwrap_or_else(|| expected.lines().count().min(actual.lines().count()));
        panic!(
            "{} differs from the golden file, first at line {}:\n  expected: {:?}\n  actual:   {:?}\n\
             --- actual output ---\n{actual}\n--- end ---\n{how}",
            path.display(),
            first + 1,
            expected.lines().nth(first).unwrap_or("<end of file>"),
            actual.lines().nth(first).unwrap_or("<end of file>"),
        );
    }
}

#[test]
fn folded_by_time() {
    let p = common::demo_profile();
    let text = folded::fold(
        &p,
        &folded::FoldOptions {
            weight: folded::Weight::Time,
        },
    )
    .to_text();
    check("demo.time.folded", &text);
}

#[test]
fn folded_by_calls() {
    let p = common::demo_profile();
    let text = folded::fold(
        &p,
        &folded::FoldOptions {
            weight: folded::Weight::Calls,
        },
    )
    .to_text();
    check("demo.calls.folded", &text);
}

#[test]
fn folded_by_bytes() {
    let p = common::demo_profile();
    let text = folded::fold(
        &p,
        &folded::FoldOptions {
            weight: folded::Weight::Bytes,
        },
    )
    .to_text();
    check("demo.bytes.folded", &text);
}

#[test]
fn text_report() {
    let p = common::demo_profile();
    let report = ffiprof_analyzer::summarize(&p, &Default::default());
    check("demo.report.txt", &ffiprof_analyzer::text::render(&report));
}

/// The "after" of the demo: the user batched the cos calls and reused the fill buffer.
pub fn improved(mut p: ffiprof_profile::Profile) -> ffiprof_profile::Profile {
    let cos = &mut p.functions[0];
    cos.calls = 10;
    cos.time.marshal_in = 4_000;
    cos.time.marshal_out = 1_000;
    cos.sites[0].calls = 10;
    cos.sites[0].time.marshal_in = 4_000;
    cos.sites[0].time.marshal_out = 1_000;
    let fill = &mut p.functions[1];
    fill.time.construction = 200_000;
    fill.sites[0].time.construction = 200_000;
    fill.sites[0].stacks[0].time.construction = 200_000;
    p
}

#[test]
fn diff_text() {
    let before = common::demo_profile();
    let after = improved(before.clone());
    let d = diff::compare(&before, &after);
    check("demo.diff.txt", &diff::render_text(&d));
    check(
        "demo.diff.folded",
        &diff::differential_folded(&before, &after, folded::Weight::Time)
            .expect("differential folding"),
    );
}

#[test]
fn bless_switch_is_documented_in_the_failure() {
    if blessing() {
        return;
    }
    let err = std::panic::catch_unwind(|| check("demo.time.folded", "not what is expected\n"))
        .expect_err("must fail");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("FFIPROF_BLESS=1"), "{msg}");
}
