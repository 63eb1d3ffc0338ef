/*
 * The augmentations' random draws, one C source for the CPU and the GPU: Philox4x32-10,
 * uniforms, normals (the inverse distribution function, AS 241) and Poisson counts, each
 * a pure function of where it sits in an image's streams. Included by random.cu (compiled by NVRTC on the GPU, and by the C
 * compiler through cuda_emulation.h in the tests) and by _splat.c (the compiled CPU
 * kernel), so every device draws the same numbers from the same code. No host headers:
 * NVRTC compiles without them (the includer brings math.h on the CPU).
 *
 * Philox4x32-10 (Salmon, Moraes, Dror and Shaw, SC11, doi:10.1145/2063384.2063405): ten
 * rounds of a keyed bijection of a 128-bit counter (four 32-bit words) under a 64-bit key;
 * each round multiplies two words by M0 = 0xD2511F53 and M1 = 0xCD9E8D57 (32 x 32 -> 64
 * bits), mixes the halves with the other words and the key, and the key is bumped by the
 * Weyl constants 0x9E3779B9 and 0xBB67AE85. Checked against Random123's known answers.
 *
 * Key and counter: key (k0, k1) = the low and high words of the frame's 64-bit stream key
 * (rotations.rotation_key: seed, structure name, frame, stack); counter (block, rotation
 * index, sub-stream, purpose). Purposes: 1 phonon jitter, 2 noise, 3 scan distortion. So
 * one draw is a function of (seed, name, frame, stack, rotation, purpose, sub-stream,
 * block) only: the same whatever the batch size, the thread count or the device.
 *
 * Uniforms: a word w gives (w + 0.5) / 2^32 in (0, 1); two words (hi, lo) give the 53-bit
 * ((hi << 21) | (lo >> 11) + 0.5) / 2^53. Normals: the inverse normal distribution function
 * (AS 241) of one word's uniform, block j of a sub-stream giving normals 4j .. 4j+3, one per
 * word. Sums, products, quotients and sqrt are correctly rounded everywhere (and no
 * multiply-add is fused: -ffp-contract=off, NVRTC --fmad=false); exp, log, cos and sin may
 * differ in the last bit of a double between the C library and CUDA's, which changes a
 * stored float32 or an integer count only for a draw within ~1e-16 of a rounding boundary.
 *
 * Poisson counts of pixel p of an image (noise, purpose 2), mean lam:
 *   attempt 0: words (0, 1) (even p) or (2, 3) (odd p) of block p / 2 of sub-stream 0;
 *   lam < 10: inversion, k the first with u <= F(k), u the 53-bit uniform of attempt 0,
 *     F built term by term (p_k = p_(k-1) (lam / k): the quotient off the chain of
 *     products), at most 48 steps (P(X > 47) < 1e-15);
 *   lam >= 10: PTRS (Hormann, Insurance: Mathematics and Economics 12, 39-45, 1993), U and V
 *     from the attempt's two words; attempts 2j+1 and 2j+2 from words (0, 1) and (2, 3) of
 *     block p of sub-stream j+1, at most 25 attempts (rejection below 0.25 each: a pixel
 *     still rejected after 25 keeps its last candidate, probability < 1e-15).
 * Read noise of pixel p: normal p of sub-stream 65536 (purpose 2).
 * Phonon jitter: normal 3 n + a of sub-stream 0 (purpose 1) for atom n, axis a.
 * Scan distortion (purpose 3): the drift direction 2 pi u, u from word 0 of block 0 of
 * sub-stream 0; row i's jitter, normal i of sub-stream 1.
 * physics/random.py computes the same numbers in NumPy/CuPy array code (the fallback where
 * nothing compiled this, and the tests' reference).
 */
#ifndef XYZ_PHILOX_H
#define XYZ_PHILOX_H

#ifndef XYZ_DEVICE
#define XYZ_DEVICE static __device__ __forceinline__
#endif

#define XYZ_PURPOSE_PHONON 1u
#define XYZ_PURPOSE_NOISE 2u
#define XYZ_PURPOSE_SCAN 3u
#define XYZ_READ_SUBSTREAM 65536u
#define XYZ_INVERSION_BELOW 10.0
#define XYZ_INVERSION_STEPS 48
#define XYZ_PTRS_PAIRS 12
#define XYZ_TWO_PI 6.283185307179586

/* Four 32-bit words: one Philox block. */
typedef struct {
    unsigned int w[4];
} xyz_block;

/* One image's streams for one purpose: the Philox key and the fixed counter words. */
typedef struct {
    unsigned int k0, k1, rotation, purpose;
} xyz_stream;

XYZ_DEVICE xyz_stream xyz_stream_of(unsigned long long key, long long rotation,
                                    unsigned int purpose)
{
    xyz_stream s;
    s.k0 = (unsigned int)(key & 0xFFFFFFFFull);
    s.k1 = (unsigned int)(key >> 32);
    s.rotation = (unsigned int)rotation;
    s.purpose = purpose;
    return s;
}

/* Philox4x32-10 of counter (c0, c1, c2, c3) under key (k0, k1). */
XYZ_DEVICE xyz_block xyz_philox(unsigned int c0, unsigned int c1, unsigned int c2,
                                unsigned int c3, unsigned int k0, unsigned int k1)
{
    for (int r = 0; r < 10; r++) {
        if (r) {
            k0 += 0x9E3779B9u;
            k1 += 0xBB67AE85u;
        }
        unsigned long long p0 = (unsigned long long)c0 * 0xD2511F53ull;
        unsigned long long p1 = (unsigned long long)c2 * 0xCD9E8D57ull;
        unsigned int hi0 = (unsigned int)(p0 >> 32), lo0 = (unsigned int)p0;
        unsigned int hi1 = (unsigned int)(p1 >> 32), lo1 = (unsigned int)p1;
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
    }
    xyz_block out;
    out.w[0] = c0;
    out.w[1] = c1;
    out.w[2] = c2;
    out.w[3] = c3;
    return out;
}

/* Block `block` of sub-stream `sub` of stream s. */
XYZ_DEVICE xyz_block xyz_draw(xyz_stream s, unsigned int block, unsigned int sub)
{
    return xyz_philox(block, s.rotation, sub, s.purpose, s.k0, s.k1);
}

XYZ_DEVICE double xyz_uniform32(unsigned int w)
{
    return ((double)w + 0.5) * (1.0 / 4294967296.0);
}

XYZ_DEVICE double xyz_uniform53(unsigned int hi, unsigned int lo)
{
    unsigned long long bits = ((unsigned long long)hi << 21) | (unsigned long long)(lo >> 11);
    return ((double)bits + 0.5) * (1.0 / 9007199254740992.0);
}

/* A standard normal from one word: the inverse of the normal distribution function at the
 * word's uniform, by Wichura's rational approximations (algorithm AS 241, PPND16, Applied
 * Statistics 37, 477-484, 1988; relative error about 1e-16). A 32-bit uniform lies in
 * [2^-33, 1 - 2^-33], so sqrt(-ln r) < 4.8 and AS 241's third region (above 5) is never
 * reached. Only products, sums and a quotient in the central region (85% of draws); the
 * tails add a log and a sqrt. */
XYZ_DEVICE double xyz_normal(unsigned int w)
{
    double p = xyz_uniform32(w);
    double q = p - 0.5;
    if (fabs(q) <= 0.425) {
        double r = 0.180625 - q * q;
        return q * (((((((2509.0809287301226727 * r + 33430.575583588128105) * r +
                         67265.770927008700853) * r + 45921.953931549871457) * r +
                       13731.693765509461125) * r + 1971.5909503065514427) * r +
                     133.14166789178437745) * r + 3.387132872796366608) /
               (((((((5226.495278852854561 * r + 28729.085735721942674) * r +
                     39307.89580009271061) * r + 21213.794301586595867) * r +
                   5394.1960214247511077) * r + 687.1870074920579083) * r +
                 42.313330701600911252) * r + 1.0);
    }
    double r = sqrt(-log(q < 0.0 ? p : 1.0 - p)) - 1.6;
    double z = (((((((7.7454501427834140764e-4 * r + 0.0227238449892691845833) * r +
                     0.24178072517745061177) * r + 1.27045825245236838258) * r +
                   3.64784832476320460504) * r + 5.7694972214606914055) * r +
                 4.6303378461565452959) * r + 1.42343711074968357734) /
               (((((((1.05075007164441684324e-9 * r + 5.475938084995344946e-4) * r +
                     0.0151986665636164571966) * r + 0.14810397642748007459) * r +
                   0.68976733498510000455) * r + 1.6763848301838038494) * r +
                 2.05319162663775882187) * r + 1.0);
    return q < 0.0 ? -z : z;
}

/* Normals 4 block .. 4 block + 3 of sub-stream sub: one per word. */
XYZ_DEVICE void xyz_normals4(xyz_stream s, unsigned int block, unsigned int sub, double z[4])
{
    xyz_block w = xyz_draw(s, block, sub);
    for (int q = 0; q < 4; q++)
        z[q] = xyz_normal(w.w[q]);
}

/* ln k! for whole k >= 0: exact below 10, Stirling's series to z^-9 above (z = k + 1). */
XYZ_DEVICE double xyz_log_factorial(double k)
{
    if (k < 10.0) {
        switch ((int)k) {
        case 0:
        case 1: return 0.0;
        case 2: return 0.6931471805599453;
        case 3: return 1.791759469228055;
        case 4: return 3.1780538303479458;
        case 5: return 4.787491742782046;
        case 6: return 6.579251212010101;
        case 7: return 8.525161361065415;
        case 8: return 10.60460290274525;
        default: return 12.801827480081469;
        }
    }
    double z = k + 1.0;
    double iz = 1.0 / z;
    double iz2 = iz * iz;
    double series = iz * (1.0 / 12 - iz2 * (1.0 / 360 - iz2 * (1.0 / 1260 - iz2 * (
        1.0 / 1680 - iz2 * (1.0 / 1188)))));
    return (z - 0.5) * log(z) - z + 0.9189385332046728 + series;
}

/* PTRS's constants of one mean, computed once per pixel (the logs only when an attempt
 * first needs them: most are accepted by the squeeze). */
typedef struct {
    double lam, bb, aa, vr, log_inv_alpha, log_lam;
    int logs;
} xyz_ptrs;

XYZ_DEVICE xyz_ptrs xyz_ptrs_of(double lam)
{
    xyz_ptrs c;
    c.lam = lam;
    c.bb = 0.931 + 2.53 * sqrt(lam);
    c.aa = -0.059 + 0.02483 * c.bb;
    c.vr = 0.9277 - 3.6224 / (c.bb - 2.0);
    c.log_inv_alpha = c.log_lam = 0.0;
    c.logs = 0;
    return c;
}

/* One PTRS attempt from its two words: the candidate in *k, 1 when accepted. */
XYZ_DEVICE int xyz_ptrs_step(xyz_ptrs *c, unsigned int a, unsigned int b, double *k)
{
    double u = xyz_uniform32(a) - 0.5;
    double v = xyz_uniform32(b);
    double us = 0.5 - fabs(u);
    double kk = floor((2.0 * c->aa / us + c->bb) * u + c->lam + 0.43);
    *k = kk;
    if (us >= 0.07 && v <= c->vr)
        return 1;
    if (kk < 0.0 || (us < 0.013 && v > us))
        return 0;
    if (!c->logs) {
        c->log_inv_alpha = log(1.1239 + 1.1328 / (c->bb - 3.4));
        c->log_lam = log(c->lam);
        c->logs = 1;
    }
    return log(v) + c->log_inv_alpha - log(c->aa / (us * us) + c->bb) <=
           -c->lam + kk * c->log_lam - xyz_log_factorial(kk);
}

/* A Poisson count of mean lam for pixel p, whose attempt 0 draws words (a, b). */
XYZ_DEVICE double xyz_poisson(double lam, unsigned int a, unsigned int b, xyz_stream s,
                              unsigned int p)
{
    if (!(lam > 0.0))
        return 0.0;
    if (lam < XYZ_INVERSION_BELOW) {
        double u = xyz_uniform53(a, b);
        double term = exp(-lam);
        double cdf = term;
        double k = 0.0;
        for (int step = 1; step <= XYZ_INVERSION_STEPS && u > cdf; step++) {
            k = (double)step;
            term = term * (lam / (double)step);
            cdf = cdf + term;
        }
        return k;
    }
    double k;
    xyz_ptrs c = xyz_ptrs_of(lam);
    int ok = xyz_ptrs_step(&c, a, b, &k);
    for (unsigned int pair = 0; pair < XYZ_PTRS_PAIRS && !ok; pair++) {
        xyz_block w = xyz_draw(s, p, pair + 1u);
        ok = xyz_ptrs_step(&c, w.w[0], w.w[1], &k);
        if (!ok)
            ok = xyz_ptrs_step(&c, w.w[2], w.w[3], &k);
    }
    return k > 0.0 ? k : 0.0;
}

/* Shot and read noise of pixels 4 g .. 4 g + 3 (those below `pixels`) of one image: out[p]
 * = Poisson(max(in[p], 0) scale) / scale (with `shot`), plus read_sd times normal p (with
 * read_sd > 0), rounded to float. in and out may be the same array. */
XYZ_DEVICE void xyz_noise_group(const float *in, float *out, int pixels, int g, xyz_stream s,
                                int shot, double scale, double read_sd)
{
    unsigned int words[8];
    double z[4];
    if (shot) {
        xyz_block a = xyz_draw(s, 2u * (unsigned int)g, 0u);
        xyz_block b = xyz_draw(s, 2u * (unsigned int)g + 1u, 0u);
        for (int q = 0; q < 4; q++) {
            words[q] = a.w[q];
            words[4 + q] = b.w[q];
        }
    }
    if (read_sd > 0.0)
        xyz_normals4(s, (unsigned int)g, XYZ_READ_SUBSTREAM, z);
    for (int q = 0; q < 4; q++) {
        int p = 4 * g + q;
        if (p >= pixels)
            break;
        double x = (double)in[p];
        double noisy = x;
        if (shot) {
            double lam = (x > 0.0 ? x : 0.0) * scale;
            noisy = xyz_poisson(lam, words[2 * q], words[2 * q + 1], s, (unsigned int)p) / scale;
        }
        if (read_sd > 0.0)
            noisy = noisy + z[q] * read_sd;
        out[p] = (float)noisy;
    }
}

/* Phonon displacements of normals 4 j .. 4 j + 3 of one image: entry i = 3 n + a (atom n,
 * axis a) of out (N, 3) float32, Å, the normal times the atom's r.m.s. rms[n] (Å). */
XYZ_DEVICE void xyz_phonon_group(xyz_stream s, const double *rms, int n_atoms, int j,
                                 float *out)
{
    double z[4];
    xyz_normals4(s, (unsigned int)j, 0u, z);
    for (int q = 0; q < 4; q++) {
        int i = 4 * j + q;
        if (i >= 3 * n_atoms)
            break;
        out[i] = (float)(z[q] * rms[i / 3]);
    }
}

/* Scan shifts of rows 4 j .. 4 j + 3 of one image of e rows: out (E, 2) float32, Å along
 * (x, y): drift (i / (E - 1) - 1/2) along the direction 2 pi u, plus jitter times normal i
 * along y. */
XYZ_DEVICE void xyz_scan_group(xyz_stream s, int e, double jitter, double drift, int j,
                               float *out)
{
    double angle = XYZ_TWO_PI * xyz_uniform32(xyz_draw(s, 0u, 0u).w[0]);
    double cx = drift * cos(angle), cy = drift * sin(angle);
    double z[4];
    xyz_normals4(s, (unsigned int)j, 1u, z);
    for (int q = 0; q < 4; q++) {
        int i = 4 * j + q;
        if (i >= e)
            break;
        double t = (double)i / (double)(e > 1 ? e - 1 : 1) - 0.5;
        out[2 * i] = (float)(cx * t);
        out[2 * i + 1] = (float)(cy * t + z[q] * jitter);
    }
}

#endif
