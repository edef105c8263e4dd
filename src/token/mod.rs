//! Token personalisation: the engine of the RA office's workstation that takes a subscriber's
//! PKCS#11 token (named by serial) from blank to personalised. The key pair is born on the
//! token and never leaves it; the CSR is signed on the token as proof of possession; the CA
//! (in-process or remote, through [`CertificateIssuer`]) certifies it; certificate and chain
//! are written back and the pair is proved to work before the request counts as done.
//!
//! Nothing is left half-done: a journal entry per request id (in the store) records the
//! key's CKA_ID and the exact CSR sent. A refusal by the CA destroys the new key pair; a
//! failure after issuance (or a token pulled out) is finished by a retry with the same
//! request id, which sends the identical request and gets the same certificate back.
//!
//! Tokens are named the way real ones can be: by serial when they have one, else by a
//! `pkcs11:` URI or a slot handle from `ListTokens` ([`TokenName`]). Initialisation keeps
//! the slot it wiped and reads the token's serial back from it, since some modules (kryoptic)
//! draw a new serial at every C_InitToken; its own journal lets a retry with the same request
//! id finish it (`init.rs`). A token that cannot be found makes the workstation re-initialise
//! the token modules that serve no CA and look again, so tokens initialised by other programs
//! are seen by modules that read token state only at `C_Initialize`.
//!
//! PINs are [`Secret`]s, checked against the policy and never logged. SoftHSM never locks a
//! user PIN (it only raises CKF_USER_PIN_COUNT_LOW), so signet also counts wrong PINs per
//! token serial itself and treats the PIN as locked at `max_pin_tries`; real tokens enforce
//! their own counter as well, and signet honours their CKF_USER_PIN_LOCKED.

use std::sync::Arc;

use der::Decode;
use sha2::{Digest, Sha256};
use x509_cert::Certificate;

use crate::audit::AuditEvent;
use crate::ca::{Approval, CaError, IssueRequest};
use crate::escape::Escaped;
use crate::hsm::HsmError;
use crate::hsm::address::{SlotHandle, TokenAddress};
use crate::hsm::token::{CertificateCategory, TokenInfo, TokenModule, TokenObject, TokenSession};
use crate::pki::{KeyType, San, SubjectSpec, csr};
use crate::secret::Secret;
use crate::store::{Store, StoreError, TokenJob, TokenJobState};

pub use crate::ca::issuer::{CertificateIssuer, InProcessIssuer, IssueError, IssuedCert};
pub use init::{InitializeRequest, Initialized};

mod init;

/// What can go wrong at the workstation. Messages never contain a PIN.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Bad input, naming the field. Nothing changed.
    #[error("{field}: {problem}")]
    Invalid {
        /// The request field at fault.
        field: String,
        /// What is wrong.
        problem: String,
    },
    /// The token refused the PIN; what the token (and signet's own count) says about the
    /// tries left.
    #[error("{field}: the token refused the PIN{}", tries_text(*.tries_left, *.count_low, *.final_try))]
    WrongPin {
        /// `user_pin`, `old_pin` or `so_pin`.
        field: String,
        /// Tries left before the PIN locks, by signet's count.
        tries_left: Option<u32>,
        /// The token's CKF_USER_PIN_COUNT_LOW.
        count_low: bool,
        /// The token's CKF_USER_PIN_FINAL_TRY (or signet's count says one try is left).
        final_try: bool,
    },
    /// The user PIN is locked.
    #[error(
        "the user PIN of token {serial} is locked; unblock it with UnblockPin (the SO PIN sets a new user PIN)"
    )]
    PinLocked {
        /// The token.
        serial: String,
    },
    /// The request is well-formed but the token's or the journal's state forbids it.
    #[error("{0}")]
    FailedPrecondition(String),
    /// The request id was used for a different personalisation.
    #[error("request_id {0:?} was already used for a different personalisation")]
    AlreadyExists(String),
    /// The token is not present (never inserted, or pulled out mid-way).
    #[error(
        "token {serial} is not present ({reason}); insert it and retry with the same request_id"
    )]
    Absent {
        /// The token.
        serial: String,
        /// What the module said.
        reason: String,
    },
    /// The CA refused the request; the key pair generated for it was destroyed.
    #[error("the CA refused the request (the new key pair was removed from the token): {0}")]
    Refused(CaError),
    /// The CA or the store is unavailable; retry with the same request id.
    #[error("temporarily unavailable: {0}; retry with the same request_id")]
    Unavailable(String),
    /// Something that should never happen.
    #[error("internal error: {0}")]
    Internal(String),
}

fn tries_text(tries_left: Option<u32>, count_low: bool, final_try: bool) -> String {
    let mut s = String::new();
    if let Some(n) = tries_left {
        s.push_str(&format!("; {n} tries left before it locks"));
    }
    if final_try {
        s.push_str("; the token says this is the final try");
    } else if count_low {
        s.push_str("; the token says its try counter is low");
    }
    s
}

impl From<StoreError> for TokenError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable { .. } => TokenError::Unavailable(e.to_string()),
            other => TokenError::Internal(other.to_string()),
        }
    }
}

fn invalid(field: &str, problem: impl Into<String>) -> TokenError {
    TokenError::Invalid {
        field: field.to_owned(),
        problem: problem.into(),
    }
}

/// A token as a request names it: its serial, a `pkcs11:` URI or a slot handle from
/// `ListTokens`, and the request field that carried it (errors name that field).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenName {
    /// What the client sent.
    pub text: String,
    /// The field it came in (`token_serial`, `token`).
    pub field: &'static str,
}

impl TokenName {
    /// `text` from the request field `field`.
    pub fn new(text: impl Into<String>, field: &'static str) -> TokenName {
        TokenName {
            text: text.into(),
            field,
        }
    }
}

impl From<&str> for TokenName {
    fn from(serial: &str) -> TokenName {
        TokenName::new(serial, "token_serial")
    }
}

impl From<&String> for TokenName {
    fn from(serial: &String) -> TokenName {
        TokenName::new(serial.clone(), "token_serial")
    }
}

impl From<String> for TokenName {
    fn from(serial: String) -> TokenName {
        TokenName::new(serial, "token_serial")
    }
}

/// A token found for a request: the module that holds it, where it is in that module's
/// list, and what it said about itself.
#[derive(Clone)]
struct Found {
    module: Arc<TokenModule>,
    index: usize,
    info: TokenInfo,
}

impl Found {
    /// The token's name in the journal, the PIN count and the audit log: its serial, or
    /// for a token without one the handle of its slot.
    fn name(&self) -> String {
        if self.info.serial.is_empty() {
            self.handle()
        } else {
            self.info.serial.clone()
        }
    }

    /// The handle of its slot as it is now.
    fn handle(&self) -> String {
        SlotHandle {
            module: self.index,
            slot: self.info.slot,
            fingerprint: self.info.fingerprint(),
        }
        .text()
    }
}

/// What the workstation enforces.
#[derive(Clone, Debug)]
pub struct TokenPolicy {
    /// Shortest PIN accepted.
    pub pin_min_len: usize,
    /// Longest PIN accepted.
    pub pin_max_len: usize,
    /// Wrong user PINs before signet treats the PIN as locked.
    pub max_pin_tries: u32,
    /// Key algorithms a subscriber key may have.
    pub key_types: Vec<KeyType>,
    /// CKA_LABEL of a personalised key pair and certificate when the request gives none:
    /// `{cn}`, `{profile}` and `{request_id}` are replaced (`[token] label_template`).
    pub label_template: String,
}

/// A certificate found on a token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertSummary {
    /// Subject, RFC 4514.
    pub subject: String,
    /// Serial, lower-case hex.
    pub serial: String,
    /// Issuer, RFC 4514.
    pub issuer: String,
    /// notAfter, Unix seconds.
    pub not_after: i64,
    /// CKA_LABEL.
    pub label: String,
    /// CKA_ID.
    pub id: Vec<u8>,
    /// A CA certificate (basicConstraints cA), such as the chain written beside the
    /// subscriber's own.
    pub is_ca: bool,
}

/// A token as `ListTokens` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenStatus {
    /// What the token says about itself.
    pub info: TokenInfo,
    /// A handle that names its slot until the slot changes (the only name of a blank token
    /// without a serial).
    pub handle: String,
    /// Its RFC 7512 URI.
    pub uri: String,
    /// Wrong user PINs counted by signet since the last good one.
    pub pin_failures: u32,
    /// Locked, by the token's flag or signet's count.
    pub pin_locked: bool,
    /// The certificates on it.
    pub certificates: Vec<CertSummary>,
}

/// A personalisation request. The subject and SANs are the RA's verified data.
#[derive(Clone, Debug)]
pub struct PersonalizeRequest {
    /// The token: serial, `pkcs11:` URI or slot handle.
    pub token: TokenName,
    /// The user PIN.
    pub user_pin: Secret,
    /// The subscriber key's algorithm.
    pub key_type: KeyType,
    /// CKA_LABEL for key pair and certificate; empty means the policy's label template.
    pub label: String,
    /// Profile name.
    pub profile: String,
    /// Issuer name; `None` takes the profile's default.
    pub issuer: Option<String>,
    /// Verified subject.
    pub subject: SubjectSpec,
    /// Verified SANs.
    pub sans: Vec<San>,
    /// Validity in years.
    pub validity_years: u32,
    /// Request id, also sent to the CA.
    pub request_id: String,
    /// The RA officer's approval.
    pub approval: Approval,
}

/// A personalised token's result.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Personalized {
    /// The certificate, DER.
    pub cert_der: Vec<u8>,
    /// The CA certificates of the chain, DER, issuing CA first.
    pub chain: Vec<Vec<u8>>,
    /// CKA_ID of key pair and certificate.
    pub key_id: Vec<u8>,
    /// CKA_LABEL of key pair and certificate.
    pub label: String,
}

/// The workstation: token modules, the store (journal, PIN counts, audit) and the CA.
pub struct Workstation {
    modules: Vec<Arc<TokenModule>>,
    store: Arc<dyn Store>,
    issuer: Arc<dyn CertificateIssuer>,
    policy: TokenPolicy,
    actor: String,
    /// Tokens the workstation never lists or touches: the CA's own HSM token, which one
    /// module may serve beside the subscribers' tokens (the quick start's SoftHSM).
    reserved: Vec<crate::hsm::TokenSelector>,
}

const MAX_LABEL: usize = 32;
const MAX_REQUEST_ID: usize = 128;

/// A token-layer error in workstation terms, for token `serial`.
fn from_hsm(serial: &str, e: HsmError) -> TokenError {
    match e {
        HsmError::Unavailable { reason } => TokenError::Absent {
            serial: serial.to_owned(),
            reason,
        },
        HsmError::TokenNotFound { .. } => TokenError::Absent {
            serial: serial.to_owned(),
            reason: "no slot holds it".into(),
        },
        HsmError::PinLocked => TokenError::PinLocked {
            serial: serial.to_owned(),
        },
        HsmError::PinIncorrect => TokenError::WrongPin {
            field: "user_pin".into(),
            tries_left: None,
            count_low: false,
            final_try: false,
        },
        HsmError::Pkcs11 { op, rv } if rv == "CKR_PIN_LEN_RANGE" || rv == "CKR_PIN_INVALID" => {
            invalid(
                "pin",
                format!("the token refused the new PIN in {op} ({rv})"),
            )
        }
        HsmError::Mechanism {
            mechanism, reason, ..
        } => invalid(
            "key_type",
            format!("the token cannot do {mechanism}: {reason}"),
        ),
        other => TokenError::Internal(format!("token {serial}: {other}")),
    }
}

/// Run blocking token work off the async executor.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, TokenError> + Send + 'static,
) -> Result<T, TokenError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| TokenError::Internal(format!("token task: {e}")))?
}

/// Run `f` in a fresh session on the token `found`, logged in as the user when `pin` is
/// given, off the async executor; token-layer errors in workstation terms.
async fn on_token<T: Send + 'static>(
    found: &Found,
    pin: Option<&Secret>,
    f: impl FnOnce(&TokenSession) -> Result<T, HsmError> + Send + 'static,
) -> Result<T, TokenError> {
    let (m, a, s, pin) = (
        found.module.clone(),
        found.info.address(),
        found.name(),
        pin.cloned(),
    );
    blocking(move || {
        m.with_session(&a, |t| {
            if let Some(pin) = &pin {
                t.login_user(pin)?;
            }
            f(t)
        })
        .map_err(|e| from_hsm(&s, e))
    })
    .await
}

/// The certificate's summary, or `None` if it does not parse.
pub fn summarize(obj: &TokenObject) -> Option<CertSummary> {
    let cert = Certificate::from_der(&obj.value).ok()?;
    let tbs = cert.tbs_certificate();
    Some(CertSummary {
        subject: tbs.subject().to_string(),
        serial: crate::pki::serial::serial_hex(tbs.serial_number()),
        issuer: tbs.issuer().to_string(),
        not_after: tbs.validity().not_after.to_unix_duration().as_secs() as i64,
        label: obj.label.clone(),
        id: obj.id.clone(),
        is_ca: is_ca(&cert),
    })
}

/// Whether any basicConstraints extension that decodes says cA. (`get_extension` would
/// refuse a certificate that repeats the extension; this keeps counting such a one as a CA
/// if any of them says so.)
fn is_ca(cert: &Certificate) -> bool {
    cert.tbs_certificate()
        .filter_extensions::<x509_cert::ext::pkix::BasicConstraints>()
        .any(|b| b.is_ok_and(|(_, b)| b.ca))
}

/// CKA_ID for a CA certificate: SHA-1 of its public key, like the subscriber's.
fn ca_key_id(cert: &Certificate) -> Vec<u8> {
    crate::pki::cert::key_identifier(cert.tbs_certificate().subject_public_key_info())
}

/// A label for a CA certificate on the token: its CN, cut to the label limit.
fn ca_label(cert: &Certificate) -> String {
    let subject = cert.tbs_certificate().subject().to_string();
    let cn = subject
        .split(',')
        .find_map(|p| p.trim().strip_prefix("CN="))
        .unwrap_or("CA");
    cn.chars().take(MAX_LABEL).collect()
}

impl Workstation {
    /// A workstation over `modules`, recording into `store`, asking `issuer`; `actor` names
    /// it in audit entries.
    pub fn new(
        modules: Vec<Arc<TokenModule>>,
        store: Arc<dyn Store>,
        issuer: Arc<dyn CertificateIssuer>,
        policy: TokenPolicy,
        actor: impl Into<String>,
    ) -> Workstation {
        Workstation {
            modules,
            store,
            issuer,
            policy,
            actor: actor.into(),
            reserved: Vec::new(),
        }
    }

    /// Never list or touch the token `selector` names (the CA's HSM token).
    pub fn reserve(mut self, selector: crate::hsm::TokenSelector) -> Workstation {
        self.reserved.push(selector);
        self
    }

    fn is_reserved(&self, info: &TokenInfo) -> bool {
        self.reserved
            .iter()
            .any(|r| r.matches(&info.label, &info.serial))
    }

    /// The policy in force.
    pub fn policy(&self) -> &TokenPolicy {
        &self.policy
    }

    fn check_pin(&self, field: &str, pin: &Secret) -> Result<(), TokenError> {
        let n = pin.len();
        if n < self.policy.pin_min_len || n > self.policy.pin_max_len {
            return Err(invalid(
                field,
                format!(
                    "must be {} to {} characters long (it has {n})",
                    self.policy.pin_min_len, self.policy.pin_max_len
                ),
            ));
        }
        if pin.expose().chars().any(char::is_control) {
            return Err(invalid(field, "contains control characters"));
        }
        Ok(())
    }

    /// The token `token` names, searched in every module. A name that matches nothing
    /// makes the modules that serve no CA re-read their slots (re-initialised), and the
    /// search runs once more: a token initialised or inserted since is then found even on a
    /// module that reads token state only at `C_Initialize`.
    async fn locate(&self, token: &TokenName) -> Result<Found, TokenError> {
        let field = token.field;
        let address = TokenAddress::parse(&token.text).map_err(|m| invalid(field, m))?;
        if let TokenAddress::Handle(h) = &address {
            if h.module >= self.modules.len() {
                return Err(invalid(
                    field,
                    format!(
                        "slot handle names module {} but this workstation has {}; list the tokens again",
                        h.module,
                        self.modules.len()
                    ),
                ));
            }
        }
        let modules = self.modules.clone();
        let reserved = self.reserved.clone();
        blocking(move || {
            let mut last = String::new();
            let mut refused_reserved = false;
            for attempt in 0..2 {
                let mut found = Vec::new();
                for (index, m) in modules.iter().enumerate() {
                    if matches!(&address, TokenAddress::Handle(h) if h.module != index) {
                        continue;
                    }
                    match m.find(&address) {
                        Ok(infos) => {
                            for info in infos {
                                if reserved
                                    .iter()
                                    .any(|r| r.matches(&info.label, &info.serial))
                                {
                                    refused_reserved = true;
                                } else {
                                    found.push(Found {
                                        module: m.clone(),
                                        index,
                                        info,
                                    });
                                }
                            }
                        }
                        Err(e) => last = format!("{}: {e}", m.path().display()),
                    }
                }
                match found.len() {
                    1 => return Ok(found.remove(0)),
                    0 if refused_reserved => {
                        return Err(invalid(
                            field,
                            "names the CA's own HSM token, which the workstation never touches",
                        ));
                    }
                    0 if attempt == 0 => {
                        for m in &modules {
                            m.refresh();
                        }
                    }
                    0 => {}
                    n => {
                        return Err(invalid(
                            field,
                            format!(
                                "names {n} tokens; give a serial, a fuller pkcs11: URI or a slot handle from ListTokens"
                            ),
                        ));
                    }
                }
            }
            match address {
                TokenAddress::Handle(h) => Err(TokenError::FailedPrecondition(format!(
                    "{field}: the slot handle {} no longer names a slot as listed (the token was initialised, removed or replaced since); list the tokens again",
                    h.text()
                ))),
                other => Err(TokenError::Absent {
                    serial: other.to_string(),
                    reason: if last.is_empty() {
                        "no slot holds it".into()
                    } else {
                        last
                    },
                }),
            }
        })
        .await
    }

    /// Every token present in every configured module, with its PIN state and certificates.
    /// The modules that serve no CA are re-initialised first, so the list shows tokens
    /// inserted, initialised or changed by other programs since the last call.
    pub async fn list_tokens(&self) -> Result<Vec<TokenStatus>, TokenError> {
        let modules = self.modules.clone();
        let found = blocking(move || {
            let mut out = Vec::new();
            for (index, m) in modules.iter().enumerate() {
                m.refresh();
                let infos = m
                    .list()
                    .map_err(|e| TokenError::Unavailable(format!("{}: {e}", m.path().display())))?;
                for info in infos {
                    let objects = if info.initialized {
                        m.with_session(&info.address(), |s| s.objects())
                            .unwrap_or_default()
                    } else {
                        Vec::new()
                    };
                    out.push((
                        Found {
                            module: m.clone(),
                            index,
                            info,
                        },
                        objects,
                    ));
                }
            }
            Ok(out)
        })
        .await?;
        let mut out = Vec::new();
        for (found, objects) in found {
            if self.is_reserved(&found.info) {
                continue;
            }
            let pin_failures = self.store.pin_failures(&found.name()).await?;
            out.push(TokenStatus {
                pin_locked: found.info.user_pin_locked || pin_failures >= self.policy.max_pin_tries,
                pin_failures,
                certificates: objects
                    .iter()
                    .filter(|o| o.class == "certificate")
                    .filter_map(summarize)
                    .collect(),
                handle: found.handle(),
                uri: found.info.uri(),
                info: found.info,
            });
        }
        Ok(out)
    }

    /// The certificates, keys and data objects on a token and how they are linked (by
    /// CKA_ID). With the user PIN, private keys are listed too.
    pub async fn read_token(
        &self,
        token: impl Into<TokenName>,
        user_pin: Option<Secret>,
    ) -> Result<Vec<TokenObject>, TokenError> {
        let token = token.into();
        if let Some(pin) = &user_pin {
            self.check_pin("user_pin", pin)?;
        }
        let found = self.locate(&token).await?;
        if let Some(pin) = &user_pin {
            self.login_check(&found, pin, "user_pin").await?;
        }
        on_token(&found, user_pin.as_ref(), |t| {
            let objects = t.objects();
            t.logout();
            objects
        })
        .await
    }

    /// Log in with the user PIN once, counting a wrong PIN against signet's limit and
    /// reporting the token's try flags; a good PIN resets the count.
    async fn login_check(
        &self,
        found: &Found,
        pin: &Secret,
        field: &str,
    ) -> Result<(), TokenError> {
        let name = found.name();
        let failures = self.store.pin_failures(&name).await?;
        if failures >= self.policy.max_pin_tries {
            return Err(TokenError::PinLocked { serial: name });
        }
        let (a, p, m) = (found.info.address(), pin.clone(), found.module.clone());
        let outcome = blocking(move || {
            Ok(m.with_session(&a, |t| {
                let r = t.login_user(&p);
                if r.is_ok() {
                    t.logout();
                }
                r
            }))
        })
        .await?;
        match outcome {
            Ok(()) => {
                if failures > 0 {
                    self.store.reset_pin_failures(&name, None).await?;
                }
                Ok(())
            }
            Err(HsmError::PinIncorrect) => {
                let n = self.store.record_pin_failure(&name).await?;
                let (m, a) = (found.module.clone(), found.info.address());
                let info = blocking(move || {
                    Ok(m.find(&a)
                        .ok()
                        .and_then(|mut v| (!v.is_empty()).then(|| v.remove(0))))
                })
                .await?;
                let locked = info.as_ref().is_some_and(|i| i.user_pin_locked);
                if locked || n >= self.policy.max_pin_tries {
                    tracing::warn!(token = %Escaped(&name), failures = n, "user PIN locked");
                    return Err(TokenError::PinLocked { serial: name });
                }
                let left = self.policy.max_pin_tries - n;
                tracing::warn!(token = %Escaped(&name), failures = n, "wrong user PIN");
                Err(TokenError::WrongPin {
                    field: field.to_owned(),
                    tries_left: Some(left),
                    count_low: info.as_ref().is_some_and(|i| i.user_pin_count_low),
                    final_try: left == 1 || info.as_ref().is_some_and(|i| i.user_pin_final_try),
                })
            }
            Err(e) => Err(from_hsm(&name, e)),
        }
    }

    fn audit(&self, action: &str, serial: &str, detail: serde_json::Value) -> AuditEvent {
        AuditEvent {
            actor: self.actor.clone(),
            action: action.into(),
            object: serial.to_owned(),
            request_digest: None,
            detail: detail.to_string(),
        }
    }

    /// Change the user PIN (old to new).
    pub async fn change_pin(
        &self,
        token: impl Into<TokenName>,
        old_pin: &Secret,
        new_pin: &Secret,
    ) -> Result<(), TokenError> {
        let token = token.into();
        self.check_pin("new_pin", new_pin)?;
        if old_pin.is_empty() {
            return Err(invalid("old_pin", "is required"));
        }
        let found = self.locate(&token).await?;
        self.login_check(&found, old_pin, "old_pin").await?;
        let (old, new) = (old_pin.clone(), new_pin.clone());
        on_token(&found, Some(old_pin), move |t| {
            let r = t.set_pin(&old, &new);
            t.logout();
            r
        })
        .await?;
        self.store
            .append_audit(self.audit("token.pin_changed", &found.name(), serde_json::json!({})))
            .await?;
        Ok(())
    }

    /// Unblock the user PIN: log in as SO and set a new user PIN; signet's count resets.
    pub async fn unblock_pin(
        &self,
        token: impl Into<TokenName>,
        so_pin: &Secret,
        new_user_pin: &Secret,
    ) -> Result<(), TokenError> {
        let token = token.into();
        if so_pin.is_empty() {
            return Err(invalid("so_pin", "is required"));
        }
        self.check_pin("new_user_pin", new_user_pin)?;
        let found = self.locate(&token).await?;
        let serial = found.name();
        let (m, a, s, so, new) = (
            found.module.clone(),
            found.info.address(),
            serial.clone(),
            so_pin.clone(),
            new_user_pin.clone(),
        );
        blocking(move || {
            m.with_session(&a, |t| {
                t.login_so(&so)?;
                let r = t.init_pin(&new);
                t.logout();
                r
            })
            .map_err(|e| match e {
                HsmError::PinIncorrect => TokenError::WrongPin {
                    field: "so_pin".into(),
                    tries_left: None,
                    count_low: false,
                    final_try: false,
                },
                HsmError::PinLocked => TokenError::FailedPrecondition(format!(
                    "the SO PIN of token {s} is locked; the token must be reinitialised by its issuer"
                )),
                other => from_hsm(&s, other),
            })
        })
        .await?;
        self.store
            .reset_pin_failures(
                &serial,
                Some(self.audit("token.pin_unblocked", &serial, serde_json::json!({}))),
            )
            .await?;
        tracing::info!(token = %Escaped(&serial), "user PIN unblocked");
        Ok(())
    }

    fn request_digest(req: &PersonalizeRequest, label: &str) -> String {
        let body = serde_json::json!({
            "token_serial": req.token.text,
            "key_type": req.key_type.name(),
            "label": label,
            "profile": req.profile,
            "issuer": req.issuer,
            "subject": req.subject.to_string(),
            "sans": req.sans.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "validity_years": req.validity_years,
            "approval": req.approval,
        });
        hex::encode(Sha256::digest(body.to_string().as_bytes()))
    }

    /// Personalise a token: key pair on the token, CSR signed on it, certified by the CA,
    /// certificate and chain written back, the pair proved to work. Exactly once per
    /// request id: a retry finishes what a failure left and answers with the same result.
    pub async fn personalize(&self, req: PersonalizeRequest) -> Result<Personalized, TokenError> {
        let rid = req.request_id.trim();
        if rid.is_empty() || rid.len() > MAX_REQUEST_ID {
            return Err(invalid(
                "request_id",
                format!("must be 1 to {MAX_REQUEST_ID} printable characters"),
            ));
        }
        crate::pki::text::check_chars(&req.request_id).map_err(|m| invalid("request_id", m))?;
        TokenAddress::parse(&req.token.text).map_err(|m| invalid(req.token.field, m))?;
        self.check_pin("user_pin", &req.user_pin)?;
        if !self.policy.key_types.contains(&req.key_type) {
            let allowed: Vec<&str> = self.policy.key_types.iter().map(|k| k.name()).collect();
            return Err(invalid(
                "key_type",
                format!(
                    "{} is not allowed here (allowed: {})",
                    req.key_type,
                    allowed.join(", ")
                ),
            ));
        }
        let label = if req.label.is_empty() {
            let cn = req.subject.get(crate::pki::name::Attr::CommonName);
            crate::config::render_label(
                &self.policy.label_template,
                cn.unwrap_or(&req.request_id),
                &req.profile,
                &req.request_id,
                MAX_LABEL * 2,
            )
        } else {
            req.label.clone()
        };
        if label.chars().count() > MAX_LABEL * 2 || label.chars().any(char::is_control) {
            return Err(invalid(
                "label",
                format!("must be at most {} printable characters", MAX_LABEL * 2),
            ));
        }
        crate::pki::text::check_chars(&label).map_err(|m| invalid("label", m))?;
        let digest = Self::request_digest(&req, &label);

        let mut job = match self.store.token_job(&req.request_id).await? {
            Some(j) if j.state != TokenJobState::Abandoned && j.request_digest != digest => {
                return Err(TokenError::AlreadyExists(req.request_id.clone()));
            }
            Some(j) if j.state == TokenJobState::Written => {
                return self.finish(None, j, &req.user_pin).await;
            }
            Some(j) if j.state != TokenJobState::Abandoned => Some(j),
            _ => None,
        };

        let found = self.locate(&req.token).await?;
        let serial = found.name();
        self.login_check(&found, &req.user_pin, "user_pin").await?;

        let mut job = match job.take() {
            Some(j) => {
                // Resuming: the key generated for this request must still be there.
                let id = j.key_id.clone();
                let present =
                    on_token(&found, Some(&req.user_pin), move |t| t.has_private_key(&id)).await?;
                if !present {
                    return Err(TokenError::FailedPrecondition(format!(
                        "the key generated for request {:?} (CKA_ID {}) is no longer on token {serial}",
                        req.request_id,
                        hex::encode(&j.key_id)
                    )));
                }
                j
            }
            None => self.generate(&found, &req, &label, &digest).await?,
        };

        if job.state == TokenJobState::Generated {
            let request = IssueRequest {
                request_id: req.request_id.clone(),
                profile: req.profile.clone(),
                issuer: req.issuer.clone(),
                csr: job.csr_der.clone(),
                subject: req.subject.clone(),
                sans: req.sans.clone(),
                validity_years: req.validity_years,
                approval: req.approval.clone(),
            };
            match self.issuer.issue(request).await {
                Ok(issued) => {
                    job.cert_der = Some(issued.cert_der);
                    job.chain_der = issued.chain;
                    job.state = TokenJobState::Issued;
                    self.store.save_token_job(job.clone(), None).await?;
                }
                Err(IssueError::Refused(e)) => {
                    let id = job.key_id.clone();
                    let removed =
                        on_token(&found, Some(&req.user_pin), move |t| t.destroy_id(&id)).await?;
                    tracing::warn!(token = %Escaped(&serial), request_id = %Escaped(&req.request_id), removed, "the CA refused; the new key pair was destroyed");
                    job.state = TokenJobState::Abandoned;
                    job.detail = e.to_string();
                    self.store.save_token_job(job, None).await?;
                    return Err(TokenError::Refused(e));
                }
                Err(IssueError::Unavailable(m)) => return Err(TokenError::Unavailable(m)),
            }
        }
        self.finish(Some(found), job, &req.user_pin).await
    }

    /// Generate the key pair, make and sign the CSR on the token, journal it.
    async fn generate(
        &self,
        found: &Found,
        req: &PersonalizeRequest,
        label: &str,
        digest: &str,
    ) -> Result<TokenJob, TokenError> {
        let (pin, base, key_type, subject) = (
            req.user_pin.clone(),
            label.to_owned(),
            req.key_type,
            req.subject.clone(),
        );
        // A label from the template may be taken already (a second certificate of the same
        // person and profile): the next free "label (2)", "label (3)", ... is used instead.
        // A label the request gave is used as given or refused.
        let numbered = req.label.is_empty();
        let (key_id, csr_der, label) = on_token(found, Some(&req.user_pin), move |t| {
            let mut n = 1;
            let (spki, id, l) = loop {
                let l = if n == 1 {
                    base.clone()
                } else {
                    let suffix = format!(" ({n})");
                    let keep = (MAX_LABEL * 2).saturating_sub(suffix.chars().count());
                    format!("{}{suffix}", base.chars().take(keep).collect::<String>())
                };
                match t.generate(&l, key_type) {
                    Ok((spki, id)) => break (spki, id, l),
                    Err(HsmError::KeyExists { .. }) if numbered && n < 99 => n += 1,
                    Err(e) => return Err(e),
                }
            };
            let made = (|| {
                let info = csr::request_info(&subject, &spki).map_err(|e| HsmError::Pkcs11 {
                    op: "building the CSR",
                    rv: e.to_string(),
                })?;
                let alg = key_type.default_signature_algorithm();
                let sig = t.sign(&id, alg, &info, &pin)?;
                csr::assemble_request(&info, alg, &sig).map_err(|e| HsmError::Pkcs11 {
                    op: "building the CSR",
                    rv: e.to_string(),
                })
            })();
            match made {
                Ok(csr) => Ok((id, csr, l)),
                Err(e) => {
                    // No CSR, no journal entry: leave no orphan key behind.
                    if let Err(d) = t.destroy_id(&id) {
                        tracing::warn!(error = %d, "could not remove a key pair whose CSR failed");
                    }
                    Err(e)
                }
            }
        })
        .await?;
        let job = TokenJob {
            request_id: req.request_id.clone(),
            token_serial: found.name(),
            label,
            key_id,
            key_type: req.key_type.name().to_owned(),
            request_digest: digest.to_owned(),
            csr_der,
            state: TokenJobState::Generated,
            cert_der: None,
            chain_der: Vec::new(),
            detail: String::new(),
            created_at: crate::clock::unix_now(),
            updated_at: crate::clock::unix_now(),
        };
        if let Err(e) = self.store.save_token_job(job.clone(), None).await {
            // Without the journal a retry could not find this key: remove it.
            let id = job.key_id.clone();
            if let Err(d) = on_token(found, Some(&req.user_pin), move |t| t.destroy_id(&id)).await {
                tracing::warn!(error = %d, "could not remove a key pair that has no journal entry");
            }
            return Err(e.into());
        }
        tracing::info!(token = %Escaped(&job.token_serial), request_id = %Escaped(&req.request_id), key_id = %hex::encode(&job.key_id), "key pair generated on the token");
        Ok(job)
    }

    /// Write certificate and chain (skipping what is already there), prove the pair by
    /// signing a challenge on the token and checking it with the certificate, and mark the
    /// journal entry written with its audit entry. `module` is the token's, if already found.
    async fn finish(
        &self,
        found: Option<Found>,
        mut job: TokenJob,
        pin: &Secret,
    ) -> Result<Personalized, TokenError> {
        let cert_der = job.cert_der.clone().ok_or_else(|| {
            TokenError::Internal(format!("journal of {} has no certificate", job.request_id))
        })?;
        let cert = Certificate::from_der(&cert_der)
            .map_err(|e| TokenError::Internal(format!("the CA's certificate: {e}")))?;
        let spki = cert.tbs_certificate().subject_public_key_info().clone();
        if crate::pki::csr::check_csr(&job.csr_der)
            .map(|c| c.spki != spki)
            .unwrap_or(true)
        {
            return Err(TokenError::Internal(
                "the CA's certificate does not certify the key on the token".into(),
            ));
        }
        let key_type = crate::pki::verify::key_type_of(&spki, "certificate")
            .map_err(|e| TokenError::Internal(e.to_string()))?;
        let alg = key_type.default_signature_algorithm();
        let mut challenge = vec![0u8; 32];
        getrandom::fill(&mut challenge)
            .map_err(|e| TokenError::Internal(format!("random challenge: {e}")))?;
        let found = match found {
            Some(f) => f,
            None => {
                self.locate(&TokenName::new(job.token_serial.clone(), "token_serial"))
                    .await?
            }
        };
        let (p, j, c, chal) = (
            pin.clone(),
            job.clone(),
            cert_der.clone(),
            challenge.clone(),
        );
        let signature = on_token(&found, Some(pin), move |t| {
            t.write_certificate(&j.label, &j.key_id, &c, CertificateCategory::User)?;
            for ca in &j.chain_der {
                let Ok(parsed) = Certificate::from_der(ca) else {
                    continue;
                };
                t.write_certificate(
                    &ca_label(&parsed),
                    &ca_key_id(&parsed),
                    ca,
                    CertificateCategory::Authority,
                )?;
            }
            t.sign(&j.key_id, alg, &chal, &p)
        })
        .await?;
        crate::pki::verify::verify_signature(
            &spki,
            &alg.algorithm_identifier(),
            &challenge,
            &signature,
            "challenge",
        )
        .map_err(|e| {
            TokenError::Internal(format!(
                "the key on the token does not match its certificate: {e}"
            ))
        })?;
        if job.state != TokenJobState::Written {
            let serial_hex = crate::pki::serial::serial_hex(cert.tbs_certificate().serial_number());
            let audit = AuditEvent {
                actor: self.actor.clone(),
                action: "token.personalized".into(),
                object: job.token_serial.clone(),
                request_digest: Some(job.request_digest.clone()),
                detail: serde_json::json!({
                    "request_id": job.request_id,
                    "certificate": serial_hex,
                    "key_id": hex::encode(&job.key_id),
                    "label": job.label,
                    "key_type": job.key_type,
                })
                .to_string(),
            };
            job.state = TokenJobState::Written;
            self.store.save_token_job(job.clone(), Some(audit)).await?;
            tracing::info!(token = %Escaped(&job.token_serial), request_id = %Escaped(&job.request_id), certificate = %serial_hex, "token personalised");
        }
        Ok(Personalized {
            cert_der,
            chain: job.chain_der,
            key_id: job.key_id,
            label: job.label,
        })
    }
}

impl Workstation {
    /// The workstation `[token]` describes: its modules (through the process-wide module
    /// registry), its policy, and `issuer`, the CA that certifies its requests
    /// (`crate::api::remote_issuer::workstation_issuer` picks it as `[token.issuer]` says).
    pub fn from_config(
        cfg: &crate::config::Config,
        store: Arc<dyn Store>,
        issuer: Arc<dyn CertificateIssuer>,
    ) -> Result<Workstation, TokenError> {
        let t = cfg.token.as_ref().ok_or_else(|| {
            TokenError::FailedPrecondition("the configuration has no [token] section".into())
        })?;
        let modules = cfg
            .token_modules()
            .into_iter()
            .map(|(path, sm2)| Arc::new(TokenModule::open_with_sm2(&path, sm2)))
            .collect();
        let hsm_token = cfg
            .token_selector()
            .map_err(|e| TokenError::FailedPrecondition(e.to_string()))?;
        Ok(Workstation::new(
            modules,
            store,
            issuer,
            TokenPolicy {
                pin_min_len: t.pin_min_len,
                pin_max_len: t.pin_max_len,
                max_pin_tries: t.max_pin_tries,
                key_types: t.key_types.clone(),
                label_template: t.label_template.clone(),
            },
            t.actor.clone(),
        )
        .reserve(hsm_token))
    }
}
