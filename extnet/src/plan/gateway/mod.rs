//! A gateway's configuration from the policy's `[gateways]` (pure, deterministic: the same
//! policy, host and directory give the same bytes): its nftables ruleset ([`nftables`]), its
//! keepalived configuration with the notify and check scripts ([`keepalived`]) and its
//! conntrackd configuration ([`conntrackd`]). `extnet gateway render` writes them; `--check`
//! compares a running gateway with them ([`GatewayModel`]).

pub mod conntrackd;
pub mod keepalived;
pub mod nftables;

use extnet_policy::gateways::{GatewayHost, Gateways};
use extnet_policy::Policy;
use std::net::Ipv4Addr;
use std::path::Path;

pub use nftables::{GatewayModel, GW_FAMILY, GW_TABLE};

/// Where a gateway keeps what changes while it runs (`--state-dir`): `vrrp/INSTANCE`, each
/// VRRP instance's state as keepalived's notify script last wrote it, which `extnet gateway
/// metrics` reads.
pub const STATE_DIR: &str = "/run/extnet/gateway";

/// Why a gateway cannot be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(
        "the policy has no [gateways] section; describe the gateways there first (docs/policy.md)"
    )]
    NoGateways,
    #[error("{host:?} is no [[gateways.host]] of the policy (hosts: {known}); pass one of them to --host")]
    UnknownHost { host: String, known: String },
    #[error("the directory {0:?} is not an absolute path without spaces or quotes; the rendered files name it")]
    BadDir(String),
}

/// The rendered files of one gateway, by file name, in a fixed order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendering {
    pub host: String,
    pub files: Vec<(&'static str, String)>,
}

/// One node's translation on this gateway: its source address and ports and the public
/// address they leave as (the ports unchanged); `A` is the family's address type
/// (`Ipv6Addr`: the node's IPv6 address to its public IPv6 address).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnatElement<A = Ipv4Addr> {
    pub node: A,
    pub first: u16,
    pub last: u16,
    pub public: A,
}

/// The host `name` of the policy's `[gateways]`.
pub fn host<'a>(
    policy: &'a Policy,
    name: &str,
) -> Result<(&'a Gateways, &'a GatewayHost), RenderError> {
    let g = policy.gateways.as_ref().ok_or(RenderError::NoGateways)?;
    let h = g.host(name).ok_or_else(|| RenderError::UnknownHost {
        host: name.to_owned(),
        known: g
            .hosts
            .iter()
            .map(|h| h.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    })?;
    Ok((g, h))
}

/// Every file of gateway `name`; `dir` is where they are installed (the scripts are named
/// by it), `state_dir` where the notify script writes the VRRP states ([`STATE_DIR`]).
pub fn render(
    policy: &Policy,
    name: &str,
    dir: &Path,
    state_dir: &Path,
) -> Result<Rendering, RenderError> {
    let (g, h) = host(policy, name)?;
    let d = checked_dir(dir)?;
    let state = checked_dir(state_dir)?;
    let model = GatewayModel::of(policy, g, h);
    let mut files = vec![
        ("nftables.conf", nftables::render(&model)),
        ("keepalived.conf", keepalived::config(g, h, d)),
        ("notify.sh", keepalived::notify_script(g, h, d, state)),
        ("check-path.sh", keepalived::check_path_script(g, h)),
        ("check-conntrack.sh", keepalived::check_conntrack_script(g)),
    ];
    if let Some(c) = conntrackd::config(g, h, d) {
        files.push(("conntrackd.conf", c));
    }
    Ok(Rendering {
        host: name.to_owned(),
        files,
    })
}

/// `dir` as the rendered files name it: absolute, without spaces or quotes.
fn checked_dir(dir: &Path) -> Result<&str, RenderError> {
    match dir.to_str() {
        Some(d)
            if dir.is_absolute()
                && !d.contains(|c: char| c.is_whitespace() || c == '"' || c == '\'') =>
        {
            Ok(d)
        }
        _ => Err(RenderError::BadDir(dir.display().to_string())),
    }
}

/// The hosts that share a virtual address with `h` (its conntrackd peers), in file order.
pub fn peers<'a>(g: &'a Gateways, h: &GatewayHost) -> Vec<&'a GatewayHost> {
    let mine: Vec<usize> = g
        .vips_of_host(&h.name)
        .into_iter()
        .map(|(i, _)| i)
        .collect();
    g.hosts
        .iter()
        .filter(|o| {
            o.name != h.name
                && mine
                    .iter()
                    .any(|&v| g.vips[v].priority_of(&o.name).is_some())
        })
        .collect()
}

/// FNV-1a 64 of `text`: the rendering's stamp in the loaded table (not a security measure:
/// it tells a rendering from another one).
pub(crate) fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    /// The test cluster's policy (slurm-test-env/extnet-test.toml).
    fn test_policy() -> Policy {
        let path = repo().join("slurm-test-env/extnet-test.toml");
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("@XN_DIR@", "/run/extnet-test");
        Policy::from_toml(&text, "extnet-test.toml").unwrap()
    }

    /// The test cluster's policy without its IPv6 keys: the IPv4-only shape every site had
    /// before IPv6, whose rendering must not change.
    fn ipv4_policy() -> Policy {
        let path = repo().join("slurm-test-env/extnet-test.toml");
        let v6_keys = [
            "gateway6",
            "internal6",
            "cluster_address6",
            "public_address6",
            "address6",
            "public6",
            "first_address6",
        ];
        let text: String = std::fs::read_to_string(&path)
            .unwrap()
            .replace("@XN_DIR@", "/run/extnet-test")
            .lines()
            .filter(|l| !v6_keys.contains(&l.split('=').next().unwrap_or("").trim()))
            .map(|l| format!("{l}\n"))
            .collect();
        Policy::from_toml(&text, "extnet-test.toml without IPv6").unwrap()
    }

    /// The golden dual-stack policy (tests/golden/gateway/dual-stack.toml): the test
    /// cluster's gateways with IPv6 on both virtual addresses.
    fn dual_policy() -> Policy {
        let path = repo().join("tests/golden/gateway/dual-stack.toml");
        Policy::from_toml(&std::fs::read_to_string(&path).unwrap(), "dual-stack.toml").unwrap()
    }

    const DIR: &str = "/etc/extnet/gateway";

    fn render(p: &Policy, host: &str, dir: &Path) -> Result<Rendering, RenderError> {
        super::render(p, host, dir, Path::new(STATE_DIR))
    }

    /// The rendered files of both test gateways equal the golden files in
    /// `tests/golden/gateway/HOST/`, and those of the dual-stack policy the ones in
    /// `tests/golden/gateway/dual-stack/HOST/` (`EXTNET_BLESS=1` writes them after a
    /// deliberate change; review the diff).
    #[test]
    fn renderings_of_the_test_policy_match_the_golden_files() {
        for (p, sub) in [(test_policy(), ""), (dual_policy(), "dual-stack")] {
            golden(&p, sub);
        }
    }

    fn golden(p: &Policy, sub: &str) {
        for host in ["gw1", "gw2"] {
            let r = render(p, host, Path::new(DIR)).unwrap();
            let names: Vec<&str> = r.files.iter().map(|(n, _)| *n).collect();
            assert_eq!(
                names,
                [
                    "nftables.conf",
                    "keepalived.conf",
                    "notify.sh",
                    "check-path.sh",
                    "check-conntrack.sh",
                    "conntrackd.conf"
                ]
            );
            let dir = repo().join("tests/golden/gateway").join(sub).join(host);
            for (name, text) in &r.files {
                let path = dir.join(name);
                if std::env::var_os("EXTNET_BLESS").is_some() {
                    std::fs::create_dir_all(&dir).unwrap();
                    std::fs::write(&path, text).unwrap();
                }
                let golden = std::fs::read_to_string(&path).unwrap_or_else(|e| {
                    panic!("{}: {e} (EXTNET_BLESS=1 writes it)", path.display())
                });
                assert_eq!(
                    text,
                    &golden,
                    "{} differs from the rendering",
                    path.display()
                );
            }
        }
    }

    #[test]
    fn rendering_is_deterministic_and_the_stamp_follows_the_content() {
        let p = test_policy();
        let a = render(&p, "gw1", Path::new(DIR)).unwrap();
        let b = render(&test_policy(), "gw1", Path::new(DIR)).unwrap();
        assert_eq!(a, b);
        let stamp = nftables::stamp(&a.files[0].1).unwrap();
        assert!(stamp.starts_with("extnet-gw gw1 "), "{stamp}");
        // another host's rendering has another stamp, another directory changes the scripts'
        // paths but not the ruleset
        let other = render(&p, "gw2", Path::new(DIR)).unwrap();
        assert_ne!(nftables::stamp(&other.files[0].1).unwrap(), stamp);
        let moved = render(&p, "gw1", Path::new("/srv/gw")).unwrap();
        assert_eq!(moved.files[0], a.files[0]);
        assert!(moved.files[1].1.contains("\"/srv/gw/notify.sh\""));
    }

    #[test]
    fn each_node_maps_to_its_own_slice_and_adjacent_pools_merge() {
        let p = test_policy();
        let (g, h) = host(&p, "gw1").unwrap();
        let m = GatewayModel::of(&p, g, h);
        let show: Vec<String> = m
            .snat
            .iter()
            .map(|e| format!("{} . {}-{} : {}", e.node, e.first, e.last, e.public))
            .collect();
        // n1 is node 0 of both addresses, n2 node 1: n2's pools are n1's + 12288
        assert_eq!(
            show,
            [
                "10.99.0.11 . 20000-29999 : 203.0.113.101",
                "10.99.0.11 . 30000-32047 : 203.0.113.102",
                "10.99.0.12 . 32288-42287 : 203.0.113.101",
                "10.99.0.12 . 42288-44335 : 203.0.113.102",
            ]
        );
        let a = |s: &str| s.parse::<std::net::Ipv4Addr>().unwrap();
        // consecutive node addresses with one public address: one ICMP element
        assert_eq!(
            m.icmp,
            [(a("10.99.0.11"), a("10.99.0.12"), a("203.0.113.101"))]
        );
        // no two elements of one public address share a port
        for (i, a) in m.snat.iter().enumerate() {
            for b in &m.snat[i + 1..] {
                assert!(
                    a.public != b.public || a.last < b.first || b.last < a.first,
                    "{a:?} {b:?}"
                );
            }
        }
    }

    #[test]
    fn keepalived_gives_each_address_its_instance_and_one_fill_check() {
        let p = test_policy();
        let r = render(&p, "gw2", Path::new(DIR)).unwrap();
        let k = &r.files[1].1;
        assert!(
            k.contains("vrrp_instance main {") && k.contains("vrrp_instance bulk {"),
            "{k}"
        );
        // gw2 is backup (100) of main, master (150) of bulk; the fill check moves bulk only:
        // its weight takes gw2 just below gw1's 100
        assert!(
            k.contains("virtual_router_id 77\n    priority 100\n"),
            "{k}"
        );
        assert!(
            k.contains("virtual_router_id 78\n    priority 150\n"),
            "{k}"
        );
        assert!(k.contains("weight -51"), "{k}");
        assert_eq!(k.matches("extnet_conntrack_fill\n").count(), 1, "{k}");
        assert!(
            k.contains("10.99.0.253/24 dev eth0\n        203.0.113.102/24 dev eth1\n"),
            "{k}"
        );
        assert!(k.contains("unicast_peer {\n        10.99.0.251\n"), "{k}");
        let c = &r.files[5].1;
        assert!(
            c.contains("IPv4_address 10.99.9.2\n        IPv4_Destination_Address 10.99.9.1\n"),
            "{c}"
        );
    }

    #[test]
    fn the_path_check_pings_or_connects_and_is_absent_without_check() {
        let mut p = test_policy();
        let script = |p: &Policy| render(p, "gw1", Path::new(DIR)).unwrap().files[3].1.clone();
        assert!(script(&p).contains("exec ping -n -q -c 1 -W 1 -I eth1 203.0.113.10"));
        let g = p.gateways.as_mut().unwrap();
        g.check = Some(("203.0.113.10".parse().unwrap(), Some(8080)));
        assert!(
            script(&p).contains("/dev/tcp/203.0.113.10/8080"),
            "{}",
            script(&p)
        );
        p.gateways.as_mut().unwrap().check = None;
        assert!(script(&p).contains("exit 0"));
        let k = render(&p, "gw1", Path::new(DIR)).unwrap().files[1]
            .1
            .clone();
        assert!(!k.contains("extnet_path_out"), "{k}");
    }

    #[test]
    fn a_policy_without_gateways_or_an_unknown_host_is_refused() {
        let p = test_policy();
        let e = render(&p, "gw9", Path::new(DIR)).unwrap_err().to_string();
        assert!(e.contains("gw1, gw2"), "{e}");
        let e = render(&p, "gw1", Path::new("rel/dir"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("absolute"), "{e}");
        let mut bare = p.clone();
        bare.gateways = None;
        assert!(matches!(
            render(&bare, "gw1", Path::new(DIR)),
            Err(RenderError::NoGateways)
        ));
    }

    #[test]
    fn ipv6_maps_key_the_node_ula_to_public6_with_the_ipv4_ports() {
        let p = dual_policy();
        let (g, h) = host(&p, "gw1").unwrap();
        let m = GatewayModel::of(&p, g, h);
        let show = |e: &SnatElement<std::net::Ipv6Addr>| {
            format!("{} . {}-{} : {}", e.node, e.first, e.last, e.public)
        };
        // the IPv4 elements' ports, node address and public address of the same slice
        assert_eq!(
            m.snat6.iter().map(show).collect::<Vec<_>>(),
            [
                "fd00:78e7::11 . 20000-29999 : 2001:db8::101",
                "fd00:78e7::11 . 30000-32047 : 2001:db8::102",
                "fd00:78e7::12 . 32288-42287 : 2001:db8::101",
                "fd00:78e7::12 . 42288-44335 : 2001:db8::102",
            ]
        );
        assert_eq!(
            m.snat.iter().map(|e| (e.first, e.last)).collect::<Vec<_>>(),
            m.snat6
                .iter()
                .map(|e| (e.first, e.last))
                .collect::<Vec<_>>()
        );
        let a = |s: &str| s.parse::<std::net::Ipv6Addr>().unwrap();
        assert_eq!(
            m.icmp6,
            [(a("fd00:78e7::11"), a("fd00:78e7::12"), a("2001:db8::101"))]
        );
        // the IPv4 half is the IPv4-only policy's
        let four = ipv4_policy();
        let (g4, h4) = host(&four, "gw1").unwrap();
        let m4 = GatewayModel::of(&four, g4, h4);
        assert_eq!((&m.snat, &m.icmp), (&m4.snat, &m4.icmp));
        assert!(m4.snat6.is_empty() && m4.icmp6.is_empty());
        let text = nftables::render(&m);
        assert!(text.contains("table ip extnet_gw\ndelete table ip extnet_gw\ntable inet extnet_gw\ndelete table inet extnet_gw\n"), "{text}");
        assert!(
            text.contains("snat ip6 to ip6 saddr . th sport map @node_public6"),
            "{text}"
        );
        assert!(
            text.contains(
                "elements = {\n            2001:db8::101,\n            2001:db8::102\n        }"
            ),
            "{text}"
        );
    }

    #[test]
    fn keepalived_and_conntrackd_carry_ipv6_only_with_ipv6() {
        let p = dual_policy();
        let r = render(&p, "gw1", Path::new(DIR)).unwrap();
        let k = &r.files[1].1;
        // in the same instance as the IPv4 addresses, after them
        assert!(
            k.contains("virtual_router_id 77\n    priority 150\n") && k.contains("        203.0.113.101/24 dev eth1\n    }\n    virtual_ipaddress_excluded {\n        fd00:78e7::254/64 dev eth0 preferred_lft 0\n        2001:db8::101/64 dev eth1 preferred_lft 0\n    }\n"),
            "{k}"
        );
        assert_eq!(k.matches("virtual_ipaddress_excluded").count(), 2, "{k}");
        let c = &r.files[5].1;
        assert!(
            c.contains("            ICMP\n            IPv6-ICMP\n"),
            "{c}"
        );
        assert!(
            c.contains("            IPv6_address ::1\n            IPv6_address 2001:db8::1\n            IPv6_address fd00:78e7::251\n"),
            "{c}"
        );
        // without IPv6 keys: none of it
        let r4 = render(&ipv4_policy(), "gw1", Path::new(DIR)).unwrap();
        assert!(!r4.files[1].1.contains("excluded"));
        assert!(!r4.files[5].1.contains("IPv6"));
    }

    #[test]
    fn the_check_reads_ipv6_maps_back() {
        let p = dual_policy();
        let (g, h) = host(&p, "gw1").unwrap();
        let want = GatewayModel::of(&p, g, h);
        let stamp = nftables::stamp(&nftables::render(&want)).unwrap();
        let e = &want.snat6[1];
        // `nft -j` prints one element of node_public6 and a range of node_icmp_public6
        let json = format!(
            r#"{{"nftables":[{{"map":{{"name":"node_public6","elem":[[{{"concat":["{}",{{"range":[{},{}]}}]}},"{}"]]}}}},{{"map":{{"name":"node_icmp_public6","elem":[[{{"range":["fd00:78e7::11","fd00:78e7::12"]}},"2001:db8::101"]]}}}}]}}"#,
            e.node, e.first, e.last, e.public
        );
        let (have, _, _) = nftables::from_json(&json, "gw1").unwrap();
        assert_eq!(have.snat6, [*e]);
        assert_eq!(have.icmp6, want.icmp6);
        let d = nftables::differences(&want, &stamp, &have, Some(&stamp));
        assert!(
            d.iter()
                .any(|l| l.starts_with("map node_public6: 3 element(s) missing")),
            "{d:?}"
        );
        let bad = json.replace("2001:db8::102", "203.0.113.102");
        assert!(nftables::from_json(&bad, "gw1")
            .unwrap_err()
            .to_string()
            .contains("an element of node_public6"));
    }

    #[test]
    fn the_check_reads_a_running_table_back_and_names_what_differs() {
        let p = ipv4_policy();
        let (g, h) = host(&p, "gw1").unwrap();
        let want = GatewayModel::of(&p, g, h);
        let text = nftables::render(&want);
        let stamp = nftables::stamp(&text).unwrap();
        // what `nft -j list table inet extnet_gw` prints for a table with one element less
        let e = &want.snat[0];
        let json = format!(
            r#"{{"nftables":[{{"metainfo":{{}}}},{{"map":{{"name":"node_public","elem":[[{{"concat":["{}",{{"range":[{},{}]}}]}},"{}"]]}}}},{{"map":{{"name":"node_icmp_public","elem":[[{{"range":["10.99.0.11","10.99.0.12"]}},"203.0.113.101"]]}}}},{{"rule":{{"chain":"forward","comment":"{stamp}","expr":[{{"match":{{"left":{{"meta":{{"key":"iifname"}}}},"right":"eth0"}}}},{{"match":{{"left":{{"meta":{{"key":"oifname"}}}},"right":"eth1"}}}}]}}}}]}}"#,
            e.node, e.first, e.last, e.public
        );
        let (have, have_stamp, rules) = nftables::from_json(&json, "gw1").unwrap();
        assert_eq!(rules.len(), 1);
        let d = nftables::differences(&want, &stamp, &have, have_stamp.as_deref());
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(d[0].contains("3 element(s) missing"), "{d:?}");
        let d = nftables::differences(&want, &stamp, &want, Some("extnet-gw gw1 0"));
        assert!(d[0].contains("loaded from rendering"), "{d:?}");
        assert!(nftables::differences(&want, &stamp, &want, Some(&stamp)).is_empty());
    }
}
