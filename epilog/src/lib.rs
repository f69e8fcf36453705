//! `extnet-epilog` (slurm.conf `Epilog=`): run by slurmd as root on every node of every job
//! after it ended. Tears the job's path out down, writes its accounting record and releases
//! its lease ([`extnet::job::teardown`]). A job with nothing on the node costs a policy read
//! and a few `stat`s.

use extnet::hook;
use extnet::job::teardown;
use extnet::plan::layout::Layout;
use extnet::store::markers;

const NAME: &str = "extnet-epilog";

/// The program, with the process's arguments and environment; returns the exit status.
pub fn main() -> u8 {
    let (args, job) = match hook::begin(NAME) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let Some(policy) = hook::load_policy(NAME, &args, &job, true) else {
        return 0;
    };
    let layout = Layout::new(&policy, &job.node);
    // a job with nothing on this node (it did not ask, or was denied before a lease)
    if !markers::may_have_anything(&layout, job.job_id) {
        return 0;
    }
    hook::run_logged(NAME, &policy, &job, || {
        teardown::run(&policy, &layout, &job)
    })
}
