// sgemm roof on this machine (issue 14 part 4): GFLOP/s of cblas_sgemm for the BERT-base forward's GEMM
// shapes, C[m,n] = A[m,k] · B[n,k]ᵀ (row-major, B transposed, as pkm-convert calls it).
//
// Built twice by tools/bench_sgemm.sh, against OpenBLAS and against BLIS (both through their cblas.h).
// Modes:
//   library THREADS   one call over the whole [m, n], the library's own threading (THREADS via env)
//   jobs THREADS BLOCK COLS  pkm-convert's deterministic split: (BLOCK rows x COLS columns) jobs, each a
//                      single-threaded call, shared among THREADS pthreads (static round robin)
// Prints one line per shape: m n k mode GFLOP/s (best of repeats).
#include <cblas.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }

typedef struct { int m, n, k, block, cols, threads, id; const float *a, *b; float *c; } Job;

static void *worker(void *p) {
    Job *j = p;
    int rowBlocks = (j->m + j->block - 1) / j->block, colBlocks = (j->n + j->cols - 1) / j->cols;
    for (int job = j->id; job < rowBlocks * colBlocks; job += j->threads) {
        int row = (job / colBlocks) * j->block, col = (job % colBlocks) * j->cols;
        int mm = j->m - row < j->block ? j->m - row : j->block, nn = j->n - col < j->cols ? j->n - col : j->cols;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, mm, nn, j->k, 1, j->a + (size_t)row * j->k, j->k,
                    j->b + (size_t)col * j->k, j->k, 0, j->c + (size_t)row * j->n + col, j->n);
    }
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: %s library | jobs THREADS BLOCK COLS\n", argv[0]); return 2; }
    int jobs = strcmp(argv[1], "jobs") == 0;
    int threads = jobs ? atoi(argv[2]) : 1, block = jobs ? atoi(argv[3]) : 0, cols = jobs ? atoi(argv[4]) : 0;
    int shapes[][3] = {{1024, 2304, 768}, {1024, 768, 768}, {1024, 3072, 768}, {1024, 768, 3072}, {128, 256, 768}, {128, 256, 3072}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
        float *a = malloc(sizeof(float) * m * k), *b = malloc(sizeof(float) * n * k), *c = malloc(sizeof(float) * m * n);
        for (size_t i = 0; i < (size_t)m * k; i++) a[i] = (float)((i * 2654435761u) % 1000) / 1000 - 0.5f;
        for (size_t i = 0; i < (size_t)n * k; i++) b[i] = (float)((i * 40503u) % 1000) / 1000 - 0.5f;
        double flops = 2.0 * m * n * k, best = 1e30;
        int repeats = flops > 1e9 ? 20 : 400;
        for (int r = 0; r < repeats + 2; r++) {
            double t0 = now();
            if (jobs) {
                pthread_t tid[64]; Job js[64];
                for (int t = 0; t < threads; t++) {
                    js[t] = (Job){m, n, k, block, cols, threads, t, a, b, c};
                    pthread_create(&tid[t], NULL, worker, &js[t]);
                }
                for (int t = 0; t < threads; t++) pthread_join(tid[t], NULL);
            } else {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1, a, k, b, k, 0, c, n);
            }
            double t = now() - t0;
            if (r >= 2 && t < best) best = t;
        }
        if (jobs) printf("%d %d %d jobs(t=%d,%dx%d) %.1f\n", m, n, k, threads, block, cols, flops / best / 1e9);
        else printf("%d %d %d library %.1f\n", m, n, k, flops / best / 1e9);
        free(a); free(b); free(c);
    }
    return 0;
}
