//! The operator's local commands on the CA's own HSM and store: `signet issue`, `signet
//! revoke` and `signet crl`, each through the same authority paths as the RA API.

use std::sync::Arc;

use signet::ca::crl::CrlPublisher;
use signet::ca::{Approval, Authority, CaError, IssueRequest};
use signet::config::Config;
use signet::pki::pkcs7::pem_certificates;
use signet::pki::{San, SubjectSpec};

use super::common::{describe, open_parts, read_csr, runtime};
use super::ra::IssueArgs;

/// `signet revoke`: what the operator revokes, why, and since when.
#[derive(clap::Args)]
pub(crate) struct RevokeArgs {
    /// Serial number (hex, as `openssl x509 -serial` prints it or lower case).
    #[arg(long)]
    pub(crate) serial: String,
    /// RFC 5280 reason: unspecified, keyCompromise, cACompromise, affiliationChanged,
    /// superseded, cessationOfOperation, certificateHold, privilegeWithdrawn, aACompromise.
    #[arg(long)]
    reason: String,
    /// When the problem was reported or the key became unsafe (RFC 3339); the CRL entry's
    /// invalidity date. Default: none given (the revocation time stands).
    #[arg(long)]
    reported_at: Option<String>,
    /// Request id; running again with the same id changes nothing. Default: a fresh one.
    #[arg(long)]
    request_id: Option<String>,
    /// A note kept with the revocation.
    #[arg(long, default_value = "")]
    comment: String,
    /// Also publish fresh CRLs of every issuer now (when no daemon runs to do it).
    #[arg(long)]
    publish: bool,
}

/// `signet issue`: issue one certificate locally as the operator; PEM to `--out` or stdout.
pub(crate) fn issue(cfg: Config, args: &IssueArgs) -> Result<(), String> {
    let parts = open_parts(cfg)?;
    let rt = runtime()?;
    let req = issue_request(args)?;
    let issued = rt
        .block_on(async {
            let ca = Authority::open(&parts.cfg, parts.hsm.clone(), parts.store.clone()).await?;
            ca.issue(signet::audit::ACTOR_OPERATOR, req).await
        })
        .map_err(describe)?;
    parts.hsm.close();
    let chain = if args.chain { &issued.chain[..] } else { &[] };
    let pem = pem_certificates(std::iter::once(&issued.cert_der).chain(chain));
    match &args.out {
        Some(p) => std::fs::write(p, pem).map_err(|e| format!("{}: {e}", p.display()))?,
        None => print!("{pem}"),
    }
    eprintln!(
        "issued serial {} ({} by {}), valid until {}",
        issued.record.serial, issued.record.profile, issued.record.issuer, issued.record.not_after
    );
    Ok(())
}

/// `signet crl`: publish fresh CRLs of every issuer, or of one, and print them.
pub(crate) fn crl(cfg: Config, issuer: Option<&str>) -> Result<(), String> {
    let parts = open_parts(cfg)?;
    let rt = runtime()?;
    let published = rt.block_on(async {
        let ca =
            Arc::new(Authority::open(&parts.cfg, parts.hsm.clone(), parts.store.clone()).await?);
        let publisher = CrlPublisher::new(ca, &parts.cfg.crl);
        match issuer {
            Some(name) => publisher.publish(name).await.map(|p| vec![p]),
            None => publisher.publish_all().await,
        }
    });
    parts.hsm.close();
    print_published(&published.map_err(describe)?);
    Ok(())
}

/// `signet revoke`: revoke through the authority's one revocation path as `operator`, print
/// the outcome, and publish CRLs when asked.
pub(crate) fn revoke(cfg: Config, args: &RevokeArgs) -> Result<(), String> {
    let reason: signet::pki::RevocationReason =
        args.reason.parse().map_err(|e| format!("--reason: {e}"))?;
    let reported_at = args
        .reported_at
        .as_deref()
        .map(|t| signet::api::client::parse_rfc3339(t).map_err(|e| format!("--reported-at: {e}")))
        .transpose()?;
    let request_id = match &args.request_id {
        Some(id) => id.clone(),
        None => format!(
            "operator-revoke-{}",
            signet::pki::serial::serial_hex(&signet::pki::serial::random_serial())
        ),
    };
    let parts = open_parts(cfg)?;
    let rt = runtime()?;
    let result = rt.block_on(async {
        let ca =
            Arc::new(Authority::open(&parts.cfg, parts.hsm.clone(), parts.store.clone()).await?);
        let revoked = ca
            .revoke(
                signet::audit::ACTOR_OPERATOR,
                signet::ca::RevokeRequest {
                    request_id: request_id.clone(),
                    serial: args.serial.clone(),
                    reason,
                    reported_at,
                    comment: args.comment.clone(),
                },
            )
            .await?;
        let published = if args.publish {
            CrlPublisher::new(ca, &parts.cfg.crl).publish_all().await?
        } else {
            Vec::new()
        };
        Ok::<_, CaError>((revoked, published))
    });
    parts.hsm.close();
    let (revoked, published) = result.map_err(describe)?;
    let rev = revoked.record.revocation.as_ref();
    println!(
        "{}: {} ({}) at {} by {}, request {request_id}{}",
        revoked.record.serial,
        if rev.is_some_and(|r| r.reason == signet::pki::RevocationReason::CertificateHold) {
            "on hold"
        } else {
            "revoked"
        },
        rev.map_or_else(|| "-".to_owned(), |r| r.reason.to_string()),
        rev.map_or_else(|| "-".to_owned(), |r| signet::ca::rfc3339(r.revoked_at)),
        rev.map_or("-", |r| r.revoked_by.as_str()),
        if revoked.already_revoked {
            " (already revoked before; nothing changed)"
        } else {
            ""
        },
    );
    if published.is_empty() {
        println!(
            "a running daemon publishes it within {} s ([crl] lag_seconds); `signet crl` publishes now",
            parts.cfg.crl.lag_seconds
        );
    }
    print_published(&published);
    Ok(())
}

pub(crate) fn print_published(published: &[signet::ca::crl::PublishedCrl]) {
    for p in published {
        println!(
            "{}: CRL number {}, thisUpdate {}, nextUpdate {}, {} entries",
            p.issuer,
            p.number,
            signet::ca::rfc3339(p.this_update),
            signet::ca::rfc3339(p.next_update),
            p.entries
        );
    }
}

/// The domain request `signet issue`'s flags describe.
fn issue_request(a: &IssueArgs) -> Result<IssueRequest, String> {
    let subject = SubjectSpec::parse(&a.subject).map_err(|e| format!("invalid request: {e}"))?;
    let sans = a
        .sans
        .iter()
        .map(|s| s.parse::<San>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("invalid request: {e}"))?;
    Ok(IssueRequest {
        request_id: a.request_id.clone(),
        profile: a.profile.clone(),
        issuer: a.issuer.clone(),
        csr: read_csr(&a.csr)?,
        subject,
        sans,
        validity_years: a.validity,
        approval: Approval {
            officer: a.approval.officer.clone(),
            ra_reference: a.approval.ra_reference.clone(),
            agreement_version: a.approval.agreement_version.clone(),
        },
    })
}
