//! `ffiprof attach` and call sites: `--site-skip` reaches the agent through the attach config,
//! calls made through a generic forwarder are charged to its caller, ctypes' own `cast` is listed
//! apart from the library functions — and a second session with other patterns decides the
//! sites seen before afresh.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use ffiprof_profile::Profile;

/// The target's tagged lines, read from its first line of output.
fn tags(line: &str) -> BTreeMap<String, u32> {
    line.split_whitespace()
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("TAG=LINE");
            (k.to_string(), v.parse().expect("a line number"))
        })
        .collect()
}

/// `ffiprof attach` run where the target runs (its root, for 3.14).
fn attach(py: &Interpreter, pid: u32, out: &Path, extra: &[&str]) -> Profile {
    let o = py
        .cmd_beside(pid, ffiprof_bin())
        .args([
            "attach",
            "-q",
            "--pid",
            &pid.to_string(),
            "--duration",
            "1",
            "-o",
        ])
        .arg(out)
        .args(extra)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    read_profile(out)
}

/// line → (calls, line of the frame the calls went through) of fx_add_int's sites.
fn add_sites(p: &Profile) -> BTreeMap<u32, (u64, Option<u32>)> {
    p.function("fx_add_int")
        .unwrap_or_else(|| panic!("no fx_add_int: {:?}", calls_by_name(p)))
        .sites
        .iter()
        .map(|s| (s.line, (s.calls, s.through.as_ref().map(|t| t.line))))
        .collect()
}

/// Calls of one site per round: sites called once per round differ by at most one call when the
/// window cuts a round.
fn about_equal(a: u64, b: u64) -> bool {
    a.abs_diff(b) <= 1
}

/// On 3.14 the first session comes in by remote exec (the default there), the second by ptrace.
#[test]
fn attach_site_skip_forwarders_and_ctypes_cast() {
    for py in main_interpreters().into_iter().chain([py314()]) {
        if let Some(why) = py.missing() {
            eprintln!("skipped {}: {why}", py.label);
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let stop = dir.path().join("stop");
        let mut child = py
            .cmd(&py.command)
            .arg(script("attach_sites.py"))
            .arg(&stop)
            .arg(FIXTURE)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let lines = stdout_lines(&mut child);
        let mut target = KillOnDrop(child);
        let next = || lines.recv_timeout(Duration::from_secs(30)).unwrap();
        let t = tags(&next());
        assert_eq!(next(), "ready");
        let pid = target.0.id();

        // Session 1: the helper named by --site-skip.
        let p = attach(
            &py,
            pid,
            &dir.path().join("p1.json"),
            &["--site-skip", "*:add"],
        );
        assert_eq!(p.meta.site_skip, ["*:add"]);
        let sites = add_sites(&p);
        assert_eq!(
            sites.keys().copied().collect::<Vec<_>>(),
            [t["SITE-A"], t["CALLER"]],
            "{} {sites:?}",
            py.label
        );
        let (a, a_via) = sites[&t["SITE-A"]];
        let (c, c_via) = sites[&t["CALLER"]];
        assert_eq!((a_via, c_via), (Some(t["FORWARD"]), Some(t["HELPER"])));
        assert!(a > 0 && about_equal(a, c), "{a} {c}");
        // The forwarder is in the sampled stacks, innermost.
        let site_a = &p.function("fx_add_int").unwrap().sites[0];
        assert_eq!(site_a.line, t["SITE-A"]);
        assert!(!site_a.stacks.is_empty());
        for s in &site_a.stacks {
            let stack = &p.stacks[s.stack as usize];
            let lines: Vec<u32> = stack.iter().map(|&i| p.frames[i as usize].line).collect();
            assert!(lines.ends_with(&[t["SITE-A"], t["FORWARD"]]), "{lines:?}");
        }
        // ctypes.cast: ctypes' cost at the user's line, not a function.
        assert_eq!(calls_by_name(&p).keys().collect::<Vec<_>>(), ["fx_add_int"]);
        assert_eq!(p.ctypes_internal.len(), 1, "{:?}", p.ctypes_internal);
        let cast = &p.ctypes_internal[0];
        assert_eq!(cast.function, "cast");
        assert_eq!(cast.sites.len(), 1);
        assert_eq!(cast.sites[0].line, t["CAST"]);
        assert!(about_equal(cast.calls, a), "{} {a}", cast.calls);

        // Session 2, no pattern: the helper's own line is the site again.
        let second: &[&str] = if py.root.is_some() {
            &["--method", "ptrace"]
        } else {
            &[]
        };
        let p = attach(&py, pid, &dir.path().join("p2.json"), second);
        assert!(p.meta.site_skip.is_empty());
        let sites = add_sites(&p);
        assert_eq!(
            sites.keys().copied().collect::<Vec<_>>(),
            [t["HELPER"], t["SITE-A"]],
            "{} {sites:?}",
            py.label
        );
        assert_eq!(sites[&t["HELPER"]].1, None);

        std::fs::write(&stop, b"").unwrap();
        assert!(next().starts_with("done "));
        assert!(target.0.wait().unwrap().success());
    }
}

#[test]
fn a_bad_site_skip_pattern_is_refused_with_its_remedy() {
    for sub in [
        vec!["run", "--site-skip", "a[", "--", "true"],
        vec!["attach", "--pid", "1", "--site-skip", "a["],
    ] {
        let o = Command::new(ffiprof_bin()).args(&sub).output().unwrap();
        assert_eq!(o.status.code(), Some(2), "{sub:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("not a valid glob") && err.contains("e.g."),
            "{err}"
        );
    }
}
