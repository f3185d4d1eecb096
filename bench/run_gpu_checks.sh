#!/usr/bin/env bash
# Every check that needs a CUDA GPU, in one short run (a lent GPU machine is held for minutes):
#   1. tests/core/test_cuda.py (GPU against CPU, mixed precision, batch size from free memory);
#   2. bench/bench_gpu.py: 1 km² at 0.5 m and 0.25 m on the GPU and the CPU of the same machine;
#   3. bench/bench_speed.py --device cuda: fast against reference mode on the GPU (Nîmes, city);
#   4. bench/bench_model.py --cuda-only: decoder queries/s, encoder and scatter times on the GPU;
#   5. the full-size training recipe (training/configs/implicity_0_bilateral.yaml) for a few steps:
#      seconds per optimizer step on the GPU (DATA= prepared patches, default the family set).
# Each part has its own time limit, so one that hangs does not cost the others. Logs go to $OUT
# (default gpu_logs/). Run from the repository root: `bash bench/run_gpu_checks.sh`; PARTS= picks
# parts by name (default all), e.g. PARTS="cuda_tests bench_gpu".
# Packages the GPU machine lacks can be given as wheels in .whl/ (installed to /tmp/site).
set -u
OUT=${OUT:-gpu_logs}
DATA=${DATA:-prepared/family_points_only}
TRAIN_STEPS=${TRAIN_STEPS:-12}
PARTS=${PARTS:-cuda_tests bench_gpu bench_speed_cuda bench_model_cuda train_full_size}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}

if compgen -G ".whl/*.whl" >/dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
# The repository root is the `implicity` package; without an install, import it by that name.
if ! $PY -c "import implicity.core" 2>/dev/null; then
  mkdir -p /tmp/pkg && ln -sfn "$PWD" /tmp/pkg/implicity && export PYTHONPATH=/tmp/pkg:${PYTHONPATH:-}
fi

part() {  # part NAME SECONDS COMMAND...: run with a limit, log to $OUT/NAME.log, say how it ended
  local name=$1 limit=$2; shift 2
  [[ " $PARTS " == *" $name "* ]] || return 0
  echo "=== $name (limit ${limit} s): $*"
  local t0=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "=== $name: exit $rc after $((SECONDS - t0)) s"
}

{
  nvidia-smi --query-gpu=name,memory.total,memory.used,driver_version --format=csv,noheader
  $PY -c "import torch, numpy, rasterio; print('torch', torch.__version__, 'cuda', torch.version.cuda, \
'available', torch.cuda.is_available(), 'numpy', numpy.__version__, 'rasterio', rasterio.__version__, \
'cpus', torch.get_num_threads())"
} 2>&1 | tee "$OUT/env.log"

part cuda_tests 90 $PY -m pytest -q -p no:cacheprovider tests/core/test_cuda.py -rs
part bench_gpu "${BENCH_GPU_LIMIT:-280}" $PY bench/bench_gpu.py --precisions "${PRECISIONS:-fp32,bf16}"
part bench_speed_cuda 70 $PY bench/bench_speed.py --device cuda --no-load --repeat 3
part bench_model_cuda 40 $PY bench/bench_model.py --cuda-only
part train_full_size 110 $PY -m implicity.cli train training/configs/implicity_0_bilateral.yaml \
  --device cuda --data "$DATA" --max-steps "$TRAIN_STEPS" --out-dir /tmp/gpu_train --quiet
cp /tmp/gpu_train/*.csv "$OUT/" 2>/dev/null

for name in $PARTS; do
  echo "----- $name"
  grep -v -i "warning\|warn(" "$OUT/$name.log" | tail -n 30
done
