//! `extnet-epilog` (slurm.conf `Epilog=`): run by slurmd as root on every node of every job
//! after it ended. Tears the job's path out down, writes its accounting record and releases
//! its lease ([`extnet::job::teardown`]). A job with nothing on the node costs a policy read
//! and a few `stat`s.

use extnet::hook;
use extnet::job::teardown;
use extnet::plan::layout::Layout;
use extnet::store::markers;

const NAME: &str = "extnet-epilog";

/// What `--help` and `extnet-epilog(8)` say.
pub const PROGRAM: hook::Program = hook::Program {
    name: NAME,
    about: "extnet's epilog: tears a job's external network access down on this node",
    description: "Run by slurmd as root on every node of every job after it ended (slurm.conf: \
        Epilog=/usr/sbin/extnet-epilog). It tears down what the prolog set up for the job \
        (best effort: it carries on past errors and reports them together; what is already \
        gone counts as done), writes the job's traffic record to log.accounting, releases its \
        port block into quarantine and writes the lease log's release record.

        A job with nothing on the node (it did not ask, or was denied before a lease) costs a \
        policy read and a few stat calls. The epilog finds everything by the job id, so it \
        also cleans up after a prolog that died half way.

        Logs to stderr and to log.file of the policy (default /var/log/extnet/extnet.log).",
};

/// The program, with the process's arguments and environment; returns the exit status.
pub fn main() -> u8 {
    let (args, job) = match hook::begin(&PROGRAM) {
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
