#!/usr/bin/env bash
# The deploy side on aarch64 (a Jetson's CPU) under emulation: an arm64 Debian 11 root (Python 3.9,
# close to JetPack's 3.8 and 3.10) made with debootstrap and run through qemu-user-static, the base
# install from PyPI's aarch64 wheels in a venv there, and tools/deploy_check.py on the same model
# files as on this machine. qemu emulates a Cortex-A76 (QEMU_CPU; ARMv8.2 with the dot-product
# instructions and without SVE or i8mm, as Jetson Orin's Cortex-A78AE), so ONNX Runtime and numpy
# pick the kernels a Jetson runs; qemu's default CPU has SVE, where numpy 2.0's sort returns
# unsorted 32-bit arrays under qemu 7.2. Integer kernels are deterministic, so the accuracy and agreement are what
# an ARM board computes; the timing is qemu's, not a board's, and means nothing.
#
#   sudo tools/aarch64_check.sh [ROOT]      # ROOT defaults to ../aarch64-root; about 1.7 h on 2 cores, alone
#
# Needs root (debootstrap, chroot, mounts), Debian's qemu-user-static, debootstrap and
# binfmt-support, the workstation venv (.venv) and the package registries. Writes
# benchmarks/results/aarch64.json and aarch64.md.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
ROOT=$(realpath -m "${1:-$REPO/../aarch64-root}")
SHARED=$(realpath "${EDGE_SQUEEZE_SHARED:-$REPO/../shared}")
DEPLOY=$REPO/build/deploy
cd "$REPO"

# the model files (exported again: the results must be those of this checkout's exporter) and the
# reference results, on this machine
rm -rf "$DEPLOY/models"
.venv/bin/python tools/deploy_check.py export "$DEPLOY/models" --shared "$SHARED"
.venv/bin/python tools/deploy_check.py run "$DEPLOY/models" --shared "$SHARED" --out "$DEPLOY/main.json"

# aarch64 binaries run through qemu (binfmt_misc)
[ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
update-binfmts --enable qemu-aarch64
if [ ! -x "$ROOT/usr/bin/python3" ]; then
    debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
        bullseye "$ROOT" http://deb.debian.org/debian
fi
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# this machine's CA bundle: the registries may sit behind a TLS-inspecting proxy
cp /etc/ssl/certs/ca-certificates.crt "$ROOT/etc/ssl/certs/ca-certificates.crt"
mkdir -p "$ROOT/src" "$ROOT/shared" "$ROOT/proc" "$ROOT/sys" "$ROOT/dev"
cleanup() { umount -R "$ROOT/sys" "$ROOT/dev" "$ROOT/proc" "$ROOT/shared" "$ROOT/src" 2>/dev/null || true; }
cleanup  # mounts an interrupted run left behind
trap cleanup EXIT
mount --bind "$REPO" "$ROOT/src"
mount --bind "$SHARED" "$ROOT/shared" && mount -o remount,bind,ro "$ROOT/shared"
mount -t proc proc "$ROOT/proc"
mount --rbind /sys "$ROOT/sys"   # ONNX Runtime reads the CPU list there
mount --bind /dev "$ROOT/dev"

QEMU_CPU=${QEMU_CPU:-cortex-a76}
in_root() { chroot "$ROOT" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/root QEMU_CPU="$QEMU_CPU" PIP_CERT=/etc/ssl/certs/ca-certificates.crt /bin/sh -c "$1"; }
in_root "[ -x /opt/venv/bin/pip ] || python3 -m venv /opt/venv"
# dependencies once (pip under emulation is slow); this checkout's project every time
in_root "/opt/venv/bin/python -c 'import numpy, cv2, onnxruntime, onnx' 2>/dev/null || /opt/venv/bin/pip install -q /src"
in_root "/opt/venv/bin/pip install -q --no-deps --force-reinstall --no-cache-dir /src"
in_root "cd /src && /opt/venv/bin/python tools/deploy_check.py run build/deploy/models --shared /shared --out build/deploy/aarch64.json"

mkdir -p benchmarks/results
cp "$DEPLOY/aarch64.json" benchmarks/results/aarch64.json
.venv/bin/python tools/deploy_check.py compare "$DEPLOY/main.json" "$DEPLOY/aarch64.json" \
    --markdown benchmarks/results/aarch64.md \
    --note "tools/aarch64_check.sh at $(git rev-parse --short HEAD), $(date -u +%Y-%m-%d): Debian 11 arm64 under qemu-aarch64 $(qemu-aarch64-static --version | head -1 | awk '{print $3}') emulating a $QEMU_CPU, the base install from PyPI's aarch64 wheels; the same model files as the x86_64 run (SqueezeNet 1.1 INT8 export with 64 calibration photos, a 6-bit .esqz), the 500 shared val photos. Timing under emulation means nothing (no speed is reported); 'auto' runs the CPU file on any non-x86 CPU without timing, as on a board." \
    || echo "aarch64 results differ from this machine's (see benchmarks/results/aarch64.md)"
