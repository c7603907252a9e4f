#!/usr/bin/env bash
# What a lent GPU machine (CUDA + PyTorch, no TensorRT, no network) can check, in one go, ~6 min:
#   1. pycuda built from the sdist (in the background) and tests/test_cuda_buffers_gpu.py;
#   2. distributed training on one GPU: tests/test_distributed.py's NCCL + --amp test and the
#      CUDA resume test of tests/test_train.py;
#   3. training images/s at 224x224 on generated JPEGs: the loader alone (--profile-data), then
#      fp32 and --amp bf16 --channels-last, one GPU under torchrun.
#
#   [PER_CLASS=400 EPOCHS=3 ONLY_SPEED=1] tools/gpu_check.sh WHEELS OUT     # WHEELS: pycuda sdist + pytools/platformdirs/mako/siphash24 wheels
# Logs and a summary go to OUT; docs/gpu-validation.md records them.
set -uo pipefail
WHEELS=$(realpath "$1"); OUT=$(realpath "$2"); mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
PY=python3
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/machine.txt"
$PY -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__)" | tee -a "$OUT/machine.txt"
$PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "$WHEELS"/*.whl
$PY -m pip install -q --no-build-isolation --no-index --no-deps -e . > "$OUT/install.log" 2>&1 || cat "$OUT/install.log"
export PYTHONPATH=/tmp/site

# 1. pycuda, built while the training checks run
[ -n "${ONLY_SPEED:-}" ] ||
(
  cd /tmp && tar xzf "$WHEELS"/pycuda-*.tar.gz && cd pycuda-*/ &&
  $PY configure.py --cuda-root="$(dirname "$(dirname "$(command -v nvcc)")")" &&
  $PY setup.py build_ext -j 8 --inplace
) > "$OUT/pycuda-build.log" 2>&1 &
BUILD=$!
rm -rf /tmp/run-fp32 /tmp/run-bf16

# 2. distributed training on one GPU
[ -n "${ONLY_SPEED:-}" ] ||
timeout 180 $PY -m pytest -q -m gpu -s -rs tests/test_distributed.py tests/test_train.py 2>&1 | tee "$OUT/train-tests.log" | tail -15

# 3. images/s at 224x224
DATA=/tmp/gen224
$PY - "$DATA" "${PER_CLASS:-400}" <<'PY'
import sys
from pathlib import Path
import cv2, numpy as np
rng = np.random.default_rng(0)
n_train = int(sys.argv[2])
for split, n in (("train", n_train), ("val", n_train // 10)):
    for c in range(10):
        d = Path(sys.argv[1]) / split / f"c{c}"; d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = (rng.random((256, 256, 3)) * 64 + c * 19).astype(np.uint8)
            cv2.imwrite(str(d / f"{i}.jpg"), img)
PY
TRAIN=(-m torch.distributed.run --standalone --nproc-per-node=1 -m edge_squeeze.cli train --data "$DATA"
       --arch squeezenet1_1 --image-size 224 --batch-size 256 --workers 12 --epochs "${EPOCHS:-3}")
{
  echo "== loader alone"; timeout 60 $PY -m edge_squeeze.cli train --data "$DATA" --image-size 224 --batch-size 256 --workers 12 --profile-data
  for mode in fp32 bf16; do
    extra=(); [ $mode = bf16 ] && extra=(--amp bf16 --channels-last)
    echo "== $mode"; timeout 100 $PY "${TRAIN[@]}" "${extra[@]}" --out /tmp/run-$mode > "$OUT/train-$mode.log" 2>&1
    $PY -c "import torch,sys; m=torch.load(sys.argv[1],weights_only=True)['metrics']; print([round(r['images_per_s']) for r in m['history']])" /tmp/run-$mode/last.pt
  done
} 2>&1 | tee "$OUT/images-per-s.txt"

# 1, continued
[ -n "${ONLY_SPEED:-}" ] && exit 0
wait $BUILD; echo "pycuda build rc $?"; tail -3 "$OUT/pycuda-build.log"
PYTHONPATH=/tmp/site:$(ls -d /tmp/pycuda-*/) timeout 90 $PY -m pytest -q -m gpu -rs tests/test_cuda_buffers_gpu.py 2>&1 | tee "$OUT/cuda-buffers.log" | tail -8
PYTHONPATH=/tmp/site:$(ls -d /tmp/pycuda-*/) $PY -m edge_squeeze.cli info 2>&1 | tee "$OUT/info.txt" | tail -12
