//! The node's metrics file as Prometheus reads it: `promtool check metrics` (the parser and
//! linter of Prometheus itself, package `prometheus`, which slurm-test-env/install-deps
//! installs) on what the library renders from a node with every family present, on what
//! the agent's collection writes from a state directory, and on a gateway's file. No root: the nft counters are given,
//! or read and found missing.

use extnet::node::metrics::{self, Conntrack, TRIGGERS};
use extnet::plan::layout::Layout;
use extnet::store::denials::{self, DenialReason};
use extnet::store::lease::{LeaseRequest, LeaseTable};
use extnet_policy::Mode;
use std::collections::HashMap;
use std::io::Write;
use std::process::{Command, Stdio};
use support::policy::TestPolicy;

/// `promtool check metrics` on `text`: its exit status and what it said.
fn promtool(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run promtool ({e}): install Debian's package prometheus (slurm-test-env/install-deps does)")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

fn assert_valid(text: &str) {
    let (ok, said) = promtool(text);
    assert!(
        ok && said.trim().is_empty(),
        "promtool check metrics: {said}\n{text}"
    );
}

/// Two profiles, one with an allowlist. Profile names in the policy are plain; a name that
/// needs escaping in a label comes from a lease whose profile the policy no longer has.
fn policy(state_dir: &std::path::Path) -> TestPolicy {
    TestPolicy::new("eth0", "10.99.0", "20000-20767")
        .ports("block_size = 256")
        .node(&format!("state_dir = \"{}\"", state_dir.display()))
        .profile("open", &["*"], &[])
        .profile(
            "web-only",
            &["*"],
            &["destinations = [{ net = \"203.0.113.10\", proto = \"tcp\", ports = 443 }]"],
        )
}

fn lease(table: &mut LeaseTable, policy: &extnet_policy::Policy, job: u32, profile: &str) {
    let pool = policy.pools.first().unwrap();
    table
        .allocate(
            &LeaseRequest {
                job_id: job,
                user: "alice",
                uid: 1000,
                mode: Mode::Cgroup,
                profile,
                fwmark: policy.node.fwmark,
                node_addr: "10.99.0.11".parse().unwrap(),
                node_addr6: None,
            },
            pool,
            100,
        )
        .unwrap();
}

#[test]
fn every_family_passes_promtool() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy(dir.path()).policy();
    let mut table = LeaseTable::empty("n1");
    lease(&mut table, &p, 7, "open");
    lease(&mut table, &p, 8, "web-only");
    lease(&mut table, &p, 9, "gone\"with\\odd\nname");
    let counters: HashMap<String, (u64, u64)> = [
        ("slot0_out", (10, 1000)),
        ("slot0_in", (20, 30000)),
        ("slot0_conn", (3, 0)),
        ("slot1_out", (1, 60)),
        ("slot1_in", (2, 120)),
        ("slot1_conn", (1, 0)),
        ("dest_web-only_drop", (4, 240)),
        ("unbound_drop", (1, 60)),
    ]
    .into_iter()
    .map(|(n, v)| (n.to_owned(), v))
    .collect();
    let mut s = metrics::snapshot(&p, &table, Some(&counters), 1_765_000_000);
    s.denied_jobs = 2;
    s.denials = DenialReason::ALL.into_iter().map(|r| (r, 4)).collect();
    s.repairs = Some(TRIGGERS.iter().map(|t| (*t, 1)).collect());
    s.conntrack = Some(Conntrack {
        entries: 10,
        max: 65536,
    });
    let text = s.render();
    for family in [
        "extnet_active_jobs",
        "extnet_pool_blocks",
        "extnet_active_traffic_bytes",
        "extnet_active_traffic_packets",
        "extnet_active_connections",
        "extnet_active_ipv6_traffic_bytes",
        "extnet_active_ipv6_traffic_packets",
        "extnet_active_ipv6_connections",
        "extnet_allowlist_dropped_packets_total",
        "extnet_allowlist_dropped_bytes_total",
        "extnet_unbound_dropped_packets_total",
        "extnet_nft_counters_readable",
        "extnet_denied_jobs",
        "extnet_denials_total",
        "extnet_agent_repairs_total",
        "extnet_conntrack_entries",
        "extnet_conntrack_entries_max",
        "extnet_metrics_last_write_timestamp_seconds",
    ] {
        assert!(
            text.contains(&format!("# TYPE {family} ")),
            "{family} missing:\n{text}"
        );
    }
    assert!(text.contains(r#"extnet_active_jobs{profile="gone\"with\\odd\nname"} 1"#));
    assert_valid(&text);
}

#[test]
fn the_collected_file_passes_promtool() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let p = policy(&state).policy();
    let layout = Layout::new(&p, "n1");
    std::fs::create_dir_all(&layout.jobs_dir).unwrap();
    let mut table = LeaseTable::empty("n1");
    lease(&mut table, &p, 7, "open");
    table.store(&layout.lease_table()).unwrap();
    let nf = dir.path().join("proc/sys/net/netfilter");
    std::fs::create_dir_all(&nf).unwrap();
    std::fs::write(nf.join("nf_conntrack_count"), "5\n").unwrap();
    std::fs::write(nf.join("nf_conntrack_max"), "1024\n").unwrap();
    // two denials the prolog counted (as it does, under the node lock)
    for why in [DenialReason::Policy, DenialReason::Policy] {
        denials::count(&layout.denials(), &layout.lock_file(), why).unwrap();
    }
    let repairs = TRIGGERS.iter().map(|t| (*t, 0)).collect();
    let s = metrics::collect(&p, &layout, dir.path(), Some(&repairs)).unwrap();
    let file = dir.path().join("extnet.prom");
    metrics::write(&file, &s.render()).unwrap();
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(
        text.contains("extnet_active_jobs{profile=\"open\"} 1\n"),
        "{text}"
    );
    assert!(text.contains("extnet_pool_blocks{pool=\"[ports]\",state=\"used\"} 1\n"));
    assert!(text.contains("\nextnet_conntrack_entries 5\n"), "{text}");
    assert!(
        text.contains("\nextnet_conntrack_entries_max 1024\n"),
        "{text}"
    );
    assert!(
        text.contains("\nextnet_denials_total{reason=\"policy\"} 2\n")
            && text.contains("\nextnet_denials_total{reason=\"pool_full\"} 0\n"),
        "{text}"
    );
    assert_valid(&text);
}

#[test]
fn the_gateway_file_passes_promtool() {
    let root = tempfile::tempdir().unwrap();
    let nf = root.path().join("proc/sys/net/netfilter");
    std::fs::create_dir_all(&nf).unwrap();
    std::fs::write(nf.join("nf_conntrack_count"), "40000\n").unwrap();
    std::fs::write(nf.join("nf_conntrack_max"), "262144\n").unwrap();
    let vrrp = root.path().join("run/vrrp");
    std::fs::create_dir_all(&vrrp).unwrap();
    std::fs::write(vrrp.join("main"), "MASTER\n").unwrap();
    std::fs::write(vrrp.join("bulk"), "FAULT\n").unwrap();
    let figures = metrics::GatewayFigures {
        vrrp: metrics::vrrp_states(&vrrp),
        translated: Some(
            [
                (std::net::Ipv4Addr::new(203, 0, 113, 101).into(), 39_000),
                (std::net::Ipv4Addr::new(203, 0, 113, 102).into(), 17),
            ]
            .into(),
        ),
    };
    let text = metrics::render_gateway(root.path(), &figures, 1_765_000_000);
    for line in [
        "\nextnet_conntrack_entries 40000\n",
        "\nextnet_gateway_vrrp_master{instance=\"main\"} 1\n",
        "\nextnet_gateway_vrrp_master{instance=\"bulk\"} 0\n",
        "\nextnet_gateway_vrrp_state{instance=\"bulk\",state=\"FAULT\"} 1\n",
        "\nextnet_gateway_translated_connections{public=\"203.0.113.101\"} 39000\n",
        "\nextnet_gateway_conntrack_dump_ok 1\n",
    ] {
        assert!(text.contains(line), "{line:?} missing in\n{text}");
    }
    assert_valid(&text);
    // without the dump and without keepalived's notes: still a valid file, saying so
    let bare = metrics::render_gateway(root.path(), &Default::default(), 1_765_000_000);
    assert!(
        bare.contains("\nextnet_gateway_conntrack_dump_ok 0\n"),
        "{bare}"
    );
    assert!(!bare.contains("vrrp"), "{bare}");
    assert_valid(&bare);
}

/// The check can fail: promtool refuses what the format forbids.
#[test]
fn promtool_refuses_a_broken_file() {
    let (ok, said) = promtool("# TYPE extnet_x gauge\nextnet_x{a=\"b\nc\"} 1\n");
    assert!(!ok, "{said}");
    let (ok, said) = promtool("# TYPE extnet_x counter\nextnet_x 1\n");
    assert!(!ok, "a counter without _total nor HELP passed: {said}");
}
