//! CPython integration: what splits a foreign call into marshal-in / native / GIL wait /
//! marshal-out, and names the Python line that made it.
//!
//! - `api`: the C API resolved at run time, and per-version struct offsets;
//! - `layout`: the struct offsets per version, and the refusal of an interpreter the layer does
//!   not know;
//! - `debug_offsets`: the offsets CPython 3.13+ publishes about itself (`_Py_DebugOffsets`), read
//!   at start-up in place of the table's and checked against it;
//! - `frames`: call sites and stacks read from the frame structs;
//! - `site_rules`: which frames are passed through to their caller for the call site (generic
//!   forwarders, ctypes' own code, `--site-skip`);
//! - `slots`: replacing `tp_call` of ctypes/cffi types (and their `__call__` descriptors);
//! - `call`: the wrappers themselves (the per-thread state they share with the ffi_call hook is
//!   `record::call_ctx`);
//! - `arg_bytes`: what each argument refers to (buffer bytes) and whether it was just built;
//! - `arg_evidence`: what ctypes' guessing was given at each site of a function called without
//!   `argtypes` (Python types, ints cut to 32 bits, the default restype), looked at on a bounded
//!   number of calls;
//! - `helpers`: `create_string_buffer` & co., whose whole call is the construction;
//! - `builtin_call`: builtin functions and methods of extension modules that call a `--lib`
//!   target (C, cffi API mode, Cython, pybind11), bracketed through their own vectorcall;
//! - `binding`: which binding (ctypes, cffi ABI/API, extension) called each function;
//! - `floor_probe` (feature `floor-probe`, benchmarks only): reduced wrappers measuring the
//!   cost floor of the per-call work.

pub mod api;
mod arg_bytes;
pub mod arg_evidence;
pub mod binding;
pub mod builtin_call;
mod call;
mod debug_offsets;
#[cfg(feature = "floor-probe")]
pub mod floor_probe;
pub mod frames;
mod helpers;
mod layout;
pub(crate) mod site_rules;
pub mod slots;

use std::sync::atomic::{AtomicBool, Ordering};

#[cfg(test)]
pub use call::TIMING_TESTS;
pub use call::{CallCtx, ThreadState, STACK_EVERY, TIMING_EVERY};

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Turns the Python layer on (`run` mode): resolves the C API. Returns why it cannot, if so.
pub fn enable() -> Result<String, String> {
    let api = api::init()?;
    #[cfg(feature = "floor-probe")]
    floor_probe::init();
    call::ORIG_RESTORE_THREAD.store(api.restore_thread as usize, Ordering::Relaxed);
    call::ORIG_SAVE_THREAD.store(api.save_thread as usize, Ordering::Relaxed);
    // SAFETY: each is the C API function of the `Original`'s signature (`api` typed them).
    unsafe {
        slots::ORIG_TYPE_READY.set(api.type_ready as usize);
        slots::ORIG_MODULE_ADD_TYPE.set(api.module_add_type.map_or(0, |f| f as usize));
        slots::ORIG_FROM_METACLASS.set(api.type_from_metaclass.map_or(0, |f| f as usize));
    }
    ENABLED.store(true, Ordering::Release);
    Ok(api.version.clone())
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Acquire)
}

/// The modules whose GOT entries the Python layer's hooks patch (`hook`'s table lists them).
pub const PY_MODULES: &[&str] = &["_ctypes", "_cffi_backend"];
/// Where cffi makes API-mode `lib` functions (`builtin_call`'s creation hooks).
pub const CFFI_BACKEND: &[&str] = &["_cffi_backend"];

/// The Python layer's GOT hooks, for `hook`'s table: where each one is, and whether the running
/// interpreter has the function at all (3.9+ `PyModule_AddType`, 3.12+ `PyType_FromMetaclass`).
pub mod got_hooks {
    pub fn type_ready() -> usize {
        super::slots::type_ready as *const () as usize
    }

    pub fn restore_thread() -> usize {
        super::call::restore_thread as *const () as usize
    }

    /// Registers how the `PyEval_SaveThread` hook is installed when armed (see `save_thread`).
    pub fn set_save_thread_arm(arm: fn() -> bool) {
        super::call::set_arm(arm)
    }

    /// Detach put the `PyEval_SaveThread` entries back: unarmed again.
    pub fn disarm_save_thread() {
        super::call::disarm()
    }

    /// Only once armed (`record::call_ctx::SAVE_ARMED`): the first hand-off seen.
    pub fn save_thread() -> Option<usize> {
        crate::record::call_ctx::SAVE_ARMED
            .load(std::sync::atomic::Ordering::Relaxed)
            .then_some(super::call::save_thread as *const () as usize)
    }

    pub fn module_add_type() -> Option<usize> {
        (super::slots::ORIG_MODULE_ADD_TYPE.get().is_some())
            .then_some(super::slots::module_add_type as *const () as usize)
    }

    pub fn type_from_metaclass() -> Option<usize> {
        (super::slots::ORIG_FROM_METACLASS.get().is_some())
            .then_some(super::slots::type_from_metaclass as *const () as usize)
    }
}

/// 3.13+: each struct offset the interpreter publishes that the Python layer reads, with the
/// value ffiprof's own table gives it (the layer uses the published one), for the profile.
pub fn published_offsets() -> Vec<ffiprof_profile::PublishedOffset> {
    api::get().map_or_else(Vec::new, |api| {
        api.checked
            .iter()
            .map(|c| ffiprof_profile::PublishedOffset {
                name: c.field.name().to_string(),
                published: c.published as u64,
                table: c.table as u64,
            })
            .collect()
    })
}

/// File, function and line of an interned call site.
pub fn describe_site(site: u32) -> Option<ffiprof_profile::Frame> {
    frames::describe_site(site)
}

/// The pass-through frame (a generic forwarder, ctypes' own code, a `--site-skip` frame) a site's
/// calls went through, if they did.
pub fn site_through(site: u32) -> Option<ffiprof_profile::Frame> {
    frames::site_through(site)
}
