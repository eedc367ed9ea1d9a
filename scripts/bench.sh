#!/usr/bin/env bash
# Benchmark: ours against the reference plugins (Debian's containernetworking-plugins in
# /usr/lib/cni), same configs, same run, same node: every row of issue 12's table.
#
#   sudo ./scripts/bench.sh [-n PODS] [-b BURST] [-B BIG_BURST] [-g GROWTH]
#
# Everything happens inside a "node" network namespace made here; pods are
# namespaces of their own. Per-invocation wall time is taken with bash's
# $EPOCHREALTIME around a direct exec (no extra process in the measurement).
# Prints medians per phase and the ratio ours/reference.
#
# Phases, per masquerade mode (none, iptables, nftables; the reference v1.1.1 has
# no nftables backend and uses iptables for the third):
#   - PODS (30) sequential ADDs, then their DELs (medians);
#   - BURST (50) and BIG_BURST (110: kubelet's default pods per node) concurrent
#     ADDs, then concurrent DELs (wall time of the whole burst);
#   - floor: BURST and BIG_BURST concurrent veth deletions by `ip`, no plugin (the
#     kernel's share of a DEL burst);
#   - flannel → bridge → host-local: PODS sequential ADDs and DELs through our flannel,
#     its delegates in-process (found in OURS, this build), and the same with every
#     delegate exec'd (copies of rcni with other build IDs: the gain of in-process). The
#     reference flannel (flannel-io/cni-plugin) is not packaged by Debian and cannot be
#     built here (its Go modules are not reachable): its floor is the reference bridge +
#     host-local ADD above, one process start less than a flannel chain would cost;
#   - DEL against the kernel's own veth teardown: PODS sequential `ip -n <pod> link del
#     eth0` of bridged veths (median), the part of a DEL no plugin can avoid;
#   - peak RSS of one ADD (the largest process of it: ours is one process, flannel chain
#     included) and the installed size of all plugins together (ours: rcni, the links
#     cost nothing; the reference: bridge, host-local, loopback, portmap);
#   - growth: GROWTH (1000) pods added one after the other over 4 bridges (a
#     bridge takes at most 1023 ports; IPv6 off in the node netns, or every new
#     port's multicast floods all the others), then deleted: median ADD and DEL
#     of the first 50 and of the last 50. -g 0 skips it (it takes minutes).
set -euo pipefail
cd "$(dirname "$0")/.."

N=30
BURST=50
BIG=110
GROWTH=1000
while [ $# -gt 0 ]; do
  case "$1" in
    -n) N="$2"; shift 2 ;;
    -b) BURST="$2"; shift 2 ;;
    -B) BIG="$2"; shift 2 ;;
    -g) GROWTH="$2"; shift 2 ;;
    *) echo "usage: $0 [-n PODS] [-b BURST] [-B BIG_BURST] [-g GROWTH]" >&2; exit 2 ;;
  esac
done
[ "$GROWTH" = 0 ] || [ "$GROWTH" -ge 100 ] || { echo "-g takes 0 or at least 100 pods" >&2; exit 2; }

[ "$(id -u)" = 0 ] || { echo "bench.sh needs root (network namespaces)" >&2; exit 1; }
./scripts/deps.sh >/dev/null
[ -x "${OURS:-target/bin}/bridge" ] || ./scripts/build.sh
OURS="${OURS:-$PWD/target/bin}"
REF=/usr/lib/cni
[ -x "$REF/bridge" ] || { echo "reference plugins missing in $REF" >&2; exit 1; }

# Network namespaces alive in the kernel, the deleted ones whose teardown has not run yet
# included (empty when the slab is merged away or unreadable).
netns_alive() { awk '$1 == "net_namespace" { print $2 }' /proc/slabinfo 2>/dev/null; }
# settle MAX: wait until at most MAX namespaces are alive, or until their number has not
# dropped for 2 s (a few may outlive their deletion for reasons of their own), at most 120 s.
# `ip netns del` returns before the kernel tears the namespace down (in a worker, later); a
# teardown of the previous phase's 1000 namespaces running beside a growth run would skew
# its first or last 50 ADDs.
settle() {
  local max=$1 n last="" still=0 i
  for i in $(seq 1 1200); do
    n=$(netns_alive)
    [ -z "$n" ] || [ "$n" -le "$max" ] && return 0
    if [ "$n" = "$last" ]; then still=$((still + 1)); else still=0; last=$n; fi
    [ "$still" -ge 20 ] && return 0
    sleep 0.1
  done
  echo "bench: $n network namespaces still alive after 120 s (expected at most $max)" >&2
}
BASE_NETNS=$(netns_alive)
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

# conf IMPL MASQ IDX [NET]: a bridge + host-local config, one bridge and subnet per
# impl and phase so runs never share state (NET: one of the growth phase's 4
# networks). MASQ: false, true (default backend: iptables, as the reference) or
# nftables (ipMasqBackend "nftables"; the reference v1.1.1 ignores the key and
# uses iptables).
conf() {
  local impl=$1 masq=$2 idx=$3 net=${4:-} backend=""
  local name="bench-$impl-$idx" bridge="b$impl$idx" subnet="10.$((100 + idx)).0.0/16"
  [ "$masq" = nftables ] && { masq=true; backend='"ipMasqBackend":"nftables",'; }
  if [ -n "$net" ]; then
    name="grow-$impl-$idx-$net"; bridge="g${impl:0:1}$idx$net"
    subnet="10.$((160 + idx * 4 + net)).0.0/16"
  fi
  cat <<EOF
{"cniVersion":"0.3.1","name":"$name","type":"bridge","bridge":"$bridge",
 "isGateway":true,"ipMasq":$masq,$backend
 "ipam":{"type":"host-local","subnet":"$subnet","dataDir":"$WORK/ipam"}}
EOF
}

# The measuring loops run inside the node netns: one bash, direct execs.
cat >"$WORK/run.sh" <<'EOF'
#!/usr/bin/env bash
# args: BINDIR CONF PREFIX N BURST BIG OUT [PLUGIN (bridge)]
set -u
bindir=$1; conf=$2; prefix=$3; n=$4; burst=$5; big=$6; out=$7; plugin=${8:-bridge}
export CNI_PATH=$bindir CNI_IFNAME=eth0 CNI_ARGS=""
ms() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f\n", (b-a)*1000}'; }
for cmd in ADD DEL; do
  for i in $(seq 1 "$n"); do
    t0=$EPOCHREALTIME
    CNI_COMMAND=$cmd CNI_CONTAINERID="$prefix-$i" CNI_NETNS=/run/netns/$prefix-$i \
      "$bindir/$plugin" <"$conf" >/dev/null 2>"$out.err" || { echo "$cmd failed:"; cat "$out.err"; exit 1; }
    t1=$EPOCHREALTIME
    ms "$t0" "$t1" >>"$out.${cmd,,}"
  done
done
# burst K TAG: K concurrent ADDs (wall time of the whole burst), then K concurrent DELs.
burst() {
  local k=$1 tag=$2 cmd fail i j t0 t1
  for cmd in ADD DEL; do
    fail=0
    t0=$EPOCHREALTIME
    for i in $(seq 1 "$k"); do
      CNI_COMMAND=$cmd CNI_CONTAINERID="$prefix-b$i" CNI_NETNS=/run/netns/$prefix-b$i \
        "$bindir/$plugin" <"$conf" >/dev/null 2>>"$out.$tag.err" &
    done
    for j in $(jobs -p); do wait "$j" || fail=1; done
    t1=$EPOCHREALTIME
    [ $fail = 0 ] || { echo "burst $cmd failed:"; cat "$out.$tag.err"; exit 1; }
    ms "$t0" "$t1" >"$out.$tag.${cmd,,}"
  done
}
[ "$burst" = 0 ] || burst "$burst" burst
[ "$big" = 0 ] || burst "$big" bigburst
EOF
chmod +x "$WORK/run.sh"

# floor.sh PREFIX K OUT: K veth pairs (container end in a pod netns, host end on a
# bridge in the node netns, made untimed), then K concurrent
# `ip -n <pod> link del eth0`: the link work of a DEL burst with no plugin around it.
cat >"$WORK/floor.sh" <<'EOF'
#!/usr/bin/env bash
set -u
prefix=$1; k=$2; out=$3
ip link add "fl$k" type bridge && ip link set "fl$k" up
for i in $(seq 1 "$k"); do
  ip link add "fv$k-$i" type veth peer name eth0 netns "$prefix-$i"
  ip link set "fv$k-$i" master "fl$k" up
done
t0=$EPOCHREALTIME
for i in $(seq 1 "$k"); do ip -n "$prefix-$i" link del eth0 & done
wait
t1=$EPOCHREALTIME
awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f\n", (b-a)*1000}' >"$out"
ip link del "fl$k"
EOF
chmod +x "$WORK/floor.sh"

# grow.sh BINDIR CONFPREFIX PODPREFIX N OUT: N ADDs one after the other, round-robin
# over the 4 configs CONFPREFIX{0..3}.json, then N DELs; per-call wall time.
cat >"$WORK/grow.sh" <<'EOF'
#!/usr/bin/env bash
set -u
bindir=$1; confs=$2; prefix=$3; n=$4; out=$5
export CNI_PATH=$bindir CNI_IFNAME=eth0 CNI_ARGS=""
ms() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f\n", (b-a)*1000}'; }
for cmd in ADD DEL; do
  for i in $(seq 1 "$n"); do
    t0=$EPOCHREALTIME
    CNI_COMMAND=$cmd CNI_CONTAINERID="$prefix-$i" CNI_NETNS=/run/netns/$prefix-$i \
      "$bindir/bridge" <"$confs$(( (i - 1) % 4 )).json" >/dev/null 2>"$out.err" \
      || { echo "$cmd $i failed:"; cat "$out.err"; exit 1; }
    t1=$EPOCHREALTIME
    ms "$t0" "$t1" >>"$out.${cmd,,}"
  done
done
EOF
chmod +x "$WORK/grow.sh"

# vethdel.sh PREFIX N OUT: N bridged veths (made untimed), then N `ip -n <pod> link del
# eth0`, one after the other, each timed.
cat >"$WORK/vethdel.sh" <<'EOF2'
#!/usr/bin/env bash
set -u
prefix=$1; n=$2; out=$3
ip link add vdbr type bridge && ip link set vdbr up
for i in $(seq 1 "$n"); do
  ip link add "vd$i" type veth peer name eth0 netns "$prefix-$i"
  ip link set "vd$i" master vdbr up
  ip -n "$prefix-$i" link set eth0 up
done
for i in $(seq 1 "$n"); do
  t0=$EPOCHREALTIME
  ip -n "$prefix-$i" link del eth0
  t1=$EPOCHREALTIME
  awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.3f\n", (b-a)*1000}' >>"$out"
done
ip link del vdbr
EOF2
chmod +x "$WORK/vethdel.sh"

# A copy of rcni per name, each with its own build ID: every delegation an exec.
other_builds() {
  /usr/bin/python3 - "$OURS/rcni" "$1" <<'EOF2'
import os, sys
src, out = sys.argv[1:3]
data = open(src, "rb").read()
# The GNU build ID note: namesz 4, descsz 20, type 3, "GNU\0", then the SHA-1.
at = data.index(b"\x04\x00\x00\x00\x14\x00\x00\x00\x03\x00\x00\x00GNU\x00") + 16
os.makedirs(out, exist_ok=True)
for n, name in enumerate(["flannel", "bridge", "host-local"], 1):
    copy = bytearray(data)
    for i in range(at, at + 20):
        copy[i] ^= n
    path = os.path.join(out, name)
    open(path, "wb").write(bytes(copy))
    os.chmod(path, 0o755)
EOF2
}

# chain IMPL BINDIR IDX: flannel chain pods (namespaces made untimed).
chain() {
  local impl=$1 bindir=$2 idx=$3 prefix="$TAG-ch$1"
  mkdir -p "$WORK/fl$impl"
  printf 'FLANNEL_NETWORK=10.%d.0.0/16\nFLANNEL_SUBNET=10.%d.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n' \
    "$((140 + idx))" "$((140 + idx))" >"$WORK/fl$impl/subnet.env"
  cat >"$WORK/fl$impl.json" <<EOF2
{"cniVersion":"0.3.1","name":"chain-$impl","type":"flannel","subnetFile":"$WORK/fl$impl/subnet.env",
 "dataDir":"$WORK/fl$impl/saved","delegate":{"bridge":"fl$idx$impl"},"ipam":{"dataDir":"$WORK/fl$impl/ipam"}}
EOF2
  for i in $(seq 1 "$N"); do ip netns add "$prefix-$i"; done
  ip netns exec "$NODE" "$WORK/run.sh" "$bindir" "$WORK/fl$impl.json" "$prefix" "$N" 0 0 "$WORK/chain$impl" flannel
  for i in $(seq 1 "$N"); do ip netns del "$prefix-$i"; done
}

# rss IMPL BIN CONF: peak RSS (KiB) of one ADD, as GNU time reports it: the largest
# process of the ADD (its delegates included).
rss() {
  local ns="$TAG-rss$1"
  ip netns add "$ns"
  ip netns exec "$NODE" env CNI_COMMAND=ADD CNI_CONTAINERID="rss$1" CNI_NETNS="/run/netns/$ns" \
    CNI_IFNAME=eth0 CNI_ARGS="" CNI_PATH="$(dirname "$2")" \
    /usr/bin/time -f %M -o "$WORK/rss$1" "$2" <"$3" >/dev/null
}

median() { sort -n "$1" | awk '{a[NR]=$1} END{ if (NR%2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2 }'; }
MAXB=$(( BURST > BIG ? BURST : BIG ))

# phase IMPL BINDIR MASQ IDX: make pod namespaces (untimed), run, collect.
phase() {
  local impl=$1 bindir=$2 masq=$3 idx=$4
  local prefix="$TAG-$impl$idx"
  conf "$impl" "$masq" "$idx" >"$WORK/$impl$idx.json"
  for i in $(seq 1 "$N"); do ip netns add "$prefix-$i"; done
  for i in $(seq 1 "$MAXB"); do ip netns add "$prefix-b$i"; done
  ip netns exec "$NODE" "$WORK/run.sh" "$bindir" "$WORK/$impl$idx.json" "$prefix" "$N" "$BURST" "$BIG" "$WORK/$impl$idx"
  for i in $(seq 1 "$N"); do ip netns del "$prefix-$i"; done
  for i in $(seq 1 "$MAXB"); do ip netns del "$prefix-b$i"; done
}

# floor K
floor() {
  local k=$1 prefix="$TAG-fl$1"
  for i in $(seq 1 "$k"); do ip netns add "$prefix-$i"; done
  ip netns exec "$NODE" "$WORK/floor.sh" "$prefix" "$k" "$WORK/floor$k"
  for i in $(seq 1 "$k"); do ip netns del "$prefix-$i"; done
}

# grow IMPL BINDIR MASQ IDX. Each run gets pod namespaces of its own, made fresh: what a
# plugin leaves in a pod netns (its /proc/sys/net dentries) must not make the next run's
# lookups slower or faster.
grow() {
  local impl=$1 bindir=$2 masq=$3 idx=$4
  for k in 0 1 2 3; do conf "$impl" "$masq" "$idx" "$k" >"$WORK/g$impl$idx-$k.json"; done
  # Only the node netns (and what was alive before the benchmark) besides this run's pods.
  [ -z "$BASE_NETNS" ] || settle $((BASE_NETNS + 1))
  for i in $(seq 1 "$GROWTH"); do ip netns add "$TAG-gp-$i"; done
  ip netns exec "$NODE" "$WORK/grow.sh" "$bindir" "$WORK/g$impl$idx-" "$TAG-gp" "$GROWTH" "$WORK/g$impl$idx"
  for i in $(seq 1 "$GROWTH"); do ip netns del "$TAG-gp-$i"; done
}

echo "rcni benchmark: bridge + host-local, flannel chain; $N sequential pods, bursts of $BURST and $BIG concurrent pods, growth to $GROWTH pods"
echo "machine: $(nproc) CPUs, $(awk '/MemTotal/{printf "%.1f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r), $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -1); load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "ours: $OURS   reference: $REF ($(dpkg-query -W -f='${Version}' containernetworking-plugins 2>/dev/null || echo unknown))"
echo
idx=0
for masq in false true nftables; do
  idx=$((idx + 1))
  phase ours "$OURS" "$masq" "$idx"
  phase ref "$REF" "$masq" "$idx"
done
floor "$BURST"
floor "$BIG"
other_builds "$WORK/execd"
chain ours "$OURS" 1
chain execd "$WORK/execd" 2
for i in $(seq 1 "$N"); do ip netns add "$TAG-vd-$i"; done
ip netns exec "$NODE" "$WORK/vethdel.sh" "$TAG-vd" "$N" "$WORK/vethdel"
for i in $(seq 1 "$N"); do ip netns del "$TAG-vd-$i"; done
conf ours false 7 >"$WORK/rssours.json"
conf ref false 8 >"$WORK/rssref.json"
rss ours "$OURS/bridge" "$WORK/rssours.json"
rss chain "$OURS/flannel" "$WORK/flours.json"
rss ref "$REF/bridge" "$WORK/rssref.json"
if [ "$GROWTH" != 0 ]; then
  ip netns exec "$NODE" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  idx=0
  for masq in false true nftables; do
    idx=$((idx + 1))
    grow ours "$OURS" "$masq" "$idx"
    # The reference has no nftables backend: its iptables run stands for it.
    [ "$masq" = nftables ] || grow ref "$REF" "$masq" "$idx"
  done
fi

printf '%-36s %12s %12s %8s\n' "phase" "ours (ms)" "ref (ms)" "ratio"
printf '%-36s %12s %12s %8s\n' "-----" "---------" "--------" "-----"
row() {
  local label=$1 o=$2 r=$3
  printf '%-36s %12.2f %12.2f %7.2fx\n' "$label" "$o" "$r" "$(awk -v o="$o" -v r="$r" 'BEGIN{print (r>0)?o/r:0}')"
}
suffix() {
  case "$1" in true) echo " +ipMasq" ;; nftables) echo " +ipMasq nft" ;; *) echo "" ;; esac
}
idx=0
for masq in false true nftables; do
  idx=$((idx + 1))
  sfx=$(suffix "$masq")
  row "ADD median$sfx" "$(median "$WORK/ours$idx.add")" "$(median "$WORK/ref$idx.add")"
  row "DEL median$sfx" "$(median "$WORK/ours$idx.del")" "$(median "$WORK/ref$idx.del")"
  for b in "burst:$BURST" "bigburst:$BIG"; do
    tag=${b%%:*}; k=${b#*:}
    row "burst $k ADD total$sfx" "$(cat "$WORK/ours$idx.$tag.add")" "$(cat "$WORK/ref$idx.$tag.add")"
    row "burst $k DEL total$sfx" "$(cat "$WORK/ours$idx.$tag.del")" "$(cat "$WORK/ref$idx.$tag.del")"
  done
done
# The flannel chain: ours in-process, against the reference bridge + host-local (its floor).
row "ADD flannel→bridge→host-local" "$(median "$WORK/chainours.add")" "$(median "$WORK/ref1.add")"
row "  same, delegates exec'd (ours only)" "$(median "$WORK/chainexecd.add")" "$(median "$WORK/ref1.add")"
row "DEL flannel→bridge→host-local" "$(median "$WORK/chainours.del")" "$(median "$WORK/ref1.del")"
# DEL against the kernel's own teardown (ratio: ours / the kernel's).
v=$(median "$WORK/vethdel")
printf '%-36s %12.2f %12s %7.2fx\n' "floor: veth deletion by ip (median)" "$v" "-" \
  "$(awk -v o="$(median "$WORK/ours1.del")" -v f="$v" 'BEGIN{print (f>0)?o/f:0}')"
printf '%-36s %9s KiB %9s KiB\n' "peak RSS, one ADD bridge+host-local" "$(cat "$WORK/rssours")" "$(cat "$WORK/rssref")"
printf '%-36s %9s KiB %12s\n' "peak RSS, one ADD flannel chain" "$(cat "$WORK/rsschain")" "-"
size_ours=$(stat -L -c %s "$OURS/rcni")
size_ref=0
for p in bridge host-local loopback portmap; do size_ref=$((size_ref + $(stat -L -c %s "$REF/$p"))); done
printf '%-36s %12.2f %12.2f %7.2fx\n' "installed size, MB (10^6 bytes)" \
  "$(awk -v b="$size_ours" 'BEGIN{print b/1e6}')" "$(awk -v b="$size_ref" 'BEGIN{print b/1e6}')" \
  "$(awk -v o="$size_ours" -v r="$size_ref" 'BEGIN{print o/r}')"
# The floor has no plugin: its ratio column is our DEL burst without masquerade
# over the floor.
for b in "burst:$BURST" "bigburst:$BIG"; do
  tag=${b%%:*}; k=${b#*:}
  f=$(cat "$WORK/floor$k")
  printf '%-36s %12.2f %12s %7.2fx\n' "floor: $k veth deletions (ip)" "$f" "-" \
    "$(awk -v o="$(cat "$WORK/ours1.$tag.del")" -v f="$f" 'BEGIN{print (f>0)?o/f:0}')"
done
if [ "$GROWTH" != 0 ]; then
  # part FILE first|last: median of the first or last 50 lines.
  part() { if [ "$2" = first ]; then head -n 50 "$1"; else tail -n 50 "$1"; fi >"$1.$2"; median "$1.$2"; }
  idx=0
  for masq in false true nftables; do
    idx=$((idx + 1))
    sfx=$(suffix "$masq")
    r=$idx
    [ "$masq" = nftables ] && r=2
    for cmd in add del; do
      C=${cmd^^}
      o1=$(part "$WORK/gours$idx.$cmd" first); o2=$(part "$WORK/gours$idx.$cmd" last)
      r1=$(part "$WORK/gref$r.$cmd" first); r2=$(part "$WORK/gref$r.$cmd" last)
      row "$GROWTH pods: $C first 50$sfx" "$o1" "$r1"
      row "$GROWTH pods: $C last 50$sfx" "$o2" "$r2"
      row "$GROWTH pods: $C last/first$sfx" "$(awk -v a="$o2" -v b="$o1" 'BEGIN{print a/b}')" \
        "$(awk -v a="$r2" -v b="$r1" 'BEGIN{print a/b}')"
    done
  done
fi
echo
echo "ratio < 1 means ours is faster. DEL is dominated by the kernel's veth teardown."
echo "The reference has no nftables backend: its '+ipMasq nft' columns are its iptables runs."
