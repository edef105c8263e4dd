//! What can go wrong talking to the HSM, and the three classes PKCS#11 return values fall
//! into: session trouble (reopen and retry once), device trouble (finalise and reconnect with
//! backoff) and final answers (returned as they are).

use cryptoki::error::{Error as CkError, RvError};

/// What can go wrong using the HSM. Messages read as sentences and never contain PINs.
#[derive(Debug, thiserror::Error)]
pub enum HsmError {
    /// The device is gone or signet is reconnecting to it; the same call may succeed later.
    #[error("the HSM is unavailable ({reason}); retry later")]
    Unavailable {
        /// Why the HSM is unavailable, e.g. the return value that took it down.
        reason: String,
    },
    /// No private key with this label exists on the token.
    #[error("no private key labelled {label:?} exists on the token")]
    KeyNotFound {
        /// The CKA_LABEL searched for.
        label: String,
    },
    /// Key generation refused to reuse a label.
    #[error("an object labelled {label:?} already exists on the token")]
    KeyExists {
        /// The CKA_LABEL that is taken.
        label: String,
    },
    /// No slot holds a token with this label or serial number.
    #[error("no token matching {selector} is present")]
    TokenNotFound {
        /// The selector that matched nothing, e.g. `label "signet-ca"`.
        selector: String,
    },
    /// The token rejected the user PIN.
    #[error("the token rejected the user PIN")]
    PinIncorrect,
    /// The user PIN is locked after too many wrong attempts.
    #[error("the token's user PIN is locked")]
    PinLocked,
    /// The key cannot be used with the requested mechanism.
    #[error("{mechanism} cannot be used with key {label:?}: {reason}")]
    Mechanism {
        /// The mechanism or signature algorithm asked for.
        mechanism: String,
        /// The key's label.
        label: String,
        /// What the token or signet said about it.
        reason: String,
    },
    /// The PKCS#11 module could not be loaded at all (a wrong path or a broken library).
    #[error("cannot load the PKCS#11 module {path}: {reason}")]
    Module {
        /// The module path from the settings.
        path: String,
        /// The loader's message.
        reason: String,
    },
    /// A PKCS#11 URI that signet cannot use.
    #[error("cannot use the PKCS#11 URI {uri:?}: {reason}")]
    InvalidUri {
        /// The URI as given.
        uri: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A key's attributes on the token do not describe a public key signet understands.
    #[error("the public key of {label:?} cannot be read: {reason}")]
    InvalidKey {
        /// The key's label.
        label: String,
        /// What is wrong with the attributes.
        reason: String,
    },
    /// [`crate::hsm::Hsm::close`] was called; the handle cannot be used any more.
    #[error("the HSM handle has been closed")]
    Closed,
    /// Any other PKCS#11 failure.
    #[error("PKCS#11 {op} failed with {rv}")]
    Pkcs11 {
        /// The operation that failed, e.g. `C_Sign`.
        op: &'static str,
        /// The return value, e.g. `CKR_DATA_LEN_RANGE` or the wrapper's message.
        rv: String,
    },
}

impl HsmError {
    /// True when the HSM is down or recovering and the call is safe to retry later.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, HsmError::Unavailable { .. })
    }

    /// A short name of the kind of error, for metrics labels.
    pub fn class(&self) -> &'static str {
        match self {
            HsmError::Unavailable { .. } => "unavailable",
            HsmError::KeyNotFound { .. } => "key_not_found",
            HsmError::KeyExists { .. } => "key_exists",
            HsmError::TokenNotFound { .. } => "token_not_found",
            HsmError::PinIncorrect | HsmError::PinLocked => "pin",
            HsmError::Mechanism { .. } => "mechanism",
            HsmError::Module { .. } => "module",
            HsmError::InvalidUri { .. } => "uri",
            HsmError::InvalidKey { .. } => "invalid_key",
            HsmError::Closed => "closed",
            HsmError::Pkcs11 { .. } => "pkcs11",
        }
    }
}

/// How signet reacts to a failed PKCS#11 call.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The session or a handle went stale: replace the session, re-find the key, retry once.
    Session(HsmError),
    /// The device or module is gone: finalise, reconnect in the background with backoff.
    Device(String),
    /// An answer to hand back as it is.
    Final(HsmError),
}

impl Failure {
    /// Classify a cryptoki error from operation `op`.
    pub(crate) fn from_ck(op: &'static str, err: CkError) -> Failure {
        match err {
            CkError::Pkcs11(rv, _) => Failure::from_rv(op, rv),
            // The module could not be reached at all.
            CkError::LibraryLoading(e) => Failure::Device(format!("{op}: {e}")),
            other => Failure::Final(HsmError::Pkcs11 {
                op,
                rv: other.to_string(),
            }),
        }
    }

    /// Classify a PKCS#11 return value from operation `op`.
    pub(crate) fn from_rv(op: &'static str, rv: RvError) -> Failure {
        match class_of(rv) {
            Class::Session => Failure::Session(HsmError::Pkcs11 {
                op,
                rv: rv_name(rv),
            }),
            Class::Device => Failure::Device(format!("{op} returned {}", rv_name(rv))),
            Class::Final => Failure::Final(final_error(op, rv)),
        }
    }

    /// The error to hand to the caller when no retry or recovery is left to try.
    pub(crate) fn into_error(self) -> HsmError {
        match self {
            Failure::Session(e) | Failure::Final(e) => e,
            Failure::Device(reason) => HsmError::Unavailable { reason },
        }
    }
}

/// The three classes of PKCS#11 failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Class {
    Session,
    Device,
    Final,
}

/// Which class a return value belongs to.
pub(crate) fn class_of(rv: RvError) -> Class {
    match rv {
        RvError::SessionHandleInvalid
        | RvError::SessionClosed
        | RvError::ObjectHandleInvalid
        | RvError::KeyHandleInvalid
        | RvError::UserNotLoggedIn => Class::Session,
        RvError::DeviceRemoved
        | RvError::TokenNotPresent
        | RvError::DeviceError
        | RvError::CryptokiNotInitialized
        | RvError::GeneralError
        | RvError::SlotIdInvalid
        | RvError::TokenNotRecognized => Class::Device,
        _ => Class::Final,
    }
}

fn final_error(op: &'static str, rv: RvError) -> HsmError {
    match rv {
        RvError::PinIncorrect => HsmError::PinIncorrect,
        RvError::PinLocked => HsmError::PinLocked,
        _ => HsmError::Pkcs11 {
            op,
            rv: rv_name(rv),
        },
    }
}

/// True for return values that say a key or mechanism cannot do what was asked.
pub(crate) fn is_mechanism_rv(rv: RvError) -> bool {
    matches!(
        rv,
        RvError::MechanismInvalid
            | RvError::MechanismParamInvalid
            | RvError::KeyTypeInconsistent
            | RvError::KeyFunctionNotPermitted
            | RvError::KeySizeRange
            | RvError::CurveNotSupported
            | RvError::DomainParamsInvalid
    )
}

/// `CKR_`-style name of a return value, e.g. `CKR_DEVICE_ERROR` from `DeviceError`.
pub(crate) fn rv_name(rv: RvError) -> String {
    let debug = format!("{rv:?}");
    if !debug.chars().all(|c| c.is_ascii_alphanumeric()) {
        // VendorDefined(0x...) and UnknownErrorCode(..) keep their own spelling.
        return debug;
    }
    let mut name = String::from("CKR");
    for c in debug.chars() {
        if c.is_ascii_uppercase() {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn return_values_get_their_ckr_names() {
        assert_eq!(rv_name(RvError::DeviceError), "CKR_DEVICE_ERROR");
        assert_eq!(
            rv_name(RvError::SessionHandleInvalid),
            "CKR_SESSION_HANDLE_INVALID"
        );
    }

    #[test]
    fn return_values_fall_into_the_documented_classes() {
        assert_eq!(class_of(RvError::SessionHandleInvalid), Class::Session);
        assert_eq!(class_of(RvError::UserNotLoggedIn), Class::Session);
        assert_eq!(class_of(RvError::DeviceRemoved), Class::Device);
        assert_eq!(class_of(RvError::CryptokiNotInitialized), Class::Device);
        assert_eq!(class_of(RvError::PinLocked), Class::Final);
        assert!(matches!(
            Failure::from_rv("C_Login", RvError::PinIncorrect),
            Failure::Final(HsmError::PinIncorrect)
        ));
    }

    #[test]
    fn unavailable_is_the_only_retryable_error() {
        assert!(HsmError::Unavailable { reason: "x".into() }.is_unavailable());
        assert!(!HsmError::PinLocked.is_unavailable());
    }
}
