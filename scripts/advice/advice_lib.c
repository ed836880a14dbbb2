/* Functions the advice-validation workloads need beyond tests/fixture/ffifixture.c: a per-element
 * function with a bulk sibling (the batch pair) and a byte-buffer filler (create_string_buffer pair).
 * Built by scripts/validate-advice with `cc -shared -fPIC -O2`. */
#include <stddef.h>
#include <stdint.h>

/* One element: what a program calls in a Python loop. */
double adv_scale(double x, double k) { return x * k; }

/* The bulk sibling of adv_scale: out[i] = in[i] * k over n elements. */
void adv_scale_many(const double *in, double *out, size_t n, double k) {
    for (size_t i = 0; i < n; i++) out[i] = in[i] * k;
}

/* Fills buf with n pseudo-random bytes from seed; returns the generator's final state. */
uint64_t adv_fill_bytes(unsigned char *buf, size_t n, uint64_t seed) {
    uint64_t s = seed;
    for (size_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ULL + 1442695040888963407ULL;
        buf[i] = (unsigned char)(s >> 56);
    }
    return s;
}

/* Objects made by one function and released by another, with a count of those alive: the leak
 * pairs. adv_obj_new / adv_obj_free are paired by their names' words; adv_lease / adv_return
 * have verbs of their own, which pointer flow pairs (issue 13, item 1). */
#include <stdlib.h>
static long live_objects;
void *adv_obj_new(void) { live_objects++; return malloc(32); }
void adv_obj_free(void *p) { if (p) { live_objects--; free(p); } }
void *adv_lease(void) { live_objects++; return malloc(32); }
void adv_return(void *p) { if (p) { live_objects--; free(p); } }
long adv_live_objects(void) { return live_objects; }
