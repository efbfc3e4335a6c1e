#!/usr/bin/env bash
# The one short GPU check (under 8 minutes on one card): what only a GPU shows.
#   bash benchmarks/gpu_check.sh            # on the GPU machine, from the repository root
#   SIZE=tiny bash benchmarks/gpu_check.sh  # the same steps at toy size (how it is tested on a CPU)
# 1. memory of one step of the release's 441 M GPT at the longest batch: fp32, bf16, bf16 + checkpointing,
#    and the 8 GB profile (configs/rtx4060-8gb.yaml: LoRA, bf16 base, checkpointing)
# 2. one training step: coqui's GPTTrainer in fp32 against ours in bf16-mixed, same card, same batches
# 3. a 20-step fit with configs/rtx4070-12gb.yaml on the demo corpora: s/step and peak GPU memory
# 4. the divergence guard's device reads and CUDA synchronizations per step (bench_guard.py)
# 5. serving on the GPU: time to first audio and real-time factor, ours against coqui's tts-server
# Figures go to $OUT (default benchmarks/gpu-results/) and to the screen.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-benchmarks/gpu-results}
SIZE=${SIZE:-release}
RELEASE=../shared/xtts-release
mkdir -p "$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

$PY -c "import torch; print('device:', torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU (CPU)', '| torch', torch.__version__)" | tee "$OUT/device.txt"

if [ "$SIZE" = release ]; then
  extra=()
  [ -f "$RELEASE/config.json" ] && extra=(--release_config "$RELEASE/config.json" --release_vocab "$RELEASE/vocab.json")
  $PY -m vago_lightning tiny-base --out "$WORK/base" --like_release "${extra[@]}"
  STEP=(--layers 30 --dim 1024 --heads 16 --steps 5)
else
  $PY -m vago_lightning tiny-base --out "$WORK/base" --dvae xtts
  STEP=(--layers 2 --dim 64 --heads 4 --steps 2)
fi

echo "== 1. memory of one step at the longest batch" | tee "$OUT/memory.txt"
$PY benchmarks/bench_memory.py --base "$WORK/base" --rows fp32 bf16 bf16+ckpt rtx4060-8gb --json "$OUT/memory.json" | tee -a "$OUT/memory.txt"

echo "== 2. one step: coqui fp32 against ours" | tee "$OUT/step.txt"
$PY benchmarks/bench_train_step.py "${STEP[@]}" | tee -a "$OUT/step.txt"

echo "== 3. 20 steps of fit with the 12 GB profile" | tee "$OUT/fit.txt"
$PY -m vago_lightning demo-data --out "$WORK/corpora" > /dev/null
$PY -m vago_lightning prepare --corpus "quiz=$WORK/corpora/quiz" --corpus "interview=$WORK/corpora/interview" \
  --base_model "$WORK/base" --out "$WORK/shards" --speaker_check false --quiet true > /dev/null
ACCEL=gpu
$PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || ACCEL=cpu
ROOT=$PWD
if ! (cd "$WORK" && "$ROOT/$PY" -m vago_lightning fit --config "$ROOT/finetune.yaml" --config "$ROOT/configs/rtx4070-12gb.yaml" \
    --run gpu-check --model.base_model "$WORK/base" --model.init_from null --data.shards_dir "$WORK/shards" \
    --trainer.accelerator "$ACCEL" --trainer.max_steps 20 --trainer.val_check_interval 20 > "$OUT/fit.log" 2>&1); then
  tail -20 "$OUT/fit.log"; exit 1
fi
grep -E "^(step|validation|preflight)" "$OUT/fit.log" | tee -a "$OUT/fit.txt"

echo "== 4. the guard: device reads and synchronizations per step" | tee "$OUT/guard.txt"
$PY benchmarks/bench_guard.py --base "$WORK/base" --corpus "$WORK/corpora/quiz" --steps 20 | tee -a "$OUT/guard.txt"

echo "== 5. serving: ours against coqui's tts-server (first audio, real-time factor)" | tee "$OUT/serve.txt"
COQUI=(--coqui)
$PY -c "import flask" 2>/dev/null || { COQUI=(); echo "flask missing: coqui's server not run (pip install -e '.[bench]')" | tee -a "$OUT/serve.txt"; }
DEVICE=cuda
[ "$ACCEL" = cpu ] && DEVICE=cpu
$PY benchmarks/bench_serve.py --model "$WORK/base" "${COQUI[@]}" --device "$DEVICE" --concurrency 1 --requests 4 \
  --memory --max_new_tokens 60 | tee -a "$OUT/serve.txt"
echo "results in $OUT"
