#!/usr/bin/env bash
# Builds the wasm modules and the workspace. PROFILE=release for release builds.
set -euo pipefail
cd "$(dirname "$0")/.."
profile_flag=()
[[ "${PROFILE:-debug}" == release ]] && profile_flag=(--release)
echo "[build] wasm modules (wasm32-wasip2)"
cargo build --locked --release --target wasm32-wasip2 -p netserv-keepalive -p netserv-fault-injector -p netserv-media-relay -p netserv-overload-se -p netserv-active-cdn
echo "[build] workspace (${PROFILE:-debug})"
cargo build --locked --workspace --bins --examples "${profile_flag[@]}"
