// A pybind11 module over the fixture library: plain functions, a list converted to
// std::vector<double> on every call (the copy per call), and a C++ exception that crosses into
// Python (pybind11 translates std::invalid_argument to ValueError); a class with a method and a
// static method (pybind11 stores them as instancemethod / staticmethod of a function).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>
#include <vector>

extern "C" {
#include "fxtarget.h"
}

namespace py = pybind11;

struct Counter {
    int total = 0;
};

PYBIND11_MODULE(fxpb, m) {
    m.def("add_int", [](int a, int b) { return fx_add_int(a, b); });
    m.def("spin_ns", [](uint64_t ns) { fx_spin_ns(ns); });
    m.def("add3", [](int a, int b, int c) { return fx_add3(a, b, c); });
    m.def("sum_list", [](const std::vector<double> &xs) { return fx_sum(xs.data(), xs.size()); });
    m.def("checked_add", [](int a, int b) {
        if (a < 0) throw std::invalid_argument("negative operand: " + std::to_string(a));
        return fx_add_int(a, b);
    });
    py::class_<Counter>(m, "Counter")
        .def(py::init<>())
        .def("add", [](Counter &c, int x) { return c.total = fx_add_int(c.total, x); })
        .def_static("twice", [](int x) { return fx_add_int(x, x); });
}
