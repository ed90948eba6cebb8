#!/usr/bin/env bash
# Use a short GPU lease well: run the most useful worksheet experiments that still have no GPU
# result and fit SECONDS, then pack their results into a few files to bring back.
#
#   bash benchmarks/gpu_lease.sh SECONDS [OUT]
#
# On the GPU machine, from a fresh checkout (the repository root). SECONDS is the time left for
# the experiments themselves (leave a minute or two of the lease for start-up and packing).
# Data: $CIFAR (a folder holding cifar-10-batches-py/), else it is made from
# ../shared/data/cifar10-jpeg.tar.gz when that archive is there. Packages missing on the machine
# (papermill, ipykernel, nbformat, ...) are installed from $WHEELS when it names a folder of
# wheels (pip download them beforehand; the machine may have no network).
# Two files go to OUT (default: $OUT when set, else gpu-lease-out/): lease.log and
# results.tar.gz (the new results folders, a few MB at most); the work (checkpoints, executed
# notebooks, the data) stays in $WORK (default /tmp/gpu-lease-work). Back home:
#   tar xzf results.tar.gz && cp -r results/. <repository>/results/ && python -m nmeplib worksheet
set -uo pipefail
cd "$(dirname "$0")/.."
SECONDS_LEFT=${1:?usage: bash benchmarks/gpu_lease.sh SECONDS [OUT]}
OUT_DIR=${2:-${OUT:-gpu-lease-out}}
WORK=${WORK:-/tmp/gpu-lease-work}
mkdir -p "$OUT_DIR" "$WORK"
LOG="$OUT_DIR/lease.log"
exec > >(tee -a "$LOG") 2>&1
echo "gpu_lease: $(date -u +%FT%TZ), $SECONDS_LEFT s, commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"

if [ -n "${WHEELS:-}" ] && [ -d "$WHEELS" ]; then
    python -m pip install --quiet --no-index --find-links "$WHEELS" papermill ipykernel nbformat pyyaml tqdm \
        scikit-learn || echo "gpu_lease: installing from $WHEELS failed; going on with what is installed"
fi
python -m pip install --quiet --no-deps --no-build-isolation -e . >/dev/null 2>&1 || true

if [ -z "${CIFAR:-}" ]; then
    CIFAR="$WORK/cifar10"
    if [ ! -d "$CIFAR/cifar-10-batches-py" ]; then
        if [ -f ../shared/data/cifar10-jpeg.tar.gz ] && [ -f ../shared/tools/make_cifar10.py ]; then
            python ../shared/tools/make_cifar10.py "$CIFAR" || exit 1
        else
            echo "gpu_lease: set CIFAR to a folder holding cifar-10-batches-py/"; exit 2
        fi
    fi
fi

START=$(date +%s)
WANDB_MODE=disabled python -m nmeplib reproduce "$WORK/out" --lease "$SECONDS_LEFT" --data-root "$CIFAR" \
    --results "$WORK/results" --data-note "CIFAR-10, the JPEG quality-75 copy made by make_cifar10.py"
STATUS=$?
echo "gpu_lease: reproduce exited $STATUS after $(( $(date +%s) - START )) s"
if [ -d "$WORK/results" ]; then
    tar czf "$OUT_DIR/results.tar.gz" -C "$WORK" results
    du -h "$OUT_DIR/results.tar.gz"
fi
exit $STATUS
