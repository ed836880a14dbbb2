//! The bottom layer: process-wide flags every other layer reads — whether recording is on, the
//! pid the agent started in, debug output — and the errno and `dlerror` guards of code that runs
//! inside the host's calls. It calls nothing of the agent; the session (`agent`) sets these.
//!
//! [`guard`] is how every entry from C (hooks, callbacks, handlers the host or the loader calls)
//! keeps a panic of ours from reaching the host.
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

// The guards below catch panics only when they unwind.
#[cfg(panic = "abort")]
compile_error!(
    "build the agent with panic = \"unwind\": with abort, a panic of ours ends the host"
);

/// Runs `f`, returning `default` if it panics: the wrapper of every entry from C (hooks,
/// loader and fork callbacks, pending calls, the constructor, the attach entry). Unwinding out of
/// an `extern "C" fn` aborts the process — the host's, here — so each such entry runs its work in
/// here and keeps outside it only code that cannot panic (the pass-through to the original,
/// errno); `tracer/tests/no_panic_into_c.rs` checks that for every entry. Not for signal
/// handlers, which must not allocate (a panic does): theirs are shown panic-free by that test.
///
/// Costs nothing on the way through (unwinding is table-driven). State `f` leaves half-done
/// stays so (no lock of ours poisons); a panic is a bug of the agent, and its message goes to
/// stderr. `default` is evaluated before `f` runs, outside the guard: keep it a plain value.
#[inline(always)]
pub fn guard<T>(default: T, f: impl FnOnce() -> T) -> T {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(default)
}
