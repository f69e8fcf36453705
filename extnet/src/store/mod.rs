//! What a node keeps on disk, and how it survives a crash: every write is atomic (temp file,
//! fsync, rename) or an fsynced append, under the node lock where several programs write.
//!
//! - [`fs`]: atomic writes, appends, the node lock.
//! - [`lease`]: the lease table of port blocks (slots) with quarantine, and the lease log.
//! - [`markers`]: per-job lease markers (the epilog's fast path).
//! - [`pinned`]: netns-mode jobs' namespaces still held after their teardown.
//! - [`state`]: the job state file the prolog writes and the plugin reads.
//! - [`accounting`]: per-job traffic records, written by the epilog.
//! - [`denials`]: the node's denial counters by reason, written by the prolog.

pub mod accounting;
pub mod denials;
pub mod fs;
pub mod lease;
pub mod markers;
pub mod pinned;
pub mod state;
pub mod trace;
