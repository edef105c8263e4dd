//! CA keys and issuers in SQLite: what the ceremony recorded.

use rusqlite::{Connection, OptionalExtension, params};

use super::audit::append_audit_tx;
use super::db::SqliteStore;
use super::error::{duplicate_or_unavailable, unavailable};
use crate::audit::AuditEvent;
use crate::store::error::StoreError;
use crate::store::keys::{CaKeyRecord, IssuerRecord};

pub(super) async fn record_ca_key(
    store: &SqliteStore,
    key: CaKeyRecord,
    audit: AuditEvent,
) -> Result<(), StoreError> {
    store.run("recording a CA key", move |conn| {
        let tx: &Connection = conn;
        tx.execute(
            "INSERT INTO ca_keys (label, key_type, spki_der, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![key.label, key.key_type, key.spki_der, key.created_at],
        )
        .map_err(duplicate_or_unavailable(format!("CA key {:?}", key.label), "recording a CA key"))?;
        append_audit_tx(tx, &audit)?;
        Ok(())
    })
    .await
}

pub(super) async fn ca_key(
    store: &SqliteStore,
    label: &str,
) -> Result<Option<CaKeyRecord>, StoreError> {
    let label = label.to_owned();
    store
        .run("reading a CA key", move |conn| {
            conn.query_row(
                "SELECT label, key_type, spki_der, created_at FROM ca_keys WHERE label = ?1",
                [label],
                |r| {
                    Ok(CaKeyRecord {
                        label: r.get(0)?,
                        key_type: r.get(1)?,
                        spki_der: r.get(2)?,
                        created_at: r.get(3)?,
                    })
                },
            )
            .optional()
            .map_err(unavailable("reading a CA key"))
        })
        .await
}

pub(super) async fn record_issuer(
    store: &SqliteStore,
    issuer: IssuerRecord,
    audit: AuditEvent,
) -> Result<(), StoreError> {
    store.run("recording an issuer", move |conn| {
        let tx: &Connection = conn;
        tx.execute(
            "INSERT INTO issuers \
             (name, parent, key_label, signature, serial, cert_der, created_at, family, generation) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                issuer.name,
                issuer.parent,
                issuer.key_label,
                issuer.signature,
                issuer.serial,
                issuer.cert_der,
                issuer.created_at,
                issuer.family,
                issuer.generation
            ],
        )
        .map_err(duplicate_or_unavailable(format!("issuer {:?}", issuer.name), "recording an issuer"))?;
        append_audit_tx(tx, &audit)?;
        Ok(())
    })
    .await
}

pub(super) async fn issuers(store: &SqliteStore) -> Result<Vec<IssuerRecord>, StoreError> {
    store
        .run("reading issuers", |conn| {
            let mut stmt = conn
                .prepare(
                    "SELECT name, parent, key_label, signature, serial, cert_der, created_at, \
                 coalesce(family, name), generation FROM issuers ORDER BY rowid",
                )
                .map_err(unavailable("reading issuers"))?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(IssuerRecord {
                        name: r.get(0)?,
                        parent: r.get(1)?,
                        key_label: r.get(2)?,
                        signature: r.get(3)?,
                        serial: r.get(4)?,
                        cert_der: r.get(5)?,
                        created_at: r.get(6)?,
                        family: r.get(7)?,
                        generation: r.get(8)?,
                    })
                })
                .map_err(unavailable("reading issuers"))?;
            rows.collect::<Result<Vec<_>, _>>()
                .map_err(unavailable("reading issuers"))
        })
        .await
}

#[cfg(test)]
mod tests {
    use crate::store::Store;
    use crate::store::error::StoreError;
    use crate::store::keys::CaKeyRecord;
    use crate::store::sqlite::test_support::{event, store_with_issuer};

    #[tokio::test]
    async fn duplicate_ca_keys_and_issuers_are_refused() {
        let s = store_with_issuer().await;
        let e = s
            .record_ca_key(
                CaKeyRecord {
                    label: "k".into(),
                    key_type: "p256".into(),
                    spki_der: vec![1],
                    created_at: 1,
                },
                event("ceremony.key_generated"),
            )
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Duplicate { .. }), "{e}");
        // The failed transaction left no audit entry behind.
        assert_eq!(s.audit_entries(1, 100).await.unwrap().len(), 2);
    }
}
