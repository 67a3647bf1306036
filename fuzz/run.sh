#!/usr/bin/env bash
# Builds every fuzz target and runs each for N seconds (default 10) from the
# checked-in seeds. Stable toolchain: RUSTC_BOOTSTRAP enables the sanitizer
# flags cargo-fuzz passes (no nightly can be fetched on these machines).
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-10}"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
for target in sip_scan stun_wire keepalive overload_se gist_wire nslp_wire hep nfqueue_wire turn_framing relay_credentials relay_server gist_node icmp_unreachable; do
  seeds=seeds/sip
  [[ $target == stun_wire ]] && seeds=seeds/stun
  [[ $target == gist_wire ]] && seeds=seeds/gist
  [[ $target == gist_node ]] && seeds=seeds/gist_node
  [[ $target == icmp_unreachable ]] && seeds=seeds/icmp
  [[ $target == nslp_wire ]] && seeds=seeds/nslp
  [[ $target == hep ]] && seeds=seeds/hep
  [[ $target == nfqueue_wire ]] && seeds=seeds/nfqueue
  [[ $target == turn_framing ]] && seeds=seeds/turn
  [[ $target == relay_credentials ]] && seeds=seeds/relay
  [[ $target == relay_server ]] && seeds=seeds/turn
  corpus="$(mktemp -d)"
  trap 'rm -rf "$corpus"' EXIT
  echo "[fuzz] $target for ${secs}s"
  log="$corpus.log"
  # A crash, a panic or a leak makes cargo fuzz exit non-zero: fail the run.
  if ! cargo fuzz run --sanitizer none "$target" "$corpus" "$seeds" -- -max_total_time="$secs" -rss_limit_mb=2048 >"$log" 2>&1; then
    tail -40 "$log"
    exit 1
  fi
  grep -E "^Done|DONE" "$log" | tail -1
  rm -rf "$corpus" "$log"
done
