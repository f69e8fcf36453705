//! The decision: policy + job identity + request → grant or denial, with the reason.
//! Pure: no NSS, no files; the caller resolves groups first.

use crate::{Policy, Principals, Profile};

/// What the job asked for (from `--external-net[=PROFILE]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// The job did not ask.
    None,
    /// `--external-net`: the first profile that grants the job.
    Any,
    /// `--external-net=NAME`.
    Profile(String),
}

impl Request {
    /// Parses the value the SPANK plugin hands to the prolog (`*` or a profile name; absent or
    /// empty means not asked).
    pub fn from_env_value(v: Option<&str>) -> Request {
        match v.map(str::trim) {
            None | Some("") => Request::None,
            Some("*") => Request::Any,
            Some(name) => Request::Profile(name.to_owned()),
        }
    }
}

/// Who the job is, as Slurm says (never as the user's environment says).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobIdentity {
    pub user: String,
    /// The user's groups, primary and supplementary, by name: given, or looked up the first
    /// time a decision needs them (read them with [`JobIdentity::groups`]).
    pub groups: Groups,
    pub account: Option<String>,
    pub partition: Option<String>,
    pub qos: Option<String>,
}

impl JobIdentity {
    /// The user's groups (looked up once, on first call, when they were not given), or why
    /// they could not be found.
    pub fn groups(&self) -> Result<&[String], &str> {
        self.groups
            .found
            .get_or_init(|| match self.groups.resolve {
                Some((resolve, gid)) => resolve(&self.user, gid),
                None => Ok(Vec::new()),
            })
            .as_deref()
            .map_err(String::as_str)
    }

    /// True when the groups were given or looked up: a decision needed them.
    pub fn groups_looked_up(&self) -> bool {
        self.groups.resolve.is_none() || self.groups.found.get().is_some()
    }
}

/// A job's groups: known ([`Groups::known`]), or looked up when a decision first needs them
/// ([`Groups::lookup`]: the prolog uses NSS, whose first lookup in a process is slow: it loads
/// the NSS modules and may ask a directory service).
/// The default is no groups.
#[derive(Clone, Default)]
pub struct Groups {
    /// `resolve(user, gid)`, `gid` being the user's primary group; `None`: known.
    resolve: Option<(GroupResolver, u32)>,
    found: std::cell::OnceCell<Result<Vec<String>, String>>,
}

/// `resolve(user, gid)`: the user's groups by name, or why they cannot be found.
pub type GroupResolver = fn(&str, u32) -> Result<Vec<String>, String>;

impl Groups {
    /// Groups already known by name.
    pub fn known(names: Vec<String>) -> Groups {
        Groups {
            resolve: None,
            found: std::cell::OnceCell::from(Ok(names)),
        }
    }

    /// Groups that `resolve(user, gid)` finds, or why it cannot, when first needed.
    pub fn lookup(resolve: GroupResolver, gid: u32) -> Groups {
        Groups {
            resolve: Some((resolve, gid)),
            found: std::cell::OnceCell::new(),
        }
    }
}

impl std::fmt::Debug for Groups {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match (self.found.get(), self.resolve) {
            (Some(g), _) => write!(f, "{g:?}"),
            (None, Some((_, gid))) => write!(f, "Groups(gid {gid}, not looked up)"),
            (None, None) => write!(f, "Groups(none)"),
        }
    }
}

/// Equal when they are (or would be looked up) for the same primary group and found the same.
impl PartialEq for Groups {
    fn eq(&self, o: &Self) -> bool {
        self.resolve.map(|r| r.1) == o.resolve.map(|r| r.1) && self.found.get() == o.found.get()
    }
}

impl Eq for Groups {}

/// The outcome, with words for the user and for the admin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// The job did not ask and no profile grants it without asking: nothing to do.
    NotRequested,
    Granted {
        profile: String,
        /// Granted without asking (the profile's `auto` principals).
        auto: bool,
        /// The rule that matched, for logs and `extnet policy explain`.
        rule: String,
    },
    Denied {
        /// One sentence the user sees.
        reason: String,
    },
}

/// Which principal of `p` matches the job, as words (`user alice`, `group alice`, ...).
/// Groups that cannot be looked up match no allow or auto principal, and match a deny
/// principal that names groups (fail closed: a group deny must not lapse when NSS fails).
fn matching(p: &Principals, job: &JobIdentity, deny: bool) -> Option<String> {
    if p.users.iter().any(|u| u == "*") {
        return Some("everyone (users = [\"*\"])".into());
    }
    if p.users.contains(&job.user) {
        return Some(format!("user {}", job.user));
    }
    // groups only when the principals name one: the lookup may be costly
    if !p.groups.is_empty() {
        match job.groups() {
            Ok(groups) => {
                if let Some(g) = groups.iter().find(|g| p.groups.contains(g)) {
                    return Some(format!("group {g}"));
                }
            }
            Err(why) if deny => {
                return Some(format!(
                    "user {}, whose groups cannot be looked up ({why}; it denies groups {}, so it cannot tell)",
                    job.user,
                    p.groups.join(", ")
                ))
            }
            Err(_) => {}
        }
    }
    if let Some(a) = job.account.as_ref().filter(|a| p.accounts.contains(a)) {
        return Some(format!("account {a}"));
    }
    None
}

/// Why `profile` does not apply to `job`, or the rule that makes it apply.
fn evaluate(profile: &Profile, job: &JobIdentity) -> Result<String, String> {
    if let Some(who) = matching(&profile.deny, job, true) {
        return Err(format!("profile {:?} denies {who}", profile.name));
    }
    let Some(who) = matching(&profile.allow, job, false) else {
        // (groups.is_empty() first: a lookup only where groups could have granted)
        if let Some(Err(why)) = (!profile.allow.groups.is_empty()).then(|| job.groups()) {
            return Err(format!(
                "profile {:?} allows groups {}, and the groups of user {} cannot be looked up on this node ({why})",
                profile.name,
                profile.allow.groups.join(", "),
                job.user
            ));
        }
        return Err(format!(
            "profile {:?} does not list user {}, any of its groups or its account",
            profile.name, job.user
        ));
    };
    in_scope(
        profile,
        "in partition(s)",
        &profile.partitions,
        job.partition.as_deref(),
    )?;
    in_scope(profile, "to QOS", &profile.qos, job.qos.as_deref())?;
    Ok(format!("profile {:?} allows {who}", profile.name))
}

/// Why `profile` does not apply to a job in partition or QOS `job_value`, when the profile
/// names some (`listed`; empty: all). `applies` says where it does apply, in words.
fn in_scope(
    profile: &Profile,
    applies: &str,
    listed: &[String],
    job_value: Option<&str>,
) -> Result<(), String> {
    match job_value {
        _ if listed.is_empty() => Ok(()),
        Some(v) if listed.iter().any(|l| l == v) => Ok(()),
        other => Err(format!(
            "profile {:?} applies only {applies} {} (job: {})",
            profile.name,
            listed.join(", "),
            other.unwrap_or("none")
        )),
    }
}

/// Decides whether `job` gets external access, and through which profile.
pub fn decide(policy: &Policy, job: &JobIdentity, request: &Request) -> Decision {
    decide_skipping(policy, job, request, &[])
}

/// [`decide`], passing over the profiles named in `skip` when the job did not name one: the
/// prolog's next choice when the first profile's limits are reached on the node.
pub fn decide_skipping(
    policy: &Policy,
    job: &JobIdentity,
    request: &Request,
    skip: &[String],
) -> Decision {
    let candidates = || policy.profiles.iter().filter(|p| !skip.contains(&p.name));
    match request {
        Request::None => {
            for p in candidates() {
                // the rest of the profile only when its auto principals match (a group
                // lookup may be costly)
                let Some(who) = matching(&p.auto, job, false) else {
                    continue;
                };
                if let Ok(rule) = evaluate(p, job) {
                    return Decision::Granted {
                        profile: p.name.clone(),
                        auto: true,
                        rule: format!("{rule}; {who} gets it without asking (auto)"),
                    };
                }
            }
            Decision::NotRequested
        }
        Request::Profile(name) => match policy.profile(name) {
            None => Decision::Denied {
                reason: format!(
                    "there is no external-net profile named {name:?}; profiles: {}",
                    names(policy)
                ),
            },
            Some(p) => match evaluate(p, job) {
                Ok(rule) => Decision::Granted {
                    profile: p.name.clone(),
                    auto: false,
                    rule,
                },
                Err(why) => Decision::Denied { reason: why },
            },
        },
        Request::Any => {
            let mut whys = Vec::new();
            for p in candidates() {
                match evaluate(p, job) {
                    Ok(rule) => {
                        return Decision::Granted {
                            profile: p.name.clone(),
                            auto: false,
                            rule,
                        }
                    }
                    Err(why) => whys.push(why),
                }
            }
            Decision::Denied {
                reason: if whys.is_empty() {
                    "the site's policy defines no profiles".into()
                } else {
                    format!("no profile grants user {}: {}", job.user, whys.join("; "))
                },
            }
        }
    }
}

/// For a job that did not ask: each profile whose `auto` principals match the job but which
/// still does not apply (deny, partition, QOS), with the reason.
pub fn auto_refusals(policy: &Policy, job: &JobIdentity) -> Vec<String> {
    policy
        .profiles
        .iter()
        .filter(|p| matching(&p.auto, job, false).is_some())
        .filter_map(|p| evaluate(p, job).err())
        .collect()
}

fn names(policy: &Policy) -> String {
    if policy.profiles.is_empty() {
        return "(none)".into();
    }
    policy
        .profiles
        .iter()
        .map(|p| p.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Who submits a job, as the submitting host knows it. The job's account, partition and QOS
/// are not known for sure before the controller has the job (`-A`, `-p`, `-q` and their
/// defaults), so they count as unknown.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Submitter {
    pub user: String,
    /// The user's groups, primary and supplementary, by name.
    pub groups: Vec<String>,
}

/// Why `profile` can grant no job of `who`, whatever account, partition and QOS the job gets.
fn impossible(profile: &Profile, who: &Submitter) -> Option<String> {
    let d = &profile.deny;
    if d.users.iter().any(|u| u == "*") {
        return Some(format!("profile {:?} denies everyone", profile.name));
    }
    if d.users.contains(&who.user) {
        return Some(format!(
            "profile {:?} denies user {}",
            profile.name, who.user
        ));
    }
    if let Some(g) = who.groups.iter().find(|g| d.groups.contains(g)) {
        return Some(format!("profile {:?} denies group {g}", profile.name));
    }
    let a = &profile.allow;
    let listed = a.users.iter().any(|u| u == "*" || *u == who.user)
        || who.groups.iter().any(|g| a.groups.contains(g))
        // the job's account is not known yet: it may be one of these
        || !a.accounts.is_empty();
    (!listed).then(|| {
        format!(
            "profile {:?} does not list user {} or any of their groups",
            profile.name, who.user
        )
    })
}

/// Advice at submit time: `Err(reason)` when no profile that `request` could use would grant a
/// job of `who`, whatever account, partition and QOS the job ends up with. `Ok` promises
/// nothing (limits, partitions, QOS and accounts are checked by the prolog, the authority).
pub fn possible(policy: &Policy, who: &Submitter, request: &Request) -> Result<(), String> {
    match request {
        Request::None => Ok(()),
        Request::Profile(name) => match policy.profile(name) {
            None => Err(format!(
                "there is no external-net profile named {name:?}; profiles: {}",
                names(policy)
            )),
            Some(p) => impossible(p, who).map_or(Ok(()), Err),
        },
        Request::Any => {
            let mut whys = Vec::new();
            for p in &policy.profiles {
                match impossible(p, who) {
                    None => return Ok(()),
                    Some(why) => whys.push(why),
                }
            }
            Err(if whys.is_empty() {
                "the site's policy defines no profiles".into()
            } else {
                format!(
                    "no profile can grant user {}: {}",
                    who.user,
                    whys.join("; ")
                )
            })
        }
    }
}
