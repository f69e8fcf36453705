//! The test policies: one base, [`TestPolicy::new`], written once, and what a test adds to it
//! key by key, so that a reader sees at once what a test's policy has on top of the base.
//! The policies more than one test or benchmark uses are here by name.

use extnet_policy::Policy;
use std::path::Path;

/// A policy file being put together: the base of [`TestPolicy::new`] and the keys, tables and
/// profiles added to it, in order.
#[derive(Clone)]
pub struct TestPolicy {
    node: Vec<String>,
    ports: Vec<String>,
    tables: Vec<String>,
}

impl TestPolicy {
    /// `version = 1`; `[node]`: the interface `interface` in the /24 `net` (`"10.99.0"`), the
    /// gateway `<net>.254`, the internal net `<net>.0/24`; `[ports]`: the range `range`
    /// (`"20000-20767"`) in blocks of the default size; no profile.
    pub fn new(interface: &str, net: &str, range: &str) -> TestPolicy {
        TestPolicy {
            node: vec![
                format!("interface = \"{interface}\""),
                format!("gateway = \"{net}.254\""),
                format!("internal = [\"{net}.0/24\"]"),
            ],
            ports: vec![format!("range = \"{range}\"")],
            tables: Vec::new(),
        }
    }

    /// A key of `[node]`, as a line of TOML (`mode = "cgroup"`).
    pub fn node(mut self, line: &str) -> TestPolicy {
        self.node.push(line.to_owned());
        self
    }

    /// A key of `[ports]`, as a line of TOML (`block_size = 256`).
    pub fn ports(mut self, line: &str) -> TestPolicy {
        self.ports.push(line.to_owned());
        self
    }

    /// A table of its own (`[log]` and its keys), as TOML.
    pub fn table(mut self, toml: &str) -> TestPolicy {
        self.tables.push(toml.trim_end().to_owned());
        self
    }

    /// A `[[profile]]` named `name` for `users`, with `keys` (lines of TOML) beside.
    pub fn profile(mut self, name: &str, users: &[&str], keys: &[&str]) -> TestPolicy {
        let users: Vec<String> = users.iter().map(|u| format!("\"{u}\"")).collect();
        let mut t = format!(
            "[[profile]]\nname = \"{name}\"\nusers = [{}]",
            users.join(", ")
        );
        for k in keys {
            t.push('\n');
            t.push_str(k);
        }
        self.tables.push(t);
        self
    }

    /// The policy file's text.
    pub fn toml(&self) -> String {
        let mut t = format!(
            "version = 1\n[node]\n{}\n[ports]\n{}\n",
            self.node.join("\n"),
            self.ports.join("\n")
        );
        for table in &self.tables {
            t.push_str(table);
            t.push('\n');
        }
        t
    }

    /// The policy, parsed and validated as the prolog does; panics when it is not valid.
    pub fn policy(&self) -> Policy {
        Policy::from_toml(&self.toml(), "the test policy")
            .unwrap_or_else(|e| panic!("{e}\n{}", self.toml()))
    }

    /// Writes the policy file to `path`.
    pub fn write(&self, path: &Path) {
        std::fs::write(path, self.toml())
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}

/// The pool-routing node (`kernel/pools.rs`): `eth0` in 10.99.0.0/24, ports 20000-29999 in
/// blocks of 256, so 39 slots (0-38) of the default pool; profile `default`, for everyone.
pub fn pools_base() -> TestPolicy {
    TestPolicy::new("eth0", "10.99.0", "20000-29999")
        .ports("block_size = 256")
        .profile("default", &["*"], &[])
}

/// [`pools_base`] and two pools with a gateway of their own: `bulk`, slot 39 via 10.99.0.253
/// (table 7701); `wide`, slots 40-55 via 10.99.0.252 (table 7702; two prefixes of 8 slots).
pub fn pools_a() -> Policy {
    pools_base()
        .profile(
            "bulk",
            &["*"],
            &[
                r#"gateway = "10.99.0.253""#,
                r#"ports = { range = "30000-31023", block_size = 1024 }"#,
            ],
        )
        .profile(
            "wide",
            &["*"],
            &[
                r#"gateway = "10.99.0.252""#,
                r#"ports = { range = "40000-44095" }"#,
            ],
        )
        .policy()
}

/// [`pools_a`] with the pools changed: `wide` is gone, `bulk` has two slots (39-40).
pub fn pools_b() -> Policy {
    pools_base()
        .profile(
            "bulk",
            &["*"],
            &[
                r#"gateway = "10.99.0.253""#,
                r#"ports = { range = "30000-32047", block_size = 1024 }"#,
            ],
        )
        .policy()
}

/// The allowlist node (`kernel/allowlist.rs`): `xa0` in 10.98.0.0/24, ports 20000-20767;
/// profile `open` (no allowlist) and profile `web` (TCP 80 and 443 and UDP 7001 of
/// 203.0.113.10, all of 198.51.100.0/24), both for user `a`.
pub fn allowlist() -> Policy {
    TestPolicy::new("xa0", "10.98.0", "20000-20767")
        .profile("open", &["a"], &[])
        .profile(
            "web",
            &["a"],
            &[r#"destinations = [
  { net = "203.0.113.10", proto = "tcp", ports = "80,443" },
  { net = "203.0.113.10", proto = "udp", ports = 7001 },
  { net = "198.51.100.0/24" },
]"#],
        )
        .policy()
}

/// The accounting node (`kernel/accounting.rs`): the node interface is `lo` (the traffic of
/// the test leaves through it), the internal net 10.99.0.0/24, ports `range` in blocks of
/// `block_size`; no profile.
pub fn accounting(range: &str, block_size: u32) -> Policy {
    TestPolicy::new("lo", "10.99.0", range)
        .ports(&format!("block_size = {block_size}"))
        .policy()
}
