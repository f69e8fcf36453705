//! The node's nftables table, rendered from the policy: the static base (marks, port-block
//! SNAT, routing marks) with its [`allowlist`] chains and traffic [`counters`]. Text only; the
//! table is loaded by [`crate::node`].

pub mod allowlist;
pub mod counters;

use crate::plan::layout::Layout;
use crate::plan::{mark, netns_addrs, TABLE, VETH_PREFIX};
use extnet_policy::Policy;
use std::fmt::Write;
use std::net::Ipv4Addr;

/// What the base ruleset is built from (facts read from the node at setup).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseFacts {
    /// The node's address on `node.interface`: what job traffic is translated to.
    pub node_addr: Ipv4Addr,
    /// The `socket cgroupv2` levels of the job cgroups (extnet's own and Slurm's).
    pub cgroup_levels: Vec<usize>,
}

impl BaseFacts {
    /// Facts for `layout`, given the node address. Fails when the cgroup root is not below
    /// `/sys/fs/cgroup` (nft resolves cgroup paths relative to it).
    pub fn new(layout: &Layout, node_addr: Ipv4Addr) -> Result<BaseFacts, CgroupRootError> {
        cgroup_path(layout, &layout.cgroup_root)?;
        Ok(BaseFacts {
            node_addr,
            cgroup_levels: layout.job_cgroup_levels(),
        })
    }
}

/// The node's cgroup root is where nft cannot name it.
#[derive(Debug, thiserror::Error)]
#[error("cgroup root {} is not below /sys/fs/cgroup; set node.cgroup_root to a directory of the cgroup2 hierarchy", root.display())]
pub struct CgroupRootError {
    pub root: std::path::PathBuf,
}

/// A cgroup directory as nft names it: relative to `/sys/fs/cgroup`.
pub fn cgroup_path(layout: &Layout, dir: &std::path::Path) -> Result<String, CgroupRootError> {
    dir.strip_prefix("/sys/fs/cgroup")
        .map(|rel| rel.display().to_string())
        .map_err(|_| CgroupRootError {
            root: layout.cgroup_root.clone(),
        })
}

/// The job cgroup map's element of a running cgroup-mode job, as `add element` text for a
/// base reload (which empties the map): `"PATH" : MARK`.
pub fn job_cgroup_element(
    layout: &Layout,
    job_id: u32,
    mark: u32,
) -> Result<String, CgroupRootError> {
    cgroup_element(layout, &layout.job_cgroup(job_id), mark)
}

/// The job cgroup map's element of cgroup `dir` (extnet's or Slurm's job cgroup) with `mark`.
pub fn cgroup_element(
    layout: &Layout,
    dir: &std::path::Path,
    mark: u32,
) -> Result<String, CgroupRootError> {
    Ok(format!("\"{}\" : 0x{mark:x}", cgroup_path(layout, dir)?))
}

/// The job cgroup map: a running cgroup-mode job's cgroup (its id, as sockets carry it) →
/// the job's checked mark. Elements are added by the prolog and deleted by the epilog
/// ([`crate::node::job_cgroups`]); a cgroup that is gone matches nothing.
pub const JOB_CGROUP_MAP: &str = "job_cgroup";

/// The node's complete nftables table, as one atomic `nft -f` transaction that replaces any
/// earlier version (running jobs keep working: their slots' elements are the same, and their
/// job cgroups' elements are added again in the same transaction).
pub fn base_ruleset(policy: &Policy, facts: &BaseFacts) -> String {
    let n = &policy.node;
    let flag = n.fwmark;
    let blocks = policy.slots();
    let mut s = String::with_capacity(256 + blocks as usize * 160);
    // `table; delete table; table {..}` in one transaction: create-if-missing, then replace.
    let _ = writeln!(
        s,
        "table ip {TABLE}\ndelete table ip {TABLE}\ntable ip {TABLE} {{"
    );
    let internal: Vec<String> = n.internal.iter().map(|i| i.to_string()).collect();
    if internal.is_empty() {
        let _ = writeln!(s, "  set internal {{ type ipv4_addr; flags interval; }}");
    } else {
        let _ = writeln!(
            s,
            "  set internal {{ type ipv4_addr; flags interval; elements = {{ {} }}; }}",
            internal.join(", ")
        );
    }
    // job cgroup → mark (elements per running job); slot → job address, slot → port block
    // (static, one element per slot)
    let _ = writeln!(s, "  map {JOB_CGROUP_MAP} {{ type cgroupsv2 : mark; }}");
    let _ = write!(s, "  map slot_netns {{ type ipv4_addr : mark;");
    list(
        &mut s,
        (0..blocks).map(|i| format!("{} : 0x{:x}", netns_addrs(policy, i).1, mark(policy, i))),
    );
    let _ = write!(
        s,
        "  map slot_snat {{ type mark : interval ipv4_addr . inet_service;"
    );
    // each slot's block comes from its pool: blocks of different pools differ in size
    list(
        &mut s,
        policy.pools.iter().flat_map(|pool| {
            pool.slots().filter_map(move |i| {
                let (lo, hi) = pool.block(i)?;
                Some(format!(
                    "0x{:x} : {} . {lo}-{hi}",
                    mark(policy, i),
                    facts.node_addr
                ))
            })
        }),
    );
    // per-slot traffic counters and their `mark : counter` maps (see counters)
    s.push_str(&counters::nft_objects(policy));
    // per-profile destination allowlists and their filter chains (see allowlist)
    s.push_str(&allowlist::nft_objects(policy));
    // one lookup per level: a socket's job cgroup is extnet's own or Slurm's; a lookup that
    // finds nothing leaves the mark alone
    let lookups: String = facts
        .cgroup_levels
        .iter()
        .map(|l| format!("    meta mark set socket cgroupv2 level {l} map @{JOB_CGROUP_MAP}\n"))
        .collect();
    let both = flag | n.checked_fwmark;
    let _ = writeln!(
        s,
        r#"  chain output_mark {{
    type route hook output priority mangle; policy accept;
    meta mark & 0x{both:x} != 0 meta mark set meta mark & 0x{keep:x}
    ip daddr @internal return
{lookups}  }}
  chain prerouting_mark {{
    type filter hook prerouting priority mangle; policy accept;
    iifname "{VETH_PREFIX}*" ip daddr @internal return
    iifname "{VETH_PREFIX}*" meta mark set ip saddr map @slot_netns
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    iifname "{VETH_PREFIX}*" accept
    oifname "{VETH_PREFIX}*" ct state established,related accept
    oifname "{VETH_PREFIX}*" drop
  }}
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    iifname "{VETH_PREFIX}*" ip daddr @internal masquerade
    ip daddr @internal return
    meta mark & 0x{flag:x} == 0x{flag:x} meta l4proto {{ tcp, udp, icmp }} snat ip to meta mark map @slot_snat
    meta mark & 0x{flag:x} == 0x{flag:x} counter drop comment "marked without a port block: never leave untranslated"
  }}
{accounting}}}"#,
        keep = !both,
        accounting = counters::nft_chains(policy)
    );
    s.push_str(&ipv6_table(policy));
    s
}

/// The IPv6 table `ip6 extnet`, in the same transaction: the data path is IPv4 only, so a
/// job's IPv6 packets (its sockets carry the mark whatever their family; netns jobs' come
/// from `xj*`) are dropped and counted, and no allowlist can be bypassed over IPv6 on a
/// dual-stack node. Loopback stays.
fn ipv6_table(policy: &Policy) -> String {
    let flag = policy.node.fwmark;
    format!(
        r#"table ip6 {TABLE}
delete table ip6 {TABLE}
table ip6 {TABLE} {{
  counter ipv6_drop {{ }}
  chain output {{
    type filter hook output priority filter - 5; policy accept;
    meta mark & 0x{flag:x} != 0x{flag:x} return
    oifname "lo" return
    counter name ipv6_drop drop
  }}
  chain forward {{
    type filter hook forward priority filter - 5; policy accept;
    iifname "{VETH_PREFIX}*" counter name ipv6_drop drop
  }}
}}
"#
    )
}

fn list(s: &mut String, elems: impl Iterator<Item = String>) {
    let v: Vec<String> = elems.collect();
    if v.is_empty() {
        s.push_str(" }\n");
    } else {
        let _ = writeln!(s, " elements = {{ {} }}; }}", v.join(", "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::testing::policy;

    #[test]
    fn ruleset_has_one_element_per_slot_and_no_per_job_rule() {
        let p = policy();
        let layout = Layout::new(&p, "n1");
        assert_eq!(
            layout.job_cgroup(17).display().to_string(),
            "/sys/fs/cgroup/unified/extnet/n1/job_17"
        );
        assert_eq!(
            job_cgroup_element(&layout, 17, 0x30002).unwrap(),
            "\"unified/extnet/n1/job_17\" : 0x30002"
        );
        let mut facts = BaseFacts::new(&layout, "10.99.0.11".parse().unwrap()).unwrap();
        facts.cgroup_levels = vec![3];
        let r = base_ruleset(&p, &facts);
        // job cgroups come and go with the jobs: the map starts empty
        assert!(
            r.contains("map job_cgroup { type cgroupsv2 : mark; }"),
            "{r}"
        );
        assert!(r.contains("0x30001 : 10.99.0.11 . 20256-20511"), "{r}");
        assert!(r.contains("100.64.0.10 : 0x30002"), "{r}");
        assert!(r.contains("socket cgroupv2 level 3 map @job_cgroup"), "{r}");
        assert!(
            r.contains("elements = { 10.99.0.0/24, 172.16.0.0/12 }"),
            "{r}"
        );
        // slot_netns, slot_snat, and the three accounting maps
        assert_eq!(r.matches("0x30002").count(), 5, "{r}");
        assert!(
            !r.contains("\"unified/extnet/n1/job"),
            "no per-job element in the base ruleset: {r}"
        );
        // only this chain says a packet was checked: flag and checked bits set by anyone
        // else (a socket of no running job, SO_MARK) are cleared first
        assert!(
            r.contains("meta mark & 0x30000 != 0 meta mark set meta mark & 0xfffcffff\n    ip daddr @internal return\n    meta mark set socket cgroupv2"),
            "{r}"
        );
        // protocols other than TCP, UDP and ICMP are dropped in both filter chains
        assert_eq!(
            r.matches("meta l4proto != { tcp, udp, icmp } counter name proto_drop drop")
                .count(),
            2,
            "{r}"
        );
        // TCP, UDP and ICMP (its echo identifier as the port) leave only inside the slot's
        // block; a marked packet that no block translates is dropped, never sent as it is
        assert!(
            r.contains("meta l4proto { tcp, udp, icmp } snat ip to meta mark map @slot_snat\n    meta mark & 0x10000 == 0x10000 counter drop"),
            "{r}"
        );
        assert!(!r.contains("snat ip to 10.99.0.11"), "{r}");
        // IPv6 of jobs: dropped in a table of its own, loaded in the same transaction
        assert!(r.contains("table ip6 extnet {"), "{r}");
        assert!(r.contains("counter name ipv6_drop drop"), "{r}");
    }
}
