//! The output side of ffiprof: turns a [`Profile`] (and the analyzer's [`Report`]) into the views a
//! person or another tool reads — folded stacks, an inferno flamegraph, the self-contained HTML
//! report, speedscope and pprof exports, and the before/after diff.
//!
//! Every view starts from the same attribution ([`stacks::attribute`]): each function's exact totals
//! are spread over its call sites and their sampled Python stacks, so widths always add up to what
//! the profile says, whether or not stacks were sampled. The CLI only picks a view and a file.
//!
//! ```
//! use ffiprof_flamegraph::{folded, html, Weight};
//! use ffiprof_profile::{FunctionRecord, Profile, SiteRecord, Split};
//!
//! let mut p = Profile::new();
//! let mut f = FunctionRecord::new("/lib/libm.so.6", "cos");
//! f.calls = 2;
//! f.time = Split { native: 80, marshal_in: 400, ..Split::default() };
//! f.sites.push(SiteRecord {
//!     file: "app.py".into(), line: 7, function: "main".into(), calls: 2,
//!     time: f.time, ..Default::default()
//! });
//! p.functions.push(f);
//!
//! let text = folded::fold(&p, &folded::FoldOptions::default()).to_text();
//! assert_eq!(text, "main (app.py:7);libm.so.6!cos;marshal-in 400\nmain (app.py:7);libm.so.6!cos;native 80\n");
//!
//! let report = ffiprof_analyzer::summarize(&p, &Default::default());
//! let page = html::render(&p, &report, &html::HtmlOptions::default());
//! assert!(page.contains("<svg") && page.contains("libm.so.6!cos"));
//! # let _ = Weight::Time;
//! ```
#![forbid(unsafe_code)]

pub mod diff;
pub mod folded;
mod format;
pub mod html;
pub mod pprof;
pub mod speedscope;
pub mod stacks;
pub mod svg;

pub use ffiprof_analyzer::Report;
pub use ffiprof_profile::Profile;
pub use folded::{FoldOptions, Folded, Weight};
pub use html::HtmlOptions;
pub use svg::SvgOptions;

/// What can go wrong while rendering; every variant names the view that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// inferno refused the folded input or failed to write the SVG.
    #[error("flamegraph rendering failed: {0}")]
    Flamegraph(#[source] std::io::Error),
    /// inferno's differential pass failed.
    #[error("differential folding failed: {0}")]
    Differential(#[source] std::io::Error),
    /// The profile has no boundary call to draw.
    #[error("the profile has no recorded boundary calls to draw")]
    Empty,
    /// Compressing the pprof output failed.
    #[error("pprof encoding failed: {0}")]
    Pprof(#[source] std::io::Error),
    /// Serializing an export failed.
    #[error("JSON encoding failed: {0}")]
    Json(#[from] serde_json::Error),
}

/// Result of this crate's fallible renderers.
pub type Result<T> = std::result::Result<T, Error>;
