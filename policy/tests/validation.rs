//! Every validation error of the policy file: each names the key, its line and column, and a
//! hint. Positions are checked against where the offending text really is in the file.

mod support;

use extnet_policy::ValidationError;
use support::{errors, invalid_errors, parse_ok, ports, profile_x, with, with_internal, NODE};

/// 1-based line and column of the `nth` (0-based) occurrence of `needle` in `text`.
fn at_nth(text: &str, needle: &str, nth: usize) -> (usize, usize) {
    let off = text
        .match_indices(needle)
        .nth(nth)
        .unwrap_or_else(|| panic!("{needle:?} not in:\n{text}"))
        .0;
    let line = text[..off].matches('\n').count() + 1;
    let col = off - text[..off].rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

fn at(text: &str, needle: &str) -> (usize, usize) {
    at_nth(text, needle, 0)
}

/// The one error of `text`, which must be about `key`, at the start of `needle`, with a hint
/// and a problem containing `problem`.
#[track_caller]
fn check(text: &str, key: &str, needle: &str, problem: &str) -> ValidationError {
    check_nth(text, key, needle, 0, problem)
}

#[track_caller]
fn check_nth(text: &str, key: &str, needle: &str, nth: usize, problem: &str) -> ValidationError {
    let errs = errors(text);
    let e = errs
        .iter()
        .find(|e| e.key == key)
        .unwrap_or_else(|| panic!("no error for key {key}: {errs:#?}\nin:\n{text}"))
        .clone();
    let (line, col) = at_nth(text, needle, nth);
    assert_eq!(
        (e.line, e.column),
        (Some(line), Some(col)),
        "{key}: position of {needle:?}: {e}"
    );
    assert!(e.problem.contains(problem), "{key}: {e}");
    assert!(e.hint.len() > 10, "{key}: a real hint: {e}");
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!("line {line}, column {col}: {key}: ")),
        "{shown}"
    );
    e
}

/// The policy with one profile `p` of `body`.
fn profile(body: &str) -> String {
    with(&support::profile("p", body))
}

// --- not TOML, unknown keys, wrong types (reported by the parser) ---------------------------

#[test]
fn toml_syntax_error_has_line_and_column() {
    let t = with("[ports]\nrange = \"20000-30000\nblock_size = 256\n");
    let e = errors(&t);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].line, Some(at(&t, "\"20000").0), "{}", e[0]);
    assert!(
        e[0].column.is_some() && e[0].hint.contains("TOML"),
        "{}",
        e[0]
    );
}

#[test]
fn unknown_keys_name_their_table() {
    check(
        &with("gatway = \"x\"\n"),
        "node.gatway",
        "gatway",
        "unknown field `gatway`",
    );
    check(
        &with("[ports]\nblocksize = 2\n"),
        "ports.blocksize",
        "blocksize",
        "unknown field",
    );
    check(
        &format!("colour = 1\n{NODE}"),
        "colour",
        "colour",
        "unknown field",
    );
    check(
        &with("[[profile]]\nname = \"a\"\nuser = [\"x\"]\n"),
        "profile[1].user",
        "user =",
        "unknown field `user`",
    );
    check(
        &with("[[profile]]\nname = \"a\"\nusers = [\"x\"]\n[[profile]]\nname = \"b\"\nusers = [\"x\"]\n[profile.deny]\nuser = [\"y\"]\n"),
        "profile[2].deny.user",
        "user =",
        "unknown field",
    );
    check(
        &profile("users = [\"x\"]\ndestinations = [{ net = \"1.2.3.4\", prot = \"tcp\" }]\n"),
        "profile[1].destinations.prot",
        "prot ",
        "unknown field `prot`",
    );
    check(
        &profile("users = [\"x\"]\n[[profile.destinations]]\nnet = \"1.2.3.4\"\n[[profile.destinations]]\nnet = \"1.2.3.5\"\nport = 80\n"),
        "profile[1].destinations[2].port",
        "port ",
        "unknown field",
    );
}

#[test]
fn wrong_types_missing_keys_and_unknown_values() {
    check(
        &with("[[profile]]\nname = 3\n"),
        "profile[1].name",
        "3\n",
        "invalid type",
    );
    check(
        &with("[ports]\nblock_size = \"256\"\n"),
        "ports.block_size",
        "\"256\"",
        "invalid type",
    );
    check(
        &with("[log]\ninterim_secs = -5\n"),
        "log.interim_secs",
        "-5",
        "",
    );
    check(
        &profile("users = [\"x\"]\nmode = \"vm\"\n"),
        "profile[1].mode",
        "\"vm\"",
        "unknown variant",
    );
    check(
        &profile("users = [\"x\"]\ndestinations = [{ net = \"1.2.3.4\", proto = \"sctp\" }]\n"),
        "profile[1].destinations.proto",
        "\"sctp\"",
        "unknown variant",
    );
    let e = check(
        &profile("users = [\"x\"]\ndestinations = [{ net = \"1.2.3.4\", ports = [80] }]\n"),
        "profile[1].destinations.ports",
        "[80]",
        "",
    );
    assert!(e.hint.contains("\"80,443,8000-8100\""), "{e}");
    let t = "version = 1\n[node]\ngateway = \"10.0.0.1\"\n";
    let e = errors(t);
    assert_eq!(e[0].key, "node.interface", "{}", e[0]);
    assert!(
        e[0].problem.contains("missing field `interface`") && e[0].line.is_some(),
        "{}",
        e[0]
    );
    let e = errors("version = 1\n");
    assert!(e[0].problem.contains("missing field `node`"), "{}", e[0]);
}

// --- node ---------------------------------------------------------------------------------

#[test]
fn version() {
    check(
        &NODE.replace("version = 1", "version = 2"),
        "version",
        "2\n",
        "version 2 is not supported",
    );
}

#[test]
fn node_interface_and_gateway() {
    // (interface, where the error points)
    for (interface, needle) in [
        ("\"a/b\"", "\"a/b\""),
        ("\"averyveryverylongname\"", "\"avery"),
    ] {
        check(
            &NODE.replace("\"eth0\"", interface),
            "node.interface",
            needle,
            "not a network interface name",
        );
    }
    check(
        &NODE.replace("10.99.0.254", "10.99.0.999"),
        "node.gateway",
        "\"10.99.0.999\"",
        "not an IPv4 address",
    );
    check(
        &with_internal("[\"10.98.0.0/24\"]"),
        "node.internal",
        "\"10.99.0.254\"",
        "gateway 10.99.0.254 is not inside any internal network",
    );
}

#[test]
fn node_internal_networks() {
    let t = with_internal("[\"10.99.0.0/24\", \"10.99.0.0/16\"]");
    check(&t, "node.internal", "\"10.99.0.0/16\"", "overlap");
    let t = with_internal("[\"10.99.0.0/24\", \"10.98.0.1/16\"]");
    let e = check(&t, "node.internal", "\"10.98.0.1/16\"", "host bits set");
    assert!(e.hint.contains("10.98.0.0/16"), "{e}");
    let t = with_internal("[\"10.99.0.0/24\", \"ten/8\"]");
    check(
        &t,
        "node.internal",
        "\"ten/8\"",
        "not an IPv4 or IPv6 network",
    );
    let t = with_internal("[\"10.99.0.0/24\", \"fd00::/8\"]");
    let e = check(&t, "node.internal", "\"fd00::/8\"", "is an IPv6 network");
    assert!(e.hint.contains("node.internal6"), "{e}");
}

/// `[node]` of [`NODE`] with IPv6: `internal6` and `gateway6` as given.
fn with_ipv6(internal6: &str, gateway6: &str) -> String {
    with(&format!("internal6 = {internal6}\ngateway6 = {gateway6}\n"))
}

#[test]
fn node_ipv6_gateway_and_internal_networks() {
    let p = parse_ok(&with_ipv6("[\"fd00:78e7::/48\"]", "\"fd00:78e7::1\""));
    assert_eq!(p.node.gateway6, Some("fd00:78e7::1".parse().unwrap()));
    assert_eq!(p.node.internal6, ["fd00:78e7::/48".parse().unwrap()]);
    // no gateway6: IPv6 stays dropped, whatever the profiles say
    let p = parse_ok(&with(&support::profile_x("p", "")));
    assert_eq!(p.node.gateway6, None);
    assert!(p.profiles[0].ipv6 && !p.ipv6_of(&p.profiles[0]));
    // the gateway must be inside internal6, which must hold it
    let e = check(
        &with_ipv6("[\"fd00:1::/48\"]", "\"fd00:78e7::1\""),
        "node.gateway6",
        "\"fd00:78e7::1\"",
        "not inside any network of node.internal6",
    );
    assert!(e.hint.contains("internal6"), "{e}");
    check(
        &with("gateway6 = \"fd00:78e7::1\"\n"),
        "node.gateway6",
        "\"fd00:78e7::1\"",
        "not inside any network of node.internal6",
    );
    for (gw, problem) in [
        ("\"10.99.0.9\"", "not an IPv6 address"),
        ("\"fd00:78e7::/64\"", "not an IPv6 address"),
        ("\"fe80::1\"", "link-local"),
        ("\"ff02::1\"", "not a unicast address"),
    ] {
        check(
            &with_ipv6("[\"fd00:78e7::/48\"]", gw),
            "node.gateway6",
            gw,
            problem,
        );
    }
    // internal6: IPv6 only, network addresses, no overlap
    for (list, needle, problem) in [
        (
            "[\"fd00:78e7::/48\", \"fd00:78e7:0:1::/64\"]",
            "\"fd00:78e7:0:1::/64\"",
            "overlap",
        ),
        (
            "[\"fd00:78e7::/48\", \"fd01::1/64\"]",
            "\"fd01::1/64\"",
            "host bits set",
        ),
        (
            "[\"fd00:78e7::/48\", \"10.0.0.0/8\"]",
            "\"10.0.0.0/8\"",
            "is an IPv4 network",
        ),
        (
            "[\"fd00:78e7::/48\", \"fd01::/129\"]",
            "\"fd01::/129\"",
            "not an IPv4 or IPv6",
        ),
    ] {
        check(
            &with_ipv6(list, "\"fd00:78e7::1\""),
            "node.internal6",
            needle,
            problem,
        );
    }
    let e = check(
        &with_ipv6("[\"fd00:78e7::/48\", \"fd01::1/64\"]", "\"fd00:78e7::1\""),
        "node.internal6",
        "\"fd01::1/64\"",
        "host bits set",
    );
    assert!(e.hint.contains("fd01::/64"), "{e}");
}

/// `[node]` with IPv6, `extra` more node keys, and a netns profile `n` with `rest`.
fn netns6(extra: &str, rest: &str) -> String {
    with(&format!(
        "internal6 = [\"fd00:78e7::/48\"]\ngateway6 = \"fd00:78e7::1\"\n{extra}{}",
        profile_x("n", &format!("mode = \"netns\"\n{rest}"))
    ))
}

#[test]
fn netns_subnet6_is_required_for_netns_ipv6_unique_local_and_holds_every_slot() {
    let p = parse_ok(&netns6("netns_subnet6 = \"fd00:ffff::/112\"\n", ""));
    assert_eq!(
        p.node.netns_subnet6,
        Some("fd00:ffff::/112".parse().unwrap())
    );
    assert!(p.netns_ipv6_of(p.profile("n").unwrap()));
    // required when a netns profile has IPv6 on a node with gateway6: at the [node] header
    let t = netns6("", "");
    let e = check(
        &t,
        "node.netns_subnet6",
        "[node]",
        "profile \"n\" uses netns mode with IPv6",
    );
    assert!(
        e.hint.contains("netns_subnet6 = ") && e.hint.contains("ipv6 = false"),
        "{e}"
    );
    // not with ipv6 = false, nor without gateway6, nor for cgroup mode
    let p = parse_ok(&netns6("", "ipv6 = false\n"));
    assert!(p.node.netns_subnet6.is_none() && !p.netns_ipv6_of(p.profile("n").unwrap()));
    parse_ok(&with(&profile_x("n", "mode = \"netns\"\n")));
    parse_ok(&with(&format!(
        "internal6 = [\"fd00:78e7::/48\"]\ngateway6 = \"fd00:78e7::1\"\n{}",
        profile_x("c", "")
    )));
    // bad values, each at the key
    for (value, problem) in [
        ("\"fd00:ffff::1/112\"", "host bits set"),
        ("\"10.0.0.0/16\"", "is an IPv4 network"),
        ("\"2001:db8::/112\"", "not a unique local network"),
        ("\"fd00:ffff::/127\"", "smaller than one /126"),
        (
            "\"fd00:78e7:0:1::/112\"",
            "overlaps the internal IPv6 network fd00:78e7::/48",
        ),
        (
            "\"fd00::/8\"",
            "overlaps the internal IPv6 network fd00:78e7::/48",
        ),
        ("\"nonsense\"", "not an IPv4 or IPv6 network"),
    ] {
        let t = netns6(&format!("netns_subnet6 = {value}\n"), "");
        check(&t, "node.netns_subnet6", value, problem);
    }
    // a /126 per slot of all pools: a /122 holds 16 links, the default pool here 16 slots
    let pooled = |subnet6: &str| {
        format!(
            "{}{}{}",
            netns6(&format!("netns_subnet6 = \"{subnet6}\"\n"), ""),
            ports("20000-24095", 256),
            profile_x(
                "b",
                "[profile.ports]\nrange = \"30000-31023\"\nblock_size = 1024\n"
            )
        )
    };
    parse_ok(&pooled("fd00:ffff::/121"));
    check(
        &pooled("fd00:ffff::/122"),
        "node.netns_subnet6",
        "\"fd00:ffff::/122\"",
        "holds 16 /126 links but the port pools have 17 slots",
    );
}

#[test]
fn profile_ipv6_flag() {
    let node = |rest: &str| {
        with_ipv6("[\"fd00:78e7::/48\"]", "\"fd00:78e7::1\"")
            + &support::profile_x("a", "")
            + &support::profile_x("b", &format!("ipv6 = false\n{rest}"))
    };
    let p = parse_ok(&node(""));
    assert!(
        p.ipv6_of(p.profile("a").unwrap()),
        "default: true with gateway6"
    );
    assert!(!p.ipv6_of(p.profile("b").unwrap()));
    // an IPv6 destination of a profile without IPv6 can never be reached
    let t = node("destinations = [ { net = \"192.0.2.0/24\" }, { net = \"2001:db8::/32\" } ]\n");
    let e = check(
        &t,
        "profile[2].destinations[2].net",
        "false",
        "ipv6 = false",
    );
    assert!(e.hint.contains("ipv6 = false"), "{e}");
    check(
        &(with_ipv6("[\"fd00:78e7::/48\"]", "\"fd00:78e7::1\"")
            + &support::profile_x("a", "ipv6 = \"yes\"\n")),
        "profile[1].ipv6",
        "\"yes\"",
        "",
    );
}

#[test]
fn node_routing_table_fwmark_and_netns_subnet() {
    check(
        &with("route_table = 254\n"),
        "node.route_table",
        "254\n",
        "reserved",
    );
    check(
        &with("route_table = 0\n"),
        "node.route_table",
        "0\n",
        "reserved",
    );
    check(
        &with("fwmark = 0x10001\n"),
        "node.fwmark",
        "0x10001",
        "low 16 bits",
    );
    check(&with("fwmark = 0\n"), "node.fwmark", "0\n", "low 16 bits");
    // the checked bit must be a bit of its own: not the slot's, not the socket's flag
    check(
        &with("checked_fwmark = 0x10000\n"),
        "node.checked_fwmark",
        "0x10000",
        "overlaps",
    );
    check(
        &with("checked_fwmark = 0x28000\n"),
        "node.checked_fwmark",
        "0x28000",
        "low 16 bits",
    );
    check(
        &with("checked_fwmark = 0\n"),
        "node.checked_fwmark",
        "0\n",
        "is 0",
    );
    // the hold table is a table of its own
    check_nth(
        &with("route_table = 300\nhold_table = 300\n"),
        "node.hold_table",
        "300\n",
        1,
        "is node.route_table",
    );
    check(
        &with("hold_table = 254\n"),
        "node.hold_table",
        "254\n",
        "reserved",
    );
    check(
        &with("netns_subnet = \"100.64.0.0/31\"\n"),
        "node.netns_subnet",
        "\"100.64.0.0/31\"",
        "/30 or larger",
    );
    check(
        &with("netns_subnet = \"10.99.0.0/28\"\n"),
        "node.netns_subnet",
        "\"10.99.0.0/28\"",
        "overlaps the internal network 10.99.0.0/24",
    );
}

#[test]
fn netns_mtu_is_within_ipv6_minimum_and_the_largest_ipv4_packet() {
    for bad in ["1279", "65536", "0"] {
        check(
            &with(&format!("netns_mtu = {bad}\n")),
            "node.netns_mtu",
            &format!("{bad}\n"),
            "outside 1280..=65535",
        );
    }
    for good in [1280, 9000, 65535] {
        let p = parse_ok(&with(&format!("netns_mtu = {good}\n")));
        assert_eq!(p.node.netns_mtu, Some(good));
    }
    // unset: the veth follows node.interface
    assert_eq!(parse_ok(&with("")).node.netns_mtu, None);
}

#[test]
fn netns_nameservers_are_reachable_ipv4_addresses_and_at_most_three() {
    check(
        &with("netns_nameservers = [\"10.99.0.53\", \"resolver\"]\n"),
        "node.netns_nameservers",
        "\"resolver\"",
        "not an IPv4 address",
    );
    check(
        &with("netns_nameservers = [\"127.0.0.53\"]\n"),
        "node.netns_nameservers",
        "\"127.0.0.53\"",
        "not reachable from a job's network namespace",
    );
    check(
        &with("netns_nameservers = [\"10.0.0.1\", \"10.0.0.2\", \"10.0.0.3\", \"10.0.0.4\"]\n"),
        "node.netns_nameservers",
        "\"10.0.0.4\"",
        "only the first 3",
    );
    let p = parse_ok(&with(
        "netns_nameservers = [\"10.99.0.53\", \"192.0.2.53\"]\n",
    ));
    assert_eq!(
        p.node.netns_nameservers,
        [
            "10.99.0.53".parse::<std::net::Ipv4Addr>().unwrap(),
            "192.0.2.53".parse().unwrap()
        ]
    );
    assert!(parse_ok(&with("")).node.netns_nameservers.is_empty());
}

/// Job links from a /28 (4 /30s), the default pool 20000-21023 in blocks of `block_size`, and
/// one netns profile `n`.
fn netns_28(block_size: u32) -> String {
    with(&format!(
        "netns_subnet = \"100.64.0.0/28\"\n{}{}",
        ports("20000-21023", block_size),
        profile_x("n", "mode = \"netns\"\n")
    ))
}

#[test]
fn netns_subnet_must_hold_the_pool_when_a_profile_uses_netns() {
    let t = netns_28(64);
    check(
        &t,
        "node.netns_subnet",
        "\"100.64.0.0/28\"",
        "holds 4 /30 links but the port pools have 16 slots",
    );
    // without a netns profile the subnet is unused and may be small
    parse_ok(&t.replace("mode = \"netns\"\n", ""));
}

// --- ports ----------------------------------------------------------------------------------

#[test]
fn port_pool() {
    check(
        &with("[ports]\nrange = \"30000-20000\"\n"),
        "ports.range",
        "\"30000-20000\"",
        "not a port range",
    );
    check(
        &with("[ports]\nrange = \"80-90000\"\n"),
        "ports.range",
        "\"80-",
        "not a port range",
    );
    check(
        &with("[ports]\nblock_size = 8\n"),
        "ports.block_size",
        "8\n",
        "outside 16..=32768",
    );
    check(
        &with("[ports]\nrange = \"20000-20010\"\n"),
        "ports.block_size",
        "\"20000-20010\"",
        "smaller than one block",
    );
    check(
        &with("[ports]\nquarantine_secs = 90000\n"),
        "ports.quarantine_secs",
        "90000",
        "more than a day",
    );
}

// --- profiles: names and principals ------------------------------------------------------

#[test]
fn profile_names() {
    let long = format!("\"{}\"", "x".repeat(33));
    // (name, where the error points)
    for (name, needle) in [("\"a b\"", "\"a b\""), (long.as_str(), "\"xxx")] {
        check(
            &profile("users = [\"x\"]\n").replace("\"p\"", name),
            "profile[1].name",
            needle,
            "not a valid profile name",
        );
    }
    let t = with(
        "[[profile]]\nname = \"a\"\nusers = [\"x\"]\n[[profile]]\nname = \"a\"\nusers = [\"y\"]\n",
    );
    let e = check_nth(
        &t,
        "profile[2].name",
        "\"a\"",
        1,
        "profile name \"a\" is used twice",
    );
    assert!(
        e.problem
            .contains(&format!("first on line {}", at(&t, "\"a\"").0)),
        "{e}"
    );
}

#[test]
fn principal_names() {
    check(
        &profile("users = [\"a b\"]\n"),
        "profile[1].users",
        "\"a b\"",
        "not a valid name",
    );
    check(
        &profile("groups = [\"a,b\"]\n"),
        "profile[1].groups",
        "\"a,b\"",
        "not a valid name",
    );
    check(
        &profile("users = [\"x\"]\naccounts = [\"\"]\n"),
        "profile[1].accounts",
        "\"\"]",
        "not a valid name",
    );
    check(
        &profile("groups = [\"*\"]\n"),
        "profile[1].groups",
        "\"*\"",
        "only allowed in users",
    );
    check(
        &profile("users = [\"x\", \"y\", \"x\"]\n"),
        "profile[1].users",
        "\"x\"]",
        "listed twice",
    );
    check(
        &profile("users = [\"x\"]\npartitions = [\"a b\"]\n"),
        "profile[1].partitions",
        "\"a b\"",
        "not a valid name",
    );
    check(
        &profile("users = [\"x\"]\nqos = [\"*\"]\n"),
        "profile[1].qos",
        "\"*\"",
        "only allowed in users",
    );
    check(
        &profile("users = [\"x\"]\n[profile.deny]\ngroups = [\"\"]\n"),
        "profile[1].deny.groups",
        "\"\"]",
        "not a valid name",
    );
}

#[test]
fn profiles_that_can_never_match() {
    check(&profile(""), "profile[1]", "[[profile]]", "can never match");
    check(&profile("users = [\"x\"]\ngroups = [\"g\"]\n[profile.deny]\nusers = [\"x\"]\ngroups = [\"g\"]\n"), "profile[1].deny", "[profile.deny]", "denies every user, group and account it allows");
    check(
        &profile("accounts = [\"a\"]\n[profile.deny]\nusers = [\"*\"]\n"),
        "profile[1].deny",
        "[profile.deny]",
        "can never match",
    );
    // denying some of those allowed is fine
    parse_ok(&profile(
        "groups = [\"g\"]\n[profile.deny]\nusers = [\"x\"]\n",
    ));
}

#[test]
fn auto_principals_must_be_allowed_and_not_denied() {
    // (profile body, key, needle, which occurrence of it, problem)
    let cases = [
        (
            "users = [\"x\"]\n[profile.auto]\nusers = [\"y\"]\n",
            "profile[1].auto.users",
            "\"y\"",
            0,
            "not in its users",
        ),
        (
            "users = [\"x\"]\n[profile.auto]\ngroups = [\"g\"]\n",
            "profile[1].auto.groups",
            "\"g\"",
            0,
            "group \"g\" gets the profile without asking but is not in its groups",
        ),
        (
            "users = [\"x\"]\n[profile.auto]\naccounts = [\"a\"]\n",
            "profile[1].auto.accounts",
            "\"a\"]",
            0,
            "account \"a\" gets the profile without asking but is not in its accounts",
        ),
        (
            "users = [\"*\"]\n[profile.auto]\nusers = [\"*\"]\n",
            "profile[1].auto.users",
            "\"*\"]\n",
            1,
            "every job of the cluster",
        ),
        (
            "users = [\"x\", \"y\"]\n[profile.deny]\nusers = [\"y\"]\n[profile.auto]\nusers = [\"y\"]\n",
            "profile[1].auto.users",
            "\"y\"]\n",
            2,
            "also denied",
        ),
    ];
    for (body, key, needle, nth, problem) in cases {
        check_nth(&profile(body), key, needle, nth, problem);
    }
    // `users = ["*"]` covers auto principals of any kind
    parse_ok(&profile(
        "users = [\"*\"]\n[profile.auto]\ngroups = [\"g\"]\n",
    ));
}

// --- destinations ---------------------------------------------------------------------------

fn dests(list: &str) -> String {
    profile(&format!("users = [\"x\"]\ndestinations = [\n{list}]\n"))
}

#[test]
fn destination_networks() {
    check(
        &profile("users = [\"x\"]\ndestinations = []\n"),
        "profile[1].destinations",
        "[]",
        "reach nothing",
    );
    // (the entry's network, problem)
    for (net, problem) in [
        ("\"1.2.3.0/33\"", "not an IPv4 or IPv6 network"),
        ("\"1.2.3.4/24\"", "host bits set"),
        (
            "\"10.99.0.0/25\"",
            "inside the internal network 10.99.0.0/24",
        ),
    ] {
        check(
            &dests(&format!("  {{ net = {net} }},\n")),
            "profile[1].destinations[1].net",
            net,
            problem,
        );
    }
    // IPv6 entries: host bits, internal6, redundancy within the family only
    let v6 = |list: &str| {
        with(&format!(
            "internal6 = [\"fd00:78e7::/48\"]\ngateway6 = \"fd00:78e7::1\"\n{}",
            support::profile_x("p", &format!("destinations = [\n{list}]\n"))
        ))
    };
    for (net, problem) in [
        ("\"2001:db8::1/32\"", "host bits set"),
        (
            "\"fd00:78e7:0:5::/64\"",
            "inside the internal network fd00:78e7::/48",
        ),
        ("\"2001:db8::/129\"", "not an IPv4 or IPv6 network"),
    ] {
        check(
            &v6(&format!("  {{ net = {net} }},\n")),
            "profile[1].destinations[1].net",
            net,
            problem,
        );
    }
    check(
        &v6("  { net = \"2001:db8::/32\" },\n  { net = \"2001:db8:1::/48\", proto = \"tcp\" },\n"),
        "profile[1].destinations[2]",
        "{ net = \"2001:db8:1::/48\"",
        "already allowed by entry 1",
    );
    let p = parse_ok(&v6(
        "  { net = \"0.0.0.0/0\", proto = \"tcp\", ports = 443 },\n  { net = \"::/0\", proto = \"tcp\", ports = 443 },\n  { net = \"2001:db8::5\" },\n",
    ));
    let d = p.profiles[0].destinations.as_ref().unwrap();
    assert_eq!(d[2].to_string(), "2001:db8::5 (any protocol)");
    assert!(!d[1].allows_udp("2001:db8::5".parse::<std::net::Ipv6Addr>().unwrap(), 443));
    // a destination that contains the internal network is fine: internal traffic never leaves
    parse_ok(&dests(
        "  { net = \"0.0.0.0/0\", proto = \"tcp\", ports = 443 },\n",
    ));
}

#[test]
fn destination_ports() {
    // (the entry's port keys, needle, problem)
    let cases = [
        ("proto = \"icmp\", ports = 7", "7 }", "ICMP has no ports"),
        ("ports = 0", "0 }", "\"0\" is not a port"),
        ("ports = \"80,x\"", "\"80,x\"", "\"x\" is not a port"),
        ("ports = \"90-80\"", "\"90-80\"", "not a port"),
        (
            "ports = \"80,70-90\"",
            "\"80,70-90\"",
            "ports 70-90 and 80 overlap",
        ),
    ];
    for (keys, needle, problem) in cases {
        check(
            &dests(&format!("  {{ net = \"1.2.3.4\", {keys} }},\n")),
            "profile[1].destinations[1].ports",
            needle,
            problem,
        );
    }
    // adjacent ranges merge; an entry inside the merged range is redundant
    let p = parse_ok(&dests(
        "  { net = \"1.2.3.4\", proto = \"tcp\", ports = \"80-85,86-90,443\" },\n",
    ));
    assert_eq!(
        p.profiles[0].destinations.as_ref().unwrap()[0].ports,
        [(80, 90), (443, 443)]
    );
}

#[test]
fn redundant_destinations() {
    let t = dests(
        "  { net = \"203.0.113.0/24\", proto = \"tcp\" },\n  { net = \"203.0.113.7\", proto = \"tcp\", ports = \"80-90\" },\n",
    );
    let e = check(
        &t,
        "profile[1].destinations[2]",
        "{ net = \"203.0.113.7\"",
        "already allowed by entry 1",
    );
    assert!(e.problem.contains("203.0.113.7 tcp port 80-90"), "{e}");
    let t = dests("  { net = \"1.2.3.4\", proto = \"udp\", ports = 53 },\n  { net = \"1.2.3.4\", proto = \"udp\", ports = 53 },\n");
    check_nth(
        &t,
        "profile[1].destinations[2]",
        "{ net",
        1,
        "already allowed by entry 1",
    );
    assert_eq!(errors(&t).len(), 1, "two equal entries: one error");
    // any protocol with ports is TCP and UDP: it does not cover ICMP
    parse_ok(&dests("  { net = \"1.2.3.4\", ports = 53 },\n  { net = \"1.2.3.4\", proto = \"icmp\" },\n  { net = \"1.2.3.4\", proto = \"tcp\", ports = 80 },\n"));
    let t = dests("  { net = \"1.2.3.4\", ports = 53 },\n  { net = \"1.2.3.4\", proto = \"tcp\", ports = 53 },\n");
    check(
        &t,
        "profile[1].destinations[2]",
        "{ net = \"1.2.3.4\", proto",
        "already allowed by entry 1",
    );
}

// --- limits ---------------------------------------------------------------------------------

#[test]
fn limits_must_fit_the_pool_and_each_other() {
    // the default pool holds 4 blocks
    let t = pooled(&profile_x("p", "max_jobs_per_node = 5\n"));
    let e = check(
        &t,
        "profile[1].max_jobs_per_node",
        "5\n",
        "holds 4 blocks per node",
    );
    assert!(e.hint.contains("4 or less"), "{e}");
    let t = pooled(&profile_x("p", "max_jobs_per_user = 9\n"));
    check(
        &t,
        "profile[1].max_jobs_per_user",
        "9\n",
        "holds 4 blocks per node",
    );
    check(
        &profile("users = [\"x\"]\nmax_jobs_per_node = 0\n"),
        "profile[1].max_jobs_per_node",
        "0\n",
        "grants nothing",
    );
    check(
        &profile("users = [\"x\"]\nmax_jobs_per_user = 0\n"),
        "profile[1].max_jobs_per_user",
        "0\n",
        "grants nothing",
    );
    check(
        &profile("users = [\"x\"]\nmax_jobs_per_node = 2\nmax_jobs_per_user = 3\n"),
        "profile[1].max_jobs_per_user",
        "3\n",
        "can never be reached: max_jobs_per_node is 2",
    );
    let p = parse_ok(&profile(
        "users = [\"x\"]\nmax_jobs_per_node = 4\nmax_jobs_per_user = 2\n",
    ));
    assert_eq!(p.profiles[0].max_jobs_per_node, Some(4));
    assert_eq!(p.profiles[0].max_jobs_per_user, Some(2));
    assert_eq!(p.profiles[0].capacity(&p.ports), 4);
}

#[test]
fn errors_come_in_file_order_and_all_at_once() {
    let t = with("[ports]\nblock_size = 7\n[[profile]]\nname = \"\"\n[[profile]]\nname = \"q\"\nusers = [\"a b\"]\n");
    let errors = invalid_errors(&t);
    assert!(errors.len() >= 4, "{errors:#?}");
    let lines: Vec<usize> = errors.iter().map(|e| e.line.unwrap()).collect();
    assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{lines:?}");
}

// --- pools: [profile.ports] and gateway -----------------------------------------------------

/// `[ports]` 20000-21023 in blocks of 256 (4 slots), then `profiles`.
fn pooled(profiles: &str) -> String {
    with(&format!("{}{profiles}", ports("20000-21023", 256)))
}

#[test]
fn a_profile_pool_takes_slots_after_the_default_pool_and_inherits_what_it_does_not_give() {
    let p = parse_ok(&pooled(
        &[
            "quarantine_secs = 30\n".to_owned(),
            profile_x("a", ""),
            profile_x(
                "bulk",
                "gateway = \"10.99.0.253\"\n[profile.ports]\nrange = \"30000-31023\"\nblock_size = 1024\n",
            ),
            profile_x(
                "mid",
                "ports = { range = \"40000-40511\", quarantine_secs = 5 }\n",
            ),
        ]
        .concat(),
    ));
    assert_eq!(p.pools.len(), 3);
    assert_eq!(p.slots(), 4 + 1 + 2);
    let bulk = p.pool_of_profile("bulk").unwrap();
    assert_eq!(bulk.slots(), 4..5);
    assert_eq!(bulk.block(4), Some((30000, 31023)));
    assert_eq!(bulk.ports.quarantine_secs, 30, "inherited from [ports]");
    assert_eq!(bulk.gateway.to_string(), "10.99.0.253");
    assert_eq!(bulk.route_table, 7701, "node.route_table + its pool number");
    let mid = p.pool_of_profile("mid").unwrap();
    assert_eq!(
        (mid.slots(), mid.ports.block_size, mid.ports.quarantine_secs),
        (5..7, 256, 5),
        "block size inherited, quarantine its own"
    );
    assert_eq!(mid.route_table, 7700, "the node's gateway: the main table");
    assert_eq!(p.pool_of_profile("a").unwrap().profile, None);
    assert_eq!(p.slot_block(6), Some((40256, 40511)));
    assert_eq!(p.pool_of_slot(4).unwrap().name(), "bulk");
    assert_eq!(p.quarantine_secs(30000), 30);
    assert_eq!(p.quarantine_secs(40256), 5);
    assert_eq!(p.profiles_of_pool(0), ["a"]);
    assert_eq!(p.routed_pools().count(), 1);
    assert_eq!(p.profiles[1].capacity(&bulk.ports), 1);
}

#[test]
fn pools_must_not_share_a_port() {
    // with the default pool, written
    let t = pooled(&profile_x(
        "a",
        "[profile.ports]\nrange = \"21000-22023\"\n",
    ));
    let e = check(
        &t,
        "profile[1].ports.range",
        "\"21000-22023\"",
        "ports 21000-22023 overlap the default pool's ports 20000-21023 ([ports] range, line 7)",
    );
    assert!(e.hint.contains("narrow [ports] range"), "{e}");
    // with the default pool's range when [ports] gives none (20000-59999)
    let t = with(&profile_x(
        "a",
        "[profile.ports]\nrange = \"30000-31023\"\n",
    ));
    let e = check(
        &t,
        "profile[1].ports.range",
        "\"30000-31023\"",
        "([ports] range is 20000-59999 when not given)",
    );
    assert!(e.hint.contains("write a [ports] range"), "{e}");
    // two profiles' pools
    let t = pooled(
        &[
            profile_x("a", "[profile.ports]\nrange = \"30000-31023\"\n"),
            profile_x(
                "b",
                "ports = { range = \"31000-32000\", block_size = 100 }\n",
            ),
        ]
        .concat(),
    );
    check(
        &t,
        "profile[2].ports.range",
        "\"31000-32000\"",
        "overlap the ports 30000-31023 of profile \"a\"'s own pool (line 13)",
    );
    // touching is fine
    parse_ok(&pooled(&profile_x(
        "a",
        "[profile.ports]\nrange = \"21024-22047\"\n",
    )));
}

#[test]
fn a_block_size_of_its_own_needs_a_range_of_its_own() {
    let t = pooled(&profile_x("a", "[profile.ports]\nblock_size = 1024\n"));
    let e = check(&t, "profile[1].ports.block_size", "1024\n", "has no range");
    assert!(e.hint.contains("give the profile its own range"), "{e}");
    // (the profile's keys after `users`, key, needle, problem)
    let cases = [
        (
            "ports = { quarantine_secs = 5 }\n",
            "profile[1].ports",
            "{ quarantine_secs",
            "has no range",
        ),
        // the pool's own keys are checked like [ports]
        (
            "[profile.ports]\nrange = \"30000-30100\"\n",
            "profile[1].ports.block_size",
            "\"30000-30100\"",
            "smaller than one block of 256 ports (the block size of [ports]",
        ),
        (
            "[profile.ports]\nrange = \"300-400\"\n",
            "profile[1].ports.range",
            "\"300-400\"",
            "not a port range",
        ),
        (
            "[profile.ports]\nrange = \"30000-31023\"\nblok_size = 1\n",
            "profile[1].ports.blok_size",
            "blok_size",
            "unknown field",
        ),
    ];
    for (rest, key, needle, problem) in cases {
        check(&pooled(&profile_x("a", rest)), key, needle, problem);
    }
    let e = check(
        &pooled(&profile_x("a", "ports = \"30000-31023\"\n")),
        "profile[1].ports",
        "\"30000-31023\"",
        "invalid type",
    );
    assert!(e.hint.contains("write a pool as a table"), "{e}");
}

#[test]
fn a_gateway_of_its_own_needs_a_pool_of_its_own() {
    let t = pooled(&profile_x("a", "gateway = \"10.99.0.253\"\n"));
    let e = check(
        &t,
        "profile[1].gateway",
        "\"10.99.0.253\"",
        "names gateway 10.99.0.253, but it has no port pool of its own",
    );
    assert!(e.hint.contains("[profile.ports]"), "{e}");
    // the node's own gateway, written out, is no change
    let p = parse_ok(&pooled(&profile_x("a", "gateway = \"10.99.0.254\"\n")));
    assert_eq!(p.pools.len(), 1);
    // (gateway, problem)
    for (gateway, problem) in [
        ("\"gw2\"", "not an IPv4 address"),
        ("\"192.0.2.1\"", "not inside any internal network"),
    ] {
        check(
            &pooled(&profile_x(
                "a",
                &format!("gateway = {gateway}\n[profile.ports]\nrange = \"30000-31023\"\n"),
            )),
            "profile[1].gateway",
            gateway,
            problem,
        );
    }
}

#[test]
fn a_pool_table_must_be_free_and_its_rules_need_a_priority_before_the_main_one() {
    // `node_keys`, then a default pool and a profile with a gateway and a pool of its own
    let routed = |node_keys: &str| {
        with(&format!(
            "{node_keys}[ports]\nrange = \"20000-21023\"\n{}",
            profile_x(
                "a",
                "gateway = \"10.99.0.253\"\n[profile.ports]\nrange = \"30000-31023\"\n"
            )
        ))
    };
    let e = check(
        &routed("route_table = 252\n"),
        "profile[1].gateway",
        "\"10.99.0.253\"",
        "node.route_table + 1 = 253, which is reserved",
    );
    assert!(e.hint.contains("route_table"), "{e}");
    check(
        &routed("rule_priority = 0\n"),
        "profile[1].gateway",
        "\"10.99.0.253\"",
        "rule_priority is 0",
    );
}

#[test]
fn netns_subnet_must_hold_the_slots_of_all_pools() {
    // a /28 holds 4 /30s: the default pool's 4 slots fit, one more pool's slot does not
    let t = netns_28(256);
    parse_ok(&t);
    let t2 = format!(
        "{t}{}",
        profile_x(
            "b",
            "[profile.ports]\nrange = \"30000-31023\"\nblock_size = 1024\n"
        )
    );
    check(
        &t2,
        "node.netns_subnet",
        "\"100.64.0.0/28\"",
        "holds 4 /30 links but the port pools have 5 slots",
    );
}

#[test]
fn all_slots_always_fit_the_packet_mark() {
    // the most slots pools can have: every port from 1024 up, in blocks of the least size,
    // split over pools; pools share no port, so the 16 slot bits always suffice
    let p = parse_ok(&with(&format!(
        "{}{}",
        ports("1024-40000", 16),
        profile_x(
            "a",
            "ports = { range = \"40001-65535\", block_size = 16 }\n"
        )
    )));
    assert_eq!(
        p.slots(),
        (40000 - 1024 + 1) / 16 + (65535 - 40001 + 1) / 16
    );
    assert!(p.slots() <= 0x10000);
}

#[test]
fn limits_must_fit_the_profiles_own_pool() {
    let t = pooled(&profile_x(
        "a",
        "max_jobs_per_node = 2\n[profile.ports]\nrange = \"30000-31023\"\nblock_size = 1024\n",
    ));
    let e = check(
        &t,
        "profile[1].max_jobs_per_node",
        "2\n",
        "its own port pool ([profile.ports]) holds 1 blocks per node",
    );
    assert!(e.hint.contains("profile[1].ports.range"), "{e}");
    // the default pool's 4 blocks no longer limit a profile with its own larger pool
    parse_ok(&pooled(&profile_x(
        "a",
        "max_jobs_per_node = 8\n[profile.ports]\nrange = \"30000-32047\"\n",
    )));
}

/// The hold table and the checked bit: defaults that fit the route table and fwmark, and a
/// pool whose table would be the hold table is refused.
#[test]
fn hold_table_and_checked_fwmark_have_safe_defaults_and_no_pool_takes_the_hold_table() {
    let p = parse_ok(&with("route_table = 500\n"));
    assert_eq!((p.node.hold_table, p.node.checked_fwmark), (499, 0x20000));
    let text = with("route_table = 500\nhold_table = 501\n")
        + &ports("20000-29999", 256)
        + &profile_x(
            "bulk",
            "gateway = \"10.99.0.253\"\nports = { range = \"30000-31023\", block_size = 1024 }\n",
        );
    let errs = errors(&text);
    assert!(
        errs.iter()
            .any(|e| e.key == "profile[1].gateway" && e.problem.contains("node.hold_table")),
        "{errs:#?}"
    );
}
