"""ctypes' conversion protocols, each with known counts and bytes: a cif whose shape changes from
call to call at one site, a custom from_param, an object passed through _as_parameter_, pointers
made by pointer() and cast(), c_char_p / c_void_p instances, paramflags with a default, errcheck raising after the C call, and conversions that fail before it.

Usage: py_protocols.py FIXTURE_LIB   (prints the line of the paramflags call)
"""
import ctypes
import sys

lib = ctypes.CDLL(sys.argv[1])

# No argtypes: each call's cif follows the arguments given — 10 calls, 5 x 8 + 5 x 16 bytes.
shape = lib.fx_add_i64
shape.restype = ctypes.c_int64
for i in range(10):
    v = ctypes.c_int32(i) if i % 2 == 0 else ctypes.c_int64(i)
    shape(v, v)


class Doubled:
    """A user type converting the Python value itself."""

    @classmethod
    def from_param(cls, value):
        return ctypes.c_double(2.0 * value)


lib.fx_scale.argtypes = [Doubled]
lib.fx_scale.restype = ctypes.c_double
for i in range(6):
    assert lib.fx_scale(i) == 4.0 * i  # 6 calls, 6 x 8 argument and return bytes


class Samples:
    """A Python object that hands ctypes a typed pointer into an array of its own."""

    def __init__(self, n):
        self.values = (ctypes.c_double * n)(*range(n))
        self._as_parameter_ = ctypes.cast(self.values, ctypes.POINTER(ctypes.c_double))


lib.fx_sum.argtypes = [ctypes.POINTER(ctypes.c_double), ctypes.c_size_t]
lib.fx_sum.restype = ctypes.c_double
samples = Samples(10)
for i in range(4):
    lib.fx_sum(samples, 10)  # 4 calls, 4 x 80 buffer bytes



class Point(ctypes.Structure):
    _fields_ = [("x", ctypes.c_double), ("y", ctypes.c_double), ("id", ctypes.c_int32)]


lib.fx_point_norm2_ptr.argtypes = [ctypes.POINTER(Point)]
lib.fx_point_norm2_ptr.restype = ctypes.c_double
one = ctypes.pointer(Point(3.0, 4.0, 1))
for i in range(5):
    lib.fx_point_norm2_ptr(one)  # pointer(x) points at x: 5 x 24 buffer bytes
three = ctypes.cast((Point * 3)(), ctypes.POINTER(Point))
for i in range(2):
    lib.fx_point_norm2_ptr(three)  # into the array it was cast from: 2 x 72

# Address-valued simple instances: a c_char_p points at the bytes it keeps, a c_void_p at memory
# nobody knows, and an instance given for POINTER(its type) goes by reference (its own 8 bytes).
lib.fx_strlen.argtypes = [ctypes.c_char_p]
lib.fx_strlen.restype = ctypes.c_size_t
for i in range(2):
    lib.fx_strlen(ctypes.c_char_p(b"hello"))  # 2 x 5
lib.fx_fill.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_double]
lib.fx_fill.restype = None
handle = ctypes.c_void_p(4096)
for i in range(3):
    lib.fx_fill(handle, 0, 0.0)  # fills nothing: 3 x 0
lib.fx_sort_ints.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t, ctypes.c_void_p]
lib.fx_sort_ints.restype = None
for i in range(2):
    lib.fx_sort_ints(handle, 0, None)  # sorts nothing, by reference: 2 x 8

# paramflags: b defaults to 5, so one Python argument makes a two-argument C call.
prototype = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_int)
add = prototype(("fx_add_int", lib), ((1, "a"), (1, "b", 5)))
for i in range(4):
    assert add(i) == i + 5; line = sys._getframe().f_lineno  # 4 calls, 4 x 8 bytes


def refuse(result, func, args):
    raise ValueError("errcheck")


noop = prototype(("fx_noop", lib))  # a fresh function object: errcheck is its own
noop.argtypes, noop.restype, noop.errcheck = [], None, refuse
for i in range(3):
    try:
        noop()  # the C call happens, then errcheck raises: 3 calls
    except ValueError:
        pass

for bad in (1, 2.5):
    try:
        lib.fx_strlen(bad)  # refused while converting: no C call
    except ctypes.ArgumentError:
        pass
lib.fx_strlen(b"abc")  # 1 call, 3 buffer bytes
print(line)
