//! The workspace's shape, checked: the library's layers import only downwards and without
//! circles, and only the SPANK plugin needs Slurm's headers. Reads the source and `cargo
//! metadata`; no root, no kernel.
//!
//! The layers of `extnet/src`, lowest first (see its `lib.rs`): a module may use a module of a
//! lower layer; inside one layer, the modules may use each other but never in a circle.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const LAYERS: [&str; 7] = ["diag", "kernel", "plan", "store", "node", "job", "hook"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the repository")
        .to_path_buf()
}

/// Every `.rs` file below `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(sources(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// The module path of a source file of `extnet/src` (`kernel/netlink/mod.rs` → `kernel::netlink`).
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|l| l == "mod" || l == "lib") {
        parts.pop();
    }
    parts.join("::")
}

/// The `crate::a::b` paths a file's code names (comments left out), as module paths: the
/// longest prefix that is a module of the crate.
fn uses(text: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let path: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            let segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
            for n in (1..=segs.len()).rev() {
                let m = segs[..n].join("::");
                if modules.contains(&m) {
                    out.insert(m);
                    break;
                }
            }
        }
    }
    out
}

fn layer(module: &str) -> Option<usize> {
    let top = module.split("::").next().unwrap_or("");
    LAYERS.iter().position(|l| *l == top)
}

#[test]
fn library_layers_import_only_downwards_and_without_circles() {
    let src = repo().join("extnet/src");
    let files = sources(&src);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(&src, f)).collect();
    let mut upward = Vec::new();
    // module → the modules of its own layer it uses (a module's own parent and children
    // excepted: `mod.rs` declaring and using its children is one idea)
    let mut same_layer: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let m = module_of(&src, f);
        if m.is_empty() {
            continue; // lib.rs: the map of the layers
        }
        let Some(own) = layer(&m) else {
            panic!("{}: module {m} is in no layer of {LAYERS:?}; add it to lib.rs's map and to this test", f.display());
        };
        let text = std::fs::read_to_string(f).unwrap();
        for u in uses(&text, &modules) {
            let Some(l) = layer(&u) else { continue };
            if l > own {
                upward.push(format!(
                    "{} ({}) uses crate::{u} ({})",
                    m, LAYERS[own], LAYERS[l]
                ));
            } else if l == own
                && !u.starts_with(&format!("{m}::"))
                && !m.starts_with(&format!("{u}::"))
                && u != m
            {
                same_layer.entry(m.clone()).or_default().insert(u);
            }
        }
    }
    assert!(upward.is_empty(), "upward imports:\n{}", upward.join("\n"));
    // a circle among modules of one layer: depth-first search for a back edge
    fn visit(
        m: &str,
        g: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            return Some(path[i..].iter().cloned().chain([m.to_owned()]).collect());
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_owned());
        for n in g.get(m).into_iter().flatten() {
            if let Some(c) = visit(n, g, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for m in same_layer.keys() {
        if let Some(circle) = visit(m, &same_layer, &mut Vec::new(), &mut done) {
            panic!("modules that use each other: {}", circle.join(" -> "));
        }
    }
}

/// The packages whose normal dependencies reach `extnet-slurm-sys` (Slurm's headers).
fn needing_slurm_headers() -> BTreeSet<String> {
    let out = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1"])
        .current_dir(repo())
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let nodes = meta["resolve"]["nodes"].as_array().unwrap();
    let name_of = |id: &str| {
        meta["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["id"] == id)
            .map(|p| p["name"].as_str().unwrap().to_owned())
            .unwrap()
    };
    // normal (not dev, not build) dependencies by package
    let mut deps: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for n in nodes {
        let from = name_of(n["id"].as_str().unwrap());
        for d in n["deps"].as_array().unwrap() {
            let normal = d["dep_kinds"]
                .as_array()
                .unwrap()
                .iter()
                .any(|k| k["kind"].is_null());
            if normal {
                deps.entry(from.clone())
                    .or_default()
                    .push(name_of(d["pkg"].as_str().unwrap()));
            }
        }
    }
    let members: Vec<String> = meta["workspace_members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| name_of(id.as_str().unwrap()))
        .collect();
    let reaches = |start: &str| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![start.to_owned()];
        while let Some(p) = todo.pop() {
            for d in deps.get(&p).into_iter().flatten() {
                if seen.insert(d.clone()) {
                    todo.push(d.clone());
                }
            }
        }
        seen.contains("extnet-slurm-sys")
    };
    members.into_iter().filter(|m| reaches(m)).collect()
}

#[test]
fn only_the_spank_plugin_needs_slurm_headers() {
    let needing = needing_slurm_headers();
    assert_eq!(
        needing,
        BTreeSet::from(["extnet-spank".to_owned()]),
        "packages that would need libslurm-dev to build"
    );
}

/// `#[ignore]` marks the tests that need the running test cluster (`slurm-test-env/test` runs
/// them with `--ignored`), nothing else: a benchmark belongs in `bench/`, not in an ignored
/// test.
#[test]
fn only_cluster_tests_are_ignored() {
    let root = repo();
    let mut wrong = Vec::new();
    for dir in [
        "extnet",
        "policy",
        "spank-plugin",
        "prolog",
        "epilog",
        "cli",
        "tests",
        "bench",
    ] {
        for f in sources(&root.join(dir)) {
            let rel = f
                .strip_prefix(&root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if rel.starts_with("tests/cluster/")
                || rel == "tests/stress.rs"
                || rel == "tests/layers.rs"
            {
                continue;
            }
            let text = std::fs::read_to_string(&f).unwrap();
            for (i, line) in text.lines().enumerate() {
                if line.trim_start().starts_with("#[ignore") {
                    wrong.push(format!("{rel}:{}", i + 1));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "ignored tests outside tests/cluster and tests/stress.rs: {wrong:?}"
    );
}
