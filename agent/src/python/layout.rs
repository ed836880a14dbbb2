//! Where the Python layer finds what it reads, per interpreter: the frame-chain and object
//! offsets of each CPython minor version (`offsetof` against each version's headers:
//! `scripts/python-offsets`), replaced on 3.13+ by those the interpreter publishes about itself
//! (`debug_offsets`), and the one-line refusal, with its remedy, of an interpreter the layer does
//! not know.

use super::api::{minor_of, LIST_ITEMS, OB_SIZE, OB_TYPE, TP_FLAGS, TP_NAME};
use super::debug_offsets::{self, Field, Published};

/// The CPython versions the Python layer reads, as users see them.
pub const SUPPORTED: &str = "3.8–3.14";
const NEWEST_MINOR: u32 = 14;

/// Where the frame chain lives, per minor version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    pub minor: u32,
    /// 3.8–3.10: `PyThreadState.frame`; 3.11–3.12: `PyThreadState.cframe`; 3.13+: `current_frame`.
    pub ts_frame: usize,
    /// 3.11–3.12: `_PyCFrame.current_frame`.
    pub cframe_current: Option<usize>,
    /// Code object of a frame (`f_code`, or `f_executable` in 3.13+: a `_PyStackRef` in 3.14,
    /// whose low two bits are tags — see [`EXECUTABLE_TAGS`]).
    pub f_code: usize,
    /// The next outer frame (`f_back` / `previous`).
    pub f_back: usize,
    /// 3.8–3.10: `f_lasti` (an int); 3.11+: `prev_instr`/`instr_ptr` (a pointer).
    pub f_ip: usize,
    /// 3.11+: `owner` (a byte). From 3.12 a value of 3 or more marks a frame that is not
    /// Python code of its own (3.12–3.13: 3 = owned by the C stack; 3.14: 3 = the interpreter's
    /// entry frame, 4 = the C stack), which `_PyFrame_IsIncomplete` skips alike.
    pub f_owner: Option<usize>,
    /// 3.11+: offset of the first code unit in the code object.
    pub co_code_adaptive: usize,
    /// 3.11+: `_co_firsttraceable`.
    pub co_firsttraceable: usize,
    /// `PyTupleObject.ob_item`: 24, and 32 from 3.14 (a cached hash came before it).
    pub tuple_items: usize,
    /// ctypes' `PyCArgObject.obj` (what `byref(x)` holds): 48, and 64 from 3.14 (its value union
    /// gained the complex types).
    pub carg_obj: usize,
}

/// The tag bits of a 3.14 `_PyStackRef` (`Py_TAG_BITS` of the default build): clearing them
/// gives the object. Objects are at least 16-byte aligned, so clearing them is harmless on
/// every version, and one AND is cheaper than a branch on the version.
pub const EXECUTABLE_TAGS: usize = 3;

impl Layout {
    pub fn for_minor(minor: u32) -> Option<Layout> {
        let old = |f_lasti| Layout {
            minor,
            ts_frame: 24,
            cframe_current: None,
            f_code: 32,
            f_back: 24,
            f_ip: f_lasti,
            f_owner: None,
            co_code_adaptive: 0,
            co_firsttraceable: 0,
            tuple_items: 24,
            carg_obj: 48,
        };
        Some(match minor {
            8 | 9 => old(104),
            10 => old(96),
            11 => Layout {
                minor,
                ts_frame: 56,
                cframe_current: Some(8),
                f_code: 32,
                f_back: 48,
                f_ip: 56,
                f_owner: Some(69),
                co_code_adaptive: 184,
                co_firsttraceable: 168,
                tuple_items: 24,
                carg_obj: 48,
            },
            12 => Layout {
                minor,
                ts_frame: 56,
                cframe_current: Some(0),
                f_code: 0,
                f_back: 8,
                f_ip: 56,
                f_owner: Some(70),
                co_code_adaptive: 192,
                co_firsttraceable: 176,
                tuple_items: 24,
                carg_obj: 48,
            },
            13 => Layout {
                minor,
                ts_frame: 72,
                cframe_current: None,
                f_code: 0,
                f_back: 8,
                f_ip: 56,
                f_owner: Some(70),
                co_code_adaptive: 200,
                co_firsttraceable: 184,
                tuple_items: 24,
                carg_obj: 48,
            },
            14 => Layout {
                minor,
                ts_frame: 72,
                cframe_current: None,
                f_code: 0,
                f_back: 8,
                f_ip: 56,
                f_owner: Some(74),
                co_code_adaptive: 208,
                co_firsttraceable: 192,
                tuple_items: 32,
                carg_obj: 64,
            },
            _ => return None,
        })
    }

    /// The value this table (or the agent's constants) gives a published field.
    pub fn tabled(&self, f: Field) -> usize {
        match f {
            Field::ThreadStateCurrentFrame => self.ts_frame,
            Field::FramePrevious => self.f_back,
            Field::FrameExecutable => self.f_code,
            Field::FrameInstrPtr => self.f_ip,
            Field::FrameOwner => self.f_owner.unwrap_or(usize::MAX),
            Field::CodeCodeAdaptive => self.co_code_adaptive,
            Field::ObType => OB_TYPE,
            Field::TpName => TP_NAME,
            Field::TpFlags => TP_FLAGS,
            Field::TupleObItem => self.tuple_items,
            Field::TupleObSize => OB_SIZE,
            Field::ListObItem => LIST_ITEMS,
        }
    }

    /// This table with the offsets the interpreter publishes put in their place, and each
    /// published value beside the tabled one. Fields that are constants of the agent
    /// (`ob_type`, `tp_name`, ...) cannot move: a build that publishes another value for one of
    /// them is refused.
    pub fn with_published(mut self, p: &Published) -> Result<(Layout, Vec<Checked>), String> {
        let mut checked = Vec::new();
        for f in Field::ALL {
            let Some(value) = p.get(f) else { continue };
            let table = self.tabled(f);
            checked.push(Checked {
                field: f,
                published: value,
                table,
            });
            match f {
                Field::ThreadStateCurrentFrame => self.ts_frame = value,
                Field::FramePrevious => self.f_back = value,
                Field::FrameExecutable => self.f_code = value,
                Field::FrameInstrPtr => self.f_ip = value,
                Field::FrameOwner => self.f_owner = Some(value),
                Field::CodeCodeAdaptive => self.co_code_adaptive = value,
                Field::TupleObItem => self.tuple_items = value,
                Field::ObType
                | Field::TpName
                | Field::TpFlags
                | Field::TupleObSize
                | Field::ListObItem => {
                    if value != table {
                        return Err(format!(
                            "CPython {} publishes {} = {value}, not {table} as in every build the \
                             Python layer knows (a custom build?): run a standard CPython {SUPPORTED} \
                             build for call sites and the marshal split",
                            debug_offsets::version_text(p.version_hex),
                            f.name()
                        ));
                    }
                }
            }
        }
        Ok((self, checked))
    }
}

/// One published offset beside the table's value for it.
#[derive(Debug, Clone, Copy)]
pub struct Checked {
    pub field: Field,
    pub published: usize,
    pub table: usize,
}

/// What the ffi layer keeps when the Python layer is off, said at the end of every refusal.
pub(super) const FFI_LAYER_ON: &str = "the ffi layer (calls, bytes, native time) is recorded";

/// The layout of the running interpreter — `version` as `Py_GetVersion` says it, `published`
/// what `_PyRuntime` says (3.13+) — and the published offsets beside the table's; or, for an
/// interpreter the Python layer does not know, one line saying why and what to do instead.
pub fn choose_layout(
    version: &str,
    published: Option<&Published>,
) -> Result<(Layout, Vec<Checked>), String> {
    let minor = match published {
        Some(p) => p.minor(),
        None => minor_of(version).ok_or_else(|| {
            format!("cannot parse the Python version {version:?}; {FFI_LAYER_ON}")
        })?,
    };
    let free_threaded =
        published.is_some_and(|p| p.free_threaded) || version.contains("free-threading");
    if free_threaded {
        return Err(format!(
            "free-threaded CPython 3.{minor} (a --disable-gil build) is not supported by the Python \
             layer, whose object and frame layouts are the default build's: run the default build \
             (python3.{minor}, not python3.{minor}t) for call sites and the marshal split; {FFI_LAYER_ON}"
        ));
    }
    if minor > NEWEST_MINOR {
        return Err(format!(
            "CPython 3.{minor} is newer than this ffiprof's Python layer ({SUPPORTED}): upgrade \
             ffiprof for call sites and the marshal split; {FFI_LAYER_ON}"
        ));
    }
    let table = Layout::for_minor(minor).ok_or_else(|| {
        format!(
            "CPython 3.{minor} is older than the Python layer supports ({SUPPORTED}): run the \
             program under CPython 3.8 or later for call sites and the marshal split; {FFI_LAYER_ON}"
        )
    })?;
    match published {
        Some(p) => table
            .with_published(p)
            .map_err(|e| format!("{e}; {FFI_LAYER_ON}")),
        None => Ok((table, Vec::new())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert!(Layout::for_minor(15).is_none());
        assert!(Layout::for_minor(14).is_some());
        assert!(Layout::for_minor(8).is_some());
    }

    fn published(version_hex: u64, free_threaded: bool) -> Published {
        let minor = ((version_hex >> 16) & 0xff) as u32;
        let l = Layout::for_minor(minor);
        Published {
            version_hex,
            free_threaded,
            values: l.map(|l| Field::ALL.map(|f| l.tabled(f))),
        }
    }

    #[test]
    fn interpreters_the_layer_does_not_know_are_refused_with_a_remedy() {
        let newer =
            choose_layout("3.15.0a1 (main)", Some(&published(0x030f00a1, false))).unwrap_err();
        assert!(
            newer.contains("CPython 3.15 is newer") && newer.contains("upgrade ffiprof"),
            "{newer}"
        );
        // Free-threaded: said by `_Py_DebugOffsets`, or by the version alone.
        let free = choose_layout("3.14.0 (main)", Some(&published(0x030e00f0, true))).unwrap_err();
        assert!(
            free.contains("free-threaded") && free.contains("not python3.14t"),
            "{free}"
        );
        let by_name =
            choose_layout("3.13.1 experimental free-threading build (main)", None).unwrap_err();
        assert!(by_name.contains("free-threaded CPython 3.13"), "{by_name}");
        let older = choose_layout("3.7.16 (default)", None).unwrap_err();
        assert!(
            older.contains("older") && older.contains("3.8 or later"),
            "{older}"
        );
        for e in [&newer, &free, &by_name, &older] {
            assert!(e.ends_with("the ffi layer (calls, bytes, native time) is recorded"));
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn published_offsets_replace_the_table_and_a_moved_constant_is_refused() {
        let mut p = published(0x030e08f0, false);
        let (l, checked) = choose_layout("3.14.8", Some(&p)).unwrap();
        assert_eq!(l, Layout::for_minor(14).unwrap());
        assert_eq!(checked.len(), Field::ALL.len());
        assert!(checked.iter().all(|c| c.published == c.table));
        let owner = Field::ALL
            .iter()
            .position(|f| *f == Field::FrameOwner)
            .unwrap();
        p.values.as_mut().unwrap()[owner] = 75;
        let (l, checked) = choose_layout("3.14.8", Some(&p)).unwrap();
        assert_eq!(l.f_owner, Some(75), "the interpreter's own word wins");
        assert!(checked.iter().any(|c| c.published == 75 && c.table == 74));
        let ob_type = Field::ALL.iter().position(|f| *f == Field::ObType).unwrap();
        p.values.as_mut().unwrap()[ob_type] = 24;
        let e = choose_layout("3.14.8", Some(&p)).unwrap_err();
        assert!(e.contains("pyobject.ob_type = 24, not 8"), "{e}");
    }
}
