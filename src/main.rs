//! `ffiprof`: profile the boundary between a Python program and the native libraries it calls
//! through ctypes and cffi. This file is only the command line; each command lives in its own
//! module and the work in the library crates (profile, analyzer, flamegraph, protocol, inject); the agent is a separate
//! cdylib, embedded as bytes by `build.rs`, never linked.

#![forbid(unsafe_code)]

mod agent_file;
mod attach_cmd;
mod diff_cmd;
mod export_cmd;
mod flamegraph_cmd;
mod merge_cmd;
mod report_cmd;
mod run_cmd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "ffiprof",
    version,
    about = "Profile the calls a Python program makes into native libraries (ctypes, cffi)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a program with the agent preloaded and print a summary when it ends.
    Run(run_cmd::RunArgs),
    /// Read a profile and print it as a table or JSON.
    Report(report_cmd::ReportArgs),
    /// Profile a running Python process for a while (or until Ctrl-C), then detach.
    Attach(attach_cmd::AttachArgs),
    /// Draw a profile's flamegraph as an SVG (inferno; search and zoom in a browser).
    Flamegraph(flamegraph_cmd::FlamegraphArgs),
    /// Compare two profiles: per-function deltas and a differential flamegraph.
    Diff(diff_cmd::DiffArgs),
    /// Merge profiles into one: a parent and its children's `NAME.PID.json`, or consecutive windows.
    Merge(merge_cmd::MergeArgs),
    /// Print the path of the agent library, unpacked from this binary into the private cache
    /// (what the Python package's in-process API loads with ctypes).
    #[command(hide = true)]
    AgentPath,
}

/// An error that already explains itself, with the exit status to leave with.
#[derive(Debug)]
pub struct Failure {
    pub message: String,
    pub code: u8,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// Bad input from the user (a missing or unreadable profile, ...): exit status 2.
pub fn bad_input(message: impl Into<String>) -> anyhow::Error {
    Failure {
        message: message.into(),
        code: 2,
    }
    .into()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run_cmd::run(args),
        Command::Report(args) => report_cmd::report(args).map(|_| ExitCode::SUCCESS),
        Command::Attach(args) => attach_cmd::attach(args),
        Command::Flamegraph(args) => flamegraph_cmd::flamegraph(args).map(|_| ExitCode::SUCCESS),
        Command::Diff(args) => diff_cmd::diff(args).map(|_| ExitCode::SUCCESS),
        Command::Merge(args) => merge_cmd::merge(args).map(|_| ExitCode::SUCCESS),
        Command::AgentPath => agent_file::agent_path().map(|p| {
            println!("{}", p.display());
            ExitCode::SUCCESS
        }),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            let code = e.downcast_ref::<Failure>().map(|f| f.code).unwrap_or(1);
            eprintln!("ffiprof: {e:#}");
            ExitCode::from(code)
        }
    }
}

/// Makes `path` absolute against the current directory (the traced program may chdir).
pub fn absolute(path: PathBuf) -> PathBuf {
    if path.is_absolute() {
        path
    } else {
        std::env::current_dir()
            .map(|d| d.join(&path))
            .unwrap_or(path)
    }
}

/// Refuses a `--site-skip` pattern the agent could not use, with the remedy (exit status 2).
pub fn check_site_skip(patterns: &[String]) -> anyhow::Result<()> {
    match patterns
        .iter()
        .find_map(|p| ffiprof_protocol::env::site_skip_error(p))
    {
        Some(e) => Err(bad_input(e)),
        None => Ok(()),
    }
}
