//! `extnet gateway render`, `render --check` and `load`: a NAT gateway's files from the
//! policy's `[gateways]` (`extnet::plan::gateway`), written, compared with what runs, or
//! loaded; `extnet gateway metrics`: its VRRP states, translations and conntrack fill for
//! node_exporter.

use anyhow::Context;
use extnet::plan::gateway::{self, nftables, GW_FAMILY, GW_TABLE};
use extnet_policy::Policy;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// Where the rendered files go (and how they name each other) when `--out` is not given.
pub const DEFAULT_DIR: &str = "/etc/extnet/gateway";

/// `extnet gateway render --host NAME [--out DIR]`: writes every file of the host into `dir`
/// (scripts executable), each atomically, and lists them.
pub fn render(
    policy_path: &Path,
    host: &str,
    dir: &Path,
    state_dir: &Path,
) -> anyhow::Result<ExitCode> {
    let policy = Policy::load(policy_path)?;
    let r = gateway::render(&policy, host, dir, state_dir)?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for (name, text) in &r.files {
        let path = dir.join(name);
        let mode = if name.ends_with(".sh") { 0o755 } else { 0o644 };
        write_file(&path, text, mode)?;
        println!("{}", path.display());
    }
    Ok(ExitCode::SUCCESS)
}

/// `extnet gateway metrics [--output FILE] [--state-dir DIR]`: the VRRP states the notify
/// script recorded under `state_dir`, the translated connections (one conntrack dump),
/// conntrack's fill and the time, on stdout or replacing FILE.
pub fn metrics(output: Option<PathBuf>, state_dir: &Path) -> anyhow::Result<ExitCode> {
    use extnet::node::metrics;
    let translated = match extnet::kernel::conntrack::count_source_nat() {
        Ok(t) => Some(t),
        Err(e) => {
            eprintln!("extnet gateway metrics: no translated connections: cannot dump the conntrack table: {e}");
            None
        }
    };
    let figures = metrics::GatewayFigures {
        vrrp: metrics::vrrp_states(&state_dir.join("vrrp")),
        translated,
    };
    let text = metrics::render_gateway(Path::new("/"), &figures, extnet::store::lease::now());
    match output {
        Some(path) => metrics::write(&path, &text)?,
        None => print!("{text}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes `text` to `path` through a temporary file and a rename, with `mode`.
fn write_file(path: &Path, text: &str, mode: u32) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("extnet-tmp");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))
}

/// Rules the rendered table has per chain (forward, postrouting, input): the translations
/// and the input drop have one rule per family.
const RULES: [(&str, usize); 3] = [("forward", 4), ("postrouting", 5), ("input", 2)];

/// `extnet gateway render --check --host NAME [--out DIR]`: compares the running table (this
/// network namespace's `nft -j list table inet extnet_gw`) and the files in `dir` with the
/// rendering; prints every difference. Exit status 1 when anything differs.
pub fn check(
    policy_path: &Path,
    host: &str,
    dir: &Path,
    state_dir: &Path,
) -> anyhow::Result<ExitCode> {
    let policy = Policy::load(policy_path)?;
    let r = gateway::render(&policy, host, dir, state_dir)?;
    let (g, h) = gateway::host(&policy, host)?;
    let want = nftables::GatewayModel::of(&policy, g, h);
    let want_text = &r.files[0].1;
    let want_stamp = nftables::stamp(want_text).expect("a rendering has its stamp");
    let mut diffs = Vec::new();
    match list_table()? {
        None => diffs.push(format!("nft table {GW_FAMILY} {GW_TABLE} is not loaded")),
        Some(json) => {
            let (have, stamp, rules) = nftables::from_json(&json, host)?;
            diffs.extend(nftables::differences(
                &want,
                &want_stamp,
                &have,
                stamp.as_deref(),
            ));
            for (chain, n) in RULES {
                let have_n = rules
                    .iter()
                    .filter(|r| r.starts_with(&format!("{chain}: ")))
                    .count();
                if have_n != n {
                    diffs.push(format!(
                        "chain {chain}: {have_n} rules running, the rendering has {n}"
                    ));
                }
            }
        }
    }
    if h.cluster_address6.is_some() {
        // the ruleset translates IPv6, but only a forwarding host passes it on
        let path = "/proc/sys/net/ipv6/conf/all/forwarding";
        match std::fs::read_to_string(path) {
            Ok(v) if v.trim() == "1" => {}
            Ok(v) => diffs.push(format!("{path} is {}: this gateway has IPv6 in the policy but does not forward it; set net.ipv6.conf.all.forwarding = 1 (see /usr/lib/sysctl.d/60-extnet-gateway.conf)", v.trim())),
            Err(e) => diffs.push(format!("{path}: {e}: this gateway has IPv6 in the policy; IPv6 must be on and forwarding")),
        }
    }
    for (name, text) in &r.files {
        let path = dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(t) if &t == text => {}
            Ok(_) => diffs.push(format!("{}: differs from the rendering", path.display())),
            Err(e) => diffs.push(format!("{}: {e}", path.display())),
        }
    }
    if diffs.is_empty() {
        println!(
            "gateway {host}: the running table and the files in {} match the policy",
            dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "gateway {host}: {} difference(s) from the policy's rendering:",
        diffs.len()
    );
    for d in diffs {
        println!("  - {d}");
    }
    println!("fix: extnet gateway render --host {host} --out {} && extnet gateway load --host {host}, then reload keepalived and conntrackd", dir.display());
    Ok(ExitCode::from(1))
}

/// `nft -j list table inet extnet_gw`, `None` when the table does not exist.
fn list_table() -> anyhow::Result<Option<String>> {
    let nft = extnet::kernel::nftables::program()?;
    let out = Command::new(&nft)
        .args(["-j", "list", "table", GW_FAMILY, GW_TABLE])
        .env_clear()
        .env("LC_ALL", "C")
        .output()
        .with_context(|| format!("cannot run {}", nft.display()))?;
    if out.status.success() {
        return Ok(Some(String::from_utf8_lossy(&out.stdout).into_owned()));
    }
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("No such file or directory") {
        return Ok(None);
    }
    anyhow::bail!(
        "{} -j list table {GW_FAMILY} {GW_TABLE} failed: {}",
        nft.display(),
        err.trim()
    )
}

/// `extnet gateway load --host NAME`: loads the rendered ruleset in this network namespace,
/// one `nft -f` transaction (which also deletes the `ip extnet_gw` table of versions before
/// IPv6).
pub fn load(policy_path: &Path, host: &str, dir: &Path) -> anyhow::Result<ExitCode> {
    let policy = Policy::load(policy_path)?;
    // the ruleset only: it names neither directory
    let r = gateway::render(&policy, host, dir, Path::new(gateway::STATE_DIR))?;
    extnet::kernel::nftables::apply(&r.files[0].1)?;
    println!(
        "gateway {host}: table {GW_FAMILY} {GW_TABLE} loaded ({})",
        nftables::stamp(&r.files[0].1).unwrap_or_default()
    );
    Ok(ExitCode::SUCCESS)
}
