#!/usr/bin/env bash
# A throwaway single-host Ceph cluster for the RBD backend's tests: 1 monitor, 1 bluestore
# OSD on a sparse file, 1 mgr; cephx on; every socket on one address of this machine
# (127.0.0.1 unless told: a multi-node test cluster's nodes reach the host only at its
# bridge's address, test/cluster/README.md); everything (config,
# keys, data, logs, pid files) under one directory. No systemd, nothing in /etc/ceph or
# /var/lib/ceph, processes stopped by recorded PID (+ start time), never by name.
#
#   cluster.sh install        Debian's ceph packages (idempotent, no recommends)
#   cluster.sh up DIR PORT [ADDR]  start a cluster in DIR (must not exist or be empty), mon on
#                             ADDR:PORT (ADDR: an IPv4 address of this machine, default
#                             127.0.0.1), daemons on ADDR:PORT+1..PORT+40; prints KEY=VALUE lines on stdout
#   cluster.sh down DIR       unmount/detach what lives under DIR, stop its daemons, remove DIR
#
# The pool `rbd` and the least-privilege user client.csi (ceph-csi's caps) are created; the
# bare key of client.csi is in DIR/client.csi.key (mode 0600).
set -euo pipefail

PKGS="ceph-mon ceph-osd ceph-mgr ceph-common rbd-fuse uuid-runtime iproute2 util-linux e2fsprogs xfsprogs"
log() { echo "[ceph-cluster $(date +%T)] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

cmd_install() {
  local missing=() p
  for p in $PKGS; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=300 update -q >/dev/null
  apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}

# "PID STARTTIME" pid files: a recycled PID is never taken for ours; a zombie counts as gone.
stat_field() { local l; l=$(cat "/proc/$1/stat" 2>/dev/null) || return 1; set -- $2 ${l##*) }; shift $(($1 - 2)); echo "$1"; }
alive() {
  local p s; read -r p s <"$1" 2>/dev/null || return 1
  [ -n "$p" ] && [ "$(stat_field "$p" 22)" = "$s" ] && [ "$(stat_field "$p" 3)" != Z ]
}

wait_for() { # wait_for SECONDS CMD...
  local end=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do [ $SECONDS -ge $end ] && return 1; sleep 0.2; done
}

cmd_up() {
  local DIR=${1:?dir} PORT=${2:?port} ADDR=${3:-127.0.0.1}
  command -v ceph-mon >/dev/null || die "ceph is not installed: run $0 install"
  [[ $ADDR =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ ]] || die "ADDR must be an IPv4 address, not '$ADDR'"
  ip -4 -o addr show | awk '{print $4}' | grep -q "^$ADDR/" || die "$ADDR is not an address of this machine"
  mkdir -p "$DIR"; DIR=$(cd "$DIR" && pwd)
  [ -e "$DIR/ceph.conf" ] && die "$DIR already holds a cluster"
  ss -Hltn "sport = :$PORT" | grep -q . && die "port $PORT is in use"
  mkdir -p "$DIR"/{run,log,mon,osd,mgr/ceph-x,crash}
  chmod 700 "$DIR"
  local CONF=$DIR/ceph.conf fsid; fsid=$(uuidgen)
  cat >"$CONF" <<CONF
[global]
fsid = $fsid
mon_host = v2:$ADDR:$PORT
mon_initial_members = a
public_network = $ADDR/32
cluster_network = $ADDR/32
ms_bind_ipv6 = false
ms_bind_msgr1 = false
ms_bind_port_min = $((PORT + 1))
ms_bind_port_max = $((PORT + 40))
auth_cluster_required = cephx
auth_service_required = cephx
auth_client_required = cephx
auth_allow_insecure_global_id_reclaim = false
run_dir = $DIR/run
crash_dir = $DIR/crash
mon_data = $DIR/mon/\$cluster-\$id
osd_data = $DIR/osd/\$cluster-\$id
mgr_data = $DIR/mgr/\$cluster-\$id
log_file = $DIR/log/\$name.log
admin_socket = $DIR/run/\$name.asok
keyring = $DIR/\$name.keyring
osd_pool_default_size = 1
osd_pool_default_min_size = 1
osd_pool_default_pg_autoscale_mode = off
osd_crush_chooseleaf_type = 0
mon_allow_pool_size_one = true
mon_allow_pool_delete = true
mon_warn_on_pool_no_redundancy = false
mon_data_avail_warn = 2
mon_data_avail_crit = 1
mon_max_pg_per_osd = 1000
paxos_propose_interval = 0.01
paxos_min_wait = 0.001
mgr_tick_period = 1
mgr_stats_period = 1
osd_mon_report_interval = 1
osd_client_watch_timeout = 10
[mon]
public_addr = $ADDR
[osd]
public_addr = $ADDR
cluster_addr = $ADDR
osd_objectstore = bluestore
bluestore_block_size = 10737418240
bluestore_block_create = true
bluestore_fsck_on_mkfs = false
osd_memory_target = 1073741824
osd_op_num_shards = 2
osd_op_num_threads_per_shard = 1
[mgr]
public_addr = $ADDR
mgr_disabled_modules = diskprediction_local restful dashboard prometheus
CONF
  c() { ceph -c "$CONF" --connect-timeout 15 "$@"; }
  start() { # start NAME CMD... : foreground daemon in its own session, pid recorded
    local name=$1; shift
    setsid "$@" -f -c "$CONF" >>"$DIR/log/$name.out" 2>&1 </dev/null &
    local pid=$!
    echo "$pid $(stat_field "$pid" 22)" >"$DIR/run/$name.pid"
  }
  ceph-authtool --create-keyring "$DIR/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph-authtool --create-keyring "$DIR/client.admin.keyring" --gen-key -n client.admin \
    --cap mon 'allow *' --cap osd 'allow *' --cap mds 'allow *' --cap mgr 'allow *' >/dev/null
  ceph-authtool "$DIR/mon.keyring" --import-keyring "$DIR/client.admin.keyring" >/dev/null
  monmaptool --create --fsid "$fsid" --addv a "[v2:$ADDR:$PORT]" "$DIR/monmap" >/dev/null
  cp "$DIR/mon.keyring" "$DIR/mon.a.keyring"
  ceph-mon -c "$CONF" --mkfs -i a --monmap "$DIR/monmap" --keyring "$DIR/mon.keyring" >>"$DIR/log/mkfs.out" 2>&1
  start mon.a ceph-mon -i a
  wait_for 60 c quorum_status || die "no monitor quorum (logs in $DIR/log)"
  c auth get-or-create mgr.x mon 'allow profile mgr' osd 'allow *' mds 'allow *' -o "$DIR/mgr.x.keyring" >/dev/null
  start mgr.x ceph-mgr -i x
  local uuid secret id
  uuid=$(uuidgen); secret=$(ceph-authtool --gen-print-key)
  id=$(echo "{\"cephx_secret\": \"$secret\"}" | c osd new "$uuid" -i -)
  mkdir -p "$DIR/osd/ceph-$id"
  ceph-authtool --create-keyring "$DIR/osd.$id.keyring" --name "osd.$id" --add-key "$secret" >/dev/null
  ceph-osd -c "$CONF" -i "$id" --mkfs --osd-uuid "$uuid" >>"$DIR/log/mkfs.out" 2>&1 || die "osd mkfs failed (logs in $DIR/log)"
  start "osd.$id" ceph-osd -i "$id"
  wait_for 90 bash -c "ceph -c '$CONF' osd dump -f json | grep -q '\"up\":1'" || die "osd did not come up (logs in $DIR/log)"
  c osd pool create rbd 8 8 replicated >/dev/null 2>&1
  timeout 120 rbd -c "$CONF" pool init rbd || die "rbd pool init failed"
  # `ceph df` (GetCapacity) lists a pool only once the mgr has reported its statistics,
  # which can be a moment after it was made: tests start when it is listed.
  wait_for 60 bash -c "ceph -c '$CONF' df -f json | grep -q '\"name\":\"rbd\"'" || die "pool rbd never appeared in ceph df (logs in $DIR/log)"
  c osd set-require-min-compat-client mimic >/dev/null 2>&1
  c auth get-or-create client.csi mon 'profile rbd' osd 'profile rbd pool=rbd' mgr 'profile rbd pool=rbd' >/dev/null
  (umask 077; c auth get-key client.csi >"$DIR/client.csi.key")
  echo "CEPH_DIR=$DIR"
  echo "CEPH_CONF=$CONF"
  echo "CEPH_MON=$ADDR:$PORT"
  echo "CEPH_POOL=rbd"
  echo "CEPH_USER=csi"
  echo "CEPH_KEYFILE=$DIR/client.csi.key"
}

cmd_down() {
  local DIR=${1:?dir}
  [ -d "$DIR" ] || return 0
  DIR=$(cd "$DIR" && pwd)
  case "$DIR" in /|/tmp|/var|/usr|/etc|/root|/home) die "refusing to remove $DIR";; esac
  local l m f
  # Loops backed by files under DIR: their mounts first (wherever they are), then the loops.
  for l in $(losetup -nO NAME,BACK-FILE 2>/dev/null | awk -v d="$DIR/" 'index($2, d) == 1 {print $1}'); do
    for m in $(findmnt -rn -S "$l" -o TARGET | sort -r); do umount "$m" 2>/dev/null || umount -l "$m" || true; done
    losetup -d "$l" || true
  done
  for m in $(awk -v d="$DIR/" 'index($2, d) == 1 {print $2}' /proc/self/mounts | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" || true
  done
  shopt -s nullglob
  local group
  for group in "$DIR/run/rbd-fuse*.pid" "$DIR/run/mgr.*.pid $DIR/run/osd.*.pid" "$DIR/run/mon.*.pid"; do
    local live=()
    for f in $group; do
      if alive "$f"; then kill -TERM "$(awk '{print $1}' "$f")" 2>/dev/null || true; live+=("$f"); fi
    done
    local i
    for i in $(seq 1 150); do
      local any=0
      for f in "${live[@]}"; do alive "$f" && any=1; done
      [ $any = 0 ] && break; sleep 0.1
    done
    for f in "${live[@]}"; do alive "$f" && kill -KILL "$(awk '{print $1}' "$f")" 2>/dev/null || true; done
  done
  shopt -u nullglob
  rm -rf "$DIR"
}

case "${1:-}" in
  install) cmd_install ;;
  up) shift; cmd_up "$@" ;;
  down) shift; cmd_down "$@" ;;
  *) sed -n '2,16p' "$0"; exit 2 ;;
esac
