//! Lower bounds of the Python layer's per-call cost, measured rather than argued. Built only with
//! the `floor-probe` feature, which `scripts/bench-overhead --floor` uses for an agent of its own;
//! the shipped agent has none of this.
//!
//! `FFIPROF_FLOOR=N` makes the ctypes `tp_call` wrapper do only part of its work and leaves
//! `ffi_call` and `PyEval_RestoreThread` unhooked, so what the benchmark measures is the cost of
//! that part alone:
//! - 1: the wrapper forwards at once (the price of the slot indirection itself);
//! - 2: and keys the call site and counts the call per site (exact per-site counts, which the
//!   default mode must always have);
//! - 3: and adds the bytes the pointer arguments refer to (exact buffer bytes, also required).
//!
//! With `--lib` (the C extension loop of `bench-overhead --ext`) the level reduces the builtin
//! bracket and the GOT thunks instead (`builtin_call::floor_call`, `hook::native::asm`): 1 forwards
//! at once, 2 and up also count the call exactly (per site in the wrapper, per thread and target in
//! the thunk).
//!
//! No mode times anything or records which C function ran: each is a floor under the default
//! mode, which does all of it and more.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::api::{self, PyObject};
use super::frames;

/// Per-site tallies of the reduced wrappers (kept, so that the work cannot be optimised away).
static COUNTS: [AtomicU64; 1024] = [const { AtomicU64::new(0) }; 1024];
static BYTES: [AtomicU64; 1024] = [const { AtomicU64::new(0) }; 1024];

static LEVEL: AtomicU32 = AtomicU32::new(0);

/// Reads `FFIPROF_FLOOR` (when the Python layer is enabled, before any hook is installed).
pub fn init() {
    let level = std::env::var("FFIPROF_FLOOR")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    LEVEL.store(level, Ordering::Relaxed);
}

/// The floor level, 0 when unset (the agent then behaves as shipped).
#[inline(always)]
pub fn level() -> u32 {
    LEVEL.load(Ordering::Relaxed)
}

/// The reduced ctypes wrapper's work: true when a floor level is set, and the wrapper is then to
/// forward the call at once (its entry does).
///
/// # Safety
/// As `call::ctypes_call`: a tp_call with the GIL held.
#[inline(always)]
pub unsafe fn call(callable: *mut PyObject, args: *mut PyObject) -> bool {
    let level = level();
    if level == 0 {
        return false;
    }
    if level >= 2 {
        if let (Some(api), Some(rec)) = (api::get(), crate::record::recorder::if_active()) {
            // SAFETY: tp_call runs with the GIL held on a Python thread.
            let site = unsafe { frames::current_site(api, callable as usize) }.id;
            let count = &COUNTS[site as usize & 1023];
            count.store(count.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
            if level >= 3 && !args.is_null() {
                // SAFETY: as in call::wrapped_call: the call's argument tuple, GIL held.
                let bytes = unsafe { super::arg_bytes::argument_bytes(api, &rec.python, args) };
                let total = &BYTES[site as usize & 1023];
                total.store(total.load(Ordering::Relaxed) + bytes, Ordering::Relaxed);
            }
        }
    }
    true
}

/// Whether `symbol` stays unhooked at this floor level.
pub fn skips(symbol: &str) -> bool {
    level() > 0
        && (symbol == "ffi_call"
            || symbol == "PyEval_RestoreThread"
            || symbol == "PyEval_SaveThread")
}
