//! The CPython C API, resolved at run time from the process itself (never linked: a BIND_NOW
//! link of Python symbols would kill every non-Python child with "undefined symbol"), the
//! interpreter's layout chosen at that moment (`layout`: read from the interpreter itself on
//! 3.13+, `debug_offsets`, else tabled), and the object offsets that no version has moved.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};
use std::sync::OnceLock;

use super::debug_offsets;
use super::layout::FFI_LAYER_ON;
pub use super::layout::{choose_layout, Checked, Layout, EXECUTABLE_TAGS, SUPPORTED};

pub type PyObject = c_void;

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
    /// 3.8–3.11: the address of `_PyRuntime.gilstate.tstate_current`, the word
    /// `PyThreadState_Get` returns (read from its code: [`tstate_cell`]), so that the per-call
    /// wrappers read the thread state with one load instead of a call; 0: call it.
    pub tstate_cell: usize,
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
    pub save_thread: unsafe extern "C" fn() -> *mut c_void,
    pub code_addr2line: unsafe extern "C" fn(*mut PyObject, c_int) -> c_int,
    pub getattr: unsafe extern "C" fn(*mut PyObject, *const c_char) -> *mut PyObject,
    pub unicode_as_utf8: unsafe extern "C" fn(*mut PyObject) -> *const c_char,
    pub unicode_length: unsafe extern "C" fn(*mut PyObject) -> isize,
    pub incref: unsafe extern "C" fn(*mut PyObject),
    pub decref: unsafe extern "C" fn(*mut PyObject),
    pub err_clear: unsafe extern "C" fn(),
    pub err_occurred: unsafe extern "C" fn() -> *mut PyObject,
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
/// The resolved API once `init` succeeded, for the wrappers: one load where `get` checks the
/// `OnceLock` and the `Option`.
static HOT: AtomicPtr<Api> = AtomicPtr::new(std::ptr::null_mut());

use crate::runtime::{fn_at, global_symbol as sym};

/// "3.11.7 (main, ...)" → 11.
pub(super) fn minor_of(version: &str) -> Option<u32> {
    let mut parts = version.split(|c: char| !c.is_ascii_digit());
    (parts.next()? == "3").then_some(())?;
    parts.next()?.parse().ok()
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
        let f: unsafe extern "C" fn() -> *const c_char = fn_at(version_fn);
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
    let tstate_cell = match (
        minor_of(&version),
        sym(c"PyThreadState_Get"),
        sym(c"_PyRuntime"),
    ) {
        (Some(8..=11), Some(get), Some(runtime)) => tstate_cell(get, runtime),
        _ => 0,
    };
    Ok(Api {
        layout,
        checked,
        version,
        tstate_cell,
        thread_state_get: f!("PyThreadState_Get\0"),
        type_ready: f!("PyType_Ready\0"),
        // SAFETY: PyType_FromMetaclass (3.12+) has the declared signature.
        type_from_metaclass: sym(c"PyType_FromMetaclass").map(|a| unsafe { fn_at(a) }),
        // SAFETY: PyModule_AddType (3.10+) has the declared signature.
        module_add_type: sym(c"PyModule_AddType").map(|a| unsafe { fn_at(a) }),
        restore_thread: f!("PyEval_RestoreThread\0"),
        save_thread: f!("PyEval_SaveThread\0"),
        code_addr2line: f!("PyCode_Addr2Line\0"),
        getattr: f!("PyObject_GetAttrString\0"),
        unicode_as_utf8: f!("PyUnicode_AsUTF8\0"),
        unicode_length: f!("PyUnicode_GetLength\0"),
        incref: f!("Py_IncRef\0"),
        decref: f!("Py_DecRef\0"),
        err_clear: f!("PyErr_Clear\0"),
        err_occurred: f!("PyErr_Occurred\0"),
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

/// Where `PyThreadState_Get` (at `get`) reads the thread state, when its code is the one load
/// of 3.8–3.11 (`_PyRuntime.gilstate.tstate_current`) in either form a build gives it:
/// `mov rax, [rip + cell]` (an executable linking libpython statically, Debian's) or
/// `mov rax, [rip + got]; mov rax, [rax + offset]` (a shared libpython: `got` holds
/// `&_PyRuntime`), then `test rax, rax`. The cell must lie in `_PyRuntime` (at `runtime`),
/// where `tstate_current` is; 0 for anything else (the wrappers then call the function).
fn tstate_cell(get: usize, runtime: usize) -> usize {
    // SAFETY: `get` is the entry of PyThreadState_Get, mapped readable and executable; the 17
    // bytes read lie inside its body (two loads, a test, a branch and its return are longer).
    let code = unsafe { std::slice::from_raw_parts(get as *const u8, 17) };
    let disp = |at: usize| {
        code.get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .map(|b: [u8; 4]| i32::from_le_bytes(b) as isize)
    };
    let (Some(rip_disp), Some(second)) = (disp(3), disp(10)) else {
        return 0;
    };
    if code.get(..3) != Some(&[0x48, 0x8b, 0x05]) {
        return 0;
    }
    let first = (get + 7).wrapping_add_signed(rip_disp);
    let cell = match code.get(7..10) {
        Some([0x48, 0x85, 0xc0]) => first,
        Some([0x48, 0x8b, 0x80]) if code.get(14..17) == Some(&[0x48, 0x85, 0xc0]) => {
            // SAFETY: a GOT cell of libpython's (rip-relative, in its mapped data).
            if unsafe { word(first, 0) } != runtime {
                return 0;
            }
            runtime.wrapping_add_signed(second)
        }
        _ => return 0,
    };
    // `tstate_current` is a field near the start of `_PyRuntimeState` (0x240 on 3.11).
    if cell < runtime || cell - runtime >= 0x1000 || cell % 8 != 0 {
        return 0;
    }
    cell
}

/// The calling thread's state (null when it has none).
///
/// # Safety
/// The interpreter is initialized (the wrappers and hooks run only then).
#[inline(always)]
pub unsafe fn thread_state(api: &Api) -> usize {
    if api.tstate_cell != 0 {
        // SAFETY: the cell of `_PyRuntime` that PyThreadState_Get reads (see `tstate_cell`): an
        // aligned word, written by whichever thread takes the GIL; read as its atomic.
        unsafe { (*(api.tstate_cell as *const AtomicUsize)).load(Ordering::Relaxed) }
    } else {
        // SAFETY: per the contract.
        unsafe { (api.thread_state_get)() as usize }
    }
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
    let api = api.as_ref().ok_or(err)?;
    HOT.store(api as *const Api as *mut Api, Ordering::Release);
    Ok(api)
}

/// `get` for the per-call wrappers, which are installed only after `init` succeeded.
#[inline(always)]
pub fn hot() -> Option<&'static Api> {
    // SAFETY: HOT is null or points into API, which is set once and never dropped.
    unsafe { HOT.load(Ordering::Acquire).as_ref() }
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
    }
}
