//! The CPython C API, resolved at run time from the process itself (never linked: a BIND_NOW
//! link of Python symbols would kill every non-Python child with "undefined symbol"), and the
//! struct offsets of the interpreter versions we read frames of: on 3.13+ read from the
//! interpreter itself (`debug_offsets`), and for what it does not publish — and for 3.8–3.12 —
//! taken from each version's headers (`offsetof` against pyenv's 3.8–3.13, Debian's 3.11 and
//! Debian forky's 3.14: `scripts/python-offsets`).

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::OnceLock;

use super::debug_offsets::{self, Field, Published};

pub type PyObject = c_void;

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
const FFI_LAYER_ON: &str = "the ffi layer (calls, bytes, native time) is recorded";

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

/// `PyTypeObject.tp_name` and `tp_call`: unchanged from 3.8 to 3.14.
pub const TP_NAME: usize = 24;
pub const TP_CALL: usize = 128;
/// `PyTypeObject.tp_dealloc` and `tp_as_sequence`, and `PySequenceMethods.sq_repeat`: unchanged
/// from 3.8 to 3.14.
pub const TP_DEALLOC: usize = 48;
pub const TP_AS_SEQUENCE: usize = 104;
pub const SQ_REPEAT: usize = 16;
/// `PyTypeObject.tp_vectorcall_offset` (unchanged from 3.8 to 3.14).
pub const TP_VECTORCALL_OFFSET: usize = 56;
/// `PyTypeObject.tp_basicsize` (unchanged from 3.8 to 3.14).
pub const TP_BASICSIZE: usize = 32;
/// `PyTypeObject.tp_flags` (unchanged from 3.8 to 3.14) and `Py_TPFLAGS_HEAPTYPE`.
pub const TP_FLAGS: usize = 168;
pub const TPFLAGS_HEAPTYPE: usize = 1 << 9;
/// `PyWrapperDescrObject.d_wrapped`: unchanged from 3.8 to 3.14.
pub const D_WRAPPED: usize = 48;
/// `PyObject.ob_type`, `PyVarObject.ob_size` (the tuple's items are `Layout::tuple_items`).
pub const OB_TYPE: usize = 8;
pub const OB_SIZE: usize = 16;
/// `PyListObject.ob_item`, the pointer to a list's items.
pub const LIST_ITEMS: usize = 24;
/// `CDataObject.b_size` (ctypes instances): unchanged from 3.8 to 3.14.
pub const CDATA_B_SIZE: usize = 40;
/// `CDataObject.b_ptr`, the instance's memory (a foreign function's: its address), right after
/// the object header: unchanged from 3.8 to 3.14.
pub const CDATA_B_PTR: usize = 16;
/// cffi's `CDataObject.c_data` (a function cdata's C address).
pub const CFFI_C_DATA: usize = 24;

pub type TernaryFunc =
    unsafe extern "C" fn(*mut PyObject, *mut PyObject, *mut PyObject) -> *mut PyObject;

/// The functions and objects of the C API the agent uses.
pub struct Api {
    pub layout: Layout,
    /// 3.13+: each offset the interpreter published beside the table's value (see
    /// `debug_offsets`); the layout holds the published ones.
    pub checked: Vec<Checked>,
    pub version: String,
    pub thread_state_get: unsafe extern "C" fn() -> *mut c_void,
    pub type_ready: unsafe extern "C" fn(*mut PyObject) -> c_int,
    pub type_from_metaclass: Option<
        unsafe extern "C" fn(
            *mut PyObject,
            *mut PyObject,
            *mut c_void,
            *mut PyObject,
        ) -> *mut PyObject,
    >,
    pub module_add_type: Option<unsafe extern "C" fn(*mut PyObject, *mut PyObject) -> c_int>,
    pub restore_thread: unsafe extern "C" fn(*mut c_void),
    pub code_addr2line: unsafe extern "C" fn(*mut PyObject, c_int) -> c_int,
    pub getattr: unsafe extern "C" fn(*mut PyObject, *const c_char) -> *mut PyObject,
    pub unicode_as_utf8: unsafe extern "C" fn(*mut PyObject) -> *const c_char,
    pub unicode_length: unsafe extern "C" fn(*mut PyObject) -> isize,
    pub incref: unsafe extern "C" fn(*mut PyObject),
    pub decref: unsafe extern "C" fn(*mut PyObject),
    pub err_clear: unsafe extern "C" fn(),
    pub get_buffer: unsafe extern "C" fn(*mut PyObject, *mut PyBuffer, c_int) -> c_int,
    pub release_buffer: unsafe extern "C" fn(*mut PyBuffer),
    pub import_module: unsafe extern "C" fn(*const c_char) -> *mut PyObject,
    /// `PyObject_CallFunctionObjArgs(callable, arg, NULL)`.
    pub call_one: unsafe extern "C" fn(*mut PyObject, ...) -> *mut PyObject,
    pub long_as_ssize: unsafe extern "C" fn(*mut PyObject) -> isize,
    pub dict_next: unsafe extern "C" fn(
        *mut PyObject,
        *mut isize,
        *mut *mut PyObject,
        *mut *mut PyObject,
    ) -> c_int,
    /// A borrowed reference or null, never an exception.
    pub dict_get_item_string: unsafe extern "C" fn(*mut PyObject, *const c_char) -> *mut PyObject,
    pub gil_ensure: unsafe extern "C" fn() -> c_int,
    pub gil_release: unsafe extern "C" fn(c_int),
    pub is_initialized: unsafe extern "C" fn() -> c_int,
    pub float_type: usize,
    pub long_type: usize,
    pub bool_type: usize,
    pub none: usize,
    pub bytes_type: usize,
    pub bytearray_type: usize,
    pub unicode_type: usize,
    pub code_type: usize,
    pub dict_type: usize,
    pub tuple_type: usize,
    pub list_type: usize,
}

/// `Py_buffer`, only to pass to PyObject_GetBuffer and read `len`.
#[repr(C)]
pub struct PyBuffer {
    pub buf: *mut c_void,
    pub obj: *mut PyObject,
    pub len: isize,
    pub itemsize: isize,
    pub readonly: c_int,
    pub ndim: c_int,
    pub format: *mut c_char,
    pub shape: *mut isize,
    pub strides: *mut isize,
    pub suboffsets: *mut isize,
    pub internal: *mut c_void,
}

static API: OnceLock<Option<Api>> = OnceLock::new();

fn sym(name: &CStr) -> Option<usize> {
    // SAFETY: dlsym with RTLD_DEFAULT only looks the name up in the global scope.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    (!p.is_null()).then_some(p as usize)
}

/// "3.11.7 (main, ...)" → 11.
fn minor_of(version: &str) -> Option<u32> {
    let mut parts = version.split(|c: char| !c.is_ascii_digit());
    (parts.next()? == "3").then_some(())?;
    parts.next()?.parse().ok()
}

/// A function pointer type `F` for the address `addr`.
///
/// # Safety
/// `addr` must be the address of a function with exactly the signature `F` (a fn pointer type).
unsafe fn fn_at<F: Copy>(addr: usize) -> F {
    assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<usize>());
    // SAFETY: per the contract, and sizes checked.
    unsafe { std::mem::transmute_copy(&addr) }
}

fn resolve() -> Result<Api, String> {
    let Some(version_fn) = sym(c"Py_GetVersion") else {
        return Err(if sym(c"PyPy_GetVersion").is_some() {
            format!(
                "PyPy is not supported by the Python layer, which reads CPython's own structs \
                 ({SUPPORTED}): run the program under CPython for call sites and the marshal \
                 split; {FFI_LAYER_ON}"
            )
        } else {
            "not a Python process".into()
        });
    };
    // SAFETY: Py_GetVersion returns a static NUL-terminated string and needs no interpreter.
    let version = unsafe {
        let f: extern "C" fn() -> *const c_char = std::mem::transmute(version_fn);
        CStr::from_ptr(f()).to_string_lossy().into_owned()
    };
    let published = debug_offsets::read();
    let (layout, checked) = choose_layout(&version, published.as_ref())?;
    macro_rules! f {
        ($name:literal) => {{
            let a = sym(c_str($name)).ok_or(concat!("missing C API function ", $name))?;
            // SAFETY: the symbol is the C API function of that name, with the signature the
            // field declares (as documented for CPython 3.8–3.14).
            unsafe { fn_at(a) }
        }};
    }
    fn c_str(s: &'static str) -> &'static CStr {
        CStr::from_bytes_with_nul(s.as_bytes()).expect("literal ends with NUL")
    }
    let data = |name: &'static str| sym(c_str(name)).ok_or_else(|| format!("missing {name}"));
    Ok(Api {
        layout,
        checked,
        version,
        thread_state_get: f!("PyThreadState_Get\0"),
        type_ready: f!("PyType_Ready\0"),
        // SAFETY: PyType_FromMetaclass (3.12+) has the declared signature.
        type_from_metaclass: sym(c"PyType_FromMetaclass").map(|a| unsafe { fn_at(a) }),
        // SAFETY: PyModule_AddType (3.10+) has the declared signature.
        module_add_type: sym(c"PyModule_AddType").map(|a| unsafe { fn_at(a) }),
        restore_thread: f!("PyEval_RestoreThread\0"),
        code_addr2line: f!("PyCode_Addr2Line\0"),
        getattr: f!("PyObject_GetAttrString\0"),
        unicode_as_utf8: f!("PyUnicode_AsUTF8\0"),
        unicode_length: f!("PyUnicode_GetLength\0"),
        incref: f!("Py_IncRef\0"),
        decref: f!("Py_DecRef\0"),
        err_clear: f!("PyErr_Clear\0"),
        get_buffer: f!("PyObject_GetBuffer\0"),
        release_buffer: f!("PyBuffer_Release\0"),
        import_module: f!("PyImport_ImportModule\0"),
        call_one: f!("PyObject_CallFunctionObjArgs\0"),
        long_as_ssize: f!("PyLong_AsSsize_t\0"),
        dict_next: f!("PyDict_Next\0"),
        dict_get_item_string: f!("PyDict_GetItemString\0"),
        gil_ensure: f!("PyGILState_Ensure\0"),
        gil_release: f!("PyGILState_Release\0"),
        is_initialized: f!("Py_IsInitialized\0"),
        float_type: data("PyFloat_Type\0")?,
        long_type: data("PyLong_Type\0")?,
        bool_type: data("PyBool_Type\0")?,
        none: data("_Py_NoneStruct\0")?,
        bytes_type: data("PyBytes_Type\0")?,
        bytearray_type: data("PyByteArray_Type\0")?,
        unicode_type: data("PyUnicode_Type\0")?,
        code_type: data("PyCode_Type\0")?,
        dict_type: data("PyDict_Type\0")?,
        tuple_type: data("PyTuple_Type\0")?,
        list_type: data("PyList_Type\0")?,
    })
}

/// Resolves the API once; the error says why the Python layer is off.
pub fn init() -> Result<&'static Api, String> {
    let mut err = String::new();
    let api = API.get_or_init(|| match resolve() {
        Ok(a) => Some(a),
        Err(e) => {
            err = e;
            None
        }
    });
    api.as_ref().ok_or(err)
}

#[inline(always)]
pub fn get() -> Option<&'static Api> {
    API.get().and_then(|a| a.as_ref())
}

/// Reads a word at `base + offset`.
///
/// # Safety
/// `base + offset` must be a readable, aligned word of a live object.
#[inline(always)]
pub unsafe fn word(base: usize, offset: usize) -> usize {
    // SAFETY: per the function's contract.
    unsafe { *((base + offset) as *const usize) }
}

/// `Py_TYPE(obj)`.
///
/// # Safety
/// `obj` must be a live Python object.
#[inline(always)]
pub unsafe fn type_of(obj: usize) -> usize {
    // SAFETY: every object starts with its refcount and type.
    unsafe { word(obj, OB_TYPE) }
}

/// `tp_name` of a type object, as text.
///
/// # Safety
/// `ty` must be a live type object.
pub unsafe fn type_name(ty: usize) -> String {
    // SAFETY: tp_name is a NUL-terminated string owned by the type.
    unsafe {
        let p = word(ty, TP_NAME) as *const c_char;
        if p.is_null() {
            String::new()
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    }
}

/// Whether a type's `tp_name` ends with `suffix`, read in place (no allocation: argument types
/// pass here on every call).
///
/// # Safety
/// `ty` must be a live type object.
pub unsafe fn type_name_ends_with(ty: usize, suffix: &[u8]) -> bool {
    // SAFETY: tp_name is a NUL-terminated string owned by the type.
    unsafe {
        let p = word(ty, TP_NAME) as *const c_char;
        !p.is_null() && CStr::from_ptr(p).to_bytes().ends_with(suffix)
    }
}

/// A Python str as a Rust String (empty on error). The GIL must be held.
///
/// # Safety
/// `s` must be a live object (any type) or null, and the GIL held.
pub unsafe fn string(api: &Api, s: *mut PyObject) -> String {
    if s.is_null() {
        return String::new();
    }
    // SAFETY: per the contract; PyUnicode_AsUTF8 returns a buffer owned by `s`.
    unsafe {
        let p = (api.unicode_as_utf8)(s);
        if p.is_null() {
            (api.err_clear)();
            return String::new();
        }
        CStr::from_ptr(p).to_string_lossy().into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions() {
        assert_eq!(minor_of("3.11.7 (main, May  9 2026)"), Some(11));
        assert_eq!(minor_of("3.8.18"), Some(8));
        assert_eq!(minor_of("2.7.18"), None);
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
