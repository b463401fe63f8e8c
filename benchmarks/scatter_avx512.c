/* Kernel-level prototype for issue 26 item 1: the int8 event scatter of one EGRU matrix (input-major, int8 values,
   int16 output indices) done three ways, timed interleaved on the same random event sets, results compared
   bit for bit (every variant computes acc[i] += v * (float)q exactly as the TVM kernel: multiply, then add;
   no FMA contraction):

     scalar  — per non-zero: one read-add-write of acc (the TVM kernel's inner loop, groups of 8 products);
     gs16    — AVX-512 gather / scatter: 16 non-zeros of a column per step (a column's indices are distinct, so
               its scatter is conflict-free): vpgatherdd acc, 16 products, vpscatterdd back;
     blk16   — row-blocked layout: each column's 3h outputs split into 16-row blocks, one 16-bit mask per block
               and the packed int8 values; per block: widen 16 packed values, vpexpandd them by the mask, multiply,
               one 64-byte add into acc (no index bytes at all: 2 bytes of mask per 16 rows instead);
     blk16x4 — blk16 with 4 active columns in lock step: per 16-row block one load and one store of acc for
               the 4 columns' expanded products (added in column order, so bit-identical to scalar).

   gcc -O2 -mavx512f -mavx512bw -mavx512vl -mavx512vbmi2 -ffp-contract=off benchmarks/scatter_avx512.c -o /tmp/scatter_avx512
   /tmp/scatter_avx512 [n_in] [n_out] [density] [activity] [reps] [matrices]   (defaults 1350 4050 0.15 0.2 400 1;
   matrices > 1: that many random matrices cycled call by call, the working set of a whole layer stack)
*/
#define _GNU_SOURCE
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static uint64_t rs = 88172645463325252ull;
static uint64_t rnd(void) { rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17; return rs; }
static double urand(void) { return (rnd() >> 11) * (1.0 / 9007199254740992.0); }
static double now(void) { struct timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
static int cmpd(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return (x > y) - (x < y); }

typedef struct { int n_in, n_out, nb; int32_t *ptr; int16_t *idx; int8_t *val;       /* CSR, input-major */
                 int32_t *bptr; uint16_t *mask; } mat_t;                             /* blk16: per column masks[nb], values at bptr */

static void scalar(const mat_t *m, float *acc, const int32_t *ei, const float *ev, int en) {
    for (int c = 0; c < en; c++) {
        const int col = ei[c]; const float v = ev[c];
        for (int k = m->ptr[col]; k < m->ptr[col + 1]; k++) acc[m->idx[k]] += v * (float)m->val[k];
    }
}

static void gs16(const mat_t *m, float *acc, const int32_t *ei, const float *ev, int en) {
    for (int c = 0; c < en; c++) {
        const int col = ei[c]; const __m512 v = _mm512_set1_ps(ev[c]);
        int k = m->ptr[col]; const int k1 = m->ptr[col + 1];
        for (; k + 16 <= k1; k += 16) {
            __m512i ix = _mm512_cvtepi16_epi32(_mm256_loadu_si256((const __m256i *)(m->idx + k)));
            __m512 q = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(m->val + k))));
            __m512 a = _mm512_i32gather_ps(ix, acc, 4);
            _mm512_i32scatter_ps(acc, ix, _mm512_add_ps(a, _mm512_mul_ps(v, q)), 4);
        }
        for (; k < k1; k++) acc[m->idx[k]] += ev[c] * (float)m->val[k];
    }
}

static void blk16(const mat_t *m, float *acc, const int32_t *ei, const float *ev, int en) {
    for (int c = 0; c < en; c++) {
        const int col = ei[c]; const __m512 v = _mm512_set1_ps(ev[c]);
        const uint16_t *mk = m->mask + (size_t)col * m->nb;
        const int8_t *p = m->val + m->bptr[col];
        for (int b = 0; b < m->nb; b++) {
            const __mmask16 mm = mk[b];
            __m512i x = _mm512_maskz_expand_epi32(mm, _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
            p += __builtin_popcount(mm);
            __m512 q = _mm512_cvtepi32_ps(x);
            float *a = acc + 16 * b;
            _mm512_store_ps(a, _mm512_add_ps(_mm512_load_ps(a), _mm512_maskz_mul_ps(mm, v, q)));
        }
    }
}

static void blk16x4(const mat_t *m, float *acc, const int32_t *ei, const float *ev, int en) {
    int c = 0;
    for (; c + 4 <= en; c += 4) {
        __m512 v[4]; const uint16_t *mk[4]; const int8_t *p[4];
        for (int j = 0; j < 4; j++) { v[j] = _mm512_set1_ps(ev[c + j]); mk[j] = m->mask + (size_t)ei[c + j] * m->nb;
                                      p[j] = m->val + m->bptr[ei[c + j]]; }
        for (int b = 0; b < m->nb; b++) {
            float *a = acc + 16 * b;
            __m512 s = _mm512_load_ps(a);
            for (int j = 0; j < 4; j++) {
                const __mmask16 mm = mk[j][b];
                __m512 q = _mm512_cvtepi32_ps(_mm512_maskz_expand_epi32(mm, _mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p[j]))));
                p[j] += __builtin_popcount(mm);
                s = _mm512_add_ps(s, _mm512_maskz_mul_ps(mm, v[j], q));
            }
            _mm512_store_ps(a, s);
        }
    }
    blk16(m, acc, ei + c, ev + c, en - c);
}

static int8_t *dense_all[16], *dense;                                                               /* dense16: [n_in][16 nb] */
static void dense16(const mat_t *m, float *acc, const int32_t *ei, const float *ev, int en) {
    const int w = 16 * m->nb;
    for (int c = 0; c < en; c++) {
        const __m512 v = _mm512_set1_ps(ev[c]);
        const int8_t *row = dense + (size_t)ei[c] * w;
        for (int b = 0; b < w; b += 16) {
            __m512 q = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)(row + b))));
            _mm512_store_ps(acc + b, _mm512_add_ps(_mm512_load_ps(acc + b), _mm512_mul_ps(v, q)));
        }
    }
}

int main(int argc, char **argv) {
    int n_in = argc > 1 ? atoi(argv[1]) : 1350, n_out = argc > 2 ? atoi(argv[2]) : 4050;
    double dens = argc > 3 ? atof(argv[3]) : 0.15, act = argc > 4 ? atof(argv[4]) : 0.2;
    int reps = argc > 5 ? atoi(argv[5]) : 400, sets = 64, NM = argc > 6 ? atoi(argv[6]) : 1;
    if (NM < 1 || NM > 16) NM = 1;
    mat_t ms[16];
    for (int mi = 0; mi < NM; mi++) {
    mat_t m = {n_in, n_out, (n_out + 15) / 16};
    m.ptr = malloc(sizeof(int32_t) * (n_in + 1)); m.bptr = malloc(sizeof(int32_t) * (n_in + 1));
    size_t cap = (size_t)n_in * n_out + 64;
    m.idx = malloc(2 * cap); m.val = malloc(cap); m.mask = calloc((size_t)n_in * m.nb, 2);
    int nnz = 0;
    m.ptr[0] = 0;
    for (int i = 0; i < n_in; i++) {
        for (int o = 0; o < n_out; o++)
            if (urand() < dens) { int q = (int)(rnd() % 255) - 127; if (!q) q = 1; m.idx[nnz] = o; m.val[nnz++] = q;
                                  m.mask[(size_t)i * m.nb + o / 16] |= 1u << (o % 16); }
        m.ptr[i + 1] = nnz;
    }
    dense = calloc((size_t)n_in * 16 * m.nb, 1);
    for (int i = 0; i < n_in; i++) for (int k = m.ptr[i]; k < m.ptr[i + 1]; k++) dense[(size_t)i * 16 * m.nb + m.idx[k]] = m.val[k];
    /* blk16 reads the same values in the same order (row order within the column): the packed values are val */
    for (int i = 0; i <= n_in; i++) m.bptr[i] = m.ptr[i];
    ms[mi] = m; dense_all[mi] = dense;
    }
    mat_t m = ms[0]; dense = dense_all[0];
    int npad = 16 * m.nb;
    float *accs[5]; for (int j = 0; j < 5; j++) accs[j] = aligned_alloc(64, sizeof(float) * npad);
    int32_t *ei = malloc(sizeof(int32_t) * n_in * sets); float *ev = malloc(sizeof(float) * n_in * sets);
    int *en = malloc(sizeof(int) * sets); double tot_nnz = 0;
    for (int s = 0; s < sets; s++) {
        int n = 0;
        for (int i = 0; i < n_in; i++) if (urand() < act) { ei[s * n_in + n] = i; ev[s * n_in + n] = (float)(0.1 + urand()); n++; }
        en[s] = n;
        for (int c = 0; c < n; c++) tot_nnz += m.ptr[ei[s * n_in + c] + 1] - m.ptr[ei[s * n_in + c]];
    }
    double nnz_per_call = tot_nnz / sets;
    enum { NV = 5 };
    void (*fn[NV])(const mat_t *, float *, const int32_t *, const float *, int) = {scalar, gs16, blk16, dense16, blk16x4};
    const char *name[NV] = {"scalar", "gs16", "blk16", "dense16", "blk16x4"};
    for (int s = 0; s < sets; s++) {              /* bit-identical results */
        for (int j = 0; j < NV; j++) { memset(accs[j], 0, sizeof(float) * npad); fn[j](&m, accs[j], ei + s * n_in, ev + s * n_in, en[s]); }
        for (int j = 1; j < NV; j++) if (memcmp(accs[0], accs[j], sizeof(float) * n_out)) { printf("MISMATCH %s set %d\n", name[j], s); return 1; }
    }
    double *ts[NV]; for (int j = 0; j < NV; j++) ts[j] = malloc(sizeof(double) * reps);
    for (int r = 0; r < reps; r++)
        for (int jj = 0; jj < NV; jj++) {
            int j = (jj + r) % NV, s = r % sets, mi = r % NM;
            memset(accs[j], 0, sizeof(float) * npad);
            dense = dense_all[mi];
            double t0 = now();
            fn[j](&ms[mi], accs[j], ei + s * n_in, ev + s * n_in, en[s]);
            ts[j][r] = now() - t0;
        }
    printf("n_in %d n_out %d density %.2f activity %.2f, %d matrices cycled: %.0f nnz per call, matrix %.2f MB sparse (int8 + int16 idx), %.2f MB dense int8\n",
           n_in, n_out, dens, act, NM, nnz_per_call, m.ptr[n_in] * 3e-6, n_in * 16.0 * m.nb * 1e-6);
    for (int j = 0; j < NV; j++) {
        qsort(ts[j], reps, sizeof(double), cmpd);
        printf("%-8s median %8.1f us  (%.3f ns per nnz)  min %8.1f us\n", name[j], ts[j][reps / 2] * 1e6,
               ts[j][reps / 2] * 1e9 / nnz_per_call, ts[j][0] * 1e6);
    }
    return 0;
}
