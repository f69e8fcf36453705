//! The extnet policy file (`/etc/slurm/extnet.toml`).
//!
//! Parse → validate → decide:
//! - [`raw`] is the file as written (serde, `deny_unknown_fields`);
//! - [`Policy::from_toml`] checks it into a [`Policy`] whose invariants hold (non-overlapping
//!   networks, port pools that each hold at least one block and share no port, profiles that
//!   can match, ...);
//! - [`decide()`] turns a policy and a job's identity into a [`Decision`], a pure function that
//!   is unit-tested without root; [`possible`] is the weaker check made at submit time;
//! - [`report`] puts a policy and a decision into words for admins.
//!
//! The reference for every key is `docs/policy.md`.

pub mod decide;
pub mod gateways;
pub mod hostlist;
pub mod raw;
pub mod report;
mod validate;

pub use decide::{
    decide, decide_skipping, possible, Decision, GroupResolver, Groups, JobIdentity, Request,
    Submitter,
};
pub use validate::{PolicyError, ValidationError};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// The default location of the policy file.
pub const DEFAULT_PATH: &str = "/etc/slurm/extnet.toml";

/// How a granted job's traffic is singled out on the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The job stays in the node's network namespace; its sockets are marked by cgroup.
    Cgroup,
    /// The job gets its own network namespace behind a veth pair.
    Netns,
}

impl std::fmt::Display for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Mode::Cgroup => "cgroup",
            Mode::Netns => "netns",
        })
    }
}

/// A checked policy. Every field holds its invariant; see [`Policy::from_toml`].
#[derive(Debug, Clone, PartialEq, Hash)]
pub struct Policy {
    pub node: NodeConfig,
    /// The default pool's geometry (`[ports]`): the pool of every profile without one of its
    /// own. For a node's slots and their blocks use [`Policy::slots`], [`Policy::slot_block`]
    /// and [`Policy::pool_of_profile`], which cover every pool.
    pub ports: PortPool,
    pub log: LogConfig,
    pub profiles: Vec<Profile>,
    /// Every port pool of the node: the default pool (`[ports]`) first, then the profiles' own
    /// pools (`[profile.ports]`) in file order. Their slots are numbered one after the other.
    pub pools: Vec<Pool>,
    /// `[gateways]`: the NAT gateways and each node's fixed public address and ports
    /// (`None`: every node routes to `node.gateway` with the pools as written). A node uses
    /// [`Policy::for_node`], its own view.
    pub gateways: Option<gateways::Gateways>,
}

/// Node-wide settings: how job traffic is routed to the gateway.
#[derive(Debug, Clone, PartialEq, Hash)]
pub struct NodeConfig {
    /// Mode of profiles that do not name one.
    pub mode: Mode,
    /// The node's interface towards the gateway (its cluster network).
    pub interface: String,
    /// The gateway's virtual address (VRRP), next hop of the external routing table.
    pub gateway: Ipv4Addr,
    /// Destinations that always stay on the node's normal path (storage, Slurm, MPI fabric).
    pub internal: Vec<Ipv4Net>,
    /// The gateways' IPv6 virtual address, next hop of the external table's IPv6 default
    /// route (inside one of `internal6`). `None`: every job's IPv6 is dropped.
    pub gateway6: Option<Ipv6Addr>,
    /// IPv6 destinations that always stay on the node's normal path.
    pub internal6: Vec<Ipv6Net>,
    /// Routing table whose default route is the gateway.
    pub route_table: u32,
    /// Priority of the one `ip rule` that sends marked packets to `route_table`.
    pub rule_priority: u32,
    /// The flag bit(s) of the packet mark that a job's sockets get when they are created; the
    /// job's slot is in the low 16 bits. Alone, they select `hold_table`.
    pub fwmark: u32,
    /// The bit(s) that extnet's own nftables chain adds to a job's packet once it has matched
    /// it to a running job's slot: only `fwmark | checked_fwmark` selects `route_table`, so a
    /// packet that extnet's table did not see (a flushed ruleset) never reaches the gateway.
    pub checked_fwmark: u32,
    /// Routing table of packets with `fwmark` but not `checked_fwmark`: its default route is
    /// a dummy link that drops everything (`extnet0`), so a job's first route lookup
    /// (`connect`) succeeds and its packets wait for extnet's chain to check them, or go
    /// nowhere.
    pub hold_table: u32,
    /// Directory for the lease table, job state files and the base marker (`%n` = node name).
    pub state_dir: String,
    /// cgroup v2 directory under which extnet keeps its slot cgroups (`%n` = node name);
    /// `None`: detect (`/sys/fs/cgroup/unified/extnet` on hybrid hosts, `/sys/fs/cgroup/extnet`).
    pub cgroup_root: Option<String>,
    /// Addresses for netns-mode veth pairs: one /30 per slot.
    pub netns_subnet: Ipv4Net,
    /// IPv6 addresses for netns-mode veth pairs: a unique local network, one /126 per slot
    /// (host side `::1`, job side `::2`). `None`: netns jobs get no IPv6 (required when a
    /// netns profile has IPv6 on a node with `gateway6`).
    pub netns_subnet6: Option<Ipv6Net>,
    /// Where named network namespaces live (as `ip netns` does).
    pub netns_dir: PathBuf,
    /// MTU of a netns-mode job's veth pair (both ends); `None`: the MTU of `interface`, so
    /// that the job's packets fit the link they leave the node by.
    pub netns_mtu: Option<u32>,
    /// Nameservers of netns-mode jobs (their `/etc/resolv.conf`); empty: the node's own
    /// resolver configuration, or systemd-resolved's upstream servers when the node's file
    /// names a loopback stub, which a job's namespace cannot reach.
    pub netns_nameservers: Vec<Ipv4Addr>,
}

impl NodeConfig {
    /// How many /30 job links `netns_subnet` holds (one per slot in netns mode).
    pub(crate) fn netns_links(&self) -> u64 {
        1u64 << (30u8.saturating_sub(self.netns_subnet.prefix_len()))
    }

    /// How many /126 job links `netns_subnet6` holds (none without it), at most 2^32.
    pub(crate) fn netns_links6(&self) -> u64 {
        self.netns_subnet6.map_or(0, |n| {
            1u64 << (126u8.saturating_sub(n.prefix_len())).min(32)
        })
    }
}

/// The geometry of one pool of NAT source ports, cut into equal blocks (one block per active
/// job). Its block numbers are local to the pool; [`Pool`] places them among the node's slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortPool {
    pub first: u16,
    pub last: u16,
    pub block_size: u16,
    /// Seconds a released block waits before it is leased again (RFC 6888: 120).
    pub quarantine_secs: u64,
}

impl PortPool {
    /// Number of whole blocks in the pool (= the pool's slots on a node).
    pub fn blocks(&self) -> u32 {
        (u32::from(self.last) - u32::from(self.first) + 1) / u32::from(self.block_size)
    }

    /// The inclusive port range of the pool's block `index` (0-based within this pool; not a
    /// node slot number: see [`Pool::block`]).
    pub fn block(&self, index: u32) -> (u16, u16) {
        let lo = u32::from(self.first) + index * u32::from(self.block_size);
        (lo as u16, (lo + u32::from(self.block_size) - 1) as u16)
    }

    /// True when `port` is in the pool's range.
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

/// One port pool of a node and the slots it gives: the default pool (`[ports]`) or a
/// profile's own (`[profile.ports]`). A pool's jobs are translated into its blocks and routed
/// to its gateway.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pool {
    /// `None`: the default pool (`[ports]`), shared by every profile without a pool of its
    /// own; `Some(name)`: the own pool of profile `name`.
    pub profile: Option<String>,
    pub ports: PortPool,
    /// The node's first slot of this pool: its block `i` is slot `first_slot + i` (mark
    /// `node.fwmark | slot`, cgroup `slot_<slot>`, `/30` number `slot`).
    pub first_slot: u32,
    /// Where the pool's jobs' traffic goes: `node.gateway`, or the profile's `gateway`.
    pub gateway: Ipv4Addr,
    /// The routing table of the pool's traffic: `node.route_table` when `gateway` is
    /// `node.gateway`; otherwise a table of its own, `node.route_table + index of the pool`,
    /// selected by `ip rule`s that cover exactly the pool's marks.
    pub route_table: u32,
    /// Where the pool's jobs' IPv6 goes: `node.gateway6`, or the profile's `gateway6` (with
    /// `[gateways]`: the `address6` of the pool's virtual address). `None` without
    /// `node.gateway6`. A pool whose `gateway6` is not `node.gateway6` has a routing table
    /// of its own, as for `gateway`.
    pub gateway6: Option<Ipv6Addr>,
}

impl Pool {
    /// The node slots of this pool.
    pub fn slots(&self) -> Range<u32> {
        self.first_slot..self.first_slot + self.ports.blocks()
    }

    /// The port block of node slot `slot`, when the slot is this pool's.
    pub fn block(&self, slot: u32) -> Option<(u16, u16)> {
        self.slots()
            .contains(&slot)
            .then(|| self.ports.block(slot - self.first_slot))
    }

    /// How admins see the pool: `[ports]` for the default pool, else the profile's name.
    pub fn name(&self) -> &str {
        self.profile.as_deref().unwrap_or("[ports]")
    }

    /// How an admin gives the pool more blocks, naming its keys (for hints).
    pub fn grow_hint(&self) -> String {
        match &self.profile {
            None => "widen [ports] range or lower [ports] block_size".into(),
            Some(p) => {
                format!("widen the [profile.ports] range of profile {p:?} or lower its block_size")
            }
        }
    }
}

/// Where records go (`%n` = node name).
#[derive(Debug, Clone, PartialEq, Hash)]
pub struct LogConfig {
    /// Append-only JSON lines: every lease allocate and release.
    pub lease_log: String,
    /// The prolog's and epilog's own log (what they did and why), besides stderr.
    pub file: String,
    /// Append-only JSON lines: one accounting record (traffic counters) per job per node.
    pub accounting: String,
    /// Seconds between `interim` lease-log records of a running lease (0: none).
    pub interim_secs: u64,
}

/// Principals: who a rule is about. A job matches when its user, one of its user's groups, or
/// its account is listed (`"*"` in `users` matches everyone).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Principals {
    pub users: Vec<String>,
    pub groups: Vec<String>,
    pub accounts: Vec<String>,
}

impl Principals {
    pub fn is_empty(&self) -> bool {
        self.users.is_empty() && self.groups.is_empty() && self.accounts.is_empty()
    }
}

/// A named grant: who may use it, whether they get it without asking, and its limits.
#[derive(Debug, Clone, PartialEq, Hash)]
pub struct Profile {
    pub name: String,
    /// Who may ask for this profile.
    pub allow: Principals,
    /// Who is refused even when `allow` matches (wins over allow and auto).
    pub deny: Principals,
    /// Who gets this profile without asking (must also be covered by `allow`).
    pub auto: Principals,
    /// Partitions the profile applies in (empty: all).
    pub partitions: Vec<String>,
    /// QOS the profile applies to (empty: all).
    pub qos: Vec<String>,
    pub mode: Mode,
    /// Whether the profile's jobs may send IPv6 outside (`ipv6`, default true). It takes
    /// effect only on a node with `node.gateway6`: see [`Policy::ipv6_of`].
    pub ipv6: bool,
    /// External destinations the job may reach (`None`: all). Everything else external is
    /// dropped on the node and counted.
    pub destinations: Option<Vec<Destination>>,
    /// Jobs of this profile at once on one node (`None`: as many as the port pool holds).
    pub max_jobs_per_node: Option<u32>,
    /// Jobs of this profile at once on one node for one user (`None`: no own limit).
    pub max_jobs_per_user: Option<u32>,
    /// Index of the profile's port pool in [`Policy::pools`] (0: the default pool).
    pub pool: usize,
}

impl Profile {
    /// Concurrent jobs of this profile one node can hold: its limit, or its pool (pass
    /// `&policy.pool_of(profile).ports`).
    pub fn capacity(&self, pool: &PortPool) -> u32 {
        self.max_jobs_per_node
            .map_or(pool.blocks(), |m| m.min(pool.blocks()))
    }
}

/// A transport protocol of a destination rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// Every protocol; with `ports`, TCP and UDP to those ports.
    Any,
    Tcp,
    Udp,
    Icmp,
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Proto::Any => "any",
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
        })
    }
}

/// One allowed external destination: a network (of either family: the entry applies to
/// that family's packets only), a protocol, and ports.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Destination {
    pub net: IpNet,
    pub proto: Proto,
    /// Inclusive port ranges, sorted and disjoint; empty: every port (and protocols without
    /// ports). Only TCP and UDP have ports.
    pub ports: Vec<(u16, u16)>,
}

impl Destination {
    /// True when every packet this entry allows is also allowed by `other` (the entry is
    /// redundant).
    pub fn covered_by(&self, other: &Destination) -> bool {
        if !other.net.contains(&self.net) {
            return false;
        }
        if other.proto != Proto::Any && other.proto != self.proto {
            return false;
        }
        if other.ports.is_empty() {
            return true;
        }
        // `other` allows only TCP/UDP to its ports; `self` must be as narrow. Port lists are
        // merged (no two ranges touch), so one range of `other` must hold each of `self`'s.
        !self.ports.is_empty()
            && self
                .ports
                .iter()
                .all(|&(lo, hi)| other.ports.iter().any(|&(a, b)| a <= lo && hi <= b))
    }

    /// True when the entry lets a UDP packet to `addr`, port `port` through.
    pub fn allows_udp(&self, addr: impl Into<IpAddr>, port: u16) -> bool {
        self.net.contains(&addr.into())
            && matches!(self.proto, Proto::Any | Proto::Udp)
            && (self.ports.is_empty() || self.ports.iter().any(|&(a, b)| a <= port && port <= b))
    }

    /// The port list as written in the policy (`80,443,8000-8100`), or `all ports`.
    pub fn ports_text(&self) -> String {
        if self.ports.is_empty() {
            return "all ports".into();
        }
        self.ports
            .iter()
            .map(|&r| port_range_text(r))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// An inclusive port range as the policy writes it: `443` or `8000-8100`.
pub(crate) fn port_range_text((lo, hi): (u16, u16)) -> String {
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}-{hi}")
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let net = if self.net.prefix_len() == self.net.max_prefix_len() {
            self.net.addr().to_string()
        } else {
            self.net.to_string()
        };
        match (self.proto, self.ports.is_empty()) {
            (Proto::Any, true) => write!(f, "{net} (any protocol)"),
            (Proto::Any, false) => write!(f, "{net} tcp/udp port {}", self.ports_text()),
            (p, true) => write!(f, "{net} {p}"),
            (p, false) => write!(f, "{net} {p} port {}", self.ports_text()),
        }
    }
}

impl Policy {
    /// Parses and validates policy text. `origin` names the file in messages.
    pub fn from_toml(text: &str, origin: &str) -> Result<Policy, PolicyError> {
        validate::parse(text, origin)
    }

    /// Reads, parses and validates the policy file at `path`.
    ///
    /// The file must be a regular file owned by root and not writable by group or others
    /// (like sshd's StrictModes): a policy anyone else could edit grants nothing.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = validate::read_checked(path)?;
        validate::parse(&text, &path.display().to_string())
    }

    /// [`Policy::load`], then [`Policy::for_node`]: the policy as node `node` uses it (its
    /// own port ranges and gateways when the file has `[gateways]`).
    pub fn load_for_node(path: &Path, node: &str) -> Result<Policy, PolicyError> {
        Policy::load(path)?
            .for_node(node)
            .map_err(|source| PolicyError::Node {
                origin: path.display().to_string(),
                source,
            })
    }

    /// The profile with this name.
    pub fn profile(&self, name: &str) -> Option<&Profile> {
        self.profiles.iter().find(|p| p.name == name)
    }

    /// True when some profile grants jobs without asking; when false, a job that did not ask
    /// can skip everything (the prolog's fast path).
    pub fn has_auto(&self) -> bool {
        self.profiles.iter().any(|p| !p.auto.is_empty())
    }

    /// True when jobs of `profile` get IPv6 out: the node has `node.gateway6` and the
    /// profile did not say `ipv6 = false`. Otherwise their IPv6 is dropped on the node.
    pub fn ipv6_of(&self, profile: &Profile) -> bool {
        self.node.gateway6.is_some() && profile.ipv6
    }

    /// True when netns-mode jobs of `profile` get IPv6 on their veth pair: the profile has
    /// IPv6 ([`Policy::ipv6_of`]), uses netns mode, and the node has `netns_subnet6` (which
    /// validation requires then).
    pub fn netns_ipv6_of(&self, profile: &Profile) -> bool {
        profile.mode == Mode::Netns && self.ipv6_of(profile) && self.node.netns_subnet6.is_some()
    }

    /// True when some profile uses netns mode (the node then needs forwarding for job veths).
    pub fn uses_netns(&self) -> bool {
        self.profiles.iter().any(|p| p.mode == Mode::Netns)
    }

    /// Number of slots of a node: the blocks of all pools together (= its capacity in
    /// concurrent external jobs). Slots are `0..slots()`.
    pub fn slots(&self) -> u32 {
        self.pools.last().map_or(0, |p| p.slots().end)
    }

    /// The pool that slot `slot` belongs to.
    pub fn pool_of_slot(&self, slot: u32) -> Option<&Pool> {
        self.pools.iter().find(|p| p.slots().contains(&slot))
    }

    /// The port block of slot `slot` (its pool's block), `None` beyond [`Policy::slots`].
    pub fn slot_block(&self, slot: u32) -> Option<(u16, u16)> {
        self.pool_of_slot(slot).and_then(|p| p.block(slot))
    }

    /// The pool of profile `profile`.
    pub fn pool_of(&self, profile: &Profile) -> &Pool {
        &self.pools[profile.pool]
    }

    /// The pool of the profile named `name` (its slots: [`Pool::slots`]).
    pub fn pool_of_profile(&self, name: &str) -> Option<&Pool> {
        self.profile(name).map(|p| self.pool_of(p))
    }

    /// The pool whose port range holds `port` (pools never share a port).
    pub fn pool_of_port(&self, port: u16) -> Option<&Pool> {
        self.pools.iter().find(|p| p.ports.contains(port))
    }

    /// Seconds a released block starting at `port` waits before reuse: its pool's quarantine,
    /// or the default pool's for ports no pool has any more (a policy changed meanwhile).
    pub fn quarantine_secs(&self, port: u16) -> u64 {
        self.pool_of_port(port)
            .map_or(self.ports.quarantine_secs, |p| p.ports.quarantine_secs)
    }

    /// The profiles that use pool number `index`, by name, in file order.
    pub fn profiles_of_pool(&self, index: usize) -> Vec<&str> {
        self.profiles
            .iter()
            .filter(|p| p.pool == index)
            .map(|p| p.name.as_str())
            .collect()
    }

    /// The pools whose gateway is not `node.gateway`: each has its own routing table and
    /// `ip rule`s.
    pub fn routed_pools(&self) -> impl Iterator<Item = &Pool> {
        self.pools
            .iter()
            .filter(move |p| p.route_table != self.node.route_table)
    }
}

/// Expands `%n` (node name) in a path template.
pub fn expand(template: &str, node: &str) -> PathBuf {
    PathBuf::from(template.replace("%n", node))
}
