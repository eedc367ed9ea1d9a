#!/usr/bin/env bash
# Benchmark: our bridge + host-local against the reference plugins (Debian's
# containernetworking-plugins in /usr/lib/cni), same configs, same run, same node.
#
#   sudo ./scripts/bench.sh [-n PODS] [-b BURST]
#
# Everything happens inside a "node" network namespace made here; pods are
# namespaces of their own. Per-invocation wall time is taken with bash's
# $EPOCHREALTIME around a direct exec (no extra process in the measurement).
# Prints medians per phase and the ratio ours/reference.
set -euo pipefail
cd "$(dirname "$0")/.."

N=30
BURST=50
while [ $# -gt 0 ]; do
  case "$1" in
    -n) N="$2"; shift 2 ;;
    -b) BURST="$2"; shift 2 ;;
    *) echo "usage: $0 [-n PODS] [-b BURST]" >&2; exit 2 ;;
  esac
done

[ "$(id -u)" = 0 ] || { echo "bench.sh needs root (network namespaces)" >&2; exit 1; }
./scripts/deps.sh >/dev/null
[ -x "${OURS:-target/bin}/bridge" ] || ./scripts/build.sh
OURS="${OURS:-$PWD/target/bin}"
REF=/usr/lib/cni
[ -x "$REF/bridge" ] || { echo "reference plugins missing in $REF" >&2; exit 1; }

TAG="rcnib$$"
NODE="$TAG-node"
WORK=$(mktemp -d /tmp/rcni-bench.XXXXXX)
cleanup() {
  for ns in $(ip netns list | awk '{print $1}' | grep "^$TAG-" || true); do
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

ip netns add "$NODE"
ip -n "$NODE" link set lo up

# conf IMPL MASQ IDX: a bridge + host-local config, one bridge and subnet per impl
# and phase so runs never share state. MASQ: false, true (default backend: iptables,
# as the reference) or nftables (ipMasqBackend "nftables"; the reference v1.1.1
# ignores the key and uses iptables).
conf() {
  local impl=$1 masq=$2 idx=$3 backend=""
  [ "$masq" = nftables ] && { masq=true; backend='"ipMasqBackend":"nftables",'; }
  cat <<EOF
{"cniVersion":"0.3.1","name":"bench-$impl-$idx","type":"bridge","bridge":"b$impl$idx",
 "isGateway":true,"ipMasq":$masq,$backend
 "ipam":{"type":"host-local","subnet":"10.$((100 + idx)).0.0/16","dataDir":"$WORK/ipam"}}
EOF
}

# The measuring loop runs inside the node netns: one bash, direct execs.
cat >"$WORK/run.sh" <<'EOF'
#!/usr/bin/env bash
# args: BINDIR CONF PREFIX N BURST OUT
set -u
bindir=$1; conf=$2; prefix=$3; n=$4; burst=$5; out=$6
export CNI_PATH=$bindir CNI_IFNAME=eth0 CNI_ARGS=""
ms() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f\n", (b-a)*1000}'; }
for i in $(seq 1 "$n"); do
  t0=$EPOCHREALTIME
  CNI_COMMAND=ADD CNI_CONTAINERID="$prefix-$i" CNI_NETNS=/run/netns/$prefix-$i \
    "$bindir/bridge" <"$conf" >/dev/null 2>"$out.err" || { echo "ADD failed:"; cat "$out.err"; exit 1; }
  t1=$EPOCHREALTIME
  ms "$t0" "$t1" >>"$out.add"
done
for i in $(seq 1 "$n"); do
  t0=$EPOCHREALTIME
  CNI_COMMAND=DEL CNI_CONTAINERID="$prefix-$i" CNI_NETNS=/run/netns/$prefix-$i \
    "$bindir/bridge" <"$conf" >/dev/null 2>"$out.err" || { echo "DEL failed:"; cat "$out.err"; exit 1; }
  t1=$EPOCHREALTIME
  ms "$t0" "$t1" >>"$out.del"
done
# Burst: BURST concurrent ADDs, wall time of the whole burst, then concurrent DELs.
t0=$EPOCHREALTIME
for i in $(seq 1 "$burst"); do
  CNI_COMMAND=ADD CNI_CONTAINERID="$prefix-b$i" CNI_NETNS=/run/netns/$prefix-b$i \
    "$bindir/bridge" <"$conf" >/dev/null 2>>"$out.burst.err" &
done
fail=0; for j in $(jobs -p); do wait "$j" || fail=1; done
t1=$EPOCHREALTIME
[ $fail = 0 ] || { echo "burst ADD failed:"; cat "$out.burst.err"; exit 1; }
ms "$t0" "$t1" >"$out.burst"
t0=$EPOCHREALTIME
for i in $(seq 1 "$burst"); do
  CNI_COMMAND=DEL CNI_CONTAINERID="$prefix-b$i" CNI_NETNS=/run/netns/$prefix-b$i \
    "$bindir/bridge" <"$conf" >/dev/null 2>>"$out.burst.err" &
done
for j in $(jobs -p); do wait "$j" || fail=1; done
t1=$EPOCHREALTIME
[ $fail = 0 ] || { echo "burst DEL failed:"; cat "$out.burst.err"; exit 1; }
ms "$t0" "$t1" >"$out.burstdel"
EOF
chmod +x "$WORK/run.sh"

median() { sort -n "$1" | awk '{a[NR]=$1} END{ if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2 }'; }

# phase IMPL BINDIR MASQ IDX: make pod namespaces (untimed), run, collect.
phase() {
  local impl=$1 bindir=$2 masq=$3 idx=$4
  local prefix="$TAG-$impl$idx"
  conf "$impl" "$masq" "$idx" >"$WORK/$impl$idx.json"
  for i in $(seq 1 "$N"); do ip netns add "$prefix-$i"; done
  for i in $(seq 1 "$BURST"); do ip netns add "$prefix-b$i"; done
  ip netns exec "$NODE" "$WORK/run.sh" "$bindir" "$WORK/$impl$idx.json" "$prefix" "$N" "$BURST" "$WORK/$impl$idx"
  for i in $(seq 1 "$N"); do ip netns del "$prefix-$i"; done
  for i in $(seq 1 "$BURST"); do ip netns del "$prefix-b$i"; done
}

echo "rcni benchmark: $N sequential pods, burst of $BURST concurrent pods, bridge + host-local"
echo "ours: $OURS   reference: $REF ($(dpkg-query -W -f='${Version}' containernetworking-plugins 2>/dev/null || echo unknown))"
echo
idx=0
for masq in false true nftables; do
  idx=$((idx + 1))
  phase ours "$OURS" "$masq" "$idx"
  phase ref "$REF" "$masq" "$idx"
done

printf '%-32s %12s %12s %8s\n' "phase" "ours (ms)" "ref (ms)" "ratio"
printf '%-32s %12s %12s %8s\n' "-----" "---------" "--------" "-----"
row() {
  local label=$1 o r
  o=$2; r=$3
  printf '%-32s %12.2f %12.2f %7.2fx\n' "$label" "$o" "$r" "$(awk -v o="$o" -v r="$r" 'BEGIN{print (r>0)?o/r:0}')"
}
idx=0
for masq in false true nftables; do
  idx=$((idx + 1))
  sfx=""
  [ "$masq" = true ] && sfx=" +ipMasq"
  [ "$masq" = nftables ] && sfx=" +ipMasq nft"
  row "ADD median$sfx" "$(median "$WORK/ours$idx.add")" "$(median "$WORK/ref$idx.add")"
  row "DEL median$sfx" "$(median "$WORK/ours$idx.del")" "$(median "$WORK/ref$idx.del")"
  row "burst $BURST ADD total$sfx" "$(cat "$WORK/ours$idx.burst")" "$(cat "$WORK/ref$idx.burst")"
  row "burst $BURST DEL total$sfx" "$(cat "$WORK/ours$idx.burstdel")" "$(cat "$WORK/ref$idx.burstdel")"
done
echo
echo "ratio < 1 means ours is faster. DEL is dominated by the kernel's veth teardown."
