//! `ffiprof flamegraph FILE -o out.svg`: the inferno flamegraph of a profile as a standalone SVG
//! (search and zoom work when it is opened in a browser).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use ffiprof_flamegraph::svg;

use crate::export_cmd::{emit, WeightArg};

#[derive(Args)]
pub struct FlamegraphArgs {
    /// The profile a run left behind.
    pub file: PathBuf,
    /// Where to write the SVG (stdout when omitted).
    #[arg(short, long)]
    pub output: Option<PathBuf>,
    /// What frame widths stand for.
    #[arg(long, value_enum, default_value_t = WeightArg::Time)]
    pub weight: WeightArg,
    /// Title drawn above the graph.
    #[arg(long)]
    pub title: Option<String>,
    /// Fixed width in pixels (by default the SVG fills the browser window).
    #[arg(long)]
    pub width: Option<usize>,
}

pub fn flamegraph(args: FlamegraphArgs) -> Result<()> {
    let profile = crate::report_cmd::load(&args.file)?;
    let mut opts = svg::SvgOptions {
        image_width: args.width,
        ..svg::SvgOptions::default()
    };
    if let Some(title) = args.title {
        opts.title = title;
    }
    let drawn = svg::render(&profile, args.weight.into(), &opts);
    let svg = match drawn {
        Err(ffiprof_flamegraph::Error::Empty) => {
            return Err(crate::bad_input(format!(
                "{}: the profile has no recorded boundary calls to draw",
                args.file.display()
            )))
        }
        other => other?,
    };
    emit(svg.as_bytes(), args.output.as_deref(), "flamegraph")
}
