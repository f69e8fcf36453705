//! Name resolution for a netns-mode job. Its namespace has a loopback of its own, so a
//! resolver on the node's loopback (systemd-resolved's stub at 127.0.0.53, a local dnsmasq or
//! unbound) is out of its reach. The prolog decides which `resolv.conf` the job's tasks see
//! ([`choose`], pure) and writes it under the node's state directory ([`prepare`]); the SPANK
//! plugin bind-mounts it over `/etc/resolv.conf` in a mount namespace of the task's own
//! ([`crate::job::task::join`]). When the node's own file works for the job, nothing is
//! written and nothing is mounted.

use crate::plan::layout::Layout;
use crate::store::fs::{self, FsError};
use extnet_policy::Policy;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

/// systemd-resolved's list of the upstream servers it uses, in `resolv.conf` form.
pub const RESOLVED_UPSTREAM: &str = "/run/systemd/resolve/resolv.conf";
/// The node's own resolver configuration.
pub const NODE_RESOLV_CONF: &str = "/etc/resolv.conf";

/// What a netns job's tasks get as `/etc/resolv.conf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Choice {
    /// The node's file as it is: it names no loopback nameserver.
    NodeFile,
    /// A file of the job's own with this text.
    Own { text: String, why: &'static str },
    /// The node's file, though it names a loopback nameserver and nothing better is known:
    /// the job's name lookups will fail; the warning says what the admin can do.
    Unreachable { warning: String },
}

/// The nameservers of a `resolv.conf` text, in order (unparsable ones left out).
fn nameservers(text: &str) -> Vec<IpAddr> {
    text.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver"))
                .then(|| w.next()?.split('%').next()?.parse().ok())
                .flatten()
        })
        .collect()
}

/// True when `text` names a nameserver on a loopback address.
fn has_loopback(text: &str) -> bool {
    nameservers(text).iter().any(IpAddr::is_loopback)
}

/// The `resolv.conf` of a netns job: `policy_servers` (`node.netns_nameservers`) when the
/// policy names any, with the node's `search`, `domain` and `options` lines; else the node's
/// file (`node`, `None` when unreadable) when it names no loopback nameserver; else
/// systemd-resolved's upstream list (`upstream`) when it names a server that is not on
/// loopback; else the node's file with a warning.
pub fn choose(policy_servers: &[Ipv4Addr], node: Option<&str>, upstream: Option<&str>) -> Choice {
    if !policy_servers.is_empty() {
        let mut text =
            String::from("# written by extnet for a netns job (node.netns_nameservers)\n");
        for s in policy_servers {
            text.push_str(&format!("nameserver {s}\n"));
        }
        for l in node.unwrap_or("").lines() {
            let first = l.split_whitespace().next();
            if matches!(first, Some("search" | "domain" | "options")) {
                text.push_str(l.trim_end());
                text.push('\n');
            }
        }
        return Choice::Own {
            text,
            why: "node.netns_nameservers",
        };
    }
    let Some(node) = node else {
        // no file: glibc asks 127.0.0.1, which the job's namespace does not have
        return unreachable_or_upstream(upstream, "cannot be read");
    };
    if !has_loopback(node) {
        return Choice::NodeFile;
    }
    unreachable_or_upstream(upstream, "names a nameserver on the node's loopback")
}

fn unreachable_or_upstream(upstream: Option<&str>, what: &str) -> Choice {
    if let Some(u) = upstream {
        if nameservers(u).iter().any(|a| !a.is_loopback()) {
            return Choice::Own {
                text: format!(
                    "# written by extnet for a netns job: systemd-resolved's upstream servers ({RESOLVED_UPSTREAM})\n{u}{}",
                    if u.ends_with('\n') { "" } else { "\n" }
                ),
                why: RESOLVED_UPSTREAM,
            };
        }
    }
    Choice::Unreachable {
        warning: format!(
            "{NODE_RESOLV_CONF} {what}, which a netns job's namespace cannot reach, and there is no {RESOLVED_UPSTREAM} with other servers: the job's name lookups will fail; set node.netns_nameservers in the policy"
        ),
    }
}

/// Decides the job's `resolv.conf` from the policy and the node's files (`node_file`,
/// `upstream_file`: [`NODE_RESOLV_CONF`] and [`RESOLVED_UPSTREAM`] on a real node) and, when
/// the job needs a file of its own, writes it ([`Layout::job_resolv_conf`], mode 0644) and
/// returns its path. A warning of [`Choice::Unreachable`] goes to the log; the job then runs
/// with the node's file.
pub fn prepare(
    policy: &Policy,
    layout: &Layout,
    job_id: u32,
    node_file: &Path,
    upstream_file: &Path,
) -> Result<Option<PathBuf>, FsError> {
    let node = std::fs::read_to_string(node_file).ok();
    let upstream = std::fs::read_to_string(upstream_file).ok();
    match choose(
        &policy.node.netns_nameservers,
        node.as_deref(),
        upstream.as_deref(),
    ) {
        Choice::NodeFile => Ok(None),
        Choice::Unreachable { warning } => {
            tracing::warn!(job_id, "{warning}");
            Ok(None)
        }
        Choice::Own { text, why } => {
            let path = layout.job_resolv_conf(job_id);
            if let Some(dir) = path.parent() {
                fs::ensure_dir(dir)?;
            }
            fs::write_replace(&path, text.as_bytes(), 0o644)?;
            tracing::debug!(job_id, path = %path.display(), from = why, "job resolv.conf written");
            Ok(Some(path))
        }
    }
}

/// Removes the job's `resolv.conf`; `Ok(false)` when there was none.
pub fn remove(layout: &Layout, job_id: u32) -> Result<bool, FsError> {
    fs::remove_file(&layout.job_resolv_conf(job_id))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STUB: &str = "# systemd-resolved\nnameserver 127.0.0.53\noptions edns0 trust-ad\nsearch cluster.example\n";
    const UPSTREAM: &str = "nameserver 10.20.0.53\nnameserver 10.20.0.54\nsearch cluster.example\n";

    #[test]
    fn a_node_file_without_loopback_servers_is_used_as_it_is() {
        let f = "search cluster.example\nnameserver 10.20.0.53\nnameserver 2001:db8::53\n";
        assert_eq!(choose(&[], Some(f), Some(UPSTREAM)), Choice::NodeFile);
        assert_eq!(choose(&[], Some(f), None), Choice::NodeFile);
    }

    #[test]
    fn a_loopback_stub_is_replaced_by_systemd_resolveds_upstream_servers() {
        for node in [
            STUB,
            "nameserver ::1\n",
            "nameserver 10.1.1.1\nnameserver 127.0.0.1\n",
        ] {
            let Choice::Own { text, why } = choose(&[], Some(node), Some(UPSTREAM)) else {
                panic!("{node}")
            };
            assert_eq!(why, RESOLVED_UPSTREAM);
            assert_eq!(
                nameservers(&text),
                [
                    "10.20.0.53".parse::<IpAddr>().unwrap(),
                    "10.20.0.54".parse().unwrap()
                ]
            );
            assert!(text.contains("search cluster.example\n"), "{text}");
        }
    }

    #[test]
    fn a_loopback_stub_without_usable_upstream_servers_is_a_warning() {
        for upstream in [None, Some("nameserver 127.0.0.53\n"), Some("# empty\n")] {
            let Choice::Unreachable { warning } = choose(&[], Some(STUB), upstream) else {
                panic!("{upstream:?}")
            };
            assert!(warning.contains("node.netns_nameservers"), "{warning}");
            assert!(warning.contains("loopback"), "{warning}");
        }
        // no file at all: glibc would ask 127.0.0.1
        let Choice::Unreachable { warning } = choose(&[], None, None) else {
            panic!()
        };
        assert!(warning.contains("cannot be read"), "{warning}");
    }

    #[test]
    fn the_policys_nameservers_win_and_keep_the_nodes_search_and_options() {
        let servers = [
            "203.0.113.53".parse().unwrap(),
            "10.20.0.53".parse().unwrap(),
        ];
        for node in [Some(STUB), Some(UPSTREAM), None] {
            let Choice::Own { text, why } = choose(&servers, node, Some(UPSTREAM)) else {
                panic!()
            };
            assert_eq!(why, "node.netns_nameservers");
            assert_eq!(
                nameservers(&text),
                servers.iter().map(|&a| IpAddr::V4(a)).collect::<Vec<_>>()
            );
            assert_eq!(
                text.contains("search cluster.example\n"),
                node.is_some(),
                "{text}"
            );
            assert_eq!(text.contains("options edns0"), node == Some(STUB), "{text}");
        }
    }

    #[test]
    fn prepare_writes_a_file_only_when_the_job_needs_one() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let text = |servers: &str| {
            format!(
                "version = 1\n[node]\ninterface = \"eth0\"\ngateway = \"10.0.0.1\"\ninternal = [\"10.0.0.0/8\"]\nstate_dir = \"{}/%n\"\n{servers}",
                d.display()
            )
        };
        let node_file = d.join("resolv.conf");
        let upstream = d.join("upstream.conf");
        std::fs::write(&node_file, "nameserver 10.0.0.53\n").unwrap();
        let policy = Policy::from_toml(&text(""), "t").unwrap();
        let layout = Layout::new(&policy, "n1");
        assert_eq!(
            prepare(&policy, &layout, 5, &node_file, &upstream).unwrap(),
            None
        );
        assert!(!layout.job_resolv_conf(5).exists());
        let policy =
            Policy::from_toml(&text("netns_nameservers = [\"192.0.2.53\"]\n"), "t").unwrap();
        let path = prepare(&policy, &layout, 5, &node_file, &upstream)
            .unwrap()
            .expect("a file of the job's own");
        assert_eq!(path, layout.job_resolv_conf(5));
        let written = std::fs::read_to_string(&path).unwrap();
        assert!(written.contains("nameserver 192.0.2.53\n"), "{written}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o644,
            "readable by the job's user"
        );
        assert!(remove(&layout, 5).unwrap());
        assert!(!remove(&layout, 5).unwrap());
    }
}
