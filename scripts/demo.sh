#!/usr/bin/env bash
# One command: set up a fresh machine, build everything, run the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
PROFILE=release bash scripts/build.sh
exec target/release/netserv-demo
