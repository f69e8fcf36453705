//! `gateway-render`: `extnet gateway render` and `nft -f` of a gateway's ruleset for the seed
//! site's 27,648 nodes (and 10, for the slope): the policy is parsed and validated, the
//! ruleset rendered, and loaded in one transaction into a private network namespace with the
//! gateway's two interfaces. Runs a few times each; checks that every node has its element.
//! Then the same with IPv6 on both virtual addresses ([`policy_text6`]): the dual-stack
//! ruleset has each node's element in both families' maps.

use crate::stats::show;
use extnet::plan::gateway;
use extnet_policy::Policy;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::netns::{in_private_netns, ip};

const RUNS: usize = 5;

/// A policy with `nodes` nodes behind two virtual addresses (half each, each gateway master
/// of one), a default pool of 4 blocks of 256 ports per node, 60 nodes per public address.
pub fn policy_text(nodes: u32) -> String {
    let half = nodes / 2;
    let publics = |first: u32, n: u32| {
        (0..n.div_ceil(60))
            .map(|i| {
                let a = std::net::Ipv4Addr::from(
                    u32::from(std::net::Ipv4Addr::new(198, 18, 0, 0)) + first + i,
                );
                format!("\"{a}\"")
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        r#"version = 1
[node]
interface = "eth0"
gateway = "10.0.0.254"
internal = ["10.0.0.0/8"]
[ports]
range = "4000-5023"
block_size = 256
[[profile]]
name = "default"
users = ["*"]
[gateways]
ports = "4000-65439"
ports_per_node = 1024
check = "203.0.113.10"
[[gateways.host]]
name = "gw1"
cluster_interface = "eth0"
cluster_address = "10.0.0.251/8"
public_interface = "eth1"
public_address = "203.0.113.1/24"
[[gateways.host]]
name = "gw2"
cluster_interface = "eth0"
cluster_address = "10.0.0.252/8"
public_interface = "eth1"
public_address = "203.0.113.2/24"
[[gateways.vip]]
name = "a"
address = "10.0.0.254"
vrid = 1
public = [{pa}]
holders = [{{ host = "gw1", priority = 150 }}, {{ host = "gw2", priority = 100 }}]
nodes = ["n[1-{half}]"]
[[gateways.vip]]
name = "b"
address = "10.0.0.253"
vrid = 2
public = [{pb}]
holders = [{{ host = "gw2", priority = 150 }}, {{ host = "gw1", priority = 100 }}]
nodes = ["n[{h1}-{nodes}]"]
[[gateways.nodes]]
names = "n[1-{nodes}]"
first_address = "10.1.0.1"
"#,
        pa = publics(0, half),
        pb = publics(1000, nodes - half),
        h1 = half + 1,
    )
}

/// [`policy_text`] with IPv6: both gateways with IPv6 legs, both virtual addresses with an
/// IPv6 address and as many public IPv6 addresses (2001:db8:V::/48 for virtual address V) as
/// IPv4 ones, every node
/// a unique local address.
pub fn policy_text6(nodes: u32) -> String {
    let text = policy_text(nodes);
    let public6 = |line: &str, vip: u32| {
        let n = line.matches('"').count() / 2;
        let list: Vec<String> = (1..=n)
            .map(|i| format!("\"2001:db8:{vip}::{i:x}\""))
            .collect();
        format!("public6 = [{}]", list.join(", "))
    };
    let mut out = String::with_capacity(text.len() * 3);
    let mut vip = 0;
    for line in text.lines() {
        out.push_str(line);
        out.push('\n');
        if let Some(a) = line.strip_prefix("public_address = \"203.0.113.") {
            let host = a.trim_end_matches("/24\"");
            out.push_str(&format!(
                "cluster_address6 = \"fd00:a::25{host}/48\"\npublic_address6 = \"2001:db8:ff::{host}/64\"\n"
            ));
        }
        if line.starts_with("public = [") {
            vip += 1;
            out.push_str(&format!("address6 = \"fd00:a::25{}\"\n", 5 - vip));
            out.push_str(&public6(line, vip));
            out.push('\n');
        }
        if line.starts_with("first_address = ") {
            out.push_str("first_address6 = \"fd00:a:1::1\"\n");
        }
    }
    out
}

fn load(text: &str) -> Duration {
    let t = Instant::now();
    let mut nft = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    nft.stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = nft.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "nft -f: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed()
}

pub fn run() {
    in_private_netns(|| {
        ip(&[
            "link", "add", "eth0", "type", "veth", "peer", "name", "eth1",
        ]);
        for (family, nodes) in [
            ("", 10u32),
            ("", 27_648),
            ("dual-stack, ", 10),
            ("dual-stack, ", 27_648),
        ] {
            let dual = !family.is_empty();
            let text = if dual {
                policy_text6(nodes)
            } else {
                policy_text(nodes)
            };
            let (mut parse, mut render, mut loads, mut total) = (vec![], vec![], vec![], vec![]);
            let (mut elements, mut elements6) = (0, 0);
            for _ in 0..RUNS {
                let t0 = Instant::now();
                let p = Policy::from_toml(&text, "bench").unwrap();
                let t1 = Instant::now();
                let r = gateway::render(
                    &p,
                    "gw1",
                    Path::new("/etc/extnet/gateway"),
                    Path::new(gateway::STATE_DIR),
                )
                .unwrap();
                let t2 = Instant::now();
                let l = load(&r.files[0].1);
                parse.push(t1 - t0);
                render.push(t2 - t1);
                loads.push(l);
                total.push(t2 - t0 + l);
                let count = |public: &str| {
                    r.files[0]
                        .1
                        .lines()
                        .filter(|l| l.contains(" . ") && l.contains(public))
                        .count()
                };
                (elements, elements6) = (count(" : 198.18."), count(" : 2001:db8:"));
            }
            assert_eq!(elements as u32, nodes, "every node in node_public");
            assert_eq!(
                elements6 as u32,
                if dual { nodes } else { 0 },
                "every node in node_public6 with IPv6, none without"
            );
            for (map, public, want) in [
                ("node_public", " : 198.18.", nodes),
                ("node_public6", " : 2001:db8:", if dual { nodes } else { 0 }),
            ] {
                let listed = Command::new("nft")
                    .args(["list", "map", "inet", "extnet_gw", map])
                    .output()
                    .unwrap();
                let n = String::from_utf8_lossy(&listed.stdout)
                    .matches(public)
                    .count();
                assert_eq!(n as u32, want, "every node's element is loaded in {map}");
            }
            show(
                &format!("{family}{nodes} nodes: parse + validate the policy"),
                parse,
            );
            show(&format!("{family}{nodes} nodes: render gw1"), render);
            show(
                &format!("{family}{nodes} nodes: nft -f (one transaction)"),
                loads,
            );
            show(&format!("{family}{nodes} nodes: all of it"), total);
        }
    });
}
