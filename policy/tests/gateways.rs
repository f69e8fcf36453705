//! `[gateways]`: validation (every error names the key and the fix), the deterministic NAT
//! mapping (disjoint slices, stable under appends, inverse lookup) and a node's own view.

mod support;

use extnet_policy::gateways::NatLookupError;
use std::net::Ipv4Addr;
use support::{parse_ok, ports, profile_x, refused, with};

/// Two gateways, two virtual addresses (each master on one), `nodes` behind `main`, and the
/// default pool 20000-20999 (blocks of 250) in slices of 1000 ports of 20000-23999: four
/// nodes per public address.
fn gw(nodes: &str, publics: &str, extra: &str) -> String {
    with(&format!(
        r#"{ports}{extra}
[gateways]
ports = "20000-23999"
ports_per_node = 1000
check = "203.0.113.10"

[[gateways.host]]
name = "gw1"
cluster_interface = "eth0"
cluster_address = "10.99.0.251/24"
public_interface = "eth1"
public_address = "203.0.113.1/24"

[[gateways.host]]
name = "gw2"
cluster_interface = "eth0"
cluster_address = "10.99.0.252/24"
public_interface = "eth1"
public_address = "203.0.113.2/24"
sync_interface = "eth2"
sync_address = "10.98.0.2/30"

[[gateways.vip]]
name = "main"
address = "10.99.0.254"
vrid = 77
public = [{publics}]
holders = [{{ host = "gw1", priority = 150 }}, {{ host = "gw2", priority = 100 }}]
nodes = [{nodes}]

[[gateways.vip]]
name = "second"
address = "10.99.0.253"
vrid = 78
public = ["198.51.100.1"]
holders = [{{ host = "gw2", priority = 150 }}, {{ host = "gw1", priority = 100 }}]
nodes = []

[[gateways.nodes]]
names = "n[1-20]"
first_address = "10.99.0.11"
"#,
        ports = ports("20000-20999", 250),
    ))
}

fn two() -> String {
    gw(r#""n[1-5]""#, r#""203.0.113.101", "203.0.113.102""#, "")
}

#[test]
fn nodes_fill_slices_then_addresses_and_get_disjoint_ports() {
    let p = parse_ok(&two());
    let g = p.gateways.as_ref().unwrap();
    assert_eq!(g.slices_per_address(), 4);
    let got: Vec<(String, Ipv4Addr, (u16, u16))> = (1..=5)
        .map(|i| {
            let e = &p.nat_entries(&format!("n{i}")).unwrap()[0];
            (e.node.clone(), e.public, e.ports)
        })
        .collect();
    let a1: Ipv4Addr = "203.0.113.101".parse().unwrap();
    let a2: Ipv4Addr = "203.0.113.102".parse().unwrap();
    assert_eq!(
        got,
        [
            ("n1".into(), a1, (20000, 20999)),
            ("n2".into(), a1, (21000, 21999)),
            ("n3".into(), a1, (22000, 22999)),
            ("n4".into(), a1, (23000, 23999)),
            ("n5".into(), a2, (20000, 20999)),
        ]
    );
    // a node's own view: its pool is its slice, its gateway its virtual address
    let n3 = p.for_node("n3").unwrap();
    assert_eq!((n3.ports.first, n3.ports.last), (22000, 22999));
    assert_eq!(n3.slot_block(1), Some((22250, 22499)));
    assert_eq!(n3.node.gateway.to_string(), "10.99.0.254");
    assert_eq!(n3.slots(), p.slots(), "every node has the same slots");
}

#[test]
fn appending_nodes_moves_nobody_and_inserting_one_moves_those_after_it() {
    let before = parse_ok(&two());
    let appended = parse_ok(&gw(
        r#""n[1-5]", "n9""#,
        r#""203.0.113.101", "203.0.113.102""#,
        "",
    ));
    for i in 1..=5 {
        let n = format!("n{i}");
        assert_eq!(before.nat_entries(&n), appended.nat_entries(&n), "{n}");
    }
    let inserted = parse_ok(&gw(
        r#""n9", "n[1-5]""#,
        r#""203.0.113.101", "203.0.113.102""#,
        "",
    ));
    assert_ne!(before.nat_entries("n1"), inserted.nat_entries("n1"));
}

#[test]
fn every_public_port_maps_back_to_exactly_the_node_that_uses_it() {
    let p = parse_ok(&two());
    for i in 1..=5 {
        let n = format!("n{i}");
        for e in p.nat_entries(&n).unwrap() {
            for port in [e.ports.0, e.ports.0 + 1, e.ports.1] {
                let back = p.nat_lookup(e.public, port).unwrap();
                assert_eq!((back.node.as_str(), back.ports), (n.as_str(), e.ports));
            }
        }
    }
    let a2: Ipv4Addr = "203.0.113.102".parse().unwrap();
    // slice 1 of the second address: node number 6, which the list does not have
    assert!(matches!(
        p.nat_lookup(a2, 21000),
        Err(NatLookupError::NoNode { .. })
    ));
    assert!(matches!(
        p.nat_lookup("203.0.113.1".parse::<Ipv4Addr>().unwrap(), 20000),
        Err(NatLookupError::NotPublic(_))
    ));
    assert!(matches!(
        p.nat_lookup(a2, 24000),
        Err(NatLookupError::PortOutside { .. })
    ));
}

#[test]
fn the_check_is_an_address_or_an_address_and_port() {
    let p = parse_ok(&two().replace("check = \"203.0.113.10\"", "check = \"203.0.113.10:8080\""));
    assert_eq!(
        p.gateways.unwrap().check,
        Some(("203.0.113.10".parse().unwrap(), Some(8080)))
    );
    refused(
        &two().replace("check = \"203.0.113.10\"", "check = \"203.0.113.10:0\""),
        "gateways.check",
        "not an IPv4 address or ADDRESS:PORT",
        "",
    );
}

#[test]
fn a_policy_without_gateways_is_its_own_view_for_every_node() {
    let p = parse_ok(&with(&ports("20000-20999", 250)));
    assert_eq!(p.for_node("anything").unwrap(), p);
    assert!(p.nat_entries("n1").unwrap().is_empty());
}

#[test]
fn a_node_in_no_nodes_list_gets_no_view() {
    let p = parse_ok(&two());
    let e = p.for_node("n7").unwrap_err().to_string();
    assert!(e.contains("n7") && e.contains("add it"), "{e}");
}

/// n1 and n2 behind `main`, and a profile `bulk` whose pool (21000-21499, so slices of 2000)
/// leaves through `second`, which lists no node.
fn with_bulk() -> String {
    gw(
        r#""n[1-2]""#,
        r#""203.0.113.101""#,
        &profile_x(
            "bulk",
            "gateway = \"10.99.0.253\"\nports = { range = \"21000-21499\", block_size = 500 }\n",
        ),
    )
    .replace("ports_per_node = 1000", "ports_per_node = 2000")
}

#[test]
fn a_profile_pool_behind_another_address_uses_the_nodes_place_there() {
    let text = with_bulk().replace("nodes = []", "nodes = [\"n2\", \"n1\"]");
    let p = parse_ok(&text);
    let n1 = p.nat_entries("n1").unwrap();
    // default pool via main (n1 is its node 0), bulk via second (n1 is its node 1)
    assert_eq!(
        (n1[0].public.to_string(), n1[0].ports),
        ("203.0.113.101".into(), (20000, 20999))
    );
    assert_eq!(
        (n1[1].public.to_string(), n1[1].ports),
        ("198.51.100.1".into(), (23000, 23499))
    );
    let v = p.for_node("n1").unwrap();
    assert_eq!(v.pools[1].gateway.to_string(), "10.99.0.253");
    assert_eq!(
        p.nat_lookup("198.51.100.1".parse::<Ipv4Addr>().unwrap(), 23100)
            .unwrap()
            .node,
        "n1"
    );
}

#[test]
fn too_few_public_addresses_is_refused_with_how_many_to_add() {
    refused(
        &gw(r#""n[1-9]""#, r#""203.0.113.101""#, ""),
        "gateways.vip[1].public",
        "has 9 nodes but its 1 public addresses hold 4",
        "add 2 public addresses",
    );
}

#[test]
fn a_pool_outside_the_first_slice_is_refused() {
    refused(
        &gw(r#""n1""#, r#""203.0.113.101""#, "")
            .replace("ports_per_node = 1000", "ports_per_node = 500"),
        "ports.range",
        "outside the first node slice 20000-20499",
        "raise ports_per_node",
    );
}

#[test]
fn bad_values_are_refused_each_with_its_key() {
    let t = two();
    for (from, to, key, problem) in [
        (
            "vrid = 77",
            "vrid = 0",
            "gateways.vip[1].vrid",
            "outside 1..=255",
        ),
        (
            "vrid = 78",
            "vrid = 77",
            "gateways.vip",
            "vrid \"77\" is given twice",
        ),
        (
            "priority = 100 }]\nnodes = [\"n[1-5]\"]",
            "priority = 150 }]\nnodes = [\"n[1-5]\"]",
            "gateways.vip[1].holders",
            "given to two holders",
        ),
        (
            "host = \"gw2\", priority = 100",
            "host = \"gw3\", priority = 100",
            "gateways.vip[1].holders",
            "no [[gateways.host]] name",
        ),
        (
            "\"n[1-5]\"",
            "\"n[1-5\"",
            "gateways.vip[1].nodes",
            "without its ']'",
        ),
        (
            "\"n[1-5]\"",
            "\"n[1-5]\", \"n3\"",
            "gateways.vip[1].nodes",
            "listed twice",
        ),
        (
            "\"n[1-5]\"",
            "\"m1\"",
            "gateways.vip[1].nodes",
            "no address in [[gateways.nodes]]",
        ),
        (
            "\"203.0.113.101\", \"203.0.113.102\"",
            "\"203.0.113.1\"",
            "gateways.vip[1].public",
            "own public_address",
        ),
        (
            "address = \"10.99.0.254\"",
            "address = \"10.98.0.254\"",
            "gateways.vip[1].address",
            "not inside any internal network",
        ),
        (
            "cluster_address = \"10.99.0.251/24\"",
            "cluster_address = \"10.99.0.251\"",
            "gateways.host[1].cluster_address",
            "with its prefix",
        ),
        (
            "ports = \"20000-23999\"",
            "ports = \"20000-19999\"",
            "gateways.ports",
            "not a port range",
        ),
        (
            "name = \"gw2\"",
            "name = \"gw1\"",
            "gateways.host",
            "given twice",
        ),
        (
            "check = \"203.0.113.10\"",
            "check = \"outside\"",
            "gateways.check",
            "not an IPv4 address",
        ),
        (
            "first_address = \"10.99.0.11\"",
            "first_address = \"10.99.0\"",
            "gateways.nodes[1].first_address",
            "not an IPv4 address",
        ),
    ] {
        assert!(t.contains(from), "{from}");
        refused(&t.replacen(from, to, 1), key, problem, "");
    }
}

#[test]
fn node_gateway_and_a_profile_gateway_must_be_virtual_addresses() {
    refused(
        &two().replace("gateway = \"10.99.0.254\"", "gateway = \"10.99.0.1\""),
        "node.gateway",
        "no [[gateways.vip]] address",
        "must be one of the virtual addresses",
    );
    let text = with_bulk();
    refused(
        &text,
        "gateways.vip[2].nodes",
        "not in its nodes list (first: \"n1\")",
        "append the missing nodes",
    );
}

#[test]
fn unknown_keys_in_gateways_are_refused() {
    let e =
        extnet_policy::Policy::from_toml(&two().replace("vrid = 77", "vrid = 77\nweight = 3"), "t")
            .unwrap_err()
            .to_string();
    assert!(e.contains("weight"), "{e}");
}

#[test]
fn the_report_gives_the_capacity() {
    let p = parse_ok(&two());
    let r = extnet_policy::report::summary(&p);
    assert!(
        r.contains("1000 ports per node = 4 node(s) per public address"),
        "{r}"
    );
    assert!(
        r.contains("pool [ports]: 1000 ports in blocks of 250 = 4 block(s)"),
        "{r}"
    );
    assert!(
        r.contains("5 node(s) (n[1-5]) need 2 public address(es), 2 given"),
        "{r}"
    );
    assert!(r.contains("host gw1: cluster eth0 10.99.0.251/24, public eth1 203.0.113.1/24, sync eth0 10.99.0.251/24; master of main, backup of second"), "{r}");
}

#[test]
fn the_advert_interval_is_whole_seconds_or_centiseconds_and_one_of_them() {
    let with_advert = |line: &str| {
        two().replace(
            "check = \"203.0.113.10\"",
            &format!("check = \"203.0.113.10\"\n{line}"),
        )
    };
    let ms = |text: &str| parse_ok(text).gateways.unwrap().advert_ms;
    assert_eq!(ms(&two()), 1000, "absent: 1 s");
    assert_eq!(ms(&with_advert("advert_secs = 2")), 2000);
    assert_eq!(ms(&with_advert("advert_ms = 500")), 500);
    refused(
        &with_advert("advert_ms = 505"),
        "gateways.advert_ms",
        "not a multiple of 10 ms",
        "500",
    );
    refused(
        &with_advert("advert_ms = 0"),
        "gateways.advert_ms",
        "within 10..=40950",
        "",
    );
    refused(
        &with_advert("advert_secs = 0"),
        "gateways.advert_secs",
        "outside 1..=255",
        "advert_ms",
    );
    refused(
        &with_advert("advert_secs = 1\nadvert_ms = 500"),
        "gateways.advert_ms",
        "both set",
        "keep one",
    );
}
