//! Finding the builtins to bracket: the creation hooks and the walk of a new module (import
//! time, GIL held). See the parent module's doc.

use std::collections::HashMap;
use std::ffi::{c_int, c_void, CStr};
use std::sync::atomic::Ordering;

use super::*;
use crate::python::api::{self, Api, PyObject};
use crate::runtime;

type ModuleCreate2 = unsafe extern "C" fn(*mut c_void, c_int) -> *mut PyObject;
type DefInit = unsafe extern "C" fn(*mut c_void) -> *mut PyObject;
type Exec = unsafe extern "C" fn(*mut PyObject) -> c_int;
type NewEx = unsafe extern "C" fn(*mut c_void, *mut PyObject, *mut PyObject) -> *mut PyObject;
type CMethodNew =
    unsafe extern "C" fn(*mut c_void, *mut PyObject, *mut PyObject, *mut PyObject) -> *mut PyObject;

/// `PyModule_Create2` as an extension calls it (single-phase init): the new module holds the
/// functions of its def's `m_methods` by then, which are walked. (What such an init adds to its
/// module afterwards is not seen: hand-written modules declare their functions in `m_methods`,
/// and Cython and pybind11 use multi-phase init.)
pub(super) unsafe extern "C" fn module_create2(
    def: *mut c_void,
    api_version: c_int,
) -> *mut PyObject {
    // SAFETY: ORIG_MODULE_CREATE2 is PyModule_Create2, set before this hook was installed.
    let orig: ModuleCreate2 = unsafe {
        std::mem::transmute::<usize, ModuleCreate2>(ORIG_MODULE_CREATE2.load(Ordering::Relaxed))
    };
    // SAFETY: the original call, unchanged.
    let module = unsafe { orig(def, api_version) };
    if !module.is_null() {
        // SAFETY: GIL held (module creation); `module` a new module.
        runtime::guard((), || unsafe { scan_module(module) });
    }
    module
}

/// `PyModuleDef_Init` as an extension calls it (multi-phase init): the def's `Py_mod_exec` slot
/// is pointed at [`module_exec`], which walks the module once the extension's own exec is done.
pub(super) unsafe extern "C" fn moduledef_init(def: *mut c_void) -> *mut PyObject {
    // SAFETY: ORIG_MODULEDEF_INIT is PyModuleDef_Init, set before this hook was installed.
    let orig: DefInit = unsafe {
        std::mem::transmute::<usize, DefInit>(ORIG_MODULEDEF_INIT.load(Ordering::Relaxed))
    };
    // SAFETY: GIL held (an import); `def` the extension's module def.
    runtime::guard((), || unsafe { wrap_exec(def as usize) });
    // SAFETY: the original call, unchanged.
    unsafe { orig(def) }
}

/// The replaced `Py_mod_exec` slot: the extension's exec, then the walk.
unsafe extern "C" fn module_exec(module: *mut PyObject) -> c_int {
    // SAFETY: GIL held (module exec); `module` made from a def whose exec slot we replaced.
    let orig: Exec = runtime::guard(no_exec as Exec, || unsafe { original_exec(module) });
    // SAFETY: the extension's own exec, unchanged.
    let status = unsafe { orig(module) };
    if status == 0 {
        // SAFETY: as above.
        runtime::guard((), || unsafe { scan_module(module) });
    }
    status
}

/// Stands for an exec we lost (not reached): fails the import with an exception-less error.
unsafe extern "C" fn no_exec(_: *mut PyObject) -> c_int {
    -1
}

/// # Safety
/// GIL held; `module` a module object.
unsafe fn original_exec(module: *mut PyObject) -> Exec {
    let extra = EXTRA.get().expect("set before the hooks");
    // SAFETY: per the contract.
    let def = unsafe { (extra.module_get_def)(module) } as usize;
    let orig = EXECS
        .lock()
        .iter()
        .find(|(d, _, _)| *d == def)
        .map_or(0, |(_, e, _)| *e);
    if orig == 0 {
        return no_exec;
    }
    // SAFETY: the slot's original value, a Py_mod_exec function.
    unsafe { runtime::fn_at(orig) }
}

/// Points the last `Py_mod_exec` slot of `def` at [`module_exec`] when its module calls a target.
///
/// # Safety
/// `def` a live `PyModuleDef`.
unsafe fn wrap_exec(def: usize) {
    if !TARGETS.load(Ordering::Acquire) {
        return;
    }
    // SAFETY: per the contract; m_slots is null or an array ended by a zero slot id.
    unsafe {
        let mut slot = api::word(def, MODULEDEF_SLOTS);
        if slot == 0 {
            return;
        }
        let mut last = 0;
        while *(slot as *const c_int) != 0 {
            if *(slot as *const c_int) == PY_MOD_EXEC {
                last = slot;
            }
            slot += 16;
        }
        if last == 0 {
            return;
        }
        let value = (last + 8) as *mut usize;
        let exec = *value;
        if exec == module_exec as *const () as usize || !probe(exec).is_some_and(|m| m.calls_target)
        {
            return;
        }
        if !writable(value as usize) {
            return;
        }
        EXECS.lock().push((def, exec, value as usize));
        *value = module_exec as *const () as usize;
    }
}

/// Whether `addr` lies in a writable mapping (/proc/self/maps; import time only).
fn writable(addr: usize) -> bool {
    let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
        return false;
    };
    maps.lines().any(|line| {
        let mut parts = line.split_whitespace();
        let (Some(range), Some(perms)) = (parts.next(), parts.next()) else {
            return false;
        };
        let Some((lo, hi)) = range.split_once('-') else {
            return false;
        };
        let (Ok(lo), Ok(hi)) = (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
        else {
            return false;
        };
        addr >= lo && addr < hi && perms.as_bytes().get(1) == Some(&b'w')
    })
}

/// `PyCFunction_NewEx` as `_cffi_backend` calls it (3.8 builds).
pub(super) unsafe extern "C" fn cfunction_new_ex(
    ml: *mut c_void,
    slf: *mut PyObject,
    module: *mut PyObject,
) -> *mut PyObject {
    // SAFETY: ORIG_CFUNCTION_NEW_EX is PyCFunction_NewEx, set before this hook was installed.
    let orig: NewEx = unsafe {
        std::mem::transmute::<usize, NewEx>(ORIG_CFUNCTION_NEW_EX.load(Ordering::Relaxed))
    };
    // SAFETY: the original call, unchanged.
    let f = unsafe { orig(ml, slf, module) };
    if !f.is_null() {
        // SAFETY: GIL held; `f` a new builtin function.
        runtime::guard((), || unsafe { patch_function(f as usize, 0) });
    }
    f
}

/// `PyCMethod_New` as `_cffi_backend` calls it (3.9+ builds: `PyCFunction_NewEx` is a macro).
pub(super) unsafe extern "C" fn cmethod_new(
    ml: *mut c_void,
    slf: *mut PyObject,
    module: *mut PyObject,
    cls: *mut PyObject,
) -> *mut PyObject {
    // SAFETY: ORIG_CMETHOD_NEW is PyCMethod_New, set before this hook was installed.
    let orig: CMethodNew = unsafe {
        std::mem::transmute::<usize, CMethodNew>(ORIG_CMETHOD_NEW.load(Ordering::Relaxed))
    };
    // SAFETY: the original call, unchanged.
    let f = unsafe { orig(ml, slf, module, cls) };
    if !f.is_null() {
        // SAFETY: GIL held; `f` a new builtin function.
        runtime::guard((), || unsafe { patch_function(f as usize, 0) });
    }
    f
}

/// The module holding `addr` (probed once per module).
fn probe(addr: usize) -> Option<ProbedModule> {
    if let Some(m) = PROBED
        .lock()
        .iter()
        .find(|m| addr >= m.range.0 && addr < m.range.1)
    {
        return Some(m.clone());
    }
    let f = (*PROBE.lock())?;
    let m = f(addr)?;
    PROBED.lock().push(m.clone());
    Some(m)
}

/// Brackets what a module made: its functions, and its types' methods.
///
/// # Safety
/// GIL held; `module` a module object.
unsafe fn scan_module(module: *mut PyObject) {
    let Some(extra) = EXTRA.get().filter(|_| TARGETS.load(Ordering::Acquire)) else {
        return;
    };
    let Some(api) = api::get() else {
        return;
    };
    // SAFETY: per the contract; dict items are borrowed references of a dict the module keeps.
    unsafe {
        if api::type_of(module as usize) != extra.module_type {
            return;
        }
        let dict = (extra.module_get_dict)(module);
        if dict.is_null() {
            return;
        }
        each_value(api, dict, |value| {
            if api::word(api::type_of(value), api::TP_FLAGS) & TPFLAGS_TYPE_SUBCLASS != 0 {
                let tp_dict = api::word(value, TP_DICT);
                if tp_dict != 0 && api::type_of(tp_dict) == api.dict_type {
                    each_value(api, tp_dict as *mut PyObject, |m| {
                        patch_member(extra, m, value)
                    });
                }
            } else {
                patch_member(extra, value, 0);
            }
        });
    }
}

/// # Safety
/// GIL held; `dict` a dict that nothing changes while `f` runs.
unsafe fn each_value(api: &Api, dict: *mut PyObject, mut f: impl FnMut(usize)) {
    let (mut pos, mut key, mut value) = (0isize, std::ptr::null_mut(), std::ptr::null_mut());
    // SAFETY: per the contract.
    while unsafe { (api.dict_next)(dict, &mut pos, &mut key, &mut value) } != 0 {
        f(value as usize);
    }
}

/// Brackets one member of a module or type dict (of type `owner`; 0 for a module's) if it is a
/// builtin of a kind we know.
///
/// # Safety
/// GIL held; `obj` a live object; `owner` a live type or 0.
unsafe fn patch_member(extra: &Extra, obj: usize, owner: usize) {
    // SAFETY: per the contract.
    unsafe {
        let ty = api::type_of(obj);
        if ty == extra.descr_type {
            patch_descriptor(obj);
        } else if ty != 0 && (ty == extra.instancemethod_type || ty == extra.staticmethod_type) {
            // pybind11's methods are instancemethods (static ones staticmethods) of a function.
            let inner = api::word(obj, WRAPPED_CALLABLE);
            if inner != 0 {
                patch_function(inner, owner);
            }
        } else {
            patch_function(obj, owner);
        }
    }
}

/// Whether `ty` is Cython's function type.
///
/// # Safety
/// `ty` a live type.
unsafe fn is_cyfunction(ty: usize) -> bool {
    // SAFETY: per the contract.
    unsafe { api::type_name_ends_with(ty, b"cython_function_or_method") }
}

/// Brackets a builtin function or a cyfunction (anything else is left alone), found in the dict
/// of type `owner` (0: elsewhere).
///
/// # Safety
/// GIL held; `f` a live object; `owner` a live type or 0.
unsafe fn patch_function(f: usize, owner: usize) {
    let Some(extra) = EXTRA.get().filter(|_| TARGETS.load(Ordering::Acquire)) else {
        return;
    };
    // SAFETY: per the contract; the fields read exist for the types checked first.
    unsafe {
        let ty = api::type_of(f);
        let cython = is_cyfunction(ty);
        let exact = ty == extra.cfunction_type || (ty != 0 && ty == extra.cmethod_type);
        if !exact && !cython {
            return;
        }
        let Some(api) = api::get() else {
            return;
        };
        let slf = api::word(f, CF_SELF);
        let (binding, detail) = if cython {
            ("extension", "cython")
        } else if slf != 0 && api::type_name(api::type_of(slf)).starts_with("_cffi_backend") {
            ("cffi-api", "")
        } else if slf != 0
            && (api::type_name(api::type_of(slf)).contains("pybind11")
                || api::type_name(api::type_of(slf)) == "PyCapsule")
        {
            ("extension", "pybind11")
        } else {
            ("extension", "c")
        };
        let name = if cython {
            let module = attr_string(api, f, c"__module__");
            let qualname = attr_string(api, f, c"__qualname__");
            format!("{module}.{qualname}")
        } else {
            let ml = api::word(f, CF_ML);
            let module = api::word(f, CF_MODULE);
            let module_name = if module == 0 {
                String::new()
            } else if api::type_of(module) == api.unicode_type {
                api::string(api, module as *mut PyObject)
            } else {
                attr_string(api, module, c"__name__")
            };
            let method = def_name(ml);
            if owner != 0 {
                // A method (pybind11's): named by its class, which its def does not know.
                format!("{}.{method}", type_qualified(api, owner))
            } else if module_name.is_empty() {
                method
            } else {
                format!("{module_name}.{method}")
            }
        };
        bracket_object(
            f,
            CF_ML,
            CF_VECTORCALL,
            !cython && extra.specializes,
            name,
            (binding, detail),
        );
    }
}

/// Brackets a method descriptor of an extension type.
///
/// # Safety
/// GIL held; `d` a live method descriptor.
unsafe fn patch_descriptor(d: usize) {
    let (Some(extra), Some(api)) = (EXTRA.get(), api::get()) else {
        return;
    };
    // SAFETY: per the contract.
    unsafe {
        let ty = api::word(d, DESCR_TYPE);
        let owner = if ty == 0 {
            String::new()
        } else {
            type_qualified(api, ty)
        };
        let name = format!("{owner}.{}", def_name(api::word(d, DESCR_METHOD)));
        bracket_object(
            d,
            DESCR_METHOD,
            DESCR_VECTORCALL,
            extra.specializes,
            name,
            ("extension", ""),
        );
    }
}

/// `module.Qualname` of a type (`Qualname` alone for a builtin type).
///
/// # Safety
/// GIL held; `ty` a live type.
unsafe fn type_qualified(api: &Api, ty: usize) -> String {
    // SAFETY: per the contract.
    unsafe {
        let module = attr_string(api, ty, c"__module__");
        let qualname = attr_string(api, ty, c"__qualname__");
        if module.is_empty() || module == "builtins" {
            qualname
        } else {
            format!("{module}.{qualname}")
        }
    }
}

/// The def's `ml_name`.
///
/// # Safety
/// `ml` a live `PyMethodDef` (or 0).
unsafe fn def_name(ml: usize) -> String {
    if ml == 0 {
        return String::new();
    }
    // SAFETY: per the contract; ml_name a NUL-terminated string.
    unsafe {
        let p = (*(ml as *const MethodDef)).name;
        if p.is_null() {
            String::new()
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    }
}

/// `str(getattr(obj, name))`, or empty; no exception left set.
///
/// # Safety
/// GIL held; `obj` a live object.
unsafe fn attr_string(api: &Api, obj: usize, name: &CStr) -> String {
    // SAFETY: per the contract; the new reference is dropped.
    unsafe {
        let v = (api.getattr)(obj as *mut PyObject, name.as_ptr());
        if v.is_null() {
            (api.err_clear)();
            return String::new();
        }
        let s = if api::type_of(v as usize) == api.unicode_type {
            api::string(api, v)
        } else {
            String::new()
        };
        (api.decref)(v);
        s
    }
}

/// Points `obj`'s def (at `def_at`) at a [`Bracketed`] copy and its vectorcall (at
/// `vectorcall_at`) at our wrapper, when its `ml_meth` lives in a module that calls a target.
///
/// # Safety
/// GIL held; `obj` a live object with a def pointer and a vectorcall at those offsets.
unsafe fn bracket_object(
    obj: usize,
    def_at: usize,
    vectorcall_at: usize,
    coexist: bool,
    name: String,
    (binding, detail): (&'static str, &'static str),
) {
    // SAFETY: per the contract.
    unsafe {
        let ml = api::word(obj, def_at);
        let vectorcall = api::word(obj, vectorcall_at);
        if ml == 0 || super::is_wrapper(vectorcall) {
            return;
        }
        let def = *(ml as *const MethodDef);
        let Some(module) = probe(def.meth).filter(|m| m.calls_target) else {
            return;
        };
        let wrapper = super::wrapper_for(def_at, vectorcall, module.is_target) as usize;
        // The docstring is the copy's own (malloc'ed): pybind11 frees and replaces the doc of
        // the def its function points at when it adds an overload later, and frees its own
        // def's at the end — sharing one string would free it twice.
        let doc = if def.doc.is_null() {
            def.doc
        } else {
            libc::strdup(def.doc)
        };
        let copy = Box::leak(Box::new(Bracketed {
            def: MethodDef {
                flags: if coexist {
                    def.flags | METH_COEXIST
                } else {
                    def.flags
                },
                doc,
                ..def
            },
            key: ml,
            vectorcall,
            whole: module.is_target,
        }));
        FUNCTIONS.lock().get_or_insert_with(HashMap::new).insert(
            ml,
            Info {
                name,
                library: module.name.clone(),
                offset: (def.meth - module.base) as u64,
                binding,
                detail,
            },
        );
        // The def first: a call between the two stores must find the copy behind our wrapper.
        *((obj + def_at) as *mut usize) = copy as *const Bracketed as usize;
        *((obj + vectorcall_at) as *mut usize) = wrapper;
        // Kept alive (a module's functions live as long anyway), so that detach can put it back.
        if let Some(api) = api::get() {
            (api.incref)(obj as *mut PyObject);
            PATCHED.lock().push(Patched {
                obj,
                def_at,
                vectorcall_at,
                def: ml,
                vectorcall,
                copy: copy as *const Bracketed as usize,
                wrapper,
            });
        }
    }
}

/// `ffiprof attach` with `--lib`: brackets the builtins of the modules imported before it came
/// in (`sys.modules`), and the cffi `lib` functions made already (asking a `lib` for its
/// `__dict__` makes them all, through the hooked creation). Returns how many functions are
/// bracketed in all.
///
/// # Safety
/// GIL held; the hooks installed (`enable` ran).
pub(crate) unsafe fn bracket_loaded_modules() -> usize {
    if !TARGETS.load(Ordering::Acquire) {
        return 0;
    }
    let (Some(extra), Some(api)) = (EXTRA.get(), api::get()) else {
        return 0;
    };
    let Some(get_modules) = runtime::global_symbol(c"PyImport_GetModuleDict") else {
        return 0;
    };
    // SAFETY: per the contract; PyImport_GetModuleDict returns sys.modules, borrowed; the
    // modules are collected first (scanning runs Python code: attribute look-ups) and held by
    // sys.modules meanwhile; new references are released, errors cleared.
    unsafe {
        let get_modules: unsafe extern "C" fn() -> *mut PyObject = runtime::fn_at(get_modules);
        let modules = get_modules();
        if modules.is_null() || api::type_of(modules as usize) != api.dict_type {
            return 0;
        }
        let mut all = Vec::new();
        each_value(api, modules, |m| {
            if api::type_of(m) == extra.module_type {
                (api.incref)(m as *mut PyObject);
                all.push(m);
            }
        });
        for &m in &all {
            scan_module(m as *mut PyObject);
            let dict = (extra.module_get_dict)(m as *mut PyObject);
            if dict.is_null() {
                continue;
            }
            let mut libs = Vec::new();
            each_value(api, dict, |v| {
                if api::type_name(api::type_of(v)) == "_cffi_backend.Lib" {
                    libs.push(v);
                }
            });
            for lib in libs {
                let d = (api.getattr)(lib as *mut PyObject, c"__dict__".as_ptr());
                if d.is_null() {
                    (api.err_clear)();
                    continue;
                }
                if api::type_of(d as usize) == api.dict_type {
                    each_value(api, d, |f| patch_member(extra, f, 0));
                }
                (api.decref)(d);
            }
        }
        for m in all {
            (api.decref)(m as *mut PyObject);
        }
    }
    FUNCTIONS.lock().as_ref().map_or(0, |f| f.len())
}

/// An object whose def and vectorcall we replaced, with what they were (a reference held).
struct Patched {
    obj: usize,
    def_at: usize,
    vectorcall_at: usize,
    def: usize,
    vectorcall: usize,
    copy: usize,
    wrapper: usize,
}

static PATCHED: Mutex<Vec<Patched>> = Mutex::new(Vec::new());

/// Detach: every bracketed object gets its own def and vectorcall back (where they are still
/// ours) and its reference dropped. A call in flight keeps the copy it read (never freed).
/// Returns how many were put back.
///
/// # Safety
/// GIL held.
pub(crate) unsafe fn restore_all() -> usize {
    let Some(api) = api::get() else {
        return 0;
    };
    // No module made from now on is walked; the exec slots get their own function back (the
    // table keeps them: an exec read from its slot before is still forwarded).
    TARGETS.store(false, Ordering::Release);
    for &(_, exec, cell) in EXECS.lock().iter() {
        // SAFETY: a Py_mod_exec slot's value we replaced, in a module def that lives as long as
        // its extension (never unloaded).
        unsafe {
            let cell = cell as *mut usize;
            if *cell == module_exec as *const () as usize {
                *cell = exec;
            }
        }
    }
    let mut n = 0;
    for p in PATCHED.lock().drain(..) {
        // SAFETY: per the contract; the object is alive (we held a reference).
        unsafe {
            let def = (p.obj + p.def_at) as *mut usize;
            let vectorcall = (p.obj + p.vectorcall_at) as *mut usize;
            if *vectorcall == p.wrapper && *def == p.copy {
                *vectorcall = p.vectorcall;
                *def = p.def;
                n += 1;
            }
            (api.decref)(p.obj as *mut PyObject);
        }
    }
    n
}
