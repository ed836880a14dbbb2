//! Per-thread recorders: the hot path's only data structure.
//!
//! A thread finds its recorder from its thread pointer (`fs:0`, one instruction) in a fixed global
//! table, then its per-(function, site) statistics in an open-addressing table of its own. Only the
//! owning thread writes a recorder, with relaxed atomic loads and stores (plain moves on x86-64), so
//! the hot path takes no lock, makes no syscall and allocates only the first time a thread meets a
//! (function, site) pair. The snapshotter reads the same atomics from its own thread. The Python
//! layer's wrappers mostly find a pair without the table: as the thread's last call
//! (`ThreadState::repeated_call`) or in its position's inline cache (`frames::Site::cached`),
//! which checks the pair's `owner`.
//!
//! A thread pointer is reused only after its thread is gone, so a new thread that inherits a dead
//! thread's recorder just keeps adding to totals nobody else writes any more: no destructor, no TLS
//! (a `thread_local!` in a cdylib costs a `__tls_get_addr` call and can panic in exit hooks).

use std::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU16, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};

use ffiprof_profile::Split;

/// Latency buckets: exact below 128 ticks, then 64 per power of two (under 1.6 % wide).
pub const BUCKETS: usize = 64 * 37 + 64;
const MAX_TICKS: u64 = (1u64 << 42) - 1;

#[inline(always)]
pub fn bucket_of(ticks: u64) -> usize {
    let v = ticks.min(MAX_TICKS);
    if v < 128 {
        v as usize
    } else {
        let msb = 63 - v.leading_zeros();
        let shift = msb - 6;
        64 * shift as usize + (v >> shift) as usize
    }
}

/// The middle of bucket `i`, in ticks.
pub fn bucket_value(i: usize) -> u64 {
    if i < 128 {
        i as u64
    } else {
        let shift = (i / 64 - 1) as u32;
        let sub = (i % 64 + 64) as u64;
        let lo = sub << shift;
        let hi = ((sub + 1) << shift) - 1;
        lo + (hi - lo) / 2
    }
}

/// Counters a relaxed load-add-store can bump: only the owning thread writes them. Transparent:
/// the GOT trampoline's assembly fast path bumps one with a single `inc`.
#[derive(Default)]
#[repr(transparent)]
pub struct Counter(AtomicU64);

impl Counter {
    #[inline(always)]
    pub fn add(&self, v: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(v),
            Ordering::Relaxed,
        );
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
    pub fn reset(&self) {
        self.0.store(0, Ordering::Relaxed)
    }
}

/// The first calls of a (function, site) pair on a thread that are always timed, whatever the
/// sampling rate: a function called a handful of times (an `open`, a `close`, a rare slow call)
/// gets its true time instead of 0 or one sample scaled up, and the one-off costs of first calls
/// (page faults, lazy binding, cold caches) are counted once instead of multiplied by the
/// sampling rate. 8 is the default rate's own number: a pair the 1-in-8 sampling would time less
/// than once in expectation is timed exactly, at a bounded price (8 timed calls per pair and
/// thread, ~0.1 µs each, and 64 bytes per pair for their latencies).
pub const ALWAYS_TIMED: usize = 8;

/// Time sums of one stratum of calls, in ticks, and how many calls were timed in it.
/// `ticks.construction` stays 0: constructions are timed whenever they happen, never sampled, and
/// add up in [`CallStats::construction_ticks`] whatever the stratum of the call they serve.
#[derive(Default)]
pub struct Times {
    pub timed: Counter,
    pub ticks: Split<Counter>,
}

impl Times {
    fn clear(&self) {
        self.timed.reset();
        for (_, c) in self.ticks.iter() {
            c.reset();
        }
    }
}

/// A first-call latency slot of a call with no native part (see [`CallStats::record_unsplit`]).
pub const NO_NATIVE: u64 = u64::MAX;

/// Everything one thread recorded for one (C function, Python call site) pair.
///
/// Its calls fall in two strata, fixed before each call is measured: the first
/// [`ALWAYS_TIMED`] calls, every one timed (`first`: exact sums), and the rest, of which a
/// random sample is timed (`sampled`, `hist`: scaled to the rest's calls when a profile is
/// built). Every count and byte is exact in both.
pub struct CallStats {
    pub function: usize,
    /// Interned call-site id (0: not called from Python, or site unknown).
    pub site: u32,
    /// Set at first sighting when `--lib` excludes the function's library.
    pub excluded: bool,
    /// Calls seen through the GOT trampoline (`hook::native`: a module's own call into a
    /// `--lib` target), not through libffi. Kept apart from the function's libffi calls by
    /// its key (see [`ThreadRecorder::native_stats`]).
    pub via_got: bool,
    /// The address of the recorder these statistics belong to (0 outside one, in unit tests):
    /// what a cache of pairs checks a pair's thread by. Recorders are never freed, so no new
    /// recorder (a forked child's) ever has an old one's address.
    pub owner: usize,
    /// Facts about the site the Python layer keeps with the pair, so that a call need not look
    /// its site up twice (bit 0: no `argtypes`, bit 1: default `restype`).
    pub site_flags: AtomicU8,
    /// The pair's pointer signature (`pointers::SIG_*`), decided from its cif at first sight
    /// (0: not yet): whether its calls are reported to the pointer flow — one flag test for
    /// calls that pass and return no pointer.
    pub ptr_sig: AtomicU8,
    /// The function's id in the pointer-flow tables (0: none), set with `ptr_sig`.
    pub ptr_fn: AtomicU16,
    /// Which of the first 16 arguments are pointers (bit i: argument i), set with `ptr_sig`.
    pub ptr_args: AtomicU16,
    /// The index of the pair's pointer argument when it has exactly one and no reported result
    /// (its calls may use the cache below), else `u8::MAX`; set with `ptr_sig`.
    pub ptr_one: AtomicU8,
    /// The address of the `hook::ffi_pointers` entry the trampolines tail-call for the pair's
    /// counted calls (the cached one when `ptr_one` says the cache can answer), set with
    /// `ptr_sig`.
    pub ptr_entry: AtomicUsize,
    /// A one-entry cache, owner thread only: the pointer argument's value at a call of the pair
    /// that changed nothing in the pointer flow, and the flow's epoch then
    /// (`pointers::epoch`; 0: never). A call with the same value in the same epoch changes
    /// nothing either, and is not looked up (`hook::ffi_pointers`). Only pairs with one pointer
    /// argument and no reported result fill it.
    pub ptr_quiet: AtomicUsize,
    pub ptr_quiet_epoch: AtomicU64,
    /// Non-null pointers the pair's calls returned that were none of their pointer arguments.
    pub ptr_made: Counter,
    pub calls: Counter,
    pub arg_count: AtomicU32,
    pub arg_bytes: Counter,
    pub ret_bytes: Counter,
    pub buffer_bytes: Counter,
    /// Calls left before the next timed one (owner thread only; see `ThreadState::sample_pair`).
    pub countdown: AtomicU32,
    /// How many calls the call that ends the current gap stands for, relative to the
    /// `--timing-sample` rate (0 and 1: one): a bracketed builtin's pair thins its timing out
    /// once it has plenty of samples (`ThreadState::sample_pair_thinning`). Owner thread only.
    pub gap_weight: AtomicU32,
    /// What the sampled stratum's `timed` holds beyond the calls actually timed: a thinned
    /// pair's timed call adds its weight there, and its weight less one here.
    pub thinned: Counter,
    /// The always-timed first calls, and the native ticks of each for the histogram.
    pub first: Times,
    pub first_native: [Counter; ALWAYS_TIMED],
    /// The randomly sampled calls after the first.
    pub sampled: Times,
    pub construction_ticks: Counter,
    pub construction_bytes: Counter,
    pub python_calls: Counter,
    /// Calls through the GOT trampoline made inside a bracketed builtin's call (`via_got` pairs).
    pub in_builtin_calls: Counter,
    /// Timed calls that could not be split (a builtin's call with no target call inside, or of
    /// a module that is the target itself), by stratum (first calls, sampled calls): how many,
    /// and their whole intervals. They count among their stratum's timed calls, so they are
    /// scaled like the split ones; they add nothing to the native latencies.
    pub unsplit_timed: [Counter; 2],
    pub unsplit_ticks: [Counter; 2],
    pub fresh_buffer_calls: Counter,
    pub undeclared_argtypes: Counter,
    pub undeclared_restype: Counter,
    /// Python time between consecutive calls of one site on this thread, on sampled calls.
    pub gap_ticks: Counter,
    pub gap_samples: Counter,
    /// Sampled whole stacks: (stack id + 1, samples); samples beyond these slots in `stacks_other`.
    pub stacks: [(AtomicU32, Counter); STACK_SLOTS],
    pub stacks_other: Counter,
    /// Native latencies of the sampled calls.
    pub hist: [Counter; BUCKETS],
}

/// Distinct sampled stacks kept per (function, site).
pub const STACK_SLOTS: usize = 8;

impl CallStats {
    pub(crate) fn new(function: usize, site: u32, excluded: bool) -> Box<Self> {
        // SAFETY: every field of CallStats is an integer, an atomic, a bool, or a struct or array
        // of those (Counter, Times and its Split<Counter>), for which all-zero bytes are a valid
        // value; allocating zeroed keeps 20 KiB off small thread stacks.
        let mut s: Box<Self> = unsafe { Box::new_zeroed().assume_init() };
        s.function = function;
        s.site = site;
        s.excluded = excluded;
        if excluded {
            // Never timed: the hooks pass an excluded pair's calls straight through.
            s.countdown.store(u32::MAX, Ordering::Relaxed);
        }
        s
    }

    /// Counts one sampled occurrence of stack `id` (owner thread only).
    pub fn note_stack(&self, id: u32) {
        for (slot, count) in &self.stacks {
            let v = slot.load(Ordering::Relaxed);
            if v == id + 1 {
                count.add(1);
                return;
            }
            if v == 0 {
                slot.store(id + 1, Ordering::Relaxed);
                count.add(1);
                return;
            }
        }
        self.stacks_other.add(1);
    }

    /// The stratum a timed call belongs to: `first` when it was timed as one of the first calls.
    #[inline(always)]
    pub fn times(&self, first: bool) -> &Times {
        if first {
            &self.first
        } else {
            &self.sampled
        }
    }

    /// One timed call's native interval (owner thread only).
    #[inline(always)]
    pub fn record_native(&self, first: bool, ticks: u64) {
        self.record_native_weighted(first, ticks, 1);
    }

    /// One timed call's native interval, a sampled one standing for `weight` calls of the
    /// `--timing-sample` rate (see `gap_weight`): its stratum's timed count, ticks and
    /// latency bucket grow by `weight` times as much, so that the snapshot's scaling weighs each
    /// sample by the inverse of the rate it was drawn at. A first call is never weighted.
    #[inline(always)]
    pub fn record_native_weighted(&self, first: bool, ticks: u64, weight: u32) {
        if first {
            return self.record_first_native(ticks);
        }
        let w = u64::from(weight.max(1));
        self.sampled.timed.add(w);
        self.sampled.ticks.native.add(ticks.wrapping_mul(w));
        self.hist[bucket_of(ticks)].add(w);
        if w > 1 {
            self.thinned.add(w - 1);
        }
    }

    /// Files one timed call that could not be split (see `unsplit_ticks`): a timed call of its
    /// stratum, whose first-call slot holds [`NO_NATIVE`] (no latency) and whose whole interval
    /// is kept apart from the split.
    pub fn record_unsplit(&self, first: bool, ticks: u64) {
        self.record_unsplit_weighted(first, ticks, 1);
    }

    /// [`record_unsplit`](Self::record_unsplit) of a sampled call standing for `weight` calls
    /// (see [`record_native_weighted`](Self::record_native_weighted)).
    pub fn record_unsplit_weighted(&self, first: bool, ticks: u64, weight: u32) {
        let stratum = usize::from(!first);
        let w = if first { 1 } else { u64::from(weight.max(1)) };
        if first {
            let n = self.first.timed.get() as usize;
            if let Some(slot) = self.first_native.get(n) {
                slot.add(NO_NATIVE);
            }
        }
        self.times(first).timed.add(w);
        self.unsplit_timed[stratum].add(w);
        self.unsplit_ticks[stratum].add(ticks.wrapping_mul(w));
        if w > 1 {
            self.thinned.add(w - 1);
        }
    }

    #[cold]
    #[inline(never)]
    fn record_first_native(&self, ticks: u64) {
        let n = self.first.timed.get() as usize;
        self.first.timed.add(1);
        self.first.ticks.native.add(ticks);
        match self.first_native.get(n) {
            Some(slot) => slot.add(ticks),
            // Not reached: the ffi_call hook files no more first calls than there are slots.
            None => self.hist[bucket_of(ticks)].add(1),
        }
    }

    /// Zeroes everything recorded, keeping what the pair is (a new attach session reuses it).
    /// The pattern names every field, so a field added later must be handled here to compile.
    fn clear(&self) {
        let CallStats {
            function: _,
            site: _,
            excluded: _,
            via_got: _,
            owner: _,
            site_flags: _,
            ptr_sig: _,
            ptr_fn: _,
            ptr_args: _,
            ptr_one: _,
            ptr_entry: _,
            ptr_quiet,
            ptr_quiet_epoch,
            ptr_made,
            calls,
            arg_count,
            arg_bytes,
            ret_bytes,
            buffer_bytes,
            countdown,
            gap_weight,
            thinned,
            first,
            first_native,
            sampled,
            construction_ticks,
            construction_bytes,
            python_calls,
            in_builtin_calls,
            unsplit_timed,
            unsplit_ticks,
            fresh_buffer_calls,
            undeclared_argtypes,
            undeclared_restype,
            gap_ticks,
            gap_samples,
            stacks,
            stacks_other,
            hist,
        } = self;
        for c in [
            ptr_made,
            calls,
            arg_bytes,
            ret_bytes,
            buffer_bytes,
            construction_ticks,
            construction_bytes,
            python_calls,
            in_builtin_calls,
            fresh_buffer_calls,
            undeclared_argtypes,
            undeclared_restype,
            gap_ticks,
            gap_samples,
            stacks_other,
            thinned,
        ] {
            c.reset();
        }
        gap_weight.store(0, Ordering::Relaxed);
        for c in unsplit_timed.iter().chain(unsplit_ticks.iter()) {
            c.reset();
        }
        arg_count.store(0, Ordering::Relaxed);
        ptr_quiet.store(0, Ordering::Relaxed);
        ptr_quiet_epoch.store(0, Ordering::Relaxed);
        countdown.store(if self.excluded { u32::MAX } else { 0 }, Ordering::Relaxed);
        first.clear();
        sampled.clear();
        for c in first_native {
            c.reset();
        }
        for (id, count) in stacks {
            id.store(0, Ordering::Relaxed);
            count.reset();
        }
        for c in hist {
            c.reset();
        }
    }
}

const STATS_SLOTS: usize = 2048;

struct StatsSlot {
    key: AtomicU64,
    stats: AtomicPtr<CallStats>,
}

/// One thread's recorder.
pub struct ThreadRecorder {
    slots: [StatsSlot; STATS_SLOTS],
    /// Per-thread state of the Python layer (current call, timestamps).
    pub python: super::call_ctx::ThreadState,
}

/// Unique per (function, site): user-space addresses fit in 47 bits and site ids in 16 (the
/// site table has 65536 slots and interning gives no id past 0xffff), so a key match needs no
/// second check, and neither part needs masking.
#[inline(always)]
fn stats_key(function: usize, site: u32) -> u64 {
    function as u64 | (site as u64) << 48
}

/// The key bit of pairs counted through the GOT trampoline.
const GOT_KEY: u64 = 1 << 47;

#[inline(always)]
fn mix(k: u64) -> usize {
    (k.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) as usize
}

impl ThreadRecorder {
    fn new() -> Box<Self> {
        // SAFETY: slots are atomics (zero = empty), and the Python
        // layer's ThreadState is documented to be valid all-zero; allocating zeroed keeps the
        // 32 KiB table off the calling thread's stack.
        unsafe { Box::new_zeroed().assume_init() }
    }

    /// The statistics of (function, site) on this thread, created on first sighting.
    /// `excluded` is asked only then. Returns None when the table is full.
    #[inline(always)]
    pub fn stats(
        &self,
        function: usize,
        site: u32,
        excluded: impl FnOnce(usize) -> bool,
    ) -> Option<&CallStats> {
        let key = stats_key(function, site);
        let mut i = mix(key) & (STATS_SLOTS - 1);
        for _ in 0..STATS_SLOTS {
            let slot = &self.slots[i];
            let k = slot.key.load(Ordering::Relaxed);
            if k == key {
                // SAFETY: a published CallStats is leaked and never freed while the process lives;
                // the key is published after the pointer, so a matching key has one.
                return unsafe { slot.stats.load(Ordering::Acquire).as_ref() };
            } else if k == 0 {
                let s = Box::leak(CallStats::new(function, site, excluded(function)));
                s.owner = self as *const Self as usize;
                slot.stats.store(s, Ordering::Release);
                slot.key.store(key, Ordering::Release);
                return Some(s);
            }
            i = (i + 1) & (STATS_SLOTS - 1);
        }
        None
    }

    /// The statistics of (function, site) for calls seen through the GOT trampoline, created on
    /// first sighting: keyed apart from the function's libffi calls by bit 47 of the key, which
    /// no user-space address sets.
    #[inline(always)]
    pub fn native_stats(
        &self,
        function: usize,
        site: u32,
        excluded: impl FnOnce(usize) -> bool,
    ) -> Option<&CallStats> {
        let key = stats_key(function, site) | GOT_KEY;
        let slot = &self.slots[mix(key) & (STATS_SLOTS - 1)];
        if slot.key.load(Ordering::Relaxed) == key {
            // SAFETY: as in `stats`.
            return Some(unsafe { &*slot.stats.load(Ordering::Acquire) });
        }
        self.native_stats_slow(key, function, site, excluded)
    }

    #[cold]
    #[inline(never)]
    fn native_stats_slow(
        &self,
        key: u64,
        function: usize,
        site: u32,
        excluded: impl FnOnce(usize) -> bool,
    ) -> Option<&CallStats> {
        let mut i = mix(key) & (STATS_SLOTS - 1);
        for _ in 0..STATS_SLOTS {
            let slot = &self.slots[i];
            let k = slot.key.load(Ordering::Relaxed);
            if k == key {
                // SAFETY: as in `stats`.
                return unsafe { slot.stats.load(Ordering::Acquire).as_ref() };
            } else if k == 0 {
                let s = Box::leak(CallStats::new(function, site, excluded(function)));
                s.owner = self as *const Self as usize;
                s.via_got = true;
                slot.stats.store(s, Ordering::Release);
                slot.key.store(key, Ordering::Release);
                return Some(s);
            }
            i = (i + 1) & (STATS_SLOTS - 1);
        }
        None
    }

    /// The statistics of (function, site) if this thread has them already: the hooks' fast path,
    /// which must not call anything before the hooked call.
    #[inline(always)]
    pub fn existing_stats(&self, function: usize, site: u32) -> Option<&CallStats> {
        let key = stats_key(function, site);
        let slot = &self.slots[mix(key) & (STATS_SLOTS - 1)];
        if slot.key.load(Ordering::Relaxed) == key {
            // SAFETY: as in `stats`; the key is stored after the pointer, so it is never null.
            return Some(unsafe { &*slot.stats.load(Ordering::Acquire) });
        }
        None
    }

    /// The statistics of (function, site) if this thread has them, wherever they sit in the
    /// table: the call wrapper's look-up before the call (a pair not in its home slot must not
    /// look new to it, or every one of its calls would be timed).
    #[inline(always)]
    pub fn find_stats(&self, function: usize, site: u32) -> Option<&CallStats> {
        self.existing_stats(function, site)
            .or_else(|| self.find_stats_away(function, site))
    }

    #[cold]
    #[inline(never)]
    fn find_stats_away(&self, function: usize, site: u32) -> Option<&CallStats> {
        let key = stats_key(function, site);
        let mut i = mix(key) & (STATS_SLOTS - 1);
        for _ in 0..STATS_SLOTS {
            let slot = &self.slots[i];
            match slot.key.load(Ordering::Acquire) {
                // SAFETY: as in `stats`.
                k if k == key => return unsafe { slot.stats.load(Ordering::Acquire).as_ref() },
                0 => return None,
                _ => i = (i + 1) & (STATS_SLOTS - 1),
            }
        }
        None
    }

    /// Every (function, site) this thread has recorded.
    pub fn each(&self, mut f: impl FnMut(&CallStats)) {
        for slot in &self.slots {
            if slot.key.load(Ordering::Acquire) != 0 {
                // SAFETY: as in `stats`.
                if let Some(s) = unsafe { slot.stats.load(Ordering::Acquire).as_ref() } {
                    f(s);
                }
            }
        }
    }
}

const THREAD_SLOTS: usize = 4096;

struct ThreadSlot {
    key: AtomicUsize,
    recorder: AtomicPtr<ThreadRecorder>,
}

static THREADS: [ThreadSlot; THREAD_SLOTS] = [const {
    ThreadSlot {
        key: AtomicUsize::new(0),
        recorder: AtomicPtr::new(std::ptr::null_mut()),
    }
}; THREAD_SLOTS];

/// Bumped whenever every recorder is forgotten ([`forget_all`]): a cache of recorder or
/// `CallStats` pointers kept elsewhere (the GOT trampoline's, per thread) is stale when its
/// generation differs.
pub static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Calls that could not be recorded because a table was full.
pub static DROPPED: AtomicU64 = AtomicU64::new(0);
/// Set when the first thread is registered (the snapshotter starts lazily after a fork).
pub static ANY_THREAD: AtomicBool = AtomicBool::new(false);

#[inline(always)]
pub(crate) fn thread_pointer() -> usize {
    let tp: usize;
    // SAFETY: on x86-64 Linux, fs:0 holds the thread control block's own address (the TCB's
    // self-pointer), which is unique among live threads; reading it has no side effects.
    unsafe {
        core::arch::asm!("mov {}, fs:0", out(reg) tp, options(nostack, readonly, preserves_flags))
    };
    tp
}

/// This thread's recorder when the agent is recording (`runtime::ACTIVE`).
#[inline(always)]
pub fn if_active() -> Option<&'static ThreadRecorder> {
    if !crate::runtime::ACTIVE.load(Ordering::Relaxed) {
        return None;
    }
    // No re-entrancy flag: the agent never calls foreign functions itself, and a nested
    // Python-level call (a callback, a finalizer) is a real call with its own CallCtx.
    current()
}

/// This thread's recorder, created on its first call. None when the table of threads is full.
#[inline(always)]
pub fn current() -> Option<&'static ThreadRecorder> {
    if let Some(rec) = current_at_home() {
        return Some(rec);
    }
    let key = thread_pointer();
    current_slow(key, mix(key as u64) & (THREAD_SLOTS - 1))
}

/// This thread's recorder when it sits in its home slot (nearly always), else None — with no
/// call on any path, so a hook's fast path needs no stack frame; the caller falls back to
/// `current`.
#[inline(always)]
pub fn current_at_home() -> Option<&'static ThreadRecorder> {
    let key = thread_pointer();
    let slot = &THREADS[mix(key as u64) & (THREAD_SLOTS - 1)];
    if slot.key.load(Ordering::Acquire) == key {
        // SAFETY: recorders are leaked, never freed; null only during the owner's own claim.
        return unsafe { slot.recorder.load(Ordering::Acquire).as_ref() };
    }
    None
}

/// A thread's first call, or a collision in the table.
#[cold]
#[inline(never)]
fn current_slow(key: usize, start: usize) -> Option<&'static ThreadRecorder> {
    let mut i = start;
    for _ in 0..THREAD_SLOTS {
        let slot = &THREADS[i];
        let k = slot.key.load(Ordering::Acquire);
        if k == key {
            // SAFETY: recorders are leaked, never freed; null only during the owner's own claim.
            return unsafe { slot.recorder.load(Ordering::Acquire).as_ref() };
        }
        if k == 0
            && slot
                .key
                .compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            let r: &'static ThreadRecorder = Box::leak(ThreadRecorder::new());
            r.python.set_owner(key);
            slot.recorder
                .store(r as *const _ as *mut _, Ordering::Release);
            ANY_THREAD.store(true, Ordering::Release);
            return Some(r);
        }
        if k == 0 {
            // Another thread claimed this slot between our load and CAS: look again at it.
            continue;
        }
        i = (i + 1) & (THREAD_SLOTS - 1);
    }
    None
}

/// Every recorder of every thread seen so far.
pub fn each_thread(mut f: impl FnMut(&ThreadRecorder)) {
    for slot in THREADS.iter() {
        // SAFETY: as in `current`.
        if let Some(r) = unsafe { slot.recorder.load(Ordering::Acquire).as_ref() } {
            f(r);
        }
    }
}

/// Zeroes every thread's recorder for a new attach session in the same process, keeping the
/// recorders and their tables, so memory stays bounded by threads × (function, site) pairs however
/// many sessions come (forgetting them would leak ~50 KiB per thread and session). Recording must
/// be off; a call still in flight from the last session may add itself to the new one (at most
/// one per thread). `excluded_now` says whether a function is excluded under the new session's
/// filter; if any recorded pair disagrees, nothing is cleared and false is returned (the caller
/// then forgets the recorders: `excluded` is fixed when a pair is created).
pub fn clear_all(excluded_now: impl Fn(usize) -> bool) -> bool {
    let mut same_filter = true;
    each_thread(|r| {
        r.each(|s| {
            if same_filter && excluded_now(s.function) != s.excluded {
                same_filter = false;
            }
        })
    });
    if !same_filter {
        return false;
    }
    each_thread(|r| r.each(CallStats::clear));
    // The GOT trampoline's caches of statistics hold pairs only once their first calls are
    // done (its fast paths take them untimed): a new generation empties them, and no thread's
    // state points its lean fast path at a stack still holding them.
    GENERATION.fetch_add(1, Ordering::Release);
    each_thread(|r| r.python.forget_native_shadow());
    super::call_ctx::forget_lean_thread();
    DROPPED.store(0, Ordering::Relaxed);
    true
}

/// Forgets every thread (in a forked child: the parent's counts are not the child's). The old
/// recorders are leaked on purpose; the child is single-threaded here, so nobody is writing them.
pub fn forget_all() {
    GENERATION.fetch_add(1, Ordering::Release);
    super::call_ctx::forget_lean_thread();
    for slot in THREADS.iter() {
        slot.recorder.store(std::ptr::null_mut(), Ordering::Release);
        slot.key.store(0, Ordering::Release);
    }
    DROPPED.store(0, Ordering::Relaxed);
    ANY_THREAD.store(false, Ordering::Release);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for v in (0..100_000u64).chain([1 << 20, 1 << 30, 1 << 41]) {
            let b = bucket_of(v);
            assert!(b >= last || v == 1 << 20, "{v}");
            last = b;
            assert!(b < BUCKETS);
            let mid = bucket_value(b) as f64;
            assert!(
                (mid - v as f64).abs() <= (v as f64) * 0.016 + 0.5,
                "{v} -> {b} -> {mid}"
            );
        }
    }

    #[test]
    fn clear_all_zeroes_and_keeps_the_pairs() {
        let r = current().unwrap();
        let s = r.stats(0x5151, 3, |_| false).unwrap();
        s.calls.add(5);
        s.record_native(true, 200);
        s.record_native(false, 300);
        s.sampled.ticks.gil_wait.add(40);
        assert_eq!(
            (s.first.ticks.native.get(), s.sampled.ticks.native.get()),
            (200, 300)
        );
        s.countdown.store(5, Ordering::Relaxed);
        s.note_stack(4);
        assert!(!clear_all(|f| f == 0x5151), "a changed filter refuses");
        assert_eq!(s.calls.get(), 5);
        assert!(clear_all(|_| false));
        assert_eq!(s.calls.get(), 0);
        assert_eq!((s.first.timed.get(), s.sampled.timed.get()), (0, 0));
        let ticks = |t: &Times| t.ticks.map(Counter::get);
        assert_eq!((ticks(&s.first), ticks(&s.sampled)), Default::default());
        assert_eq!(s.first_native[0].get(), 0);
        assert_eq!(s.countdown.load(Ordering::Relaxed), 0);
        assert!(s.hist.iter().all(|c| c.get() == 0));
        assert!(s
            .stacks
            .iter()
            .all(|(id, c)| id.load(Ordering::Relaxed) == 0 && c.get() == 0));
        let again = r.stats(0x5151, 3, |_| true).unwrap();
        assert!(std::ptr::eq(s, again), "the pair is reused");
    }

    #[test]
    fn same_thread_same_recorder_and_stats() {
        let a = current().unwrap() as *const _;
        let b = current().unwrap() as *const _;
        assert_eq!(a, b);
        let r = current().unwrap();
        let s1 = r.stats(0x1234, 0, |_| false).unwrap() as *const _;
        let s2 = r.stats(0x1234, 0, |_| true).unwrap() as *const _;
        let s3 = r.stats(0x1234, 7, |_| false).unwrap() as *const _;
        assert_eq!(s1, s2);
        assert_ne!(s1, s3);
        let other = std::thread::spawn(|| current().unwrap() as *const _ as usize)
            .join()
            .unwrap();
        assert_ne!(other, a as usize);
    }
}
