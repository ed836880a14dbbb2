//! Recommendations: what to change at the boundary, where, why, and what it would save.
//!
//! [`recommend`] runs one rule per kind of advice over the profile, estimates each saving through the
//! [`crate::cost_model`], drops advice whose saving is negligible (the thresholds of [`AdviceOptions`];
//! correctness findings — leaks, pointer results truncated to `int` — are kept whatever they save) and
//! ranks the rest, largest saving first.

mod arg_evidence;
mod argtypes;
mod batch;
mod buffers;
pub mod example;
mod gil;
mod leak;
pub mod names;
#[cfg(test)]
mod testutil;
mod truncation;

/// The argument codes the declare-argtypes change is timed with for a function that gets the
/// advice (see `argtypes`).
pub(crate) use argtypes::timing_codes as declare_argtypes_codes;

use std::collections::BTreeMap;

use ffiprof_profile::{FunctionRecord, Profile};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::cost_model::{self, Measured, Place};

/// The kinds of advice; serialized as the names of the JSON contract (`reuse-buffer`, `use-pydll`, ...).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdviceKind {
    Batch,
    ReuseBuffer,
    ZeroCopy,
    DeclareArgtypes,
    UsePydll,
    GilContention,
    Leak,
}

impl AdviceKind {
    /// The name used in the JSON contract and the text report.
    pub fn name(self) -> &'static str {
        match self {
            AdviceKind::Batch => "batch",
            AdviceKind::ReuseBuffer => "reuse-buffer",
            AdviceKind::ZeroCopy => "zero-copy",
            AdviceKind::DeclareArgtypes => "declare-argtypes",
            AdviceKind::UsePydll => "use-pydll",
            AdviceKind::GilContention => "gil-contention",
            AdviceKind::Leak => "leak",
        }
    }
}

/// How far to trust an estimate; the levels are defined in the [`crate::cost_model`] docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Confidence {
    Low,
    Medium,
    High,
}

impl Confidence {
    pub fn name(self) -> &'static str {
        match self {
            Confidence::Low => "low",
            Confidence::Medium => "medium",
            Confidence::High => "high",
        }
    }
}

/// Whether an estimate rests on the change timed on this interpreter or on a formula over the
/// profile alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// The change was timed after the run on the program's own interpreter
    /// ([`ffiprof_profile::MeasuredChanges`]).
    Measured,
    /// Arithmetic over the profile's own figures (see [`crate::cost_model`]).
    #[default]
    Modeled,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Measured => "measured",
            Method::Modeled => "modeled",
        }
    }
}

/// The `estimate` of a recommendation: the saving per call it changes — negative when the change
/// costs time (declaring argtypes usually does) — and its spread.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Estimate {
    pub method: Method,
    /// ns saved per call changed (per fresh object for reuse-buffer and zero-copy); negative: a cost.
    pub per_call_ns: f64,
    /// How far `per_call_ns` may be off: the measurement's spread between rounds; null for a
    /// modeled estimate, whose error is not known.
    pub spread_ns: Option<f64>,
}

impl Estimate {
    pub fn modeled(per_call_ns: f64) -> Self {
        Self {
            method: Method::Modeled,
            per_call_ns: round1(per_call_ns),
            spread_ns: None,
        }
    }

    pub fn measured(per_call_ns: f64, spread_ns: f64) -> Self {
        Self {
            method: Method::Measured,
            per_call_ns: round1(per_call_ns),
            spread_ns: Some(round1(spread_ns)),
        }
    }
}

pub(crate) fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// A Python call site, as the advice names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SiteRef {
    pub file: String,
    pub line: u32,
}

/// One piece of advice — the `recommendations[]` element of `ffiprof report --format json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Recommendation {
    pub kind: AdviceKind,
    /// The C function the advice is about.
    pub function: String,
    /// Path of its library, as in the profile.
    pub library: String,
    /// The Python call site to change, or null when the advice is about the function as a whole.
    pub site: Option<SiteRef>,
    /// What the change saves over the run (summed over threads); 0 when it saves nothing or costs.
    pub estimated_savings_ns: u64,
    /// `estimated_savings_ns` as a percentage of the time it is part of: the run's duration for
    /// one thread, the threads' time summed (duration × threads) for several; at most 100.
    pub savings_percent: f64,
    pub confidence: Confidence,
    /// How the saving was estimated, per call changed, and how far it may be off.
    #[serde(default)]
    pub estimate: Estimate,
    /// The figures the estimate and the decision used, by name.
    pub evidence: Map<String, Value>,
    pub suggestion: String,
}

impl Recommendation {
    /// A short code example of the change, where one fits.
    pub fn example(&self) -> Option<String> {
        example::code_example(self)
    }

    /// The file name of the library, without its directory.
    pub fn library_name(&self) -> &str {
        self.library.rsplit('/').next().unwrap_or(&self.library)
    }

    /// The most the change can save, where the estimate is a lower bound that the advice gives
    /// with an upper one (evidence `saving_upper_bound_ns`, above the estimate).
    pub fn saving_upper_bound_ns(&self) -> Option<u64> {
        self.evidence
            .get("saving_upper_bound_ns")
            .and_then(Value::as_u64)
            .filter(|&upper| upper > self.estimated_savings_ns)
    }

    fn site_label(&self) -> Option<String> {
        self.site.as_ref().map(|s| format!("{}:{}", s.file, s.line))
    }
}

/// What the rules need to know beyond the profile, and when advice is worth giving.
#[derive(Debug, Clone, PartialEq)]
pub struct AdviceOptions {
    /// Advice saving less than this (ns over the run) is dropped.
    pub min_savings_ns: u64,
    /// Advice saving less than this percentage of the run's duration (wall time) is dropped.
    pub min_savings_percent: f64,
    /// Keep at most this many recommendations (all when `None`).
    pub max_recommendations: Option<usize>,
    /// Exported function names per library (the key is the library path as in the profile, or its file
    /// name). The profile only lists functions that were called; a bulk sibling or a release function
    /// that never was is found only here. Empty when unknown.
    pub exported_symbols: BTreeMap<String, Vec<String>>,
    /// Below this many timed calls, an estimate is `low` confidence.
    pub min_timed_calls: u64,
    /// batch: advise only where the overhead per call is at least this multiple of native time per call.
    pub batch_min_overhead_ratio: f64,
    /// batch: `high` confidence only where the Python time between consecutive calls is at most this
    /// multiple of the call's own boundary + native time; a longer gap means the loop does work of the
    /// program's own, part of which may stay after batching.
    pub batch_max_gap_ratio: f64,
    /// zero-copy rather than reuse-buffer: construction costing at least this many ns per byte, which
    /// means Python values are converted one by one (zeroing or copying memory costs well under 1 ns/B).
    pub zero_copy_min_ns_per_byte: f64,
    /// zero-copy rather than reuse-buffer: buffers of at least this many bytes (smaller objects are
    /// dominated by the constructor's fixed cost, whatever they contain).
    pub zero_copy_min_bytes: u64,
    /// use-pydll: the GIL round trip must be at least this share of each call's boundary time, or
    /// the timed saving this share of the timed call (`measured_share`); gil-contention: the share
    /// of the threaded timed call that lets it be given where the waits are short.
    pub use_pydll_min_gil_share: f64,
    /// use-pydll: the function's p99 native time must stay under this multiple of the GIL round trip
    /// per call, so that holding the GIL through it can never stall the program.
    pub use_pydll_max_p99_ratio: f64,
    /// gil-contention: GIL wait must be at least this share of GIL wait + marshal-out (or the
    /// threaded change save `use_pydll_min_gil_share` of the call).
    pub gil_contention_min_share: f64,
    /// leak: report allocator/release pairs only when at least this many objects stay unreleased.
    pub leak_min_outstanding: u64,
}

impl Default for AdviceOptions {
    fn default() -> Self {
        Self {
            min_savings_ns: 100_000,
            min_savings_percent: 1.0,
            max_recommendations: None,
            exported_symbols: BTreeMap::new(),
            min_timed_calls: 30,
            batch_min_overhead_ratio: 1.0,
            batch_max_gap_ratio: 2.0,
            zero_copy_min_ns_per_byte: 2.0,
            zero_copy_min_bytes: 64,
            use_pydll_min_gil_share: 0.1,
            use_pydll_max_p99_ratio: 4.0,
            gil_contention_min_share: 0.5,
            leak_min_outstanding: 10,
        }
    }
}

impl AdviceOptions {
    /// Records the exported function names of `library` (path or file name).
    pub fn with_exported_symbols(
        mut self,
        library: impl Into<String>,
        symbols: Vec<String>,
    ) -> Self {
        self.exported_symbols.insert(library.into(), symbols);
        self
    }

    /// The exported names of `library`, looked up by path, then by file name; `None` when unknown.
    pub fn exports_of(&self, library: &str) -> Option<&[String]> {
        if let Some(s) = self.exported_symbols.get(library) {
            return Some(s);
        }
        let file = library.rsplit('/').next().unwrap_or(library);
        self.exported_symbols
            .iter()
            .find(|(k, _)| k.rsplit('/').next().unwrap_or(k) == file)
            .map(|(_, v)| v.as_slice())
    }
}

/// What a rule proposes, before thresholds and ranking.
pub(crate) struct Candidate {
    pub rec: Recommendation,
    /// A correctness finding: kept whatever it saves.
    pub correctness: bool,
}

/// What every rule reads: the profile, the options and the figures derived once for all rules.
pub(crate) struct Context<'a> {
    pub profile: &'a Profile,
    pub options: &'a AdviceOptions,
    /// The time savings are part of: the run's duration summed over its threads
    /// ([`cost_model::thread_ns`]); no saving exceeds it.
    pub run_ns: u64,
    pub marshal_ns_per_byte: Option<f64>,
}

impl Context<'_> {
    /// The names known to exist in `library`: its exports when given, and the functions the profile saw.
    pub fn known_names(&self, library: &str) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .profile
            .functions
            .iter()
            .filter(|f| f.library == library)
            .map(|f| f.function.as_str())
            .collect();
        if let Some(exports) = self.options.exports_of(library) {
            names.extend(exports.iter().map(String::as_str));
        }
        names.sort_unstable();
        names.dedup();
        names
    }

    pub fn exports_known(&self, library: &str) -> bool {
        self.options.exports_of(library).is_some()
    }

    /// The mean Python time between consecutive calls at a place, as far as it can be trusted: `None`
    /// when measured on fewer than `min_timed_calls` pairs (a mean of a few samples is at the mercy of one
    /// descheduled thread), and never more than the run leaves for it — the loop and the calls of one
    /// place fit in the run's duration on each of its threads.
    pub fn gap_per_call(&self, m: &Measured) -> Option<f64> {
        if m.gap_samples < self.options.min_timed_calls || m.calls < 2 {
            return None;
        }
        let gap = m.gap_per_call_ns()?;
        if self.run_ns == 0 {
            return Some(gap);
        }
        let room = (self.run_ns as u128).saturating_sub(m.call_ns() as u128);
        Some(gap.min(room as f64 / (m.calls - 1) as f64))
    }

    /// Confidence capped by the amount of timing behind the figures.
    pub fn cap_by_timing(&self, wanted: Confidence, timed_calls: u64) -> Confidence {
        if timed_calls < self.options.min_timed_calls {
            Confidence::Low
        } else {
            wanted
        }
    }

    /// A recommendation with the shared fields filled in; the saving is capped at the time it is
    /// part of.
    #[allow(clippy::too_many_arguments)]
    pub fn recommendation(
        &self,
        kind: AdviceKind,
        place: Place<'_>,
        savings_ns: u64,
        estimate: Estimate,
        confidence: Confidence,
        evidence: Value,
        suggestion: String,
    ) -> Recommendation {
        let f: &FunctionRecord = place.function;
        let savings_ns = if self.run_ns > 0 {
            savings_ns.min(self.run_ns)
        } else {
            savings_ns
        };
        Recommendation {
            kind,
            function: f.function.clone(),
            library: f.library.clone(),
            site: place.site.map(|s| SiteRef {
                file: s.file.clone(),
                line: s.line,
            }),
            estimated_savings_ns: savings_ns,
            savings_percent: cost_model::percent_of(savings_ns, self.run_ns),
            confidence,
            estimate,
            evidence: match evidence {
                Value::Object(map) => map,
                other => {
                    let mut map = Map::new();
                    map.insert("value".into(), other);
                    map
                }
            },
            suggestion,
        }
    }
}

/// Where a place is, for suggestions: ` at file:line` or nothing.
pub(crate) fn at_site(place: &Place<'_>) -> String {
    place
        .site
        .map(|s| format!(" at {}:{}", s.file, s.line))
        .unwrap_or_default()
}

/// All advice for a profile, best first (see the module docs).
pub fn recommend(profile: &Profile, options: &AdviceOptions) -> Vec<Recommendation> {
    let ctx = Context {
        profile,
        options,
        run_ns: cost_model::thread_ns(profile),
        marshal_ns_per_byte: cost_model::marshal_ns_per_byte(profile),
    };
    let mut candidates = Vec::new();
    // Batching and buffer advice look at each place Python called C: a site, or a function.
    for place in cost_model::python_places(profile) {
        candidates.extend(batch::advise(&ctx, place));
        candidates.extend(buffers::advise(&ctx, place));
    }
    candidates.extend(argtypes::rule(&ctx));
    candidates.extend(gil::use_pydll_rule(&ctx));
    candidates.extend(gil::contention_rule(&ctx));
    candidates.extend(leak::rule(&ctx));
    candidates.extend(truncation::rule(&ctx));

    let mut recs: Vec<Recommendation> = candidates
        .into_iter()
        .filter(|c| c.correctness || worth_it(&c.rec, &ctx))
        .map(|c| c.rec)
        .collect();
    recs.sort_by(|a, b| {
        b.estimated_savings_ns
            .cmp(&a.estimated_savings_ns)
            .then(b.confidence.cmp(&a.confidence))
            .then(a.kind.cmp(&b.kind))
            .then(a.function.cmp(&b.function))
            .then(a.site_label().cmp(&b.site_label()))
    });
    if let Some(max) = options.max_recommendations {
        recs.truncate(max);
    }
    recs
}

/// Worth telling: at least `min_savings_ns`, and at least `min_savings_percent` of the run's
/// duration — of its wall time, not of the threads' summed time the percentage shown is of, so
/// that a program's threads do not make the same saving in one of them less worth telling.
fn worth_it(rec: &Recommendation, ctx: &Context<'_>) -> bool {
    let wall = cost_model::run_ns(ctx.profile);
    rec.estimated_savings_ns > 0
        && rec.estimated_savings_ns >= ctx.options.min_savings_ns
        && (wall == 0
            || cost_model::percent_of(rec.estimated_savings_ns, wall)
                >= ctx.options.min_savings_percent)
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    #[test]
    fn serializes_to_the_json_contract() {
        let p = loop_profile(200_000, 300, 30);
        let recs = recommend(&p, &AdviceOptions::default());
        let json = serde_json::to_value(&recs).unwrap();
        let first = &json[0];
        let mut keys: Vec<&str> = first
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "confidence",
                "estimate",
                "estimated_savings_ns",
                "evidence",
                "function",
                "kind",
                "library",
                "savings_percent",
                "site",
                "suggestion"
            ]
        );
        assert_eq!(first["kind"], "batch");
        assert_eq!(first["site"]["file"], "work.py");
        assert_eq!(first["site"]["line"], 12);
        assert!(first["evidence"].is_object());
        let back: Vec<Recommendation> = serde_json::from_value(json).unwrap();
        assert_eq!(back, recs);
    }

    #[test]
    fn kinds_and_confidence_use_contract_names() {
        for kind in [
            AdviceKind::Batch,
            AdviceKind::ReuseBuffer,
            AdviceKind::ZeroCopy,
            AdviceKind::DeclareArgtypes,
            AdviceKind::UsePydll,
            AdviceKind::GilContention,
            AdviceKind::Leak,
        ] {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.name());
        }
        assert_eq!(serde_json::to_value(Confidence::Medium).unwrap(), "medium");
    }

    #[test]
    fn function_level_advice_has_null_site() {
        let mut p = loop_profile(200_000, 300, 30);
        p.functions[0].sites.clear();
        let recs = recommend(&p, &AdviceOptions::default());
        assert_eq!(recs[0].kind, AdviceKind::Batch);
        assert_eq!(serde_json::to_value(&recs[0]).unwrap()["site"], Value::Null);
    }

    #[test]
    fn ranked_best_first_and_truncated() {
        let mut p = loop_profile(200_000, 300, 30);
        let mut small = p.functions[0].clone();
        small.function = "fx_other".into();
        scale_calls(&mut small, 2);
        p.functions.push(small);
        let recs = recommend(&p, &AdviceOptions::default());
        assert!(recs.len() >= 2);
        assert!(recs
            .windows(2)
            .all(|w| w[0].estimated_savings_ns >= w[1].estimated_savings_ns));
        assert_eq!(recs[0].function, "fx_scale");
        let one = recommend(
            &p,
            &AdviceOptions {
                max_recommendations: Some(1),
                ..AdviceOptions::default()
            },
        );
        assert_eq!(one.len(), 1);
    }

    #[test]
    fn ctypes_own_calls_get_no_advice() {
        // The same figures that earn fx_scale batch advice, on ctypes.cast.
        let mut p = loop_profile(200_000, 300, 30);
        assert!(!recommend(&p, &AdviceOptions::default()).is_empty());
        p.functions[0].library = "/py/lib-dynload/_ctypes.cpython-311-x86_64-linux-gnu.so".into();
        p.functions[0].function = "cast".into();
        let report = crate::summarize(&p, &crate::SummaryOptions::default());
        assert!(report.functions.is_empty());
        assert_eq!(report.ctypes_internal.len(), 1);
        assert_eq!(report.ctypes_internal[0].calls, 200_000);
        assert!(
            report.recommendations.is_empty(),
            "{:?}",
            report.recommendations
        );
        p.separate_ctypes_internal();
        assert!(recommend(&p, &AdviceOptions::default()).is_empty());
    }

    #[test]
    fn exports_are_found_by_path_or_file_name() {
        let o = AdviceOptions::default().with_exported_symbols("libx.so", vec!["a".into()]);
        assert_eq!(o.exports_of("/usr/lib/libx.so").unwrap(), ["a".to_string()]);
        assert!(o.exports_of("/usr/lib/liby.so").is_none());
    }
}
