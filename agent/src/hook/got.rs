//! The one symbol patcher: rewrites GOT entries (`R_X86_64_JUMP_SLOT` and `R_X86_64_GLOB_DAT`) of
//! loaded modules so that their calls to an imported symbol reach a hook instead.
//!
//! Why GOT patching and not code patching: the target's machine code is never rewritten, patching is
//! one aligned 8-byte store per entry (atomic for other threads), and restoring is the same store
//! with the old value — so install and restore are an exact pair, used alike by LD_PRELOAD runs and
//! by attach. Modules loaded later are patched when they appear (see `hook::loader`).

use std::ffi::{c_void, CStr, CString};
use std::sync::atomic::{AtomicUsize, Ordering};

const DT_NULL: i64 = 0;
const DT_PLTRELSZ: i64 = 2;
const DT_STRTAB: i64 = 5;
const DT_SYMTAB: i64 = 6;
const DT_RELA: i64 = 7;
const DT_RELASZ: i64 = 8;
const DT_JMPREL: i64 = 23;
const R_X86_64_GLOB_DAT: u32 = 6;
const R_X86_64_JUMP_SLOT: u32 = 7;
const PT_DYNAMIC: u32 = 2;
const PT_GNU_RELRO: u32 = 0x6474_e552;
const PT_LOAD: u32 = 1;

#[repr(C)]
struct Elf64Dyn {
    d_tag: i64,
    d_val: u64,
}

#[repr(C)]
struct Elf64Rela {
    r_offset: u64,
    r_info: u64,
    r_addend: i64,
}

#[repr(C)]
struct Elf64Sym {
    st_name: u32,
    st_info: u8,
    st_other: u8,
    st_shndx: u16,
    st_value: u64,
    st_size: u64,
}

/// A loaded ELF object as the dynamic loader reports it.
#[derive(Debug, Clone)]
pub struct Module {
    /// Load bias (`dlpi_addr`).
    pub base: usize,
    /// Path as the loader knows it; empty for the main program.
    pub name: String,
    dynamic: usize,
    relro: Option<(usize, usize)>,
    /// Lowest and highest mapped address of its PT_LOAD segments.
    pub range: (usize, usize),
}

/// One GOT entry that was redirected, with what it held before.
#[derive(Debug, Clone)]
pub struct PatchedSlot {
    pub module: String,
    pub symbol: &'static str,
    slot: usize,
    original: usize,
    replacement: usize,
    read_only: bool,
}

/// Lists the loaded modules, skipping the vDSO.
pub fn loaded_modules() -> Vec<Module> {
    unsafe extern "C" fn callback(
        info: *mut libc::dl_phdr_info,
        _size: usize,
        data: *mut c_void,
    ) -> i32 {
        // SAFETY: dl_iterate_phdr passes a valid info for the duration of the call, and `data`
        // is the &mut Vec we passed in below; nothing here calls back into the loader.
        let (info, out) = unsafe { (&*info, &mut *(data as *mut Vec<Module>)) };
        // Allocates: a panic must stop here, not unwind through the loader.
        crate::runtime::guard(0, || {
            let name = if info.dlpi_name.is_null() {
                String::new()
            } else {
                // SAFETY: a non-null dlpi_name is a NUL-terminated string owned by the loader.
                unsafe { CStr::from_ptr(info.dlpi_name) }
                    .to_string_lossy()
                    .into_owned()
            };
            if name.contains("linux-vdso") {
                return 0;
            }
            let base = info.dlpi_addr as usize;
            let mut dynamic = 0;
            let mut relro = None;
            let mut lo = usize::MAX;
            let mut hi = 0;
            for i in 0..info.dlpi_phnum as usize {
                // SAFETY: dlpi_phdr points to dlpi_phnum program headers.
                let ph = unsafe { &*info.dlpi_phdr.add(i) };
                match ph.p_type {
                    PT_DYNAMIC => dynamic = base + ph.p_vaddr as usize,
                    PT_GNU_RELRO => {
                        relro = Some((
                            base + ph.p_vaddr as usize,
                            base + (ph.p_vaddr + ph.p_memsz) as usize,
                        ))
                    }
                    PT_LOAD => {
                        lo = lo.min(base + ph.p_vaddr as usize);
                        hi = hi.max(base + (ph.p_vaddr + ph.p_memsz) as usize);
                    }
                    _ => {}
                }
            }
            if dynamic != 0 {
                out.push(Module {
                    base,
                    name,
                    dynamic,
                    relro,
                    range: (lo, hi),
                });
            }
            0
        })
    }
    let mut out: Vec<Module> = Vec::new();
    // SAFETY: the callback only reads the loader's structures and appends to `out`.
    unsafe { libc::dl_iterate_phdr(Some(callback), &mut out as *mut Vec<Module> as *mut c_void) };
    out
}

/// How many objects the loader has added and removed so far: a cheap way to tell whether a rescan
/// could find anything new.
pub fn loader_generation() -> (u64, u64) {
    unsafe extern "C" fn callback(
        info: *mut libc::dl_phdr_info,
        _size: usize,
        data: *mut c_void,
    ) -> i32 {
        // SAFETY: as in `loaded_modules`; we stop after the first object.
        unsafe {
            *(data as *mut (u64, u64)) = ((*info).dlpi_adds, (*info).dlpi_subs);
        }
        1
    }
    let mut out = (0u64, 0u64);
    // SAFETY: the callback writes only to `out`.
    unsafe { libc::dl_iterate_phdr(Some(callback), &mut out as *mut (u64, u64) as *mut c_void) };
    out
}

impl Module {
    fn fix(&self, addr: u64) -> usize {
        // glibc relocates the d_ptr entries of writable .dynamic sections; the vDSO and some
        // loaders leave them as link-time offsets.
        if (addr as usize) < self.base {
            self.base + addr as usize
        } else {
            addr as usize
        }
    }

    /// GOT entries of this module that import `symbol`, with the slot address.
    pub fn imports(&self, wanted: &[&'static str]) -> Vec<(&'static str, usize)> {
        let mut found = Vec::new();
        self.each_import(|name, slot| {
            if let Some(w) = wanted.iter().find(|w| w.as_bytes() == name) {
                found.push((*w, slot));
            }
        });
        found
    }

    /// What every GOT entry of this module (JUMP_SLOT and GLOB_DAT) holds now: the addresses it
    /// is bound to (Python loads extension modules with RTLD_NOW, so all of them are bound).
    pub fn bound_addresses(&self) -> Vec<usize> {
        let mut found = Vec::new();
        // SAFETY: each slot is a GOT entry of this loaded module (see `slot_cell`).
        self.each_import(|_, slot| found.push(slot_cell(slot).load(Ordering::Relaxed)));
        found
    }

    /// Calls `f(symbol name, slot address)` for each GOT entry (JUMP_SLOT and GLOB_DAT) of this
    /// module, found through its PT_DYNAMIC relocations.
    pub fn each_import(&self, mut f: impl FnMut(&[u8], usize)) {
        let mut strtab = 0;
        let mut symtab = 0;
        let mut rela = (0usize, 0usize);
        let mut jmprel = (0usize, 0usize);
        // SAFETY: `dynamic` is the PT_DYNAMIC of a loaded object, an array terminated by DT_NULL.
        unsafe {
            let mut d = self.dynamic as *const Elf64Dyn;
            while (*d).d_tag != DT_NULL {
                let v = (*d).d_val;
                match (*d).d_tag {
                    DT_STRTAB => strtab = self.fix(v),
                    DT_SYMTAB => symtab = self.fix(v),
                    DT_RELA => rela.0 = self.fix(v),
                    DT_RELASZ => rela.1 = v as usize,
                    DT_JMPREL => jmprel.0 = self.fix(v),
                    DT_PLTRELSZ => jmprel.1 = v as usize,
                    _ => {}
                }
                d = d.add(1);
            }
        }
        if strtab == 0 || symtab == 0 {
            return;
        }
        for (start, size) in [jmprel, rela] {
            if start == 0 {
                continue;
            }
            let n = size / std::mem::size_of::<Elf64Rela>();
            for i in 0..n {
                // SAFETY: the relocation table lies in the module's mapped, readable segments.
                let r = unsafe { &*(start as *const Elf64Rela).add(i) };
                let kind = (r.r_info & 0xffff_ffff) as u32;
                if kind != R_X86_64_JUMP_SLOT && kind != R_X86_64_GLOB_DAT {
                    continue;
                }
                let sym_index = (r.r_info >> 32) as usize;
                if sym_index == 0 {
                    continue;
                }
                // SAFETY: sym_index comes from the module's own relocation, so it indexes its
                // symbol table, and st_name indexes its string table.
                let name = unsafe {
                    let sym = &*(symtab as *const Elf64Sym).add(sym_index);
                    CStr::from_ptr((strtab + sym.st_name as usize) as *const libc::c_char)
                };
                f(name.to_bytes(), self.base + r.r_offset as usize);
            }
        }
    }

    /// What the loader would bind `symbol` to for this module: its own scope, then its dependencies.
    pub fn resolve(&self, symbol: &str) -> Option<usize> {
        let sym = CString::new(symbol).ok()?;
        // SAFETY: RTLD_NOLOAD only returns a handle to an object that is already loaded (adding a
        // reference we drop below); dlsym reads the loader's tables. Our own GOT is never patched,
        // so these calls reach glibc itself.
        unsafe {
            let handle = if self.name.is_empty() {
                libc::dlopen(std::ptr::null(), libc::RTLD_LAZY | libc::RTLD_NOLOAD)
            } else {
                let c = CString::new(self.name.as_str()).ok()?;
                libc::dlopen(c.as_ptr(), libc::RTLD_LAZY | libc::RTLD_NOLOAD)
            };
            if handle.is_null() {
                return None;
            }
            let p = libc::dlsym(handle, sym.as_ptr());
            libc::dlclose(handle);
            libc::dlerror();
            (!p.is_null()).then_some(p as usize)
        }
    }

    pub fn contains(&self, addr: usize) -> bool {
        addr >= self.range.0 && addr < self.range.1
    }
}

fn slot_cell(slot: usize) -> &'static AtomicUsize {
    // SAFETY: `slot` is an 8-byte aligned GOT entry of a loaded module; GOT entries are only ever
    // written with aligned word stores (by the loader or by us), so viewing one as an AtomicUsize is
    // sound, and the module stays loaded while it is patched (we re-scan on dlopen).
    unsafe { &*(slot as *const AtomicUsize) }
}

fn write_slot(slot: usize, value: usize, read_only: bool) -> Result<(), String> {
    let page = 4096usize;
    let start = slot & !(page - 1);
    if read_only {
        // SAFETY: the page belongs to the module's RELRO segment; we only add write permission for
        // the duration of one aligned store and put back the loader's PROT_READ.
        let rc = unsafe {
            libc::mprotect(
                start as *mut c_void,
                page,
                libc::PROT_READ | libc::PROT_WRITE,
            )
        };
        if rc != 0 {
            return Err(format!(
                "mprotect failed: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    slot_cell(slot).store(value, Ordering::SeqCst);
    if read_only {
        // SAFETY: as above, restoring the RELRO protection.
        unsafe { libc::mprotect(start as *mut c_void, page, libc::PROT_READ) };
    }
    Ok(())
}

/// What `slot` (a GOT entry) holds now.
pub fn slot_value(slot: usize) -> usize {
    slot_cell(slot).load(Ordering::SeqCst)
}

/// Points `slot` of `module` at `replacement`, remembering what it held.
pub fn patch(
    module: &Module,
    symbol: &'static str,
    slot: usize,
    replacement: usize,
) -> Result<PatchedSlot, String> {
    let read_only = module.relro.is_some_and(|(lo, hi)| slot >= lo && slot < hi);
    let original = slot_cell(slot).load(Ordering::SeqCst);
    if original == replacement {
        return Err("already patched".into());
    }
    write_slot(slot, replacement, read_only)?;
    Ok(PatchedSlot {
        module: module.name.clone(),
        symbol,
        slot,
        original,
        replacement,
        read_only,
    })
}

impl PatchedSlot {
    /// Puts back the original value, unless someone else re-pointed the slot since.
    pub fn restore(&self) -> bool {
        if slot_cell(self.slot).load(Ordering::SeqCst) != self.replacement {
            return false;
        }
        write_slot(self.slot, self.original, self.read_only).is_ok()
    }
}
