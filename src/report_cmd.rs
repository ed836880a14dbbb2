//! `ffiprof report`: a profile as the terminal table or as the JSON contract.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use ffiprof_analyzer::{text, SortKey, SummaryOptions};

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Text,
    Json,
    /// Folded stacks for inferno and FlameGraph (widths per --weight).
    Folded,
    /// speedscope's file format (opens in speedscope).
    Speedscope,
    /// gzip-compressed profile.proto for go tool pprof, Pyroscope, Parca.
    Pprof,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Sort {
    /// Total boundary time: native + marshaling + GIL wait + construction (+ a builtin's whole,
    /// unsplit calls).
    Total,
    Calls,
    Native,
    Bytes,
}

impl From<Sort> for SortKey {
    fn from(s: Sort) -> Self {
        match s {
            Sort::Total => SortKey::Total,
            Sort::Calls => SortKey::Calls,
            Sort::Native => SortKey::Native,
            Sort::Bytes => SortKey::Bytes,
        }
    }
}

#[derive(Args)]
pub struct ReportArgs {
    /// The profile a run left behind.
    pub file: PathBuf,
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
    /// Show only the first N functions.
    #[arg(long)]
    pub top: Option<usize>,
    #[arg(long, value_enum, default_value_t = Sort::Total)]
    pub sort: Sort,
    /// Write the self-contained HTML report (flamegraph, tables, latency plots, advice) to this file.
    #[arg(long, value_name = "OUT.html")]
    pub html: Option<PathBuf>,
    /// Where to write --format folded|speedscope|pprof (stdout when omitted).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// What widths stand for in --format folded and in the --html flamegraph.
    #[arg(long, value_enum, default_value_t = crate::export_cmd::WeightArg::Time)]
    pub weight: crate::export_cmd::WeightArg,
}

/// Reads a profile, turning every way it can be bad into one line with exit status 2.
pub fn load(path: &std::path::Path) -> Result<ffiprof_profile::Profile> {
    ffiprof_profile::read_file(path).map_err(|e| crate::bad_input(e.to_string()))
}

pub fn options(top: Option<usize>, sort: Sort) -> SummaryOptions {
    SummaryOptions {
        sort: sort.into(),
        top,
    }
}

/// The whole report: statistics and recommendations, with the target libraries' exported
/// symbols read from disk so batch advice can name a bulk sibling (`f_many`, `f_array`, ...).
pub fn full_report(
    profile: &ffiprof_profile::Profile,
    top: Option<usize>,
    sort: Sort,
) -> ffiprof_analyzer::Report {
    let advice = ffiprof_analyzer::AdviceOptions::default().with_exports_from_disk(profile);
    ffiprof_analyzer::analyze(profile, &options(top, sort), &advice)
}

pub fn report(args: ReportArgs) -> Result<()> {
    let profile = load(&args.file)?;
    let report = full_report(&profile, args.top, args.sort);
    if let Some(html) = &args.html {
        return crate::export_cmd::write_html(&profile, &report, args.weight.into(), html);
    }
    use crate::export_cmd::{write_export, Export};
    let out = args.output.as_deref();
    match args.format {
        Format::Text => print!("{}", text::render(&report)),
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Format::Folded => write_export(&profile, Export::Folded, args.weight.into(), out)?,
        Format::Speedscope => write_export(&profile, Export::Speedscope, args.weight.into(), out)?,
        Format::Pprof => write_export(&profile, Export::Pprof, args.weight.into(), out)?,
    }
    Ok(())
}
