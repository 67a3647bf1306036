#!/usr/bin/env bash
# One command: set up a fresh machine, build everything, run the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh
exec target/debug/netserv-demo
