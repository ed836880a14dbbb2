//! The `ffi_call` hook: every ctypes and cffi (ABI mode) call ends in libffi's
//! `ffi_call(cif, fn, rvalue, avalue)`, which tells us the target address, the C argument and
//! return sizes (from the cif), and — around the real call — the native time.
//!
//! A process can hold several libffi copies (the system one used by `_ctypes`, the one cffi
//! bundles as `cffistatic_ffi_call`); a cif must go to the `ffi_call` of the libffi that prepared
//! it, so each distinct real `ffi_call` gets its own trampoline slot.

use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::ffi_pointers::{note_result, pointers_before, still_quiet, PointerFn};
use crate::record::{clock, pointers, recorder};

#[repr(C)]
pub struct FfiType {
    pub size: usize,
    pub alignment: u16,
    pub type_: u16,
    pub elements: *mut *mut FfiType,
}

#[repr(C)]
pub struct FfiCif {
    pub abi: i32,
    pub nargs: u32,
    pub arg_types: *mut *mut FfiType,
    pub rtype: *mut FfiType,
    pub bytes: u32,
    pub flags: u32,
}

const FFI_TYPE_VOID: u16 = 0;
pub(super) const FFI_TYPE_INT: u16 = 1;
pub(super) const FFI_TYPE_SINT32: u16 = 10;
pub(super) const FFI_TYPE_POINTER: u16 = 14;

pub(super) type FfiCallFn =
    unsafe extern "C" fn(*mut FfiCif, *const c_void, *mut c_void, *mut *mut c_void);

const SLOTS: usize = 8;
/// `ffi_prep_cif` of the same libffi copy, for measuring libffi's own call overhead.
static PREP: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];

/// The trampoline for `real` (an `ffi_call` of one libffi copy, whose `ffi_prep_cif` is
/// `prep`), allocating a slot on first use.
pub fn trampoline_for(real: usize, prep: Option<usize>) -> Option<usize> {
    for (i, slot) in REAL.iter().enumerate() {
        match slot.compare_exchange(0, real, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {
                PREP[i].store(prep.unwrap_or(0), Ordering::Release);
                return Some(TRAMPOLINES[i] as *const () as usize);
            }
            Err(existing) if existing == real => return Some(TRAMPOLINES[i] as *const () as usize),
            Err(_) => continue,
        }
    }
    None
}

extern "C" fn empty_target() {}

type PrepCifFn =
    unsafe extern "C" fn(*mut FfiCif, i32, u32, *mut FfiType, *mut *mut FfiType) -> i32;
/// `FFI_UNIX64`, libffi's default ABI on x86-64 System V.
const FFI_UNIX64: i32 = 2;

/// The median of what a timed native interval measures around an empty C function called
/// through the first libffi copy seen: the probe's clock reads plus libffi's own call sequence.
/// 0 when no libffi is known yet.
pub fn native_floor_ticks() -> u64 {
    let (real, prep) = (
        REAL[0].load(Ordering::Acquire),
        PREP[0].load(Ordering::Acquire),
    );
    if real == 0 || prep == 0 {
        return 0;
    }
    let mut void = FfiType {
        size: 1,
        alignment: 1,
        type_: FFI_TYPE_VOID,
        elements: std::ptr::null_mut(),
    };
    // SAFETY: a zeroed cif is what ffi_prep_cif expects to fill; `real`/`prep` are libffi's
    // ffi_call and ffi_prep_cif of one copy; the cif describes `void f(void)`, which is exactly
    // `empty_target`'s signature, and rvalue has room for any return register.
    unsafe {
        let mut cif: FfiCif = std::mem::zeroed();
        let prep: PrepCifFn = std::mem::transmute::<usize, PrepCifFn>(prep);
        if prep(&mut cif, FFI_UNIX64, 0, &mut void, std::ptr::null_mut()) != 0 {
            return 0;
        }
        let real: FfiCallFn = std::mem::transmute::<usize, FfiCallFn>(real);
        let mut ret = [0u64; 2];
        let mut samples = [0u64; 1001];
        for s in samples.iter_mut() {
            let t0 = clock::now();
            real(
                &mut cif,
                empty_target as *const c_void,
                ret.as_mut_ptr().cast(),
                std::ptr::null_mut(),
            );
            *s = clock::now().wrapping_sub(t0);
        }
        samples.sort_unstable();
        samples[samples.len() / 2]
    }
}

/// Whether `addr` is one of our trampolines (a GOT entry that already points at us).
pub fn is_trampoline(addr: usize) -> bool {
    TRAMPOLINES.iter().any(|t| *t as *const () as usize == addr)
}

/// The trampolines, one per libffi copy, each with the real `ffi_call` it forwards to. The fast
/// path — a call the Python-level wrapper has looked up and not chosen for timing — counts the
/// call and tail-calls the real `ffi_call`: nothing of ours stays on the stack while the C
/// function runs, and no register needs saving. It calls nothing, so its guard costs nothing;
/// everything else is a tail call of [`slow_ffi_call`], an entry with guards of its own.
macro_rules! trampolines {
    ($($i:literal => $name:ident, $real:ident),* $(,)?) => {
        $(
            static $real: AtomicUsize = AtomicUsize::new(0);

            unsafe extern "C" fn $name(cif: *mut FfiCif, f: *const c_void, r: *mut c_void, a: *mut *mut c_void) {
                // SAFETY: cif and f as libffi's caller passed them.
                let counted = crate::runtime::guard(Fast::Slow, || unsafe { counted(cif, f) });
                // Read after the counting, which then has one more register to itself.
                // SAFETY: set to a real ffi_call before this trampoline was written to any GOT.
                let real: FfiCallFn =
                    unsafe { std::mem::transmute::<usize, FfiCallFn>($real.load(Ordering::Relaxed)) };
                match counted {
                    // SAFETY: forwarded unchanged.
                    Fast::Counted => unsafe { real(cif, f, r, a) },
                    Fast::Pointers(stats) => {
                        // SAFETY: `stats` the pair `counted` returned; its entry was set (to a
                        // PointerFn of hook::ffi_pointers) with the signature that sent it here.
                        let pointers: PointerFn = unsafe {
                            std::mem::transmute::<usize, PointerFn>(
                                (*(stats as *const recorder::CallStats)).ptr_entry.load(Ordering::Relaxed),
                            )
                        };
                        // SAFETY: forwarded as it came, with the pair `counted` returned.
                        unsafe { pointers(cif, f, r, a, real, stats) }
                    }
                    Fast::Slow => {
                        let slow: SlowFn = slow_ffi_call;
                        // SAFETY: forwarded as it came (a tail call as well).
                        unsafe { slow(cif, f, r, a, real) }
                    }
                }
            }
        )*
        static REAL: [&AtomicUsize; SLOTS] = [$(&$real),*];
        static TRAMPOLINES: [FfiCallFn; SLOTS] = [$($name),*];
    };
}

trampolines!(0 => ffi_call_0, REAL_0, 1 => ffi_call_1, REAL_1, 2 => ffi_call_2, REAL_2,
             3 => ffi_call_3, REAL_3, 4 => ffi_call_4, REAL_4, 5 => ffi_call_5, REAL_5,
             6 => ffi_call_6, REAL_6, 7 => ffi_call_7, REAL_7);

/// The C argument and return sizes of a cif, its argument count, and the bytes the pointer
/// arguments refer to (from the Python-level call, when there is one), in one pass.
///
/// # Safety
/// `cif` must be a cif prepared by libffi (as every `ffi_call` argument is): `ffi_prep_cif` read
/// the size of each argument type and of the return type, so none of them is null.
#[inline(always)]
unsafe fn arg_bytes(
    cif: *const FfiCif,
    ctx: Option<&crate::record::call_ctx::CallCtx>,
) -> (u64, u64, u32, u64) {
    // SAFETY: per the contract.
    unsafe {
        let cif = &*cif;
        let total = (0..cif.nargs as usize)
            .map(|i| (**cif.arg_types.add(i)).size as u64)
            .sum();
        let buffer = ctx.map_or(0, |c| {
            c.buffer_bytes(cif.nargs as usize, |i| {
                (**cif.arg_types.add(i)).type_ == FFI_TYPE_POINTER
            })
        });
        (total, ret_bytes(cif), cif.nargs, buffer)
    }
}

/// The return size of a cif (a void return carries no bytes; `ffi_type_void` has size 1).
///
/// # Safety
/// As [`arg_bytes`].
#[inline(always)]
unsafe fn ret_bytes(cif: &FfiCif) -> u64 {
    // SAFETY: per the contract.
    unsafe {
        if (*cif.rtype).type_ == FFI_TYPE_VOID {
            0
        } else {
            (*cif.rtype).size as u64
        }
    }
}

/// [`counted`]'s answer. An enum rather than codes in one word: the trampoline's match then
/// compiles to the branches `counted` took, with no test of the pair's address against the codes.
enum Fast {
    /// The slow path takes the call.
    Slow,
    /// Counted, and the trampoline forwards it.
    Counted,
    /// Counted, and its pointers are for the pair's `ptr_entry`: the address of the pair's
    /// statistics.
    Pointers(usize),
}

/// The fast path: when the Python-level wrapper found this call's statistics, chose not to time
/// it, and the C address agrees, counts the call and its bytes into them and returns
/// [`Fast::Counted`] (the trampoline then forwards), or the statistics' address when the pair's signature has a
/// pointer in it (one flag test, decided at the pair's first call). Calls nothing, and keeps to
/// few registers (so that it needs no stack frame): a call with more than three arguments is
/// counted on the slow path.
///
/// # Safety
/// `cif` prepared by libffi, as libffi's caller passed it.
#[inline(always)]
unsafe fn counted(cif: *mut FfiCif, f: *const c_void) -> Fast {
    // No look at `ACTIVE`: a context is pushed only by a wrapper that saw recording on, and a
    // call in flight when it stops may count itself (as any hook already past the check may).
    let Some(rec) = recorder::current_at_home() else {
        return Fast::Slow;
    };
    // SAFETY: a non-null ctx is the live CallCtx of this thread's innermost Python-level call;
    // only this thread touches it, and it outlives this hook (the wrapper is below us).
    let Some(ctx) = (unsafe { rec.python.current().as_mut() }) else {
        return Fast::Slow;
    };
    let Some(stats) = ctx.fast_pair(f as usize) else {
        return Fast::Slow;
    };
    // SAFETY: per the contract (see `arg_bytes`).
    unsafe {
        let cif = &*cif;
        if cif.nargs > 3 {
            return Fast::Slow;
        }
        if ctx.any_buffer {
            let mut buffer = 0;
            for i in 0..cif.nargs as usize {
                if (**cif.arg_types.add(i)).type_ == FFI_TYPE_POINTER {
                    // nargs <= 3 < ARG_SLOTS; with any_buffer set every slot was written.
                    buffer += ctx.arg_bytes[i & 3].assume_init();
                }
            }
            stats.buffer_bytes.add(buffer);
        }
        // Told first: the context is not needed after, which leaves a register for the sums.
        ctx.stats = stats;
        let size = |i: usize| (**cif.arg_types.add(i)).size as u64;
        let args = match cif.nargs {
            0 => 0,
            1 => size(0),
            2 => size(0) + size(1),
            _ => size(0) + size(1) + size(2),
        };
        stats.calls.add(1);
        stats.arg_bytes.add(args);
        stats.ret_bytes.add(ret_bytes(cif));
        stats.arg_count.store(cif.nargs, Ordering::Relaxed);
    }
    if stats.ptr_sig.load(Ordering::Relaxed) & pointers::SIG_ACTIVE != 0 {
        return Fast::Pointers(stats as *const recorder::CallStats as usize);
    }
    Fast::Counted
}

type SlowFn =
    unsafe extern "C" fn(*mut FfiCif, *const c_void, *mut c_void, *mut *mut c_void, FfiCallFn);

/// Every call the trampolines' fast path does not take, forwarded to `real`: by [`slow_path`]
/// when it measures the call (it sets `forwarded` just before), else here.
unsafe extern "C" fn slow_ffi_call(
    cif: *mut FfiCif,
    f: *const c_void,
    r: *mut c_void,
    a: *mut *mut c_void,
    real: FfiCallFn,
) {
    let mut call = FfiCall {
        real,
        cif,
        f,
        r,
        a,
        forwarded: false,
    };
    // SAFETY: the call as libffi's caller made it.
    crate::runtime::guard((), || unsafe { slow_path(&mut call) });
    if !call.forwarded {
        // SAFETY: the original call, unchanged.
        unsafe { (call.real)(cif, f, r, a) }
    }
}

/// A call on the slow path. `forwarded` is set just before `slow_path` calls `real` itself.
struct FfiCall {
    real: FfiCallFn,
    cif: *mut FfiCif,
    f: *const c_void,
    r: *mut c_void,
    a: *mut *mut c_void,
    forwarded: bool,
}

/// Every other call: timed ones (measured here, so forwarded here), a thread's first, a
/// (function, site) first seen, one the wrapper did not find, a call from C (no wrapper), a
/// thread away from its home slot, an excluded pair, or recording off. Untimed calls are counted
/// and left to the caller to forward.
///
/// # Safety
/// As the trampolines: arguments as libffi's caller passed them, `real` the `ffi_call` they go to.
#[inline(always)]
unsafe fn slow_path(call: &mut FfiCall) {
    let (cif, f) = (call.cif, call.f);
    let Some(rec) = recorder::if_active() else {
        return;
    };
    // SAFETY: as in `counted`.
    let mut ctx = unsafe { rec.python.current().as_mut() };
    let known = match &ctx {
        // The wrapper looked the pair up already.
        Some(c) => c.expected(f as usize),
        None => rec.existing_stats(f as usize, 0),
    };
    let stats = match known {
        Some(s) => s,
        None => {
            let site = ctx.as_ref().map_or(0, |c| c.site);
            // A timed call's marshal-in is running: what the agent spends here on its own is
            // not the program's, and is taken off it.
            let since = match &ctx {
                Some(c) if c.timed => clock::now(),
                _ => 0,
            };
            let stats = rec.stats(f as usize, site, crate::runtime::first_sighting);
            if let Some(c) = ctx.as_deref_mut().filter(|_| since != 0) {
                c.add_own_ticks(clock::now().wrapping_sub(since));
            }
            let Some(stats) = stats else {
                recorder::DROPPED.fetch_add(1, Ordering::Relaxed);
                return;
            };
            stats
        }
    };
    if stats.excluded {
        return;
    }
    // Whether a call is timed, and in which stratum, the Python-level wrapper decided before the
    // call; without one it is decided here, by the same per-pair countdown.
    let (timed, first) = match &ctx {
        Some(c) => (c.timed, c.first),
        None => rec.python.sample_pair(stats),
    };
    // A pair has at most ALWAYS_TIMED first calls. Past them (only when the wrapper misread the
    // C address, found no pair, and took every call for a first one) a call counts with the
    // sampled ones, all of which are then timed; the wrapper files marshal times by `first`.
    let first = first && stats.first.timed.get() < recorder::ALWAYS_TIMED as u64;
    if let Some(c) = ctx.as_deref_mut() {
        c.first = first;
    }
    // SAFETY: cif comes from libffi's caller and is prepared.
    unsafe { count(stats, cif, ctx.as_deref()) };
    // Whether the result goes to the pointer flow (then the call is forwarded here, to see it):
    // one compare for a pair with no pointer in its signature; a filled cache of the pair's
    // quiet pointer argument answers inline (a timed call whose pointer argument changes nothing
    // need not call out).
    // SAFETY: the call's own cif and arguments; `stats` is this thread's pair.
    let result = stats.ptr_sig.load(Ordering::Relaxed) != pointers::SIG_KNOWN
        && !unsafe { still_quiet(stats as *const recorder::CallStats as usize, call.a) }
        && unsafe { pointers_before(stats, cif, call.a) };
    if !timed {
        if let Some(c) = ctx {
            c.native_done(stats, 0, 0);
        }
        if result {
            call.forwarded = true;
            // SAFETY: the original call, unchanged; then its own cif, result and arguments.
            unsafe {
                (call.real)(cif, f, call.r, call.a);
                note_result(stats, cif, call.r, call.a);
            }
        }
        return;
    }
    let t0 = clock::now();
    call.forwarded = true;
    // SAFETY: the original call, unchanged.
    unsafe { (call.real)(cif, f, call.r, call.a) };
    let t1 = clock::now();
    stats.record_native(first, t1.wrapping_sub(t0));
    if let Some(c) = ctx {
        c.native_done(stats, t0, t1);
    }
    if result {
        // SAFETY: the call's own cif, result and arguments, after it returned.
        unsafe { note_result(stats, cif, call.r, call.a) };
    }
}

/// Counts one call and its bytes into `stats`.
///
/// # Safety
/// `cif` must be a cif prepared by libffi.
#[inline(always)]
unsafe fn count(
    stats: &recorder::CallStats,
    cif: *mut FfiCif,
    ctx: Option<&crate::record::call_ctx::CallCtx>,
) {
    // SAFETY: per the contract.
    let (args, ret, nargs, buffer) = unsafe { arg_bytes(cif, ctx) };
    stats.calls.add(1);
    stats.arg_bytes.add(args);
    stats.ret_bytes.add(ret);
    stats.arg_count.store(nargs, Ordering::Relaxed);
    if buffer != 0 {
        stats.buffer_bytes.add(buffer);
    }
}
