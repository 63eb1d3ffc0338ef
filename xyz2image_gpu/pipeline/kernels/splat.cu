/*
 * The GPU's gaussian_2d and gaussian_3d: every atom's Gaussian added over its window and the
 * image quantised, in one launch per batch (CUDA C, compiled by NVRTC through
 * Backend.raw_kernel).
 *
 * The algorithm is _splat.c's: a window cut where an atom's Gaussian falls below exp(-cut) of
 * the image's brightest Gaussian (cut 16 for 8-bit images, 25 otherwise; a weaker Gaussian
 * gets cut + ln(w / wmax)), the x factor w exp(-dx^2 inv) and the y profile exp(-dy^2 inv)
 * each computed in double and rounded to float, their float product added to the pixel, atoms
 * in input order (3-D: the float of the double product of the x and y factors, times the
 * float z profile, as _splat.c's 3-D loop), then the same normalisation and rounding (1.5 * 2^23 added and removed:
 * round half to even). Only the profiles differ: one exp per value here, where _splat.c runs
 * a two-exp recurrence (a few double ulps apart; both are rounded to float).
 *
 * Mapping: one thread block per image, XYZ_THREADS threads. Thread t owns the pixels
 * p = t, t + T, t + 2T, ... (p = i E + j, row i = x, column j = y; 3-D: p = (i E + j) E + k,
 * k = z) for the whole launch,
 * so each pixel is only ever written by one thread, and that thread adds the atoms in input
 * order: the float sum of every pixel is fixed by the image's own inputs, whatever the batch
 * size, the grid or the scheduling. No atomics. The image maximum is a reduction of maxima,
 * which are exact in any order.
 *
 * Phases: the body is a sequence of phases separated by __syncthreads(), each phase inside
 * XYZ_PER_THREAD { ... }. On the GPU that macro is empty (every thread runs each phase once);
 * in the CPU emulation (kernels/cuda_emulation.h) it is a loop over threadIdx.x, so a phase
 * runs for every thread of the block before the next begins, which is what the barrier
 * guarantees on the device. Values that cross a phase live in __shared__ arrays (or in the
 * image buffer), never in a thread's locals; block-uniform values (the atom chunk) live
 * outside the phases. Any change must keep that shape, or the emulation stops being faithful.
 *
 * The float image lives in dynamic shared memory when it fits (use_shared != 0), else in
 * scratch (B, E, E) in global memory, each block its own image. After it (or alone) in
 * dynamic shared memory: one bit mask per row of the atoms of the chunk that reach the row
 * (E * ceil(T / 32) words), so that each pixel visits only those, lowest bit first, which
 * keeps the input order.
 *
 *   xyz2image_gaussian(coords float32 (B,N,3) px, weights float32 (B,N), sigma float32
 *       (B,N) px, N, E, ndim 2|3, scratch float32 (B,E^ndim) or unused, use_shared,
 *       out (B,E^ndim) uint8 / uint16 / float32, out itemsize, mode 0=float 1=image 2=fixed,
 *       top, scale, cut, offsets float32 (B,E,2) px or unused, scanned 0|1)
 *   With scanned (2-D only), row i sees every atom shifted by offsets[b, i] = (ox, oy)
 *   pixels, as _splat.c's splat_scanned: an atom reaches row i when |i - x - ox| <= its
 *   reach, pixel j when |j - (y + oy)| <= its reach.
 *   grid (B,), block (XYZ_THREADS,), dynamic shared memory (E^ndim when use_shared, plus
 *   E * ceil(XYZ_THREADS / 32)) * 4 bytes.
 */
#ifndef XYZ_EMULATION
#define XYZ_KERNEL extern "C" __global__ void
#define XYZ_PER_THREAD
#define XYZ_DYNAMIC_SHARED(type, name) extern __shared__ type name[]
#define XYZ_DEVICE static __device__ __forceinline__
#define XYZ_FFS(v) __ffs(v)
#endif

#include "store.h"

#define XYZ_THREADS 256

/* v is finite: inf - inf and NaN - NaN are NaN (isfinite without NVRTC's headers) */
XYZ_DEVICE int xyz_finite_f(float v)
{
    return v - v == 0.0f;
}

/* _splat.c's window(): the pixels of [c - reach, c + reach], clipped to [0, e). */
XYZ_DEVICE void xyz_window(double c, double reach, int e, int *lo, int *hi)
{
    double a = ceil(c - reach), b = floor(c + reach);
    *lo = a < 0 ? 0 : (a > e ? e : (int)a);
    *hi = b > e - 1 ? e - 1 : (b < -1 ? -1 : (int)b);
}

XYZ_KERNEL xyz2image_gaussian(const float *coords, const float *weights, const float *sigma,
                              const int n_atoms, const int e, const int ndim, float *scratch,
                              const int use_shared, unsigned char *out, const int itemsize,
                              const int mode, const float top, const float scale,
                              const double cut, const float *offsets, const int scanned)
{
    __shared__ float s_x[XYZ_THREADS], s_y[XYZ_THREADS], s_z[XYZ_THREADS], s_w[XYZ_THREADS];
    __shared__ double s_inv[XYZ_THREADS], s_reach[XYZ_THREADS];
    __shared__ int s_x0[XYZ_THREADS], s_x1[XYZ_THREADS], s_y0[XYZ_THREADS],
        s_y1[XYZ_THREADS], s_z0[XYZ_THREADS], s_z1[XYZ_THREADS];
    __shared__ float s_max[XYZ_THREADS];
    __shared__ int s_neg[XYZ_THREADS];
    __shared__ float s_wmax, s_peak;
    __shared__ int s_relative;
    XYZ_DYNAMIC_SHARED(float, xyz_dynamic);

    const long long b = blockIdx.x;
    const int plane = e * e;
    const int pixels = ndim == 3 ? plane * e : plane;
    const int threads = blockDim.x;
    const float *c_img = coords + b * n_atoms * 3;
    const float *w_img = weights + b * n_atoms;
    const float *s_img = sigma + b * n_atoms;
    const float *off = offsets + (scanned ? b * e * 2 : 0);
    const int words = (threads + 31) / 32;
    float *img = use_shared ? xyz_dynamic : scratch + b * pixels;
    /* rows[i * words + w], bit k: atom chunk + 32 w + k reaches row i (after the image) */
    unsigned int *rows = (unsigned int *)(xyz_dynamic + (use_shared ? pixels : 0));

    /* phase 1: each thread's share of the brightest weight, and of "any weight < 0" */
    XYZ_PER_THREAD
    {
        float m = 0.0f;
        int neg = 0;
        for (int a = threadIdx.x; a < n_atoms; a += threads) {
            float w = w_img[a];
            if (w < 0.0f)
                neg = 1;
            else if (xyz_finite_f(w) && w > m)
                m = w;
        }
        s_max[threadIdx.x] = m;
        s_neg[threadIdx.x] = neg;
    }
    __syncthreads();
    /* phase 2: thread 0 combines them (a maximum and an "or": exact in any order) */
    XYZ_PER_THREAD
    {
        if (threadIdx.x == 0) {
            float m = 0.0f;
            int neg = 0;
            for (int t = 0; t < threads; t++) {
                m = s_max[t] > m ? s_max[t] : m;
                neg |= s_neg[t];
            }
            s_wmax = m;
            s_relative = !neg;
        }
    }
    __syncthreads();

    for (int chunk = 0; chunk < n_atoms; chunk += threads) {
        /* phase 3: thread t prepares atom chunk + t: its centre, weight, 1/(2 s^2) and
         * window, as _splat.c's render_one does (an empty window for an atom it skips) */
        XYZ_PER_THREAD
        {
            int a = chunk + threadIdx.x;
            int x0 = 0, x1 = -1, y0 = 0, y1 = -1, z0 = 0, z1 = -1;
            float cx = 0.0f, cy = 0.0f, cz = 0.0f, w = 0.0f;
            double inv = 0.0, reach = 0.0;
            if (a < n_atoms) {
                w = w_img[a];
                float sg = s_img[a];
                cx = c_img[3 * a];
                cy = c_img[3 * a + 1];
                cz = c_img[3 * a + 2];
                int ok = w != 0.0f && sg > 0.0f && xyz_finite_f(sg) && xyz_finite_f(cx) &&
                         xyz_finite_f(cy) && xyz_finite_f(cz) && xyz_finite_f(w);
                if (ok) {
                    double s = (double)sg;
                    reach = s * sqrt(2.0 * cut);
                    double wmax = (double)s_wmax;
                    inv = 0.5 / (s * s);
                    if (s_relative && w < s_wmax) {
                        double cut_a = cut + log((double)w / wmax);
                        ok = cut_a > 0.0; /* its peak is below exp(-cut) wmax */
                        reach = s * sqrt(2.0 * cut_a);
                    }
                    if (ok && scanned) {
                        x1 = e - 1; /* every row may see it: phase 4 tests each row */
                    } else if (ok) {
                        xyz_window((double)cx, reach, e, &x0, &x1);
                        xyz_window((double)cy, reach, e, &y0, &y1);
                        if (ndim == 3)
                            xyz_window((double)cz, reach, e, &z0, &z1);
                        if (x1 < x0 || y1 < y0 || (ndim == 3 && z1 < z0))
                            x1 = x0 - 1; /* nothing to add: no row reaches it */
                    }
                }
            }
            s_x[threadIdx.x] = cx;
            s_y[threadIdx.x] = cy;
            s_z[threadIdx.x] = cz;
            s_w[threadIdx.x] = w;
            s_inv[threadIdx.x] = inv;
            s_reach[threadIdx.x] = reach;
            s_x0[threadIdx.x] = x0;
            s_x1[threadIdx.x] = x1;
            s_y0[threadIdx.x] = y0;
            s_y1[threadIdx.x] = y1;
            s_z0[threadIdx.x] = z0;
            s_z1[threadIdx.x] = z1;
        }
        __syncthreads();
        /* phase 4: which of the chunk's atoms reach each row, as bit masks (an atom past
         * the last has an empty window), so that a pixel visits only those */
        XYZ_PER_THREAD
        {
            for (int q = threadIdx.x; q < e * words; q += threads) {
                int r = q / words, w = q - (q / words) * words;
                unsigned int m = 0;
                for (int bit = 0; bit < 32 && 32 * w + bit < threads; bit++) {
                    int k = 32 * w + bit;
                    if (r < s_x0[k] || r > s_x1[k])
                        continue;
                    if (scanned) { /* _splat.c's splat_scanned: row r sees the atom moved */
                        double dx = (double)r - (double)s_x[k] - (double)off[2 * r];
                        if (dx > s_reach[k] || dx < -s_reach[k])
                            continue;
                    }
                    m |= 1u << bit;
                }
                rows[q] = m;
            }
        }
        __syncthreads();
        /* phase 5: each thread adds the chunk's atoms, in input order (masks in order, bits
         * from the lowest), to each of its pixels */
        XYZ_PER_THREAD
        {
            for (int p = threadIdx.x; p < pixels; p += threads) {
                int i = p / e, j = p - (p / e) * e, z = 0;
                if (ndim == 3) {
                    int rest = p - (p / plane) * plane;
                    i = p / plane;
                    j = rest / e;
                    z = rest - (rest / e) * e;
                }
                float acc = chunk == 0 ? 0.0f : img[p];
                for (int w = 0; w < words; w++) {
                    for (unsigned int m = rows[i * words + w]; m != 0; m &= m - 1) {
                        int k = 32 * w + XYZ_FFS((int)m) - 1;
                        double dx = (double)i - (double)s_x[k];
                        double dy = (double)j - (double)s_y[k];
                        if (scanned) { /* row i's shift; j within [cy - reach, cy + reach] */
                            double cy = (double)s_y[k] + (double)off[2 * i + 1];
                            if ((double)j < cy - s_reach[k] || (double)j > cy + s_reach[k])
                                continue;
                            dx = dx - (double)off[2 * i];
                            dy = (double)j - cy;
                        } else if (j < s_y0[k] || j > s_y1[k]) {
                            continue;
                        }
                        double gx = (double)s_w[k] * exp(-dx * dx * s_inv[k]);
                        double gy = exp(-dy * dy * s_inv[k]);
                        float term;
                        if (ndim == 2) {
                            term = (float)gx * (float)gy;
                        } else {
                            if (z < s_z0[k] || z > s_z1[k])
                                continue;
                            double dz = (double)z - (double)s_z[k];
                            term = (float)(gx * gy) * (float)exp(-dz * dz * s_inv[k]);
                        }
                        acc = acc + term;
                    }
                }
                img[p] = acc;
            }
        }
        __syncthreads();
    }
    if (n_atoms == 0) {
        XYZ_PER_THREAD
        {
            for (int p = threadIdx.x; p < pixels; p += threads)
                img[p] = 0.0f;
        }
        __syncthreads();
    }

    /* phase 6: each thread's share of the image maximum (>= 0, as _splat.c's image_peak) */
    XYZ_PER_THREAD
    {
        float m = 0.0f;
        if (mode == 1)
            for (int p = threadIdx.x; p < pixels; p += threads)
                m = img[p] > m ? img[p] : m;
        s_max[threadIdx.x] = m;
    }
    __syncthreads();
    XYZ_PER_THREAD
    {
        if (threadIdx.x == 0)
            s_peak = xyz_block_max(s_max, threads, 0.0f);
    }
    __syncthreads();
    /* phase 7: normalise, round half to even, clip and store, as _splat.c's store() */
    XYZ_PER_THREAD
    {
        float factor = xyz_store_factor(mode, s_peak, top, scale);
        for (int p = threadIdx.x; p < pixels; p += threads)
            xyz_store_pixel(img, p, out, b * pixels, itemsize, factor, top);
    }
}
