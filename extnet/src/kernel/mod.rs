//! Kernel objects, one module each; each function's doc says the `ip`, `nft` or shell command
//! it equals. Nothing here knows about jobs, slots or policies: names and numbers come in as
//! parameters.
//!
//! - [`netlink`]: the one netlink transport ([`netlink::socket`]: blocking socket, sequence
//!   numbers, acks, errors and their hints, for rtnetlink and nf_tables alike) and rtnetlink
//!   on it: [`netlink::link`], [`netlink::addr`], [`netlink::route`], [`netlink::rule`].
//! - [`nftables`]: loading a ruleset with `nft -f`, and nf_tables requests over raw netlink
//!   ([`nftables::netlink`]: elements, counters, existence checks).
//! - [`netns`]: named network namespaces. [`cgroup`]: cgroup v2 directories.
//! - [`bpf`]: the socket-mark program attached to a cgroup. [`sysctl`]: `/proc/sys` files.
//! - [`boot`]: when the machine booted.
//! - [`conntrack`]: connection tracking entries (ctnetlink).

pub mod boot;
pub mod bpf;
pub mod cgroup;
pub mod conntrack;
pub mod netlink;
pub mod netns;
pub mod nftables;
pub mod sysctl;
