#!/usr/bin/env bash
# sgemm roof (issue 14 part 4): GFLOP/s of OpenBLAS (SkylakeX kernels, 1 and 2 threads, and pkm-convert's
# deterministic job split), BLIS from Debian (libblis-dev) and MKL through torch.mm, on the BERT-base forward's
# GEMM shapes. Needs libopenblas-dev, libblis-dev, python3 with torch. Run alone (flock /tmp/swift-build.lock).
#
#   tools/bench_sgemm.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=.build/bench-sgemm
mkdir -p "$out"
arch=x86_64-linux-gnu
cc -O2 -o "$out/sgemm-openblas" tools/bench_sgemm.c -I/usr/include/$arch/openblas-pthread \
    -L/usr/lib/$arch/openblas-pthread -Wl,-rpath,/usr/lib/$arch/openblas-pthread -lopenblas -lpthread
if [ -d /usr/include/$arch/blis-openmp ]; then
    cc -O2 -o "$out/sgemm-blis" tools/bench_sgemm.c -I/usr/include/$arch/blis-openmp \
        -L/usr/lib/$arch/blis-openmp -Wl,-rpath,/usr/lib/$arch/blis-openmp -lblis -lpthread -fopenmp
fi
core=${OPENBLAS_CORETYPE:-SkylakeX}
echo "# load average before: $(cut -d' ' -f1-3 /proc/loadavg); OpenBLAS kernels: $core"
echo "# m n k mode GFLOP/s"
echo "## OpenBLAS 1 thread";  OPENBLAS_CORETYPE=$core OPENBLAS_NUM_THREADS=1 "$out/sgemm-openblas" library
echo "## OpenBLAS 2 threads"; OPENBLAS_CORETYPE=$core OPENBLAS_NUM_THREADS=2 "$out/sgemm-openblas" library
for block in 128 256 1024; do
    echo "## OpenBLAS jobs: 2 threads, ${block} rows x 256 columns"
    OPENBLAS_CORETYPE=$core OPENBLAS_NUM_THREADS=1 "$out/sgemm-openblas" jobs 2 $block 256
done
echo "## OpenBLAS jobs: 2 threads, 128 rows x 768 columns"
OPENBLAS_CORETYPE=$core OPENBLAS_NUM_THREADS=1 "$out/sgemm-openblas" jobs 2 128 768
if [ -x "$out/sgemm-blis" ]; then
    echo "## BLIS 1 thread";  BLIS_NUM_THREADS=1 OMP_NUM_THREADS=1 "$out/sgemm-blis" library
    echo "## BLIS 2 threads"; BLIS_NUM_THREADS=2 OMP_NUM_THREADS=2 "$out/sgemm-blis" library
    echo "## BLIS jobs: 2 threads, 128 rows x 256 columns"
    BLIS_NUM_THREADS=1 OMP_NUM_THREADS=1 "$out/sgemm-blis" jobs 2 128 256
fi
echo "## MKL (torch.mm) 1 and 2 threads"
python3 tools/bench_sgemm.py
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
