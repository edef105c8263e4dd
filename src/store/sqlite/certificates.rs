//! Certificates in SQLite: the row layout, exactly-once issuance (pending, then committed),
//! lookups, and keyset-paged listings.

use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::audit::append_lines_tx;
use super::db::SqliteStore;
use super::error::{is_constraint, unavailable};
use crate::audit::AuditEvent;
use crate::pki::RevocationReason;
use crate::store::certificates::{
    BeginOutcome, CertFilter, CertPage, CertStatus, CertificateRecord, MAX_PAGE_SIZE,
    RevocationInfo,
};
use crate::store::error::StoreError;

/// The columns of a certificate row in the order [`cert_from_row`] reads them, as a literal
/// so statements can be put together at compile time.
macro_rules! cert_columns {
    () => {
        "serial, issuer, ra, request_id, request_digest, profile, subject, \
         request_json, csr_der, tbs_der, cert_der, status, not_before, not_after, created_at, \
         issued_at, renewed_from, revoked_at, revocation_reason, revocation_reported_at, \
         revocation_comment, revoked_by, crl_published_at, updated_at"
    };
}

const CERT_COLUMNS: &str = cert_columns!();

/// The revocation columns as read, before the reason is parsed.
struct RawRevocation {
    revoked_at: Option<i64>,
    reason: Option<String>,
    reported_at: Option<i64>,
    comment: Option<String>,
    revoked_by: Option<String>,
    published_at: Option<i64>,
}

type RawCert = (CertificateRecord, String, RawRevocation);

fn cert_from_row(r: &Row<'_>) -> rusqlite::Result<RawCert> {
    let status: String = r.get(11)?;
    let raw = RawRevocation {
        revoked_at: r.get(17)?,
        reason: r.get(18)?,
        reported_at: r.get(19)?,
        comment: r.get(20)?,
        revoked_by: r.get(21)?,
        published_at: r.get(22)?,
    };
    Ok((
        CertificateRecord {
            serial: r.get(0)?,
            issuer: r.get(1)?,
            ra: r.get(2)?,
            request_id: r.get(3)?,
            request_digest: r.get(4)?,
            profile: r.get(5)?,
            subject: r.get(6)?,
            request_json: r.get(7)?,
            csr_der: r.get(8)?,
            tbs_der: r.get(9)?,
            cert_der: r.get(10)?,
            status: CertStatus::Pending,
            not_before: r.get(12)?,
            not_after: r.get(13)?,
            created_at: r.get(14)?,
            issued_at: r.get(15)?,
            renewed_from: r.get(16)?,
            revocation: None,
            updated_at: r.get(23)?,
        },
        status,
        raw,
    ))
}

fn finish_cert(row: RawCert) -> Result<CertificateRecord, StoreError> {
    let (mut rec, status, raw) = row;
    rec.status = CertStatus::parse(&status)?;
    rec.revocation = match (rec.status, raw.revoked_at, raw.reason) {
        (CertStatus::Revoked, Some(revoked_at), Some(reason)) => Some(RevocationInfo {
            reason: reason
                .parse::<RevocationReason>()
                .map_err(|e| StoreError::Corrupt(format!("certificate {}: {e}", rec.serial)))?,
            revoked_at,
            reported_at: raw.reported_at,
            comment: raw.comment.unwrap_or_default(),
            revoked_by: raw.revoked_by.unwrap_or_default(),
            first_published_at: raw.published_at,
        }),
        (CertStatus::Revoked, _, _) => {
            return Err(StoreError::Corrupt(format!(
                "certificate {} is revoked without a revocation time and reason",
                rec.serial
            )));
        }
        _ => None,
    };
    Ok(rec)
}

pub(super) fn query_cert(
    conn: &Connection,
    where_clause: &str,
    params: impl rusqlite::Params,
) -> Result<Option<CertificateRecord>, StoreError> {
    let sql = format!("SELECT {CERT_COLUMNS} FROM certificates WHERE {where_clause}");
    conn.prepare_cached(&sql)
        .and_then(|mut s| s.query_row(params, cert_from_row).optional())
        .map_err(unavailable("reading a certificate"))?
        .map(finish_cert)
        .transpose()
}

/// Page tokens name where the previous page ended: its last serial ("s1.SERIAL") when listing
/// by serial, its last (updated_at, serial) ("u1.TIME.SERIAL") when listing by change. The
/// prefix versions the format.
const PAGE_TOKEN_PREFIX: &str = "s1.";
const UPDATE_TOKEN_PREFIX: &str = "u1.";

/// Where a page starts: after this serial, or after this change.
enum After {
    Serial(String),
    Change(i64, String),
}

fn page_token_after(rec: &CertificateRecord, by_change: bool) -> String {
    if by_change {
        format!("{UPDATE_TOKEN_PREFIX}{}.{}", rec.updated_at, rec.serial)
    } else {
        format!("{PAGE_TOKEN_PREFIX}{}", rec.serial)
    }
}

fn is_serial(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn parse_page_token(token: &str, by_change: bool) -> Result<After, StoreError> {
    let after = if by_change {
        token
            .strip_prefix(UPDATE_TOKEN_PREFIX)
            .and_then(|rest| rest.split_once('.'))
            .and_then(|(t, serial)| {
                let t = t.parse::<i64>().ok()?;
                is_serial(serial).then(|| After::Change(t, serial.to_owned()))
            })
    } else {
        token
            .strip_prefix(PAGE_TOKEN_PREFIX)
            .filter(|s| is_serial(s))
            .map(|s| After::Serial(s.to_owned()))
    };
    after.ok_or_else(|| {
        StoreError::InvalidPageToken("not a token from a previous page of this listing".into())
    })
}

pub(super) async fn begin_issuance(
    store: &SqliteStore,
    p: CertificateRecord,
) -> Result<BeginOutcome, StoreError> {
    const CTX: &str = "recording a pending certificate";
    store
        .run(CTX, move |conn| {
            let tx: &Connection = conn;
            if let Some(existing) = query_cert(
                tx,
                "ra = ?1 AND request_id = ?2",
                params![p.ra, p.request_id],
            )? {
                let outcome = if existing.request_digest != p.request_digest {
                    BeginOutcome::Conflict(existing)
                } else if existing.status == CertStatus::Pending {
                    BeginOutcome::Resume(existing)
                } else {
                    BeginOutcome::Done(existing)
                };
                return Ok(outcome);
            }
            let inserted = tx
                .prepare_cached(
                    "INSERT INTO certificates (serial, issuer, ra, request_id, request_digest, \
                     profile, subject, request_json, csr_der, tbs_der, cert_der, status, \
                     not_before, not_after, created_at, issued_at, renewed_from, updated_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, NULL, 'pending', ?11, ?12, \
                     ?13, NULL, ?14, ?13)",
                )
                .and_then(|mut s| {
                    s.execute(params![
                        p.serial,
                        p.issuer,
                        p.ra,
                        p.request_id,
                        p.request_digest,
                        p.profile,
                        p.subject,
                        p.request_json,
                        p.csr_der,
                        p.tbs_der,
                        p.not_before,
                        p.not_after,
                        p.created_at,
                        p.renewed_from
                    ])
                });
            match inserted {
                Ok(_) => {}
                Err(e) if is_constraint(&e) => {
                    // The (ra, request_id) pair was checked above inside this transaction,
                    // so a constraint here is the serial.
                    return Ok(BeginOutcome::SerialTaken);
                }
                Err(e) => return Err(unavailable(CTX)(e)),
            }
            let mut rec = p;
            rec.status = CertStatus::Pending;
            rec.cert_der = None;
            rec.issued_at = None;
            rec.revocation = None;
            Ok(BeginOutcome::Started(rec))
        })
        .await
}

/// Commit a signed certificate: the row becomes valid and keeps the certificate, not the
/// TBS it was signed over (the TBS is inside the certificate, so keeping both would store it
/// twice). The audit entry's canonical lines are written here, before the database thread.
pub(super) async fn complete_issuance(
    store: &SqliteStore,
    serial: &str,
    cert_der: &[u8],
    issued_at: i64,
    audit: AuditEvent,
) -> Result<CertificateRecord, StoreError> {
    const CTX: &str = "committing a certificate";
    let serial = serial.to_owned();
    let cert_der = cert_der.to_vec();
    let lines = crate::audit::event_lines(&audit);
    store
        .run(CTX, move |conn| {
            let tx: &Connection = conn;
            let rec = tx
                .prepare_cached(concat!(
                    "UPDATE certificates SET cert_der = ?1, status = 'valid', issued_at = ?2, \
                     updated_at = ?2, tbs_der = x'' WHERE serial = ?3 AND status = 'pending' \
                     RETURNING ",
                    cert_columns!()
                ))
                .and_then(|mut s| {
                    s.query_row(params![cert_der, issued_at, serial], cert_from_row)
                        .optional()
                })
                .map_err(unavailable(CTX))?
                .ok_or_else(|| {
                    StoreError::NotFound(format!("no pending certificate with serial {serial}"))
                })?;
            append_lines_tx(tx, &audit, &lines)?;
            finish_cert(rec)
        })
        .await
}

pub(super) async fn certificate(
    store: &SqliteStore,
    serial: &str,
) -> Result<Option<CertificateRecord>, StoreError> {
    let serial = serial.to_owned();
    store
        .run("reading a certificate", move |conn| {
            query_cert(conn, "serial = ?1", [serial])
        })
        .await
}

pub(super) async fn certificate_by_request(
    store: &SqliteStore,
    ra: &str,
    request_id: &str,
) -> Result<Option<CertificateRecord>, StoreError> {
    let (ra, request_id) = (ra.to_owned(), request_id.to_owned());
    store
        .run("reading a certificate", move |conn| {
            query_cert(conn, "ra = ?1 AND request_id = ?2", params![ra, request_id])
        })
        .await
}

pub(super) async fn list_certificates(
    store: &SqliteStore,
    filter: CertFilter,
    page_token: Option<String>,
    page_size: usize,
) -> Result<CertPage, StoreError> {
    const CTX: &str = "listing certificates";
    let by_change = filter.updated_since.is_some();
    let after = page_token
        .as_deref()
        .map(|t| parse_page_token(t, by_change))
        .transpose()?;
    let page_size = page_size.clamp(1, MAX_PAGE_SIZE);
    store
        .run(CTX, move |conn| {
            let mut clauses: Vec<String> = Vec::new();
            let mut values: Vec<Value> = Vec::new();
            let bind = |clause: &str, v: Value, values: &mut Vec<Value>| {
                values.push(v);
                clause.replace('?', &format!("?{}", values.len()))
            };
            match filter.status {
                Some(st) => clauses.push(bind(
                    "status = ?",
                    Value::Text(st.as_str().into()),
                    &mut values,
                )),
                None => clauses.push("status <> 'pending'".into()),
            }
            if let Some(profiles) = &filter.profiles {
                if profiles.is_empty() {
                    return Ok(CertPage {
                        records: Vec::new(),
                        next_page_token: None,
                    });
                }
                let marks: Vec<String> = profiles
                    .iter()
                    .map(|p| bind("?", Value::Text(p.clone()), &mut values))
                    .collect();
                clauses.push(format!("profile IN ({})", marks.join(", ")));
            }
            if let Some(p) = &filter.profile {
                clauses.push(bind("profile = ?", Value::Text(p.clone()), &mut values));
            }
            if let Some(ra) = &filter.ra {
                clauses.push(bind("ra = ?", Value::Text(ra.clone()), &mut values));
            }
            if let Some(i) = &filter.issuer {
                clauses.push(bind("issuer = ?", Value::Text(i.clone()), &mut values));
            }
            if let Some(text) = &filter.subject_contains {
                // instr() is a plain substring test: no LIKE wildcards to escape.
                clauses.push(bind(
                    "instr(subject, ?) > 0",
                    Value::Text(text.clone()),
                    &mut values,
                ));
            }
            if let Some(t) = filter.expiring_before {
                clauses.push(bind("not_after < ?", Value::Integer(t), &mut values));
            }
            if let Some(t) = filter.updated_since {
                clauses.push(bind("updated_at >= ?", Value::Integer(t), &mut values));
            }
            match &after {
                Some(After::Serial(serial)) => {
                    clauses.push(bind("serial > ?", Value::Text(serial.clone()), &mut values));
                }
                Some(After::Change(t, serial)) => {
                    let t = bind("?", Value::Integer(*t), &mut values);
                    let s = bind("?", Value::Text(serial.clone()), &mut values);
                    clauses.push(format!(
                        "(updated_at > {t} OR (updated_at = {t} AND serial > {s}))"
                    ));
                }
                None => {}
            }
            // One row more than the page tells whether another page follows.
            let limit = bind("?", Value::Integer(page_size as i64 + 1), &mut values);
            let order = if by_change {
                "updated_at, serial"
            } else {
                "serial"
            };
            let sql = format!(
                "SELECT {CERT_COLUMNS} FROM certificates WHERE {} ORDER BY {order} LIMIT {limit}",
                clauses.join(" AND ")
            );
            let mut stmt = conn.prepare(&sql).map_err(unavailable(CTX))?;
            let rows = stmt
                .query_map(rusqlite::params_from_iter(values), cert_from_row)
                .map_err(unavailable(CTX))?;
            let mut records = Vec::with_capacity(page_size + 1);
            for row in rows {
                records.push(finish_cert(row.map_err(unavailable(CTX))?)?);
            }
            let next_page_token = if records.len() > page_size {
                records.truncate(page_size);
                records.last().map(|r| page_token_after(r, by_change))
            } else {
                None
            };
            Ok(CertPage {
                records,
                next_page_token,
            })
        })
        .await
}

pub(super) async fn count_certificates(store: &SqliteStore) -> Result<u64, StoreError> {
    store
        .run("counting certificates", |conn| {
            conn.query_row("SELECT COUNT(*) FROM certificates", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as u64)
            .map_err(unavailable("counting certificates"))
        })
        .await
}

#[cfg(test)]
mod tests {
    use crate::audit;
    use crate::store::Store;
    use crate::store::certificates::{BeginOutcome, CertFilter, CertStatus};
    use crate::store::error::StoreError;
    use crate::store::sqlite::test_support::{event, issued, pending, store_with_issuer};

    #[tokio::test]
    async fn one_request_id_one_record() {
        let s = store_with_issuer().await;
        assert!(matches!(
            s.begin_issuance(pending("aa", "r1", "d1")).await.unwrap(),
            BeginOutcome::Started(_)
        ));
        // Same request again while pending: resume with the stored serial, not the new one.
        match s.begin_issuance(pending("bb", "r1", "d1")).await.unwrap() {
            BeginOutcome::Resume(r) => assert_eq!(r.serial, "aa"),
            other => panic!("{other:?}"),
        }
        // Different body: conflict.
        assert!(matches!(
            s.begin_issuance(pending("cc", "r1", "d2")).await.unwrap(),
            BeginOutcome::Conflict(_)
        ));
        let done = s
            .complete_issuance("aa", &[9, 9], 11, event("certificate.issued"))
            .await
            .unwrap();
        assert_eq!(done.status, CertStatus::Valid);
        match s.begin_issuance(pending("dd", "r1", "d1")).await.unwrap() {
            BeginOutcome::Done(r) => assert_eq!(r.cert_der, Some(vec![9, 9])),
            other => panic!("{other:?}"),
        }
        // Completing twice is refused.
        assert!(
            s.complete_issuance("aa", &[1], 12, event("certificate.issued"))
                .await
                .is_err()
        );
        // A taken serial under a new request id.
        assert_eq!(
            s.begin_issuance(pending("aa", "r2", "d3")).await.unwrap(),
            BeginOutcome::SerialTaken
        );
        assert_eq!(s.count_certificates().await.unwrap(), 1);
        let log = s.audit_entries(1, 100).await.unwrap();
        assert_eq!(log.len(), 3);
        assert_eq!(audit::verify_chain(&log), Ok(3));
    }

    #[tokio::test]
    async fn the_tbs_is_kept_while_pending_and_dropped_once_the_certificate_holds_it() {
        let s = store_with_issuer().await;
        s.begin_issuance(pending("aa", "r1", "d1")).await.unwrap();
        // Pending: the TBS is what a retry signs again.
        let p = s.certificate("aa").await.unwrap().unwrap();
        assert_eq!(p.tbs_der, vec![4]);
        match s.begin_issuance(pending("bb", "r1", "d1")).await.unwrap() {
            BeginOutcome::Resume(r) => assert_eq!(r.tbs_der, vec![4]),
            other => panic!("{other:?}"),
        }
        let done = s
            .complete_issuance("aa", &[9, 9, 9], 11, event("certificate.issued"))
            .await
            .unwrap();
        assert_eq!(done.status, CertStatus::Valid);
        assert_eq!(done.cert_der, Some(vec![9, 9, 9]));
        assert_eq!(done.issued_at, Some(11));
        assert!(done.tbs_der.is_empty());
        // As stored, not only as answered.
        let stored = s.certificate("aa").await.unwrap().unwrap();
        assert_eq!(stored, done);
        // The rest of the record is as recorded when pending.
        assert_eq!(
            (stored.request_json, stored.csr_der, stored.subject),
            (p.request_json, p.csr_der, p.subject)
        );
    }

    #[tokio::test]
    async fn pages_return_every_issued_record_once_even_while_rows_are_added() {
        let s = store_with_issuer().await;
        for i in 0..20u32 {
            issued(&s, &format!("{:02x}", i * 11 + 1), &format!("i{i}")).await;
        }
        // Pending rows are never listed by default.
        for i in 0..3u32 {
            let p = pending(&format!("{:02x}", i * 11 + 2), &format!("p{i}"), "d");
            s.begin_issuance(p).await.unwrap();
        }
        let mut seen = Vec::new();
        let mut token = None;
        let mut pages = 0;
        loop {
            let page = s
                .list_certificates(CertFilter::default(), token, 7)
                .await
                .unwrap();
            assert!(page.records.len() <= 7);
            pages += 1;
            if pages == 2 {
                // Rows added behind and ahead of the cursor while paging.
                issued(&s, "00", "late-1").await;
                issued(&s, "ff", "late-2").await;
            }
            seen.extend(page.records.into_iter().map(|r| r.serial));
            match page.next_page_token {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        let mut unique = seen.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), seen.len(), "a record came twice: {seen:?}");
        assert_eq!(
            seen.len(),
            21,
            "20 issued plus the one added ahead: {seen:?}"
        );
        assert!(seen.contains(&"ff".to_string()));
        let pending_only = s
            .list_certificates(
                CertFilter {
                    status: Some(CertStatus::Pending),
                    ..CertFilter::default()
                },
                None,
                0,
            )
            .await
            .unwrap();
        // page_size 0 is clamped to 1.
        assert_eq!(pending_only.records.len(), 1);
        assert!(pending_only.next_page_token.is_some());
        for bad in ["", "garbage", "s1.", "s1.XYZ", "s1.aa'--"] {
            let e = s
                .list_certificates(CertFilter::default(), Some(bad.into()), 10)
                .await
                .unwrap_err();
            assert!(matches!(e, StoreError::InvalidPageToken(_)), "{bad}: {e}");
        }
    }

    #[tokio::test]
    async fn subject_search_is_a_plain_substring_and_an_empty_profile_list_matches_nothing() {
        let s = store_with_issuer().await;
        let mut a = pending("0a", "i1", "d");
        a.subject = "CN=100% sure_thing".into();
        s.begin_issuance(a).await.unwrap();
        s.complete_issuance("0a", &[9], 11, event("certificate.issued"))
            .await
            .unwrap();
        let mut b = pending("0b", "i2", "d");
        b.subject = "CN=100 xsurexthing".into();
        s.begin_issuance(b).await.unwrap();
        s.complete_issuance("0b", &[9], 11, event("certificate.issued"))
            .await
            .unwrap();
        let find = |text: &str| CertFilter {
            subject_contains: Some(text.into()),
            ..CertFilter::default()
        };
        for (text, want) in [
            ("0% sure_", vec!["0a"]),
            ("%", vec!["0a"]),
            ("_", vec!["0a"]),
            ("100", vec!["0a", "0b"]),
        ] {
            let got: Vec<String> = s
                .list_certificates(find(text), None, 100)
                .await
                .unwrap()
                .records
                .into_iter()
                .map(|r| r.serial)
                .collect();
            assert_eq!(got, want, "{text}");
        }
        let none = CertFilter {
            profiles: Some(vec![]),
            ..CertFilter::default()
        };
        assert!(
            s.list_certificates(none, None, 10)
                .await
                .unwrap()
                .records
                .is_empty()
        );
    }
}
