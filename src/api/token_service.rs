//! The `signet.v1.TokenService` of a token workstation: each call goes through the same frame
//! as the RA API (client certificate identity, the `token` operation of its `[[ra]]` entry,
//! deadline, concurrency limit, log line), converts the message, and asks the
//! [`Workstation`]. PIN fields become [`Secret`]s at once (the message's copy is moved out,
//! so it is wiped with the secret) and the messages' Debug output redacts them.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::convert;
use super::pb;
use super::service::{Frame, Logged};
use crate::ca::Violation;
use crate::config::RaOperation;
use crate::hsm::token::TokenObject;
use crate::pki::KeyType;
use crate::secret::Secret;
use crate::token::{
    InitializeRequest, PersonalizeRequest, TokenError, TokenName, TokenStatus, Workstation,
};

/// The token service's implementation.
pub struct TokenService {
    workstation: Arc<Workstation>,
    frame: Frame,
}

impl TokenService {
    /// A service over `workstation`, its calls framed like the RA API's.
    pub fn new(workstation: Arc<Workstation>, frame: Frame) -> TokenService {
        TokenService { workstation, frame }
    }
}

/// Move a PIN out of a message into a [`Secret`], leaving the field empty.
fn take_pin(field: &mut String) -> Secret {
    Secret::new(std::mem::take(field))
}

macro_rules! redacted_debug {
    ($ty:ty, $name:literal, [$($plain:ident),*], [$($secret:ident),*]) => {
        impl std::fmt::Debug for $ty {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let mut d = f.debug_struct($name);
                $(d.field(stringify!($plain), &self.$plain);)*
                $(d.field(stringify!($secret), &"<redacted>");)*
                d.finish_non_exhaustive()
            }
        }
    };
}

redacted_debug!(
    pb::InitializeTokenRequest,
    "InitializeTokenRequest",
    [token_serial, token, label, force, request_id],
    [so_pin, user_pin]
);
redacted_debug!(
    pb::PersonalizeRequest,
    "PersonalizeRequest",
    [
        token_serial,
        token,
        key_algorithm,
        profile,
        request_id,
        label
    ],
    [user_pin]
);
redacted_debug!(
    pb::ChangePinRequest,
    "ChangePinRequest",
    [token_serial, token],
    [old_pin, new_pin]
);
redacted_debug!(
    pb::UnblockPinRequest,
    "UnblockPinRequest",
    [token_serial, token],
    [so_pin, new_user_pin]
);
redacted_debug!(
    pb::ReadTokenRequest,
    "ReadTokenRequest",
    [token_serial, token],
    [user_pin]
);

impl Logged for pb::ListTokensRequest {}
impl Logged for pb::InitializeTokenRequest {
    fn request_id(&self) -> &str {
        &self.request_id
    }
}
impl Logged for pb::PersonalizeRequest {
    fn request_id(&self) -> &str {
        &self.request_id
    }
}
impl Logged for pb::ChangePinRequest {}
impl Logged for pb::UnblockPinRequest {}
impl Logged for pb::ReadTokenRequest {}

/// The token a request names: `token` (serial, URI or slot handle) or `token_serial`.
pub fn token_name(token_serial: String, token: String) -> Result<TokenName, TokenError> {
    match (token_serial.trim().is_empty(), token.trim().is_empty()) {
        (_, true) => Ok(TokenName::new(token_serial, "token_serial")),
        (true, false) => Ok(TokenName::new(token, "token")),
        (false, false) if token_serial.trim() == token.trim() => Ok(TokenName::new(token, "token")),
        (false, false) => Err(TokenError::Invalid {
            field: "token".into(),
            problem: "give token or token_serial, not two different names".into(),
        }),
    }
}

/// The proto key algorithm of a Personalize request as a key type.
pub fn key_type(v: i32) -> Result<KeyType, Violation> {
    match pb::KeyAlgorithm::try_from(v) {
        Ok(pb::KeyAlgorithm::Rsa2048) => Ok(KeyType::Rsa2048),
        Ok(pb::KeyAlgorithm::P256) => Ok(KeyType::P256),
        Ok(pb::KeyAlgorithm::P384) => Ok(KeyType::P384),
        Ok(pb::KeyAlgorithm::Ed25519) => Ok(KeyType::Ed25519),
        Ok(pb::KeyAlgorithm::Sm2) => Ok(KeyType::Sm2),
        _ => Err(Violation::new(
            "key_algorithm",
            "choose RSA_2048, P256, P384, ED25519 or SM2",
        )),
    }
}

fn token_message(t: TokenStatus) -> pb::Token {
    pb::Token {
        serial: t.info.serial,
        label: t.info.label,
        manufacturer: t.info.manufacturer,
        model: t.info.model,
        initialized: t.info.initialized,
        pin: Some(pb::PinState {
            user_pin_initialized: t.info.user_pin_initialized,
            count_low: t.info.user_pin_count_low,
            final_try: t.info.user_pin_final_try,
            locked: t.pin_locked,
            failures: t.pin_failures,
        }),
        handle: t.handle,
        uri: t.uri,
        certificates: t
            .certificates
            .into_iter()
            .map(|c| pb::TokenCertificate {
                subject: c.subject,
                serial: c.serial,
                issuer: c.issuer,
                not_after: Some(convert::timestamp(c.not_after)),
                label: c.label,
                id: c.id,
                is_ca: c.is_ca,
            })
            .collect(),
    }
}

fn object_message(o: TokenObject) -> pb::TokenObject {
    pb::TokenObject {
        class: o.class,
        label: o.label,
        id: o.id,
        value: o.value,
        attributes: o.flags.iter().map(|(n, v)| format!("{n}={v}")).collect(),
    }
}

#[tonic::async_trait]
impl pb::token_service_server::TokenService for TokenService {
    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        self.frame
            .handle(
                "ListTokens",
                RaOperation::Token,
                request,
                |_, _| async move {
                    let tokens = self.workstation.list_tokens().await?;
                    Ok(pb::ListTokensResponse {
                        tokens: tokens.into_iter().map(token_message).collect(),
                    })
                },
            )
            .await
    }

    async fn initialize_token(
        &self,
        request: Request<pb::InitializeTokenRequest>,
    ) -> Result<Response<pb::InitializeTokenResponse>, Status> {
        self.frame
            .handle(
                "InitializeToken",
                RaOperation::Token,
                request,
                |_, mut m| async move {
                    let so_pin = take_pin(&mut m.so_pin);
                    let user_pin = take_pin(&mut m.user_pin);
                    let token = token_name(m.token_serial, m.token)?;
                    let done = self
                        .workstation
                        .initialize_token(InitializeRequest {
                            token,
                            so_pin,
                            label: m.label,
                            user_pin,
                            force: m.force,
                            request_id: m.request_id,
                        })
                        .await?;
                    Ok(pb::InitializeTokenResponse {
                        token_serial: done.serial,
                        previous_serial: done.previous_serial,
                        request_id: done.request_id,
                        handle: done.handle,
                    })
                },
            )
            .await
    }

    async fn personalize(
        &self,
        request: Request<pb::PersonalizeRequest>,
    ) -> Result<Response<pb::PersonalizeResponse>, Status> {
        self.frame
            .handle(
                "Personalize",
                RaOperation::Token,
                request,
                |ra, mut m| async move {
                    let user_pin = take_pin(&mut m.user_pin);
                    let mut bad = Vec::new();
                    let key_type = key_type(m.key_algorithm).unwrap_or_else(|v| {
                        bad.push(v);
                        KeyType::P256
                    });
                    let token = token_name(m.token_serial, m.token)?;
                    let req = PersonalizeRequest {
                        token,
                        user_pin,
                        key_type,
                        label: m.label,
                        subject: convert::subject_into(&m.subject, &mut bad),
                        sans: convert::sans_into(&m.sans, &mut bad),
                        approval: convert::approval_into(m.approval, &mut bad),
                        profile: m.profile,
                        issuer: Some(m.issuer).filter(|i| !i.is_empty()),
                        validity_years: m.validity_years,
                        request_id: m.request_id,
                    };
                    // The front desk may personalise only the profiles its entry lists; a
                    // profile that does not exist is reported with the other problems.
                    bad.extend(self.frame.requested_profile(
                        &ra,
                        RaOperation::Token,
                        &req.profile,
                    )?);
                    convert::refuse_if(bad, Vec::new())?;
                    let done = self.workstation.personalize(req).await?;
                    Ok(pb::PersonalizeResponse {
                        certificate: done.cert_der,
                        chain: done.chain,
                        key_id: done.key_id,
                        label: done.label,
                    })
                },
            )
            .await
    }

    async fn change_pin(
        &self,
        request: Request<pb::ChangePinRequest>,
    ) -> Result<Response<pb::ChangePinResponse>, Status> {
        self.frame
            .handle(
                "ChangePin",
                RaOperation::Token,
                request,
                |_, mut m| async move {
                    let old = take_pin(&mut m.old_pin);
                    let new = take_pin(&mut m.new_pin);
                    let token = token_name(m.token_serial, m.token)?;
                    self.workstation.change_pin(token, &old, &new).await?;
                    Ok(pb::ChangePinResponse {})
                },
            )
            .await
    }

    async fn unblock_pin(
        &self,
        request: Request<pb::UnblockPinRequest>,
    ) -> Result<Response<pb::UnblockPinResponse>, Status> {
        self.frame
            .handle(
                "UnblockPin",
                RaOperation::Token,
                request,
                |_, mut m| async move {
                    let so = take_pin(&mut m.so_pin);
                    let new = take_pin(&mut m.new_user_pin);
                    let token = token_name(m.token_serial, m.token)?;
                    self.workstation.unblock_pin(token, &so, &new).await?;
                    Ok(pb::UnblockPinResponse {})
                },
            )
            .await
    }

    async fn read_token(
        &self,
        request: Request<pb::ReadTokenRequest>,
    ) -> Result<Response<pb::ReadTokenResponse>, Status> {
        self.frame
            .handle(
                "ReadToken",
                RaOperation::Token,
                request,
                |_, mut m| async move {
                    let pin = Some(take_pin(&mut m.user_pin)).filter(|p| !p.is_empty());
                    let token = token_name(m.token_serial, m.token)?;
                    let objects = self.workstation.read_token(token, pin).await?;
                    Ok(pb::ReadTokenResponse {
                        objects: objects.into_iter().map(object_message).collect(),
                    })
                },
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_fields_never_show_in_debug_output() {
        let m = pb::PersonalizeRequest {
            token_serial: "abc".into(),
            user_pin: "135790".into(),
            ..Default::default()
        };
        let text = format!("{m:?}");
        assert!(!text.contains("135790"), "{text}");
        assert!(
            text.contains("abc") && text.contains("<redacted>"),
            "{text}"
        );
        let m = pb::UnblockPinRequest {
            token_serial: "abc".into(),
            so_pin: "87654321".into(),
            new_user_pin: "246802".into(),
            ..Default::default()
        };
        let text = format!("{m:?}");
        assert!(
            !text.contains("87654321") && !text.contains("246802"),
            "{text}"
        );
    }

    #[test]
    fn a_taken_pin_leaves_the_message_field_empty() {
        let mut field = String::from("135790");
        let pin = take_pin(&mut field);
        assert!(field.is_empty());
        assert_eq!(pin.expose(), "135790");
    }
}
