/* Stepping and sampling an LSTM language model (embedding -> L LSTM layers -> linear head) token by token.
 *
 * Built by rnnkit.native.build with the system C compiler (-O3 -march=native -ffast-math) and called through
 * ctypes: one call per token (rnnkit_lstm_step) or one call per run of tokens (rnnkit_lstm_generate), so no
 * Python and no per-op dispatch sits between two tokens. Plain C on purpose: the compiler turns the dot products
 * into the machine's vector instructions (vpdpbusd on AVX-512 VNNI) and expf into glibc's vector expf. The large
 * matrix-vector products split their weight rows among OpenMP threads, torch's pool (as lnlstm.c explains); each
 * output is one thread's whole dot product, so the result does not depend on the number of threads.
 *
 * Layout (prepared in rnnkit/native/sampler.py; torch's gate order i, f, g, o, each H wide):
 *   table   (V, 4H)  layer 0's input half: embedding @ W_ih0^T + b_ih0 + b_hh0, one row per token
 *   w[0]    (4H, H)  layer 0's W_hh
 *   w[l]    (4H, 2H) layer l >= 1: [W_ih | W_hh], applied to [h_{l-1} (this step) | h_l (last step)]
 *   bias[l] (4H)     layer l >= 1: b_ih + b_hh
 *   head_w  (V, H), head_b (V)  fp32 always (small)
 * int8 weights: one symmetric scale per row (w = scale * q, q in [-127, 127]) and the row sums of q; the input
 * vector is quantised per call with one symmetric scale, stored as unsigned (q + 128) for the u8 x s8 dot.
 * States h, c: (L, B, H) fp32, updated in place.
 *
 * A layer-normalised LSTM (`ln`, rnnkit.nn.cells.LayerNormLSTMCell) normalises each product on its own, so its
 * two products stay apart:
 *   table   (V, 4H)  layer 0: LN_ih(embedding @ W_ih0^T) + shift0, one row per token (LN_ih's gain and offset in)
 *   w[l]    (4H, H)  W_hh of every layer;  w_in[l] (4H, H): W_ih of layers l >= 1
 *   bias[l] (4H)     shift = b_ih + b_hh + LN_hh's offset, layers l >= 1
 *   z = [LN_ih(W_ih x) * ln_in_g + ln_in_b] + LN(W_hh h) * ln_h_g + shift;  c' = sig(f) c + sig(i) tanh(g);
 *   h' = sig(o) tanh(LN(c') * ln_c_g + ln_c_b), where LN(v) = (v - mean(v)) / sqrt(var(v) + eps).
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define MAX_LAYERS 16

typedef struct {
    int64_t layers, hidden, vocab;
    int64_t int8;
    const float *table;
    const void *w[MAX_LAYERS];
    const float *scale[MAX_LAYERS];
    const int32_t *rowsum[MAX_LAYERS];
    const float *bias[MAX_LAYERS];
    const float *head_w, *head_b;
    int64_t ln;
    const void *w_in[MAX_LAYERS];
    const float *scale_in[MAX_LAYERS];
    const int32_t *rowsum_in[MAX_LAYERS];
    const float *ln_in_g[MAX_LAYERS], *ln_in_b[MAX_LAYERS], *ln_h_g[MAX_LAYERS], *ln_c_g[MAX_LAYERS],
        *ln_c_b[MAX_LAYERS];
    float eps_in, eps_h, eps_c;
} lstm_model;

static float dot_f32(const float *a, const float *b, int64_t n) {
    float acc = 0.0f;
    for (int64_t k = 0; k < n; k++) acc += a[k] * b[k];
    return acc;
}

static int32_t dot_u8s8(const uint8_t *a, const int8_t *b, int64_t n) {
    int32_t acc = 0;
    for (int64_t k = 0; k < n; k++) acc += (int32_t)a[k] * (int32_t)b[k];
    return acc;
}

/* x (B, K) fp32 -> xq (B, K) as q + 128 and xs (B) scales */
static void quantize(const float *x, int64_t B, int64_t K, uint8_t *xq, float *xs) {
    for (int64_t b = 0; b < B; b++) {
        const float *v = x + b * K;
        float m = 0.0f;
        for (int64_t k = 0; k < K; k++) m = fmaxf(m, fabsf(v[k]));
        float s = m > 0.0f ? m / 127.0f : 1.0f, inv = 1.0f / s;
        for (int64_t k = 0; k < K; k++) xq[b * K + k] = (uint8_t)(int32_t)(lrintf(v[k] * inv) + 128);
        xs[b] = s;
    }
}

/* Products of at least this many multiply-adds split their weight rows among OpenMP threads: a 2048 x 512 matrix
 * at batch 1 (1M) does, the head (65 x 512) does not. */
#define PARALLEL_MIN (1 << 18)

/* y (B, N) += x (B, K) @ W^T for weights W (N, K), fp32 or int8 with its row scales and row sums; each weight
 * row is read once for all B rows. Large products split the rows among threads (torch's pool: see lnlstm.c). */
static void matvec_w(int64_t int8, const void *weights, const float *scale, const int32_t *rowsum, const float *x,
                     int64_t B, int64_t N, int64_t K, float *y, uint8_t *xq, float *xs) {
    const int parallel = N * K * B >= PARALLEL_MIN;
    (void)parallel;  /* unused where OpenMP is not */
    if (int8) {
        const int8_t *w = (const int8_t *)weights;
        quantize(x, B, K, xq, xs);
#pragma omp parallel for schedule(static) if (parallel)
        for (int64_t r = 0; r < N; r++)
            for (int64_t b = 0; b < B; b++) {
                int32_t acc = dot_u8s8(xq + b * K, w + r * K, K) - 128 * rowsum[r];
                y[b * N + r] += scale[r] * xs[b] * (float)acc;
            }
    } else {
        const float *w = (const float *)weights;
#pragma omp parallel for schedule(static) if (parallel)
        for (int64_t r = 0; r < N; r++)
            for (int64_t b = 0; b < B; b++) y[b * N + r] += dot_f32(x + b * K, w + r * K, K);
    }
}

/* the same with layer l's W_hh (or [W_ih | W_hh]) */
static void matvec(const lstm_model *m, int l, const float *x, int64_t B, int64_t N, int64_t K, float *y,
                   uint8_t *xq, float *xs) {
    matvec_w(m->int8, m->w[l], m->scale[l], m->rowsum[l], x, B, N, K, y, xq, xs);
}

/* Clamped so that expf never overflows: with -ffast-math, 1 / (1 + inf) may be a reciprocal estimate refined by a
 * Newton step, which turns inf into NaN. sigmoid(40) is 1 in float and sigmoid(-40) is 4e-18. */
static inline float sigmoid(float v) {
    v = fminf(fmaxf(v, -40.0f), 40.0f);
    return 1.0f / (1.0f + expf(-v));
}

/* gates (4H) -> c, h in place: c = sig(f) c + sig(i) tanh(g), h = sig(o) tanh(c), tanh(v) = 2 sig(2v) - 1 */
static void lstm_pointwise(const float *gates, int64_t H, float *h, float *c) {
    const float *gi = gates, *gf = gates + H, *gg = gates + 2 * H, *go = gates + 3 * H;
    for (int64_t j = 0; j < H; j++) {
        float cj = sigmoid(gf[j]) * c[j] + sigmoid(gi[j]) * (2.0f * sigmoid(2.0f * gg[j]) - 1.0f);
        c[j] = cj;
        h[j] = sigmoid(go[j]) * (2.0f * sigmoid(2.0f * cj) - 1.0f);
    }
}

/* v (n) <- (v - mean(v)) / sqrt(var(v) + eps) * g (+ b where b is not NULL) */
static void layer_norm(float *v, int64_t n, float eps, const float *g, const float *b) {
    float sum = 0.0f, var = 0.0f;
    for (int64_t k = 0; k < n; k++) sum += v[k];
    float mean = sum / (float)n;
    for (int64_t k = 0; k < n; k++) var += (v[k] - mean) * (v[k] - mean);
    float rstd = 1.0f / sqrtf(var / (float)n + eps);
    if (b)
        for (int64_t k = 0; k < n; k++) v[k] = (v[k] - mean) * rstd * g[k] + b[k];
    else
        for (int64_t k = 0; k < n; k++) v[k] = (v[k] - mean) * rstd * g[k];
}

/* Scratch for one step at batch B: gates (B, 4H), layer input (B, 2H), the input half of a layer-normalised
 * layer (B, 4H), quantised input, scales. */
typedef struct {
    float *gates, *input, *gin, *xs;
    uint8_t *xq;
} scratch;

static int scratch_alloc(scratch *s, int64_t B, int64_t H) {
    s->gates = malloc(sizeof(float) * B * 4 * H);
    s->input = malloc(sizeof(float) * B * 2 * H);
    s->gin = malloc(sizeof(float) * B * 4 * H);
    s->xs = malloc(sizeof(float) * B);
    s->xq = malloc((size_t)(B * 2 * H));
    return s->gates && s->input && s->gin && s->xs && s->xq;
}

static void scratch_free(scratch *s) {
    free(s->gates);
    free(s->input);
    free(s->gin);
    free(s->xs);
    free(s->xq);
}

/* One layer-normalised layer l for B rows: h_l, c_l advance in place; `below` is layer l - 1's new h (l >= 1) */
static void ln_layer(const lstm_model *m, int l, const int64_t *tokens, int64_t B, const float *below, float *hl,
                     float *cl, scratch *s) {
    const int64_t H = m->hidden, G = 4 * H;
    memset(s->gates, 0, sizeof(float) * B * G);
    matvec(m, l, hl, B, G, H, s->gates, s->xq, s->xs);  /* W_hh h */
    if (l > 0) {
        memset(s->gin, 0, sizeof(float) * B * G);
        matvec_w(m->int8, m->w_in[l], m->scale_in[l], m->rowsum_in[l], below, B, G, H, s->gin, s->xq, s->xs);
    }
    for (int64_t b = 0; b < B; b++) {
        float *z = s->gates + b * G, *gx = s->gin + b * G;
        layer_norm(z, G, m->eps_h, m->ln_h_g[l], NULL);
        if (l == 0) {
            const float *row = m->table + tokens[b] * G;
            for (int64_t k = 0; k < G; k++) z[k] += row[k];
        } else {
            layer_norm(gx, G, m->eps_in, m->ln_in_g[l], m->ln_in_b[l]);
            for (int64_t k = 0; k < G; k++) z[k] += gx[k] + m->bias[l][k];
        }
        const float *zi = z, *zf = z + H, *zg = z + 2 * H, *zo = z + 3 * H;
        float *hb = hl + b * H, *cb = cl + b * H;
        for (int64_t j = 0; j < H; j++)
            cb[j] = sigmoid(zf[j]) * cb[j] + sigmoid(zi[j]) * (2.0f * sigmoid(2.0f * zg[j]) - 1.0f);
        memcpy(hb, cb, sizeof(float) * H);
        layer_norm(hb, H, m->eps_c, m->ln_c_g[l], m->ln_c_b[l]);
        for (int64_t j = 0; j < H; j++) hb[j] = sigmoid(zo[j]) * (2.0f * sigmoid(2.0f * hb[j]) - 1.0f);
    }
}

/* One step: tokens (B) -> logits (B, V); h, c (L, B, H) advance in place. */
static void step(const lstm_model *m, const int64_t *tokens, int64_t B, float *h, float *c, float *logits,
                 scratch *s) {
    const int64_t H = m->hidden, G = 4 * H, V = m->vocab;
    for (int64_t l = 0; l < m->layers; l++) {
        float *hl = h + l * B * H, *cl = c + l * B * H;
        if (m->ln) {
            ln_layer(m, (int)l, tokens, B, l > 0 ? h + (l - 1) * B * H : NULL, hl, cl, s);
            continue;
        }
        if (l == 0) {
            for (int64_t b = 0; b < B; b++) memcpy(s->gates + b * G, m->table + tokens[b] * G, sizeof(float) * G);
            matvec(m, 0, hl, B, G, H, s->gates, s->xq, s->xs);
        } else {
            const float *below = h + (l - 1) * B * H;  /* already this step's */
            for (int64_t b = 0; b < B; b++) {
                memcpy(s->input + b * 2 * H, below + b * H, sizeof(float) * H);
                memcpy(s->input + b * 2 * H + H, hl + b * H, sizeof(float) * H);
                memcpy(s->gates + b * G, m->bias[l], sizeof(float) * G);
            }
            matvec(m, (int)l, s->input, B, G, 2 * H, s->gates, s->xq, s->xs);
        }
        for (int64_t b = 0; b < B; b++) lstm_pointwise(s->gates + b * G, H, hl + b * H, cl + b * H);
    }
    const float *top = h + (m->layers - 1) * B * H;
    for (int64_t b = 0; b < B; b++)
        for (int64_t v = 0; v < V; v++) logits[b * V + v] = m->head_b[v] + dot_f32(top + b * H, m->head_w + v * H, H);
}

static int in_vocabulary(const lstm_model *m, const int64_t *tokens, int64_t B) {
    for (int64_t b = 0; b < B; b++)
        if (tokens[b] < 0 || tokens[b] >= m->vocab) return 0;
    return 1;
}

/* Returns 0, 1 when scratch could not be allocated, 2 when a token is outside the vocabulary. */
int rnnkit_lstm_step(const lstm_model *m, const int64_t *tokens, int64_t B, float *h, float *c, float *logits) {
    if (!in_vocabulary(m, tokens, B)) return 2;
    scratch s;
    if (!scratch_alloc(&s, B, m->hidden)) {
        scratch_free(&s);
        return 1;
    }
    step(m, tokens, B, h, c, logits, &s);
    scratch_free(&s);
    return 0;
}

/* Sampling from one row of logits, as rnnkit.generate.next_token does with torch ops: temperature 0 takes the
 * first largest logit; otherwise logits / temperature, then top-k keeps the logits >= the k-th largest, then top-p
 * keeps, in order of decreasing probability, the tokens whose preceding mass is < p, and u in [0, 1) picks from the
 * renormalised probabilities by their cumulative sum in token order. One difference: where several tokens tie
 * exactly at top-p's cut, all of them are kept (torch keeps those its sort happened to rank first). */

static int desc(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

/* probs (V) <- the filtered, normalised distribution of logits (V); order (V) is scratch. No infinities are used
 * (the file is built with -ffast-math): a dropped token gets probability 0. */
int rnnkit_filter_probs(const float *logits, int64_t V, float temperature, int64_t top_k, float top_p,
                        float *probs, float *order) {
    /* z = (logit - max) / temperature, computed once. Built with -ffast-math, this code may assume there are no
     * infinities (and divide by multiplying with 1 / temperature), and a tiny temperature would make them. So the
     * temperature is at least 1e-30, where 1 / t is finite and a draw is already greedy for logits more than
     * 1e-28 apart; and a difference below -1e38 t gets -FLT_MAX (its probability is 0 either way). Every z is
     * then finite, and the most likely token's is 0. */
    float top = logits[0];
    for (int64_t v = 1; v < V; v++) top = fmaxf(top, logits[v]);
    const float t = fmaxf(temperature, 1e-30f), lo = t >= 1.0f ? -1e38f : -1e38f * t;
    for (int64_t v = 0; v < V; v++) {
        float d = logits[v] - top;
        probs[v] = d >= lo ? d / t : -FLT_MAX;
    }
    float mx = 0.0f, kth = 0.0f;
    int by_rank = top_k > 0 && top_k < V;
    if (by_rank) {
        memcpy(order, probs, sizeof(float) * V);
        qsort(order, (size_t)V, sizeof(float), desc);
        kth = order[top_k - 1];
    }
    float total = 0.0f;
    for (int64_t v = 0; v < V; v++) {
        probs[v] = by_rank && probs[v] < kth ? 0.0f : expf(probs[v] - mx);
        total += probs[v];
    }
    for (int64_t v = 0; v < V; v++) probs[v] /= total;
    if (top_p > 0.0f && top_p < 1.0f) {
        /* keep the tokens ranked before the mass reaches p: those at least as likely as the last of them */
        memcpy(order, probs, sizeof(float) * V);
        qsort(order, (size_t)V, sizeof(float), desc);
        float before = 0.0f, cut = order[0];
        for (int64_t r = 0; r < V && before < top_p; r++) {
            cut = order[r];
            before += order[r];
        }
        total = 0.0f;
        for (int64_t v = 0; v < V; v++) {
            if (probs[v] < cut) probs[v] = 0.0f;
            total += probs[v];
        }
        for (int64_t v = 0; v < V; v++) probs[v] /= total;
    }
    return 0;
}

static int64_t sample_row(const float *logits, int64_t V, float temperature, int64_t top_k, float top_p, float u,
                          float *probs, float *order) {
    if (temperature == 0.0f) {
        int64_t best = 0;
        for (int64_t v = 1; v < V; v++)
            if (logits[v] > logits[best]) best = v;
        return best;
    }
    rnnkit_filter_probs(logits, V, temperature, top_k, top_p, probs, order);
    float acc = 0.0f;
    int64_t last = 0;
    for (int64_t v = 0; v < V; v++) {
        if (probs[v] <= 0.0f) continue;
        acc += probs[v];
        last = v;
        if (u < acc) return v;
    }
    return last; /* u above the rounded total */
}

/* From tokens (B) already chosen: n times, step, then sample the next token of each row from logits with
 * uniform (n, B); out (n, B). h, c advance in place; the last step's logits are left in logits (B, V).
 * Returns as rnnkit_lstm_step. */
int rnnkit_lstm_generate(const lstm_model *m, const int64_t *tokens, int64_t B, float *h, float *c, int64_t n,
                         const float *uniform, float temperature, int64_t top_k, float top_p, int64_t *out,
                         float *logits) {
    if (!in_vocabulary(m, tokens, B)) return 2;
    const int64_t V = m->vocab;
    scratch s;
    float *probs = malloc(sizeof(float) * V), *order = malloc(sizeof(float) * V);
    int64_t *cur = malloc(sizeof(int64_t) * B);
    int ok = scratch_alloc(&s, B, m->hidden) && probs && order && cur;
    if (ok) {
        memcpy(cur, tokens, sizeof(int64_t) * B);
        for (int64_t t = 0; t < n; t++) {
            step(m, cur, B, h, c, logits, &s);
            for (int64_t b = 0; b < B; b++) {
                cur[b] = sample_row(logits + b * V, V, temperature, top_k, top_p, uniform[t * B + b], probs, order);
                out[t * B + b] = cur[b];
            }
        }
    }
    scratch_free(&s);
    free(probs);
    free(order);
    free(cur);
    return ok ? 0 : 1;
}
