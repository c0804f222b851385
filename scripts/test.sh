#!/usr/bin/env bash
# Everything CI runs, from a fresh Debian 12 machine: installs (scripts/setup.sh
# test), the crate's tests on lavapipe (naga shader validation, every kernel
# against its CPU reference, golden model tests), the wasm app build, three
# browser tests in headless Chromium on WebGPU: the kernel self-test
# (tests/e2e/selftest.mjs), weight downloads and the OPFS cache
# (tests/e2e/weights.mjs) and the studio end to end (tests/e2e/app.mjs), and the
# kernel self-test under Node on Chrome's Dawn (tests/e2e/dawn_selftest.mjs, the
# harness the GPU machine runs). rustfmt and clippy (warnings as errors) check the code.
# Prints the time of each phase at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

TIMES=()
phase() {
  local name="$1" t0=$SECONDS rc=0
  shift
  printf '\n\033[1m== %s\033[0m\n' "$name"
  "$@" || rc=$?
  TIMES+=("$(printf '%-28s %4ds%s' "$name" $((SECONDS - t0)) "$([ $rc -eq 0 ] || echo "  FAILED ($rc)")")")
  return "$rc"
}
report() {
  local rc=$?
  printf '\n\033[1m== phases\033[0m\n'
  printf '%s\n' "${TIMES[@]}"
  printf '%-28s %4ds  (exit %d)\n' total "$SECONDS" "$rc"
}
trap report EXIT

phase "setup" scripts/setup.sh test
. scripts/env.sh
failed=0
# --release: from a cold target dir it compiles in about half the CPU time of
# the dev profile (no debuginfo, fewer codegen units; measured 117 s vs 219 s
# CPU on this 2-core machine), and the tests themselves take the same ~12 s
# (their time is spent in lavapipe). Developers' `cargo test` runs keep
# checking with debug assertions. A failure here does not stop the web checks.
phase "cargo test --release" cargo test --release --locked || failed=1
# Formatting (rustfmt.toml) and clippy's default lints, natively (every target) and for the
# browser build (the wasm-only code), warnings as errors.
lint() {
  cargo fmt --check &&
    cargo clippy --release --locked --all-targets -- -D warnings &&
    cargo clippy --release --locked --lib --target wasm32-unknown-unknown -- -D warnings
}
phase "rustfmt + clippy" lint || failed=1
if phase "trunk build --release" trunk build --release; then
  phase "browser self-test" node tests/e2e/selftest.mjs || failed=1
  phase "dawn.node self-test" node tests/e2e/dawn_selftest.mjs || failed=1
  phase "browser weights" node tests/e2e/weights.mjs || failed=1
  # Needs target/release/iclora, which `cargo test --release` built.
  phase "browser studio" node tests/e2e/app.mjs || failed=1
else
  failed=1
fi
exit "$failed"
