#!/usr/bin/env bash
# Builds the sample monitors for wasm32-unknown-unknown and copies the
# modules to target/monitors/wasm/<name>.wasm, the stable path tests load.
# The target dir is under the main target dir so repeated runs (and CI) reuse
# the build; this workspace is separate so host builds never compile it.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="$PWD/target/monitors"
cargo build --release --target wasm32-unknown-unknown --manifest-path monitors/Cargo.toml

out="$CARGO_TARGET_DIR/wasm"
mkdir -p "$out"
for m in threshold zscore stuck rate chaos; do
  src="$CARGO_TARGET_DIR/wasm32-unknown-unknown/release/strata_monitor_$m.wasm"
  cp "$src" "$out/$m.wasm"
  echo "monitors: $out/$m.wasm ($(wc -c <"$src") bytes)"
done
