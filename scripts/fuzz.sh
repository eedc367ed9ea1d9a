#!/usr/bin/env bash
# Fuzzing (cargo fuzz, libFuzzer, the nightly toolchain): the targets in fuzz/fuzz_targets.
#
#   scripts/fuzz.sh                  short mode: every target for 5 s (FUZZ_SECONDS), run by
#                                    scripts/test.sh; a scratch corpus, the committed one read
#   scripts/fuzz.sh --long 10        long mode: 10 minutes per target, one after the other;
#                                    the working corpus grows in fuzz/work/<target> (kept
#                                    between runs), logs in fuzz/work/<target>.log
#   scripts/fuzz.sh [...] TARGET...  only these targets
#
# A crash (a panic, a broken invariant, a timeout or an out-of-memory) leaves its input in
# fuzz/artifacts/<target>/; replay it with
#   cd fuzz && cargo +nightly fuzz run -O -a -s none <target> artifacts/<target>/<file>
# Each target counts as one test in the closing line (`N passed, N failed`).
set -euo pipefail
cd "$(dirname "$0")/.."

mode=short
seconds="${FUZZ_SECONDS:-5}"
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --long) mode=long; seconds=$(( ${2:?--long needs minutes per target} * 60 )); shift 2 ;;
    --short) mode=short; shift ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done

# What this needs: the nightly toolchain and cargo-fuzz.
if ! cargo +nightly --version >/dev/null 2>&1; then
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

cd fuzz
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo +nightly fuzz list)
fi
echo "=== rcni: fuzzing ${targets[*]} ($mode, ${seconds}s each) ==="
# Release code with overflow checks (-a); no AddressSanitizer: our crates forbid unsafe code,
# and without it a target runs about twice as fast.
build=(-O -a --sanitizer none)
cargo +nightly fuzz build "${build[@]}"

passed=0
failed=0
scratch=$(mktemp -d /tmp/rcni-fuzz.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
  if [ "$mode" = long ]; then
    work="work/$t"
    log="work/$t.log"
  else
    work="$scratch/$t"
    log="$scratch/$t.log"
  fi
  mkdir -p "$work" "corpus/$t" "artifacts/$t"
  # -timeout: one input running 10 s is a hang; -rss_limit_mb: a leak or a blow-up.
  if cargo +nightly fuzz run "${build[@]}" "$t" "$work" "corpus/$t" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      >"$log" 2>&1; then
    verdict=ok
    passed=$((passed + 1))
  else
    verdict=FAILED
    failed=$((failed + 1))
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  done_line=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true)
  cov=$(sed -E -n 's/.* cov: ([0-9]+) ft: ([0-9]+) corp: ([0-9]+).*/cov \1, features \2, corpus \3/p' <<<"$done_line")
  echo "fuzz $t: $verdict, ${runs:-?} runs in ${seconds}s, ${cov:-no coverage line}"
  if [ "$verdict" = FAILED ]; then
    grep -E 'panicked at|ERROR: libFuzzer|Test unit written|SUMMARY' "$log" | head -n 8 | sed 's/^/    /'
    [ "$mode" = long ] || tail -n 40 "$log" | sed 's/^/    | /'
  fi
done
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
