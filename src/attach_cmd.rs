//! `ffiprof attach`: profile an already-running Python process for a while (or until Ctrl-C),
//! detach, and leave it running as if never touched. The injection is `ffiprof_inject`;
//! the agent reports through a private session directory (see `ffiprof_protocol::attach::AgentStatus`).

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use clap::Args;
use ffiprof_inject::{
    self as inject, AgentStatus, AttachConfig, InjectError, InjectOptions, Method, Payload,
};

#[derive(Args)]
pub struct AttachArgs {
    /// The Python process to profile.
    #[arg(long)]
    pub pid: i32,
    /// Record for this many seconds, then detach (default: until Ctrl-C).
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,
    /// Where to write the profile.
    #[arg(short, long, default_value = "ffiprof.json")]
    pub output: PathBuf,
    /// Also write the HTML report here.
    #[arg(long, value_name = "OUT")]
    pub html: Option<PathBuf>,
    /// How to get in: PEP 768 remote exec (Python 3.14+), ptrace, or auto (remote exec where the
    /// target has it).
    #[arg(long, default_value = "auto", value_parser = parse_method)]
    pub method: Method,
    /// Record only libraries whose path or file name matches (substring, or glob); repeatable.
    #[arg(long = "lib", value_name = "PATTERN")]
    pub libs: Vec<String>,
    /// Time one call in N, after each call site's first 8 calls, which are always timed (counts
    /// and bytes stay exact). Default: as `ffiprof run`.
    #[arg(long, value_name = "N")]
    pub timing_sample: Option<u32>,
    /// Attribute calls made inside frames matching GLOB to their caller (repeatable): as
    /// `ffiprof run --site-skip`.
    #[arg(long = "site-skip", value_name = "GLOB")]
    pub site_skip: Vec<String>,
    /// Functions shown in the summary.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// Print no progress and no summary.
    #[arg(long, short)]
    pub quiet: bool,
}

fn parse_method(s: &str) -> Result<Method, String> {
    s.parse()
}

/// Wraps an injection error: the message already carries its remedy; wrong input exits with 2.
fn inject_failure(e: InjectError) -> anyhow::Error {
    match e {
        InjectError::NoSuchProcess { .. }
        | InjectError::NotPython { .. }
        | InjectError::PyPy { .. }
        | InjectError::UnsupportedVersion { .. } => crate::bad_input(e.to_string()),
        other => anyhow::Error::new(other),
    }
}

fn unix_ns(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

pub fn attach(args: AttachArgs) -> Result<ExitCode> {
    let started_wall = SystemTime::now();
    let started = Instant::now();
    let duration = match args.duration {
        Some(d) if !(d > 0.0 && d.is_finite()) => {
            return Err(crate::bad_input(
                "--duration must be a positive number of seconds",
            ))
        }
        d => d.map(Duration::from_secs_f64),
    };
    let output = crate::absolute(args.output.clone());
    if !output.parent().is_some_and(Path::is_dir) {
        return Err(crate::bad_input(format!(
            "the directory of the output file {} does not exist",
            output.display()
        )));
    }
    if args.libs.iter().any(|l| l.contains('\n')) {
        return Err(crate::bad_input("--lib patterns cannot contain newlines"));
    }
    crate::check_site_skip(&args.site_skip)?;
    let agent = crate::agent_file::agent_path()?;
    let interrupted = inject::catch_interrupts();
    let session = inject::session_dir(args.pid).map_err(inject_failure)?;
    let config = AttachConfig {
        session: session.target_path().to_owned(),
        duration,
        cli_pid: Some(std::process::id()),
        libs: args.libs.clone(),
        interval: Duration::from_secs(1),
        timing_sample_every: args.timing_sample.map_or(0, |n| n.max(1)),
        site_skip: args.site_skip.clone(),
    };
    let mut opts = InjectOptions {
        method: args.method,
        ..InjectOptions::new(Payload::Library {
            path: agent.clone(),
            function: "ffiprof_attach_start".into(),
            argument: config.render(),
        })
    };
    let scheduled = match inject::schedule(args.pid, &opts) {
        Err(InjectError::AgentNotReadable { .. }) => {
            // The cached agent lives in our private cache: hand the target its own copy in the
            // session directory, which belongs to the target's user.
            let copy = session.local_path().join("libffiprof_agent.so");
            std::fs::copy(&agent, &copy)
                .with_context(|| format!("copying the agent to {}", copy.display()))?;
            let owner = std::fs::metadata(session.local_path())?;
            use std::os::unix::fs::MetadataExt;
            std::os::unix::fs::chown(&copy, Some(owner.uid()), Some(owner.gid()))?;
            if let Payload::Library { path, .. } = &mut opts.payload {
                *path = session.target_path().join("libffiprof_agent.so");
            }
            inject::schedule(args.pid, &opts)
        }
        other => other,
    }
    .map_err(inject_failure)?;
    let r = scheduled.report();
    if !args.quiet {
        eprintln!(
            "ffiprof: attaching to PID {} (Python {}, {}); waiting for its main thread to run Python...",
            args.pid, r.python_version, r.method
        );
    }
    let injected = match scheduled.wait(Duration::from_secs(60)) {
        Err(InjectError::PayloadFailed { .. })
            if AgentStatus::read(session.local_path()).is_some_and(|s| s.state == "error") =>
        {
            let st = AgentStatus::read(session.local_path()).unwrap_or_default();
            bail!(
                "the agent could not start in PID {}: {}",
                args.pid,
                st.detail
            );
        }
        other => other.map_err(inject_failure)?,
    };
    let final_status = follow(
        args.pid,
        session.local_path(),
        duration,
        interrupted,
        args.quiet,
    )?;
    let exited = inject_gone(args.pid);

    // The agent names the profile as the target sees it; we read it through our view of the session.
    let written = latest_profile(session.local_path(), &final_status);
    let Some(written) = written else {
        eprintln!(
            "ffiprof: no boundary call was recorded in PID {} while attached; no profile written",
            args.pid
        );
        return Ok(ExitCode::SUCCESS);
    };
    std::fs::copy(&written, &output)
        .with_context(|| format!("writing the profile to {}", output.display()))?;
    drop(session);

    if !args.quiet {
        let profile = crate::report_cmd::load(&output)?;
        let options = crate::report_cmd::options(Some(args.top), crate::report_cmd::Sort::Total);
        eprint!(
            "\n{}",
            ffiprof_analyzer::text::render(&ffiprof_analyzer::summarize(&profile, &options))
        );
        if let Some(html) = &args.html {
            write_html(&profile, &options, html)?;
        }
        eprintln!("\nprofile: {}", output.display());
        if final_status.first_call_unix_ns > 0 {
            let latency = final_status
                .first_call_unix_ns
                .saturating_sub(unix_ns(started_wall));
            eprintln!(
                "attach: code queued in {:?}, agent running after {:?}, first call recorded {:.1} ms after the command started; {} hook(s) restored at detach",
                injected.scheduled_after,
                started.elapsed().min(injected.scheduled_after + injected.outcome.as_ref().map(|o| o.ran_after).unwrap_or_default()),
                latency as f64 / 1e6,
                final_status.restored
            );
        }
    } else if let Some(html) = &args.html {
        let profile = crate::report_cmd::load(&output)?;
        write_html(
            &profile,
            &crate::report_cmd::options(Some(args.top), crate::report_cmd::Sort::Total),
            html,
        )?;
    }
    if exited {
        eprintln!(
            "ffiprof: PID {} exited while being profiled; the profile holds what was collected up to its last snapshot",
            args.pid
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn write_html(
    profile: &ffiprof_profile::Profile,
    options: &ffiprof_analyzer::SummaryOptions,
    out: &Path,
) -> Result<()> {
    let report = ffiprof_analyzer::analyze(
        profile,
        options,
        &ffiprof_analyzer::AdviceOptions::default(),
    );
    let page = ffiprof_flamegraph::html::render(
        profile,
        &report,
        &ffiprof_flamegraph::HtmlOptions::default(),
    );
    std::fs::write(out, page)
        .with_context(|| format!("writing the HTML report to {}", out.display()))
}

fn inject_gone(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
        })
        .unwrap_or(true)
}

/// Shows progress until the agent has detached (asking it to on Ctrl-C), or the target is gone.
fn follow(
    pid: i32,
    session: &Path,
    duration: Option<Duration>,
    interrupted: &std::sync::atomic::AtomicBool,
    quiet: bool,
) -> Result<AgentStatus> {
    let tty = std::io::stderr().is_terminal() && !quiet;
    let began = Instant::now();
    let mut asked_to_stop: Option<Instant> = None;
    let mut last = AgentStatus::default();
    let mut last_line = Instant::now();
    loop {
        if let Some(st) = AgentStatus::read(session) {
            last = st;
        }
        match last.state.as_str() {
            "detached" => break,
            "error" => bail!("the agent failed in PID {pid}: {}", last.detail),
            _ => {}
        }
        if inject_gone(pid) {
            break;
        }
        let over = duration.is_some_and(|d| began.elapsed() >= d);
        if asked_to_stop.is_none() && (interrupted.load(Ordering::Acquire) || over) {
            let _ = std::fs::write(session.join("stop"), b"");
            asked_to_stop = Some(Instant::now());
        }
        if asked_to_stop.is_some_and(|t| t.elapsed() > Duration::from_secs(10)) {
            if last.state == "written" {
                // The profile is complete; only the type slots wait, for the GIL.
                if tty {
                    eprintln!();
                }
                eprintln!(
                    "ffiprof: PID {pid} has held the GIL for 10 s, so the agent could not yet put back \
                     the Python type slots it replaced; it will when the GIL is released (until then \
                     ctypes calls pass through them untraced). Every other hook is restored."
                );
                return Ok(last);
            }
            bail!(
                "the agent in PID {pid} did not confirm its detach within 10 s (last state: {})",
                last.state
            );
        }
        if tty {
            eprint!(
                "\rffiprof: recording PID {pid}: {:.1} s, {} calls   ",
                last.elapsed_ms as f64 / 1000.0,
                last.calls
            );
        } else if !quiet && last_line.elapsed() >= Duration::from_secs(5) {
            eprintln!(
                "ffiprof: recording PID {pid}: {:.1} s, {} calls",
                last.elapsed_ms as f64 / 1000.0,
                last.calls
            );
            last_line = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if tty {
        eprintln!();
    }
    Ok(last)
}

/// The profile the agent wrote at detach, or its last periodic snapshot if the target died.
fn latest_profile(session: &Path, status: &AgentStatus) -> Option<PathBuf> {
    if matches!(status.state.as_str(), "detached" | "written") && !status.detail.is_empty() {
        let name = Path::new(&status.detail).file_name()?;
        return Some(session.join(name));
    }
    std::fs::read_dir(session)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "json")
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("profile"))
        })
        .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
}
