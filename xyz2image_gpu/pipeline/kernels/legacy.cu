/*
 * Legacy mode's filter matrices on the GPU (CUDA C, compiled by NVRTC through
 * Backend.raw_kernel; in the tests by the C compiler through cuda_emulation.h): per image,
 * the (E, E) matrix M with gaussian_filter1d(x, s) == M @ x in SciPy's semantics, as
 * kernels/legacy.py's legacy_filter_matrices builds it on the host: radius
 * int(truncate * s + 0.5), weights exp(-k^2 / (2 s^2)) normalised to sum 1, reflect mode
 * (d c b a | a b c d | d c b a), each row's weights added in the order of k. Only the sum
 * of the weights runs in another order (here one after the other, NumPy's pairwise), a few
 * double ulps; the images agree within one grey level.
 *
 *   xyz2image_legacy_filter(sigma float32 (B) px, E, truncate, mats float64 (B,E,E))
 *   grid (B,), block (any size): the block zeroes its image's matrix, then thread t adds the
 *   weights of rows t, t + T, ... (every thread computes the image's normalising sum itself,
 *   in the same order), so each entry's sum has one fixed order.
 */
#ifndef XYZ_EMULATION
#define XYZ_KERNEL extern "C" __global__ void
#define XYZ_PER_THREAD
#endif

XYZ_KERNEL xyz2image_legacy_filter(const float *sigma, const int e, const double truncate,
                                   double *mats)
{
    const long long b = blockIdx.x;
    double *m = mats + b * e * e;
    /* phase 1: the matrix zeroed by all threads, consecutive entries (coalesced writes) */
    XYZ_PER_THREAD
    {
        for (long long q = threadIdx.x; q < (long long)e * e; q += blockDim.x)
            m[q] = 0.0;
    }
    __syncthreads();
    /* phase 2: thread t adds the weights of rows t, t + T, ... in the order of k */
    XYZ_PER_THREAD
    {
        double s = (double)sigma[b];
        int radius = (int)(truncate * s + 0.5);
        double c = -0.5 / (s * s);
        double total = 0.0;
        for (int k = -radius; k <= radius; k++)
            total += exp(c * ((double)k * (double)k));
        for (int i = threadIdx.x; i < e; i += blockDim.x) {
            double *row = m + (long long)i * e;
            for (int k = -radius; k <= radius; k++) {
                int src = (i + k) % (2 * e);
                src = src < 0 ? src + 2 * e : src;
                src = src >= e ? 2 * e - 1 - src : src;
                row[src] += exp(c * ((double)k * (double)k)) / total;
            }
        }
    }
}
