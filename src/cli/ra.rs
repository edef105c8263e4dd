//! `signet ra`: the reference RA client. It shows an RA developer every call of the API over
//! mutual TLS, and prints refusals as the gRPC code, the message and the field at fault.

use std::path::{Path, PathBuf};

use signet::api::client::{self, ClientSettings, describe_status, format_rfc3339, parse_rfc3339};
use signet::api::convert::timestamp;
use signet::api::pb;
use signet::config::Config;
use signet::pki::pkcs7::{pem_certificate, pem_certificates};

use super::common::read_csr;

/// How to reach the daemon: flags, environment, or the `[api]` and `[[ra]]` of --config.
/// Shared by `signet ra` and `signet bench`.
#[derive(clap::Args)]
pub struct ConnArgs {
    /// The daemon, https://HOST:PORT; HOST is the name checked in its certificate. Default:
    /// the [api] listen address of --config.
    #[arg(long, env = "SIGNET_RA_ENDPOINT")]
    endpoint: Option<String>,
    /// PEM of the CA that issued the daemon's certificate. Default: the [api] tls_issuer's
    /// certificate in the ceremony output of --config.
    #[arg(long, env = "SIGNET_RA_CA_CERT")]
    ca_cert: Option<PathBuf>,
    /// PEM of this RA's client certificate. Default: client_cert of the first [[ra]] of
    /// --config that has one (or of --ra-name).
    #[arg(long, env = "SIGNET_RA_CERT")]
    cert: Option<PathBuf>,
    /// PEM of this RA's private key. Default: client_key beside the chosen client_cert.
    #[arg(long, env = "SIGNET_RA_KEY")]
    key: Option<PathBuf>,
    /// With --config: which [[ra]] entry's client certificate to use.
    #[arg(long)]
    ra_name: Option<String>,
}

/// Connection flags of `signet ra`, and the call to make.
#[derive(clap::Args)]
pub struct RaArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    call: RaCall,
}

#[derive(clap::Subcommand)]
enum RaCall {
    /// Issue a certificate (Issue).
    Issue(Box<IssueArgs>),
    /// Renew a certificate inside its renewal window (Renew).
    Renew(Box<RenewArgs>),
    /// Revoke a certificate (Revoke).
    Revoke {
        /// Serial number (hex).
        #[arg(long)]
        serial: String,
        /// RFC 5280 reason: unspecified, keyCompromise, cACompromise, affiliationChanged,
        /// superseded, cessationOfOperation, certificateHold, privilegeWithdrawn,
        /// aACompromise.
        #[arg(long)]
        reason: String,
        /// Request id; revoking again with the same id is harmless.
        #[arg(long)]
        request_id: String,
        /// When the subscriber reported the problem (RFC 3339).
        #[arg(long)]
        reported_at: Option<String>,
        /// A note kept with the revocation.
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Take a held certificate off hold (ReleaseHold): valid again.
    ReleaseHold {
        /// Serial number (hex).
        #[arg(long)]
        serial: String,
        /// Request id; releasing again with the same id is harmless.
        #[arg(long)]
        request_id: String,
        /// Why the hold ends (kept in the certificate's history).
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Show one certificate and its status (GetCertificate).
    Get {
        /// Serial number (hex).
        #[arg(
            long,
            required_unless_present = "request_id",
            conflicts_with = "request_id"
        )]
        serial: Option<String>,
        /// Or this office's own request id (Issue or Renew): what became of that request.
        #[arg(long)]
        request_id: Option<String>,
        /// Write the certificate (PEM) here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// List certificates, following every page (ListCertificates).
    List {
        /// valid, revoked or pending.
        #[arg(long)]
        status: Option<String>,
        /// Only this profile.
        #[arg(long)]
        profile: Option<String>,
        /// Only certificates this RA requested.
        #[arg(long)]
        ra: Option<String>,
        /// Only subjects containing this text.
        #[arg(long)]
        subject: Option<String>,
        /// Only certificates expiring before this time (RFC 3339).
        #[arg(long)]
        expiring_before: Option<String>,
        /// Only records changed at or after this time (RFC 3339), in the order they changed.
        #[arg(long)]
        updated_since: Option<String>,
        /// Certificates per page.
        #[arg(long, default_value_t = 100)]
        page_size: u32,
    },
    /// Fetch the CA certificates (GetCaChain): PEM on standard output.
    Chain {
        /// An issuing CA: its chain up to the root. Default: the whole hierarchy.
        #[arg(long)]
        issuer: Option<String>,
        /// Also write the certs-only PKCS#7 (DER .p7b) here.
        #[arg(long)]
        p7b: Option<PathBuf>,
    },
}

/// The approval evidence an RA attaches to an issuance, renewal or personalisation.
#[derive(clap::Args)]
pub struct ApprovalArgs {
    /// The officer who approved the request.
    #[arg(long)]
    pub officer: String,
    /// The RA's reference for the application.
    #[arg(long)]
    pub ra_reference: String,
    /// The subscriber-agreement version the applicant accepted.
    #[arg(long)]
    pub agreement_version: String,
}

impl ApprovalArgs {
    /// As the RA API carries it.
    pub fn to_pb(&self) -> pb::Approval {
        pb::Approval {
            officer: self.officer.clone(),
            ra_reference: self.ra_reference.clone(),
            agreement_version: self.agreement_version.clone(),
        }
    }
}

/// An issuance request as typed by an operator or RA developer; `signet issue` (local) and
/// `signet ra issue` (over mTLS) take the same flags.
#[derive(clap::Args)]
pub struct IssueArgs {
    /// Profile name.
    #[arg(long)]
    pub profile: String,
    /// The subscriber's PKCS#10 request, DER or PEM.
    #[arg(long)]
    pub csr: PathBuf,
    /// The verified subject, e.g. "CN=张三, O=示例公司, C=CN" (backslash escapes a comma).
    #[arg(long, default_value = "")]
    pub subject: String,
    /// dns:NAME, ip:ADDRESS or email:ADDRESS (repeatable).
    #[arg(long = "san")]
    pub sans: Vec<String>,
    /// Validity in years.
    #[arg(long)]
    pub validity: u32,
    /// Request id; the same id returns the same certificate.
    #[arg(long)]
    pub request_id: String,
    /// Approval evidence.
    #[command(flatten)]
    pub approval: ApprovalArgs,
    /// Issuing CA; default: the profile's first.
    #[arg(long)]
    pub issuer: Option<String>,
    /// Write the certificate (PEM) here instead of standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Also write the chain after the certificate.
    #[arg(long)]
    pub chain: bool,
}

#[derive(clap::Args)]
struct RenewArgs {
    /// Serial of the certificate to renew.
    #[arg(long)]
    serial: String,
    /// Request id.
    #[arg(long)]
    request_id: String,
    /// A new CSR (DER or PEM) for a new key; default: keep the key.
    #[arg(long)]
    csr: Option<PathBuf>,
    /// Validity in years; default: as before.
    #[arg(long)]
    validity: Option<u32>,
    /// Approval evidence.
    #[command(flatten)]
    approval: ApprovalArgs,
    /// Write the certificate (PEM) here instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// RFC 5280 reason names and their proto values.
const REASONS: [(&str, pb::RevocationReason); 10] = [
    ("unspecified", pb::RevocationReason::Unspecified),
    ("keyCompromise", pb::RevocationReason::KeyCompromise),
    ("cACompromise", pb::RevocationReason::CaCompromise),
    (
        "affiliationChanged",
        pb::RevocationReason::AffiliationChanged,
    ),
    ("superseded", pb::RevocationReason::Superseded),
    (
        "cessationOfOperation",
        pb::RevocationReason::CessationOfOperation,
    ),
    ("certificateHold", pb::RevocationReason::CertificateHold),
    ("removeFromCRL", pb::RevocationReason::RemoveFromCrl),
    (
        "privilegeWithdrawn",
        pb::RevocationReason::PrivilegeWithdrawn,
    ),
    ("aACompromise", pb::RevocationReason::AaCompromise),
];

fn reason_name(v: i32) -> String {
    REASONS
        .iter()
        .find(|(_, r)| *r as i32 == v)
        .map_or_else(|| format!("reason {v}"), |(n, _)| (*n).to_owned())
}

fn event_name(v: i32) -> &'static str {
    match pb::RevocationEventKind::try_from(v) {
        Ok(pb::RevocationEventKind::Revoked) => "revoked",
        Ok(pb::RevocationEventKind::Held) => "held",
        Ok(pb::RevocationEventKind::Released) => "released",
        _ => "unknown",
    }
}

fn status_name(v: i32) -> &'static str {
    match pb::CertificateStatus::try_from(v) {
        Ok(pb::CertificateStatus::Valid) => "valid",
        Ok(pb::CertificateStatus::Revoked) => "revoked",
        Ok(pb::CertificateStatus::Pending) => "pending",
        _ => "unknown",
    }
}

fn ts(t: &Option<prost_types::Timestamp>) -> String {
    t.as_ref()
        .map_or_else(|| "-".to_owned(), |t| format_rfc3339(t.seconds))
}

/// Connection settings from the flags, falling back to the configuration file.
pub fn settings(a: &ConnArgs, config: Option<&Path>) -> Result<ClientSettings, String> {
    let cfg = match config {
        Some(p) => Some(Config::load(p).map_err(|e| e.to_string())?),
        None => None,
    };
    let ra = cfg.as_ref().and_then(|c| {
        c.ras
            .iter()
            .find(|r| r.client_cert.is_some() && a.ra_name.as_ref().is_none_or(|n| &r.name == n))
    });
    let api = cfg.as_ref().and_then(|c| c.api.as_ref());
    let endpoint = match (&a.endpoint, api) {
        (Some(e), _) => e.clone(),
        (None, Some(api)) => {
            let mut addr = api.listen;
            if addr.ip().is_unspecified() {
                addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            format!("https://{addr}")
        }
        (None, None) => return Err("give --endpoint (or SIGNET_RA_ENDPOINT, or --config)".into()),
    };
    let from_cfg = |p: &Option<PathBuf>| -> Option<PathBuf> {
        let c = cfg.as_ref()?;
        p.as_ref().map(|p| c.resolve(p))
    };
    let ca_cert = match (&a.ca_cert, cfg.as_ref(), api) {
        (Some(p), _, _) => p.clone(),
        (None, Some(c), Some(api)) => c.output_dir().join(format!("{}.pem", api.tls_issuer)),
        _ => return Err("give --ca-cert (or SIGNET_RA_CA_CERT, or --config)".into()),
    };
    let cert = a
        .cert
        .clone()
        .or_else(|| ra.and_then(|r| from_cfg(&r.client_cert)))
        .ok_or("give --cert (or SIGNET_RA_CERT, or --config with an [[ra]] client_cert)")?;
    let key = a
        .key
        .clone()
        .or_else(|| ra.and_then(|r| from_cfg(&r.client_key)))
        .ok_or("give --key (or SIGNET_RA_KEY, or --config with an [[ra]] client_key)")?;
    Ok(ClientSettings {
        endpoint,
        ca_cert,
        cert,
        key,
    })
}

/// Split `CN=a, O=b\, c` into attributes; the daemon judges them.
pub fn subject_attrs(text: &str) -> Result<Vec<pb::SubjectAttribute>, String> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => cur.push(chars.next().ok_or("--subject ends with a lone backslash")?),
            ',' => parts.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    parts.push(cur);
    parts
        .iter()
        .map(|p| p.trim_start())
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p
                .split_once('=')
                .ok_or_else(|| format!("--subject: {p:?} is not NAME=value"))?;
            Ok(pb::SubjectAttribute {
                r#type: k.trim().to_owned(),
                value: v.to_owned(),
            })
        })
        .collect()
}

pub fn san(text: &str) -> Result<pb::SubjectAltName, String> {
    use pb::subject_alt_name::Name;
    let (kind, value) = text
        .split_once(':')
        .ok_or_else(|| format!("--san {text:?}: use dns:NAME, ip:ADDRESS or email:ADDRESS"))?;
    let name = match kind {
        "dns" => Name::Dns(value.to_owned()),
        "ip" => Name::Ip(value.to_owned()),
        "email" => Name::Email(value.to_owned()),
        _ => return Err(format!("--san {text:?}: use dns:, ip: or email:")),
    };
    Ok(pb::SubjectAltName { name: Some(name) })
}

pub fn write_or_print(out: Option<&Path>, text: &str) -> Result<(), String> {
    match out {
        Some(p) => std::fs::write(p, text).map_err(|e| format!("{}: {e}", p.display())),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}

/// Run `signet ra ...`.
pub fn run(a: RaArgs, config: Option<&Path>) -> Result<(), String> {
    let s = settings(&a.conn, config)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(async move {
        let mut c = client::ca_client(&s).await.map_err(|e| e.to_string())?;
        let st = |e: tonic::Status| describe_status(&e);
        match a.call {
            RaCall::Issue(i) => {
                let req = pb::IssueRequest {
                    request_id: i.request_id.clone(),
                    profile: i.profile.clone(),
                    issuer: i.issuer.clone().unwrap_or_default(),
                    csr: read_csr(&i.csr)?,
                    subject: subject_attrs(&i.subject)?,
                    sans: i.sans.iter().map(|x| san(x)).collect::<Result<_, _>>()?,
                    validity_years: i.validity,
                    approval: Some(i.approval.to_pb()),
                    validate_only: false,
                };
                let r = c.issue(req).await.map_err(st)?.into_inner();
                let chain = if i.chain { &r.chain[..] } else { &[] };
                let pem = pem_certificates(std::iter::once(&r.certificate).chain(chain));
                write_or_print(i.out.as_deref(), &pem)?;
                eprintln!(
                    "issued serial {}, valid {} to {}",
                    r.serial,
                    ts(&r.not_before),
                    ts(&r.not_after)
                );
            }
            RaCall::Renew(r) => {
                let req = pb::RenewRequest {
                    request_id: r.request_id.clone(),
                    serial: r.serial.clone(),
                    csr: match &r.csr {
                        Some(p) => read_csr(p)?,
                        None => Vec::new(),
                    },
                    validity_years: r.validity,
                    approval: Some(r.approval.to_pb()),
                    validate_only: false,
                };
                let resp = c.renew(req).await.map_err(st)?.into_inner();
                write_or_print(r.out.as_deref(), &pem_certificate(&resp.certificate))?;
                eprintln!(
                    "renewed {} as serial {}, valid {} to {}",
                    resp.renewed_from,
                    resp.serial,
                    ts(&resp.not_before),
                    ts(&resp.not_after)
                );
            }
            RaCall::Revoke {
                serial,
                reason,
                request_id,
                reported_at,
                comment,
            } => {
                let (_, code) = REASONS
                    .iter()
                    .find(|(n, _)| n.eq_ignore_ascii_case(&reason))
                    .ok_or_else(|| {
                        let names: Vec<&str> = REASONS.iter().map(|(n, _)| *n).collect();
                        format!("--reason {reason:?}: use one of {}", names.join(", "))
                    })?;
                let reported_at = match reported_at {
                    Some(t) => Some(timestamp(
                        parse_rfc3339(&t).map_err(|e| format!("--reported-at: {e}"))?,
                    )),
                    None => None,
                };
                let req = pb::RevokeRequest {
                    request_id,
                    serial: serial.clone(),
                    reason: *code as i32,
                    reported_at,
                    comment,
                };
                let r = c.revoke(req).await.map_err(st)?.into_inner();
                println!(
                    "{serial}: {}{} at {}",
                    status_name(r.status),
                    if r.already_revoked {
                        " (already revoked)"
                    } else {
                        ""
                    },
                    ts(&r.revoked_at)
                );
            }
            RaCall::ReleaseHold {
                serial,
                request_id,
                comment,
            } => {
                let r = c
                    .release_hold(pb::ReleaseHoldRequest {
                        request_id,
                        serial: serial.clone(),
                        comment,
                    })
                    .await
                    .map_err(st)?
                    .into_inner();
                println!(
                    "{serial}: {} (released at {})",
                    status_name(r.status),
                    ts(&r.released_at)
                );
            }
            RaCall::Get {
                serial,
                request_id,
                out,
            } => {
                let r = c
                    .get_certificate(pb::GetCertificateRequest {
                        serial: serial.unwrap_or_default(),
                        request_id: request_id.unwrap_or_default(),
                    })
                    .await
                    .map_err(st)?
                    .into_inner();
                println!("serial:       {}", r.serial);
                println!("subject:      {}", r.subject);
                println!("status:       {}", status_name(r.status));
                if r.status == pb::CertificateStatus::Revoked as i32 {
                    println!("reason:       {}", reason_name(r.reason));
                    println!("reported at:  {}", ts(&r.reported_at.or(r.revoked_at)));
                    println!("recorded at:  {}", ts(&r.revoked_at));
                    println!("published at: {}", ts(&r.first_published_at));
                    if !r.revocation_comment.is_empty() {
                        println!("comment:      {}", r.revocation_comment);
                    }
                }
                for e in &r.history {
                    println!(
                        "history:      {} {} by {} (request {}): reported {}, recorded {}, published {}{}",
                        event_name(e.kind),
                        if e.kind == pb::RevocationEventKind::Released as i32 {
                            String::new()
                        } else {
                            reason_name(e.reason)
                        },
                        e.actor,
                        e.request_id,
                        ts(&e.reported_at),
                        ts(&e.recorded_at),
                        ts(&e.first_published_at),
                        if e.comment.is_empty() {
                            String::new()
                        } else {
                            format!(": {}", e.comment)
                        }
                    );
                }
                println!("profile:      {}", r.profile);
                println!("issuer:       {}", r.issuer);
                println!("ra:           {} (request {})", r.ra, r.request_id);
                println!("not before:   {}", ts(&r.not_before));
                println!("not after:    {}", ts(&r.not_after));
                if !r.renewed_from.is_empty() {
                    println!("renewed from: {}", r.renewed_from);
                }
                if let Some(p) = out {
                    write_or_print(Some(&p), &pem_certificate(&r.certificate))?;
                }
            }
            RaCall::List {
                status,
                profile,
                ra,
                subject,
                expiring_before,
                updated_since,
                page_size,
            } => {
                let status = match status.as_deref() {
                    None => pb::CertificateStatus::Unspecified,
                    Some("valid") => pb::CertificateStatus::Valid,
                    Some("revoked") => pb::CertificateStatus::Revoked,
                    Some("pending") => pb::CertificateStatus::Pending,
                    Some(o) => {
                        return Err(format!("--status {o:?}: use valid, revoked or pending"));
                    }
                };
                let expiring_before = match expiring_before {
                    Some(t) => Some(timestamp(
                        parse_rfc3339(&t).map_err(|e| format!("--expiring-before: {e}"))?,
                    )),
                    None => None,
                };
                let updated_since = match updated_since {
                    Some(t) => Some(timestamp(
                        parse_rfc3339(&t).map_err(|e| format!("--updated-since: {e}"))?,
                    )),
                    None => None,
                };
                let mut token = String::new();
                let mut n = 0usize;
                loop {
                    let req = pb::ListCertificatesRequest {
                        status: status as i32,
                        profile: profile.clone().unwrap_or_default(),
                        ra: ra.clone().unwrap_or_default(),
                        subject_contains: subject.clone().unwrap_or_default(),
                        expiring_before,
                        page_size,
                        page_token: token.clone(),
                        updated_since,
                    };
                    let page = c.list_certificates(req).await.map_err(st)?.into_inner();
                    for s in &page.certificates {
                        n += 1;
                        println!(
                            "{}  {:8}  {:16} {:12} until {}  {}",
                            s.serial,
                            status_name(s.status),
                            s.profile,
                            s.ra,
                            ts(&s.not_after),
                            s.subject
                        );
                        if s.status == pb::CertificateStatus::Revoked as i32 {
                            println!(
                                "    {}: reported {}, recorded {}, published {}",
                                reason_name(s.reason),
                                ts(&s.reported_at.or(s.revoked_at)),
                                ts(&s.revoked_at),
                                ts(&s.first_published_at)
                            );
                        }
                    }
                    if page.next_page_token.is_empty() {
                        break;
                    }
                    token = page.next_page_token;
                }
                eprintln!("{n} certificate(s)");
            }
            RaCall::Chain { issuer, p7b } => {
                let r = c
                    .get_ca_chain(pb::GetCaChainRequest {
                        issuer: issuer.unwrap_or_default(),
                    })
                    .await
                    .map_err(st)?
                    .into_inner();
                let pem = pem_certificates(&r.certificates);
                print!("{pem}");
                if let Some(p) = p7b {
                    std::fs::write(&p, &r.p7b).map_err(|e| format!("{}: {e}", p.display()))?;
                    eprintln!("wrote {}", p.display());
                }
            }
        }
        Ok(())
    })
}
