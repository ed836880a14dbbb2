//! The session's one table of what each part of the agent does at the session's turns: when a new
//! attach session starts in a process an earlier one left (reset), and around `fork` (the locks
//! held across it, what ends before it, what the parent and the child do after it).
//!
//! A part that keeps state the session must put right adds one row here; nothing else lists the
//! modules. Rows run in table order — locks are taken in that order and released in reverse, so
//! the order is also the agent's lock order (writer, hooks, function table).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::config::Config;
use crate::hook;
use crate::record::{clock, pointers, recorder, writer};
use crate::runtime::{self, ForkHeld, Mode, ACTIVE, PID};

/// One part of the agent and its work at each turn (None: nothing to do).
struct Part {
    /// What the row is, for the reader and for debug output.
    #[allow(dead_code)]
    name: &'static str,
    /// Before a new attach session starts (recording off), with its configuration.
    reset: Option<fn(&Config)>,
    /// Before fork, before any lock is taken.
    before_fork: Option<fn()>,
    /// Held across fork: no other thread may hold one when the child is made.
    fork_locks: &'static [&'static dyn ForkHeld],
    /// After fork in the parent, once every lock is released.
    in_parent: Option<fn()>,
    /// After fork in the child, once every lock is released (only this thread exists).
    in_child: Option<fn()>,
}

const NONE: Part = Part {
    name: "",
    reset: None,
    before_fork: None,
    fork_locks: &[],
    in_parent: None,
    in_child: None,
};

static PARTS: [Part; 9] = [
    // First: the attach worker ends before the fork (and its session goes on after it).
    Part {
        name: "attach worker",
        before_fork: Some(super::attach::pause_for_fork),
        in_parent: Some(super::attach::resume_after_fork),
        ..NONE
    },
    // A fork or a new session must not find the snapshotter half-way through a write.
    Part {
        name: "writer (snapshotter thread, profile writes)",
        reset: Some(|_| writer::reset()),
        before_fork: Some(writer::end_for_fork),
        fork_locks: &writer::FORK_LOCKS,
        in_parent: Some(crate::session::restart_writer_after_fork),
        in_child: Some(writer::forget_after_fork),
    },
    Part {
        name: "hooks (GOT entries, statuses)",
        reset: Some(|_| hook::forget_statuses()),
        fork_locks: &hook::FORK_LOCKS,
        ..NONE
    },
    // Before the recorders: they are cleared under the new session's library filter.
    Part {
        name: "function table (names, libraries, --lib filter)",
        reset: Some(|cfg| crate::symbols::reset(&cfg.libs)),
        fork_locks: &crate::symbols::FORK_LOCKS,
        ..NONE
    },
    Part {
        name: "recorders (per-thread counts)",
        // Zeroed and reused; with a different `--lib` filter dropped instead (and leaked: a call
        // in flight at the last stop may still write to its old one).
        reset: Some(|_| {
            if !recorder::clear_all(crate::symbols::classify) {
                recorder::forget_all();
            }
        }),
        // The parent's counts are not the child's.
        in_child: Some(recorder::forget_all),
        ..NONE
    },
    Part {
        name: "argument evidence (what ctypes' guessing was given, per site)",
        reset: Some(|_| crate::python::arg_evidence::forget()),
        in_child: Some(crate::python::arg_evidence::forget_in_child),
        ..NONE
    },
    Part {
        name: "pointer flow (live values, their ends)",
        reset: Some(|_| pointers::reset()),
        // The parent's objects are not the child's to account for.
        in_child: Some(pointers::reset),
        ..NONE
    },
    Part {
        name: "clock",
        in_child: Some(clock::restart),
        ..NONE
    },
    Part {
        name: "session (pid, mode, recording window)",
        reset: Some(|_| crate::session::reset_session()),
        in_child: Some(|| {
            if runtime::mode() == Mode::Attach {
                // Nobody will write an attached child's profile (the session's worker and
                // snapshotter stay in the parent): it records nothing; its hooks pass through.
                ACTIVE.store(false, Ordering::Relaxed);
                crate::record::call_ctx::forget_lean_thread();
            }
            PID.store(std::process::id(), Ordering::Relaxed);
            crate::session::forget_root();
        }),
        ..NONE
    },
];

/// Puts every part right for a new attach session.
pub fn reset(cfg: &Config) {
    for part in &PARTS {
        if let Some(f) = part.reset {
            f(cfg);
        }
    }
}

/// Registers the fork handlers once per process, whichever of `run` and `attach` comes first
/// (handlers cannot be removed; they work in either mode).
pub fn register_fork_handlers() {
    static REGISTERED: AtomicBool = AtomicBool::new(false);
    if !REGISTERED.swap(true, Ordering::AcqRel) {
        // SAFETY: registering plain extern "C" functions that catch their own panics.
        unsafe { libc::pthread_atfork(Some(fork_prepare), Some(fork_parent), Some(fork_child)) };
    }
}

/// How many of the fork locks (in table order) `fork_prepare` holds: only those are released,
/// even if it stopped half-way.
static HELD: AtomicUsize = AtomicUsize::new(0);

fn fork_locks() -> impl DoubleEndedIterator<Item = &'static dyn ForkHeld> {
    PARTS.iter().flat_map(|p| p.fork_locks.iter().copied())
}

extern "C" fn fork_prepare() {
    crate::runtime::guard((), || {
        for part in &PARTS {
            if let Some(f) = part.before_fork {
                f();
            }
        }
        for lock in fork_locks() {
            lock.hold();
            HELD.fetch_add(1, Ordering::Relaxed);
        }
    });
}

fn release_locks() {
    let held = HELD.swap(0, Ordering::Relaxed);
    let total = fork_locks().count();
    for lock in fork_locks().rev().skip(total - held) {
        // SAFETY: fork_prepare took these (the first `held` in table order) on this thread —
        // the forking thread, the only one in the child — and leaked their guards.
        unsafe { lock.release() };
    }
}

extern "C" fn fork_parent() {
    crate::runtime::guard((), || {
        release_locks();
        for part in &PARTS {
            if let Some(f) = part.in_parent {
                f();
            }
        }
    });
}

extern "C" fn fork_child() {
    crate::runtime::guard((), || {
        release_locks();
        for part in &PARTS {
            if let Some(f) = part.in_child {
                f();
            }
        }
    });
}
