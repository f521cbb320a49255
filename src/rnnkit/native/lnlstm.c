/* The pointwise half of one step of a layer-normalised LSTM (rnnkit.nn.cells.LayerNormLSTMCell), forward and
 * backward, for training on the CPU.
 *
 * The caller (rnnkit/native/lnlstm.py) does the matrix products with torch, one per step: a = h W_hh^T going
 * forward, dh = da W_hh going back, and W_hh's gradient as one product over the whole window at the end. What
 * lies between two products is a dozen pointwise ops and two layer norms; through autograd each is a separate
 * op with its own dispatch and its own pass over memory, forward and backward. Here each direction is one pass.
 *
 * One step, for each row (the gates stacked i, f, g, o, each H wide; G = 4H):
 *   a^ = LN(a) = (a - mean(a)) * rstd                                  over the G values of the row
 *   z  = gx + gamma_h * a^ + shift                  gx = LN_ih(x W_ih^T); shift = b_ih + beta_h + b_hh
 *   i, f, o = sigmoid(z_i, z_f, z_o);  g = tanh(z_g)
 *   c' = f * c + i * g
 *   c^ = LN(c') = (c' - mean(c')) * rstd_c                             over the H values
 *   th = tanh(gamma_c * c^ + beta_c);  h' = o * th
 * The forward pass writes what the backward pass needs: a^, rstd, the four activations, c', c^, rstd_c, th.
 *
 * Matrix-product operands may be bfloat16 (under autocast): `a` is read, and `h'` and `da` written, as bf16
 * bit patterns (round to nearest even). Everything pointwise is fp32.
 *
 * Rows are independent, so each pass splits them among OpenMP threads. The library is linked against libgomp.so.1,
 * which torch has already loaded: both share one runtime and one pool of threads, as many as torch's
 * (torch.set_num_threads), instead of two pools competing for the cores. Built without -fopenmp, the pragmas are
 * ignored and each pass runs on one thread.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* The threads a pass uses by default (torch's number): the caller sizes the backward pass's `sums` by it. */
int rnnkit_lnlstm_threads(void) {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

static inline float bf16_load(const uint16_t *p, int64_t k) {
    uint32_t u = (uint32_t)p[k] << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint16_t bf16_round(float f) {
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

/* Clamped, as in lstm.c, so that expf never overflows: with -ffast-math, 1 / (1 + inf) may be a reciprocal
 * estimate refined by a Newton step, which turns inf into NaN. sigmoid(40) is 1 in float, sigmoid(-40) 4e-18. */
static inline float sigmoid(float x) {
    x = fminf(fmaxf(x, -40.0f), 40.0f);
    return 1.0f / (1.0f + expf(-x));
}

/* tanh through expf, which the compiler vectorises; tanh(20) is 1 in float. Computed for |x| and given x's sign:
 * 1 - 2 / (1 + e^2x) for a negative x is 1 - (a number near 2), which holds -1 + tanh's distance to it only to
 * 2.4e-7, four times coarser than floats near -1 can, and 1 - t^2 (the backward pass's) then loses all of it
 * where the gate saturates (a gradient 1e-2 off fp64, against 1e-5 for autograd's, at layer-norm gains of 300). */
static inline float tanh_(float x) {
    const float a = fminf(fabsf(x), 20.0f);
    return copysignf(1.0f - 2.0f / (1.0f + expf(2.0f * a)), x);
}

/* x (n) -> its normalised values in out, returns rstd */
static float layer_norm(const float *x, int64_t n, float eps, float *out) {
    float sum = 0.0f;
    for (int64_t k = 0; k < n; k++) sum += x[k];
    float mean = sum / (float)n, var = 0.0f;
    for (int64_t k = 0; k < n; k++) {
        float d = x[k] - mean;
        var += d * d;
    }
    float rstd = 1.0f / sqrtf(var / (float)n + eps);
    for (int64_t k = 0; k < n; k++) out[k] = (x[k] - mean) * rstd;
    return rstd;
}

/* One step forward for B rows. `a` (B, G) is fp32 or bf16 (a_bf16); gx rows are gx_stride floats apart and h'
 * rows h_stride apart (so both can be views into (B, T, .) tensors); h_bf16, if not NULL, gets h' as bf16. */
int rnnkit_lnlstm_forward(int64_t B, int64_t H, const void *a, int64_t a_bf16, const float *gx, int64_t gx_stride,
                          const float *gamma_h, const float *shift, const float *gamma_c, const float *beta_c,
                          float eps_h, float eps_c, const float *c_prev, float *ahat, float *rstd, float *act,
                          float *c_next, float *chat, float *rstd_c, float *th, float *h_next, int64_t h_stride,
                          uint16_t *h_bf16) {
    const int64_t G = 4 * H;
#pragma omp parallel for schedule(static) if (B > 1)
    for (int64_t b = 0; b < B; b++) {
        float *ah = ahat + b * G, *ac = act + b * G;
        const float *x = gx + b * gx_stride;
        if (a_bf16) {
            const uint16_t *ab = (const uint16_t *)a + b * G;
            for (int64_t k = 0; k < G; k++) ac[k] = bf16_load(ab, k);  /* act as scratch for the fp32 row */
        } else {
            memcpy(ac, (const float *)a + b * G, (size_t)G * sizeof(float));
        }
        rstd[b] = layer_norm(ac, G, eps_h, ah);
        for (int64_t k = 0; k < G; k++) ac[k] = x[k] + gamma_h[k] * ah[k] + shift[k];
        for (int64_t k = 0; k < 2 * H; k++) ac[k] = sigmoid(ac[k]);            /* i, f */
        for (int64_t k = 2 * H; k < 3 * H; k++) ac[k] = tanh_(ac[k]);          /* g */
        for (int64_t k = 3 * H; k < G; k++) ac[k] = sigmoid(ac[k]);            /* o */
        const float *i = ac, *f = ac + H, *g = ac + 2 * H, *o = ac + 3 * H, *c = c_prev + b * H;
        float *cn = c_next + b * H, *ch = chat + b * H, *t = th + b * H, *h = h_next + b * h_stride;
        for (int64_t j = 0; j < H; j++) cn[j] = f[j] * c[j] + i[j] * g[j];
        rstd_c[b] = layer_norm(cn, H, eps_c, ch);
        for (int64_t j = 0; j < H; j++) {
            t[j] = tanh_(gamma_c[j] * ch[j] + beta_c[j]);
            h[j] = o[j] * t[j];
        }
        if (h_bf16)
            for (int64_t j = 0; j < H; j++) h_bf16[b * H + j] = bf16_round(h[j]);
    }
    return 0;
}

/* One step back for B rows, from what the forward pass of that step saved.
 * dL/dh' is dy (rows dy_stride apart; NULL for none) plus dh (B, H; fp32 or bf16 per dh_bf16; NULL for none).
 * dc (B, H) holds dL/dc' on entry and dL/dc on return. Writes dL/dgx (= dL/dz) into dz rows dz_stride apart and
 * dL/da into da (B, G; fp32 or bf16 per da_bf16). sums (2G + 2H) gets this step's share of the parameters'
 * gradients, summed over the B rows: gamma_h (G), shift (G), gamma_c (H), beta_c (H). */
int rnnkit_lnlstm_backward(int64_t B, int64_t H, const float *dy, int64_t dy_stride, const void *dh, int64_t dh_bf16,
                           float *restrict dc, const float *restrict gamma_h, const float *restrict gamma_c,
                           const float *ahat, const float *rstd, const float *act, const float *c_prev,
                           const float *chat, const float *rstd_c, const float *th, float *dz, int64_t dz_stride,
                           void *da, int64_t da_bf16, float *restrict sums, int64_t threads) {
    const int64_t G = 4 * H, S = 2 * G + 2 * H;
    memset(sums, 0, (size_t)(threads * S) * sizeof(float));
#pragma omp parallel num_threads((int)threads) if (B > 1 && threads > 1)
    {
    float dhv[H], dcn[H], dnb[H];  /* dL/dh', dL/dc' and dL/d(gamma_c c^ + beta_c) of one row */
#ifdef _OPENMP
    float *restrict s_gh = sums + omp_get_thread_num() * S;
#else
    float *restrict s_gh = sums;
#endif
    float *restrict s_sh = s_gh + G, *restrict s_gc = s_gh + 2 * G, *restrict s_bc = s_gc + H;
#pragma omp for schedule(static)
    for (int64_t b = 0; b < B; b++) {
        const float *restrict ac = act + b * G;
        const float *restrict i = ac, *restrict f = ac + H, *restrict g = ac + 2 * H, *restrict o = ac + 3 * H;
        const float *restrict c = c_prev + b * H, *restrict ch = chat + b * H, *restrict t = th + b * H;
        const float *restrict ah = ahat + b * G;
        float *restrict z = dz + b * dz_stride, *restrict dcb = dc + b * H;
        if (dy) {
            const float *restrict y = dy + b * dy_stride;
            for (int64_t j = 0; j < H; j++) dhv[j] = y[j];
        } else {
            for (int64_t j = 0; j < H; j++) dhv[j] = 0.0f;
        }
        if (dh && dh_bf16) {
            const uint16_t *restrict hb = (const uint16_t *)dh + b * H;
            for (int64_t j = 0; j < H; j++) dhv[j] += bf16_load(hb, j);
        } else if (dh) {
            const float *restrict hf = (const float *)dh + b * H;
            for (int64_t j = 0; j < H; j++) dhv[j] += hf[j];
        }
        float m1 = 0.0f, m2 = 0.0f;  /* means of dL/dc^ and of dL/dc^ * c^ */
        for (int64_t j = 0; j < H; j++) {
            float n = dhv[j] * o[j] * (1.0f - t[j] * t[j]);
            dnb[j] = n;
            m1 += n * gamma_c[j];
            m2 += n * gamma_c[j] * ch[j];
        }
        m1 /= (float)H;
        m2 /= (float)H;
        for (int64_t j = 0; j < H; j++) {
            s_gc[j] += dnb[j] * ch[j];
            s_bc[j] += dnb[j];
        }
        const float rc = rstd_c[b];
        for (int64_t j = 0; j < H; j++) dcn[j] = dcb[j] + rc * (dnb[j] * gamma_c[j] - m1 - ch[j] * m2);
        float *restrict zi = z, *restrict zf = z + H, *restrict zg = z + 2 * H, *restrict zo = z + 3 * H;
        for (int64_t j = 0; j < H; j++) zi[j] = dcn[j] * g[j] * i[j] * (1.0f - i[j]);
        for (int64_t j = 0; j < H; j++) zf[j] = dcn[j] * c[j] * f[j] * (1.0f - f[j]);
        for (int64_t j = 0; j < H; j++) zg[j] = dcn[j] * i[j] * (1.0f - g[j] * g[j]);
        for (int64_t j = 0; j < H; j++) zo[j] = dhv[j] * t[j] * o[j] * (1.0f - o[j]);
        for (int64_t j = 0; j < H; j++) dcb[j] = dcn[j] * f[j];
        float M1 = 0.0f, M2 = 0.0f;  /* means of dL/da^ and of dL/da^ * a^ */
        for (int64_t k = 0; k < G; k++) {
            float d = z[k] * gamma_h[k];
            M1 += d;
            M2 += d * ah[k];
        }
        M1 /= (float)G;
        M2 /= (float)G;
        for (int64_t k = 0; k < G; k++) {
            s_gh[k] += z[k] * ah[k];
            s_sh[k] += z[k];
        }
        const float r = rstd[b];
        if (da_bf16) {
            uint16_t *restrict out = (uint16_t *)da + b * G;
            for (int64_t k = 0; k < G; k++) out[k] = bf16_round(r * (z[k] * gamma_h[k] - M1 - ah[k] * M2));
        } else {
            float *restrict out = (float *)da + b * G;
            for (int64_t k = 0; k < G; k++) out[k] = r * (z[k] * gamma_h[k] - M1 - ah[k] * M2);
        }
    }
    }
    return 0;
}
