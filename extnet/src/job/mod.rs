//! One job on one node, in the order it meets extnet:
//!
//! - [`env`]: the job's identity, read once from Slurm's prolog/epilog environment.
//! - [`setup`]: the prolog: decide, lease, set the job's path out up, record.
//! - [`limits`]: per-profile job limits, counted from the lease table.
//! - [`cgroup`]: a cgroup-mode job's own cgroup, set up and torn down.
//! - [`slurm_cgroup`]: a cgroup-mode job in Slurm's own v2 job cgroup: bound there, never moved.
//! - [`netns`]: a netns-mode job's namespace and veth pair, set up and torn down.
//! - [`task`]: putting a task on its job's path out (the plugin, inside slurmstepd).
//! - [`teardown`]: the epilog: tear down, account, release.
//! - [`reconcile`]: jobs whose epilog never ran (torn down as it would), leases a reboot ended
//!   (closed in the lease log).

pub mod cgroup;
pub mod env;
pub mod limits;
pub mod netns;
pub mod reconcile;
pub mod resolv;
pub mod setup;
pub mod slurm_cgroup;
pub mod task;
pub mod teardown;

use crate::kernel::netlink::NetlinkError;
use crate::kernel::nftables::netlink::NfnlError;
use crate::kernel::{bpf::BpfError, cgroup::CgroupError, netns::NetnsError, sysctl::SysctlError};
use crate::node::{counters::CounterError, NodeError};
use crate::store::{fs::FsError, lease::LeaseError, state::StateError};

/// Why setting a job up or tearing it down failed. Each variant's message names the object and
/// what an admin can do (the messages of the layers below, unchanged).
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Limit(#[from] limits::LimitReached),
    #[error(transparent)]
    Lease(#[from] LeaseError),
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error(transparent)]
    Netns(#[from] NetnsError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Sysctl(#[from] SysctlError),
    #[error(transparent)]
    Bpf(#[from] BpfError),
    #[error(transparent)]
    SlurmCgroup(#[from] slurm_cgroup::SlurmCgroupError),
    #[error("traffic counters: {0}")]
    Counters(#[from] CounterError),
    #[error("destination allowlist: {0}")]
    Allowlist(#[from] NfnlError),
    /// `node.interface` is missing when a netns job's veth should take its MTU.
    #[error("node interface {iface:?} (node.interface) does not exist, and a netns job's veth takes its MTU; fix node.interface or set node.netns_mtu")]
    NoInterface { iface: String },
    /// Something the setup had just made is gone (a concurrent admin action, a kernel fault).
    #[error("{0}")]
    Vanished(String),
    #[error("teardown of job {job_id} on node {node} failed, its lease is kept so no other job gets its ports: {errors}")]
    TeardownIncomplete {
        job_id: u32,
        node: String,
        errors: String,
    },
}

impl JobError {
    /// A limit of the profile or a full port pool: a job that did not name the profile may get
    /// another one.
    pub fn is_capacity(&self) -> bool {
        matches!(
            self,
            JobError::Limit(_) | JobError::Lease(LeaseError::PoolFull { .. })
        )
    }
}
