// fastxent: fused softmax cross-entropy + argmax / top-k / element accuracy, one kernel.
//
// template <typename T, typename L, bool DENSE, int G, bool SW>
// __global__ void softmax_xent(...)
//
//   T      logits storage: float, double, fx_f16, fx_bf16 (raw 16-bit words, common.cuh)
//   L      labels storage: sparse (DENSE=false) int or long long class ids (the launcher
//          casts narrower / unsigned ids); dense (DENSE=true) float, double, fx_f16, fx_bf16
//          or unsigned char (bool)
//   G      row group: 1 thread, 32 = warp, 0 = block per row (rowgroup.cuh)
//   SW     sample weights given: also accumulates X_SW, X_CAT, X_ELEM, X_EXACT, X_TOPK
//
// Arguments (grouped as in fastxent/backends/cupy_cuda.py)
//   // data ptrs
//   z            logits, element (i, c) at z[i * zs0 + c * zs1]
//   lab          labels: sparse lab[i * ls0]; dense lab[i * ls0 + c * ls1]
//   cw           float64 (C,) class weights or nullptr
//   sw           float64 (N,) sample weights or nullptr (only read when SW)
//   // outputs (one zeroed buffer: a single memset per call)
//   counts       int64 (S_NCOUNTS + K,) count slots (_state.py)
//   exact        int64 (X_NX + K, 68) limbs, raw during the kernel, canonical at the end
//   first_bad    int64 scalar, zeroed: holds LLONG_MAX - (smallest bad row) via atomicMax
//                (so a plain memset initialises it); the epilogue turns it into the row or -1
//   ticket       uint32 scalar: blocks finished (last-block epilogue)
//   row_loss     CT (N,) weighted row loss or nullptr; ignored rows 0
//   row_correct  uint8 (N,) argmax right, or nullptr
//   row_hits     uint8 (N, K) top-k hits, or nullptr
//   // shapes
//   N, C
//   // strides, in elements (64-bit everywhere)
//   zs0, zs1, ls0, ls1
//   // constants
//   flags        bit field F_* below
//   ignore_index sparse id to ignore (with F_IGNORE)
//   lsm          label smoothing: t' = (1 - lsm) t + lsm / C
//   eps          probability clip [eps, 1 - eps] (probabilities only)
//   thr          dense element threshold: predicted positive iff x > thr
//   sum1_tol     config.SUM_TO_ONE_TOL (label statistics)
//   K, k0..k7    top-k values (K <= FX_MAXK)
//
// Per-row math (mirrors tests/reference.py and fastxent/backends/numba_cpu.py):
//   logits:  m = max_c z_c, s = sum_c exp(z_c - m)  (online: when m grows to m', s *= exp(m - m'))
//            loss = sum_{c: t'_c != 0} u_c * ((m - z_c) + log s),  u_c = t'_c (* cw_c if cw_inside)
//            sparse, no smoothing: the single term (m - z_y) + log s (no cancellation for big z)
//   probs:   loss = -sum_{c: t'_c != 0} u_c * log(clip(p_c, eps, 1 - eps)); p_c /= sum p (renorm)
//   weight:  w = sw * cw[y] (dense: sw * sum_c t_c cw_c); cw_inside: w = sw, den = sw * cw[y]
//            (dense: sw); row value = w * loss in float64
//   accuracy: first argmax of z (NaN excluded; a row with any NaN is never right) == y
//            (dense: y = first argmax of t); top-k rank = #{z_c > z_y} + #{c < y: z_c == z_y}
//            (Keras rule with F_ANYTIE: #{z_c > z_y}); hit iff rank < k
//   NaN logit anywhere -> loss NaN; max +-inf -> NaN (as the max-shifted formula gives)
//   bad sparse label (outside [0, C), not ignore_index): never read; first_bad = min row;
//   the row counts with NaN loss, not right. Bad dense row (a label < 0, NaN or inf): same.
//
// Passes per row:
//   1. online (m, s), argmax, sparse top-k rank (z_y is read first), dense label statistics,
//      dense argmax of t, dense element accuracy, dense weight sum_c t_c cw_c
//   2. only for dense labels, label smoothing or renormalised probabilities: the loss terms
//      above (they need the final m and log s / row sum) and the dense top-k rank (needs y).
//      The second read of the row comes from L1/L2 for the sizes a group handles.
#include "rowgroup.cuh"

enum {
    F_FROM_LOGITS = 1, F_CW_INSIDE = 2, F_ANYTIE = 4, F_IGNORE = 8, F_WANT_ROWS = 16,
    F_WEIGHTED = 32, F_VEC = 64, F_RENORM = 128
};

// pass-1 partial of one group member
template <typename CT, bool DENSE>
struct P1 {
    CT m, s, neq;            // online max, sum of exp(x - m) over the terms below m, and the
                             // count of terms equal to m (probabilities with renorm: s = sum p)
    CT av; long long ai;     // first argmax of z (NaN excluded)
    int nan;                 // any NaN logit
    long long rank;          // sparse top-k rank partial
    // dense only
    CT tv; long long ti;     // first argmax of t
    CT tsum;                 // sum t (compute dtype, as the CPU engine)
    double cwsel;            // sum t * cw
    long long n_one, n_nonbin, n_bad, n_elem;

    __device__ void init() {
        m = -(CT)FX_INF; s = 0; neq = 0; av = -(CT)FX_INF; ai = -1; nan = 0; rank = 0;
        tv = -(CT)FX_INF; ti = -1; tsum = 0; cwsel = 0; n_one = n_nonbin = n_bad = n_elem = 0;
    }
    __device__ void shfl_from(const P1& o, int x) {
        m = shfl_x(o.m, x); s = shfl_x(o.s, x); neq = shfl_x(o.neq, x);
        av = shfl_x(o.av, x); ai = shfl_x(o.ai, x);
        nan = shfl_x(o.nan, x); rank = shfl_x(o.rank, x);
        if (DENSE) {
            tv = shfl_x(o.tv, x); ti = shfl_x(o.ti, x); tsum = shfl_x(o.tsum, x); cwsel = shfl_x(o.cwsel, x);
            n_one = shfl_x(o.n_one, x); n_nonbin = shfl_x(o.n_nonbin, x); n_bad = shfl_x(o.n_bad, x);
            n_elem = shfl_x(o.n_elem, x);
        }
    }
    // commutative: both butterfly partners compute bit-identical results
    __device__ void merge(const P1& o, bool logits) {
        if (logits) {
            // a partial whose max is below the merged one turns its maxima into ordinary
            // terms: (s + neq) exp(m - mn), neq 0 (exp(-inf) = 0 for an all -inf partial)
            const CT mn = m > o.m ? m : o.m;
            const CT a = (m == mn) ? s : (s + neq) * fx_exp(m - mn);
            const CT b = (o.m == mn) ? o.s : (o.s + o.neq) * fx_exp(o.m - mn);
            const CT na = (m == mn) ? neq : (CT)0, nb = (o.m == mn) ? o.neq : (CT)0;
            m = mn; s = a + b; neq = na + nb;
        } else {
            s = s + o.s;
        }
        argmax_merge(av, ai, o.av, o.ai);
        nan |= o.nan; rank += o.rank;
        if (DENSE) {
            argmax_merge(tv, ti, o.tv, o.ti);
            tsum += o.tsum; cwsel += o.cwsel; n_one += o.n_one; n_nonbin += o.n_nonbin;
            n_bad += o.n_bad; n_elem += o.n_elem;
        }
    }
};
// group_allreduce wants merge(const S&); the logits flag rides along in a wrapper
template <typename CT, bool DENSE>
struct P1L : P1<CT, DENSE> {
    int logits;
    __device__ void shfl_from(const P1L& o, int x) { P1<CT, DENSE>::shfl_from(o, x); logits = o.logits; }
    __device__ void merge(const P1L& o) { P1<CT, DENSE>::merge(o, logits != 0); }
};

template <typename CT>
struct P2 {
    CT b; long long rank;
    __device__ void shfl_from(const P2& o, int x) { b = shfl_x(o.b, x); rank = shfl_x(o.rank, x); }
    __device__ void merge(const P2& o) { b = b + o.b; rank += o.rank; }
};

template <typename T, typename L, bool DENSE, int G, bool SW>
__global__ void __launch_bounds__(256)
softmax_xent(
    // data ptrs
    const T* __restrict__ z, const L* __restrict__ lab,
    const double* __restrict__ cw, const double* __restrict__ sw,
    // outputs
    long long* __restrict__ counts, long long* __restrict__ exact, long long* first_bad,
    unsigned int* ticket, typename Tr<T>::CT* __restrict__ row_loss,
    unsigned char* __restrict__ row_correct, unsigned char* __restrict__ row_hits,
    // shapes
    long long N, long long C,
    // strides (elements)
    long long zs0, long long zs1, long long ls0, long long ls1,
    // constants
    int flags, long long ignore_index, double lsm, double eps, double thr, double sum1_tol,
    int K, int k0, int k1, int k2, int k3, int k4, int k5, int k6, int k7)
{
    typedef typename Tr<T>::CT CT;
    typedef P1L<CT, DENSE> PA;
    __shared__ PA sc1[32];
    __shared__ P2<CT> sc2[32];
    __shared__ long long sred[(S_NCOUNTS + FX_MAXK + 4 * Tally<SW>::NXQ) * 32];

    const bool logits = flags & F_FROM_LOGITS, cw_inside = flags & F_CW_INSIDE;
    const bool anytie = flags & F_ANYTIE, want_rows = flags & F_WANT_ROWS;
    const bool weighted = flags & F_WEIGHTED, vec = flags & F_VEC, renorm = flags & F_RENORM;
    const int ks[FX_MAXK] = {k0, k1, k2, k3, k4, k5, k6, k7};
    const CT ls = (CT)lsm, lsC = (CT)(lsm / (double)C), one_m_ls = (CT)1 - (CT)lsm;
    const CT ceps = (CT)eps, c1meps = (CT)1 - (CT)eps, cthr = (CT)thr;
    const bool need_p2 = DENSE || lsm != 0.0 || (!logits && renorm);
    const bool lead = Group<G>::lane() == 0;

    Tally<SW> tally;
    tally.zero();

    for (long long i = Group<G>::gid(); i < N; i += Group<G>::ngroups()) {
        const T* row = z + i * zs0;
        const bool rvec = vec && (G != 1);

        // 0. the sparse label: ignored rows count as seen only; bad ids are never read
        long long y = -1;
        bool bad = false;
        CT zy = 0;
        if constexpr (!DENSE) {
            y = (long long)__ldg(lab + i * ls0);
            if ((flags & F_IGNORE) && y == ignore_index) {
                if (lead) {
                    tally.cnt[S_SEEN] += 1;
                    if (want_rows) {
                        row_loss[i] = (CT)0; row_correct[i] = 0;
                        for (int j = 0; j < K; ++j) row_hits[i * K + j] = 0;
                    }
                }
                continue;                                   // uniform across the group
            }
            bad = y < 0 || y >= C;
            if (!bad) zy = (CT)Tr<T>::ld(row + y * zs1);
        }

        // 1. pass 1
        PA a; a.init(); a.logits = logits;
        const L* lrow = DENSE ? lab + i * ls0 : nullptr;
        for_cols<G>(row, C, zs1, rvec, [&](long long c, CT x) {
            if (x != x) { a.nan = 1; }
            else {
                if (x > a.av || a.ai < 0) { a.av = x; a.ai = c; }
                if (logits) {
                    if (x > a.m) { a.s = (a.s + a.neq) * fx_exp(a.m - x); a.neq = (CT)1; a.m = x; }
                    else if (x == a.m) a.neq += (CT)1;              // exp(-inf) = 0 above
                    else if (x > -(CT)FX_INF) a.s += fx_exp(x - a.m);
                } else if (renorm) {
                    a.s += x;
                }
                if (!DENSE) a.rank += (x > zy) || (!anytie && x == zy && c < y);
            }
            if (DENSE) {
                const CT t = LoadL<CT, L>::ld(lrow + c * ls1);
                if (!(t >= (CT)0) || t == (CT)FX_INF) a.n_bad += 1;        // negative, NaN, inf
                if (t > a.tv || a.ti < 0) { a.tv = t; a.ti = c; }
                a.tsum += t;
                a.n_one += (t == (CT)1);
                a.n_nonbin += (t != (CT)0 && t != (CT)1);
                if (cw != nullptr && !cw_inside) a.cwsel += (double)t * __ldg(cw + c);
                a.n_elem += (x == x) && ((x > cthr) == (t > (CT)0.5));
            }
        });
        group_allreduce<G>(a, sc1);

        if (DENSE) { y = a.ti; bad = a.n_bad != 0; if (!bad) zy = (CT)Tr<T>::ld(row + y * zs1); }
        const bool nanrow = a.nan != 0;
        // log(neq + s) as log1p(s + (neq - 1)), as the CPU engine: with a unique max (neq = 1)
        // a confident row's tiny s is not lost in 1 + s (probabilities: a.s = row sum, renorm)
        const CT log_s = logits ? fx_log1p(a.s + (a.neq - (CT)1)) : (CT)0;

        // 2. pass 2: loss terms (and the dense top-k rank, which needs y)
        CT loss;
        long long rank = a.rank;
        if (!need_p2) {
            if (logits) loss = (a.m - zy) + log_s;                          // (m - z_y) + log s
            else { CT p = zy < ceps ? ceps : (zy > c1meps ? c1meps : zy); loss = -fx_log(p); }
        } else {
            P2<CT> b; b.b = 0; b.rank = 0;
            const CT inv = (CT)1 / a.s;
            const bool dk = DENSE && K > 0;
            for_cols<G>(row, C, zs1, rvec, [&](long long c, CT x) {
                const CT t = DENSE ? LoadL<CT, L>::ld(lrow + c * ls1) : (CT)(c == y ? 1 : 0);
                // a_c = (1 - ls) t_c + ls / C, times cw_c inside the row (PyTorch); a class whose
                // a_c is exactly 0 contributes 0, also with a -inf logit (as the CPU engine)
                CT u = one_m_ls * t + lsC;
                if (cw_inside && cw != nullptr) u *= (CT)__ldg(cw + c);
                if (u != (CT)0) {
                    if (logits) b.b += u * ((a.m - x) + log_s);
                    else {
                        CT p = renorm ? x * inv : x;           // as the CPU engine: times 1/sum
                        p = p < ceps ? ceps : (p > c1meps ? c1meps : p);   // NaN stays NaN
                        b.b += u * fx_log(p);
                    }
                }
                if (dk) b.rank += (x > zy) || (!anytie && x == zy && c < y);
            });
            group_allreduce<G>(b, sc2);
            loss = logits ? b.b : -b.b;
            if (DENSE) rank = b.rank;
        }
        if (nanrow || (logits && !(a.m > -(CT)FX_INF && a.m < (CT)FX_INF))) loss = (CT)FX_DNAN;
        (void)ls;

        // 3. accounting (group leader only)
        if (lead) {
            const double s_w = SW ? __ldg(sw + i) : 1.0;
            double w = s_w, den = s_w;
            if (bad) {
                loss = (CT)FX_DNAN;
                atomicMax(first_bad, FX_LLMAX - i);        // max of LLONG_MAX - row = min row
            } else if (cw != nullptr) {
                const double cwy = DENSE ? a.cwsel : __ldg(cw + y);
                if (cw_inside) { w = s_w; den = DENSE ? s_w : s_w * __ldg(cw + y); }
                else { w = s_w * cwy; den = w; }
            }
            const double loss_val = w * (double)loss;
            const bool cat = !bad && !nanrow && a.ai == y;
            bool hit[FX_MAXK];
#pragma unroll
            for (int j = 0; j < FX_MAXK; ++j) hit[j] = !bad && !nanrow && j < K && rank < ks[j];
            tally.cnt[S_SEEN] += 1;
            if (DENSE) label_stats(tally.cnt, a.n_one, a.n_nonbin, (double)a.tsum, sum1_tol);
            tally.count_row(loss_val, weighted, den, s_w, cat, bad ? 0 : a.n_elem, DENSE, C, hit, K, exact);
            if (want_rows) {
                row_loss[i] = (CT)loss_val;
                row_correct[i] = cat;
                for (int j = 0; j < K; ++j) row_hits[i * K + j] = hit[j < FX_MAXK ? j : 0];
            }
        }
    }

    // 4. block totals -> global state; the last block canonicalises
    tally.flush(counts, exact, K, sred);
    last_block_epilogue(exact, X_NX + K, first_bad, ticket);
}

#ifdef FX_INSTANTIATE
// Explicit instantiations for the offline compile check (scripts/check_kernels.sh); at run
// time NVRTC instantiates the name expressions the launcher asks for.
#define FX_SM_G(T, L, D, SW) \
    template __global__ void softmax_xent<T, L, D, 1, SW>(const T*, const L*, const double*, const double*, long long*, long long*, long long*, unsigned int*, Tr<T>::CT*, unsigned char*, unsigned char*, long long, long long, long long, long long, long long, long long, int, long long, double, double, double, double, int, int, int, int, int, int, int, int, int); \
    template __global__ void softmax_xent<T, L, D, 32, SW>(const T*, const L*, const double*, const double*, long long*, long long*, long long*, unsigned int*, Tr<T>::CT*, unsigned char*, unsigned char*, long long, long long, long long, long long, long long, long long, int, long long, double, double, double, double, int, int, int, int, int, int, int, int, int); \
    template __global__ void softmax_xent<T, L, D, 0, SW>(const T*, const L*, const double*, const double*, long long*, long long*, long long*, unsigned int*, Tr<T>::CT*, unsigned char*, unsigned char*, long long, long long, long long, long long, long long, long long, int, long long, double, double, double, double, int, int, int, int, int, int, int, int, int);
// Every logits type x row group x SW with int64 ids and float32 dense labels; the other
// label types once (they only change one load). Keeps the CI check to a few minutes.
#define FX_SM_T(T) \
    FX_SM_G(T, long long, false, false) FX_SM_G(T, long long, false, true) \
    FX_SM_G(T, float, true, false) FX_SM_G(T, float, true, true)
FX_SM_T(float)
FX_SM_T(double)
FX_SM_T(fx_f16)
FX_SM_T(fx_bf16)
FX_SM_G(float, int, false, false)
FX_SM_G(float, double, true, false)
FX_SM_G(float, fx_f16, true, false)
FX_SM_G(float, fx_bf16, true, false)
FX_SM_G(float, unsigned char, true, false)
#endif
