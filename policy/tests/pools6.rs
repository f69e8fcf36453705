//! A pool's IPv6 gateway: a profile's `gateway6` (without `[gateways]`), or with `[gateways]`
//! the `address6` of the virtual address its `gateway` names; refused where it would be a
//! promise the node does not keep.

mod support;

use extnet_policy::Policy;
use std::net::Ipv6Addr;
use support::{parse_ok, ports, profile_x, refused, with};

const NODE6: &str = "gateway6 = \"fd00:78e7::254\"\ninternal6 = [\"fd00:78e7::/48\"]\n";

fn v6(s: &str) -> Option<Ipv6Addr> {
    Some(s.parse().unwrap())
}

#[test]
fn a_profiles_gateway6_gives_its_pool_a_table_and_other_pools_take_node_gateway6() {
    let p = parse_ok(&with(&format!(
        "{NODE6}{}{}{}",
        ports("20000-20999", 250),
        profile_x(
            "v6",
            "gateway6 = \"fd00:78e7::253\"\nports = { range = \"30000-30999\" }\n"
        ),
        profile_x(
            "v4",
            "gateway = \"10.99.0.253\"\nports = { range = \"40000-40999\" }\n"
        ),
    )));
    let default = &p.pools[0];
    let own6 = p.pool_of_profile("v6").unwrap();
    let own4 = p.pool_of_profile("v4").unwrap();
    assert_eq!(default.gateway6, v6("fd00:78e7::254"));
    assert_eq!(default.route_table, p.node.route_table);
    assert_eq!(own6.gateway6, v6("fd00:78e7::253"));
    assert_eq!(own6.gateway, p.node.gateway);
    assert_ne!(own6.route_table, p.node.route_table);
    assert_eq!(own4.gateway6, v6("fd00:78e7::254"));
    assert_ne!(own4.route_table, p.node.route_table);
    assert_ne!(own4.route_table, own6.route_table);
}

#[test]
fn a_bad_profile_gateway6_is_refused_with_its_key_line_and_fix() {
    let pool = "ports = { range = \"30000-30999\" }\n";
    let base = ports("20000-20999", 250);
    for (node, body, problem, hint) in [
        (
            "",
            format!("gateway6 = \"fd00:78e7::253\"\n{pool}"),
            "node.gateway6 is not",
            "set node.gateway6",
        ),
        (
            NODE6,
            format!("gateway6 = \"fd00:9999::253\"\n{pool}"),
            "not inside any network of node.internal6",
            "list the cluster's IPv6 network",
        ),
        (
            NODE6,
            format!("gateway6 = \"fe80::1\"\n{pool}"),
            "is link-local",
            "global or unique local address",
        ),
        (
            NODE6,
            "gateway6 = \"fd00:78e7::253\"\n".into(),
            "has no port pool of its own",
            "[profile.ports]",
        ),
    ] {
        let text = with(&format!("{node}{base}{}", profile_x("p", &body)));
        refused(&text, "profile[1].gateway6", problem, hint);
    }
    // the default gateway6 written again is not a pool of its own's
    parse_ok(&with(&format!(
        "{NODE6}{base}{}",
        profile_x("p", "gateway6 = \"fd00:78e7::254\"\n")
    )));
}

/// The test cluster's policy: profile `bulk` leaves through virtual address `bulk`
/// (10.99.0.253, fd00:78e7::253), the default pool through `main` (.254, ::254).
fn cluster() -> String {
    std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../slurm-test-env/extnet-test.toml"
    ))
    .unwrap()
}

/// `t` with the first `from` replaced by `to`; `from` must be there.
fn edit(t: &str, from: &str, to: &str) -> String {
    let e = t.replacen(from, to, 1);
    assert_ne!(e, t, "{from:?} is not in the policy");
    e
}

#[test]
fn with_gateways_each_pools_ipv6_follows_its_ipv4_to_the_same_virtual_address() {
    let p = parse_ok(&cluster());
    let n1 = p.for_node("n1").unwrap();
    let bulk = n1.pool_of_profile("bulk").unwrap();
    assert_eq!(bulk.gateway.to_string(), "10.99.0.253");
    assert_eq!(bulk.gateway6, v6("fd00:78e7::253"));
    assert_eq!(n1.pools[0].gateway6, v6("fd00:78e7::254"));
    assert_eq!(n1.node.gateway6, v6("fd00:78e7::254"));
    // a node that sends IPv6 needs an IPv6 twin of every virtual address
    let t = cluster();
    let no6 = edit(&t, "address6 = \"fd00:78e7::253\"\n", "");
    let no6 = edit(&no6, "public6 = [\"2001:db8::102\"]\n", "");
    refused(
        &no6,
        "gateways.vip[2].address6",
        "has no address6",
        "or remove node.gateway6",
    );
    // ... unless the nodes send none
    let v4 = edit(&no6, "gateway6 = \"fd00:78e7::254\"\n", "");
    if let Err(e) = Policy::from_toml(&v4, "t") {
        assert!(!e.to_string().contains("has no address6"), "{e}");
    }
    // node.gateway6 is one of the virtual addresses' address6
    let elsewhere = edit(
        &t,
        "gateway6 = \"fd00:78e7::254\"\n",
        "gateway6 = \"fd00:78e7::250\"\n",
    );
    refused(
        &elsewhere,
        "node.gateway6",
        "is no [[gateways.vip]] address6",
        "must be one of",
    );
    // with [gateways], a profile does not name its IPv6 gateway itself
    let named = edit(
        &t,
        "gateway = \"10.99.0.253\"\n",
        "gateway = \"10.99.0.253\"\ngateway6 = \"fd00:78e7::253\"\n",
    );
    let bulk_index = p.profiles.iter().position(|q| q.name == "bulk").unwrap() + 1;
    refused(
        &named,
        &format!("profile[{bulk_index}].gateway6"),
        "with [gateways]",
        "remove gateway6",
    );
}
