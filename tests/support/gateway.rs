//! The test cluster's gateway pair (gw1, gw2: keepalived and conntrackd on both): which
//! gateway holds which address, a gateway failed on purpose and restored afterwards, even when
//! the test panics (`slurm-test-env/gw-ctl`), and a throwaway cluster host that is no node.
#![allow(dead_code)]

use crate::cluster::{Cluster, Run};
use std::process::{Command, Stdio};

/// Virtual address `main`: master gw1, backup gw2; the nodes' `node.gateway`.
pub const VIP1: &str = "10.99.0.254";
/// Virtual address `bulk`: master gw2, backup gw1; profiles `bulk` and `bulkns`.
pub const VIP2: &str = "10.99.0.253";
/// The public address that moves with [`VIP1`].
pub const PUBLIC1: &str = crate::cluster::GATEWAY_PUBLIC;
/// The public address that moves with [`VIP2`].
pub const PUBLIC2: &str = crate::cluster::GATEWAY2_PUBLIC;
/// A cluster address that belongs to no node (nor to anything else of the test cluster).
pub const NOT_A_NODE: &str = "10.99.0.250";
/// Its IPv6 address.
pub const NOT_A_NODE6: &str = "fd00:78e7::250";
/// The namespace of the host at [`NOT_A_NODE`]: `slurm-test-env/down` removes it too.
const NOT_A_NODE_NETNS: &str = "xn-check";

impl Cluster {
    /// `slurm-test-env/gw-ctl ARGS`, as root; panics when it fails.
    pub fn gw_ctl(&self, args: &[&str]) -> Run {
        let o = Command::new(self.repo.join("slurm-test-env/gw-ctl"))
            .args(args)
            .env("XN_DIR", &self.xn_dir)
            .stdin(Stdio::null())
            .output()
            .expect("run slurm-test-env/gw-ctl");
        let r = Run::from_output(o);
        assert!(r.ok(), "gw-ctl {args:?} failed:\n{r}");
        r
    }

    /// Whether gateway `gw` (`gw1`, `gw2`) holds `addr` (IPv4 or IPv6) on one of its links.
    pub fn holds(&self, gw: &str, addr: &str) -> bool {
        let r = self.on_host(gw, &["ip", "-o", "addr", "show"]);
        r.stdout.contains(&format!(" {addr}/"))
    }

    /// Kills gateway `gw` (`gw-ctl fail`: its keepalived by PID, its links down); the
    /// returned guard brings it back (`gw-ctl restore`) when dropped, also when the test
    /// panics, unless [`FailedGateway::restore`] did already.
    pub fn fail_gateway(&self, gw: &'static str) -> FailedGateway<'_> {
        let guard = FailedGateway {
            cluster: self,
            gw,
            restored: false,
        };
        self.gw_ctl(&["fail", gw]);
        guard
    }

    /// `extnet gateway metrics` on gateway `gw`, with the state directory `up` renders its
    /// notify script with (`$XN_DIR/GW/run`); panics when it fails.
    pub fn gateway_metrics(&self, gw: &str) -> String {
        let bin = self.xn_dir.join("bin/extnet").display().to_string();
        let state = self.xn_dir.join(gw).join("run").display().to_string();
        let r = self.on_host(gw, &[&bin, "gateway", "metrics", "--state-dir", &state]);
        assert!(r.ok(), "extnet gateway metrics on {gw}:\n{r}");
        r.stdout
    }

    /// The value of `extnet_gateway_vrrp_master{instance="INSTANCE"}` on gateway `gw`, if
    /// its metrics have it.
    pub fn vrrp_master(&self, gw: &str, instance: &str) -> Option<u64> {
        let key = format!("extnet_gateway_vrrp_master{{instance=\"{instance}\"}} ");
        self.gateway_metrics(gw)
            .lines()
            .find_map(|l| l.strip_prefix(&key)?.parse().ok())
    }

    /// The rendered ruleset's drop of what it does not translate (`counter
    /// untranslated_drop` of gateway `gw`), in packets.
    pub fn gateway_drops(&self, gw: &str) -> u64 {
        let r = self.on_host(
            gw,
            &[
                "nft",
                "list",
                "counter",
                "inet",
                "extnet_gw",
                "untranslated_drop",
            ],
        );
        assert!(r.ok(), "list {gw}'s counter untranslated_drop:\n{r}");
        r.stdout
            .split_whitespace()
            .skip_while(|w| *w != "packets")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no packet count in {gw}'s untranslated_drop:\n{r}"))
    }

    /// A host on the cluster bridge at [`NOT_A_NODE`] and [`NOT_A_NODE6`], with a default
    /// route via `via` (of its family); removed when the guard is dropped.
    pub fn not_a_node(&self, via: &str) -> NotANode<'_> {
        let guard = NotANode { cluster: self };
        guard.remove();
        let ns = NOT_A_NODE_NETNS;
        let sw = |args: &[&str]| self.on_host("sw", args);
        let run = |r: Run, what: &str| assert!(r.ok(), "{what}:\n{r}");
        run(sh(&["ip", "netns", "add", ns]), "ip netns add");
        run(
            sw(&[
                "ip", "link", "add", "v-check", "type", "veth", "peer", "name", "eth0", "netns", ns,
            ]),
            "veth",
        );
        run(
            sw(&["ip", "link", "set", "v-check", "master", "br-cl", "up"]),
            "bridge port",
        );
        let inside = |args: &[&str]| self.on_host("check", args);
        run(inside(&["ip", "link", "set", "lo", "up"]), "lo up");
        let addr = format!("{NOT_A_NODE}/24");
        run(inside(&["ip", "addr", "add", &addr, "dev", "eth0"]), "addr");
        let addr6 = format!("{NOT_A_NODE6}/64");
        run(
            inside(&["ip", "-6", "addr", "add", &addr6, "dev", "eth0", "nodad"]),
            "IPv6 addr",
        );
        run(inside(&["ip", "link", "set", "eth0", "up"]), "eth0 up");
        run(
            inside(&["ip", "route", "add", "default", "via", via]),
            "default route",
        );
        guard
    }
}

fn sh(args: &[&str]) -> Run {
    let o = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .expect("run a command");
    Run::from_output(o)
}

/// A gateway killed by [`Cluster::fail_gateway`].
pub struct FailedGateway<'a> {
    cluster: &'a Cluster,
    gw: &'static str,
    restored: bool,
}

impl FailedGateway<'_> {
    /// Brings the gateway back (`gw-ctl restore`): it returns once the pair is as `up` left
    /// it.
    pub fn restore(&mut self) {
        self.restored = true;
        self.cluster.gw_ctl(&["restore", self.gw]);
    }
}

impl Drop for FailedGateway<'_> {
    fn drop(&mut self) {
        if !self.restored {
            self.restored = true;
            let r = Command::new(self.cluster.repo.join("slurm-test-env/gw-ctl"))
                .args(["restore", self.gw])
                .env("XN_DIR", &self.cluster.xn_dir)
                .status();
            if !matches!(r, Ok(s) if s.success()) {
                eprintln!("cannot restore gateway {}: {r:?}", self.gw);
            }
        }
    }
}

/// The host of [`Cluster::not_a_node`].
pub struct NotANode<'a> {
    cluster: &'a Cluster,
}

impl NotANode<'_> {
    /// Runs `args` in the host's namespace, as root.
    pub fn run(&self, args: &[&str]) -> Run {
        self.cluster.on_host("check", args)
    }

    fn remove(&self) {
        if std::path::Path::new(&format!("/run/netns/{NOT_A_NODE_NETNS}")).exists() {
            let _ = sh(&["ip", "netns", "del", NOT_A_NODE_NETNS]);
        }
        // the namespace's end of the veth goes with it, the switch's end a moment later: delete
        // it now, so that the next host can have its name
        let _ = self
            .cluster
            .on_host("sw", &["ip", "link", "del", "v-check"]);
    }
}

impl Drop for NotANode<'_> {
    fn drop(&mut self) {
        self.remove();
    }
}
