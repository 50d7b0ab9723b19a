#!/usr/bin/env bash
# The GPU figures that issues 10 and 13 wait for most, and the tests only a GPU runs, as one
# device run of at most 6 minutes on an H200, so that a rerun still fits a session's 15. EXTRA=1
# instead runs the next most wanted, as a second call of at most 8.5 minutes: determinism and
# ensembles (issue 14) and the slider on SDXL's shape at 1024 px (issue 13). The device machine has torch,
# transformers and timm but not das-ag's other needs, and it reaches no network, so they travel
# as wheels:
#
#   bash bench/gpu_session.sh --wheels            # here, once: pure-Python wheels into .whl/
#   run(command="bash bench/gpu_session.sh", carry=[".whl"], timeout_s=400)   # the device tool
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
        open-clip-torch==3.3.0 diffusers==0.42.1 peft==0.21.2 importlib-metadata==8.7.0 \
        pytest==9.2.0 pluggy==1.7.0 iniconfig==2.3.1 pygments==2.21.0
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

if [ -z "${EXTRA:-}" ]; then
# Issue 13: the slider's step time and peak memory at SD 1.5's shape, 512 px, four modes.
part 110 "slider" python3 bench/slider_speed.py --device "$DEVICE" --shape "$SHAPE" --clip "$CLIP" \
    --resolution "$SLIDER_PX" --steps "$STEPS"
# Issue 10: the paper preset alone, 8 to a step and compared 3 x 2, eager against the compiled
# step, with the GPU-busy share of each step (each mode prints its line as it ends).
part 170 "paper speed" python3 bench/paper_speed.py --device "$DEVICE" --shape "$VIT" ${DRY:+--steps 4}
# The tests only a GPU runs (skipped on the CPU): no step waits for the GPU, eager or compiled;
# compiled runs from the studio's threads; the encoder on CUDA; the rasteriser repeats. A random
# head stands in for ../shared's, which does not travel.
DAS_AG_TEST_HEAD="$head" part 70 "cuda tests" python3 -m pytest -q -p no:cacheprovider -rs \
    "tests/test_engine.py::test_a_cuda_step_never_waits_for_the_gpu" \
    "tests/test_jobs.py::test_compiled_cuda_runs_work_from_the_studios_threads" \
    "tests/test_encoder.py::test_sped_up_encoder_computes_what_clip_computes[cuda]" \
    "tests/test_rasterise.py::test_cuda_renders_repeat_bit_for_bit"
fi
if [ -z "${DRY:-}" ] && [ -n "${EXTRA:-}" ]; then
    # With EXTRA=1 (a second call): determinism (the same PNG twice, eager and compiled; the paper
    # preset in each precision) and encoder ensembles.
    part 150 "determinism" python3 bench/cuda_determinism.py --head "$head" --steps 30
    part 60 "ensemble" python3 bench/ensemble_speed.py --device "$DEVICE"
    # The slider on SDXL's shape at its own 1024 px (modes that do not fit say so). Making the
    # random 3.5 G-parameter pipeline and its files takes a minute or two of it.
    part 300 "slider sdxl" python3 bench/slider_speed.py --device "$DEVICE" --shape sdxl --clip "$CLIP" \
        --resolution 1024 --steps 3
fi
echo "log: $OUT/gpu.log"
