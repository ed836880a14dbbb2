//! What a call's arguments refer to: the bytes behind each pointer argument, and whether an
//! argument was just built (construction). Runs in the `tp_call` wrappers on every call, with the
//! GIL held, before the call releases it.
//!
//! ctypes objects are read in place where their layout is known: a ctypes instance's size is
//! `CDataObject.b_size`, what `byref(x)` holds is `PyCArgObject.obj`, what a pointer keeps alive is
//! `CDataObject.b_objects`. Each raw read is checked once per process against the Python-level
//! attribute it mirrors (`ctypes.sizeof` via the buffer, `_obj`, `_objects`); a mismatch turns that
//! fast path off for good and the attribute is used instead.

use std::ffi::CStr;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use super::api::{self, Api, PyObject};
use super::call::ThreadState;

/// Construction seen among a call's arguments.
#[derive(Default)]
pub(super) struct Construction {
    pub ticks: u64,
    pub bytes: u64,
    /// The last object built for this call (0: none was).
    pub last: usize,
    /// How they were built: `record::call_ctx::BUILT_*` bits.
    pub how: u8,
}

/// `CDataObject.b_objects` (the objects a ctypes instance keeps alive): unchanged from 3.8 to 3.14.
/// (`PyCArgObject.obj`, what `byref(x)` refers to, moved in 3.14: `Layout::carg_obj`.)
const CDATA_B_OBJECTS: usize = 64;

/// A raw read not yet checked (0), checked and right (1), or found wrong (2).
struct Checked(AtomicU8);

impl Checked {
    const fn new() -> Self {
        Checked(AtomicU8::new(0))
    }

    /// Whether the raw value may be used; the first time, `check` decides for good.
    #[inline(always)]
    fn usable(&self, check: impl FnOnce() -> bool) -> bool {
        match self.0.load(Ordering::Relaxed) {
            1 => true,
            2 => false,
            _ => {
                let ok = check();
                self.0.store(if ok { 1 } else { 2 }, Ordering::Relaxed);
                ok
            }
        }
    }
}

static B_SIZE_OK: Checked = Checked::new();
static CARG_OBJ_OK: Checked = Checked::new();
static B_OBJECTS_OK: Checked = Checked::new();

/// Type of `byref()` results, found at first sight by name.
static CARG_TYPE: AtomicUsize = AtomicUsize::new(0);
/// ctypes' metaclasses seen so far: their instances are `CDataObject`s.
static CDATA_METAS: [AtomicUsize; 8] = [const { AtomicUsize::new(0) }; 8];
/// `PyCPointerType` and `PyCSimpleType` among them.
static POINTER_META: AtomicUsize = AtomicUsize::new(0);
static SIMPLE_META: AtomicUsize = AtomicUsize::new(0);
/// Other metaclasses seen (mostly `type`), so that each name is read once.
static OTHER_METAS: [AtomicUsize; 8] = [const { AtomicUsize::new(0) }; 8];

/// ctypes' metaclasses, by `tp_name` (the same from 3.8 to 3.14).
const CTYPES_METAS: [&[u8]; 6] = [
    b"_ctypes.PyCArrayType",
    b"_ctypes.PyCStructType",
    b"_ctypes.UnionType",
    b"_ctypes.PyCSimpleType",
    b"_ctypes.PyCPointerType",
    b"_ctypes.PyCFuncPtrType",
];

fn remember(slots: &[AtomicUsize], value: usize) {
    if let Some(slot) = slots.iter().find(|s| s.load(Ordering::Relaxed) == 0) {
        slot.store(value, Ordering::Relaxed);
    }
}

/// What kind of object an argument is, as far as its bytes go.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Not a ctypes instance.
    Other,
    /// An instance of a simple type (`c_int`, `c_char_p`, ...).
    Simple,
    /// An instance of a `POINTER(T)` type.
    Pointer,
    /// Any other ctypes instance (arrays, structures, unions, function pointers).
    CData,
}

/// The kind of the instances of a type whose metaclass is `meta`.
///
/// # Safety
/// `meta` a live type object.
#[inline(always)]
unsafe fn kind_of_meta(meta: usize) -> Kind {
    if CDATA_METAS
        .iter()
        .any(|m| m.load(Ordering::Relaxed) == meta)
    {
        return if meta == POINTER_META.load(Ordering::Relaxed) {
            Kind::Pointer
        } else if meta == SIMPLE_META.load(Ordering::Relaxed) {
            Kind::Simple
        } else {
            Kind::CData
        };
    }
    if OTHER_METAS
        .iter()
        .any(|m| m.load(Ordering::Relaxed) == meta)
    {
        return Kind::Other;
    }
    // SAFETY: per the contract.
    let found = CTYPES_METAS
        .iter()
        .find(|n| unsafe { api::type_name_ends_with(meta, n) });
    let Some(name) = found else {
        remember(&OTHER_METAS, meta);
        return Kind::Other;
    };
    remember(&CDATA_METAS, meta);
    if *name == b"_ctypes.PyCPointerType" {
        POINTER_META.store(meta, Ordering::Relaxed);
        Kind::Pointer
    } else if *name == b"_ctypes.PyCSimpleType" {
        SIMPLE_META.store(meta, Ordering::Relaxed);
        Kind::Simple
    } else {
        Kind::CData
    }
}

/// The kind of `obj`, by its type's metaclass.
///
/// # Safety
/// `obj` a live object.
#[inline(always)]
unsafe fn kind_of(obj: usize) -> Kind {
    // SAFETY: an object's type and the type's type are live type objects.
    unsafe { kind_of_meta(api::type_of(api::type_of(obj))) }
}

/// What ctypes makes of an argument when no `argtypes` says: a ctypes instance passes as itself,
/// `byref(x)` as the address of x (the object it refers to), anything else by its Python type.
pub(super) enum Passed {
    /// An instance of a ctypes type (the object).
    CData(usize),
    /// A `byref()` result, and the object it refers to (0: unknown).
    Byref(usize),
    Other,
}

/// [`Passed`] of `obj`, by the same reads the byte count makes. Cold: the argument evidence's.
///
/// # Safety
/// GIL held; `obj` a live object.
pub(super) unsafe fn passed_as(api: &Api, obj: usize) -> Passed {
    // SAFETY: per the contract; the `_obj` reference is released.
    unsafe {
        let ty = api::type_of(obj);
        let carg = CARG_TYPE.load(Ordering::Relaxed);
        if ty == carg || (carg == 0 && api::type_name_ends_with(ty, b"CArgObject")) {
            CARG_TYPE.store(ty, Ordering::Relaxed);
            let at = api.layout.carg_obj;
            let inner = if CARG_OBJ_OK.usable(|| raw_matches(api, obj, at, c"_obj")) {
                api::word(obj, at)
            } else {
                let inner = attr(api, obj, c"_obj");
                if !inner.is_null() {
                    (api.decref)(inner);
                }
                inner as usize
            };
            return Passed::Byref(inner);
        }
        if kind_of(obj) != Kind::Other {
            Passed::CData(obj)
        } else {
            Passed::Other
        }
    }
}

/// The length of `obj`'s buffer (None when it has none). GIL held.
///
/// # Safety
/// GIL held; `obj` a live object.
unsafe fn buffer_len(api: &Api, obj: usize) -> Option<u64> {
    // SAFETY: per the contract; the buffer is released, a failure's exception cleared.
    unsafe {
        let mut view: api::PyBuffer = std::mem::zeroed();
        if (api.get_buffer)(obj as *mut _, &mut view, 0) != 0 {
            (api.err_clear)();
            return None;
        }
        let len = view.len.max(0) as u64;
        (api.release_buffer)(&mut view);
        Some(len)
    }
}

/// The bytes of `obj`'s memory: `b_size` for a ctypes instance, else its buffer. GIL held.
///
/// # Safety
/// GIL held; `obj` a live object of kind `kind`.
unsafe fn object_bytes(api: &Api, obj: usize, kind: Kind) -> Option<u64> {
    // SAFETY: per the contract; b_size is read only from CDataObjects.
    unsafe {
        if kind != Kind::Other
            && B_SIZE_OK
                .usable(|| buffer_len(api, obj) == Some(api::word(obj, api::CDATA_B_SIZE) as u64))
        {
            return Some((api::word(obj, api::CDATA_B_SIZE) as isize).max(0) as u64);
        }
        buffer_len(api, obj)
    }
}

/// What a ctypes instance keeps alive (`b_objects`, as `_objects` shows it), and whether the
/// reference is owned (the attribute) or borrowed (the raw field). Null when there is nothing.
///
/// # Safety
/// GIL held; `obj` a live ctypes instance.
unsafe fn kept_objects(api: &Api, obj: usize) -> (*mut PyObject, bool) {
    // SAFETY: per the contract.
    unsafe {
        if B_OBJECTS_OK.usable(|| raw_matches(api, obj, CDATA_B_OBJECTS, c"_objects")) {
            (api::word(obj, CDATA_B_OBJECTS) as *mut PyObject, false)
        } else {
            (attr(api, obj, c"_objects"), true)
        }
    }
}

/// The bytes of the numpy array `obj` keeps as `_arr` (numpy's `a.ctypes` and `data_as` hand
/// ctypes a bare address and keep the array beside it), or 0.
///
/// # Safety
/// GIL held; `obj` a live object.
unsafe fn numpy_array_bytes(api: &Api, obj: usize) -> u64 {
    // SAFETY: per the contract; the reference is released.
    unsafe {
        let arr = attr(api, obj, c"_arr");
        if arr.is_null() {
            return 0;
        }
        let bytes = object_bytes(api, arr as usize, Kind::Other).unwrap_or(0);
        (api.decref)(arr);
        bytes
    }
}

/// `getattr(obj, name)` as an owned reference, or null (exception cleared).
///
/// # Safety
/// GIL held; `obj` a live object.
unsafe fn attr(api: &Api, obj: usize, name: &CStr) -> *mut PyObject {
    // SAFETY: per the contract.
    unsafe {
        let v = (api.getattr)(obj as *mut _, name.as_ptr());
        if v.is_null() {
            (api.err_clear)();
        }
        v
    }
}

/// Whether the raw word at `offset` of `obj` is the object `getattr(obj, name)` returns (a null
/// word standing for None).
///
/// # Safety
/// GIL held; `obj` a live object with a word at `offset`.
unsafe fn raw_matches(api: &Api, obj: usize, offset: usize, name: &CStr) -> bool {
    // SAFETY: per the contract; the attribute's reference is released.
    unsafe {
        let v = attr(api, obj, name);
        if v.is_null() {
            return false;
        }
        let raw = api::word(obj, offset);
        let same = raw == v as usize || (raw == 0 && v as usize == api.none);
        (api.decref)(v);
        same
    }
}

/// `_cffi_backend.sizeof`, looked up once (0: not yet; 1: not available).
static CFFI_SIZEOF: AtomicUsize = AtomicUsize::new(0);
/// A cdata type seen before (cffi's cdata types are few; their names say what they are).
static CFFI_CDATA_TYPES: [AtomicUsize; 8] = [const { AtomicUsize::new(0) }; 8];

/// Bytes a cffi cdata argument refers to: `ffi.sizeof(cdata)` — the whole array of
/// `ffi.new("double[]", n)`, the pointed-to object of an owning `ffi.new("T *")`. GIL held.
///
/// # Safety
/// GIL held; `obj` a live object of type `ty`.
pub(super) unsafe fn cffi_cdata_bytes(api: &Api, obj: usize, ty: usize) -> u64 {
    let known = CFFI_CDATA_TYPES
        .iter()
        .any(|t| t.load(Ordering::Relaxed) == ty);
    if !known {
        // SAFETY: ty is a live type object; tp_name is its NUL-terminated name (read in place:
        // other argument types pass here on every call and must not allocate).
        let name = unsafe {
            std::ffi::CStr::from_ptr(api::word(ty, api::TP_NAME) as *const std::ffi::c_char)
        }
        .to_bytes();
        if !(name.starts_with(b"_cffi_backend.") && name.windows(5).any(|w| w == b"CData")) {
            return 0;
        }
        if let Some(slot) = CFFI_CDATA_TYPES
            .iter()
            .find(|t| t.load(Ordering::Relaxed) == 0)
        {
            slot.store(ty, Ordering::Relaxed);
        }
    }
    let mut sizeof = CFFI_SIZEOF.load(Ordering::Relaxed);
    if sizeof == 0 {
        // SAFETY: GIL held; the module is already imported (the cdata came from it); the
        // attribute reference is kept for the process's life.
        sizeof = unsafe {
            let m = (api.import_module)(c"_cffi_backend".as_ptr());
            let f = if m.is_null() {
                std::ptr::null_mut()
            } else {
                (api.getattr)(m, c"sizeof".as_ptr())
            };
            if !m.is_null() {
                (api.decref)(m);
            }
            if f.is_null() {
                (api.err_clear)();
                1
            } else {
                f as usize
            }
        };
        CFFI_SIZEOF.store(sizeof, Ordering::Relaxed);
    }
    if sizeof == 1 {
        return 0;
    }
    // SAFETY: GIL held; a call of cffi's sizeof on a cdata, result released, errors cleared.
    unsafe {
        let r = (api.call_one)(
            sizeof as *mut PyObject,
            obj as *mut PyObject,
            std::ptr::null_mut::<PyObject>(),
        );
        if r.is_null() {
            (api.err_clear)();
            return 0;
        }
        let n = (api.long_as_ssize)(r);
        (api.decref)(r);
        if n < 0 {
            (api.err_clear)();
            0
        } else {
            n as u64
        }
    }
}

/// Where an argument is going: the function object called and the argument's position.
#[derive(Clone, Copy)]
pub(super) struct Slot {
    pub callable: usize,
    pub index: usize,
}

/// Bytes an argument object refers to (0 for plain numbers). GIL held.
///
/// # Safety
/// GIL held; `obj` a live object; `slot.callable` a live object.
unsafe fn referred_bytes(
    api: &Api,
    st: &ThreadState,
    slot: Slot,
    obj: usize,
    construction: &mut Construction,
) -> u64 {
    // SAFETY: per the contract.
    unsafe { referred_bytes_of(api, st, slot, obj, construction, true) }
}

/// `referred_bytes`; `follow`: an object that is no buffer may name one as `_as_parameter_`
/// (followed once, as ctypes does).
///
/// # Safety
/// GIL held; `obj` a live object.
unsafe fn referred_bytes_of(
    api: &Api,
    st: &ThreadState,
    slot: Slot,
    obj: usize,
    construction: &mut Construction,
    follow: bool,
) -> u64 {
    // SAFETY: per the contract; new references are dropped, errors cleared.
    unsafe {
        let ty = api::type_of(obj);
        if ty == api.float_type || ty == api.long_type || ty == api.bool_type || obj == api.none {
            return 0;
        }
        if ty == api.unicode_type {
            // ctypes passes a str as a NUL-terminated wchar_t buffer.
            return ((api.unicode_length)(obj as *mut _).max(0) as u64 + 1) * 4;
        }
        let carg = CARG_TYPE.load(Ordering::Relaxed);
        let (target, kind) =
            if ty == carg || (carg == 0 && api::type_name_ends_with(ty, b"CArgObject")) {
                CARG_TYPE.store(ty, Ordering::Relaxed);
                // byref(x): the bytes of x (which the CArgObject keeps alive).
                let at = api.layout.carg_obj;
                let inner = if CARG_OBJ_OK.usable(|| raw_matches(api, obj, at, c"_obj")) {
                    api::word(obj, at)
                } else {
                    let inner = attr(api, obj, c"_obj");
                    if !inner.is_null() {
                        (api.decref)(inner);
                    }
                    inner as usize
                };
                if inner == 0 {
                    return 0;
                }
                (inner, kind_of(inner))
            } else {
                (obj, kind_of(obj))
            };
        take_fresh(st, target, construction);
        if target == obj {
            match kind {
                Kind::Simple => {
                    if let Some(code) = address_code(api, obj) {
                        if declared_as_pointer_type(api, slot) {
                            // ctypes passes an instance given for POINTER(type(obj)) by
                            // reference: its own bytes.
                            return object_bytes(api, obj, kind).unwrap_or(0);
                        }
                        return simple_pointee_bytes(api, obj, code);
                    }
                }
                Kind::Pointer => return pointee_bytes(api, obj),
                Kind::CData | Kind::Other => {}
            }
        }
        if let Some(bytes) = object_bytes(api, target, kind) {
            return bytes;
        }
        if !follow {
            return 0;
        }
        let param = attr(api, target, c"_as_parameter_");
        if param.is_null() {
            return 0;
        }
        let bytes = referred_bytes_of(api, st, slot, param as usize, construction, false);
        (api.decref)(param);
        if bytes != 0 {
            return bytes;
        }
        // numpy's `a.ctypes` hands over a bare address.
        numpy_array_bytes(api, target)
    }
}

/// Simple types whose value is an address (`c_char_p` 'z', `c_wchar_p` 'Z', `c_void_p` 'P'), and
/// the other simple types ('-'), by type: their `_type_` code, read once per type.
static SIMPLE_CODES: [(AtomicUsize, AtomicU8); 16] =
    [const { (AtomicUsize::new(0), AtomicU8::new(0)) }; 16];

/// The `_type_` code of a simple ctypes instance's type if its value is an address (`c_char_p`,
/// `c_wchar_p`, `c_void_p` and their subclasses).
///
/// # Safety
/// GIL held; `obj` a live instance of a simple ctypes type.
unsafe fn address_code(api: &Api, obj: usize) -> Option<u8> {
    // SAFETY: per the contract; the `_type_` reference is released.
    unsafe {
        let ty = api::type_of(obj);
        let code = match SIMPLE_CODES
            .iter()
            .find(|(t, _)| t.load(Ordering::Relaxed) == ty)
        {
            Some((_, c)) => c.load(Ordering::Relaxed),
            None => {
                let t = attr(api, ty, c"_type_");
                let mut code = b'-';
                if !t.is_null() {
                    if api::type_of(t as usize) == api.unicode_type {
                        let p = (api.unicode_as_utf8)(t);
                        if p.is_null() {
                            (api.err_clear)();
                        } else if let Some(&c) = CStr::from_ptr(p).to_bytes().first() {
                            code = c;
                        }
                    }
                    (api.decref)(t);
                }
                if let Some((t, c)) = SIMPLE_CODES
                    .iter()
                    .find(|(t, _)| t.load(Ordering::Relaxed) == 0)
                {
                    c.store(code, Ordering::Relaxed);
                    t.store(ty, Ordering::Relaxed);
                }
                code
            }
        };
        matches!(code, b'z' | b'Z' | b'P').then_some(code)
    }
}

/// Whether the function declares a `POINTER(T)` type for this argument (ctypes then passes an
/// instance of T by reference). Only asked for address-valued simple instances.
///
/// # Safety
/// GIL held; `slot.callable` a live object (0: none).
unsafe fn declared_as_pointer_type(api: &Api, slot: Slot) -> bool {
    if slot.callable == 0 {
        return false;
    }
    // SAFETY: per the contract; references are released and errors cleared.
    unsafe {
        let argtypes = attr(api, slot.callable, c"argtypes");
        if argtypes.is_null() {
            return false;
        }
        // ctypes keeps `argtypes` as given: a tuple or a list.
        let seq = argtypes as usize;
        let items = match api::type_of(seq) {
            t if t == api.tuple_type => seq + api.layout.tuple_items,
            t if t == api.list_type => api::word(seq, api::LIST_ITEMS),
            _ => 0,
        };
        let n = if items == 0 {
            0
        } else {
            api::word(seq, api::OB_SIZE)
        };
        let mut pointer = false;
        if slot.index < n {
            let t = api::word(items, 8 * slot.index);
            pointer = kind_of_meta(api::type_of(t)) == Kind::Pointer;
        }
        (api.decref)(argtypes);
        pointer
    }
}

/// What an address-valued simple instance points at: the bytes a `c_char_p` keeps (as a bytes
/// argument counts), the text of a `c_wchar_p` (as a str argument counts); a `c_void_p` holds a
/// bare address, whose memory is unknown.
///
/// # Safety
/// GIL held; `obj` a live instance of a simple type with `_type_` `code`.
unsafe fn simple_pointee_bytes(api: &Api, obj: usize, code: u8) -> u64 {
    // SAFETY: per the contract; references are released and errors cleared.
    unsafe {
        match code {
            b'z' => {
                let (kept, owned) = kept_objects(api, obj);
                let bytes = if !kept.is_null() && api::type_of(kept as usize) == api.bytes_type {
                    api::word(kept as usize, api::OB_SIZE) as u64
                } else {
                    0
                };
                if owned && !kept.is_null() {
                    (api.decref)(kept);
                }
                bytes
            }
            b'Z' => {
                let value = attr(api, obj, c"value");
                if value.is_null() {
                    return 0;
                }
                let bytes = if api::type_of(value as usize) == api.unicode_type {
                    ((api.unicode_length)(value).max(0) as u64 + 1) * 4
                } else {
                    0
                };
                (api.decref)(value);
                bytes
            }
            _ => 0,
        }
    }
}

/// The bytes a ctypes pointer instance points into, as far as the objects it keeps alive tell:
/// `pointer(x)` keeps x (under key "1"), `cast(a, POINTER(T))` keeps a (under key `id(a)`), and
/// numpy's `data_as` casts a bare address and keeps the array as `_arr`. 0 for a NULL pointer or
/// one made from a bare address.
///
/// # Safety
/// GIL held; `ptr` a live instance of a `POINTER(T)` type.
unsafe fn pointee_bytes(api: &Api, ptr: usize) -> u64 {
    // SAFETY: per the contract; dict items are borrowed references of a dict the pointer keeps
    // alive; new references are dropped and errors cleared.
    unsafe {
        let (kept, owned) = kept_objects(api, ptr);
        let mut bytes = 0u64;
        let mut cast_from_address = false;
        if !kept.is_null() && api::type_of(kept as usize) == api.dict_type {
            let (mut pos, mut key, mut value) =
                (0isize, std::ptr::null_mut(), std::ptr::null_mut());
            while (api.dict_next)(kept, &mut pos, &mut key, &mut value) != 0 {
                let key_ty = api::type_of(key as usize);
                let pointed = if key_ty == api.unicode_type {
                    let k = (api.unicode_as_utf8)(key);
                    if k.is_null() {
                        (api.err_clear)();
                    }
                    !k.is_null() && CStr::from_ptr(k).to_bytes() == b"1"
                } else if key_ty == api.long_type {
                    let id = (api.long_as_ssize)(key);
                    if id == -1 {
                        (api.err_clear)();
                    }
                    id as usize == value as usize
                } else {
                    false
                };
                if !pointed {
                    continue;
                }
                let kind = kind_of(value as usize);
                if key_ty == api.long_type && kind == Kind::Simple {
                    // cast(c_void_p(address), ...): a bare address, not memory we know.
                    cast_from_address = true;
                } else {
                    bytes += object_bytes(api, value as usize, kind).unwrap_or(0);
                }
            }
        }
        if owned && !kept.is_null() {
            (api.decref)(kept);
        }
        if bytes == 0 && cast_from_address {
            bytes = numpy_array_bytes(api, ptr);
        }
        bytes
    }
}

/// If `obj` was just built by a ctypes constructor on this thread: charge it to this call.
fn take_fresh(st: &ThreadState, obj: usize, construction: &mut Construction) {
    if let Some((ticks, bytes, how)) = st.take_construction(obj) {
        construction.ticks += ticks;
        construction.bytes += bytes;
        construction.last = obj;
        construction.how |= how;
    }
}

/// Bytes one argument of a ctypes (`family_ctypes`) or cffi call refers to. GIL held.
///
/// # Safety
/// GIL held; `item` a live object.
#[inline(always)]
pub(super) unsafe fn item_bytes(
    api: &Api,
    st: &ThreadState,
    slot: Slot,
    item: usize,
    family_ctypes: bool,
    construction: &mut Construction,
) -> u64 {
    // SAFETY: per the contract.
    unsafe {
        let ty = api::type_of(item);
        if ty == api.float_type || ty == api.long_type || item == api.none {
            0
        } else if family_ctypes || ty == api.bytes_type || ty == api.bytearray_type {
            referred_bytes(api, st, slot, item, construction)
        } else {
            cffi_cdata_bytes(api, item, ty)
        }
    }
}

/// Bytes all arguments of a ctypes call refer to (the floor probe's share of the wrapper's work).
///
/// # Safety
/// GIL held; `args` the call's argument tuple.
#[cfg(feature = "floor-probe")]
#[inline(always)]
pub(super) unsafe fn argument_bytes(api: &Api, st: &ThreadState, args: *mut PyObject) -> u64 {
    let mut construction = Construction::default();
    // SAFETY: args is the call's tuple: ob_size items from `tuple_items`.
    unsafe {
        let n = api::word(args as usize, api::OB_SIZE).min(crate::record::call_ctx::ARG_SLOTS);
        (0..n)
            .map(|i| {
                let item = api::word(args as usize, api.layout.tuple_items + 8 * i);
                let slot = Slot {
                    callable: 0,
                    index: i,
                };
                item_bytes(api, st, slot, item, true, &mut construction)
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raw_read_is_checked_once_and_the_verdict_kept() {
        let good = Checked::new();
        let mut checks = 0;
        assert!(good.usable(|| {
            checks += 1;
            true
        }));
        assert!(good.usable(|| {
            checks += 1;
            false
        }));
        assert_eq!(checks, 1);
        let bad = Checked::new();
        assert!(!bad.usable(|| false));
        assert!(!bad.usable(|| true), "a read found wrong stays off");
    }
}
