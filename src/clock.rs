//! Time as signet records it: whole Unix seconds. Certificates, CRLs, OCSP responses and
//! the store carry no fractions of a second, so every "now" is taken here.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// `t` in Unix seconds (times before 1970 count as 0).
pub fn unix(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Now, in Unix seconds.
pub fn unix_now() -> i64 {
    unix(SystemTime::now())
}

/// A Unix time (seconds) as a SystemTime; negative times become the epoch.
pub fn from_unix(t: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(t).unwrap_or(0))
}

/// Now, truncated to whole seconds.
pub fn now_seconds() -> SystemTime {
    from_unix(unix_now())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_seconds_round_trip() {
        let now = now_seconds();
        assert_eq!(from_unix(unix(now)), now);
        assert_eq!(unix(from_unix(-5)), 0);
    }
}
