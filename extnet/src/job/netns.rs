//! A netns-mode job's own network namespace, its veth pair to the node, addresses and routes:
//! set up by the prolog, torn down by the epilog (and by a prolog run again for the same job).

use crate::diag::failpoint;
use crate::job::JobError;
use crate::kernel::netlink::route::{Route, Route6, RouteKind};
use crate::kernel::netlink::Netlink;
use crate::kernel::{netns, sysctl};
use crate::plan::{self, layout::Layout};
use crate::store::pinned::Pinned;
use extnet_policy::Policy;
use ipnet::{Ipv4Net, Ipv6Net};
use std::os::fd::AsFd;
use std::time::Duration;

/// The job's namespace, veth pair, addresses and routes (netns mode). Equals:
/// `ip netns add NS; ip link add xjJOB mtu MTU type veth peer name eth0 mtu MTU netns NS;
///  ip addr add HOST/30 dev xjJOB; ip link set xjJOB up; ip -n NS link set lo up;
///  ip -n NS addr add JOB/30 dev eth0; ip -n NS link set eth0 up;
///  ip -n NS route add default via HOST`.
///
/// `ipv6`: the job's profile has IPv6 and the node sends IPv6 out ([`Policy::netns_ipv6_of`]
/// and the node's IPv6 address). Then, if the node forwards IPv6 ([`ipv6_addrs`]), the pair
/// gets the slot's /126 too: `sysctl net.ipv6.conf.xjJOB.addr_gen_mode=1 accept_ra=0
/// disable_ipv6=0; ip -6 addr add HOST6/126 dev xjJOB nodad; ip -n NS -6 addr add JOB6/126
/// dev eth0 nodad; ip -n NS -6 route add default via HOST6; ip -6 neigh replace JOB6 lladdr
/// MAC dev xjJOB nud permanent` (and its twin inside). Returns whether it did.
pub fn setup(
    policy: &Policy,
    layout: &Layout,
    nl: &mut Netlink,
    job_id: u32,
    slot: u32,
    ipv6: bool,
) -> Result<bool, JobError> {
    let name = layout.netns_name(job_id);
    // a prolog run twice: start from scratch (also deletes a veth pair an earlier run for
    // this job, killed midway, left behind)
    teardown(layout, nl, job_id)?;
    let host = Layout::veth_name(job_id);
    let (host_addr, job_addr) = plan::netns_addrs(policy, slot);
    let v6 = if ipv6 {
        ipv6_addrs(policy, job_id, slot)
    } else {
        None
    };
    // the slot's /126 is on the same veth as its /30: an earlier job's pair found by the /30
    // takes both with it
    remove_stale_veth(nl, job_addr, &host)?;
    let mtu = veth_mtu(policy, nl)?;
    let ns = netns::create(&layout.netns_dir, &name)?;
    failpoint::hit("prolog-after-netns-created");
    nl.veth_add(&host, "eth0", ns.as_fd(), Some(mtu))?;
    failpoint::hit("prolog-after-veth");
    let idx = nl
        .index(&host)?
        .ok_or_else(|| JobError::Vanished(format!("veth {host} vanished right after creation")))?;
    nl.addr_add(idx, host_addr, 30)?;
    sysctl::enable_forwarding(&host)?;
    // Before the link is up. IPv6 would give the host side a link-local address and routes in
    // the node's IPv6 FIB (fe80::/64, ff00::/8, ...), and the kernel walks that whole FIB on
    // every link event while holding RTNL: with many netns jobs on a node, every job's route
    // changes and every namespace's teardown would wait for walks that grow with the jobs.
    // A job with IPv6 gets the least of it: its /126, no link-local, no autoconfiguration.
    match v6 {
        Some((host6, _)) => {
            sysctl::enable_ipv6_bare(&host)?;
            nl.addr6_add_nodad(idx, host6, 126)?;
        }
        None => sysctl::disable_ipv6(&host)?,
    }
    nl.set_up(idx)?;
    let mut jnl = Netlink::open_in(ns.as_fd())?;
    if let Some(lo) = jnl.index("lo")? {
        jnl.set_up(lo)?;
    }
    let eth = jnl
        .index("eth0")?
        .ok_or_else(|| JobError::Vanished(format!("eth0 missing in namespace {name}")))?;
    jnl.addr_add(eth, job_addr, 30)?;
    if let Some((_, job6)) = v6 {
        jnl.addr6_add_nodad(eth, job6, 126)?;
    }
    jnl.set_up(eth)?;
    jnl.route_replace(&Route {
        table: 254,
        dst: Ipv4Net::default(),
        kind: RouteKind::Unicast {
            gateway: Some(host_addr),
            oif: Some(eth),
        },
    })?;
    if let Some((host6, job6)) = v6 {
        jnl.route6_replace(&Route6 {
            table: 254,
            dst: Ipv6Net::default(),
            via: Some((Some(host6), eth)),
        })?;
        // Why: without a link-local address the host side cannot solicit a neighbour for a
        // packet it forwards (the kernel sends a solicitation only from the packet's source,
        // when that is its own, or from a link-local address), so it could not reach the job
        // first, and would lose it whenever its entry went stale. Both ends know each other
        // for good instead; the entries go with the pair. After both ends are up: a link
        // going down flushes them.
        let mac_of = |nl: &mut Netlink, link: &str| {
            nl.hwaddr(link)?.ok_or_else(|| {
                JobError::Vanished(format!("link {link} vanished right after creation"))
            })
        };
        let job_mac = mac_of(&mut jnl, "eth0")?;
        let host_mac = mac_of(nl, &host)?;
        nl.neigh6_permanent(idx, job6, job_mac)?;
        jnl.neigh6_permanent(eth, host6, host_mac)?;
    }
    failpoint::hit("prolog-after-addresses-routes");
    Ok(v6.is_some())
}

/// The slot's /126 addresses (host side, job side) for a job whose profile has IPv6, when the
/// node forwards IPv6; `None` with a warning when it does not: the job then gets no IPv6 at
/// all (its IPv4 works). extnet never turns IPv6 forwarding on itself: it is global
/// (`net.ipv6.conf.all.forwarding`) and makes the node ignore router advertisements.
pub fn ipv6_addrs(
    policy: &Policy,
    job_id: u32,
    slot: u32,
) -> Option<(std::net::Ipv6Addr, std::net::Ipv6Addr)> {
    let addrs = plan::netns_addrs6(policy, slot)?;
    if !sysctl::ipv6_forwarding() {
        tracing::warn!(job_id, "{}", ipv6_forwarding_problem());
        return None;
    }
    Some(addrs)
}

/// [`ipv6_forwarding_problem`] when some netns profile of `policy` has IPv6 and this node
/// does not forward IPv6 (for `extnet status` and `extnet node setup`); `None` otherwise.
pub fn ipv6_forwarding_warning(policy: &Policy) -> Option<String> {
    let wanted = policy.profiles.iter().any(|p| policy.netns_ipv6_of(p));
    (wanted && sysctl::ipv6_available() && !sysctl::ipv6_forwarding()).then(ipv6_forwarding_problem)
}

/// What an admin reads when netns jobs would have IPv6 but the node does not forward it.
pub fn ipv6_forwarding_problem() -> String {
    format!(
        "the node does not forward IPv6 ({} is not 1): netns jobs get no IPv6 (their IPv4 works); set net.ipv6.conf.all.forwarding = 1, and accept_ra = 2 on the interfaces that must still take router advertisements",
        sysctl::IPV6_FORWARDING
    )
}

/// The MTU of a job's veth pair: `node.netns_mtu`, or else that of `node.interface`, the link
/// by which the node reaches every gateway (the oif of its external routes). Why: with the
/// kernel's default of 1500 on a smaller link, the node drops the job's packets that do not
/// fit and have DF set (all TCP, most UDP with PMTU discovery), answering with an ICMP
/// "fragmentation needed" that the job's path may never see; on a larger link (IPoIB's 2044,
/// jumbo 9000) the job would not use it.
pub fn veth_mtu(policy: &Policy, nl: &mut Netlink) -> Result<u32, JobError> {
    if let Some(m) = policy.node.netns_mtu {
        return Ok(m);
    }
    let iface = &policy.node.interface;
    nl.mtu(iface)?.ok_or_else(|| JobError::NoInterface {
        iface: iface.clone(),
    })
}

/// Deletes the veth of an earlier job that still holds this slot's /30, so that the slot has
/// one route, to this job. The epilog deletes every job's pair itself ([`teardown`]); a pair
/// can still be left by an epilog that never ran or failed midway, or by an extnet before
/// that. One route lookup
/// (`ip route get JOB_ADDR`); a delete only in that rare case. Only a link named like a job
/// veth is touched, never what a node's own routes lead to.
fn remove_stale_veth(
    nl: &mut Netlink,
    job_addr: std::net::Ipv4Addr,
    host: &str,
) -> Result<(), JobError> {
    let Some(oif) = nl.route_get_oif(job_addr)? else {
        return Ok(());
    };
    let Some(name) = nl.name_of(oif)? else {
        return Ok(());
    };
    if name.starts_with(plan::VETH_PREFIX) && name != host {
        tracing::warn!(link = %name, %job_addr, "deleting the veth of an earlier job that still holds this slot's addresses (its namespace was pinned past its epilog)");
        nl.delete(&name)?;
    }
    Ok(())
}

/// What [`teardown`] found of the job's namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dropped {
    /// The job had a namespace (or a leftover file of one).
    pub found: bool,
    /// Something still held the namespace after it was unmounted and its processes killed.
    pub pinned: Option<Pinned>,
}

/// Drops the job's namespace (netns mode): kills what still runs inside (any thread of a
/// process in it), unmounts it, and deletes the job's veth pair, whatever holds the
/// namespace: a namespace pinned by an open fd (any user can open `/run/netns/extnet-*`) then
/// keeps only `lo`, and the slot's /30 leads nowhere. The pair is deleted explicitly (absent
/// is fine: the kernel may have reaped it already), which waits for the kernel's RCU grace
/// period (docs/PERFORMANCE.md). Then, if the job had a namespace, the processes that still
/// hold it are looked up ([`netns::holders`]), logged, and returned.
pub fn teardown(layout: &Layout, nl: &mut Netlink, job_id: u32) -> Result<Dropped, JobError> {
    let name = layout.netns_name(job_id);
    let veth = Layout::veth_name(job_id);
    let mut dropped = Dropped::default();
    let mut inode = None;
    let opened = match netns::open(&layout.netns_dir, &name) {
        Ok(f) => f,
        // a plain file left by a prolog killed inside `netns::create`: the name is the job's,
        // so whatever is there is ours to remove
        Err(netns::NetnsError::NotNetns { path, what }) => {
            tracing::warn!(job_id, path = %path.display(), %what, "removing a leftover namespace file");
            netns::delete(&layout.netns_dir, &name)?;
            dropped.found = true;
            None
        }
        Err(e) => return Err(e.into()),
    };
    if let Some(f) = opened {
        dropped.found = true;
        let ino = netns::inode(&f);
        inode = Some(ino);
        drop(f);
        let mut left = Vec::new();
        for _ in 0..100 {
            left = netns::pids_in(ino);
            if left.is_empty() {
                break;
            }
            for &p in &left {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p),
                    nix::sys::signal::SIGKILL,
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        netns::delete(&layout.netns_dir, &name)?;
        if !left.is_empty() {
            tracing::warn!(
                job_id,
                netns = %name,
                pids = ?left,
                "processes in the job's network namespace did not die within 1 s of SIGKILL (admins: see what they wait for in /proc/PID/stack)"
            );
        }
    }
    // ENODEV (no such link) is success: the pair may be gone with its namespace already
    if nl.delete(&veth)? {
        tracing::debug!(job_id, %veth, "job veth pair deleted");
    }
    if let Some(ino) = inode {
        let holders = netns::holders(ino);
        if !holders.is_empty() {
            let p = Pinned {
                job_id,
                inode: ino,
                since: crate::store::lease::now(),
                holders,
            };
            for h in &p.holders {
                tracing::warn!(
                    job_id,
                    netns = %name,
                    inode = ino,
                    pid = h.pid,
                    uid = h.uid,
                    comm = %h.comm,
                    inside = h.inside,
                    fds = ?h.fds,
                    "the job's network namespace is still held after its teardown (its veth pair is deleted: it has only lo left); extnet reconcile drops the record once it is gone"
                );
            }
            dropped.pinned = Some(p);
        }
    }
    Ok(dropped)
}
