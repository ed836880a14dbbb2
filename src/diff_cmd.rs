//! `ffiprof diff BEFORE AFTER`: what changed between two profiles, per function (calls, bytes, each
//! part of the split), and as inferno's differential flamegraph with `--html`.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use ffiprof_flamegraph::diff;

use crate::export_cmd::{emit, WeightArg};

#[derive(Clone, Copy, ValueEnum)]
pub enum DiffFormat {
    /// Per-function deltas as a table.
    Text,
    /// Differential folded stacks (`stack before after`), for inferno-flamegraph or FlameGraph's difffolded.
    Folded,
}

#[derive(Args)]
pub struct DiffArgs {
    /// The profile before the change.
    pub before: PathBuf,
    /// The profile after the change.
    pub after: PathBuf,
    /// Also write a self-contained HTML page with the deltas and a differential flamegraph.
    #[arg(long, value_name = "OUT.html")]
    pub html: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = DiffFormat::Text)]
    pub format: DiffFormat,
    /// What widths stand for in `--format folded`.
    #[arg(long, value_enum, default_value_t = WeightArg::Time)]
    pub weight: WeightArg,
    /// Where to write the text or folded output (stdout when omitted).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
}

fn file_name(p: &std::path::Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

pub fn diff(args: DiffArgs) -> Result<()> {
    let before = crate::report_cmd::load(&args.before)?;
    let after = crate::report_cmd::load(&args.after)?;
    let out = match args.format {
        DiffFormat::Text => diff::render_text(&diff::compare(&before, &after)),
        DiffFormat::Folded => diff::differential_folded(&before, &after, args.weight.into())?,
    };
    emit(out.as_bytes(), args.output.as_deref(), "diff")?;
    if let Some(html) = &args.html {
        let opts = diff::DiffHtmlOptions {
            before_name: file_name(&args.before),
            after_name: file_name(&args.after),
            ..Default::default()
        };
        emit(
            diff::render_html(&before, &after, &opts).as_bytes(),
            Some(html),
            "HTML diff",
        )?;
    }
    Ok(())
}
