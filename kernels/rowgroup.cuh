// fastxent: row groups, the unit that owns one row (included by softmax_xent.cu, sigmoid_xent.cu).
//
// G = 1  : one thread per row (small C, <= 32 classes)
// G = 32 : one warp per row (mid C)
// G = 0  : the whole block per row (large C); blockDim.x threads, any multiple of 32
//
// Every group member walks its share of the row's columns, in increasing column order, with
// 16-byte vector loads when the launcher says the rows are contiguous and 16-byte aligned
// (flag `vec`), and then the members combine their partial results with `group_allreduce`, a
// deterministic butterfly (warp) followed by a fixed-order fold over warps (block), after
// which every member holds the row's result.
#pragma once
#include "common.cuh"

template <int G> struct Group {
    __device__ static int lane() { return G == 0 ? (int)threadIdx.x : (G == 1 ? 0 : (int)(threadIdx.x & (G - 1))); }
    __device__ static int width() { return G == 0 ? (int)blockDim.x : G; }
    // index of this group among all groups of the grid, and the number of groups
    __device__ static long long gid() {
        return G == 0 ? (long long)blockIdx.x
                      : ((long long)blockIdx.x * blockDim.x + threadIdx.x) / (G == 0 ? 1 : G);
    }
    __device__ static long long ngroups() {
        return G == 0 ? (long long)gridDim.x : ((long long)gridDim.x * blockDim.x) / (G == 0 ? 1 : G);
    }
};

// S must provide: void shfl_from(const S& self, int xor_offset) (fills *this from the partner
// lane) and void merge(const S& other) (commutative). `scratch` is shared memory for 32 S.
template <int G, typename S>
__device__ __forceinline__ void group_allreduce(S& s, S* scratch) {
    if constexpr (G != 1) {
#pragma unroll
        for (int o = 16; o > 0; o >>= 1) {
            S t; t.shfl_from(s, o); s.merge(t);
        }
    }
    if constexpr (G == 0) {
        const int warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
        __syncthreads();                       // scratch may still be read by a previous call
        if ((threadIdx.x & 31) == 0) scratch[warp] = s;
        __syncthreads();
        s = scratch[0];
        for (int w = 1; w < nw; ++w) s.merge(scratch[w]);   // same order in every thread
    }
}

template <typename V>
__device__ __forceinline__ V shfl_x(V v, int o) { return __shfl_xor_sync(0xffffffffu, v, o); }

// Visit the columns owned by this member: f(c, x) with x the widened logit of column c.
// vec: row start 16-byte aligned and unit column stride (checked by the launcher).
template <int G, typename T, typename F>
__device__ __forceinline__ void for_cols(const T* row, long long C, long long cs, bool vec, F&& f) {
    typedef typename Tr<T>::CT CT;
    const int lane = Group<G>::lane(), W = Group<G>::width();
    long long c0 = 0;
    if (vec && G != 1) {
        const int V = Tr<T>::VEC;
        const long long nv = C / V;
        const uint4* rv = (const uint4*)row;
#pragma unroll 4
        for (long long q = lane; q < nv; q += W) {
            const uint4 raw = __ldg(rv + q);
            CT x[Tr<T>::VEC];
            Tr<T>::unpack(raw, x);
#pragma unroll
            for (int k = 0; k < Tr<T>::VEC; ++k) f(q * V + k, x[k]);
        }
        c0 = nv * V;
    }
    for (long long c = c0 + lane; c < C; c += W) f(c, (CT)Tr<T>::ld(row + c * cs));
}
