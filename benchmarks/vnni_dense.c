/* Kernel-level prototype for issue 26 item 1 (int8 kernels faster in proportion to their bytes): one EGRU
   matrix's event product with int8 weights AND uint8 event values (W8A8), done with AVX-512 VNNI over the
   active rows of a dense int8 matrix, against the int8 event scatter that the TVM kernels run today (weights
   only int8, event values float32).

     scatter — today's arithmetic: per active row (event), per non-zero of its column: acc[idx] += v * (float)q,
               int8 values, int16 output indices (input-major CSR); C, scalar, the TVM kernel's order;
     vnni    — the event values of this call quantized to uint8 with one scale (max event / 255: the scale of
               ONNX Runtime's quantize_dynamic for a non-negative tensor); events taken 4 at a time; per block
               of 64 outputs the 4 rows' 64 weight bytes are interleaved in registers (vpunpck{l,h}bw, then
               vpunpck{l,h}wd: 8 shuffles) into 4 x 16 dwords of 4 bytes (one per event) and vpdpbusd adds the
               4 products of each dword into 16 int32 sums: 256 multiply-adds per 4 loads + 8 shuffles + 4
               vpdpbusd. The weight bytes of each 64-block are stored permuted at pack time so that the
               interleave yields outputs in natural order. 256 outputs (16 int32 accumulators) stay in
               registers across all the events of the call. Zero weights are stored (a dense row per input).
               Integer sums: exact, order-free (any batch or thread split gives the same bits). Loop order:
               output chunks outer, events inner (the sums never leave registers, but every 256-byte piece of
               a row is a separate random access);
     vnni_rows  — the same products, events outer: 4 whole rows streamed front to back per pass, the int32 sums
               in memory (L1);
     vnni_rows8 — vnni_rows with 8 events (two groups of 4) per pass: half the loads / stores of the sums. This
               is the kernel `egru_compile/targets/tvm/u8_events.py` builds in TIR (--event-dtype u8).

   Checked: every vnni variant's int32 sums equal an int64 recount from the CSR for every event set (exit 1
   otherwise).
   Timed interleaved on the same random event sets (thread CPU time), M matrices cycled call by call (M > 1:
   the working set of a layer stack instead of one matrix in L2/L3).

   cc -O2 -march=native benchmarks/vnni_dense.c -o vnni_dense
   ./vnni_dense [n_in] [n_out] [density] [activity] [reps] [M]      (defaults 2700 4050 0.15 0.2 400 1:
   one EGRU layer of PTB size, its W and R stacked: 1350 + 1350 inputs -> 3h = 4050 outputs)
*/
#define _GNU_SOURCE
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* the VNNI kernels are compiled for AVX512-VNNI whatever -march says; main() checks the CPU before running them */
#define VNNI __attribute__((target("avx512f,avx512bw,avx512vnni")))

static uint64_t rs = 88172645463325252ull;
static uint64_t rnd(void) { rs ^= rs << 13; rs ^= rs >> 7; rs ^= rs << 17; return rs; }
static double urand(void) { return (rnd() >> 11) * (1.0 / 9007199254740992.0); }
static double now(void) { struct timespec t; clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t); return t.tv_sec + 1e-9 * t.tv_nsec; }
static int cmpd(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return (x > y) - (x < y); }

typedef struct {
    int n_in, n_out, n_pad;   /* n_pad: n_out rounded up to 256 */
    int32_t *ptr; uint16_t *idx; int8_t *val;   /* input-major CSR */
    int8_t *dense;            /* [n_in][n_pad], each 64-block's bytes permuted for the interleave */
} mat_t;

/* byte position, inside a 64-output block, of output o (0..63): after unpack bw / wd of 4 rows, dword i of
   result k holds the bytes at position 16 * (i / 4) + 4 * k + (i % 4); it must be output 16 k + i */
static int perm_pos(int o) { int k = o / 16, i = o % 16; return 16 * (i / 4) + 4 * k + (i % 4); }

static void scatter(const mat_t *m, float *acc, const int32_t *ei, const float *ev, int en, int32_t *unused) {
    (void)unused;
    for (int c = 0; c < en; c++) {
        const float v = ev[c];
        for (int k = m->ptr[ei[c]]; k < m->ptr[ei[c] + 1]; k++) acc[m->idx[k]] += v * (float)m->val[k];
    }
}

static int32_t *qbuf_rows; static uint32_t *qbuf_words;     /* vnni scratch: padded event rows, packed bytes */
static float vnni_scale;

/* the uint8 scale of an event list: max / 255 (1 for an empty list); q = rint(v / scale) capped at 255 */
static float event_scale(const float *ev, int en) {
    float mx = 0.f;
    for (int c = 0; c < en; c++) mx = ev[c] > mx ? ev[c] : mx;
    vnni_scale = mx > 0.f ? mx / 255.f : 1.f;
    return vnni_scale;
}

/* int32 sums -> float times the event scale (the per-row weight scale comes later) */
VNNI static void sums_to_acc(const mat_t *m, float *acc, const int32_t *isum, float scale) {
    for (int b = 0; b < m->n_pad; b += 16)
        _mm512_storeu_ps(acc + b, _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_load_si512(isum + b)), _mm512_set1_ps(scale)));
}

VNNI static void vnni(const mat_t *m, float *acc, const int32_t *ei, const float *ev, int en, int32_t *isum) {
    const float scale = event_scale(ev, en), inv = 1.f / scale;
    const int ng = (en + 3) / 4;
    for (int g = 0; g < ng; g++) {
        uint32_t w = 0;
        for (int j = 0; j < 4; j++) {
            int c = 4 * g + j;
            int q = c < en ? (int)(ev[c] * inv + 0.5f) : 0;
            qbuf_rows[4 * g + j] = c < en ? ei[c] : 0;
            w |= (uint32_t)(q > 255 ? 255 : q) << (8 * j);
        }
        qbuf_words[g] = w;
    }
    const size_t ld = (size_t)m->n_pad;
    for (int base = 0; base < m->n_pad; base += 256) {
        __m512i s[16];
        for (int j = 0; j < 16; j++) s[j] = _mm512_setzero_si512();
        for (int g = 0; g < ng; g++) {
            const __m512i a = _mm512_set1_epi32((int)qbuf_words[g]);
            const int8_t *r0 = m->dense + ld * qbuf_rows[4 * g] + base, *r1 = m->dense + ld * qbuf_rows[4 * g + 1] + base;
            const int8_t *r2 = m->dense + ld * qbuf_rows[4 * g + 2] + base, *r3 = m->dense + ld * qbuf_rows[4 * g + 3] + base;
            for (int b = 0; b < 4; b++) {
                const __m512i A = _mm512_loadu_si512(r0 + 64 * b), B = _mm512_loadu_si512(r1 + 64 * b);
                const __m512i C = _mm512_loadu_si512(r2 + 64 * b), D = _mm512_loadu_si512(r3 + 64 * b);
                const __m512i t0 = _mm512_unpacklo_epi8(A, B), t1 = _mm512_unpackhi_epi8(A, B);
                const __m512i t2 = _mm512_unpacklo_epi8(C, D), t3 = _mm512_unpackhi_epi8(C, D);
                s[4 * b + 0] = _mm512_dpbusd_epi32(s[4 * b + 0], a, _mm512_unpacklo_epi16(t0, t2));
                s[4 * b + 1] = _mm512_dpbusd_epi32(s[4 * b + 1], a, _mm512_unpackhi_epi16(t0, t2));
                s[4 * b + 2] = _mm512_dpbusd_epi32(s[4 * b + 2], a, _mm512_unpacklo_epi16(t1, t3));
                s[4 * b + 3] = _mm512_dpbusd_epi32(s[4 * b + 3], a, _mm512_unpackhi_epi16(t1, t3));
            }
        }
        for (int j = 0; j < 16; j++) {          /* int32 sums -> float (the per-row weight scale comes later) */
            _mm512_storeu_si512(isum + base + 16 * j, s[j]);
            _mm512_storeu_ps(acc + base + 16 * j, _mm512_mul_ps(_mm512_cvtepi32_ps(s[j]), _mm512_set1_ps(scale)));
        }
    }
}


/* vnni_rows: the same products, events outer (4 whole rows streamed front to back), int32 sums in memory */
VNNI static void vnni_rows(const mat_t *m, float *acc, const int32_t *ei, const float *ev, int en, int32_t *isum) {
    const float scale = event_scale(ev, en), inv = 1.f / scale;
    const int ng = (en + 3) / 4;
    const size_t ld = (size_t)m->n_pad;
    memset(isum, 0, sizeof(int32_t) * m->n_pad);
    for (int g = 0; g < ng; g++) {
        uint32_t w = 0; const int8_t *r[4];
        for (int j = 0; j < 4; j++) {
            int c = 4 * g + j;
            int q = c < en ? (int)(ev[c] * inv + 0.5f) : 0;
            r[j] = m->dense + ld * (c < en ? ei[c] : 0);
            w |= (uint32_t)(q > 255 ? 255 : q) << (8 * j);
        }
        const __m512i a = _mm512_set1_epi32((int)w);
        for (int b = 0; b < m->n_pad; b += 64) {
            const __m512i A = _mm512_load_si512(r[0] + b), B = _mm512_load_si512(r[1] + b);
            const __m512i C = _mm512_load_si512(r[2] + b), D = _mm512_load_si512(r[3] + b);
            const __m512i t0 = _mm512_unpacklo_epi8(A, B), t1 = _mm512_unpackhi_epi8(A, B);
            const __m512i t2 = _mm512_unpacklo_epi8(C, D), t3 = _mm512_unpackhi_epi8(C, D);
            int32_t *o = isum + b;
            _mm512_store_si512(o, _mm512_dpbusd_epi32(_mm512_load_si512(o), a, _mm512_unpacklo_epi16(t0, t2)));
            _mm512_store_si512(o + 16, _mm512_dpbusd_epi32(_mm512_load_si512(o + 16), a, _mm512_unpackhi_epi16(t0, t2)));
            _mm512_store_si512(o + 32, _mm512_dpbusd_epi32(_mm512_load_si512(o + 32), a, _mm512_unpacklo_epi16(t1, t3)));
            _mm512_store_si512(o + 48, _mm512_dpbusd_epi32(_mm512_load_si512(o + 48), a, _mm512_unpackhi_epi16(t1, t3)));
        }
    }
    sums_to_acc(m, acc, isum, scale);
}

/* vnni_rows8: vnni_rows with 8 events (two groups of 4) per pass over the sums: half the sum loads / stores */
VNNI static inline __m512i dot4(__m512i s, __m512i a, __m512i x) { return _mm512_dpbusd_epi32(s, a, x); }
VNNI static void vnni_rows8(const mat_t *m, float *acc, const int32_t *ei, const float *ev, int en, int32_t *isum) {
    const float scale = event_scale(ev, en), inv = 1.f / scale;
    const int ng = (en + 7) / 8;
    const size_t ld = (size_t)m->n_pad;
    memset(isum, 0, sizeof(int32_t) * m->n_pad);
    for (int g = 0; g < ng; g++) {
        uint32_t w[2] = {0, 0}; const int8_t *r[8];
        for (int j = 0; j < 8; j++) {
            int c = 8 * g + j;
            int q = c < en ? (int)(ev[c] * inv + 0.5f) : 0;
            r[j] = m->dense + ld * (c < en ? ei[c] : 0);
            w[j / 4] |= (uint32_t)(q > 255 ? 255 : q) << (8 * (j % 4));
        }
        const __m512i a0 = _mm512_set1_epi32((int)w[0]), a1 = _mm512_set1_epi32((int)w[1]);
        for (int b = 0; b < m->n_pad; b += 64) {
            int32_t *o = isum + b;
            __m512i s0 = _mm512_load_si512(o), s1 = _mm512_load_si512(o + 16);
            __m512i s2 = _mm512_load_si512(o + 32), s3 = _mm512_load_si512(o + 48);
            for (int h = 0; h < 2; h++) {
                const __m512i a = h ? a1 : a0;
                const __m512i A = _mm512_load_si512(r[4 * h] + b), B = _mm512_load_si512(r[4 * h + 1] + b);
                const __m512i C = _mm512_load_si512(r[4 * h + 2] + b), D = _mm512_load_si512(r[4 * h + 3] + b);
                const __m512i t0 = _mm512_unpacklo_epi8(A, B), t1 = _mm512_unpackhi_epi8(A, B);
                const __m512i t2 = _mm512_unpacklo_epi8(C, D), t3 = _mm512_unpackhi_epi8(C, D);
                s0 = dot4(s0, a, _mm512_unpacklo_epi16(t0, t2)); s1 = dot4(s1, a, _mm512_unpackhi_epi16(t0, t2));
                s2 = dot4(s2, a, _mm512_unpacklo_epi16(t1, t3)); s3 = dot4(s3, a, _mm512_unpackhi_epi16(t1, t3));
            }
            _mm512_store_si512(o, s0); _mm512_store_si512(o + 16, s1);
            _mm512_store_si512(o + 32, s2); _mm512_store_si512(o + 48, s3);
        }
    }
    sums_to_acc(m, acc, isum, scale);
}

int main(int argc, char **argv) {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512vnni")) {
        printf("skipped: this CPU has no AVX512-VNNI (the vnni variants need it)\n");
        return 0;
    }
    int n_in = argc > 1 ? atoi(argv[1]) : 2700, n_out = argc > 2 ? atoi(argv[2]) : 4050;
    double dens = argc > 3 ? atof(argv[3]) : 0.15, act = argc > 4 ? atof(argv[4]) : 0.2;
    int reps = argc > 5 ? atoi(argv[5]) : 400, sets = 64, NM = argc > 6 ? atoi(argv[6]) : 1;
    if (NM < 1 || NM > 32) NM = 1;
    mat_t ms[32];
    int n_pad = (n_out + 255) / 256 * 256;
    for (int mi = 0; mi < NM; mi++) {
        mat_t m = {n_in, n_out, n_pad};
        m.ptr = malloc(sizeof(int32_t) * (n_in + 1));
        size_t cap = (size_t)n_in * n_out + 64;
        m.idx = malloc(2 * cap); m.val = malloc(cap);
        m.dense = aligned_alloc(64, (size_t)n_in * n_pad);
        memset(m.dense, 0, (size_t)n_in * n_pad);
        int nnz = 0;
        m.ptr[0] = 0;
        for (int i = 0; i < n_in; i++) {
            for (int o = 0; o < n_out; o++)
                if (urand() < dens) {
                    int q = (int)(rnd() % 255) - 127; if (!q) q = 1;
                    m.idx[nnz] = (uint16_t)o; m.val[nnz++] = (int8_t)q;
                    m.dense[(size_t)i * n_pad + o / 64 * 64 + perm_pos(o % 64)] = (int8_t)q;
                }
            m.ptr[i + 1] = nnz;
        }
        ms[mi] = m;
    }
    qbuf_rows = malloc(sizeof(int32_t) * (n_in + 4)); qbuf_words = malloc(sizeof(uint32_t) * (n_in / 4 + 2));
    float *accs[4]; for (int j = 0; j < 4; j++) accs[j] = aligned_alloc(64, sizeof(float) * n_pad);
    int32_t *isum = aligned_alloc(64, sizeof(int32_t) * n_pad);
    int32_t *ei = malloc(sizeof(int32_t) * n_in * sets); float *ev = malloc(sizeof(float) * n_in * sets);
    int *en = malloc(sizeof(int) * sets); double tot_nnz = 0, tot_ev = 0;
    for (int s = 0; s < sets; s++) {
        int n = 0;
        for (int i = 0; i < n_in; i++) if (urand() < act) { ei[s * n_in + n] = i; ev[s * n_in + n] = (float)(0.1 + 0.9 * urand()); n++; }
        en[s] = n; tot_ev += n;
        for (int c = 0; c < n; c++) tot_nnz += ms[0].ptr[ei[s * n_in + c] + 1] - ms[0].ptr[ei[s * n_in + c]];
    }
    /* every vnni variant's integer sums against an int64 recount from the CSR (same uint8 events) */
    void (*vfn[3])(const mat_t *, float *, const int32_t *, const float *, int, int32_t *) = {vnni, vnni_rows, vnni_rows8};
    for (int s = 0; s < sets; s++)
        for (int j = 0; j < 3; j++) {
            const int32_t *e = ei + s * n_in; const float *v = ev + s * n_in;
            vfn[j](&ms[0], accs[1], e, v, en[s], isum);
            int64_t *ref = calloc(n_out, sizeof(int64_t));
            const float inv = 1.f / vnni_scale;
            for (int c = 0; c < en[s]; c++) {
                int q = (int)(v[c] * inv + 0.5f); q = q > 255 ? 255 : q;
                for (int k = ms[0].ptr[e[c]]; k < ms[0].ptr[e[c] + 1]; k++) ref[ms[0].idx[k]] += (int64_t)q * ms[0].val[k];
            }
            for (int o = 0; o < n_out; o++)
                if (ref[o] != isum[o]) { printf("MISMATCH variant %d set %d output %d\n", j, s, o); return 1; }
            free(ref);
        }
    enum { NV = 4 };
    void (*fn[NV])(const mat_t *, float *, const int32_t *, const float *, int, int32_t *) = {scatter, vnni, vnni_rows, vnni_rows8};
    const char *name[NV] = {"scatter", "vnni", "vnni_rows", "vnni_rows8"};
    double *ts[NV]; for (int j = 0; j < NV; j++) ts[j] = malloc(sizeof(double) * reps);
    for (int r = 0; r < reps; r++)
        for (int jj = 0; jj < NV; jj++) {
            int j = (jj + r) % NV, s = r % sets, mi = r % NM;
            memset(accs[j], 0, sizeof(float) * n_pad);
            double t0 = now();
            fn[j](&ms[mi], accs[j], ei + s * n_in, ev + s * n_in, en[s], isum);
            ts[j][r] = now() - t0;
        }
    double act_rows = tot_ev / sets;
    printf("n_in %d n_out %d density %.2f activity %.2f, %d matrices cycled: %.0f events, %.0f nnz per call; "
           "bytes read per call: scatter %.2f MB (int8 + int16 index), vnni %.2f MB (dense int8 rows); "
           "matrix %.2f MB sparse, %.2f MB dense\n", n_in, n_out, dens, act, NM, act_rows, tot_nnz / sets,
           tot_nnz / sets * 3e-6, act_rows * n_pad * 1e-6, ms[0].ptr[n_in] * 3e-6, (double)n_in * n_pad * 1e-6);
    for (int j = 0; j < NV; j++) {
        qsort(ts[j], reps, sizeof(double), cmpd);
        printf("%-8s median %8.1f us  (%.3f ns per non-zero)  min %8.1f us\n", name[j], ts[j][reps / 2] * 1e6,
               ts[j][reps / 2] * 1e9 / (tot_nnz / sets), ts[j][0] * 1e6);
    }
    return 0;
}
