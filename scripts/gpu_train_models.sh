#!/usr/bin/env bash
# Train the candidate bundled models side by side on one GPU, each for the same wall-time budget.
#
#   OUT=/path/to/results DATA=/path/to/mnist-gz BUDGET=430 bash scripts/gpu_train_models.sh
#
# DATA holds the four MNIST idx files gzipped (train-images-idx3-ubyte.gz, ...); they are unpacked to
# a temporary SGM_DATA_DIR. Each run trains on the first 55,000 training images (the last 5,000 are
# held out for choices), stops at the end of the first epoch past BUDGET seconds, evaluates bits/dim of
# its raw and EMA weights on 2,000 held-out images, and exports both to $OUT/<name>.pt with its
# command, seed, wall time and throughput. The evaluation classifier is retrained on all 60,000
# training images (weights and manifest in $OUT/classifier.tar). Logs go to $OUT/train.log. At most
# eight files come back from the device, each under 16 MB: six exports, the tar and the log.
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT}" "${DATA:?set DATA}"
BUDGET=${BUDGET:-430} EVAL_N=${EVAL_N:-2000} CLASSIFIER_EPOCHS=${CLASSIFIER_EPOCHS:-30}
CHUNK=${CHUNK:+--chunk-steps $CHUNK}  # for a quick smoke test; default: check the clock once per epoch
DEVICE=$(python3 -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
export SGM_DATA_DIR=$(mktemp -d) PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
mkdir -p "$SGM_DATA_DIR/MNIST/raw" "$OUT"
for f in "$DATA"/*.gz; do gunzip -c "$f" > "$SGM_DATA_DIR/MNIST/raw/$(basename "$f" .gz)"; done
RUNS=$(mktemp -d)
common="--time-budget $BUDGET --holdout 5000 --eval-holdout $EVAL_N --threads 2 $CHUNK"
lw="--likelihood-weighting --importance-sampling --dequantize"
declare -A cmd=(
  [ve25]="--sde ve --sigma 25 --epochs 100 --batch-size 128 --lr 2e-4"
  [vp-lw]="--sde vp $lw --epochs 400 --batch-size 128 --lr 2e-4"
  [subvp-lw]="--sde subvp $lw --epochs 400 --batch-size 128 --lr 2e-4"
  [unet-subvp-lw]="--model unet --sde subvp $lw --epochs 400 --batch-size 128 --lr 2e-4"
  [conditional]="--model conditional --sde ve --sigma 25 --epochs 100 --batch-size 128 --lr 2e-4"
  [time-classifier]="--model time-classifier --sde ve --sigma 25 --epochs 100 --batch-size 128 --lr 1e-3"
)
for name in "${!cmd[@]}"; do
  python3 scripts/train_pretrained.py --out "$RUNS/$name.ckpt" --export "$OUT/$name.pt" $common ${cmd[$name]} \
    > "$RUNS/$name.log" 2>&1 &
done
python3 scripts/train_classifier.py --epochs "$CLASSIFIER_EPOCHS" --device "$DEVICE" --threads 2 > "$RUNS/classifier.log" 2>&1 \
  && tar -cf "$OUT/classifier.tar" sgm_helpers/weights/mnist-classifier.pt sgm_helpers/weights/manifest.json &
wait
for log in "$RUNS"/*.log; do echo "=== $(basename "$log")"; cat "$log"; done | tee "$OUT/train.log"
nvidia-smi --query-gpu=name,memory.used --format=csv >> "$OUT/train.log" 2>&1 || true
