//! The GOT trampoline's machine code and its enter/leave work.
//!
//! A patched GOT entry (or a pointer `dlsym` handed out) holds the address of one of
//! [`THUNKS`] 16-byte thunks, one per target function: `mov r11d, i` (its number) and a jump to
//! the common entry (an assembly fast path for calls that are only counted, then the enter
//! stub). The enter stub saves every register a call may pass
//! arguments in — rdi, rsi, rdx, rcx, r8, r9, rax (`%al`: the vector registers a variadic call
//! uses), r10 (a static chain) and xmm0–7 — calls [`native_enter`], restores them and jumps to
//! the target with the caller's stack exactly as it was, except for the return address, which
//! `native_enter` has swapped for the leave stub's (keeping the original on the thread's shadow
//! stack, `shadow`). When the target returns into the leave stub, it saves the return registers
//! (rax, rdx, xmm0, xmm1; x87 `st0` is never touched by the agent), asks [`native_leave`] for
//! the original return address and returns there. Nothing depends on the target's signature.
//!
//! What does not return normally:
//! - `longjmp` out of a target call leaves its entry on the shadow stack; the next enter or leave
//!   on that thread drops every entry whose stack slot lies at or below its own (`Shadow::prune`).
//! - An exception unwinding through a target call would find the leave stub as a return address,
//!   which no unwind table describes (the unwinder would give up and terminate the program). So
//!   `_Unwind_RaiseException`, `_Unwind_Resume`, `_Unwind_Resume_or_Rethrow` and
//!   `_Unwind_ForcedUnwind` are hooked in every module's GOT (libstdc++ imports them from
//!   libgcc_s) by [`UNWIND_HOOKS`]: before the unwinder starts, every swapped return address of
//!   the thread still live is put back in its stack slot (uftrace's `mcount_rstack_restore`).
//!   Those calls keep their count (taken at entry) but lose their time; their entries are
//!   pruned as above.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::shadow::{self, Shadow, DEPTH};
use crate::record::{clock, recorder};

pub use super::shadow::THUNKS;

/// The last thunk, kept for measuring the trampoline's floor ([`floor_ticks`]).
pub(super) const PROBE: usize = THUNKS - 1;
/// The interval the last probe call measured.
static PROBE_TICKS: AtomicU64 = AtomicU64::new(0);
const THUNK_SIZE: usize = 16;

/// The target function of each thunk (0: unused).
pub(super) static TARGETS: [AtomicUsize; THUNKS] = [const { AtomicUsize::new(0) }; THUNKS];

extern "C" {
    static ffiprof_native_thunks: u8;
    fn ffiprof_native_leave();
}

#[cfg(feature = "floor-probe")]
extern "C" {
    static ffiprof_floor1_thunks: u8;
    static ffiprof_floor2_thunks: u8;
}

pub(super) use super::asm::unwind_hooks;

/// The address of thunk `i`.
pub(super) fn thunk(i: usize) -> usize {
    thunk0() + i * THUNK_SIZE
}

/// The thunk index of `addr`, if it is one of ours.
pub(super) fn thunk_index(addr: usize) -> Option<usize> {
    let base = thunk(0);
    (addr >= base && addr < base + THUNKS * THUNK_SIZE && (addr - base).is_multiple_of(THUNK_SIZE))
        .then(|| (addr - base) / THUNK_SIZE)
}

fn leave_stub() -> usize {
    ffiprof_native_leave as *const () as usize
}

/// Called by the enter stub: `index` is the thunk's number, `slot` the caller's return address
/// on the stack. Returns the target to jump to.
pub(super) extern "C" fn native_enter(index: usize, slot: *mut usize) -> usize {
    let target = match TARGETS.get(index) {
        Some(t) => t.load(Ordering::Relaxed),
        None => 0,
    };
    // SAFETY: `slot` is the return-address slot of the call being made, as the stub computed.
    crate::runtime::guard((), || unsafe { enter(index, slot, target) });
    target
}

fn thunk0() -> usize {
    // The floor probe's reduced thunks (see `asm`), when a floor level is set (before any hook
    // is installed, so every patched entry and look-up sees one table).
    #[cfg(feature = "floor-probe")]
    match crate::python::floor_probe::level() {
        0 => {}
        1 => return std::ptr::addr_of!(ffiprof_floor1_thunks) as usize,
        _ => return std::ptr::addr_of!(ffiprof_floor2_thunks) as usize,
    }
    std::ptr::addr_of!(ffiprof_native_thunks) as usize
}

/// Counts the call; when it is to be timed, and its thread can (it has a shadow stack with room,
/// and this is not a signal handler interrupting the trampoline's own work), swaps its return
/// address for the leave stub's. A call is timed when it is one of its pair's first
/// [`recorder::ALWAYS_TIMED`]; inside a Python-level call that takes its native interval from
/// us (`CallCtx::native_via_got`), when that call is timed (its wrapper's random sample, so that
/// the two layers time the same calls); elsewhere when the thread's countdown says so (1 in
/// `--timing-sample` at random). Untimed calls leave nothing behind: the target returns straight
/// to its caller.
///
/// # Safety
/// `slot` must be the return-address slot of the call to thunk `index`'s `target` in progress.
#[inline(always)]
unsafe fn enter(index: usize, slot: *mut usize, target: usize) {
    if index != PROBE && !crate::runtime::ACTIVE.load(Ordering::Relaxed) {
        return;
    }
    let Some(sh) = shadow::current() else {
        return;
    };
    // A plain load and store: only this thread, and its signal handlers, which run to their end
    // before it goes on, touch its stack.
    if sh.busy.load(Ordering::Relaxed) != 0 {
        return;
    }
    sh.busy.store(1, Ordering::Relaxed);
    // SAFETY: `slot` as per the contract.
    unsafe { count_and_push(sh, index, slot, target) };
    sh.busy.store(0, Ordering::Relaxed);
}

/// [`enter`]'s work while `busy` is set.
///
/// # Safety
/// As [`enter`].
#[inline(always)]
unsafe fn count_and_push(sh: &Shadow, index: usize, slot: *mut usize, target: usize) {
    if index == PROBE {
        // SAFETY: as per the contract.
        return unsafe { push(sh, slot, 0) };
    }
    let Some(stats) = thread_stats(sh, index, target) else {
        return;
    };
    stats.calls.add(1);
    let first = stats.first.timed.get() < recorder::ALWAYS_TIMED as u64;
    let inside = python_call(sh);
    if inside.is_some() {
        stats.in_builtin_calls.add(1);
    }
    let timed = match inside {
        // The Python-level call around it decides (its own random sample).
        Some(timed) => timed || first,
        None => {
            let c = sh.countdown.load(Ordering::Relaxed);
            let sampled = c <= 1;
            sh.countdown.store(
                if sampled { next_gap(sh) } else { c - 1 },
                Ordering::Relaxed,
            );
            sampled || first
        }
    };
    if !timed {
        return;
    }
    // SAFETY: as per the contract.
    unsafe { push(sh, slot, stats as *const _ as usize) };
}

/// Pushes the call whose return address is in `slot`, counting into `stats` (0: the floor
/// probe), and swaps its return address for the leave stub's.
///
/// # Safety
/// As [`enter`].
#[inline(always)]
unsafe fn push(sh: &Shadow, slot: *mut usize, stats: usize) {
    let slot_addr = slot as usize;
    let depth = sh.prune(slot_addr);
    let Some(e) = sh.entries.get(depth) else {
        return;
    };
    // SAFETY: per the contract, `slot` holds the caller's return address.
    e.ret.store(unsafe { *slot }, Ordering::Relaxed);
    e.slot.store(slot_addr, Ordering::Relaxed);
    e.stats.store(stats, Ordering::Relaxed);
    sh.depth.store(depth + 1, Ordering::Relaxed);
    e.t0.store(clock::now(), Ordering::Relaxed);
    // SAFETY: as above; the leave stub returns to the address kept in the entry.
    unsafe { *slot = leave_stub() };
}

/// The gap to the next randomly timed call: uniform in 1..=2n-1 (mean n, the session's
/// `--timing-sample`), from the thread's xorshift generator.
#[cold]
fn next_gap(sh: &Shadow) -> u32 {
    let every = crate::python::TIMING_EVERY.load(Ordering::Relaxed).max(1);
    if every == 1 {
        return 1;
    }
    let mut x = sh.rng.load(Ordering::Relaxed);
    if x == 0 {
        x = (clock::now() as u32) | 1;
    }
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    sh.rng.store(x, Ordering::Relaxed);
    1 + x % (2 * every - 1)
}

/// When the Python-level call in progress on this thread takes its native interval from the
/// trampoline (`CallCtx::native_via_got`): whether it is timed. None otherwise (no such call, or
/// a ctypes/cffi ABI call whose `ffi_call` hook times it): the thread's countdown then decides.
#[inline(always)]
fn python_call(sh: &Shadow) -> Option<bool> {
    // SAFETY: a cached recorder is leaked and never freed; its ctx, when non-null, is the live
    // CallCtx of this thread's innermost Python-level call.
    unsafe {
        (sh.recorder.load(Ordering::Relaxed) as *const recorder::ThreadRecorder)
            .as_ref()
            .and_then(|r| r.python.current().as_ref())
            .filter(|c| c.native_via_got)
            .map(|c| c.timed)
    }
}

/// This thread's statistics for thunk `index` (whose target is `target`), from the shadow
/// stack's cache; looked up (and created) on a thread's first call of the target, and again
/// after its recorders were forgotten. A cached pair's `function` is the thunk's target (a
/// thunk's target never changes): the assembly fast path jumps to it from there. Target calls are recorded per C function, at no Python
/// site (the Python-level call around them has its own).
#[inline(always)]
fn thread_stats(sh: &Shadow, index: usize, target: usize) -> Option<&'static recorder::CallStats> {
    let generation = recorder::GENERATION.load(Ordering::Relaxed);
    if sh.generation.load(Ordering::Relaxed) == generation {
        let cached = sh.stats.get(index)?.load(Ordering::Relaxed);
        // SAFETY: a cached CallStats of this thread's current recorder, leaked, never freed.
        if let Some(s) = unsafe { (cached as *const recorder::CallStats).as_ref() } {
            return Some(s);
        }
    }
    thread_stats_slow(sh, index, target, generation)
}

#[cold]
#[inline(never)]
fn thread_stats_slow(
    sh: &Shadow,
    index: usize,
    target: usize,
    generation: u64,
) -> Option<&'static recorder::CallStats> {
    if sh.generation.load(Ordering::Relaxed) != generation {
        for s in &sh.stats {
            s.store(0, Ordering::Relaxed);
        }
        sh.recorder.store(0, Ordering::Relaxed);
        sh.generation.store(generation, Ordering::Relaxed);
    }
    let rec = recorder::current()?;
    sh.recorder
        .store(rec as *const _ as usize, Ordering::Relaxed);
    rec.python.note_native_shadow(sh as *const Shadow as usize);
    let Some(stats) = rec.native_stats(target, 0, crate::runtime::first_sighting) else {
        recorder::DROPPED.fetch_add(1, Ordering::Relaxed);
        return None;
    };
    if stats.excluded {
        return None;
    }
    // Cached once its first calls, which are all timed, are done: the assembly fast paths,
    // which only count, take a cached pair's calls without asking (a new attach session's
    // zeroed pairs start uncached again: `recorder::clear_all` moves the generation on).
    if stats.first.timed.get() >= recorder::ALWAYS_TIMED as u64 {
        sh.stats
            .get(index)?
            .store(stats as *const _ as usize, Ordering::Relaxed);
    }
    Some(stats)
}

/// Called by the leave stub with the stack pointer the target returned with (one word above the
/// slot its return address was in). Returns the caller's real return address.
pub(super) extern "C" fn native_leave(rsp: usize) -> usize {
    // SAFETY: called only by the leave stub, reached only through a swapped return address.
    let ret = crate::runtime::guard(0, || unsafe { leave(rsp, clock::now()) });
    if ret == 0 {
        // No entry for this return: the caller's address is lost, nothing can go on.
        // SAFETY: abort is always safe to call.
        unsafe { libc::abort() }
    }
    ret
}

/// Pops the entry of the call returning with `rsp` and records its native time.
///
/// # Safety
/// Only from the leave stub.
unsafe fn leave(rsp: usize, now: u64) -> usize {
    let slot = rsp.wrapping_sub(8);
    let Some(sh) = shadow::existing() else {
        return 0;
    };
    let was = sh.busy.load(Ordering::Relaxed);
    sh.busy.store(1, Ordering::Relaxed);
    // Entries above ours are calls left by longjmp or an exception.
    let Some((depth, e)) = sh.find(slot).and_then(|d| Some((d, sh.entries.get(d)?))) else {
        sh.busy.store(was, Ordering::Relaxed);
        return 0;
    };
    let ret = e.ret.load(Ordering::Relaxed);
    let stats = e.stats.load(Ordering::Relaxed);
    let t0 = e.t0.load(Ordering::Relaxed);
    sh.depth.store(depth, Ordering::Relaxed);
    if stats == 0 {
        PROBE_TICKS.store(now.wrapping_sub(t0), Ordering::Relaxed);
    } else if crate::runtime::ACTIVE.load(Ordering::Relaxed) {
        // SAFETY: a cached recorder is leaked and never freed; a non-null ctx is the live
        // CallCtx of this thread's innermost Python-level call, which only this thread touches.
        let ctx = unsafe {
            (sh.recorder.load(Ordering::Relaxed) as *const recorder::ThreadRecorder)
                .as_ref()
                .and_then(|r| r.python.current().as_mut())
        };
        // Timed because the Python-level call around it is (see `count_and_push`): it stands
        // for as many calls as that one does.
        let weight = match ctx.as_ref() {
            Some(c) if c.native_via_got && c.timed => u32::from(c.weight),
            _ => 1,
        };
        // SAFETY: a CallStats of this thread's recorder, leaked and never freed.
        if let Some(s) = unsafe { (stats as *const recorder::CallStats).as_ref() } {
            let first = s.first.timed.get() < recorder::ALWAYS_TIMED as u64;
            s.record_native_weighted(first, now.wrapping_sub(t0), weight);
        }
        if let Some(ctx) = ctx {
            ctx.native_interval(t0, now);
        }
    }
    sh.busy.store(was, Ordering::Relaxed);
    ret
}

/// Before an exception unwinds (`sp` is the unwinder entry's return-address slot): puts every
/// return address this thread's live target calls swapped back in its stack slot.
pub(super) extern "C" fn unwind_restore(sp: usize) {
    crate::runtime::guard((), || restore_thread(sp));
}

fn restore_thread(sp: usize) {
    let Some(sh) = shadow::existing() else {
        return;
    };
    let was = sh.busy.load(Ordering::Relaxed);
    sh.busy.store(1, Ordering::Relaxed);
    let depth = sh.depth.load(Ordering::Relaxed).min(DEPTH);
    let stub = leave_stub();
    for e in sh.entries.iter().take(depth) {
        let slot = e.slot.load(Ordering::Relaxed);
        if slot <= sp {
            continue;
        }
        let cell = slot as *mut usize;
        // SAFETY: a live frame's return-address slot (above the unwinder's own frame) of this
        // thread, which the trampoline wrote the stub into.
        unsafe {
            if *cell == stub {
                *cell = e.ret.load(Ordering::Relaxed);
            }
        }
    }
    sh.busy.store(was, Ordering::Relaxed);
}

#[inline(never)]
extern "C" fn probe_target() {}

/// The median interval the trampoline measures around an empty function (called through the
/// reserved last thunk, timed whether or not recording is on): what each of its timed native
/// intervals over-counts. Registered with the clock by `hook::install`.
pub fn floor_ticks() -> u64 {
    let Some(cell) = TARGETS.get(PROBE) else {
        return 0;
    };
    cell.store(probe_target as *const () as usize, Ordering::Release);
    // SAFETY: the probe thunk forwards to `probe_target`, an `extern "C" fn()`.
    let f: extern "C" fn() = unsafe { crate::runtime::fn_at(thunk(PROBE)) };
    let mut samples = [0u64; 1001];
    for s in samples.iter_mut() {
        PROBE_TICKS.store(0, Ordering::Relaxed);
        f();
        *s = PROBE_TICKS.load(Ordering::Relaxed);
    }
    samples.sort_unstable();
    samples[samples.len() / 2]
}
