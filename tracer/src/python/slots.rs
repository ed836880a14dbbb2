//! Replacing type slots: `tp_call` of ctypes' `CFuncPtr` and cffi's cdata types (and the wrapped
//! function of their `__call__` wrapper descriptor, which types created later copy their slot
//! from), and `tp_call` of ctypes' metaclasses (construction).
//!
//! In `run` mode the types are caught as they are created: `PyType_Ready` and
//! `PyType_FromMetaclass` are GOT-hooked in `_ctypes` and `_cffi_backend`, so the slots are
//! replaced during module initialisation, with the GIL held, before any call can be in flight.
//! Each replacement is recorded with what it replaced, so restoring is exact.

use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

use super::api::{self, PyObject};
use super::call;

/// One replaced slot: where, what it held, what we put.
struct Patch {
    addr: usize,
    original: usize,
    replacement: usize,
}

static PATCHES: Mutex<Vec<Patch>> = Mutex::new(Vec::new());
pub static ORIG_TYPE_READY: AtomicUsize = AtomicUsize::new(0);
pub static ORIG_FROM_METACLASS: AtomicUsize = AtomicUsize::new(0);

fn write(addr: usize, original: usize, replacement: usize) {
    // SAFETY: `addr` is a slot of a live type object or wrapper descriptor (8-byte aligned
    // pointer fields), written with the GIL held so no Python thread reads it half-written.
    unsafe { *(addr as *mut usize) = replacement };
    PATCHES.lock().push(Patch {
        addr,
        original,
        replacement,
    });
}

/// Which family a type belongs to, by name.
enum Family {
    Ctypes,
    Cffi,
    Metaclass,
}

fn family(name: &str) -> Option<Family> {
    match name {
        "_ctypes.CFuncPtr" | "_ctypes.PyCFuncPtr" | "CFuncPtr" => Some(Family::Ctypes),
        "_ctypes.PyCArrayType"
        | "_ctypes.PyCStructType"
        | "_ctypes.UnionType"
        | "_ctypes.PyCSimpleType" => Some(Family::Metaclass),
        n if n.starts_with("_cffi_backend.") && n.contains("CData") => Some(Family::Cffi),
        _ => None,
    }
}

/// Patches `ty` if it is one of ours. GIL held.
///
/// # Safety
/// `ty` must be a live, ready type object; the GIL must be held.
pub unsafe fn patch_type(ty: usize) {
    let Some(api) = api::get() else { return };
    // SAFETY: per the contract.
    let name = unsafe { api::type_name(ty) };
    let Some(fam) = family(&name) else { return };
    let (orig_cell, wrapper): (&AtomicUsize, usize) = match fam {
        Family::Ctypes => (&call::ORIG_CTYPES, call::ctypes_call as *const () as usize),
        Family::Cffi => (&call::ORIG_CFFI, call::cffi_call as *const () as usize),
        Family::Metaclass => (&call::ORIG_CONSTRUCT, call::construct as *const () as usize),
    };
    let slot = ty + api::TP_CALL;
    // SAFETY: tp_call of a live type.
    let current = unsafe { api::word(ty, api::TP_CALL) };
    if current == 0 || current == wrapper {
        return;
    }
    match orig_cell.compare_exchange(0, current, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => {}
        Err(existing) if existing == current => {}
        Err(_) => return, // a different original: not a type we understand
    }
    write(slot, current, wrapper);
    if matches!(fam, Family::Metaclass) {
        return;
    }
    // The `__call__` wrapper descriptor in the type's dict: subclasses created later (CFUNCTYPE,
    // CDLL's _FuncPtr) take their tp_call from its wrapped function.
    // SAFETY: GIL held; the attribute of a type is its descriptor (a borrowed-then-released ref).
    unsafe {
        let descr = (api.getattr)(ty as *mut PyObject, c"__call__".as_ptr());
        if descr.is_null() {
            (api.err_clear)();
            return;
        }
        let d = descr as usize;
        if api::type_name(api::type_of(d)) == "wrapper_descriptor"
            && api::word(d, api::D_WRAPPED) == current
        {
            write(d + api::D_WRAPPED, current, wrapper);
        }
        (api.decref)(descr);
    }
}

/// `PyType_Ready` as `_ctypes` and `_cffi_backend` call it.
pub(crate) unsafe extern "C" fn type_ready(ty: *mut PyObject) -> i32 {
    // SAFETY: the real PyType_Ready, resolved before this hook was installed.
    let rc = unsafe {
        let f: unsafe extern "C" fn(*mut PyObject) -> i32 =
            std::mem::transmute(ORIG_TYPE_READY.load(Ordering::Relaxed));
        f(ty)
    };
    if rc == 0 && !ty.is_null() {
        // SAFETY: a type that just became ready, during module init with the GIL held.
        let _ = std::panic::catch_unwind(|| unsafe { patch_type(ty as usize) });
    }
    rc
}

pub static ORIG_MODULE_ADD_TYPE: AtomicUsize = AtomicUsize::new(0);

/// `PyModule_AddType` (3.10+): readies the type inside libpython, out of reach of the
/// `PyType_Ready` hook, so types added this way are caught here.
pub(crate) unsafe extern "C" fn module_add_type(module: *mut PyObject, ty: *mut PyObject) -> i32 {
    // SAFETY: the real function, resolved before this hook was installed.
    let rc = unsafe {
        let f: unsafe extern "C" fn(*mut PyObject, *mut PyObject) -> i32 =
            std::mem::transmute(ORIG_MODULE_ADD_TYPE.load(Ordering::Relaxed));
        f(module, ty)
    };
    if rc == 0 && !ty.is_null() {
        // SAFETY: a ready type, during module init with the GIL held.
        let _ = std::panic::catch_unwind(|| unsafe { patch_type(ty as usize) });
    }
    rc
}

/// `PyType_FromMetaclass` (3.12+) as `_ctypes` calls it.
pub(crate) unsafe extern "C" fn type_from_metaclass(
    meta: *mut PyObject,
    module: *mut PyObject,
    spec: *mut std::ffi::c_void,
    bases: *mut PyObject,
) -> *mut PyObject {
    // SAFETY: the real function, resolved before this hook was installed.
    let ty = unsafe {
        type F = unsafe extern "C" fn(
            *mut PyObject,
            *mut PyObject,
            *mut std::ffi::c_void,
            *mut PyObject,
        ) -> *mut PyObject;
        let f: F = std::mem::transmute(ORIG_FROM_METACLASS.load(Ordering::Relaxed));
        f(meta, module, spec, bases)
    };
    if !ty.is_null() {
        // SAFETY: a new ready type, during module init with the GIL held.
        let _ = std::panic::catch_unwind(|| unsafe { patch_type(ty as usize) });
    }
    ty
}

/// Puts back every replaced slot that still holds our value. The GIL must be held.
pub fn restore_all() -> usize {
    let mut n = 0;
    for p in PATCHES.lock().drain(..) {
        // SAFETY: the slot belongs to a type or descriptor that is never freed while the module
        // lives (types of extension modules stay alive); GIL held by the caller.
        unsafe {
            let cell = p.addr as *mut usize;
            if *cell == p.replacement {
                *cell = p.original;
                n += 1;
            }
        }
    }
    n
}

/// How many slots are replaced now.
pub fn active() -> usize {
    PATCHES.lock().len()
}
