//! `InitializeToken`: wipe a token, give it a label, an SO PIN (on a blank one) and a user
//! PIN, exactly once per request id.
//!
//! Modules disagree on what C_InitToken leaves behind: SoftHSM keeps the token's serial,
//! kryoptic (and some cards) draw a new one. So the token is found once, by whatever name the
//! request gave, and its slot is kept: C_InitToken runs on that slot, the token is read back
//! from the same slot (its serial now), and the user PIN is set there. A journal entry in the
//! store (`token_inits`) is written before the wipe (the token as it was, the slot, the slot's
//! fingerprint), after it (the new serial) and at the end together with the audit entry
//! `token.initialized` (old and new serial, label, force, the valid certificates wiped). A
//! retry with the same request id reads the journal and finishes the initialisation from
//! where it stopped; it never wipes twice: a slot whose fingerprint changed since the entry
//! was written was wiped already.

use sha2::{Digest, Sha256};

use super::{Found, TokenError, TokenName, Workstation, blocking, from_hsm, invalid, summarize};
use super::{MAX_LABEL, MAX_REQUEST_ID};
use crate::escape::Escaped;
use crate::hsm::HsmError;
use crate::hsm::address::TokenAddress;
use crate::hsm::token::TokenInfo;
use crate::secret::Secret;
use crate::store::{TokenInit, TokenInitState};

/// An initialisation request.
#[derive(Clone, Debug)]
pub struct InitializeRequest {
    /// The token: serial, `pkcs11:` URI or slot handle.
    pub token: TokenName,
    /// The token's SO PIN (a blank token takes it as its new one).
    pub so_pin: Secret,
    /// The new label, 1 to 32 characters.
    pub label: String,
    /// The new user PIN.
    pub user_pin: Secret,
    /// Wipe even a token holding a valid, unrevoked certificate (recorded).
    pub force: bool,
    /// The client's request id; a retry with it finishes an interrupted initialisation.
    /// Empty: the workstation draws one (returned in the answer).
    pub request_id: String,
}

/// What an initialisation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Initialized {
    /// The token's serial now (a new one on modules that draw one at C_InitToken).
    pub serial: String,
    /// Its serial before (empty for a blank token that reported none).
    pub previous_serial: String,
    /// The label it was given.
    pub label: String,
    /// The request id, as given or drawn.
    pub request_id: String,
    /// The handle of its slot now.
    pub handle: String,
}

fn wrong_so_pin(serial: &str, e: HsmError) -> TokenError {
    match e {
        HsmError::PinIncorrect => TokenError::WrongPin {
            field: "so_pin".into(),
            tries_left: None,
            count_low: false,
            final_try: false,
        },
        HsmError::PinLocked => TokenError::FailedPrecondition(format!(
            "the SO PIN of token {serial} is locked; the token must be reinitialised by its issuer"
        )),
        other => from_hsm(serial, other),
    }
}

impl Workstation {
    /// Initialise (wipe) a token and set its label and user PIN. A token holding a
    /// certificate that is still valid and not revoked is refused unless `force`, which is
    /// recorded in the audit entry. Answers with the token's serial afterwards, which some
    /// modules change. Exactly once per request id.
    pub async fn initialize_token(
        &self,
        req: InitializeRequest,
    ) -> Result<Initialized, TokenError> {
        if req.so_pin.is_empty() {
            return Err(invalid("so_pin", "is required"));
        }
        self.check_pin("user_pin", &req.user_pin)?;
        let label = req.label.trim_end();
        if label.trim().is_empty()
            || label.chars().count() > MAX_LABEL
            || label.chars().any(char::is_control)
        {
            return Err(invalid(
                "label",
                format!("must be 1 to {MAX_LABEL} printable characters"),
            ));
        }
        let request_id = if req.request_id.trim().is_empty() {
            let mut r = [0u8; 8];
            getrandom::fill(&mut r)
                .map_err(|e| TokenError::Internal(format!("random request id: {e}")))?;
            format!("init-{}", hex::encode(r))
        } else {
            if req.request_id.trim().len() > MAX_REQUEST_ID {
                return Err(invalid(
                    "request_id",
                    format!("must be 1 to {MAX_REQUEST_ID} printable characters"),
                ));
            }
            crate::pki::text::check_chars(&req.request_id).map_err(|m| invalid("request_id", m))?;
            req.request_id.clone()
        };
        TokenAddress::parse(&req.token.text).map_err(|m| invalid(req.token.field, m))?;
        let digest = hex::encode(Sha256::digest(
            serde_json::json!({
                "token": req.token.text,
                "label": label,
                "force": req.force,
            })
            .to_string()
            .as_bytes(),
        ));
        if let Some(journal) = self.store.token_init(&request_id).await? {
            if journal.request_digest != digest {
                return Err(TokenError::AlreadyExists(request_id));
            }
            return self.resume_init(journal, &req).await;
        }

        let found = self.locate(&req.token).await?;
        let wiped = self.live_certificates(&found, req.force).await?;
        let now = crate::clock::unix_now();
        let journal = TokenInit {
            request_id,
            request_digest: digest,
            token: req.token.text.clone(),
            module: found.module.path().display().to_string(),
            slot: found.info.slot,
            old_serial: found.info.serial.clone(),
            old_label: found.info.label.clone(),
            old_fingerprint: before_print(&found.info),
            new_serial: String::new(),
            label: label.to_owned(),
            force: req.force,
            wiped_certificates: wiped,
            state: TokenInitState::Started,
            created_at: now,
            updated_at: now,
        };
        self.store.save_token_init(journal.clone(), None).await?;
        self.wipe(found, journal, &req).await
    }

    /// The serials of the valid, unrevoked subscriber certificates on the token; refused
    /// (FAILED_PRECONDITION) when there are any and `force` is not set.
    async fn live_certificates(
        &self,
        found: &Found,
        force: bool,
    ) -> Result<Vec<String>, TokenError> {
        if !found.info.initialized {
            return Ok(Vec::new());
        }
        let (m, a, s) = (found.module.clone(), found.info.address(), found.name());
        let present = blocking(move || {
            m.with_session(&a, |t| t.objects())
                .map_err(|e| from_hsm(&s, e))
        })
        .await?;
        let mut live = Vec::new();
        for c in present
            .iter()
            .filter(|o| o.class == "certificate")
            .filter_map(summarize)
            .filter(|c| !c.is_ca && c.not_after > crate::clock::unix_now())
        {
            let revoked = self
                .issuer
                .is_revoked(&c.serial)
                .await
                .map_err(|e| TokenError::Unavailable(e.to_string()))?;
            if !revoked {
                live.push(c);
            }
        }
        if !live.is_empty() && !force {
            let names: Vec<String> = live
                .iter()
                .map(|c| format!("{} (serial {})", c.subject, c.serial))
                .collect();
            return Err(TokenError::FailedPrecondition(format!(
                "token {} holds a certificate that is valid and not revoked: {}; revoke it first or initialise with force",
                found.name(),
                names.join(", ")
            )));
        }
        Ok(live.into_iter().map(|c| c.serial).collect())
    }

    /// C_InitToken on the journal's slot, the token read back from it, the new serial
    /// journalled; then the user PIN.
    async fn wipe(
        &self,
        found: Found,
        mut journal: TokenInit,
        req: &InitializeRequest,
    ) -> Result<Initialized, TokenError> {
        let name = found.name();
        let (m, so, label) = (
            found.module.clone(),
            req.so_pin.clone(),
            journal.label.clone(),
        );
        let address = TokenAddress::InSlot {
            slot: found.info.slot,
            serial: found.info.serial.clone(),
        };
        let after = blocking(move || {
            m.init_token(&address, &so, &label)
                .map_err(|e| wrong_so_pin(&name, e))
        })
        .await?;
        tracing::info!(
            token = %Escaped(&journal.old_serial),
            serial = %Escaped(&after.serial),
            slot = after.slot,
            "token wiped (C_InitToken)"
        );
        journal.new_serial = after.serial.clone();
        journal.slot = after.slot;
        journal.state = TokenInitState::Wiped;
        self.store.save_token_init(journal.clone(), None).await?;
        let found = Found {
            info: after,
            ..found
        };
        self.set_user_pin(found, journal, req).await
    }

    /// SO login and C_InitPIN on the wiped token, then the journal's last entry with the
    /// audit entry, in one transaction.
    async fn set_user_pin(
        &self,
        found: Found,
        mut journal: TokenInit,
        req: &InitializeRequest,
    ) -> Result<Initialized, TokenError> {
        let name = found.name();
        let (m, a, so, user, n) = (
            found.module.clone(),
            found.info.address(),
            req.so_pin.clone(),
            req.user_pin.clone(),
            name.clone(),
        );
        blocking(move || {
            m.with_session(&a, |t| {
                t.login_so(&so)?;
                let r = t.init_pin(&user);
                t.logout();
                r
            })
            .map_err(|e| wrong_so_pin(&n, e))
        })
        .await?;
        journal.state = TokenInitState::Done;
        let detail = serde_json::json!({
            "request_id": journal.request_id,
            "label": journal.label,
            "force": journal.force,
            "previous_serial": journal.old_serial,
            "serial": journal.new_serial,
            "previous_label": journal.old_label,
            "module": journal.module,
            "wiped_certificates": journal.wiped_certificates,
        });
        let audit = self.audit("token.initialized", &name, detail);
        self.store
            .save_token_init(journal.clone(), Some(audit))
            .await?;
        for serial in [&journal.old_serial, &journal.new_serial] {
            if !serial.is_empty() {
                self.store.reset_pin_failures(serial, None).await?;
            }
        }
        tracing::info!(
            token = %Escaped(&name),
            previous = %Escaped(&journal.old_serial),
            force = journal.force,
            "token initialised"
        );
        Ok(Initialized {
            serial: journal.new_serial,
            previous_serial: journal.old_serial,
            label: journal.label,
            request_id: journal.request_id,
            handle: found.handle(),
        })
    }

    /// Finish what the journal says an earlier call with this request id left undone.
    async fn resume_init(
        &self,
        mut journal: TokenInit,
        req: &InitializeRequest,
    ) -> Result<Initialized, TokenError> {
        if journal.state == TokenInitState::Done {
            return Ok(Initialized {
                serial: journal.new_serial.clone(),
                previous_serial: journal.old_serial.clone(),
                label: journal.label.clone(),
                handle: self.current_handle(&journal).await,
                request_id: journal.request_id,
            });
        }
        let Some((index, module)) = self
            .modules
            .iter()
            .enumerate()
            .find(|(_, m)| m.path().display().to_string() == journal.module)
            .map(|(i, m)| (i, m.clone()))
        else {
            return Err(TokenError::FailedPrecondition(format!(
                "request {:?} initialised a token of module {}, which this workstation no longer serves",
                journal.request_id, journal.module
            )));
        };
        let (m, j) = (module.clone(), journal.clone());
        let seen = blocking(move || {
            let look = || {
                m.list()
                    .map(|tokens| progress(&j, tokens))
                    .map_err(|e| TokenError::Unavailable(format!("{}: {e}", m.path().display())))
            };
            match look()? {
                // A module that reads token state only at C_Initialize may not show it yet.
                Progress::Gone if m.refresh() => look(),
                other => Ok(other),
            }
        })
        .await?;
        match seen {
            Progress::Gone => Err(TokenError::Absent {
                serial: journal.token.clone(),
                reason: format!(
                    "the token that request {:?} was initialising is not in its slot",
                    journal.request_id
                ),
            }),
            Progress::NotWiped(info) if journal.state == TokenInitState::Started => {
                // C_InitToken never happened; the check for valid certificates was made
                // before the journal entry was written.
                tracing::info!(request_id = %Escaped(&journal.request_id), "resuming a token initialisation before its wipe");
                self.wipe(
                    Found {
                        module,
                        index,
                        info,
                    },
                    journal,
                    req,
                )
                .await
            }
            Progress::NotWiped(info) | Progress::Wiped(info) => {
                if journal.state == TokenInitState::Started {
                    journal.new_serial = info.serial.clone();
                    journal.slot = info.slot;
                    journal.state = TokenInitState::Wiped;
                    self.store.save_token_init(journal.clone(), None).await?;
                }
                tracing::info!(request_id = %Escaped(&journal.request_id), serial = %Escaped(&info.serial), "resuming a token initialisation after its wipe");
                self.set_user_pin(
                    Found {
                        module,
                        index,
                        info,
                    },
                    journal,
                    req,
                )
                .await
            }
        }
    }

    /// The handle of the slot of a finished initialisation's token, if it is present.
    async fn current_handle(&self, journal: &TokenInit) -> String {
        if journal.new_serial.is_empty() {
            return String::new();
        }
        match self
            .locate(&TokenName::new(journal.new_serial.clone(), "token_serial"))
            .await
        {
            Ok(found) => found.handle(),
            Err(_) => String::new(),
        }
    }
}

/// What the journal remembers of a slot before the wipe: the handle's fingerprint and
/// whether a user PIN was set (C_InitToken clears it, even where label and serial stay).
fn before_print(t: &TokenInfo) -> String {
    format!("{}:{}", t.fingerprint(), u8::from(t.user_pin_initialized))
}

/// How a journalled initialisation's token looks now, among `tokens` of its module.
enum Progress {
    /// The slot still holds the token as it was: C_InitToken has not happened.
    NotWiped(TokenInfo),
    /// The slot holds the freshly initialised token.
    Wiped(TokenInfo),
    /// Neither is present.
    Gone,
}

fn progress(journal: &TokenInit, tokens: Vec<TokenInfo>) -> Progress {
    // The slot as the journal saw it before the wipe.
    if let Some(t) = tokens
        .iter()
        .find(|t| t.slot == journal.slot && before_print(t) == journal.old_fingerprint)
    {
        return Progress::NotWiped(t.clone());
    }
    // A module that renumbers slots when it re-reads them (SoftHSM) and kept the serial.
    if !journal.old_serial.is_empty() && journal.old_label != journal.label {
        if let Some(t) = tokens
            .iter()
            .find(|t| t.serial == journal.old_serial && t.label == journal.old_label)
        {
            return Progress::NotWiped(t.clone());
        }
    }
    let fresh = |t: &&TokenInfo| t.initialized && t.label == journal.label;
    if let Some(t) = tokens.iter().filter(fresh).find(|t| {
        t.slot == journal.slot
            || (!journal.new_serial.is_empty() && t.serial == journal.new_serial)
            || (!journal.old_serial.is_empty() && t.serial == journal.old_serial)
    }) {
        return Progress::Wiped(t.clone());
    }
    Progress::Gone
}
