//! Who a profile is about: the users, groups and accounts it allows, denies and grants without
//! asking (`auto`), and its partitions and QOS. Names must be single words listed once, and
//! `"*"` (everyone) is only a user. A profile must be able to match someone: it must allow
//! someone and must not deny everyone it allows. Every `auto` principal must be allowed and
//! not denied, or it would never apply; `auto.users = ["*"]` is refused outright, since it
//! would let every job of the cluster out without asking.

use super::{span, Span, Validator};
use crate::raw::{RawPrincipals, S};
use crate::Principals;

impl Validator<'_> {
    /// Checks one list of names (`users`, `groups`, `accounts`, `partitions`, `qos`).
    pub(super) fn names(&mut self, key: &str, list: &[S<String>], star_ok: bool) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for s in list {
            let n = s.get_ref();
            if n.is_empty() || n.chars().any(|c| c.is_whitespace() || c == ',') {
                self.err_at(
                    key,
                    span(s),
                    format!("{n:?} is not a valid name"),
                    "write one name per string, without spaces or commas",
                );
            } else if n == "*" && !star_ok {
                self.err_at(
                    key,
                    span(s),
                    "\"*\" is only allowed in users".into(),
                    "write users = [\"*\"] to mean everyone",
                );
            } else if out.contains(n) {
                self.err_at(
                    key,
                    span(s),
                    format!("{n:?} is listed twice"),
                    "list each name once",
                );
            }
            out.push(n.clone());
        }
        out
    }

    /// The users, groups and accounts of one table (`profile[N]`, its `deny` or its `auto`).
    pub(super) fn principals(&mut self, key: &str, raw: &RawPrincipals) -> Principals {
        Principals {
            users: self.names(&format!("{key}.users"), &raw.users, true),
            groups: self.names(&format!("{key}.groups"), &raw.groups, false),
            accounts: self.names(&format!("{key}.accounts"), &raw.accounts, false),
        }
    }

    /// Checks that profile `name` (`key`, its header at `header`) allows someone it does not
    /// deny (its `deny` table at `deny_span`).
    pub(super) fn can_match(
        &mut self,
        key: &str,
        name: &str,
        header: Span,
        allow: &Principals,
        deny: &Principals,
        deny_span: Span,
    ) {
        if allow.is_empty() {
            self.err_at(
                key,
                header,
                format!("profile {name:?} names no users, groups or accounts, so it can never match"),
                "add users = [...], groups = [...] or accounts = [...] (users = [\"*\"] means everyone)",
            );
        } else if covers(deny, allow) {
            self.err_at(
                &format!("{key}.deny"),
                deny_span,
                format!("profile {name:?} denies every user, group and account it allows, so it can never match"),
                "remove the profile, or narrow its deny list",
            );
        }
    }

    /// Checks that every `auto` principal of profile `key` is allowed and not denied (`raw`:
    /// the `auto` table as written, for the places).
    pub(super) fn auto_is_allowed(
        &mut self,
        key: &str,
        allow: &Principals,
        deny: &Principals,
        auto: &Principals,
        raw: &RawPrincipals,
    ) {
        let everyone = allow.users.iter().any(|u| u == "*");
        let at = |list: &[S<String>], n: &str| -> Span {
            list.iter().find(|s| s.get_ref() == n).and_then(span)
        };
        // (what, how a message names one, auto, allowed, denied, as written)
        let kinds = [
            (
                "users",
                "",
                &auto.users,
                &allow.users,
                &deny.users,
                &raw.users,
            ),
            (
                "groups",
                "group ",
                &auto.groups,
                &allow.groups,
                &deny.groups,
                &raw.groups,
            ),
            (
                "accounts",
                "account ",
                &auto.accounts,
                &allow.accounts,
                &deny.accounts,
                &raw.accounts,
            ),
        ];
        for (what, one, list, allowed, denied, raw_list) in kinds {
            let key = format!("{key}.auto.{what}");
            for n in list {
                if what == "users" && n == "*" {
                    self.err_at(
                        &key,
                        at(raw_list, n),
                        "auto.users = [\"*\"] would let every job of the cluster out without asking"
                            .into(),
                        "name the experiment's users or groups that need transparent access",
                    );
                } else if !everyone && !allowed.contains(n) {
                    self.err_at(
                        &key,
                        at(raw_list, n),
                        format!(
                            "{one}{n:?} gets the profile without asking but is not in its {what}"
                        ),
                        "list auto principals in the profile's users/groups/accounts too",
                    );
                } else if denied.contains(n) {
                    self.err_at(
                        &key,
                        at(raw_list, n),
                        format!("{one}{n:?} gets the profile without asking but is also denied"),
                        "remove it from auto or from deny (deny wins, so auto never applies)",
                    );
                }
            }
        }
    }
}

/// True when `deny` matches everyone `allow` lets in.
fn covers(deny: &Principals, allow: &Principals) -> bool {
    if deny.users.iter().any(|u| u == "*") {
        return true;
    }
    if allow.users.iter().any(|u| u == "*") {
        return false;
    }
    allow.users.iter().all(|u| deny.users.contains(u))
        && allow.groups.iter().all(|g| deny.groups.contains(g))
        && allow.accounts.iter().all(|a| deny.accounts.contains(a))
}
