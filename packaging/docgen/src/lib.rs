//! extnet's man pages and bash completion, generated from the programs' own definitions of
//! their command lines, so that they cannot drift from `--help`:
//!
//! | page                           | from                                                      |
//! |--------------------------------|-----------------------------------------------------------|
//! | `extnet(8)`, `extnet-SUB(8)`…  | the CLI's clap definition ([`extnet_cli::command`]), one page per subcommand; `extnet-node-watch(8)` is the node agent's |
//! | `extnet-prolog(8)`, `extnet-epilog(8)` | their [`extnet::hook::Program`], [`extnet::hook::OPTIONS`], [`extnet::hook::EXIT_STATUS`] and [`extnet::job::env::VARIABLES`] (what their hand-written parser, `--help` and environment reader use) |
//! | `extnet` bash completion       | the CLI's clap definition (clap_complete)                 |
//!
//! The generated files are committed (`docs/man/`, `packaging/completions/`): `man -l
//! docs/man/extnet.8` works from a checkout, and a unit test fails when they differ from a
//! fresh generation (`extnet-docgen` writes them; `packaging/build-debs` installs them).

use clap::{Arg, Command};
use clap_mangen::Man;
use extnet::hook::{self, Program};
use roff::{bold, italic, roman, Roff};

/// Where the pages are committed, relative to the repository.
pub const MAN_DIR: &str = "docs/man";
/// The bash completion of `extnet`, relative to the repository.
pub const BASH_COMPLETION: &str = "packaging/completions/extnet";
/// The section of every generated page (system administration commands).
const SECTION: &str = "8";

/// One generated file: its name and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    pub name: String,
    pub text: String,
}

/// Every page: `extnet` and its subcommands (every level), then the prolog and the epilog.
pub fn man_pages() -> Vec<File> {
    let mut cmd = extnet_cli::command().disable_help_subcommand(true);
    // names the subcommands extnet-policy-check etc. (display names) and propagates the
    // global --policy to them
    cmd.build();
    let mut out = Vec::new();
    cli_pages(&cmd, &mut out);
    for p in [extnet_prolog::PROGRAM, extnet_epilog::PROGRAM] {
        out.push(hook_page(&p));
    }
    out
}

/// The bash completion script of `extnet`.
pub fn bash_completion() -> String {
    let mut cmd = extnet_cli::command();
    let mut buf = Vec::new();
    clap_complete::generate(clap_complete::Shell::Bash, &mut cmd, "extnet", &mut buf);
    String::from_utf8(buf).expect("clap_complete writes UTF-8")
}

/// `cmd`'s page, then its subcommands' pages, depth first.
fn cli_pages(cmd: &Command, out: &mut Vec<File>) {
    let name = display_name(cmd);
    let man = man(cmd.clone(), &name);
    let mut text = Vec::new();
    man.render_title(&mut text).unwrap();
    man.render_name_section(&mut text).unwrap();
    man.render_synopsis_section(&mut text).unwrap();
    man.render_description_section(&mut text).unwrap();
    man.render_options_section(&mut text).unwrap();
    if cmd.has_subcommands() {
        man.render_subcommands_section(&mut text).unwrap();
    }
    let mut extra = Roff::default();
    if name == "extnet" {
        files_section(&mut extra);
        extra.control("SH", ["EXIT STATUS"]);
        extra.text([roman(
            "0 when the command did what it was asked; 1 when it failed (the reason is on \
             stderr after \"extnet: \") or, for commands that compare, when they found a \
             difference (gateway render --check); 2 for a bad command line.",
        )]);
        extra.control("SH", ["ENVIRONMENT"]);
        tagged(
            &mut extra,
            "EXTNET_LOG",
            "The log level of the commands that log (node watch, reconcile, lease-log \
             interim): error, warn, info (the default), debug, trace.",
        );
    }
    see_also(&mut extra, &name, cmd);
    text.extend(extra.render().into_bytes());
    out.push(File {
        name: man.get_filename(),
        text: String::from_utf8(text).expect("roff is UTF-8"),
    });
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        cli_pages(sub, out);
    }
}

/// A page of the prolog or the epilog, from what their `--help` is made of.
fn hook_page(p: &Program) -> File {
    let description: Vec<String> = p
        .description
        .split("\n\n")
        .map(|para| para.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    let mut cmd = Command::new(p.name)
        .version(env!("CARGO_PKG_VERSION"))
        .about(p.about)
        .long_about(description.join("\n\n"));
    for o in hook::OPTIONS {
        cmd = cmd.arg(
            Arg::new(o.long)
                .long(o.long)
                .value_name(o.value)
                .help(o.help)
                .default_value(o.default),
        );
    }
    let man = man(cmd, p.name);
    let mut text = Vec::new();
    man.render(&mut text).unwrap();
    let mut extra = Roff::default();
    extra.control("SH", ["EXIT STATUS"]);
    for (code, what) in hook::EXIT_STATUS {
        tagged(&mut extra, &code.to_string(), what);
    }
    extra.control("SH", ["ENVIRONMENT"]);
    extra.text([roman(
        "slurmd sets these; the program reads them once at start (it reads nothing else of \
         the job).",
    )]);
    for (var, what) in extnet::job::env::VARIABLES {
        tagged(&mut extra, var, what);
    }
    tagged(
        &mut extra,
        "EXTNET_LOG",
        "The log level: error, warn, info (the default), debug, trace.",
    );
    files_section(&mut extra);
    see_also(&mut extra, p.name, &Command::new(p.name));
    text.extend(extra.render().into_bytes());
    File {
        name: man.get_filename(),
        text: String::from_utf8(text).expect("roff is UTF-8"),
    }
}

fn man(cmd: Command, name: &str) -> Man {
    Man::new(cmd)
        .title(name.to_uppercase())
        .section(SECTION)
        .source(format!("extnet {}", env!("CARGO_PKG_VERSION")))
        .manual("extnet")
}

fn display_name(cmd: &Command) -> String {
    cmd.get_display_name()
        .unwrap_or_else(|| cmd.get_name())
        .to_owned()
}

/// A `.TP` paragraph: `tag` in bold, then `text`.
fn tagged(roff: &mut Roff, tag: &str, text: &str) {
    roff.control("TP", []);
    roff.text([bold(tag)]);
    roff.text([roman(text)]);
}

/// The files every program of the node reads or writes, at their default paths.
fn files_section(roff: &mut Roff) {
    roff.control("SH", ["FILES"]);
    for (path, what) in [
        (
            extnet_policy::DEFAULT_PATH,
            "The policy (extnet.toml(5)); owned by root and writable by root only, or nothing \
             is granted.",
        ),
        (
            "/var/log/extnet/extnet.log",
            "The log (log.file of the policy).",
        ),
        (
            "/var/log/extnet/lease.log",
            "The lease log (log.lease_log): who held which public port block, when.",
        ),
        (
            "/var/log/extnet/accounting.log",
            "Per-job traffic records (log.accounting).",
        ),
        (
            "/run/extnet",
            "The node's state (node.state_dir): lease table, node lock, job state files.",
        ),
    ] {
        tagged(roff, path, what);
    }
}

/// SEE ALSO: the parent page, the subcommands' pages, the policy's page and the other
/// programs.
fn see_also(roff: &mut Roff, name: &str, cmd: &Command) {
    let mut refs: Vec<String> = Vec::new();
    if let Some((parent, _)) = name.rsplit_once('-') {
        if parent.starts_with("extnet") && name != "extnet-prolog" && name != "extnet-epilog" {
            refs.push(parent.to_owned());
        }
    }
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        refs.push(format!("{name}-{}", sub.get_name()));
    }
    for other in [
        "extnet",
        "extnet-prolog",
        "extnet-epilog",
        "extnet-node-watch",
    ] {
        if other != name && !refs.iter().any(|r| r == other) {
            refs.push(other.to_owned());
        }
    }
    roff.control("SH", ["SEE ALSO"]);
    let mut line = Vec::new();
    for r in &refs {
        line.push(bold(r.as_str()));
        line.push(roman(format!("({SECTION}), ")));
    }
    line.push(bold("extnet.toml"));
    line.push(roman("(5), "));
    line.push(bold("slurm.conf"));
    line.push(roman("(5), "));
    line.push(bold("spank"));
    line.push(roman("(8); "));
    line.push(italic("/usr/share/doc/extnet/README.md"));
    roff.text(line);
}

/// Every command path of the CLI (`extnet`, `extnet-policy`, `extnet-policy-check`, …): the
/// pages [`man_pages`] must have.
pub fn cli_command_names() -> Vec<String> {
    fn walk(cmd: &Command, prefix: &str, out: &mut Vec<String>) {
        let name = if prefix.is_empty() {
            cmd.get_name().to_owned()
        } else {
            format!("{prefix}-{}", cmd.get_name())
        };
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            walk(sub, &name, out);
        }
        out.push(name);
    }
    let mut out = Vec::new();
    walk(&extnet_cli::command(), "", &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    /// Every command of the CLI, the node agent and both hooks has its page, and each page
    /// says what its `--help` says.
    #[test]
    fn every_program_and_subcommand_has_a_page() {
        let pages = man_pages();
        let names: Vec<&str> = pages.iter().map(|p| p.name.as_str()).collect();
        let mut want = cli_command_names();
        want.extend(["extnet-prolog".to_owned(), "extnet-epilog".to_owned()]);
        for w in &want {
            assert!(
                names.contains(&format!("{w}.8").as_str()),
                "no page for {w}: {names:?}"
            );
        }
        assert_eq!(names.len(), want.len(), "pages for no command: {names:?}");
        for must in [
            "extnet-node-watch.8",
            "extnet-gateway-render.8",
            "extnet-policy-check.8",
            "extnet-trace.8",
        ] {
            assert!(names.contains(&must), "{must}");
        }
        let page = |n: &str| &pages.iter().find(|p| p.name == n).unwrap().text;
        // the options of a subcommand, the global --policy, the subcommands of the top page
        let watch = page("extnet-node-watch.8");
        assert!(watch.contains("reconcile\\-minutes"), "{watch}");
        assert!(watch.contains("\\-\\-policy"), "{watch}");
        let top = page("extnet.8");
        for sub in extnet_cli::command().get_subcommands() {
            assert!(
                top.contains(&format!(
                    "extnet\\-{}(8)",
                    sub.get_name().replace('-', "\\-")
                )),
                "extnet(8) does not list {}",
                sub.get_name()
            );
        }
        let prolog = page("extnet-prolog.8");
        for (var, _) in extnet::job::env::VARIABLES {
            assert!(prolog.contains(&var.replace('-', "\\-")), "{var}: {prolog}");
        }
        assert!(prolog.contains(extnet_policy::DEFAULT_PATH), "{prolog}");
        assert!(page("extnet-epilog.8").contains("Epilog="));
    }

    /// The committed pages and completion are what the definitions generate now
    /// (`cargo run -p extnet-docgen` writes them after a change of an option or a help text).
    #[test]
    fn committed_files_match_the_definitions() {
        let root = repo();
        let mut stale = Vec::new();
        let mut want: Vec<(PathBuf, String)> = man_pages()
            .into_iter()
            .map(|p| (root.join(MAN_DIR).join(p.name), p.text))
            .collect();
        want.push((root.join(BASH_COMPLETION), bash_completion()));
        for (path, text) in &want {
            match std::fs::read_to_string(path) {
                Ok(t) if &t == text => {}
                Ok(_) => stale.push(format!("{} differs", path.display())),
                Err(e) => stale.push(format!("{}: {e}", path.display())),
            }
        }
        // a page of a subcommand that is gone
        for e in std::fs::read_dir(root.join(MAN_DIR)).unwrap() {
            let p = e.unwrap().path();
            let generated = p.extension().is_some_and(|x| x == SECTION);
            if generated && !want.iter().any(|(w, _)| *w == p) {
                stale.push(format!("{} is no program's page any more", p.display()));
            }
        }
        assert!(
            stale.is_empty(),
            "{}\nregenerate: cargo run -p extnet-docgen",
            stale.join("\n")
        );
    }

    #[test]
    fn bash_completion_knows_every_subcommand_and_option() {
        fn walk(cmd: &Command, out: &mut Vec<String>) {
            for a in cmd.get_arguments().filter_map(|a| a.get_long()) {
                out.push(format!("--{a}"));
            }
            for sub in cmd.get_subcommands() {
                out.push(sub.get_name().to_owned());
                walk(sub, out);
            }
        }
        let c = bash_completion();
        assert!(c.contains("complete -F _extnet"), "{c}");
        let mut words = Vec::new();
        walk(&extnet_cli::command(), &mut words);
        assert!(words.len() > 40, "{words:?}");
        for w in words {
            assert!(c.contains(&w), "the completion does not know {w}");
        }
    }
}
