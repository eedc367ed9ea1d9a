#!/usr/bin/env bash
# The test command: unit tests plus the root-only integration tests, which run the
# real binaries in network namespaces they create (never the machine's own).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "scripts/test.sh needs root: the integration tests create network namespaces." >&2
  exit 1
fi
./scripts/deps.sh
./scripts/build.sh
export RCNI_BIN_DIR="$PWD/target/bin"
cargo test --workspace --locked -- --test-threads="${TEST_THREADS:-4}" "$@"
