// fastxent: fused sigmoid (binary / multilabel) cross-entropy + element / exact-match accuracy.
//
// template <typename T, typename L, int G, bool SW>
// __global__ void sigmoid_xent(...)
//
//   T   logits storage: float, double, fx_f16, fx_bf16 (common.cuh)
//   L   targets storage: float, double, fx_f16, fx_bf16, unsigned char (bool)
//   G   row group: 1 thread, 32 = warp, 0 = block per row (rowgroup.cuh)
//   SW  sample weights given (X_SW, X_CAT, X_ELEM, X_EXACT)
//
// Arguments (grouped as in fastxent/backends/cupy_cuda.py)
//   // data ptrs
//   z            logits / probabilities, element (i, c) at z[i * zs0 + c * zs1]
//   tg           targets, element (i, c) at tg[i * ts0 + c * ts1]
//   pw           float64 (C,) pos_weight or nullptr
//   colw         float64 (C,) per-column loss weight or nullptr
//   sw           float64 (N,) sample weights (only read when SW)
//   // outputs (one zeroed buffer)
//   counts, exact, first_bad, ticket     as in softmax_xent.cu
//   row_loss     CT (N,) weighted row loss, or nullptr
//   row_correct  uint8 (N,) whole row right (exact match), or nullptr
//   row_elem     CT (N,) share of right elements, or nullptr
//   // shapes
//   N, C
//   // strides (elements)
//   zs0, zs1, ts0, ts1
//   // constants
//   flags        F_FROM_LOGITS | F_WANT_ROWS | F_WEIGHTED | F_VEC (as softmax_xent.cu) | F_WANT_CAT
//   lsm          label smoothing: t' = (1 - lsm) t + lsm / 2
//   eps          probability clip [eps, 1 - eps] (probabilities; 0 disables)
//   log_floor    each log term of the probability loss is floored here (-inf disables)
//   thr          predicted positive iff x > thr (logit or probability, compute dtype)
//   sum1_tol     config.SUM_TO_ONE_TOL (label statistics)
//
// Per-element math (tests/reference.py):
//   logits: soft = log1p(exp(-|x|))
//     no pos_weight:  e = max(x, 0) - x t' + soft                     (stable BCE-with-logits)
//     pos_weight pw:  e = -(pw t' log sigmoid(x) + (1 - t') log(1 - sigmoid(x)))
//                     with log sigmoid(x) = -(soft + max(-x, 0)), log(1 - sigmoid(x)) = -(soft + max(x, 0))
//   probs:  p = clip(x, eps, 1 - eps); e = -(pw t' max(log p, floor) + (1 - t') max(log(1 - p), floor))
//   e *= colw[c]; row loss = sum_c e / C (Keras: mean over the row's labels); value = sw * loss
//   right_c = x not NaN and (x > thr) == (t > 0.5); exact match iff all C right
//   CAT (F_WANT_CAT): one-hot label rows whose first argmax of x is the label's 1 (diagnostics)
//   bad target (outside [0, 1] or NaN): first_bad = min row, the row's loss NaN
//
// One pass per row: every quantity above is a sum or an argmax over the row's elements.
#include "rowgroup.cuh"

enum { F_FROM_LOGITS = 1, F_WANT_ROWS = 16, F_WEIGHTED = 32, F_VEC = 64, F_WANT_CAT = 256 };

template <typename CT>
struct SP {
    CT e;                     // sum of element losses
    CT av; long long ai;      // first argmax of x (NaN excluded)
    CT tv; long long ti;      // first argmax of t
    int nan;
    CT tsum;
    long long n_right, n_one, n_nonbin, n_bad;
    __device__ void init() {
        e = 0; av = -(CT)FX_INF; ai = -1; tv = -(CT)FX_INF; ti = -1; nan = 0; tsum = 0;
        n_right = n_one = n_nonbin = n_bad = 0;
    }
    __device__ void shfl_from(const SP& o, int x) {
        e = shfl_x(o.e, x); av = shfl_x(o.av, x); ai = shfl_x(o.ai, x); tv = shfl_x(o.tv, x);
        ti = shfl_x(o.ti, x); nan = shfl_x(o.nan, x); tsum = shfl_x(o.tsum, x);
        n_right = shfl_x(o.n_right, x); n_one = shfl_x(o.n_one, x);
        n_nonbin = shfl_x(o.n_nonbin, x); n_bad = shfl_x(o.n_bad, x);
    }
    __device__ void merge(const SP& o) {
        e = e + o.e;
        argmax_merge(av, ai, o.av, o.ai); argmax_merge(tv, ti, o.tv, o.ti);
        nan |= o.nan; tsum += o.tsum; n_right += o.n_right; n_one += o.n_one;
        n_nonbin += o.n_nonbin; n_bad += o.n_bad;
    }
};

template <typename T, typename L, int G, bool SW>
__global__ void __launch_bounds__(256)
sigmoid_xent(
    // data ptrs
    const T* __restrict__ z, const L* __restrict__ tg,
    const double* __restrict__ pw, const double* __restrict__ colw, const double* __restrict__ sw,
    // outputs
    long long* __restrict__ counts, long long* __restrict__ exact, long long* first_bad,
    unsigned int* ticket, typename Tr<T>::CT* __restrict__ row_loss,
    unsigned char* __restrict__ row_correct, typename Tr<T>::CT* __restrict__ row_elem,
    // shapes
    long long N, long long C,
    // strides (elements)
    long long zs0, long long zs1, long long ts0, long long ts1,
    // constants
    int flags, double lsm, double eps, double log_floor, double thr, double sum1_tol)
{
    typedef typename Tr<T>::CT CT;
    __shared__ SP<CT> sc[32];
    __shared__ long long sred[(S_NCOUNTS + FX_MAXK + 4 * Tally<SW>::NXQ) * 32];

    const bool logits = flags & F_FROM_LOGITS, want_rows = flags & F_WANT_ROWS;
    const bool weighted = flags & F_WEIGHTED, vec = flags & F_VEC;
    const CT one_m_ls = (CT)1 - (CT)lsm, ls2 = (CT)(lsm / 2.0);
    const CT ceps = (CT)eps, c1meps = (CT)1 - (CT)eps, cthr = (CT)thr, cfloor = (CT)log_floor;
    const bool lead = Group<G>::lane() == 0;
    const bool no_hit[FX_MAXK] = {false, false, false, false, false, false, false, false};

    Tally<SW> tally;
    tally.zero();

    for (long long i = Group<G>::gid(); i < N; i += Group<G>::ngroups()) {
        const T* row = z + i * zs0;
        const L* trow = tg + i * ts0;
        SP<CT> a; a.init();
        // 1. the only pass
        for_cols<G>(row, C, zs1, vec && G != 1, [&](long long c, CT x) {
            const CT t = LoadL<CT, L>::ld(trow + c * ts1);
            if (!(t >= (CT)0 && t <= (CT)1)) a.n_bad += 1;
            const CT ts = one_m_ls * t + ls2;
            CT e;
            // coefficients of the two terms; a zero coefficient contributes exactly 0
            const CT ca = (pw == nullptr ? (CT)1 : (CT)__ldg(pw + c)) * ts, cb = (CT)1 - ts;
            if (logits) {
                const CT ax = x < (CT)0 ? -x : x;
                const CT soft = fx_log1p(x != x ? x : fx_exp(-ax));      // log1p(exp(-|x|))
                const CT spn = (x < (CT)0 ? -x : (CT)0) + soft;           // softplus(-x) = -log sigmoid(x)
                const CT spp = (x > (CT)0 ? x : (CT)0) + soft;            // softplus(x) = -log(1 - sigmoid(x))
                e = (ca != (CT)0 ? ca * spn : (CT)0) + (cb != (CT)0 ? cb * spp : (CT)0);
                if (x != x) e = x;
            } else {
                CT p = x;
                if (ceps > (CT)0) p = p < ceps ? ceps : (p > c1meps ? c1meps : p);   // NaN stays NaN
                CT lp = fx_log(p), l1p = fx_log1p(-p);   // log(1 - p) loses small p (CPU: log1p too)
                lp = lp < cfloor ? cfloor : lp; l1p = l1p < cfloor ? cfloor : l1p;
                e = -((ca != (CT)0 ? ca * lp : (CT)0) + (cb != (CT)0 ? cb * l1p : (CT)0));
                if (x != x) e = x;
            }
            if (colw != nullptr) e *= (CT)__ldg(colw + c);
            a.e += e;
            if (x != x) a.nan = 1;
            else if (x > a.av || a.ai < 0) { a.av = x; a.ai = c; }
            if (t > a.tv || a.ti < 0) { a.tv = t; a.ti = c; }
            a.n_right += (x == x) && ((x > cthr) == (t > (CT)0.5));
            a.tsum += t;
            a.n_one += (t == (CT)1);
            a.n_nonbin += (t != (CT)0 && t != (CT)1);
        });
        group_allreduce<G>(a, sc);

        // 2. accounting (group leader only)
        if (lead) {
            const bool bad = a.n_bad != 0;
            double loss = (double)a.e / (double)C;   // float64 divide (CPU: its C > 32 general kernel; tile/lean kernels round to float32)
            if (a.nan || bad) loss = FX_DNAN;
            if (bad) atomicMax(first_bad, FX_LLMAX - i);   // see softmax_xent.cu
            const double s_w = SW ? __ldg(sw + i) : 1.0;
            const double loss_val = s_w * loss;
            // CAT over one-hot label rows only (the one-hot-trap warning needs every row one-hot; the
            // CPU engine skips the argmax passes elsewhere); bad targets do not change it
            const bool cat = (flags & F_WANT_CAT) && !a.nan && a.n_nonbin == 0 && a.n_one == 1
                             && a.ai == a.ti;
            tally.cnt[S_SEEN] += 1;
            label_stats(tally.cnt, a.n_one, a.n_nonbin, (double)a.tsum, sum1_tol);
            const long long n_right = a.n_right;
            tally.count_row(loss_val, weighted, s_w, s_w, cat, n_right, true, C, no_hit, 0, exact);
            if (want_rows) {
                row_loss[i] = (CT)loss_val;
                row_correct[i] = n_right == C;
                row_elem[i] = (CT)((double)n_right / (double)C);
            }
        }
    }

    // 3. block totals -> global state; the last block canonicalises
    tally.flush(counts, exact, 0, sred);
    last_block_epilogue(exact, X_NX, first_bad, ticket);
}

#ifdef FX_INSTANTIATE
#define FX_SG_G(T, L, SW) \
    template __global__ void sigmoid_xent<T, L, 1, SW>(const T*, const L*, const double*, const double*, const double*, long long*, long long*, long long*, unsigned int*, Tr<T>::CT*, unsigned char*, Tr<T>::CT*, long long, long long, long long, long long, long long, long long, int, double, double, double, double, double); \
    template __global__ void sigmoid_xent<T, L, 32, SW>(const T*, const L*, const double*, const double*, const double*, long long*, long long*, long long*, unsigned int*, Tr<T>::CT*, unsigned char*, Tr<T>::CT*, long long, long long, long long, long long, long long, long long, int, double, double, double, double, double); \
    template __global__ void sigmoid_xent<T, L, 0, SW>(const T*, const L*, const double*, const double*, const double*, long long*, long long*, long long*, unsigned int*, Tr<T>::CT*, unsigned char*, Tr<T>::CT*, long long, long long, long long, long long, long long, long long, int, double, double, double, double, double);
#define FX_SG_T(T) FX_SG_G(T, float, false) FX_SG_G(T, float, true)
FX_SG_T(float)
FX_SG_T(double)
FX_SG_T(fx_f16)
FX_SG_T(fx_bf16)
FX_SG_G(float, double, false)
FX_SG_G(float, fx_f16, false)
FX_SG_G(float, fx_bf16, false)
FX_SG_G(float, unsigned char, false)
#endif
