//! The bottom layer: process-wide flags every other layer reads — whether recording is on, the
//! pid the agent started in, the mode, debug output — the errno and `dlerror` guards of code that
//! runs inside the host's calls, and [`ForkHeld`], the one way a layer's lock is held across
//! fork. It calls nothing of the agent; the session (`session`) sets these.
//!
//! [`guard`] is how every entry from C (hooks, callbacks, handlers the host or the loader calls)
//! keeps a panic of ours from reaching the host.
//!
//! `first_sighting` is the session's slow-path work on a thread's first call to a function; the
//! session registers it here at start, so the hooks below it reach it without naming it.

use std::ffi::CStr;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, AtomicUsize, Ordering};
use std::sync::OnceLock;

pub use crate::config::Mode;

/// Calls are being recorded (set and cleared by the session).
pub static ACTIVE: AtomicBool = AtomicBool::new(false);
static DEBUG: AtomicBool = AtomicBool::new(false);
/// The pid the agent started (or last forked) in: a vfork child shares our memory, not our pid.
pub static PID: AtomicU32 = AtomicU32::new(0);
static FIRST_SIGHTING: OnceLock<fn(usize) -> bool> = OnceLock::new();
/// The current session's [`Mode`], readable without a lock (in a fork handler, say).
static MODE: AtomicU8 = AtomicU8::new(0);

pub fn set_mode(mode: Mode) {
    MODE.store(mode as u8, Ordering::Relaxed);
}

pub fn mode() -> Mode {
    if MODE.load(Ordering::Relaxed) == Mode::Attach as u8 {
        Mode::Attach
    } else {
        Mode::Run
    }
}

/// A lock that the session takes before `fork` and releases after it, in the parent and in the
/// child, so that no other thread holds it when the child is made (the child has only the
/// forking thread, and a lock held by another would stay locked there forever). A layer lists
/// its locks in a `FORK_LOCKS` slice; the session's table (`lifecycle`) holds them all, in one
/// order.
pub trait ForkHeld: Sync {
    /// Takes the lock and keeps it after returning.
    fn hold(&self);
    /// Releases what [`ForkHeld::hold`] took.
    ///
    /// # Safety
    /// Only on the thread that called `hold`, once per `hold` (after fork: in either process).
    unsafe fn release(&self);
}

impl<T: Send> ForkHeld for parking_lot::Mutex<T> {
    fn hold(&self) {
        std::mem::forget(self.lock());
    }

    unsafe fn release(&self) {
        // SAFETY: the caller took this lock in `hold` on this thread and leaked its guard.
        unsafe { self.force_unlock() };
    }
}

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

/// The address of `name` in the process's global scope (`dlsym(RTLD_DEFAULT)`): how the agent
/// finds the interpreter's C API, never by linking it (a BIND_NOW link of Python symbols would
/// kill every non-Python child with "undefined symbol"). Leaves no `dlerror` state behind.
pub fn global_symbol(name: &CStr) -> Option<usize> {
    // SAFETY: dlsym with RTLD_DEFAULT only looks the name up in the global scope.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    if p.is_null() {
        clear_dlerror();
    }
    (!p.is_null()).then_some(p as usize)
}

/// The function pointer of type `F` at `addr`.
///
/// # Safety
/// `addr` must be the address of a function with exactly the signature `F` (a fn pointer type).
pub unsafe fn fn_at<F: Copy>(addr: usize) -> F {
    const { assert!(std::mem::size_of::<F>() == std::mem::size_of::<usize>()) };
    // SAFETY: per the contract; the sizes are equal.
    unsafe { std::mem::transmute_copy(&addr) }
}

/// A function kept for later calls — the original behind a hook, a C API function looked up at
/// start — typed by its signature `F` (an `unsafe extern "C" fn(...)` pointer type), so that a
/// caller gets a callable pointer without a transmute of its own. Empty until set.
pub struct Original<F> {
    addr: AtomicUsize,
    signature: PhantomData<F>,
}

impl<F: Copy> Original<F> {
    pub const fn new() -> Self {
        const { assert!(std::mem::size_of::<F>() == std::mem::size_of::<usize>()) };
        Original {
            addr: AtomicUsize::new(0),
            signature: PhantomData,
        }
    }

    /// Keeps the function at `addr` (0: none).
    ///
    /// # Safety
    /// `addr` must be 0 or the address of a function with exactly the signature `F`, which stays
    /// mapped for as long as the process may call it.
    pub unsafe fn set(&self, addr: usize) {
        self.addr.store(addr, Ordering::Release);
    }

    /// The function, if one was set.
    #[inline]
    pub fn get(&self) -> Option<F> {
        let addr = self.addr.load(Ordering::Acquire);
        // SAFETY: `set` promised that a non-zero address is a function of signature F.
        (addr != 0).then(|| unsafe { fn_at(addr) })
    }

    /// Its address (0: none), to compare with or to put back where it came from.
    pub fn addr(&self) -> usize {
        self.addr.load(Ordering::Acquire)
    }
}

impl<F: Copy> Default for Original<F> {
    fn default() -> Self {
        Self::new()
    }
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
/// errno); `agent/tests/no_panic_into_c.rs` checks that for every entry. Not for signal
/// handlers, which must not allocate (a panic does): theirs are shown panic-free by that test.
///
/// Costs nothing on the way through (unwinding is table-driven). State `f` leaves half-done
/// stays so (no lock of ours poisons); a panic is a bug of the agent, and its message goes to
/// stderr. `default` is evaluated before `f` runs, outside the guard: keep it a plain value.
#[inline(always)]
pub fn guard<T>(default: T, f: impl FnOnce() -> T) -> T {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or(default)
}
