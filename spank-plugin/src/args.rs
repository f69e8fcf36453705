//! The plugin's arguments, as written after its path in `plugstack.conf`:
//!
//! ```text
//! required /usr/lib/slurm/libextnet_spank.so policy=/etc/slurm/extnet.toml
//! ```
//!
//! Every callback gets the same arguments from Slurm; each parses them again (it is cheap and
//! keeps no state between processes: srun, sbatch and slurmstepd each load the plugin).

use std::fmt;
use std::path::PathBuf;

/// What `plugstack.conf` configures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The policy file (`policy=PATH`); default [`extnet_policy::DEFAULT_PATH`].
    pub policy: PathBuf,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            policy: PathBuf::from(extnet_policy::DEFAULT_PATH),
        }
    }
}

/// A `plugstack.conf` argument extnet cannot use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArgError {
    /// Not `policy=PATH`.
    Unknown(String),
    /// `policy=` with a relative or empty path (slurmstepd's working directory is not the
    /// admin's).
    NotAbsolute(String),
    /// `policy=` given twice.
    Duplicate(String),
}

const USAGE: &str = "extnet takes one optional argument, policy=/absolute/path/to/extnet.toml";

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgError::Unknown(a) => {
                write!(
                    f,
                    "unknown argument {a:?} after libextnet_spank.so in plugstack.conf; {USAGE}"
                )
            }
            ArgError::NotAbsolute(a) => {
                write!(
                    f,
                    "argument {a:?} in plugstack.conf: the policy path must be absolute; {USAGE}"
                )
            }
            ArgError::Duplicate(a) => {
                write!(
                    f,
                    "argument {a:?} in plugstack.conf: policy= is given more than once; {USAGE}"
                )
            }
        }
    }
}

impl std::error::Error for ArgError {}

/// Parses the plugin's `plugstack.conf` arguments.
pub fn parse<S: AsRef<str>>(args: &[S]) -> Result<Config, ArgError> {
    let mut policy: Option<PathBuf> = None;
    for arg in args.iter().map(AsRef::as_ref) {
        let Some(path) = arg.strip_prefix("policy=") else {
            return Err(ArgError::Unknown(arg.to_owned()));
        };
        if !path.starts_with('/') {
            return Err(ArgError::NotAbsolute(arg.to_owned()));
        }
        if policy.replace(PathBuf::from(path)).is_some() {
            return Err(ArgError::Duplicate(arg.to_owned()));
        }
    }
    Ok(policy.map(|policy| Config { policy }).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_arguments_mean_the_default_policy() {
        let none: [&str; 0] = [];
        assert_eq!(
            parse(&none).unwrap().policy,
            PathBuf::from("/etc/slurm/extnet.toml")
        );
    }

    #[test]
    fn policy_path() {
        let c = parse(&["policy=/tmp/x/extnet.toml"]).unwrap();
        assert_eq!(c.policy, PathBuf::from("/tmp/x/extnet.toml"));
    }

    #[test]
    fn unknown_argument_is_named() {
        let e = parse(&["policy=/etc/slurm/extnet.toml", "debug"]).unwrap_err();
        assert_eq!(e, ArgError::Unknown("debug".into()));
        assert!(e.to_string().contains("\"debug\""), "{e}");
        assert_eq!(
            parse(&["Policy=/x"]).unwrap_err(),
            ArgError::Unknown("Policy=/x".into())
        );
        assert_eq!(
            parse(&["policy"]).unwrap_err(),
            ArgError::Unknown("policy".into())
        );
    }

    #[test]
    fn relative_or_empty_policy_path_is_refused() {
        assert_eq!(
            parse(&["policy="]).unwrap_err(),
            ArgError::NotAbsolute("policy=".into())
        );
        assert_eq!(
            parse(&["policy=extnet.toml"]).unwrap_err(),
            ArgError::NotAbsolute("policy=extnet.toml".into())
        );
    }

    #[test]
    fn policy_twice_is_refused() {
        let e = parse(&["policy=/a", "policy=/b"]).unwrap_err();
        assert_eq!(e, ArgError::Duplicate("policy=/b".into()));
    }

    // Bounded fuzzing of the plugstack.conf arguments (proptest): never a panic inside
    // slurmstepd or srun; accepted only when every argument is one absolute `policy=` path.
    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig { cases: 1000, failure_persistence: None, ..ProptestConfig::default() })]

            #[test]
            fn arguments(args in prop::collection::vec(prop_oneof![".{0,20}", "policy=/?[a-z/]{0,12}"], 0..4)) {
                let ok = args.len() <= 1 && args.iter().all(|a| a.starts_with("policy=/"));
                match parse(&args) {
                    Ok(c) => {
                        prop_assert!(ok, "accepted {:?}", args);
                        if let Some(a) = args.first() {
                            prop_assert_eq!(c.policy, PathBuf::from(&a["policy=".len()..]));
                        }
                    }
                    Err(e) => {
                        prop_assert!(!ok, "rejected {:?}: {}", args, e);
                        prop_assert!(e.to_string().contains("plugstack.conf"), "{}", e);
                    }
                }
            }
        }
    }
}
