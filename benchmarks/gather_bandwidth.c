/* Single-core memory bandwidth: streaming reads and random row gathers (the floor of event-gated kernels).
 *
 * Without arguments: the original experiment — 6 matrices of 1350 x 4050 float32 (132 MB, beyond the L3
 * cache), 270 random rows (20 % of the units) of 16 KB each memcpy'd per matrix, as ORT's Gather does for the
 * active units' rows. Prints the mean time per matrix and the bandwidth.
 *
 * With arguments (used by benchmarks/bandwidth.py, which compiles this file at run time):
 *
 *     gather_bandwidth stream BYTES              read-sum a BYTES buffer over and over (8 independent
 *                                                 256-bit accumulators); prints "stream BYTES MEDIAN BEST" (GB/s)
 *     gather_bandwidth gather BYTES ROW [ROW..]  read-sum rows of ROW bytes at random row-aligned offsets of a
 *                                                 BYTES buffer (a fresh random order per pass, 8 rows summed
 *                                                 in lock step: independent streams in flight, like the
 *                                                 kernels' interleaved columns); prints "gather BYTES ROW MEDIAN BEST"
 *
 * MEDIAN / BEST: median / fastest of 15 timed batches of >= 2 ms each of the thread's CPU time
 * (after one untimed warm-up pass); on a
 * shared machine the fastest batch is the better estimate of what the core can do. Build and run:
 *
 *     gcc -O3 -march=native benchmarks/gather_bandwidth.c -o /tmp/gather_bandwidth && /tmp/gather_bandwidth
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef float v8 __attribute__((vector_size(32)));

static double now(void) {     /* this thread's CPU time: time descheduled by other processes is not counted */
    struct timespec t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static volatile float sink;
static double best_rate;                              /* fastest batch of the last measurement */

/* sum of n floats (n a multiple of 64), 8 independent vector accumulators */
static float read_sum(const float *p, size_t n) {
    v8 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, a4 = {0}, a5 = {0}, a6 = {0}, a7 = {0};
    for (size_t i = 0; i < n; i += 64) {
        v8 x0, x1, x2, x3, x4, x5, x6, x7;
        memcpy(&x0, p + i, 32); memcpy(&x1, p + i + 8, 32); memcpy(&x2, p + i + 16, 32); memcpy(&x3, p + i + 24, 32);
        memcpy(&x4, p + i + 32, 32); memcpy(&x5, p + i + 40, 32); memcpy(&x6, p + i + 48, 32); memcpy(&x7, p + i + 56, 32);
        a0 += x0; a1 += x1; a2 += x2; a3 += x3; a4 += x4; a5 += x5; a6 += x6; a7 += x7;
    }
    v8 s = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7;
    return s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
}

/* rows of rf floats (multiple of 8) starting at the float offsets off[0..n), 8 rows at a time in lock step */
static float gather_sum(const float *buf, const size_t *off, size_t n, size_t rf) {
    v8 acc[8] = {{0}};
    size_t j = 0;
    for (; j + 8 <= n; j += 8) {
        const float *r[8];
        for (int u = 0; u < 8; u++) r[u] = buf + off[j + u];
        for (size_t i = 0; i < rf; i += 8)
            for (int u = 0; u < 8; u++) {
                v8 x;
                memcpy(&x, r[u] + i, 32);
                acc[u] += x;
            }
    }
    for (; j < n; j++)
        for (size_t i = 0; i < rf; i += 8) {
            v8 x;
            memcpy(&x, buf + off[j] + i, 32);
            acc[0] += x;
        }
    v8 s = acc[0] + acc[1] + acc[2] + acc[3] + acc[4] + acc[5] + acc[6] + acc[7];
    return s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
}

static float *make_buffer(size_t nfloat) {
    float *b = aligned_alloc(64, ((nfloat * sizeof(float) + 63) / 64) * 64);
    if (!b) { fprintf(stderr, "out of memory\n"); exit(1); }
    for (size_t i = 0; i < nfloat; i++) b[i] = (float)(i & 1023) * 1e-3f;
    return b;
}

#define NB 15

static double stream_rate(size_t bytes) {
    size_t n = bytes / sizeof(float) / 64 * 64;
    float *b = make_buffer(n);
    sink = read_sum(b, n);                                   /* warm-up (and page-in) */
    double t0 = now();
    sink = read_sum(b, n);
    double one = now() - t0;
    int passes = one > 2e-3 ? 1 : (int)(2e-3 / (one > 1e-9 ? one : 1e-9)) + 1;
    double rates[NB];
    for (int k = 0; k < NB; k++) {
        t0 = now();
        for (int p = 0; p < passes; p++) sink = read_sum(b, n);
        rates[k] = (double)passes * n * sizeof(float) / (now() - t0) / 1e9;
    }
    free(b);
    qsort(rates, NB, sizeof(double), cmp_double);
    best_rate = rates[NB - 1];
    return rates[NB / 2];
}

static uint64_t rng_state = 88172645463325252ull;
static uint64_t xorshift(void) {
    rng_state ^= rng_state << 13; rng_state ^= rng_state >> 7; rng_state ^= rng_state << 17;
    return rng_state;
}

static double gather_rate(float *b, size_t nfloat, size_t row_bytes) {
    size_t rf = (row_bytes / sizeof(float) + 7) / 8 * 8;      /* whole 32-byte vectors */
    if (rf == 0) rf = 8;
    size_t nrows = nfloat / rf;
    size_t per = nrows < 4096 ? nrows : 4096;                  /* rows per pass */
    size_t *off = malloc(per * sizeof(size_t));
    double rates[NB];
    for (int k = -1; k < NB; k++) {
        double t = 0;
        size_t done = 0;
        do {
            for (size_t j = 0; j < per; j++) off[j] = (xorshift() % nrows) * rf;
            double t0 = now();
            sink = gather_sum(b, off, per, rf);
            t += now() - t0;
            done += per;
        } while (t < 2e-3);
        if (k >= 0) rates[k] = (double)done * rf * sizeof(float) / t / 1e9;
    }
    free(off);
    qsort(rates, NB, sizeof(double), cmp_double);
    best_rate = rates[NB - 1];
    return rates[NB / 2];
}

static int legacy(void) {
    const int K = 1350, N = 4050, NM = 6, N_ACTIVE = 270, REPS = 50;
    const size_t row_bytes = (size_t)N * sizeof(float);
    float *W[6];
    for (int m = 0; m < NM; m++) {
        W[m] = malloc((size_t)K * row_bytes);
        for (size_t i = 0; i < (size_t)K * N; i++) W[m][i] = (float)i * 1e-7f;
    }
    float *out = aligned_alloc(64, (size_t)N_ACTIVE * row_bytes);
    int *idx = malloc(N_ACTIVE * sizeof(int));
    srand(0);
    double total = 0;
    size_t rows = 0;
    for (int r = 0; r < REPS; r++) {
        int cnt = 0;                                   /* ascending random subset, as NonZero yields */
        for (int i = 0; i < K && cnt < N_ACTIVE; i++)
            if (rand() % K < N_ACTIVE) idx[cnt++] = i;
        double t0 = now();
        for (int m = 0; m < NM; m++)
            for (int j = 0; j < cnt; j++) memcpy(out + (size_t)j * N, W[m] + (size_t)idx[j] * N, row_bytes);
        total += now() - t0;
        rows += (size_t)cnt * NM;
    }
    printf("gathered %zu rows of %zu B: %.0f us per matrix (%d rows), %.1f GB/s (checksum %g)\n", rows, row_bytes,
           total / (REPS * NM) * 1e6, N_ACTIVE, rows * row_bytes / total / 1e9, (double)out[N_ACTIVE / 2]);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) return legacy();
    if (!strcmp(argv[1], "stream") && argc == 3) {
        size_t bytes = strtoull(argv[2], NULL, 10);
        double med = stream_rate(bytes);
        printf("stream %zu %.3f %.3f\n", bytes, med, best_rate);
        return 0;
    }
    if (!strcmp(argv[1], "gather") && argc >= 4) {
        size_t bytes = strtoull(argv[2], NULL, 10);
        size_t nfloat = bytes / sizeof(float);
        float *b = make_buffer(nfloat);
        for (int a = 3; a < argc; a++) {
            size_t row = strtoull(argv[a], NULL, 10);
            double med = gather_rate(b, nfloat, row);
            printf("gather %zu %zu %.3f %.3f\n", bytes, row, med, best_rate);
            fflush(stdout);
        }
        free(b);
        return 0;
    }
    fprintf(stderr, "usage: %s [stream BYTES | gather BYTES ROW_BYTES...]\n", argv[0]);
    return 2;
}
