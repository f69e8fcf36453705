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
    #[serde(default)]
    pub netns_dir: Option<String>,
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
