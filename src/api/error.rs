//! The one place where what went wrong becomes a gRPC status: [`CaError`] for the
//! authority's answers (and for malformed fields, which the API layer reports the same way),
//! [`Refusal`] for what the API layer itself refuses (permission, deadlines). Clients see
//! codes and CA-authored messages, never HSM internals or database text: those are logged
//! here and replaced by a generic message. INVALID_ARGUMENT carries a `google.rpc.BadRequest`
//! with one field violation per problem of the request.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, FieldViolation, StatusExt};

use crate::ca::{CaError, Violation};
use crate::escape::Escaped;
use crate::token::TokenError;

/// Why the API layer refused a call before or around the authority.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The client certificate matches no configured RA, or the RA lacks the operation or
    /// profile.
    #[error("{0}")]
    PermissionDenied(String),
    /// The call's deadline (its grpc-timeout, or the configured default) passed.
    #[error("the deadline of {0} ms passed before the call completed")]
    DeadlineExceeded(u128),
    /// The client certificate no longer stands: revoked, on hold, expired or not yet valid.
    #[error(transparent)]
    Credentials(#[from] super::credentials::Problem),
    /// The authority answered with an error, or a field of the message does not convert
    /// ([`CaError::Invalid`], naming the proto path of each field, e.g. `subject[2].type`).
    #[error(transparent)]
    Ca(#[from] CaError),
    /// The token workstation answered with an error.
    #[error(transparent)]
    Token(#[from] TokenError),
}

impl Refusal {
    /// A malformed field.
    pub fn field(field: impl Into<String>, problem: impl Into<String>) -> Refusal {
        Refusal::Ca(CaError::Invalid {
            field: field.into(),
            problem: problem.into(),
            also: Vec::new(),
        })
    }

    /// Permission denied with this message.
    pub fn denied(message: impl Into<String>) -> Refusal {
        Refusal::PermissionDenied(message.into())
    }
}

/// The canonical gRPC name of a code (`INVALID_ARGUMENT`), for logs and people.
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// Longest problem text sent back, in bytes: problems quote what the client sent, and a
/// status travels in HTTP/2 trailers, which clients limit (gRPC C-core: 8 KiB in all).
const MAX_PROBLEM: usize = 240;
/// Most bytes of field violations in one BadRequest; the rest are counted in the message.
const MAX_DETAILS: usize = 4096;
/// Longest status message, in bytes, before the "and N more" note.
const MAX_MESSAGE: usize = 600;

/// `text` cut to at most `max` bytes at a character boundary, marked with "…" when cut.
fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// INVALID_ARGUMENT naming every field at fault: one BadRequest field violation per
/// problem (as many as fit in [`MAX_DETAILS`]), and a message listing them.
fn bad_request(violations: &[Violation]) -> Status {
    let mut details = Vec::new();
    let mut size = 0;
    for v in violations {
        let problem = clip(&v.problem, MAX_PROBLEM);
        let field = clip(&v.field, MAX_PROBLEM);
        size += field.len() + problem.len();
        if size > MAX_DETAILS && !details.is_empty() {
            break;
        }
        details.push(FieldViolation::new(field, problem));
    }
    let mut message = String::new();
    let mut listed = 0;
    for v in violations {
        let next = format!(
            "{}{}: {}",
            if listed == 0 { "" } else { "; " },
            clip(&v.field, MAX_PROBLEM),
            clip(&v.problem, MAX_PROBLEM)
        );
        if listed > 0 && message.len() + next.len() > MAX_MESSAGE {
            break;
        }
        message.push_str(&next);
        listed += 1;
    }
    if listed < violations.len() {
        message.push_str(&format!(
            " (and {} more problems{})",
            violations.len() - listed,
            if details.len() > listed {
                "; the BadRequest detail lists more"
            } else {
                ""
            }
        ));
    }
    if details.len() < violations.len() {
        tracing::debug!(
            listed = details.len(),
            found = violations.len(),
            "BadRequest detail cut to fit a status"
        );
    }
    Status::with_error_details(
        Code::InvalidArgument,
        message,
        ErrorDetails::with_bad_request(details),
    )
}

fn bad_field(field: &str, problem: &str) -> Status {
    bad_request(&[Violation::new(field, problem)])
}

impl From<Refusal> for Status {
    fn from(r: Refusal) -> Status {
        match r {
            Refusal::PermissionDenied(m) => Status::permission_denied(m),
            Refusal::Credentials(p @ super::credentials::Problem::Unchecked(_)) => {
                Status::unavailable(p.to_string())
            }
            Refusal::Credentials(p) => Status::unauthenticated(p.to_string()),
            Refusal::DeadlineExceeded(_) => Status::deadline_exceeded(r.to_string()),
            Refusal::Ca(e) => ca_status(e),
            Refusal::Token(e) => token_status(e),
        }
    }
}

/// Map a workstation error to the status a client sees: a wrong PIN names its field (with
/// the tries left), a locked PIN names `UnblockPin`, an absent token is UNAVAILABLE.
fn token_status(e: TokenError) -> Status {
    match e {
        TokenError::Invalid { field, problem } => bad_field(&field, &problem),
        e @ TokenError::WrongPin { .. } => {
            let field = match &e {
                TokenError::WrongPin { field, .. } => field.clone(),
                _ => String::new(),
            };
            let message = e.to_string();
            let problem = message
                .strip_prefix(&format!("{field}: "))
                .unwrap_or(&message)
                .to_owned();
            bad_field(&field, &problem)
        }
        e @ TokenError::PinLocked { .. } => Status::failed_precondition(e.to_string()),
        TokenError::FailedPrecondition(m) => Status::failed_precondition(m),
        e @ TokenError::AlreadyExists(_) => Status::already_exists(e.to_string()),
        e @ TokenError::Absent { .. } => Status::unavailable(e.to_string()),
        TokenError::Refused(ca) => {
            let s = ca_status(ca);
            Status::with_details(
                s.code(),
                format!(
                    "{} (the new key pair was removed from the token)",
                    s.message()
                ),
                bytes::Bytes::copy_from_slice(s.details()),
            )
        }
        TokenError::Unavailable(detail) => {
            tracing::warn!(detail = %Escaped(&detail), "answering UNAVAILABLE");
            Status::unavailable(
                "the CA or the store is temporarily unavailable; retry with the same request_id",
            )
        }
        TokenError::Internal(detail) => {
            tracing::error!(detail = %Escaped(&detail), "internal error");
            Status::internal("internal error; the operator has the details in the log")
        }
    }
}

/// Map an authority error to the status a client sees.
fn ca_status(e: CaError) -> Status {
    match e {
        e @ CaError::Invalid { .. } => match e.into_violations() {
            Ok(all) => bad_request(&all),
            Err(other) => ca_status(other),
        },
        CaError::FailedPrecondition(m) => Status::failed_precondition(m),
        e @ CaError::AlreadyExists { .. } => Status::already_exists(e.to_string()),
        CaError::NotFound(m) => Status::not_found(m),
        CaError::Unavailable(detail) => {
            tracing::warn!(detail = %Escaped(&detail), "answering UNAVAILABLE");
            Status::unavailable("the CA is temporarily unavailable; retry with the same request_id")
        }
        CaError::Internal(detail) => {
            tracing::error!(detail = %Escaped(&detail), "internal error");
            Status::internal("internal error; the CA operator has the details in the log")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_carries_a_bad_request_naming_the_field() {
        let s: Status = Refusal::field("csr", "not DER").into();
        assert_eq!(s.code(), Code::InvalidArgument);
        assert_eq!(s.message(), "csr: not DER");
        let br = s.get_details_bad_request().expect("BadRequest detail");
        assert_eq!(br.field_violations[0].field, "csr");
        assert_eq!(br.field_violations[0].description, "not DER");
    }

    #[test]
    fn every_violation_becomes_a_field_violation() {
        let all = vec![
            Violation::new("request_id", "is required"),
            Violation::new("subject[1].type", "unknown attribute type \"XX\""),
            Violation::new("csr", "not DER"),
        ];
        let s: Status = Refusal::Ca(CaError::from_violations(all).unwrap()).into();
        assert_eq!(s.code(), Code::InvalidArgument);
        let fields: Vec<String> = s
            .get_details_bad_request()
            .expect("BadRequest detail")
            .field_violations
            .into_iter()
            .map(|v| v.field)
            .collect();
        assert_eq!(fields, ["request_id", "subject[1].type", "csr"]);
        assert!(s.message().contains("; csr: not DER"), "{}", s.message());
    }

    #[test]
    fn a_status_stays_small_however_much_the_client_sent() {
        let huge = "x".repeat(100_000);
        let all: Vec<Violation> = (0..500)
            .map(|i| Violation::new(format!("sans[{i}]"), format!("{huge:?} is bad")))
            .collect();
        let s: Status = Refusal::Ca(CaError::from_violations(all).unwrap()).into();
        assert!(s.message().len() < 1000, "{}", s.message().len());
        assert!(s.message().contains("more problems"), "{}", s.message());
        let br = s.get_details_bad_request().expect("BadRequest detail");
        let size: usize = br
            .field_violations
            .iter()
            .map(|v| v.field.len() + v.description.len())
            .sum();
        assert!(size <= MAX_DETAILS + MAX_PROBLEM * 2, "{size}");
        assert!(br.field_violations.len() > 1);
        assert!(br.field_violations[0].description.ends_with('…'));
        assert_eq!(clip("名名名", 7), "名…");
    }

    #[test]
    fn internal_and_unavailable_hide_their_details() {
        let s: Status = Refusal::Ca(CaError::Internal("CKR_GENERAL_ERROR in slot 3".into())).into();
        assert_eq!(s.code(), Code::Internal);
        assert!(!s.message().contains("CKR"), "{}", s.message());
        let s: Status = Refusal::Ca(CaError::Unavailable("HSM: CKR_DEVICE_REMOVED".into())).into();
        assert_eq!(s.code(), Code::Unavailable);
        assert!(!s.message().contains("CKR"), "{}", s.message());
    }

    #[test]
    fn every_class_has_its_code() {
        let cases = [
            (
                CaError::FailedPrecondition("x".into()),
                Code::FailedPrecondition,
            ),
            (
                CaError::AlreadyExists {
                    ra: "a".into(),
                    request_id: "r".into(),
                    serial: "01".into(),
                },
                Code::AlreadyExists,
            ),
            (CaError::NotFound("x".into()), Code::NotFound),
        ];
        for (e, code) in cases {
            assert_eq!(Status::from(Refusal::Ca(e)).code(), code);
        }
        assert_eq!(
            Status::from(Refusal::denied("no")).code(),
            Code::PermissionDenied
        );
        assert_eq!(
            Status::from(Refusal::DeadlineExceeded(5)).code(),
            Code::DeadlineExceeded
        );
    }
}
