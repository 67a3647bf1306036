#!/usr/bin/env bash
# Installs what the demo and the tests need on a fresh Debian machine (root):
# sipp (sip-tester), kamailio, coturn, baresip, sipvicious, iptables, ipset, iproute2, curl, python3,
# nginx, varnish, wrk, chromium, fonts-dejavu-core, and the wasm32-wasip2 target.
set -euo pipefail
need=()
command -v sipp >/dev/null || need+=(sip-tester)
command -v iptables >/dev/null || need+=(iptables)
# The appliance keeps module filters in ipsets (one kernel lookup per packet
# however many tenants are installed).
command -v ipset >/dev/null || need+=(ipset)
command -v ip >/dev/null || need+=(iproute2)
command -v curl >/dev/null || need+=(curl)
# The end-to-end tests serve modules with python3 -m http.server.
command -v python3 >/dev/null || need+=(python3)
# The ITSP's SIP server in the plugin tests and the demo.
command -v kamailio >/dev/null || need+=(kamailio)
# coturn's own TURN clients test the media relay (turnutils_uclient,
# turnutils_peer); its turnserver is the relay benchmark's anchor.
command -v turnutils_uclient >/dev/null || need+=(coturn)
# Two real phones call each other through the edge relay (baresip with its
# turn and ausine modules).
command -v baresip >/dev/null || need+=(baresip)
# SIPVicious (svmap, svwar, svcrack) attacks the testbed from the phone side.
command -v svmap >/dev/null || need+=(sipvicious)
# The edge cache benchmark's anchors and load: nginx proxy_cache, Varnish, wrk.
command -v nginx >/dev/null || need+=(nginx)
command -v varnishd >/dev/null || need+=(varnish)
command -v wrk >/dev/null || need+=(wrk)
# A real browser loads a page through the edge cache (headless).
command -v chromium >/dev/null || need+=(chromium)
# The font the overload benchmark writes its plot's text in.
[[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ]] || need+=(fonts-dejavu-core)
if ((${#need[@]})); then
  echo "[setup] apt-get install ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if ! rustup target list --installed | grep -qx wasm32-wasip2; then
  echo "[setup] rustup target add wasm32-wasip2"
  rustup target add wasm32-wasip2
fi
