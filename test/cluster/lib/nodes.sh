# Multi-node mode of test/cluster/cluster (`up --nodes N`, N >= 2), sourced by it.
#
# Each node is isolated the way kind isolates its node containers, without a container
# engine: a network namespace (persisted as a bind mount at $D/nodes/<node>/netns) with one
# veth on the run's bridge, and a process `unshare --mount --pid --fork` inside it whose
# PID 1 is lib/node-init: it gives the node its own /run (tmpfs), /var/lib and /var/log
# (bind mounts of directories in the node's dir) and starts the node's containerd and
# kubelet. The control plane stays on the host, its apiserver on the bridge's address.
#
#   bridge  tsc<hash>    10.P.0.1/24   (host side; apiserver binds here)
#   node i  eth0         10.P.0.(10+i) (in its netns); pods 10.P.i.0/24 on its cni0
#   routes  host and every node: 10.P.j.0/24 via node j's address
#
# Loop devices, the kernel and the cgroup hierarchies are shared, as on kind; each node's
# kubelet has its own cgroupRoot (/$CGROUP_ROOT/<node>), which its daemons also join, so
# that cgroup holds everything the node runs.

node_dir() { echo "$D/nodes/$1"; }
node_names() {
  if [ "${NODES:-1}" = 1 ]; then echo "$NODE_NAME"; return; fi
  local i; for ((i = 1; i <= NODES; i++)); do echo "node-$i"; done
}
node_ip() { echo "$NET_PREFIX.0.$((10 + ${1#node-}))"; }
node_pod_subnet() { echo "$NET_PREFIX.${1#node-}.0/24"; }

# The run's tokens.csv/kubeconfig lines for the kubelet(s): "ID USER GROUPS"
kubelet_token_lines() {
  if [ "${NODES:-1}" = 1 ]; then echo "kubelet system:node:$NODE_NAME system:nodes"; return; fi
  local n
  for n in $(node_names); do echo "kubelet-$n system:node:$n system:nodes"; done
}

# A 10.P.0.0/16 no interface or route of this machine uses yet. Called under the registry
# lock, so two runs starting together take different ones.
pick_net_prefix() {
  local used p i
  used="$(ip -4 -o addr show; ip -4 route show table all)"
  p=$((100 + 0x$(echo "$D" | sha256sum | cut -c1-4) % 140))
  for ((i = 0; i < 140; i++)); do
    grep -qE "(^|[^0-9.])10\.$p\." <<<"$used" || { echo "10.$p"; return 0; }
    p=$((100 + (p - 100 + 1) % 140))
  done
  die "no free 10.x.0.0/16 for the cluster's bridge"
}

# The bridge, its address (the apiserver's) and one route per node's pod subnet. The names
# are recorded in cluster.env before anything is made, so `down` removes them even when
# `up` fails half-way.
nodes_network_up() {
  BRIDGE="tsc$(echo "$D" | sha256sum | cut -c1-8)"
  mkdir -p "$REGISTRY"
  (
    flock 9
    NET_PREFIX="$(pick_net_prefix)"
    printf 'NODES=%s\nBRIDGE=%s\nNET_PREFIX=%s\nAPI_HOST=%s\n' "$NODES" "$BRIDGE" "$NET_PREFIX" "$NET_PREFIX.0.1" >>"$D/cluster.env"
    ip link add "$BRIDGE" type bridge
    ip addr add "$NET_PREFIX.0.1/24" dev "$BRIDGE"
    ip link set "$BRIDGE" up
  ) 9>"$REGISTRY/.lock"
  load_env
  log "bridge $BRIDGE $NET_PREFIX.0.1/24, $NODES nodes"
}

# One node's network namespace: eth0 on the bridge, routes to the other nodes' pods.
node_network_up() {
  local n="$1" N i ns veth
  N="$(node_dir "$n")"; i="${n#node-}"; ns="$N/netns"; veth="${BRIDGE}v$i"
  mkdir -p "$N"
  touch "$ns"
  unshare --net="$ns" true
  nsenter --net="$ns" ip link add eth0 type veth peer name "$veth" netns 1
  ip link set "$veth" master "$BRIDGE" up
  nsenter --net="$ns" ip addr add "$(node_ip "$n")/24" dev eth0
  nsenter --net="$ns" ip link set lo up
  nsenter --net="$ns" ip link set eth0 up
  # the node forwards between its pods' bridge and eth0; the host only bridges
  nsenter --net="$ns" sysctl -qw net.ipv4.ip_forward=1
  local m
  for m in $(node_names); do
    [ "$m" = "$n" ] || nsenter --net="$ns" ip route add "$(node_pod_subnet "$m")" via "$(node_ip "$m")"
  done
  ip route add "$(node_pod_subnet "$n")" via "$(node_ip "$n")" dev "$BRIDGE"
}

# containerd, CNI and kubelet configuration of one node, and its node.env for lib/node-init.
node_write_configs() {
  local n="$1" N
  N="$(node_dir "$n")"
  write_containerd_config "$N"
  # the bridge plugin makes cni0 in the node's netns, the node's address the pods' gateway
  cat >"$N/cni/net.d/10-tscsi.conflist" <<EOF
{"cniVersion":"1.0.0","name":"tscsi","plugins":[
 {"type":"bridge","bridge":"cni0","isGateway":true,"ipMasq":false,"hairpinMode":true,
  "ipam":{"type":"host-local","ranges":[[{"subnet":"$(node_pod_subnet "$n")"}]],"routes":[{"dst":"0.0.0.0/0"}]}},
 {"type":"portmap","capabilities":{"portMappings":true},"snat":false}]}
EOF
  write_kubelet_config "$N" "$(node_ip "$n")" "$CGROUP_ROOT/$n"
  mkdir -p "$N/var-lib/kubelet" "$N/var-log"
  cat >"$N/node.env" <<EOF
N=$N
NODE=$n
NODE_IP=$(node_ip "$n")
ZONE=zone-${n#node-}
LOGS=$D/logs
CGROUP=$CGROUP_ROOT/$n
KUBECONFIG_FILE=$D/kubelet-$n.kubeconfig
K8S_BIN=$K8S_BIN
CONTAINERD_BIN=$CONTAINERD_BIN
IMAGES="$PAUSE_TAR $BUSYBOX_TAR"
EOF
}

make_node_cgroup() {  # the node's cgroup below the run's, cpuset filled in like its parent's
  local m c="$CGROUP_ROOT/$1"
  for m in $(cgroup_mounts); do
    mkdir -p "$m/$c"
    if [ -f "$m/$c/cpuset.cpus" ]; then
      [ -n "$(cat "$m/$c/cpuset.cpus")" ] || cat "$m/$CGROUP_ROOT/cpuset.cpus" >"$m/$c/cpuset.cpus"
      [ -n "$(cat "$m/$c/cpuset.mems")" ] || cat "$m/$CGROUP_ROOT/cpuset.mems" >"$m/$c/cpuset.mems"
    fi
  done
}

nodes_start() {
  local n
  make_cgroup_root
  for n in $(node_names); do
    node_network_up "$n"
    make_node_cgroup "$n"
    # --kill-child: whatever ends unshare (down, a crash) takes the node's PID 1 and with it
    # every process of the node's PID namespace
    start_daemon "$n" nsenter --net="$(node_dir "$n")/netns" \
      unshare --mount --pid --fork --kill-child --mount-proc -- "$HERE/lib/node-init" "$(node_dir "$n")"
  done
}

node_ready() {
  [ "$(kc get node "${1:-$NODE_NAME}" \
      -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]
}
all_nodes_ready() {
  local n
  for n in $(node_names); do node_ready "$n" || return 1; done
}

# The node's PID 1 (lib/node-init), the child of the unshare recorded in pids/<node>.
node_init_pid() {
  local u c
  u="$(cat "$D/pids/$1" 2>/dev/null)" || return 1
  pid_alive "$u" || return 1
  c="$(awk '{print $1}' "/proc/$u/task/$u/children" 2>/dev/null)"
  [ -n "$c" ] && echo "$c"
}

# Pods of nodes whose processes are gone (crashed, killed) would hold `down`'s pod deletion
# for its whole time cap: no kubelet will ever confirm them. Removed from the API at once.
nodes_forget_dead_pods() {
  local n
  for n in $(node_names); do
    node_init_pid "$n" >/dev/null && continue
    kc delete pods --all-namespaces --field-selector "spec.nodeName=$n" --force --grace-period=0 >&2 2>&1 \
      && log "removed the pods of $n (not running) from the API"
  done
}

# PID (as the host sees it) of the process named NAME in node's PID namespace
node_process() {
  local init="$1" name="$2" p ns
  ns="$(readlink "/proc/$init/ns/pid")" || return 1
  for p in /proc/[0-9]*; do
    [ "$(readlink "$p/ns/pid" 2>/dev/null)" = "$ns" ] || continue
    [ "$(cat "$p/comm" 2>/dev/null)" = "$name" ] && { echo "${p#/proc/}"; return 0; }
  done
  return 1
}

nodes_status() {
  local n init c k rc=0
  for n in $(node_names); do
    init="$(node_init_pid "$n")" || init=""
    if [ -z "$init" ]; then printf '  %-24s NOT RUNNING\n' "$n"; rc=1; continue; fi
    c="$(node_process "$init" containerd)" || c=""
    k="$(node_process "$init" kubelet)" || k=""
    printf '  %-24s %s: init pid %s, containerd %s, kubelet %s\n' "$n" "$(node_ip "$n")" "$init" \
      "${c:-NOT RUNNING}" "${k:-NOT RUNNING}"
    [ -n "$c" ] && [ -n "$k" ] || rc=1
  done
  return $rc
}

nodes_import() {
  local n
  for n in $(node_names); do
    CTR_SOCK="$(node_dir "$n")/containerd/containerd.sock" import_images "$@"
    log "imported into $n"
  done
}

# Stop every node: SIGTERM to its PID 1 (which stops kubelet, then containerd), then end
# the unshare, whose --kill-child takes all that is left in the node's PID namespace.
nodes_down() {
  local n init
  local inits=() p i
  for n in $(node_names); do
    if init="$(node_init_pid "$n")" && kill -TERM "$init" 2>/dev/null; then inits+=("$init"); log "stopping $n"
    else log "$n was not running"; fi
  done
  for p in "${inits[@]}"; do
    for ((i = 0; i < 300; i++)); do pid_alive "$p" || break; sleep 0.1; done
  done
  for n in $(node_names); do stop_component "$n" "$HERE/lib/node-init" 5; done
}

# After the nodes' processes and mounts are gone: the bridge takes its veths and routes along.
nodes_network_down() {
  [ -n "${BRIDGE:-}" ] || return 0
  if ip link show "$BRIDGE" >/dev/null 2>&1; then ip link del "$BRIDGE" && log "removed bridge $BRIDGE"; fi
}

# Loop devices the nodes' pods attached: their backing file was named by its path inside the
# node (e.g. /var/lib/kubelet/x.img), which is not below $D as the host sees it; they are found
# by device and inode of the files below $D instead.
nodes_detach_loops() {
  command -v losetup >/dev/null || return 0
  local dev majmin ino maj min l
  local -A inside=()
  local -a loops=()
  mapfile -t loops < <(losetup -l -n -O NAME,BACK-MAJ:MIN,BACK-INO 2>/dev/null || true)
  [ ${#loops[@]} -gt 0 ] || return 0
  while read -r dev ino; do inside["$dev:$ino"]=1; done < <(find "$D" -xdev -type f -printf '%D %i\n' 2>/dev/null)
  for l in "${loops[@]}"; do
    read -r dev majmin ino <<<"$l"
    maj="${majmin%%:*}" min="${majmin#*:}"
    [ -n "$ino" ] && [ -n "${inside["$(( (min & 0xff) | (maj << 8) | ((min & ~0xff) << 12) )):$ino"]:-}" ] || continue
    losetup -d "$dev" && log "detached $dev (a node's, inode $ino)"
  done
}
