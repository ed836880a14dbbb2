//! Naming the functions the agent saw: which library an address belongs to, and its symbol.
//!
//! Names come first from the `dlsym` calls ctypes and cffi made (the exact name the program asked
//! for), then from the library's own ELF symbol tables (dynamic and static), preferring a global
//! symbol to a weak alias — never from `dladdr` alone, which names aliases (`labs` → `imaxabs`).
//! Loader calls (`dladdr`) are never made while one of this module's locks is held: a thread inside
//! `dlopen` holds the loader lock and may call into the agent.

use std::collections::HashMap;
use std::ffi::CStr;

use parking_lot::Mutex;

use crate::config::LibFilter;

#[derive(Debug, Clone)]
pub struct FunctionInfo {
    pub library: String,
    pub base: usize,
    pub excluded: bool,
}

pub(crate) static FUNCTIONS: Mutex<Option<HashMap<usize, FunctionInfo>>> = Mutex::new(None);
pub(crate) static NAMES: Mutex<Option<HashMap<usize, String>>> = Mutex::new(None);
static FILTER: Mutex<Option<LibFilter>> = Mutex::new(None);

pub fn set_filter(filter: LibFilter) {
    *FILTER.lock() = Some(filter);
}

fn executable_path() -> String {
    std::fs::read_link("/proc/self/exe")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Whether `--lib` names target libraries (the GOT trampoline and the builtin brackets apply
/// only then).
pub fn has_targets() -> bool {
    FILTER.lock().as_ref().is_some_and(|f| f.has_patterns())
}

/// Whether `--lib` names the library at `path` as a target (of the GOT trampoline,
/// `hook::native`, and the builtin brackets); never without a `--lib` pattern.
pub fn is_target(path: &str) -> bool {
    FILTER
        .lock()
        .as_ref()
        .is_some_and(|f| f.has_patterns() && f.includes(path))
}

/// Library path and load base of `addr`, from the loader.
fn locate(addr: usize) -> Option<(String, usize)> {
    let mut info: libc::Dl_info = libc::Dl_info {
        dli_fname: std::ptr::null(),
        dli_fbase: std::ptr::null_mut(),
        dli_sname: std::ptr::null(),
        dli_saddr: std::ptr::null_mut(),
    };
    // SAFETY: dladdr fills the Dl_info we own; the strings it points to belong to the loader and
    // are copied before we return.
    let ok = unsafe { libc::dladdr(addr as *const libc::c_void, &mut info) };
    if ok == 0 {
        return None;
    }
    let base = info.dli_fbase as usize;
    let name = if info.dli_fname.is_null() {
        String::new()
    } else {
        // SAFETY: dli_fname is a NUL-terminated string owned by the loader.
        unsafe { CStr::from_ptr(info.dli_fname) }
            .to_string_lossy()
            .into_owned()
    };
    let name = if name.is_empty() || !name.starts_with('/') && !name.contains(".so") {
        executable_path()
    } else if !name.starts_with('/') {
        // A library the program dlopen'ed by a relative path: the loader keeps that path, which
        // means nothing once the working directory changes. The mapping knows the real file.
        mapped_path(addr).unwrap_or(name)
    } else {
        name
    };
    Some((name, base))
}

/// The file mapped at `addr`, from /proc/self/maps (absolute).
fn mapped_path(addr: usize) -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().find_map(|line| {
        let mut parts = line.split_whitespace();
        let (lo, hi) = parts.next()?.split_once('-')?;
        let (lo, hi) = (
            usize::from_str_radix(lo, 16).ok()?,
            usize::from_str_radix(hi, 16).ok()?,
        );
        let path = parts.nth(4)?;
        (addr >= lo && addr < hi && path.starts_with('/')).then(|| path.to_string())
    })
}

/// Whether calls to `addr` are excluded by `--lib`; learns the function's library on first sight.
pub fn classify(addr: usize) -> bool {
    if let Some(f) = FUNCTIONS.lock().as_ref().and_then(|m| m.get(&addr)) {
        return f.excluded;
    }
    let (library, base) = locate(addr).unwrap_or_else(|| ("[unknown]".to_string(), 0));
    // ctypes' own foreign calls are the cost of the user's sites whatever library `--lib` keeps.
    let excluded = !ffiprof_profile::is_ctypes_module(&library)
        && !FILTER.lock().as_ref().is_none_or(|f| f.includes(&library));
    FUNCTIONS.lock().get_or_insert_with(HashMap::new).insert(
        addr,
        FunctionInfo {
            library,
            base,
            excluded,
        },
    );
    excluded
}

/// Remembers the name a program asked `dlsym` for.
pub fn note_name(addr: usize, name: &CStr) {
    let name = name.to_string_lossy().into_owned();
    NAMES
        .lock()
        .get_or_insert_with(HashMap::new)
        .entry(addr)
        .or_insert(name);
}

/// Symbols of one library file: offset → best name.
struct SymbolTable(HashMap<u64, (String, bool)>);

impl SymbolTable {
    /// `base` is where the library is loaded: GNU indirect functions (glibc's `cos`, `memcpy`,
    /// ... are IFUNCs) are named at the address their resolver chose, which only the loader knows.
    fn load(path: &str, base: usize) -> SymbolTable {
        use object::{Object, ObjectSymbol, SymbolKind};
        let mut map: HashMap<u64, (String, bool)> = HashMap::new();
        let Ok(data) = std::fs::read(path) else {
            return SymbolTable(map);
        };
        let Ok(file) = object::File::parse(&*data) else {
            return SymbolTable(map);
        };
        let ifuncs: Vec<String> = file
            .dynamic_symbols()
            .filter(|sym| {
                !sym.is_undefined()
                    && matches!(sym.flags(), object::SymbolFlags::Elf { st_info, .. } if st_info & 0xf == STT_GNU_IFUNC)
            })
            .filter_map(|sym| sym.name().ok().map(String::from))
            .collect();
        for name in ifuncs {
            if let Some(addr) = resolve_in(path, &name) {
                map.insert((addr as u64).wrapping_sub(base as u64), (name, true));
            }
        }
        for sym in file.dynamic_symbols().chain(file.symbols()) {
            if !sym.is_definition() || sym.kind() != SymbolKind::Text {
                continue;
            }
            let Ok(name) = sym.name() else { continue };
            if name.is_empty() {
                continue;
            }
            let global = sym.is_global() && !sym.is_weak();
            let better = |old: &(String, bool)| {
                (
                    global,
                    std::cmp::Reverse(name.len()),
                    std::cmp::Reverse(name),
                ) > (
                    old.1,
                    std::cmp::Reverse(old.0.len()),
                    std::cmp::Reverse(old.0.as_str()),
                )
            };
            match map.get(&sym.address()) {
                Some(old) if !better(old) => {}
                _ => {
                    map.insert(sym.address(), (name.to_string(), global));
                }
            }
        }
        SymbolTable(map)
    }
}

const STT_GNU_IFUNC: u8 = 10;

/// What `dlsym` gives for `name` in the already loaded library at `path` (for an IFUNC: the
/// implementation its resolver picked). Never loads anything.
fn resolve_in(path: &str, name: &str) -> Option<usize> {
    let (c_path, c_name) = (
        std::ffi::CString::new(path).ok()?,
        std::ffi::CString::new(name).ok()?,
    );
    // SAFETY: RTLD_NOLOAD returns a handle only to an object already loaded (taking a reference
    // we drop); dlsym reads the loader's tables. Called from the snapshotter, never with one of
    // this module's locks held.
    unsafe {
        let handle = libc::dlopen(c_path.as_ptr(), libc::RTLD_LAZY | libc::RTLD_NOLOAD);
        if handle.is_null() {
            libc::dlerror();
            return None;
        }
        let p = libc::dlsym(handle, c_name.as_ptr());
        libc::dlclose(handle);
        libc::dlerror();
        (!p.is_null()).then_some(p as usize)
    }
}

/// Library, symbol name and offset of each address.
pub struct Described {
    pub library: String,
    pub function: String,
    pub offset: u64,
    pub excluded: bool,
}

/// Names every address in `addrs` (called by the snapshotter, off the hot path).
pub fn describe(addrs: &[usize]) -> HashMap<usize, Described> {
    let functions: HashMap<usize, FunctionInfo> = FUNCTIONS.lock().clone().unwrap_or_default();
    let names: HashMap<usize, String> = NAMES.lock().clone().unwrap_or_default();
    let mut tables: HashMap<String, SymbolTable> = HashMap::new();
    let mut out = HashMap::new();
    for &addr in addrs {
        let info = functions
            .get(&addr)
            .cloned()
            .unwrap_or_else(|| FunctionInfo {
                library: "[unknown]".into(),
                base: 0,
                excluded: false,
            });
        let offset = addr.wrapping_sub(info.base) as u64;
        let function = match names.get(&addr) {
            Some(n) => n.clone(),
            None => tables
                .entry(info.library.clone())
                .or_insert_with(|| SymbolTable::load(&info.library, info.base))
                .0
                .get(&offset)
                .map(|(n, _)| n.clone())
                .unwrap_or_else(|| format!("0x{offset:x}")),
        };
        out.insert(
            addr,
            Described {
                library: info.library,
                function,
                offset,
                excluded: info.excluded,
            },
        );
    }
    out
}

/// The locks held across fork (`runtime::ForkHeld`), in the order they are taken.
pub(crate) static FORK_LOCKS: [&dyn crate::runtime::ForkHeld; 3] = [&FILTER, &FUNCTIONS, &NAMES];

/// Forgets every function's library before a new attach session, and filters by `libs` from now
/// on (a library may have been unloaded and another mapped at its address since).
pub(crate) fn reset(libs: &[String]) {
    *FUNCTIONS.lock() = None;
    set_filter(LibFilter::new(libs));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_glibc_indirect_functions_at_their_implementation() {
        // cos in libm is an IFUNC: dlsym returns the implementation the resolver chose, whose
        // address no symbol table names (dladdr would say nothing useful either).
        // SAFETY: loading libm (a system library) and looking a symbol up.
        let addr = unsafe {
            let h = libc::dlopen(c"libm.so.6".as_ptr(), libc::RTLD_NOW);
            assert!(!h.is_null());
            libc::dlsym(h, c"cos".as_ptr()) as usize
        };
        let (path, base) = locate(addr).expect("dladdr knows libm");
        let table = SymbolTable::load(&path, base);
        let name = table
            .0
            .get(&((addr - base) as u64))
            .map(|(n, _)| n.as_str());
        assert_eq!(name, Some("cos"), "{path} at offset {:#x}", addr - base);
    }
}
