//! What the fail-closed tests share (`cluster/failclosed.rs`, and the IPv6 ones in
//! `cluster/ipv6.rs`): a job that probes the outside host again and again while a test breaks
//! its node's base and repairs it, and the judgement of what the outside host saw, phase by
//! phase; extnet's `ip rule`s of either family, to delete them by hand.
#![allow(dead_code)]

use crate::cluster::*;

fn in_block(port: u16, block: (u16, u16)) -> bool {
    block.0 <= port && port <= block.1
}

/// How long after the base broke packets already on their way may still reach the outside.
pub const SETTLE: f64 = 0.5;
/// Within how long of the repair a job's allowed traffic must reach the outside again.
pub const BACK_WITHIN: f64 = 3.0;

/// The command of a batch job that runs one `probe PROTO HOST --for SECS` per `(proto,
/// timeout)`, side by side: an attempt of each every 0.3 s, one timestamped line per attempt.
/// `host`: the outside host's address of the family to probe ([`OUTSIDE`], [`OUTSIDE6`]).
pub fn probe_loop(c: &Cluster, host: &str, probes: &[(&str, f64)], secs: u32) -> String {
    let p = c.probe();
    let mut s = "echo JOB=$SLURM_JOB_ID; ".to_owned();
    for (proto, timeout) in probes {
        s += &format!("{p} {proto} {host} --for {secs} --every 0.3 --timeout {timeout} & ");
    }
    s + "wait"
}

/// When a command that breaks or repairs the node started and ended (seconds since the epoch).
#[derive(Debug, Clone, Copy)]
pub struct Span {
    pub start: f64,
    pub end: f64,
}

/// Runs `f` and says when it ran.
pub fn timed(f: impl FnOnce() -> Run) -> (Run, Span) {
    let start = now();
    let r = f();
    (r, Span { start, end: now() })
}

/// What was wrong, by rule, with a few examples each: a test that fails shows every rule it
/// found broken, not only the first.
#[derive(Default)]
pub struct Findings(Vec<(String, Vec<String>)>);

impl Findings {
    pub fn add(&mut self, rule: impl Into<String>, example: impl std::fmt::Display) {
        let rule = rule.into();
        let example = example.to_string();
        match self.0.iter_mut().find(|(r, _)| *r == rule) {
            Some((_, examples)) => examples.push(example),
            None => self.0.push((rule, vec![example])),
        }
    }

    /// Panics with every finding and `context` when there is any.
    pub fn assert_none(&self, context: impl std::fmt::Display) {
        if self.0.is_empty() {
            return;
        }
        let mut msg = String::new();
        for (rule, examples) in &self.0 {
            msg += &format!("\n- {rule}: {} time(s), e.g.", examples.len());
            for e in examples.iter().take(4) {
                msg += &format!("\n    {e}");
            }
        }
        panic!("the node did not fail closed:{msg}\n{context}");
    }
}

/// The phase of a break and repair that `at` falls in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Before,
    Breaking,
    Broken,
    Repairing,
    After,
}

pub fn phase(at: f64, broken: Span, repaired: Span) -> Phase {
    if at < broken.start {
        Phase::Before
    } else if at < broken.end + SETTLE {
        Phase::Breaking
    } else if at < repaired.start {
        Phase::Broken
    } else if at < repaired.end {
        Phase::Repairing
    } else {
        Phase::After
    }
}

/// Judges what the outside host saw of a job whose node lost its base (`what`) during
/// `broken` and got it back during `repaired`: only `allowed` protocols, always from the
/// gateway's public address `public` (of the family the job probed: [`GATEWAY_PUBLIC`],
/// [`GATEWAY_PUBLIC6`]) with a port of the job's block; some before the break, none while it
/// lasts, and again within [`BACK_WITHIN`] of the repair. `seen` holds what reached the
/// outside host in that family only.
#[allow(clippy::too_many_arguments)]
pub fn judge(
    f: &mut Findings,
    seen: &[Seen],
    public: &str,
    block: (u16, u16),
    allowed: &[&str],
    what: &str,
    broken: Span,
    repaired: Span,
) {
    let mut before = 0;
    let mut first_after = None;
    for s in seen {
        let ph = phase(s.at, broken, repaired);
        if !allowed.contains(&s.proto.as_str()) {
            f.add(
                format!(
                    "{} reached the outside host (the job may use only {allowed:?})",
                    s.proto
                ),
                format!("{s} ({ph:?})"),
            );
        }
        if ph == Phase::Broken {
            f.add(format!("reached the outside host while {what}"), s);
            continue;
        }
        if !allowed.contains(&s.proto.as_str()) || !matches!(ph, Phase::Before | Phase::After) {
            continue;
        }
        if s.ip != public || !in_block(s.port, block) {
            f.add(
                format!("left without the job's translation: not {public} with a port of the block {block:?}"),
                format!("{s} ({ph:?})"),
            );
        }
        if ph == Phase::Before {
            before += 1;
        } else if first_after.is_none() {
            first_after = Some(s.at);
        }
    }
    if before == 0 {
        f.add(
            "nothing reached the outside host before the base broke (the job had no path)",
            format!("{} lines seen in all", seen.len()),
        );
    }
    match first_after {
        Some(at) if at <= repaired.end + BACK_WITHIN => {}
        at => f.add(
            format!("did not reach the outside host within {BACK_WITHIN} s of the repair"),
            format!(
                "first seen after the repair: {at:?}, repair ended {:.3}",
                repaired.end
            ),
        ),
    }
}

/// The seen lines and the job's attempts, for a failure message.
pub fn timeline(seen: &[Seen], broken: Span, repaired: Span, output: &str) -> String {
    let mut s = format!(
        "base broken {:.3}..{:.3}, repaired {:.3}..{:.3}\n--- the outside host saw ({} lines)\n",
        broken.start,
        broken.end,
        repaired.start,
        repaired.end,
        seen.len()
    );
    for l in seen {
        s += &format!("{l} {:?}\n", phase(l.at, broken, repaired));
    }
    s + "--- the job's output\n" + output
}

/// Deletes `rules` ([`extnet_rules`] of `family`) on `node`: the last `ip rule del`'s run, or
/// the first that failed.
pub fn delete_rules(c: &Cluster, node: &str, family: &str, rules: &[Vec<String>]) -> Run {
    let mut last = None;
    for rule in rules {
        let mut args = vec!["ip", family, "rule", "del"];
        args.extend(rule.iter().map(String::as_str));
        let r = c.on_node(node, &args);
        if !r.ok() {
            return r;
        }
        last = Some(r);
    }
    last.expect("at least one rule")
}

/// `ip FAMILY rule del` arguments of the rules that send marked packets to extnet's routing
/// table on `node` (`priority P fwmark F/M lookup T`), from `ip FAMILY -j rule show`;
/// `family`: `-4` or `-6`.
pub fn extnet_rules(c: &Cluster, node: &str, family: &str) -> Vec<Vec<String>> {
    let table = c.policy().node.route_table.to_string();
    let r = c.on_node(node, &["ip", family, "-j", "rule", "show"]);
    assert!(r.ok(), "ip {family} rule show on {node}:\n{r}");
    let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("ip -j output");
    v.as_array()
        .expect("ip -j rule show prints a list")
        .iter()
        .filter(|rule| rule["table"].as_str() == Some(table.as_str()))
        .filter_map(|rule| {
            let mark = rule["fwmark"].as_str()?;
            let mask = rule["fwmask"]
                .as_str()
                .map(|m| format!("/{m}"))
                .unwrap_or_default();
            Some(vec![
                "priority".to_owned(),
                rule["priority"].as_u64()?.to_string(),
                "fwmark".to_owned(),
                format!("{mark}{mask}"),
                "lookup".to_owned(),
                table.clone(),
            ])
        })
        .collect()
}
