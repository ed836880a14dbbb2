// A pybind11 module over the fixture library: plain functions, a list converted to
// std::vector<double> on every call (the copy per call), and a C++ exception that crosses into
// Python (pybind11 translates std::invalid_argument to ValueError).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <stdexcept>
#include <string>
#include <vector>

extern "C" {
#include "fxtarget.h"
}

namespace py = pybind11;

PYBIND11_MODULE(fxpb, m) {
    m.def("add_int", [](int a, int b) { return fx_add_int(a, b); });
    m.def("spin_ns", [](uint64_t ns) { fx_spin_ns(ns); });
    m.def("add3", [](int a, int b, int c) { return fx_add3(a, b, c); });
    m.def("sum_list", [](const std::vector<double> &xs) { return fx_sum(xs.data(), xs.size()); });
    m.def("checked_add", [](int a, int b) {
        if (a < 0) throw std::invalid_argument("negative operand: " + std::to_string(a));
        return fx_add_int(a, b);
    });
}
