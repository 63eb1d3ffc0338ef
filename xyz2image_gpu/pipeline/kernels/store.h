/*
 * The GPU kernels' last phase, shared by splat.cu and random.cu: a block's float image
 * normalised, clipped and rounded half to even into the stored form, as _splat.c's store()
 * does on the CPU (the same float operations in the same order: the same bytes).
 */
#ifndef XYZ_STORE_H
#define XYZ_STORE_H

#ifndef XYZ_DEVICE
#define XYZ_DEVICE static __device__ __forceinline__
#endif

/* 1.5 * 2^23: added and removed, it rounds a float below 2^22 half to even. */
#define XYZ_RINT_MAGIC 12582912.0f

/* The largest of start and s[0 .. n) (a maximum: exact in any order). */
XYZ_DEVICE float xyz_block_max(const float *s, int n, float start)
{
    float m = start;
    for (int t = 0; t < n; t++)
        m = s[t] > m ? s[t] : m;
    return m;
}

/* The stored form's scale: mode 1 (image) top / peak (0 for a black image), 2 (fixed)
 * scale, 0 (float) 1. */
XYZ_DEVICE float xyz_store_factor(int mode, float peak, float top, float scale)
{
    if (mode == 1)
        return peak > 0.0f ? top / peak : 0.0f;
    return mode == 2 ? scale : 1.0f;
}

/* Pixel p of img to out[base + p]: float32 as it is (itemsize 4), else times factor,
 * clipped to [0, top] and rounded half to even, as uint8 (itemsize 1) or uint16 (2). */
XYZ_DEVICE void xyz_store_pixel(const float *img, int p, unsigned char *out, long long base,
                                int itemsize, float factor, float top)
{
    if (itemsize == 4) {
        ((float *)out)[base + p] = img[p];
        return;
    }
    float v = img[p] * factor;
    v = v > 0.0f ? v : 0.0f;
    v = v < top ? v : top;
    v = (v + XYZ_RINT_MAGIC) - XYZ_RINT_MAGIC;
    if (itemsize == 1)
        out[base + p] = (unsigned char)v;
    else
        ((unsigned short *)out)[base + p] = (unsigned short)v;
}

#endif
