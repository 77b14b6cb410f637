#!/usr/bin/env bash
# The checks a lent GPU session runs, most valuable first, each one's output kept in
# $OUT/<step>.txt. The lent machines cannot fetch anything: the packages their image lacks travel
# as wheels in .whl/ (pydantic, soundfile, soxr, jiwer, nltk and their own dependencies; see
# benchmarks/README.md for the pip download line).
#
# Usage, from the repository root:  bash benchmarks/gpu_session.sh [STEP ...]
#   steps: variants gpu clap-e2e mert-e2e mert-e2e-hostalloc clap-e2e-hostalloc full
#   (default: variants gpu)
#   QUICK=1 runs every step with --quick on this machine's CPU and installs nothing.
set -u
out=${OUT:-/tmp/embench-gpu-session}
mkdir -p "$out"
quick=()
if [ "${QUICK:-0}" = 1 ]; then
    quick=(--quick)
else
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
    python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || exit 1
fi
export HF_HUB_OFFLINE=1

step() {  # step NAME SECONDS COMMAND...: run it, keep its output, never stop the session
    local name=$1 limit=$2
    shift 2
    echo "== $name: $*"
    timeout "$limit" "$@" "${quick[@]}" 2>&1 | tee "$out/$name.txt"
    echo "== $name: exit ${PIPESTATUS[0]}"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null | tee "$out/card.txt"
for name in "${@:-variants gpu}"; do
    for one in $name; do
        case $one in
            # auto against the fixed route sets, fused layers, cosine against fp32 (~2-3 min)
            variants) step variants 300 python3 benchmarks/gpu_variants.py ;;
            # every encoder end to end, in memory, forward only, seed-style; timing lines (~2 min)
            gpu) step gpu 300 python3 benchmarks/gpu.py --files 512 --memory-clips 128 ;;
            # CLAP's end-to-end gap: steady state, fixed cost, pipeline variants (~2 min)
            clap-e2e) step clap-e2e 300 python3 benchmarks/gpu_e2e.py --files 768 --encoder clap-music ;;
            mert-e2e) step mert-e2e 300 python3 benchmarks/gpu_e2e.py --files 1536 ;;
            # the pinned pool grown by cudaHostAlloc, torch's default, instead of embench's
            # cudaHostRegister (embench.decoding.use_host_register): the first run of a fresh
            # process against the same step without the setting
            mert-e2e-hostalloc) PYTORCH_CUDA_ALLOC_CONF=pinned_use_cuda_host_register:False \
                step mert-e2e-hostalloc 300 python3 benchmarks/gpu_e2e.py --files 1536 --no-variants ;;
            clap-e2e-hostalloc) PYTORCH_CUDA_ALLOC_CONF=pinned_use_cuda_host_register:False \
                step clap-e2e-hostalloc 300 python3 benchmarks/gpu_e2e.py --files 768 \
                --encoder clap-music --no-variants ;;
            # the whole study on 5% of the data, one seed (~3-4 min)
            full) step full 420 python3 benchmarks/gpu_full_run.py --scale 0.05 --seeds 1 ;;
            *) echo "unknown step $one (variants gpu clap-e2e mert-e2e mert-e2e-hostalloc" \
                    "clap-e2e-hostalloc full)"
               exit 2 ;;
        esac
    done
done
