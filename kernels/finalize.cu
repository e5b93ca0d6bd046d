// fastxent: reduce a canonical state to the reported scalars on the device (no host sync).
//
// extern "C" __global__ void fx_finalize(...)       launched with 1 block of >= 4 + K threads
//
// Arguments
//   // data ptrs
//   counts     int64 (S_NCOUNTS + K,) canonical count slots (fastxent/_state.py)
//   exact      int64 (X_NX + K, 68) canonical limbs
//   // outputs
//   out        float64 (4 + K,): loss, cat, elem, exact, topk[0..K-1]
//   out_count  int64 scalar: rows counted
//   // shapes
//   K          number of top-k values
//   n_classes  C (ELEM denominator n * max(C, 1))
//   // constants
//   weighted, sample_weighted   the state's flags
//   reduction  0 = mean, 1 = sum
//
// Mirrors fastxent._state.State.scalars() line by line (see the comments at each step).
// Quotients of the exact sums: each operand is normalised to its top 128 bits (relative
// error < 2^-96), both become double-doubles and one double-double division gives the
// quotient; the result is the correctly rounded quotient except when the exact quotient lies
// within ~2^-90 (relative) of a rounding midpoint, where it may differ by one ulp from the
// host's exact Fraction-style division. UNVERIFIED ON A GPU (written without one).
#include "common.cuh"

struct Norm { int sign; unsigned long long hi, lo; int e2; };   // value = sign * (hi:lo) * 2^e2

// canonical limbs (value * 2^-scale_bits) -> Norm (top 128 bits, truncated)
__device__ Norm norm_limbs(const long long* L, int scale_bits) {
    unsigned int m[FX_NLIMBS];
    Norm r; r.sign = L[FX_NLIMBS - 1] < 0 ? -1 : 1; r.hi = r.lo = 0; r.e2 = 0;
    // magnitude: two's complement negate across the limbs when negative
    unsigned long long carry = 1;
    for (int j = 0; j < FX_NLIMBS; ++j) {
        unsigned int v = (unsigned int)(L[j] & 0xffffffffLL);
        if (r.sign < 0) { unsigned long long t = (unsigned long long)(~v) + carry; v = (unsigned int)t; carry = t >> 32; }
        m[j] = v;
    }
    int top = -1;
    for (int j = FX_NLIMBS - 1; j >= 0; --j) if (m[j] != 0) { top = j; break; }
    if (top < 0) { r.sign = 0; return r; }
    unsigned int w[4];
    for (int k = 0; k < 4; ++k) w[k] = (top - k >= 0) ? m[top - k] : 0u;
    r.hi = ((unsigned long long)w[0] << 32) | w[1];
    r.lo = ((unsigned long long)w[2] << 32) | w[3];
    r.e2 = 32 * (top - 3) - scale_bits;
    return r;
}

__device__ Norm norm_u128(unsigned long long hi, unsigned long long lo) {
    Norm r; r.sign = (hi | lo) ? 1 : 0; r.hi = hi; r.lo = lo; r.e2 = 0; return r;
}

// (hi:lo) as a double-double (dh + dl), exact to ~2^-106
__device__ void to_dd(const Norm& n, double& dh, double& dl) {
    const double two64 = 18446744073709551616.0;
    const double a = (double)n.hi;                               // rounded
    const long long ra = (long long)(n.hi - (unsigned long long)a);   // |ra| <= 2^11: exact
    // correct for a rounded above 2^64 - 1: (unsigned long long)a would overflow
    double s, e;
    if (a >= two64) { s = two64 * two64; e = ((double)(long long)(n.hi - 0xffffffffffffffffULL) - 1.0) * two64 + (double)n.lo; }
    else { s = a * two64; e = (double)ra * two64 + (double)n.lo; }
    dh = s + e; dl = e - (dh - s);                               // fast two-sum (|s| >= |e|)
}

// correctly rounded (but see the header) num / den; State.ratio() semantics:
// 0/0 -> NaN, x/0 -> copysign(inf, x), overflow -> +-inf
__device__ double ratio(const Norm& a, const Norm& b) {
    if (b.sign == 0) return a.sign == 0 ? FX_DNAN : (a.sign > 0 ? FX_DINF : -FX_DINF);
    if (a.sign == 0) return 0.0 * (double)b.sign;
    double ah, al, bh, bl;
    to_dd(a, ah, al); to_dd(b, bh, bl);
    const double q1 = ah / bh;
    const double p = q1 * bh, pe = fma(q1, bh, -p);           // q1 * bh exactly = p + pe
    const double r = ((ah - p) - pe + al) - q1 * bl;            // remainder a - q1 * b
    const double q2 = r / bh;
    const double qh = q1 + q2;                                  // rounds once to double
    // scale by 2^(ea - eb); ldexp rounds once more only for subnormal results
    const int e = a.e2 - b.e2;
    double q = ldexp(qh, e);
    if (e > 2100) q = FX_DINF;
    return (a.sign * b.sign) > 0 ? q : -q;
}

__device__ Norm norm_ll(long long v) {
    Norm r = norm_u128(0, (unsigned long long)(v < 0 ? -v : v));
    if (v < 0) r.sign = -1;
    return r;
}

extern "C" __global__ void fx_finalize(
    // data ptrs
    const long long* __restrict__ counts, const long long* __restrict__ exact,
    // outputs
    double* __restrict__ out, long long* __restrict__ out_count,
    // shapes
    int K, long long n_classes,
    // constants
    int weighted, int sample_weighted, int reduction)
{
    const int t = threadIdx.x;
    const long long n = counts[S_ROWS];
    if (t == 0) {
        *out_count = n;
        // loss: NaN/inf from the counters first (kept out of the exact sum)
        const long long nan = counts[S_NANLOSS], pinf = counts[S_POSINF], ninf = counts[S_NEGINF];
        const Norm s_loss = norm_limbs(exact + X_LOSS * FX_NLIMBS, 1075);
        double loss_sum;
        if (nan || (pinf && ninf)) loss_sum = FX_DNAN;
        else if (pinf || ninf) loss_sum = pinf ? FX_DINF : -FX_DINF;
        else loss_sum = ratio(s_loss, norm_ll(1));                      // S_loss / 2^1075
        // den_loss = S_w (weighted) or n * 2^1075
        const Norm den = weighted ? norm_limbs(exact + X_W * FX_NLIMBS, 1075) : norm_ll(n);
        double loss_mean;
        if (isfinite(loss_sum)) loss_mean = ratio(s_loss, den);
        else if (isnan(loss_sum) || den.sign == 0) loss_mean = FX_DNAN;
        else loss_mean = den.sign > 0 ? loss_sum : -loss_sum;
        if (n == 0) loss_mean = FX_DNAN;
        out[0] = reduction == 1 ? loss_sum : loss_mean;
    } else if (t < 4 + K) {
        // cat (1), elem (2), exact (3), topk (4 + j)
        double v;
        if (n == 0) v = FX_DNAN;
        else if (sample_weighted) {
            const int q = t == 1 ? X_CAT : t == 2 ? X_ELEM : t == 3 ? X_EXACT : X_TOPK + (t - 4);
            v = ratio(norm_limbs(exact + (long long)q * FX_NLIMBS, 1075), norm_limbs(exact + X_SW * FX_NLIMBS, 1075));
        } else {
            const int slot = t == 1 ? S_CAT : t == 2 ? S_ELEM : t == 3 ? S_EXACT : S_TOPK + (t - 4);
            Norm d = norm_ll(n);
            if (t == 2) {   // n * max(C, 1) as a 128-bit product
                const unsigned long long c = (unsigned long long)(n_classes > 1 ? n_classes : 1);
                d = norm_u128(__umul64hi((unsigned long long)n, c), (unsigned long long)n * c);
            }
            v = ratio(norm_ll(counts[slot]), d);
        }
        out[t] = v;
    }
}
