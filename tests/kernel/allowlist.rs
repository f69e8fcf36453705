//! Kernel test of the destination allowlist (`extnet::allowlist`) and of the raw nf_tables
//! requests behind it (`extnet::kernel::nftables::netlink`): the real nft objects in a private network namespace,
//! real sockets carrying job marks (`SO_MARK`, as the cgroup-bpf program sets them), and the
//! drop counters.
//!
//! A packet the output hook drops makes `sendto` fail with `EPERM` at once, so each case is one
//! datagram and one syscall. Everything happens on a thread of its own that unshares its
//! network namespace (the `nft` and `ip` programs it starts inherit it); the namespace dies with
//! the thread. Without root the test says why it was skipped.

use extnet::kernel::nftables as nft;
use extnet::kernel::nftables::netlink::{Change, NfSocket, NfnlError, Verdict};
use extnet::node::allowlist;
use extnet::plan::ruleset::allowlist as allowlist_plan;
use std::net::{SocketAddrV4, UdpSocket};
use std::os::fd::AsFd;
use support::netns::{in_private_netns, node_link};
use support::policy::allowlist as policy;
use support::root::is_root;
use support::tables::allowlist_table as table;

const OPEN: u32 = 0x10000;
const WEB: u32 = 0x10001;
const UNBOUND: u32 = 0x10002;

/// Runs `f` on a thread of its own in a new network namespace with the node interface `xa0`
/// of the allowlist policy (one end of a veth pair), 10.98.0.11/24, and a default route via
/// the gateway 10.98.0.254: routes to the internal net and the outside. As root only: `test`
/// is skipped otherwise.
fn in_node(test: &str, f: impl FnOnce() + Send) {
    if !is_root(test, "a network namespace and an nft table") {
        return;
    }
    in_private_netns(|| {
        node_link("xa0", "10.98.0.11/24", Some("10.98.0.254"));
        f()
    });
}

/// Sends one UDP datagram to `to` from a socket with mark `mark` (0: none): `Ok` or the errno.
fn send(mark: u32, to: &str) -> Result<(), nix::errno::Errno> {
    let s = UdpSocket::bind("0.0.0.0:0").unwrap();
    if mark != 0 {
        nix::sys::socket::setsockopt(&s.as_fd(), nix::sys::socket::sockopt::Mark, &mark).unwrap();
    }
    let to: SocketAddrV4 = to.parse().unwrap();
    match s.send_to(b"x", to) {
        Ok(_) => Ok(()),
        Err(e) => Err(nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0))),
    }
}

fn drops() -> std::collections::HashMap<String, u64> {
    allowlist::drops()
        .unwrap()
        .into_iter()
        .map(|(n, p, _)| (n, p))
        .collect()
}

const EPERM: Result<(), nix::errno::Errno> = Err(nix::errno::Errno::EPERM);

#[test]
fn marked_traffic_reaches_only_its_profiles_destinations() {
    in_node(
        "marked_traffic_reaches_only_its_profiles_destinations",
        || {
            let policy = policy();
            nft::apply(&table(&policy)).expect("the allowlist objects load");
            assert_eq!(
                allowlist::bind(OPEN, policy.profile("open").unwrap()).unwrap(),
                Change::Added
            );
            assert_eq!(
                allowlist::bind(WEB, policy.profile("web").unwrap()).unwrap(),
                Change::Added
            );
            // binding again (a prolog run twice) changes nothing
            assert_eq!(
                allowlist::bind(WEB, policy.profile("web").unwrap()).unwrap(),
                Change::Unchanged
            );
            allowlist::bind(UNBOUND, policy.profile("open").unwrap()).unwrap();
            assert!(allowlist::unbind(UNBOUND).unwrap());
            assert!(!allowlist::unbind(UNBOUND).unwrap(), "absent is fine");

            // unmarked traffic (the node, other jobs) is not touched
            assert_eq!(send(0, "192.0.2.1:53"), Ok(()));
            // a profile without an allowlist reaches everything
            assert_eq!(send(OPEN, "192.0.2.1:53"), Ok(()));
            // web: only its destinations, internal always
            assert_eq!(send(WEB, "203.0.113.10:7001"), Ok(()));
            assert_eq!(send(WEB, "198.51.100.77:9"), Ok(()));
            assert_eq!(
                send(WEB, "10.98.0.5:9"),
                Ok(()),
                "internal destinations always pass"
            );
            assert_eq!(
                send(WEB, "127.0.0.1:9"),
                Ok(()),
                "the node itself always passes"
            );
            let before = drops();
            assert_eq!(send(WEB, "203.0.113.10:7002"), EPERM, "other port");
            assert_eq!(send(WEB, "203.0.113.11:7001"), EPERM, "other host");
            // fail closed: a marked socket without a binding gets nothing out
            assert_eq!(send(UNBOUND, "192.0.2.1:53"), EPERM);
            let after = drops();
            assert_eq!(
                after["dest_web_drop"],
                before["dest_web_drop"] + 2,
                "{after:?}"
            );
            assert_eq!(
                after["unbound_drop"],
                before["unbound_drop"] + 1,
                "{after:?}"
            );
            assert!(!after.contains_key("dest_open_drop"), "{after:?}");
            // unbinding (node teardown, a prolog's rollback) ends the slot's access
            assert!(allowlist::unbind(WEB).unwrap());
            assert_eq!(send(WEB, "203.0.113.10:7001"), EPERM);
        },
    );
}

#[test]
fn bind_writes_only_when_the_slots_verdict_changes() {
    in_node("bind_writes_only_when_the_slots_verdict_changes", || {
        let policy = policy();
        let (open, web) = (
            policy.profile("open").unwrap(),
            policy.profile("web").unwrap(),
        );
        nft::apply(&table(&policy)).unwrap();
        let mut s = NfSocket::open().unwrap();
        let gen = |s: &mut NfSocket| s.generation().unwrap();

        // an empty map: an add, one transaction
        assert!(allowlist::needs_rebind(OPEN, open).unwrap());
        assert_eq!(allowlist::current(OPEN).unwrap(), None);
        let g0 = gen(&mut s);
        assert_eq!(
            allowlist::bind_on(&mut s, OPEN, open).unwrap(),
            Change::Added
        );
        assert_eq!(s.batches_sent(), 1);
        let g1 = gen(&mut s);
        assert_eq!(g1, g0.wrapping_add(1), "one committed transaction");
        assert_eq!(allowlist::current(OPEN).unwrap(), Some(Verdict::Accept));
        assert_eq!(send(OPEN, "192.0.2.1:53"), Ok(()));

        // the same verdict (the slot's last job had the same profile): nothing written
        assert!(!allowlist::needs_rebind(OPEN, open).unwrap());
        for _ in 0..3 {
            assert_eq!(
                allowlist::bind_on(&mut s, OPEN, open).unwrap(),
                Change::Unchanged
            );
        }
        assert_eq!(
            s.batches_sent(),
            1,
            "no batch sent for an unchanged binding"
        );
        assert_eq!(gen(&mut s), g1, "no transaction committed");

        // another profile: replaced in one transaction, and the traffic follows at once
        assert!(allowlist::needs_rebind(OPEN, web).unwrap());
        assert_eq!(
            allowlist::bind_on(&mut s, OPEN, web).unwrap(),
            Change::Replaced(Verdict::Accept)
        );
        assert_eq!(s.batches_sent(), 2);
        assert_eq!(
            gen(&mut s),
            g1.wrapping_add(1),
            "delete + add: one transaction"
        );
        assert_eq!(
            allowlist::current(OPEN).unwrap(),
            Some(Verdict::Jump("dest_web".into()))
        );
        assert_eq!(send(OPEN, "192.0.2.1:53"), EPERM, "now web's allowlist");
        assert_eq!(send(OPEN, "203.0.113.10:7001"), Ok(()));
        // and back
        assert_eq!(
            allowlist::bind_on(&mut s, OPEN, open).unwrap(),
            Change::Replaced(Verdict::Jump("dest_web".into()))
        );
        assert_eq!(send(OPEN, "192.0.2.1:53"), Ok(()));

        // other slots are untouched by all of this
        assert_eq!(allowlist::current(WEB).unwrap(), None);
        assert_eq!(
            send(WEB, "203.0.113.10:7001"),
            EPERM,
            "never bound: fail closed"
        );

        // an element of a verdict extnet never writes (an admin's hand edit) is replaced too
        nft::apply("add element inet extnet slot_profile { 0x10001 : drop }\n").unwrap();
        assert_eq!(allowlist::current(WEB).unwrap(), Some(Verdict::Drop));
        assert_eq!(
            allowlist::bind(WEB, web).unwrap(),
            Change::Replaced(Verdict::Drop)
        );
        assert_eq!(send(WEB, "203.0.113.10:7001"), Ok(()));
        // nft sees what netlink wrote (the key in the mark's byte order)
        let out = std::process::Command::new("nft")
            .args(["list", "map", "inet", "extnet", allowlist_plan::MAP])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("0x00010000 : accept") && text.contains("0x00010001 : jump dest_web"),
            "{text}"
        );
    });
}

#[test]
fn errors_name_what_is_missing_and_how_to_fix_it() {
    in_node("errors_name_what_is_missing_and_how_to_fix_it", || {
        let policy = policy();
        let web = policy.profile("web").unwrap();
        // no table: the base is not loaded
        let e = allowlist::bind(WEB, web).unwrap_err();
        assert!(matches!(e, NfnlError::TableMissing { .. }), "{e:?}");
        assert_eq!(
            e.to_string(),
            "nftables table inet extnet does not exist: the node's base table is not loaded; run `extnet node setup` on the node"
        );
        assert!(matches!(
            allowlist::current(WEB),
            Err(NfnlError::TableMissing { .. })
        ));
        assert!(
            !allowlist::unbind(WEB).unwrap(),
            "no table: nothing to unbind"
        );
        // a table without the map (an older base)
        nft::apply("table inet extnet {\n  chain dest_web { }\n}\n").unwrap();
        let e = allowlist::bind(WEB, web).unwrap_err();
        assert!(matches!(e, NfnlError::SetMissing { .. }), "{e:?}");
        assert!(
            e.to_string().contains("has no map slot_profile")
                && e.to_string().contains("run `extnet node setup`"),
            "{e}"
        );
        // the map without the profile's chain (a base of another policy)
        nft::apply("delete table inet extnet\ntable inet extnet {\n  map slot_profile { type mark : verdict; }\n}\n").unwrap();
        let e = allowlist::bind(WEB, web).unwrap_err();
        assert!(
            matches!(&e, NfnlError::ChainMissing { chain, .. } if chain == "dest_web"),
            "{e:?}"
        );
        assert!(e.to_string().contains("does not match the policy"), "{e}");
        assert_eq!(allowlist::current(WEB).unwrap(), None, "nothing was added");
        assert_eq!(
            allowlist::bind(WEB, policy.profile("open").unwrap()).unwrap(),
            Change::Added,
            "a verdict without a chain binds"
        );
        // a key of the wrong size is the kernel's EINVAL, named with the request
        let mut s = NfSocket::open().unwrap();
        let e = s
            .set_verdict("extnet", allowlist_plan::MAP, &[1, 2], &Verdict::Accept)
            .unwrap_err();
        assert!(
            e.to_string().starts_with(
                "cannot get element slot_profile { 0102 } in nftables table inet extnet: "
            ),
            "{e}"
        );
        // the base loader names nft's complaint and the fix
        let e = nft::apply("table ip extnet {\n  chain c { bogus }\n}\n").unwrap_err();
        let m = e.to_string();
        assert!(
            m.contains("/nft -f - refused the ruleset starting with \"table ip extnet {\"")
                && m.contains("syntax error")
                && m.contains("run `extnet node setup`"),
            "{m}"
        );
        nft::delete_table("extnet").unwrap();
        nft::delete_table("extnet").unwrap();
        assert!(!nft::table_exists("extnet").unwrap());
    });
}
