//! Bounded fuzzing of the policy parser inside `cargo test` (proptest): whatever an admin's
//! editor leaves in the file, `Policy::from_toml` never panics, and every rejection is a clear
//! error: at least one problem, each naming its key, what is wrong and how to fix it, at a
//! line of the file.
//!
//! The inputs are the real policies of the project (the test cluster's and the documented
//! example) changed a little — bytes replaced, inserted, deleted; lines swapped, repeated and
//! dropped, so that keys land in the wrong tables — and arbitrary text.

use extnet_policy::{Policy, PolicyError};
use proptest::prelude::*;

const SEEDS: [&str; 3] = [
    include_str!("../../slurm-test-env/extnet-test.toml"),
    include_str!("../../docs/examples/opt-in.toml"),
    include_str!("../../docs/examples/gsi-alice.toml"),
];

/// Parses `text`; on a rejection, checks that it is a clear error and returns its text.
fn parse_checked(text: &str) -> Result<Policy, String> {
    let lines = text.lines().count() + 1;
    match Policy::from_toml(text, "fuzz.toml") {
        Ok(p) => Ok(p),
        Err(e) => {
            let shown = e.to_string();
            assert!(
                shown.contains("fuzz.toml"),
                "the error names the file: {shown}"
            );
            let errors = e.errors();
            assert!(
                matches!(e, PolicyError::Syntax { .. } | PolicyError::Invalid { .. }),
                "text can only be rejected as syntax or validation: {shown}"
            );
            assert!(
                !errors.is_empty(),
                "a rejection lists its problems: {shown}"
            );
            for v in errors {
                assert!(!v.key.is_empty(), "every problem names its key: {v:?}");
                assert!(!v.problem.trim().is_empty(), "says what is wrong: {v:?}");
                assert!(!v.hint.trim().is_empty(), "says how to fix it: {v:?}");
                if let Some(l) = v.line {
                    assert!(
                        (1..=lines).contains(&l),
                        "line {l} is in the file ({lines} lines): {v:?}"
                    );
                }
            }
            Err(shown)
        }
    }
}

/// One small edit of a text's bytes.
#[derive(Debug, Clone)]
enum ByteEdit {
    Replace(usize, u8),
    Insert(usize, u8),
    Delete(usize),
}

fn byte_edit() -> impl Strategy<Value = ByteEdit> {
    // bytes that matter to TOML more often than others
    let byte = prop_oneof![
        prop::sample::select(b"=[]{}\"',.#-_ \n0123456789".to_vec()),
        any::<u8>(),
    ];
    prop_oneof![
        (any::<usize>(), byte.clone()).prop_map(|(i, b)| ByteEdit::Replace(i, b)),
        (any::<usize>(), byte).prop_map(|(i, b)| ByteEdit::Insert(i, b)),
        any::<usize>().prop_map(ByteEdit::Delete),
    ]
}

fn apply_bytes(seed: &str, edits: &[ByteEdit]) -> String {
    let mut b = seed.as_bytes().to_vec();
    for e in edits {
        let n = b.len().max(1);
        match *e {
            ByteEdit::Replace(i, v) if !b.is_empty() => b[i % n] = v,
            ByteEdit::Insert(i, v) => b.insert(i % (b.len() + 1), v),
            ByteEdit::Delete(i) if !b.is_empty() => {
                b.remove(i % n);
            }
            _ => {}
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

/// One edit of a text's lines: a line moved elsewhere, repeated, or dropped.
#[derive(Debug, Clone)]
enum LineEdit {
    Move(usize, usize),
    Repeat(usize, usize),
    Drop(usize),
}

fn line_edit() -> impl Strategy<Value = LineEdit> {
    prop_oneof![
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| LineEdit::Move(a, b)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| LineEdit::Repeat(a, b)),
        any::<usize>().prop_map(LineEdit::Drop),
    ]
}

fn apply_lines(seed: &str, edits: &[LineEdit]) -> String {
    let mut l: Vec<&str> = seed.lines().collect();
    for e in edits {
        if l.is_empty() {
            break;
        }
        let n = l.len();
        match *e {
            LineEdit::Move(a, b) => {
                let x = l.remove(a % n);
                l.insert(b % n, x);
            }
            LineEdit::Repeat(a, b) => {
                let x = l[a % n];
                l.insert(b % (n + 1), x);
            }
            LineEdit::Drop(a) => {
                l.remove(a % n);
            }
        }
    }
    l.join("\n")
}

#[test]
fn the_seeds_are_valid_policies() {
    for seed in SEEDS {
        parse_checked(seed).expect("a seed policy of the fuzz tests parses");
    }
}

/// Found by the fuzzing below: the TOML parser gives no message for a control character in a
/// comment; the admin still learns what and where.
#[test]
fn a_control_character_is_named_with_its_place() {
    let e = parse_checked("version = 1\n# a comment\u{0}\n").unwrap_err();
    assert!(
        e.contains("line 2, column 12") && e.contains("control character '\\0' is not allowed"),
        "{e}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn byte_edits_never_panic_and_rejections_are_clear(
        seed in prop::sample::select(SEEDS.to_vec()),
        edits in prop::collection::vec(byte_edit(), 1..6),
    ) {
        let _ = parse_checked(&apply_bytes(seed, &edits));
    }

    #[test]
    fn line_edits_never_panic_and_rejections_are_clear(
        seed in prop::sample::select(SEEDS.to_vec()),
        edits in prop::collection::vec(line_edit(), 1..5),
    ) {
        let _ = parse_checked(&apply_lines(seed, &edits));
    }

    #[test]
    fn arbitrary_text_never_panics(text in ".{0,400}") {
        let _ = parse_checked(&text);
    }
}
