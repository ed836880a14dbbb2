//! The report model: what `ffiprof report --format json` prints, field by field.
//!
//! This is a public contract. Fields are added freely; none is ever renamed or removed.

use ffiprof_profile::{FunctionRecord, Profile, SiteRecord, Split};
use serde::{Deserialize, Serialize};

use crate::advice::{recommend, AdviceOptions, Recommendation};

/// How to order functions in a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortKey {
    Calls,
    /// Total time at the boundary (native + marshaling + GIL wait + construction).
    #[default]
    Total,
    Native,
    Bytes,
}

/// Options for [`summarize`].
#[derive(Debug, Clone, Default)]
pub struct SummaryOptions {
    pub sort: SortKey,
    /// Keep only the first `top` functions (all when `None`).
    pub top: Option<usize>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Report {
    pub meta: ReportMeta,
    pub functions: Vec<FunctionSummary>,
    /// ctypes' own foreign calls (`ctypes.cast`, `string_at`, `wstring_at` call into the `_ctypes`
    /// extension), with the user's sites that made them: ctypes' cost at those lines, never a
    /// library function, never advised on. Ordered by total time.
    #[serde(default)]
    pub ctypes_internal: Vec<FunctionSummary>,
    /// Interned Python frames (file, function, line), referred to by `stacks`.
    pub frames: Vec<ffiprof_profile::Frame>,
    /// Interned stacks: indexes into `frames`, outermost first.
    pub stacks: Vec<Vec<u32>>,
    /// Ranked advice, best first (see [`crate::advice`]).
    #[serde(default)]
    pub recommendations: Vec<Recommendation>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReportMeta {
    pub pid: u32,
    /// The parent's pid (a forked or exec'd child's profile names the process that made it).
    #[serde(default)]
    pub ppid: u32,
    pub command: Vec<String>,
    pub python: Option<String>,
    pub duration_ns: u64,
    pub probe_overhead_ns: u64,
    pub clock: String,
    pub mode: String,
    pub complete: bool,
    pub write_reason: String,
    pub timing_sample_every: u32,
    pub stack_sample_every: u32,
    pub threads: u32,
    pub total_calls: u64,
    pub dropped_calls: u64,
    pub lib_filter: Vec<String>,
    /// `--site-skip` patterns in force.
    #[serde(default)]
    pub site_skip: Vec<String>,
    /// Hooks that could not be installed, as "hook in module: reason".
    pub hooks_skipped: Vec<String>,
}

/// One C function in the report. Its time split is five fields of its own, not a flattened
/// [`Split`]: the JSON has the latency percentiles between `native_ns` and `marshal_in_ns`
/// ([`FunctionSummary::time`] puts them together).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FunctionSummary {
    pub library: String,
    pub function: String,
    pub calls: u64,
    pub arg_count: u32,
    pub arg_bytes: u64,
    pub ret_bytes: u64,
    pub buffer_bytes: u64,
    pub native_ns: u64,
    pub native_p50_ns: u64,
    pub native_p90_ns: u64,
    pub native_p99_ns: u64,
    pub native_max_ns: u64,
    pub native_mean_ns: f64,
    pub marshal_in_ns: u64,
    pub marshal_out_ns: u64,
    pub gil_wait_ns: u64,
    pub construction_ns: u64,
    pub construction_bytes: u64,
    /// native + marshal-in + marshal-out + GIL wait + construction + unsplit.
    pub total_ns: u64,
    pub timed_calls: u64,
    pub python_calls: u64,
    pub fresh_buffer_calls: u64,
    pub undeclared_argtypes_calls: u64,
    pub undeclared_restype_calls: u64,
    /// How Python called it: `ctypes`, `cffi-abi`, `cffi-api`, `extension` (empty: C callers
    /// only, or an older profile).
    #[serde(default)]
    pub binding: String,
    /// For `extension`: `c`, `cython` or `pybind11` where it can be told.
    #[serde(default)]
    pub binding_detail: String,
    /// Whole-call time of calls with no separate native entry seen inside (a builtin of an
    /// extension): not split into the parts above, and not among them.
    #[serde(default)]
    pub unsplit_ns: u64,
    /// Threads that called it from Python, and the most calls one of them made (absent: not
    /// recorded, an older profile).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub calling_threads: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub busiest_thread_python_calls: u64,
    pub sites: Vec<SiteSummary>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// One Python call site of one function.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SiteSummary {
    pub file: String,
    pub line: u32,
    pub function: String,
    pub calls: u64,
    pub timed_calls: u64,
    /// `native_ns` ... `construction_ns`.
    #[serde(flatten)]
    pub time: Split,
    pub construction_bytes: u64,
    pub buffer_bytes: u64,
    pub arg_bytes: u64,
    pub fresh_buffer_calls: u64,
    /// Python time between consecutive calls of this site (summed over `gap_samples` pairs).
    pub gap_ns: u64,
    pub gap_samples: u64,
    /// (stack index, calls) pairs: which whole stacks reached this site.
    pub stacks: Vec<ffiprof_profile::StackSample>,
    /// The pass-through frame (generic forwarder, ctypes' own code, `--site-skip` frame) the
    /// calls were made in, when they were not made at this site itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub through: Option<ffiprof_profile::Frame>,
    /// The site's share of the function's `unsplit_ns`.
    #[serde(default)]
    pub unsplit_ns: u64,
}

impl FunctionSummary {
    /// The function's time split.
    pub fn time(&self) -> Split {
        Split {
            native: self.native_ns,
            marshal_in: self.marshal_in_ns,
            marshal_out: self.marshal_out_ns,
            gil_wait: self.gil_wait_ns,
            construction: self.construction_ns,
        }
    }
}

fn site_summary(s: &SiteRecord) -> SiteSummary {
    SiteSummary {
        file: s.file.clone(),
        line: s.line,
        function: s.function.clone(),
        calls: s.calls,
        timed_calls: s.timed_calls,
        time: s.time,
        construction_bytes: s.construction_bytes,
        buffer_bytes: s.buffer_bytes,
        arg_bytes: s.arg_bytes,
        fresh_buffer_calls: s.fresh_buffer_calls,
        gap_ns: s.gap_ns,
        gap_samples: s.gap_samples,
        stacks: s.stacks.clone(),
        through: s.through.clone(),
        unsplit_ns: s.unsplit_ns,
    }
}

fn function_summary(f: &FunctionRecord) -> FunctionSummary {
    let lat = f.native_hist.summary();
    let mut sites: Vec<SiteSummary> = f.sites.iter().map(site_summary).collect();
    sites.sort_by(|a, b| {
        (b.time.total() + b.unsplit_ns)
            .cmp(&(a.time.total() + a.unsplit_ns))
            .then(b.calls.cmp(&a.calls))
            .then(a.file.cmp(&b.file))
            .then(a.line.cmp(&b.line))
    });
    FunctionSummary {
        library: f.library.clone(),
        function: f.function.clone(),
        calls: f.calls,
        arg_count: f.arg_count,
        arg_bytes: f.arg_bytes,
        ret_bytes: f.ret_bytes,
        buffer_bytes: f.buffer_bytes,
        native_ns: f.time.native,
        native_p50_ns: lat.p50_ns,
        native_p90_ns: lat.p90_ns,
        native_p99_ns: lat.p99_ns,
        native_max_ns: lat.max_ns,
        native_mean_ns: lat.mean_ns,
        marshal_in_ns: f.time.marshal_in,
        marshal_out_ns: f.time.marshal_out,
        gil_wait_ns: f.time.gil_wait,
        construction_ns: f.time.construction,
        construction_bytes: f.construction_bytes,
        total_ns: f.total_ns(),
        timed_calls: f.timed_calls,
        python_calls: f.python_calls,
        fresh_buffer_calls: f.fresh_buffer_calls,
        undeclared_argtypes_calls: f.undeclared_argtypes_calls,
        undeclared_restype_calls: f.undeclared_restype_calls,
        binding: f.binding.clone(),
        binding_detail: f.binding_detail.clone(),
        unsplit_ns: f.unsplit_ns,
        calling_threads: f.calling_threads,
        busiest_thread_python_calls: f.busiest_thread_python_calls,
        sites,
    }
}

/// Builds the report model of a profile: per-function statistics in the requested order, and the
/// recommendations under default [`AdviceOptions`] (which know no library's exported symbols; call
/// [`analyze`] to pass them and other thresholds).
pub fn summarize(profile: &Profile, options: &SummaryOptions) -> Report {
    analyze(profile, options, &AdviceOptions::default())
}

/// The whole analysis: [`summarize`]'s statistics plus the recommendations under `advice`. This is
/// the entry point for `ffiprof report`, which can read the profiled libraries' exported symbols.
pub fn analyze(profile: &Profile, options: &SummaryOptions, advice: &AdviceOptions) -> Report {
    // ctypes' own foreign calls are never library functions, even in a profile put together in
    // memory (the agent and `read_file` already keep them apart).
    let profile = if profile
        .functions
        .iter()
        .any(|f| ffiprof_profile::is_ctypes_internal(&f.library, &f.function))
    {
        let mut separated = profile.clone();
        separated.separate_ctypes_internal();
        std::borrow::Cow::Owned(separated)
    } else {
        std::borrow::Cow::Borrowed(profile)
    };
    let mut report = statistics(&profile, options);
    report.recommendations = recommend(&profile, advice);
    report
}

fn statistics(profile: &Profile, options: &SummaryOptions) -> Report {
    let mut functions: Vec<FunctionSummary> =
        profile.functions.iter().map(function_summary).collect();
    functions.sort_by(|a, b| {
        let key = |f: &FunctionSummary| match options.sort {
            SortKey::Calls => f.calls,
            SortKey::Total => f.total_ns,
            SortKey::Native => f.native_ns,
            SortKey::Bytes => f.arg_bytes + f.buffer_bytes,
        };
        key(b)
            .cmp(&key(a))
            .then(b.calls.cmp(&a.calls))
            .then(a.function.cmp(&b.function))
    });
    if let Some(top) = options.top {
        functions.truncate(top);
    }
    let mut ctypes_internal: Vec<FunctionSummary> = profile
        .ctypes_internal
        .iter()
        .map(function_summary)
        .collect();
    ctypes_internal.sort_by(|a, b| {
        b.total_ns
            .cmp(&a.total_ns)
            .then(b.calls.cmp(&a.calls))
            .then(a.function.cmp(&b.function))
    });
    let m = &profile.meta;
    Report {
        meta: ReportMeta {
            pid: m.pid,
            ppid: m.ppid,
            command: m.command.clone(),
            python: m.python.clone(),
            duration_ns: m.duration_ns,
            probe_overhead_ns: m.probe_overhead_ns,
            clock: m.clock.clone(),
            mode: m.mode.clone(),
            complete: m.complete,
            write_reason: m.write_reason.clone(),
            timing_sample_every: m.timing_sample_every,
            stack_sample_every: m.stack_sample_every,
            threads: m.threads,
            total_calls: profile.total_calls(),
            dropped_calls: m.dropped_calls,
            lib_filter: m.lib_filter.clone(),
            site_skip: m.site_skip.clone(),
            hooks_skipped: profile
                .hooks
                .iter()
                .filter(|h| !h.installed)
                .map(|h| {
                    format!(
                        "{} in {}: {}",
                        h.hook,
                        h.module,
                        h.error.as_deref().unwrap_or("unknown")
                    )
                })
                .collect(),
        },
        functions,
        ctypes_internal,
        frames: profile.frames.clone(),
        stacks: profile.stacks.clone(),
        recommendations: Vec::new(),
    }
}
