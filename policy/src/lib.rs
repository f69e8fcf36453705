//! The extnet policy file (`/etc/slurm/extnet.toml`).
//!
//! Parse → validate → decide:
//! - [`raw`] is the file as written (serde, `deny_unknown_fields`);
//! - [`Policy::from_toml`] checks it into a [`Policy`] whose invariants hold (non-overlapping
//!   networks, a port pool that holds at least one block, profiles that can match, ...);
//! - [`decide`] turns a policy and a job's identity into a [`Decision`], a pure function that is
//!   unit-tested without root; [`possible`] is the weaker check made at submit time;
//! - [`report`] puts a policy and a decision into words for admins.
//!
//! The reference for every key is `docs/policy.md`.

pub mod decide;
pub mod raw;
pub mod report;
mod validate;

pub use decide::{decide, possible, Decision, JobIdentity, Request, Submitter};
pub use validate::{PolicyError, ValidationError};

use ipnet::Ipv4Net;
use std::fmt::Write as _;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// The default location of the policy file.
pub const DEFAULT_PATH: &str = "/etc/slurm/extnet.toml";

/// How a granted job's traffic is singled out on the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
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
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub node: NodeConfig,
    pub ports: PortPool,
    pub log: LogConfig,
    pub profiles: Vec<Profile>,
}

/// Node-wide settings: how job traffic is routed to the gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeConfig {
    /// Mode of profiles that do not name one.
    pub mode: Mode,
    /// The node's interface towards the gateway (its cluster network).
    pub interface: String,
    /// The gateway's virtual address (VRRP), next hop of the external routing table.
    pub gateway: Ipv4Addr,
    /// Destinations that always stay on the node's normal path (storage, Slurm, MPI fabric).
    pub internal: Vec<Ipv4Net>,
    /// Routing table whose default route is the gateway.
    pub route_table: u32,
    /// Priority of the one `ip rule` that sends marked packets to `route_table`.
    pub rule_priority: u32,
    /// The flag bit(s) of the packet mark that select `route_table`; the job's slot is in the
    /// low 16 bits.
    pub fwmark: u32,
    /// Directory for the lease table, job state files and the base marker (`%n` = node name).
    pub state_dir: String,
    /// cgroup v2 directory under which extnet keeps its slot cgroups (`%n` = node name);
    /// `None`: detect (`/sys/fs/cgroup/unified/extnet` on hybrid hosts, `/sys/fs/cgroup/extnet`).
    pub cgroup_root: Option<String>,
    /// Addresses for netns-mode veth pairs: one /30 per slot.
    pub netns_subnet: Ipv4Net,
    /// Where named network namespaces live (as `ip netns` does).
    pub netns_dir: PathBuf,
}

/// The node's pool of NAT source ports, cut into equal blocks (one block per active job).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortPool {
    pub first: u16,
    pub last: u16,
    pub block_size: u16,
    /// Seconds a released block waits before it is leased again (RFC 6888: 120).
    pub quarantine_secs: u64,
}

impl PortPool {
    /// Number of whole blocks in the pool (= slots on a node).
    pub fn blocks(&self) -> u32 {
        (u32::from(self.last) - u32::from(self.first) + 1) / u32::from(self.block_size)
    }

    /// The inclusive port range of block `slot`.
    pub fn block(&self, slot: u32) -> (u16, u16) {
        let lo = u32::from(self.first) + slot * u32::from(self.block_size);
        (lo as u16, (lo + u32::from(self.block_size) - 1) as u16)
    }
}

/// Where records go (`%n` = node name).
#[derive(Debug, Clone, PartialEq)]
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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
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
#[derive(Debug, Clone, PartialEq)]
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
    /// External destinations the job may reach (`None`: all). Everything else external is
    /// dropped on the node and counted.
    pub destinations: Option<Vec<Destination>>,
    /// Jobs of this profile at once on one node (`None`: as many as the port pool holds).
    pub max_jobs_per_node: Option<u32>,
    /// Jobs of this profile at once on one node for one user (`None`: no own limit).
    pub max_jobs_per_user: Option<u32>,
}

impl Profile {
    /// Concurrent jobs of this profile one node can hold: its limit, or the pool.
    pub fn capacity(&self, pool: &PortPool) -> u32 {
        self.max_jobs_per_node
            .map_or(pool.blocks(), |m| m.min(pool.blocks()))
    }
}

/// A transport protocol of a destination rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
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

/// One allowed external destination: a network, a protocol, and ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub net: Ipv4Net,
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

    /// The port list as written in the policy (`80,443,8000-8100`), or `all ports`.
    pub fn ports_text(&self) -> String {
        if self.ports.is_empty() {
            return "all ports".into();
        }
        let mut s = String::new();
        for (i, (lo, hi)) in self.ports.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            if lo == hi {
                let _ = write!(s, "{lo}");
            } else {
                let _ = write!(s, "{lo}-{hi}");
            }
        }
        s
    }
}

impl std::fmt::Display for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let net = if self.net.prefix_len() == 32 {
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

    /// The profile with this name.
    pub fn profile(&self, name: &str) -> Option<&Profile> {
        self.profiles.iter().find(|p| p.name == name)
    }

    /// True when some profile grants jobs without asking; when false, a job that did not ask
    /// can skip everything (the prolog's fast path).
    pub fn has_auto(&self) -> bool {
        self.profiles.iter().any(|p| !p.auto.is_empty())
    }

    /// True when some profile uses netns mode (the node then needs forwarding for job veths).
    pub fn uses_netns(&self) -> bool {
        self.profiles.iter().any(|p| p.mode == Mode::Netns)
    }
}

/// Expands `%n` (node name) in a path template.
pub fn expand(template: &str, node: &str) -> PathBuf {
    PathBuf::from(template.replace("%n", node))
}
