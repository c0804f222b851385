#!/usr/bin/env bash
# Kernel benchmarks on a machine with an NVIDIA GPU (wgpu on Vulkan), with the
# peers measured in the same run on the same card. Run from the repo root.
#
# Needs, carried along (no network there): .gl/*.deb (the Vulkan loader, see the
# device tool's README) and .devbin/iclora (an x86-64 native build:
# `cargo build --release --bin iclora && cp target/release/iclora .devbin/`).
# Optional: .devbin/peer (benches/peer's burn binary); .whl/diffusers-*.whl for the
# flux-step peer (the machine has PyTorch but not diffusers).
# MODE=kernels (default) or MODE=flux-step (one FLUX.1 step vs diffusers bf16).
#
# Cooperative matrices (tensor cores): `matmul` takes them by itself where the device has a
# usable configuration and the call suits them (f16 operands need --f16). The FMA runs set
# ICLORA_NO_COOP=1, and a separate run times `--kernels matmul_coop`, so each row says which
# path it measured (rows on the cooperative path end in "coop").
#
# Also runs on a machine without a GPU (lavapipe), end to end at a small scale, e.g.
#   SCALE=0.01 ITERS=1 ICLORA_BIN=target/debug/iclora PYTHON=.venv/bin/python scripts/device-bench.sh
# The loader debs are unpacked only where no Vulkan loader is installed (LOADER_DEBS=1 forces
# it); the PyTorch peers run only where torch sees a CUDA device. Exit status: the number of
# steps that failed (0 = all ran).
set -uo pipefail
MODE=${MODE:-kernels}
SCALE=${SCALE:-1}
ITERS=${ITERS:-5}
PYTHON=${PYTHON:-python3}
FAILED=0
# step SECONDS CMD...: runs one step under a timeout; a failure is counted, the run goes on.
step() {
  local t=$1; shift
  timeout "$t" "$@"
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "!! step failed (exit $rc; 124 = timed out): $*"
    FAILED=$((FAILED + 1))
  fi
}
if [ "${LOADER_DEBS:-0}" = 1 ] || ! ldconfig -p 2>/dev/null | grep -q libvulkan.so.1; then
  for f in .gl/*.deb; do [ -f "$f" ] && dpkg -x "$f" /; done
  ldconfig
fi
if [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
BIN=${ICLORA_BIN:-.devbin/iclora}
if [ ! -x "$BIN" ]; then
  echo "no iclora binary at $BIN (build one: cargo build --release --bin iclora; or set ICLORA_BIN)"
  exit 1
fi
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv 2>/dev/null
# The PyTorch peers need CUDA; elsewhere (lavapipe) they are skipped, saying so.
torch_cuda() {
  "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null
}
if [ "$MODE" = flux-step ]; then
  TOKENS=${TOKENS:-4608}
  for f in ${FORMATS:-Q8_0 F16}; do
    echo "== iclora bench flux-step --format $f"
    step 200 "$BIN" bench flux-step --tokens "$TOKENS" --format "$f" --iters "$ITERS" ${FLUX_ARGS:-}
    # The same step with f16 matmul tiles (FluxModel::set_precision): f16 FMA tiles, and the
    # cooperative-matrix path where the device has one (rows say FORMAT/f16). F16_STEP=0 skips it.
    if [ "${F16_STEP:-1}" = 1 ]; then
      echo "== iclora bench flux-step --format $f --f16"
      step 200 "$BIN" bench flux-step --tokens "$TOKENS" --format "$f" --iters "$ITERS" --f16 ${FLUX_ARGS:-}
    fi
  done
  if ! torch_cuda; then
    echo "== diffusers peer skipped: $PYTHON has no torch with a CUDA device"
  elif ls .whl/diffusers-*.whl >/dev/null 2>&1; then
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
    echo "== diffusers (PyTorch CUDA, bf16) on the same card"
    step 150 "$PYTHON" tools/diffusers_flux_step.py "$TOKENS" "$ITERS"
  fi
  exit "$FAILED"
fi
echo "== iclora (wgpu/Vulkan), f32 tiles (FMA)"
ICLORA_NO_COOP=1 step 240 "$BIN" bench kernels --scale "$SCALE" --iters "$ITERS"
echo "== iclora, f16 tiles (FMA)"
ICLORA_NO_COOP=1 step 120 "$BIN" bench kernels --scale "$SCALE" --iters "$ITERS" --f16 --formats F16,Q8_0,Q4_0 --kernels matmul
echo "== iclora, cooperative matrices (tensor cores), f16 operands: A/B against the f16 FMA rows above"
step 120 "$BIN" bench kernels --scale "$SCALE" --iters "$ITERS" --f16 --formats F16,Q8_0,Q4_0 --kernels matmul_coop
if [ -x .devbin/peer ]; then
  echo "== burn/cubecl (wgpu)"
  step 120 .devbin/peer --scale "$SCALE" --iters "$ITERS"
fi
if torch_cuda; then
  echo "== PyTorch (CUDA) on the same card"
  step 60 "$PYTHON" tools/torch_matmul_peer.py "$SCALE"
else
  echo "== PyTorch peer skipped: $PYTHON has no torch with a CUDA device"
fi
exit "$FAILED"
