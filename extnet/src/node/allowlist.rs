//! The slots' allowlist bindings in the node's table (elements of the `slot_profile` verdict
//! map), over nf_tables netlink; what they mean is [`crate::plan::ruleset::allowlist`].

use crate::kernel::nftables::netlink::{Change, NfSocket, NfnlError, Verdict};
use crate::plan::ruleset::allowlist::{verdict, verdict_of, IPV6_COUNTER, MAP, UNBOUND_COUNTER};
use crate::plan::TABLE;
use crate::store::lease::Lease;
use extnet_policy::{Policy, Profile};

/// `add element` commands that bind every lease in `leases` whose profile still exists, for
/// the same transaction as a base reload (which empties the map). Leases of a profile the
/// policy no longer has are left unbound, so their external traffic is dropped: they are
/// returned with the reason, for the log.
pub fn rebind(policy: &Policy, leases: &[Lease]) -> (String, Vec<String>) {
    let mut elems = Vec::new();
    let mut unbound = Vec::new();
    for l in leases {
        match policy.profile(&l.profile) {
            Some(p) => elems.push(format!("0x{:x} : {}", l.mark, verdict(p))),
            None => unbound.push(format!(
                "job {} holds slot {} of profile {:?}, which the policy no longer has: its external traffic is dropped until it ends",
                l.job_id, l.slot, l.profile
            )),
        }
    }
    let cmds = if elems.is_empty() {
        String::new()
    } else {
        format!(
            "add element inet {TABLE} {MAP} {{ {} }}\n",
            elems.join(", ")
        )
    };
    (cmds, unbound)
}

/// Binds the job with mark `mark` to its profile's verdict (`nft add element inet extnet
/// slot_profile { MARK : VERDICT }`), over one netlink socket opened for it. When the slot's
/// element carries that verdict already (the slot's last job had the same profile), nothing is
/// written; an element with another verdict is replaced in one transaction. Returns what
/// changed.
pub fn bind(mark: u32, profile: &Profile) -> Result<Change, NfnlError> {
    bind_on(&mut open()?, mark, profile)
}

/// [`bind`] on a given socket.
pub fn bind_on(sock: &mut NfSocket, mark: u32, profile: &Profile) -> Result<Change, NfnlError> {
    let change = sock.set_verdict(TABLE, MAP, &mark.to_ne_bytes(), &verdict_of(profile))?;
    if change != Change::Unchanged {
        tracing::debug!(mark, profile = %profile.name, ?change, "allowlist binding written");
    }
    Ok(change)
}

/// The verdict the slot with mark `mark` is bound to now (`nft get element`), if any. One
/// netlink request; never lists the map.
pub fn current(mark: u32) -> Result<Option<Verdict>, NfnlError> {
    open()?.get_verdict(TABLE, MAP, &mark.to_ne_bytes())
}

/// Whether binding the slot with mark `mark` to `profile` needs a write (its element is
/// missing or carries another profile's verdict); a [`bind`] then costs more than a lookup.
pub fn needs_rebind(mark: u32, profile: &Profile) -> Result<bool, NfnlError> {
    Ok(current(mark)?.as_ref() != Some(&verdict_of(profile)))
}

/// Removes the slot's element (`nft delete element`): node teardown, tests, a prolog's
/// rollback; never the epilog (see the module's doc). Absent element, map or table is fine:
/// returns whether there was one. Slow: the kernel frees the element when the socket closes,
/// after an RCU grace period.
pub fn unbind(mark: u32) -> Result<bool, NfnlError> {
    open()?.delete_element(TABLE, MAP, &mark.to_ne_bytes())
}

fn open() -> Result<NfSocket, NfnlError> {
    NfSocket::open().map_err(NfnlError::Open)
}

/// Packets dropped on this node by each profile's allowlist (`dest_<profile>_drop`) and for
/// want of a binding (`unbound_drop`), as (counter name, packets, bytes), since the table was
/// first loaded. One netlink dump of the table's named counters: never lists a set or map
/// (listing the cgroup map resolves every element's path and takes minutes at scale).
pub fn drops() -> Result<Vec<(String, u64, u64)>, String> {
    let all = crate::node::counters::all_counters().map_err(|e| e.to_string())?;
    let mut v: Vec<(String, u64, u64)> = all
        .into_iter()
        .filter(|(n, _)| {
            n == UNBOUND_COUNTER
                || n == IPV6_COUNTER
                || (n.starts_with("dest_") && n.ends_with("_drop"))
        })
        .map(|(n, (packets, bytes))| (n, packets, bytes))
        .collect();
    v.sort();
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::testing::{node_policy, ALLOWLIST_PROFILES};

    #[test]
    fn rebind_skips_and_reports_leases_of_removed_profiles() {
        let p = node_policy("eth0", ALLOWLIST_PROFILES);
        let lease = |job: u32, slot: u32, profile: &str| Lease {
            job_id: job,
            user: "a".into(),
            uid: 1,
            slot,
            port_first: 0,
            port_last: 0,
            mark: 0x10000 | slot,
            mode: extnet_policy::Mode::Cgroup,
            profile: profile.into(),
            node_addr: "10.99.0.11".parse().unwrap(),
            node_addr6: None,
            since: 0,
            last_logged: None,
        };
        let (cmds, unbound) = rebind(
            &p,
            &[
                lease(7, 1, "open"),
                lease(8, 2, "web-only"),
                lease(9, 0, "gone"),
            ],
        );
        assert_eq!(
            cmds,
            "add element inet extnet slot_profile { 0x10001 : accept, 0x10002 : jump dest_web-only }\n"
        );
        assert_eq!(unbound.len(), 1);
        assert!(
            unbound[0].contains("job 9") && unbound[0].contains("\"gone\""),
            "{unbound:?}"
        );
        assert_eq!(rebind(&p, &[]).0, "");
    }
}
