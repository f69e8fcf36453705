//! The gateway's keepalived configuration and the scripts it runs.
//!
//! One VRRP instance per virtual address the host may hold: the cluster-side address and the
//! public addresses that move with it are in the same instance, so they always move together
//! and a node keeps its public address across a failover. An instance cannot mix families,
//! so the IPv6 virtual and public addresses (`address6`, `public6`) are in the same
//! instance's `virtual_ipaddress_excluded` (not advertised, added and removed with the
//! others): one instance decides both families and a failover moves a node's two public
//! addresses together. Every instance starts as BACKUP and
//! the priorities of the policy decide (preemption on: a master that comes back takes its
//! addresses back). Advertisements go unicast to the other holders.
//!
//! Checks: `check-path.sh` pings `[gateways] check` through the public interface; when it
//! fails the host's instances go to FAULT and their addresses to the peers.
//! `check-conntrack.sh` fails when the conntrack table is fuller than
//! `conntrack_max_fill`; it is tracked, with a weight that drops the host below the next
//! holder, by one instance only (the last address in file order that the host is master of
//! and that has another holder), so a full gateway hands one address to a peer with room and
//! keeps the others. Established connections of a moved address survive when conntrackd has
//! synced them (`notify.sh` commits the peer's cache on MASTER).

use extnet_policy::gateways::{GatewayHost, Gateways};
use std::fmt::Write;

/// The instance that tracks the conntrack fill check on host `h`, and its weight.
pub fn fill_tracker(g: &Gateways, h: &GatewayHost) -> Option<(usize, i32)> {
    g.vips_of_host(&h.name)
        .into_iter()
        .rfind(|&(v, _)| g.vips[v].master() == h.name && g.vips[v].holders.len() > 1)
        .map(|(v, mine)| {
            let next = g.vips[v]
                .holders
                .iter()
                .filter(|(o, _)| *o != h.name)
                .map(|&(_, p)| p)
                .max()
                .unwrap_or(0);
            (v, i32::from(mine) - i32::from(next) + 1)
        })
}

pub fn config(g: &Gateways, h: &GatewayHost, dir: &str) -> String {
    let mut s = String::new();
    // whole seconds: VRRPv2, as every keepalived speaks it; less: VRRPv3's centiseconds
    let v3 = g.advert_ms % 1000 != 0;
    let _ = write!(
        s,
        "# keepalived of NAT gateway {name}, rendered by `extnet gateway render` from the policy; do not edit\nglobal_defs {{\n    router_id {name}\n    enable_script_security\n    script_user root\n    vrrp_garp_master_delay 1\n{version}}}\n",
        name = h.name,
        version = if v3 { "    vrrp_version 3\n" } else { "" }
    );
    // the path check runs every whole second at most (keepalived's script interval)
    let check_secs = g.advert_ms.div_ceil(1000).max(1);
    if g.check.is_some() {
        let _ = write!(
            s,
            "\n# the gateway's own path out: without it, its addresses go to a peer\nvrrp_script extnet_path_out {{\n    script \"{dir}/check-path.sh\"\n    interval {i}\n    timeout {t}\n    fall 2\n    rise 2\n}}\n",
            i = check_secs,
            // a slow start of ping (a loaded or emulated host) is not a dead path
            t = 3 * check_secs
        );
    }
    let fill = fill_tracker(g, h);
    if let Some((_, weight)) = fill {
        let _ = write!(
            s,
            "\n# conntrack table fuller than {}%: one address goes to a peer with room\nvrrp_script extnet_conntrack_fill {{\n    script \"{dir}/check-conntrack.sh\"\n    interval 5\n    fall 2\n    rise 2\n    weight -{weight}\n}}\n",
            g.conntrack_max_fill
        );
    }
    for (v, prio) in g.vips_of_host(&h.name) {
        let vip = &g.vips[v];
        let peers: Vec<String> = vip
            .holders
            .iter()
            .filter(|(o, _)| *o != h.name)
            .filter_map(|(o, _)| g.host(o))
            .map(|o| format!("        {}\n", o.cluster_address.addr()))
            .collect();
        let _ = write!(
            s,
            "\nvrrp_instance {name} {{\n    state BACKUP\n    interface {cif}\n    virtual_router_id {vrid}\n    priority {prio}\n    advert_int {adv}\n    unicast_src_ip {src}\n    unicast_peer {{\n{peers}    }}\n    virtual_ipaddress {{\n        {addr}/{cplen} dev {cif}\n",
            name = vip.name,
            cif = h.cluster_interface,
            vrid = vip.vrid,
            adv = advert_int(g.advert_ms),
            src = h.cluster_address.addr(),
            peers = peers.concat(),
            addr = vip.address,
            cplen = h.cluster_address.prefix_len(),
        );
        for p in &vip.public {
            let _ = writeln!(
                s,
                "        {p}/{} dev {}",
                h.public_address.prefix_len(),
                h.public_interface
            );
        }
        s.push_str("    }\n");
        // validation: every holder of an address with IPv6 has IPv6 on both links
        if let (Some(a6), Some(c6), Some(p6)) =
            (vip.address6, h.cluster_address6, h.public_address6)
        {
            let _ = writeln!(
                s,
                "    virtual_ipaddress_excluded {{\n        {a6}/{} dev {}",
                c6.prefix_len(),
                h.cluster_interface
            );
            for p in &vip.public6 {
                let _ = writeln!(
                    s,
                    "        {p}/{} dev {}",
                    p6.prefix_len(),
                    h.public_interface
                );
            }
            s.push_str("    }\n");
        }
        let tracks: Vec<&str> = [
            g.check.map(|_| "extnet_path_out"),
            fill.filter(|&(f, _)| f == v)
                .map(|_| "extnet_conntrack_fill"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !tracks.is_empty() {
            s.push_str("    track_script {\n");
            for t in tracks {
                let _ = writeln!(s, "        {t}");
            }
            s.push_str("    }\n");
        }
        let _ = write!(s, "    notify \"{dir}/notify.sh\"\n}}\n");
    }
    s
}

/// `advert_int` as keepalived reads it: seconds, with centiseconds when there are any
/// (`1`, `0.5`, `0.25`).
fn advert_int(ms: u32) -> String {
    let (secs, cs) = (ms / 1000, (ms % 1000) / 10);
    match cs {
        0 => secs.to_string(),
        _ if cs % 10 == 0 => format!("{secs}.{}", cs / 10),
        _ => format!("{secs}.{cs:02}"),
    }
}

/// keepalived's notify script (`notify.sh TYPE NAME STATE PRIORITY`). First it records an
/// instance's new state in `state_dir/vrrp/NAME` (one word, replaced by a rename: a reader
/// sees the old state or the new one), which `extnet gateway metrics` exports. Then
/// conntrackd's primary-backup logic for a host that may be master of some addresses and
/// backup of others.
/// MASTER: commit the external cache (the peer's synced connections) into the kernel, flush
/// the caches, resync the internal cache from the kernel, send it to the peers in bulk, and
/// ask them for theirs (their other addresses' connections). BACKUP or FAULT: ask the peers
/// for a resync; and when the host holds no address any more, shorten the kernel's timers so
/// that entries it no longer serves expire.
pub fn notify_script(g: &Gateways, h: &GatewayHost, dir: &str, state_dir: &str) -> String {
    let addrs: Vec<String> = g
        .vips_of_host(&h.name)
        .into_iter()
        .map(|(v, _)| g.vips[v].address.to_string())
        .collect();
    format!(
        r#"#!/bin/sh
# keepalived notify of NAT gateway {name}, rendered by `extnet gateway render`; do not edit.
# Called as: notify.sh INSTANCE|GROUP NAME MASTER|BACKUP|FAULT|STOP PRIORITY
conf={dir}/conntrackd.conf
instance=$2
state=$3
# the instance's state for `extnet gateway metrics`, replaced whole
if [ "$1" = INSTANCE ]; then
    vrrp={state_dir}/vrrp
    {{ mkdir -p "$vrrp" && echo "$state" >"$vrrp/.$instance.tmp" && mv -f "$vrrp/.$instance.tmp" "$vrrp/$instance"; }} ||
        echo "extnet-gw {name}: cannot record $state of $instance in $vrrp" >&2
fi
[ -e "$conf" ] || exit 0
ct() {{
    conntrackd -C "$conf" "$@" || echo "extnet-gw {name}: conntrackd $* failed ($?) on $state of $instance" >&2
}}
# true when this host still holds one of its virtual addresses
holds_any() {{
    held=$(ip -4 -o addr show dev {cif})
    for a in {addrs}; do
        case "$held" in *" $a/"*) return 0 ;; esac
    done
    return 1
}}
case "$state" in
MASTER)
    ct -c
    ct -f
    ct -R
    ct -B
    ct -n
    ;;
BACKUP|FAULT|STOP)
    holds_any || ct -t
    ct -n
    ;;
esac
exit 0
"#,
        name = h.name,
        cif = h.cluster_interface,
        addrs = addrs.join(" ")
    )
}

/// The path-out check: one ping of `[gateways] check` through the public interface, or with
/// a port a TCP connection to it (bash's `/dev/tcp`, within 2 s).
pub fn check_path_script(g: &Gateways, h: &GatewayHost) -> String {
    let head = format!(
        "#!/bin/sh\n# NAT gateway {}: rendered by `extnet gateway render`; do not edit.\n",
        h.name
    );
    let body = match g.check {
        Some((a, None)) => format!(
            "# fails when {a} does not answer a ping through {i}\nexec ping -n -q -c 1 -W 1 -I {i} {a} >/dev/null 2>&1\n",
            i = h.public_interface
        ),
        Some((a, Some(p))) => format!(
            "# fails when {a} port {p} does not accept a TCP connection (through {i}: the route out)\nexec timeout 2 bash -c 'exec 3<>/dev/tcp/{a}/{p}' >/dev/null 2>&1\n",
            i = h.public_interface
        ),
        None => "# the policy gives no [gateways] check, so keepalived runs no path check\nexit 0\n"
            .to_owned(),
    };
    head + &body
}

/// The conntrack fill check: fails above `conntrack_max_fill` percent (or when the counters
/// cannot be read).
pub fn check_conntrack_script(g: &Gateways) -> String {
    format!(
        "#!/bin/sh\n# fails when the conntrack table is fuller than {p}% (rendered by `extnet gateway render`)\ncount=$(cat /proc/sys/net/netfilter/nf_conntrack_count) || exit 1\nmax=$(cat /proc/sys/net/netfilter/nf_conntrack_max) || exit 1\n[ $((count * 100)) -lt $((max * {p})) ]\n",
        p = g.conntrack_max_fill
    )
}

#[cfg(test)]
mod tests {
    use super::advert_int;

    #[test]
    fn advert_int_is_seconds_with_centiseconds_only_when_there_are_some() {
        assert_eq!(advert_int(1000), "1");
        assert_eq!(advert_int(3000), "3");
        assert_eq!(advert_int(500), "0.5");
        assert_eq!(advert_int(250), "0.25");
        assert_eq!(advert_int(1010), "1.01");
        assert_eq!(advert_int(40950), "40.95");
    }
}
