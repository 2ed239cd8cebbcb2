#!/usr/bin/env bash
# The GPU checks and benchmarks of issue #7 as one prepared script for a lent GPU machine (about 6-8 minutes on an
# H100). It runs with that machine's own python3 (PyTorch, torchvision, tqdm, pyyaml, pytest are there; nothing else
# of constraints.txt is needed) and writes every JSON and log into OUT (default bench/results/gpu):
#   - the CUDA tests (pytest -m gpu),
#   - bench/augment.py on the GPU (32 px and 224 px),
#   - bench/pretrain.py: ResNet-50, 224 px, batch 256, the paper's heads, MoCo-v2 vanilla and CASSLE against the bare
#     backbone, with the engine's GPU defaults (precision and memory format: docs/config.md).
# Usage (device tool): bash bench/gpu.sh            Locally, without a GPU: DEVICE=cpu SMALL=1 bash bench/gpu.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-bench/results/gpu}
device=${DEVICE:-cuda}
python=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
if [[ -n "${SMALL:-}" ]]; then  # a quick check of the script itself
  pretrain=(--backbone resnet_narrow --image-size 32 --batch-size 16 --warmup 1 --repeats 2)
  augment=(--cases 32px --reps 2)
else
  pretrain=(--backbone resnet50 --image-size 224 --batch-size 256 --full-heads)
  augment=()
fi
status=0
step() {  # name, command...: run, log to OUT/<name>.log, remember a failure, go on
  local name=$1; shift
  echo "== $name: $*"
  "$@" 2>&1 | tee "$out/$name.log" || status=1
}
"$python" -c 'import torch; print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU")' \
  | tee "$out/device.log"
[[ "$device" == cpu ]] || step gpu-tests "$python" -m pytest -q -m gpu -p no:cacheprovider tests/test_augment.py
step augment "$python" bench/augment.py --device "$device" "${augment[@]}" --out "$out/augment.json"
step pretrain "$python" bench/pretrain.py --device "$device" "${pretrain[@]}" --frameworks mocov2 \
  --variants vanilla cassle --out "$out/pretrain.json"
exit $status
