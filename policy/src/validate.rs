//! From [`RawPolicy`] to a checked [`Policy`]: every error names the file, the key, what is
//! wrong and how to fix it.

use crate::raw::{RawPolicy, RawPrincipals, RawProfile};
use crate::{LogConfig, Mode, NodeConfig, Policy, PortPool, Principals, Profile};
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Why a policy file could not be used. In every case nothing is granted.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy file {path}: {source}; check that the file exists and is readable by root")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("policy file {path} is unsafe: {why}; fix with: chown root:root {path} && chmod 0644 {path} (nothing is granted until then)")]
    Unsafe { path: PathBuf, why: String },
    #[error("policy file {origin} is not valid TOML or has an unknown or mistyped key: {message}")]
    Syntax { origin: String, message: String },
    #[error("policy file {origin} is invalid:\n{}", list(.errors))]
    Invalid {
        origin: String,
        errors: Vec<ValidationError>,
    },
}

fn list(errors: &[ValidationError]) -> String {
    errors
        .iter()
        .map(|e| format!("  - {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One invalid value: the key, what is wrong, and a hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// The key path, e.g. `ports.block_size` or `profile[2].name`.
    pub key: String,
    /// 1-based line of the key in the file, when it could be found.
    pub line: Option<usize>,
    pub problem: String,
    pub hint: String,
}

impl std::fmt::Display for ValidationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(l) => write!(
                f,
                "line {l}: {}: {} (hint: {})",
                self.key, self.problem, self.hint
            ),
            None => write!(f, "{}: {} (hint: {})", self.key, self.problem, self.hint),
        }
    }
}

/// Reads the file after checking that only root can change it.
pub(crate) fn read_checked(path: &Path) -> Result<String, PolicyError> {
    let meta = std::fs::metadata(path).map_err(|source| PolicyError::Read {
        path: path.to_owned(),
        source,
    })?;
    let unsafe_ = |why: String| PolicyError::Unsafe {
        path: path.to_owned(),
        why,
    };
    if !meta.is_file() {
        return Err(unsafe_("it is not a regular file".into()));
    }
    if meta.uid() != 0 {
        return Err(unsafe_(format!(
            "it is owned by uid {}, not root",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(unsafe_(format!(
            "its mode {:04o} lets group or others write it",
            meta.mode() & 0o7777
        )));
    }
    std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
        path: path.to_owned(),
        source,
    })
}

pub(crate) fn parse(text: &str, origin: &str) -> Result<Policy, PolicyError> {
    let raw: RawPolicy = toml::from_str(text).map_err(|e| PolicyError::Syntax {
        origin: origin.to_owned(),
        message: e.to_string().trim_end().replace('\n', "\n    "),
    })?;
    let mut v = Validator {
        text,
        errors: Vec::new(),
    };
    let policy = v.policy(raw);
    if v.errors.is_empty() {
        Ok(policy.expect("a policy is built whenever no error was recorded"))
    } else {
        Err(PolicyError::Invalid {
            origin: origin.to_owned(),
            errors: v.errors,
        })
    }
}

struct Validator<'a> {
    text: &'a str,
    errors: Vec<ValidationError>,
}

const DEFAULT_TABLE: u32 = 7700;
const DEFAULT_FWMARK: u32 = 0x0001_0000;
const SLOT_MASK: u32 = 0xffff;

impl Validator<'_> {
    fn err(&mut self, key: &str, needle: Option<&str>, problem: String, hint: &str) {
        let line = needle.and_then(|n| self.line_of(n));
        self.errors.push(ValidationError {
            key: key.to_owned(),
            line,
            problem,
            hint: hint.to_owned(),
        });
    }

    /// Best-effort line lookup: the first line that contains `needle` outside a comment.
    fn line_of(&self, needle: &str) -> Option<usize> {
        self.text
            .lines()
            .position(|l| {
                l.split('#')
                    .next()
                    .is_some_and(|code| code.contains(needle))
            })
            .map(|i| i + 1)
    }

    fn policy(&mut self, raw: RawPolicy) -> Option<Policy> {
        if raw.version != 1 {
            self.err(
                "version",
                Some("version"),
                format!("version {} is not supported", raw.version),
                "this extnet reads version = 1",
            );
        }
        let node = self.node(raw.node);
        let ports = self.ports(raw.ports);
        let log = LogConfig {
            lease_log: raw
                .log
                .lease_log
                .unwrap_or_else(|| "/var/log/extnet/lease.log".into()),
            file: raw
                .log
                .file
                .unwrap_or_else(|| "/var/log/extnet/extnet.log".into()),
        };
        let default_mode = node.as_ref().map(|n| n.mode).unwrap_or(Mode::Cgroup);
        let mut profiles = Vec::new();
        for (i, p) in raw.profiles.into_iter().enumerate() {
            if let Some(p) = self.profile(i, p, default_mode) {
                profiles.push(p);
            }
        }
        for (i, p) in profiles.iter().enumerate() {
            if profiles[..i].iter().any(|q| q.name == p.name) {
                self.err(
                    &format!("profile[{}].name", i + 1),
                    Some(&format!("\"{}\"", p.name)),
                    format!("profile name {:?} is used twice", p.name),
                    "give every [[profile]] its own name",
                );
            }
        }
        if let (Some(n), Some(p)) = (&node, &ports) {
            let slots = p.blocks();
            if slots > SLOT_MASK + 1 {
                self.err(
                    "ports.block_size",
                    Some("block_size"),
                    format!("the pool holds {slots} blocks, more than the 65536 a packet mark can carry"),
                    "use a larger block_size or a smaller range",
                );
            }
            let netns_slots = 1u64 << (30u8.saturating_sub(n.netns_subnet.prefix_len()));
            if profiles.iter().any(|p| p.mode == Mode::Netns) && netns_slots < u64::from(slots) {
                self.err(
                    "node.netns_subnet",
                    Some("netns_subnet"),
                    format!(
                        "{} holds {netns_slots} /30 links but the port pool has {slots} blocks",
                        n.netns_subnet
                    ),
                    "use a larger netns_subnet (a /16 holds 16384 jobs)",
                );
            }
        }
        if !self.errors.is_empty() {
            return None;
        }
        Some(Policy {
            node: node?,
            ports: ports?,
            log,
            profiles,
        })
    }

    fn node(&mut self, raw: crate::raw::RawNode) -> Option<NodeConfig> {
        let start = self.errors.len();
        if raw.interface.is_empty() || raw.interface.len() > 15 || raw.interface.contains('/') {
            self.err(
                "node.interface",
                Some("interface"),
                format!("{:?} is not a network interface name", raw.interface),
                "name the node's cluster interface, as `ip link` shows it (e.g. \"ib0\")",
            );
        }
        let gateway = raw.gateway.parse::<Ipv4Addr>().map_err(|_| {
            self.err(
                "node.gateway",
                Some("gateway"),
                format!("{:?} is not an IPv4 address", raw.gateway),
                "give the gateway's virtual (VRRP) address, e.g. \"10.20.3.227\"",
            )
        });
        let mut internal = Vec::new();
        for s in &raw.internal {
            match s.parse::<Ipv4Net>() {
                Ok(n) if n != n.trunc() => self.err(
                    "node.internal",
                    Some(s),
                    format!("{s} has host bits set"),
                    &format!("write the network address, {}", n.trunc()),
                ),
                Ok(n) => internal.push(n),
                Err(_) => self.err(
                    "node.internal",
                    Some(s),
                    format!("{s:?} is not an IPv4 network"),
                    "write networks as address/prefix, e.g. \"10.20.0.0/16\"",
                ),
            }
        }
        for (i, a) in internal.iter().enumerate() {
            for b in &internal[..i] {
                if a.contains(b) || b.contains(a) {
                    self.err(
                        "node.internal",
                        Some(&a.to_string()),
                        format!("{a} and {b} overlap"),
                        "list each internal network once; keep the larger one",
                    );
                }
            }
        }
        if let Ok(gw) = gateway {
            if !internal.iter().any(|n| n.contains(&gw)) {
                self.err(
                    "node.internal",
                    Some("internal"),
                    format!("the gateway {gw} is not inside any internal network"),
                    "list the cluster network that holds the gateway's address in `internal`",
                );
            }
        }
        let route_table = raw.route_table.unwrap_or(DEFAULT_TABLE);
        if route_table == 0 || (253..=255).contains(&route_table) {
            self.err(
                "node.route_table",
                Some("route_table"),
                format!("table {route_table} is reserved (0, 253 default, 254 main, 255 local)"),
                "pick a free table number, e.g. 7700",
            );
        }
        let fwmark = raw.fwmark.unwrap_or(DEFAULT_FWMARK);
        if fwmark == 0 || fwmark & SLOT_MASK != 0 {
            self.err(
                "node.fwmark",
                Some("fwmark"),
                format!("0x{fwmark:x} overlaps the low 16 bits, which carry the job's slot"),
                "use a flag above bit 15, e.g. 0x10000",
            );
        }
        let netns_subnet =
            match raw
                .netns_subnet
                .as_deref()
                .unwrap_or("100.64.0.0/16")
                .parse::<Ipv4Net>()
            {
                Ok(n) if n.prefix_len() <= 30 => Some(n.trunc()),
                _ => {
                    self.err(
                    "node.netns_subnet",
                    Some("netns_subnet"),
                    format!("{:?} is not an IPv4 network of /30 or larger", raw.netns_subnet),
                    "use a node-private range that no real network uses, e.g. \"100.64.0.0/16\"",
                );
                    None
                }
            };
        if let Some(ns) = netns_subnet {
            for n in &internal {
                if n.contains(&ns.network()) || ns.contains(&n.network()) {
                    self.err(
                        "node.netns_subnet",
                        Some("netns_subnet"),
                        format!("{ns} overlaps the internal network {n}"),
                        "pick a range that no real network uses",
                    );
                }
            }
        }
        if self.errors.len() > start {
            return None;
        }
        Some(NodeConfig {
            mode: raw.mode.unwrap_or(Mode::Cgroup),
            interface: raw.interface,
            gateway: gateway.ok()?,
            internal,
            route_table,
            rule_priority: raw.rule_priority.unwrap_or(route_table),
            fwmark,
            state_dir: raw.state_dir.unwrap_or_else(|| "/run/extnet".into()),
            cgroup_root: raw.cgroup_root,
            netns_subnet: netns_subnet?,
            netns_dir: PathBuf::from(raw.netns_dir.unwrap_or_else(|| "/run/netns".into())),
        })
    }

    fn ports(&mut self, raw: crate::raw::RawPorts) -> Option<PortPool> {
        let range = raw.range.unwrap_or_else(|| "20000-59999".into());
        let parsed = range.split_once('-').and_then(|(a, b)| {
            Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?))
        });
        let block_size = raw.block_size.unwrap_or(256);
        let start = self.errors.len();
        let (first, last) = match parsed {
            Some((a, b)) if a >= 1024 && a <= b => (a, b),
            _ => {
                self.err(
                    "ports.range",
                    Some("range"),
                    format!("{range:?} is not a port range FIRST-LAST with 1024 <= FIRST <= LAST <= 65535"),
                    "e.g. \"20000-59999\"; keep it clear of the node's ephemeral ports (net.ipv4.ip_local_port_range)",
                );
                (0, 0)
            }
        };
        if !(16..=32768).contains(&block_size) {
            self.err(
                "ports.block_size",
                Some("block_size"),
                format!("{block_size} ports per job is outside 16..=32768"),
                "256 suits most jobs; a job holds one port per open connection",
            );
        } else if self.errors.len() == start && u32::from(last) - u32::from(first) + 1 < block_size
        {
            self.err(
                "ports.block_size",
                Some("block_size"),
                format!("the range {range} is smaller than one block of {block_size} ports"),
                "widen ports.range or lower ports.block_size",
            );
        }
        let quarantine_secs = raw.quarantine_secs.unwrap_or(120);
        if quarantine_secs > 86_400 {
            self.err(
                "ports.quarantine_secs",
                Some("quarantine_secs"),
                format!("{quarantine_secs} s is more than a day"),
                "RFC 6888 recommends 120",
            );
        }
        if self.errors.len() > start {
            return None;
        }
        Some(PortPool {
            first,
            last,
            block_size: block_size as u16,
            quarantine_secs,
        })
    }

    fn principals(&mut self, key: &str, raw: RawPrincipals) -> Principals {
        for (what, list) in [
            ("users", &raw.users),
            ("groups", &raw.groups),
            ("accounts", &raw.accounts),
        ] {
            for n in list {
                if n.is_empty() || n.chars().any(|c| c.is_whitespace() || c == ',') {
                    self.err(
                        &format!("{key}.{what}"),
                        Some(what),
                        format!("{n:?} is not a valid name"),
                        "write one name per string, without spaces or commas",
                    );
                }
                if n == "*" && what != "users" {
                    self.err(
                        &format!("{key}.{what}"),
                        Some(what),
                        "\"*\" is only allowed in users".into(),
                        "write users = [\"*\"] to mean everyone",
                    );
                }
            }
        }
        Principals {
            users: raw.users,
            groups: raw.groups,
            accounts: raw.accounts,
        }
    }

    fn profile(&mut self, i: usize, raw: RawProfile, default_mode: Mode) -> Option<Profile> {
        let key = format!("profile[{}]", i + 1);
        let start = self.errors.len();
        let name_ok = !raw.name.is_empty()
            && raw.name.len() <= 32
            && raw
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok {
            self.err(
                &format!("{key}.name"),
                Some("name"),
                format!("{:?} is not a valid profile name", raw.name),
                "use 1 to 32 letters, digits, '-' or '_' (users type it after --external-net=)",
            );
        }
        let allow = self.principals(
            &key,
            RawPrincipals {
                users: raw.users,
                groups: raw.groups,
                accounts: raw.accounts,
            },
        );
        let deny = self.principals(&format!("{key}.deny"), raw.deny);
        let auto = self.principals(&format!("{key}.auto"), raw.auto);
        if allow.is_empty() {
            self.err(
                &key,
                Some(&format!("\"{}\"", raw.name)),
                format!("profile {:?} names no users, groups or accounts, so it can never match", raw.name),
                "add users = [...], groups = [...] or accounts = [...] (users = [\"*\"] means everyone)",
            );
        }
        let everyone = allow.users.iter().any(|u| u == "*");
        for u in &auto.users {
            if !everyone && u != "*" && !allow.users.contains(u) {
                self.err(
                    &format!("{key}.auto.users"),
                    Some("auto"),
                    format!("{u:?} gets the profile without asking but is not in its users"),
                    "list auto principals in the profile's users/groups/accounts too",
                );
            }
        }
        for g in &auto.groups {
            if !everyone && !allow.groups.contains(g) {
                self.err(
                    &format!("{key}.auto.groups"),
                    Some("auto"),
                    format!("group {g:?} gets the profile without asking but is not in its groups"),
                    "list auto principals in the profile's users/groups/accounts too",
                );
            }
        }
        for a in &auto.accounts {
            if !everyone && !allow.accounts.contains(a) {
                self.err(
                    &format!("{key}.auto.accounts"),
                    Some("auto"),
                    format!(
                        "account {a:?} gets the profile without asking but is not in its accounts"
                    ),
                    "list auto principals in the profile's users/groups/accounts too",
                );
            }
        }
        if auto.users.iter().any(|u| u == "*") {
            self.err(
                &format!("{key}.auto.users"),
                Some("auto"),
                "auto.users = [\"*\"] would let every job of the cluster out without asking".into(),
                "name the experiment's users or groups that need transparent access",
            );
        }
        if self.errors.len() > start {
            return None;
        }
        Some(Profile {
            name: raw.name,
            allow,
            deny,
            auto,
            partitions: raw.partitions,
            qos: raw.qos,
            mode: raw.mode.unwrap_or(default_mode),
        })
    }
}
