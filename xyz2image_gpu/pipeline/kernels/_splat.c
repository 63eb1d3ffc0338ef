/*
 * Compiled CPU kernel for Gaussian images: splat each atom's separable Gaussian into the
 * image over the window where it exceeds exp(-cut) of the image's brightest Gaussian (cut
 * 16 for 8-bit images, 25 otherwise), then quantise in place. Beside it, for the same
 * CPU path: quantise() for float images made elsewhere, column() for the column
 * correction's per-atom sums and binary() for the binary ball labels (see each).
 *
 * Why this exists: the NumPy path computes image = Gx^T diag(w) Gy as a dense batched
 * matrix product, E*E*N multiply-adds per image; most of those multiply a tail that is
 * zero to float precision. Splatting over the window does ~(14 sigma)^2 per atom instead
 * (edgesize 128, sigma 2.5 px: about 13x fewer), and fusing normalisation and rounding
 * avoids three more passes over the image. The NumPy path stays the reference and the
 * fallback when this module is not built.
 *
 * Determinism: the work for one image depends only on that image's inputs, atoms are
 * added in input order, and the build disables floating-point contraction, so the bytes
 * do not depend on the batch size or on which thread renders an image.
 *
 * Interface (all buffers C-contiguous, checked by the Python wrapper):
 *   render(coords float32 (B,N,3), weights float32 (B,N), sigma float32 (B,N) in pixels,
 *          out (B,E,E) or (B,E,E,E) of uint8/uint16/float32, B, out itemsize, ndim 2|3,
 *          mode 0=float 1=image 2=fixed, top float, scale float, cut double,
 *          offsets float32 (B,E,2) per-row scan shifts in pixels for 2-D, or empty)
 * Every entry releases the GIL while it works.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The augmentations' draws: the same source as the GPU's random.cu (see philox.h). */
#define XYZ_DEVICE static inline
#include "philox.h"

/* Where the compiler can dispatch at run time, also build the inner loop for AVX2
 * (contraction stays off, so both clones give the same bytes). */
#if defined(__GNUC__) && defined(__x86_64__) && defined(__linux__)
#define VECTOR_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define VECTOR_CLONES
#endif

/* Per-width constants of the profile recurrences, cached because every atom of an image
 * usually shares one width (exp calls were the largest per-atom cost). */
typedef struct {
    double s;        /* the width these were computed for; 0 = none yet */
    double inv;      /* 1 / (2 s^2) */
    double reach;    /* s sqrt(2 cut): the window's half-width */
    double e1, e4, e9, e16, e32; /* exp(-k inv) */
} Width;

static inline void width_set(Width *w, double s, double cut)
{
    if (w->s == s)
        return;
    w->s = s;
    w->inv = 0.5 / (s * s);
    w->reach = s * sqrt(2.0 * cut);
    w->e1 = exp(-w->inv);
    w->e4 = exp(-4.0 * w->inv);
    w->e9 = exp(-9.0 * w->inv);
    w->e16 = exp(-16.0 * w->inv);
    w->e32 = exp(-32.0 * w->inv);
}

/* Fill g[0..n) with a * exp(-(i0 + k - c)^2 / (2 s^2)), in double, with two exp calls:
 * with d = i0 - c and A = exp(-2 d inv), g(j) = g(0) A^j exp(-j^2 inv) for j < 4, and
 * four interleaved chains g(k+4) = g(k) r(k), r(k+4) = r(k) exp(-32 inv), starting from
 * r(j) = A^4 exp(-(8 j + 16) inv). Independent chains keep the loop off the latency of one
 * multiplication chain. Short windows (n <= 4, also every width below ~0.3 px, where A^4
 * could overflow) take exp directly. Measured with the padded rows below, one thread, Au147
 * at edgesize 128 (sigma 2.56 px): 34.1 -> 24.5 us per image, the same bytes as nine exp
 * calls per axis. */
static inline void profile(double *g, int i0, int n, double c, const Width *wd, double a)
{
    double inv = wd->inv;
    double d = (double)i0 - c;
    if (n <= 4) {
        for (int k = 0; k < n; k++) {
            double t = d + k;
            g[k] = a * exp(-t * t * inv);
        }
        return;
    }
    double A = exp(-2.0 * d * inv);
    double A2 = A * A;
    double v[4], r[4];
    v[0] = a * exp(-d * d * inv);
    v[1] = v[0] * A * wd->e1;
    v[2] = v[0] * A2 * wd->e4;
    v[3] = v[0] * A2 * A * wd->e9;
    r[0] = A2 * A2 * wd->e16;
    double e8 = wd->e4 * wd->e4;
    r[1] = r[0] * e8;
    r[2] = r[1] * e8;
    r[3] = r[2] * e8;
    double q = wd->e32;
    int k = 0;
    for (; k + 4 <= n; k += 4) {
        for (int j = 0; j < 4; j++) {
            g[k + j] = v[j];
            v[j] *= r[j];
            r[j] *= q;
        }
    }
    for (int j = 0; k < n; k++, j++)
        g[k] = v[j];
}

/* Profiles below exp(-cut) of the peak are left out: the window reaches sqrt(2 cut) sigma. */
static void window(double c, double reach, int e, int *lo, int *hi)
{
    double a = ceil(c - reach), b = floor(c + reach);
    *lo = a < 0 ? 0 : (a > e ? e : (int)a);
    *hi = b > e - 1 ? e - 1 : (b < -1 ? -1 : (int)b);
}

/* Profiles handed to axpy are padded with zeros to a multiple of LANES, and the image
 * buffer has LANES spare floats at its end, so every row update is whole vectors with no
 * scalar tail; the padding adds exact zeros (a * 0 + x == x for the finite a used here).
 * Measured at edgesize 128, sigma 2.5 px (29-pixel rows): the tail loop cost more than a
 * third of the accumulation. */
#define LANES 8

static inline int padded(int n)
{
    return (n + LANES - 1) & ~(LANES - 1);
}

static inline void axpy(float *restrict row, const float *restrict g, float a, int n)
{
    for (int k = 0; k < n; k += LANES)
        for (int j = 0; j < LANES; j++)
            row[k + j] += a * g[k + j];
}

/* The double profile g[0..n) as float, zero-padded to padded(n). */
static inline int to_float(const double *g, int n, float *gf)
{
    int m = padded(n);
    for (int k = 0; k < n; k++)
        gf[k] = (float)g[k];
    for (int k = n; k < m; k++)
        gf[k] = 0.0f;
    return m;
}

/* 2-D image through a distorted scan: row i sees the atom shifted by offsets[i] = (ox, oy)
 * pixels, so each row gets its own x weight and y profile (3 exp calls per row and atom). */
static inline void splat_scanned(const float *c, float w, const Width *wd, double reach,
                                 int e, const float *offsets, float *img, double *gy,
                                 float *gyf)
{
    for (int i = 0; i < e; i++) {
        double dx = (double)i - c[0] - offsets[2 * i];
        if (dx > reach || dx < -reach)
            continue;
        double cy = (double)c[1] + offsets[2 * i + 1];
        int y0, y1;
        window(cy, reach, e, &y0, &y1);
        if (y1 < y0)
            continue;
        profile(gy, y0, y1 - y0 + 1, cy, wd, 1.0);
        int m = to_float(gy, y1 - y0 + 1, gyf);
        axpy(img + (size_t)i * e + y0, gyf, (float)(w * exp(-dx * dx * wd->inv)), m);
    }
}

/* Cloned for AVX2 as a whole, so that the inner loops inline into the clone and the
 * run-time dispatch happens once per image, not once per row (measured: per-row dispatch of
 * a cloned axpy cost more than the multiply-adds themselves). */
VECTOR_CLONES static void render_one(const float *coords, const float *weights, int n_atoms,
                       const float *sigmas, double cut, int e, int ndim, const float *offsets,
                       float *img, double *gx, double *gy, double *gz, float *gzf)
{
    size_t plane = (size_t)e * e;
    Width wd = {0};
    memset(img, 0, sizeof(float) * ((ndim == 2 ? plane : plane * e) + LANES));
    /* Windows are cut where a Gaussian falls below exp(-cut) of the brightest one in the
     * image (which the image's maximum is at least, when no weight is negative): a weaker
     * Gaussian, such as a probe's wide tail or a light atom under Z^n weighting, gets a
     * smaller window, cut + ln(w / wmax) instead of cut. Every dropped value stays below
     * exp(-cut) wmax, the bound of the brightest one. Measured, 3-Gaussian optics probe at
     * edgesize 128, 147 atoms: 6,400 -> 8,200 images/s. */
    double wmax = 0.0;
    int relative = 1;
    for (int a = 0; a < n_atoms; a++) {
        float w = weights[a];
        if (w < 0.0f)
            relative = 0;
        else if (isfinite(w) && w > wmax)
            wmax = w;
    }
    for (int a = 0; a < n_atoms; a++) {
        float w = weights[a];
        float sigma = sigmas[a];
        if (w == 0.0f || !(sigma > 0.0f) || !isfinite(sigma))
            continue;
        const float *c = coords + 3 * (size_t)a;
        if (!isfinite(c[0]) || !isfinite(c[1]) || !isfinite(c[2]) || !isfinite(w))
            continue; /* never index the image with a NaN-derived window */
        width_set(&wd, sigma, cut);
        double reach = wd.reach;
        if (relative && w < wmax) {
            double cut_a = cut + log((double)w / wmax);
            if (cut_a <= 0.0)
                continue; /* its peak is below exp(-cut) wmax */
            reach = sigma * sqrt(2.0 * cut_a);
        }
        if (offsets) {
            splat_scanned(c, w, &wd, reach, e, offsets, img, gy, gzf);
            continue;
        }
        int x0, x1, y0, y1, z0 = 0, z1 = 0;
        window(c[0], reach, e, &x0, &x1);
        window(c[1], reach, e, &y0, &y1);
        if (x1 < x0 || y1 < y0)
            continue;
        profile(gx, x0, x1 - x0 + 1, c[0], &wd, w);
        profile(gy, y0, y1 - y0 + 1, c[1], &wd, 1.0);
        if (ndim == 2) {
            int m = to_float(gy, y1 - y0 + 1, gzf);
            for (int i = x0; i <= x1; i++)
                axpy(img + (size_t)i * e + y0, gzf, (float)gx[i - x0], m);
        } else {
            window(c[2], reach, e, &z0, &z1);
            if (z1 < z0)
                continue;
            profile(gz, z0, z1 - z0 + 1, c[2], &wd, 1.0);
            int m = to_float(gz, z1 - z0 + 1, gzf);
            for (int i = x0; i <= x1; i++)
                for (int j = y0; j <= y1; j++)
                    axpy(img + (size_t)i * plane + (size_t)j * e + z0, gzf,
                         (float)(gx[i - x0] * gy[j - y0]), m);
        }
    }
}

/* Round half to even like rintf, written so that the loop vectorises: adding and removing
 * 1.5 * 2^23 leaves the nearest integer for 0 <= v < 2^22 (values are clipped first). */
#define RINT_MAGIC 12582912.0f

static inline void store_u8(const float *restrict img, size_t n, uint8_t *restrict out,
                                   float factor, float top)
{
    for (size_t i = 0; i < n; i++) {
        float v = img[i] * factor;
        v = v > 0.0f ? v : 0.0f; /* the maxps/minps pattern: vectorises without fast-math */
        v = v < top ? v : top;
        v = (v + RINT_MAGIC) - RINT_MAGIC;
        out[i] = (uint8_t)v;
    }
}

static inline void store_u16(const float *restrict img, size_t n, uint16_t *restrict out,
                                    float factor, float top)
{
    for (size_t i = 0; i < n; i++) {
        float v = img[i] * factor;
        v = v > 0.0f ? v : 0.0f; /* the maxps/minps pattern: vectorises without fast-math */
        v = v < top ? v : top;
        v = (v + RINT_MAGIC) - RINT_MAGIC;
        out[i] = (uint16_t)v;
    }
}

/* The image's maximum (>= 0), as 32 running lane maxima so that the loop vectorises (a
 * plain float max reduction does not without -ffast-math) into four independent vector
 * chains: with eight lanes, one chain of compare-and-blend latencies bound the loop
 * (measured, edgesize 128: the peak pass took 1.8 us of 24.5 us per image, 2 us less
 * with 32 lanes). */
#define PEAK_LANES 32

static inline float image_peak(const float *restrict img, size_t n)
{
    float lane[PEAK_LANES] = {0.0f};
    size_t i = 0;
    for (; i + PEAK_LANES <= n; i += PEAK_LANES)
        for (int k = 0; k < PEAK_LANES; k++)
            lane[k] = img[i + k] > lane[k] ? img[i + k] : lane[k];
    for (; i < n; i++)
        lane[0] = img[i] > lane[0] ? img[i] : lane[0];
    float peak = 0.0f;
    for (int k = 0; k < PEAK_LANES; k++)
        peak = lane[k] > peak ? lane[k] : peak;
    return peak;
}

VECTOR_CLONES static void store(const float *restrict img, size_t n, void *restrict out,
                                int itemsize, int mode, float top, float scale)
{
    float factor = 1.0f;
    if (mode == 1) {
        float peak = image_peak(img, n);
        factor = peak > 0.0f ? top / peak : 0.0f;
    } else if (mode == 2) {
        factor = scale;
    }
    if (itemsize == 4) {
        memcpy(out, img, n * sizeof(float));
        return;
    }
    if (itemsize == 1)
        store_u8(img, n, (uint8_t *)out, factor, top);
    else
        store_u16(img, n, (uint16_t *)out, factor, top);
}

static PyObject *py_render(PyObject *self, PyObject *args)
{
    Py_buffer coords, weights, sigma, out, offsets;
    int ndim, mode, itemsize, batch;
    float top, scale;
    double cut;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*y*w*iiiiffdy*", &coords, &weights, &sigma, &out, &batch,
                          &itemsize, &ndim, &mode, &top, &scale, &cut, &offsets))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t b = 0;
    Py_ssize_t n = 0;
    Py_ssize_t per = 0;
    int e = 0;
    if (itemsize == 1 || itemsize == 2 || itemsize == 4) {
        /* B = number of images: weights hold B*N floats, coords 3*B*N, out B*E^ndim */
        Py_ssize_t wn = weights.len / (Py_ssize_t)sizeof(float);
        b = (Py_ssize_t)batch;
        n = b ? wn / b : 0;
        per = b ? out.len / itemsize / b : 0;
        e = ndim == 2 ? (int)llround(sqrt((double)per)) : (int)llround(cbrt((double)per));
    }
    if (b < 1 || (ndim != 2 && ndim != 3) ||
        weights.len != b * n * (Py_ssize_t)sizeof(float) ||
        coords.len != b * n * 3 * (Py_ssize_t)sizeof(float) ||
        sigma.len != b * n * (Py_ssize_t)sizeof(float) ||
        (itemsize != 1 && itemsize != 2 && itemsize != 4) ||
        (ndim == 2 ? (Py_ssize_t)e * e : (Py_ssize_t)e * e * e) != per ||
        (offsets.len != 0 &&
         (ndim != 2 || offsets.len != b * e * 2 * (Py_ssize_t)sizeof(float)))) {
        PyErr_SetString(PyExc_ValueError, "_splat.render: inconsistent buffer sizes");
        goto done;
    }
    size_t img_n = (size_t)per;
    float *img = malloc(sizeof(float) * (img_n + LANES));
    double *g = malloc(sizeof(double) * 3 * (size_t)e);
    float *gf = malloc(sizeof(float) * ((size_t)e + LANES));
    if (!img || !g || !gf) {
        free(img);
        free(g);
        free(gf);
        PyErr_NoMemory();
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < b; i++) {
        render_one((const float *)coords.buf + i * n * 3, (const float *)weights.buf + i * n,
                   (int)n, (const float *)sigma.buf + i * n, cut, e, ndim,
                   offsets.len ? (const float *)offsets.buf + i * e * 2 : NULL, img, g, g + e,
                   g + 2 * e, gf);
        store(img, img_n, (char *)out.buf + (size_t)i * img_n * itemsize, itemsize, mode, top,
              scale);
    }
    Py_END_ALLOW_THREADS
    free(img);
    free(g);
    free(gf);
    Py_INCREF(Py_None);
    result = Py_None;
done:
    PyBuffer_Release(&coords);
    PyBuffer_Release(&weights);
    PyBuffer_Release(&sigma);
    PyBuffer_Release(&out);
    PyBuffer_Release(&offsets);
    return result;
}

/* Column correction: each atom's value of the (unnormalised) projected image at its own
 * position, x_i = sum_j sum_g a_jg exp(-d_ij^2 / (2 s2_jg)), d_ij the distance in the
 * image plane (pixels), in double, atoms j in input order. Terms below exp(-cut) of their
 * component's peak are left out (they change x by less than float precision at cut 25).
 * The NumPy path evaluates every pair (N^2 G exponentials, measured 967 images/s for 147
 * atoms at edgesize 128 with the 3-Gaussian probe); here most pairs end at one compare.
 *
 *   column(coords float32 (B,N,3), amps float32 (B,N,G), sig2 float32 (B,N,G) in px^2,
 *          out float32 (B,N), B, G, cut double)
 */
/* One pair's terms, added to acc (every column path adds them in ascending j). */
static inline double column_terms(const float *c, const float *amps, const float *sig2,
                                  int g, double cut, double xi, double yi, int j, double acc)
{
    double dx = c[3 * j] - xi, dy = c[3 * j + 1] - yi;
    double d2 = dx * dx + dy * dy;
    for (int k = 0; k < g; k++) {
        double a = amps[(size_t)j * g + k];
        double t = d2 / (2.0 * sig2[(size_t)j * g + k]);
        if (a != 0.0 && t < cut)
            acc += a * exp(-t);
    }
    return acc;
}

typedef struct { float x; int j; } xkey;  /* an atom's x and index, sorted by x */

static int cmp_x(const void *a, const void *b)
{
    const xkey *ka = a, *kb = b;
    if (ka->x != kb->x)
        return (ka->x > kb->x) - (ka->x < kb->x);
    return (ka->j > kb->j) - (ka->j < kb->j);
}

/* Mark the atoms from sorted position r on, stepping by step (+1 or -1), while they lie
 * within reach along x of xi; widen [lo, hi] to their indices. */
static void mark_within(const xkey *order, int n, int r, int step, double xi, double reach2,
                        unsigned char *mark, int *lo, int *hi)
{
    for (; r >= 0 && r < n; r += step) {
        double dx = (double)order[r].x - xi;
        if (dx * dx > reach2)
            break;
        int j = order[r].j;
        mark[j] = 1;
        *lo = j < *lo ? j : *lo;
        *hi = j > *hi ? j : *hi;
    }
}

/* Pairs further apart along x than the widest component reaches (t >= cut for every
 * component whatever y) cannot add a term. A sweep over the atoms sorted by x marks the
 * others, which are then summed in input order: x is the same, to the bit, as the sum over
 * every pair (which small or unbounded cases, and a failed allocation, still do). The scan
 * of the marks runs over the marked index range only; no shared state. */
static void column_one(const float *c, const float *amps, const float *sig2, int n, int g,
                       double cut, float *x)
{
    double widest = 0.0;
    for (size_t q = 0; q < (size_t)n * g; q++)
        if (amps[q] != 0.0f && sig2[q] > widest)
            widest = sig2[q];
    double reach2 = 2.0 * cut * widest * (1.0 + 1e-9) + 1e-12;  /* dx^2 beyond: no term */
    xkey *order = NULL;
    int *pos = NULL;
    unsigned char *mark = NULL;
    if (n > 32 && isfinite(reach2)) {
        order = malloc(sizeof(xkey) * (size_t)n);
        pos = malloc(sizeof(int) * (size_t)n);
        mark = calloc((size_t)n, 1);
    }
    if (!order || !pos || !mark) {  /* every pair */
        free(order);
        free(pos);
        free(mark);
        for (int i = 0; i < n; i++) {
            double acc = 0.0, xi = c[3 * i], yi = c[3 * i + 1];
            for (int j = 0; j < n; j++)
                acc = column_terms(c, amps, sig2, g, cut, xi, yi, j, acc);
            x[i] = (float)acc;
        }
        return;
    }
    for (int j = 0; j < n; j++) {
        order[j].x = c[3 * j];
        order[j].j = j;
    }
    qsort(order, (size_t)n, sizeof(xkey), cmp_x);
    for (int r = 0; r < n; r++)
        pos[order[r].j] = r;
    for (int i = 0; i < n; i++) {
        double xi = c[3 * i], yi = c[3 * i + 1];
        int lo = i, hi = i;
        mark_within(order, n, pos[i], -1, xi, reach2, mark, &lo, &hi);
        mark_within(order, n, pos[i] + 1, 1, xi, reach2, mark, &lo, &hi);
        double acc = 0.0;
        for (int j = lo; j <= hi; j++) {
            if (mark[j]) {
                acc = column_terms(c, amps, sig2, g, cut, xi, yi, j, acc);
                mark[j] = 0;
            }
        }
        x[i] = (float)acc;
    }
    free(order);
    free(pos);
    free(mark);
}

static PyObject *py_column(PyObject *self, PyObject *args)
{
    Py_buffer coords, amps, sig2, out;
    int batch, g;
    double cut;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*y*w*iid", &coords, &amps, &sig2, &out, &batch, &g, &cut))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t b = batch, n = 0;
    if (b >= 1 && g >= 1)
        n = out.len / (Py_ssize_t)sizeof(float) / b;
    if (b < 1 || g < 1 || out.len != b * n * (Py_ssize_t)sizeof(float) ||
        coords.len != b * n * 3 * (Py_ssize_t)sizeof(float) ||
        amps.len != b * n * g * (Py_ssize_t)sizeof(float) || sig2.len != amps.len) {
        PyErr_SetString(PyExc_ValueError, "_splat.column: inconsistent buffer sizes");
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < b; i++)
        column_one((const float *)coords.buf + i * n * 3, (const float *)amps.buf + i * n * g,
                   (const float *)sig2.buf + i * n * g, (int)n, g, cut,
                   (float *)out.buf + i * n);
    Py_END_ALLOW_THREADS
    Py_INCREF(Py_None);
    result = Py_None;
done:
    PyBuffer_Release(&coords);
    PyBuffer_Release(&amps);
    PyBuffer_Release(&sig2);
    PyBuffer_Release(&out);
    return result;
}

/* Quantise float images that were rendered (and perhaps augmented) elsewhere, as render()
 * does its own: quantise(images float32 (B,P), out (B,P) uint8/uint16, B, out itemsize,
 * mode 1=image 2=fixed, top float, scale float). */
static PyObject *py_quantise(PyObject *self, PyObject *args)
{
    Py_buffer images, out;
    int batch, itemsize, mode;
    float top, scale;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*w*iiiff", &images, &out, &batch, &itemsize, &mode, &top,
                          &scale))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t b = batch;
    Py_ssize_t per = b >= 1 ? images.len / (Py_ssize_t)sizeof(float) / b : 0;
    if (b < 1 || (itemsize != 1 && itemsize != 2) || (mode != 1 && mode != 2) ||
        images.len != b * per * (Py_ssize_t)sizeof(float) || out.len != b * per * itemsize) {
        PyErr_SetString(PyExc_ValueError, "_splat.quantise: inconsistent buffer sizes");
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < b; i++)
        store((const float *)images.buf + i * per, (size_t)per,
              (char *)out.buf + (size_t)i * per * itemsize, itemsize, mode, top, scale);
    Py_END_ALLOW_THREADS
    Py_INCREF(Py_None);
    result = Py_None;
done:
    PyBuffer_Release(&images);
    PyBuffer_Release(&out);
    return result;
}

/* Binary labels: the union of balls |v - c|^2 <= r2 on the voxel grid (2-D: pixels), the
 * same float32 arithmetic as the NumPy path (renderers._splat_spheres: d = v - c, then
 * (dx^2 + dy^2) + dz^2 <= r2, no contraction), so the same bytes. Each atom tests the box
 * floor(c) +- (ceil(sqrt(r2)) + 1), rows that miss the ball skipped. The NumPy path builds
 * every atom's box of offsets in memory (measured, 147 atoms at 80^3: 188 images/s).
 *
 *   binary(coords float32 (B,N,ndim), r2 float32 (B,N) (negative: draws nothing),
 *          valid uint8 (B,N), out bool (B,E^ndim), B, ndim)
 */
static void binary_one(const float *c, const float *r2, const unsigned char *valid, int n,
                       int e, int ndim, unsigned char *out)
{
    size_t plane = (size_t)e * e;
    memset(out, 0, ndim == 2 ? plane : plane * e);
    for (int a = 0; a < n; a++) {
        float rr = r2[a];
        const float *p = c + (size_t)ndim * a;
        if (!valid[a] || !(rr >= 0.0f) || !isfinite(rr) || !isfinite(p[0]) ||
            !isfinite(p[1]) || (ndim == 3 && !isfinite(p[2])))
            continue;
        double reach = ceil(sqrt((double)rr)) + 1.0; /* double: no int overflow */
        int lo[3], hi[3];
        for (int k = 0; k < ndim; k++) {
            double f = floor((double)p[k]);
            double l = f - reach, h = f + reach;
            lo[k] = l < 0 ? 0 : (l > e - 1 ? e : (int)l);
            hi[k] = h > e - 1 ? e - 1 : (h < 0 ? -1 : (int)h);
        }
        for (int i = lo[0]; i <= hi[0]; i++) {
            float dx = (float)i - p[0];
            float dx2 = dx * dx;
            for (int j = lo[1]; j <= hi[1]; j++) {
                float dy = (float)j - p[1];
                float dxy = dx2 + dy * dy;
                if (ndim == 2) {
                    if (dxy <= rr)
                        out[(size_t)i * e + j] = 1;
                    continue;
                }
                if (dxy > rr)
                    continue; /* adding dz^2 >= 0 cannot bring it back */
                unsigned char *row = out + (size_t)i * plane + (size_t)j * e;
                for (int k = lo[2]; k <= hi[2]; k++) {
                    float dz = (float)k - p[2];
                    if (dxy + dz * dz <= rr)
                        row[k] = 1;
                }
            }
        }
    }
}

static PyObject *py_binary(PyObject *self, PyObject *args)
{
    Py_buffer coords, r2, valid, out;
    int batch, ndim;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*y*w*ii", &coords, &r2, &valid, &out, &batch, &ndim))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t b = batch, n = 0, per = 0;
    int e = 0;
    if (b >= 1 && (ndim == 2 || ndim == 3)) {
        n = r2.len / (Py_ssize_t)sizeof(float) / b;
        per = out.len / b;
        e = ndim == 2 ? (int)llround(sqrt((double)per)) : (int)llround(cbrt((double)per));
    }
    if (b < 1 || (ndim != 2 && ndim != 3) || r2.len != b * n * (Py_ssize_t)sizeof(float) ||
        coords.len != b * n * ndim * (Py_ssize_t)sizeof(float) || valid.len != b * n ||
        out.len != b * per || (ndim == 2 ? (Py_ssize_t)e * e : (Py_ssize_t)e * e * e) != per) {
        PyErr_SetString(PyExc_ValueError, "_splat.binary: inconsistent buffer sizes");
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < b; i++)
        binary_one((const float *)coords.buf + i * n * ndim, (const float *)r2.buf + i * n,
                   (const unsigned char *)valid.buf + i * n, (int)n, e, ndim,
                   (unsigned char *)out.buf + (size_t)i * per);
    Py_END_ALLOW_THREADS
    Py_INCREF(Py_None);
    result = Py_None;
done:
    PyBuffer_Release(&coords);
    PyBuffer_Release(&r2);
    PyBuffer_Release(&valid);
    PyBuffer_Release(&out);
    return result;
}

/* The augmentations' draws, philox.h's functions image by image (the GPU's random.cu calls
 * the same ones): noise(), phonon() and scan(). Every image's streams come from the key of
 * its frame, keys[frame[i]], and its rotation index rotation[i].
 *
 *   noise(images float32 (B,P), out float32 (B,P) (may be images), frame int64 (B),
 *         rotation int64 (B), keys uint64 (F), electrons float64 (B) or empty (no shot
 *         noise), read_noise double (fraction of each image's maximum), B[, absolute 0|1])
 *     electrons: the expected count of each image's brightest pixel (relative units), or
 *     with absolute 1 the electrons each pixel receives (beam units: counts
 *     Poisson(electrons * value), value counts / electrons). The module's noise_absolute
 *     attribute says a build takes `absolute`.
 *   phonon(frame, rotation, keys, rms float64 (F,N) Å, out float32 (B,N,3) Å, B)
 *   scan(frame, rotation, keys, out float32 (B,E,2) Å, B, jitter double Å, drift double Å)
 */
static int frames_ok(const Py_buffer *frame, const Py_buffer *rotation, const Py_buffer *keys,
                     Py_ssize_t b)
{
    Py_ssize_t f = keys->len / (Py_ssize_t)sizeof(unsigned long long);
    if (frame->len != b * (Py_ssize_t)sizeof(long long) ||
        rotation->len != b * (Py_ssize_t)sizeof(long long) ||
        keys->len != f * (Py_ssize_t)sizeof(unsigned long long))
        return 0;
    for (Py_ssize_t i = 0; i < b; i++) {
        long long k = ((const long long *)frame->buf)[i];
        if (k < 0 || k >= f)
            return 0;
    }
    return 1;
}

/* Image i's stream for one purpose: its frame's key, its rotation index. */
static xyz_stream image_stream(const Py_buffer *frame, const Py_buffer *rotation,
                               const Py_buffer *keys, Py_ssize_t i, unsigned int purpose,
                               long long *f)
{
    *f = ((const long long *)frame->buf)[i];
    return xyz_stream_of(((const unsigned long long *)keys->buf)[*f],
                         ((const long long *)rotation->buf)[i], purpose);
}

static void noise_one(const float *in, float *out, int pixels, xyz_stream s, int shot,
                      double electrons, double read_noise, int absolute)
{
    float m = in[0];
    for (int p = 1; p < pixels; p++)
        m = in[p] > m ? in[p] : m;
    double peak = (double)m;
    int lit = shot && peak > 0.0;
    double gain = lit ? (absolute ? electrons : electrons / peak) : 1.0;
    double read_sd = read_noise > 0.0 ? read_noise * peak : 0.0;
    for (int g = 0; 4 * g < pixels; g++)
        xyz_noise_group(in, out, pixels, g, s, lit, gain, read_sd);
}

static PyObject *py_noise(PyObject *self, PyObject *args)
{
    Py_buffer images, out, frame, rotation, keys, electrons;
    double read_noise;
    int batch, absolute = 0;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*w*y*y*y*y*di|p", &images, &out, &frame, &rotation, &keys,
                          &electrons, &read_noise, &batch, &absolute))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t b = batch;
    Py_ssize_t per = b >= 1 ? images.len / (Py_ssize_t)sizeof(float) / b : 0;
    int shot = electrons.len != 0;
    if (b < 1 || per < 1 || per > 0x7FFFFFFF ||
        images.len != b * per * (Py_ssize_t)sizeof(float) || out.len != images.len ||
        (shot && electrons.len != b * (Py_ssize_t)sizeof(double)) ||
        !frames_ok(&frame, &rotation, &keys, b)) {
        PyErr_SetString(PyExc_ValueError, "_splat.noise: inconsistent buffer sizes");
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < b; i++) {
        long long f;
        xyz_stream s = image_stream(&frame, &rotation, &keys, i, XYZ_PURPOSE_NOISE, &f);
        noise_one((const float *)images.buf + i * per, (float *)out.buf + i * per, (int)per, s,
                  shot, shot ? ((const double *)electrons.buf)[i] : 0.0, read_noise, absolute);
    }
    Py_END_ALLOW_THREADS
    Py_INCREF(Py_None);
    result = Py_None;
done:
    PyBuffer_Release(&images);
    PyBuffer_Release(&out);
    PyBuffer_Release(&frame);
    PyBuffer_Release(&rotation);
    PyBuffer_Release(&keys);
    PyBuffer_Release(&electrons);
    return result;
}

static PyObject *py_phonon(PyObject *self, PyObject *args)
{
    Py_buffer frame, rotation, keys, rms, out;
    int batch;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*y*y*w*i", &frame, &rotation, &keys, &rms, &out, &batch))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t b = batch;
    Py_ssize_t n = b >= 1 ? out.len / (Py_ssize_t)sizeof(float) / 3 / b : 0;
    Py_ssize_t f = keys.len / (Py_ssize_t)sizeof(unsigned long long);
    if (b < 1 || out.len != b * n * 3 * (Py_ssize_t)sizeof(float) || n > 0x0FFFFFFF ||
        rms.len != f * n * (Py_ssize_t)sizeof(double) || !frames_ok(&frame, &rotation, &keys, b)) {
        PyErr_SetString(PyExc_ValueError, "_splat.phonon: inconsistent buffer sizes");
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < b; i++) {
        long long fi;
        xyz_stream s = image_stream(&frame, &rotation, &keys, i, XYZ_PURPOSE_PHONON, &fi);
        for (int j = 0; 4 * j < 3 * n; j++)
            xyz_phonon_group(s, (const double *)rms.buf + fi * n, (int)n, j,
                             (float *)out.buf + i * n * 3);
    }
    Py_END_ALLOW_THREADS
    Py_INCREF(Py_None);
    result = Py_None;
done:
    PyBuffer_Release(&frame);
    PyBuffer_Release(&rotation);
    PyBuffer_Release(&keys);
    PyBuffer_Release(&rms);
    PyBuffer_Release(&out);
    return result;
}

static PyObject *py_scan(PyObject *self, PyObject *args)
{
    Py_buffer frame, rotation, keys, out;
    int batch;
    double jitter, drift;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*y*w*idd", &frame, &rotation, &keys, &out, &batch, &jitter,
                          &drift))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t b = batch;
    Py_ssize_t e = b >= 1 ? out.len / (Py_ssize_t)sizeof(float) / 2 / b : 0;
    if (b < 1 || e < 1 || e > 0x0FFFFFFF || out.len != b * e * 2 * (Py_ssize_t)sizeof(float) ||
        !frames_ok(&frame, &rotation, &keys, b)) {
        PyErr_SetString(PyExc_ValueError, "_splat.scan: inconsistent buffer sizes");
        goto done;
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t i = 0; i < b; i++) {
        long long fi;
        xyz_stream s = image_stream(&frame, &rotation, &keys, i, XYZ_PURPOSE_SCAN, &fi);
        for (int j = 0; 4 * j < e; j++)
            xyz_scan_group(s, (int)e, jitter, drift, j, (float *)out.buf + i * e * 2);
    }
    Py_END_ALLOW_THREADS
    Py_INCREF(Py_None);
    result = Py_None;
done:
    PyBuffer_Release(&frame);
    PyBuffer_Release(&rotation);
    PyBuffer_Release(&keys);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef methods[] = {
    {"binary", py_binary, METH_VARARGS, "Binary ball labels (see module source)."},
    {"render", py_render, METH_VARARGS, "Render Gaussian images into out (see module source)."},
    {"quantise", py_quantise, METH_VARARGS, "Quantise float images (see module source)."},
    {"noise", py_noise, METH_VARARGS, "Shot and read noise of float images (see philox.h)."},
    {"phonon", py_phonon, METH_VARARGS, "Phonon jitter displacements (see philox.h)."},
    {"scan", py_scan, METH_VARARGS, "Scan distortion row shifts (see philox.h)."},
    {"column", py_column, METH_VARARGS,
     "Each atom's projected image value at its own position (see module source)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_splat", "Compiled CPU Gaussian splatting kernel.", -1, methods,
};

PyMODINIT_FUNC PyInit__splat(void)
{
    PyObject *m = PyModule_Create(&module);
    /* noise() takes `absolute` (a build older than the package lacks the attribute) */
    if (m != NULL && PyModule_AddIntConstant(m, "noise_absolute", 1) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
