//! Which GOT entries the agent redirects, in which modules, and the install/restore pair that
//! both `run` (LD_PRELOAD) and `attach` use.

pub mod ffi;
mod ffi_pointers;
pub mod got;
mod loader;
pub mod native;
pub mod process;
mod signals;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};

use ffiprof_profile::HookStatus;
use parking_lot::Mutex;

use crate::python;
use got::{Module, PatchedSlot};

/// What to put in a module's GOT entry for one imported symbol.
#[derive(Clone, Copy)]
enum Replacement {
    /// A trampoline chosen per real `ffi_call` (one per libffi copy).
    FfiCall,
    /// This function's address, when the row applies in this process (None: it does not).
    At(fn() -> Option<usize>),
    /// This function's address.
    Fixed(fn() -> usize),
}

/// Which sessions a row applies to.
#[derive(Clone, Copy, PartialEq)]
enum Layer {
    /// Always: the ffi_call layer.
    Ffi,
    /// When the caller-preserving loader trampolines could be made (`loader::prepare`).
    Loader,
    /// `run` only: exec, `_exit` and the signal-disposition hooks (attach leaves them alone).
    Process,
    /// When the Python layer is on.
    Python,
}

/// One GOT entry the agent redirects.
struct Hook {
    symbol: &'static str,
    /// Only modules whose file name starts with one of these (None: every module).
    only_in: Option<&'static [&'static str]>,
    replacement: Replacement,
    layer: Layer,
    /// Record success in the profile's hook list (the loader/process hooks are too many to list).
    report: bool,
}

/// Every GOT entry the agent redirects. This one table drives patching ([`scan`]), restoring (the
/// slots patched from it, [`restore_all`]) and the profile's hook list ([`statuses`]).
static HOOKS: &[Hook] = &[
    Hook {
        symbol: "ffi_call",
        only_in: None,
        replacement: Replacement::FfiCall,
        layer: Layer::Ffi,
        report: true,
    },
    Hook {
        symbol: "cffistatic_ffi_call",
        only_in: None,
        replacement: Replacement::FfiCall,
        layer: Layer::Ffi,
        report: true,
    },
    // Caller-preserving trampolines (see `loader`): glibc still sees the real caller.
    Hook {
        symbol: "dlsym",
        only_in: Some(crate::python::PY_MODULES),
        replacement: Replacement::At(|| Some(loader::dlsym_hook())),
        layer: Layer::Loader,
        report: false,
    },
    Hook {
        symbol: "dlopen",
        only_in: None,
        replacement: Replacement::At(|| Some(loader::dlopen_hook())),
        layer: Layer::Loader,
        report: false,
    },
    process_hook("execve", || process::hook_execve as *const () as usize),
    process_hook("execv", || process::hook_execv as *const () as usize),
    process_hook("execvp", || process::hook_execvp as *const () as usize),
    process_hook("execvpe", || process::hook_execvpe as *const () as usize),
    process_hook("fexecve", || process::hook_fexecve as *const () as usize),
    process_hook("_exit", || process::hook_exit as *const () as usize),
    process_hook("sigaction", || {
        signals::hook_sigaction as *const () as usize
    }),
    process_hook("signal", || signals::hook_signal as *const () as usize),
    python_hook("PyType_Ready", || Some(python::got_hooks::type_ready())),
    python_hook("PyEval_RestoreThread", || {
        Some(python::got_hooks::restore_thread())
    }),
    // Armed at the first GIL hand-off a timed call waited for (`record::call_ctx::SAVE_ARMED`).
    python_hook("PyEval_SaveThread", python::got_hooks::save_thread),
    python_hook("PyModule_AddType", python::got_hooks::module_add_type),
    python_hook(
        "PyType_FromMetaclass",
        python::got_hooks::type_from_metaclass,
    ),
    // Builtins of extension modules that call a `--lib` target (`python::builtin_call`): found
    // when their module is made, in any module; cffi's API-mode functions when `_cffi_backend`
    // makes them.
    builtin_hook(
        "PyModule_Create2",
        None,
        python::builtin_call::got_hooks::module_create2,
    ),
    builtin_hook(
        "PyModuleDef_Init",
        None,
        python::builtin_call::got_hooks::moduledef_init,
    ),
    builtin_hook(
        "PyCFunction_NewEx",
        Some(python::CFFI_BACKEND),
        python::builtin_call::got_hooks::cfunction_new_ex,
    ),
    builtin_hook(
        "PyCMethod_New",
        Some(python::CFFI_BACKEND),
        python::builtin_call::got_hooks::cmethod_new,
    ),
];

const fn builtin_hook(
    symbol: &'static str,
    only_in: Option<&'static [&'static str]>,
    at: fn() -> Option<usize>,
) -> Hook {
    Hook {
        symbol,
        only_in,
        replacement: Replacement::At(at),
        layer: Layer::Python,
        report: false,
    }
}

/// For `python::builtin_call`: the module holding `addr`, and whether it calls into a `--lib`
/// target — one of its GOT entries is bound to a module `--lib` names — or is one itself. The
/// interpreter's own code (the executable, libpython, the standard library's `lib-dynload`) and
/// the libffi layer's modules call libc and the like too, but are no binding of a target: their
/// builtins count only when `--lib` names them.
fn probe_module(addr: usize) -> Option<python::builtin_call::ProbedModule> {
    let modules = got::loaded_modules();
    let m = modules.iter().find(|m| m.contains(addr))?;
    let targets: Vec<&Module> = modules
        .iter()
        .filter(|t| !t.name.is_empty() && crate::symbols::is_target(&t.name))
        .collect();
    let file = file_name(&m.name);
    let interpreters_own = m.name.is_empty()
        || file.starts_with("libpython")
        || m.name.contains("/lib-dynload/")
        || python::PY_MODULES.iter().any(|p| file.starts_with(p));
    let is_target = targets.iter().any(|t| t.base == m.base);
    let calls_target = is_target
        || (!interpreters_own && {
            let bound = m.bound_addresses();
            bound
                .iter()
                .map(|&a| native::reaches(a))
                .any(|a| targets.iter().any(|t| t.contains(a)))
        });
    Some(python::builtin_call::ProbedModule {
        name: m.name.clone(),
        base: m.base,
        range: m.range,
        calls_target,
        is_target,
    })
}

const fn process_hook(symbol: &'static str, at: fn() -> usize) -> Hook {
    Hook {
        symbol,
        only_in: None,
        replacement: Replacement::Fixed(at),
        layer: Layer::Process,
        report: false,
    }
}

const fn python_hook(symbol: &'static str, at: fn() -> Option<usize>) -> Hook {
    Hook {
        symbol,
        only_in: Some(crate::python::PY_MODULES),
        replacement: Replacement::At(at),
        layer: Layer::Python,
        report: true,
    }
}

/// The rows that apply to this session, with their replacement's address resolved.
fn wanted(process_hooks: bool) -> Vec<(&'static Hook, Option<usize>)> {
    let loader_ok = loader::prepare();
    let python_on = python::enabled();
    HOOKS
        .iter()
        .filter(|h| match h.layer {
            Layer::Ffi => true,
            Layer::Loader => loader_ok,
            Layer::Process => process_hooks,
            Layer::Python => python_on,
        })
        .filter_map(|h| match h.replacement {
            Replacement::FfiCall => Some((h, None)),
            Replacement::At(f) => f().map(|addr| (h, Some(addr))),
            Replacement::Fixed(f) => Some((h, Some(f()))),
        })
        .collect()
}

struct Installed {
    slots: Vec<PatchedSlot>,
    seen: HashSet<(usize, String)>,
    statuses: Vec<HookStatus>,
    generation: (u64, u64),
    process_hooks: bool,
}

static INSTALLED: Mutex<Option<Installed>> = Mutex::new(None);
static RESCAN_PENDING: AtomicBool = AtomicBool::new(false);

fn own_module(modules: &[Module]) -> Option<(usize, String)> {
    let me = install as *const () as usize;
    modules
        .iter()
        .find(|m| m.contains(me))
        .map(|m| (m.base, m.name.clone()))
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

fn scan(state: &mut Installed) {
    state.generation = got::loader_generation();
    let modules = got::loaded_modules();
    let me = own_module(&modules);
    let wanted = wanted(state.process_hooks);
    let symbols: Vec<&'static str> = wanted.iter().map(|(w, _)| w.symbol).collect();
    native::patch_modules(
        &modules,
        |m| Some(&(m.base, m.name.clone())) == me.as_ref() || m.name.contains("/ld-linux"),
        &mut state.slots,
        &mut state.statuses,
    );
    for m in &modules {
        let key = (m.base, m.name.clone());
        if state.seen.contains(&key) || Some(&key) == me.as_ref() || m.name.contains("/ld-linux") {
            continue;
        }
        state.seen.insert(key);
        for (symbol, slot) in m.imports(&symbols) {
            #[cfg(feature = "floor-probe")]
            if crate::python::floor_probe::skips(symbol) {
                continue;
            }
            let Some(&(w, addr)) = wanted.iter().find(|(w, _)| w.symbol == symbol) else {
                continue;
            };
            if let Some(only) = w.only_in {
                if !only.iter().any(|p| file_name(&m.name).starts_with(p)) {
                    continue;
                }
            }
            let replacement = match addr {
                Some(f) => Ok(f),
                None => match m.resolve(symbol) {
                    Some(real) if ffi::is_trampoline(real) => {
                        Err("resolves to the agent itself".to_string())
                    }
                    Some(real) => ffi::trampoline_for(real, m.resolve("ffi_prep_cif"))
                        .ok_or_else(|| "too many libffi copies".to_string()),
                    None => Err(format!("cannot resolve {symbol} for this module")),
                },
            };
            let result = replacement.and_then(|r| got::patch(m, symbol, slot, r));
            let module = if m.name.is_empty() {
                "[main program]".to_string()
            } else {
                m.name.clone()
            };
            match result {
                Ok(p) => {
                    state.slots.push(p);
                    if w.report {
                        state.statuses.push(HookStatus {
                            hook: symbol.to_string(),
                            module,
                            installed: true,
                            error: None,
                        });
                    }
                }
                Err(e) if e == "already patched" => {}
                Err(e) => state.statuses.push(HookStatus {
                    hook: symbol.to_string(),
                    module,
                    installed: false,
                    error: Some(e),
                }),
            }
        }
    }
    // Clear any dlerror state our NOLOAD look-ups left behind.
    crate::runtime::clear_dlerror();
}

/// Patches every loaded module. `process_hooks` adds exec/_exit (for `run`; attach leaves them).
pub fn install(process_hooks: bool) {
    crate::record::clock::set_native_floor_probe(ffi::native_floor_ticks);
    crate::record::clock::set_got_floor_probe(native::floor_ticks);
    if python::enabled() {
        python::builtin_call::enable(crate::symbols::has_targets(), probe_module);
        python::got_hooks::set_save_thread_arm(install_save_thread);
    }
    let mut guard = INSTALLED.lock();
    let state = guard.get_or_insert_with(|| Installed {
        slots: Vec::new(),
        seen: HashSet::new(),
        statuses: Vec::new(),
        generation: (0, 0),
        process_hooks,
    });
    scan(state);
}

/// Patches modules loaded since the last scan. Never blocks: a thread inside `dlopen` holds the
/// loader lock, so waiting here for a scanner that waits for the loader would deadlock; instead
/// the current scanner is asked to look again.
pub fn rescan() {
    RESCAN_PENDING.store(true, Ordering::SeqCst);
    while RESCAN_PENDING.load(Ordering::SeqCst) {
        let Some(mut guard) = INSTALLED.try_lock() else {
            return;
        };
        RESCAN_PENDING.store(false, Ordering::SeqCst);
        if let Some(state) = guard.as_mut() {
            if got::loader_generation() != state.generation {
                scan(state);
            }
        }
    }
}

/// Patches `PyEval_SaveThread` where the Python layer's hooks go, now that it is armed: the
/// modules of the Python layer are looked at again (their other hooks are in place already).
/// Never blocks (it runs in a thread that just took the GIL back); false when the patcher is busy.
fn install_save_thread() -> bool {
    let Some(mut guard) = INSTALLED.try_lock() else {
        return false;
    };
    let Some(state) = guard.as_mut() else {
        return false;
    };
    state.seen.retain(|(_, name)| {
        !python::PY_MODULES
            .iter()
            .any(|p| file_name(name).starts_with(p))
    });
    scan(state);
    true
}

/// Puts back every GOT entry still pointing at a hook, in modules still loaded.
pub fn restore_all() -> usize {
    let mut guard = INSTALLED.lock();
    let Some(state) = guard.as_mut() else {
        return 0;
    };
    let loaded: HashSet<String> = got::loaded_modules().into_iter().map(|m| m.name).collect();
    let mut restored = 0;
    for slot in state.slots.drain(..) {
        if loaded.contains(&slot.module) && slot.restore() {
            restored += 1;
        }
    }
    state.seen.clear();
    native::forget_patched();
    python::got_hooks::disarm_save_thread();
    restored
}

/// Installed and failed hooks, for the profile.
pub fn statuses() -> Vec<HookStatus> {
    INSTALLED
        .lock()
        .as_ref()
        .map(|s| s.statuses.clone())
        .unwrap_or_default()
}

/// Forgets the installed/failed list before a new attach session installs again, so that its
/// profile lists each hook once.
pub fn forget_statuses() {
    if let Some(s) = INSTALLED.lock().as_mut() {
        s.statuses.clear();
    }
}

/// The locks held across fork (`runtime::ForkHeld`).
pub(crate) static FORK_LOCKS: [&dyn crate::runtime::ForkHeld; 2] =
    [&INSTALLED, native::FORK_LOCKS[0]];
