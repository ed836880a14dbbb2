//! Replacing type slots: `tp_call` of ctypes' `CFuncPtr` and cffi's cdata types (and the wrapped
//! function of their `__call__` wrapper descriptor, which types created later copy their slot
//! from), and `tp_call` of ctypes' metaclasses (construction).
//!
//! In `run` mode the types are caught as they are created: `PyType_Ready` and
//! `PyType_FromMetaclass` are GOT-hooked in `_ctypes` and `_cffi_backend`, so the slots are
//! replaced during module initialisation, with the GIL held, before any call can be in flight.
//! Each replacement is recorded with what it replaced, so restoring is exact.
//!
//! In `attach` mode the types exist already: [`install_on_existing`] patches the base types, their
//! descriptors and the metaclasses the same way, then walks `__subclasses__()` and replaces the
//! slot of every subclass that still holds the original (subclasses copied it when created);
//! [`remove_from_existing`] undoes both, including subclasses created while attached, which took
//! the wrapper from the patched descriptor. Subclass slots are found again by walking rather than
//! remembered by address: a subclass may be freed while attached.

use std::collections::HashSet;
use std::ffi::{c_char, c_int, CStr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

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
    /// ctypes' instance base types: their deallocator ends a buffer built for one call.
    Data,
}

fn family(name: &str) -> Option<Family> {
    match name {
        "_ctypes.CFuncPtr" | "_ctypes.PyCFuncPtr" | "CFuncPtr" => Some(Family::Ctypes),
        "_ctypes.PyCArrayType"
        | "_ctypes.PyCStructType"
        | "_ctypes.UnionType"
        | "_ctypes.PyCSimpleType" => Some(Family::Metaclass),
        n if n.starts_with("_cffi_backend.") && n.contains("CData") => Some(Family::Cffi),
        "_ctypes.Array"
        | "_ctypes.Structure"
        | "_ctypes.Union"
        | "_ctypes._SimpleCData"
        | "_ctypes._Pointer" => Some(Family::Data),
        _ => None,
    }
}

/// Points the function slot at `addr` to `wrapper` when it holds the family's original (recorded
/// in `orig_cell` by the first patch); returns 1 when it did.
///
/// # Safety
/// `addr` must be a function-pointer slot of a live type (or its slot struct), GIL held.
unsafe fn patch_slot(addr: usize, orig_cell: &AtomicUsize, wrapper: usize) -> usize {
    // SAFETY: per the contract.
    let current = unsafe { *(addr as *const usize) };
    if current == 0 || current == wrapper {
        return 0;
    }
    match orig_cell.compare_exchange(0, current, Ordering::AcqRel, Ordering::Acquire) {
        Ok(_) => {}
        Err(existing) if existing == current => {}
        Err(_) => return 0,
    }
    write(addr, current, wrapper);
    1
}

/// Patches `ty` if it is one of ours; returns how many slots it replaced. GIL held.
///
/// # Safety
/// `ty` must be a live, ready type object; the GIL must be held.
pub unsafe fn patch_type(ty: usize) -> usize {
    let Some(api) = api::get() else { return 0 };
    // SAFETY: per the contract.
    let name = unsafe { api::type_name(ty) };
    let Some(fam) = family(&name) else { return 0 };
    if matches!(fam, Family::Data) {
        // Only static types: a heap type's deallocator may be libpython's subtype_dealloc,
        // which finds the base deallocator by walking up to the first slot that is not itself —
        // ours in its place would call it back forever (3.13's ctypes types are heap types).
        // SAFETY: per the contract.
        if unsafe { api::word(ty, api::TP_FLAGS) } & api::TPFLAGS_HEAPTYPE != 0 {
            return 0;
        }
        // SAFETY: per the contract.
        return unsafe {
            patch_slot(
                ty + api::TP_DEALLOC,
                &call::ORIG_DEALLOC,
                call::dealloc as *const () as usize,
            )
        };
    }
    if matches!(fam, Family::Metaclass) {
        // `c_double * n` (the array type's look-up or creation) is part of building a buffer.
        // SAFETY: per the contract: a metaclass's tp_as_sequence, when set, points to its
        // PySequenceMethods (a writable struct of _ctypes, or the heap type's own).
        unsafe {
            let seq = api::word(ty, api::TP_AS_SEQUENCE);
            if seq != 0 {
                patch_slot(
                    seq + api::SQ_REPEAT,
                    &call::ORIG_REPEAT,
                    call::repeat as *const () as usize,
                );
            }
        }
    }
    let (orig_cell, wrapper): (&AtomicUsize, usize) = match fam {
        Family::Ctypes => (&call::ORIG_CTYPES, call::ctypes_call as *const () as usize),
        Family::Cffi => (&call::ORIG_CFFI, call::cffi_call as *const () as usize),
        Family::Metaclass => (&call::ORIG_CONSTRUCT, call::construct as *const () as usize),
        Family::Data => unreachable!("handled above"),
    };
    // SAFETY: tp_call of a live type. A different original: not a type we understand.
    if unsafe { patch_slot(ty + api::TP_CALL, orig_cell, wrapper) } == 0 {
        return 0;
    }
    // The original tp_call, which the slot held.
    let current = orig_cell.load(Ordering::Acquire);
    if matches!(fam, Family::Metaclass) {
        return 1;
    }
    // The `__call__` wrapper descriptor in the type's dict: subclasses created later (CFUNCTYPE,
    // CDLL's _FuncPtr) take their tp_call from its wrapped function.
    // SAFETY: GIL held; the attribute of a type is its descriptor (a borrowed-then-released ref).
    unsafe {
        let descr = (api.getattr)(ty as *mut PyObject, c"__call__".as_ptr());
        if descr.is_null() {
            (api.err_clear)();
            return 1;
        }
        let d = descr as usize;
        let mut n = 1;
        if api::type_name(api::type_of(d)) == "wrapper_descriptor"
            && api::word(d, api::D_WRAPPED) == current
        {
            write(d + api::D_WRAPPED, current, wrapper);
            n += 1;
        }
        (api.decref)(descr);
        n
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
        crate::runtime::guard(0, || unsafe { patch_type(ty as usize) });
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
        crate::runtime::guard(0, || unsafe { patch_type(ty as usize) });
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
        crate::runtime::guard(0, || unsafe { patch_type(ty as usize) });
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

type CallObject = unsafe extern "C" fn(*mut PyObject, *mut PyObject) -> *mut PyObject;
type ListSize = unsafe extern "C" fn(*mut PyObject) -> isize;
type ListGetItem = unsafe extern "C" fn(*mut PyObject, isize) -> *mut PyObject;
type ModuleDict = unsafe extern "C" fn() -> *mut PyObject;
type DictGetItemString = unsafe extern "C" fn(*mut PyObject, *const c_char) -> *mut PyObject;
type IsFinalizing = unsafe extern "C" fn() -> c_int;

/// C API functions only attach needs, resolved from the process on first use.
struct Extra {
    call_object: CallObject,
    list_size: ListSize,
    /// Borrowed reference.
    list_get_item: ListGetItem,
    /// `sys.modules`, borrowed.
    module_dict: ModuleDict,
    /// Borrowed reference, no exception set when missing.
    dict_get_item_string: DictGetItemString,
    /// `Py_IsFinalizing` (3.13+) or `_Py_IsFinalizing` (3.8–3.12).
    is_finalizing: Option<IsFinalizing>,
}

static EXTRA: OnceLock<Option<Extra>> = OnceLock::new();

fn extra() -> Result<&'static Extra, String> {
    fn sym(name: &CStr) -> Option<usize> {
        // SAFETY: dlsym with RTLD_DEFAULT only looks the name up in the global scope.
        let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
        (!p.is_null()).then_some(p as usize)
    }
    EXTRA
        .get_or_init(|| {
            let f = |name: &CStr| sym(name);
            // SAFETY: each symbol is the CPython C API function of that name, whose signature
            // (the same in 3.8–3.14) is the field's type; sizes match (fn pointers are words).
            unsafe {
                Some(Extra {
                    call_object: std::mem::transmute::<usize, CallObject>(f(
                        c"PyObject_CallObject",
                    )?),
                    list_size: std::mem::transmute::<usize, ListSize>(f(c"PyList_Size")?),
                    list_get_item: std::mem::transmute::<usize, ListGetItem>(f(c"PyList_GetItem")?),
                    module_dict: std::mem::transmute::<usize, ModuleDict>(f(
                        c"PyImport_GetModuleDict",
                    )?),
                    dict_get_item_string: std::mem::transmute::<usize, DictGetItemString>(f(
                        c"PyDict_GetItemString",
                    )?),
                    is_finalizing: f(c"Py_IsFinalizing")
                        .or_else(|| f(c"_Py_IsFinalizing"))
                        .map(|a| std::mem::transmute::<usize, IsFinalizing>(a)),
                })
            }
        })
        .as_ref()
        .ok_or_else(|| "the interpreter lacks a C API function attach needs".to_string())
}

/// Runs `f` holding the GIL, from any thread (`PyGILState_Ensure`; re-entrant on a thread that
/// holds it already). None when the interpreter is not initialised or is finalizing: a thread
/// that takes the GIL then is made to exit by CPython 3.8–3.13 (and hangs in 3.14). Panics in `f` are caught.
pub fn with_gil<R>(f: impl FnOnce() -> R) -> Option<R> {
    let api = api::get()?;
    let x = extra().ok()?;
    // SAFETY: Py_IsInitialized and Py_IsFinalizing read runtime flags and need no GIL;
    // PyGILState_Ensure/Release are paired on this thread.
    unsafe {
        if (api.is_initialized)() == 0 || x.is_finalizing.is_some_and(|fin| fin() != 0) {
            return None;
        }
        let state = (api.gil_ensure)();
        let r = crate::runtime::guard(None, || Some(f()));
        (api.gil_release)(state);
        r
    }
}

/// Attribute `name` of `obj` as a new reference (None, error cleared, when missing).
///
/// # Safety
/// GIL held; `obj` a live object.
unsafe fn attr(api: &api::Api, obj: usize, name: &CStr) -> Option<usize> {
    // SAFETY: per the contract.
    unsafe {
        let p = (api.getattr)(obj as *mut PyObject, name.as_ptr());
        if p.is_null() {
            (api.err_clear)();
            None
        } else {
            Some(p as usize)
        }
    }
}

/// Calls `visit` on every subclass of `ty`, recursively, each once. The lists returned by
/// `__subclasses__()` hold strong references while their members are visited.
///
/// # Safety
/// GIL held; `ty` a live type object.
unsafe fn each_subclass(
    api: &api::Api,
    x: &Extra,
    ty: usize,
    seen: &mut HashSet<usize>,
    visit: &mut dyn FnMut(usize),
) {
    // SAFETY: per the contract; every new reference is released, errors are cleared.
    unsafe {
        let Some(method) = attr(api, ty, c"__subclasses__") else {
            return;
        };
        let list = (x.call_object)(method as *mut PyObject, std::ptr::null_mut());
        (api.decref)(method as *mut PyObject);
        if list.is_null() {
            (api.err_clear)();
            return;
        }
        let n = (x.list_size)(list);
        for i in 0..n.max(0) {
            let sub = (x.list_get_item)(list, i) as usize;
            if sub != 0 && seen.insert(sub) {
                visit(sub);
                each_subclass(api, x, sub, seen, visit);
            }
        }
        (api.decref)(list);
    }
}

/// Replaces `tp_call` of every subclass of `base` that holds `from` with `to`; returns how many.
///
/// # Safety
/// GIL held; `base` a live type object.
unsafe fn swap_subclasses(api: &api::Api, x: &Extra, base: usize, from: usize, to: usize) -> usize {
    if from == 0 || to == 0 {
        return 0;
    }
    let mut n = 0;
    let mut seen = HashSet::new();
    // SAFETY: per the contract; each visited object is a live subclass (a type object) whose
    // tp_call is an aligned pointer field, written with the GIL held.
    unsafe {
        each_subclass(api, x, base, &mut seen, &mut |sub| {
            let cell = (sub + api::TP_CALL) as *mut usize;
            if *cell == from {
                *cell = to;
                n += 1;
            }
        });
    }
    n
}

/// ctypes' base types whose metaclass builds objects: `type(Structure)`, `type(Union)`,
/// `type(c_int * 1)`, `type(c_int)`.
const CTYPES_BASES: [&CStr; 4] = [c"Structure", c"Union", c"Array", c"_SimpleCData"];
/// cffi's cdata types; the others derive from them.
const CFFI_TYPES: [&CStr; 5] = [
    c"_CDataBase",
    c"__CDataOwn",
    c"__CDataOwnGC",
    c"__CDataFromBuf",
    c"__CDataGCP",
];

/// `sys.modules[name]` as a borrowed reference (nothing is imported).
///
/// # Safety
/// GIL held.
unsafe fn loaded_module(x: &Extra, name: &CStr) -> Option<usize> {
    // SAFETY: both calls return borrowed references and set no exception.
    unsafe {
        let modules = (x.module_dict)();
        if modules.is_null() {
            return None;
        }
        let m = (x.dict_get_item_string)(modules, name.as_ptr());
        (!m.is_null()).then_some(m as usize)
    }
}

/// `sys.modules[name]` as a borrowed reference, for the other patchers.
///
/// # Safety
/// GIL held.
pub(super) unsafe fn loaded_module_ref(name: &CStr) -> Option<usize> {
    let x = extra().ok()?;
    // SAFETY: per the contract.
    unsafe { loaded_module(x, name) }
}

/// Installs the Python layer on types that already exist (attach): ctypes' `CFuncPtr`, its
/// `__call__` descriptor, every existing subclass, the four metaclasses, and — if the program
/// imported cffi — cffi's cdata types and their subclasses. Returns how many slots it replaced.
/// A call in flight keeps running in the original; the next call of that type goes through the
/// wrapper, which reads the original from a static set before any slot is written.
///
/// # Safety
/// The GIL must be held; `enable` must have succeeded.
pub unsafe fn install_on_existing() -> Result<usize, String> {
    let api = api::get().ok_or("the Python C API is not resolved")?;
    let x = extra()?;
    let mut n = 0;
    // SAFETY: GIL held (contract); every new reference is released, errors are cleared.
    unsafe {
        let ctypes = (api.import_module)(c"_ctypes".as_ptr());
        if ctypes.is_null() {
            (api.err_clear)();
        } else {
            let m = ctypes as usize;
            if let Some(base) = attr(api, m, c"CFuncPtr") {
                n += patch_type(base);
                n += swap_subclasses(
                    api,
                    x,
                    base,
                    call::ORIG_CTYPES.load(Ordering::Acquire),
                    call::ctypes_call as *const () as usize,
                );
                (api.decref)(base as *mut PyObject);
            }
            for name in CTYPES_BASES {
                if let Some(t) = attr(api, m, name) {
                    n += patch_type(api::type_of(t));
                    (api.decref)(t as *mut PyObject);
                }
            }
            (api.decref)(ctypes);
        }
        if let Some(cffi) = loaded_module(x, c"_cffi_backend") {
            for name in CFFI_TYPES {
                if let Some(t) = attr(api, cffi, name) {
                    n += patch_type(t);
                    n += swap_subclasses(
                        api,
                        x,
                        t,
                        call::ORIG_CFFI.load(Ordering::Acquire),
                        call::cffi_call as *const () as usize,
                    );
                    (api.decref)(t as *mut PyObject);
                }
            }
        }
    }
    if n == 0 {
        return Err("no ctypes or cffi type found to patch".into());
    }
    // SAFETY: GIL held (contract), no exception set (every lookup above cleared its own).
    unsafe { super::helpers::ensure_patched() };
    Ok(n)
}

/// Undoes [`install_on_existing`] (and any patch made at type creation): every recorded slot
/// goes back, then every subclass holding a wrapper — including those created while attached —
/// gets the original again. Returns how many slots were restored.
///
/// # Safety
/// The GIL must be held.
pub unsafe fn remove_from_existing() -> usize {
    // SAFETY: GIL held (contract).
    let mut n = restore_all() + unsafe { super::helpers::restore() };
    let (Some(api), Ok(x)) = (api::get(), extra()) else {
        return n;
    };
    // SAFETY: GIL held (contract); references from `attr` are released.
    unsafe {
        if let Some(m) = loaded_module(x, c"_ctypes") {
            if let Some(base) = attr(api, m, c"CFuncPtr") {
                n += swap_subclasses(
                    api,
                    x,
                    base,
                    call::ctypes_call as *const () as usize,
                    call::ORIG_CTYPES.load(Ordering::Acquire),
                );
                (api.decref)(base as *mut PyObject);
            }
        }
        if let Some(cffi) = loaded_module(x, c"_cffi_backend") {
            for name in CFFI_TYPES {
                if let Some(t) = attr(api, cffi, name) {
                    n += swap_subclasses(
                        api,
                        x,
                        t,
                        call::cffi_call as *const () as usize,
                        call::ORIG_CFFI.load(Ordering::Acquire),
                    );
                    (api.decref)(t as *mut PyObject);
                }
            }
        }
    }
    n
}
