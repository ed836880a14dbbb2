//! `ffiprof report`: a profile as the terminal table or as the JSON contract.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, ValueEnum};
use ffiprof_analyzer::{summarize, text, SortKey, SummaryOptions};

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Sort {
    /// Total boundary time: native + marshaling + GIL wait + construction.
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

pub fn report(args: ReportArgs) -> Result<()> {
    let profile = load(&args.file)?;
    let report = summarize(&profile, &options(args.top, args.sort));
    match args.format {
        Format::Text => print!("{}", text::render(&report)),
        Format::Json => println!("{}", serde_json::to_string_pretty(&report)?),
    }
    Ok(())
}
