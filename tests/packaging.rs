//! The Debian packages (`packaging/build-debs`), built from this build's binaries and checked
//! as an admin meets them: their contents and fields (`dpkg-deb -c/-I`), lintian, an install,
//! reinstall, refused and allowed removal and a purge into a scratch root (`dpkg --root`, the
//! maintainer scripts run against that root only), `systemd-analyze verify` on every unit
//! and drop-in as installed, the man pages, and logrotate on the installed configuration
//! (`-d`, then a real rotation of scratch logs that loses no lease record).
//!
//! The packages are built once per run, from the binaries of the test's own build profile
//! (`cargo build --workspace` first, the same selection as `slurm-test-env/test`'s build
//! step: a no-op after it). The tests that install or rotate need root; without it they say
//! why they were skipped.

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use support::root::is_root;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the repository")
        .to_path_buf()
}

/// Runs `cmd`; its output, whatever its status.
fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs `cmd`, which must succeed; its stdout.
fn run(cmd: &mut Command) -> String {
    let o = output(cmd);
    assert!(
        o.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The three packages of one build.
struct Debs {
    _dir: tempfile::TempDir,
    by_name: BTreeMap<String, PathBuf>,
}

impl Debs {
    fn get(&self, name: &str) -> &Path {
        &self.by_name[name]
    }
    fn all(&self) -> Vec<&Path> {
        self.by_name.values().map(PathBuf::as_path).collect()
    }
}

/// The packages, built once: `cargo build --workspace` in this test's profile, then
/// `packaging/build-debs --no-build` from those binaries.
fn debs() -> &'static Debs {
    static DEBS: OnceLock<Debs> = OnceLock::new();
    DEBS.get_or_init(|| {
        // target/<profile>/deps/packaging-HASH
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
        let target_dir = profile_dir.parent().unwrap().to_path_buf();
        let mut build = Command::new(env!("CARGO"));
        build
            .args(["build", "--workspace", "--quiet"])
            .current_dir(repo())
            .env("CARGO_TARGET_DIR", &target_dir);
        if profile_dir.file_name().is_some_and(|p| p == "release") {
            build.arg("--release");
        }
        run(&mut build);
        let dir = tempfile::tempdir().unwrap();
        let listed = run(Command::new(repo().join("packaging/build-debs"))
            .args(["--no-build", "--bin-dir"])
            .arg(&profile_dir)
            .arg("--out")
            .arg(dir.path()));
        let by_name: BTreeMap<String, PathBuf> = listed
            .lines()
            .map(|l| {
                let p = PathBuf::from(l);
                let name = p
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .split('_')
                    .next()
                    .unwrap()
                    .to_owned();
                (name, p)
            })
            .collect();
        assert_eq!(
            by_name.keys().collect::<Vec<_>>(),
            ["extnet", "extnet-gateway", "extnet-node"],
            "build-debs printed:\n{listed}"
        );
        Debs { _dir: dir, by_name }
    })
}

/// `dpkg-deb -f DEB FIELD`.
fn field(deb: &Path, name: &str) -> String {
    run(Command::new("dpkg-deb").arg("-f").arg(deb).arg(name))
        .trim()
        .to_owned()
}

/// The paths a package installs (`dpkg-deb -c`), without the leading `.`, with their mode.
fn contents(deb: &Path) -> BTreeMap<String, String> {
    run(Command::new("dpkg-deb").arg("-c").arg(deb))
        .lines()
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let path = cols[5].trim_start_matches('.').trim_end_matches('/');
            (path.to_owned(), cols[0].to_owned())
        })
        .collect()
}

/// The Slurm series (`22.05`) of the installed headers, read here independently of
/// build-debs.
fn slurm_series() -> String {
    let h = std::fs::read_to_string("/usr/include/slurm/slurm_version.h")
        .expect("Slurm's headers (libslurm-dev) are installed");
    let hex = h
        .lines()
        .find_map(|l| l.strip_prefix("#define SLURM_VERSION_NUMBER"))
        .expect("SLURM_VERSION_NUMBER")
        .trim();
    let n = u32::from_str_radix(hex.trim_start_matches("0x"), 16).unwrap();
    format!("{:02}.{:02}", n >> 16, (n >> 8) & 0xff)
}

/// Slurm's plugin directory as the installed package has it.
fn slurm_plugindir() -> String {
    let files = run(Command::new("dpkg").args(["-L", "slurm-wlm-basic-plugins"]));
    let so = files
        .lines()
        .find(|l| l.ends_with("/proctrack_linuxproc.so"))
        .expect("slurm-wlm-basic-plugins has proctrack_linuxproc.so");
    Path::new(so).parent().unwrap().display().to_string()
}

#[test]
fn each_package_holds_what_its_role_needs() {
    let d = debs();
    let plugindir = slurm_plugindir();
    let want: [(&str, &[(&str, &str)]); 3] = [
        (
            "extnet",
            &[
                ("/usr/sbin/extnet", "-rwxr-xr-x"),
                ("/usr/share/man/man8/extnet.8.gz", "-rw-r--r--"),
                ("/usr/share/man/man8/extnet-node-watch.8.gz", "-rw-r--r--"),
                (
                    "/usr/share/man/man8/extnet-gateway-render.8.gz",
                    "-rw-r--r--",
                ),
                ("/usr/share/man/man5/extnet.toml.5.gz", "-rw-r--r--"),
                (
                    "/usr/share/bash-completion/completions/extnet",
                    "-rw-r--r--",
                ),
                ("/usr/share/doc/extnet/copyright", "-rw-r--r--"),
                ("/usr/share/doc/extnet/policy.md", "-rw-r--r--"),
                ("/usr/share/doc/extnet/examples/opt-in.toml", "-rw-r--r--"),
            ],
        ),
        (
            "extnet-node",
            &[
                ("/usr/sbin/extnet-prolog", "-rwxr-xr-x"),
                ("/usr/sbin/extnet-epilog", "-rwxr-xr-x"),
                (&format!("{plugindir}/extnet.so"), "-rw-r--r--"),
                ("/usr/share/man/man8/extnet-prolog.8.gz", "-rw-r--r--"),
                (
                    "/lib/systemd/system/extnet-node-watch.service",
                    "-rw-r--r--",
                ),
                ("/lib/systemd/system/extnet-interim.timer", "-rw-r--r--"),
                ("/lib/systemd/system/extnet-reconcile.timer", "-rw-r--r--"),
                ("/etc/slurm/extnet.toml", "-rw-r--r--"),
                ("/etc/slurm/plugstack.conf.d/extnet.conf", "-rw-r--r--"),
                ("/etc/logrotate.d/extnet", "-rw-r--r--"),
                ("/var/log/extnet", "drwxr-xr-x"),
                ("/usr/share/doc/extnet-node/copyright", "-rw-r--r--"),
            ],
        ),
        (
            "extnet-gateway",
            &[
                ("/lib/systemd/system/extnet-gateway.service", "-rw-r--r--"),
                (
                    "/lib/systemd/system/extnet-gateway-metrics.timer",
                    "-rw-r--r--",
                ),
                (
                    "/lib/systemd/system/keepalived.service.d/extnet.conf",
                    "-rw-r--r--",
                ),
                (
                    "/lib/systemd/system/conntrackd.service.d/extnet.conf",
                    "-rw-r--r--",
                ),
                ("/usr/lib/sysctl.d/60-extnet-gateway.conf", "-rw-r--r--"),
                ("/etc/default/extnet-gateway", "-rw-r--r--"),
                ("/etc/extnet/gateway", "drwxr-xr-x"),
            ],
        ),
    ];
    for (pkg, files) in want {
        let have = contents(d.get(pkg));
        for (path, mode) in files {
            assert_eq!(
                have.get(*path).map(String::as_str),
                Some(*mode),
                "{pkg}: {path}; it has:\n{}",
                have.keys().cloned().collect::<Vec<_>>().join("\n")
            );
        }
        // every regular file is root's (dpkg-deb --root-owner-group)
        let listing = run(Command::new("dpkg-deb").arg("-c").arg(d.get(pkg)));
        assert!(
            listing.lines().all(|l| l.contains(" root/root ")),
            "{listing}"
        );
    }
    // every committed man page is in a package
    let pages: Vec<String> = d
        .all()
        .iter()
        .flat_map(|p| contents(p).into_keys())
        .filter(|p| p.starts_with("/usr/share/man/man8/"))
        .collect();
    for e in std::fs::read_dir(repo().join("docs/man")).unwrap() {
        let name = e.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            pages.contains(&format!("/usr/share/man/man8/{name}.gz")),
            "{name} is in no package"
        );
    }

    // the plugin must match Slurm's major.minor: the node package says which
    let series = slurm_series();
    let node = d.get("extnet-node");
    let depends = field(node, "Depends");
    assert!(
        depends.contains(&format!(
            "slurm-wlm-basic-plugins (>= {series}), slurm-wlm-basic-plugins (<< {})",
            {
                let (maj, min) = series.split_once('.').unwrap();
                format!("{maj}.{:02}~", min.parse::<u32>().unwrap() + 1)
            }
        )),
        "{depends}"
    );
    let version = field(d.get("extnet"), "Version");
    assert!(
        depends.contains(&format!("extnet (= {version})")),
        "{depends}"
    );
    assert!(depends.contains("libc6"), "{depends}");
    let gw = field(d.get("extnet-gateway"), "Depends");
    for dep in ["nftables", "keepalived", "conntrackd", "extnet (="] {
        assert!(gw.contains(dep), "extnet-gateway Depends: {gw}");
    }
    // conffiles: the admin's edits survive upgrades
    let info = run(Command::new("dpkg-deb")
        .arg("-I")
        .arg(node)
        .arg("conffiles"));
    for c in [
        "/etc/slurm/extnet.toml",
        "/etc/slurm/plugstack.conf.d/extnet.conf",
        "/etc/logrotate.d/extnet",
    ] {
        assert!(info.lines().any(|l| l == c), "conffiles: {info}");
    }
}

#[test]
fn lintian_finds_no_error() {
    let d = debs();
    let o = output(
        Command::new("lintian")
            .args(["--tag-display-limit", "0", "--display-info"])
            .args(d.all()),
    );
    let text =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    // what it says besides errors, for the reader of the test's output
    print!("{text}");
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(errors.is_empty(), "lintian errors:\n{}", errors.join("\n"));
    assert!(
        o.status.success() || !text.trim().is_empty(),
        "lintian failed with nothing said ({})",
        o.status
    );
}

/// `dpkg --root R ARGS` with R's own database, the maintainer scripts run against R only
/// (`--force-script-chrootless`: DPKG_ROOT tells them), without the dependencies (R has no
/// Slurm).
fn dpkg_root(root: &Path, args: &[&str]) -> Output {
    output(
        Command::new("dpkg")
            .arg(format!("--root={}", root.display()))
            .args([
                "--force-script-chrootless",
                "--force-depends",
                "--log=/dev/null",
            ])
            .args(args),
    )
}

fn ok(o: &Output) -> String {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(o.status.success(), "dpkg failed ({}):\n{text}", o.status);
    text
}

#[test]
fn install_reinstall_remove_and_purge_in_a_scratch_root() {
    if !is_root(
        "install_reinstall_remove_and_purge_in_a_scratch_root",
        "files owned by root in a scratch dpkg root",
    ) {
        return;
    }
    let d = debs();
    let r = tempfile::tempdir().unwrap();
    let root = r.path();
    for dir in [
        "var/lib/dpkg/info",
        "var/lib/dpkg/updates",
        "var/lib/dpkg/triggers",
    ] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").unwrap();
    let debs: Vec<String> = d.all().iter().map(|p| p.display().to_string()).collect();
    let mut install = vec!["-i"];
    install.extend(debs.iter().map(String::as_str));
    ok(&dpkg_root(root, &install));

    // the files, runnable; the units enabled as on a new installation
    let prolog_help = run(Command::new(root.join("usr/sbin/extnet-prolog")).arg("--help"));
    assert!(
        prolog_help.contains("usage: extnet-prolog [--policy PATH]"),
        "{prolog_help}"
    );
    let version = run(Command::new(root.join("usr/sbin/extnet")).arg("--version"));
    assert!(version.starts_with("extnet "), "{version}");
    for link in [
        "etc/systemd/system/multi-user.target.wants/extnet-node-watch.service",
        "etc/systemd/system/timers.target.wants/extnet-interim.timer",
        "etc/systemd/system/multi-user.target.wants/extnet-gateway.service",
        "etc/systemd/system/timers.target.wants/extnet-reconcile.timer",
    ] {
        assert!(root.join(link).is_symlink(), "{link} is not enabled");
    }
    // the example policy, as installed, grants nothing: `extnet policy check` says why
    let policy = root.join("etc/slurm/extnet.toml");
    let meta = std::fs::metadata(&policy).unwrap();
    assert_eq!((meta.uid(), meta.permissions().mode() & 0o777), (0, 0o644));
    let check = output(
        Command::new(root.join("usr/sbin/extnet"))
            .args(["policy", "check"])
            .arg(&policy),
    );
    assert!(!check.status.success());
    assert!(
        String::from_utf8_lossy(&check.stderr).contains("version"),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    // the plugstack line names the plugin where the package put it
    let plugstack =
        std::fs::read_to_string(root.join("etc/slurm/plugstack.conf.d/extnet.conf")).unwrap();
    let line = plugstack
        .lines()
        .find(|l| l.starts_with("#required "))
        .expect("the commented plugstack line");
    let plugin = line.split_whitespace().nth(1).unwrap();
    assert!(
        root.join(plugin.trim_start_matches('/')).is_file(),
        "{plugin}"
    );

    // an admin's edit of a conffile survives a reinstall (the upgrade path)
    std::fs::write(&policy, "version = 1 # edited\n").unwrap();
    let mut reinstall = vec!["-i"];
    reinstall.extend(debs.iter().map(String::as_str));
    ok(&dpkg_root(
        root,
        &[&["--force-confold"][..], &reinstall[..]].concat(),
    ));
    assert_eq!(
        std::fs::read_to_string(&policy).unwrap(),
        "version = 1 # edited\n"
    );

    // a job's state and the logs a site keeps
    let jobs = root.join("run/extnet/jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    std::fs::write(jobs.join("42.json"), "{}").unwrap();
    let lease_log = root.join("var/log/extnet/lease.log");
    std::fs::write(&lease_log, "{\"event\":\"allocate\"}\n").unwrap();

    // removal is refused while a job is set up: its epilog must still run
    let refused = dpkg_root(root, &["-r", "extnet-node"]);
    assert!(!refused.status.success(), "removed under a running job");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("1 external job(s)"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(root.join("usr/sbin/extnet-epilog").is_file());

    // once the job ended: removed, then purged; what a job or the site still needs stays
    std::fs::remove_file(jobs.join("42.json")).unwrap();
    ok(&dpkg_root(root, &["-r", "extnet-node"]));
    assert!(!root.join("usr/sbin/extnet-epilog").exists());
    assert!(policy.exists(), "remove keeps the conffiles");
    ok(&dpkg_root(root, &["-P", "extnet-node", "extnet-gateway"]));
    assert!(!policy.exists(), "purge removes the conffiles");
    assert!(!root.join("etc/logrotate.d/extnet").exists());
    assert!(!root.join("etc/extnet").exists());
    assert!(
        !root
            .join("etc/systemd/system/multi-user.target.wants/extnet-node-watch.service")
            .exists(),
        "purge removes the enablement"
    );
    assert_eq!(
        std::fs::read_to_string(&lease_log).unwrap(),
        "{\"event\":\"allocate\"}\n",
        "purge keeps the lease log"
    );
    assert!(jobs.is_dir(), "purge keeps the node's state");
    assert!(root.join("usr/sbin/extnet").is_file(), "extnet stays");
}

/// The packages unpacked (`dpkg -x`) into a new directory.
fn unpacked() -> tempfile::TempDir {
    let r = tempfile::tempdir().unwrap();
    for deb in debs().all() {
        run(Command::new("dpkg").arg("-x").arg(deb).arg(r.path()));
    }
    r
}

/// `systemd-analyze verify` of every unit the packages install, in a root that has them as
/// installed plus what they refer to from this host (the units of systemd, nftables,
/// keepalived, conntrackd and slurmd; the programs their Exec lines name).
#[test]
fn every_unit_and_drop_in_passes_systemd_analyze_verify() {
    let r = unpacked();
    let root = r.path();
    let units = root.join("lib/systemd/system");
    // systemd's own units (targets), and the services ours order against or drop into
    for e in std::fs::read_dir("/lib/systemd/system").unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let wanted = name.ends_with(".target")
            || name.ends_with(".slice")
            || [
                "nftables.service",
                "keepalived.service",
                "conntrackd.service",
                "slurmd.service",
            ]
            .contains(&name.as_str());
        if wanted && p.is_file() {
            std::fs::copy(&p, units.join(&name)).unwrap();
        }
    }
    for service in [
        "keepalived.service",
        "conntrackd.service",
        "nftables.service",
    ] {
        assert!(
            units.join(service).is_file(),
            "{service} is not installed on this host (slurm-test-env/install-deps installs it)"
        );
    }
    // the programs the units run, from this host where the packages do not ship them
    for prog in [
        "/usr/sbin/keepalived",
        "/usr/sbin/conntrackd",
        "/usr/sbin/nft",
        "/usr/sbin/slurmd",
        "/usr/lib/systemd/systemd-sysctl",
        "/bin/rm",
        "/bin/kill",
    ] {
        let to = root.join(prog.trim_start_matches('/'));
        if !to.exists() {
            std::fs::create_dir_all(to.parent().unwrap()).unwrap();
            std::fs::copy(prog, &to).unwrap_or_else(|e| panic!("{prog}: {e}"));
        }
    }
    let ours: Vec<String> = std::fs::read_dir(&units)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("extnet-"))
        .collect();
    assert_eq!(ours.len(), 8, "{ours:?}");
    // keepalived and conntrackd are verified with the drop-ins of extnet-gateway applied
    let mut verify: Vec<String> = ours.clone();
    verify.extend(["keepalived.service".into(), "conntrackd.service".into()]);
    for unit in &verify {
        let o = output(
            Command::new("systemd-analyze")
                .arg("verify")
                .arg(format!("--root={}", root.display()))
                // the man pages of this host's units may be left out of the image; ours are
                // checked below
                .arg("--man=no")
                .arg(unit),
        );
        let said =
            String::from_utf8_lossy(&o.stderr).into_owned() + &String::from_utf8_lossy(&o.stdout);
        assert!(
            o.status.success() && said.trim().is_empty(),
            "systemd-analyze verify {unit} ({}):\n{said}",
            o.status
        );
    }
    // the drop-ins really apply: keepalived reads the rendered file, after extnet-gateway
    let cat = run(Command::new("systemd-analyze")
        .arg(format!("--root={}", root.display()))
        .args(["cat-config", "systemd/system/keepalived.service"]));
    assert!(
        cat.contains("--use-file /etc/extnet/gateway/keepalived.conf"),
        "{cat}"
    );
    // every man page a unit names is installed
    let man = root.join("usr/share/man");
    for unit in &ours {
        let text = std::fs::read_to_string(units.join(unit)).unwrap();
        for doc in text
            .lines()
            .filter_map(|l| l.strip_prefix("Documentation="))
            .flat_map(str::split_whitespace)
        {
            let page = doc.strip_prefix("man:").expect("man: references only");
            let (name, section) = page.trim_end_matches(')').split_once('(').unwrap();
            let path = man.join(format!("man{section}/{name}.{section}.gz"));
            assert!(path.is_file(), "{unit}: {doc} is not installed");
        }
    }
}

#[test]
fn man_pages_render_without_warnings() {
    let r = unpacked();
    let mut n = 0;
    for section in ["man5", "man8"] {
        for e in std::fs::read_dir(r.path().join("usr/share/man").join(section)).unwrap() {
            let page = e.unwrap().path();
            let o = output(
                Command::new("man")
                    .args(["--warnings", "-E", "UTF-8", "-l"])
                    .arg(&page)
                    .env("MANWIDTH", "80")
                    .env("LC_ALL", "C.UTF-8"),
            );
            let warnings = String::from_utf8_lossy(&o.stderr);
            assert!(
                o.status.success() && warnings.trim().is_empty(),
                "{}: {warnings}",
                page.display()
            );
            assert!(String::from_utf8_lossy(&o.stdout).contains("NAME"));
            n += 1;
        }
    }
    assert_eq!(n, 25, "pages: 22 of extnet, 2 of the hooks, extnet.toml(5)");
}

/// The installed logrotate configuration, pointed at a scratch log directory: `logrotate -d`
/// takes it, and a forced rotation moves the lease and accounting logs aside whole (the next
/// record starts a new file) and copies and truncates extnet.log in place.
#[test]
fn logrotate_rotates_the_logs_and_loses_no_lease_record() {
    if !is_root(
        "logrotate_rotates_the_logs_and_loses_no_lease_record",
        "root-owned logs (logrotate's create 0640 root root)",
    ) {
        return;
    }
    let r = unpacked();
    let logs = r.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    std::fs::set_permissions(&logs, std::fs::Permissions::from_mode(0o750)).unwrap();
    let conf = r.path().join("extnet.logrotate");
    let text = std::fs::read_to_string(r.path().join("etc/logrotate.d/extnet")).unwrap();
    std::fs::write(
        &conf,
        text.replace("/var/log/extnet/", &format!("{}/", logs.display())),
    )
    .unwrap();
    let state = r.path().join("logrotate.state");

    let dry = output(
        Command::new("logrotate")
            .arg("-d")
            .arg("-s")
            .arg(&state)
            .arg(&conf),
    );
    let said =
        String::from_utf8_lossy(&dry.stderr).into_owned() + &String::from_utf8_lossy(&dry.stdout);
    assert!(dry.status.success(), "logrotate -d:\n{said}");
    for log in ["lease.log", "accounting.log", "extnet.log"] {
        assert!(
            said.contains(log),
            "logrotate -d does not consider {log}:\n{said}"
        );
    }
    assert!(!said.contains("error"), "{said}");

    let lease = logs.join("lease.log");
    let extnet_log = logs.join("extnet.log");
    for i in 0..3 {
        extnet::store::fs::append_line(&lease, &format!("{{\"n\":{i}}}")).unwrap();
    }
    std::fs::write(logs.join("accounting.log"), "{\"job_id\":1}\n").unwrap();
    // extnet.log held open by a writer, as the node agent holds it
    let mut agent = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(&extnet_log)
        .unwrap();
    std::io::Write::write_all(&mut agent, b"before\n").unwrap();
    let inode = std::fs::metadata(&extnet_log).unwrap().ino();

    run(Command::new("logrotate")
        .arg("-f")
        .arg("-s")
        .arg(&state)
        .arg(&conf));
    extnet::store::fs::append_line(&lease, "{\"n\":3}").unwrap();
    std::io::Write::write_all(&mut agent, b"after\n").unwrap();

    let rotated: Vec<PathBuf> = std::fs::read_dir(&logs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("lease.log-")
        })
        .collect();
    assert_eq!(rotated.len(), 1, "{rotated:?}");
    // every record once, the ones before the rotation in the dated file, unchanged
    assert_eq!(
        std::fs::read_to_string(&rotated[0]).unwrap(),
        "{\"n\":0}\n{\"n\":1}\n{\"n\":2}\n"
    );
    assert_eq!(std::fs::read_to_string(&lease).unwrap(), "{\"n\":3}\n");
    assert_eq!(
        std::fs::metadata(&lease).unwrap().permissions().mode() & 0o777,
        0o640
    );
    assert!(logs.read_dir().unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("accounting.log-")));
    // extnet.log: the same file, truncated; the writer's next line at its start
    assert_eq!(std::fs::metadata(&extnet_log).unwrap().ino(), inode);
    assert_eq!(std::fs::read_to_string(&extnet_log).unwrap(), "after\n");
    assert_eq!(
        std::fs::read_to_string(logs.join("extnet.log.1")).unwrap(),
        "before\n"
    );
}

/// The example policy the package installs grants nothing as installed, and is a valid
/// policy once its settings (the lines with one `#`) are uncommented.
#[test]
fn the_example_policy_grants_nothing_until_uncommented() {
    let path = repo().join("packaging/node/extnet.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let e = extnet_policy::Policy::from_toml(&text, "extnet.toml").unwrap_err();
    assert!(e.to_string().contains("version"), "{e}");
    let uncommented: String = text
        .lines()
        .filter(|l| !l.starts_with("##"))
        .map(|l| l.strip_prefix("# ").or(l.strip_prefix('#')).unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n");
    let p = extnet_policy::Policy::from_toml(&uncommented, "extnet.toml")
        .unwrap_or_else(|e| panic!("{e}\n{uncommented}"));
    assert_eq!(p.profiles.len(), 1);
}

/// What the gateway's unit runs (forwarding on, render, load, check) works in a network
/// namespace of its own with only the capabilities `CapabilityBoundingSet=` leaves it, and
/// not without them.
#[test]
fn the_gateway_unit_runs_with_only_its_capabilities() {
    if !is_root(
        "the_gateway_unit_runs_with_only_its_capabilities",
        "a network namespace with an nft table",
    ) {
        return;
    }
    let r = unpacked();
    let root = r.path();
    let unit =
        std::fs::read_to_string(root.join("lib/systemd/system/extnet-gateway.service")).unwrap();
    let caps: Vec<String> = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit has a CapabilityBoundingSet=")
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    assert_eq!(caps, ["+net_admin"]);
    // the test cluster's policy, which has [gateways]
    let policy = root.join("extnet.toml");
    let text = std::fs::read_to_string(repo().join("slurm-test-env/extnet-test.toml"))
        .unwrap()
        .replace("@XN_DIR@", "/run/extnet-test");
    std::fs::write(&policy, text).unwrap();
    std::fs::set_permissions(&policy, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = root.join("etc/extnet/gateway");
    let extnet = root.join("usr/sbin/extnet");
    // the test policy is dual-stack: its admin uncomments the package's IPv6 forwarding line
    // (commented out by default; see the file), which `render --check` demands
    let sysctl_file = root.join("usr/lib/sysctl.d/60-extnet-gateway.conf");
    let sysctl_text = std::fs::read_to_string(&sysctl_file).unwrap();
    assert!(sysctl_text.contains("\n#net.ipv6.conf.all.forwarding = 1"));
    std::fs::write(
        &sysctl_file,
        sysctl_text.replace(
            "\n#net.ipv6.conf.all.forwarding = 1",
            "\nnet.ipv6.conf.all.forwarding = 1",
        ),
    )
    .unwrap();
    let script = format!(
        "/usr/lib/systemd/systemd-sysctl {sysctl} && cat /proc/sys/net/ipv4/ip_forward && \
         {x} --policy {p} gateway render --host gw1 --out {o} >/dev/null && \
         {x} --policy {p} gateway load --host gw1 --out {o} && \
         {x} --policy {p} gateway render --check --host gw1 --out {o}",
        sysctl = root
            .join("usr/lib/sysctl.d/60-extnet-gateway.conf")
            .display(),
        x = extnet.display(),
        p = policy.display(),
        o = out.display(),
    );
    let in_netns = |bounding: &str| {
        output(
            Command::new("unshare")
                .args(["--net", "setpriv"])
                .arg(format!("--bounding-set={bounding}"))
                .args(["--", "sh", "-ec", &script]),
        )
    };
    let with = in_netns(&format!("-all,{}", caps.join(",")));
    let said =
        String::from_utf8_lossy(&with.stdout).into_owned() + &String::from_utf8_lossy(&with.stderr);
    assert!(with.status.success(), "{said}");
    assert!(said.starts_with("1\n"), "forwarding on: {said}");
    assert!(said.contains("table inet extnet_gw loaded"), "{said}");
    assert!(said.contains("match the policy"), "{said}");
    let without = in_netns("-all");
    assert!(
        !without.status.success(),
        "the gateway's unit needs no capability at all?"
    );
}
