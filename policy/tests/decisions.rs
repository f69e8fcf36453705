//! Every decision rule (`decide`), the submit-time check (`possible`), and the words
//! `extnet policy check` and `extnet policy explain` print.

mod support;

use extnet_policy::report::{explain, summary};
use extnet_policy::{decide, possible, Decision, Groups, JobIdentity, Policy, Request, Submitter};
use support::{denied, granted, job, parse_ok, ports, with};

/// The node of [`support::NODE`] with a pool of 10 blocks, then `profiles`.
fn policy(profiles: &str) -> Policy {
    parse_ok(&with(&format!("{}{profiles}", ports("20000-20999", 100))))
}

const EXP: &str = r#"
[[profile]]
name = "exp"
users = ["aliprod"]
groups = ["alice"]
accounts = ["grid"]
[profile.deny]
users = ["mallory"]
groups = ["banned"]
accounts = ["cheap"]
[profile.auto]
users = ["aliprod"]
groups = ["alice"]

[[profile]]
name = "all"
users = ["*"]
partitions = ["ext"]
qos = ["normal", "high"]
"#;

#[test]
fn allow_matches_by_user_group_account_or_everyone() {
    let p = policy(EXP);
    let any = Request::Any;
    let (profile, auto, rule) = granted(decide(&p, &job("aliprod", &[]), &any));
    assert_eq!((profile.as_str(), auto), ("exp", false));
    assert!(rule.contains("allows user aliprod"), "{rule}");
    let (_, _, rule) = granted(decide(&p, &job("bob", &["users", "alice"]), &any));
    assert!(rule.contains("allows group alice"), "{rule}");
    let mut j = job("carol", &["users"]);
    j.account = Some("grid".into());
    let (_, _, rule) = granted(decide(&p, &j, &any));
    assert!(rule.contains("allows account grid"), "{rule}");
    // "*": everyone, within the profile's partition and QOS
    let mut j = job("dave", &[]);
    j.partition = Some("ext".into());
    j.qos = Some("high".into());
    let (profile, _, rule) = granted(decide(&p, &j, &any));
    assert_eq!(profile, "all");
    assert!(rule.contains("everyone"), "{rule}");
}

#[test]
fn deny_wins_by_user_group_and_account() {
    let p = policy(EXP);
    let req = Request::Profile("exp".into());
    let r = denied(decide(&p, &job("mallory", &["alice"]), &req));
    assert!(r.contains("profile \"exp\" denies user mallory"), "{r}");
    let r = denied(decide(&p, &job("aliprod", &["banned"]), &req));
    assert!(r.contains("denies group banned"), "{r}");
    let mut j = job("aliprod", &[]);
    j.account = Some("cheap".into());
    let r = denied(decide(&p, &j, &req));
    assert!(r.contains("denies account cheap"), "{r}");
    // deny wins over auto too: the denied user's job that did not ask gets nothing
    assert_eq!(
        decide(&p, &job("mallory", &["alice"]), &Request::None),
        Decision::NotRequested
    );
}

#[test]
fn auto_grants_without_asking_only_to_auto_principals() {
    let p = policy(EXP);
    let (profile, auto, rule) = granted(decide(&p, &job("aliprod", &[]), &Request::None));
    assert_eq!((profile.as_str(), auto), ("exp", true));
    assert!(rule.contains("without asking (auto)"), "{rule}");
    let (_, auto, rule) = granted(decide(&p, &job("x", &["alice"]), &Request::None));
    assert!(
        auto && rule.contains("group alice gets it without asking"),
        "{rule}"
    );
    // allowed through the account, but not an auto principal: must ask
    let mut j = job("carol", &[]);
    j.account = Some("grid".into());
    assert_eq!(decide(&p, &j, &Request::None), Decision::NotRequested);
    assert!(matches!(
        decide(&p, &j, &Request::Any),
        Decision::Granted { auto: false, .. }
    ));
    // a job that asks is granted the same profile, but not "without asking"
    let (_, auto, _) = granted(decide(&p, &job("aliprod", &[]), &Request::Any));
    assert!(!auto);
}

#[test]
fn partition_and_qos_restrict_and_unknown_means_none() {
    let p = policy(EXP);
    let req = Request::Profile("all".into());
    let mut j = job("dave", &[]);
    let r = denied(decide(&p, &j, &req));
    assert!(r.contains("only in partition(s) ext (job: none)"), "{r}");
    j.partition = Some("batch".into());
    let r = denied(decide(&p, &j, &req));
    assert!(r.contains("(job: batch)"), "{r}");
    j.partition = Some("ext".into());
    let r = denied(decide(&p, &j, &req));
    assert!(r.contains("only to QOS normal, high (job: none)"), "{r}");
    j.qos = Some("normal".into());
    granted(decide(&p, &j, &req));
}

#[test]
fn asking_without_a_name_takes_the_first_profile_that_grants() {
    let p = policy(
        "[[profile]]\nname = \"one\"\nusers = [\"a\"]\n[[profile]]\nname = \"two\"\nusers = [\"a\", \"b\"]\n",
    );
    assert_eq!(granted(decide(&p, &job("a", &[]), &Request::Any)).0, "one");
    assert_eq!(granted(decide(&p, &job("b", &[]), &Request::Any)).0, "two");
    // named: that profile, even when an earlier one would grant too
    assert_eq!(
        granted(decide(&p, &job("a", &[]), &Request::Profile("two".into()))).0,
        "two"
    );
    let r = denied(decide(&p, &job("c", &[]), &Request::Any));
    assert!(
        r.starts_with("no profile grants user c: ")
            && r.contains("profile \"one\" does not list user c")
            && r.contains("profile \"two\" does not list user c"),
        "every profile's reason: {r}"
    );
    let r = denied(decide(
        &p,
        &job("a", &[]),
        &Request::Profile("three".into()),
    ));
    assert!(
        r.contains("no external-net profile named \"three\"; profiles: one, two"),
        "{r}"
    );
    let empty = policy("");
    let r = denied(decide(&empty, &job("a", &[]), &Request::Any));
    assert!(r.contains("defines no profiles"), "{r}");
}

#[test]
fn possible_at_submit_refuses_only_what_no_job_could_get() {
    let p = policy(EXP);
    let who = |user: &str, groups: &[&str]| Submitter {
        user: user.into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
    };
    let exp = Request::Profile("exp".into());
    // by user, by group: fine
    assert_eq!(possible(&p, &who("aliprod", &[]), &exp), Ok(()));
    assert_eq!(possible(&p, &who("x", &["alice"]), &exp), Ok(()));
    // "exp" lists an account, which a job of anyone might be submitted with
    assert_eq!(possible(&p, &who("nobody", &[]), &exp), Ok(()));
    // denied by user or group: no account can help
    let r = possible(&p, &who("mallory", &["alice"]), &exp).unwrap_err();
    assert!(r.contains("profile \"exp\" denies user mallory"), "{r}");
    let r = possible(&p, &who("x", &["banned"]), &exp).unwrap_err();
    assert!(r.contains("denies group banned"), "{r}");
    let r = possible(&p, &who("x", &[]), &Request::Profile("nope".into())).unwrap_err();
    assert!(r.contains("no external-net profile named \"nope\""), "{r}");
    // without accounts in play, a user no profile lists is refused
    let q = policy("[[profile]]\nname = \"g\"\ngroups = [\"alice\"]\n[[profile]]\nname = \"u\"\nusers = [\"a\"]\npartitions = [\"ext\"]\n");
    let r = possible(&q, &who("bob", &["users"]), &Request::Any).unwrap_err();
    assert!(
        r.starts_with("no profile can grant user bob: ")
            && r.contains("profile \"g\" does not list user bob or any of their groups")
            && r.contains("profile \"u\""),
        "{r}"
    );
    // partition and QOS are unknown at submit: never a reason to refuse
    assert_eq!(
        possible(&q, &who("a", &[]), &Request::Profile("u".into())),
        Ok(())
    );
    // not asking: nothing to refuse
    assert_eq!(possible(&q, &who("bob", &[]), &Request::None), Ok(()));
}

const SITE: &str = r#"
[[profile]]
name = "web"
groups = ["alice"]
destinations = [{ net = "203.0.113.10", proto = "tcp", ports = "80,443" }]
max_jobs_per_node = 4
max_jobs_per_user = 2
[profile.auto]
groups = ["alice"]
[[profile]]
name = "iso"
users = ["bob"]
mode = "netns"
partitions = ["ext"]
"#;

#[test]
fn explain_is_one_paragraph_with_the_rule_the_place_and_the_limits() {
    let p = policy(SITE);
    let t = explain(&p, &job("aliprod", &["alice"]), &Request::None);
    assert!(!t.contains('\n'), "one paragraph: {t}");
    for part in [
        "A job of user aliprod (groups: alice; account: none; partition: none; QOS: none) that does not ask",
        "is GRANTED profile \"web\" without asking",
        "cgroup mode",
        "profile \"web\" allows group alice; group alice gets it without asking (auto)",
        "only 203.0.113.10 tcp port 80,443",
        "dropped on the node and counted in dest_web_drop",
        "at most 4 job(s) at once per node (max_jobs_per_node), 2 per user",
        "Cluster-internal networks (10.99.0.0/24)",
    ] {
        assert!(t.contains(part), "missing {part:?} in: {t}");
    }
    let mut j = job("bob", &[]);
    j.partition = Some("batch".into());
    let t = explain(&p, &j, &Request::Profile("iso".into()));
    assert!(
        t.contains("asking with --external-net=iso is DENIED: profile \"iso\" applies only in partition(s) ext (job: batch)"),
        "{t}"
    );
    j.partition = Some("ext".into());
    let t = explain(&p, &j, &Request::Any);
    assert!(
        t.contains("GRANTED profile \"iso\" (netns mode")
            && t.contains("every external destination")
            && t.contains("up to 10 job(s) at once per node (the port pool"),
        "{t}"
    );
    let t = explain(&p, &job("carol", &[]), &Request::None);
    assert!(
        t.contains("gets NO external access")
            && t.contains("auto principals: \"web\" (groups alice)"),
        "{t}"
    );
    // auto principal, but the profile does not apply: explain says why
    let q = policy("[[profile]]\nname = \"a\"\nusers = [\"x\"]\npartitions = [\"ext\"]\n[profile.auto]\nusers = [\"x\"]\n");
    let t = explain(&q, &job("x", &[]), &Request::None);
    assert!(
        t.contains("auto would apply, but profile \"a\" applies only in partition(s) ext"),
        "{t}"
    );
}

#[test]
fn summary_shows_capacity_profiles_who_where_and_limits() {
    let p = policy(SITE);
    let s = summary(&p);
    for part in [
        "internal, never through the gateway: 10.99.0.0/24",
        "ports 20000-20999 in blocks of 100 = 10 external jobs at once per node",
        "netns mode: job links from 100.64.0.0/16",
        "1. \"web\", cgroup mode",
        "who: groups alice",
        "granted without asking to: groups alice; others must ask",
        "where: only 203.0.113.10 tcp port 80,443",
        "limits: at most 4 job(s) at once per node (max_jobs_per_node), 2 per user",
        "2. \"iso\", netns mode",
        "only in partitions: ext",
        "where: every external destination",
    ] {
        assert!(s.contains(part), "missing {part:?} in:\n{s}");
    }
    assert!(summary(&policy("")).contains("profiles: none, so nothing is granted"));
}

/// `EXP` with a pool of its own and another gateway for each profile.
fn exp_with_pools() -> Policy {
    let text = EXP
        .replace(
            "accounts = [\"grid\"]\n",
            "accounts = [\"grid\"]\ngateway = \"10.99.0.253\"\nports = { range = \"30000-31023\", block_size = 512 }\n",
        )
        .replace(
            "qos = [\"normal\", \"high\"]\n",
            "qos = [\"normal\", \"high\"]\n[profile.ports]\nrange = \"40000-40999\"\n",
        );
    assert_ne!(text, EXP);
    policy(&text)
}

#[test]
fn pools_and_gateways_change_no_decision() {
    let plain = policy(EXP);
    let pooled = exp_with_pools();
    assert_eq!(pooled.pools.len(), 3);
    let mut jobs = vec![
        job("aliprod", &[]),
        job("x", &["alice"]),
        job("mallory", &["alice"]),
        job("x", &["banned", "alice"]),
        job("nobody", &[]),
    ];
    let mut j = job("grid-user", &[]);
    j.account = Some("grid".into());
    jobs.push(j);
    let mut j = job("b", &[]);
    j.partition = Some("ext".into());
    j.qos = Some("high".into());
    jobs.push(j);
    for j in &jobs {
        for r in [
            Request::None,
            Request::Any,
            Request::Profile("exp".into()),
            Request::Profile("all".into()),
        ] {
            assert_eq!(decide(&plain, j, &r), decide(&pooled, j, &r), "{j:?} {r:?}");
        }
    }
}

#[test]
fn explain_and_summary_name_the_pool_and_the_gateway() {
    let p = exp_with_pools();
    let t = explain(&p, &job("aliprod", &[]), &Request::Any);
    assert!(
        t.contains("It gets a block of 512 source ports from the profile's own port pool (30000-31023) and its traffic leaves through gateway 10.99.0.253 (routing table 7701).")
            && t.contains("up to 2 job(s) at once per node (the port pool of its own)"),
        "{t}"
    );
    let q = policy(SITE);
    let t = explain(&q, &job("aliprod", &["alice"]), &Request::None);
    assert!(
        t.contains("It gets a block of 100 source ports from the default port pool [ports] (20000-20999) and its traffic leaves through gateway 10.99.0.254."),
        "{t}"
    );
    let s = summary(&p);
    for part in [
        "capacity: 22 external jobs at once per node (slots), in 3 port pool(s)",
        "pool [ports]: ports 20000-20999 in blocks of 100 = 10 external jobs at once per node (slots 0-9), gateway 10.99.0.254 (routing table 7700), a released block waits 120 s; used by no profile (its slots stay idle)",
        "pool exp: ports 30000-31023 in blocks of 512 = 2 external jobs at once per node (slots 10-11), gateway 10.99.0.253 (routing table 7701, its own ip rules at priority 7699)",
        "pool all: ports 40000-40999 in blocks of 100 = 10 external jobs at once per node (slots 12-21)",
        "pool: exp (blocks of 512 ports), gateway 10.99.0.253",
    ] {
        assert!(s.contains(part), "missing {part:?} in:\n{s}");
    }
}

/// The prolog looks a job's groups up (NSS, costly in a new process) only when a decision
/// needs them, and decides exactly as with the groups given.
#[test]
fn groups_are_looked_up_only_when_a_decision_needs_them() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    fn lookup(user: &str, gid: u32) -> Result<Vec<String>, String> {
        CALLS.fetch_add(1, Ordering::SeqCst);
        assert_eq!(gid, 4242);
        Ok(match user {
            "aliprod" => vec!["alice".into()],
            "mallory" => vec!["alice".into(), "banned".into()],
            _ => vec!["users".into(), "alice".into()],
        })
    }
    let lazy = |user: &str| JobIdentity {
        user: user.into(),
        groups: Groups::lookup(lookup, 4242),
        ..Default::default()
    };
    let eager = |user: &str| {
        job(
            user,
            &lookup(user, 4242)
                .unwrap()
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        )
    };
    let by_name = policy(
        "[[profile]]\nname = \"exp\"\nusers = [\"aliprod\"]\naccounts = [\"grid\"]\n\
         [profile.deny]\nusers = [\"mallory\"]\n",
    );
    let user_first =
        policy("[[profile]]\nname = \"g\"\nusers = [\"aliprod\"]\ngroups = [\"alice\"]\n");
    let exp = policy(EXP);
    // (what, policy, user, request, lookups expected)
    let cases = [
        ("no group named", &by_name, "aliprod", Request::Any, 0),
        ("no group named", &by_name, "other", Request::Any, 0),
        ("no group named", &by_name, "other", Request::None, 0),
        ("deny by group", &exp, "aliprod", Request::Any, 1),
        ("denied by name first", &exp, "mallory", Request::Any, 0),
        ("deny by group", &exp, "other", Request::Any, 1),
        ("deny by group", &exp, "other", Request::None, 1),
        (
            "allowed by name first",
            &user_first,
            "aliprod",
            Request::Any,
            0,
        ),
        ("allowed by group", &user_first, "other", Request::Any, 1),
    ];
    for (what, p, user, request, lookups) in &cases {
        CALLS.store(0, Ordering::SeqCst);
        let id = lazy(user);
        let d = decide(p, &id, request);
        assert_eq!(
            CALLS.load(Ordering::SeqCst),
            *lookups,
            "{what}: {user} {request:?}"
        );
        assert_eq!(id.groups_looked_up(), *lookups > 0, "{what}: {user}");
        assert_eq!(
            d,
            decide(p, &eager(user), request),
            "{what}: {user} {request:?}"
        );
        // looked up once per identity, however often asked
        let before = CALLS.load(Ordering::SeqCst);
        let _ = (decide(p, &id, request), id.groups(), id.groups());
        assert_eq!(
            CALLS.load(Ordering::SeqCst) - before,
            usize::from(*lookups == 0),
            "{what}: {user}"
        );
        assert_eq!(
            id.groups().map(<[String]>::to_vec).map_err(str::to_owned),
            lookup(user, 4242),
            "{what}: {user}"
        );
    }
}

/// Groups that cannot be looked up (NSS down): a group deny still applies (the job is
/// denied, saying why), a group grant does not, and a grant by name that needs no group is
/// unaffected.
#[test]
fn groups_that_cannot_be_looked_up_deny_by_group_and_grant_nothing_by_group() {
    fn broken(user: &str, _gid: u32) -> Result<Vec<String>, String> {
        Err(format!("getgrouplist({user}, 4242) failed: EIO"))
    }
    let lazy = |user: &str| JobIdentity {
        user: user.into(),
        groups: Groups::lookup(broken, 4242),
        ..Default::default()
    };
    // EXP denies group "banned": a user allowed by name is denied when the groups are unknown
    let why = denied(decide(&policy(EXP), &lazy("aliprod"), &Request::Any));
    assert!(
        why.contains("profile \"exp\" denies user aliprod, whose groups cannot be looked up")
            && why.contains("getgrouplist(aliprod, 4242) failed: EIO")
            && why.contains("banned"),
        "{why}"
    );
    // allowed only through a group: denied, saying the groups are unknown
    let by_group = policy("[[profile]]\nname = \"g\"\ngroups = [\"alice\"]\n");
    let why = denied(decide(&by_group, &lazy("someone"), &Request::Any));
    assert!(
        why.contains("allows groups alice, and the groups of user someone cannot be looked up")
            && why.contains("EIO"),
        "{why}"
    );
    // nobody is granted automatically through an unknown group either
    let auto = policy(
        "[[profile]]\nname = \"a\"\ngroups = [\"alice\"]\n[profile.auto]\ngroups = [\"alice\"]\n",
    );
    assert_eq!(
        decide(&auto, &lazy("someone"), &Request::None),
        Decision::NotRequested
    );
    // a grant by name that no group rule can change needs no lookup
    let by_name =
        policy("[[profile]]\nname = \"n\"\nusers = [\"aliprod\"]\ngroups = [\"alice\"]\n");
    assert_eq!(
        granted(decide(&by_name, &lazy("aliprod"), &Request::Any)).0,
        "n"
    );
    assert!(!lazy("aliprod").groups_looked_up());
}

/// The summary says how netns jobs resolve names, and warns about a netns profile whose
/// allowlist keeps its jobs from an external nameserver of `node.netns_nameservers`.
#[test]
fn summary_warns_when_a_netns_allowlist_misses_the_nameservers() {
    let profiles = r#"
[[profile]]
name = "closed"
users = ["*"]
mode = "netns"
destinations = [{ net = "203.0.113.10", proto = "tcp", ports = 443 }]

[[profile]]
name = "open"
users = ["*"]
mode = "netns"
destinations = [{ net = "198.51.100.0/24", proto = "any", ports = 53 }]

[[profile]]
name = "cg"
users = ["*"]
destinations = [{ net = "203.0.113.10", proto = "tcp", ports = 443 }]
"#;
    let text = |servers: &str| {
        parse_ok(&with(&format!(
            "netns_nameservers = [{servers}]\n{}{profiles}",
            ports("20000-20999", 100)
        )))
    };
    let p = text("\"198.51.100.53\", \"10.99.0.53\"");
    let s = summary(&p);
    assert!(
        s.contains(
            "netns mode: name resolution: 198.51.100.53, 10.99.0.53 (node.netns_nameservers)"
        ),
        "{s}"
    );
    let warnings: Vec<&str> = s.lines().filter(|l| l.contains("WARNING")).collect();
    // only "closed": "open" lets DNS through, "cg" is cgroup mode, 10.99.0.53 is internal
    assert_eq!(warnings.len(), 1, "{s}");
    assert!(warnings[0].contains("nameserver 198.51.100.53"), "{s}");
    let closed = s.find("\"closed\"").unwrap();
    let open = s.find("\"open\"").unwrap();
    let at = s.find("WARNING").unwrap();
    assert!(
        closed < at && at < open,
        "the warning is under its profile:\n{s}"
    );
    assert!(!summary(&text("")).contains("WARNING"));
    assert!(summary(&text("")).contains("the node's /etc/resolv.conf"));
}
