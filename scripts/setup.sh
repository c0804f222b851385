#!/usr/bin/env bash
# Installs what building, serving and testing iclora need on Debian 12 (run as
# root; package registries only). Idempotent: each step checks first and skips
# what is already there, so CI can rerun it on the same machine.
#
# Usage: scripts/setup.sh [serve|test]
#   serve  the web build: wasm32 target, Trunk, wasm-bindgen-cli (the version
#          in Cargo.lock), npm packages (binaryen's wasm-opt), crate sources
#   test   serve + Mesa lavapipe (software Vulkan, for `cargo test`) and
#          Chromium (the headless browser test)
#   (none) the same as test
set -euo pipefail

PART="${1:-test}"
case "$PART" in
  serve | test) ;;
  *) echo "usage: $0 [serve|test]" >&2; exit 2 ;;
esac

. "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$ICLORA_ROOT"

TRUNK_VERSION=0.21.14   # 0.22 needs a newer rustc than 1.95
say() { printf '\033[1msetup:\033[0m %s\n' "$*"; }

# --- Debian packages -------------------------------------------------------
APT=()
need_deb() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed' || APT+=("$1"); }
command -v node >/dev/null || { need_deb nodejs; need_deb npm; }
command -v cc >/dev/null || need_deb build-essential   # cargo install links with cc
command -v pkg-config >/dev/null || need_deb pkg-config
if [ "$PART" = test ]; then
  need_deb mesa-vulkan-drivers   # lavapipe: the GPU of `cargo test`
  need_deb libvulkan1
  need_deb chromium              # SwiftShader WebGPU for tests/e2e
fi
if [ ${#APT[@]} -gt 0 ]; then
  say "apt-get install ${APT[*]}"
  apt-get update -qq
  # With recommends, as verified on this kind of machine (fonts-liberation, libgl1-mesa-dri for Chromium).
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${APT[@]}"
else
  say "Debian packages: present"
fi

node_major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$node_major" -lt 20 ]; then
  echo "setup: Node.js $(node --version) is too old: playwright-core needs Node 20 or newer" >&2
  exit 1
fi

# --- Rust ------------------------------------------------------------------
if ! command -v cargo >/dev/null; then
  echo "setup: cargo not found: install Rust 1.95 with rustup (https://rustup.rs) first" >&2
  exit 1
fi
# The test command's lint phase: rustfmt and clippy (in rustup's default profile).
for c in rustfmt clippy; do
  if ! rustup component list --installed | grep -q "^$c"; then
    say "rustup component add $c"
    rustup component add "$c"
  fi
done
if rustup target list --installed | grep -qx wasm32-unknown-unknown; then
  say "wasm32-unknown-unknown: present"
else
  say "rustup target add wasm32-unknown-unknown"
  rustup target add wasm32-unknown-unknown
fi

# wasm-bindgen-cli must match the wasm-bindgen crate exactly (Trunk.toml pins it too).
WBG_VERSION="$(awk '$0 == "name = \"wasm-bindgen\"" { getline; gsub(/"/, "", $3); print $3; exit }' Cargo.lock)"
if [ -z "$WBG_VERSION" ]; then
  echo "setup: no wasm-bindgen in Cargo.lock" >&2
  exit 1
fi
if ! grep -q "wasm_bindgen = \"$WBG_VERSION\"" Trunk.toml; then
  echo "setup: Trunk.toml's [tools] wasm_bindgen differs from Cargo.lock's wasm-bindgen $WBG_VERSION: update Trunk.toml" >&2
  exit 1
fi

# The two tools build side by side: Trunk's build ends in a long single-threaded
# link (fat LTO), which leaves the second core to wasm-bindgen-cli.
pids=()
if [ "$(trunk --version 2>/dev/null)" = "trunk $TRUNK_VERSION" ]; then
  say "trunk $TRUNK_VERSION: present"
else
  say "cargo install trunk $TRUNK_VERSION (about 7 minutes on 2 cores)"
  cargo install trunk --version "$TRUNK_VERSION" --locked &
  pids+=($!)
fi
if [ "$(wasm-bindgen --version 2>/dev/null)" = "wasm-bindgen $WBG_VERSION" ]; then
  say "wasm-bindgen $WBG_VERSION: present"
else
  # No --locked: one of its locked dependencies is no longer on crates.io.
  say "cargo install wasm-bindgen-cli $WBG_VERSION (about 2 minutes)"
  cargo install wasm-bindgen-cli --version "$WBG_VERSION" &
  pids+=($!)
fi
failed=0
for pid in "${pids[@]}"; do
  wait "$pid" || failed=1
done
if [ "$failed" -ne 0 ]; then
  echo "setup: cargo install failed (see above)" >&2
  exit 1
fi

# --- npm: binaryen (wasm-opt), playwright-core, webgpu (dawn.node) ----------
# node_modules/.iclora-lock records the lockfile the install was made from.
if cmp -s package-lock.json node_modules/.iclora-lock 2>/dev/null && [ -x node_modules/.bin/wasm-opt ]; then
  say "npm packages: present"
else
  say "npm ci"
  npm ci --no-audit --no-fund
  cp package-lock.json node_modules/.iclora-lock
fi

# --- crate sources for every target ----------------------------------------
# Trunk builds with --offline; `cargo fetch` (all targets) brings the wasm-only
# crates that a native build would not download.
say "cargo fetch"
cargo fetch --locked --quiet
say "done ($PART)"
