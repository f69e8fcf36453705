//! From [`RawPolicy`] to a checked [`Policy`]: every error names the file, the line and column,
//! the key, what is wrong and how to fix it.
//!
//! One module per part of the file:
//! - `node`: `[node]`, how job traffic reaches the gateway;
//! - `pools`: `[ports]` and every `[profile.ports]`, the node's slots and their routing tables;
//! - `profile`: each `[[profile]]`: its name and job limits, and its other parts in turn;
//! - `principals`: who a profile allows, denies and grants without asking;
//! - `destinations`: a profile's destination allowlist;
//! - `gateways`: `[gateways]`, the NAT gateways and the nodes' public addresses and ports;
//! - `addr`: addresses and networks, which several parts hold;
//! - `syntax`: what the TOML parser rejects (not TOML, unknown keys, wrong types), placed and
//!   explained like the rest.
//!
//! This module holds the errors, reads the file only when root alone can change it, and puts
//! the parts together with the checks that need more than one of them. A check records its
//! error and goes on, so that an admin sees every problem of a file at once; nothing is built
//! from a file with an error.

mod addr;
mod destinations;
mod gateways;
mod node;
mod pools;
mod principals;
mod profile;
mod syntax;

use crate::raw::{RawLog, RawPolicy, S};
use crate::{LogConfig, Mode, NodeConfig, Policy, Pool, Profile};
use pools::{PoolDraft, DEFAULT_RANGE};
use profile::ProfileContext;
use std::ops::Range;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
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
    /// Valid, but the node has no place in `[gateways]`.
    #[error("policy file {origin}: {source}")]
    Node {
        origin: String,
        source: crate::gateways::NatError,
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

/// Reads the file after checking that only root can change it. The checks are of the file
/// that is read (`fstat` of the open descriptor, not a second lookup of the path), so a file
/// swapped in between cannot pass them with another's metadata.
pub(crate) fn read_checked(path: &Path) -> Result<String, PolicyError> {
    let read_err = |source| PolicyError::Read {
        path: path.to_owned(),
        source,
    };
    // non-blocking, so that a FIFO or a device at the path is refused below instead of
    // blocking the open (no effect on a regular file)
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(read_err)?;
    let meta = file.metadata().map_err(read_err)?;
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
    let mut text = String::new();
    std::io::Read::read_to_string(&mut file, &mut text).map_err(read_err)?;
    Ok(text)
}

/// Parses and checks policy text; `origin` names the file in messages. The errors come in
/// file order.
pub(crate) fn parse(text: &str, origin: &str) -> Result<Policy, PolicyError> {
    let raw: RawPolicy = toml::from_str(text).map_err(|e| PolicyError::Syntax {
        origin: origin.to_owned(),
        error: Box::new(syntax::syntax_error(text, &e)),
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

/// Where a value stands in the file (a byte range); `None` for a default nobody wrote.
type Span = Option<Range<usize>>;

fn span<T>(s: &S<T>) -> Span {
    Some(s.span())
}

/// Checks the parts of one file and collects every error with its place.
struct Validator<'a> {
    text: &'a str,
    errors: Vec<ValidationError>,
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

    /// The 1-based line `at` starts on, for messages that point at another place.
    fn line(&self, at: &Span) -> Option<usize> {
        at.as_ref().map(|r| position(self.text, r.start).0)
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

    /// The whole policy: each part, then what spans parts (the netns links must hold the slots
    /// of all pools). `None` when any error was recorded.
    fn policy(&mut self, raw: RawPolicy) -> Option<Policy> {
        if *raw.version.get_ref() != 1 {
            self.err_at(
                "version",
                span(&raw.version),
                format!("version {} is not supported", raw.version.get_ref()),
                "this extnet reads version = 1",
            );
        }
        let (node, subnet_span, subnet6_span) = self.node(raw.node);
        let default_pool = self.port_pool("ports", raw.ports, Some(DEFAULT_RANGE), None);
        let ports = default_pool.ports;
        let log = log(raw.log);
        let internal = node
            .as_ref()
            .map(|n| n.internal.clone())
            .unwrap_or_default();
        let internal6 = node
            .as_ref()
            .map(|n| n.internal6.clone())
            .unwrap_or_default();
        let ctx = ProfileContext {
            default_mode: node.as_ref().map(|n| n.mode).unwrap_or(Mode::Cgroup),
            default_pool: ports,
            node_gateway: node.as_ref().map(|n| n.gateway),
            node_gateway6: node.as_ref().and_then(|n| n.gateway6),
            internal: &internal,
            internal6: &internal6,
        };
        // the default pool first, then the profiles' own pools in file order
        let mut drafts: Vec<PoolDraft> = vec![PoolDraft {
            profile: None,
            checked: default_pool,
            gateway: node.as_ref().map(|n| n.gateway),
            gateway_span: None,
            gateway6: node.as_ref().and_then(|n| n.gateway6),
            gateway6_span: None,
        }];
        let profiles = self.profiles(raw.profiles, &ctx, &mut drafts);
        let pools = self.pools(node.as_ref(), &drafts);
        let gateways = raw
            .gateways
            .and_then(|g| self.gateways(g, node.as_ref(), pools.as_deref(), &drafts));
        if let (Some(n), Some(pools)) = (&node, &pools) {
            let slots = pools.last().map_or(0, |p| p.slots().end);
            let netns_slots = n.netns_links();
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
        if let (Some(n), Some(pools)) = (&node, &pools) {
            self.netns_ipv6(n, pools, &profiles, subnet6_span);
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
            gateways,
        })
    }
}

impl Validator<'_> {
    /// `node.netns_subnet6` against the profiles and pools: required when a netns-mode
    /// profile has IPv6 on a node with `gateway6`, and then holding a /126 per slot of all
    /// pools (as `netns_subnet` its /30s).
    fn netns_ipv6(&mut self, n: &NodeConfig, pools: &[Pool], profiles: &[Profile], at: Span) {
        let Some(p) = profiles
            .iter()
            .find(|p| p.mode == Mode::Netns && p.ipv6 && n.gateway6.is_some())
        else {
            return;
        };
        let Some(net) = n.netns_subnet6 else {
            self.err_at(
                "node.netns_subnet6",
                at,
                format!(
                    "profile {:?} uses netns mode with IPv6 (node.gateway6 is set), but node.netns_subnet6 is not given: its jobs' veth pairs need IPv6 addresses",
                    p.name
                ),
                "add netns_subnet6 = \"fd00:78e7:ffff::/112\" to [node] (a unique local range that no real network uses; a /112 holds 16384 job links), or set ipv6 = false in the profile",
            );
            return;
        };
        let slots = pools.last().map_or(0, |p| p.slots().end);
        let links = n.netns_links6();
        if links < u64::from(slots) {
            self.err_at(
                "node.netns_subnet6",
                at,
                format!("{net} holds {links} /126 links but the port pools have {slots} slots (the blocks of all pools together)"),
                "use a larger netns_subnet6 (a /112 holds 16384 jobs), or fewer blocks (a larger block_size or a smaller range)",
            );
        }
    }
}

/// `[log]`: where records go. Nothing to check here: the paths are templates (`%n`) that only
/// the node can open; what is not written gets its default.
fn log(raw: RawLog) -> LogConfig {
    LogConfig {
        lease_log: raw
            .lease_log
            .unwrap_or_else(|| "/var/log/extnet/lease.log".into()),
        file: raw
            .file
            .unwrap_or_else(|| "/var/log/extnet/extnet.log".into()),
        accounting: raw
            .accounting
            .unwrap_or_else(|| "/var/log/extnet/accounting.log".into()),
        interim_secs: raw.interim_secs.unwrap_or(3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A directory of this test's own under the system's temporary directory.
    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("extnet-policy-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn why(r: Result<String, PolicyError>) -> String {
        match r {
            Err(PolicyError::Unsafe { why, .. }) => why,
            other => panic!("not refused as unsafe: {other:?}"),
        }
    }

    #[test]
    fn only_a_regular_file_that_only_root_can_change_is_read() {
        let d = dir("read-checked");
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        let file = d.join("extnet.toml");
        std::fs::write(&file, "version = 1\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        if root {
            assert_eq!(read_checked(&file).unwrap(), "version = 1\n");
        } else {
            assert!(why(read_checked(&file)).contains("not root"));
        }
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o664)).unwrap();
        let w = why(read_checked(&file));
        assert!(
            w.contains(if root {
                "lets group or others write"
            } else {
                "not root"
            }),
            "{w}"
        );
        // a FIFO is refused at once, not waited on for a writer
        let fifo = d.join("fifo.toml");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a NUL-terminated path that lives across the call.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        assert!(why(read_checked(&fifo)).contains("not a regular file"));
        std::fs::remove_dir_all(&d).unwrap();
    }
}
