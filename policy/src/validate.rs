//! From [`RawPolicy`] to a checked [`Policy`]: every error names the file, the line and column,
//! the key, what is wrong and how to fix it.

use crate::raw::{RawDestination, RawPolicy, RawPortList, RawPrincipals, RawProfile, S};
use crate::{
    Destination, LogConfig, Mode, NodeConfig, Policy, Pool, PortPool, Principals, Profile, Proto,
};
use ipnet::{IpNet, Ipv4Net};
use std::net::{IpAddr, Ipv4Addr};
use std::ops::Range;
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
    /// Not TOML, an unknown key, a value of the wrong type, a missing key.
    #[error("policy file {origin} is invalid:\n  - {error}")]
    Syntax {
        origin: String,
        error: Box<ValidationError>,
    },
    #[error("policy file {origin} is invalid:\n{}", list(.errors))]
    Invalid {
        origin: String,
        errors: Vec<ValidationError>,
    },
}

impl PolicyError {
    /// Every problem found, in file order (empty for read and permission errors).
    pub fn errors(&self) -> &[ValidationError] {
        match self {
            PolicyError::Syntax { error, .. } => std::slice::from_ref(error.as_ref()),
            PolicyError::Invalid { errors, .. } => errors,
            _ => &[],
        }
    }
}

fn list(errors: &[ValidationError]) -> String {
    errors
        .iter()
        .map(|e| format!("  - {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// One invalid value: where, the key, what is wrong, and a hint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationError {
    /// The key path, e.g. `ports.block_size` or `profile[2].name`.
    pub key: String,
    /// 1-based line of the value (or of the table that lacks it) in the file.
    pub line: Option<usize>,
    /// 1-based column (in characters) on that line.
    pub column: Option<usize>,
    pub problem: String,
    pub hint: String,
}

impl std::fmt::Display for ValidationError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "line {l}, column {c}: ")?,
            (Some(l), None) => write!(f, "line {l}: ")?,
            _ => {}
        }
        write!(f, "{}: {} (hint: {})", self.key, self.problem, self.hint)
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
        error: Box::new(syntax_error(text, &e)),
    })?;
    let mut v = Validator {
        text,
        errors: Vec::new(),
    };
    let policy = v.policy(raw);
    if v.errors.is_empty() {
        Ok(policy.expect("a policy is built whenever no error was recorded"))
    } else {
        v.errors
            .sort_by_key(|e| (e.line.unwrap_or(usize::MAX), e.column));
        Err(PolicyError::Invalid {
            origin: origin.to_owned(),
            errors: v.errors,
        })
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// The table a byte offset is in, as a key path (`node`, `profile[2]`, `profile[2].deny`,
/// `profile[1].destinations[3]`), from the table headers above it.
fn table_at(text: &str, offset: usize) -> String {
    let mut current = String::new();
    let mut profiles = 0;
    let mut dests = 0;
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        if pos > offset {
            break;
        }
        pos += line.len();
        let code = line.split('#').next().unwrap_or("").trim();
        let (array, name) =
            if let Some(n) = code.strip_prefix("[[").and_then(|c| c.strip_suffix("]]")) {
                (true, n)
            } else if let Some(n) = code.strip_prefix('[').and_then(|c| c.strip_suffix(']')) {
                (false, n)
            } else {
                continue;
            };
        let name: String = name
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '"')
            .collect();
        if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        {
            continue; // a line of a multi-line array, not a header
        }
        current = match (array, name.as_str()) {
            (true, "profile") => {
                profiles += 1;
                dests = 0;
                format!("profile[{profiles}]")
            }
            (true, "profile.destinations") => {
                dests += 1;
                format!("profile[{profiles}].destinations[{dests}]")
            }
            (_, n) => match n.strip_prefix("profile.") {
                Some(rest) if profiles > 0 => format!("profile[{profiles}].{rest}"),
                _ => n.to_owned(),
            },
        };
    }
    current
}

fn join_key(table: &str, key: &str) -> String {
    match (table.is_empty(), key.is_empty()) {
        (true, _) => key.to_owned(),
        (_, true) => table.to_owned(),
        _ => format!("{table}.{key}"),
    }
}

fn is_bare_key(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The key whose value starts at `offset`: the bare key before the last `=` on its line
/// (`outer.inner` for a key inside an inline table).
fn key_before(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = &text[line_start..offset];
    let keys: Vec<String> = line
        .match_indices('=')
        .filter_map(|(i, _)| {
            let before = line[..i].trim_end();
            let k: String = before
                .chars()
                .rev()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '-')
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            (!k.is_empty()).then_some(k)
        })
        .collect();
    match keys.as_slice() {
        [] => String::new(),
        [k] => k.clone(),
        [first, .., last] => format!("{first}.{last}"),
    }
}

/// A TOML or serde error as a [`ValidationError`] with place, key and hint.
fn syntax_error(text: &str, e: &toml::de::Error) -> ValidationError {
    let message = e.message().trim().to_owned();
    let span = e.span();
    let (line, column) = span
        .as_ref()
        .map(|s| position(text, s.start))
        .map_or((None, None), |(l, c)| (Some(l), Some(c)));
    let at = span.as_ref().map_or(0, |s| s.start);
    let table = table_at(text, at);
    let quoted = message.split('`').nth(1).unwrap_or("").to_owned();
    let here = span
        .as_ref()
        .and_then(|s| text.get(s.clone()))
        .unwrap_or("")
        .trim();
    let (key, hint) = if message.starts_with("unknown field") {
        let k = if is_bare_key(here) { here } else { &quoted };
        // a key of an inline table: `outer = [{ ..., k = ... }]`
        let outer = key_before(text, at);
        let k = match outer.split_once('.') {
            Some((o, _)) => format!("{o}.{k}"),
            None if !outer.is_empty() && outer != k => format!("{outer}.{k}"),
            None => k.to_owned(),
        };
        (
            join_key(&table, &k),
            "check the spelling; every key is listed in extnet.toml(5) and docs/policy.md"
                .to_owned(),
        )
    } else if message.starts_with("missing field") {
        (
            join_key(&table, &quoted),
            format!("add `{quoted} = ...` to this table; see extnet.toml(5)"),
        )
    } else {
        let k = join_key(&table, &key_before(text, at));
        let hint = if message.starts_with("unknown variant") {
            "use one of the values listed above".to_owned()
        } else if k.ends_with("ports") && k.contains("destinations") {
            "write ports as one number (443) or a string of ports and ranges (\"80,443,8000-8100\")"
                .to_owned()
        } else if k.ends_with("ports") {
            "write a pool as a table: [ports] or [profile.ports] with range = \"FIRST-LAST\" and block_size = N (or inline: ports = { range = \"30000-31023\", block_size = 1024 })"
                .to_owned()
        } else if message.starts_with("invalid type") || message.contains("untagged") {
            "see the key's type in extnet.toml(5): names, networks and ranges are quoted strings, lists are [\"a\", \"b\"], numbers are bare".to_owned()
        } else if message.contains("duplicate key") {
            "set each key once per table".to_owned()
        } else {
            "fix the TOML syntax at this place (https://toml.io)".to_owned()
        };
        (k, hint)
    };
    ValidationError {
        key: if key.is_empty() { "(file)".into() } else { key },
        line,
        column,
        problem: message.replace('\n', " "),
        hint,
    }
}

struct Validator<'a> {
    text: &'a str,
    errors: Vec<ValidationError>,
}

const DEFAULT_TABLE: u32 = 7700;
/// `[ports] range` when the file gives none.
const DEFAULT_RANGE: &str = "20000-59999";
const DEFAULT_FWMARK: u32 = 0x0001_0000;
const SLOT_MASK: u32 = 0xffff;

type Span = Option<Range<usize>>;

/// One pool's geometry as checked, and where its keys are written.
struct CheckedPorts {
    /// `ports` or `profile[N].ports`.
    key: String,
    /// `None` when invalid (errors recorded).
    ports: Option<PortPool>,
    range_span: Span,
    block_span: Span,
}

/// A pool before its slots and routing table are placed.
struct PoolDraft {
    /// The profile (0-based index and name) that owns it; `None` for the default pool.
    profile: Option<(usize, String)>,
    checked: CheckedPorts,
    /// `None` when invalid (errors recorded).
    gateway: Option<Ipv4Addr>,
    gateway_span: Span,
}

/// What checking a profile needs from the rest of the file.
struct ProfileContext<'a> {
    default_mode: Mode,
    /// The default pool (`None` when `[ports]` is invalid).
    default_pool: Option<PortPool>,
    /// `node.gateway` (`None` when `[node]` is invalid).
    node_gateway: Option<Ipv4Addr>,
    internal: &'a [Ipv4Net],
}

fn span<T>(s: &S<T>) -> Span {
    Some(s.span())
}

impl Validator<'_> {
    /// Records an error at the value read from `at` (a byte range of the file).
    fn err_at(&mut self, key: &str, at: Span, problem: String, hint: &str) {
        let pos = at.map(|r| position(self.text, r.start));
        self.errors.push(ValidationError {
            key: key.to_owned(),
            line: pos.map(|p| p.0),
            column: pos.map(|p| p.1),
            problem,
            hint: hint.to_owned(),
        });
    }

    /// Byte offset of the first occurrence of `needle` outside a comment.
    fn offset_of(&self, needle: &str) -> Option<usize> {
        let mut pos = 0;
        for line in self.text.split_inclusive('\n') {
            let code = line.split('#').next().unwrap_or("");
            if let Some(i) = code.find(needle) {
                return Some(pos + i);
            }
            pos += line.len();
        }
        None
    }

    fn policy(&mut self, raw: RawPolicy) -> Option<Policy> {
        if *raw.version.get_ref() != 1 {
            self.err_at(
                "version",
                span(&raw.version),
                format!("version {} is not supported", raw.version.get_ref()),
                "this extnet reads version = 1",
            );
        }
        let (node, subnet_span) = self.node(raw.node);
        let default_pool = self.port_pool("ports", raw.ports, Some(DEFAULT_RANGE), None);
        let ports = default_pool.ports;
        let log = LogConfig {
            lease_log: raw
                .log
                .lease_log
                .unwrap_or_else(|| "/var/log/extnet/lease.log".into()),
            file: raw
                .log
                .file
                .unwrap_or_else(|| "/var/log/extnet/extnet.log".into()),
            accounting: raw
                .log
                .accounting
                .unwrap_or_else(|| "/var/log/extnet/accounting.log".into()),
            interim_secs: raw.log.interim_secs.unwrap_or(3600),
        };
        let default_mode = node.as_ref().map(|n| n.mode).unwrap_or(Mode::Cgroup);
        let internal = node
            .as_ref()
            .map(|n| n.internal.clone())
            .unwrap_or_default();
        let ctx = ProfileContext {
            default_mode,
            default_pool: ports,
            node_gateway: node.as_ref().map(|n| n.gateway),
            internal: &internal,
        };
        let mut profiles = Vec::new();
        // the default pool first, then the profiles' own pools in file order
        let mut drafts: Vec<PoolDraft> = vec![PoolDraft {
            profile: None,
            checked: default_pool,
            gateway: node.as_ref().map(|n| n.gateway),
            gateway_span: None,
        }];
        let mut names: Vec<(String, Span)> = Vec::new();
        for (i, p) in raw.profiles.into_iter().enumerate() {
            let name = (p.get_ref().name.get_ref().clone(), span(&p.get_ref().name));
            if let Some((_, first)) = names.iter().find(|(n, _)| *n == name.0) {
                let first_line = first
                    .as_ref()
                    .map(|r| position(self.text, r.start).0)
                    .map_or(String::new(), |l| format!(" (first on line {l})"));
                self.err_at(
                    &format!("profile[{}].name", i + 1),
                    name.1.clone(),
                    format!("profile name {:?} is used twice{first_line}", name.0),
                    "give every [[profile]] its own name",
                );
            }
            names.push(name);
            let (profile, own) = self.profile(i, p, &ctx);
            let pool = match own {
                Some(d) => {
                    drafts.push(d);
                    drafts.len() - 1
                }
                None => 0,
            };
            if let Some(mut p) = profile {
                p.pool = pool;
                profiles.push(p);
            }
        }
        let pools = self.pools(node.as_ref(), &drafts);
        if let (Some(n), Some(pools)) = (&node, &pools) {
            let slots = pools.last().map_or(0, |p| p.slots().end);
            let netns_slots = 1u64 << (30u8.saturating_sub(n.netns_subnet.prefix_len()));
            if profiles.iter().any(|p| p.mode == Mode::Netns) && netns_slots < u64::from(slots) {
                self.err_at(
                    "node.netns_subnet",
                    subnet_span.clone(),
                    format!(
                        "{} holds {netns_slots} /30 links but the port pools have {slots} slots (the blocks of all pools together)",
                        n.netns_subnet
                    ),
                    "use a larger netns_subnet (a /16 holds 16384 jobs), or fewer blocks (a larger block_size or a smaller range)",
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
            pools: pools?,
        })
    }

    /// Places the pools' slots one after the other (default pool first), checks that no two
    /// pools share a port, that all slots fit the packet mark, and gives each pool whose
    /// gateway is not `node.gateway` a routing table of its own. `None` when a pool is invalid
    /// (its errors are recorded already) or one of these checks failed.
    fn pools(&mut self, node: Option<&NodeConfig>, drafts: &[PoolDraft]) -> Option<Vec<Pool>> {
        let start = self.errors.len();
        for (j, b) in drafts.iter().enumerate() {
            let Some(bp) = b.checked.ports else { continue };
            for a in &drafts[..j] {
                let Some(ap) = a.checked.ports else { continue };
                if ap.first <= bp.last && bp.first <= ap.last {
                    let (where_a, hint) = match (&a.profile, &a.checked.range_span) {
                        (None, None) => (
                            format!("the default pool's ports {}-{} ([ports] range is {DEFAULT_RANGE} when not given)", ap.first, ap.last),
                            "pools must not share a port: write a [ports] range that leaves this one out, or move this range outside it".to_owned(),
                        ),
                        (None, Some(at)) => (
                            format!("the default pool's ports {}-{} ([ports] range, line {})", ap.first, ap.last, position(self.text, at.start).0),
                            "pools must not share a port: narrow [ports] range, or move this range outside it".to_owned(),
                        ),
                        (Some((_, name)), at) => (
                            format!("the ports {}-{} of profile {name:?}'s own pool{}", ap.first, ap.last, at.as_ref().map_or(String::new(), |r| format!(" (line {})", position(self.text, r.start).0))),
                            "pools must not share a port: give each profile a range of its own".to_owned(),
                        ),
                    };
                    self.err_at(
                        &format!("{}.range", b.checked.key),
                        b.checked.range_span.clone(),
                        format!("ports {}-{} overlap {where_a}", bp.first, bp.last),
                        &hint,
                    );
                }
            }
        }
        let node = node?;
        let mut pools = Vec::new();
        let mut next_slot: u32 = 0;
        for (index, d) in drafts.iter().enumerate() {
            let (Some(ports), Some(gateway)) = (d.checked.ports, d.gateway) else {
                continue;
            };
            let first_slot = next_slot;
            next_slot += ports.blocks();
            if next_slot > SLOT_MASK + 1 {
                // unreachable while pools share no port (64512 ports / 16 = 4032 blocks at
                // most), kept as the invariant the packet mark needs
                self.err_at(
                    &format!("{}.block_size", d.checked.key),
                    d.checked.block_span.clone().or(d.checked.range_span.clone()),
                    format!("the pools have {next_slot} slots up to this one, more than the 65536 a packet mark can carry"),
                    "use a larger block_size or a smaller range",
                );
            }
            let route_table = if gateway == node.gateway {
                node.route_table
            } else {
                let table = node.route_table.checked_add(index as u32);
                let key = match &d.profile {
                    Some((i, _)) => format!("profile[{}].gateway", i + 1),
                    None => "node.gateway".into(),
                };
                match table {
                    Some(t) if t != 0 && !(253..=255).contains(&t) => {
                        if node.rule_priority == 0 {
                            self.err_at(
                                &key,
                                d.gateway_span.clone(),
                                "the pool's `ip rule`s go just before the main one, but node.rule_priority is 0".into(),
                                "set node.rule_priority to 1 or more (default: node.route_table)",
                            );
                        }
                        t
                    }
                    _ => {
                        self.err_at(
                            &key,
                            d.gateway_span.clone(),
                            format!(
                                "this pool's routing table would be node.route_table + {index} = {}, which is reserved (0, 253 default, 254 main, 255 local) or out of range",
                                u64::from(node.route_table) + index as u64
                            ),
                            "pick a node.route_table whose next numbers are free, e.g. 7700 (pool N gets route_table + N)",
                        );
                        0
                    }
                }
            };
            pools.push(Pool {
                profile: d.profile.as_ref().map(|(_, n)| n.clone()),
                ports,
                first_slot,
                gateway,
                route_table,
            });
        }
        (self.errors.len() == start && pools.len() == drafts.len()).then_some(pools)
    }

    /// Checks one IPv4 network written as `a.b.c.d/len` (or a bare address, = /32).
    fn ipv4_net(&mut self, key: &str, s: &S<String>, what: &str, example: &str) -> Option<Ipv4Net> {
        let text = s.get_ref().trim();
        let parsed: Option<IpNet> = text
            .parse::<IpNet>()
            .ok()
            .or_else(|| text.parse::<IpAddr>().ok().map(IpNet::from));
        match parsed {
            Some(IpNet::V4(n)) if n != n.trunc() => {
                self.err_at(
                    key,
                    span(s),
                    format!("{text} has host bits set"),
                    &format!("write the network address, {}", n.trunc()),
                );
                None
            }
            Some(IpNet::V4(n)) => Some(n),
            Some(IpNet::V6(_)) => {
                self.err_at(
                    key,
                    span(s),
                    format!("{text} is an IPv6 network; extnet's path through the gateway is IPv4 only for now, so {what} cannot be IPv6"),
                    "remove it; IPv6 traffic of jobs never goes through the gateway",
                );
                None
            }
            None => {
                self.err_at(
                    key,
                    span(s),
                    format!("{text:?} is not an IPv4 network"),
                    &format!("write networks as address/prefix, e.g. {example:?}"),
                );
                None
            }
        }
    }

    /// The node settings, and where `netns_subnet` is written (or the `[node]` header when the
    /// default is used), for the cross-checks with the pool.
    fn node(&mut self, raw: crate::raw::RawNode) -> (Option<NodeConfig>, Span) {
        let start = self.errors.len();
        let iface = raw.interface.get_ref();
        if iface.is_empty() || iface.len() > 15 || iface.contains('/') {
            self.err_at(
                "node.interface",
                span(&raw.interface),
                format!("{iface:?} is not a network interface name"),
                "name the node's cluster interface, as `ip link` shows it (e.g. \"ib0\")",
            );
        }
        let gateway = raw.gateway.get_ref().parse::<Ipv4Addr>().map_err(|_| {
            self.err_at(
                "node.gateway",
                span(&raw.gateway),
                format!("{:?} is not an IPv4 address", raw.gateway.get_ref()),
                "give the gateway's virtual (VRRP) address, e.g. \"10.20.3.227\"",
            )
        });
        let mut internal: Vec<(Ipv4Net, Span)> = Vec::new();
        for s in &raw.internal {
            if let Some(n) =
                self.ipv4_net("node.internal", s, "an internal network", "10.20.0.0/16")
            {
                internal.push((n, span(s)));
            }
        }
        for (i, (a, at)) in internal.iter().enumerate() {
            for (b, _) in &internal[..i] {
                if a.contains(b) || b.contains(a) {
                    self.err_at(
                        "node.internal",
                        at.clone(),
                        format!("{a} and {b} overlap"),
                        "list each internal network once; keep the larger one",
                    );
                }
            }
        }
        let internal: Vec<Ipv4Net> = internal.into_iter().map(|(n, _)| n).collect();
        if let Ok(gw) = gateway {
            if !internal.iter().any(|n| n.contains(&gw)) {
                self.err_at(
                    "node.internal",
                    span(&raw.gateway),
                    format!("the gateway {gw} is not inside any internal network"),
                    "list the cluster network that holds the gateway's address in `internal`",
                );
            }
        }
        let route_table = raw
            .route_table
            .as_ref()
            .map_or(DEFAULT_TABLE, |t| *t.get_ref());
        if route_table == 0 || (253..=255).contains(&route_table) {
            self.err_at(
                "node.route_table",
                raw.route_table.as_ref().and_then(span),
                format!("table {route_table} is reserved (0, 253 default, 254 main, 255 local)"),
                "pick a free table number, e.g. 7700",
            );
        }
        let fwmark = raw.fwmark.as_ref().map_or(DEFAULT_FWMARK, |m| *m.get_ref());
        if fwmark == 0 || fwmark & SLOT_MASK != 0 {
            self.err_at(
                "node.fwmark",
                raw.fwmark.as_ref().and_then(span),
                format!("0x{fwmark:x} overlaps the low 16 bits, which carry the job's slot"),
                "use a flag above bit 15, e.g. 0x10000",
            );
        }
        let subnet_text = raw
            .netns_subnet
            .as_ref()
            .map_or("100.64.0.0/16", |s| s.get_ref().as_str());
        let subnet_span = raw
            .netns_subnet
            .as_ref()
            .and_then(span)
            .or_else(|| self.offset_of("[node]").map(|o| o..o));
        let netns_subnet = match subnet_text.parse::<Ipv4Net>() {
            Ok(n) if n.prefix_len() <= 30 => Some(n.trunc()),
            _ => {
                self.err_at(
                    "node.netns_subnet",
                    subnet_span.clone(),
                    format!("{subnet_text:?} is not an IPv4 network of /30 or larger"),
                    "use a node-private range that no real network uses, e.g. \"100.64.0.0/16\"",
                );
                None
            }
        };
        if let Some(ns) = netns_subnet {
            for n in &internal {
                if n.contains(&ns.network()) || ns.contains(&n.network()) {
                    self.err_at(
                        "node.netns_subnet",
                        subnet_span.clone(),
                        format!("{ns} overlaps the internal network {n}"),
                        "pick a range that no real network uses",
                    );
                }
            }
        }
        if self.errors.len() > start {
            return (None, subnet_span);
        }
        let node = (|| {
            Some(NodeConfig {
                mode: raw.mode.unwrap_or(Mode::Cgroup),
                interface: raw.interface.into_inner(),
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
        })();
        (node, subnet_span)
    }

    /// One port pool's geometry (`[ports]`, or `[profile.ports]` with `key`
    /// `profile[N].ports`). `default_range`: the range when none is written (`None`: required,
    /// checked by the caller); `inherit`: the default pool, whose block size and quarantine a
    /// profile's pool takes when it does not give its own.
    fn port_pool(
        &mut self,
        key: &str,
        raw: crate::raw::RawPorts,
        default_range: Option<&str>,
        inherit: Option<&PortPool>,
    ) -> CheckedPorts {
        let range_span = raw.range.as_ref().and_then(span);
        let range = raw
            .range
            .map(|r| r.into_inner())
            .or(default_range.map(str::to_owned))
            .unwrap_or_default();
        let parsed = range.split_once('-').and_then(|(a, b)| {
            Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?))
        });
        let block_span = raw.block_size.as_ref().and_then(span);
        let block_size = raw.block_size.map_or_else(
            || inherit.map_or(256, |p| u32::from(p.block_size)),
            |b| b.into_inner(),
        );
        let start = self.errors.len();
        let (first, last) = match parsed {
            Some((a, b)) if a >= 1024 && a <= b => (a, b),
            _ => {
                self.err_at(
                    &format!("{key}.range"),
                    range_span.clone(),
                    format!("{range:?} is not a port range FIRST-LAST with 1024 <= FIRST <= LAST <= 65535"),
                    "e.g. \"20000-59999\"; keep it clear of the node's ephemeral ports (net.ipv4.ip_local_port_range)",
                );
                (0, 0)
            }
        };
        if !(16..=32768).contains(&block_size) {
            self.err_at(
                &format!("{key}.block_size"),
                block_span.clone(),
                format!("{block_size} ports per job is outside 16..=32768"),
                "256 suits most jobs; a job holds one port per open connection",
            );
        } else if self.errors.len() == start && u32::from(last) - u32::from(first) + 1 < block_size
        {
            let inherited = if block_span.is_none() && inherit.is_some() {
                " (the block size of [ports], as this table gives none)"
            } else {
                ""
            };
            self.err_at(
                &format!("{key}.block_size"),
                block_span.clone().or(range_span.clone()),
                format!(
                    "the range {range} is smaller than one block of {block_size} ports{inherited}"
                ),
                &format!("widen {key}.range or lower {key}.block_size"),
            );
        }
        let q_span = raw.quarantine_secs.as_ref().and_then(span);
        let quarantine_secs = raw.quarantine_secs.map_or_else(
            || inherit.map_or(120, |p| p.quarantine_secs),
            |q| q.into_inner(),
        );
        if quarantine_secs > 86_400 {
            self.err_at(
                &format!("{key}.quarantine_secs"),
                q_span,
                format!("{quarantine_secs} s is more than a day"),
                "RFC 6888 recommends 120",
            );
        }
        let ports = (self.errors.len() == start).then_some(PortPool {
            first,
            last,
            block_size: block_size as u16,
            quarantine_secs,
        });
        CheckedPorts {
            key: key.to_owned(),
            ports,
            range_span,
            block_span,
        }
    }

    /// A profile's `[profile.ports]` and `gateway`: its own pool, or `None` for the default
    /// pool (errors recorded).
    fn own_pool(
        &mut self,
        i: usize,
        name: &str,
        raw_ports: Option<S<crate::raw::RawPorts>>,
        raw_gateway: Option<&S<String>>,
        ctx: &ProfileContext,
    ) -> Option<PoolDraft> {
        let key = &format!("profile[{}]", i + 1);
        let gateway = raw_gateway.and_then(|g| {
            let text = g.get_ref().trim();
            match text.parse::<Ipv4Addr>() {
                Ok(a) => {
                    if ctx.node_gateway.is_some() && !ctx.internal.iter().any(|n| n.contains(&a)) {
                        self.err_at(
                            &format!("{key}.gateway"),
                            span(g),
                            format!("the gateway {a} is not inside any internal network"),
                            "the node reaches a gateway directly on node.interface: list the cluster network that holds it in node.internal",
                        );
                    }
                    Some(a)
                }
                Err(_) => {
                    self.err_at(
                        &format!("{key}.gateway"),
                        span(g),
                        format!("{text:?} is not an IPv4 address"),
                        "give the gateway's virtual (VRRP) address, e.g. \"10.20.3.228\"",
                    );
                    None
                }
            }
        });
        let Some(raw_ports) = raw_ports else {
            if let (Some(gw), Some(node_gw), Some(g)) = (gateway, ctx.node_gateway, raw_gateway) {
                if gw != node_gw {
                    self.err_at(
                        &format!("{key}.gateway"),
                        span(g),
                        format!("profile {name:?} names gateway {gw}, but it has no port pool of its own: a gateway belongs to a pool, and the default pool ([ports]) goes through node.gateway {node_gw}"),
                        "give the profile its own pool: a [profile.ports] table with a range outside [ports] range (and block_size if it differs), or remove gateway",
                    );
                }
            }
            return None;
        };
        let ports_span = span(&raw_ports);
        let raw_ports = raw_ports.into_inner();
        if raw_ports.range.is_none() {
            let (k, at) = match &raw_ports.block_size {
                Some(b) => (format!("{key}.ports.block_size"), span(b)),
                None => (format!("{key}.ports"), ports_span),
            };
            self.err_at(
                &k,
                at,
                format!("[profile.ports] of profile {name:?} has no range: without a range of its own the profile shares the default pool ([ports]) and its block size"),
                "give the profile its own range: range = \"FIRST-LAST\" in [profile.ports], outside [ports] range; or remove [profile.ports] to share the default pool",
            );
            return None;
        }
        let checked = self.port_pool(
            &format!("{key}.ports"),
            raw_ports,
            None,
            ctx.default_pool.as_ref(),
        );
        Some(PoolDraft {
            profile: Some((i, name.to_owned())),
            checked,
            gateway: gateway.or(ctx.node_gateway),
            gateway_span: raw_gateway.and_then(span),
        })
    }

    /// Checks one list of names (`users`, `groups`, `accounts`, `partitions`, `qos`).
    fn names(&mut self, key: &str, list: &[S<String>], star_ok: bool) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for s in list {
            let n = s.get_ref();
            if n.is_empty() || n.chars().any(|c| c.is_whitespace() || c == ',') {
                self.err_at(
                    key,
                    span(s),
                    format!("{n:?} is not a valid name"),
                    "write one name per string, without spaces or commas",
                );
            } else if n == "*" && !star_ok {
                self.err_at(
                    key,
                    span(s),
                    "\"*\" is only allowed in users".into(),
                    "write users = [\"*\"] to mean everyone",
                );
            } else if out.contains(n) {
                self.err_at(
                    key,
                    span(s),
                    format!("{n:?} is listed twice"),
                    "list each name once",
                );
            }
            out.push(n.clone());
        }
        out
    }

    fn principals(&mut self, key: &str, raw: &RawPrincipals) -> Principals {
        Principals {
            users: self.names(&format!("{key}.users"), &raw.users, true),
            groups: self.names(&format!("{key}.groups"), &raw.groups, false),
            accounts: self.names(&format!("{key}.accounts"), &raw.accounts, false),
        }
    }

    /// One profile, and its own pool when it has one. The profile is `None` when invalid
    /// (errors recorded); its `pool` is set by the caller.
    fn profile(
        &mut self,
        i: usize,
        raw: S<RawProfile>,
        ctx: &ProfileContext,
    ) -> (Option<Profile>, Option<PoolDraft>) {
        let key = format!("profile[{}]", i + 1);
        let header = span(&raw);
        let mut raw = raw.into_inner();
        let start = self.errors.len();
        let own = self.own_pool(
            i,
            raw.name.get_ref(),
            raw.ports.take(),
            raw.gateway.as_ref(),
            ctx,
        );
        let (pool_blocks, pool_key) = match &own {
            Some(d) => (d.checked.ports.map(|p| p.blocks()), d.checked.key.clone()),
            None => (ctx.default_pool.map(|p| p.blocks()), "ports".to_owned()),
        };
        let pool_name = if own.is_some() {
            "its own port pool ([profile.ports])"
        } else {
            "its port pool (the default pool, [ports])"
        };
        let (default_mode, internal) = (ctx.default_mode, ctx.internal);
        let name = raw.name.get_ref();
        let name_ok = !name.is_empty()
            && name.len() <= 32
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok {
            self.err_at(
                &format!("{key}.name"),
                span(&raw.name),
                format!("{name:?} is not a valid profile name"),
                "use 1 to 32 letters, digits, '-' or '_' (users type it after --external-net=)",
            );
        }
        let allow = self.principals(
            &key,
            &RawPrincipals {
                users: raw.users,
                groups: raw.groups,
                accounts: raw.accounts,
            },
        );
        let none = S::new(0..0, RawPrincipals::default());
        let deny_raw = raw.deny.as_ref().unwrap_or(&none);
        let auto_raw = raw.auto.as_ref().unwrap_or(&none);
        let deny = self.principals(&format!("{key}.deny"), deny_raw.get_ref());
        let auto = self.principals(&format!("{key}.auto"), auto_raw.get_ref());
        let partitions = self.names(&format!("{key}.partitions"), &raw.partitions, false);
        let qos = self.names(&format!("{key}.qos"), &raw.qos, false);
        if allow.is_empty() {
            self.err_at(
                &key,
                header.clone(),
                format!("profile {name:?} names no users, groups or accounts, so it can never match"),
                "add users = [...], groups = [...] or accounts = [...] (users = [\"*\"] means everyone)",
            );
        } else if covers(&deny, &allow) {
            self.err_at(
                &format!("{key}.deny"),
                span(deny_raw),
                format!("profile {name:?} denies every user, group and account it allows, so it can never match"),
                "remove the profile, or narrow its deny list",
            );
        }
        let everyone = allow.users.iter().any(|u| u == "*");
        let auto_spans = |list: &[S<String>], n: &str| -> Span {
            list.iter().find(|s| s.get_ref() == n).and_then(span)
        };
        for u in &auto.users {
            if u == "*" {
                self.err_at(
                    &format!("{key}.auto.users"),
                    auto_spans(&auto_raw.get_ref().users, u),
                    "auto.users = [\"*\"] would let every job of the cluster out without asking"
                        .into(),
                    "name the experiment's users or groups that need transparent access",
                );
            } else if !everyone && !allow.users.contains(u) {
                self.err_at(
                    &format!("{key}.auto.users"),
                    auto_spans(&auto_raw.get_ref().users, u),
                    format!("{u:?} gets the profile without asking but is not in its users"),
                    "list auto principals in the profile's users/groups/accounts too",
                );
            } else if deny.users.contains(u) {
                self.err_at(
                    &format!("{key}.auto.users"),
                    auto_spans(&auto_raw.get_ref().users, u),
                    format!("{u:?} gets the profile without asking but is also denied"),
                    "remove it from auto or from deny (deny wins, so auto never applies)",
                );
            }
        }
        for (what, list, allowed, denied, raw_list) in [
            (
                "groups",
                &auto.groups,
                &allow.groups,
                &deny.groups,
                &auto_raw.get_ref().groups,
            ),
            (
                "accounts",
                &auto.accounts,
                &allow.accounts,
                &deny.accounts,
                &auto_raw.get_ref().accounts,
            ),
        ] {
            let singular = &what[..what.len() - 1];
            for g in list {
                if !everyone && !allowed.contains(g) {
                    self.err_at(
                        &format!("{key}.auto.{what}"),
                        auto_spans(raw_list, g),
                        format!("{singular} {g:?} gets the profile without asking but is not in its {what}"),
                        "list auto principals in the profile's users/groups/accounts too",
                    );
                } else if denied.contains(g) {
                    self.err_at(
                        &format!("{key}.auto.{what}"),
                        auto_spans(raw_list, g),
                        format!(
                            "{singular} {g:?} gets the profile without asking but is also denied"
                        ),
                        "remove it from auto or from deny (deny wins, so auto never applies)",
                    );
                }
            }
        }
        let destinations = raw
            .destinations
            .as_ref()
            .map(|d| self.destinations(&format!("{key}.destinations"), d, internal));
        let max_node = raw.max_jobs_per_node.as_ref().map(|m| *m.get_ref());
        let max_user = raw.max_jobs_per_user.as_ref().map(|m| *m.get_ref());
        if let (Some(m), Some(s)) = (max_node, &raw.max_jobs_per_node) {
            if m == 0 {
                self.err_at(
                    &format!("{key}.max_jobs_per_node"),
                    span(s),
                    "a limit of 0 jobs grants nothing".into(),
                    "remove the profile to grant nothing, or remove the key for no own limit",
                );
            } else if let Some(b) = pool_blocks.filter(|&b| m > b) {
                self.err_at(
                    &format!("{key}.max_jobs_per_node"),
                    span(s),
                    format!("{m} jobs at once cannot fit: {pool_name} holds {b} blocks per node ({pool_key}.range / {pool_key}.block_size)"),
                    &format!("lower it to {b} or less, or widen {pool_key}.range / lower {pool_key}.block_size"),
                );
            }
        }
        if let (Some(m), Some(s)) = (max_user, &raw.max_jobs_per_user) {
            if m == 0 {
                self.err_at(
                    &format!("{key}.max_jobs_per_user"),
                    span(s),
                    "a limit of 0 jobs grants nothing".into(),
                    "remove the profile to grant nothing, or remove the key for no own limit",
                );
            } else if let Some(n) = max_node.filter(|&n| n > 0 && m > n) {
                self.err_at(
                    &format!("{key}.max_jobs_per_user"),
                    span(s),
                    format!("{m} jobs per user can never be reached: max_jobs_per_node is {n}"),
                    &format!("lower it to {n} or less, or remove it"),
                );
            } else if let Some(b) = pool_blocks.filter(|&b| max_node.is_none() && m > b) {
                self.err_at(
                    &format!("{key}.max_jobs_per_user"),
                    span(s),
                    format!("{m} jobs at once cannot fit: {pool_name} holds {b} blocks per node ({pool_key}.range / {pool_key}.block_size)"),
                    &format!("lower it to {b} or less, or widen {pool_key}.range / lower {pool_key}.block_size"),
                );
            }
        }
        if self.errors.len() > start {
            return (None, own);
        }
        let profile = Profile {
            name: raw.name.into_inner(),
            allow,
            deny,
            auto,
            partitions,
            qos,
            mode: raw.mode.unwrap_or(default_mode),
            destinations: destinations.flatten(),
            max_jobs_per_node: max_node,
            max_jobs_per_user: max_user,
            pool: 0,
        };
        (Some(profile), own)
    }

    /// A profile's destination allowlist. `None` when an entry is invalid (errors recorded).
    fn destinations(
        &mut self,
        key: &str,
        raw: &S<Vec<S<RawDestination>>>,
        internal: &[Ipv4Net],
    ) -> Option<Vec<Destination>> {
        let start = self.errors.len();
        if raw.get_ref().is_empty() {
            self.err_at(
                key,
                span(raw),
                "an empty destinations list lets the job reach nothing outside".into(),
                "remove the key to allow every external destination, or list the allowed ones",
            );
            return None;
        }
        let mut out: Vec<(Destination, Span)> = Vec::new();
        for (j, e) in raw.get_ref().iter().enumerate() {
            let ekey = format!("{key}[{}]", j + 1);
            let e_span = span(e);
            let e = e.get_ref();
            let net = self.ipv4_net(
                &format!("{ekey}.net"),
                &e.net,
                "a destination",
                "203.0.113.0/24",
            );
            if let Some(n) = net {
                if let Some(i) = internal.iter().find(|i| i.contains(&n)) {
                    self.err_at(
                        &format!("{ekey}.net"),
                        span(&e.net),
                        format!("{n} is inside the internal network {i}: internal destinations never go through the gateway and are always reachable"),
                        "remove the entry; node.internal decides what stays on the cluster network",
                    );
                }
            }
            let proto = e.proto.as_ref().map_or(Proto::Any, |p| *p.get_ref());
            let ports = match &e.ports {
                None => Some(Vec::new()),
                Some(p) if proto == Proto::Icmp => {
                    self.err_at(
                        &format!("{ekey}.ports"),
                        span(p),
                        "ICMP has no ports".into(),
                        "remove ports, or use proto = \"tcp\" or \"udp\"",
                    );
                    None
                }
                Some(p) => self.port_list(&format!("{ekey}.ports"), p),
            };
            if let (Some(net), Some(ports)) = (net, ports) {
                out.push((Destination { net, proto, ports }, e_span));
            }
        }
        for (a, (da, at)) in out.iter().enumerate() {
            for (b, (db, _)) in out.iter().enumerate() {
                // report each redundant entry once; of two equal entries, the later one
                if a != b && da.covered_by(db) && !(db.covered_by(da) && b > a) {
                    self.err_at(
                        &format!("{key}[{}]", a + 1),
                        at.clone(),
                        format!("{da} is already allowed by entry {} ({db})", b + 1),
                        "remove the redundant entry, or narrow the wider one",
                    );
                    break;
                }
            }
        }
        if self.errors.len() > start {
            return None;
        }
        Some(out.into_iter().map(|(d, _)| d).collect())
    }

    /// `443` or `"80,443,8000-8100"`: sorted, merged port ranges.
    fn port_list(&mut self, key: &str, raw: &S<RawPortList>) -> Option<Vec<(u16, u16)>> {
        let hint = "write one number (443) or a string of ports and ranges between 1 and 65535, e.g. \"80,443,8000-8100\"";
        let text = match raw.get_ref() {
            RawPortList::One(n) => n.to_string(),
            RawPortList::List(s) => s.clone(),
        };
        let port = |s: &str| s.trim().parse::<u16>().ok().filter(|&p| p > 0);
        let mut ranges: Vec<(u16, u16)> = Vec::new();
        for item in text.split(',') {
            let r = match item.split_once('-') {
                Some((a, b)) => port(a).zip(port(b)).filter(|(a, b)| a <= b),
                None => port(item).map(|p| (p, p)),
            };
            match r {
                Some(r) => ranges.push(r),
                None => {
                    self.err_at(
                        key,
                        span(raw),
                        format!(
                            "{:?} is not a port (1-65535) or a range FIRST-LAST",
                            item.trim()
                        ),
                        hint,
                    );
                    return None;
                }
            }
        }
        ranges.sort_unstable();
        let mut merged: Vec<(u16, u16)> = Vec::new();
        for (lo, hi) in ranges {
            match merged.last_mut() {
                Some(last) if lo <= last.1 => {
                    self.err_at(
                        key,
                        span(raw),
                        format!(
                            "ports {} and {} overlap",
                            fmt_range(*last),
                            fmt_range((lo, hi))
                        ),
                        "list every port once",
                    );
                    return None;
                }
                Some(last) if u32::from(lo) == u32::from(last.1) + 1 => last.1 = hi,
                _ => merged.push((lo, hi)),
            }
        }
        Some(merged)
    }
}

fn fmt_range((lo, hi): (u16, u16)) -> String {
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}-{hi}")
    }
}

/// True when `deny` matches everyone `allow` lets in.
fn covers(deny: &Principals, allow: &Principals) -> bool {
    if deny.users.iter().any(|u| u == "*") {
        return true;
    }
    if allow.users.iter().any(|u| u == "*") {
        return false;
    }
    allow.users.iter().all(|u| deny.users.contains(u))
        && allow.groups.iter().all(|g| deny.groups.contains(g))
        && allow.accounts.iter().all(|a| deny.accounts.contains(a))
}
