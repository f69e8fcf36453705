//! A user pins a netns job's namespace (issue 16, item 6), on the real test cluster: a
//! process of [`DENIED`] (a user without any grant) on n1 opens the running netns job's
//! `/run/netns` file (mode 0444) and keeps the fd past the job's end.
//!
//! - Right after the job's epilog its veth pair `xj<job>` is gone, and `extnet status` on n1
//!   lists the pinned namespace with the holder's pid and fd.
//! - The next netns job on n1 gets out.
//! - Once the holder exits, `extnet reconcile` drops the record and nothing of the job is left.
//!
//! Needs root and the running cluster: ignored by a plain `cargo test`, run by
//! `slurm-test-env/test`.

use std::process::{Command, Stdio};
use std::time::Duration;
use support::cluster::*;
use support::wait;

const NODE: &str = "n1";

/// Kills the holder when dropped (also when the test fails).
struct Holder(std::process::Child);

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
#[ignore = "needs root and the test cluster: run slurm-test-env/test"]
fn a_pinned_namespace_loses_its_veth_at_the_epilog_and_is_reported() {
    let c = Cluster::get();
    let stop = c.work(ALLOWED).join("pinned-stop");
    let _ = std::fs::remove_file(&stop);
    let job = c.sbatch(
        ALLOWED,
        30,
        &["-N1", "-w", NODE, "--external-net=isolated"],
        &format!(
            "i=0; while [ ! -e {} ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done",
            stop.display()
        ),
    );
    c.wait_running(job, NODE);
    let ns = c
        .policy()
        .node
        .netns_dir
        .join(format!("extnet-{NODE}-{job}"));
    wait::until(Duration::from_secs(20), Duration::from_millis(100), || {
        if ns.exists() {
            Ok(())
        } else {
            Err(format!("{} does not exist", ns.display()))
        }
    });
    let uid = uid_of(DENIED).to_string();
    let child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/xn-{NODE}"))
        .args([
            "setpriv",
            "--reuid",
            &uid,
            "--regid",
            &uid,
            "--clear-groups",
        ])
        .args(["sh", "-c", "exec sleep 120 7<\"$0\""])
        .arg(&ns)
        .stdin(Stdio::null())
        .spawn()
        .expect("start the holder");
    let pid = child.id();
    let holder = Holder(child);
    // the holder has the namespace open (its fd 7) before the job ends
    wait::until(
        Duration::from_secs(10),
        Duration::from_millis(50),
        || match std::fs::read_link(format!("/proc/{pid}/fd/7")) {
            Ok(_) => Ok(()),
            Err(e) => Err(format!("the holder has no fd 7 yet: {e}")),
        },
    );
    std::fs::write(&stop, "").unwrap();
    c.wait_gone(job);
    let _ = std::fs::remove_file(&stop);
    c.wait_released(job, 30);
    let links = c.on_node(NODE, &["ip", "-o", "link", "show"]);
    assert!(
        !links.stdout.contains(&format!("xj{job}:"))
            && !links.stdout.contains(&format!("xj{job}@")),
        "the job's veth is gone right after its epilog:\n{links}"
    );
    let st = c.extnet(NODE, &["status", "--node", NODE]);
    assert!(st.ok(), "extnet status:\n{st}");
    assert!(
        st.stdout.contains(&format!("job {job}: net:["))
            && st
                .stdout
                .contains(&format!("pid {pid} (uid {uid}, sleep) fds 7")),
        "extnet status lists the pinned namespace and its holder:\n{st}"
    );

    // the next netns job on the node gets out
    let r = c.srun(
        ALLOWED,
        &["-N1", "-w", NODE, "--external-net=isolated"],
        &format!("{} tcp", c.probe()),
    );
    assert!(r.ok(), "the next netns job:\n{r}");
    let next = r.job_id();
    let block = c.block(next, NODE);
    let seen = r.seen_one("tcp");
    assert!((block.0..=block.1).contains(&seen.1), "{r}");
    c.assert_clean(next);

    drop(holder);
    let conf = c.xn_dir.join("etc/slurm.conf").display().to_string();
    let rc = c.extnet(NODE, &["reconcile", "--node", NODE, "--slurm-conf", &conf]);
    assert!(rc.ok(), "extnet reconcile:\n{rc}");
    assert!(
        rc.stdout
            .contains(&format!("job {job}: its pinned namespace net:[")),
        "{rc}"
    );
    let st = c.extnet(NODE, &["status", "--node", NODE]);
    assert!(
        !st.stdout.contains(&format!("job {job}: net:[")),
        "the record is gone:\n{st}"
    );
    c.assert_clean(job);
}
