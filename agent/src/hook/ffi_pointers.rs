//! The `ffi_call` hook's part in the pointer flow (`record::pointers`): a pair's pointer
//! signature decided from the cif of its first call, and the calls of pairs that have one — their
//! pointer arguments and pointer (or default `c_int`) results reported after the call. The
//! trampolines ([`super::ffi`]) reach [`pointer_ffi_call`] from their fast path and
//! [`pointers_before`] / [`note_result`] from their slow one.

use std::ffi::c_void;
use std::sync::atomic::Ordering;

use super::ffi::{FfiCallFn, FfiCif, FFI_TYPE_INT, FFI_TYPE_POINTER, FFI_TYPE_SINT32};
use crate::record::{pointers, recorder};

pub(super) type PointerFn = unsafe extern "C" fn(
    *mut FfiCif,
    *const c_void,
    *mut c_void,
    *mut *mut c_void,
    FfiCallFn,
    usize,
);

/// A counted call whose signature has a pointer in it (the fast path's pair `stats`). When the
/// pair's one pointer argument has the value it had at a call that changed nothing, and the flow
/// has not changed since ([`still_quiet`]: one compare of the epoch, one of the value), it
/// tail-calls the real `ffi_call` — a leaf that touches no table and needs no stack frame.
/// Otherwise [`pointer_check_call`] looks. The entry of pairs with one pointer argument and no
/// reported result (`CallStats::ptr_entry`); the others' is [`pointer_scan_call`]. Never
/// inlined: the trampolines keep no stack frame.
#[inline(never)]
pub(super) unsafe extern "C" fn pointer_ffi_call(
    cif: *mut FfiCif,
    f: *const c_void,
    r: *mut c_void,
    a: *mut *mut c_void,
    real: FfiCallFn,
    stats: usize,
) {
    // A C function: calling it cannot panic.
    let real: FfiCallFn = real;
    // SAFETY: the call's own arguments, for the pair `counted` returned.
    let quiet = crate::runtime::guard(false, || unsafe { still_quiet(stats, a) });
    if quiet {
        // SAFETY: forwarded unchanged.
        return unsafe { real(cif, f, r, a) };
    }
    let check: PointerFn = pointer_check_call;
    // SAFETY: forwarded as it came.
    unsafe { check(cif, f, r, a, real, stats) }
}

/// [`pointer_ffi_call`] when the pair's cache did not answer: the argument's one slot says
/// whether the call changes nothing ([`one_quiet`], the cache refilled): then it tail-calls the
/// real `ffi_call`, else [`pointer_flow_call`] does the work. Never inlined: the register it
/// needs is saved only by calls that miss the cache.
#[inline(never)]
unsafe extern "C" fn pointer_check_call(
    cif: *mut FfiCif,
    f: *const c_void,
    r: *mut c_void,
    a: *mut *mut c_void,
    real: FfiCallFn,
    stats: usize,
) {
    // A C function: calling it cannot panic.
    let real: FfiCallFn = real;
    // SAFETY: the call's own arguments, for the pair `counted` returned.
    let quiet = crate::runtime::guard(false, || unsafe { one_quiet(stats, a) });
    if quiet {
        // SAFETY: forwarded unchanged.
        return unsafe { real(cif, f, r, a) };
    }
    let flow: PointerFn = pointer_flow_call;
    // SAFETY: forwarded as it came.
    unsafe { flow(cif, f, r, a, real, stats) }
}

/// The entry of a pair with no cache (other than one pointer argument, or a reported result).
/// When its result is not reported and no pointer argument would change the flow (each is
/// untracked and no cut pointer, or tracked and passed to its last function again:
/// [`pointers::surely_unchanged`]), it only looks and tail-calls the real `ffi_call`. Otherwise
/// [`pointer_flow_call`] does the work.
#[inline(never)]
unsafe extern "C" fn pointer_scan_call(
    cif: *mut FfiCif,
    f: *const c_void,
    r: *mut c_void,
    a: *mut *mut c_void,
    real: FfiCallFn,
    stats: usize,
) {
    // A C function: calling it cannot panic.
    let real: FfiCallFn = real;
    // SAFETY: the call's own arguments, for the pair `counted` returned.
    let quiet = crate::runtime::guard(false, || unsafe { nothing_to_note(stats, a) });
    if quiet {
        // SAFETY: forwarded unchanged.
        return unsafe { real(cif, f, r, a) };
    }
    let flow: PointerFn = pointer_flow_call;
    // SAFETY: forwarded as it came.
    unsafe { flow(cif, f, r, a, real, stats) }
}

/// Whether the pair's one-entry cache says a call of pair `stats` has nothing for the pointer
/// flow: the cache was filled in the flow's current epoch (never, for a pair with a reported
/// result or other than one pointer argument) with the value the pointer argument has now.
/// Calls nothing and reads no table. (A pair whose signature is not decided yet has an empty
/// cache: `a` is read only for a pair known to have a pointer argument.)
///
/// # Safety
/// `stats` the address of a leaked CallStats of this thread; `a` as libffi's caller passed it.
#[inline(always)]
pub(super) unsafe fn still_quiet(stats: usize, a: *mut *mut c_void) -> bool {
    // SAFETY: per the contract.
    let pair = unsafe { &*(stats as *const recorder::CallStats) };
    if pair.ptr_quiet_epoch.load(Ordering::Relaxed) != pointers::epoch() {
        return false;
    }
    let i = pair.ptr_one.load(Ordering::Relaxed) as usize;
    // SAFETY: per the contract: a filled cache means argument `i` is the pair's pointer argument,
    // so libffi's caller passed a valid pointer to its value.
    unsafe { *(*a.add(i) as *const usize) == pair.ptr_quiet.load(Ordering::Relaxed) }
}

/// Whether a call of a pair with a cache (one pointer argument, no reported result) that did not
/// answer has nothing for the pointer flow, the cache refilled: its argument's one slot
/// ([`pointers::surely_unchanged`]), with no loop over the mask. A pair whose pointer argument
/// changes from call to call pays for that look-up and the cache's compare.
///
/// # Safety
/// As [`still_quiet`], for a pair with a cache (`ptr_one` below `u8::MAX`).
#[inline(always)]
unsafe fn one_quiet(stats: usize, a: *mut *mut c_void) -> bool {
    // SAFETY: per the contract.
    let pair = unsafe { &*(stats as *const recorder::CallStats) };
    // The epoch goes to the cache at once, read before the look-up, and the value after it: the
    // answer's, or null on a no — null is quiet at every epoch (the flow ignores it). Nothing
    // stays in a register across the look-up, which then needs no stack frame.
    pair.ptr_quiet_epoch
        .store(pointers::epoch(), Ordering::Relaxed);
    let i = pair.ptr_one.load(Ordering::Relaxed) as usize;
    // SAFETY: per the contract: argument `i` is the pair's pointer argument, so libffi's caller
    // passed a valid pointer to its value.
    let v = unsafe { *(*a.add(i) as *const usize) };
    let quiet = pointers::surely_unchanged(v, &pair.ptr_fn);
    pair.ptr_quiet
        .store(if quiet { v } else { 0 }, Ordering::Relaxed);
    quiet
}

/// Whether a counted call of pair `stats` has nothing for the pointer flow: no result to report,
/// and no pointer argument that would change it. Calls nothing.
///
/// # Safety
/// `stats` the address of a leaked CallStats; `a` as libffi's caller passed it.
#[inline(always)]
unsafe fn nothing_to_note(stats: usize, a: *mut *mut c_void) -> bool {
    // SAFETY: per the contract.
    let pair = unsafe { &*(stats as *const recorder::CallStats) };
    if pair.ptr_sig.load(Ordering::Relaxed) & (pointers::SIG_RET_PTR | pointers::SIG_RET_INT) != 0 {
        return false;
    }
    let mut mask = pair.ptr_args.load(Ordering::Relaxed);
    while mask != 0 {
        let i = mask.trailing_zeros() as usize;
        mask &= mask - 1;
        // SAFETY: per the contract: argument i exists (the mask has its bit), so libffi's caller
        // passed an argument array with a valid pointer to its value — libffi reads it too.
        if !pointers::surely_unchanged(unsafe { *(*a.add(i) as *const usize) }, &pair.ptr_fn) {
            return false;
        }
    }
    true
}

/// A counted call with something for the pointer flow: forwarded, then its pointer arguments
/// and its result reported. After the call, not before: the arguments' values are still in
/// libffi's argument array. Never inlined: [`pointer_ffi_call`] stays a leaf.
#[inline(never)]
unsafe extern "C" fn pointer_flow_call(
    cif: *mut FfiCif,
    f: *const c_void,
    r: *mut c_void,
    a: *mut *mut c_void,
    real: FfiCallFn,
    stats: usize,
) {
    // A C function: calling it cannot panic.
    let real: FfiCallFn = real;
    // SAFETY: forwarded unchanged.
    unsafe { real(cif, f, r, a) };
    // SAFETY: `counted` returned the address of the pair's leaked CallStats; the call's own
    // cif, result and arguments, after it returned.
    crate::runtime::guard((), || unsafe {
        let pair = &*(stats as *const recorder::CallStats);
        note_args(pair, a);
        if pair.ptr_sig.load(Ordering::Relaxed) & (pointers::SIG_RET_PTR | pointers::SIG_RET_INT)
            != 0
        {
            note_result(pair, cif, r, a);
        }
    });
}

/// The slow path's pointer work before the call, for a pair whose signature is not known yet or
/// has a pointer in it: decides the signature on first sight, reports the pointer arguments, and
/// says whether the result is to be reported once the call returned.
///
/// # Safety
/// `cif` and `a` as libffi's caller passed them.
#[cold]
#[inline(never)]
pub(super) unsafe fn pointers_before(
    stats: &recorder::CallStats,
    cif: *const FfiCif,
    a: *mut *mut c_void,
) -> bool {
    let mut sig = stats.ptr_sig.load(Ordering::Relaxed);
    if sig == 0 {
        // SAFETY: per the contract.
        sig = unsafe { decide_signature(stats, cif, stats.site) };
    }
    if sig & pointers::SIG_ACTIVE == 0 {
        // Decided just now: no pointer in it (or ctypes' own, or the flow off).
        return false;
    }
    // SAFETY: per the contract: the pair `stats` is this thread's (as every pair it records).
    // (The caller asked [`still_quiet`] already.)
    let pair = stats as *const recorder::CallStats as usize;
    let cached = stats.ptr_one.load(Ordering::Relaxed) != u8::MAX;
    if !a.is_null()
        && unsafe {
            if cached {
                one_quiet(pair, a)
            } else {
                nothing_to_note(pair, a)
            }
        }
    {
        return false;
    }
    // SAFETY: per the contract.
    unsafe { note_args(stats, a) };
    sig & (pointers::SIG_RET_PTR | pointers::SIG_RET_INT) != 0
}

/// The pair's pointer signature from the cif of its first call, kept in its statistics: whether
/// it returns a pointer, takes one, or returns ctypes' default `c_int` at a site that declared
/// no `restype` (`site_flags` bit 1). ctypes' own functions (`cast` returns its argument) are
/// left out of the flow.
///
/// # Safety
/// `cif` prepared by libffi.
#[cold]
#[inline(never)]
unsafe fn decide_signature(stats: &recorder::CallStats, cif: *const FfiCif, site: u32) -> u8 {
    let mut sig = pointers::SIG_KNOWN;
    // No cache until the signature says the pair can have one.
    stats.ptr_one.store(u8::MAX, Ordering::Relaxed);
    if !crate::python::site_rules::is_ctypes_internal(stats.function) {
        // SAFETY: per the contract.
        unsafe {
            let cif = &*cif;
            let ret = (*cif.rtype).type_;
            if ret == FFI_TYPE_POINTER {
                sig |= pointers::SIG_RET_PTR;
            } else if (ret == FFI_TYPE_INT || ret == FFI_TYPE_SINT32)
                && site != 0
                && crate::python::frames::site_flags(site) & 2 != 0
            {
                sig |= pointers::SIG_RET_INT;
            }
            let mask = (0..(cif.nargs as usize).min(16))
                .filter(|&i| (**cif.arg_types.add(i)).type_ == FFI_TYPE_POINTER)
                .fold(0u16, |m, i| m | 1 << i);
            if mask != 0 {
                sig |= pointers::SIG_ARG_PTR;
                stats.ptr_args.store(mask, Ordering::Relaxed);
            }
            // A cache for one pointer argument and no result to report; the entry to match.
            let cached = mask.is_power_of_two()
                && sig & (pointers::SIG_RET_PTR | pointers::SIG_RET_INT) == 0;
            let (one, entry): (u8, PointerFn) = if cached {
                (mask.trailing_zeros() as u8, pointer_ffi_call)
            } else {
                (u8::MAX, pointer_scan_call)
            };
            stats.ptr_one.store(one, Ordering::Relaxed);
            stats.ptr_entry.store(entry as usize, Ordering::Relaxed);
        }
        if sig != pointers::SIG_KNOWN {
            match pointers::fn_id(stats.function) {
                // No id left: the function stays out of the flow.
                0 => sig = pointers::SIG_KNOWN,
                id => stats.ptr_fn.store(id, Ordering::Relaxed),
            }
        }
    }
    // Off (`FFIPROF_POINTERS=0`, a measuring aid): decided as when on, so that the tables are
    // mapped as they would be (where they land moves the interpreter's arenas, which alone
    // changes its allocator's instructions a call), but no call joins the flow.
    if !pointers::ENABLED.load(Ordering::Relaxed) {
        sig = pointers::SIG_KNOWN;
    }
    stats.ptr_sig.store(sig, Ordering::Relaxed);
    sig
}

/// The value of pointer argument `i` (libffi's argument values point at each argument).
///
/// # Safety
/// `cif` and `a` as libffi's caller passed them; `i` a pointer argument.
#[inline(always)]
unsafe fn pointer_arg(a: *mut *mut c_void, i: usize) -> usize {
    // SAFETY: per the contract; a pointer argument's storage holds one pointer.
    unsafe {
        let p = *a.add(i);
        if p.is_null() {
            0
        } else {
            *(p as *const usize)
        }
    }
}

/// Reports each pointer argument's value (among the first 16: the pair's `ptr_args` bits) to the
/// pointer flow, as passed to the pair's function.
///
/// # Safety
/// `a` as libffi's caller passed it, for a call of the pair's cif.
#[inline(always)]
unsafe fn note_args(stats: &recorder::CallStats, a: *mut *mut c_void) {
    let mut mask = stats.ptr_args.load(Ordering::Relaxed);
    let g = stats.ptr_fn.load(Ordering::Relaxed);
    if a.is_null() {
        return;
    }
    while mask != 0 {
        let i = mask.trailing_zeros() as usize;
        mask &= mask - 1;
        // SAFETY: per the contract: argument i is a pointer.
        pointers::passed(unsafe { pointer_arg(a, i) }, g);
    }
}

/// Reports the call's result to the pointer flow: a non-null pointer that is none of the call's
/// own pointer arguments (`cast`, `strcpy`, a realloc in place return what they were given) as
/// an object the function made; a `c_int` read from a site without `restype` as a value that
/// may be a pointer's low half.
///
/// # Safety
/// `cif`, `r` and `a` as libffi's caller passed them, after the call returned.
pub(super) unsafe fn note_result(
    stats: &recorder::CallStats,
    cif: *const FfiCif,
    r: *mut c_void,
    a: *mut *mut c_void,
) {
    let f = stats.ptr_fn.load(Ordering::Relaxed);
    if f == 0 || r.is_null() {
        return;
    }
    let sig = stats.ptr_sig.load(Ordering::Relaxed);
    // SAFETY: per the contract: libffi wrote the result (a whole register's width) at `r`.
    unsafe {
        if sig & pointers::SIG_RET_INT != 0 {
            return pointers::int_returned(*(r as *const i32), f);
        }
        let v = *(r as *const usize);
        if v == 0 {
            return;
        }
        let cif = &*cif;
        if !a.is_null()
            && (0..cif.nargs as usize).any(|i| {
                (**cif.arg_types.add(i)).type_ == FFI_TYPE_POINTER && pointer_arg(a, i) == v
            })
        {
            return;
        }
        stats.ptr_made.add(1);
        let site = u16::try_from(stats.site).unwrap_or(0);
        pointers::made(v, f, site);
    }
}
