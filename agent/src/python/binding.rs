//! Which binding a function was called through, for the profile's `binding` field: `ctypes`,
//! `cffi-abi` (the libffi layer's wrappers, noted here per C address), `cffi-api`, `extension`
//! (the builtin brackets, `builtin_call`). Empty for a function only C callers reached.

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use crate::record::snapshot::{Binding, BuiltinName};

const SLOTS: usize = 4096;
const CTYPES: u8 = 1;
const CFFI: u8 = 2;

struct Slot {
    function: AtomicUsize,
    families: AtomicU8,
}

/// C address → the wrapper families that called it (open addressing; a slot, once claimed, keeps
/// its address for the process's life; no lock, no allocation).
static FAMILIES: [Slot; SLOTS] = [const {
    Slot {
        function: AtomicUsize::new(0),
        families: AtomicU8::new(0),
    }
}; SLOTS];

fn home(function: usize) -> usize {
    (function.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40) & (SLOTS - 1)
}

/// Notes that the wrapper of ctypes (`family_ctypes`) or of cffi's ABI mode called `function`
/// (on the general path, so a repeated call pays nothing).
pub(super) fn note(function: usize, family_ctypes: bool) {
    let bit = if family_ctypes { CTYPES } else { CFFI };
    let mut i = home(function);
    for _ in 0..SLOTS {
        let slot = &FAMILIES[i];
        let f = slot.function.load(Ordering::Acquire);
        let claimed = f == function
            || (f == 0
                && match slot.function.compare_exchange(
                    0,
                    function,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => true,
                    Err(other) => other == function,
                });
        if claimed {
            if slot.families.load(Ordering::Relaxed) & bit == 0 {
                slot.families.fetch_or(bit, Ordering::Relaxed);
            }
            return;
        }
        i = (i + 1) & (SLOTS - 1);
    }
}

/// What the snapshot reports about `function` (registered by the session): a bracketed
/// builtin's binding and name, else [`of`].
pub fn for_snapshot(function: usize) -> Binding {
    if let Some(info) = super::builtin_call::describe(function) {
        return Binding {
            kind: info.binding,
            detail: info.detail,
            builtin: Some(BuiltinName {
                library: info.library,
                function: info.name,
                offset: info.offset,
            }),
        };
    }
    let (kind, detail) = of(function);
    Binding {
        kind,
        detail,
        builtin: None,
    }
}

/// The binding the libffi layer's wrappers saw `function` called through: `ctypes` or
/// `cffi-abi` (`ctypes` when both called it), else empty.
pub fn of(function: usize) -> (&'static str, &'static str) {
    let mut i = home(function);
    for _ in 0..SLOTS {
        let slot = &FAMILIES[i];
        match slot.function.load(Ordering::Acquire) {
            0 => break,
            f if f == function => {
                let families = slot.families.load(Ordering::Relaxed);
                return if families & CTYPES != 0 {
                    ("ctypes", "")
                } else if families & CFFI != 0 {
                    ("cffi-abi", "")
                } else {
                    ("", "")
                };
            }
            _ => i = (i + 1) & (SLOTS - 1),
        }
    }
    ("", "")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_are_noted_per_function() {
        note(0x7000_1234, true);
        note(0x7000_5678, false);
        note(0x7000_5678, false);
        assert_eq!(of(0x7000_1234), ("ctypes", ""));
        assert_eq!(of(0x7000_5678), ("cffi-abi", ""));
        assert_eq!(of(0x7000_9999), ("", ""));
        note(0x7000_5678, true);
        assert_eq!(
            of(0x7000_5678),
            ("ctypes", ""),
            "ctypes wins when both called"
        );
    }
}
