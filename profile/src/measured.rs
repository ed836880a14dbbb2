//! What the changes the advice proposes save, measured after the run on the program's own
//! interpreter (`ffiprof run` and `attach` do it unless `--no-calibrate`): each change timed
//! untraced, before and after, in a loop that also makes a foreign call (to the agent's exported
//! do-nothing `ffiprof_nop`), with the types and sizes the profile saw. The analyzer reads these
//! figures where a formula over the profile would miss part of a saving (a construction costs more
//! in a loop than a probe around it sees), so a report made from the profile elsewhere gives the
//! same estimates.
//!
//! Which changes and shapes exist, and how each is timed, is the analyzer's and the CLI's business
//! (`ffiprof_analyzer::measure`); this is only the record.

use serde::{Deserialize, Serialize};

/// The measurements of one run, and on what they were made.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MeasuredChanges {
    /// The interpreter they were made on (the profile's `meta.executable`).
    pub executable: String,
    /// Its `sys.version`.
    #[serde(default)]
    pub python: String,
    /// How long the step took, milliseconds (small when every figure came from the cache).
    #[serde(default)]
    pub elapsed_ms: u64,
    /// Why some asked-for figures are missing (time budget spent, interpreter failed), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub measurements: Vec<ChangeMeasurement>,
}

/// One change, timed on one shape.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ChangeMeasurement {
    /// Which change (`reuse-type`, `reuse-array`, `reuse-string-buffer`, `zero-copy`,
    /// `declare-argtypes`, `use-pydll`, `gil-contention`, `loop`).
    pub change: String,
    /// The shape it was timed on, as the change defines it (bytes, element code and count,
    /// argument codes).
    pub shape: String,
    /// Nanoseconds per call (per element for `batch`) of the loop before the change: the
    /// fastest round, the least disturbed on a shared machine.
    pub before_ns: f64,
    /// The same after the change.
    pub after_ns: f64,
    /// `before_ns - after_ns`: what the change saves per call; negative when it costs.
    pub saving_ns: f64,
    /// How far the saving moved between rounds: half the interquartile range of the per-round
    /// savings (before and after of a round are timed back to back).
    pub spread_ns: f64,
    pub rounds: u32,
    /// Calls timed per round and side.
    pub iterations: u64,
    /// Read from the per-interpreter cache rather than timed in this step.
    #[serde(default)]
    pub cached: bool,
    /// The change's own part timed by itself in a loop (building the object, with nothing
    /// else), ns per call — what a probe around it would see; for the changes that have one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub own_ns: Option<f64>,
}

impl MeasuredChanges {
    /// The measurement of `change` on `shape`, if there is one.
    pub fn get(&self, change: &str, shape: &str) -> Option<&ChangeMeasurement> {
        self.measurements
            .iter()
            .find(|m| m.change == change && m.shape == shape)
    }
}
