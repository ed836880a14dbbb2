//! Calls into `--lib` target libraries from any other module — C extensions, cffi API-mode
//! modules, Cython, pybind11 — seen through the modules' GOTs, not through libffi.
//!
//! For each loaded library the `--lib` filter names (a *target*), every GOT entry (JUMP_SLOT and
//! GLOB_DAT) of every other module that imports one of the target's exported functions is
//! pointed at that function's thunk (`trampoline`), and so are the pointers `dlsym` hands out
//! for them to other modules. The thunk counts the call, and times it by swapping its return
//! address through the thread's shadow stack (`shadow`). Not patched, so not counted: the
//! target's own GOT (calls from one of its functions to another are not boundary calls), the
//! interpreter's (the main program and libpython: `math.sin` reaching libm is the interpreter's
//! own work, not a binding's), `_ctypes`/`_cffi_backend` (their calls go through `ffi_call`,
//! which counts them already), the agent's and the loader's.
//!
//! Every patch is a `PatchedSlot` in `hook`'s installed list, so `restore_all` (detach) puts each
//! entry back. The thunks, the stubs and the shadow stacks stay: the agent stays loaded after
//! detach, a thread inside a target call returns through the leave stub, and a pointer `dlsym`
//! handed out keeps working (passing straight through while recording is off).

mod asm;
pub mod shadow;
mod trampoline;

pub use trampoline::floor_ticks;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;

use ffiprof_profile::HookStatus;
use parking_lot::Mutex;

use super::got::{self, Module, PatchedSlot};

/// Functions never given a thunk: they return twice (a swapped return address would be
/// returned to a second time after its entry was popped), never return to their caller's
/// frame, or read their own return address to find their caller.
const NEVER: &[&str] = &[
    "setjmp",
    "_setjmp",
    "sigsetjmp",
    "__sigsetjmp",
    "savectx",
    "vfork",
    "getcontext",
    "swapcontext",
    "dlopen",
    "dlmopen",
    "dlsym",
    "dlvsym",
    "__libc_start_main",
    "__tls_get_addr",
    "pthread_exit",
    "setcontext",
    "makecontext",
    "_Unwind_RaiseException",
    "_Unwind_Resume",
    "_Unwind_Resume_or_Rethrow",
    "_Unwind_ForcedUnwind",
];

/// The interpreter's own modules, which are never patched as callers.
fn is_interpreter(m: &Module) -> bool {
    let file = m.name.rsplit('/').next().unwrap_or(&m.name);
    m.name.is_empty() || file.starts_with("libpython")
}

/// What is known of the targets, under one lock that is never held while the loader is called
/// (a thread inside `dlopen` holds the loader lock and may reach `thunk_for_pointer`).
#[derive(Default)]
struct Targets {
    /// Target modules seen, by (base, path).
    modules: HashSet<(usize, String)>,
    /// Exported functions of every target: address → name.
    exports: HashMap<usize, String>,
    /// The same by name: name → addresses (one per target exporting it).
    by_name: HashMap<String, Vec<usize>>,
    /// Target function → its thunk index.
    thunks: HashMap<usize, usize>,
    /// Modules patched since the last new target (a new target makes every module be looked at
    /// again: one loaded before it may import it lazily, and one seen before any target existed
    /// — libstdc++ loaded by another extension — still needs the unwinder hooks).
    seen: HashSet<(usize, String)>,
}

static TARGETS: Mutex<Option<Targets>> = Mutex::new(None);

/// The locks held across fork (`runtime::ForkHeld`).
pub(crate) static FORK_LOCKS: [&dyn crate::runtime::ForkHeld; 1] = [&TARGETS];

/// The C and C++ runtimes, never targets of the trampoline even when `--lib` names them (it
/// then filters their libffi calls only): every module calls them for its own housekeeping
/// (`memcpy`, `malloc`, `__cxa_throw`), which is no binding's boundary call, and their
/// functions that return twice, never return or unwind are many.
const RUNTIME: &[&str] = &[
    "libc.so",
    "libc-",
    "libpthread",
    "libdl.so",
    "libdl-",
    "librt.so",
    "librt-",
    "libgcc_s",
    "libstdc++",
    "ld-linux",
];

/// Whether `m` is a target under the session's `--lib` filter (never without one). The
/// interpreter is never one (`--lib python` must not make every extension's C API call a
/// boundary call), nor the C and C++ runtimes.
fn is_target(m: &Module) -> bool {
    let file = m.name.rsplit('/').next().unwrap_or(&m.name);
    !is_interpreter(m)
        && !RUNTIME.iter().any(|r| file.starts_with(r))
        && crate::symbols::is_target(&m.name)
}

/// The exported functions of the target `m`: (name, address), an IFUNC at the implementation
/// its resolver chose. Reads the file (off the hot path, without our lock).
fn exports_of(m: &Module) -> Vec<(String, usize)> {
    use object::{Object, ObjectSymbol, SymbolKind};
    const STT_GNU_IFUNC: u8 = 10;
    let Ok(data) = std::fs::read(&m.name) else {
        return Vec::new();
    };
    let Ok(file) = object::File::parse(&*data) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for sym in file.dynamic_symbols() {
        if !sym.is_definition() || !sym.is_global() {
            continue;
        }
        let ifunc = matches!(sym.flags(), object::SymbolFlags::Elf { st_info, .. } if st_info & 0xf == STT_GNU_IFUNC);
        if sym.kind() != SymbolKind::Text && !ifunc {
            continue;
        }
        let Ok(name) = sym.name() else { continue };
        if name.is_empty() || NEVER.contains(&name) {
            continue;
        }
        let addr = if ifunc {
            match m.resolve(name) {
                Some(a) => a,
                None => continue,
            }
        } else {
            m.base + sym.address() as usize
        };
        out.push((name.to_string(), addr));
    }
    out
}

/// Learns the targets among `modules` not seen before (their exported functions).
fn learn_targets(modules: &[Module]) {
    let new: Vec<&Module> = {
        let guard = TARGETS.lock();
        let known = guard.as_ref().map(|t| &t.modules);
        modules
            .iter()
            .filter(|m| is_target(m))
            .filter(|m| known.is_none_or(|k| !k.contains(&(m.base, m.name.clone()))))
            .collect()
    };
    if new.is_empty() {
        return;
    }
    let learned: Vec<(&Module, Vec<(String, usize)>)> =
        new.into_iter().map(|m| (m, exports_of(m))).collect();
    let mut guard = TARGETS.lock();
    let t = guard.get_or_insert_with(Targets::default);
    t.seen.clear();
    for (m, exports) in learned {
        t.modules.insert((m.base, m.name.clone()));
        for (name, addr) in exports {
            t.by_name.entry(name.clone()).or_default().push(addr);
            t.exports.insert(addr, name);
        }
    }
}

/// The thunk of target function `addr`, given one on first need. None when every thunk is taken.
fn thunk_locked(t: &mut Targets, addr: usize) -> Option<usize> {
    if let Some(&i) = t.thunks.get(&addr) {
        return Some(trampoline::thunk(i));
    }
    let i = t.thunks.len();
    if i >= trampoline::PROBE {
        return None;
    }
    let cell = trampoline::TARGETS.get(i)?;
    cell.store(addr, Ordering::Release);
    t.thunks.insert(addr, i);
    Some(trampoline::thunk(i))
}

/// What a GOT entry bound to `addr` really reaches: the target function when `addr` is one of
/// our thunks (a module whose entries we redirected still imports the target), else `addr`.
pub(crate) fn reaches(addr: usize) -> usize {
    trampoline::thunk_index(addr)
        .and_then(|i| trampoline::TARGETS.get(i))
        .map(|t| t.load(std::sync::atomic::Ordering::Relaxed))
        .filter(|&t| t != 0)
        .unwrap_or(addr)
}

/// What a module other than `_ctypes`/`_cffi_backend` gets from `dlsym` for `p`: the thunk when
/// `p` is a target's exported function, else `p`.
pub(crate) fn thunk_for_pointer(p: usize) -> usize {
    let mut guard = TARGETS.lock();
    let Some(t) = guard.as_mut() else {
        return p;
    };
    if !t.exports.contains_key(&p) {
        return p;
    }
    thunk_locked(t, p).unwrap_or(p)
}

/// Whether any target is known (the native rows then apply).
fn any_target() -> bool {
    TARGETS
        .lock()
        .as_ref()
        .is_some_and(|t| !t.modules.is_empty())
}

/// Learns the new targets among `modules`, then patches each module not patched since the last
/// new target (`skip`: the agent's own and the loader's are never patched). Adds every patched
/// entry to `slots`.
pub(super) fn patch_modules(
    modules: &[Module],
    skip: impl Fn(&Module) -> bool,
    slots: &mut Vec<PatchedSlot>,
    statuses: &mut Vec<HookStatus>,
) {
    learn_targets(modules);
    if !any_target() {
        return;
    }
    for m in modules {
        if skip(m) {
            continue;
        }
        let key = (m.base, m.name.clone());
        let new = TARGETS.lock().as_mut().is_some_and(|t| t.seen.insert(key));
        if new {
            patch_module(m, slots, statuses);
        }
    }
}

/// Forgets which modules were patched and which libraries were targets (detach restored every
/// entry; the next session's `--lib` may name others). The thunks keep their functions: a
/// pointer `dlsym` handed out still goes through one.
pub(super) fn forget_patched() {
    if let Some(t) = TARGETS.lock().as_mut() {
        t.seen.clear();
        t.modules.clear();
        t.exports.clear();
        t.by_name.clear();
    }
}

/// Patches module `m`: its imports of target functions, its `dlsym` and the unwinder entries (see
/// `trampoline`). Adds every patched entry to `slots` and one status per module whose target
/// imports were patched.
fn patch_module(m: &Module, slots: &mut Vec<PatchedSlot>, statuses: &mut Vec<HookStatus>) {
    let file = m.name.rsplit('/').next().unwrap_or(&m.name);
    let target = is_target(m);
    let interpreter = is_interpreter(m);
    let ffi_module = crate::python::PY_MODULES
        .iter()
        .any(|p| file.starts_with(p));
    let unwind = trampoline::unwind_hooks();
    // (name, slot) of every entry of interest, read before taking our lock.
    let mut imports: Vec<(String, usize)> = Vec::new();
    {
        let guard = TARGETS.lock();
        let Some(t) = guard.as_ref() else { return };
        m.each_import(|name, slot| {
            let Ok(name) = std::str::from_utf8(name) else {
                return;
            };
            let wanted = unwind.iter().any(|u| u.0 == name)
                || (name == "dlsym" && !target && !interpreter && !ffi_module)
                || (!target && !interpreter && !ffi_module && t.by_name.contains_key(name));
            if wanted {
                imports.push((name.to_string(), slot));
            }
        });
    }
    let mut patched_targets = 0;
    let mut errors: Vec<String> = Vec::new();
    for (name, slot) in imports {
        let replacement = if let Some(u) = unwind.iter().find(|u| u.0 == name) {
            match m.resolve(&name) {
                Some(real) if real == u.2 => continue,
                Some(real) => {
                    match u
                        .1
                        .compare_exchange(0, real, Ordering::AcqRel, Ordering::Acquire)
                    {
                        Ok(_) => u.2,
                        Err(existing) if existing == real => u.2,
                        Err(_) => {
                            errors.push(format!("{name}: a second unwinder copy"));
                            continue;
                        }
                    }
                }
                None => continue,
            }
        } else if name == "dlsym" {
            if !super::loader::prepare() {
                continue;
            }
            super::loader::dlsym_native_hook()
        } else {
            // Bound already (GLOB_DAT, BIND_NOW, a called PLT entry), or lazily to be: then ask
            // the loader what it would bind.
            let value = got::slot_value(slot);
            if trampoline::thunk_index(value).is_some() {
                continue;
            }
            let bound = {
                let guard = TARGETS.lock();
                guard
                    .as_ref()
                    .is_some_and(|t| t.exports.contains_key(&value))
            };
            let real = if bound {
                value
            } else if m.contains(value) {
                match m.resolve(&name) {
                    Some(r) => r,
                    None => continue,
                }
            } else {
                // Bound to another library's function of that name (interposed).
                continue;
            };
            let mut guard = TARGETS.lock();
            let Some(t) = guard.as_mut() else { continue };
            if !t.exports.contains_key(&real) {
                continue;
            }
            match thunk_locked(t, real) {
                Some(th) => th,
                None => {
                    errors.push(format!(
                        "{name}: no thunk left ({} in use)",
                        trampoline::THUNKS
                    ));
                    continue;
                }
            }
        };
        match got::patch(m, "[--lib target]", slot, replacement) {
            Ok(p) => {
                if replacement != super::loader::dlsym_native_hook()
                    && !unwind.iter().any(|u| u.2 == replacement)
                {
                    patched_targets += 1;
                }
                slots.push(p);
            }
            Err(e) if e == "already patched" => {}
            Err(e) => errors.push(format!("{name}: {e}")),
        }
    }
    crate::runtime::clear_dlerror();
    let module = if m.name.is_empty() {
        "[main program]".to_string()
    } else {
        m.name.clone()
    };
    if patched_targets > 0 {
        statuses.push(HookStatus {
            hook: format!("--lib target calls ({patched_targets} GOT entries)"),
            module: module.clone(),
            installed: true,
            error: None,
        });
    }
    for e in errors {
        statuses.push(HookStatus {
            hook: "--lib target calls".to_string(),
            module: module.clone(),
            installed: false,
            error: Some(e),
        });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::record::call_ctx::CallCtx;
    use crate::record::recorder;

    /// The target: two integer arguments and a result that shows both arrived (no arithmetic
    /// that could panic: `no_panic_into_c` reads every `extern "C" fn`).
    #[inline(never)]
    extern "C" fn add(a: i32, b: i32) -> i32 {
        a ^ b
    }

    fn ctx(timed: bool) -> CallCtx {
        CallCtx {
            native_via_got: true,
            ..CallCtx::new(0, std::ptr::null(), timed, false, 0)
        }
    }

    /// The interface with the Python side: inside a timed Python-level call that takes its native
    /// time from the trampoline, every target call is timed into its CallCtx (first entry to
    /// last exit, the sum in `native_ticks`); inside an untimed one none is (past the pair's
    /// first calls), whatever the thread's countdown; every call is counted, and returns right.
    #[test]
    fn a_python_level_call_decides_which_target_calls_are_timed() {
        let thunk = {
            let mut guard = TARGETS.lock();
            let t = guard.get_or_insert_with(Targets::default);
            thunk_locked(t, add as *const () as usize).unwrap()
        };
        // SAFETY: the thunk forwards to `add`, whose signature this is.
        let f: extern "C" fn(i32, i32) -> i32 = unsafe { crate::runtime::fn_at(thunk) };
        let _rate = crate::python::TIMING_TESTS.lock();
        crate::python::TIMING_EVERY.store(2, Ordering::Relaxed);
        crate::runtime::ACTIVE.store(true, Ordering::Relaxed);
        let rec = recorder::current().unwrap();

        // Past the pair's always-timed first calls, with no Python-level call around.
        for i in 0..20 {
            assert_eq!(f(i, 1), i ^ 1);
        }
        let mut timed = ctx(true);
        rec.python.ctx.store(&mut timed, Ordering::Relaxed);
        for i in 0..5 {
            assert_eq!(f(i, 256), i ^ 256);
        }
        let mut untimed = ctx(false);
        rec.python.ctx.store(&mut untimed, Ordering::Relaxed);
        for i in 0..50 {
            assert_eq!(f(i, 512), i ^ 512);
        }
        rec.python
            .ctx
            .store(std::ptr::null_mut(), Ordering::Relaxed);
        crate::runtime::ACTIVE.store(false, Ordering::Relaxed);

        assert_eq!(timed.native_calls, 5);
        assert!(timed.native_ticks > 0);
        assert!(
            timed.t1 > 0 && timed.t2 > timed.t1,
            "{} {}",
            timed.t1,
            timed.t2
        );
        assert!(timed.native_ticks <= timed.t2 - timed.t1);
        assert_eq!(
            untimed.native_calls, 0,
            "the Python-level call was not timed"
        );
        let stats = rec
            .native_stats(add as *const () as usize, 0, |_| false)
            .unwrap();
        assert_eq!(stats.calls.get(), 20 + 5 + 50);
        let timed_calls = stats.first.timed.get() + stats.sampled.timed.get();
        // The first 8, the 5 of the timed call, and about half of the other 12 without one.
        assert!((13..=13 + 12).contains(&timed_calls), "{timed_calls}");
    }
}
