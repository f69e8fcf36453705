//! What the TOML parser rejects (not TOML, an unknown key, a value of the wrong type, a
//! missing key), told like every other error: the parser gives a message and a byte span,
//! and admins need the key path (`profile[2].deny.user`), the line and column, and a hint.
//! The key path is rebuilt from the table headers above the span and the key before it,
//! since the parser's error does not carry it.

use super::{position, ValidationError};

/// A TOML or serde error as a [`ValidationError`] with place, key and hint.
pub(super) fn syntax_error(text: &str, e: &toml::de::Error) -> ValidationError {
    let span = e.span();
    let message = match e.message().trim() {
        // the parser says nothing for some rejections (a control character in a comment):
        // say what stands at the place
        "" => unnamed_problem(text, span.as_ref().map_or(0, |s| s.start)),
        m => m.to_owned(),
    };
    let (line, column) = span
        .as_ref()
        .map(|s| position(text, s.start))
        .map_or((None, None), |(l, c)| (Some(l), Some(c)));
    let at = span.as_ref().map_or(0, |s| s.start);
    let table = table_at(text, at);
    let quoted = message.split('`').nth(1).unwrap_or("").to_owned();
    let here = span
        .as_ref()
        .and_then(|s| text.get(s.clone()))
        .unwrap_or("")
        .trim();
    let (key, hint) = if message.starts_with("unknown field") {
        let k = if is_bare_key(here) { here } else { &quoted };
        // a key of an inline table: `outer = [{ ..., k = ... }]`
        let outer = key_before(text, at);
        let k = match outer.split_once('.') {
            Some((o, _)) => format!("{o}.{k}"),
            None if !outer.is_empty() && outer != k => format!("{outer}.{k}"),
            None => k.to_owned(),
        };
        (
            join_key(&table, &k),
            "check the spelling; every key is listed in extnet.toml(5) and docs/policy.md"
                .to_owned(),
        )
    } else if message.starts_with("missing field") {
        (
            join_key(&table, &quoted),
            format!("add `{quoted} = ...` to this table; see extnet.toml(5)"),
        )
    } else {
        let k = join_key(&table, &key_before(text, at));
        let hint = if message.starts_with("unknown variant") {
            "use one of the values listed above".to_owned()
        } else if k.ends_with("ports") && k.contains("destinations") {
            "write ports as one number (443) or a string of ports and ranges (\"80,443,8000-8100\")"
                .to_owned()
        } else if k.ends_with("ports") {
            "write a pool as a table: [ports] or [profile.ports] with range = \"FIRST-LAST\" and block_size = N (or inline: ports = { range = \"30000-31023\", block_size = 1024 })"
                .to_owned()
        } else if message.starts_with("invalid type") || message.contains("untagged") {
            "see the key's type in extnet.toml(5): names, networks and ranges are quoted strings, lists are [\"a\", \"b\"], numbers are bare".to_owned()
        } else if message.contains("duplicate key") {
            "set each key once per table".to_owned()
        } else {
            "fix the TOML syntax at this place (https://toml.io)".to_owned()
        };
        (k, hint)
    };
    ValidationError {
        key: if key.is_empty() { "(file)".into() } else { key },
        line,
        column,
        problem: message.replace('\n', " "),
        hint,
    }
}

/// What is wrong at byte `at` when the parser gave no message.
fn unnamed_problem(text: &str, at: usize) -> String {
    match text.get(at..).and_then(|t| t.chars().next()) {
        Some(c) if c.is_control() && c != '\n' && c != '\t' => format!(
            "the control character {c:?} is not allowed (not even in a comment or a string)"
        ),
        Some(c) => format!("unexpected {c:?}: this is not TOML"),
        None => "the file ends where more TOML was expected".to_owned(),
    }
}

/// The table a byte offset is in, as a key path (`node`, `profile[2]`, `profile[2].deny`,
/// `profile[1].destinations[3]`), from the table headers above it.
fn table_at(text: &str, offset: usize) -> String {
    let mut current = String::new();
    let mut profiles = 0;
    let mut dests = 0;
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        if pos > offset {
            break;
        }
        pos += line.len();
        let code = line.split('#').next().unwrap_or("").trim();
        let (array, name) =
            if let Some(n) = code.strip_prefix("[[").and_then(|c| c.strip_suffix("]]")) {
                (true, n)
            } else if let Some(n) = code.strip_prefix('[').and_then(|c| c.strip_suffix(']')) {
                (false, n)
            } else {
                continue;
            };
        let name: String = name
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '"')
            .collect();
        if !name.chars().all(|c| is_key_char(c) || c == '.') {
            continue; // a line of a multi-line array, not a header
        }
        current = match (array, name.as_str()) {
            (true, "profile") => {
                profiles += 1;
                dests = 0;
                format!("profile[{profiles}]")
            }
            (true, "profile.destinations") => {
                dests += 1;
                format!("profile[{profiles}].destinations[{dests}]")
            }
            (_, n) => match n.strip_prefix("profile.") {
                Some(rest) if profiles > 0 => format!("profile[{profiles}].{rest}"),
                _ => n.to_owned(),
            },
        };
    }
    current
}

fn join_key(table: &str, key: &str) -> String {
    match (table.is_empty(), key.is_empty()) {
        (true, _) => key.to_owned(),
        (_, true) => table.to_owned(),
        _ => format!("{table}.{key}"),
    }
}

/// A character of a bare TOML key.
fn is_key_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == '-'
}

fn is_bare_key(s: &str) -> bool {
    !s.is_empty() && s.chars().all(is_key_char)
}

/// The key whose value starts at `offset`: the bare key before the last `=` on its line
/// (`outer.inner` for a key inside an inline table).
fn key_before(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let line = &text[line_start..offset];
    let keys: Vec<String> = line
        .match_indices('=')
        .filter_map(|(i, _)| {
            let before = line[..i].trim_end();
            let k: String = before
                .chars()
                .rev()
                .take_while(|c| is_key_char(*c))
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            (!k.is_empty()).then_some(k)
        })
        .collect();
    match keys.as_slice() {
        [] => String::new(),
        [k] => k.clone(),
        [first, .., last] => format!("{first}.{last}"),
    }
}
