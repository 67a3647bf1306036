#!/usr/bin/env bash
# Builds every fuzz target and runs each from the checked-in seeds.
#   bash fuzz/run.sh [SECONDS]          each target for SECONDS (default 10): CI's short runs
#   bash fuzz/run.sh --runs N [TARGET…] each target for N executions (the long run:
#                                       N = 10000000), then a table of executions,
#                                       executions a second and crashes per target
# Stable toolchain: RUSTC_BOOTSTRAP enables the sanitizer flags cargo-fuzz passes
# (no nightly can be fetched on these machines). A crash, a panic or a leak fails
# the short run at once; the long run goes on to the next target and reports it.
set -euo pipefail
cd "$(dirname "$0")"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1

mode=time
limit="${1:-10}"
if [[ "${1:-}" == "--runs" ]]; then
  mode=runs
  limit="${2:?--runs needs a count}"
  shift 2
fi
all=(sip_scan stun_wire keepalive overload_se gist_wire nslp_wire hep nfqueue_wire turn_framing
  relay_credentials relay_server gist_node icmp_unreachable dataplane api_bodies cache_fields active_cdn)
targets=("${all[@]}")
if [[ $mode == runs && $# -gt 0 ]]; then targets=("$@"); fi

seeds_of() {
  case "$1" in
    stun_wire) echo seeds/stun ;;
    gist_wire) echo seeds/gist ;;
    gist_node) echo seeds/gist_node ;;
    icmp_unreachable) echo seeds/icmp ;;
    nslp_wire) echo seeds/nslp ;;
    hep) echo seeds/hep ;;
    nfqueue_wire) echo seeds/nfqueue ;;
    turn_framing | relay_server) echo seeds/turn ;;
    relay_credentials) echo seeds/relay ;;
    api_bodies) echo seeds/api ;;
    cache_fields) echo seeds/cache ;;
    active_cdn) echo seeds/html ;;
    *) echo seeds/sip ;;
  esac
}

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
summary=()
failed=0
for target in "${targets[@]}"; do
  corpus="$work/$target"
  mkdir -p "$corpus"
  log="$work/$target.log"
  if [[ $mode == time ]]; then
    echo "[fuzz] $target for ${limit}s"
    budget=(-max_total_time="$limit")
  else
    echo "[fuzz] $target for $limit executions (progress: $log)"
    budget=(-runs="$limit")
  fi
  start=$SECONDS
  rc=0
  cargo fuzz run --sanitizer none "$target" "$corpus" "$(seeds_of "$target")" -- "${budget[@]}" -rss_limit_mb=2048 >"$log" 2>&1 || rc=$?
  secs=$((SECONDS - start))
  done_line="$(grep -E "^Done [0-9]+ runs" "$log" | tail -1 || true)"
  runs="$(sed -E 's/^Done ([0-9]+) runs.*/\1/' <<<"$done_line")"
  if grep -q "libFuzzer: run interrupted" "$log"; then
    # Stopped by hand (SIGINT): not a crash; the executions are the last count.
    runs="$(grep -oE "^#[0-9]+" "$log" | tail -1 | tr -d '#')"
    crashed=stopped
  else
    if [[ $rc -ne 0 ]]; then
      tail -40 "$log"
      failed=$((failed + 1))
      [[ $mode == time ]] && exit 1
    fi
    echo "${done_line:-no summary line}"
    crashed=$([[ $rc -eq 0 ]] && echo no || echo yes)
  fi
  summary+=("$(printf '%-18s %12s %10s %8s %8s' "$target" "${runs:-?}" "$((${runs:-0} / (secs > 0 ? secs : 1)))" "${secs}s" "$crashed")")
done
if [[ $mode == runs ]]; then
  printf '\n%-18s %12s %10s %8s %8s\n' target executions exec/s time crashed
  printf '%s\n' "${summary[@]}"
fi
exit $((failed > 0))
