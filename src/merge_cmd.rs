//! `ffiprof merge`: several profiles read as one — a parent and the `NAME.PID.json` profiles of
//! its children, or the consecutive windows the Python API (`ffiprof.profile`) records when
//! blocks nest (each nesting boundary ends one agent session and starts the next).

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use ffiprof_protocol::env::LibFilter;

#[derive(Args)]
pub struct MergeArgs {
    /// The profiles to merge; the first one's identity (pid, command) is kept. With none, an
    /// empty profile is written (a window in which nothing was called).
    #[arg(num_args = 0..)]
    pub files: Vec<PathBuf>,
    /// Where to write the merged profile (read it with `ffiprof report`).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Keep only the functions of libraries matching the pattern, as `run --lib` records them
    /// (repeatable; ctypes' own calls are kept, as `run --lib` keeps them).
    #[arg(long = "lib", value_name = "PATTERN")]
    pub libs: Vec<String>,
    /// The profiles are consecutive windows of one process: their durations add up (instead of
    /// overlapping, as a parent's and its children's do) and their threads are not counted twice.
    #[arg(long)]
    pub consecutive: bool,
}

pub fn merge(args: MergeArgs) -> Result<()> {
    let filter = LibFilter::new(&args.libs);
    let mut merged: Option<ffiprof_profile::Profile> = None;
    let (mut duration, mut threads) = (0u64, 0u32);
    for file in &args.files {
        let mut profile = crate::report_cmd::load(file)?;
        profile.functions.retain(|f| filter.includes(&f.library));
        duration += profile.meta.duration_ns;
        threads = threads.max(profile.meta.threads);
        match merged.as_mut() {
            None => merged = Some(profile),
            Some(into) => ffiprof_profile::merge(into, &profile),
        }
    }
    let mut merged = merged.unwrap_or_else(|| {
        let mut empty = ffiprof_profile::Profile::new();
        empty.meta.complete = true;
        empty
    });
    if args.consecutive {
        merged.meta.duration_ns = duration;
        merged.meta.threads = threads;
    }
    if !args.libs.is_empty() {
        merged.meta.lib_filter = args.libs.clone();
    }
    ffiprof_profile::write_atomic(&merged, &args.output)
        .with_context(|| format!("writing the merged profile to {}", args.output.display()))
}
