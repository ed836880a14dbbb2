//! Finding the interpreter inside the target: which loaded module is CPython, which version, and
//! where its entry points and its pending-call critical sections are at run time.
//!
//! Symbols come from the module's own ELF symbol tables (`object`), mapped to run-time addresses
//! through `/proc/PID/maps` by file offset, which works the same for PIE executables, shared
//! libraries and Debian's non-PIE `/usr/bin/python3.11` that has libpython linked in.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use object::{Object, ObjectSegment, ObjectSymbol};

use super::error::InjectError;
use super::procfs::Mapping;

/// Functions that take or hold the pending-call lock. A thread stopped inside one of them may hold
/// it, and calling `Py_AddPendingCall` on that thread would wait on itself forever.
const PENDING_LOCK_FUNCTIONS: &[&str] = &[
    "Py_AddPendingCall",
    "_PyEval_AddPendingCall",
    "Py_MakePendingCalls",
    "_PyEval_MakePendingCalls",
    "_Py_FinishPendingCalls",
    "make_pending_calls",
    "_push_pending_call",
    "_pop_pending_call",
    "_pop_pending_calls",
    "PyThread_acquire_lock",
    "PyThread_acquire_lock_timed",
    "PyThread_acquire_lock_timed_with_retries",
    "PyThread_release_lock",
    "PyMutex_Lock",
    "PyMutex_Unlock",
    "_PyMutex_LockSlow",
    "_PyMutex_LockTimed",
    "_PyMutex_UnlockSlow",
    "_PyParkingLot_Park",
    "_PyParkingLot_Unpark",
];

/// The CPython found in the target, with run-time addresses.
#[derive(Debug, Clone)]
pub struct PythonModule {
    /// The module's path as the target sees it.
    pub path: String,
    /// `(major, minor)`.
    pub version: (u32, u32),
    pub add_pending_call: u64,
    pub run_simple_string: u64,
    /// Run-time `[start, end)` ranges of [`PENDING_LOCK_FUNCTIONS`] that have a known size.
    pub pending_lock_ranges: Vec<(u64, u64)>,
}

impl PythonModule {
    pub fn version_string(&self) -> String {
        format!("{}.{}", self.version.0, self.version.1)
    }
}

/// A parsed module: its symbols (name → (virtual address, size)) and segments.
struct ElfSymbols {
    symbols: HashMap<String, (u64, u64)>,
    /// `(vaddr, file offset, file size)` of each loadable segment.
    segments: Vec<(u64, u64, u64)>,
}

fn module_file(pid: i32, path: &str) -> PathBuf {
    let in_root = PathBuf::from(format!("/proc/{pid}/root{path}"));
    if in_root.exists() {
        in_root
    } else {
        PathBuf::from(path)
    }
}

fn parse_elf(file: &Path, wanted: impl Fn(&str) -> bool) -> Result<ElfSymbols, InjectError> {
    let data = std::fs::read(file).map_err(|e| InjectError::io(file, e))?;
    let elf = object::File::parse(&*data).map_err(|e| InjectError::Elf {
        path: file.to_owned(),
        detail: e.to_string(),
    })?;
    let mut symbols = HashMap::new();
    // Dynamic symbols first: they are what the loader uses; the static table only adds sizes of
    // internal functions when the module was not stripped.
    for sym in elf.dynamic_symbols().chain(elf.symbols()) {
        if !sym.is_definition() {
            continue;
        }
        let Ok(name) = sym.name() else { continue };
        if wanted(name) {
            symbols
                .entry(name.to_owned())
                .or_insert((sym.address(), sym.size()));
        }
    }
    let segments = elf
        .segments()
        .filter_map(|seg| {
            let (offset, size) = seg.file_range();
            (size > 0).then_some((seg.address(), offset, size))
        })
        .collect();
    Ok(ElfSymbols { symbols, segments })
}

/// Run-time address of virtual address `vaddr` of the module mapped as `maps`.
fn runtime_address(segments: &[(u64, u64, u64)], maps: &[&Mapping], vaddr: u64) -> Option<u64> {
    let &(seg_vaddr, seg_offset, _) = segments
        .iter()
        .find(|&&(addr, _, size)| vaddr >= addr && vaddr < addr + size)?;
    let file_offset = seg_offset + (vaddr - seg_vaddr);
    maps.iter()
        .find(|m| file_offset >= m.offset && file_offset < m.offset + (m.end - m.start))
        .map(|m| m.start + (file_offset - m.offset))
}

/// `(major, minor)` from names like `libpython3.11.so.1.0`, `python3.13t`, `libpython3.6m.so`.
pub fn version_from_name(path: &str) -> Option<(u32, u32)> {
    let name = path.rsplit('/').next()?;
    let at = name.find("python")? + "python".len();
    let rest = &name[at..];
    let (major, rest) = rest.split_once('.')?;
    let minor: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Finds CPython among the target's modules: any module exporting both entry points we call.
/// Modules named like Python are tried first, then the executable (an embedding program).
pub fn find_python(pid: i32, maps: &[Mapping], exe: &str) -> Result<PythonModule, InjectError> {
    let mut candidates: Vec<&str> = Vec::new();
    for m in maps {
        let p = m.path.as_str();
        if p.starts_with('/') && !candidates.contains(&p) {
            let name = p.rsplit('/').next().unwrap_or(p);
            if name.contains("python") || p == exe {
                candidates.push(p);
            }
        }
    }
    candidates.sort_by_key(|p| !p.rsplit('/').next().unwrap_or(p).contains("python"));
    for path in candidates {
        let module_maps: Vec<&Mapping> = maps.iter().filter(|m| m.path == path).collect();
        let wanted = |n: &str| {
            n == "Py_AddPendingCall"
                || n == "PyRun_SimpleString"
                || n == "Py_Version"
                || PENDING_LOCK_FUNCTIONS.contains(&n)
        };
        let Ok(elf) = parse_elf(&module_file(pid, path), wanted) else {
            continue;
        };
        let addr = |name: &str| {
            elf.symbols
                .get(name)
                .and_then(|&(vaddr, _)| runtime_address(&elf.segments, &module_maps, vaddr))
        };
        let (Some(add_pending_call), Some(run_simple_string)) =
            (addr("Py_AddPendingCall"), addr("PyRun_SimpleString"))
        else {
            continue;
        };
        let version = match version_from_name(path).or_else(|| version_from_name(exe)) {
            Some(v) => v,
            None => {
                let at = addr("Py_Version").ok_or_else(|| InjectError::UnknownVersion {
                    pid,
                    module: path.to_owned(),
                    detail: "its name has no version and it exports no Py_Version (before 3.11)"
                        .into(),
                })?;
                let hex = read_u32(pid, at).map_err(|e| InjectError::UnknownVersion {
                    pid,
                    module: path.to_owned(),
                    detail: format!("reading Py_Version: {e}"),
                })?;
                (hex >> 24, (hex >> 16) & 0xff)
            }
        };
        let pending_lock_ranges = PENDING_LOCK_FUNCTIONS
            .iter()
            .filter_map(|name| {
                let &(vaddr, size) = elf.symbols.get(*name)?;
                let start = runtime_address(&elf.segments, &module_maps, vaddr)?;
                (size > 0).then_some((start, start + size))
            })
            .collect();
        return Ok(PythonModule {
            path: path.to_owned(),
            version,
            add_pending_call,
            run_simple_string,
            pending_lock_ranges,
        });
    }
    if let Some(m) = maps.iter().find(|m| {
        m.path
            .rsplit('/')
            .next()
            .is_some_and(|n| n.starts_with("libpypy"))
    }) {
        return Err(InjectError::PyPy {
            pid,
            module: m.path.clone(),
        });
    }
    Err(InjectError::NotPython {
        pid,
        exe: exe.to_owned(),
    })
}

fn read_u32(pid: i32, addr: u64) -> std::io::Result<u32> {
    use std::os::unix::fs::FileExt;
    let mem = std::fs::File::open(format!("/proc/{pid}/mem"))?;
    let mut buf = [0u8; 4];
    mem.read_exact_at(&mut buf, addr)?;
    Ok(u32::from_ne_bytes(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_names() {
        assert_eq!(
            version_from_name("/x/lib/libpython3.11.so.1.0"),
            Some((3, 11))
        );
        assert_eq!(version_from_name("/usr/bin/python3.11"), Some((3, 11)));
        assert_eq!(version_from_name("/x/libpython3.6m.so.1.0"), Some((3, 6)));
        assert_eq!(version_from_name("/x/bin/python3.13t"), Some((3, 13)));
        assert_eq!(version_from_name("/usr/bin/python3"), None);
        assert_eq!(version_from_name("/usr/bin/uwsgi"), None);
    }

    #[test]
    fn maps_virtual_addresses_by_file_offset() {
        let segments = [(0x0, 0x0, 0x1000), (0x1000, 0x1000, 0x5000)];
        let text = Mapping {
            start: 0x7f00_0000_1000,
            end: 0x7f00_0000_6000,
            readable: true,
            executable: true,
            offset: 0x1000,
            path: "/l.so".into(),
        };
        let head = Mapping {
            start: 0x7f00_0000_0000,
            end: 0x7f00_0000_1000,
            readable: true,
            executable: false,
            offset: 0,
            path: "/l.so".into(),
        };
        let maps = [&head, &text];
        assert_eq!(
            runtime_address(&segments, &maps, 0x1234),
            Some(0x7f00_0000_1234)
        );
        assert_eq!(
            runtime_address(&segments, &maps, 0x10),
            Some(0x7f00_0000_0010)
        );
        assert_eq!(runtime_address(&segments, &maps, 0x9000), None);
    }

    #[test]
    fn finds_this_test_process_is_not_python() {
        let pid = std::process::id() as i32;
        let maps = super::super::procfs::read_maps(pid).unwrap();
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let err = find_python(pid, &maps, &exe.to_string_lossy()).unwrap_err();
        assert!(matches!(err, InjectError::NotPython { .. }), "{err}");
    }
}
