//! `[gateways]` with IPv6: the keys (`vip.address6`, `vip.public6`, `host.cluster_address6`,
//! `host.public_address6`, `nodes.first_address6`) validated as their IPv4 twins and for
//! consistency; the IPv6 mapping the same arithmetic as the IPv4 one (same slice, same
//! ports); its inverse; and a policy without them unchanged.

mod support;

use extnet_policy::gateways::NatLookupError;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use support::{parse_ok, ports, refused, with};

/// Two gateways with IPv6 on both links, virtual address `main` with two public addresses of
/// each family, `n[1-5]` behind it (four nodes per address: n5 is node 4, on the second
/// address), nodes `n[1-20]` with consecutive IPv4 and IPv6 addresses.
fn dual() -> String {
    with(&format!(
        r#"{ports}
[gateways]
ports = "20000-23999"
ports_per_node = 1000

[[gateways.host]]
name = "gw1"
cluster_interface = "eth0"
cluster_address = "10.99.0.251/24"
public_interface = "eth1"
public_address = "203.0.113.1/24"
cluster_address6 = "fd00:78e7::251/64"
public_address6 = "2001:db8::1/64"

[[gateways.host]]
name = "gw2"
cluster_interface = "eth0"
cluster_address = "10.99.0.252/24"
public_interface = "eth1"
public_address = "203.0.113.2/24"
cluster_address6 = "fd00:78e7::252/64"
public_address6 = "2001:db8::2/64"

[[gateways.vip]]
name = "main"
address = "10.99.0.254"
address6 = "fd00:78e7::254"
vrid = 77
public = ["203.0.113.101", "203.0.113.102"]
public6 = ["2001:db8::101", "2001:db8::102"]
holders = [{{ host = "gw1", priority = 150 }}, {{ host = "gw2", priority = 100 }}]
nodes = ["n[1-5]"]

[[gateways.vip]]
name = "v4only"
address = "10.99.0.253"
vrid = 78
public = ["198.51.100.1"]
holders = [{{ host = "gw2", priority = 150 }}]
nodes = []

[[gateways.nodes]]
names = "n[1-20]"
first_address = "10.99.0.11"
first_address6 = "fd00:78e7::11"
"#,
        ports = ports("20000-20999", 250),
    ))
}

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

#[test]
fn ipv6_uses_the_ipv4_slices_and_ports_on_public6() {
    let p = parse_ok(&dual());
    let got: Vec<_> = (1..=5)
        .map(|i| {
            let e = &p.nat_entries(&format!("n{i}")).unwrap()[0];
            (e.public, e.public6, e.node_addr6, e.ports, e.slice)
        })
        .collect();
    let a = |s: &str| s.parse::<Ipv4Addr>().unwrap();
    assert_eq!(
        got,
        [
            (
                a("203.0.113.101"),
                Some(v6("2001:db8::101")),
                Some(v6("fd00:78e7::11")),
                (20000, 20999),
                0
            ),
            (
                a("203.0.113.101"),
                Some(v6("2001:db8::101")),
                Some(v6("fd00:78e7::12")),
                (21000, 21999),
                1
            ),
            (
                a("203.0.113.101"),
                Some(v6("2001:db8::101")),
                Some(v6("fd00:78e7::13")),
                (22000, 22999),
                2
            ),
            (
                a("203.0.113.101"),
                Some(v6("2001:db8::101")),
                Some(v6("fd00:78e7::14")),
                (23000, 23999),
                3
            ),
            (
                a("203.0.113.102"),
                Some(v6("2001:db8::102")),
                Some(v6("fd00:78e7::15")),
                (20000, 20999),
                0
            ),
        ]
    );
}

#[test]
fn an_ipv6_public_address_and_port_lead_back_to_the_node_of_its_ipv4_twin() {
    let p = parse_ok(&dual());
    for i in 1..=5 {
        let e = &p.nat_entries(&format!("n{i}")).unwrap()[0];
        for port in [e.ports.0, e.ports.1] {
            let four = p.nat_lookup(e.public, port).unwrap();
            let six = p.nat_lookup(e.public6.unwrap(), port).unwrap();
            assert_eq!(four, six);
            assert_eq!(six.node, format!("n{i}"));
        }
    }
    // slice 1 of the second address: node 5, which main's list does not have
    let e = p.nat_lookup(v6("2001:db8::102"), 21000).unwrap_err();
    assert!(matches!(e, NatLookupError::NoNode { .. }));
    assert!(
        e.to_string()
            .starts_with("[2001:db8::102]:21000 is node slice 5"),
        "{e}"
    );
    // a host's own address, an address of another family's list, a port outside
    for a in ["2001:db8::1", "::ffff:203.0.113.101", "2001:db8::103"] {
        let a: IpAddr = a.parse().unwrap();
        assert!(
            matches!(p.nat_lookup(a, 20000), Err(NatLookupError::NotPublic(_))),
            "{a}"
        );
    }
    assert!(matches!(
        p.nat_lookup(v6("2001:db8::101"), 24000),
        Err(NatLookupError::PortOutside { .. })
    ));
}

#[test]
fn without_ipv6_keys_the_mapping_is_the_ipv4_one_alone() {
    let ipv4_only = dual()
        .lines()
        .filter(|l| !l.contains("6 = ") && !l.starts_with("public6"))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(!ipv4_only.contains("fd00"), "{ipv4_only}");
    let p = parse_ok(&ipv4_only);
    let g = p.gateways.as_ref().unwrap();
    assert!(g.node_addresses6.is_empty());
    assert!(g
        .vips
        .iter()
        .all(|v| v.address6.is_none() && v.public6.is_empty()));
    assert!(g
        .hosts
        .iter()
        .all(|h| h.cluster_address6.is_none() && h.public_address6.is_none()));
    let dual_p = parse_ok(&dual());
    for i in 1..=5 {
        let n = format!("n{i}");
        let (four, both) = (p.nat_entries(&n).unwrap(), dual_p.nat_entries(&n).unwrap());
        assert!(four
            .iter()
            .all(|e| e.public6.is_none() && e.node_addr6.is_none()));
        // the IPv4 half of every entry is the same
        for (a, b) in four.iter().zip(&both) {
            assert_eq!(
                (a.public, a.ports, a.slice, a.node_addr),
                (b.public, b.ports, b.slice, b.node_addr)
            );
        }
    }
    // nodes with IPv6 addresses but no virtual address with IPv6: no IPv6 entries
    let no_vip6 = dual()
        .replace("address6 = \"fd00:78e7::254\"\n", "")
        .replace("public6 = [\"2001:db8::101\", \"2001:db8::102\"]\n", "");
    let p = parse_ok(&no_vip6);
    assert!(p
        .nat_entries("n1")
        .unwrap()
        .iter()
        .all(|e| e.public6.is_none() && e.node_addr6.is_none()));
}

#[test]
fn policy_check_prints_the_ipv6_capacity_beside_the_ipv4_one() {
    let text = extnet_policy::report::gateways(&parse_ok(&dual()));
    assert!(
        text.contains("vip main 10.99.0.254 (vrid 77): master gw1, holders gw1 (150), gw2 (100); 5 node(s) (n[1-5]) need 2 public address(es), 2 given (203.0.113.101, 203.0.113.102), room for 3 more node(s)\n    IPv6 fd00:78e7::254: the same 5 node(s) and slices need 2 public IPv6 address(es), 2 given (2001:db8::101, 2001:db8::102), room for 3 more node(s)\n"),
        "{text}"
    );
    assert!(
        text.contains("    IPv6: cluster fd00:78e7::251/64, public 2001:db8::1/64\n"),
        "{text}"
    );
    // the IPv4-only address has no IPv6 line
    assert_eq!(text.matches("    IPv6 ").count(), 1, "{text}");
}

#[test]
fn bad_ipv6_values_are_refused_each_with_its_key_line_and_fix() {
    let t = dual();
    for (from, to, key, problem, hint) in [
        (
            "address6 = \"fd00:78e7::254\"",
            "address6 = \"10.99.0.254\"",
            "gateways.vip[1].address6",
            "is an IPv4 address; this key is the IPv6 one",
            "IPv6 next hop",
        ),
        (
            "address6 = \"fd00:78e7::254\"",
            "address6 = \"fe80::254\"",
            "gateways.vip[1].address6",
            "not a unicast address a gateway can hold",
            "e.g. \"fd00:78e7::254\"",
        ),
        (
            "address6 = \"fd00:78e7::254\"",
            "address6 = \"fd00:78e7::254/64\"",
            "gateways.vip[1].address6",
            "has a prefix",
            "IPv6 next hop",
        ),
        (
            "address6 = \"fd00:78e7::254\"",
            "address6 = \"fd00:78e8::254\"",
            "gateways.vip[1].address6",
            "not in holder \"gw1\"'s IPv6 cluster network fd00:78e7::/64",
            "cluster_address6",
        ),
        (
            "public6 = [\"2001:db8::101\", \"2001:db8::102\"]",
            "public6 = [\"2001:db8::101\", \"ff02::1\"]",
            "gateways.vip[1].public6",
            "not a unicast address",
            "e.g. [\"2001:db8::101\"]",
        ),
        (
            "public6 = [\"2001:db8::101\", \"2001:db8::102\"]",
            "public6 = [\"2001:db8::101\", \"2001:db8::1\"]",
            "gateways.vip[1].public6",
            "own public_address6",
            "no host holds",
        ),
        (
            "public6 = [\"2001:db8::101\", \"2001:db8::102\"]",
            "public6 = [\"2001:db8::101\", \"2001:DB8:0::101\"]",
            "gateways.vip",
            "public IPv6 address \"2001:db8::101\" is given twice",
            "must be unique",
        ),
        (
            "public6 = [\"2001:db8::101\", \"2001:db8::102\"]",
            "public6 = [\"2001:db8::101\"]",
            "gateways.vip[1].public6",
            "has 5 nodes but its 1 public IPv6 addresses hold 4",
            "add 1 public IPv6 addresses",
        ),
        (
            "public6 = [\"2001:db8::101\", \"2001:db8::102\"]",
            "public6 = []",
            "gateways.vip[1].public6",
            "address6 without public6",
            "or remove address6",
        ),
        (
            "address6 = \"fd00:78e7::254\"\n",
            "",
            "gateways.vip[1].address6",
            "public6 without address6",
            "or remove public6",
        ),
        (
            "cluster_address6 = \"fd00:78e7::252/64\"\n",
            "",
            "gateways.host[2].cluster_address6",
            "public_address6 without cluster_address6",
            "give cluster_address6",
        ),
        (
            "cluster_address6 = \"fd00:78e7::252/64\"\npublic_address6 = \"2001:db8::2/64\"\n",
            "",
            "gateways.vip[1].holders",
            "\"gw2\" holds \"main\", which has address6, but has no cluster_address6 and public_address6",
            "give that [[gateways.host]] its IPv6 addresses",
        ),
        (
            "public_address6 = \"2001:db8::2/64\"",
            "public_address6 = \"2001:db8::2\"",
            "gateways.host[2].public_address6",
            "not an IPv6 address with its prefix",
            "ADDRESS/PREFIX",
        ),
        (
            "public_address6 = \"2001:db8::2/64\"",
            "public_address6 = \"203.0.113.2/24\"",
            "gateways.host[2].public_address6",
            "is an IPv4 address; this key is the IPv6 one",
            "ADDRESS/PREFIX",
        ),
        (
            "first_address6 = \"fd00:78e7::11\"",
            "first_address6 = \"fd00:78e7::11/64\"",
            "gateways.nodes[1].first_address6",
            "has a prefix",
            "unique local address",
        ),
        (
            "first_address6 = \"fd00:78e7::11\"",
            "first_address6 = \"feff:ffff:ffff:ffff:ffff:ffff:ffff:fff0\"",
            "gateways.nodes[1].first_address6",
            "list of 20 nodes runs past the unicast addresses",
            "lower first_address6",
        ),
        (
            "first_address6 = \"fd00:78e7::11\"\n",
            "",
            "gateways.vip[1].nodes",
            "has address6 but 5 of its nodes have no IPv6 address (first: \"n1\")",
            "first_address6",
        ),
        (
            "first_address6 = \"fd00:78e7::11\"\n",
            "first_address6 = \"fd00:78e7::11\"\n[[gateways.nodes]]\nnames = \"m[1-2]\"\nfirst_address = \"10.99.0.100\"\nfirst_address6 = \"fd00:78e7::20\"\n",
            "gateways.nodes[2].first_address6",
            "node \"m1\" would get fd00:78e7::20, which node \"n16\" has already",
            "its own IPv6 address",
        ),
    ] {
        assert!(t.contains(from), "{from}");
        let bad = t.replacen(from, to, 1);
        refused(&bad, key, problem, hint);
    }
}

#[test]
fn an_unknown_ipv6_key_is_refused_not_ignored() {
    let t = dual().replace("public6 = ", "public_6 = ");
    let e = extnet_policy::Policy::from_toml(&t, "t")
        .unwrap_err()
        .to_string();
    assert!(e.contains("public_6"), "{e}");
}
