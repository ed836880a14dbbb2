/* The native library of the demo: a scalar function the example calls once per element, the bulk
 * version it could call instead, and a sum over a buffer. */
#include <math.h>
#include <stddef.h>

double vm_norm(double x, double y) { return sqrt(x * x + y * y); }

void vm_norm_many(const double *xs, const double *ys, double *out, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = sqrt(xs[i] * xs[i] + ys[i] * ys[i]);
}

double vm_sum(const double *xs, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += xs[i];
    return s;
}

long vm_checksum(long seed) { return seed * 2654435761L; }
