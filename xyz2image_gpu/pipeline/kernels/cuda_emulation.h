/*
 * Compile a kernel of this folder (*.cu) with a C compiler, for the CPU tests of its
 * indexing: a C file that includes this header and then the .cu file builds the kernel as
 * a C function that runs ONE thread block, the block set by xyz_emu_block() first.
 *
 * The kernels are written as phases separated by __syncthreads(), each inside
 * XYZ_PER_THREAD { ... } (see splat.cu): here that macro loops threadIdx.x over the
 * block, so every thread finishes a phase before any starts the next, which is what the
 * barrier guarantees on the device, and __syncthreads() is then a no-op. __shared__
 * variables are static (one block runs at a time; a block's kernel writes them before it
 * reads them), dynamic shared memory is the buffer given to xyz_emu_block(). Not
 * thread-safe: one launch at a time per loaded build.
 *
 * What the loops cannot show, a missing barrier, is counted instead: a phase that begins
 * without a __syncthreads() since the previous phase adds one to xyz_emu_errors() (the
 * device would let threads of the next phase read what others have not yet written).
 */
#ifndef XYZ_CUDA_EMULATION_H
#define XYZ_CUDA_EMULATION_H

#include <math.h>

#define XYZ_EMULATION 1

typedef struct {
    unsigned int x, y, z;
} xyz_dim3;

static xyz_dim3 threadIdx, blockIdx, blockDim, gridDim;
static void *xyz_emu_shared;
static int xyz_emu_barrier = 1, xyz_emu_missing = 0;

/* A phase begins: there must have been a barrier since the last one. */
static unsigned int xyz_emu_phase(void)
{
    if (!xyz_emu_barrier)
        xyz_emu_missing++;
    xyz_emu_barrier = 0;
    return 0;
}

#define XYZ_KERNEL void
#define XYZ_DEVICE static inline
#define XYZ_PER_THREAD \
    for (threadIdx.x = xyz_emu_phase(); threadIdx.x < blockDim.x; threadIdx.x++)
#define XYZ_DYNAMIC_SHARED(type, name) type *name = (type *)xyz_emu_shared
#define XYZ_FFS(v) __builtin_ffs(v)
#define __shared__ static
#define __syncthreads() ((void)(xyz_emu_barrier = 1))

/* Phases since the last call that began without a barrier before them (and reset). */
int xyz_emu_errors(void)
{
    int n = xyz_emu_missing;
    xyz_emu_missing = 0;
    return n;
}

/* Set the block the next kernel call runs: blockIdx.x = block of a grid of grid blocks of
 * threads threads each, with dynamic shared memory at shared (may be NULL when unused). */
void xyz_emu_block(unsigned int block, unsigned int grid, unsigned int threads, void *shared)
{
    blockIdx.x = block;
    blockIdx.y = blockIdx.z = 0;
    gridDim.x = grid;
    gridDim.y = gridDim.z = 1;
    blockDim.x = threads;
    blockDim.y = blockDim.z = 1;
    threadIdx.x = threadIdx.y = threadIdx.z = 0;
    xyz_emu_shared = shared;
    xyz_emu_barrier = 1; /* the block's first phase needs none */
}

#endif
