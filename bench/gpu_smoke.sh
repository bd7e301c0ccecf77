#!/usr/bin/env bash
# GPU smoke run of the example trainers: each trainer briefly on CUDA (bf16 autocast), then on
# the CPU, printing samples per second for each run and a summary table at the end.
#
#   bash bench/gpu_smoke.sh            # from the repository root; about 1-2 minutes
#
# It installs nothing: it runs the trainers from the source tree (PYTHONPATH) with the
# machine's python3, which needs torch (a CUDA build for the GPU runs); the digits trainer also
# needs scikit-learn. Whatever is missing is named, and the runs that need it are skipped.
# Set PYTHON to use another interpreter. Exit status: 0 when every run that could run passed.
set -uo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
export PYTHONPATH="$PWD/operator:$PWD/trainer-image/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
# The trial contract's variables are unset on purpose: no pod to annotate, no termination log.
unset KUBETUNE_POD_NAME KUBETUNE_TERMINATION_LOG KUBETUNE_PARAMS KUBETUNE_METRICS_PORT

echo "== machine"
command -v nvidia-smi >/dev/null && nvidia-smi -L
"$PYTHON" --version
if ! "$PYTHON" -c "import torch" 2>/dev/null; then
  echo "gpu_smoke: MISSING torch for $PYTHON: install a CUDA build of PyTorch (>= 2.4) first;"
  echo "gpu_smoke: nothing was run."
  exit 2
fi
"$PYTHON" - <<'EOF'
import torch
print(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}, "
      f"CUDA {torch.version.cuda}, CPU threads {torch.get_num_threads()}")
if torch.cuda.is_available():
    print(f"GPU: {torch.cuda.get_device_name(0)}, bf16: {torch.cuda.is_bf16_supported()}")
EOF
has_cuda=$("$PYTHON" -c "import torch; print(int(torch.cuda.is_available()))")
has_sklearn=1
"$PYTHON" -c "import sklearn" 2>/dev/null || has_sklearn=0
[ "$has_cuda" = 1 ] || echo "gpu_smoke: MISSING a CUDA device visible to torch: CUDA runs skipped"
[ "$has_sklearn" = 1 ] || echo "gpu_smoke: MISSING scikit-learn: digits runs skipped"

DIGITS=(--epochs=20 --batch_size=128 --hidden_layers=3 --hidden_units=256 --augmentation=0.3)
LM=(--layers=4 --heads=4 --width=256 --context=128 --batch_size=64 --warmup_steps=20)
summary=()
failed=0

run() {  # name device timeout args...
  local name=$1 device=$2 limit=$3
  shift 3
  echo "== $name on $device"
  local log
  log=$(mktemp)
  if timeout "$limit" "$PYTHON" -m "kubetune_trainers.$name" --device="$device" "$@" 2>&1 \
    | tee "$log"; then
    local speed final
    speed=$(grep -o '[0-9]* samples/s.*' "$log" | tail -1)
    final=$(grep -o 'final .*' "$log" | tail -1)
    summary+=("$(printf '%-7s %-5s %s | %s' "$name" "$device" "$speed" "$final")")
  else
    summary+=("$(printf '%-7s %-5s FAILED (see above)' "$name" "$device")")
    failed=1
  fi
  rm -f "$log"
}

if [ "$has_cuda" = 1 ]; then
  [ "$has_sklearn" = 1 ] && run digits cuda 120 "${DIGITS[@]}"
  run charlm cuda 120 "${LM[@]}" --steps=300 --eval_interval=100
fi
[ "$has_sklearn" = 1 ] && run digits cpu 120 "${DIGITS[@]}" --epochs=5
# Same model on the CPU, fewer steps: samples/s is what is compared.
run charlm cpu 150 "${LM[@]}" --steps=15 --warmup_steps=5 --eval_interval=15

echo "== summary (samples/s: training only, evaluation excluded)"
printf '%s\n' "${summary[@]}"
exit "$failed"
