//! CPython integration: the per-thread state that links a Python-level foreign call (the
//! `tp_call` hook) to the `ffi_call` inside it.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use crate::record::recorder::CallStats;

/// One call in `TIMING_EVERY` is timed (on average; the gap is randomised so periodic call
/// patterns cannot alias with it). 1 = every call.
pub static TIMING_EVERY: AtomicU32 = AtomicU32::new(1);

/// Per-thread state of the Python layer. All-zero is the valid initial state (see recorder).
#[derive(Default)]
pub struct ThreadState {
    /// Call site of the Python-level call in progress on this thread (0 = none).
    site: AtomicU32,
    /// Calls left until the next timed one.
    countdown: AtomicU32,
    rng: AtomicU64,
}

impl ThreadState {
    #[inline(always)]
    pub fn current_site(&self) -> u32 {
        self.site.load(Ordering::Relaxed)
    }

    /// Whether the call starting now is timed.
    #[inline(always)]
    pub fn should_time(&self) -> bool {
        let every = TIMING_EVERY.load(Ordering::Relaxed);
        if every <= 1 {
            return true;
        }
        let left = self.countdown.load(Ordering::Relaxed);
        if left > 1 {
            self.countdown.store(left - 1, Ordering::Relaxed);
            return false;
        }
        // xorshift64*: a gap uniform in 1..=2*every-1 keeps the mean at `every`.
        let mut x = self.rng.load(Ordering::Relaxed);
        if x == 0 {
            x = (self as *const Self as u64) | 1;
        }
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.store(x, Ordering::Relaxed);
        let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33;
        let gap = 1 + (r % (2 * every as u64 - 1)) as u32;
        self.countdown.store(gap, Ordering::Relaxed);
        true
    }

    /// Called by the ffi_call hook after the native call (t0/t1 = 0 when untimed).
    #[inline(always)]
    pub fn native_done(&self, _stats: &CallStats, _t0: u64, _t1: u64) {}
}

/// GOT entries the Python layer patches: (symbol, module name prefixes, hook address).
pub fn wanted_hooks() -> Vec<(&'static str, &'static [&'static str], usize)> {
    Vec::new()
}

/// File, function and line of an interned call site.
pub fn describe_site(_site: u32) -> Option<ffiprof_profile::Frame> {
    None
}
