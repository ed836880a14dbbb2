//! The bottom layer: process-wide flags every other layer reads — whether recording is on, the
//! pid the agent started in, debug output — and the errno and `dlerror` guards of code that runs
//! inside the host's calls. It calls nothing of the agent; the session (`agent`) sets these.
//!
//! `first_sighting` is the session's slow-path work on a thread's first call to a function; the
//! session registers it here at start, so the hooks below it reach it without naming it.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::OnceLock;

/// Calls are being recorded (set and cleared by the session).
pub static ACTIVE: AtomicBool = AtomicBool::new(false);
static DEBUG: AtomicBool = AtomicBool::new(false);
/// The pid the agent started (or last forked) in: a vfork child shares our memory, not our pid.
pub static PID: AtomicU32 = AtomicU32::new(0);
static FIRST_SIGHTING: OnceLock<fn(usize) -> bool> = OnceLock::new();

pub fn errno() -> i32 {
    // SAFETY: __errno_location returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

pub fn set_errno(v: i32) {
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = v };
}

pub fn clear_dlerror() {
    // SAFETY: dlerror only reads and clears this thread's loader error state.
    unsafe { libc::dlerror() };
}

pub fn set_debug(on: bool) {
    DEBUG.store(on, Ordering::Relaxed);
}

pub fn debug(msg: &str) {
    if DEBUG.load(Ordering::Relaxed) {
        eprintln!("ffiprof[{}]: {msg}", std::process::id());
    }
}

/// Registers the session's work on a thread's first call to a function (once per process).
pub fn set_first_sighting(f: fn(usize) -> bool) {
    let _ = FIRST_SIGHTING.set(f);
}

/// The slow path of a thread's first call to `addr`: whether `--lib` excludes its library
/// (false before the session registered itself).
pub fn first_sighting(addr: usize) -> bool {
    FIRST_SIGHTING.get().is_some_and(|f| f(addr))
}
