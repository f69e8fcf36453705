//! `allowlist-bind`: what binding one job's slot to its profile's allowlist costs
//! (`extnet::node::allowlist`), as the prolog does it, one netlink socket opened and closed
//! per call, closing included; with 0, 150 and 2000 other slots bound (to a chain: the kernel
//! validates jump targets). Each level in a private network namespace of its own with the
//! allowlist node's interface and nft table.

use crate::stats::show;
use extnet::kernel::nftables as nft;
use extnet::kernel::nftables::netlink::{Change, NfSocket};
use extnet::node::allowlist;
use std::time::{Duration, Instant};
use support::netns::{in_private_netns, node_link};
use support::policy::allowlist as policy;
use support::tables::allowlist_table;

/// Slots bound per figure: marks 0x10000 to 0x10000 + RUNS - 1.
const RUNS: u32 = 200;

pub fn run() {
    for others in [0u32, 150, 2000] {
        in_private_netns(|| {
            node_link("xa0", "10.98.0.11/24", Some("10.98.0.254"));
            at(others);
        });
    }
}

/// The figures with `others` other slots bound, in the calling thread's namespace.
fn at(others: u32) {
    let policy = policy();
    let (open, web) = (
        policy.profile("open").unwrap(),
        policy.profile("web").unwrap(),
    );
    nft::apply(&allowlist_table(&policy)).unwrap();
    if others > 0 {
        let elems: Vec<String> = (0..others)
            .map(|m| format!("0x{:x} : jump dest_web", 0x20000 | m))
            .collect();
        nft::apply(&format!(
            "add element inet extnet slot_profile {{ {} }}\n",
            elems.join(", ")
        ))
        .unwrap();
    }
    let each = |f: &dyn Fn(u32)| -> Vec<Duration> {
        (0..RUNS)
            .map(|m| {
                let t = Instant::now();
                f(0x10000 | m);
                t.elapsed()
            })
            .collect()
    };
    let add = each(&|m| assert_eq!(allowlist::bind(m, web).unwrap(), Change::Added));
    let same = each(&|m| assert_eq!(allowlist::bind(m, web).unwrap(), Change::Unchanged));
    let other = each(&|m| {
        assert!(matches!(
            allowlist::bind(m, open).unwrap(),
            Change::Replaced(_)
        ))
    });
    // where a replacement's time goes: the request, or closing the socket after it
    let (mut request, mut close) = (Vec::new(), Vec::new());
    for m in 0..RUNS {
        let mut s = NfSocket::open().unwrap();
        let t = Instant::now();
        assert!(matches!(
            allowlist::bind_on(&mut s, 0x10000 | m, web).unwrap(),
            Change::Replaced(_)
        ));
        let t2 = Instant::now();
        drop(s);
        request.push(t2 - t);
        close.push(t2.elapsed());
    }
    let unbind = each(&|m| assert!(allowlist::unbind(m).unwrap()));
    println!("with {others} other slots bound (a new socket per call):");
    show("  bind, same verdict", same);
    show("  bind into an empty slot", add);
    show("  bind another verdict (delete+add)", other);
    show("    of which the request", request);
    show("    of which closing the socket", close);
    show("  unbind", unbind);
}
