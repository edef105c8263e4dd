//! What tonic refuses before a message reaches a service, answered with the codes gRPC
//! defines for it. tonic answers a request message that does not decode (invalid UTF-8 in a
//! string field, a wrong wire type, a message cut short, no message at all) with INTERNAL,
//! which signet's API reserves for its own faults ("read the server log"), and a message
//! over the size limit with OUT_OF_RANGE. [`WireLayer`] sits in front of every service of
//! the listener and turns exactly those answers into INVALID_ARGUMENT (with a
//! `google.rpc.BadRequest` naming the field where prost can tell) and RESOURCE_EXHAUSTED,
//! and logs them like any other call. It recognises them by tonic's own status code and
//! wording on a trailers-only answer, so statuses the services return (whose INTERNAL
//! messages are signet's) pass untouched; tests/api.rs sends such messages to the daemon
//! to keep the wording in check.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tonic::body::Body;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::identity::RaDirectory;
use crate::escape::Escaped;

/// The largest request message accepted, in bytes (4 MiB, gRPC's customary limit).
pub const MAX_MESSAGE: usize = 4 * 1024 * 1024;

/// How prost's decode errors begin (`prost::DecodeError`'s Display).
const PROST_DECODE: &str = "failed to decode Protobuf message: ";
/// tonic's answer when the body ends inside a length-prefixed message.
const TONIC_EOF: &str = "Unexpected EOF decoding stream.";
/// tonic's answer to a unary call whose body holds no message.
const TONIC_MISSING: &str = "Missing request message.";
/// How tonic's answer to an oversized request message begins.
const TONIC_TOO_LARGE: &str = "Error, decoded message length too large";

/// The status a client should get instead of tonic's, or `None` to keep tonic's.
pub fn remap(status: &Status) -> Option<Status> {
    let message = status.message();
    match status.code() {
        Code::Internal => {
            if let Some(rest) = message.strip_prefix(PROST_DECODE) {
                let (field, problem) = decode_problem(rest);
                let text = if field.is_empty() {
                    format!("the request message does not decode: {problem}")
                } else {
                    format!("the request message does not decode: {field}: {problem}")
                };
                Some(Status::with_error_details(
                    Code::InvalidArgument,
                    text,
                    ErrorDetails::with_bad_request_violation(field, problem),
                ))
            } else if message == TONIC_EOF {
                Some(Status::invalid_argument(
                    "the request ends inside a message: its length prefix promises more bytes than were sent",
                ))
            } else if message == TONIC_MISSING {
                Some(Status::invalid_argument("the request carries no message"))
            } else {
                None
            }
        }
        Code::OutOfRange if message.starts_with(TONIC_TOO_LARGE) => {
            let found = message
                .split("found ")
                .nth(1)
                .and_then(|s| s.split(' ').next())
                .and_then(|n| n.parse::<u64>().ok());
            let size = found.map_or_else(String::new, |n| format!(" is {n} bytes;"));
            Some(Status::resource_exhausted(format!(
                "the request message{size} at most {MAX_MESSAGE} bytes (4 MiB) are accepted"
            )))
        }
        _ => None,
    }
}

/// The proto field path and the problem of prost's `Inner.field: Outer.field: problem`
/// (innermost first): `("outer.inner", "problem")`. Repeated fields carry no index; the
/// path is empty when prost names no field (the message as a whole).
fn decode_problem(text: &str) -> (String, String) {
    let parts: Vec<&str> = text.split(": ").collect();
    let is_location = |p: &str| {
        p.split_once('.').is_some_and(|(m, f)| {
            !m.is_empty()
                && !f.is_empty()
                && m.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && f.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '#')
        })
    };
    let n = parts.iter().take_while(|p| is_location(p)).count();
    let field: Vec<&str> = parts[..n]
        .iter()
        .rev()
        .filter_map(|p| p.split_once('.').map(|(_, f)| f.trim_start_matches("r#")))
        .collect();
    (field.join("."), parts[n..].join(": "))
}

/// The [`tower_layer::Layer`] that puts [`Wire`] in front of the listener's services.
#[derive(Clone)]
pub struct WireLayer {
    ras: Arc<RaDirectory>,
}

impl WireLayer {
    /// A layer that names callers from `ras` in its log lines.
    pub fn new(ras: Arc<RaDirectory>) -> WireLayer {
        WireLayer { ras }
    }
}

impl<S> tower_layer::Layer<S> for WireLayer {
    type Service = Wire<S>;

    fn layer(&self, inner: S) -> Wire<S> {
        Wire {
            inner,
            ras: self.ras.clone(),
        }
    }
}

/// See the module documentation.
#[derive(Clone)]
pub struct Wire<S> {
    inner: S,
    ras: Arc<RaDirectory>,
}

impl<S> tower_service::Service<http::Request<Body>> for Wire<S>
where
    S: tower_service::Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let started = Instant::now();
        // Kept cheap (an Arc and a path); who the caller is is worked out only for a refusal.
        let connection = request
            .extensions()
            .get::<TlsConnectInfo<TcpConnectInfo>>()
            .cloned();
        let path = request.uri().path().to_owned();
        let ras = self.ras.clone();
        let answer = self.inner.call(request);
        Box::pin(async move {
            let response = answer.await?;
            let Some(better) = response.extensions().get::<Status>().and_then(remap) else {
                return Ok(response);
            };
            let caller = Caller::of(&path, connection.as_ref(), &ras);
            tracing::info!(
                rpc = %Escaped(&caller.rpc),
                ra = %Escaped(&caller.ra),
                request_id = %"-",
                peer = %caller.peer,
                code = super::error::code_name(better.code()),
                elapsed_ms = started.elapsed().as_millis() as u64,
                message = %Escaped(better.message()),
                "call"
            );
            Ok(better.into_http())
        })
    }
}

/// Who called what, for the log line: the method's name, the RA its certificate names
/// (`-` for none), the peer's address.
struct Caller {
    rpc: String,
    ra: String,
    peer: String,
}

impl Caller {
    fn of(path: &str, info: Option<&TlsConnectInfo<TcpConnectInfo>>, ras: &RaDirectory) -> Caller {
        let rpc = path.rsplit('/').next().unwrap_or(path).to_owned();
        let certs = info.and_then(|i| i.peer_certs());
        let ra = ras
            .identify(certs.as_deref().map(|c| c.as_slice()))
            .map_or_else(|_| "-".to_owned(), |ra| ra.name.clone());
        let peer = info
            .and_then(|i| i.get_ref().remote_addr())
            .map_or_else(|| "-".to_owned(), |a| a.to_string());
        Caller { rpc, ra, peer }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prost_decode_errors_become_invalid_argument_naming_the_field() {
        let s = Status::internal(
            "failed to decode Protobuf message: Approval.officer: IssueRequest.approval: invalid string value: data is not UTF-8 encoded",
        );
        let r = remap(&s).expect("remapped");
        assert_eq!(r.code(), Code::InvalidArgument);
        let br = r.get_details_bad_request().expect("BadRequest");
        assert_eq!(br.field_violations[0].field, "approval.officer");
        assert_eq!(
            br.field_violations[0].description,
            "invalid string value: data is not UTF-8 encoded"
        );
        let s = Status::internal(
            "failed to decode Protobuf message: SubjectAttribute.r#type: IssueRequest.subject: buffer underflow",
        );
        let br = remap(&s).unwrap().get_details_bad_request().unwrap();
        assert_eq!(br.field_violations[0].field, "subject.type");
        let s = Status::internal("failed to decode Protobuf message: invalid wire type value: 7");
        let r = remap(&s).unwrap();
        let br = r.get_details_bad_request().unwrap();
        assert_eq!(br.field_violations[0].field, "");
        assert_eq!(
            br.field_violations[0].description,
            "invalid wire type value: 7"
        );
    }

    #[test]
    fn framing_refusals_and_size_are_remapped_and_signets_own_statuses_are_not() {
        assert_eq!(
            remap(&Status::internal(TONIC_EOF)).map(|s| s.code()),
            Some(Code::InvalidArgument)
        );
        assert_eq!(
            remap(&Status::internal(TONIC_MISSING)).map(|s| s.code()),
            Some(Code::InvalidArgument)
        );
        let big = remap(&Status::out_of_range(
            "Error, decoded message length too large: found 5000000 bytes, the limit is: 4194304 bytes",
        ))
        .expect("remapped");
        assert_eq!(big.code(), Code::ResourceExhausted);
        assert!(big.message().contains("5000000 bytes"), "{}", big.message());
        for own in [
            Status::internal("internal error; the CA operator has the details in the log"),
            Status::internal(
                "protocol error: received message with compressed-flag but no grpc-encoding was specified",
            ),
            Status::invalid_argument("csr: not DER"),
            Status::out_of_range("something else"),
        ] {
            assert!(remap(&own).is_none(), "{own:?}");
        }
    }
}
