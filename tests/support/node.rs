//! A node of its own for the node agent's kernel test and micro-benchmark: its policy file,
//! state directory and logs in a temporary directory, its cgroups in a subtree of their own
//! under the machine's cgroup2 mount (`<cgroup2>/extnet-<tag>-<pid>`). [`TestNode::finish`]
//! removes the base and all of it, and checks that nothing is left.
//!
//! The network namespace is the caller's: a private one ([`crate::netns::in_private_netns`])
//! with the node's interface ([`crate::netns::node_link`]: `eth0`, 10.99.0.11/24).

use crate::policy::TestPolicy;
use extnet::kernel::netlink::Netlink;
use extnet::plan::layout::{detect_cgroup2_mount, Layout};
use extnet_policy::Policy;
use std::path::PathBuf;

/// The test node's name (`%n` in its policy's paths).
pub const NODE: &str = "w1";

/// The node: see the module's doc.
pub struct TestNode {
    tmp: Option<tempfile::TempDir>,
    pub dir: PathBuf,
    pub policy_path: PathBuf,
    pub cgroup_base: PathBuf,
    pub policy: Policy,
    pub layout: Layout,
}

impl TestNode {
    /// The policy of [`TestPolicy::new`] for `eth0` in 10.99.0.0/24 (gateway .254, ports
    /// 20000-20767 in blocks of 256: three slots), cgroup mode, profile `default` for everyone,
    /// with every file and cgroup of the node under the node's own directories; written to
    /// `<dir>/extnet.toml`.
    pub fn new(tag: &str) -> TestNode {
        let tmp = tempfile::Builder::new()
            .prefix(&format!("extnet-{tag}-"))
            .tempdir()
            .expect("create the node's temporary directory");
        let dir = tmp.path().to_owned();
        let cgroup_base =
            detect_cgroup2_mount().join(format!("extnet-{tag}-{}", std::process::id()));
        let d = dir.display();
        let text = TestPolicy::new("eth0", "10.99.0", "20000-20767")
            .node(r#"mode = "cgroup""#)
            .node(&format!(r#"state_dir = "{d}/state/%n""#))
            .node(&format!(r#"cgroup_root = "{}/%n""#, cgroup_base.display()))
            .ports("block_size = 256")
            .table(&format!(
                "[log]\nlease_log = \"{d}/log/lease-%n.log\"\nfile = \"{d}/log/extnet-%n.log\"\naccounting = \"{d}/log/accounting-%n.log\""
            ))
            .profile("default", &["*"], &[]);
        let policy_path = dir.join("extnet.toml");
        text.write(&policy_path);
        let policy = text.policy();
        let layout = Layout::new(&policy, NODE);
        TestNode {
            tmp: Some(tmp),
            dir,
            policy_path,
            cgroup_base,
            policy,
            layout,
        }
    }

    /// Removes the base from the calling thread's namespace (`extnet::node::teardown`), the
    /// cgroup subtree and the directory; panics with what could not be removed or is left.
    pub fn finish(mut self) {
        let mut nl = Netlink::open().expect("netlink socket");
        let errors = extnet::node::teardown(&self.policy, &self.layout, &mut nl);
        assert!(errors.is_empty(), "node teardown: {errors:?}");
        let (dir, cg) = (self.dir.clone(), self.cgroup_base.clone());
        self.remove();
        assert!(!cg.exists(), "cgroup {} is left", cg.display());
        assert!(!dir.exists(), "{} is left", dir.display());
    }

    fn remove(&mut self) {
        // job cgroups (their bpf programs go with them), the node's, the subtree's root
        if let Ok(rd) = std::fs::read_dir(&self.layout.cgroup_root) {
            for e in rd.flatten() {
                if e.path().is_dir() {
                    let _ = std::fs::remove_dir(e.path());
                }
            }
        }
        let _ = std::fs::remove_dir(&self.layout.cgroup_root);
        let _ = std::fs::remove_dir(&self.cgroup_base);
        if let Some(tmp) = self.tmp.take() {
            let _ = tmp.close();
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.remove();
    }
}
