/*
 * The GPU's augmentation draws (CUDA C, compiled by NVRTC through Backend.raw_kernel; in the
 * tests by the C compiler through cuda_emulation.h): the per-element code is philox.h's, the
 * very functions the compiled CPU kernel (_splat.c) calls, so both devices draw the same
 * numbers. Each image's streams come from its frame's 64-bit key (keys[frame[b]]) and its
 * rotation index; see philox.h for which block each draw takes.
 *
 *   xyz2image_noise(images float32 (B,P), noisy float32 (B,P) (may be images), frame int64
 *       (B), rotation int64 (B), keys uint64 (F), electrons float64 (B) (expected count of
 *       each image's brightest pixel; with absolute 1 the electrons each pixel receives, as
 *       _splat.c's noise()), shot 0|1, absolute 0|1, read_noise (fraction of each image's
 *       maximum, 0: none), P, out (B,P) uint8 / uint16 / float32, out itemsize, mode
 *       0=float 1=image 2=fixed, top, scale)
 *     grid (B,), block (XYZ_THREADS,): one block per image; the image maximum, the noisy
 *     image (thread t owns the groups of four pixels g = t, t + T, ...), its maximum, then
 *     normalised and rounded as _splat.c's store() (round half to even, clip). With shot 0
 *     and read_noise 0 it only quantises.
 *   xyz2image_phonon(frame, rotation, keys, rms float64 (F,N) Å, N, out float32 (B,N,3) Å)
 *   xyz2image_scan(frame, rotation, keys, E, jitter Å, drift Å, out float32 (B,E,2) Å)
 *     grid (B,), block (XYZ_THREADS,): thread t draws the groups of four normals t, t + T, ...
 *
 * The phases of xyz2image_noise follow splat.cu's rules (each inside XYZ_PER_THREAD,
 * separated by __syncthreads(), values that cross a phase in __shared__ arrays).
 */
#ifndef XYZ_EMULATION
#define XYZ_KERNEL extern "C" __global__ void
#define XYZ_PER_THREAD
#define XYZ_DEVICE static __device__ __forceinline__
#endif

#include "philox.h"
#include "store.h"

#define XYZ_THREADS 256

XYZ_KERNEL xyz2image_noise(const float *images, float *noisy, const long long *frame,
                           const long long *rotation, const unsigned long long *keys,
                           const double *electrons, const int shot, const int absolute,
                           const double read_noise,
                           const int pixels, unsigned char *out, const int itemsize,
                           const int mode, const float top, const float scale)
{
    __shared__ float s_max[XYZ_THREADS];
    __shared__ float s_peak, s_store_peak;

    const long long b = blockIdx.x;
    const int threads = blockDim.x;
    const float *in = images + b * pixels;
    float *img = noisy + b * pixels;
    const int noise = shot || read_noise > 0.0;

    /* phase 1: each thread's share of the clean image's maximum */
    XYZ_PER_THREAD
    {
        float m = in[0];
        if (noise)
            for (int p = threadIdx.x; p < pixels; p += threads)
                m = in[p] > m ? in[p] : m;
        s_max[threadIdx.x] = m;
    }
    __syncthreads();
    XYZ_PER_THREAD
    {
        if (threadIdx.x == 0)
            s_peak = xyz_block_max(s_max, threads, s_max[0]);
    }
    __syncthreads();
    /* phase 2: the noisy image (philox.h), and each thread's share of its maximum (>= 0,
     * as _splat.c's image_peak) */
    XYZ_PER_THREAD
    {
        double peak = (double)s_peak;
        int lit = shot && peak > 0.0;
        double gain = lit ? (absolute ? electrons[b] : electrons[b] / peak) : 1.0;
        double read_sd = read_noise * peak;
        /* nothing drawn (quantisation alone): frame, rotation and keys are not read */
        xyz_stream s = xyz_stream_of(noise ? keys[frame[b]] : 0ull, noise ? rotation[b] : 0,
                                     XYZ_PURPOSE_NOISE);
        float m = 0.0f;
        for (int g = threadIdx.x; 4 * g < pixels; g += threads) {
            if (noise)
                xyz_noise_group(in, img, pixels, g, s, lit, gain, read_noise > 0.0 ? read_sd : 0.0);
            else if (img != in)
                for (int p = 4 * g; p < 4 * g + 4 && p < pixels; p++)
                    img[p] = in[p];
            for (int p = 4 * g; p < 4 * g + 4 && p < pixels; p++)
                m = img[p] > m ? img[p] : m;
        }
        s_max[threadIdx.x] = m;
    }
    __syncthreads();
    XYZ_PER_THREAD
    {
        if (threadIdx.x == 0)
            s_store_peak = xyz_block_max(s_max, threads, 0.0f);
    }
    __syncthreads();
    /* phase 3: normalise, round half to even, clip and store, as _splat.c's store() */
    XYZ_PER_THREAD
    {
        float factor = xyz_store_factor(mode, s_store_peak, top, scale);
        for (int g = threadIdx.x; 4 * g < pixels; g += threads)
            for (int p = 4 * g; p < 4 * g + 4 && p < pixels; p++)
                xyz_store_pixel(img, p, out, b * pixels, itemsize, factor, top);
    }
}

XYZ_KERNEL xyz2image_phonon(const long long *frame, const long long *rotation,
                            const unsigned long long *keys, const double *rms,
                            const int n_atoms, float *out)
{
    const long long b = blockIdx.x;
    XYZ_PER_THREAD
    {
        xyz_stream s = xyz_stream_of(keys[frame[b]], rotation[b], XYZ_PURPOSE_PHONON);
        for (int j = threadIdx.x; 4 * j < 3 * n_atoms; j += blockDim.x)
            xyz_phonon_group(s, rms + frame[b] * n_atoms, n_atoms, j, out + b * n_atoms * 3);
    }
}

XYZ_KERNEL xyz2image_scan(const long long *frame, const long long *rotation,
                          const unsigned long long *keys, const int e, const double jitter,
                          const double drift, float *out)
{
    const long long b = blockIdx.x;
    XYZ_PER_THREAD
    {
        xyz_stream s = xyz_stream_of(keys[frame[b]], rotation[b], XYZ_PURPOSE_SCAN);
        for (int j = threadIdx.x; 4 * j < e; j += blockDim.x)
            xyz_scan_group(s, e, jitter, drift, j, out + b * e * 2);
    }
}
