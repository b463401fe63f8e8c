/* Single-core bandwidth of gathering scattered weight rows — the floor of an event-gated Gather in ORT.
 *
 * 6 matrices of 1350 x 4050 float32 (132 MB, beyond the L3 cache), 270 random rows (20 % of the units) of
 * 16 KB each memcpy'd per matrix, as ORT's Gather does for the active units' rows. Prints the mean time per
 * matrix and the bandwidth. Build and run (README, "ONNX target"):
 *
 *     gcc -O3 -march=native benchmarks/gather_bandwidth.c -o /tmp/gather_bandwidth && /tmp/gather_bandwidth
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

int main(void) {
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
