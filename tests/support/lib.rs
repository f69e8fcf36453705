//! What the integration tests share: [`cluster`] (the running test cluster: jobs as users,
//! the outside host's log, residue checks).

pub mod cluster;
