//! Revocation, hold and release in SQLite: idempotent requests, the event history of each
//! certificate, and the watch the CRL publisher polls.

use rusqlite::{Connection, OptionalExtension, params};

use super::audit::append_audit_tx;
use super::certificates::query_cert;
use super::db::SqliteStore;
use super::error::unavailable;
use crate::audit::AuditEvent;
use crate::clock::unix_now as now;
use crate::pki::RevocationReason;
use crate::store::certificates::CertStatus;
use crate::store::error::StoreError;
use crate::store::revocation::{
    ReleaseOutcome, ReleaseRecord, RevocationEvent, RevocationEventKind, RevocationWatch,
    RevokeOutcome, RevokeRecord, UnpublishedRevocation,
};

/// Append a revocation event inside the caller's transaction.
#[allow(clippy::too_many_arguments)]
fn append_event(
    conn: &Connection,
    serial: &str,
    kind: RevocationEventKind,
    reason: Option<RevocationReason>,
    actor: &str,
    request_id: &str,
    recorded_at: i64,
    reported_at: Option<i64>,
    comment: &str,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO revocation_events (serial, kind, reason, actor, request_id, recorded_at, \
         reported_at, published_at, comment) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, NULL, ?8)",
        params![
            serial,
            kind.as_str(),
            reason.map(RevocationReason::name),
            actor,
            request_id,
            recorded_at,
            reported_at,
            comment
        ],
    )
    .map_err(unavailable("recording a revocation event"))?;
    Ok(())
}

/// A hold is ending (released, or revoked for good): keep in its event when a CRL first
/// showed it, before the certificate's columns move on.
fn close_hold(conn: &Connection, serial: &str) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE revocation_events SET published_at = \
             (SELECT crl_published_at FROM certificates WHERE serial = ?1) \
         WHERE seq = (SELECT MAX(seq) FROM revocation_events WHERE serial = ?1 AND kind = 'held')",
        [serial],
    )
    .map_err(unavailable("closing a hold"))?;
    Ok(())
}

pub(super) async fn revoke(
    store: &SqliteStore,
    rev: RevokeRecord,
    audit: AuditEvent,
) -> Result<RevokeOutcome, StoreError> {
    const CTX: &str = "revoking a certificate";
    store.run(CTX, move |conn| {
        let tx: &Connection = conn;
        let seen: Option<(String, String, String)> = tx
            .query_row(
                "SELECT serial, request_digest, outcome FROM revocation_requests \
                 WHERE ra = ?1 AND request_id = ?2",
                params![rev.ra, rev.request_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .optional()
            .map_err(unavailable(CTX))?;
        if let Some((serial, digest, outcome)) = seen {
            if digest != rev.request_digest {
                return Ok(RevokeOutcome::Conflict { serial });
            }
            let rec = query_cert(tx, "serial = ?1", [&serial])?.ok_or_else(|| {
                StoreError::Corrupt(format!("revoked certificate {serial} vanished"))
            })?;
            return match outcome.as_str() {
                "revoked" => Ok(RevokeOutcome::Revoked(rec)),
                "already_revoked" => Ok(RevokeOutcome::AlreadyRevoked(rec)),
                other => Err(StoreError::Corrupt(format!(
                    "unknown revocation outcome {other:?}"
                ))),
            };
        }
        let Some(rec) = query_cert(tx, "serial = ?1", [&rev.serial])? else {
            return Ok(RevokeOutcome::NotFound);
        };
        let held = rec
            .revocation
            .as_ref()
            .is_some_and(|r| r.reason == RevocationReason::CertificateHold);
        let outcome = match rec.status {
            // Nothing to record: a retry is answered from the certificate's state then.
            CertStatus::Pending => return Ok(RevokeOutcome::NotIssued),
            // A hold may become final; a hold again, or any final revocation, is as it was.
            CertStatus::Revoked if !held || rev.reason == RevocationReason::CertificateHold => {
                "already_revoked"
            }
            CertStatus::Revoked | CertStatus::Valid => {
                if held {
                    close_hold(tx, &rev.serial)?;
                }
                // crl_published_at starts afresh: the final entry has yet to be published.
                let n = tx
                    .execute(
                        "UPDATE certificates SET status = 'revoked', revoked_at = ?1, \
                         revocation_reason = ?2, revocation_reported_at = ?3, \
                         revocation_comment = ?4, revoked_by = ?5, crl_published_at = NULL, \
                         updated_at = ?1 WHERE serial = ?6 AND status = ?7",
                        params![
                            rev.revoked_at,
                            rev.reason.name(),
                            rev.reported_at,
                            rev.comment,
                            rev.ra,
                            rev.serial,
                            rec.status.as_str()
                        ],
                    )
                    .map_err(unavailable(CTX))?;
                if n != 1 {
                    return Err(StoreError::Corrupt(format!(
                        "certificate {} changed inside a transaction",
                        rev.serial
                    )));
                }
                let kind = if rev.reason == RevocationReason::CertificateHold {
                    RevocationEventKind::Held
                } else {
                    RevocationEventKind::Revoked
                };
                append_event(
                    tx,
                    &rev.serial,
                    kind,
                    Some(rev.reason),
                    &rev.ra,
                    &rev.request_id,
                    rev.revoked_at,
                    rev.reported_at,
                    &rev.comment,
                )?;
                append_audit_tx(tx, &audit)?;
                "revoked"
            }
        };
        tx.execute(
            "INSERT INTO revocation_requests (ra, request_id, serial, request_digest, outcome, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                rev.ra,
                rev.request_id,
                rev.serial,
                rev.request_digest,
                outcome,
                now()
            ],
        )
        .map_err(unavailable(CTX))?;
        let rec = query_cert(tx, "serial = ?1", [&rev.serial])?.ok_or_else(|| {
            StoreError::Corrupt(format!("certificate {} vanished", rev.serial))
        })?;
        Ok(if outcome == "revoked" {
            RevokeOutcome::Revoked(rec)
        } else {
            RevokeOutcome::AlreadyRevoked(rec)
        })
    })
    .await
}

pub(super) async fn release_hold(
    store: &SqliteStore,
    rel: ReleaseRecord,
    audit: AuditEvent,
) -> Result<ReleaseOutcome, StoreError> {
    const CTX: &str = "releasing a hold";
    store.run(CTX, move |conn| {
        let tx: &Connection = conn;
        let seen: Option<(String, String)> = tx
            .query_row(
                "SELECT serial, request_digest FROM release_requests \
                 WHERE ra = ?1 AND request_id = ?2",
                params![rel.ra, rel.request_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(unavailable(CTX))?;
        if let Some((serial, digest)) = seen {
            if digest != rel.request_digest {
                return Ok(ReleaseOutcome::Conflict { serial });
            }
            let rec = query_cert(tx, "serial = ?1", [&serial])?.ok_or_else(|| {
                StoreError::Corrupt(format!("released certificate {serial} vanished"))
            })?;
            return Ok(ReleaseOutcome::Released(rec));
        }
        let Some(rec) = query_cert(tx, "serial = ?1", [&rel.serial])? else {
            return Ok(ReleaseOutcome::NotFound);
        };
        let held = rec.status == CertStatus::Revoked
            && rec
                .revocation
                .as_ref()
                .is_some_and(|r| r.reason == RevocationReason::CertificateHold);
        if !held {
            return Ok(ReleaseOutcome::NotHeld(rec));
        }
        close_hold(tx, &rel.serial)?;
        let n = tx
            .execute(
                "UPDATE certificates SET status = 'valid', revoked_at = NULL, \
                 revocation_reason = NULL, revocation_reported_at = NULL, \
                 revocation_comment = NULL, revoked_by = NULL, crl_published_at = NULL, \
                 updated_at = ?2 \
                 WHERE serial = ?1 AND status = 'revoked' AND revocation_reason = 'certificateHold'",
                params![&rel.serial, rel.released_at],
            )
            .map_err(unavailable(CTX))?;
        if n != 1 {
            return Err(StoreError::Corrupt(format!(
                "certificate {} changed inside a transaction",
                rel.serial
            )));
        }
        append_event(
            tx,
            &rel.serial,
            RevocationEventKind::Released,
            None,
            &rel.ra,
            &rel.request_id,
            rel.released_at,
            None,
            &rel.comment,
        )?;
        append_audit_tx(tx, &audit)?;
        tx.execute(
            "INSERT INTO release_requests (ra, request_id, serial, request_digest, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![rel.ra, rel.request_id, rel.serial, rel.request_digest, now()],
        )
        .map_err(unavailable(CTX))?;
        let rec = query_cert(tx, "serial = ?1", [&rel.serial])?.ok_or_else(|| {
            StoreError::Corrupt(format!("certificate {} vanished", rel.serial))
        })?;
        Ok(ReleaseOutcome::Released(rec))
    })
    .await
}

pub(super) async fn revocation_history(
    store: &SqliteStore,
    serial: &str,
) -> Result<Vec<RevocationEvent>, StoreError> {
    const CTX: &str = "reading a revocation history";
    let serial = serial.to_owned();
    store
        .run(CTX, move |conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT kind, reason, actor, request_id, recorded_at, reported_at, \
                 published_at, comment FROM revocation_events WHERE serial = ?1 ORDER BY seq",
                )
                .map_err(unavailable(CTX))?;
            let rows = stmt
                .query_map([&serial], |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, Option<String>>(1)?,
                        RevocationEvent {
                            kind: RevocationEventKind::Released,
                            reason: None,
                            actor: r.get(2)?,
                            request_id: r.get(3)?,
                            recorded_at: r.get(4)?,
                            reported_at: r.get(5)?,
                            published_at: r.get(6)?,
                            comment: r.get(7)?,
                        },
                    ))
                })
                .map_err(unavailable(CTX))?;
            let mut out = Vec::new();
            for row in rows {
                let (kind, reason, mut event) = row.map_err(unavailable(CTX))?;
                event.kind = RevocationEventKind::parse(&kind)?;
                event.reason = reason
                    .map(|r| r.parse::<RevocationReason>())
                    .transpose()
                    .map_err(|e| StoreError::Corrupt(format!("certificate {serial}: {e}")))?;
                out.push(event);
            }
            // The certificate's current revocation is published as its columns say.
            if let (Some(last), Some(rec)) =
                (out.last_mut(), query_cert(conn, "serial = ?1", [&serial])?)
                && last.kind != RevocationEventKind::Released
                && last.published_at.is_none()
            {
                last.published_at = rec.revocation.and_then(|r| r.first_published_at);
            }
            Ok(out)
        })
        .await
}

pub(super) async fn revocation_watch(
    store: &SqliteStore,
    at: i64,
) -> Result<RevocationWatch, StoreError> {
    const CTX: &str = "watching for revocations";
    store
        .run(CTX, move |conn| {
            let last_event: i64 = conn
                .query_row(
                    "SELECT COALESCE(MAX(seq), 0) FROM revocation_events",
                    [],
                    |r| r.get(0),
                )
                .map_err(unavailable(CTX))?;
            let mut stmt = conn
                .prepare_cached(
                    "SELECT serial, issuer, revoked_at FROM certificates \
                 WHERE status = 'revoked' AND crl_published_at IS NULL AND not_after >= ?1 \
                 ORDER BY revoked_at, serial",
                )
                .map_err(unavailable(CTX))?;
            let rows = stmt
                .query_map([at], |r| {
                    Ok(UnpublishedRevocation {
                        serial: r.get(0)?,
                        issuer: r.get(1)?,
                        revoked_at: r.get::<_, Option<i64>>(2)?.unwrap_or(0),
                    })
                })
                .map_err(unavailable(CTX))?;
            let unpublished = rows
                .collect::<Result<Vec<_>, _>>()
                .map_err(unavailable(CTX))?;
            Ok(RevocationWatch {
                last_event,
                unpublished,
            })
        })
        .await
}

#[cfg(test)]
mod tests {
    use crate::audit;
    use crate::pki::RevocationReason;
    use crate::store::Store;
    use crate::store::certificates::{BeginOutcome, CertStatus, RevocationInfo};
    use crate::store::crl::CrlRecord;
    use crate::store::revocation::{
        ReleaseOutcome, ReleaseRecord, RevocationEventKind, RevokeOutcome, RevokeRecord,
    };
    use crate::store::sqlite::test_support::{
        event, issued, pending, revocation, store_with_issuer,
    };

    #[tokio::test]
    async fn revoke_is_idempotent_per_request_id_and_changes_a_revoked_certificate_never() {
        let s = store_with_issuer().await;
        issued(&s, "aa", "i1").await;
        let first = match s
            .revoke(revocation("aa", "r1", "x"), event("certificate.revoked"))
            .await
            .unwrap()
        {
            RevokeOutcome::Revoked(r) => r,
            other => panic!("{other:?}"),
        };
        assert_eq!(first.status, CertStatus::Revoked);
        assert_eq!(
            first.revocation,
            Some(RevocationInfo {
                reason: RevocationReason::KeyCompromise,
                revoked_at: 100,
                reported_at: Some(90),
                comment: "token lost".into(),
                revoked_by: "ra-1".into(),
                first_published_at: None,
            })
        );
        // The same request again: the same answer, no second audit entry.
        assert_eq!(
            s.revoke(revocation("aa", "r1", "x"), event("certificate.revoked"))
                .await
                .unwrap(),
            RevokeOutcome::Revoked(first.clone())
        );
        // The same id for another request: conflict, naming the first request's serial.
        assert_eq!(
            s.revoke(revocation("bb", "r1", "y"), event("certificate.revoked"))
                .await
                .unwrap(),
            RevokeOutcome::Conflict {
                serial: "aa".into()
            }
        );
        // A new request for the revoked certificate: nothing changes.
        let mut again = revocation("aa", "r2", "z");
        again.reason = RevocationReason::Superseded;
        again.revoked_at = 200;
        assert_eq!(
            s.revoke(again.clone(), event("certificate.revoked"))
                .await
                .unwrap(),
            RevokeOutcome::AlreadyRevoked(first.clone())
        );
        assert_eq!(
            s.revoke(again, event("certificate.revoked")).await.unwrap(),
            RevokeOutcome::AlreadyRevoked(first.clone())
        );
        assert_eq!(
            s.revoke(revocation("cc", "r3", "x"), event("certificate.revoked"))
                .await
                .unwrap(),
            RevokeOutcome::NotFound
        );
        assert!(matches!(
            s.begin_issuance(pending("dd", "i2", "d")).await.unwrap(),
            BeginOutcome::Started(_)
        ));
        assert_eq!(
            s.revoke(revocation("dd", "r4", "x"), event("certificate.revoked"))
                .await
                .unwrap(),
            RevokeOutcome::NotIssued
        );
        assert_eq!(s.certificate("aa").await.unwrap(), Some(first));
        let log = s.audit_entries(1, 100).await.unwrap();
        let revoked = log
            .iter()
            .filter(|e| e.event.action == "certificate.revoked")
            .count();
        assert_eq!(revoked, 1);
        assert_eq!(audit::verify_chain(&log), Ok(log.len()));
    }

    #[tokio::test]
    async fn a_hold_is_released_or_made_final_and_every_step_stays_in_the_history() {
        let s = store_with_issuer().await;
        issued(&s, "aa", "i1").await;
        issued(&s, "bb", "i2").await;
        let hold = |serial: &str, id: &str| RevokeRecord {
            reason: RevocationReason::CertificateHold,
            ..revocation(serial, id, "h")
        };
        let release = |serial: &str, id: &str, digest: &str| ReleaseRecord {
            serial: serial.into(),
            ra: "ra-1".into(),
            request_id: id.into(),
            request_digest: digest.into(),
            released_at: 130,
            comment: "token found".into(),
        };
        assert!(matches!(
            s.revoke(hold("aa", "h1"), event("certificate.held"))
                .await
                .unwrap(),
            RevokeOutcome::Revoked(_)
        ));
        let w = s.revocation_watch(0).await.unwrap();
        assert_eq!(
            w.unpublished
                .iter()
                .map(|u| u.serial.as_str())
                .collect::<Vec<_>>(),
            ["aa"]
        );
        // A valid certificate is not on hold; a retry of a release answers the same.
        assert!(matches!(
            s.release_hold(release("bb", "x1", "d"), event("certificate.released")).await.unwrap(),
            ReleaseOutcome::NotHeld(r) if r.status == CertStatus::Valid
        ));
        let crl = |n: u64, t: i64| CrlRecord {
            issuer: "ec".into(),
            number: n,
            this_update: t,
            next_update: t + 10,
            der: vec![n as u8],
        };
        let n = s.next_crl_number("ec").await.unwrap();
        s.record_crl(crl(n, 120), vec!["aa".into()], event("crl.signed"))
            .await
            .unwrap();
        assert!(s.revocation_watch(0).await.unwrap().unpublished.is_empty());
        for _ in 0..2 {
            match s
                .release_hold(release("aa", "r1", "d"), event("certificate.released"))
                .await
                .unwrap()
            {
                ReleaseOutcome::Released(r) => {
                    assert_eq!((r.status, r.revocation), (CertStatus::Valid, None))
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(
            s.release_hold(release("aa", "r1", "other"), event("certificate.released")).await.unwrap(),
            ReleaseOutcome::Conflict { serial } if serial == "aa"
        ));
        assert!(matches!(
            s.release_hold(release("aa", "r2", "d"), event("certificate.released"))
                .await
                .unwrap(),
            ReleaseOutcome::NotHeld(_)
        ));
        // Held again, then revoked for good: final, and not releasable.
        s.revoke(hold("aa", "h2"), event("certificate.held"))
            .await
            .unwrap();
        assert!(matches!(
            s.revoke(hold("aa", "h3"), event("certificate.held"))
                .await
                .unwrap(),
            RevokeOutcome::AlreadyRevoked(_)
        ));
        let fin = match s
            .revoke(revocation("aa", "k1", "k"), event("certificate.revoked"))
            .await
            .unwrap()
        {
            RevokeOutcome::Revoked(r) => r,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            fin.revocation.map(|r| (r.reason, r.first_published_at)),
            Some((RevocationReason::KeyCompromise, None))
        );
        assert!(matches!(
            s.revoke(revocation("aa", "k2", "k"), event("certificate.revoked"))
                .await
                .unwrap(),
            RevokeOutcome::AlreadyRevoked(_)
        ));
        assert!(matches!(
            s.release_hold(release("aa", "r3", "d"), event("certificate.released")).await.unwrap(),
            ReleaseOutcome::NotHeld(r) if r.revocation.as_ref().map(|v| v.reason) == Some(RevocationReason::KeyCompromise)
        ));
        let history = s.revocation_history("aa").await.unwrap();
        let steps: Vec<_> = history
            .iter()
            .map(|e| (e.kind, e.request_id.as_str(), e.published_at))
            .collect();
        assert_eq!(
            steps,
            [
                (RevocationEventKind::Held, "h1", Some(120)),
                (RevocationEventKind::Released, "r1", None),
                (RevocationEventKind::Held, "h2", None),
                (RevocationEventKind::Revoked, "k1", None),
            ]
        );
        let w = s.revocation_watch(0).await.unwrap();
        assert_eq!(w.unpublished.len(), 1);
        assert!(w.last_event >= 4);
        // A CRL made before the final revocation was recorded does not count as publishing it.
        let n = s.next_crl_number("ec").await.unwrap();
        s.record_crl(crl(n, 99), vec!["aa".into()], event("crl.signed"))
            .await
            .unwrap();
        assert_eq!(s.revocation_watch(0).await.unwrap().unpublished.len(), 1);
        let actions: Vec<String> = s
            .audit_entries(1, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.event.action)
            .filter(|a| a.starts_with("certificate.") && a != "certificate.issued")
            .collect();
        assert_eq!(
            actions,
            [
                "certificate.held",
                "certificate.released",
                "certificate.held",
                "certificate.revoked"
            ]
        );
    }
}
