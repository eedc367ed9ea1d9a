#!/usr/bin/env bash
# rcni demo: a three-node flannel cluster in network namespaces, pods networked by our
# `flannel` plugin (→ bridge → host-local, + loopback) and `portmap`, pings to prove it
# works, a pod's hostPort on node1 reached from node2, and rcni-doctor checking each node,
# then naming a broken one's fault and fixing it.
#
#   sudo ./scripts/demo.sh                  # builds, then runs host-gw and vxlan
#   sudo ./scripts/demo.sh --mode vxlan     # one mode only
#   sudo ./scripts/demo.sh --no-build       # use target/bin as it is
#
# What it builds (all inside network namespaces; the machine's own network is never touched):
#
#   netns rcni-demo-lan: bridge lan0 = the LAN switch
#      ├── veth ── netns rcni-demo-node1  eth0 192.168.100.11/24   pods 10.244.1.0/24
#      ├── veth ── netns rcni-demo-node2  eth0 192.168.100.12/24   pods 10.244.2.0/24
#      └── veth ── netns rcni-demo-node3  eth0 192.168.100.13/24   pods 10.244.3.0/24
#
# flanneld itself is not run: the script does what it would do on each node (write
# subnet.env; install the host-gw routes or the vxlan flannel.1 device, routes, neighbours
# and FDB entries). Everything a pod needs is then done by the CNI plugins, exactly as a
# runtime calls them (each node has its CNI config dir, and a libcni-style cache of its pods'
# results, which rcni-doctor reads). Everything is removed at the end, also on Ctrl-C or error.
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$PWD
CONFLIST=$REPO/conf-examples/10-flannel.conflist
# The hostPort pod1 on node1 publishes (its port 80), as kubelet passes it to portmap.
HOST_PORT=8080

PREFIX=rcni-demo
LAN_NS=$PREFIX-lan
NODES=(1 2 3)
PODS_PER_NODE=2
CLUSTER_NET=10.244.0.0/16
LAN_NET=192.168.100

usage() {
  sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'
  echo
  echo "options: --mode host-gw|vxlan|both (default both), --no-build, -h/--help"
  echo "env:     RCNI_BIN_DIR  plugin directory (default: target/bin)"
}

modes=(host-gw vxlan)
build=1
while [ $# -gt 0 ]; do
  case $1 in
    --mode) [ $# -ge 2 ] || { usage >&2; exit 2; }
            case $2 in host-gw | vxlan) modes=("$2") ;; both) modes=(host-gw vxlan) ;;
                       *) echo "unknown mode: $2" >&2; exit 2 ;; esac
            shift 2 ;;
    --mode=*) set -- --mode "${1#--mode=}" "${@:2}" ;;
    --no-build) build=0; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "unknown argument: $1" >&2; usage >&2; exit 2 ;;
  esac
done

if [ "$(id -u)" != 0 ]; then
  echo "demo.sh needs root: it creates network namespaces (it never changes the host's own network)." >&2
  echo "run: sudo $0" >&2
  exit 1
fi

# ---------------------------------------------------------------- output helpers
if [ -t 1 ]; then
  B=$'\e[1m' DIM=$'\e[2m' GRN=$'\e[32m' RED=$'\e[31m' CYN=$'\e[36m' RST=$'\e[0m'
else
  B='' DIM='' GRN='' RED='' CYN='' RST=''
fi
OK="${GRN}✓${RST}"
KO="${RED}✗${RST}"
heading() { printf '\n%s━━ %s%s\n' "$B$CYN" "$*" "$RST"; }
# quiet LABEL CMD...: one line; the command's own output only when it fails.
quiet() {
  local label=$1 log t0=$SECONDS last
  shift
  log=$(mktemp /tmp/rcni-demo-step.XXXXXX)
  printf '%s▸ %s%s … ' "$B" "$label" "$RST"
  if "$@" >"$log" 2>&1; then
    last=$(tail -n 1 "$log" | sed "s/^ *//")
    echo "${last:-done} ($((SECONDS - t0))s)"
    rm -f "$log"
  else
    echo "${RED}failed${RST}:"
    cat "$log"
    rm -f "$log"
    exit 1
  fi
}
step() { printf '%s▸ %s%s\n' "$B" "$*" "$RST"; }
note() { printf '%s  %s%s\n' "$DIM" "$*" "$RST"; }
indent() { sed 's/^/    /'; }

# ---------------------------------------------------------------- build
echo "${B}rcni demo${RST}: flannel CNI across three simulated nodes (modes: ${modes[*]})"
if [ "$build" = 1 ]; then
  heading "Building"
  quiet "packages (scripts/deps.sh)" ./scripts/deps.sh
  # build.sh copies from ./target: keep cargo's output there.
  quiet "rcni, every plugin and rcni-doctor in one binary (scripts/build.sh → target/bin; minutes the first time)" \
    env -u CARGO_TARGET_DIR ./scripts/build.sh
fi
BIN=${RCNI_BIN_DIR:-$REPO/target/bin}
for b in flannel bridge host-local loopback portmap rcni-doctor; do
  [ -x "$BIN/$b" ] || { echo "missing $BIN/$b: run ./scripts/build.sh" >&2; exit 1; }
done
for t in ip jq ping bridge busybox; do
  command -v "$t" >/dev/null || { echo "missing $t: run ./scripts/deps.sh" >&2; exit 1; }
done

# ---------------------------------------------------------------- cleanup (always)
WORK=$(mktemp -d /tmp/rcni-demo.XXXXXX)

# Deletes every namespace this demo creates (names are fixed, so this also clears what a
# killed earlier run left behind). Deleting a netns removes its links, routes and rules.
delete_namespaces() {
  local ns
  for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep "^$PREFIX-" || true); do
    ip netns del "$ns" 2>/dev/null || true
  done
}
cleanup() {
  local rc=$?
  trap - EXIT INT TERM HUP PIPE
  [ -n "${SERVER_PID:-}" ] && kill "$SERVER_PID" 2>/dev/null || true
  delete_namespaces
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'echo; echo "interrupted: cleaning up"; exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
trap 'exit 141' PIPE   # output closed (e.g. `| head`): still clean up
delete_namespaces

node_ns() { echo "$PREFIX-node$1"; }
pod_ns() { echo "$PREFIX-n$1-p$2"; }
node_ip() { echo "$LAN_NET.1$1"; }
in_node() { local n=$1; shift; ip netns exec "$(node_ns "$n")" "$@"; }

# ---------------------------------------------------------------- the cluster
# The LAN and the nodes (same in both modes).
make_nodes() {
  local mtu=$1 n
  rm -rf "${WORK:?}"/node*
  ip netns add "$LAN_NS"
  ip -n "$LAN_NS" link add lan0 type bridge
  ip -n "$LAN_NS" link set lan0 up
  for n in "${NODES[@]}"; do
    ip netns add "$(node_ns "$n")"
    ip -n "$(node_ns "$n")" link set lo up
    # The veth is created inside the lan netns, its peer straight into the node.
    ip -n "$LAN_NS" link add "port$n" type veth peer name eth0 netns "$(node_ns "$n")"
    ip -n "$LAN_NS" link set "port$n" master lan0 up
    ip -n "$(node_ns "$n")" addr add "$(node_ip "$n")/24" dev eth0
    ip -n "$(node_ns "$n")" link set eth0 up
    in_node "$n" sysctl -qw net.ipv4.ip_forward=1
    # What flanneld writes: the node's lease from the cluster network.
    mkdir -p "$WORK/node$n/net.d" "$WORK/node$n/cache/results"
    cat >"$WORK/node$n/subnet.env" <<EOF
FLANNEL_NETWORK=$CLUSTER_NET
FLANNEL_SUBNET=10.244.$n.1/24
FLANNEL_MTU=$mtu
FLANNEL_IPMASQ=true
EOF
    # What install-cni installs ($CONFLIST), with this node's
    # subnet.env and state dirs instead of /run/flannel and /var/lib/cni.
    jq --arg sf "$WORK/node$n/subnet.env" --arg dd "$WORK/node$n/flannel" \
      --arg ipam "$WORK/node$n/ipam" \
      '.plugins[0] += {subnetFile: $sf, dataDir: $dd, ipam: {dataDir: $ipam}}' \
      "$CONFLIST" >"$WORK/node$n/net.d/10-flannel.conflist"
  done
}

# host-gw: one route per remote node subnet, via that node's LAN address.
routes_host_gw() {
  local n m
  for n in "${NODES[@]}"; do
    for m in "${NODES[@]}"; do
      [ "$n" = "$m" ] && continue
      ip -n "$(node_ns "$n")" route add "10.244.$m.0/24" via "$(node_ip "$m")" dev eth0
    done
  done
}

# vxlan: a flannel.1 VTEP per node; per remote node a route via its VTEP address (onlink),
# a permanent neighbour entry (VTEP IP → VTEP MAC) and an FDB entry (VTEP MAC → node IP).
routes_vxlan() {
  local n m
  declare -A mac
  for n in "${NODES[@]}"; do
    ip -n "$(node_ns "$n")" link add flannel.1 type vxlan id 1 local "$(node_ip "$n")" \
      dev eth0 dstport 8472 nolearning
    ip -n "$(node_ns "$n")" link set flannel.1 mtu 1450
    ip -n "$(node_ns "$n")" addr add "10.244.$n.0/32" dev flannel.1
    ip -n "$(node_ns "$n")" link set flannel.1 up
    mac[$n]=$(ip -n "$(node_ns "$n")" -j link show flannel.1 | jq -r '.[0].address')
  done
  for n in "${NODES[@]}"; do
    for m in "${NODES[@]}"; do
      [ "$n" = "$m" ] && continue
      ip -n "$(node_ns "$n")" route add "10.244.$m.0/24" via "10.244.$m.0" dev flannel.1 onlink
      ip -n "$(node_ns "$n")" neigh add "10.244.$m.0" lladdr "${mac[$m]}" dev flannel.1 nud permanent
      in_node "$n" bridge fdb append "${mac[$m]}" dev flannel.1 dst "$(node_ip "$m")"
    done
  done
}

# ---------------------------------------------------------------- CNI calls
# The flannel plugin config of the node's conflist as a runtime sends it (name and
# cniVersion injected).
flannel_conf() {
  jq -c '.plugins[0] + {name: .name, cniVersion: .cniVersion}' \
    "$WORK/node$1/net.d/10-flannel.conflist"
}

# What libcni does after a successful ADD (and undoes after DEL): the result cached under
# results/<network>-<containerID>-<ifname>. rcni-doctor tells live pods from gone ones by it.
cache_result() {
  local n=$1 id=$2 netns=$3 res=$4
  jq -n --arg id "$id" --arg ns "$netns" --argjson r "$res" \
    '{kind: "cniCacheV1", containerId: $id, ifName: "eth0", networkName: "cbr0",
      netns: $ns, result: $r}' >"$WORK/node$n/cache/results/cbr0-$id-eth0"
}

# doctor NODE ARGS...: rcni-doctor in the node's netns, on the node's files.
doctor() {
  local n=$1
  shift
  in_node "$n" "$BIN/rcni-doctor" --conf-dir "$WORK/node$n/net.d" --bin-dir "$BIN" \
    --cache-dir "$WORK/node$n/cache" "$@"
}
LOOPBACK_CONF='{"cniVersion":"0.3.1","name":"cni-loopback","type":"loopback"}'

# The portmap config of the conflist, as a runtime sends it: name and cniVersion injected,
# capabilities turned into runtimeConfig (port mappings only for the pod that has a
# hostPort; kubelet passes an empty list for the others), the previous result as prevResult.
portmap_conf() {
  local mappings=$1 prev=$2
  jq -c --argjson pm "$mappings" --argjson prev "$prev" \
    '.plugins[1] + {name: .name, cniVersion: .cniVersion, runtimeConfig: {portMappings: $pm},
                    prevResult: $prev} | del(.capabilities)' "$CONFLIST"
}

# Port mappings of pod k on node n.
pod_mappings() {
  if [ "$1/$2" = 1/1 ]; then
    echo "[{\"hostPort\":$HOST_PORT,\"containerPort\":80,\"protocol\":\"tcp\"}]"
  else
    echo '[]'
  fi
}

# cni NODE CMD PLUGIN IFNAME CONTAINER-ID NETNS-PATH CONFIG: runs the plugin in the node netns
# with the environment a runtime gives it; prints its stdout, fails on non-zero exit.
cni() {
  local n=$1 cmd=$2 plugin=$3 ifname=$4 id=$5 netns=$6 conf=$7
  local pod=${id##*-}
  printf '%s' "$conf" | ip netns exec "$(node_ns "$n")" env -i PATH="$PATH" \
    CNI_COMMAND="$cmd" CNI_CONTAINERID="$id" CNI_NETNS="$netns" CNI_IFNAME="$ifname" \
    CNI_PATH="$BIN" CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=demo;K8S_POD_NAME=$pod" \
    "$BIN/$plugin"
}

# cni_ok: like cni, output discarded on success, shown (the CNI error JSON) on failure.
cni_ok() {
  local out
  if ! out=$(cni "$@"); then
    echo "  $KO $3 $2 for container $5 failed:"
    printf '%s\n' "$out" | indent
    return 1
  fi
}

declare -A POD_IP   # "n/k" → IP
declare -A RESULT   # "n/k" → ADD result
ALL_PODS=()         # "n/k"

add_pods() {
  local n k id ns res ip
  for n in "${NODES[@]}"; do
    for k in $(seq 1 "$PODS_PER_NODE"); do
      id="node$n-pod$k"
      ns=$(pod_ns "$n" "$k")
      ip netns add "$ns"
      # containerd: loopback network on lo first, then the pod network on eth0.
      cni_ok "$n" ADD loopback lo "$id" "/run/netns/$ns" "$LOOPBACK_CONF"
      if ! res=$(cni "$n" ADD flannel eth0 "$id" "/run/netns/$ns" "$(flannel_conf "$n")"); then
        echo "  $KO flannel ADD for container $id failed:"
        printf '%s\n' "$res" | indent
        return 1
      fi
      # The chain's second plugin: portmap, with flannel's result, passes it through.
      if ! res=$(cni "$n" ADD portmap eth0 "$id" "/run/netns/$ns" \
                   "$(portmap_conf "$(pod_mappings "$n" "$k")" "$res")"); then
        echo "  $KO portmap ADD for container $id failed:"
        printf '%s\n' "$res" | indent
        return 1
      fi
      # libcni caches the list's final result.
      cache_result "$n" "$id" "/run/netns/$ns" "$res"
      ip=$(jq -r '[.ips[].address | select(test("^10\\."))][0] | split("/")[0]' <<<"$res")
      RESULT["$n/$k"]=$res
      POD_IP["$n/$k"]=$ip
      ALL_PODS+=("$n/$k")
    done
  done
}

del_pods() {
  local p n k id ns conf
  for p in "${ALL_PODS[@]}"; do
    n=${p%/*} k=${p#*/}
    id="node$n-pod$k"
    ns=$(pod_ns "$n" "$k")
    # DEL runs the list in reverse, each plugin with the final result.
    cni_ok "$n" DEL portmap eth0 "$id" "/run/netns/$ns" \
      "$(portmap_conf "$(pod_mappings "$n" "$k")" "${RESULT[$p]}")"
    conf=$(jq -c --argjson prev "${RESULT[$p]}" '. + {prevResult: $prev}' <<<"$(flannel_conf "$n")")
    cni_ok "$n" DEL flannel eth0 "$id" "/run/netns/$ns" "$conf"
    rm -f "$WORK/node$n/cache/results/cbr0-$id-eth0"
    cni_ok "$n" DEL loopback lo "$id" "/run/netns/$ns" "$LOOPBACK_CONF"
    ip netns del "$ns"
  done
  ALL_PODS=()
}

# ---------------------------------------------------------------- checks
PASS=0
FAIL=0
ping_ok() { ip netns exec "$1" ping -c 1 -W 2 -n -q "$2" >/dev/null 2>&1; }

# One ping from netns $1 to $2, counted in category $3; the mark goes to $T.
declare -A CAT_OK CAT_ALL
tick() {
  CAT_ALL[$3]=$((${CAT_ALL[$3]:-0} + 1))
  if ping_ok "$1" "$2"; then
    PASS=$((PASS + 1)) CAT_OK[$3]=$((${CAT_OK[$3]:-0} + 1)) T=$OK
  else
    FAIL=$((FAIL + 1)) CAT_OK[$3]=${CAT_OK[$3]:-0} T=$KO
  fi
}
cell() { printf '%-10s' "$1"; }

# The ping matrix: rows are the nodes then the pods, columns the pods.
ping_matrix() {
  local row col line src from
  line="    $(cell "from \\ to")"
  for col in "${ALL_PODS[@]}"; do line+=$(cell "n${col%/*}/pod${col#*/}"); done
  echo "$line"
  for row in "${NODES[@]/#/node}" "${ALL_PODS[@]}"; do
    if [[ $row == node* ]]; then
      src=$(node_ns "${row#node}") from=${row#node} line="    $(cell "$row")"
    else
      src=$(pod_ns "${row%/*}" "${row#*/}") from=${row%/*}
      line="    $(cell "n${row%/*}/pod${row#*/}")"
    fi
    for col in "${ALL_PODS[@]}"; do
      if [ "$row" = "$col" ]; then line+="·         "; continue; fi
      local kind
      if [[ $row == node* ]]; then kind=node; else kind=pod; fi
      if [ "$from" = "${col%/*}" ]; then kind+="-same"; else kind+="-cross"; fi
      tick "$src" "${POD_IP[$col]}" "$kind"
      line+="$T         "
    done
    echo "$line"
  done
  printf '    node → pod on the same node  %s\n' "$(score node-same)"
  printf '    node → pod on another node   %s\n' "$(score node-cross)"
  printf '    pod → pod on the same node   %s\n' "$(score pod-same)"
  printf '    pod → pod across nodes       %s\n' "$(score pod-cross)"
}
# The hostPort: a server in pod1 on node1, a client on node2 connecting to node1's LAN
# address. The connection leaves node2 for node1:8080; portmap's DNAT sends it to the pod.
SERVER_PID=
hostport_check() {
  local want got ns
  ns=$(pod_ns 1 1)
  want="hello from pod1 on node1"
  ip netns exec "$ns" busybox nc -ll -p 80 -e /bin/busybox echo "$want" >/dev/null 2>&1 &
  SERVER_PID=$!
  # Wait for the server (poll the pod's port from node1; no fixed sleep).
  for _ in $(seq 1 100); do
    got=$(in_node 1 busybox nc -w 1 "${POD_IP[1/1]}" 80 </dev/null 2>/dev/null || true)
    [ "$got" = "$want" ] && break
  done
  note "node1's port-forwarding rules for pod1 (iptables nat table, the reference's layout):"
  in_node 1 iptables -w -t nat -S | grep -E 'CNI-HOSTPORT-DNAT|CNI-DN-' | grep -v '^-N' | indent || true
  got=$(in_node 2 busybox nc -w 2 "$(node_ip 1)" "$HOST_PORT" </dev/null 2>/dev/null || true)
  printf '    node2 → %s:%s answered: %s\n' "$(node_ip 1)" "$HOST_PORT" "${got:-nothing}"
  if [ "$got" = "$want" ]; then
    echo "    $OK hostPort $HOST_PORT on node1 reaches pod1 (${POD_IP[1/1]}:80) from node2"
    PASS=$((PASS + 1))
  else
    echo "    $KO hostPort $HOST_PORT on node1 did not reach pod1 from node2"
    FAIL=$((FAIL + 1))
  fi
}

stop_server() {
  if [ -n "$SERVER_PID" ]; then
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
  fi
}

score() {
  local ok=${CAT_OK[$1]:-0} all=${CAT_ALL[$1]:-0}
  if [ "$ok" = "$all" ]; then echo "$OK $ok/$all"; else echo "$KO $ok/$all"; fi
}

# rcni-doctor on every node: all must be clean. The first time, node1's whole report.
doctor_all() {
  local n out
  for n in "${NODES[@]}"; do
    if out=$(doctor "$n"); then
      if [ "$n" = 1 ] && [ -z "${DOCTOR_SHOWN:-}" ]; then
        DOCTOR_SHOWN=1
        grep -v '^rcni-doctor:' <<<"$out" | sed 's/^/node1  /' | indent
      fi
      echo "    node$n: $OK $(tail -n 1 <<<"$out")"
      PASS=$((PASS + 1))
    else
      echo "    node$n: $KO rcni-doctor found problems:"
      indent <<<"$out"
      FAIL=$((FAIL + 1))
    fi
  done
}

# One fault on node1 (IP forwarding off), what it breaks, what the doctor says, --fix.
fault_and_fix() {
  local from to out
  from=$(pod_ns 1 1) to=${POD_IP[2/1]}
  in_node 1 sysctl -qw net.ipv4.ip_forward=0
  if ping_ok "$from" "$to"; then
    echo "    n1/pod1 → n2/pod1 ($to) still answers: $KO the fault did not break anything"
    FAIL=$((FAIL + 1))
  else
    echo "    n1/pod1 → n2/pod1 ($to): no answer (node1 no longer forwards)"
  fi
  note "rcni-doctor on node1 (exit status 1: an error was found):"
  out=$(doctor 1) || true
  grep -v '^✓\|^rcni-doctor:' <<<"$out" | indent
  note "rcni-doctor --fix on node1:"
  out=$(doctor 1 --fix) || true
  sed -n '/^--fix:/,$p' <<<"$out" | grep -v '^✓\|^rcni-doctor:\|^$' | indent
  tick "$from" "$to" fixed
  echo "    n1/pod1 → n2/pod1 ($to) after the fix: $T"
}

run_mode() {
  local mode=$1 mtu n k p
  PASS=0 FAIL=0
  [ "$mode" = vxlan ] && mtu=1450 || mtu=1500

  heading "Mode $mode: three nodes on LAN $LAN_NET.0/24, cluster network $CLUSTER_NET"
  make_nodes "$mtu"
  if [ "$mode" = host-gw ]; then routes_host_gw; else routes_vxlan; fi

  step "Each node's lease, as flanneld writes it (cat /run/flannel/subnet.env)"
  for n in "${NODES[@]}"; do
    echo "  node$n ($(node_ip "$n")):"
    indent <"$WORK/node$n/subnet.env"
  done
  step "Routes flanneld would install (node1)"
  if [ "$mode" = host-gw ]; then
    note "host-gw: a route to each other node's pod subnet, via that node's LAN address"
  else
    note "vxlan: routes over flannel.1 (VXLAN id 1, UDP 8472); a permanent neighbour + FDB entry per peer"
  fi
  ip -n "$(node_ns 1)" route show | grep '^10\.244\.' | indent
  if [ "$mode" = vxlan ]; then
    ip -n "$(node_ns 1)" -d -j link show flannel.1 | jq -r '.[0] | .linkinfo.info_data as $v |
      "flannel.1: vxlan id \($v.id) local \($v.local) dstport \($v.port) \(if $v.learning then "learning" else "nolearning" end) mtu \(.mtu) mac \(.address)"' | indent
    ip -n "$(node_ns 1)" neigh show dev flannel.1 | sed 's/^/neighbour /' | indent
    in_node 1 bridge fdb show dev flannel.1 | sed 's/^/fdb /' | indent
  fi

  step "Adding $PODS_PER_NODE pods per node: loopback on lo, then flannel on eth0 (CNI_COMMAND=ADD)"
  add_pods
  printf '    %-6s %-12s %-16s %s\n' NODE POD IP "NETNS"
  for p in "${ALL_PODS[@]}"; do
    n=${p%/*} k=${p#*/}
    printf '    %-6s %-12s %-16s %s\n' "node$n" "pod$k" "${POD_IP[$p]}" "$(pod_ns "$n" "$k")"
  done
  note "flannel turned node1's subnet.env into this bridge config (saved for DEL):"
  jq . "$WORK/node1/flannel/node1-pod1" | indent
  note "inside pod1 on node1:"
  ip -n "$(pod_ns 1 1)" -4 -br addr show dev eth0 | indent
  ip -n "$(pod_ns 1 1)" route show | indent
  printf '    eth0 MTU %s (FLANNEL_MTU=%s)\n' \
    "$(ip -n "$(pod_ns 1 1)" -j link show eth0 | jq -r '.[0].mtu')" "$mtu"

  step "Pings: node → pod and pod → pod (row pings column; ✓ = answered)"
  note "same node: through the cni0 bridge; other nodes: through the $mode routes between nodes"
  CAT_OK=() CAT_ALL=()
  ping_matrix

  step "A hostPort: pod1 on node1 maps port 80 to node1:$HOST_PORT (portmap), a client on node2 connects"
  hostport_check
  stop_server

  if [ "$mode" = "${modes[-1]}" ]; then
    step "A broken node: IP forwarding turned off on node1 (a sysctl.d file, a network manager)"
    fault_and_fix
  fi
  step "rcni-doctor on each node (config, lease, plugins, bridge, sysctls, firewall, stores, routes)"
  doctor_all

  step "Deleting every pod (CNI_COMMAND=DEL: portmap removes the mapping, flannel reads its saved config, bridge + host-local free the IP)"
  del_pods
  if [ -z "$(in_node 1 iptables -w -t nat -S | grep 'CNI-DN-' || true)" ] &&
     ! in_node 2 busybox nc -w 2 "$(node_ip 1)" "$HOST_PORT" </dev/null >/dev/null 2>&1; then
    echo "    node1: $OK no port-mapping rule left, node1:$HOST_PORT no longer answers"
    PASS=$((PASS + 1))
  else
    echo "    node1: $KO port-mapping rules or the forwarding are left"
    FAIL=$((FAIL + 1))
  fi
  for n in "${NODES[@]}"; do
    local ips saved
    ips=$(find "$WORK/node$n/ipam/cbr0" -maxdepth 1 -name '10.*' 2>/dev/null | wc -l)
    saved=$(find "$WORK/node$n/flannel" -mindepth 1 2>/dev/null | wc -l)
    if [ "$ips" = 0 ] && [ "$saved" = 0 ]; then
      echo "    node$n: $OK host-local store empty (0 reserved IPs), flannel dataDir empty"
      PASS=$((PASS + 1))
    else
      echo "    node$n: $KO $ips reserved IPs and $saved saved configs left"
      FAIL=$((FAIL + 1))
    fi
  done

  delete_namespaces
  RESULTS+=("$mode: $PASS checks passed, $FAIL failed")
  TOTAL_FAIL=$((TOTAL_FAIL + FAIL))
}

RESULTS=()
TOTAL_FAIL=0
note "plugins from $BIN (one binary, rcni, $(( $(stat -L -c %s "$BIN/rcni") / 1024 )) KiB, and a link to it per name: flannel → bridge → host-local run in one process); state in $WORK; namespaces $PREFIX-*"
for m in "${modes[@]}"; do
  run_mode "$m"
done

heading "Summary"
for r in "${RESULTS[@]}"; do echo "  $r"; done
if [ "$TOTAL_FAIL" = 0 ]; then
  echo "  $OK every pod reached every pod and every node, a hostPort answered across nodes, in every"
  echo "    mode; rcni-doctor found every node healthy (and named and fixed the one fault); nothing"
  echo "    left behind"
else
  echo "  $KO $TOTAL_FAIL checks failed"
  exit 1
fi
