//! Per-thread shadow stacks of the GOT trampoline: for each target call in progress on a thread,
//! the return address the trampoline took from the caller's stack, where that stack slot is, the
//! statistics the call counts into and when it started.
//!
//! Reached the way the recorders are (`recorder`): the thread pointer (`fs:0`) keys a fixed
//! table, with no TLS and no lock, so that the trampoline can run on any thread at any moment —
//! in a signal handler too. A thread's stack is mapped with `mmap` (async-signal-safe) on its
//! first target call, and never freed: the table is kept across fork (the forking thread keeps
//! its thread pointer, and with it its calls in progress) and after detach (a thread still inside
//! a target call returns through the trampoline).
//!
//! Only the owning thread, and signal handlers on it, touch a stack. A handler can interrupt the
//! trampoline's own work half-way; `busy` makes that safe: while it is set, a nested target call
//! (only a signal handler's can be) passes through uncounted instead of pushing.

use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Target calls in progress a thread can have: deeper ones (recursion through callbacks) pass
/// through uncounted.
pub const DEPTH: usize = 256;

/// One target call in progress. Plain words (relaxed atomics: moves on x86-64).
#[repr(C)]
pub struct Entry {
    /// The caller's return address, which the trampoline replaced by its leave stub.
    pub ret: AtomicUsize,
    /// The stack slot that held it: its frame is gone once the stack pointer is above it.
    pub slot: AtomicUsize,
    /// The `CallStats` the call counts into (0: not recorded).
    pub stats: AtomicUsize,
    /// Clock at entry.
    pub t0: AtomicU64,
}

/// How many target functions can have a thunk (`trampoline`).
pub const THUNKS: usize = 4096;

/// One thread's shadow stack, and what its calls need without a look-up: the thread's recorder
/// and its statistics for each thunk, valid while `generation` is the recorders'
/// (`recorder::GENERATION`: a forked child forgets the parent's recorders), and the countdown to
/// its next randomly timed call.
#[repr(C)]
pub struct Shadow {
    /// Set while the trampoline works on this stack (see the module comment).
    pub busy: AtomicU32,
    /// Calls left before the next randomly timed one, and the generator of the gaps.
    pub countdown: AtomicU32,
    pub rng: AtomicU32,
    /// Entries in use: `entries[..depth]`, innermost last.
    pub depth: AtomicUsize,
    pub generation: AtomicU64,
    /// This thread's `ThreadRecorder` (0: not looked up yet).
    pub recorder: AtomicUsize,
    pub entries: [Entry; DEPTH],
    /// This thread's `CallStats` for each thunk's target (0: not looked up yet).
    pub stats: [AtomicUsize; THUNKS],
}

impl Shadow {
    /// Before a call at `slot`: drops the entries of calls whose frames are gone — slot at or
    /// below the new one, on the same stack (the stack grows down, so a live caller's slot lies
    /// above every deeper frame). Such entries are left by `longjmp` out of a target call, by an
    /// exception unwinding through one, and by a thread that ended inside one. An entry more
    /// than [`SAME_STACK`] below is taken to be on another stack, and kept: a signal handler
    /// running on an alternate stack mapped above the thread's must not drop the calls it
    /// interrupted.
    #[inline(always)]
    pub fn prune(&self, slot: usize) -> usize {
        let mut d = self.depth.load(Ordering::Relaxed).min(DEPTH);
        while d > 0 {
            let Some(e) = self.entries.get(d - 1) else {
                break;
            };
            let s = e.slot.load(Ordering::Relaxed);
            if s > slot || slot - s > SAME_STACK {
                break;
            }
            d -= 1;
        }
        self.depth.store(d, Ordering::Relaxed);
        d
    }

    /// The depth of the entry of the call returning from `slot`, searched from the innermost:
    /// entries above it are calls left behind (see [`Shadow::prune`]) by frames that are gone,
    /// or, with a signal handler on another stack, none. None when no entry has that slot.
    #[inline(always)]
    pub fn find(&self, slot: usize) -> Option<usize> {
        let depth = self.depth.load(Ordering::Relaxed).min(DEPTH);
        (0..depth).rev().find(|&d| {
            self.entries
                .get(d)
                .is_some_and(|e| e.slot.load(Ordering::Relaxed) == slot)
        })
    }
}

/// How far below a new call an entry's slot may lie and still be taken as on the same stack
/// (dropped as gone): longjmp and exceptions unwind less than this.
const SAME_STACK: usize = 1 << 20;

const SLOTS: usize = 4096;

/// One slot of the table: C layout, read by the trampoline's assembly fast path (key at 0, the
/// stack at 8).
#[repr(C)]
pub(super) struct Slot {
    key: AtomicUsize,
    shadow: AtomicPtr<Shadow>,
}

static TABLE: [Slot; SLOTS] = [const {
    Slot {
        key: AtomicUsize::new(0),
        shadow: AtomicPtr::new(std::ptr::null_mut()),
    }
}; SLOTS];

/// The table, for the assembly fast path (which takes its address from here).
pub(super) static TABLE_REF: &[Slot; SLOTS] = &TABLE;
/// The hash multiplier, in memory for the assembly fast path's `imul`.
pub(super) static HASH_MUL: u64 = 0x9E37_79B9_7F4A_7C15;
/// `SLOTS - 1`, the mask of a home slot's index.
pub(super) const SLOT_MASK: usize = SLOTS - 1;

#[inline(always)]
fn home(key: usize) -> usize {
    ((key as u64).wrapping_mul(HASH_MUL) >> 40) as usize & SLOT_MASK
}

/// This thread's shadow stack if it has one (its home slot or further), else None.
#[inline(always)]
pub fn existing() -> Option<&'static Shadow> {
    let key = crate::record::recorder::thread_pointer();
    let mut i = home(key);
    for _ in 0..SLOTS {
        let slot = TABLE.get(i)?;
        match slot.key.load(Ordering::Acquire) {
            k if k == key => {
                // SAFETY: a published stack is a mapping never unmapped; null only while its
                // owner (this thread, interrupted by a signal) is still claiming it.
                return unsafe { slot.shadow.load(Ordering::Acquire).as_ref() };
            }
            0 => return None,
            _ => i = (i + 1) & (SLOTS - 1),
        }
    }
    None
}

/// This thread's shadow stack, mapped on its first target call. None when the table is full or
/// the mapping failed (the call then passes through uncounted). Async-signal-safe.
#[inline(always)]
pub fn current() -> Option<&'static Shadow> {
    existing().or_else(claim)
}

#[cold]
#[inline(never)]
fn claim() -> Option<&'static Shadow> {
    let key = crate::record::recorder::thread_pointer();
    let mut i = home(key);
    for _ in 0..SLOTS {
        let slot = TABLE.get(i)?;
        let k = slot.key.load(Ordering::Acquire);
        if k == key {
            // SAFETY: as in `existing`.
            return unsafe { slot.shadow.load(Ordering::Acquire).as_ref() };
        }
        if k == 0 {
            if slot
                .key
                .compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                continue;
            }
            let size = std::mem::size_of::<Shadow>();
            // SAFETY: a fresh private anonymous mapping, zero-filled: all-zero is an empty
            // Shadow (atomics). Never unmapped (see the module comment).
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    size,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return None;
            }
            slot.shadow.store(p.cast(), Ordering::Release);
            // SAFETY: just mapped, as above.
            return unsafe { (p as *const Shadow).as_ref() };
        }
        i = (i + 1) & (SLOTS - 1);
    }
    None
}
