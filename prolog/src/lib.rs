//! `extnet-prolog` (slurm.conf `Prolog=`): run by slurmd as root on every node of every job,
//! before its first step. Decides by the policy and, on grant, sets the job's path out up
//! ([`extnet::job::setup`]). A job that did not ask, on a policy without `auto` profiles,
//! costs a policy read and nothing else.

use extnet::hook;
use extnet::job::setup;
use extnet::plan::layout::Layout;
use extnet_policy::Request;

const NAME: &str = "extnet-prolog";

/// What `--help` and `extnet-prolog(8)` say.
pub const PROGRAM: hook::Program = hook::Program {
    name: NAME,
    about: "extnet's prolog: sets up a job's external network access on this node",
    description: "Run by slurmd as root on every node of every job before its first step \
        (slurm.conf: Prolog=/usr/sbin/extnet-prolog, with PrologFlags=Alloc so that every node \
        of the job is set up at allocation). It reads the job from the environment slurmd \
        gives it, decides by the policy file whether the job gets external network access \
        and, when it does, leases a block of NAT source ports, writes the lease log's allocate \
        record (fsynced), and sets the job's path out up: its packet mark and cgroup (cgroup \
        mode) or its network namespace (netns mode).

        A job that did not ask (srun --external-net), on a policy without auto profiles, costs \
        a policy read and nothing else. A denial or a failed setup is recorded for the job: \
        the SPANK plugin then fails its tasks with the reason on their stderr, and the node \
        stays in service.

        Logs to stderr and to log.file of the policy (default /var/log/extnet/extnet.log): \
        one result line per job it did something for, with its wall time and the time of \
        each step in microseconds.",
};

/// The program, with the process's arguments and environment; returns the exit status.
pub fn main() -> u8 {
    let (args, job) = match hook::begin(&PROGRAM) {
        Ok(a) => a,
        Err(code) => return code,
    };
    let asked = job.request != Request::None;
    let Some(policy) = hook::load_policy(NAME, &args, &job, asked) else {
        return 0;
    };
    // a job that did not ask, with no auto profile: nothing to do, no log line
    if !asked && !policy.has_auto() {
        return 0;
    }
    let layout = Layout::new(&policy, &job.node);
    hook::run_logged(NAME, &policy, &job, || setup::run(&policy, &layout, &job))
}
