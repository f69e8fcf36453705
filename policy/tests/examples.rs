//! The example policies shipped in `docs/examples/` and the test cluster's policy parse and
//! validate: a reference that does not load would teach admins the wrong thing.

mod support;

use extnet_policy::{decide, Decision, Policy, Request};
use std::path::{Path, PathBuf};
use support::job;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn load(path: &Path) -> Policy {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .replace("@XN_DIR@", "/run/extnet-test");
    Policy::from_toml(&text, &path.display().to_string()).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn every_example_parses_and_validates() {
    let dir = repo().join("docs/examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let p = load(&path);
            assert!(!p.profiles.is_empty(), "{}: no profiles", path.display());
            n += 1;
        }
    }
    assert!(n >= 2, "expected the example policies in {}", dir.display());
}

#[test]
fn gsi_example_grants_alice_transparently_and_nobody_else() {
    let p = load(&repo().join("docs/examples/gsi-alice.toml"));
    for j in [job("aliprod", &["aliprod"]), job("someone", &["alice"])] {
        match decide(&p, &j, &Request::None) {
            Decision::Granted { auto: true, .. } => {}
            d => panic!("{j:?}: {d:?}"),
        }
    }
    assert_eq!(
        decide(&p, &job("other", &["users"]), &Request::None),
        Decision::NotRequested
    );
    assert!(matches!(
        decide(&p, &job("other", &["users"]), &Request::Any),
        Decision::Denied { .. }
    ));
    // the Lustre/InfiniBand network and the site networks never go to the NAT routers
    for net in ["10.20.0.0/16", "140.181.2.0/24"] {
        assert!(p.node.internal.contains(&net.parse().unwrap()), "{net}");
    }
}

#[test]
fn opt_in_example_grants_nothing_without_asking() {
    let p = load(&repo().join("docs/examples/opt-in.toml"));
    assert!(!p.has_auto());
}

#[test]
fn test_cluster_policy_validates() {
    let p = load(&repo().join("slurm-test-env/extnet-test.toml"));
    // tests/cluster.rs relies on these two coming first, without restrictions
    assert_eq!(p.profiles[0].name, "default");
    assert_eq!(p.profiles[1].name, "isolated");
    assert!(p.profiles[..2].iter().all(|p| p.destinations.is_none()));
}
