//! The time-stamping authority's state in SQLite: its serial high-water mark and its time
//! ceiling (column `last_time_ms`): no token is later, since the TSA raises it before it
//! stamps past it, and a graceful stop lowers it to the latest token's time.

use rusqlite::{OptionalExtension, params};

use super::db::SqliteStore;
use super::error::unavailable;
use crate::store::error::StoreError;

pub(super) async fn reserve_tsa_serials(
    store: &SqliteStore,
    count: u64,
    ceiling_ms: i64,
) -> Result<u64, StoreError> {
    const CTX: &str = "reserving timestamp serial numbers";
    let count = i64::try_from(count)
        .map_err(|_| StoreError::Corrupt(format!("serial block of {count}")))?;
    store
        .run(CTX, move |conn| {
            let end: i64 = conn
                .query_row(
                    "INSERT INTO tsa_state (id, next_serial, last_time_ms) VALUES (1, 1 + ?1, ?2) \
                 ON CONFLICT (id) DO UPDATE SET next_serial = next_serial + ?1, \
                 last_time_ms = MAX(last_time_ms, ?2) RETURNING next_serial",
                    params![count, ceiling_ms],
                    |r| r.get(0),
                )
                .map_err(unavailable(CTX))?;
            u64::try_from(end - count)
                .map_err(|_| StoreError::Corrupt(format!("timestamp serial high-water mark {end}")))
        })
        .await
}

pub(super) async fn note_tsa_time(store: &SqliteStore, ceiling_ms: i64) -> Result<(), StoreError> {
    const CTX: &str = "recording the timestamp authority's time ceiling";
    store
        .run(CTX, move |conn| {
            conn.execute(
                "INSERT INTO tsa_state (id, next_serial, last_time_ms) VALUES (1, 1, ?1) \
             ON CONFLICT (id) DO UPDATE SET last_time_ms = MAX(last_time_ms, ?1)",
                [ceiling_ms],
            )
            .map_err(unavailable(CTX))?;
            Ok(())
        })
        .await
}

pub(super) async fn settle_tsa_time(
    store: &SqliteStore,
    ceiling_ms: i64,
    latest_ms: i64,
) -> Result<bool, StoreError> {
    const CTX: &str = "recording the time of the latest timestamp";
    store
        .run(CTX, move |conn| {
            let changed = conn
                .execute(
                    "UPDATE tsa_state SET last_time_ms = ?2 \
                     WHERE id = 1 AND last_time_ms = ?1 AND ?2 < ?1",
                    [ceiling_ms, latest_ms],
                )
                .map_err(unavailable(CTX))?;
            Ok(changed == 1)
        })
        .await
}

pub(super) async fn tsa_last_time(store: &SqliteStore) -> Result<Option<i64>, StoreError> {
    const CTX: &str = "reading the timestamp authority's time ceiling";
    store
        .run(CTX, move |conn| {
            conn.query_row("SELECT last_time_ms FROM tsa_state WHERE id = 1", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(unavailable(CTX))
        })
        .await
}

#[cfg(test)]
mod tests {
    use crate::store::Store;
    use crate::store::sqlite::db::SqliteStore;

    #[tokio::test]
    async fn timestamp_serial_blocks_never_overlap_and_the_latest_time_only_grows() {
        let s = SqliteStore::open_in_memory().unwrap();
        assert_eq!(s.tsa_last_time().await.unwrap(), None);
        let a = s.reserve_tsa_serials(1000, 5_000).await.unwrap();
        let b = s.reserve_tsa_serials(1000, 4_000).await.unwrap();
        let c = s.reserve_tsa_serials(10, 6_000).await.unwrap();
        assert_eq!((a, b, c), (1, 1001, 2001));
        assert_eq!(s.tsa_last_time().await.unwrap(), Some(6_000));
        s.note_tsa_time(5_500).await.unwrap();
        assert_eq!(s.tsa_last_time().await.unwrap(), Some(6_000));
        s.note_tsa_time(7_000).await.unwrap();
        assert_eq!(s.tsa_last_time().await.unwrap(), Some(7_000));
        assert_eq!(s.reserve_tsa_serials(1, 0).await.unwrap(), 2011);
    }

    #[tokio::test]
    async fn a_graceful_stop_lowers_only_its_own_ceiling() {
        let s = SqliteStore::open_in_memory().unwrap();
        assert!(!s.settle_tsa_time(10_000, 5_000).await.unwrap());
        s.note_tsa_time(10_000).await.unwrap();
        // Not below the ceiling: nothing to lower.
        assert!(!s.settle_tsa_time(10_000, 10_000).await.unwrap());
        assert!(s.settle_tsa_time(10_000, 7_000).await.unwrap());
        assert_eq!(s.tsa_last_time().await.unwrap(), Some(7_000));
        // Another process raised the ceiling since: it stays.
        s.note_tsa_time(12_000).await.unwrap();
        assert!(!s.settle_tsa_time(10_000, 8_000).await.unwrap());
        assert_eq!(s.tsa_last_time().await.unwrap(), Some(12_000));
    }
}
