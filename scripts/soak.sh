#!/usr/bin/env bash
# The crash soak, long form (integration/tests/soak.rs): by default 1000 mixed ADD, DEL,
# repeated ADD and CHECK of pods through flannel → bridge → host-local with ipMasq, 50 at
# once, with SIGKILLs at random points; then the checks and one GC. In namespaces of its
# own, like every test. scripts/test.sh runs the short form (200 operations).
#
#   sudo ./scripts/soak.sh [--backend iptables|nftables] [--ops N] [--concurrency N]
#                          [--kill SHARE] [--seed HEX]
#
# Every run prints its seed; --seed replays the same decisions (which pod, which command,
# which process is killed and when in its life), on whatever timing the machine gives.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "scripts/soak.sh needs root: it creates network namespaces." >&2
  exit 1
fi
while [ $# -gt 0 ]; do
  case "$1" in
    --backend) export RCNI_SOAK_BACKEND="$2"; shift 2 ;;
    --ops) export RCNI_SOAK_OPS="$2"; shift 2 ;;
    --concurrency) export RCNI_SOAK_CONCURRENCY="$2"; shift 2 ;;
    --kill) export RCNI_SOAK_KILL="$2"; shift 2 ;;
    --seed) export RCNI_SOAK_SEED="$2"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "scripts/soak.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
./scripts/build.sh
export RCNI_BIN_DIR="$PWD/target/bin"
cargo test --locked -p rcni-integration --test soak -- --ignored --exact soak_long --nocapture
