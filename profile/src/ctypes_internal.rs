//! ctypes' own foreign calls. `ctypes.cast`, `ctypes.string_at` and `ctypes.wstring_at` are
//! function prototypes over addresses inside the `_ctypes` extension (`_cast_addr`, ...), so each
//! use is a real libffi call — but into ctypes itself, on the user's behalf, not into a library
//! the user chose. They are kept out of [`Profile::functions`] (no library function, no advice)
//! and listed in [`Profile::ctypes_internal`], with their sites: ctypes' cost at the user's lines.
//!
//! `ctypes.memmove` and `ctypes.memset` point at libc's own `memmove`/`memset`: functions the
//! user asked for by name, which stay library functions.

use crate::{FunctionRecord, Profile};

/// Whether `library` is the `_ctypes` extension module (`_ctypes.cpython-311-x86_64-linux-gnu.so`,
/// `_ctypes.so`; not `_ctypes_test`).
pub fn is_ctypes_module(library: &str) -> bool {
    file_name(library).starts_with("_ctypes.")
}

/// Whether `function` of `library` is one of ctypes' own foreign calls: any function of the
/// `_ctypes` extension, or — for an interpreter with `_ctypes` built in — `cast`, `string_at` or
/// `wstring_at` of libpython or of the interpreter's executable.
pub fn is_ctypes_internal(library: &str, function: &str) -> bool {
    let file = file_name(library);
    is_ctypes_module(library)
        || matches!(function, "cast" | "string_at" | "wstring_at")
            && (file.starts_with("libpython") || file.starts_with("python"))
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

impl Profile {
    /// Moves ctypes' own foreign calls from `functions` to `ctypes_internal` (the agent does it
    /// when it writes; reading does it too, for profiles written before the split existed).
    pub fn separate_ctypes_internal(&mut self) {
        if !self
            .functions
            .iter()
            .any(|f| is_ctypes_internal(&f.library, &f.function))
        {
            return;
        }
        let (internal, library): (Vec<FunctionRecord>, Vec<FunctionRecord>) =
            std::mem::take(&mut self.functions)
                .into_iter()
                .partition(|f| is_ctypes_internal(&f.library, &f.function));
        self.functions = library;
        self.ctypes_internal.extend(internal);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_ctypes_itself_only() {
        let ctypes = "/usr/lib/python3.11/lib-dynload/_ctypes.cpython-311-x86_64-linux-gnu.so";
        assert!(is_ctypes_internal(ctypes, "cast"));
        assert!(is_ctypes_internal(ctypes, "0x1f2e0"));
        assert!(!is_ctypes_internal(
            "/usr/lib/python3.11/lib-dynload/_ctypes_test.cpython-311-x86_64-linux-gnu.so",
            "_testfunc_i_bhilfd"
        ));
        assert!(!is_ctypes_internal(
            "/lib/x86_64-linux-gnu/libc.so.6",
            "memmove"
        ));
        assert!(!is_ctypes_internal(
            "/lib/x86_64-linux-gnu/libc.so.6",
            "cast"
        ));
        assert!(is_ctypes_internal(
            "/opt/py/lib/libpython3.12.so.1.0",
            "string_at"
        ));
        assert!(!is_ctypes_internal(
            "/opt/py/lib/libpython3.12.so.1.0",
            "PyLong_FromLong"
        ));
    }

    #[test]
    fn separating_moves_them_out_of_functions() {
        let mut p = Profile::new();
        p.functions
            .push(FunctionRecord::new("/x/libfix.so", "fx_add_int"));
        p.functions.push(FunctionRecord::new(
            "/y/_ctypes.cpython-311-x86_64-linux-gnu.so",
            "cast",
        ));
        p.separate_ctypes_internal();
        assert_eq!(p.functions.len(), 1);
        assert_eq!(p.functions[0].function, "fx_add_int");
        assert_eq!(p.ctypes_internal.len(), 1);
        assert_eq!(p.ctypes_internal[0].function, "cast");
        p.separate_ctypes_internal();
        assert_eq!(p.ctypes_internal.len(), 1, "idempotent");
    }
}
