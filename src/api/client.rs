//! The client side of the RA API, for `signet ra` and for tests: a channel over mutual TLS
//! to the daemon, and statuses described for a person (the code, the message and the field
//! a `google.rpc.BadRequest` names).

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_types::StatusExt;

use super::pb::certificate_authority_client::CertificateAuthorityClient;

/// Where the daemon is and the TLS material to reach it with.
#[derive(Clone, Debug)]
pub struct ClientSettings {
    /// `https://host:port`; the host is also the name checked in the server certificate.
    pub endpoint: String,
    /// PEM file of the CA certificate(s) that issued the server certificate.
    pub ca_cert: PathBuf,
    /// PEM file of the RA's client certificate (chain).
    pub cert: PathBuf,
    /// PEM file of the RA's private key (PKCS#8).
    pub key: PathBuf,
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The endpoint is not an https URL with a host.
    #[error("endpoint {0:?}: use https://HOST:PORT")]
    Endpoint(String),
    /// TLS or connection failure.
    #[error("cannot connect to {endpoint}: {message}")]
    Connect {
        /// The endpoint.
        endpoint: String,
        /// What went wrong, with its causes.
        message: String,
    },
}

fn read(path: &Path) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path).map_err(|source| ClientError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The error and its chain of causes, on one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// A channel to the daemon, authenticated both ways.
pub async fn connect(s: &ClientSettings) -> Result<Channel, ClientError> {
    let url =
        url::Url::parse(&s.endpoint).map_err(|_| ClientError::Endpoint(s.endpoint.clone()))?;
    if url.scheme() != "https" {
        return Err(ClientError::Endpoint(s.endpoint.clone()));
    }
    let host = url
        .host_str()
        .ok_or_else(|| ClientError::Endpoint(s.endpoint.clone()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read(&s.ca_cert)?))
        .identity(Identity::from_pem(read(&s.cert)?, read(&s.key)?))
        .domain_name(host);
    let connect_err = |e: tonic::transport::Error| ClientError::Connect {
        endpoint: s.endpoint.clone(),
        message: chain(&e),
    };
    Endpoint::from_shared(s.endpoint.clone())
        .map_err(connect_err)?
        .tls_config(tls)
        .map_err(connect_err)?
        .connect()
        .await
        .map_err(connect_err)
}

/// A `CertificateAuthority` client over a fresh mutual-TLS channel.
pub async fn ca_client(
    s: &ClientSettings,
) -> Result<CertificateAuthorityClient<Channel>, ClientError> {
    Ok(CertificateAuthorityClient::new(connect(s).await?))
}

/// `CODE: message`, plus the fields a BadRequest detail names.
pub fn describe_status(status: &tonic::Status) -> String {
    let mut s = format!(
        "{}: {}",
        super::error::code_name(status.code()),
        status.message()
    );
    if let Some(br) = status.get_details_bad_request() {
        for v in br.field_violations {
            s.push_str(&format!("\n  field {}: {}", v.field, v.description));
        }
    }
    s
}

/// Parse an RFC 3339 time (`2026-11-24T08:00:00Z`, `...+08:00`, fractions ignored) or a
/// bare date (`2026-11-24`, midnight UTC) as Unix seconds.
pub fn parse_rfc3339(text: &str) -> Result<i64, String> {
    let bad = || format!("{text:?} is not an RFC 3339 time such as 2026-11-24T08:00:00+08:00");
    let num = |s: &str| -> Result<u32, String> {
        if s.is_empty() || !s.chars().all(|c| c.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    let t = text.trim();
    let (date, rest) = match t.find(['T', 't', ' ']) {
        Some(i) => (&t[..i], &t[i + 1..]),
        None => (t, "00:00:00Z"),
    };
    let d: Vec<&str> = date.split('-').collect();
    if d.len() != 3 || d[0].len() != 4 || d[1].len() != 2 || d[2].len() != 2 {
        return Err(bad());
    }
    let (time, offset) = if let Some(s) = rest.strip_suffix(['Z', 'z']) {
        (s, 0i64)
    } else {
        let i = rest.rfind(['+', '-']).ok_or_else(bad)?;
        let (time, off) = rest.split_at(i);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (oh, om) = off[1..].split_once(':').ok_or_else(bad)?;
        (
            time,
            sign * (i64::from(num(oh)?) * 3600 + i64::from(num(om)?) * 60),
        )
    };
    let time = time.split('.').next().unwrap_or(time);
    let hms: Vec<&str> = time.split(':').collect();
    if hms.len() != 3 {
        return Err(bad());
    }
    let year = u16::try_from(num(d[0])?).map_err(|_| bad())?;
    let as_u8 = |v: u32| u8::try_from(v).map_err(|_| bad());
    let dt = der::DateTime::new(
        year,
        as_u8(num(d[1])?)?,
        as_u8(num(d[2])?)?,
        as_u8(num(hms[0])?)?,
        as_u8(num(hms[1])?)?,
        as_u8(num(hms[2])?)?,
    )
    .map_err(|_| bad())?;
    Ok(dt.unix_duration().as_secs() as i64 - offset)
}

/// Unix seconds as RFC 3339 UTC (`2026-11-24T08:00:00Z`).
pub fn format_rfc3339(unix: i64) -> String {
    match u64::try_from(unix)
        .ok()
        .and_then(|s| der::DateTime::from_unix_duration(std::time::Duration::from_secs(s)).ok())
    {
        Some(d) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            d.year(),
            d.month(),
            d.day(),
            d.hour(),
            d.minutes(),
            d.seconds()
        ),
        None => format!("@{unix}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_and_applies_offsets() {
        let t = parse_rfc3339("2026-11-24T08:00:00Z").unwrap();
        assert_eq!(format_rfc3339(t), "2026-11-24T08:00:00Z");
        assert_eq!(parse_rfc3339("2026-11-24T16:00:00+08:00").unwrap(), t);
        assert_eq!(parse_rfc3339("2026-11-24T08:00:00.250Z").unwrap(), t);
        assert_eq!(parse_rfc3339("2026-11-24").unwrap(), t - 8 * 3600);
        assert!(parse_rfc3339("yesterday").is_err());
        assert!(parse_rfc3339("2026-13-01T00:00:00Z").is_err());
    }

    #[test]
    fn statuses_read_like_grpc() {
        let s = tonic::Status::permission_denied("no");
        assert_eq!(describe_status(&s), "PERMISSION_DENIED: no");
    }
}
