//! The parts of `ffiprof report` that write something other than the terminal table or JSON: the
//! self-contained HTML page (`--html`) and the exports (`--format folded|speedscope|pprof`).

use std::io::{IsTerminal, Write};
use std::path::Path;

use anyhow::{Context, Result};
use clap::ValueEnum;
use ffiprof_analyzer::Report;
use ffiprof_flamegraph::{folded, html, pprof, speedscope, Weight};
use ffiprof_profile::Profile;

/// `--weight`: what a flamegraph's or folded line's width stands for.
#[derive(Clone, Copy, Debug, Default, ValueEnum)]
pub enum WeightArg {
    /// Boundary time (ns), split into marshal-in / native / marshal-out / gil-wait / construction.
    #[default]
    Time,
    /// Number of boundary calls.
    Calls,
    /// Bytes that crossed (argument values and buffers behind pointers).
    Bytes,
}

impl From<WeightArg> for Weight {
    fn from(w: WeightArg) -> Self {
        match w {
            WeightArg::Time => Weight::Time,
            WeightArg::Calls => Weight::Calls,
            WeightArg::Bytes => Weight::Bytes,
        }
    }
}

/// The export formats `report --format` accepts besides text and JSON.
#[derive(Clone, Copy, Debug)]
pub enum Export {
    Folded,
    Speedscope,
    Pprof,
}

/// Writes `bytes` to `out`, or to stdout when `out` is `None`.
pub fn emit(bytes: &[u8], out: Option<&Path>, what: &str) -> Result<()> {
    match out {
        Some(path) => {
            std::fs::write(path, bytes)
                .with_context(|| format!("writing the {what} to {}", path.display()))?;
            eprintln!(
                "ffiprof: wrote the {what} to {} ({})",
                path.display(),
                size(bytes.len())
            );
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout
                .write_all(bytes)
                .and_then(|_| stdout.flush())
                .with_context(|| format!("writing the {what} to stdout"))?;
        }
    }
    Ok(())
}

fn size(n: usize) -> String {
    ffiprof_analyzer::text::fmt_bytes(n as u64)
}

/// `report --html OUT`: the self-contained page.
pub fn write_html(profile: &Profile, report: &Report, weight: Weight, out: &Path) -> Result<()> {
    let options = html::HtmlOptions {
        weight,
        ..Default::default()
    };
    let page = html::render(profile, report, &options);
    emit(page.as_bytes(), Some(out), "HTML report")
}

/// `report --format folded|speedscope|pprof [-o OUT]`.
pub fn write_export(
    profile: &Profile,
    format: Export,
    weight: Weight,
    out: Option<&Path>,
) -> Result<()> {
    match format {
        Export::Folded => {
            let text = folded::fold(profile, &folded::FoldOptions { weight }).to_text();
            emit(text.as_bytes(), out, "folded stacks")
        }
        Export::Speedscope => {
            let json =
                speedscope::export_string(profile, &speedscope::SpeedscopeOptions::default());
            emit(json.as_bytes(), out, "speedscope profile")
        }
        Export::Pprof => {
            if out.is_none() && std::io::stdout().is_terminal() {
                return Err(crate::bad_input(
                    "pprof output is gzip-compressed protobuf: give -o FILE (e.g. -o profile.pb.gz) or redirect stdout",
                ));
            }
            let bytes = pprof::export(profile)?;
            emit(&bytes, out, "pprof profile")
        }
    }
}
