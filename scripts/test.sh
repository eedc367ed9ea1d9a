#!/usr/bin/env bash
# The test command: unit tests, the root-only integration tests (the real binaries
# in network namespaces they create, never the machine's own; the short crash soak
# among them), a short run of every fuzz target, then the runtime suite (libcni,
# containerd CRI, podman driving the plugins).
#
# The closing line counts every test binary: passed, failed (a test binary that
# crashed before its summary counts as one failure), and skipped (#[ignore]d tests,
# each with its reason in cargo's output; the kernel-dependent ones this kernel can
# run are run after the main pass and counted as run, not skipped).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "scripts/test.sh needs root: the integration tests create network namespaces." >&2
  exit 1
fi
./scripts/deps.sh
./scripts/build.sh
./scripts/build-fault-injection.sh
export RCNI_BIN_DIR="$PWD/target/bin"
export RCNI_FAULT_BIN_DIR="$PWD/target/bin-faults"
log=$(mktemp /tmp/rcni-test.XXXXXX)
probe="rcni-probe-$$"
trap 'rm -f "$log"; ip netns del "$probe" 2>/dev/null || true' EXIT
status=0
cargo test --workspace --locked --no-fail-fast -- --test-threads="${TEST_THREADS:-4}" "$@" 2>&1 \
  | tee "$log" || status=1

# Kernel-dependent tests are #[ignore]d; run the ones this kernel supports (probed in a
# namespace of our own).
ip netns add "$probe"
if ip -n "$probe" link add p0 type bridge vlan_filtering 1 2>/dev/null; then
  kernel_tests=("netlink netns bridge_vlan_filtering_and_vlans"
                "rcni-integration bridge vlan_access_port")
else
  kernel_tests=("rcni-integration bridge vlan_add_without_kernel_vlan_filtering_fails_cleanly")
fi
ip netns del "$probe"
echo "=== rcni: #[ignore]d tests this kernel can run ===" | tee -a "$log"
for t in "${kernel_tests[@]}"; do
  read -r pkg target name <<<"$t"
  cargo test --locked -p "$pkg" --test "$target" -- --ignored --exact "$name" 2>&1 \
    | tee -a "$log" || status=1
done

# Every fuzz target for a few seconds (scripts/fuzz.sh; the long mode is run by hand).
./scripts/fuzz.sh 2>&1 | tee -a "$log" || status=1

# Real clients drive the built plugins: libcni, containerd's CRI plugin, podman.
./scripts/runtimes-test.sh 2>&1 | tee -a "$log" || status=1

# One closing line for the whole run.
awk '
  function count(line,   i, n) {
    n = split(line, w, /[ ;]+/)
    for (i = 2; i <= n; i++) {
      if (w[i] == "passed") p1 = w[i-1]
      if (w[i] == "failed") f1 = w[i-1]
      if (w[i] == "ignored") g1 = w[i-1]
    }
  }
  /^=== rcni: #\[ignore\]d tests this kernel can run ===$/ { extra = 1; next }
  /^ +(Running|Doc-tests) / { started++ }
  /^test result: (ok|FAILED)\./ {
    p1 = f1 = g1 = 0; count($0); results++
    p += p1; f += f1
    if (extra) ignored -= p1 + f1; else ignored += g1
  }
  /^[0-9]+ passed, [0-9]+ failed$/ { p += $1; f += $3 }
  END {
    crashed = started - results
    if (crashed > 0) { f += crashed; printf "%d test binaries ended without a result\n", crashed }
    printf "%d passed, %d failed, %d skipped\n", p, f, ignored
  }' "$log"
exit $status
