//! The struct offsets CPython 3.13+ publishes about itself: `_Py_DebugOffsets`, the first member
//! of `_PyRuntime` (cookie `xdebugpy`, then `PY_VERSION_HEX`, then whether the build is
//! free-threaded, then one section of offsets per struct). It is the contract out-of-process
//! debuggers (PEP 768's `sys.remote_exec`, py-spy, ...) read, so it stays right for the build it is
//! in — a vendor's patched struct included.
//!
//! The Python layer reads the offsets it needs from here at start-up (`api::Layout::published`)
//! and keeps its own tables only for what the interpreter does not publish
//! ([`UNPUBLISHED`]); each published value is also compared with the table (`api::Layout::
//! for_minor`), and the comparison goes into the profile (`meta.python_offsets`), which the e2e
//! suites check on 3.13 and 3.14. A new minor version then needs only its unpublished entries —
//! and the positions of the fields inside `_Py_DebugOffsets` itself, which grows between versions
//! ([`positions`]).

/// What `_Py_DebugOffsets` starts with.
const COOKIE: &[u8; 8] = b"xdebugpy";

/// One published offset the Python layer uses, by its name in `_Py_DebugOffsets`
/// (`section.field`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    ThreadStateCurrentFrame,
    FramePrevious,
    FrameExecutable,
    FrameInstrPtr,
    FrameOwner,
    CodeCodeAdaptive,
    ObType,
    TpName,
    TpFlags,
    TupleObItem,
    TupleObSize,
    ListObItem,
}

impl Field {
    pub const ALL: [Field; 12] = [
        Field::ThreadStateCurrentFrame,
        Field::FramePrevious,
        Field::FrameExecutable,
        Field::FrameInstrPtr,
        Field::FrameOwner,
        Field::CodeCodeAdaptive,
        Field::ObType,
        Field::TpName,
        Field::TpFlags,
        Field::TupleObItem,
        Field::TupleObSize,
        Field::ListObItem,
    ];

    /// The field's name in CPython's `_Py_DebugOffsets`.
    pub fn name(self) -> &'static str {
        match self {
            Field::ThreadStateCurrentFrame => "thread_state.current_frame",
            Field::FramePrevious => "interpreter_frame.previous",
            Field::FrameExecutable => "interpreter_frame.executable",
            Field::FrameInstrPtr => "interpreter_frame.instr_ptr",
            Field::FrameOwner => "interpreter_frame.owner",
            Field::CodeCodeAdaptive => "code_object.co_code_adaptive",
            Field::ObType => "pyobject.ob_type",
            Field::TpName => "type_object.tp_name",
            Field::TpFlags => "type_object.tp_flags",
            Field::TupleObItem => "tuple_object.ob_item",
            Field::TupleObSize => "tuple_object.ob_size",
            Field::ListObItem => "list_object.ob_item",
        }
    }
}

/// What the Python layer reads that no `_Py_DebugOffsets` publishes (3.13 and 3.14 alike), so
/// its values come from ffiprof's own table (`offsetof` against each version's headers, see
/// `scripts/python-offsets`).
pub const UNPUBLISHED: &[&str] = &[
    "code_object._co_firsttraceable",
    "interpreter_frame.owner values (FRAME_OWNED_BY_INTERPRETER/CSTACK)",
    "_PyStackRef tag bits of interpreter_frame.executable",
    "type_object.tp_basicsize",
    "type_object.tp_dealloc",
    "type_object.tp_vectorcall_offset",
    "type_object.tp_as_sequence",
    "type_object.tp_call",
    "sequence_methods.sq_repeat",
    "wrapper_descriptor.d_wrapped",
    "function.func_version",
    "ctypes CDataObject.b_ptr, b_size, b_objects",
    "ctypes PyCArgObject.obj",
    "cffi CDataObject.c_data",
    "CALL_FUNCTION_EX's opcode",
];

/// Byte position of each [`Field`] inside `_Py_DebugOffsets` (the struct itself grows between
/// versions), in [`Field::ALL`]'s order; measured with `offsetof(_Py_DebugOffsets, ...)` against
/// each version's headers (`scripts/python-offsets`).
fn positions(minor: u32) -> Option<[usize; 12]> {
    Some(match minor {
        13 => [184, 232, 240, 248, 264, 344, 360, 376, 392, 408, 416, 432],
        14 => [208, 256, 264, 272, 288, 384, 408, 424, 440, 456, 464, 480],
        _ => return None,
    })
}

/// What one interpreter says about itself.
#[derive(Debug, Clone)]
pub struct Published {
    /// `PY_VERSION_HEX`.
    pub version_hex: u64,
    pub free_threaded: bool,
    /// Each field's value, in [`Field::ALL`]'s order; None when this ffiprof does not know where
    /// the field lies in this version's `_Py_DebugOffsets` (a newer CPython).
    pub values: Option<[usize; 12]>,
}

impl Published {
    pub fn minor(&self) -> u32 {
        ((self.version_hex >> 16) & 0xff) as u32
    }

    pub fn get(&self, f: Field) -> Option<usize> {
        let i = Field::ALL.iter().position(|x| *x == f)?;
        self.values.map(|v| v[i])
    }
}

/// Reads `_Py_DebugOffsets` from this process's `_PyRuntime`; None before 3.13 (no such
/// symbol, or no cookie at its start).
pub fn read() -> Option<Published> {
    let at = crate::runtime::global_symbol(c"_PyRuntime")?;
    // SAFETY: `_PyRuntime` is CPython's runtime state, a static object far larger than the 24
    // bytes read here; 3.13+ start it with the cookie, version and free-threaded flag. Older
    // versions start it with other (initialised) fields, which the cookie check rejects.
    let (cookie, version_hex, free_threaded) = unsafe {
        let cookie = std::ptr::read_unaligned(at as *const [u8; 8]);
        (
            cookie,
            std::ptr::read_unaligned((at + 8) as *const u64),
            std::ptr::read_unaligned((at + 16) as *const u64),
        )
    };
    if &cookie != COOKIE {
        return None;
    }
    let minor = ((version_hex >> 16) & 0xff) as u32;
    let values = positions(minor).map(|pos| {
        // SAFETY: per the cookie, `at` starts this version's `_Py_DebugOffsets`, which holds a
        // u64 at every position of `positions(minor)`.
        pos.map(|p| unsafe { std::ptr::read_unaligned((at + p) as *const u64) } as usize)
    });
    Some(Published {
        version_hex,
        free_threaded: free_threaded != 0,
        values,
    })
}

/// `"3.14.0"` from `PY_VERSION_HEX`.
pub fn version_text(hex: u64) -> String {
    format!("{}.{}.{}", hex >> 24, (hex >> 16) & 0xff, (hex >> 8) & 0xff)
}
