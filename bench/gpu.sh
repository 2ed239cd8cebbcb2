#!/usr/bin/env bash
# The GPU checks and benchmarks of issue #7 as one prepared script for a lent GPU machine (about 6-8 minutes on an
# H100). It runs with that machine's own python3 (PyTorch, torchvision, tqdm, pyyaml, pytest are there; nothing else
# of constraints.txt is needed) and writes every JSON and log into OUT (default bench/results/gpu):
#   - the CUDA tests (pytest -m gpu),
#   - bench/augment.py on the GPU (32 px and 224 px),
#   - bench/pretrain.py: ResNet-50, 224 px, batch 256, the paper's heads, MoCo-v2 vanilla and CASSLE against the bare
#     backbone, with the engine's GPU defaults (precision and memory format: docs/config.md);
#   - bench/extraction.py: the linear eval's feature extraction (JPEG loading in the loop) against the bare forward;
#   - bench/linear.py (issue #18): the linear protocol's sweep on the GPU and on that machine's CPU for the paper's
#     six shapes, against scikit-learn where it is installed (else the GPU column is compared with the CPU sweep).
# These two need the CIFAR-10 JPEGs, which do not travel with the repository (../shared stays behind): copy
# ../shared/data/cifar10-jpeg.tar.gz into bench/data/ (git-ignored) and name bench/data in the device tool's carry;
# bench/features.py then builds the linear benchmark's features on the GPU first (a minute or two). Without the
# tarball both steps are skipped.
# Usage (device tool): bash bench/gpu.sh            Locally, without a GPU: DEVICE=cpu SMALL=1 bash bench/gpu.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-bench/results/gpu}
device=${DEVICE:-cuda}
python=${PYTHON:-python3}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export CASSLE_CIFAR_TARBALL=${CASSLE_CIFAR_TARBALL:-$PWD/bench/data/cifar10-jpeg.tar.gz}
if [[ -n "${SMALL:-}" ]]; then  # a quick check of the script itself
  pretrain=(--backbone resnet_narrow --image-size 32 --batch-size 16 --warmup 1 --repeats 2)
  augment=(--cases 32px --reps 2)
  extraction=(--arch resnet_narrow --image-size 32 --images 64 --batch-size 32 --workers 0 --repeats 1)
  linear=(--cases flowers --sk-every 0)
else
  pretrain=(--backbone resnet50 --image-size 224 --batch-size 256 --full-heads)
  augment=()
  extraction=(--images 2048 --batch-size 256 --workers 0,4,8,15)
  linear=(--sk-every 11)
fi
status=0
step() {  # name, command...: run, log to OUT/<name>.log, remember a failure, go on
  local name=$1; shift
  echo "== $name: $*"
  "$@" 2>&1 | tee "$out/$name.log" || status=1
}
"$python" -c 'import torch; print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU")' \
  | tee "$out/device.log"
[[ "$device" == cpu ]] || step gpu-tests "$python" -m pytest -q -m gpu -p no:cacheprovider tests/test_augment.py \
  tests/test_eval_linear_device.py
step augment "$python" bench/augment.py --device "$device" "${augment[@]}" --out "$out/augment.json"
step pretrain "$python" bench/pretrain.py --device "$device" "${pretrain[@]}" --frameworks mocov2 \
  --variants vanilla cassle --out "$out/pretrain.json"
if [[ -f "$CASSLE_CIFAR_TARBALL" || -d "${CASSLE_TEST_DATA:-$HOME/.cache/cassle/test-data}/cifar10-jpeg/test" ]]; then
  step extraction "$python" bench/extraction.py --device "$device" "${extraction[@]}" --out "$out/extraction.json"
  [[ "$device" == cpu ]] && linear_devices=cpu || linear_devices=all
  step linear "$python" bench/linear.py --device "$linear_devices" "${linear[@]}" --out "$out/linear.json"
else
  echo "== extraction, linear: skipped, no CIFAR-10 JPEGs at $CASSLE_CIFAR_TARBALL (see the top of this script)"
fi
exit $status
