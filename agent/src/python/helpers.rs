//! ctypes' Python-level buffer helpers, `create_string_buffer` and `create_unicode_buffer`: a
//! buffer they build costs their whole call — the argument checks, the `sys.audit` event, looking
//! up the array type — not only the metaclass call inside (about half of it on 3.11). Reusing the
//! buffer saves all of it, so the advice needs all of it.
//!
//! The helpers are plain Python functions. Their function objects are patched in place, so every
//! reference the program holds (`from ctypes import create_string_buffer` included) sees the
//! change: the `vectorcall` pointer goes to [`helper_vectorcall`], which times the original
//! (`_PyFunction_Vectorcall`) and widens the construction record of the object it returns. On
//! 3.12+ the function's `func_version` is zeroed as `PyFunction_SetVectorcall` does, so the
//! interpreter does not specialise calls of it (specialised calls bypass `vectorcall`); restoring
//! puts both back. 3.11 calls a Python function from Python code by pushing its frame inline, past
//! `vectorcall` and any other hook, so there only calls made from C (`map`, callbacks) are timed
//! whole; the others are timed by the constructor inside.
//!
//! The helpers exist only once `ctypes/__init__.py` has run, after `_ctypes` is loaded; so the
//! patch is tried at constructions (GIL held) until it succeeds, and at attach.

use std::ffi::CStr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};

use parking_lot::Mutex;

use super::api::{self, PyObject};
use crate::record::clock;
use crate::runtime::guard;

type Vectorcall = unsafe extern "C" fn(
    *mut PyObject,
    *const *mut PyObject,
    usize,
    *mut PyObject,
) -> *mut PyObject;

const HELPERS: [&CStr; 2] = [c"create_string_buffer", c"create_unicode_buffer"];
/// Attempts before giving up (a program that never imports `ctypes` fully).
const MAX_ATTEMPTS: u32 = 1000;

/// `_PyFunction_Vectorcall`, the original of every patched helper.
static ORIG_VECTORCALL: AtomicUsize = AtomicUsize::new(0);
static DONE: AtomicBool = AtomicBool::new(false);
static ATTEMPTS: AtomicU32 = AtomicU32::new(0);

/// One patched function: where its `vectorcall` and `func_version` are, and what they held.
struct Patched {
    vectorcall_at: usize,
    version_at: Option<(usize, u32)>,
}

static PATCHED: Mutex<Vec<Patched>> = Mutex::new(Vec::new());

/// Patches the helpers if `ctypes` is imported and they are not patched yet. GIL held, no
/// exception set.
///
/// # Safety
/// The GIL must be held and no exception may be set (lookups that fail are cleared).
pub unsafe fn ensure_patched() {
    if DONE.load(Ordering::Relaxed) {
        return;
    }
    // A load and a store, not a locked add: callers hold the GIL.
    let attempts = ATTEMPTS.load(Ordering::Relaxed) + 1;
    ATTEMPTS.store(attempts, Ordering::Relaxed);
    if attempts > MAX_ATTEMPTS {
        DONE.store(true, Ordering::Relaxed);
        return;
    }
    // A slow path entered from C (a constructor call): a panic here must not unwind into Python.
    // SAFETY: per the contract.
    let done = guard(true, || unsafe { try_patch() });
    if done {
        DONE.store(true, Ordering::Relaxed);
    }
}

/// True when the helpers were found (patched, or found not to be patchable).
///
/// # Safety
/// As [`ensure_patched`].
unsafe fn try_patch() -> bool {
    let Some(api) = api::get() else { return true };
    let minor = api.layout.minor;
    // SAFETY: GIL held (contract); new references are released, errors cleared.
    unsafe {
        let Some(ctypes) = super::slots::loaded_module_ref(c"ctypes") else {
            return false;
        };
        let mut found = 0;
        for name in HELPERS {
            let f = (api.getattr)(ctypes as *mut PyObject, name.as_ptr());
            if f.is_null() {
                (api.err_clear)();
                continue;
            }
            found += 1;
            patch_function(f as usize, minor);
            (api.decref)(f);
        }
        found == HELPERS.len()
    }
}

/// Points a plain function object's `vectorcall` at ours. Anything else (a program that replaced
/// the helper with another callable) is left alone.
///
/// # Safety
/// GIL held; `f` a live object.
unsafe fn patch_function(f: usize, minor: u32) {
    // SAFETY: per the contract: the object's type is read first, and only a `function` object's
    // own words (at its type's tp_vectorcall_offset, below tp_basicsize) are read and written.
    unsafe {
        let ty = api::type_of(f);
        if api::type_name(ty) != "function" {
            return;
        }
        let size = api::word(ty, api::TP_BASICSIZE);
        let offset = api::word(ty, api::TP_VECTORCALL_OFFSET);
        if offset < 16 || offset + 8 > size {
            return;
        }
        let original = api::word(f, offset);
        if original == 0 || original == helper_vectorcall as *const () as usize {
            return;
        }
        match ORIG_VECTORCALL.compare_exchange(0, original, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => {}
            Err(existing) if existing == original => {}
            Err(_) => return,
        }
        let version_at = (minor >= 12 && offset + 12 <= size).then(|| {
            let at = f + offset + 8;
            let v = *(at as *const u32);
            *(at as *mut u32) = 0;
            (at, v)
        });
        *((f + offset) as *mut usize) = helper_vectorcall as *const () as usize;
        crate::runtime::debug(&format!(
            "helper at {f:#x}: vectorcall at +{offset}, version {version_at:?}"
        ));
        PATCHED.lock().push(Patched {
            vectorcall_at: f + offset,
            version_at,
        });
    }
}

/// Puts back every patched helper (detach). GIL held. Returns how many.
///
/// # Safety
/// The GIL must be held; the helper functions are module attributes of `ctypes`, alive while it
/// is (a program that deleted one and let it be freed is not supported while attached).
pub unsafe fn restore() -> usize {
    let mut n = 0;
    for p in PATCHED.lock().drain(..) {
        // SAFETY: per the contract; the words are the function's own.
        unsafe {
            let cell = p.vectorcall_at as *mut usize;
            if *cell == helper_vectorcall as *const () as usize {
                *cell = ORIG_VECTORCALL.load(Ordering::Acquire);
                n += 1;
            }
            if let Some((at, v)) = p.version_at {
                if *(at as *const u32) == 0 {
                    *(at as *mut u32) = v;
                }
            }
        }
    }
    DONE.store(false, Ordering::Relaxed);
    ATTEMPTS.store(0, Ordering::Relaxed);
    n
}

/// `vectorcall` of the patched helpers: the original call, timed; the object it returns, if a
/// ctypes constructor just built it, is charged the whole helper call.
unsafe extern "C" fn helper_vectorcall(
    callable: *mut PyObject,
    args: *const *mut PyObject,
    nargsf: usize,
    kwnames: *mut PyObject,
) -> *mut PyObject {
    // SAFETY: ORIG_VECTORCALL was set to `_PyFunction_Vectorcall` before any function was
    // patched to come here.
    let orig: Vectorcall = unsafe {
        std::mem::transmute::<usize, Vectorcall>(ORIG_VECTORCALL.load(Ordering::Acquire))
    };
    let Some(rec) = guard(None, crate::record::recorder::if_active) else {
        // SAFETY: the original call, unchanged.
        return unsafe { orig(callable, args, nargsf, kwnames) };
    };
    let t0 = guard(0, clock::now);
    // SAFETY: the original call, unchanged.
    let r = unsafe { orig(callable, args, nargsf, kwnames) };
    if !r.is_null() {
        guard((), || {
            let t1 = clock::now();
            rec.python
                .widen_construction(r as usize, t1.wrapping_sub(t0))
        });
    }
    r
}
