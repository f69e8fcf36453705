//! What the tasks of one step must do on this node, from the policy and the job's state file.
//!
//! The prolog is the authority: it decided and wrote the job state file before slurmd started
//! this step. Here the step only reads that decision. [`lookup`] does the I/O, [`decide`] turns
//! its result into a [`Placement`] and is a pure function. Every way to get it wrong ends in
//! "no external access": a task is never put on a path it was not granted, and a task of a job
//! that asked never runs without its grant applied.

use extnet::job::slurm_cgroup;
use extnet::plan::layout::Layout;
use extnet::store::state::{Grant, JobState, Outcome, StateError};
use extnet_policy::{Mode, Policy, PolicyError};
use std::fmt;
use std::path::{Path, PathBuf};

/// The step's job on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRef {
    pub job_id: u32,
    pub node: String,
}

/// What each task of the step must do before exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// The job has no decision and did not ask: the task runs as usual.
    Nothing,
    /// The job did not ask and its decision could not be read: the task runs without external
    /// access; the reason goes to the slurmd log at verbose level.
    Unchecked(String),
    /// The job did not ask, and the access a profile would have given it without asking
    /// could not be set up (a full pool, a limit): the task runs without external access, and
    /// the message tells the user why.
    Notice(String),
    /// Granted: the task joins the job's path out.
    Join(Grant),
    /// Granted, cgroup mode, and Slurm keeps the step in a cgroup v2 of the job's own
    /// (`cgroup`), which [`settle`] bound to the job's slot: the task stays where Slurm put it.
    Stay { grant: Grant, cgroup: PathBuf },
    /// The task must not run; the message is for the user (and the slurmd log).
    Fail(String),
}

/// Why the job's decision could not be read.
#[derive(Debug)]
pub enum LookupError {
    Policy(PolicyError),
    State(StateError),
    /// The state file names another node: the layout is wrong (a shared state directory
    /// without `%n`?) and the grant's cgroup or namespace are not this node's.
    WrongNode {
        path: PathBuf,
        found: String,
        node: String,
    },
}

impl fmt::Display for LookupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LookupError::Policy(e) => e.fmt(f),
            LookupError::State(e) => e.fmt(f),
            LookupError::WrongNode { path, found, node } => write!(
                f,
                "job state file {} is for node {found}, but this is node {node}; \
                 node.state_dir must be per node (use %n) on storage shared by nodes",
                path.display()
            ),
        }
    }
}

impl std::error::Error for LookupError {}

/// Reads the job's decision on this node: `Ok(None)` when the prolog wrote none.
pub fn lookup(policy_path: &Path, job: &JobRef) -> Result<Option<JobState>, LookupError> {
    let policy = Policy::load_for_node(policy_path, &job.node).map_err(LookupError::Policy)?;
    let path = Layout::new(&policy, &job.node).job_state(job.job_id);
    let state = JobState::load(&path, job.job_id).map_err(LookupError::State)?;
    if let Some(s) = &state {
        if s.node != job.node {
            return Err(LookupError::WrongNode {
                path,
                found: s.node.clone(),
                node: job.node.clone(),
            });
        }
    }
    Ok(state)
}

/// Turns the result of [`lookup`] into what the tasks do. `asked`: the job or this step asked
/// for external access (the option reached this slurmstepd, or `SLURM_SPANK_EXTNET_REQUEST` is in
/// the step's environment).
pub fn choose(
    job: &JobRef,
    asked: bool,
    looked_up: Result<Option<JobState>, LookupError>,
) -> Placement {
    let JobRef { job_id, node } = job;
    match looked_up {
        Ok(Some(state)) => match state.outcome {
            Outcome::Granted(grant) => Placement::Join(grant),
            // never fail a job that did not ask because what it would get unasked is not there
            Outcome::Denied { reason } if !asked => Placement::Notice(format!(
                "job {job_id} runs without external network access on node {node}: {reason}"
            )),
            Outcome::Denied { reason } => Placement::Fail(format!(
                "external network access denied for job {job_id}: {reason}"
            )),
        },
        Ok(None) if asked => Placement::Fail(format!(
            "external network access was requested but no decision was found for job {job_id} \
             on node {node}: the extnet prolog did not run or failed (see the slurmd log on \
             {node}); a step inside an allocation gets access only if the job itself was \
             submitted with --external-net"
        )),
        Ok(None) => Placement::Nothing,
        Err(e) if asked => Placement::Fail(format!(
            "cannot check external network access for job {job_id} on node {node}: {e}"
        )),
        Err(e) => Placement::Unchecked(format!(
            "job {job_id} did not ask for external network access and its decision on node \
             {node} could not be read, so it runs without: {e}"
        )),
    }
}

/// slurmstepd (root), once per step: a cgroup-mode grant on a node where Slurm keeps the job in
/// a cgroup v2 of its own becomes [`Placement::Stay`], with that cgroup bound to the job's slot
/// (see `extnet::job::slurm_cgroup`); where Slurm has none, the grant stays [`Placement::Join`]
/// (extnet's own job cgroup). A failure to bind fails the step's tasks: never fail open.
pub fn settle(policy_path: &Path, job: &JobRef, placement: Placement) -> Placement {
    let grant = match placement {
        Placement::Join(g) if g.mode == Mode::Cgroup => g,
        other => return other,
    };
    let bound = (|| -> Result<Option<PathBuf>, String> {
        let policy = Policy::load(policy_path).map_err(|e| e.to_string())?;
        let layout = Layout::new(&policy, &job.node);
        let Some(dir) = slurm_cgroup::of_this_process(&layout.cgroup_mount(), job.job_id)
            .map_err(|e| format!("cannot read /proc/self/cgroup: {e}"))?
        else {
            return Ok(None);
        };
        slurm_cgroup::bind(&policy, &layout, job.job_id, &dir)
            .map_err(|e| extnet::diag::error_chain(&e))?;
        Ok(Some(dir))
    })();
    match bound {
        Ok(None) => Placement::Join(grant),
        Ok(Some(cgroup)) => Placement::Stay { grant, cgroup },
        Err(e) => Placement::Fail(join_failed(job, &e)),
    }
}

/// The message for a grant that could not be applied to a task.
pub fn join_failed(job: &JobRef, err: &dyn fmt::Display) -> String {
    format!(
        "cannot put this task of job {} on its external network path on node {}: {err}",
        job.job_id, job.node
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn job() -> JobRef {
        JobRef {
            job_id: 42,
            node: "n1".into(),
        }
    }

    fn grant() -> Grant {
        Grant {
            profile: "cern".into(),
            auto: false,
            mode: Mode::Cgroup,
            slot: 3,
            mark: 0x10003,
            port_first: 20768,
            port_last: 21023,
            node_addr: Ipv4Addr::new(10, 0, 0, 1),
            cgroup: Some("/sys/fs/cgroup/unified/extnet/n1/slot_3".into()),
            netns: None,
            slurm_cgroup: None,
            resolv_conf: None,
        }
    }

    fn state(outcome: Outcome) -> JobState {
        JobState {
            version: extnet::store::state::STATE_VERSION,
            job_id: 42,
            node: "n1".into(),
            user: "alice".into(),
            uid: 1000,
            created: 0,
            outcome,
        }
    }

    fn state_error() -> LookupError {
        LookupError::State(StateError::Corrupt {
            path: "/x/42.json".into(),
            detail: "eof".into(),
        })
    }

    #[test]
    fn granted_joins_whether_asked_or_not() {
        for asked in [true, false] {
            let p = choose(&job(), asked, Ok(Some(state(Outcome::Granted(grant())))));
            assert_eq!(p, Placement::Join(grant()));
        }
    }

    #[test]
    fn denied_fails_with_the_reason() {
        let s = state(Outcome::Denied {
            reason: "user bob may not use profile cern".into(),
        });
        let Placement::Fail(m) = choose(&job(), true, Ok(Some(s))) else {
            panic!()
        };
        assert_eq!(
            m,
            "external network access denied for job 42: user bob may not use profile cern"
        );
    }

    #[test]
    fn no_decision_fails_only_when_asked() {
        let Placement::Fail(m) = choose(&job(), true, Ok(None)) else {
            panic!()
        };
        assert!(
            m.contains("no decision was found for job 42 on node n1"),
            "{m}"
        );
        assert!(m.contains("slurmd log on n1"), "{m}");
        assert_eq!(choose(&job(), false, Ok(None)), Placement::Nothing);
    }

    #[test]
    fn unreadable_decision_fails_when_asked_and_is_noted_otherwise() {
        let Placement::Fail(m) = choose(&job(), true, Err(state_error())) else {
            panic!()
        };
        assert!(
            m.starts_with("cannot check external network access for job 42 on node n1: "),
            "{m}"
        );
        assert!(m.contains("/x/42.json"), "{m}");
        let Placement::Unchecked(m) = choose(&job(), false, Err(state_error())) else {
            panic!()
        };
        assert!(m.contains("runs without"), "{m}");
    }

    #[test]
    fn a_denial_fails_only_a_job_that_asked() {
        let denied = || {
            Ok(Some(state(Outcome::Denied {
                reason: "no free port block on node n1".into(),
            })))
        };
        let Placement::Fail(m) = choose(&job(), true, denied()) else {
            panic!()
        };
        assert!(m.contains("denied for job 42"), "{m}");
        // an auto profile that could not be set up: the job runs, and says why it has no access
        let Placement::Notice(m) = choose(&job(), false, denied()) else {
            panic!()
        };
        assert!(
            m.contains("runs without external network access on node n1"),
            "{m}"
        );
        assert!(m.contains("no free port block"), "{m}");
    }

    #[test]
    fn wrong_node_names_both_nodes() {
        let e = LookupError::WrongNode {
            path: "/s/jobs/42.json".into(),
            found: "n2".into(),
            node: "n1".into(),
        };
        let m = e.to_string();
        assert!(m.contains("for node n2, but this is node n1"), "{m}");
    }

    #[test]
    fn policy_error_text_is_kept() {
        let e = LookupError::Policy(PolicyError::Unsafe {
            path: "/etc/slurm/extnet.toml".into(),
            why: "owned by uid 5".into(),
        });
        let Placement::Fail(m) = choose(&job(), true, Err(e)) else {
            panic!()
        };
        assert!(m.contains("owned by uid 5"), "{m}");
    }
}
