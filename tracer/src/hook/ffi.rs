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

/// The trampoline for `real` (an `ffi_call` of one libffi copy), allocating a slot on first use.
pub fn trampoline_for(real: usize) -> Option<usize> {
    for (i, slot) in REAL.iter().enumerate() {
        match slot.compare_exchange(0, real, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return Some(TRAMPOLINES[i] as *const () as usize),
            Err(existing) if existing == real => return Some(TRAMPOLINES[i] as *const () as usize),
            Err(_) => continue,
        }
    }
    None
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
    ctx: Option<&crate::python::CallCtx>,
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
    let Some(rec) = crate::agent::recorder_if_active() else {
        // SAFETY: the original call, unchanged.
        return unsafe { real(cif, f, r, a) };
    };
    // SAFETY: a non-null ctx is the live CallCtx of this thread's innermost Python-level call;
    // only this thread touches it, and it outlives this hook (the wrapper is below us).
    let ctx = unsafe { rec.python.current().as_mut() };
    let site = ctx.as_ref().map_or(0, |c| c.site);
    let mut first = false;
    let Some(stats) = rec.stats(f as usize, site, |addr| {
        first = true;
        crate::agent::first_sighting(addr)
    }) else {
        recorder::DROPPED.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the original call, unchanged.
        return unsafe { real(cif, f, r, a) };
    };
    if stats.excluded {
        // SAFETY: the original call, unchanged.
        return unsafe { real(cif, f, r, a) };
    }
    // A thread's first call to a function pays for allocating its statistics: never time it.
    let timed = match &ctx {
        Some(c) => c.timed,
        None => rec.python.sample_timing(),
    } && !first;
    // SAFETY: cif comes from libffi's caller and is prepared.
    let (args, ret, nargs, buffer) = unsafe { arg_bytes(cif, ctx.as_deref()) };
    let (t0, t1) = if timed {
        let t0 = clock::now();
        // SAFETY: the original call, unchanged.
        unsafe { real(cif, f, r, a) };
        let t1 = clock::now();
        stats.record_native(t1.wrapping_sub(t0));
        (t0, t1)
    } else {
        // SAFETY: the original call, unchanged.
        unsafe { real(cif, f, r, a) };
        (0, 0)
    };
    if let Some(c) = ctx {
        if first {
            c.untime();
        }
        c.native_done(stats, t0, t1);
    }
    stats.calls.add(1);
    stats.arg_bytes.add(args);
    stats.ret_bytes.add(ret);
    stats.arg_count.store(nargs, Ordering::Relaxed);
    if buffer != 0 {
        stats.buffer_bytes.add(buffer);
    }
}
