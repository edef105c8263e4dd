//! CRLs in SQLite: cRLNumbers reserved per issuer, published CRLs, and the revocations a CRL
//! lists.

use rusqlite::{OptionalExtension, params};

use super::audit::append_audit_tx;
use super::db::SqliteStore;
use super::error::{is_constraint, unavailable};
use crate::audit::AuditEvent;
use crate::pki::RevocationReason;
use crate::store::crl::{CrlRecord, CrlRevocation};
use crate::store::error::StoreError;

pub(super) async fn next_crl_number(store: &SqliteStore, issuer: &str) -> Result<u64, StoreError> {
    const CTX: &str = "reserving a CRL number";
    let issuer = issuer.to_owned();
    store
        .run(CTX, move |conn| {
            let n: i64 = conn
                .query_row(
                    "INSERT INTO crl_numbers (issuer, last) VALUES (?1, 1) \
                 ON CONFLICT (issuer) DO UPDATE SET last = last + 1 RETURNING last",
                    [&issuer],
                    |r| r.get(0),
                )
                .map_err(unavailable(CTX))?;
            u64::try_from(n).map_err(|_| StoreError::Corrupt(format!("CRL number {n}")))
        })
        .await
}

pub(super) async fn record_crl(
    store: &SqliteStore,
    crl: CrlRecord,
    serials: Vec<String>,
    audit: AuditEvent,
) -> Result<(), StoreError> {
    const CTX: &str = "recording a CRL";
    store
        .run(CTX, move |conn| {
            let number = i64::try_from(crl.number)
                .map_err(|_| StoreError::Corrupt(format!("CRL number {}", crl.number)))?;
            let reserved: Option<i64> = conn
                .query_row(
                    "SELECT last FROM crl_numbers WHERE issuer = ?1",
                    [&crl.issuer],
                    |r| r.get(0),
                )
                .optional()
                .map_err(unavailable(CTX))?;
            if reserved.is_none_or(|last| number > last) {
                return Err(StoreError::NotFound(format!(
                    "CRL number {number} of {} was never reserved",
                    crl.issuer
                )));
            }
            conn.execute(
                "INSERT INTO crls (issuer, number, this_update, next_update, der) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    crl.issuer,
                    number,
                    crl.this_update,
                    crl.next_update,
                    crl.der
                ],
            )
            .map_err(|e| {
                if is_constraint(&e) {
                    StoreError::Duplicate {
                        what: format!("CRL number {number} of {}", crl.issuer),
                    }
                } else {
                    unavailable(CTX)(e)
                }
            })?;
            // Only revocations not yet published are marked: they are read from the small
            // partial index of unpublished revocations, not looked up once per listed serial
            // (a CRL lists every revocation of the issuer; few are new).
            let listed: std::collections::HashSet<&str> =
                serials.iter().map(String::as_str).collect();
            let fresh: Vec<String> = conn
                .prepare_cached(
                    "SELECT serial FROM certificates INDEXED BY certificates_revoked_unpublished \
                     WHERE status = 'revoked' AND crl_published_at IS NULL AND revoked_at <= ?1 \
                     AND issuer = ?2",
                )
                .and_then(|mut s| {
                    s.query_map(params![crl.this_update, crl.issuer], |r| r.get(0))?
                        .collect::<rusqlite::Result<_>>()
                })
                .map_err(unavailable(CTX))?;
            let mut mark = conn
                .prepare_cached(
                    "UPDATE certificates SET crl_published_at = ?1, updated_at = ?1 \
                 WHERE serial = ?2 AND issuer = ?3 AND crl_published_at IS NULL \
                 AND status = 'revoked' AND revoked_at <= ?1",
                )
                .map_err(unavailable(CTX))?;
            for serial in fresh.iter().filter(|s| listed.contains(s.as_str())) {
                mark.execute(params![crl.this_update, serial, crl.issuer])
                    .map_err(unavailable(CTX))?;
            }
            append_audit_tx(conn, &audit)?;
            Ok(())
        })
        .await
}

pub(super) async fn latest_crl(
    store: &SqliteStore,
    issuer: &str,
) -> Result<Option<CrlRecord>, StoreError> {
    const CTX: &str = "reading the latest CRL";
    let issuer = issuer.to_owned();
    store
        .run(CTX, move |conn| {
            conn.query_row(
                "SELECT issuer, number, this_update, next_update, der FROM crls \
             WHERE issuer = ?1 ORDER BY number DESC LIMIT 1",
                [&issuer],
                |r| {
                    Ok(CrlRecord {
                        issuer: r.get(0)?,
                        number: r.get::<_, i64>(1)?.max(0) as u64,
                        this_update: r.get(2)?,
                        next_update: r.get(3)?,
                        der: r.get(4)?,
                    })
                },
            )
            .optional()
            .map_err(unavailable(CTX))
        })
        .await
}

pub(super) async fn revoked_for_crl(
    store: &SqliteStore,
    issuer: &str,
    at: i64,
) -> Result<Vec<CrlRevocation>, StoreError> {
    const CTX: &str = "listing revocations for a CRL";
    let issuer = issuer.to_owned();
    store
        .run(CTX, move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT serial, revoked_at, revocation_reason, revocation_reported_at \
                 FROM certificates \
                 WHERE issuer = ?1 AND status = 'revoked' AND not_after >= ?2 \
                 ORDER BY serial",
                )
                .map_err(unavailable(CTX))?;
            let rows = stmt
                .query_map(params![issuer, at], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Option<i64>>(1)?,
                        r.get::<_, Option<String>>(2)?,
                        r.get::<_, Option<i64>>(3)?,
                    ))
                })
                .map_err(unavailable(CTX))?;
            let mut out = Vec::new();
            for row in rows {
                let (serial, revoked_at, reason, reported_at) = row.map_err(unavailable(CTX))?;
                let (Some(revoked_at), Some(reason)) = (revoked_at, reason) else {
                    return Err(StoreError::Corrupt(format!(
                        "certificate {serial} is revoked without a revocation time and reason"
                    )));
                };
                let reason = reason
                    .parse::<RevocationReason>()
                    .map_err(|e| StoreError::Corrupt(format!("certificate {serial}: {e}")))?;
                out.push(CrlRevocation {
                    serial,
                    revoked_at,
                    reason,
                    reported_at,
                });
            }
            Ok(out)
        })
        .await
}

#[cfg(test)]
mod tests {
    use crate::pki::RevocationReason;
    use crate::store::Store;
    use crate::store::crl::CrlRecord;
    use crate::store::revocation::RevokeRecord;
    use crate::store::sqlite::error::unavailable;
    use crate::store::sqlite::test_support::{event, pending, store_with_issuer};

    #[tokio::test]
    async fn crl_numbers_grow_are_never_reused_and_listed_revocations_get_published_at() {
        let s = store_with_issuer().await;
        for (serial, id) in [("aa", "r1"), ("bb", "r2")] {
            s.begin_issuance(pending(serial, id, id)).await.unwrap();
            s.complete_issuance(serial, &[9], 11, event("certificate.issued"))
                .await
                .unwrap();
        }
        let mut rev = RevokeRecord {
            serial: "aa".into(),
            ra: "ra-1".into(),
            request_id: "x1".into(),
            request_digest: "x1".into(),
            reason: RevocationReason::KeyCompromise,
            revoked_at: 12,
            reported_at: Some(11),
            comment: String::new(),
        };
        s.revoke(rev.clone(), event("certificate.revoked"))
            .await
            .unwrap();
        let listed = s.revoked_for_crl("ec", 15).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].serial, "aa");
        assert_eq!(listed[0].reported_at, Some(11));
        // Expired certificates leave the CRL.
        assert!(s.revoked_for_crl("ec", 21).await.unwrap().is_empty());
        assert_eq!(s.next_crl_number("ec").await.unwrap(), 1);
        // Number 1 is never recorded (as if signing failed); 2 is.
        let n = s.next_crl_number("ec").await.unwrap();
        assert_eq!(n, 2);
        let crl = |number| CrlRecord {
            issuer: "ec".into(),
            number,
            this_update: 13,
            next_update: 99,
            der: vec![1, 2],
        };
        s.record_crl(crl(2), vec!["aa".into()], event("crl.signed"))
            .await
            .unwrap();
        assert!(
            s.record_crl(crl(2), vec![], event("crl.signed"))
                .await
                .is_err()
        );
        assert!(
            s.record_crl(crl(3), vec![], event("crl.signed"))
                .await
                .is_err(),
            "never reserved"
        );
        assert_eq!(s.latest_crl("ec").await.unwrap(), Some(crl(2)));
        assert_eq!(s.next_crl_number("ec").await.unwrap(), 3);
        let published = |serial: &'static str| {
            s.run("test", move |c| {
                c.query_row(
                    "SELECT crl_published_at FROM certificates WHERE serial = ?1",
                    [serial],
                    |r| r.get::<_, Option<i64>>(0),
                )
                .map_err(unavailable("test"))
            })
        };
        assert_eq!(published("aa").await.unwrap(), Some(13));
        assert_eq!(published("bb").await.unwrap(), None);
        rev.serial = "bb".into();
        rev.request_id = "x2".into();
        s.revoke(rev, event("certificate.revoked")).await.unwrap();
        let mut later = crl(3);
        later.this_update = 14;
        s.record_crl(later, vec!["aa".into(), "bb".into()], event("crl.signed"))
            .await
            .unwrap();
        // The first appearance is kept.
        assert_eq!(published("aa").await.unwrap(), Some(13));
        assert_eq!(published("bb").await.unwrap(), Some(14));
    }
}
