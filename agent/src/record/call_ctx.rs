//! The per-call context the layers above `record` share on each thread: the Python layer's
//! wrappers fill a [`CallCtx`] in and push it on the thread's [`ThreadState`] (which every
//! [`ThreadRecorder`](super::recorder::ThreadRecorder) embeds, so the hot path finds both with
//! one look-up), the `ffi_call` hook adds what it saw, the `PyEval_RestoreThread` hook adds when
//! the GIL came back. Plain data and the small methods on it; the wrappers and the sampling
//! decisions that use it live in `python::call`.

use std::mem::MaybeUninit;
use std::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering,
};

use super::clock;
use super::recorder::CallStats;

/// Positions of Python arguments whose pointed-to bytes we know.
pub const ARG_SLOTS: usize = 16;
/// Objects built by a ctypes constructor and not yet passed to a call.
const RECENT: usize = 8;

#[derive(Default)]
pub(crate) struct Recent {
    pub(crate) obj: AtomicUsize,
    pub(crate) ticks: AtomicU64,
    pub(crate) bytes: AtomicU64,
    /// How it was built: one of the `BUILT_*` bits.
    pub(crate) how: AtomicU8,
}

/// An instance of a type made before (`T()`).
pub const BUILT_INSTANCE: u8 = 1;
/// An array type looked up for the construction (`(c_char * n)()`: `sq_repeat` just before).
pub const BUILT_TYPE_PER_CALL: u8 = 2;
/// Through a Python helper (`create_string_buffer`, `create_unicode_buffer`).
pub const BUILT_HELPER: u8 = 4;

/// Per-thread state of the Python layer. All-zero is the valid initial state (see recorder).
#[derive(Default)]
pub struct ThreadState {
    /// The Python-level call in progress on this thread (innermost), or null.
    pub(crate) ctx: AtomicPtr<CallCtx>,
    pub(crate) stack_countdown: AtomicU32,
    /// Site of this thread's last Python-level call, and when it returned when the next call
    /// is one that samples its stack (0 otherwise): the Python time between two calls of one
    /// site — the loop a batched call would remove — measured on a sample of calls.
    pub(crate) last_site: AtomicU32,
    pub(crate) last_leave: AtomicU64,
    pub(crate) rng: AtomicU64,
    pub(crate) recent: [Recent; RECENT],
    pub(crate) recent_next: AtomicU32,
    /// Time in `c_double * n` (array type look-up) not yet given to a construction.
    pub(crate) pending_type_ticks: AtomicU64,
    /// Objects built for a call and passed fresh to it, with that call's statistics: their
    /// deallocation is the rest of what building a buffer per call costs.
    pub(crate) passed: [Passed; RECENT],
    pub(crate) passed_next: AtomicU32,
    /// The thread's last Python-level call that was made at its own site: its position (code
    /// object, instruction) and the statistics it recorded into. A loop calling one function
    /// from one line finds its site and statistics here with three compares. Interned code
    /// objects are never freed, so a position is never another's.
    last_code: AtomicUsize,
    last_ip: AtomicUsize,
    last_stats: AtomicPtr<CallStats>,
    /// The context an untimed repeat of a bracketed builtin pushes ([`ThreadState::run_untimed`]).
    lean: LeanCtx,
    /// The call in progress that the lean context, while pushed, put aside (the assembly lean
    /// path keeps it here rather than on its stack: the context is pushed once at most).
    lean_outer: AtomicPtr<CallCtx>,
    /// The last whole stack this thread sampled, and its id.
    pub(crate) last_stack: LastStack,
    /// The thread this state belongs to (its thread pointer, as the recorders' table keys it):
    /// the assembly lean path checks it before it takes [`LEAN_THREAD`] for its own.
    owner: AtomicUsize,
    /// The GOT trampoline's shadow stack of this thread (`hook::native::shadow::Shadow`), once
    /// its cache of statistics is this recorder's: the trampoline's fast path inside an untimed
    /// lean repeat reaches it from here. It never names a stack whose cache is another
    /// generation's: recorders are made anew when they are forgotten (and [`LEAN_THREAD`] is
    /// cleared then), and `recorder::clear_all`, which moves the generation on, forgets it.
    /// Until then [`NO_NATIVE_SHADOW`], never 0 (the fast path reads it without a test).
    native_shadow: AtomicUsize,
}

/// The state of the thread whose bracketed builtin call last took a lean path, for the
/// assembly lean path (`python::builtin_call::lean_asm`), which finds its thread's state here
/// with one load and one compare of [`ThreadState::owner`] instead of a look-up in the
/// recorders' table. [`NO_LEAN_THREAD`] when no thread is noted, and after the recorders are
/// forgotten (a forked child's): never null, so that the assembly needs no test for it.
pub static LEAN_THREAD: AtomicPtr<ThreadState> = AtomicPtr::new(no_lean_thread());

/// Bytes of zeros a thread's GOT shadow stack fits in (the hook layer asserts it).
pub const NATIVE_SHADOW_BYTES: usize = 64 * 1024;

/// `N` bytes of zeros, aligned as anything the agent keeps: a stand-in that the assembly paths
/// read where a pointer would otherwise need a null test.
#[repr(C, align(64))]
pub struct Zeros<const N: usize>([u8; N]);

/// Zeros standing for no GOT shadow stack in [`ThreadState`]'s `native_shadow`: its cache of
/// statistics holds none, so the trampoline's fast path, which reads one entry, leaves it.
pub static NO_NATIVE_SHADOW: Zeros<NATIVE_SHADOW_BYTES> = Zeros([0; NATIVE_SHADOW_BYTES]);

/// Zero bytes the size of a [`ThreadState`], standing for none in [`LEAN_THREAD`]: its owner is 0,
/// which no thread's thread pointer is, so the assembly's first compare leaves it (nothing else
/// of it is read).
pub static NO_LEAN_THREAD: Zeros<{ std::mem::size_of::<ThreadState>() }> =
    Zeros([0; std::mem::size_of::<ThreadState>()]);

const fn no_lean_thread() -> *mut ThreadState {
    std::ptr::addr_of!(NO_LEAN_THREAD) as *mut ThreadState
}

// A ThreadState needs no more alignment than the stand-in has.
const _: () = assert!(std::mem::align_of::<ThreadState>() <= 64);

/// Offsets of the fields the assembly lean path reads and writes (`ThreadState` has Rust's
/// layout; these are its layout in this build).
pub mod lean_offsets {
    use super::{CallCtx, ThreadState};
    use std::mem::offset_of;

    pub const CTX: usize = offset_of!(ThreadState, ctx);
    pub const STACK_COUNTDOWN: usize = offset_of!(ThreadState, stack_countdown);
    pub const LAST_IP: usize = offset_of!(ThreadState, last_ip);
    pub const LAST_STATS: usize = offset_of!(ThreadState, last_stats);
    pub const OWNER: usize = offset_of!(ThreadState, owner);
    pub const NATIVE_SHADOW: usize = offset_of!(ThreadState, native_shadow);
    /// The lean context, and its fields that `ThreadState::run_untimed` sets.
    pub const LEAN: usize = offset_of!(ThreadState, lean);
    pub const LEAN_EXPECT: usize = LEAN + offset_of!(CallCtx, expect);
    pub const LEAN_SITE: usize = LEAN + offset_of!(CallCtx, site);
    pub const LEAN_OUTER: usize = offset_of!(ThreadState, lean_outer);
}

/// Forgets the thread [`LEAN_THREAD`] names: when recording stops (the assembly paths that read
/// it check nothing else), and when the recorders are forgotten.
pub fn forget_lean_thread() {
    LEAN_THREAD.store(no_lean_thread(), Ordering::SeqCst);
}

/// Frames of a sampled stack kept: deeper ones are left off.
pub const STACK_DEPTH: usize = 256;

/// The last whole stack a thread sampled (its site ids, innermost first) and the id it was
/// interned as: a loop samples the same stack again and again, and finds its id here by
/// comparing the sites as it walks them, instead of a look-up in the shared table (its lock, a
/// hash of the stack, an allocation). Exact: the sites are compared, not a hash of them.
pub struct LastStack {
    /// Sites held plus one (0: none yet).
    len: AtomicU32,
    id: AtomicU32,
    sites: [AtomicU32; STACK_DEPTH],
}

impl Default for LastStack {
    fn default() -> Self {
        LastStack {
            len: AtomicU32::new(0),
            id: AtomicU32::new(0),
            sites: [const { AtomicU32::new(0) }; STACK_DEPTH],
        }
    }
}

impl LastStack {
    /// Site `i` (innermost first) of the last stack, if it has one there.
    #[inline(always)]
    pub(crate) fn site(&self, i: usize) -> Option<u32> {
        (i + 1 < self.len.load(Ordering::Relaxed) as usize)
            .then(|| self.sites.get(i).map(|s| s.load(Ordering::Relaxed)))
            .flatten()
    }

    /// The last stack's id if it has `n` sites.
    #[inline(always)]
    pub(crate) fn id_if_len(&self, n: usize) -> Option<u32> {
        (self.len.load(Ordering::Relaxed) as usize == n + 1)
            .then(|| self.id.load(Ordering::Relaxed))
    }

    /// Notes `sites` (innermost first, at most [`STACK_DEPTH`] kept) as the last stack, interned
    /// as `id`.
    pub(crate) fn note(&self, sites: &[u32], id: u32) {
        let n = sites.len().min(STACK_DEPTH);
        for (a, &b) in self.sites.iter().zip(sites) {
            a.store(b, Ordering::Relaxed);
        }
        self.id.store(id, Ordering::Relaxed);
        self.len.store(n as u32 + 1, Ordering::Relaxed);
    }
}

/// A [`CallCtx`] kept in the thread's state for untimed repeats of a bracketed builtin, whose
/// context differs from call to call only in its site, its statistics and whether its native part
/// is reached through the GOT: three stores instead of a whole context built on the stack. The
/// hooks inside see it through `ThreadState::ctx` as any other, and leave it as they found it
/// for an untimed call (they write only a timed call's times, and the target calls' tally, which
/// nothing reads for an untimed one). `expect` is non-null while it is pushed.
#[repr(transparent)]
pub(crate) struct LeanCtx(std::cell::UnsafeCell<CallCtx>);

// SAFETY: only the owning thread touches a thread's LeanCtx (its wrappers and the hooks that run
// inside them, on that thread), as with the CallCtx on its stack that `ThreadState::ctx` points to.
unsafe impl Sync for LeanCtx {}

impl Default for LeanCtx {
    /// All zero, as a zeroed `ThreadState` has it: untimed, not pushed.
    fn default() -> Self {
        LeanCtx(std::cell::UnsafeCell::new(CallCtx {
            arg_bytes: [MaybeUninit::new(0); ARG_SLOTS],
            ..CallCtx::new(0, std::ptr::null(), false, false, 0)
        }))
    }
}

#[derive(Default)]
pub(crate) struct Passed {
    pub(crate) obj: AtomicUsize,
    pub(crate) stats: AtomicPtr<CallStats>,
}

/// One Python-level foreign call in progress. It lives on the wrapper's stack frame and only its
/// own thread touches it: the wrapper fills it in, the `ffi_call` hook inside adds what it saw,
/// the `PyEval_RestoreThread` hook adds when the GIL came back. A nested call (a callback) pushes
/// its own and puts the outer one back, so saving and restoring is one pointer.
#[repr(C)]
pub struct CallCtx {
    pub site: u32,
    /// Set by the wrapper of a Python-level call whose native part is reached through the GOT
    /// trampoline (an extension module's builtin, a cffi API-mode function): the trampoline
    /// then also sets `t1` (first target entry, as the `ffi_call` hook's native start: less
    /// the own ticks noted in `t1` so far) and `t2` (last target exit) when the call is timed.
    /// Left false by the ctypes/cffi ABI wrappers, whose `t1`/`t2` the `ffi_call` hook owns (a
    /// target call made by a library that ctypes called must not move them).
    /// (Just before `timed`: the GOT trampoline's fast path reads the two as one word.)
    pub native_via_got: bool,
    pub timed: bool,
    /// Timed as one of the pair's first calls (see `ALWAYS_TIMED`), not by the random draw.
    pub first: bool,
    /// The `ffi_call` hook may count the call into `expect` and forward it, nothing else: the
    /// call is not timed and its pair not excluded (the hook's fast path checks only this flag
    /// and the C address). Set only with `expect` non-null.
    pub fast: bool,
    /// The statistics the wrapper found for (its C address, site), or null: the hook records
    /// into them when its own C address agrees, without a look-up of its own.
    pub expect: *const CallStats,
    pub(crate) awaiting_gil: bool,
    pub(crate) any_buffer: bool,
    /// How many calls of the `--timing-sample` rate this call stands for when it is a sampled
    /// timed one (1 unless its pair's timing thinned out: `CallStats::gap_weight`); the
    /// trampoline files the target calls it times inside with the same weight. (A byte beside
    /// the two flags above: the three are set with one store.)
    pub weight: u8,
    pub(crate) stats: *const CallStats,
    /// When the native call started (end of marshal-in); until then, the ticks the agent spent
    /// inside marshal-in on first-sight work of its own (creating the pair's statistics, naming
    /// its library), which the start is moved back by. No field of its own: one store less on
    /// every call.
    pub(crate) t1: u64,
    pub(crate) t2: u64,
    /// Native ticks of the `--lib` target calls the GOT trampoline (`hook::native`) timed inside
    /// this call, summed over all of them (a builtin may call several): the call's native part
    /// when its implementation reaches the target through a module's GOT. The trampoline times
    /// every target call inside a call with `native_via_got` and `timed` set (others only on
    /// its own sample). Raw: each interval includes the trampoline's floor
    /// (`Calibration::got_floor_ticks`), to be taken off per call in `native_calls`. The wrapper
    /// zeroes it.
    pub native_ticks: u64,
    /// Target calls the GOT trampoline timed inside this call (with `native_ticks`).
    pub native_calls: u32,
    pub(crate) tg: u64,
    /// A timed ctypes/cffi ABI call before its native part: the `PyEval_SaveThread` hook notes
    /// when the GIL's release began (`released`). Releasing is no marshaling: with another
    /// thread asking for the GIL, CPython's `drop_gil` waits until that thread has taken it (a
    /// hand-off, microseconds), and that wait is filed as GIL wait.
    pub(crate) releasing: bool,
    pub(crate) released: u64,
    pub(crate) nargs: u32,
    /// The bytes each argument refers to, read only when `any_buffer`: the first argument that
    /// refers to bytes zeroes them all, later ones write their own (zeroing them on every call
    /// would be a memset per call, and a plain number writes nothing).
    pub(crate) arg_bytes: [MaybeUninit<u64>; ARG_SLOTS],
}

/// Timed calls between their native return and the GIL coming back, in all threads: when zero,
/// the `PyEval_RestoreThread` hook does nothing at all.
pub static AWAITING_GIL: AtomicU32 = AtomicU32::new(0);

/// Timed calls between their start and their native part, in all threads: when zero, the
/// `PyEval_SaveThread` hook does nothing at all. Counted only once that hook is armed.
pub static RELEASING: AtomicU32 = AtomicU32::new(0);

/// Whether the `PyEval_SaveThread` hook is installed (`python::call` arms it at the first GIL
/// hand-off a timed call waited for). Until then the program's releases are never handed off —
/// one thread, or threads that do not contend — and the hook would cost every call of a loop (a
/// call through it and a flag's test, ~12 instructions), and [`RELEASING`] every timed call two
/// locked instructions, for nothing.
pub static SAVE_ARMED: AtomicBool = AtomicBool::new(false);

impl ThreadState {
    /// Makes `call` — the original of a Python-level foreign call — with `ctx` as this thread's
    /// call in progress, the outer one put back after; between two clock reads when `timed`.
    /// Returns its result and the two reads (0 when untimed). A load and a store, not a swap:
    /// only this thread writes its ctx, and an xchg would be a locked instruction on every call.
    #[inline(always)]
    pub fn run_in<R>(
        &self,
        ctx: &mut CallCtx,
        timed: bool,
        call: impl FnOnce() -> R,
    ) -> (R, u64, u64) {
        let outer = self.ctx.load(Ordering::Relaxed);
        self.ctx.store(ctx, Ordering::Relaxed);
        if timed && !ctx.native_via_got && SAVE_ARMED.load(Ordering::Relaxed) {
            ctx.releasing = true;
            RELEASING.fetch_add(1, Ordering::Relaxed);
        }
        let t0 = if timed { clock::now() } else { 0 };
        let result = call();
        let t3 = if timed { clock::now() } else { 0 };
        if timed {
            ctx.release_seen();
        }
        self.ctx.store(outer, Ordering::Relaxed);
        (result, t0, t3)
    }

    /// Makes `call` — the original of an untimed repeat of a bracketed builtin, at `site`, filed
    /// into `expect`, whose target calls are its native part (the lean context is only for such
    /// builtins: the GOT trampoline's fast path takes it as one) — with the thread's
    /// [`LeanCtx`] as its call in progress, the outer one put back after. None, with nothing
    /// called, when that context is pushed already (a repeat inside a callback of one): the
    /// caller then builds one of its own.
    #[inline(always)]
    pub fn run_untimed<R>(
        &self,
        site: u32,
        expect: &CallStats,
        call: impl FnOnce() -> R,
    ) -> Option<R> {
        let lean = self.lean.0.get();
        // SAFETY: only this thread touches its LeanCtx (see there); no reference to it is held
        // across these writes, and the hooks reach it only through `ctx`, below.
        unsafe {
            if !(*lean).expect.is_null() {
                return None;
            }
            (*lean).expect = expect;
            (*lean).site = site;
            (*lean).native_via_got = true;
        }
        let outer = self.ctx.load(Ordering::Relaxed);
        self.ctx.store(lean, Ordering::Relaxed);
        let result = call();
        self.ctx.store(outer, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { (*lean).expect = std::ptr::null() };
        Some(result)
    }

    /// Notes this state's thread (`key`, its thread pointer), once, when its recorder is made.
    pub(crate) fn set_owner(&self, key: usize) {
        self.owner.store(key, Ordering::Relaxed);
        self.forget_native_shadow();
    }

    /// Notes the thread's GOT shadow stack (an opaque address to this layer), whose cached
    /// statistics are this recorder's.
    pub fn note_native_shadow(&self, shadow: usize) {
        self.native_shadow.store(shadow, Ordering::Relaxed);
    }

    /// Forgets the thread's GOT shadow stack ([`NO_NATIVE_SHADOW`] stands for it).
    pub fn forget_native_shadow(&self) {
        self.note_native_shadow(std::ptr::addr_of!(NO_NATIVE_SHADOW) as usize);
    }

    /// Makes this thread the one [`LEAN_THREAD`] names (a store only when it was another), while
    /// recording is on: the assembly paths that read it do not check `ACTIVE` themselves, so a
    /// stop that raced this note clears it again (the stop clears `ACTIVE`, then [`LEAN_THREAD`];
    /// this stores, then reads `ACTIVE`: with both orders sequentially consistent, one of the two
    /// sees the other).
    #[inline(always)]
    pub fn note_lean_thread(&self) {
        let me = self as *const ThreadState as *mut ThreadState;
        if LEAN_THREAD.load(Ordering::Relaxed) != me {
            self.note_lean_thread_slow(me);
        }
    }

    #[cold]
    #[inline(never)]
    fn note_lean_thread_slow(&self, me: *mut ThreadState) {
        LEAN_THREAD.store(me, Ordering::SeqCst);
        if !crate::runtime::ACTIVE.load(Ordering::SeqCst) {
            forget_lean_thread();
        }
    }

    /// The call in progress, or null.
    #[inline(always)]
    pub fn current(&self) -> *mut CallCtx {
        self.ctx.load(Ordering::Relaxed)
    }

    /// The statistics of this thread's call of `function` at position (`code`, `ip`), if its
    /// last call was one.
    #[inline(always)]
    pub fn repeated_call(
        &self,
        code: usize,
        ip: usize,
        function: usize,
    ) -> Option<&'static CallStats> {
        if self.last_code.load(Ordering::Relaxed) != code
            || self.last_ip.load(Ordering::Relaxed) != ip
        {
            return None;
        }
        // SAFETY: a CallStats of this thread, leaked and never freed.
        unsafe { self.last_stats.load(Ordering::Relaxed).as_ref() }
            .filter(|s| s.function == function)
    }

    /// Notes the thread's call at (`code`, `ip`), a position that is its own site, with its
    /// statistics.
    #[inline(always)]
    pub fn remember_call(&self, code: usize, ip: usize, stats: &CallStats) {
        self.last_code.store(code, Ordering::Relaxed);
        self.last_ip.store(ip, Ordering::Relaxed);
        self.last_stats.store(
            stats as *const CallStats as *mut CallStats,
            Ordering::Relaxed,
        );
    }

    /// Forgets the last call (positions are about to change meaning).
    pub fn forget_last_call(&self) {
        self.last_code.store(0, Ordering::Relaxed);
    }

    pub(crate) fn remember_passed(&self, obj: usize, stats: &CallStats) {
        let i = self.passed_next.load(Ordering::Relaxed) as usize % RECENT;
        self.passed_next.store((i + 1) as u32, Ordering::Relaxed);
        self.passed[i]
            .stats
            .store(stats as *const _ as *mut _, Ordering::Relaxed);
        self.passed[i].obj.store(obj, Ordering::Relaxed);
    }

    /// The statistics of the call `obj` was passed to fresh, once.
    pub(crate) fn take_passed(&self, obj: usize) -> Option<&'static CallStats> {
        let p = self
            .passed
            .iter()
            .find(|p| p.obj.load(Ordering::Relaxed) == obj)?;
        p.obj.store(0, Ordering::Relaxed);
        // SAFETY: CallStats are leaked and never freed.
        unsafe { p.stats.load(Ordering::Relaxed).as_ref() }
    }

    /// `obj` was just built, in `ticks`, `bytes` large, as `how` says (a `BUILT_*` bit).
    pub(crate) fn remember_construction(&self, obj: usize, ticks: u64, bytes: u64, how: u8) {
        let i = self.recent_next.load(Ordering::Relaxed) as usize % RECENT;
        self.recent_next.store((i + 1) as u32, Ordering::Relaxed);
        let r = &self.recent[i];
        r.obj.store(obj, Ordering::Relaxed);
        r.ticks.store(ticks, Ordering::Relaxed);
        r.bytes.store(bytes, Ordering::Relaxed);
        r.how.store(how, Ordering::Relaxed);
    }

    /// The construction record of `obj`, if a ctypes constructor just built it on this thread.
    pub(crate) fn recent_of(&self, obj: usize) -> Option<&Recent> {
        self.recent
            .iter()
            .find(|r| r.obj.load(Ordering::Relaxed) == obj)
    }

    /// `obj`, just built by a ctypes constructor, came out of a Python helper that took `ticks`
    /// in all: that is what building it cost.
    pub fn widen_construction(&self, obj: usize, ticks: u64) {
        if let Some(r) = self.recent_of(obj) {
            r.ticks.store(
                r.ticks.load(Ordering::Relaxed).max(ticks),
                Ordering::Relaxed,
            );
            r.how.store(BUILT_HELPER, Ordering::Relaxed);
        }
    }

    /// If `obj` was just built by a ctypes constructor on this thread: its (ticks, bytes, how),
    /// once.
    pub(crate) fn take_construction(&self, obj: usize) -> Option<(u64, u64, u8)> {
        self.recent_of(obj).map(|r| {
            r.obj.store(0, Ordering::Relaxed);
            (
                r.ticks.load(Ordering::Relaxed),
                r.bytes.load(Ordering::Relaxed),
                r.how.load(Ordering::Relaxed),
            )
        })
    }
}

impl CallCtx {
    /// A call at `site` filed into `expect` (or null), `timed` (as one of its pair's first calls:
    /// `first`), with `nargs` arguments and nothing seen yet: not fast, no GIL wait open, no
    /// argument bytes, no native part, not reached through the GOT. The wrappers set what differs
    /// with struct update syntax; inlined, it costs the stores a literal would.
    #[inline(always)]
    pub fn new(site: u32, expect: *const CallStats, timed: bool, first: bool, nargs: u32) -> Self {
        CallCtx {
            site,
            timed,
            first,
            fast: false,
            expect,
            awaiting_gil: false,
            any_buffer: false,
            stats: std::ptr::null(),
            t1: 0,
            t2: 0,
            native_ticks: 0,
            native_calls: 0,
            weight: 1,
            native_via_got: false,
            tg: 0,
            releasing: false,
            released: 0,
            nargs,
            arg_bytes: [MaybeUninit::uninit(); ARG_SLOTS],
        }
    }

    /// The agent spent `ticks` inside this call's marshal-in on first-sight work of its own.
    pub fn add_own_ticks(&mut self, ticks: u64) {
        self.t1 += ticks;
    }

    /// The pair the `ffi_call` hook may count this call into and forward it, nothing else: when
    /// `fast`, and the wrapper's pair is that of C address `f`.
    #[inline(always)]
    pub fn fast_pair(&self, f: usize) -> Option<&'static CallStats> {
        if !self.fast {
            return None;
        }
        // SAFETY: `fast` is set only with `expect` a leaked CallStats of this thread.
        let s = unsafe { &*self.expect };
        (s.function == f).then_some(s)
    }

    /// The statistics the wrapper found for this call, if they are those of C address `f`.
    #[inline(always)]
    pub fn expected(&self, f: usize) -> Option<&'static CallStats> {
        // SAFETY: a non-null expect is a leaked CallStats of this thread, never freed.
        unsafe { self.expect.as_ref() }.filter(|s| s.function == f)
    }

    /// What the `ffi_call` hook saw: the statistics it recorded into and, when timed, the native
    /// interval.
    #[inline(always)]
    pub fn native_done(&mut self, stats: &CallStats, t1: u64, t2: u64) {
        self.stats = stats;
        if self.timed {
            self.release_seen();
            self.t1 = t1.wrapping_sub(self.t1);
            self.t2 = t2;
            self.awaiting_gil = true;
            AWAITING_GIL.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// What the GOT trampoline saw: one target call from `t0` to `t1` inside this call. Several
    /// calls widen the interval (first entry to last exit) and add up in `native_ticks`.
    #[inline(always)]
    pub fn native_interval(&mut self, t0: u64, t1: u64) {
        self.native_ticks = self.native_ticks.wrapping_add(t1.wrapping_sub(t0));
        if self.native_via_got && self.timed {
            if self.native_calls == 0 {
                self.t1 = t0.wrapping_sub(self.t1);
            }
            self.t2 = t1;
        }
        self.native_calls = self.native_calls.wrapping_add(1);
    }

    /// Notes that argument `i` refers to `bytes` bytes.
    #[inline(always)]
    pub(crate) fn set_arg_bytes(&mut self, i: usize, bytes: u64) {
        if bytes == 0 || i >= ARG_SLOTS {
            return;
        }
        if !self.any_buffer {
            self.arg_bytes = [MaybeUninit::new(0); ARG_SLOTS];
            self.any_buffer = true;
        }
        self.arg_bytes[i] = MaybeUninit::new(bytes);
    }

    /// Bytes the pointer arguments refer to, for the C arguments whose libffi type is a pointer.
    #[inline(always)]
    pub fn buffer_bytes(&self, nargs: usize, is_pointer: impl Fn(usize) -> bool) -> u64 {
        if !self.any_buffer {
            return 0;
        }
        // (nargs <= ARG_SLOTS always; said again so that no bounds check, and no panic, is left.)
        let n = (self.nargs as usize).min(nargs).min(ARG_SLOTS);
        self.arg_bytes[..n]
            .iter()
            .enumerate()
            .filter(|&(i, _)| is_pointer(i))
            // SAFETY: with any_buffer set, every slot was written (zeroed, then set_arg_bytes).
            .map(|(_, b)| unsafe { b.assume_init() })
            .sum()
    }

    /// The GIL's release began at `ticks` (the `PyEval_SaveThread` hook), when this call is
    /// timed and has not reached its native part.
    pub(crate) fn release_began(&mut self, ticks: u64) {
        if self.releasing {
            self.released = ticks;
        }
    }

    /// The native part is reached (or the call is over): no release is waited for any more.
    #[inline(always)]
    fn release_seen(&mut self) {
        if self.releasing {
            self.releasing = false;
            RELEASING.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Where marshal-in ended: when the GIL's release began, if seen before the native part;
    /// else the native part's start.
    #[inline(always)]
    pub(crate) fn marshal_in_end(&self) -> u64 {
        if self.released != 0 && self.released <= self.t1 {
            self.released
        } else {
            self.t1
        }
    }

    /// The GIL came back: ends the call's wait, if it waits; returns how long it waited (ticks).
    pub(crate) fn gil_back(&mut self) -> u64 {
        if self.awaiting_gil {
            self.awaiting_gil = false;
            AWAITING_GIL.fetch_sub(1, Ordering::Relaxed);
            self.tg = clock::now();
            return self.tg.saturating_sub(self.t2);
        }
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The last sampled stack answers only for the same sites in the same order and number.
    #[test]
    fn the_last_stack_answers_for_the_same_sites_only() {
        let last = LastStack::default();
        let same = |sites: &[u32]| {
            sites
                .iter()
                .enumerate()
                .all(|(i, &s)| last.site(i) == Some(s))
                .then(|| last.id_if_len(sites.len()))
                .flatten()
        };
        assert_eq!(same(&[]), None, "nothing noted yet");
        last.note(&[3, 2, 1], 7);
        assert_eq!(same(&[3, 2, 1]), Some(7));
        assert_eq!(same(&[3, 2]), None, "a prefix");
        assert_eq!(same(&[3, 2, 1, 0]), None, "one frame more");
        assert_eq!(same(&[3, 1, 2]), None, "another order");
        last.note(&[], 9);
        assert_eq!(same(&[]), Some(9), "an empty stack is a stack");
        assert_eq!(same(&[3]), None);
    }

    /// The thread's last call answers only for the same position and C function, and not after
    /// it is forgotten.
    #[test]
    fn a_repeated_call_finds_its_pair_and_nothing_else() {
        let st = ThreadState::default();
        let s = CallStats::new(0x1000, 7, false);
        assert!(
            st.repeated_call(0x10, 0x20, 0x1000).is_none(),
            "nothing noted yet"
        );
        st.remember_call(0x10, 0x20, &s);
        let hit = st.repeated_call(0x10, 0x20, 0x1000).expect("the same call");
        assert!(std::ptr::eq(hit, &*s));
        assert!(
            st.repeated_call(0x10, 0x20, 0x2000).is_none(),
            "another C function"
        );
        assert!(
            st.repeated_call(0x10, 0x22, 0x1000).is_none(),
            "another instruction"
        );
        assert!(
            st.repeated_call(0x11, 0x20, 0x1000).is_none(),
            "another code object"
        );
        st.forget_last_call();
        assert!(st.repeated_call(0x10, 0x20, 0x1000).is_none(), "forgotten");
    }
}
