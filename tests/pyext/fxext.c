/* A hand-written C extension module over the fixture library: one function per calling
 * convention (METH_VARARGS, METH_O, METH_FASTCALL), one taking a buffer (the buffer protocol)
 * and one calling back into Python (a builtin's call inside its own). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include "fxtarget.h"

static PyObject *add_int(PyObject *self, PyObject *args) {
    int a, b;
    if (!PyArg_ParseTuple(args, "ii", &a, &b)) return NULL;
    return PyLong_FromLong(fx_add_int(a, b));
}

static PyObject *spin_ns(PyObject *self, PyObject *arg) {
    unsigned long long ns = PyLong_AsUnsignedLongLong(arg);
    if (PyErr_Occurred()) return NULL;
    fx_spin_ns(ns);
    Py_RETURN_NONE;
}

static PyObject *add3(PyObject *self, PyObject *const *args, Py_ssize_t n) {
    if (n != 3) {
        PyErr_SetString(PyExc_TypeError, "add3 takes 3 arguments");
        return NULL;
    }
    int a = (int)PyLong_AsLong(args[0]), b = (int)PyLong_AsLong(args[1]), c = (int)PyLong_AsLong(args[2]);
    if (PyErr_Occurred()) return NULL;
    return PyLong_FromLong(fx_add3(a, b, c));
}

static PyObject *sum_buffer(PyObject *self, PyObject *arg) {
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0) return NULL;
    double s = fx_sum((const double *)view.buf, (size_t)view.len / sizeof(double));
    PyBuffer_Release(&view);
    return PyFloat_FromDouble(s);
}

/* add_then_call(f, n): fx_add_int(n, 1), then f(n - 1) while n > 0; the sum of the results.
 * METH_FASTCALL: it has a vectorcall, so its repeats take the bracket's lean path. */
static PyObject *add_then_call(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "add_then_call takes 2 arguments");
        return NULL;
    }
    PyObject *f = args[0];
    int n = (int)PyLong_AsLong(args[1]);
    if (PyErr_Occurred()) return NULL;
    long sum = fx_add_int(n, 1);
    if (n > 0) {
        PyObject *r = PyObject_CallFunction(f, "i", n - 1);
        if (r == NULL) return NULL;
        sum += PyLong_AsLong(r);
        Py_DECREF(r);
        if (PyErr_Occurred()) return NULL;
    }
    return PyLong_FromLong(sum);
}

static PyMethodDef methods[] = {
    {"add_int", add_int, METH_VARARGS, "a + b"},
    {"spin_ns", spin_ns, METH_O, "spin for ns nanoseconds"},
    {"add3", (PyCFunction)(void (*)(void))add3, METH_FASTCALL, "a + b + c"},
    {"sum_buffer", sum_buffer, METH_O, "sum of a buffer of doubles"},
    {"add_then_call", (PyCFunction)(void (*)(void))add_then_call, METH_FASTCALL, "fx_add_int(n, 1) + f(n - 1) while n > 0"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "fxext", NULL, -1, methods};

PyMODINIT_FUNC PyInit_fxext(void) { return PyModule_Create(&module); }
