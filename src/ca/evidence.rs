//! Evidence bundles (`signet audit evidence`): everything a third party needs to check, with
//! OpenSSL alone, that one certificate was issued on an RA's approved request and recorded in
//! the tamper-evident audit log: the request and approval, the CSR, the certificate and its
//! chain, the audit entries from the first one about the certificate to a signed checkpoint
//! (each as the exact text its hash is taken over), the checkpoint and its signature, the
//! audit key's certificate, and a README.txt with the commands to run.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use der::Decode;

use super::keys;
use super::{Authority, CaError};
use crate::audit::{AuditEntry, Checkpoint};
use crate::pki::verify::key_type_of;
use crate::pki::{KeyType, pkcs7};

/// What a bundle holds.
#[derive(Clone, Debug)]
pub struct Bundle {
    /// The directory written.
    pub dir: PathBuf,
    /// The first and last audit entries included.
    pub entries: (i64, i64),
    /// The checkpoint that covers them.
    pub checkpoint_seq: i64,
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), CaError> {
    let path = dir.join(name);
    std::fs::write(&path, bytes)
        .map_err(|e| CaError::FailedPrecondition(format!("cannot write {}: {e}", path.display())))
}

/// Write the evidence bundle of certificate `serial` into `out` (created; must be empty or
/// absent).
pub async fn write_bundle(
    authority: &Authority,
    serial: &str,
    out: &Path,
) -> Result<Bundle, CaError> {
    let store = authority.store();
    let rec = authority.certificate(serial).await?;
    let serial = rec.serial.clone();
    let cert_der = rec
        .cert_der
        .clone()
        .ok_or_else(|| CaError::Internal(format!("certificate {serial} has no DER")))?;
    let first = store.first_audit_seq_for(&serial).await?.ok_or_else(|| {
        CaError::FailedPrecondition(format!("the audit log has no entry about {serial}"))
    })?;
    // Every entry from the first about the certificate to the newest.
    let mut entries: Vec<AuditEntry> = Vec::new();
    let mut from = first;
    loop {
        let page = store.audit_entries(from, super::checkpoint::PAGE).await?;
        let Some(last) = page.last() else { break };
        from = last.seq + 1;
        entries.extend(page);
    }
    let last_about = entries
        .iter()
        .rev()
        .find(|e| e.event.object == serial)
        .map(|e| e.seq)
        .unwrap_or(first);
    let checkpoints = store.checkpoints().await?;
    let Some(cp) = checkpoints.into_iter().find(|c| c.seq >= last_about) else {
        return Err(CaError::FailedPrecondition(format!(
            "no signed checkpoint covers audit entry {last_about} about {serial} yet; run `signet audit checkpoint` (or wait for the daemon's next one) and ask again"
        )));
    };
    entries.retain(|e| e.seq <= cp.seq);
    if entries.last().map(|e| e.seq) != Some(cp.seq) {
        return Err(CaError::Internal(format!(
            "checkpoint {} names an entry that is not in the log",
            cp.seq
        )));
    }
    let (audit_cert, audit_chain, audit_key_type) = audit_certificate(authority, &cp).await?;

    std::fs::create_dir_all(out.join("entries")).map_err(|e| {
        CaError::FailedPrecondition(format!("cannot create {}: {e}", out.display()))
    })?;
    if std::fs::read_dir(out.join("entries"))
        .map(|mut d| d.next().is_some())
        .unwrap_or(false)
    {
        return Err(CaError::FailedPrecondition(format!(
            "{} already holds a bundle; give an empty directory",
            out.display()
        )));
    }

    let chain = authority.chain(&rec.issuer);
    let (root, untrusted) = chain
        .split_last()
        .ok_or_else(|| CaError::Internal(format!("issuer {} has no chain", rec.issuer)))?;
    write(
        out,
        "certificate.pem",
        pkcs7::pem_certificate(&cert_der).as_bytes(),
    )?;
    write(
        out,
        "chain.pem",
        pkcs7::pem_certificates(untrusted).as_bytes(),
    )?;
    write(out, "root.pem", pkcs7::pem_certificate(root).as_bytes())?;
    let is_csr = x509_cert::request::CertReq::from_der(&rec.csr_der).is_ok();
    if is_csr {
        write(
            out,
            "csr.pem",
            pkcs7::pem("CERTIFICATE REQUEST", &rec.csr_der).as_bytes(),
        )?;
    }
    let request: serde_json::Value =
        serde_json::from_str(&rec.request_json).unwrap_or(serde_json::Value::Null);
    let request_doc = serde_json::json!({
        "serial": rec.serial,
        "issuer": rec.issuer,
        "profile": rec.profile,
        "subject": rec.subject,
        "ra": rec.ra,
        "request_id": rec.request_id,
        "request_digest": rec.request_digest,
        "request": request,
        "recorded_at": super::rfc3339(rec.created_at),
        "issued_at": rec.issued_at.map(super::rfc3339),
        "renewed_from": rec.renewed_from,
    });
    let pretty =
        serde_json::to_string_pretty(&request_doc).map_err(|e| CaError::Internal(e.to_string()))?;
    write(out, "request.json", format!("{pretty}\n").as_bytes())?;
    for e in &entries {
        write(
            out,
            &format!("entries/{:010}.txt", e.seq),
            e.text().as_bytes(),
        )?;
    }
    write(out, "checkpoint.txt", cp.text().as_bytes())?;
    write(out, "checkpoint.sig", &cp.signature)?;
    write(
        out,
        "audit-cert.pem",
        pkcs7::pem_certificate(&audit_cert).as_bytes(),
    )?;
    write(
        out,
        "audit-chain.pem",
        pkcs7::pem_certificates(&audit_chain).as_bytes(),
    )?;

    let digest = match audit_key_type {
        KeyType::P384 => "-sha384",
        _ => "-sha256",
    };
    let about: Vec<String> = entries
        .iter()
        .filter(|e| e.event.object == serial)
        .map(|e| format!("{:010} ({})", e.seq, e.event.action))
        .collect();
    let readme = readme(
        &rec.serial,
        &rec.ra,
        is_csr,
        digest,
        (first, cp.seq),
        &about,
    );
    write(out, "README.txt", readme.as_bytes())?;
    Ok(Bundle {
        dir: out.to_path_buf(),
        entries: (first, cp.seq),
        checkpoint_seq: cp.seq,
    })
}

/// The audit key's certificate (by the key that signed `cp`) and its chain below the root.
async fn audit_certificate(
    authority: &Authority,
    cp: &Checkpoint,
) -> Result<(Vec<u8>, Vec<Vec<u8>>, KeyType), CaError> {
    let spki = super::checkpoint::recorded_key(authority.store().as_ref(), &cp.key_label).await?;
    // Found by the key that signed (its request id is derived from that key); the reader
    // checks it again with `openssl dgst -verify` against the certificate's key.
    let (der, _, issuer) =
        keys::service_certificate(authority.store(), keys::AUDIT, &spki, &cp.key_label).await?;
    let mut chain = authority.chain(&issuer);
    chain.pop();
    Ok((der, chain, key_type_of(&spki, "audit key")?))
}

fn readme(
    serial: &str,
    ra: &str,
    is_csr: bool,
    digest: &str,
    (first, last): (i64, i64),
    about: &[String],
) -> String {
    let mut t = String::new();
    let _ = write!(
        t,
        "Evidence bundle for certificate {serial}
=============================================

Made by `signet audit evidence`. Every check below uses OpenSSL and a POSIX shell only; run
the lines that start with `$` in this directory, in order. Each must succeed.

Files
-----
request.json     what the RA ({ra}) asked for and its approval (officer, RA reference,
                 subscriber-agreement version accepted), as the CA recorded it
{csr}certificate.pem  the certificate
chain.pem        the issuing CA certificate(s) between it and the root
root.pem         the CA's root certificate (compare it with the one the CA publishes)
entries/         audit entries {first} to {last}, one file each: the exact text whose
                 SHA-256 is the entry's hash; each names the previous entry's hash
checkpoint.txt   the signed statement that the log up to entry {last} ends in that hash
checkpoint.sig   its ECDSA signature (DER) by the CA's audit key, which lives in the HSM
audit-cert.pem   the audit key's certificate, issued by the CA
audit-chain.pem  the CA certificate(s) between it and the root

1. The certificate chains to the root:

  $ openssl verify -CAfile root.pem -untrusted chain.pem certificate.pem
",
        csr = if is_csr {
            "csr.pem          the subscriber's certificate request (PKCS#10)\n"
        } else {
            ""
        },
    );
    if is_csr {
        t.push_str(
            "
2. The request is signed by the subscriber's key, and the certificate is for that key:

  $ openssl req -in csr.pem -noout -verify
  $ openssl req -in csr.pem -noout -pubkey > csr-key.pem && openssl x509 -in certificate.pem -noout -pubkey > cert-key.pem && cmp csr-key.pem cert-key.pem && echo 'CSR key = certificate key'
",
        );
    }
    let _ = write!(
        t,
        "
3. The audit key's certificate chains to the same root; take its public key:

  $ openssl verify -CAfile root.pem -untrusted audit-chain.pem audit-cert.pem
  $ openssl x509 -in audit-cert.pem -noout -pubkey > audit-key.pem

4. The checkpoint is signed by the audit key (prints `Verified OK`):

  $ openssl dgst {digest} -verify audit-key.pem -signature checkpoint.sig checkpoint.txt

5. The entries form an unbroken chain ending in the checkpoint's hash: the SHA-256 of
   each entry file is the `prev_hash` of the next, and that of the last is the checkpoint's
   `hash` (prints `audit chain OK`):

  $ prev=''; for f in entries/*.txt; do if [ -n \"$prev\" ] && ! grep -qx \"prev_hash: $prev\" \"$f\"; then echo \"chain broken at $f\"; exit 1; fi; prev=$(openssl dgst -sha256 -r \"$f\" | cut -d' ' -f1); done; grep -qx \"hash: $prev\" checkpoint.txt && echo 'audit chain OK'

6. The entries about this certificate (its object is the serial {serial}):

  $ grep -l 'object: \"{serial}\"' entries/*.txt

   They are: {about}.
   The `certificate.issued` (or `certificate.renewed`) entry names the RA as actor, the
   request id, profile and subject in its detail, and the SHA-256 of the request in
   `request_digest`, matching request.json.
",
        about = about.join(", "),
    );
    t
}
