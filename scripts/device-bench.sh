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
set -uo pipefail
MODE=${MODE:-kernels}
SCALE=${SCALE:-1}
ITERS=${ITERS:-5}
for f in .gl/*.deb; do dpkg -x "$f" / ; done
ldconfig
if [ -f /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json ]; then
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
fi
BIN=${ICLORA_BIN:-.devbin/iclora}
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm --format=csv 2>/dev/null
if [ "$MODE" = flux-step ]; then
  TOKENS=${TOKENS:-4608}
  for f in ${FORMATS:-Q8_0 F16}; do
    echo "== iclora bench flux-step --format $f"
    timeout 200 "$BIN" bench flux-step --tokens "$TOKENS" --format "$f" --iters "$ITERS"
  done
  if ls .whl/diffusers-*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
    echo "== diffusers (PyTorch CUDA, bf16) on the same card"
    timeout 150 python3 tools/diffusers_flux_step.py "$TOKENS" "$ITERS"
  fi
  exit 0
fi
echo "== iclora (wgpu/Vulkan), f32 tiles"
timeout 240 "$BIN" bench kernels --scale "$SCALE" --iters "$ITERS"
echo "== iclora, f16 tiles"
timeout 120 "$BIN" bench kernels --scale "$SCALE" --iters "$ITERS" --f16 --formats F16,Q8_0,Q4_0
if [ -x .devbin/peer ]; then
  echo "== burn/cubecl (wgpu)"
  timeout 120 .devbin/peer --scale "$SCALE" --iters "$ITERS"
fi
echo "== PyTorch (CUDA) on the same card"
timeout 60 python3 tools/torch_matmul_peer.py "$SCALE"
