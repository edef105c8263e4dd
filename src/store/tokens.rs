//! The token journals: how far each personalisation and each initialisation got, so a retry
//! with the same request id finishes it instead of doing it again.

use super::error::StoreError;

/// How far the personalisation of a token got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenJobState {
    /// The key pair is on the token and the CSR is made; the CA has not answered yet.
    Generated,
    /// The CA issued the certificate; it may not be on the token yet.
    Issued,
    /// Certificate and chain are on the token and the pair was proved to work.
    Written,
    /// The CA refused; the key pair was destroyed. The request id may be used again.
    Abandoned,
}

impl TokenJobState {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenJobState::Generated => "generated",
            TokenJobState::Issued => "issued",
            TokenJobState::Written => "written",
            TokenJobState::Abandoned => "abandoned",
        }
    }

    /// Parse the stored name.
    pub fn parse(s: &str) -> Result<TokenJobState, StoreError> {
        match s {
            "generated" => Ok(TokenJobState::Generated),
            "issued" => Ok(TokenJobState::Issued),
            "written" => Ok(TokenJobState::Written),
            "abandoned" => Ok(TokenJobState::Abandoned),
            other => Err(StoreError::Corrupt(format!(
                "unknown token job state {other:?}"
            ))),
        }
    }
}

/// The journal entry of one personalisation request: enough to finish it after a failure
/// with the identical request (same CSR bytes), so the CA answers with the same certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenJob {
    /// The workstation's request id, also the CA request id.
    pub request_id: String,
    /// The token's serial number.
    pub token_serial: String,
    /// CKA_LABEL of key pair and certificate.
    pub label: String,
    /// CKA_ID of key pair and certificate (SHA-1 of the public key).
    pub key_id: Vec<u8>,
    /// Key type name (`p256`, `rsa2048`, ...).
    pub key_type: String,
    /// SHA-256 (hex) of the personalisation request (never the PIN); a retry must match.
    pub request_digest: String,
    /// The CSR as sent to the CA, DER.
    pub csr_der: Vec<u8>,
    /// How far it got.
    pub state: TokenJobState,
    /// The issued certificate, DER, once the CA answered.
    pub cert_der: Option<Vec<u8>>,
    /// The CA certificates of the chain, DER, issuing CA first.
    pub chain_der: Vec<Vec<u8>>,
    /// Why it was abandoned, or empty.
    pub detail: String,
    /// When the entry was first written, Unix seconds.
    pub created_at: i64,
    /// When it last changed, Unix seconds.
    pub updated_at: i64,
}

/// How far the initialisation of a token got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenInitState {
    /// Recorded before C_InitToken: the token as it was, the slot it is in.
    Started,
    /// C_InitToken done; the token's serial afterwards is known. No user PIN yet.
    Wiped,
    /// User PIN set, audit entry written: the answer was (or may be) sent.
    Done,
}

impl TokenInitState {
    /// The name stored in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenInitState::Started => "started",
            TokenInitState::Wiped => "wiped",
            TokenInitState::Done => "done",
        }
    }

    /// Parse the stored name.
    pub fn parse(s: &str) -> Result<TokenInitState, StoreError> {
        match s {
            "started" => Ok(TokenInitState::Started),
            "wiped" => Ok(TokenInitState::Wiped),
            "done" => Ok(TokenInitState::Done),
            other => Err(StoreError::Corrupt(format!(
                "unknown token initialisation state {other:?}"
            ))),
        }
    }
}

/// The journal entry of one initialisation request (never a PIN).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenInit {
    /// The workstation's request id.
    pub request_id: String,
    /// SHA-256 (hex) of the request without its PINs; a retry must match.
    pub request_digest: String,
    /// The token as the request named it (serial, URI or slot handle).
    pub token: String,
    /// The PKCS#11 module that holds it.
    pub module: String,
    /// The slot it was in when initialised.
    pub slot: u64,
    /// Its serial before (empty for a blank token that reports none).
    pub old_serial: String,
    /// Its label before.
    pub old_label: String,
    /// The slot's fingerprint before: unchanged means C_InitToken has not happened.
    pub old_fingerprint: String,
    /// Its serial afterwards (some modules draw a new one), once known.
    pub new_serial: String,
    /// The new label.
    pub label: String,
    /// Whether valid certificates were wiped on purpose.
    pub force: bool,
    /// Serials of the valid certificates that were on it.
    pub wiped_certificates: Vec<String>,
    /// How far it got.
    pub state: TokenInitState,
    /// When the entry was first written, Unix seconds.
    pub created_at: i64,
    /// When it last changed, Unix seconds.
    pub updated_at: i64,
}
