//! Pointer flow: what the agent saw of pointer values crossing the boundary — each non-null pointer a
//! C function returned (its libffi return type a pointer: ctypes' `c_void_p`, `POINTER(T)`,
//! `c_char_p`, cffi pointer results), and the functions each such value was later passed to in a
//! pointer argument. From it the analyzer finds, per allocating function, the function that retires
//! its objects, and which objects stay (the leak advice); and pointers cut to 32 bits by ctypes'
//! default `c_int` result that come back as pointer arguments.
//!
//! Memory is bounded: at most `cap` values are tracked at once; past that only the values whose
//! address hash falls in one part in `sample_every` are (and the figures here are scaled by it).

use serde::{Deserialize, Serialize};

/// The pointer flow of one run (absent in profiles written before it was recorded).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PointerFlow {
    /// The most values tracked at once.
    pub cap: u64,
    /// Whether the cap was reached, after which values were sampled by address hash.
    pub sampled: bool,
    /// One value in this many is tracked (1: every value); counts below are scaled by it.
    pub sample_every: u64,
    /// Values tracked when the profile was written.
    #[serde(default)]
    pub tracked: u64,
    /// Values returned that could not be tracked (a full stretch of the table), unscaled.
    #[serde(default)]
    pub skipped: u64,
    /// Per function that returned pointers, what became of them.
    pub allocators: Vec<AllocatorFlow>,
    /// Values a function returned through ctypes' default `c_int` result (no `restype` declared)
    /// that came back, sign-extended from 32 bits, as a pointer argument.
    #[serde(default)]
    pub truncated: Vec<TruncatedPointer>,
}

/// A C function, as the flow names it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FunctionRef {
    pub library: String,
    pub function: String,
}

/// One function that returned pointers, and its objects by the last function each was passed to.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AllocatorFlow {
    pub library: String,
    pub function: String,
    /// Non-null pointers it returned that were none of the call's own pointer arguments (exact).
    pub made: u64,
    /// Its objects grouped by the last function each was passed to.
    pub endings: Vec<Ending>,
}

/// The objects of one allocator whose last function (so far) is `last`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Ending {
    /// The function they were last passed to; null: never passed to any.
    pub last: Option<FunctionRef>,
    /// Objects still tracked (their address not handed out again) whose last function this is.
    pub live: u64,
    /// Objects retired when a function returned their address again: after this function, the
    /// address was free for the heap to reuse — the strongest sign that this function frees.
    pub reused: u64,
    /// Times an object passed here was later passed to another function: a function that frees
    /// is not followed by another use.
    pub continued: u64,
    /// Where the `live` objects were made.
    pub live_sites: Vec<SiteCount>,
}

/// A Python call site and a count of objects made there.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SiteCount {
    pub file: String,
    pub line: u32,
    pub function: String,
    pub count: u64,
}

/// A value returned through the default `c_int` result and passed back as a pointer argument.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TruncatedPointer {
    /// The function whose result was read as a C `int`.
    pub library: String,
    pub function: String,
    /// The function it came back to, in a pointer argument.
    pub passed_to: FunctionRef,
    /// How many times.
    pub count: u64,
}
