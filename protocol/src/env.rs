//! The agent's configuration, read from `FFIPROF_*` environment variables (the only channel an
//! LD_PRELOAD library has). Unknown or malformed values fall back to defaults and are reported once.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// `FFIPROF_OUTPUT`: where the profile goes. Without it the agent stays inert.
pub const ENV_OUTPUT: &str = "FFIPROF_OUTPUT";
/// `FFIPROF_LIB`: `--lib` patterns separated by `:`.
pub const ENV_LIB: &str = "FFIPROF_LIB";
/// `FFIPROF_INTERVAL`: seconds between periodic snapshots.
pub const ENV_INTERVAL: &str = "FFIPROF_INTERVAL";
/// `FFIPROF_DEBUG=1`: the agent explains itself on stderr.
pub const ENV_DEBUG: &str = "FFIPROF_DEBUG";
/// `FFIPROF_CLOCK=monotonic`: never use the TSC.
pub const ENV_CLOCK: &str = "FFIPROF_CLOCK";
/// Set by the first process that records, so its descendants write `NAME.PID.json` instead.
pub const ENV_CLAIMED: &str = "FFIPROF_CLAIMED";
/// `FFIPROF_CLAIM_FILE`: a file `ffiprof run` removed before starting the program. Of the
/// processes that are nobody's descendant in the run (siblings a shell starts one after the
/// other), the first one with something to write creates it, exclusively, and writes the output
/// path; the others write `NAME.PID.json`. Without it, each such process takes the output path.
pub const ENV_CLAIM_FILE: &str = "FFIPROF_CLAIM_FILE";
/// `FFIPROF_TIMING`: time one call in N (1 = every call). Counts and bytes are always exact.
pub const ENV_TIMING: &str = "FFIPROF_TIMING";
/// `FFIPROF_STACKS`: record the whole Python stack of one call in N per site (0 = never).
pub const ENV_STACKS: &str = "FFIPROF_STACKS";
/// `FFIPROF_PYTHON=0`: only the ffi_call layer (no marshal split, no call sites).
pub const ENV_PYTHON: &str = "FFIPROF_PYTHON";
/// `FFIPROF_SITE_SKIP`: `--site-skip` glob patterns, one per line (a pattern may contain `:`).
pub const ENV_SITE_SKIP: &str = "FFIPROF_SITE_SKIP";
/// `FFIPROF_POINTERS=0`: no pointer flow (no leak advice, no truncation check). A measuring aid:
/// what pointer tracking costs a call is the difference with it on (`scripts/ir-breakdown`).
pub const ENV_POINTERS: &str = "FFIPROF_POINTERS";

/// Calls per timed call by default when the Python layer is on.
pub const DEFAULT_PYTHON_TIMING: u32 = 8;

#[derive(Debug, Clone)]
pub struct Config {
    pub output: PathBuf,
    pub libs: Vec<String>,
    pub interval: Duration,
    pub debug: bool,
    pub force_monotonic: bool,
    /// 0 = automatic: every call with the ffi_call layer alone, one in
    /// [`DEFAULT_PYTHON_TIMING`] with the Python layer (five clock reads per timed call).
    pub timing_sample_every: u32,
    pub stack_sample_every: u32,
    pub python_layer: bool,
    /// The pointer flow (leak advice, truncation check); off only by `FFIPROF_POINTERS=0`.
    pub pointer_flow: bool,
    /// Frames passed through to their caller for the call site: glob patterns matched against a
    /// frame's file path and against `file:function`.
    pub site_skip: Vec<String>,
    pub mode: Mode,
    /// [`ENV_CLAIM_FILE`], when `ffiprof run` set it.
    pub claim_file: Option<PathBuf>,
}

/// How the agent came into the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Preloaded by `ffiprof run`: records from the start until the process ends.
    #[default]
    Run,
    /// Injected by `ffiprof attach`: records for a window, then restores everything.
    Attach,
}

impl Mode {
    /// The name in the profile's `meta.mode`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Run => "run",
            Mode::Attach => "attach",
        }
    }
}

impl Config {
    /// The configuration of an LD_PRELOAD run, or None when `FFIPROF_OUTPUT` is unset.
    pub fn from_env() -> Option<Config> {
        let output = std::env::var_os(ENV_OUTPUT).filter(|v| !v.is_empty())?;
        let num = |name: &str, default: f64| -> f64 {
            std::env::var(name)
                .ok()
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|v| v.is_finite() && *v >= 0.0)
                .unwrap_or(default)
        };
        Some(Config {
            output: PathBuf::from(output),
            libs: std::env::var(ENV_LIB)
                .unwrap_or_default()
                .split(':')
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            interval: Duration::from_secs_f64(num(ENV_INTERVAL, 1.0).max(0.01)),
            debug: std::env::var(ENV_DEBUG).is_ok_and(|v| v == "1"),
            force_monotonic: std::env::var(ENV_CLOCK).is_ok_and(|v| v == "monotonic"),
            timing_sample_every: num(ENV_TIMING, 0.0) as u32,
            stack_sample_every: num(ENV_STACKS, 64.0) as u32,
            python_layer: std::env::var(ENV_PYTHON).map_or(true, |v| v != "0"),
            pointer_flow: std::env::var(ENV_POINTERS).map_or(true, |v| v != "0"),
            site_skip: std::env::var(ENV_SITE_SKIP)
                .unwrap_or_default()
                .lines()
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect(),
            mode: Mode::Run,
            claim_file: std::env::var_os(ENV_CLAIM_FILE)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
        })
    }
}

/// Where a process that is not the first one writes: `prof.json` → `prof.<pid>.json`.
pub fn per_pid_path(output: &Path, pid: u32) -> PathBuf {
    let stem = output
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = match output.extension() {
        Some(ext) => format!("{stem}.{pid}.{}", ext.to_string_lossy()),
        None => format!("{stem}.{pid}"),
    };
    output.with_file_name(name)
}

/// Why a `--site-skip` pattern cannot be used, with the remedy; None when it can.
pub fn site_skip_error(pattern: &str) -> Option<String> {
    if pattern.is_empty() || pattern.contains('\n') {
        return Some(format!(
            "--site-skip {pattern:?}: a pattern must be one non-empty line, \
             e.g. '*/llvmlite/binding/ffi.py' or '*:add'"
        ));
    }
    glob::Pattern::new(pattern).err().map(|e| {
        format!(
            "--site-skip {pattern:?} is not a valid glob ({e}); \
             e.g. '*/llvmlite/binding/ffi.py' (a file) or '*/app.py:add' (a function)"
        )
    })
}

/// `--lib` patterns: a pattern with `*`, `?` or `[` is a glob matched against the library's full
/// path and its file name; any other pattern matches when the path contains it.
#[derive(Debug, Clone, Default)]
pub struct LibFilter {
    patterns: Vec<(String, Option<glob::Pattern>)>,
}

impl LibFilter {
    pub fn new(patterns: &[String]) -> Self {
        LibFilter {
            patterns: patterns
                .iter()
                .map(|p| {
                    let glob = p
                        .contains(['*', '?', '['])
                        .then(|| glob::Pattern::new(p).ok())
                        .flatten();
                    (p.clone(), glob)
                })
                .collect(),
        }
    }

    /// Whether any pattern was given (without one, every library is included).
    pub fn has_patterns(&self) -> bool {
        !self.patterns.is_empty()
    }

    pub fn includes(&self, library_path: &str) -> bool {
        if self.patterns.is_empty() {
            return true;
        }
        let file = library_path.rsplit('/').next().unwrap_or(library_path);
        self.patterns.iter().any(|(text, glob)| match glob {
            Some(g) => g.matches(library_path) || g.matches(file),
            None => library_path.contains(text.as_str()),
        })
    }
}

/// The claim file `ffiprof run` names for `output`: hidden, beside it.
pub fn claim_file_for(output: &Path) -> PathBuf {
    let name = output
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    output.with_file_name(format!(".{name}.claim"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_pid_names() {
        assert_eq!(
            per_pid_path(Path::new("/t/prof.json"), 42),
            PathBuf::from("/t/prof.42.json")
        );
        assert_eq!(per_pid_path(Path::new("prof"), 7), PathBuf::from("prof.7"));
    }

    #[test]
    fn site_skip_patterns_are_checked() {
        assert!(site_skip_error("*/ffi.py").is_none());
        assert!(site_skip_error("*:add").is_none());
        assert!(site_skip_error("a[").unwrap().contains("not a valid glob"));
        assert!(site_skip_error("").is_some());
        assert!(site_skip_error("a\nb").is_some());
    }

    #[test]
    fn lib_filter_matches_globs_and_substrings() {
        let f = LibFilter::new(&["libffifixture".into(), "libm.so*".into()]);
        assert!(f.includes("/tmp/x/libffifixture.so"));
        assert!(f.includes("/lib/x86_64-linux-gnu/libm.so.6"));
        assert!(!f.includes("/lib/x86_64-linux-gnu/libc.so.6"));
        assert!(LibFilter::new(&[]).includes("/anything"));
    }
}
