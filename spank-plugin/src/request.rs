//! `--external-net[=PROFILE]`: checking the value the user typed, and the value handed to the
//! prolog (`SPANK_EXTNET_REQUEST`, read back by [`Request::from_env_value`]).

use extnet_policy::Request;
use std::ffi::CStr;
use std::fmt;

/// The option's name on srun/sbatch/salloc command lines.
pub const OPTION: &str = "external-net";
/// [`OPTION`] for Slurm.
pub const OPTION_C: &CStr = c"external-net";
/// What `--help` shows after `--external-net=`.
pub const ARGINFO_C: &CStr = c"PROFILE";
/// What `--help` shows for the option.
pub const USAGE_C: &CStr = c"Let this job reach networks outside the cluster through the site's \
NAT gateways, if the site's policy allows it. PROFILE picks one of the site's profiles (default: \
the first that grants you).";

/// Longest profile name a user can ask for.
pub const MAX_PROFILE_LEN: usize = 32;

/// The job control variable that carries the request to the prolog and epilog; they see it as
/// `SPANK_EXTNET_REQUEST` (Slurm prefixes every SPANK job control variable with `SPANK_`).
pub const JOB_CONTROL_VAR: &str = "EXTNET_REQUEST";
/// [`JOB_CONTROL_VAR`] for Slurm.
pub const JOB_CONTROL_VAR_C: &CStr = c"EXTNET_REQUEST";
/// How the job control variable appears in the environment of the batch script and of steps
/// inside an sbatch or salloc allocation (not in the step of a job srun created itself; there
/// the forwarded option tells).
pub const STEP_REQUEST_VAR_C: &CStr = c"SLURM_SPANK_EXTNET_REQUEST";

/// What the prolog sees for "any profile that grants me".
pub const ANY: &str = "*";

/// A value that is not a profile name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidProfile {
    pub value: String,
}

impl fmt::Display for InvalidProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `{:?}` quotes the value and escapes control characters (it comes from the user and
        // goes to a terminal and a log).
        write!(
            f,
            "--{OPTION}={:?}: profile names are 1 to {MAX_PROFILE_LEN} letters, digits, '-' and '_'",
            self.value
        )
    }
}

impl std::error::Error for InvalidProfile {}

/// True for 1 to [`MAX_PROFILE_LEN`] characters of `[A-Za-z0-9_-]`.
pub fn is_profile_name(s: &str) -> bool {
    (1..=MAX_PROFILE_LEN).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// What Slurm writes for an option given without a value when it exports the option into the
/// job's environment (`printf("%s", NULL)`): an sbatch or salloc job with `--external-net` has
/// `SLURM_SPANK__SLURM_SPANK_OPTION_extnet_external_net=(null)`, and every srun inside it
/// replays that through the option callback.
pub const SLURM_NULL: &str = "(null)";

/// Checks the option's value: absent, empty or [`SLURM_NULL`] asks for any profile, else a
/// profile name.
pub fn parse_value(value: Option<&str>) -> Result<Request, InvalidProfile> {
    match value {
        None | Some("") | Some(SLURM_NULL) => Ok(Request::Any),
        Some(v) if is_profile_name(v) => Ok(Request::Profile(v.to_owned())),
        Some(v) => Err(InvalidProfile {
            value: v.to_owned(),
        }),
    }
}

/// The value of [`JOB_CONTROL_VAR`] for a request; `None` when the job did not ask.
pub fn env_value(request: &Request) -> Option<&str> {
    match request {
        Request::None => None,
        Request::Any => Some(ANY),
        Request::Profile(name) => Some(name),
    }
}

/// The early answer to a named profile the site does not have.
pub fn unknown_profile_message(name: &str, profiles: &[&str]) -> String {
    if profiles.is_empty() {
        format!("--{OPTION}={name}: this cluster has no external network profiles; ask your administrators")
    } else {
        format!(
            "--{OPTION}={name}: no such profile; this cluster's profiles are: {} (or give --{OPTION} alone for the first that grants you)",
            profiles.join(", ")
        )
    }
}

/// The early answer when the policy can grant this user nothing for this request, whatever
/// the job's account, partition and QOS turn out to be.
pub fn early_denial_message(request: &Request, reason: &str, policy: &std::path::Path) -> String {
    let opt = match request {
        Request::Profile(name) => format!("--{OPTION}={name}"),
        _ => format!("--{OPTION}"),
    };
    format!(
        "{opt}: the job would get no external network access, so it is not submitted: {reason} (the site's policy is {}; ask your administrators for access)",
        policy.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn c_names_match() {
        assert_eq!(OPTION_C.to_str(), Ok(OPTION));
        assert_eq!(JOB_CONTROL_VAR_C.to_str(), Ok(JOB_CONTROL_VAR));
        assert_eq!(
            STEP_REQUEST_VAR_C.to_str().unwrap(),
            format!("SLURM_SPANK_{JOB_CONTROL_VAR}")
        );
        // Slurm keeps option names up to SPANK_OPTION_MAXLEN (75) and copies the usage text
        // into a 4096-byte buffer for --help.
        assert!(OPTION.len() <= extnet_slurm_sys::SPANK_OPTION_MAXLEN as usize);
        let usage = USAGE_C.to_str().unwrap();
        assert!(usage.len() < 4096);
        assert!(
            !usage.contains("  "),
            "line continuation left double spaces: {usage}"
        );
    }

    #[test]
    fn absent_or_empty_value_asks_for_any_profile() {
        assert_eq!(parse_value(None), Ok(Request::Any));
        assert_eq!(parse_value(Some("")), Ok(Request::Any));
        // Slurm's rendering of "no value" in a batch job's environment.
        assert_eq!(parse_value(Some("(null)")), Ok(Request::Any));
    }

    #[test]
    fn profile_names() {
        for ok in [
            "a",
            "cern",
            "atlas-prod",
            "lic_server",
            "A1-b_2",
            &"x".repeat(32),
        ] {
            assert_eq!(
                parse_value(Some(ok)),
                Ok(Request::Profile(ok.to_owned())),
                "{ok}"
            );
        }
    }

    #[test]
    fn bad_values_are_refused() {
        for bad in [
            "a b",
            "*",
            "a/b",
            "../x",
            "é",
            "a.b",
            " a",
            "a\n",
            "a\0b",
            &"x".repeat(33),
        ] {
            let e = parse_value(Some(bad)).unwrap_err();
            assert_eq!(e.value, bad);
        }
    }

    #[test]
    fn message_names_the_value_and_the_rule() {
        let e = parse_value(Some("a b")).unwrap_err().to_string();
        assert_eq!(
            e,
            "--external-net=\"a b\": profile names are 1 to 32 letters, digits, '-' and '_'"
        );
        let e = parse_value(Some("a\x1b[2Jb")).unwrap_err().to_string();
        assert!(!e.contains('\x1b'), "control characters are escaped: {e}");
    }

    #[test]
    fn env_value_round_trips_through_the_prolog_reader() {
        for r in [Request::None, Request::Any, Request::Profile("cern".into())] {
            assert_eq!(Request::from_env_value(env_value(&r)), r);
        }
        assert_eq!(env_value(&Request::Any), Some("*"));
    }

    #[test]
    fn early_denial_names_the_option_the_reason_and_the_policy() {
        let p = std::path::Path::new("/etc/slurm/extnet.toml");
        let m = early_denial_message(
            &Request::Profile("exp".into()),
            "profile \"exp\" denies user bob",
            p,
        );
        assert!(m.starts_with("--external-net=exp: "), "{m}");
        assert!(
            m.contains("not submitted") && m.contains("denies user bob"),
            "{m}"
        );
        assert!(m.contains("/etc/slurm/extnet.toml"), "{m}");
        let m = early_denial_message(&Request::Any, "no profile can grant user bob", p);
        assert!(m.starts_with("--external-net: "), "{m}");
    }

    #[test]
    fn unknown_profile_lists_the_profiles() {
        let m = unknown_profile_message("nope", &["cern", "desy"]);
        assert!(m.starts_with("--external-net=nope: no such profile"), "{m}");
        assert!(m.contains("cern, desy"), "{m}");
        let m = unknown_profile_message("nope", &[]);
        assert!(m.contains("no external network profiles"), "{m}");
    }

    // Bounded fuzzing of the option's value (proptest): whatever a user types after
    // `--external-net=`, the parser never panics, accepts exactly the profile names, and a
    // rejection shows the value escaped (it goes to the user's terminal and Slurm's log).
    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

            #[test]
            fn values(v in prop_oneof![".{0,40}", "[A-Za-z0-9_-]{0,40}", "[a-z]{1,8}[\\x00-\\x1f\\x7f ;=]"]) {
                match parse_value(Some(&v)) {
                    Ok(Request::Any) => prop_assert!(v.is_empty() || v == SLURM_NULL),
                    Ok(Request::Profile(name)) => {
                        prop_assert_eq!(&name, &v);
                        prop_assert!(is_profile_name(&v));
                    }
                    Ok(Request::None) => prop_assert!(false, "a value never means no request"),
                    Err(e) => {
                        prop_assert!(!is_profile_name(&v) && !v.is_empty() && v != SLURM_NULL);
                        let shown = e.to_string();
                        prop_assert!(!shown.chars().any(char::is_control), "escaped: {:?}", shown);
                        prop_assert!(shown.contains("profile names are"), "{}", shown);
                    }
                }
            }
        }
    }
}
