#!/usr/bin/env bash
# Same-run comparison on this machine's adapter: iclora's matmul vs the peer
# (burn/cubecl's wgpu matmul, benches/peer) at FLUX's linear-layer shapes.
# Prints both tables and the GFLOP/s ratio per shape. Needs release builds:
#   cargo build --release --bin iclora
#   (cd benches/peer && cargo build --release)
# Usage: benches/compare.sh [SCALE] [ITERS]     (defaults 0.111 → 512 tokens, 3)
# ICLORA=path/to/iclora picks another build of ours (e.g. a saved "before" binary for an A/B in the
# same run); ICLORA_F16=0 skips the f16-tile rows.
set -euo pipefail
cd "$(dirname "$0")/.."
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-/tmp}
SCALE=${1:-0.111}
ITERS=${2:-3}
ICLORA=${ICLORA:-target/release/iclora}
OURS=$(mktemp) PEER=$(mktemp)
"$ICLORA" bench kernels --scale "$SCALE" --iters "$ITERS" --formats F32,F16,Q8_0,Q4_0 --kernels matmul | tee "$OURS"
if [ "${ICLORA_F16:-1}" != 0 ]; then
  "$ICLORA" bench kernels --scale "$SCALE" --iters "$ITERS" --formats F16,Q8_0,Q4_0 --f16 --kernels matmul \
    | grep '^matmul' | sed 's/^matmul    /matmul-f16/' | tee -a "$OURS"
fi
benches/peer/target/release/peer-bench --scale "$SCALE" --iters "$ITERS" | tee "$PEER"
echo
echo "ratio = iclora GFLOP/s / burn GFLOP/s (same shape; burn f32 for our F32 weights, burn f16 otherwise)"
awk '
  FNR == NR && /^peer burn-cubecl/ { for (i = 1; i <= NF; i++) if ($i ~ /^gflops=/) { split($i, g, "="); peer[$3 " " $4] = g[2] } next }
  /^matmul/ {
    for (i = 1; i <= NF; i++) if ($i ~ /^gflops=/) { split($i, g, "="); ours = g[2] }
    dt = ($2 == "F32" && $1 == "matmul") ? "f32" : "f16"
    if ((dt " " $3) in peer) printf "%-10s %-6s %-18s iclora %8.2f  burn %-4s %8.2f  ratio %.2f\n", $1, $2, $3, ours, dt, peer[dt " " $3], ours / peer[dt " " $3]
  }' "$PEER" "$OURS"
rm -f "$OURS" "$PEER"
