//! Running cgroup-mode jobs in the node table's job cgroup map
//! ([`crate::plan::ruleset::JOB_CGROUP_MAP`]): the prolog adds the job's cgroup with its
//! slot's checked mark, the epilog deletes it before the cgroup goes. Over nf_tables netlink,
//! keyed by the cgroup's id as the kernel gives it to `socket cgroupv2` (nft itself only takes
//! a path, which it resolves to that id).

use crate::kernel::nftables::netlink::{NfSocket, NfnlError};
use crate::plan::ruleset::JOB_CGROUP_MAP;
use crate::plan::TABLE;

/// Adds the job cgroup of id `cgroup_id` with `mark` (`nft add element inet extnet job_cgroup
/// { "PATH" : MARK }`). The same element again (a prolog run twice) is fine.
pub fn bind(cgroup_id: u64, mark: u32) -> Result<(), NfnlError> {
    NfSocket::open()
        .map_err(NfnlError::Open)?
        .add_value_element(
            TABLE,
            JOB_CGROUP_MAP,
            &cgroup_id.to_ne_bytes(),
            &mark.to_ne_bytes(),
        )?;
    tracing::debug!(cgroup_id, mark, "job cgroup bound to its mark");
    Ok(())
}

/// Removes the job cgroup of id `cgroup_id` from the map (`nft delete element`); absent is
/// fine. Returns whether it was there.
pub fn unbind(cgroup_id: u64) -> Result<bool, NfnlError> {
    NfSocket::open().map_err(NfnlError::Open)?.delete_element(
        TABLE,
        JOB_CGROUP_MAP,
        &cgroup_id.to_ne_bytes(),
    )
}
