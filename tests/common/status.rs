//! Relying-party helpers for the status service: fetch with curl, ask OpenSSL, read a CRL's
//! number, wait for a newer CRL.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::ca::run;

/// GET `url` into `out`; returns the status code and content type.
pub fn fetch(url: &str, out: &Path) -> (u16, String) {
    let (code, ctype) = curl(&[url], out);
    assert!(code != 0, "curl {url}: no HTTP answer");
    (code, ctype)
}

/// curl with `args`, the body written to `out`; returns the HTTP status (0 when there was no
/// answer) and content type.
pub fn curl(args: &[&str], out: &Path) -> (u16, String) {
    let o = run(Command::new("curl")
        .args(["-s", "-o"])
        .arg(out)
        .args(["-w", "%{http_code} %{content_type}"])
        .args(args));
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let (code, ctype) = text.split_once(' ').unwrap_or((&text, ""));
    (code.parse().unwrap_or(0), ctype.to_owned())
}

/// Whether a command succeeded, and its standard output followed by its standard error.
pub fn outcome(o: &Output) -> (bool, String) {
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// Run `openssl` in `dir`; whether it succeeded, and its output.
pub fn openssl(args: &[&str], dir: &Path) -> (bool, String) {
    outcome(&run(Command::new("openssl").args(args).current_dir(dir)))
}

/// Convert the DER CRL `der` in `dir` to PEM in `pem`, panicking if OpenSSL cannot.
pub fn crl_to_pem(dir: &Path, der: &str, pem: &str) {
    let (ok, out) = openssl(&["crl", "-inform", "DER", "-in", der, "-out", pem], dir);
    assert!(ok, "{out}");
}

/// `openssl verify` of `leaf` up to the root, with `crl_pem`'s CRL checked; whether it
/// succeeded, and its output.
pub fn verify_with_crl(dir: &Path, crl_pem: &str, leaf: &Path) -> (bool, String) {
    openssl(
        &[
            "verify",
            "-crl_check",
            "-CRLfile",
            crl_pem,
            "-CAfile",
            "root.pem",
            "-untrusted",
            "issuing-ec.pem",
            leaf.to_str().unwrap(),
        ],
        dir,
    )
}

/// The CRL's number, read by `openssl crl -crlnumber`.
pub fn crl_number(dir: &Path, der: &str) -> u64 {
    let (ok, out) = openssl(
        &["crl", "-inform", "DER", "-in", der, "-noout", "-crlnumber"],
        dir,
    );
    assert!(ok, "{out}");
    let hex = out
        .trim()
        .strip_prefix("crlNumber=0x")
        .unwrap_or_else(|| panic!("{out}"));
    u64::from_str_radix(hex, 16).unwrap()
}

/// Fetch the issuing-ec CRL into `name` (DER) until its number is above `above`.
pub fn fetch_crl_numbered_above(dir: &Path, base: &str, name: &str, above: u64) -> u64 {
    fetch_issuer_crl_numbered_above(dir, base, "issuing-ec", name, above)
}

/// Fetch `issuer`'s CRL into `name` (DER) until its number is above `above`.
pub fn fetch_issuer_crl_numbered_above(
    dir: &Path,
    base: &str,
    issuer: &str,
    name: &str,
    above: u64,
) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (code, ctype) = fetch(&format!("{base}/crl/{issuer}.crl"), &dir.join(name));
        assert_eq!((code, ctype.as_str()), (200, "application/pkix-crl"));
        let n = crl_number(dir, name);
        if n > above {
            return n;
        }
        assert!(Instant::now() < deadline, "CRL number stayed at {n}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Fetch `/ca/{name}.crt` for each name into `dir` (created if missing) as `{name}.der` and
/// `{name}.pem`.
pub fn fetch_ca_pems(base: &str, dir: &Path, names: &[&str]) {
    std::fs::create_dir_all(dir).unwrap();
    for name in names {
        let der = dir.join(format!("{name}.der"));
        let (code, ctype) = fetch(&format!("{base}/ca/{name}.crt"), &der);
        assert_eq!(
            (code, ctype.as_str()),
            (200, "application/pkix-cert"),
            "{name}"
        );
        std::fs::write(
            dir.join(format!("{name}.pem")),
            super::ca::pem(&std::fs::read(&der).unwrap()),
        )
        .unwrap();
    }
}

/// `openssl ocsp` about certificates of `issuer` (a PEM in `dir`) at `url`, verifying the
/// response against `root.pem`, with the response printed, plus `extra`.
pub fn ask_ocsp(dir: &Path, url: &str, issuer: &str, extra: &[&str]) -> (bool, String) {
    let issuer = format!("{issuer}.pem");
    let mut args = vec![
        "ocsp",
        "-issuer",
        &issuer,
        "-url",
        url,
        "-CAfile",
        "root.pem",
        "-resp_text",
    ];
    args.extend_from_slice(extra);
    openssl(&args, dir)
}

/// A time as OpenSSL prints it ("Nov 12 10:33:00 2026 GMT", "Nov  2 10:33:00.5 2026 GMT")
/// as (year, month, day, hour, minute, second), which orders like time.
pub fn openssl_date(text: &str) -> (u32, u32, u32, u32, u32, u32) {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let f: Vec<&str> = text.split_whitespace().collect();
    assert!(f.len() >= 4, "not an OpenSSL date: {text:?}");
    let month = MONTHS
        .iter()
        .position(|m| *m == f[0])
        .unwrap_or_else(|| panic!("month in {text:?}")) as u32
        + 1;
    let hms: Vec<u32> = f[2]
        .split(':')
        .map(|x| x.split('.').next().unwrap_or(x).parse().unwrap())
        .collect();
    (
        f[3].parse().unwrap(),
        month,
        f[1].parse().unwrap(),
        hms[0],
        hms[1],
        hms[2],
    )
}

/// The date OpenSSL prints after `label` (e.g. "Last Update: ") in `text`.
pub fn openssl_date_after(text: &str, label: &str) -> (u32, u32, u32, u32, u32, u32) {
    let line = text
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(label))
        .unwrap_or_else(|| panic!("no {label:?} in {text}"));
    openssl_date(line)
}
