// fastxent: shared device helpers for the CUDA engine (included by every kernels/*.cu).
//
// Compiled at run time by NVRTC through CuPy (fastxent/backends/_cuda_module.py) and at CI
// time by `nvcc -arch=sm_90` (scripts/check_kernels.sh). No CUDA header is included on
// purpose: float16 and bfloat16 are read as raw 16-bit words and widened with one PTX
// instruction / one shift, so NVRTC needs no include path and CuPy needs no bf16 dtype.
//
// Contents
//   1. storage types and their loads (fx_f16, fx_bf16, float, double; 16-byte vector unpack)
//   2. the canonical state layout (must match fastxent/_state.py)
//   3. ExactAcc: exact per-thread accumulation of float64 values into 32-bit limbs
//   4. block reductions of int64 vectors + the "last block canonicalises" epilogue
//   5. per-row accounting shared by the softmax and sigmoid kernels
#pragma once

// NVRTC (what CuPy compiles with at run time) has no <math.h>: no INFINITY, no NAN. Build
// them from their bits (tests/test_nvrtc.py compiles the sources under NVRTC).
#define FX_INF (__int_as_float(0x7f800000))
#define FX_DINF (__longlong_as_double(0x7ff0000000000000LL))
#define FX_DNAN (__longlong_as_double(0x7ff8000000000000LL))
#define FX_LLMAX 0x7fffffffffffffffLL

// ------------------------------------------------------------------------------------------
// 1. storage types. fx_f16 / fx_bf16 are the raw 16-bit words of a half / bfloat16 value.
// ------------------------------------------------------------------------------------------
struct fx_f16 { unsigned short bits; };
struct fx_bf16 { unsigned short bits; };

__device__ __forceinline__ float fx_h2f(unsigned short b) {
    float f;
    asm("{ .reg .b16 h; mov.b16 h, %1; cvt.f32.f16 %0, h; }" : "=f"(f) : "h"(b));
    return f;
}
// bfloat16 is the upper half of a float32: widening is exact.
__device__ __forceinline__ float fx_bf2f(unsigned short b) { return __uint_as_float(((unsigned)b) << 16); }

// Tr<T>: CT is the compute type (float for 16/32-bit inputs, double for double); VEC the
// number of elements in one 16-byte load; unpack() widens the words of one such load.
template <typename T> struct Tr;
template <> struct Tr<float> {
    typedef float CT; enum { VEC = 4 };
    __device__ static float ld(const float* p) { return __ldg(p); }
    __device__ static void unpack(const uint4& v, float* o) {
        o[0] = __uint_as_float(v.x); o[1] = __uint_as_float(v.y);
        o[2] = __uint_as_float(v.z); o[3] = __uint_as_float(v.w);
    }
};
template <> struct Tr<double> {
    typedef double CT; enum { VEC = 2 };
    __device__ static double ld(const double* p) { return __ldg(p); }
    __device__ static void unpack(const uint4& v, double* o) {
        o[0] = __hiloint2double((int)v.y, (int)v.x);
        o[1] = __hiloint2double((int)v.w, (int)v.z);
    }
};
template <> struct Tr<fx_f16> {
    typedef float CT; enum { VEC = 8 };
    __device__ static float ld(const fx_f16* p) { return fx_h2f(__ldg((const unsigned short*)p)); }
    __device__ static void unpack(const uint4& v, float* o) {
        unsigned w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) { o[2 * i] = fx_h2f(w[i] & 0xffffu); o[2 * i + 1] = fx_h2f(w[i] >> 16); }
    }
};
template <> struct Tr<fx_bf16> {
    typedef float CT; enum { VEC = 8 };
    __device__ static float ld(const fx_bf16* p) { return fx_bf2f(__ldg((const unsigned short*)p)); }
    __device__ static void unpack(const uint4& v, float* o) {
        unsigned w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) { o[2 * i] = __uint_as_float(w[i] << 16); o[2 * i + 1] = __uint_as_float(w[i] & 0xffff0000u); }
    }
};

// Dense label / target loads, converted to the logits' compute type CT. bool arrives as
// unsigned char (CuPy bool is one byte).
template <typename CT, typename L> struct LoadL;
template <typename CT> struct LoadL<CT, float> { __device__ static CT ld(const float* p) { return (CT)__ldg(p); } };
template <typename CT> struct LoadL<CT, double> { __device__ static CT ld(const double* p) { return (CT)__ldg(p); } };
template <typename CT> struct LoadL<CT, fx_f16> { __device__ static CT ld(const fx_f16* p) { return (CT)Tr<fx_f16>::ld(p); } };
template <typename CT> struct LoadL<CT, fx_bf16> { __device__ static CT ld(const fx_bf16* p) { return (CT)Tr<fx_bf16>::ld(p); } };
template <typename CT> struct LoadL<CT, int> { __device__ static CT ld(const int* p) { return (CT)__ldg(p); } };
template <typename CT> struct LoadL<CT, long long> { __device__ static CT ld(const long long* p) { return (CT)__ldg(p); } };
template <typename CT> struct LoadL<CT, unsigned char> { __device__ static CT ld(const unsigned char* p) { return (CT)(__ldg(p) != 0); } };

__device__ __forceinline__ float fx_exp(float x) { return __expf(x); }   // hot loop: ex2.approx
__device__ __forceinline__ double fx_exp(double x) { return exp(x); }
__device__ __forceinline__ float fx_log(float x) { return logf(x); }     // once per row: full precision
__device__ __forceinline__ double fx_log(double x) { return log(x); }
__device__ __forceinline__ float fx_log1p(float x) { return log1pf(x); }
__device__ __forceinline__ double fx_log1p(double x) { return log1p(x); }
template <typename CT> __device__ __forceinline__ bool fx_isnan(CT x) { return x != x; }

// ------------------------------------------------------------------------------------------
// 2. canonical state layout (fastxent/_state.py). Slots are int64.
// ------------------------------------------------------------------------------------------
enum {
    S_ROWS = 0, S_SEEN, S_CAT, S_ELEM, S_EXACT, S_ONEHOT, S_SUM1, S_BINARY,
    S_NANLOSS, S_POSINF, S_NEGINF, S_NCOUNTS, S_TOPK = S_NCOUNTS
};
enum { X_LOSS = 0, X_W, X_SW, X_CAT, X_ELEM, X_EXACT, X_NX, X_TOPK = X_NX };
#define FX_NLIMBS 68
#define FX_MAXK 8        // top-k values per launch (the launcher refuses more)

// ------------------------------------------------------------------------------------------
// 3. ExactAcc: exact accumulation of float64 values.
//
// The state holds S = sum_j L_j * 2^(32 j - 1075). A normal double v = M * 2^(E - 1075) with
// M = 2^52 | fraction (53 bits) and E the biased exponent (bias 1023 + 52 fraction bits), i.e.
// v * 2^1075 = M << E; a subnormal is fraction * 2^(1 - 1075), i.e. fraction << 1.
//
// Fast path (registers): a 128-bit fixed point with scale 2^-83, kept as four 32-bit "chunks"
// c[0..3] in int64 registers: value * 2^83 = sum_k c[k] * 2^(32 k). Since 1075 - 83 = 992 =
// 31 * 32, chunk k maps to state limb 31 + k exactly. A value enters the fast path when
// v * 2^83 is an integer below 2^127 in magnitude, i.e. its lowest set bit is >= 2^-83 and
// |v| < 2^44: all practical losses and weights (float32 losses down to ~1e-18; float64
// products down to ~1e-9). Each add splits the two's-complement 128-bit integer into three
// unsigned 32-bit chunks and a signed top chunk; chunks never carry, so 2^31 adds cannot
// overflow an int64 chunk.
//
// Slow path (rare): the value's 84-bit scaled integer goes straight to the global limbs with
// three int64 atomicAdds (signed, exact, order-independent).
// ------------------------------------------------------------------------------------------
struct ExactAcc {
    long long c[4];
    __device__ void zero() { c[0] = c[1] = c[2] = c[3] = 0; }

    // add v; `limbs` is this quantity's global limb row (slow path only)
    __device__ void add(double v, long long* limbs) {
        if (v == 0.0) return;                     // +-0 (NaN/inf are kept out by the caller)
        unsigned long long bits = (unsigned long long)__double_as_longlong(v);
        const bool neg = (bits >> 63) != 0;
        const int E = (int)((bits >> 52) & 0x7ff);
        unsigned long long M = bits & 0xfffffffffffffULL;
        if (E == 0) { slow(M, 1, neg, limbs); return; }  // subnormal: fraction << 1
        M |= 1ULL << 52;
        const int sh = E - 992;                   // v * 2^83 = M * 2^sh
        unsigned long long lo, hi;
        if (sh >= 0) {
            if (sh > 74) { slow(M, E, neg, limbs); return; }       // |v| >= 2^44
            lo = sh >= 64 ? 0 : (M << sh);
            hi = sh == 0 ? 0 : (sh >= 64 ? (M << (sh - 64)) : (M >> (64 - sh)));
        } else {
            if (sh < -52 || (M & ((1ULL << (-sh)) - 1)) != 0) { slow(M, E, neg, limbs); return; }
            lo = M >> (-sh); hi = 0;
        }
        if (neg) {  // two's complement of the 128-bit (hi, lo)
            lo = ~lo + 1ULL; hi = ~hi + (lo == 0 ? 1ULL : 0ULL);
        }
        c[0] += (long long)(lo & 0xffffffffULL);
        c[1] += (long long)(lo >> 32);
        c[2] += (long long)(hi & 0xffffffffULL);
        c[3] += (long long)hi >> 32;              // signed top chunk (arithmetic shift)
    }

    // M * 2^shift (= v * 2^1075; shift = E for normals, 1 for subnormals) into the global limbs.
    __device__ static void slow(unsigned long long M, int shift, bool neg, long long* limbs) {
        const int j = shift >> 5, r = shift & 31;
        // M < 2^53, so M << r < 2^84 spans three limbs
        const unsigned long long lo = M << r;                 // low 64 bits (r <= 31: M<<r may exceed 64 bits)
        const unsigned long long hi = r == 0 ? 0 : (M >> (64 - r));
        long long p0 = (long long)(lo & 0xffffffffULL), p1 = (long long)(lo >> 32), p2 = (long long)hi;
        if (neg) { p0 = -p0; p1 = -p1; p2 = -p2; }
        if (p0) atomicAdd((unsigned long long*)&limbs[j], (unsigned long long)p0);
        if (p1) atomicAdd((unsigned long long*)&limbs[j + 1], (unsigned long long)p1);
        if (p2 && j + 2 < FX_NLIMBS) atomicAdd((unsigned long long*)&limbs[j + 2], (unsigned long long)p2);
    }
};

// ------------------------------------------------------------------------------------------
// 4. reductions
// ------------------------------------------------------------------------------------------
__device__ __forceinline__ long long warp_sum_ll(long long v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Block-reduce NV int64 values per thread and atomically add the block totals into dst[i]
// (skipping zeros). Entries from `first_limb` on are exact-sum limbs: a block total goes in as
// its low 32 bits into dst[i] and the rest (arithmetic shift) into dst[i] + 1, the next limb,
// so that a global limb receives less than 2 * 2^32 per block whatever the row count (one
// block's chunk total can reach rows * 2^32: added whole, ~2^31 rows in one call overflowed).
// `smem` holds at least NV * 32 int64. All threads must call it.
template <int NV>
__device__ void block_flush(const long long (&v)[NV], long long* const (&dst)[NV], long long* smem,
                            int first_limb) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = (blockDim.x + 31) >> 5;
    __syncthreads();
#pragma unroll
    for (int i = 0; i < NV; ++i) {
        long long s = warp_sum_ll(v[i]);
        if (lane == 0) smem[i * 32 + warp] = s;
    }
    __syncthreads();
    for (int i = threadIdx.x; i < NV; i += blockDim.x) {
        long long s = 0;
        for (int w = 0; w < nw; ++w) s += smem[i * 32 + w];   // fixed order (integers anyway)
        if (s == 0 || dst[i] == nullptr) continue;
        if (i < first_limb) {
            atomicAdd((unsigned long long*)dst[i], (unsigned long long)s);
        } else {
            const long long lo = s & 0xffffffffLL, hi = s >> 32;
            if (lo != 0) atomicAdd((unsigned long long*)dst[i], (unsigned long long)lo);
            if (hi != 0) atomicAdd((unsigned long long*)(dst[i] + 1), (unsigned long long)hi);
        }
    }
    __syncthreads();
}

// Epilogue run by every block after its atomics: the last block to finish turns the raw
// limbs into canonical form (limbs 0..66 in [0, 2^32), limb 67 signed) and decodes
// first_bad (stored as LLONG_MAX - row by atomicMax so that zero means "none") into the row or -1. Ticket-counter pattern from the CUDA
// programming guide (threadFenceReduction sample): fence, count, last block reads through L2.
__device__ void last_block_epilogue(long long* exact, int nq, long long* first_bad, unsigned int* ticket) {
    __shared__ bool is_last;
    __threadfence();
    __syncthreads();
    if (threadIdx.x == 0) is_last = atomicAdd(ticket, 1u) == gridDim.x - 1;
    __syncthreads();
    if (!is_last) return;
    __threadfence();
    for (int q = threadIdx.x; q < nq; q += blockDim.x) {
        long long* L = exact + (long long)q * FX_NLIMBS;
        long long carry = 0;
        for (int j = 0; j < FX_NLIMBS - 1; ++j) {
            long long v = __ldcg(&L[j]) + carry;
            L[j] = v & 0xffffffffLL;
            carry = v >> 32;                      // arithmetic: floor(v / 2^32)
        }
        L[FX_NLIMBS - 1] = __ldcg(&L[FX_NLIMBS - 1]) + carry;
    }
    if (threadIdx.x == 0 && first_bad != nullptr) {
        const long long v = __ldcg(first_bad);    // LLONG_MAX - min bad row, or 0 when none
        *first_bad = v == 0 ? -1 : FX_LLMAX - v;
    }
}

// ------------------------------------------------------------------------------------------
// 5. per-row accounting (run by one thread per row, the row's "leader")
// ------------------------------------------------------------------------------------------
// Per-thread tallies. Counters are the state's count slots; the exact accumulators are
// X_LOSS, X_W and, with SW (sample weights), X_SW, X_CAT, X_ELEM, X_EXACT, X_TOPK + j.
template <bool SW>
struct Tally {
    enum { NXQ = SW ? X_NX + FX_MAXK : 2 };
    long long cnt[S_NCOUNTS + FX_MAXK];
    ExactAcc acc[NXQ];
    __device__ void zero() {
#pragma unroll
        for (int i = 0; i < S_NCOUNTS + FX_MAXK; ++i) cnt[i] = 0;
#pragma unroll
        for (int q = 0; q < NXQ; ++q) acc[q].zero();
    }
    // everything that a counted row adds. loss_val = w_i * loss_i (float64), den = the row's
    // loss weight (X_W, only when `weighted`), sw = the sample weight (X_SW and friends).
    __device__ void count_row(double loss_val, bool weighted, double den, double sw, bool cat,
                              long long n_elem, bool has_elem, long long C, const bool* hit, int K,
                              long long* exact) {
        cnt[S_ROWS] += 1;
        if (loss_val != loss_val) cnt[S_NANLOSS] += 1;
        else if (loss_val == FX_DINF) cnt[S_POSINF] += 1;
        else if (loss_val == -FX_DINF) cnt[S_NEGINF] += 1;
        else acc[X_LOSS].add(loss_val, exact + X_LOSS * FX_NLIMBS);
        if (weighted) acc[X_W].add(den, exact + X_W * FX_NLIMBS);
        cnt[S_CAT] += cat;
        if (has_elem) { cnt[S_ELEM] += n_elem; cnt[S_EXACT] += (n_elem == C); }
#pragma unroll
        for (int j = 0; j < FX_MAXK; ++j) if (j < K) cnt[S_TOPK + j] += hit[j];
        if (SW) {
            acc[X_SW % NXQ].add(sw, exact + X_SW * FX_NLIMBS);
            if (cat) acc[X_CAT % NXQ].add(sw, exact + X_CAT * FX_NLIMBS);
            if (has_elem) {
                // sw_i * (elem_correct_i / C) in float64, in the CPU engine's order (the exact
                // sums then agree bit for bit; (sw * n) / C rounds differently for ~1/4 of rows)
                acc[X_ELEM % NXQ].add(sw * ((double)n_elem / (double)C), exact + X_ELEM * FX_NLIMBS);
                if (n_elem == C) acc[X_EXACT % NXQ].add(sw, exact + X_EXACT * FX_NLIMBS);
            }
#pragma unroll
            for (int j = 0; j < FX_MAXK; ++j)
                if (j < K && hit[j]) acc[(X_TOPK + j) % NXQ].add(sw, exact + (X_TOPK + j) * FX_NLIMBS);
        }
    }
    // block-reduce everything into the global state (all threads call it)
    __device__ void flush(long long* counts, long long* exact, int K, long long* smem) {
        enum { NV = S_NCOUNTS + FX_MAXK + 4 * NXQ };
        long long v[NV];
        long long* dst[NV];
#pragma unroll
        for (int i = 0; i < S_NCOUNTS + FX_MAXK; ++i) {
            v[i] = cnt[i];
            dst[i] = (i < S_NCOUNTS + K) ? counts + i : nullptr;
        }
#pragma unroll
        for (int q = 0; q < NXQ; ++q)
#pragma unroll
            for (int k = 0; k < 4; ++k) {
                const int i = S_NCOUNTS + FX_MAXK + 4 * q + k;
                v[i] = acc[q].c[k];
                // chunk k of the 2^-83 fixed point is state limb 31 + k (1075 - 83 = 31 * 32)
                dst[i] = (q < X_NX + K) ? exact + (long long)q * FX_NLIMBS + 31 + k : nullptr;
            }
        block_flush<NV>(v, dst, smem, S_NCOUNTS + FX_MAXK);
    }
};

// Label statistics of one dense label row (task detection): all slots count seen rows.
__device__ __forceinline__ void label_stats(long long* cnt, long long n_one, long long n_nonbin, double tsum,
                                            double tol) {
    const bool binary = n_nonbin == 0;
    cnt[S_BINARY] += binary;
    cnt[S_ONEHOT] += binary && n_one == 1;
    cnt[S_SUM1] += fabs(tsum - 1.0) <= tol;
}

// first index of the maximum (NaN excluded by the caller): (value desc, index asc)
template <typename CT>
__device__ __forceinline__ void argmax_merge(CT& v, long long& i, CT v2, long long i2) {
    if (i2 >= 0 && (i < 0 || v2 > v || (v2 == v && i2 < i))) { v = v2; i = i2; }
}
