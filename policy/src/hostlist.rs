//! Slurm host lists: `n[1-512]`, `gpu[01-16,20]`, `rack[1-2]n[1-4]`, `a,b[3-4]`, expanded in
//! the order Slurm writes them (left to right, the last bracket varying fastest). Zero-padded
//! ranges keep their width (`n[01-10]` → `n01` .. `n10`), as `scontrol show hostnames` does.

/// Why a host list cannot be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct HostlistError(pub String);

/// The most names one list may expand to: a bound against a typo like `n[1-100000000]`.
pub const MAX_HOSTS: usize = 1 << 20;

/// Expands a host list into its names, in order.
pub fn expand(list: &str) -> Result<Vec<String>, HostlistError> {
    let mut out = Vec::new();
    for item in split_top(list)? {
        let item = item.trim();
        if item.is_empty() {
            return Err(HostlistError(format!(
                "{list:?} has an empty name (two commas, or a comma at an end)"
            )));
        }
        let mut names = vec![String::new()];
        let mut rest = item;
        while !rest.is_empty() {
            match rest.find('[') {
                None => {
                    check_name(rest, list)?;
                    names.iter_mut().for_each(|n| n.push_str(rest));
                    rest = "";
                }
                Some(open) => {
                    let prefix = &rest[..open];
                    check_name(prefix, list)?;
                    let close = rest[open..].find(']').map(|c| open + c).ok_or_else(|| {
                        HostlistError(format!("{list:?} has a '[' without its ']'"))
                    })?;
                    let suffixes = ranges(&rest[open + 1..close], list)?;
                    if names.len().saturating_mul(suffixes.len()) > MAX_HOSTS {
                        return Err(HostlistError(format!(
                            "{list:?} expands to more than {MAX_HOSTS} names"
                        )));
                    }
                    names = names
                        .iter()
                        .flat_map(|n| suffixes.iter().map(move |s| format!("{n}{prefix}{s}")))
                        .collect();
                    rest = &rest[close + 1..];
                }
            }
        }
        out.extend(names);
        if out.len() > MAX_HOSTS {
            return Err(HostlistError(format!(
                "{list:?} expands to more than {MAX_HOSTS} names"
            )));
        }
    }
    Ok(out)
}

/// The list's items: split at commas outside brackets.
fn split_top(list: &str) -> Result<Vec<&str>, HostlistError> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0u32, 0);
    for (i, c) in list.char_indices() {
        match c {
            '[' if depth == 0 => depth = 1,
            '[' => return Err(HostlistError(format!("{list:?} nests brackets"))),
            ']' if depth == 1 => depth = 0,
            ']' => return Err(HostlistError(format!("{list:?} has a ']' without its '['"))),
            ',' if depth == 0 => {
                items.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(HostlistError(format!("{list:?} has a '[' without its ']'")));
    }
    items.push(&list[start..]);
    Ok(items)
}

/// A part of a name outside brackets: letters, digits, `-`, `_`, `.`.
fn check_name(part: &str, list: &str) -> Result<(), HostlistError> {
    match part
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        Some(c) => Err(HostlistError(format!(
            "{list:?} has {c:?} in a host name (names are letters, digits, '-', '_', '.')"
        ))),
        None => Ok(()),
    }
}

/// The inside of one bracket, `1-4,07,10-12`, as the suffixes it gives.
fn ranges(inside: &str, list: &str) -> Result<Vec<String>, HostlistError> {
    let bad = |why: &str| HostlistError(format!("{list:?}: [{inside}] {why}"));
    let mut out = Vec::new();
    for r in inside.split(',') {
        let (a, b) = r.split_once('-').unwrap_or((r, r));
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
        if !digits(a) || !digits(b) {
            return Err(bad("is not a list of numbers and ranges like 1-4,7"));
        }
        let (lo, hi): (u64, u64) = (
            a.parse().map_err(|_| bad("has a number too large"))?,
            b.parse().map_err(|_| bad("has a number too large"))?,
        );
        if lo > hi {
            return Err(bad(&format!(
                "has the range {r} whose start is after its end"
            )));
        }
        if hi - lo >= MAX_HOSTS as u64 {
            return Err(bad(&format!("expands to more than {MAX_HOSTS} names")));
        }
        // Slurm pads to the width of the range's first number when it starts with a zero
        let width = if a.len() > 1 && a.starts_with('0') {
            a.len()
        } else {
            0
        };
        out.extend((lo..=hi).map(|n| format!("{n:0width$}")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &str) -> Vec<String> {
        expand(list).unwrap()
    }

    #[test]
    fn plain_names_and_ranges_expand_in_order() {
        assert_eq!(names("n1"), ["n1"]);
        assert_eq!(names("n[1-3]"), ["n1", "n2", "n3"]);
        assert_eq!(names("n[1-2,5],login"), ["n1", "n2", "n5", "login"]);
        assert_eq!(names("n[3]"), ["n3"]);
        assert_eq!(names("n[1-512]").len(), 512);
        assert_eq!(names("n[1-512]")[511], "n512");
    }

    #[test]
    fn zero_padding_keeps_the_width_of_the_first_number() {
        assert_eq!(names("gpu[08-11]"), ["gpu08", "gpu09", "gpu10", "gpu11"]);
        assert_eq!(names("x[001-002]"), ["x001", "x002"]);
        assert_eq!(names("x[9-10]"), ["x9", "x10"]);
    }

    #[test]
    fn several_brackets_vary_the_last_fastest_and_keep_a_suffix() {
        assert_eq!(
            names("r[1-2]n[1-2]-ib"),
            ["r1n1-ib", "r1n2-ib", "r2n1-ib", "r2n2-ib"]
        );
    }

    #[test]
    fn malformed_lists_are_refused_with_the_reason() {
        for (list, why) in [
            ("n[1-", "without its ']'"),
            ("n1]", "without its '['"),
            ("n[[1]]", "nests"),
            ("n[a-b]", "numbers"),
            ("n[5-1]", "start is after its end"),
            ("n1,,n2", "empty name"),
            ("n 1", "in a host name"),
            ("n[1-99999999]", "more than"),
            ("n[1-1000]m[1-2000]", "more than"),
        ] {
            let e = expand(list).unwrap_err().0;
            assert!(e.contains(why), "{list}: {e}");
        }
    }
}
