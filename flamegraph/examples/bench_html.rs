//! Renders the HTML report of a synthetic profile with many distinct stacks and prints how long it
//! took and how big the page is (run through `scripts/bench-html`). Exits 1 when over the targets
//! (2 s, 10 MB), so CI can run it as a check.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::Instant;

fn main() {
    let stacks: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("the argument is a number of stacks"))
        .unwrap_or(100_000);
    let t = Instant::now();
    let profile = common::large_profile(stacks);
    let made = t.elapsed();

    // The path `ffiprof report FILE --html` takes: read the file, analyze, render.
    let dir = common::artifact_dir();
    let profile_path = dir.join("bench-profile.json");
    std::fs::write(&profile_path, profile.to_json()).expect("write the profile");
    let profile_bytes = std::fs::metadata(&profile_path)
        .map(|m| m.len())
        .unwrap_or(0);

    let t = Instant::now();
    let profile = ffiprof_profile::read_file(&profile_path).expect("read the profile back");
    let read = t.elapsed();
    let t = Instant::now();
    let report = ffiprof_analyzer::summarize(&profile, &Default::default());
    let analyzed = t.elapsed();
    let t = Instant::now();
    let html = ffiprof_flamegraph::html::render(&profile, &report, &Default::default());
    let rendered = t.elapsed();
    let out = dir.join("bench.html");
    std::fs::write(&out, &html).expect("write the report");

    let total = read + analyzed + rendered;
    let mb = html.len() as f64 / 1e6;
    println!("profile: {stacks} distinct stacks, {} functions, {} frames, {:.1} MB JSON (built in {:.2?})",
        profile.functions.len(), profile.frames.len(), profile_bytes as f64 / 1e6, made);
    println!(
        "read {:.3} s · analyze {:.3} s · render HTML {:.3} s · total {:.3} s",
        read.as_secs_f64(),
        analyzed.as_secs_f64(),
        rendered.as_secs_f64(),
        total.as_secs_f64()
    );
    println!(
        "html: {:.2} MB ({} bytes) → {}",
        mb,
        html.len(),
        out.display()
    );
    let ok_time = rendered.as_secs_f64() <= 2.0;
    let ok_size = html.len() <= 10_000_000;
    println!(
        "targets: render ≤ 2 s {} · size ≤ 10 MB {}",
        if ok_time { "ok" } else { "MISSED" },
        if ok_size { "ok" } else { "MISSED" }
    );
    if !(ok_time && ok_size) {
        std::process::exit(1);
    }
}
