//! Fixtures the SQLite store's unit tests share: an audit event, a store with one issuer, and
//! certificate records pending, issued and to be revoked.

use crate::audit::AuditEvent;
use crate::pki::RevocationReason;
use crate::store::Store;
use crate::store::certificates::{BeginOutcome, CertStatus, CertificateRecord};
use crate::store::keys::{CaKeyRecord, IssuerRecord};
use crate::store::revocation::RevokeRecord;
use crate::store::sqlite::db::SqliteStore;

pub(super) fn event(action: &str) -> AuditEvent {
    AuditEvent {
        actor: "test".into(),
        action: action.into(),
        object: "x".into(),
        request_digest: None,
        detail: "{}".into(),
    }
}

pub(super) async fn store_with_issuer() -> SqliteStore {
    let s = SqliteStore::open_in_memory().unwrap();
    s.record_ca_key(
        CaKeyRecord {
            label: "k".into(),
            key_type: "p256".into(),
            spki_der: vec![1],
            created_at: 1,
        },
        event("ceremony.key_generated"),
    )
    .await
    .unwrap();
    s.record_issuer(
        IssuerRecord {
            name: "ec".into(),
            parent: None,
            key_label: "k".into(),
            signature: "ecdsa-sha256".into(),
            serial: "01".into(),
            cert_der: vec![2],
            created_at: 1,
            family: "ec".into(),
            generation: 1,
        },
        event("ceremony.issuer_created"),
    )
    .await
    .unwrap();
    s
}

pub(super) fn pending(serial: &str, request_id: &str, digest: &str) -> CertificateRecord {
    CertificateRecord {
        serial: serial.into(),
        issuer: "ec".into(),
        ra: "ra-1".into(),
        request_id: request_id.into(),
        request_digest: digest.into(),
        profile: "server".into(),
        subject: "CN=x".into(),
        request_json: "{}".into(),
        csr_der: vec![3],
        tbs_der: vec![4],
        cert_der: None,
        status: CertStatus::Pending,
        not_before: 10,
        not_after: 20,
        created_at: 10,
        issued_at: None,
        renewed_from: None,
        revocation: None,
        updated_at: 0,
    }
}

pub(super) async fn issued(s: &SqliteStore, serial: &str, request_id: &str) -> CertificateRecord {
    let p = pending(serial, request_id, "d");
    assert!(matches!(
        s.begin_issuance(p).await.unwrap(),
        BeginOutcome::Started(_)
    ));
    s.complete_issuance(serial, &[9], 11, event("certificate.issued"))
        .await
        .unwrap()
}

pub(super) fn revocation(serial: &str, request_id: &str, digest: &str) -> RevokeRecord {
    RevokeRecord {
        serial: serial.into(),
        ra: "ra-1".into(),
        request_id: request_id.into(),
        request_digest: digest.into(),
        reason: RevocationReason::KeyCompromise,
        revoked_at: 100,
        reported_at: Some(90),
        comment: "token lost".into(),
    }
}
