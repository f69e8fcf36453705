//! What the integration tests share, written once (the micro-benchmarks of `bench/` use it
//! too):
//!
//! - [`root`]: the root check of the kernel and crash tests, which says why a test is skipped;
//! - [`netns`]: private network namespaces, the node's interface in one, `ip` inside;
//! - [`policy`]: the test policies, one base and its variations;
//! - [`tables`]: the parts of a node's base the kernel tests load by hand (rules, nft objects);
//! - [`node`]: a node of its own (policy, state, cgroups) for the node agent's tests;
//! - [`wait`]: a check polled until it holds, with a deadline;
//! - [`jsonl`]: extnet's JSON-lines logs, read back;
//! - [`cluster`]: the running test cluster: jobs as users, the nodes' state, residue checks.
//! - [`fail_closed`]: a node's base broken and repaired under a probing job, and the verdict.
//! - [`gateway`]: the test cluster's gateway pair: who holds which address, a gateway failed
//!   and restored, a cluster host that is no node.

pub mod cluster;
pub mod fail_closed;
pub mod gateway;
pub mod jsonl;
pub mod netns;
pub mod node;
pub mod policy;
pub mod root;
pub mod tables;
pub mod wait;

/// `v`, sorted: for comparing lists whose order the kernel chooses.
pub fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}
