//! The one place where what went wrong becomes a gRPC status: [`CaError`] for the
//! authority's answers, [`Refusal`] for what the API layer itself refuses (permission,
//! malformed messages, deadlines). Clients see codes and CA-authored messages, never HSM
//! internals or database text: those are logged here and replaced by a generic message.

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::ca::CaError;
use crate::token::TokenError;

/// Why the API layer refused a call before or around the authority.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// The client certificate matches no configured RA, or the RA lacks the operation or
    /// profile.
    #[error("{0}")]
    PermissionDenied(String),
    /// A message field that does not convert to the domain type; `field` is the proto path,
    /// e.g. `subject[2].type`.
    #[error("{field}: {problem}")]
    InvalidField {
        /// The proto field path.
        field: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The call's deadline (its grpc-timeout, or the configured default) passed.
    #[error("the deadline of {0} ms passed before the call completed")]
    DeadlineExceeded(u128),
    /// The authority answered with an error.
    #[error(transparent)]
    Ca(#[from] CaError),
    /// The token workstation answered with an error.
    #[error(transparent)]
    Token(#[from] TokenError),
}

impl Refusal {
    /// A malformed field.
    pub fn field(field: impl Into<String>, problem: impl Into<String>) -> Refusal {
        Refusal::InvalidField {
            field: field.into(),
            problem: problem.into(),
        }
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

fn bad_request(field: &str, problem: &str) -> Status {
    Status::with_error_details(
        Code::InvalidArgument,
        format!("{field}: {problem}"),
        ErrorDetails::with_bad_request_violation(field, problem),
    )
}

impl From<Refusal> for Status {
    fn from(r: Refusal) -> Status {
        match r {
            Refusal::PermissionDenied(m) => Status::permission_denied(m),
            Refusal::InvalidField { field, problem } => bad_request(&field, &problem),
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
        TokenError::Invalid { field, problem } => bad_request(&field, &problem),
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
            bad_request(&field, &problem)
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
            tracing::warn!(%detail, "answering UNAVAILABLE");
            Status::unavailable(
                "the CA or the store is temporarily unavailable; retry with the same request_id",
            )
        }
        TokenError::Internal(detail) => {
            tracing::error!(%detail, "internal error");
            Status::internal("internal error; the operator has the details in the log")
        }
    }
}

/// Map an authority error to the status a client sees.
fn ca_status(e: CaError) -> Status {
    match e {
        CaError::Invalid { field, problem } => bad_request(&field, &problem),
        CaError::FailedPrecondition(m) => Status::failed_precondition(m),
        e @ CaError::AlreadyExists { .. } => Status::already_exists(e.to_string()),
        CaError::NotFound(m) => Status::not_found(m),
        CaError::Unavailable(detail) => {
            tracing::warn!(%detail, "answering UNAVAILABLE");
            Status::unavailable("the CA is temporarily unavailable; retry with the same request_id")
        }
        CaError::Internal(detail) => {
            tracing::error!(%detail, "internal error");
            Status::internal("internal error; the CA operator has the details in the log")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_carries_a_bad_request_naming_the_field() {
        let s: Status = Refusal::Ca(CaError::Invalid {
            field: "csr".into(),
            problem: "not DER".into(),
        })
        .into();
        assert_eq!(s.code(), Code::InvalidArgument);
        let br = s.get_details_bad_request().expect("BadRequest detail");
        assert_eq!(br.field_violations[0].field, "csr");
        assert_eq!(br.field_violations[0].description, "not DER");
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
