//! Where everything of one node lives, derived once from the policy and the node name.
//!
//! Paths are parameters of the functions that use them (never constants deep inside), so tests
//! can point everything at a temporary directory.

use extnet_policy::{expand, Policy};
use std::path::{Path, PathBuf};

/// The `socket cgroupv2` level of Slurm's cgroup/v2 job cgroups: `system.slice/<scope>/job_<id>`
/// is at level 3 whether slurmd made the scope (`IgnoreSystemd=yes`:
/// `<node>_slurmstepd.scope`) or systemd did (`slurmstepd.scope`).
pub const SLURM_JOB_CGROUP_LEVEL: usize = 3;

/// The node's extnet paths and names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub node: String,
    /// `node.state_dir`: lease table, lock, base marker.
    pub state_dir: PathBuf,
    /// One versioned JSON file per job on this node.
    pub jobs_dir: PathBuf,
    /// The cgroup v2 directory that holds the job cgroups.
    pub cgroup_root: PathBuf,
    /// Where job network namespaces are mounted.
    pub netns_dir: PathBuf,
    /// The append-only lease log.
    pub lease_log: PathBuf,
    /// The append-only accounting log (one record per job on this node).
    pub accounting_log: PathBuf,
}

impl Layout {
    pub fn new(policy: &Policy, node: &str) -> Layout {
        let state_dir = expand(&policy.node.state_dir, node);
        let cgroup_root = match &policy.node.cgroup_root {
            Some(t) => expand(t, node),
            None => detect_cgroup2_mount().join("extnet"),
        };
        Layout {
            node: node.to_owned(),
            jobs_dir: state_dir.join("jobs"),
            state_dir,
            cgroup_root,
            netns_dir: policy.node.netns_dir.clone(),
            lease_log: expand(&policy.log.lease_log, node),
            accounting_log: expand(&policy.log.accounting, node),
        }
    }

    /// The job's state file.
    pub fn job_state(&self, job_id: u32) -> PathBuf {
        self.jobs_dir.join(format!("{job_id}.json"))
    }

    /// A netns job's own `resolv.conf` (see [`crate::job::resolv`]), bind-mounted over
    /// `/etc/resolv.conf` in its tasks.
    pub fn job_resolv_conf(&self, job_id: u32) -> PathBuf {
        self.state_dir.join("resolv").join(format!("{job_id}.conf"))
    }

    /// The lease table and its lock.
    pub fn lease_table(&self) -> PathBuf {
        self.state_dir.join("leases.table")
    }

    /// The denial counters by reason ([`crate::store::denials`]).
    pub fn denials(&self) -> PathBuf {
        self.state_dir.join("denials")
    }

    pub fn lock_file(&self) -> PathBuf {
        self.state_dir.join("lock")
    }

    /// The node agent's lock (`extnet node watch`), held for its whole life: a second agent,
    /// and `extnet node teardown`, find it busy.
    pub fn agent_lock(&self) -> PathBuf {
        self.state_dir.join("watch.lock")
    }

    /// What the node's base setup last applied (see [`crate::node`]).
    pub fn base_marker(&self) -> PathBuf {
        self.state_dir.join("base.json")
    }

    /// The cgroup of job `job_id` (cgroup mode): made by its prolog, removed by its epilog, so
    /// every job has a cgroup of its own, with an id no earlier job had. The job's sockets
    /// carry that id for their whole life: once the cgroup is gone, nothing the job left (a
    /// socket passed to another process) matches a running job again.
    pub fn job_cgroup(&self, job_id: u32) -> PathBuf {
        self.cgroup_root.join(format!("job_{job_id}"))
    }

    /// The per-slot cgroup of extnet before job cgroups (`slot_<s>`): only removed, by the
    /// node's teardown.
    pub fn legacy_slot_cgroup(&self, slot: u32) -> PathBuf {
        self.cgroup_root.join(format!("slot_{slot}"))
    }

    /// The cgroup2 mount point `cgroup_root` is under (its level 0). Looked up when asked (a
    /// few `statfs`), not in [`Layout::new`]: the epilog of a job that did not ask never needs it.
    pub fn cgroup_mount(&self) -> PathBuf {
        cgroup2_mount_of(&self.cgroup_root)
    }

    /// Depth of the job cgroups below the cgroup2 root (`socket cgroupv2 level N`).
    pub fn job_cgroup_level(&self) -> usize {
        self.job_cgroup(0)
            .strip_prefix(self.cgroup_mount())
            .map(|p| p.components().count())
            .unwrap_or(0)
    }

    /// The `socket cgroupv2` levels the node table looks a socket's job cgroup up at:
    /// extnet's own job cgroups' and [`SLURM_JOB_CGROUP_LEVEL`] (one lookup per level, so a
    /// packet costs the same whatever the number of jobs).
    pub fn job_cgroup_levels(&self) -> Vec<usize> {
        let mut v = vec![self.job_cgroup_level(), SLURM_JOB_CGROUP_LEVEL];
        v.dedup();
        v
    }

    /// The job's network namespace name (netns mode). The node name is part of it so that
    /// several nodes sharing one `/run/netns` (the test cluster) never collide.
    pub fn netns_name(&self, job_id: u32) -> String {
        format!("extnet-{}-{job_id}", self.node)
    }

    /// The host side of the job's veth pair (netns mode): at most 15 bytes.
    pub fn veth_name(job_id: u32) -> String {
        format!("xj{job_id}")
    }
}

fn is_cgroup2(p: &Path) -> bool {
    nix::sys::statfs::statfs(p)
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

/// `/sys/fs/cgroup/unified` on hybrid hosts (cgroup v1 controllers, v2 beside them),
/// `/sys/fs/cgroup` on pure v2 hosts.
pub fn detect_cgroup2_mount() -> PathBuf {
    let unified = PathBuf::from("/sys/fs/cgroup/unified");
    if is_cgroup2(&unified) {
        unified
    } else {
        PathBuf::from("/sys/fs/cgroup")
    }
}

/// The nearest ancestor of `p` (that exists) which is a cgroup2 mount root.
fn cgroup2_mount_of(p: &Path) -> PathBuf {
    for a in p.ancestors() {
        if a.exists() && is_cgroup2(a) {
            let parent_is = a.parent().is_some_and(is_cgroup2);
            if !parent_is {
                return a.to_owned();
            }
        }
    }
    detect_cgroup2_mount()
}
