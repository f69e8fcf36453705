//! The slots' traffic counters in the node's table, over nf_tables netlink: read by the
//! epilog and `extnet status`, reset by the prolog when it grants a slot (so the epilog reads
//! exactly the job's traffic), carried over when the base table is reloaded.

use crate::kernel::nftables::{self, netlink::NfSocket};
use crate::plan::ruleset::counters::{counter_name, with_values, KINDS};
use crate::plan::TABLE;
use crate::store::accounting::Counters;
use std::collections::{BTreeMap, HashMap};

/// Why a slot's counters could not be read or reset.
#[derive(Debug, thiserror::Error)]
pub enum CounterError {
    #[error("nftables counter {name} does not exist in table inet {TABLE}: the node's base table is not loaded or older than this extnet; run `extnet node setup` on the node")]
    Missing { name: String },
    #[error("cannot {op} nftables counter {name} in table inet {TABLE} over netlink: {source}; run as root in the node's network namespace")]
    Netlink {
        op: &'static str,
        name: String,
        source: std::io::Error,
    },
}

/// Reads the counters of `slots` (and of no other slot): six netlink requests per slot (the
/// totals and their IPv6 parts) on one socket (`nft list counter inet extnet slotN_out` ...,
/// without the libnftables cache, which would fetch the whole table, cgroup maps included).
pub fn read(slots: &[u32]) -> Result<BTreeMap<u32, Counters>, CounterError> {
    get_slots(slots, false)
}

/// Sets the counters of `slot` to zero (the prolog, when it grants the slot to a job) and
/// returns what they held: `nft reset counter inet extnet slotN_out` ..., over netlink.
pub fn reset(slot: u32) -> Result<Counters, CounterError> {
    Ok(get_slots(&[slot], true)?[&slot])
}

fn get_slots(slots: &[u32], reset: bool) -> Result<BTreeMap<u32, Counters>, CounterError> {
    let op = if reset { "reset" } else { "read" };
    let mut out = BTreeMap::new();
    if slots.is_empty() {
        return Ok(out);
    }
    let mut sock = NfSocket::open().map_err(|source| CounterError::Netlink {
        op,
        name: counter_name(slots[0], KINDS[0]),
        source,
    })?;
    for &slot in slots {
        let mut get = |kind: &str| {
            let name = counter_name(slot, kind);
            match sock.counter(TABLE, &name, reset) {
                Ok(Some(v)) => Ok(v),
                Ok(None) => Err(CounterError::Missing { name }),
                Err(source) => Err(CounterError::Netlink { op, name, source }),
            }
        };
        let (packets_out, bytes_out) = get("out")?;
        let (packets_in, bytes_in) = get("in")?;
        let (connections, _) = get("conn")?;
        let (packets_out6, bytes_out6) = get("out6")?;
        let (packets_in6, bytes_in6) = get("in6")?;
        let (connections6, _) = get("conn6")?;
        out.insert(
            slot,
            Counters {
                bytes_out,
                packets_out,
                bytes_in,
                packets_in,
                connections,
                bytes_out6,
                packets_out6,
                bytes_in6,
                packets_in6,
                connections6,
            },
        );
    }
    Ok(out)
}

/// Every named counter of table `inet extnet` (packets, bytes) by name: one netlink dump,
/// without libnftables' cache (which would fetch the cgroup maps too). O(counters): for
/// reloads and overviews, never per job.
pub fn all_counters() -> Result<HashMap<String, (u64, u64)>, CounterError> {
    NfSocket::open()
        .and_then(|mut s| s.all_counters(TABLE))
        .map_err(|source| CounterError::Netlink {
            op: "dump",
            name: "*".into(),
            source,
        })
}

/// The base ruleset about to replace the loaded table, with the loaded counters' values, so
/// that running jobs keep what they have counted across a reload (`delete table` would
/// otherwise zero them; packets counted between this read and the load, a few ms, are lost).
/// Lists the table's named counters only, never a cgroup map. When there is nothing to read
/// (no table yet) or it fails, `ruleset` is returned as it is.
pub fn carry_over(ruleset: &str) -> String {
    if !nftables::table_exists(TABLE).unwrap_or(false) {
        return ruleset.to_owned();
    }
    match NfSocket::open().and_then(|mut s| s.all_counters(TABLE)) {
        Ok(v) => with_values(ruleset, &v),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the traffic counters before reloading the nft table; running jobs' counters restart at zero");
            ruleset.to_owned()
        }
    }
}
