#!/usr/bin/env bash
# The GPU figures that issues 10, 13 and 14 wait for, as one device run (at most 8.5 minutes on
# an H200). The device machine has torch, transformers and timm but not das-ag's other needs, and it
# reaches no network, so they travel as wheels:
#
#   bash bench/gpu_session.sh --wheels            # here, once: pure-Python wheels into .whl/
#   run(command="bash bench/gpu_session.sh", carry=[".whl"], timeout_s=570)   # the device tool
#
# Everything runs on random weights of the real shapes (no download); the log comes back as
# $OUT/gpu.log. Each part has its own time limit, so one that hangs cannot eat the others.
# Dry run on a CPU, tiny shapes, no wheels: DRY=1 bash bench/gpu_session.sh
set -uo pipefail

if [ "${1:-}" = "--wheels" ]; then
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >> .git/info/exclude
    # Versions as in uv.lock; --no-deps, so each need the device lacks is named here.
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d .whl \
        clip-anytorch==2.6.0 ftfy==6.3.1 wcwidth==0.9.4 python-dotenv==1.2.4 setuptools==80.10.2 \
        open-clip-torch==3.3.0 diffusers==0.42.1 peft==0.21.2 importlib-metadata==8.7.0
    exit
fi

OUT=${OUT:-/tmp/das-ag-gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=src
if [ -z "${DRY:-}" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        || exit 1
    export PYTHONPATH=/tmp/site:src
    DEVICE=cuda SHAPE=sd15 CLIP=ViT-L/14 SLIDER_PX=512 STEPS=5 VIT=ViT-L/14
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee -a "$OUT/gpu.log"
else
    DEVICE=cpu SHAPE=tiny CLIP=tiny SLIDER_PX=64 STEPS=2 VIT=ViT-B/32
fi
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" | tee -a "$OUT/gpu.log"

part() {  # part SECONDS WHAT COMMAND...: run one measurement, its output in the log
    local limit=$1 what=$2
    shift 2
    echo "== $what: $*" | tee -a "$OUT/gpu.log"
    timeout "$limit" "$@" 2>&1 | grep -v "^Loading\|^Writing" | tee -a "$OUT/gpu.log"
    echo "== $what: exit ${PIPESTATUS[0]}" | tee -a "$OUT/gpu.log"
}

head="$OUT/random-head.pth"
python3 -c "import torch; from das_ag.models import AestheticHead; torch.save(AestheticHead().state_dict(), '$head')"

# Issue 13: the slider's step time and peak memory at SD 1.5's shape, 512 px, four modes.
part 150 "slider" python3 bench/slider_speed.py --device "$DEVICE" --shape "$SHAPE" --clip "$CLIP" \
    --resolution "$SLIDER_PX" --steps "$STEPS"
# Issue 10: the paper preset alone, 8 to a step and compared 3 x 2, eager against the compiled
# step, with the GPU-busy share of each step.
part 210 "paper speed" python3 bench/paper_speed.py --device "$DEVICE" --shape "$VIT" ${DRY:+--steps 4}
if [ -z "${DRY:-}" ]; then
    # Issue 10: determinism (the same PNG twice) of eager and compiled runs, the paper preset's
    # wall time in each precision.
    part 100 "determinism" python3 bench/cuda_determinism.py --head "$head" --steps 30
    # Issue 14: encoder ensembles and the fast path's step on a GPU.
    part 40 "ensemble" python3 bench/ensemble_speed.py --device "$DEVICE"
fi
echo "log: $OUT/gpu.log"
