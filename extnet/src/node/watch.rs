//! The node agent (`extnet node watch`): puts the node's base back moments after it drifted
//! (a firewall reload flushed the nft table, someone deleted a rule or the hold link, a link
//! flap took the routes), without waiting for the next external job's prolog.
//!
//! It listens to the kernel: one socket subscribed to rtnetlink's links, IPv4 addresses,
//! routes, rules and interface settings and IPv6 routes and rules, one to nf_tables' notifications
//! ([`crate::kernel::netlink::monitor`], [`crate::kernel::nftables::netlink::listen`]), and
//! waits for them with poll(2), together with a descriptor that says stop (a signalfd in the
//! program, a pipe in the tests). When a notification about extnet's objects arrives it waits
//! a short quiet period ([`WatchConfig::quiet`]) so that a burst is handled once, then
//! compares the base with the plan ([`crate::node::drift::check`]). Most notifications are a
//! job's own changes and the check finds nothing: it reads only, takes no lock and costs about
//! a millisecond. When something differs, it takes the node lock (the prologs' and epilogs'),
//! checks again (a prolog may have been halfway through a change) and repairs with
//! [`crate::node::ensure`], then checks once more; what `ensure`'s fast path cannot see (the
//! `ip6` table alone, the job cgroup root removed) it repairs with [`crate::node::reload`].
//!
//! It does not repair in a loop: the notifications its own repair caused are read and dropped
//! before the check that follows it, and a check, which only reads, causes none. A node
//! interface that is down cannot take its routes: the agent says so once and repairs when the
//! kernel reports the link up. Notifications the kernel dropped (its queue for the socket was
//! full, `ENOBUFS`) mean a check of everything, as does the start and, as a safety net, every
//! [`WatchConfig::reconcile`]. A repair that fails is tried again after 1, 2, 4 ... seconds,
//! up to the reconcile period.
//!
//! Safe to restart: it keeps nothing but a lock file (`<state_dir>/watch.lock`, so that a
//! second agent refuses to start) and begins with a full check. The policy file is read again
//! when it changes; one that no longer loads leaves the agent on the last one that did.

use crate::kernel::netlink::monitor::{self, Group};
use crate::kernel::netlink::{Listener, Netlink, NetlinkError, Notification, SocketError};
use crate::kernel::nftables::netlink as nfnl;
use crate::node::drift::{self, Drift};
use crate::node::{self as base, NodeError};
use crate::plan::{self, layout::Layout};
use crate::store::fs::{FsError, Lock};
use extnet_policy::Policy;
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::fmt;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Datagrams read from one socket per wake-up; more wake it again at once.
const BATCH: usize = 256;

/// What the agent watches, and how it paces itself.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    pub policy_path: PathBuf,
    /// The node's name (`%n` in the policy's paths), as slurmd calls it.
    pub node: String,
    /// How long after the first notification of a burst the base is checked: the rest of the
    /// burst (a firewall reload deletes many objects) is then handled by the same check.
    pub quiet: Duration,
    /// A full check this often even without notifications.
    pub reconcile: Duration,
}

impl WatchConfig {
    pub const QUIET: Duration = Duration::from_millis(100);
    pub const RECONCILE: Duration = Duration::from_secs(60);

    pub fn new(policy_path: impl Into<PathBuf>, node: impl Into<String>) -> WatchConfig {
        WatchConfig {
            policy_path: policy_path.into(),
            node: node.into(),
            quiet: WatchConfig::QUIET,
            reconcile: WatchConfig::RECONCILE,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error("cannot load the policy: {0}")]
    Policy(#[from] extnet_policy::PolicyError),
    #[error("another node agent watches node {node} (it holds {}); stop it first (systemctl stop extnet-node-watch)", path.display())]
    AlreadyRunning { node: String, path: PathBuf },
    #[error("cannot listen to the kernel's routing notifications: {0}")]
    ListenRoute(#[source] NetlinkError),
    #[error("cannot listen to nf_tables' notifications: {0}; the agent needs root (CAP_NET_ADMIN) and a kernel with nf_tables")]
    ListenNft(#[source] std::io::Error),
    #[error("cannot read the kernel's notifications: {0}")]
    Receive(#[source] SocketError),
    #[error("cannot wait for the kernel's notifications: {0}")]
    Poll(#[source] Errno),
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error(transparent)]
    Fs(#[from] FsError),
    #[error("the base still differs from the plan after a repair: {0}")]
    StillDrifting(String),
}

impl From<NetlinkError> for WatchError {
    fn from(e: NetlinkError) -> WatchError {
        WatchError::Node(NodeError::Netlink(e))
    }
}

/// Why the agent checked the base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Start,
    /// Notifications about extnet's objects: `count` of them, the first read at `first`.
    Events {
        first: Instant,
        count: usize,
    },
    /// The kernel dropped notifications.
    Overrun,
    /// The periodic check.
    Reconcile,
    /// A repair that failed, tried again.
    Retry,
}

impl Trigger {
    /// A short name, for metrics labels ([`crate::node::metrics::TRIGGERS`]).
    pub fn label(&self) -> &'static str {
        match self {
            Trigger::Start => "start",
            Trigger::Events { .. } => "events",
            Trigger::Overrun => "overrun",
            Trigger::Reconcile => "reconcile",
            Trigger::Retry => "retry",
        }
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trigger::Start => f.write_str("at start"),
            Trigger::Events { count, .. } => write!(f, "after {count} kernel notification(s)"),
            Trigger::Overrun => f.write_str("after the kernel dropped notifications"),
            Trigger::Reconcile => f.write_str("at the periodic check"),
            Trigger::Retry => f.write_str("on retry"),
        }
    }
}

/// One repair of the base.
#[derive(Debug, Clone)]
pub struct Repair {
    pub trigger: Trigger,
    /// What differed from the plan (checked under the node lock).
    pub drift: Vec<Drift>,
    /// [`crate::node::ensure`] loaded the nft tables.
    pub loaded: bool,
    /// `ensure` was not enough: [`crate::node::reload`] loaded the tables.
    pub forced: bool,
    /// From taking the node lock to the base checked in place.
    pub took: Duration,
    /// From the first notification of the burst to the base checked in place (`None`: not
    /// triggered by a notification).
    pub since_event: Option<Duration>,
}

impl Repair {
    /// What was done, in words.
    pub fn action(&self) -> String {
        let mut done = vec!["re-asserted rules, routes and the hold link"];
        if self.loaded {
            done.push("loaded the nft tables");
        }
        if self.forced {
            done.push("reloaded the nft tables (forced)");
        }
        done.join(", ")
    }
}

/// A check that succeeded, as [`Watcher::run_checks`] hands it on.
pub struct Checked<'a> {
    pub trigger: Trigger,
    /// What was repaired, when something was.
    pub repair: Option<&'a Repair>,
    /// The policy and layout the base was checked against (the policy file's latest that
    /// loaded).
    pub policy: &'a Policy,
    pub layout: &'a Layout,
}

/// A check that is due.
struct Pending {
    trigger: Trigger,
    due: Instant,
}

/// What identifies a version of the policy file without reading it.
type Stamp = Option<(u64, u64, u64, i64, i64, i64, i64)>;

fn stamp(path: &std::path::Path) -> Stamp {
    let m = std::fs::metadata(path).ok()?;
    Some((
        m.dev(),
        m.ino(),
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    ))
}

/// The node agent: its sockets, the policy it checks against, and what it is waiting for.
pub struct Watcher {
    config: WatchConfig,
    policy: Policy,
    stamp: Stamp,
    layout: Layout,
    nl: Netlink,
    route: Listener,
    nft: Listener,
    /// Why the base cannot be repaired now (said once until it changes).
    waiting: Option<String>,
    _agent: Lock,
}

impl Watcher {
    /// Loads the policy, takes the agent's lock, and subscribes to the kernel's notifications
    /// in the calling thread's network namespace (before the first check, so that no change
    /// after it goes unnoticed).
    pub fn start(config: WatchConfig) -> Result<Watcher, WatchError> {
        let stamp = stamp(&config.policy_path);
        let policy = Policy::load_for_node(&config.policy_path, &config.node)?;
        let layout = Layout::new(&policy, &config.node);
        let path = layout.agent_lock();
        let agent = Lock::try_acquire(&path)?.ok_or_else(|| WatchError::AlreadyRunning {
            node: config.node.clone(),
            path: path.clone(),
        })?;
        let route = monitor::listen(&[
            Group::Link,
            Group::Ipv4Addr,
            Group::Ipv4Route,
            Group::Ipv4Rule,
            Group::Ipv4Netconf,
            Group::Ipv6Route,
            Group::Ipv6Rule,
        ])
        .map_err(WatchError::ListenRoute)?;
        let nft = nfnl::listen().map_err(WatchError::ListenNft)?;
        let nl = Netlink::open()?;
        tracing::info!(
            node = %config.node,
            policy = %config.policy_path.display(),
            quiet_ms = config.quiet.as_millis() as u64,
            reconcile_s = config.reconcile.as_secs(),
            "watching the node's base"
        );
        Ok(Watcher {
            config,
            policy,
            stamp,
            layout,
            nl,
            route,
            nft,
            waiting: None,
            _agent: agent,
        })
    }

    /// Watches until `stop` becomes readable (or hangs up): checks at once, then on
    /// notifications and every [`WatchConfig::reconcile`]; hands each repair to `on_repair`
    /// (after logging it). Returns an error only when the kernel's notifications cannot be
    /// read or waited for; a failed repair is logged and tried again.
    pub fn run(
        &mut self,
        stop: BorrowedFd<'_>,
        on_repair: &mut dyn FnMut(&Repair),
    ) -> Result<(), WatchError> {
        self.run_checks(stop, &mut |c| {
            if let Some(r) = c.repair {
                on_repair(r)
            }
        })
    }

    /// [`Self::run`], handing every check that succeeded to `on_check` (the agent writes its
    /// metrics from there).
    pub fn run_checks(
        &mut self,
        stop: BorrowedFd<'_>,
        on_check: &mut dyn FnMut(&Checked<'_>),
    ) -> Result<(), WatchError> {
        let mut pending = Some(Pending {
            trigger: Trigger::Start,
            due: Instant::now(),
        });
        let mut next_reconcile = Instant::now() + self.config.reconcile;
        let mut backoff = Duration::ZERO;
        loop {
            let due = pending
                .as_ref()
                .map_or(next_reconcile, |p| p.due.min(next_reconcile));
            let wait = due.saturating_duration_since(Instant::now());
            // rounded up: a timeout a little short would wake the loop to find nothing due
            let wait = PollTimeout::try_from(wait + Duration::from_micros(999))
                .unwrap_or(PollTimeout::MAX);
            let (stopped, route_ready, nft_ready) = {
                let mut fds = [
                    PollFd::new(stop, PollFlags::POLLIN),
                    PollFd::new(self.route.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.nft.as_fd(), PollFlags::POLLIN),
                ];
                match poll(&mut fds, wait) {
                    Ok(_) => {}
                    Err(Errno::EINTR) => continue,
                    Err(e) => return Err(WatchError::Poll(e)),
                }
                let ready = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
                (ready(&fds[0]), ready(&fds[1]), ready(&fds[2]))
            };
            if stopped {
                tracing::info!(node = %self.config.node, "stopped watching the node's base");
                return Ok(());
            }
            let now = Instant::now();
            let (events, overrun) = self.read(route_ready, nft_ready)?;
            if overrun {
                tracing::warn!(node = %self.config.node, "the kernel dropped notifications (the socket's queue was full): checking everything");
                pending.get_or_insert(Pending {
                    trigger: Trigger::Overrun,
                    due: now + self.config.quiet,
                });
            }
            if events > 0 {
                match &mut pending {
                    Some(Pending {
                        trigger: Trigger::Events { count, .. },
                        ..
                    }) => *count += events,
                    Some(_) => {}
                    None => {
                        pending = Some(Pending {
                            trigger: Trigger::Events {
                                first: now,
                                count: events,
                            },
                            due: now + self.config.quiet,
                        })
                    }
                }
            }
            if now >= next_reconcile {
                next_reconcile = now + self.config.reconcile;
                pending.get_or_insert(Pending {
                    trigger: Trigger::Reconcile,
                    due: now,
                });
            }
            let Some(p) = pending.take_if(|p| now >= p.due) else {
                continue;
            };
            match self.check_and_repair(p.trigger) {
                Ok(repair) => {
                    backoff = Duration::ZERO;
                    on_check(&Checked {
                        trigger: p.trigger,
                        repair: repair.as_ref(),
                        policy: &self.policy,
                        layout: &self.layout,
                    });
                }
                Err(e) => {
                    backoff = (backoff * 2).clamp(Duration::from_secs(1), self.config.reconcile);
                    tracing::error!(
                        node = %self.config.node,
                        "cannot repair the node's base {}: {}; trying again in {} s",
                        p.trigger,
                        crate::diag::error_chain(&e),
                        backoff.as_secs()
                    );
                    pending = Some(Pending {
                        trigger: Trigger::Retry,
                        due: Instant::now() + backoff,
                    });
                }
            }
        }
    }

    /// Reads what the sockets that poll found ready hold: the number of notifications about
    /// extnet's objects (every routing one; nf_tables' about table `extnet`), and whether the
    /// kernel dropped some.
    fn read(&mut self, route: bool, nft: bool) -> Result<(usize, bool), WatchError> {
        let mut events = 0;
        let mut overrun = false;
        if route {
            let d = self
                .route
                .drain(BATCH, &mut |n: Notification<'_>| {
                    tracing::trace!(change = ?monitor::change(&n), "routing notification");
                })
                .map_err(WatchError::Receive)?;
            events += d.messages;
            overrun |= d.overrun;
        }
        if nft {
            let d = self
                .nft
                .drain(BATCH, &mut |n: Notification<'_>| {
                    if let Some(c) = nfnl::change(&n) {
                        if c.table == plan::TABLE && c.family.is_some() {
                            tracing::trace!(change = ?c, "nf_tables notification");
                            events += 1;
                        }
                    }
                })
                .map_err(WatchError::Receive)?;
            overrun |= d.overrun;
        }
        Ok((events, overrun))
    }

    /// Reads and drops every notification queued now: those of the agent's own repair.
    fn drop_own_notifications(&mut self) -> Result<(), WatchError> {
        for socket in [&mut self.route, &mut self.nft] {
            // bounded: a repair's own notifications end; a node busy with other changes
            // wakes the loop again anyway
            for _ in 0..64 {
                let d = socket
                    .drain(BATCH, &mut |_| {})
                    .map_err(WatchError::Receive)?;
                if !d.more {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Reads the policy again when its file changed; keeps the last one that loaded when the
    /// new one does not.
    fn refresh_policy(&mut self) {
        let now = stamp(&self.config.policy_path);
        if now == self.stamp {
            return;
        }
        self.stamp = now;
        match Policy::load_for_node(&self.config.policy_path, &self.config.node) {
            Ok(p) => {
                tracing::info!(node = %self.config.node, "the policy changed: checking the base against the new one");
                self.layout = Layout::new(&p, &self.config.node);
                self.policy = p;
            }
            Err(e) => tracing::error!(
                node = %self.config.node,
                "the policy no longer loads ({e}); the base stays as the last policy that loaded plans it"
            ),
        }
    }

    /// Notes why the base cannot be repaired now; logged once until the reason changes.
    fn wait(&mut self, why: String) {
        if self.waiting.as_ref() != Some(&why) {
            tracing::warn!(node = %self.config.node, "{why}: the base is repaired once the kernel reports it fixed");
            self.waiting = Some(why);
        }
    }

    /// The reason of [`Self::wait`] is gone.
    fn resolved(&mut self) {
        if let Some(why) = self.waiting.take() {
            tracing::info!(node = %self.config.node, "no longer waiting (was: {why})");
        }
    }

    /// `node.interface`'s index and address; `None` (after saying why) when it has none yet.
    fn node_addr(&mut self) -> Result<Option<(u32, Ipv4Addr)>, WatchError> {
        match base::node_addr(&self.policy, &self.layout, &mut self.nl) {
            Ok(a) => Ok(Some(a)),
            Err(e @ (NodeError::NoInterface { .. } | NodeError::NoAddress { .. })) => {
                self.wait(e.to_string());
                Ok(None)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// What of the base differs now; `None` when it cannot be repaired now (said why).
    fn drift(&mut self) -> Result<Option<(Vec<Drift>, u32, Ipv4Addr)>, WatchError> {
        let Some((index, addr)) = self.node_addr()? else {
            return Ok(None);
        };
        let drift = drift::check(&self.policy, &self.layout, &mut self.nl, index, addr)?;
        if let Some(d) = drift.iter().find(|d| !d.repairable()) {
            self.wait(d.to_string());
            return Ok(None);
        }
        Ok(Some((drift, index, addr)))
    }

    /// Checks the base, and repairs it when it differs from the plan (see the module's doc).
    /// `Some`: what was repaired.
    pub fn check_and_repair(&mut self, trigger: Trigger) -> Result<Option<Repair>, WatchError> {
        self.refresh_policy();
        // without the lock first: most notifications are a job's own changes
        match self.drift()? {
            None => return Ok(None),
            Some((d, ..)) if d.is_empty() => {
                self.resolved();
                tracing::debug!(node = %self.config.node, %trigger, "the base is as planned");
                return Ok(None);
            }
            Some(_) => {}
        }
        let started = Instant::now();
        let _lock = Lock::acquire(&self.layout.lock_file())?;
        // again under the lock: a prolog may have been halfway through a change
        let Some((drift, index, addr)) = self.drift()? else {
            return Ok(None);
        };
        if drift.is_empty() {
            self.resolved();
            return Ok(None);
        }
        let (policy, layout) = (&self.policy, &self.layout);
        let loaded = base::ensure(policy, layout, &mut self.nl, index, addr)?;
        self.drop_own_notifications()?;
        let mut left = drift::check(&self.policy, &self.layout, &mut self.nl, index, addr)?;
        let forced = !left.is_empty();
        if forced {
            // what ensure's fast path does not look at: the ip6 table, the cgroup root
            base::reload(&self.policy, &self.layout, &mut self.nl, index, addr)?;
            self.drop_own_notifications()?;
            left = drift::check(&self.policy, &self.layout, &mut self.nl, index, addr)?;
        }
        if !left.is_empty() {
            return Err(WatchError::StillDrifting(drift::describe(&left)));
        }
        self.resolved();
        let repair = Repair {
            trigger,
            drift,
            loaded,
            forced,
            took: started.elapsed(),
            since_event: match trigger {
                Trigger::Events { first, .. } => Some(first.elapsed()),
                _ => None,
            },
        };
        tracing::info!(
            node = %self.config.node,
            drift = %drift::describe(&repair.drift),
            action = %repair.action(),
            repair_ms = ms(repair.took),
            reaction_ms = repair.since_event.map(ms),
            "repaired the node's base {trigger}"
        );
        Ok(Some(repair))
    }
}

/// `d` in milliseconds, to 0.1 ms.
fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e4).round() / 10.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repair_says_why_and_what_was_done() {
        let r = Repair {
            trigger: Trigger::Events {
                first: Instant::now(),
                count: 3,
            },
            drift: vec![Drift::HoldLink],
            loaded: true,
            forced: false,
            took: Duration::from_micros(12_345),
            since_event: None,
        };
        assert_eq!(r.trigger.to_string(), "after 3 kernel notification(s)");
        assert_eq!(
            r.action(),
            "re-asserted rules, routes and the hold link, loaded the nft tables"
        );
        assert_eq!(ms(r.took), 12.3);
        assert_eq!(Trigger::Reconcile.to_string(), "at the periodic check");
    }
}
