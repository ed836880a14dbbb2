/* The fixture library's functions the extension-module fixtures call (tests/fixture/). */
#include <stddef.h>
#include <stdint.h>
int fx_add_int(int a, int b);
void fx_spin_ns(uint64_t ns);
int fx_add3(int a, int b, int c);
double fx_sum(const double *xs, size_t n);
