//! After `run` and `attach`: time the changes the advice proposes on the profiled program's own
//! interpreter, and store the figures in the profile (`measured_changes`), so that the estimates
//! of any later report — made here or elsewhere — rest on what the change saved, not only on a
//! formula (a construction costs more in a loop than a probe around it sees).
//!
//! What to time comes from the analyzer (`ffiprof_analyzer::measure::plan`: the shapes the
//! profile's advice can use, most valuable first); how, from `measure_changes.py`, run with the
//! profile's `meta.executable` (`-I -S`: no site packages, no PYTHON* environment) and the agent
//! library, whose exported `ffiprof_nop` every timed loop calls. Figures are cached per
//! interpreter (its path, size and modification time) and shape, in the user's cache directory
//! beside the unpacked agent, so a program profiled again is not timed again. The step is
//! bounded at ~2 s; `--no-calibrate` skips it. Nothing here can fail the command: a step that
//! does not work leaves the profile as it was, with a note when the profile could say why.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ffiprof_analyzer::measure::{self, Request};
use ffiprof_profile::{ChangeMeasurement, MeasuredChanges, Profile};
use serde::Deserialize;

/// The timing script, run by the profiled program's interpreter.
const SCRIPT: &str = include_str!("measure_changes.py");
/// Time the script may spend timing, all shapes together (its start-up comes on top).
const BUDGET: Duration = Duration::from_millis(1700);
/// After this long the interpreter is killed and nothing is measured.
const HARD_LIMIT: Duration = Duration::from_secs(10);

#[derive(Deserialize)]
struct ScriptOutput {
    python: String,
    measurements: Vec<ChangeMeasurement>,
    #[serde(default)]
    skipped: Vec<Request>,
    #[serde(default)]
    errors: Vec<String>,
}

fn key(r: &Request) -> String {
    format!("{} {}", r.change, r.shape)
}

/// Where the figures of one interpreter are cached: a file named after this ffiprof's version, its
/// timing script, and the interpreter's path, size and modification time (a reinstalled
/// interpreter, or a changed way of timing, is timed again).
fn cache_file(executable: &Path) -> Option<PathBuf> {
    let meta = std::fs::metadata(executable).ok()?;
    let id = format!(
        "{}\0{:016x}\0{}\0{}\0{}",
        env!("CARGO_PKG_VERSION"),
        crate::agent_file::fnv1a(SCRIPT.as_bytes()),
        executable.display(),
        meta.len(),
        meta.mtime()
    );
    Some(
        crate::agent_file::cache_root()
            .join("measured")
            .join(format!(
                "{:016x}.json",
                crate::agent_file::fnv1a(id.as_bytes())
            )),
    )
}

fn read_cache(path: &Path) -> BTreeMap<String, ChangeMeasurement> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn write_cache(path: &Path, cache: &BTreeMap<String, ChangeMeasurement>) -> Result<()> {
    let dir = path.parent().context("cache path has a directory")?;
    crate::agent_file::private_dir(dir)?;
    let tmp = dir.join(format!(".{}.tmp", std::process::id()));
    std::fs::write(&tmp, serde_json::to_vec_pretty(cache)?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Runs the timing script for `requests` on `python`; what it measured, and why others are
/// missing.
fn run_script(python: &Path, agent: &Path, requests: &[Request]) -> Result<ScriptOutput> {
    let spec = serde_json::json!({
        "agent": agent,
        "budget_s": BUDGET.as_secs_f64(),
        "requests": requests,
    });
    let mut cmd = Command::new(python);
    cmd.args(["-I", "-S", "-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("LD_PRELOAD");
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("FFIPROF_") {
            cmd.env_remove(k);
        }
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot run {}", python.display()))?;
    child
        .stdin
        .take()
        .context("the interpreter's stdin")?
        .write_all(spec.to_string().as_bytes())?;
    let started = Instant::now();
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if started.elapsed() > HARD_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{} did not finish within {:?}",
                python.display(),
                HARD_LIMIT
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{} failed: {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or("");
    serde_json::from_str(line).context("reading the timing script's output")
}

/// Times what `profile`'s advice can use (from the cache where it can) and records it in the
/// profile. Returns whether the profile changed, and how many shapes were timed now.
pub fn measure_into(profile: &mut Profile, agent: &Path) -> Result<(bool, usize)> {
    if profile.meta.python.is_none() || profile.meta.executable.is_empty() {
        return Ok((false, 0));
    }
    let plan = measure::plan(profile, &ffiprof_analyzer::AdviceOptions::default());
    if plan.is_empty() {
        return Ok((false, 0));
    }
    let started = Instant::now();
    let python = PathBuf::from(&profile.meta.executable);
    let cache_path = cache_file(&python);
    let mut cache = cache_path.as_deref().map(read_cache).unwrap_or_default();
    let missing: Vec<Request> = plan
        .iter()
        .filter(|r| !cache.contains_key(&key(r)))
        .cloned()
        .collect();
    let mut notes = Vec::new();
    let mut python_version = profile.meta.python.clone().unwrap_or_default();
    let mut fresh = 0;
    // This run's figures; only the conclusive ones are cached (the others are timed again).
    let mut now: BTreeMap<String, ChangeMeasurement> = BTreeMap::new();
    if !missing.is_empty() {
        match run_script(&python, agent, &missing) {
            Ok(out) => {
                python_version = out.python;
                fresh = out.measurements.len();
                for m in out.measurements {
                    let k = format!("{} {}", m.change, m.shape);
                    if measure::conclusive(&m) {
                        cache.insert(k.clone(), m.clone());
                    }
                    now.insert(k, m);
                }
                if !out.skipped.is_empty() {
                    notes.push(format!(
                        "{} shape(s) not timed within the step's budget (timed on a later run): {}",
                        out.skipped.len(),
                        out.skipped.iter().map(key).collect::<Vec<_>>().join(", ")
                    ));
                }
                notes.extend(out.errors);
                if fresh > 0 {
                    if let Some(p) = &cache_path {
                        if let Err(e) = write_cache(p, &cache) {
                            notes.push(format!("figures not cached: {e:#}"));
                        }
                    }
                }
            }
            Err(e) => notes.push(format!("{e:#}")),
        }
    }
    let measurements: Vec<ChangeMeasurement> = plan
        .iter()
        .filter_map(|r| match now.get(&key(r)) {
            Some(m) => Some(m.clone()),
            None => cache.get(&key(r)).map(|m| ChangeMeasurement {
                cached: true,
                ..m.clone()
            }),
        })
        .collect();
    if measurements.is_empty() && notes.is_empty() {
        return Ok((false, 0));
    }
    profile.measured_changes = Some(MeasuredChanges {
        executable: profile.meta.executable.clone(),
        python: python_version,
        elapsed_ms: started.elapsed().as_millis() as u64,
        note: (!notes.is_empty()).then(|| notes.join("; ")),
        measurements,
    });
    Ok((true, fresh))
}

/// The step as `run` and `attach` take it: on the profile at `path`, rewritten in place; a line
/// on stderr unless `quiet` (and always when it went wrong, with the remedy).
pub fn measure_file(path: &Path, quiet: bool) {
    let Ok(mut profile) = ffiprof_profile::read_file(path) else {
        return; // no profile: the command says so itself
    };
    let result = crate::agent_file::agent_path()
        .and_then(|agent| measure_into(&mut profile, &agent))
        .and_then(|(changed, fresh)| {
            if changed {
                ffiprof_profile::write_atomic(&profile, path)?;
            }
            Ok(fresh)
        });
    match result {
        Ok(fresh) if fresh > 0 && !quiet => {
            let mc = profile.measured_changes.as_ref();
            eprintln!(
                "ffiprof: timed {fresh} change(s) the advice proposes on {} in {:.1} s (cached for later runs; \
                 --no-calibrate skips this)",
                profile.meta.executable,
                mc.map_or(0, |m| m.elapsed_ms) as f64 / 1000.0
            );
        }
        Ok(_) => {}
        Err(e) => eprintln!(
            "ffiprof: could not time the advice's changes on {} ({e:#}); the estimates stay modeled. \
             --no-calibrate skips this step.",
            profile.meta.executable
        ),
    }
}
