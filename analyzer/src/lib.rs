//! The analyzer of ffiprof: turns a [`ffiprof_profile::Profile`] into a report — per-function
//! statistics (latency percentiles, the marshal/native split, top call sites) and ranked
//! recommendations, each with its evidence and an estimated saving (see [`cost_model`] for how
//! savings are estimated, [`advice`] for the rules). It never depends on the agent and has no unsafe code.
//!
//! Entry points: [`summarize`] (statistics + advice under default options), [`analyze`] (the same with
//! explicit [`AdviceOptions`], e.g. the exported symbols of the profiled libraries) and [`recommend`]
//! (the advice alone). [`AdviceOptions::with_exports_from_disk`] reads the profiled libraries' exported
//! functions, so advice can name a bulk sibling or a release function the program never called.
//!
//! ```
//! use ffiprof_analyzer::{summarize, SummaryOptions, text};
//! let mut p = ffiprof_profile::Profile::new();
//! let mut f = ffiprof_profile::FunctionRecord::new("/lib/libm.so.6", "cos");
//! f.calls = 10;
//! f.native_hist.record_n(40, 10);
//! p.functions.push(f);
//! let report = summarize(&p, &SummaryOptions::default());
//! assert_eq!(report.functions[0].native_p50_ns, 40);
//! assert!(text::render(&report).contains("cos"));
//! ```
#![forbid(unsafe_code)]

pub mod advice;
pub mod cost_model;
pub mod exports;
pub mod measure;
pub mod summary;
pub mod text;

pub use advice::{
    recommend, AdviceKind, AdviceOptions, Confidence, Estimate, Method, Recommendation, SiteRef,
};
pub use exports::{exported_functions, ExportsError};
pub use summary::{
    analyze, summarize, FunctionSummary, Report, ReportMeta, SiteSummary, SortKey, SummaryOptions,
};
