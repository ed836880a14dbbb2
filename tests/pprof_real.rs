//! Our pprof export (`ffiprof report --format pprof`) read by Google's real pprof — the format
//! Pyroscope and Parca ingest — built from Debian's packages by scripts/setup-pprof
//! (`FFIPROF_PPROF`, else target/pprof/pprof): `pprof -raw` shows the sample types in order and
//! every sample's values and stack, `pprof -top` each function's figures per sample type.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use ffiprof_profile::{Frame, FunctionRecord, Profile, SiteRecord, Split, StackSample};

mod common;

/// The real pprof, or why it is not there.
fn pprof() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("FFIPROF_PPROF").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!(
                "FFIPROF_PPROF={} is not a file: run scripts/setup-pprof",
                p.display()
            ))
        };
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pprof/pprof");
    if p.is_file() {
        Ok(p)
    } else {
        Err("pprof is not built: run scripts/setup-pprof (scripts/test does)".into())
    }
}

/// A function with one site and one sampled stack, its costs `per_call` × `calls`.
#[allow(clippy::too_many_arguments)]
fn function(
    library: &str,
    name: &str,
    calls: u64,
    per_call: [u64; 7],
    site: (&str, u32, &str),
    stack: u32,
) -> FunctionRecord {
    let [native, m_in, m_out, gil, cons, args, bufs] = per_call.map(|v| v * calls);
    let mut f = FunctionRecord::new(library, name);
    f.calls = calls;
    f.python_calls = calls;
    let time = Split {
        native,
        marshal_in: m_in,
        marshal_out: m_out,
        gil_wait: gil,
        construction: cons,
    };
    f.time = time;
    f.arg_bytes = args;
    f.buffer_bytes = bufs;
    f.native_hist.record_n(per_call[0], calls);
    f.sites.push(SiteRecord {
        file: site.0.into(),
        line: site.1,
        function: site.2.into(),
        calls,
        time,
        arg_bytes: args,
        buffer_bytes: bufs,
        stacks: vec![StackSample { stack, calls, time }],
        ..Default::default()
    });
    f
}

fn sample_profile() -> Profile {
    let mut p = Profile::new();
    p.meta.command = vec!["python3".into(), "app.py".into()];
    p.meta.python = Some("3.12.1".into());
    p.meta.duration_ns = 2_000_000_000;
    p.meta.start_unix_ns = 1_700_000_000_000_000_000;
    p.meta.complete = true;
    let frame = |function: &str, line| Frame {
        file: "app.py".into(),
        function: function.into(),
        line,
    };
    p.frames = vec![
        frame("<module>", 30),
        frame("step", 12),
        frame("<lambda>", 20),
    ];
    p.stacks = vec![vec![0, 1], vec![0, 2]];
    p.functions = vec![
        function(
            "/usr/lib/x86_64-linux-gnu/libm.so.6",
            "cos",
            1000,
            [30, 200, 70, 5, 0, 8, 0],
            ("app.py", 12, "step"),
            0,
        ),
        function(
            "/opt/app/libffifixture.so",
            "fx_sum",
            30,
            [1000, 300, 100, 0, 1400, 16, 800],
            ("app.py", 20, "<lambda>"),
            1,
        ),
    ];
    p
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `pprof -raw`: the sample types line, then each sample's values and its stack by name.
fn raw(pprof: &Path, pb: &Path) -> (String, BTreeMap<Vec<String>, Vec<i64>>) {
    let text = run(Command::new(pprof).arg("-raw").arg(pb));
    let mut lines = text.lines();
    lines
        .find(|l| l.trim() == "Samples:")
        .expect("a Samples: section");
    let types = lines.next().unwrap().trim().to_string();
    let mut rows = Vec::new();
    for l in lines.by_ref() {
        if l.trim() == "Locations" {
            break;
        }
        let (values, locs) = l.split_once(':').expect("values: locations");
        let values: Vec<i64> = values
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect();
        let locs: Vec<u64> = locs
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect();
        rows.push((values, locs));
    }
    // "     3: 0x0 <lambda> app.py:20 s=0()" — the id, the address, [M=mapping], the name.
    let mut names = BTreeMap::new();
    for l in lines.take_while(|l| l.trim() != "Mappings") {
        let mut words = l.split_whitespace();
        let id: u64 = words.next().unwrap().trim_end_matches(':').parse().unwrap();
        let name = words
            .find(|w| !w.starts_with("0x") && !w.starts_with("M="))
            .unwrap()
            .to_string();
        names.insert(id, name);
    }
    let samples = rows
        .into_iter()
        .map(|(values, locs)| (locs.iter().map(|id| names[id].clone()).collect(), values))
        .collect();
    (types, samples)
}

/// `pprof -top -sample_index=INDEX`: flat and cumulative value per node name.
fn top(pprof: &Path, pb: &Path, index: &str, unit: &str) -> BTreeMap<String, (String, String)> {
    let text = run(Command::new(pprof)
        .args(["-top", "-nodefraction=0", "-edgefraction=0"])
        .arg(format!("-sample_index={index}"))
        .arg(format!("-unit={unit}"))
        .arg(pb));
    text.lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .skip(1)
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w[5].to_string(), (w[0].to_string(), w[3].to_string()))
        })
        .collect()
}

fn read_by_real_pprof(pprof: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let prof = dir.path().join("prof.json");
    std::fs::write(&prof, sample_profile().to_json()).unwrap();
    let pb = dir.path().join("prof.pb.gz");
    let out = Command::new(common::ffiprof_bin())
        .args(["report", "--format", "pprof", "-o"])
        .arg(&pb)
        .arg(&prof)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");

    let (types, samples) = raw(pprof, &pb);
    assert_eq!(
        types,
        "calls/count time/nanoseconds[dflt] native/nanoseconds marshal_in/nanoseconds \
         marshal_out/nanoseconds gil_wait/nanoseconds construction/nanoseconds arg_bytes/bytes \
         buffer_bytes/bytes"
    );
    let stack = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let expected = BTreeMap::from([
        (
            stack(&["libm.so.6!cos", "step", "<module>"]),
            // calls, time, native, marshal-in, marshal-out, gil-wait, construction, bytes
            vec![1000, 305_000, 30_000, 200_000, 70_000, 5_000, 0, 8_000, 0],
        ),
        (
            stack(&["libffifixture.so!fx_sum", "<lambda>", "<module>"]),
            vec![30, 84_000, 30_000, 9_000, 3_000, 0, 42_000, 480, 24_000],
        ),
    ]);
    assert_eq!(samples, expected);

    let calls = top(pprof, &pb, "calls", "count");
    assert_eq!(calls["libm.so.6!cos"], ("1000".into(), "1000".into()));
    assert_eq!(calls["libffifixture.so!fx_sum"], ("30".into(), "30".into()));
    assert_eq!(calls["<module>"], ("0".into(), "1030".into()));
    assert_eq!(calls["<lambda>"], ("0".into(), "30".into()));
    let time = top(pprof, &pb, "time", "ns");
    assert_eq!(
        time["libm.so.6!cos"],
        ("305000ns".into(), "305000ns".into())
    );
    assert_eq!(time["step"], ("0".into(), "305000ns".into()));
    assert_eq!(time["<module>"], ("0".into(), "389000ns".into()));
    let buffers = top(pprof, &pb, "buffer_bytes", "B");
    assert_eq!(
        buffers["libffifixture.so!fx_sum"],
        ("24000B".into(), "24000B".into())
    );
}

fn main() {
    let args = libtest_mimic::Arguments::from_args();
    let t = match pprof() {
        Ok(pprof) => common::trial("pprof_reads_our_export".into(), move || {
            read_by_real_pprof(&pprof);
            Ok(())
        }),
        Err(why) => libtest_mimic::Trial::test("pprof_reads_our_export", || Ok(()))
            .with_ignored_flag(true)
            .with_kind(why),
    };
    libtest_mimic::run(&args, vec![t]).exit();
}
