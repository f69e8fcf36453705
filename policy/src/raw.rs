//! The policy file exactly as written. Every table rejects unknown keys, so a typo is an error
//! and never a silently ignored setting.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    pub version: u32,
    pub node: RawNode,
    #[serde(default)]
    pub ports: RawPorts,
    #[serde(default)]
    pub log: RawLog,
    #[serde(default, rename = "profile")]
    pub profiles: Vec<RawProfile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    #[serde(default)]
    pub mode: Option<crate::Mode>,
    pub interface: String,
    pub gateway: String,
    #[serde(default)]
    pub internal: Vec<String>,
    #[serde(default)]
    pub route_table: Option<u32>,
    #[serde(default)]
    pub rule_priority: Option<u32>,
    #[serde(default)]
    pub fwmark: Option<u32>,
    #[serde(default)]
    pub state_dir: Option<String>,
    #[serde(default)]
    pub cgroup_root: Option<String>,
    #[serde(default)]
    pub netns_subnet: Option<String>,
    #[serde(default)]
    pub netns_dir: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPorts {
    #[serde(default)]
    pub range: Option<String>,
    #[serde(default)]
    pub block_size: Option<u32>,
    #[serde(default)]
    pub quarantine_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    #[serde(default)]
    pub lease_log: Option<String>,
    #[serde(default)]
    pub file: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPrincipals {
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub accounts: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProfile {
    pub name: String,
    #[serde(default)]
    pub users: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    #[serde(default)]
    pub accounts: Vec<String>,
    #[serde(default)]
    pub partitions: Vec<String>,
    #[serde(default)]
    pub qos: Vec<String>,
    #[serde(default)]
    pub deny: RawPrincipals,
    #[serde(default)]
    pub auto: RawPrincipals,
    #[serde(default)]
    pub mode: Option<crate::Mode>,
}
