#!/usr/bin/env bash
# One command: set up a fresh machine, then run every check and test.
# .ci/run calls exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "[test] rustfmt"
cargo fmt --all --check
bash scripts/build.sh
echo "[test] clippy (-D warnings)"
cargo clippy --locked --workspace --all-targets -- -D warnings
cargo clippy --locked --release --target wasm32-wasip2 -p netserv-keepalive -p netserv-fault-injector -p netserv-media-relay -p netserv-overload-se -p netserv-active-cdn -- -D warnings
echo "[test] docs"
RUSTDOCFLAGS="-D warnings" cargo doc --locked --workspace --no-deps -q
echo "[test] unit, RFC-vector and end-to-end tests"
# End-to-end tests build network namespaces and run sipp: one at a time;
# here they must run (a test that skips for want of root fails instead).
NETSERV_E2E=require cargo test --locked --workspace -- --test-threads=1
echo "[test] fuzz targets (short runs)"
bash fuzz/run.sh "${FUZZ_SECONDS:-10}"
