# shellcheck shell=bash disable=SC2034 # the variables are used by the scripts that source this
# Shared definitions of slurm-test-env/{up,down,bench,demo,xn-login}. Sourced, not run.

XN_HERE=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
XN_REPO=$(cd -- "$XN_HERE/.." && pwd)
XN_DIR=${XN_DIR:-/run/extnet-test}
XN_DIR=${XN_DIR%/}
export XN_DIR

# Network namespaces of the cluster, in creation order (xn-sw first: it holds the bridges).
# xn-gw1, xn-gw2: the gateway pair (keepalived and conntrackd on both).
XN_NETNS=(xn-sw xn-ctl xn-login xn-n1 xn-n2 xn-gw1 xn-gw2 xn-out)
# Short-lived namespace in which up checks the gateway path end to end.
XN_CHECK_NETNS=xn-check
# Namespaces that the product (extnet prolog, netns mode) creates for jobs.
XN_PRODUCT_NETNS_PREFIX=${XN_PRODUCT_NETNS_PREFIX:-extnet-}
XN_NODES=(n1 n2)
# xnalice: allowed by name; xnbob: not by name or group (allowed by account xnacct only);
# xncarol: allowed through group xnexp; xnmallory: in xnexp but denied; xnauto: granted
# without asking (the transparent grant). See extnet-test.toml.
XN_USERS=(xnalice xnbob xncarol xnmallory xnauto)
XN_GROUP=xnexp
XN_GROUP_MEMBERS=(xnalice xncarol xnmallory)
# GECOS of the users up creates: down removes only users that carry it.
XN_USER_MARK="extnet slurm-test-env user"
# extnet's own cgroups of the nodes (the policy's cgroup_root without %n): in the cgroup2
# hierarchy, which is /sys/fs/cgroup/unified on a hybrid host and /sys/fs/cgroup on a pure
# cgroup-v2 one (the VM of mode v2).
if [[ $(stat -f -c %T /sys/fs/cgroup 2>/dev/null) == cgroup2fs ]]; then
    XN_CGROUP_BASE=/sys/fs/cgroup/extnet
else
    XN_CGROUP_BASE=/sys/fs/cgroup/unified/extnet
fi
# How Slurm tracks and confines jobs (XN_SLURM_MODE; each has conf/<mode>/): see README.md.
XN_SLURM_MODES=(linuxproc hybrid v2)
# Where the v1 controllers are mounted on a hybrid host, and the ones whose cgroups down
# looks after in mode hybrid: all that Slurm's cgroup/v1 plugin can use.
XN_CGROUP_V1=/sys/fs/cgroup
XN_SLURM_V1_CONTROLLERS=(freezer cpuset memory devices cpuacct)
# The gateway pair gw1 and gw2 (see README.md, "The gateway pair"), described by the test
# policy's [gateways] and rendered by `extnet gateway render`: each the VRRP master of one
# virtual address and the backup of the other. A virtual address is a cluster address the
# nodes route to plus the public address their traffic leaves with; both move together.
XN_GW1_IP=10.99.0.251
XN_GW2_IP=10.99.0.252
XN_GW1_OUT_IP=203.0.113.1
XN_GW2_OUT_IP=203.0.113.2
# the sync link (conntrackd) between the two, a veth of their own
XN_GW1_SYNC_IP=10.99.9.1
XN_GW2_SYNC_IP=10.99.9.2
# virtual address "main": master gw1 (node.gateway); "bulk": master gw2 (profiles bulk, bulkns)
XN_VIP=10.99.0.254
XN_GW_PUBLIC=203.0.113.101
XN_VIP2=10.99.0.253
XN_GW2_PUBLIC=203.0.113.102
XN_OUT_IP=203.0.113.10
XN_GATEWAYS=(gw1 gw2)
# IPv6 (dual stack, docs/ipv6.md): unique local addresses inside (the cluster network
# fd00:78e7::/64 of the ULA prefix fd00:78e7::/48: nodes, the gateways' cluster legs, the
# virtual addresses), the documentation prefix outside (2001:db8::/64: the gateways' public
# legs and public addresses, the outside host). The host parts mirror the IPv4 ones. The
# sync link stays IPv4 only (conntrackd syncs both families over it).
XN_CLUSTER6=fd00:78e7::/64
XN_OUTSIDE6=2001:db8::/64
XN_GW1_IP6=fd00:78e7::251
XN_GW2_IP6=fd00:78e7::252
XN_GW1_OUT_IP6=2001:db8::1
XN_GW2_OUT_IP6=2001:db8::2
XN_VIP6=fd00:78e7::254
XN_GW_PUBLIC6=2001:db8::101
XN_VIP2_6=fd00:78e7::253
XN_GW2_PUBLIC6=2001:db8::102
XN_OUT_IP6=2001:db8::10
# Where up installs extnet's packages (dpkg --root): the programs in usr/sbin, the plugin in
# Slurm's plugin directory under it (see up: install_packages).
XN_ROOT=$XN_DIR/root
# Marker file: proves that $XN_DIR is ours before down removes it.
XN_MARKER=.slurm-test-env

say() { printf 'slurm-test-env: %s\n' "$*"; }
warn() { printf 'slurm-test-env: warning: %s\n' "$*" >&2; }
die() { printf 'slurm-test-env: error: %s\n' "$*" >&2; exit 1; }

# elapsed START: seconds since START (an $EPOCHREALTIME value), one decimal.
elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }

need_root() {
    [[ $(id -u) -eq 0 ]] || die "must run as root (it creates network namespaces, users and daemons)"
}

# Refuse state directories that rm -rf must never see.
check_xn_dir() {
    [[ $XN_DIR == /* ]] || die "XN_DIR must be an absolute path (got '$XN_DIR')"
    case $XN_DIR in
        / | /run | /tmp | /var | /var/run | /etc | /usr | /root | /home | /work | /proc | /sys)
            die "XN_DIR=$XN_DIR is too dangerous a place; pick a directory of its own" ;;
    esac
}

# in_ns NS CMD...: run CMD in namespace NS. nsenter --net only: `ip netns exec`
# would remount /sys and hide /sys/fs/cgroup, which slurmd and the product need.
in_ns() {
    local ns=$1
    shift
    nsenter --net="/run/netns/$ns" -- "$@"
}

netns_exists() { [[ -e /run/netns/$1 ]]; }

# check_slurm_mode MODE: die unless MODE can run on this host.
check_slurm_mode() {
    local m
    for m in "${XN_SLURM_MODES[@]}"; do [[ $1 == "$m" ]] && break; done
    [[ $1 == "$m" ]] || die "XN_SLURM_MODE=$1 is no mode; use one of ${XN_SLURM_MODES[*]}"
    [[ -d $XN_HERE/conf/$1 ]] || die "mode $1 has no configuration ($XN_HERE/conf/$1/ is missing)"
    case $1 in
        hybrid)
            local c
            for c in freezer cpuset; do
                [[ $(stat -f -c %T "$XN_CGROUP_V1/$c" 2>/dev/null) == cgroupfs ]] ||
                    die "mode hybrid needs the cgroup v1 controller $c at $XN_CGROUP_V1/$c (a hybrid host); this host has none there: use XN_SLURM_MODE=linuxproc, or v2 on a pure cgroup-v2 host"
            done
            ;;
        v2)
            [[ $(stat -f -c %T /sys/fs/cgroup 2>/dev/null) == cgroup2fs ]] ||
                die "mode v2 needs a pure cgroup-v2 host (/sys/fs/cgroup a cgroup2 mount); this host is hybrid or v1, where slurmd 22.05 with cgroup/v2 stops with \"fatal: Hybrid mode is not supported\": use XN_SLURM_MODE=hybrid here, or run mode v2 in the VM (README.md)"
            ;;
    esac
}

# The mode the cluster in $XN_DIR runs in (up records it; linuxproc when it did not).
cluster_mode() { cat "$XN_DIR/mode" 2>/dev/null || echo linuxproc; }

# The v1 cgroups that Slurm's cgroup/v1 plugin makes for the test nodes, one per node and
# controller: Debian's slurmd is built with --enable-multiple-slurmd, so each slurmd keeps its
# cgroups under <controller>/slurm_<node> (CgroupPrepend's default /slurm_%n).
slurm_v1_cgroups() {
    local n c
    for n in "${XN_NODES[@]}"; do
        for c in "${XN_SLURM_V1_CONTROLLERS[@]}"; do
            [[ -d $XN_CGROUP_V1/$c ]] && printf '%s\n' "$XN_CGROUP_V1/$c/slurm_$n"
        done
    done
    return 0
}

# Names of all namespaces that belong to the test cluster (ours and the product's).
our_netns_names() {
    local ns
    for ns in "${XN_NETNS[@]}" "$XN_CHECK_NETNS"; do
        netns_exists "$ns" && printf '%s\n' "$ns"
    done
    if [[ -d /run/netns ]]; then
        for ns in /run/netns/"$XN_PRODUCT_NETNS_PREFIX"*; do
            [[ -e $ns ]] && printf '%s\n' "${ns##*/}"
        done
    fi
    return 0
}

# Inode of a named network namespace (what /proc/PID/ns/net points to).
netns_inode() { stat -L -c %i "/run/netns/$1" 2>/dev/null; }

# Start time (clock ticks since boot) of a live process: with the PID it names one
# process for good, so a recycled PID is never mistaken for ours. Fails for zombies:
# PID 1 here reaps orphans only every second or so, and a zombie is gone for us.
proc_starttime() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    # shellcheck disable=SC2086 # split on purpose: fields of /proc/PID/stat
    set -- $stat
    [[ $1 != [ZX] ]] || return 1
    printf '%s\n' "${20}"
}

# record_pid NAME PID: remember a process we started ($XN_DIR/pids/NAME.pid = "PID STARTTIME").
record_pid() {
    local st
    st=$(proc_starttime "$2") || st=gone
    printf '%s %s\n' "$2" "$st" >"$XN_DIR/pids/$1.pid"
}

# recorded_alive FILE: true if the process recorded in FILE still runs; prints its PID.
recorded_alive() {
    local pid st now
    read -r pid st <"$1" 2>/dev/null || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    now=$(proc_starttime "$pid") || return 1
    [[ $now == "$st" ]] || return 1
    printf '%s\n' "$pid"
}

# start_daemon NAME NETNS HOSTNAME CMD...: a daemon in namespace NETNS with its own hostname
# (UTS namespace), detached (setsid), cwd /, output to $XN_DIR/log/NAME.out, PID recorded.
start_daemon() {
    local name=$1 ns=$2 host=$3
    shift 3
    # In a script, a background job is no process group leader, so setsid, nsenter
    # (--net only), unshare (no --fork) and sh all exec: $! is the daemon itself.
    # cd /: daemons (and the prolog/epilog they run) must not hold the caller's cwd.
    # shellcheck disable=SC2016 # $0 and $@ belong to the inner sh
    (cd / && exec setsid nsenter --net="/run/netns/$ns" -- unshare --uts -- \
        sh -c 'hostname "$0" && exec "$@"' "$host" "$@") \
        </dev/null >>"$XN_DIR/log/$name.out" 2>&1 &
    record_pid "$name" "$!"
}

# start_slurmd NODE: the node's slurmd (daemon slurmd-NODE) in its namespace, in the
# foreground, with the cluster's slurm.conf; `up` and `slurmd-ctl start` use it.
start_slurmd() {
    local conf=$XN_DIR/etc/slurm.conf
    start_daemon "slurmd-$1" "xn-$1" "$1" env SLURM_CONF="$conf" slurmd -D -N "$1" -f "$conf"
}

# start_node_agent NODE: extnet's node agent (`extnet node watch`) in the node's namespace, as
# daemon watch-NODE; it loads the node's base at once and puts it back whenever it drifts, and
# writes the node's metrics to $XN_DIR/metrics/NODE.prom (never the host's node_exporter dir).
# The program: where up installed it (XN_SBIN), else $XN_DIR/bin/extnet (which names it too).
start_node_agent() {
    mkdir -p "$XN_DIR/metrics"
    start_daemon "watch-$1" "xn-$1" "$1" "${XN_SBIN:-$XN_DIR/bin}/extnet" --policy "$XN_DIR/etc/extnet.toml" \
        node watch --node "$1" --metrics-file "$XN_DIR/metrics/$1.prom"
}

# start_gateway GW: conntrackd and keepalived of gateway GW (daemons conntrackd-GW and
# keepalived-GW) in its namespace, from the files `extnet gateway render` wrote to $XN_DIR/GW. A lock file left by
# a conntrackd that was killed would stop the next one: it is removed first.
start_gateway() {
    local d=$XN_DIR/$1
    rm -f "$d/conntrackd.lock" "$d/conntrackd.ctl"
    start_daemon "conntrackd-$1" "xn-$1" "$1" conntrackd -C "$d/conntrackd.conf"
    # -P: VRRP only (no IPVS checker); -n: stay in the foreground; -l: log to stdout.
    start_daemon "keepalived-$1" "xn-$1" "$1" keepalived -P -n -l -D -f "$d/keepalived.conf" \
        -p "$d/keepalived.pid" -r "$d/keepalived-vrrp.pid" -c "$d/keepalived-checkers.pid"
}

# conntrackd_up GW: gateway GW's conntrackd answers on its socket.
conntrackd_up() { in_ns "xn-$1" conntrackd -C "$XN_DIR/$1/conntrackd.conf" -s >/dev/null 2>&1; }

# vip_on GW ADDR: gateway GW holds ADDR (IPv4 or IPv6) on one of its links.
# (no `| grep -q`: grep's early exit would make ip fail with SIGPIPE under pipefail)
vip_on() {
    local family=-4
    [[ $2 == *:* ]] && family=-6
    [[ $(in_ns "xn-$1" ip "$family" -o addr show) == *" $2/"* ]]
}

# policy_has_ipv6: the cluster's policy gives the virtual addresses IPv6 ones
# ([[gateways.vip]] address6), which keepalived then moves with the IPv4 ones.
policy_has_ipv6() { grep -Eq '^[[:space:]]*address6[[:space:]]*=' "$XN_DIR/etc/extnet.toml" 2>/dev/null; }

# pair_settled: the gateway pair as `up` makes it: each virtual address (with its public
# address) on its master only, both conntrackd answering.
pair_settled() {
    vip_on gw1 "$XN_VIP" && vip_on gw1 "$XN_GW_PUBLIC" &&
        vip_on gw2 "$XN_VIP2" && vip_on gw2 "$XN_GW2_PUBLIC" &&
        ! vip_on gw2 "$XN_VIP" && ! vip_on gw2 "$XN_GW_PUBLIC" &&
        ! vip_on gw1 "$XN_VIP2" && ! vip_on gw1 "$XN_GW2_PUBLIC" &&
        conntrackd_up gw1 && conntrackd_up gw2 && { ! policy_has_ipv6 || pair_settled6; }
}

# pair_settled6: the IPv6 virtual and public addresses likewise on their masters only.
pair_settled6() {
    vip_on gw1 "$XN_VIP6" && vip_on gw1 "$XN_GW_PUBLIC6" &&
        vip_on gw2 "$XN_VIP2_6" && vip_on gw2 "$XN_GW2_PUBLIC6" &&
        ! vip_on gw2 "$XN_VIP6" && ! vip_on gw2 "$XN_GW_PUBLIC6" &&
        ! vip_on gw1 "$XN_VIP2_6" && ! vip_on gw1 "$XN_GW2_PUBLIC6"
}

# base_loaded NODE: the node's nft table is there (the agent or a prolog loaded it).
base_loaded() { in_ns "xn-$1" nft list table inet extnet >/dev/null 2>&1; }

# stop_recorded NAME: SIGTERM to the recorded daemon NAME, up to 10 s, then SIGKILL; its PID
# file is removed. Nothing when it does not run.
stop_recorded() {
    local f=$XN_DIR/pids/$1.pid pid i
    if pid=$(recorded_alive "$f"); then
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 50; i++)); do
            recorded_alive "$f" >/dev/null || break
            sleep 0.2
        done
        if recorded_alive "$f" >/dev/null; then
            warn "$1 (pid $pid) still runs 10 s after SIGTERM: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$f"
}

slurm_env() {
    printf '%s\n' "SLURM_CONF=$XN_DIR/etc/slurm.conf" "XN_DIR=$XN_DIR" \
        "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
}

# Run a Slurm client command as root on the login host.
login_root() {
    local -a envs
    mapfile -t envs < <(slurm_env)
    in_ns xn-login env "${envs[@]}" "$@"
}
