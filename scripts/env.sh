# Sourced by the other scripts: the tool paths and environment every step needs.
# Usage: . scripts/env.sh   (from the repository root or anywhere)

ICLORA_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export ICLORA_ROOT
# cargo-installed tools (trunk, wasm-bindgen), then npm's wasm-opt (binaryen 132;
# Debian's binaryen 108 produces a wasm that fails at run time).
export PATH="$ICLORA_ROOT/node_modules/.bin:${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
# Mesa (lavapipe) warns when this is unset.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
