//! `ffiprof run`: start a program with the agent preloaded, pass its input, output and exit
//! status through untouched, then print the summary of what it called.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::SystemTime;

use anyhow::{bail, Context, Result};
use clap::Args;
use ffiprof_analyzer::text;
use ffiprof_protocol::env as agent_env;

#[derive(Args)]
pub struct RunArgs {
    /// Where to write the profile. Processes the program forks or execs that also call native
    /// libraries write beside it, with their pid added (`prof.json` → `prof.<pid>.json`).
    #[arg(short, long, default_value = "ffiprof.json")]
    pub output: PathBuf,
    /// Record only libraries whose path or file name matches (substring, or glob with `*`);
    /// repeatable. Default: every library reached through libffi. With it, calls of builtin
    /// functions of extension modules (C, cffi API mode, Cython, pybind11) that call such a
    /// library, or are one, are recorded too.
    #[arg(long = "lib", value_name = "PATTERN")]
    pub libs: Vec<String>,
    /// Seconds between periodic snapshots of the profile (what survives a SIGKILL).
    #[arg(long, default_value_t = 1.0)]
    pub interval: f64,
    /// Time one call in N, after each call site's first 8 calls, which are always timed (counts
    /// and bytes stay exact).
    #[arg(long, value_name = "N")]
    pub timing_sample: Option<u32>,
    /// Record at the ffi_call layer only: counts, bytes and native times per function, no
    /// marshal split and no call sites — the lowest overhead: a trivial ctypes call runs 1.05 ×
    /// its untraced instructions and takes about 1.1 × its time (1.11 × and about 1.15 × by
    /// default), as scripts/bench-overhead measures.
    #[arg(long)]
    pub ffi_only: bool,
    /// Attribute calls made inside frames matching GLOB to their caller (repeatable): matched
    /// against the frame's file path and against `file:function`, e.g. '*/mylib/ffi.py' or
    /// '*:add'. Generic forwarders (`f(*args, **kwargs)`) are passed through without it.
    #[arg(long = "site-skip", value_name = "GLOB")]
    pub site_skip: Vec<String>,
    /// Functions shown in the summary.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// Print nothing of ffiprof's own (no summary, no list of child profiles); errors still show.
    #[arg(long, short)]
    pub quiet: bool,
    /// Also write the self-contained HTML report (flamegraph, tables, recommendations) here.
    #[arg(long, value_name = "OUT.html")]
    pub html: Option<PathBuf>,
    /// Do not time the changes the advice proposes on the program's interpreter after the run
    /// (up to ~2 s, cached per interpreter); the estimates are then modeled from the profile alone.
    #[arg(long)]
    pub no_calibrate: bool,
    /// The program and its arguments.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    pub command: Vec<OsString>,
}

fn preload_value(agent: &Path) -> OsString {
    let mut v = OsString::from(agent);
    if let Some(existing) = std::env::var_os("LD_PRELOAD").filter(|v| !v.is_empty()) {
        v.push(":");
        v.push(existing);
    }
    v
}

/// Profiles the program's descendants left beside the main profile during this run.
fn child_profiles(output: &Path, since: SystemTime) -> Vec<PathBuf> {
    let (Some(dir), Some(stem)) = (output.parent(), output.file_stem()) else {
        return Vec::new();
    };
    let stem = stem.to_string_lossy();
    let ext = output
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(mid) = name
                .strip_prefix(&format!("{stem}."))
                .and_then(|r| r.strip_suffix(&ext))
            else {
                return false;
            };
            !mid.is_empty()
                && mid.bytes().all(|b| b.is_ascii_digit())
                && e.metadata()
                    .and_then(|m| m.modified())
                    .map(|t| t >= since)
                    .unwrap_or(false)
        })
        .map(|e| e.path())
        .collect();
    found.sort();
    found
}

/// When the command's own process wrote no profile — it ran no Python, as `perf record -- python3
/// ...` or a C program that only links libpython — while Python processes it started did, the
/// first of those (by start time) becomes the output path, so that `-o` holds the program the
/// user ran.
fn adopt_descendant_profile(output: &Path, started: SystemTime, quiet: bool) {
    if output.exists() {
        return;
    }
    let first = child_profiles(output, started)
        .into_iter()
        .filter_map(|path| {
            let p = ffiprof_profile::read_file(&path).ok()?;
            Some((
                p.meta.start_unix_ns,
                p.meta.pid,
                p.meta.command.join(" "),
                path,
            ))
        })
        .min_by_key(|(start, pid, _, _)| (*start, *pid));
    let Some((_, pid, command, path)) = first else {
        return;
    };
    if std::fs::rename(&path, output).is_ok() && !quiet {
        eprintln!(
            "ffiprof: the command's own process ran no Python; {} is the profile of its first \
             Python process, pid {pid} `{command}` (was {})",
            output.display(),
            path.display()
        );
    }
}

pub fn run(args: RunArgs) -> Result<ExitCode> {
    if !(args.interval > 0.0 && args.interval.is_finite()) {
        return Err(crate::bad_input(
            "--interval must be a positive number of seconds",
        ));
    }
    let output = crate::absolute(args.output.clone());
    if let Some(dir) = output.parent() {
        if !dir.is_dir() {
            return Err(crate::bad_input(format!(
                "the directory of the output file {} does not exist",
                output.display()
            )));
        }
    }
    crate::check_site_skip(&args.site_skip)?;
    let agent = crate::agent_file::agent_path()?;
    match std::fs::remove_file(&output) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => bail!("cannot replace the old profile {}: {e}", output.display()),
    }
    let claim = agent_env::claim_file_for(&output);
    let _ = std::fs::remove_file(&claim);
    let started = SystemTime::now();
    let mut cmd = Command::new(&args.command[0]);
    cmd.args(&args.command[1..])
        .env("LD_PRELOAD", preload_value(&agent))
        .env(agent_env::ENV_OUTPUT, &output)
        .env(agent_env::ENV_LIB, args.libs.join(":"))
        .env(agent_env::ENV_INTERVAL, args.interval.to_string())
        .env(agent_env::ENV_SITE_SKIP, args.site_skip.join("\n"))
        .env(agent_env::ENV_CLAIM_FILE, &claim)
        .env_remove(agent_env::ENV_CLAIMED);
    if args.ffi_only {
        cmd.env(agent_env::ENV_PYTHON, "0");
    }
    if let Some(n) = args.timing_sample {
        cmd.env(agent_env::ENV_TIMING, n.max(1).to_string());
    }
    let mut child = cmd.spawn().map_err(|e| {
        let name = args.command[0].to_string_lossy();
        if e.kind() == std::io::ErrorKind::NotFound {
            crate::bad_input(format!("cannot run `{name}`: command not found"))
        } else {
            crate::bad_input(format!("cannot run `{name}`: {e}"))
        }
    })?;
    ffiprof_inject::launch::supervise(child.id());
    let status = child.wait().context("waiting for the traced program")?;
    let _ = std::fs::remove_file(&claim);
    adopt_descendant_profile(&output, started, args.quiet);
    if !args.no_calibrate {
        crate::measure_changes::measure_file(&output, args.quiet);
    }

    summarize_run(&output, started, args.top, args.quiet, args.html.as_deref());
    use std::os::unix::process::ExitStatusExt;
    if let Some(sig) = status.signal() {
        ffiprof_inject::launch::die_by_signal(sig);
    }
    Ok(ExitCode::from(status.code().unwrap_or(1) as u8))
}

fn summarize_run(output: &Path, started: SystemTime, top: usize, quiet: bool, html: Option<&Path>) {
    match ffiprof_profile::read_file(output) {
        Ok(profile) => {
            if !quiet {
                let report = crate::report_cmd::full_report(
                    &profile,
                    Some(top),
                    crate::report_cmd::Sort::Total,
                );
                eprint!("\n{}", text::render(&report));
                eprintln!("\nprofile: {}", output.display());
            }
            if let Some(path) = html {
                let report =
                    crate::report_cmd::full_report(&profile, None, crate::report_cmd::Sort::Total);
                if let Err(e) =
                    crate::export_cmd::write_html(&profile, &report, Default::default(), path)
                {
                    eprintln!("ffiprof: {e:#}");
                }
            }
        }
        Err(ffiprof_profile::ProfileError::Read { .. }) => {
            eprintln!(
                "\nffiprof: the program left no profile at {}. ffiprof records Python processes \
                 (ctypes, cffi); was the command a Python program? FFIPROF_DEBUG=1 shows what the agent did.",
                output.display()
            );
        }
        Err(e) => eprintln!("\nffiprof: {e}"),
    }
    let children = child_profiles(output, started);
    if !quiet && !children.is_empty() {
        eprintln!("child processes left {} more profile(s):", children.len());
        for c in children {
            eprintln!("  {}", c.display());
        }
    }
}
