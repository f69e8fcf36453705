//! `extnet-prolog` (slurm.conf `Prolog=`): run by slurmd as root on every node of every job,
//! before its first step. Decides by the policy and, on grant, sets the job's path out up
//! ([`extnet::job::setup`]). A job that did not ask, on a policy without `auto` profiles,
//! costs a policy read and nothing else.

use extnet::hook;
use extnet::job::setup;
use extnet::plan::layout::Layout;
use extnet_policy::Request;

const NAME: &str = "extnet-prolog";

/// The program, with the process's arguments and environment; returns the exit status.
pub fn main() -> u8 {
    let (args, job) = match hook::begin(NAME) {
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
