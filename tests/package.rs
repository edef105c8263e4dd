//! The Debian package (`packaging/build-deb.sh`): its contents, its systemd unit as
//! `systemd-analyze` judges it, installation with dpkg on this machine (the signet user, the
//! configuration readable by it alone), and the unit's ExecStart run under the unit's own
//! sandbox (tests/tools/unit-sandbox.sh where systemd is not PID 1) issuing a certificate.
//! Needs root: it installs the package.

mod common;

use std::path::Path;
use std::process::Command;

use common::api::*;
use common::ca::{make_csr, output_text, run};

fn ok(cmd: &mut Command) -> String {
    let o = run(cmd);
    let text = output_text(&o);
    assert!(o.status.success(), "{cmd:?}: {text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_debian_package_installs_and_its_unit_serves_sandboxed() {
    let uid = ok(Command::new("id").arg("-u"));
    assert_eq!(uid.trim(), "0", "installing a package needs root");
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = tempfile::tempdir().unwrap();
    let built = ok(Command::new(manifest.join("packaging/build-deb.sh"))
        .arg("--binary")
        .arg(env!("CARGO_BIN_EXE_signet"))
        .arg("--out")
        .arg(out.path()));
    let deb = built
        .lines()
        .find(|l| l.ends_with(".deb"))
        .expect("a .deb path")
        .to_owned();

    let contents = ok(Command::new("dpkg-deb").args(["--contents", &deb]));
    for path in [
        "./usr/bin/signet",
        "./etc/signet/signet.toml",
        "./lib/systemd/system/signet.service",
        "./usr/lib/tmpfiles.d/signet.conf",
        "./usr/share/man/man1/signet.1.gz",
        "./usr/share/bash-completion/completions/signet",
        "./usr/share/zsh/vendor-completions/_signet",
        "./usr/share/fish/vendor_completions.d/signet.fish",
    ] {
        assert!(
            contents.lines().any(|l| l.ends_with(path)),
            "{path} missing:\n{contents}"
        );
    }
    let conffiles = ok(Command::new("dpkg-deb").args(["--info", &deb, "conffiles"]));
    assert_eq!(conffiles.trim(), "/etc/signet/signet.toml");

    // The unit's sandbox, as systemd itself scores it (lower is tighter; 10 is none).
    let x = out.path().join("x");
    ok(Command::new("dpkg-deb").args(["-x", &deb]).arg(&x));
    let unit = x.join("lib/systemd/system/signet.service");
    let security = ok(Command::new("systemd-analyze")
        .args(["security", "--offline=yes"])
        .arg(format!("--root={}", x.display()))
        .arg(&unit));
    let score: f64 = security
        .lines()
        .find_map(|l| l.split("signet.service: ").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{security}"));
    assert!(score <= 2.0, "exposure {score}:\n{security}");

    // Installed on this machine.
    ok(Command::new("dpkg").args(["-i", &deb]));
    ok(Command::new("getent").args(["passwd", "signet"]));
    let mode = ok(Command::new("stat").args(["-c", "%a %U %G", "/etc/signet/signet.toml"]));
    assert_eq!(mode.trim(), "640 root signet");
    let state = ok(Command::new("stat").args(["-c", "%a %U", "/var/lib/signet"]));
    assert_eq!(state.trim(), "750 signet");
    let verify = ok(Command::new("systemd-analyze").args([
        "verify",
        "--man=no",
        "/lib/systemd/system/signet.service",
    ]));
    assert!(!verify.contains("signet.service:"), "{verify}");
    let man = ok(Command::new("sh").args(["-c", "zcat /usr/share/man/man1/signet.1.gz"]));
    assert!(man.contains(".SH NAME") && man.contains("signet"), "{man}");
    ok(Command::new("bash").args([
        "-c",
        "source /usr/share/bash-completion/completions/signet && complete -p signet",
    ]));

    // The unit's ExecStart, with a test CA kept in the unit's one writable place.
    let exec = std::fs::read_to_string("/lib/systemd/system/signet.service")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart=").map(str::to_owned))
        .expect("an ExecStart line");
    let argv: Vec<&str> = exec.split_whitespace().collect();
    assert_eq!(
        argv,
        [
            "/usr/bin/signet",
            "--config",
            "/etc/signet/signet.toml",
            "serve"
        ]
    );
    common::set_env("TMPDIR", "/var/lib/signet");
    let ca = ApiCa::new();
    let home = ca.softhsm.dir.path().to_owned();
    ok(Command::new("chown")
        .args(["-R", "signet:signet"])
        .arg(&home));
    let sandbox = manifest.join("tests/tools/unit-sandbox.sh");
    let d = Daemon::start_wrapped(
        &ca,
        &[sandbox.to_str().unwrap(), "/var/lib/signet", "signet"],
        argv[0],
    );
    let mut c = d.client("ra-one").await;
    let dir = ca.dir.join("pkg");
    std::fs::create_dir_all(&dir).unwrap();
    let r = c
        .issue(issue_request("pkg-1", "server", make_csr(&dir, "p256")))
        .await
        .unwrap_or_else(|e| panic!("{e:?}\n{}", d.log_text()))
        .into_inner();
    assert!(!r.certificate.is_empty());
    // The daemon ran as signet, with no capabilities and no way to gain any.
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .unwrap_or_default()
    };
    let signet_uid = ok(Command::new("id").args(["-u", "signet"]));
    assert!(field("Uid:").starts_with(signet_uid.trim()), "{status}");
    assert_eq!(field("CapEff:"), "0000000000000000", "{status}");
    assert_eq!(field("CapBnd:"), "0000000000000000", "{status}");
    assert_eq!(field("NoNewPrivs:"), "1", "{status}");
    drop(d);
    ok(Command::new("chown").args(["-R", "root:root"]).arg(&home));
}
