//! The policy file exactly as written. Every table rejects unknown keys, so a typo is an error
//! and never a silently ignored setting. Values the validator checks are [`S`]panned: each
//! knows where it stands in the file, so that every error can name its line and column.

use serde::Deserialize;

/// A value and the byte range it was read from.
pub type S<T> = toml::Spanned<T>;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub version: S<u32>,
    pub node: RawNode,
    #[serde(default)]
    pub ports: RawPorts,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default, rename = "profile")]
    pub profiles: Vec<S<RawProfile>>,
    /// `[gateways]`: the NAT gateways and the deterministic mapping of nodes to public
    /// addresses and ports (absent: every node routes to `node.gateway`, pools as written).
    #[serde(default)]
    pub gateways: Option<S<RawGateways>>,
}

/// `[gateways]`: the public side of NAT, its hosts, virtual addresses and nodes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGateways {
    /// The public port range `FIRST-LAST`, cut into one slice per node per public address.
    pub ports: S<String>,
    /// Ports in each node's slice; the port pools as written are the slice at `ports`'
    /// first port, and node `k` on an address uses them shifted by `k * ports_per_node`.
    pub ports_per_node: S<u32>,
    /// An outside address each gateway must reach through its public interface to hold its
    /// virtual addresses (keepalived's check of the gateway's own path out): `ADDRESS`
    /// (pinged) or `ADDRESS:PORT` (a TCP connection).
    #[serde(default)]
    pub check: Option<S<String>>,
    /// Percent of the conntrack table (`nf_conntrack_max`) above which a gateway gives one
    /// of its virtual addresses to a peer (absent: 90).
    #[serde(default)]
    pub conntrack_max_fill: Option<S<u32>>,
    /// The VRRP advertisement interval in seconds (absent: 1).
    #[serde(default)]
    pub advert_secs: Option<S<u32>>,
    /// The VRRP advertisement interval in milliseconds, for sub-second failover (VRRPv3);
    /// instead of `advert_secs`.
    #[serde(default)]
    pub advert_ms: Option<S<u32>>,
    #[serde(default, rename = "host")]
    pub hosts: Vec<S<RawGatewayHost>>,
    #[serde(default, rename = "vip")]
    pub vips: Vec<S<RawVip>>,
    #[serde(default)]
    pub nodes: Vec<S<RawNodeAddresses>>,
}

/// `[[gateways.host]]`: one gateway machine.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGatewayHost {
    pub name: S<String>,
    pub cluster_interface: S<String>,
    /// `ADDRESS/PREFIX` on the cluster network.
    pub cluster_address: S<String>,
    pub public_interface: S<String>,
    /// `ADDRESS/PREFIX`: the host's own public address (not one that moves).
    pub public_address: S<String>,
    /// The link conntrackd syncs over (absent: `cluster_interface`).
    #[serde(default)]
    pub sync_interface: Option<S<String>>,
    /// `ADDRESS/PREFIX` on the sync link (absent: `cluster_address`).
    #[serde(default)]
    pub sync_address: Option<S<String>>,
    /// IPv6 `ADDRESS/PREFIX` on the cluster network (needed when the host holds a virtual
    /// address with `address6`).
    #[serde(default)]
    pub cluster_address6: Option<S<String>>,
    /// IPv6 `ADDRESS/PREFIX`: the host's own public IPv6 address (likewise).
    #[serde(default)]
    pub public_address6: Option<S<String>>,
}

/// `[[gateways.vip]]`: one virtual (VRRP) address the nodes route to, with the public
/// addresses that move with it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVip {
    /// The VRRP instance's name (letters, digits, `_`, `-`).
    pub name: S<String>,
    /// The cluster-side virtual address (the nodes' next hop).
    pub address: S<String>,
    /// The VRRP router id, 1..=255, unique on the cluster network.
    pub vrid: S<u32>,
    /// The public addresses that move with `address`; nodes fill them in order.
    pub public: Vec<S<String>>,
    /// The cluster-side IPv6 virtual address (the nodes' IPv6 next hop); absent: no IPv6
    /// through this virtual address.
    #[serde(default)]
    pub address6: Option<S<String>>,
    /// The public IPv6 addresses that move with it; nodes fill them as they fill `public`
    /// (node `k` uses `public6[k / S]`, slice `k % S`, the same ports).
    #[serde(default)]
    pub public6: Vec<S<String>>,
    /// The gateways that may hold it and their VRRP priorities (the highest is master).
    pub holders: Vec<S<RawHolder>>,
    /// The nodes that route to it, by name or Slurm host list (`n[1-512]`), in order: a
    /// node's place in this list is its place on the public addresses.
    pub nodes: Vec<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHolder {
    pub host: S<String>,
    pub priority: S<u32>,
}

/// `[[gateways.nodes]]`: node names and their cluster addresses, consecutive in list order.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNodeAddresses {
    /// A node name or Slurm host list (`n[1-512]`).
    pub names: S<String>,
    /// The address of the list's first node; the next nodes get the next addresses.
    pub first_address: S<String>,
    /// The IPv6 (ULA) address of the list's first node, consecutive likewise; absent: these
    /// nodes have no IPv6 through the gateways.
    #[serde(default)]
    pub first_address6: Option<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    #[serde(default)]
    pub mode: Option<crate::Mode>,
    pub interface: S<String>,
    pub gateway: S<String>,
    #[serde(default)]
    pub internal: Vec<S<String>>,
    /// The gateways' IPv6 virtual address (absent: jobs' IPv6 is dropped).
    #[serde(default)]
    pub gateway6: Option<S<String>>,
    /// IPv6 networks that never go to the gateway.
    #[serde(default)]
    pub internal6: Vec<S<String>>,
    #[serde(default)]
    pub route_table: Option<S<u32>>,
    #[serde(default)]
    pub rule_priority: Option<u32>,
    #[serde(default)]
    pub fwmark: Option<S<u32>>,
    #[serde(default)]
    pub checked_fwmark: Option<S<u32>>,
    #[serde(default)]
    pub hold_table: Option<S<u32>>,
    #[serde(default)]
    pub state_dir: Option<String>,
    #[serde(default)]
    pub cgroup_root: Option<String>,
    #[serde(default)]
    pub netns_subnet: Option<S<String>>,
    /// IPv6 addresses of netns-mode job links: a unique local network, one /126 per slot.
    #[serde(default)]
    pub netns_subnet6: Option<S<String>>,
    #[serde(default)]
    pub netns_dir: Option<String>,
    #[serde(default)]
    pub netns_mtu: Option<S<u32>>,
    #[serde(default)]
    pub netns_nameservers: Vec<S<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPorts {
    #[serde(default)]
    pub range: Option<S<String>>,
    #[serde(default)]
    pub block_size: Option<S<u32>>,
    #[serde(default)]
    pub quarantine_secs: Option<S<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    #[serde(default)]
    pub lease_log: Option<String>,
    #[serde(default)]
    pub file: Option<String>,
    #[serde(default)]
    pub accounting: Option<String>,
    #[serde(default)]
    pub interim_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrincipals {
    #[serde(default)]
    pub users: Vec<S<String>>,
    #[serde(default)]
    pub groups: Vec<S<String>>,
    #[serde(default)]
    pub accounts: Vec<S<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProfile {
    pub name: S<String>,
    #[serde(default)]
    pub users: Vec<S<String>>,
    #[serde(default)]
    pub groups: Vec<S<String>>,
    #[serde(default)]
    pub accounts: Vec<S<String>>,
    #[serde(default)]
    pub partitions: Vec<S<String>>,
    #[serde(default)]
    pub qos: Vec<S<String>>,
    #[serde(default)]
    pub deny: Option<S<RawPrincipals>>,
    #[serde(default)]
    pub auto: Option<S<RawPrincipals>>,
    #[serde(default)]
    pub mode: Option<crate::Mode>,
    /// Whether the profile's jobs get IPv6 out (absent: true; only with `node.gateway6`).
    #[serde(default)]
    pub ipv6: Option<S<bool>>,
    /// Absent: every external destination.
    #[serde(default)]
    pub destinations: Option<S<Vec<S<RawDestination>>>>,
    #[serde(default)]
    pub max_jobs_per_node: Option<S<u32>>,
    #[serde(default)]
    pub max_jobs_per_user: Option<S<u32>>,
    /// `[profile.ports]`: a port pool of the profile's own (absent: the default pool).
    #[serde(default)]
    pub ports: Option<S<RawPorts>>,
    /// The gateway of the profile's own pool (absent: `node.gateway`).
    #[serde(default)]
    pub gateway: Option<S<String>>,
    /// The IPv6 gateway of the profile's own pool (absent: `node.gateway6`).
    #[serde(default)]
    pub gateway6: Option<S<String>>,
}

/// One entry of a profile's destination allowlist.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDestination {
    pub net: S<String>,
    #[serde(default)]
    pub proto: Option<S<crate::Proto>>,
    #[serde(default)]
    pub ports: Option<S<RawPortList>>,
}

/// `ports = 443` or `ports = "80,443,8000-8100"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawPortList {
    One(i64),
    List(String),
}
