//! Calls of builtin functions and methods of extension modules that call a `--lib` target — a
//! hand-written C extension, a cffi API-mode `lib` function, Cython's cyfunctions and cdef-class
//! methods, pybind11's functions — bracketed like ctypes' `tp_call`: site, stack, exact count,
//! time, argument bytes (issue 14 item 2).
//!
//! **Which.** A function is bracketed when its implementation (`ml_meth`) lives in a module that
//! imports a function of a library `--lib` names, or in such a library itself (pymunk compiles
//! Chipmunk into its cffi extension). Without `--lib` nothing is bracketed: the default stays
//! "every library reached through libffi".
//!
//! **How it is found.** When its module is made: `PyModule_Create2` (single-phase init) and the
//! `Py_mod_exec` slots `PyModuleDef_Init` hands over (multi-phase: Cython, pybind11) are hooked in
//! the extension's GOT, and the module's dict is walked once its init is done — functions,
//! cyfunctions, and the methods of its types (descriptors, pybind11's `instancemethod`s). cffi
//! makes API-mode `lib` functions lazily, in `_cffi_backend`, so `PyCFunction_NewEx` and
//! `PyCMethod_New` are hooked there.
//!
//! **How it is bracketed.** Every such object carries its own `vectorcall` pointer
//! (`PyCFunctionObject.vectorcall`, which a cyfunction embeds, and
//! `PyMethodDescrObject.vectorcall`): it is pointed at [`CFUNCTION_WRAPPER`] or
//! [`DESCR_WRAPPER`] (or their assembly lean path: see below), and the object's `PyMethodDef`
//! pointer at a leaked copy ([`Bracketed`]) that carries the original vectorcall and the key the statistics are filed under (the original
//! def's address: unique per Python callable, which pybind11's shared dispatcher is not). The
//! wrapper finds all it needs from the object itself: no table, lock or allocation per call. A
//! `METH_VARARGS` function has no vectorcall (CPython calls its `tp_call` with a tuple): the
//! wrapper then makes that call as CPython would (`_PyObject_MakeTpCall`). CPython 3.11+
//! specializes calls of exact builtin functions and method descriptors into a direct call of
//! `ml_meth`, past any vectorcall — but only while the def's flags equal one calling convention
//! exactly: the copy carries `METH_COEXIST` beside them (a flag only type creation reads), so the
//! specialized instruction deoptimizes to the generic call, which goes through the vectorcall.
//!
//! **The lean path.** Nearly every call of a loop repeats the thread's last call (same position,
//! same function): [`lean`] takes it with one look at the thread's last-call cache, no clock read
//! unless its pair's countdown times it, and no filing out of line; everything else (a new
//! position, a nested repeat) takes the full [`bracket`]. On CPython 3.11 the object's
//! vectorcall is that path in assembly ([`lean_asm`], chosen by [`wrapper_for`]), which comes
//! back to Rust for anything but the plainest repeat.
//!
//! **What is recorded.** The call pushes a [`CallCtx`] for the hooks inside. When no separate
//! native entry is seen inside (today always: the `--lib` thunks are another branch's; and
//! always when the library is compiled into the extension) the whole call's time is filed as one
//! interval, which the profile reports as `unsplit_ns`, never as a guessed split. It is kept in
//! the pair's native counters and histogram and renamed by the snapshot ([`describe`]).

use std::collections::HashMap;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use parking_lot::Mutex;

use super::api::{self, Api, PyObject};
use super::frames;
use crate::record::call_ctx::{CallCtx, ThreadState, ARG_SLOTS, AWAITING_GIL};
use crate::record::clock;
use crate::record::recorder::{self, CallStats, ThreadRecorder};
use crate::runtime;

mod find;
mod lean;
mod lean_asm;

pub(crate) use find::{bracket_loaded_modules, restore_all};

/// `PyCFunctionObject.m_ml`, `m_self`, `m_module`, `vectorcall` (3.8–3.14; a cyfunction starts
/// with one).
const CF_ML: usize = 16;
const CF_SELF: usize = 24;
const CF_MODULE: usize = 32;
const CF_VECTORCALL: usize = 48;
/// `PyMethodDescrObject.d_type`, `d_method`, `vectorcall` (3.8–3.14).
const DESCR_TYPE: usize = 16;
const DESCR_METHOD: usize = 40;
const DESCR_VECTORCALL: usize = 48;
/// `PyInstanceMethodObject.func` and `staticmethod.sm_callable`: the wrapped callable.
const WRAPPED_CALLABLE: usize = 16;
/// `PyTypeObject.tp_as_buffer` and `tp_dict`; `PyBufferProcs.bf_getbuffer` is its first field.
const TP_AS_BUFFER: usize = 160;
const TP_DICT: usize = 264;
/// `Py_TPFLAGS_TYPE_SUBCLASS`: the object is a type.
const TPFLAGS_TYPE_SUBCLASS: usize = 1 << 31;
/// `PyModuleDef.m_slots`; a slot is `{int slot; void *value}`; `Py_mod_exec`.
const MODULEDEF_SLOTS: usize = 72;
const PY_MOD_EXEC: c_int = 2;
const METH_COEXIST: c_int = 0x0040;
/// `PY_VECTORCALL_ARGUMENTS_OFFSET`, a flag in `nargsf`.
const ARGUMENTS_OFFSET: usize = 1 << 63;

type Vectorcall = unsafe extern "C" fn(
    *mut PyObject,
    *const *mut PyObject,
    usize,
    *mut PyObject,
) -> *mut PyObject;

/// `PyMethodDef`.
#[repr(C)]
#[derive(Clone, Copy)]
struct MethodDef {
    name: *const c_char,
    meth: usize,
    flags: c_int,
    doc: *const c_char,
}

/// What a bracketed object's `PyMethodDef` pointer points at: a copy of its def (first, so
/// CPython and the extension read it as the def), then what the wrapper needs. Leaked: an object
/// made from it later (a bound method of a descriptor) may outlive anything.
#[repr(C)]
struct Bracketed {
    def: MethodDef,
    /// The original def's address: the key of the function's statistics.
    key: usize,
    /// The object's own vectorcall; 0 for a `METH_VARARGS` function (called through `tp_call`).
    vectorcall: usize,
    /// Its module is a `--lib` target itself: there is no separate native entry to time, so
    /// each call is filed whole. Otherwise the module reaches the target through its GOT and
    /// each call is split around the target calls inside it (see [`file`]).
    whole: bool,
}

/// What the profile says about a bracketed function (by key).
#[derive(Clone, Debug)]
pub struct Info {
    /// The Python callable's qualified name: `module.function`, `module.Class.method`.
    pub name: String,
    /// The file of the module `ml_meth` lives in, and its offset there.
    pub library: String,
    pub offset: u64,
    /// `extension` or `cffi-api`.
    pub binding: &'static str,
    /// `c`, `cython` or `pybind11` for an extension (empty for cffi).
    pub detail: &'static str,
}

static FUNCTIONS: Mutex<Option<HashMap<usize, Info>>> = Mutex::new(None);

/// What the hook layer tells about the module holding an address: its file, load base, mapped
/// range, and whether it calls into a `--lib` target (or is one). None when no module holds it.
pub type ModuleProbe = fn(usize) -> Option<ProbedModule>;

#[derive(Clone, Debug)]
pub struct ProbedModule {
    pub name: String,
    pub base: usize,
    pub range: (usize, usize),
    pub calls_target: bool,
    /// The module is a `--lib` target itself (the library compiled into its extension): its
    /// builtins have no separate native entry, and their calls are reported whole.
    pub is_target: bool,
}

static PROBE: Mutex<Option<ModuleProbe>> = Mutex::new(None);
/// Modules probed already (import time only).
static PROBED: Mutex<Vec<ProbedModule>> = Mutex::new(Vec::new());
/// `--lib` was given: the hooks apply.
static TARGETS: AtomicBool = AtomicBool::new(false);

/// The originals of the hooked C API functions, and of the exec slots replaced (def → exec).
static ORIG_MODULE_CREATE2: AtomicUsize = AtomicUsize::new(0);
static ORIG_MODULEDEF_INIT: AtomicUsize = AtomicUsize::new(0);
static ORIG_CFUNCTION_NEW_EX: AtomicUsize = AtomicUsize::new(0);
static ORIG_CMETHOD_NEW: AtomicUsize = AtomicUsize::new(0);
static MAKE_TP_CALL: AtomicUsize = AtomicUsize::new(0);
/// (def, its original exec, the slot's value cell).
static EXECS: Mutex<Vec<(usize, usize, usize)>> = Mutex::new(Vec::new());

/// C API the scan needs beyond `api::Api`, resolved in [`enable`].
struct Extra {
    module_get_dict: unsafe extern "C" fn(*mut PyObject) -> *mut PyObject,
    module_get_def: unsafe extern "C" fn(*mut PyObject) -> *mut c_void,
    cfunction_type: usize,
    cmethod_type: usize,
    descr_type: usize,
    instancemethod_type: usize,
    staticmethod_type: usize,
    module_type: usize,
    /// 3.9+: `_PyObject_MakeTpCall` takes the thread state first.
    tp_call_with_tstate: bool,
    /// 3.11+: calls of exact builtins are specialized (see the module doc).
    specializes: bool,
}

static EXTRA: std::sync::OnceLock<Extra> = std::sync::OnceLock::new();

/// Turns the brackets on for this process when `--lib` names targets (`has_targets`), with the
/// hook layer's module probe. Returns false when the C API lacks what they need.
pub fn enable(has_targets: bool, probe: ModuleProbe) -> bool {
    *PROBE.lock() = Some(probe);
    let sym = |name: &CStr| runtime::global_symbol(name).unwrap_or(0);
    let Some(version) = api::get().map(|a| a.version.clone()) else {
        return false;
    };
    let minor = api::minor_of(&version).unwrap_or(0);
    let resolved = (|| {
        // SAFETY: each symbol is the C API function of the declared signature (3.8–3.14).
        Some(unsafe {
            Extra {
                module_get_dict: runtime::fn_at(runtime::global_symbol(c"PyModule_GetDict")?),
                module_get_def: runtime::fn_at(runtime::global_symbol(c"PyModule_GetDef")?),
                cfunction_type: runtime::global_symbol(c"PyCFunction_Type")?,
                cmethod_type: sym(c"PyCMethod_Type"),
                descr_type: runtime::global_symbol(c"PyMethodDescr_Type")?,
                instancemethod_type: sym(c"PyInstanceMethod_Type"),
                staticmethod_type: sym(c"PyStaticMethod_Type"),
                module_type: runtime::global_symbol(c"PyModule_Type")?,
                tp_call_with_tstate: minor >= 9,
                specializes: minor >= 11,
            }
        })
    })();
    let Some(extra) = resolved else {
        return false;
    };
    let _ = EXTRA.set(extra);
    if let Some(api) = api::get() {
        lean_asm::enable(api);
    }
    ORIG_MODULE_CREATE2.store(sym(c"PyModule_Create2"), Ordering::Relaxed);
    ORIG_MODULEDEF_INIT.store(sym(c"PyModuleDef_Init"), Ordering::Relaxed);
    ORIG_CFUNCTION_NEW_EX.store(sym(c"PyCFunction_NewEx"), Ordering::Relaxed);
    ORIG_CMETHOD_NEW.store(sym(c"PyCMethod_New"), Ordering::Relaxed);
    MAKE_TP_CALL.store(sym(c"_PyObject_MakeTpCall"), Ordering::Relaxed);
    let ok = MAKE_TP_CALL.load(Ordering::Relaxed) != 0
        && ORIG_MODULE_CREATE2.load(Ordering::Relaxed) != 0
        && ORIG_MODULEDEF_INIT.load(Ordering::Relaxed) != 0;
    TARGETS.store(has_targets && ok, Ordering::Release);
    ok
}

/// The GOT replacements, for `hook`'s table (None: the row does not apply in this process).
pub mod got_hooks {
    use super::*;

    fn on(orig: &AtomicUsize, hook: usize) -> Option<usize> {
        (TARGETS.load(Ordering::Acquire) && orig.load(Ordering::Relaxed) != 0).then_some(hook)
    }

    pub fn module_create2() -> Option<usize> {
        on(
            &ORIG_MODULE_CREATE2,
            super::find::module_create2 as *const () as usize,
        )
    }

    pub fn moduledef_init() -> Option<usize> {
        on(
            &ORIG_MODULEDEF_INIT,
            super::find::moduledef_init as *const () as usize,
        )
    }

    pub fn cfunction_new_ex() -> Option<usize> {
        on(
            &ORIG_CFUNCTION_NEW_EX,
            super::find::cfunction_new_ex as *const () as usize,
        )
    }

    pub fn cmethod_new() -> Option<usize> {
        on(
            &ORIG_CMETHOD_NEW,
            super::find::cmethod_new as *const () as usize,
        )
    }
}

/// The bracketed function `key` (statistics filed under it), for the snapshot.
/// A method descriptor's flavour is its library's: that of the module's functions (`c` when it
/// has none we could tell).
pub fn describe(key: usize) -> Option<Info> {
    let guard = FUNCTIONS.lock();
    let all = guard.as_ref()?;
    let mut info = all.get(&key)?.clone();
    if info.detail.is_empty() && info.binding == "extension" {
        info.detail = all
            .values()
            .find(|o| o.library == info.library && !o.detail.is_empty())
            .map_or("c", |o| o.detail);
    }
    Some(info)
}

// ---------------------------------------------------------------------------------------------
// The per-call wrappers.

/// What the wrappers return when they did not call the original (see `call::NOT_CALLED`).
#[allow(clippy::manual_dangling_ptr)] // a sentinel, compared only, never a pointer to use
const NOT_CALLED: *mut PyObject = 1 as *mut PyObject;

/// The vectorcall of a bracketed object whose def pointer is at `DEF_AT`: [`CF_ML`] for a builtin
/// function or cyfunction, [`DESCR_METHOD`] for a method descriptor.
unsafe extern "C" fn bracketed_vectorcall<const DEF_AT: usize>(
    callable: *mut PyObject,
    args: *const *mut PyObject,
    nargsf: usize,
    kwnames: *mut PyObject,
) -> *mut PyObject {
    // SAFETY: this vectorcall is set only on objects whose def pointer (at DEF_AT) is a
    // Bracketed; the interpreter calls it with the GIL held. The lean path cannot panic once it
    // made the call (see there), so a call is never made twice.
    let result = runtime::guard(NOT_CALLED, || unsafe {
        lean::repeat(DEF_AT, callable, args, nargsf, kwnames)
    });
    if result != NOT_CALLED {
        return result;
    }
    // SAFETY: as above.
    unsafe { full_bracket(DEF_AT, callable, args, nargsf, kwnames) }
}

/// Where the assembly lean path (`lean_asm`) sends a repeat of the thread's last call that it
/// leaves (a stack sample, a timed call, an argument that may refer to bytes): `st` the calling
/// thread's state, `stats` its statistics for the call's site, as the assembly found them.
///
/// # Safety
/// As [`bracketed_vectorcall`]; `st` and `stats` as the assembly lean path found them, with the
/// thread's lean context not pushed.
unsafe extern "C" fn lean_repeat<const DEF_AT: usize>(
    callable: *mut PyObject,
    args: *const *mut PyObject,
    nargsf: usize,
    kwnames: *mut PyObject,
    st: *const ThreadState,
    stats: *const CallStats,
) -> *mut PyObject {
    // SAFETY: as per the contract; the lean path cannot panic once it made the call.
    let result = runtime::guard(NOT_CALLED, || unsafe {
        let (Some(api), Some(st), Some(stats)) = (api::hot(), st.as_ref(), stats.as_ref()) else {
            return NOT_CALLED;
        };
        let b = &*(api::word(callable as usize, DEF_AT) as *const Bracketed);
        lean::finish(api, st, b, stats, (callable, args, nargsf, kwnames))
    });
    if result != NOT_CALLED {
        return result;
    }
    // SAFETY: as above.
    unsafe { full_bracket(DEF_AT, callable, args, nargsf, kwnames) }
}

/// The wrapper's calls that the lean path leaves: the full bracket, out of line so that the lean
/// path's frame stays small (a few registers saved, no context on its stack).
///
/// # Safety
/// As [`bracketed_vectorcall`].
#[inline(never)]
unsafe fn full_bracket(
    def_at: usize,
    callable: *mut PyObject,
    args: *const *mut PyObject,
    nargsf: usize,
    kwnames: *mut PyObject,
) -> *mut PyObject {
    // SAFETY: as in `bracketed_vectorcall`; the bracket cannot panic once it made the call.
    let result = runtime::guard(NOT_CALLED, || unsafe {
        bracket(def_at, callable, args, nargsf, kwnames)
    });
    if result != NOT_CALLED {
        return result;
    }
    // SAFETY: as above.
    let original: Vectorcall = runtime::guard(no_call as Vectorcall, || unsafe {
        original_of(def_at, callable)
    });
    // SAFETY: the original call, unchanged (the bracket did not make it).
    unsafe { original(callable, args, nargsf, kwnames) }
}

/// The vectorcall of a bracketed builtin function or cyfunction.
#[cfg(not(feature = "floor-probe"))]
pub(super) const CFUNCTION_WRAPPER: Vectorcall = bracketed_vectorcall::<CF_ML>;
/// The vectorcall of a bracketed method descriptor.
#[cfg(not(feature = "floor-probe"))]
pub(super) const DESCR_WRAPPER: Vectorcall = bracketed_vectorcall::<DESCR_METHOD>;
/// The floor probe's build brackets with [`floor_vectorcall`], which is the shipped wrapper
/// when no floor level is set.
#[cfg(feature = "floor-probe")]
pub(super) const CFUNCTION_WRAPPER: Vectorcall = floor_vectorcall::<CF_ML>;
#[cfg(feature = "floor-probe")]
pub(super) const DESCR_WRAPPER: Vectorcall = floor_vectorcall::<DESCR_METHOD>;

/// The floor probe's reduced wrapper (`python::floor_probe`, benchmarks only): it forwards to
/// what [`floor_next`] chooses.
#[cfg(feature = "floor-probe")]
unsafe extern "C" fn floor_vectorcall<const DEF_AT: usize>(
    callable: *mut PyObject,
    args: *const *mut PyObject,
    nargsf: usize,
    kwnames: *mut PyObject,
) -> *mut PyObject {
    // SAFETY: as in `bracketed_vectorcall`.
    let next: Vectorcall = runtime::guard(no_call as Vectorcall, || unsafe {
        floor_next(DEF_AT, callable)
    });
    // SAFETY: the original call, unchanged, or the shipped wrapper's.
    unsafe { next(callable, args, nargsf, kwnames) }
}

/// Where the floor probe's wrapper sends a call: with no floor level, the shipped wrapper; at
/// floor 1, the original at once; from floor 2 on, the original when the call repeats the
/// thread's last call, counted per site as the lean path counts it (the exact count every mode
/// keeps) with no context pushed and nothing timed; else the shipped wrapper (which notes it as
/// the last call).
///
/// # Safety
/// As [`bracketed_vectorcall`].
#[cfg(feature = "floor-probe")]
#[inline(always)]
unsafe fn floor_next(def_at: usize, callable: *mut PyObject) -> Vectorcall {
    let shipped: Vectorcall = if def_at == CF_ML {
        bracketed_vectorcall::<CF_ML>
    } else {
        bracketed_vectorcall::<DESCR_METHOD>
    };
    let level = super::floor_probe::level();
    if level == 0 {
        return shipped;
    }
    // SAFETY: per the contract.
    let original = unsafe { original_of(def_at, callable) };
    if level == 1 {
        return original;
    }
    let counted = (|| {
        let (api, rec) = (api::hot()?, recorder::current_at_home()?);
        // SAFETY: per the contract.
        let b = unsafe { &*(api::word(callable as usize, def_at) as *const Bracketed) };
        // SAFETY: GIL held on a Python thread.
        let p = unsafe { frames::current_position(api) }?;
        let stats = rec.python.repeated_call(p.code, p.ip, b.key)?;
        stats.calls.add(1);
        stats.python_calls.add(1);
        Some(())
    })();
    if counted.is_some() {
        original
    } else {
        shipped
    }
}

/// The vectorcall a bracketed object whose def pointer is at `def_at`, with its own vectorcall
/// `own` (0: none, a `METH_VARARGS` function), in a module that is a target itself or not
/// (`whole`), gets: the assembly lean path where this interpreter's layout has one, the object
/// a vectorcall of its own and a separate native part (`lean_asm`, which falls back to the Rust
/// wrapper), else the Rust wrapper.
pub(super) fn wrapper_for(def_at: usize, own: usize, whole: bool) -> Vectorcall {
    match lean_asm::wrapper(def_at).filter(|_| own != 0 && !whole) {
        Some(w) => w,
        None if def_at == CF_ML => CFUNCTION_WRAPPER,
        None => DESCR_WRAPPER,
    }
}

/// Whether `vectorcall` is one of ours (the object is bracketed already).
pub(super) fn is_wrapper(vectorcall: usize) -> bool {
    vectorcall == CFUNCTION_WRAPPER as usize
        || vectorcall == DESCR_WRAPPER as usize
        || lean_asm::is_wrapper(vectorcall)
}

/// Stands for the original when finding it panicked (not reached): an error return.
unsafe extern "C" fn no_call(
    _: *mut PyObject,
    _: *const *mut PyObject,
    _: usize,
    _: *mut PyObject,
) -> *mut PyObject {
    std::ptr::null_mut()
}

/// The original vectorcall of a bracketed object whose def pointer is at `def_at`: its own, or
/// [`tp_call`] for a `METH_VARARGS` function.
///
/// # Safety
/// `callable` a bracketed object of that kind.
#[inline(always)]
unsafe fn original_of(def_at: usize, callable: *mut PyObject) -> Vectorcall {
    // SAFETY: per the contract.
    let b = unsafe { &*(api::word(callable as usize, def_at) as *const Bracketed) };
    if b.vectorcall == 0 {
        tp_call
    } else {
        // SAFETY: the object's own vectorcall before we replaced it.
        unsafe { runtime::fn_at(b.vectorcall) }
    }
}

/// A vectorcall made the way CPython calls an object without one: its type's `tp_call` with a
/// tuple and a dict (`_PyObject_MakeTpCall`, which reads no vectorcall).
unsafe extern "C" fn tp_call(
    callable: *mut PyObject,
    args: *const *mut PyObject,
    nargsf: usize,
    kwnames: *mut PyObject,
) -> *mut PyObject {
    // SAFETY: _PyObject_MakeTpCall of the running version, GIL held.
    runtime::guard(std::ptr::null_mut(), || unsafe {
        make_tp_call(callable, args, nargsf, kwnames)
    })
}

/// # Safety
/// GIL held; arguments as a vectorcall's.
unsafe fn make_tp_call(
    callable: *mut PyObject,
    args: *const *mut PyObject,
    nargsf: usize,
    kwnames: *mut PyObject,
) -> *mut PyObject {
    type Old = unsafe extern "C" fn(
        *mut PyObject,
        *const *mut PyObject,
        isize,
        *mut PyObject,
    ) -> *mut PyObject;
    type New = unsafe extern "C" fn(
        *mut c_void,
        *mut PyObject,
        *const *mut PyObject,
        isize,
        *mut PyObject,
    ) -> *mut PyObject;
    let at = MAKE_TP_CALL.load(Ordering::Relaxed);
    let nargs = (nargsf & !ARGUMENTS_OFFSET) as isize;
    let Some(extra) = EXTRA.get() else {
        return std::ptr::null_mut();
    };
    // SAFETY: `at` is _PyObject_MakeTpCall (3.8: without the thread state), resolved in enable.
    unsafe {
        if extra.tp_call_with_tstate {
            let Some(api) = api::hot() else {
                return std::ptr::null_mut();
            };
            let f: New = runtime::fn_at(at);
            f((api.thread_state_get)(), callable, args, nargs, kwnames)
        } else {
            let f: Old = runtime::fn_at(at);
            f(callable, args, nargs, kwnames)
        }
    }
}

/// The bracket: finds the call's site and statistics, decides whether it is timed, notes its
/// arguments' bytes, calls the original with its [`CallCtx`] pushed, then files what was
/// measured. Returns [`NOT_CALLED`] when it did not call the original; nothing after the call can
/// panic out of here (that part runs in a guard of its own), so a call is never made twice.
///
/// # Safety
/// GIL held; `callable` a bracketed object whose def pointer is at `def_at`.
#[inline(always)]
unsafe fn bracket(
    def_at: usize,
    callable: *mut PyObject,
    args: *const *mut PyObject,
    nargsf: usize,
    kwnames: *mut PyObject,
) -> *mut PyObject {
    if !runtime::ACTIVE.load(Ordering::Relaxed) {
        return NOT_CALLED;
    }
    let (Some(api), Some(rec)) = (api::hot(), recorder::current()) else {
        return NOT_CALLED;
    };
    // SAFETY: per the contract.
    let b = unsafe { &*(api::word(callable as usize, def_at) as *const Bracketed) };
    let st = &rec.python;
    let sample_stack = st.sample(
        &st.stack_countdown,
        super::STACK_EVERY.load(Ordering::Relaxed),
    );
    // SAFETY: GIL held on a Python thread.
    let pos = unsafe { frames::current_position(api) };
    // A call that samples its stack files into the same statistics: the thread's last call
    // answers for it too.
    let repeated = match pos {
        Some(p) => st.repeated_call(p.code, p.ip, b.key),
        None => None,
    };
    let stats = match repeated {
        Some(s) => s,
        // SAFETY: as above.
        None => match unsafe { find_stats(api, rec, pos, b.key) } {
            Some(s) => s,
            None => return NOT_CALLED,
        },
    };
    let stack = if sample_stack {
        // SAFETY: GIL held on a Python thread.
        unsafe { frames::current_stack(api, &st.last_stack) + 1 }
    } else {
        0
    };
    // SAFETY: per the contract.
    unsafe { call_and_file(api, st, b, stats, stack, callable, args, nargsf, kwnames) }
}

/// The bracket once the call's statistics are known: decides whether it is timed, notes its
/// arguments' bytes (and its sampled stack: `stack`, its id + 1, or 0), calls the original with
/// its [`CallCtx`] pushed, then files what was measured.
///
/// # Safety
/// GIL held on a Python thread; `st` its state, `b` the def of bracketed `callable`, `stats`
/// this thread's for the call's site (its stack countdown already moved); arguments as a
/// vectorcall's.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn call_and_file(
    api: &Api,
    st: &ThreadState,
    b: &Bracketed,
    stats: &'static CallStats,
    stack: u32,
    callable: *mut PyObject,
    args: *const *mut PyObject,
    nargsf: usize,
    kwnames: *mut PyObject,
) -> *mut PyObject {
    let (timed, first, weight) = st.sample_pair_thinning(stats);
    let nargs = nargsf & !ARGUMENTS_OFFSET;
    // SAFETY: `args` holds `nargs` live objects (the vectorcall convention).
    let buffer = unsafe { buffer_bytes(api, args, nargs) };
    let mut ctx = CallCtx {
        // The target calls inside are this call's native part (none when the module is the
        // target itself: its own calls are not boundary calls).
        native_via_got: !b.whole,
        weight: weight.min(u32::from(u8::MAX)) as u8,
        ..CallCtx::new(stats.site, stats, timed, first, nargs.min(ARG_SLOTS) as u32)
    };
    let original: Vectorcall = if b.vectorcall == 0 {
        tp_call
    } else {
        // SAFETY: the object's own vectorcall before we replaced it.
        unsafe { runtime::fn_at(b.vectorcall) }
    };
    // SAFETY: the original call, unchanged.
    let (result, t0, t3) = st.run_in(&mut ctx, timed, || unsafe {
        original(callable, args, nargsf, kwnames)
    });
    if ctx.awaiting_gil {
        // A libffi call inside left a GIL wait open that this bracket does not file.
        AWAITING_GIL.fetch_sub(1, Ordering::Relaxed);
    }
    runtime::guard((), || file(stats, &ctx, b.whole, (t0, t3), buffer, stack));
    result
}

/// [`call_and_file`] out of line, for the lean path's repeated calls that are timed.
///
/// # Safety
/// As [`call_and_file`].
#[inline(never)]
unsafe fn timed_repeat(
    api: &Api,
    st: &ThreadState,
    b: &Bracketed,
    stats: &'static CallStats,
    stack: u32,
    call: (*mut PyObject, *const *mut PyObject, usize, *mut PyObject),
) -> *mut PyObject {
    let (callable, args, nargsf, kwnames) = call;
    // SAFETY: per the contract.
    unsafe { call_and_file(api, st, b, stats, stack, callable, args, nargsf, kwnames) }
}

/// Files one bracketed call into its statistics.
///
/// A builtin whose module is the target itself (`whole`) has no separate native entry, and a
/// call that made no target call had none: its whole interval is filed apart
/// (`CallStats::record_unsplit`) and reported as `unsplit_ns`, never as a split. Otherwise the
/// GOT trampoline timed the target calls inside (`ctx`): native is their sum less the
/// trampoline's floor per call; marshal-in runs from the call's entry to the first target
/// entry, plus the extension's own work between target calls (converting the next call's
/// arguments); marshal-out from the last target exit to the return.
#[inline(always)]
fn file(
    stats: &CallStats,
    ctx: &CallCtx,
    whole: bool,
    (t0, t3): (u64, u64),
    buffer: u64,
    stack: u32,
) {
    stats.calls.add(1);
    stats.python_calls.add(1);
    if buffer != 0 {
        stats.buffer_bytes.add(buffer);
    }
    if stack != 0 {
        stats.note_stack(stack - 1);
    }
    if !ctx.timed {
        return;
    }
    // A sampled call of a thinned pair stands for `weight` calls (first calls never do).
    let weight = if ctx.first {
        1
    } else {
        u32::from(ctx.weight.max(1))
    };
    if whole || ctx.native_calls == 0 {
        // The whole call, as one interval: see the module doc.
        stats.record_unsplit_weighted(ctx.first, t3.wrapping_sub(t0), weight);
        return;
    }
    let times = stats.times(ctx.first);
    let floor = clock::got_floor_ticks_known().wrapping_mul(u64::from(ctx.native_calls));
    let native = ctx.native_ticks.saturating_sub(floor);
    stats.record_native_weighted(ctx.first, native, weight);
    let (t1, t2) = (ctx.t1, ctx.t2);
    if t0 <= t1 && t1 <= t2 && t2 <= t3 {
        // Between the first entry and the last exit, what is not native (with its floor) is
        // the extension's own work between target calls.
        let between = (t2 - t1).saturating_sub(ctx.native_ticks);
        let w = u64::from(weight);
        times
            .ticks
            .marshal_in
            .add((t1 - t0 + between).wrapping_mul(w));
        times.ticks.marshal_out.add((t3 - t2).wrapping_mul(w));
    }
}

/// The statistics of (`key`, the call's site) on this thread, created on first sight (the only
/// allocation), and the position's caches pointed at them.
///
/// # Safety
/// GIL held on a Python thread; `pos` this thread's position now.
#[cold]
#[inline(never)]
unsafe fn find_stats(
    api: &Api,
    rec: &'static ThreadRecorder,
    pos: Option<frames::Position>,
    key: usize,
) -> Option<&'static CallStats> {
    let site = match pos {
        // SAFETY: per the contract; no callable: the site's ctypes facts do not apply.
        Some(p) => unsafe { frames::site_at(api, p, 0) },
        None => frames::Site::UNKNOWN,
    };
    // The first sighting measures the trampoline's floor, which every split call takes off.
    clock::got_floor_ticks();
    let stats = match site.cached(key, rec) {
        Some(s) => s,
        None => match rec.stats(key, site.id, |_| false) {
            Some(s) => s,
            None => {
                recorder::DROPPED.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        },
    };
    if let Some(p) = pos.filter(|_| site.cacheable() && stats.site == site.id) {
        site.remember(stats);
        rec.python.remember_call(p.code, p.ip, stats);
    }
    Some(stats)
}

/// Bytes the arguments refer to: a cffi cdata's size (as in ABI mode), a bytes-like object's
/// length, any other buffer's (the buffer protocol); 0 for anything else. A plain number costs
/// one compare.
///
/// # Safety
/// GIL held; `args` holds `nargs` live objects.
#[inline(always)]
unsafe fn buffer_bytes(api: &Api, args: *const *mut PyObject, nargs: usize) -> u64 {
    let mut total = 0;
    for i in 0..nargs.min(ARG_SLOTS) {
        // SAFETY: per the contract.
        let item = unsafe { *args.add(i) } as usize;
        // SAFETY: a live object.
        let ty = unsafe { api::type_of(item) };
        if ty == api.float_type || ty == api.long_type || ty == api.bool_type || item == api.none {
            continue;
        }
        // SAFETY: as above.
        total += unsafe { object_bytes(api, item, ty) };
    }
    total
}

/// # Safety
/// GIL held; `item` a live object of type `ty`.
#[inline(never)]
unsafe fn object_bytes(api: &Api, item: usize, ty: usize) -> u64 {
    // SAFETY: per the contract; a PyVarObject's ob_size; a buffer got is released, an error
    // cleared.
    unsafe {
        if ty == api.bytes_type || ty == api.bytearray_type {
            return api::word(item, api::OB_SIZE) as u64;
        }
        let cdata = super::arg_bytes::cffi_cdata_bytes(api, item, ty);
        if cdata != 0 {
            return cdata;
        }
        let procs = api::word(ty, TP_AS_BUFFER);
        if procs == 0 || api::word(procs, 0) == 0 {
            return 0;
        }
        let mut view = MaybeUninit::<api::PyBuffer>::zeroed();
        if (api.get_buffer)(item as *mut PyObject, view.as_mut_ptr(), 0) != 0 {
            (api.err_clear)();
            return 0;
        }
        let len = view.assume_init_ref().len.max(0) as u64;
        (api.release_buffer)(view.as_mut_ptr());
        len
    }
}
