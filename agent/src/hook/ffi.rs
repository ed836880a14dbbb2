//! The `ffi_call` hook: every ctypes and cffi (ABI mode) call ends in libffi's
//! `ffi_call(cif, fn, rvalue, avalue)`, which tells us the target address, the C argument and
//! return sizes (from the cif), and — around the real call — the native time.
//!
//! A process can hold several libffi copies (the system one used by `_ctypes`, the one cffi
//! bundles as `cffistatic_ffi_call`); a cif must go to the `ffi_call` of the libffi that prepared
//! it, so each distinct real `ffi_call` gets its own trampoline slot.

use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::record::{clock, recorder};

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
const FFI_TYPE_POINTER: u16 = 14;

type FfiCallFn = unsafe extern "C" fn(*mut FfiCif, *const c_void, *mut c_void, *mut *mut c_void);

const SLOTS: usize = 8;
static REAL: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
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

macro_rules! trampolines {
    ($($i:literal => $name:ident),* $(,)?) => {
        $(
            unsafe extern "C" fn $name(cif: *mut FfiCif, f: *const c_void, r: *mut c_void, a: *mut *mut c_void) {
                // SAFETY: forwarded unchanged from libffi's caller to the libffi it bound to.
                unsafe { hooked_ffi_call($i, cif, f, r, a) }
            }
        )*
        static TRAMPOLINES: [FfiCallFn; SLOTS] = [$($name),*];
    };
}

trampolines!(0 => ffi_call_0, 1 => ffi_call_1, 2 => ffi_call_2, 3 => ffi_call_3,
             4 => ffi_call_4, 5 => ffi_call_5, 6 => ffi_call_6, 7 => ffi_call_7);

/// The C argument and return sizes of a cif, its argument count, and the bytes the pointer
/// arguments refer to (from the Python-level call, when there is one), in one pass.
///
/// # Safety
/// `cif` must be a cif prepared by libffi (as every `ffi_call` argument is).
#[inline(always)]
unsafe fn arg_bytes(
    cif: *const FfiCif,
    ctx: Option<&crate::record::call_ctx::CallCtx>,
) -> (u64, u64, u32, u64) {
    // SAFETY: a prepared cif has nargs valid ffi_type pointers and a valid rtype.
    unsafe {
        let cif = &*cif;
        let mut total = 0u64;
        for i in 0..cif.nargs as usize {
            let t = *cif.arg_types.add(i);
            if !t.is_null() {
                total += (*t).size as u64;
            }
        }
        let buffer = ctx.map_or(0, |c| {
            c.buffer_bytes(cif.nargs as usize, |i| {
                let t = *cif.arg_types.add(i);
                !t.is_null() && (*t).type_ == FFI_TYPE_POINTER
            })
        });
        // ffi_type_void has size 1 in libffi; a void return carries no bytes.
        let ret = if cif.rtype.is_null() || (*cif.rtype).type_ == FFI_TYPE_VOID {
            0
        } else {
            (*cif.rtype).size as u64
        };
        (total, ret, cif.nargs, buffer)
    }
}

/// The hook proper. Its fast path — the thread and the (function, site) known, the call not
/// timed — counts the call and its bytes first and then tail-calls the real `ffi_call`: nothing of
/// ours stays on the stack while the C function runs, and no register needs saving.
#[inline(always)]
unsafe fn hooked_ffi_call(
    slot: usize,
    cif: *mut FfiCif,
    f: *const c_void,
    r: *mut c_void,
    a: *mut *mut c_void,
) {
    // SAFETY: REAL[slot] was set to a real ffi_call before the trampoline was written to any GOT.
    let real: FfiCallFn =
        unsafe { std::mem::transmute::<usize, FfiCallFn>(REAL[slot].load(Ordering::Relaxed)) };
    let Some(rec) = crate::record::recorder::at_home_if_active() else {
        // SAFETY: forwarded unchanged.
        return unsafe { general_ffi_call(real, cif, f, r, a) };
    };
    // SAFETY: a non-null ctx is the live CallCtx of this thread's innermost Python-level call;
    // only this thread touches it, and it outlives this hook (the wrapper is below us).
    let ctx = unsafe { rec.python.current().as_mut() };
    let stats = match &ctx {
        // The wrapper looked the pair up already.
        Some(c) => c.expected(f as usize),
        None => rec.existing_stats(f as usize, 0),
    };
    let Some(stats) = stats else {
        // SAFETY: forwarded unchanged.
        return unsafe { general_ffi_call(real, cif, f, r, a) };
    };
    // SAFETY: forwarded unchanged.
    unsafe { known_ffi_call(rec, stats, ctx, real, cif, f, r, a) }
}

/// A call whose statistics exist: excluded ones pass through; untimed ones are counted, then the
/// real `ffi_call` is a tail call; timed ones go out of line. Whether a call is timed, and in
/// which stratum, the Python-level wrapper decided before the call; without one it is decided
/// here, by the same per-pair countdown.
///
/// # Safety
/// As the trampolines: arguments forwarded unchanged from libffi's caller; `ctx` this thread's.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn known_ffi_call(
    rec: &recorder::ThreadRecorder,
    stats: &recorder::CallStats,
    ctx: Option<&mut crate::record::call_ctx::CallCtx>,
    real: FfiCallFn,
    cif: *mut FfiCif,
    f: *const c_void,
    r: *mut c_void,
    a: *mut *mut c_void,
) {
    if stats.excluded {
        // SAFETY: the original call, unchanged.
        return unsafe { real(cif, f, r, a) };
    }
    let (timed, first) = match &ctx {
        Some(c) => (c.timed, c.first),
        None => rec.python.sample_pair(stats),
    };
    if timed {
        // SAFETY: forwarded unchanged. (Two copies rather than one more argument, which would
        // go on the stack.)
        return unsafe {
            if first {
                timed_ffi_call::<true>(stats, ctx, real, cif, f, r, a)
            } else {
                timed_ffi_call::<false>(stats, ctx, real, cif, f, r, a)
            }
        };
    }
    // SAFETY: cif comes from libffi's caller and is prepared.
    unsafe { count(stats, cif, ctx.as_deref()) };
    if let Some(c) = ctx {
        c.native_done(stats, 0, 0);
    }
    // SAFETY: the original call, unchanged.
    unsafe { real(cif, f, r, a) }
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

/// A timed call of a known (function, site); `FIRST`: timed as one of the pair's first calls.
#[inline(never)]
unsafe fn timed_ffi_call<const FIRST: bool>(
    stats: &recorder::CallStats,
    mut ctx: Option<&mut crate::record::call_ctx::CallCtx>,
    real: FfiCallFn,
    cif: *mut FfiCif,
    f: *const c_void,
    r: *mut c_void,
    a: *mut *mut c_void,
) {
    // A pair has at most ALWAYS_TIMED first calls. Past them (only when the wrapper misread the
    // C address, found no pair, and took every call for a first one) a call counts with the
    // sampled ones, all of which are then timed; the wrapper files marshal times by `first`.
    let first = FIRST && stats.first.timed.get() < recorder::ALWAYS_TIMED as u64;
    if FIRST && !first {
        if let Some(c) = ctx.as_deref_mut() {
            c.first = false;
        }
    }
    // SAFETY: cif comes from libffi's caller and is prepared.
    unsafe { count(stats, cif, ctx.as_deref()) };
    let t0 = clock::now();
    // SAFETY: the original call, unchanged.
    unsafe { real(cif, f, r, a) };
    let t1 = clock::now();
    stats.record_native(first, t1.wrapping_sub(t0));
    if let Some(c) = ctx {
        c.native_done(stats, t0, t1);
    }
}

/// Every other call: a thread's first, a (function, site) first seen, one the wrapper did not
/// find, a pair away from its home slot (C callers), or the agent stopped.
#[inline(never)]
unsafe fn general_ffi_call(
    real: FfiCallFn,
    cif: *mut FfiCif,
    f: *const c_void,
    r: *mut c_void,
    a: *mut *mut c_void,
) {
    let Some(rec) = crate::record::recorder::if_active() else {
        // SAFETY: the original call, unchanged.
        return unsafe { real(cif, f, r, a) };
    };
    // SAFETY: as in hooked_ffi_call.
    let mut ctx = unsafe { rec.python.current().as_mut() };
    let site = ctx.as_ref().map_or(0, |c| c.site);
    // A timed call's marshal-in is running: what the agent spends here on its own is not the
    // program's, and is taken off it.
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
        // SAFETY: the original call, unchanged.
        return unsafe { real(cif, f, r, a) };
    };
    // SAFETY: forwarded unchanged.
    unsafe { known_ffi_call(rec, stats, ctx, real, cif, f, r, a) }
}
