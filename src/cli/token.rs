//! `signet token`: the front desk's client of a workstation's `TokenService` over mutual TLS,
//! one subcommand per call. PINs never come from the command line (where `ps` and shell
//! history would show them): each is read from a file (`--NAME-file`), an environment
//! variable (`--NAME-env`), or else one line of standard input, in the order the command
//! lists them.

use std::io::BufRead;
use std::path::PathBuf;

use signet::api::client::{self, describe_status};
use signet::api::pb;
use signet::api::pb::token_service_client::TokenServiceClient;
use signet::pki::pkcs7::pem_certificate;
use signet::secret::Secret;

use super::ra::{ApprovalArgs, ConnArgs, san, subject_attrs, write_or_print};

/// Connection flags of `signet token`, and the call to make.
#[derive(clap::Args)]
pub struct TokenArgs {
    #[command(flatten)]
    conn: ConnArgs,
    #[command(subcommand)]
    call: TokenCall,
}

#[derive(clap::Subcommand)]
enum TokenCall {
    /// List the tokens present, their PIN state and certificates (ListTokens).
    List,
    /// Wipe a token and set label and user PIN (InitializeToken). PINs on standard input:
    /// SO PIN, then the new user PIN.
    Init {
        #[command(flatten)]
        token: TokenArg,
        /// The new token label.
        #[arg(long)]
        label: String,
        /// Request id: retrying with it finishes an interrupted initialisation instead of
        /// wiping again (default: the workstation draws one and prints it).
        #[arg(long, default_value = "")]
        request_id: String,
        /// Wipe even a token holding a valid, unrevoked certificate (recorded).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        pins: SoAndUserPins,
    },
    /// Generate a key on the token, have it certified, write the certificate back
    /// (Personalize). PIN on standard input: the user PIN.
    Personalize(Box<PersonalizeArgs>),
    /// Change the user PIN (ChangePin). PINs on standard input: old, then new.
    ChangePin {
        #[command(flatten)]
        token: TokenArg,
        /// File holding the current user PIN.
        #[arg(long)]
        old_pin_file: Option<PathBuf>,
        /// Environment variable holding the current user PIN.
        #[arg(long)]
        old_pin_env: Option<String>,
        /// File holding the new user PIN.
        #[arg(long)]
        new_pin_file: Option<PathBuf>,
        /// Environment variable holding the new user PIN.
        #[arg(long)]
        new_pin_env: Option<String>,
    },
    /// Set a new user PIN with the SO PIN (UnblockPin). PINs on standard input: SO PIN,
    /// then the new user PIN.
    Unblock {
        #[command(flatten)]
        token: TokenArg,
        #[command(flatten)]
        pins: SoAndUserPins,
    },
    /// List the objects on a token and their links (ReadToken). With a user PIN (file or
    /// variable only), private keys are listed too.
    Read {
        #[command(flatten)]
        token: TokenArg,
        /// File holding the user PIN.
        #[arg(long)]
        user_pin_file: Option<PathBuf>,
        /// Environment variable holding the user PIN.
        #[arg(long)]
        user_pin_env: Option<String>,
    },
}

/// `signet token personalize`.
#[derive(clap::Args)]
struct PersonalizeArgs {
    #[command(flatten)]
    token: TokenArg,
    /// rsa2048, p256, p384 or ed25519.
    #[arg(long)]
    key_type: String,
    /// Profile name.
    #[arg(long)]
    profile: String,
    /// The verified subject, e.g. "CN=张三, C=CN".
    #[arg(long)]
    subject: String,
    /// dns:NAME, ip:ADDRESS or email:ADDRESS (repeatable).
    #[arg(long = "san")]
    sans: Vec<String>,
    /// Validity in years.
    #[arg(long)]
    validity: u32,
    /// Request id; retrying with it finishes an interrupted personalisation.
    #[arg(long)]
    request_id: String,
    /// Approval evidence.
    #[command(flatten)]
    approval: ApprovalArgs,
    /// Issuing CA; default: the profile's first.
    #[arg(long, default_value = "")]
    issuer: String,
    /// CKA_LABEL of key and certificate, what certificate pickers show; default: the
    /// workstation's [token] label_template ("{cn} ({profile})", e.g. "张三 (personal)").
    #[arg(long, default_value = "")]
    label: String,
    /// File holding the user PIN.
    #[arg(long)]
    user_pin_file: Option<PathBuf>,
    /// Environment variable holding the user PIN.
    #[arg(long)]
    user_pin_env: Option<String>,
    /// Write the certificate (PEM) here instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Which token: `--serial`, or `--token` with a serial, a PKCS#11 URI or the slot handle
/// `signet token list` shows (the only name of a blank token without a serial).
#[derive(clap::Args)]
struct TokenArg {
    /// The token's serial number.
    #[arg(long, required_unless_present = "token", conflicts_with = "token")]
    serial: Option<String>,
    /// The token: serial, pkcs11: URI (e.g. "pkcs11:model=...;serial=...") or slot handle
    /// from `signet token list` ("slot:0:2:...").
    #[arg(long)]
    token: Option<String>,
}

impl TokenArg {
    /// `(token_serial, token)` of a request.
    fn fields(&self) -> (String, String) {
        (
            self.serial.clone().unwrap_or_default(),
            self.token.clone().unwrap_or_default(),
        )
    }

    /// How to name it in a message.
    fn shown(&self) -> String {
        self.serial
            .clone()
            .or_else(|| self.token.clone())
            .unwrap_or_default()
    }
}

/// The SO PIN and a new user PIN, each from a file, a variable or a line on standard input.
#[derive(clap::Args)]
struct SoAndUserPins {
    /// File holding the SO PIN.
    #[arg(long)]
    so_pin_file: Option<PathBuf>,
    /// Environment variable holding the SO PIN.
    #[arg(long)]
    so_pin_env: Option<String>,
    /// File holding the new user PIN.
    #[arg(long)]
    user_pin_file: Option<PathBuf>,
    /// Environment variable holding the new user PIN.
    #[arg(long)]
    user_pin_env: Option<String>,
}

impl SoAndUserPins {
    /// Read the SO PIN, then the new user PIN.
    fn read(&self) -> Result<(Secret, Secret), String> {
        let so = pin("so-pin", &self.so_pin_file, &self.so_pin_env)?;
        let user = pin("user-pin", &self.user_pin_file, &self.user_pin_env)?;
        Ok((so, user))
    }
}

/// Read a PIN from its file, its variable, or the next line of standard input.
fn pin(name: &str, file: &Option<PathBuf>, env: &Option<String>) -> Result<Secret, String> {
    match (file, env) {
        (Some(_), Some(_)) => Err(format!("give --{name}-file or --{name}-env, not both")),
        (Some(f), None) => {
            Secret::from_file(f).map_err(|e| format!("--{name}-file {}: {e}", f.display()))
        }
        (None, Some(v)) => Secret::from_env(v).map_err(|e| format!("--{name}-env ${v}: {e}")),
        (None, None) => {
            let mut line = zeroize::Zeroizing::new(String::new());
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| format!("{name}: reading standard input: {e}"))?;
            let value = line.trim_end_matches(['\r', '\n']);
            if value.is_empty() {
                return Err(format!(
                    "{name}: no PIN given (--{name}-file, --{name}-env or a line on standard input)"
                ));
            }
            Ok(Secret::new(value.to_owned()))
        }
    }
}

fn key_algorithm(name: &str) -> Result<i32, String> {
    Ok(match name {
        "rsa2048" => pb::KeyAlgorithm::Rsa2048,
        "p256" => pb::KeyAlgorithm::P256,
        "p384" => pb::KeyAlgorithm::P384,
        "ed25519" => pb::KeyAlgorithm::Ed25519,
        other => {
            return Err(format!(
                "--key-type {other:?}: use rsa2048, p256, p384 or ed25519"
            ));
        }
    } as i32)
}

fn date(t: &Option<prost_types::Timestamp>) -> String {
    t.as_ref()
        .map(|t| signet::ca::rfc3339(t.seconds))
        .unwrap_or_default()
}

/// Run `signet token ...`.
pub fn run(a: TokenArgs, config: Option<&std::path::Path>) -> Result<(), String> {
    let s = super::ra::settings(&a.conn, config)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(async move {
        let channel = client::connect(&s).await.map_err(|e| e.to_string())?;
        let mut c = TokenServiceClient::new(channel);
        let st = |e: tonic::Status| describe_status(&e);
        match a.call {
            TokenCall::List => {
                let r = c
                    .list_tokens(pb::ListTokensRequest {})
                    .await
                    .map_err(st)?
                    .into_inner();
                for t in r.tokens {
                    let pin = t.pin.unwrap_or_default();
                    let serial = if t.serial.is_empty() { "-" } else { &t.serial };
                    println!(
                        "token {serial} label={:?} manufacturer={:?} model={:?} initialized={}",
                        t.label, t.manufacturer, t.model, t.initialized
                    );
                    println!("  handle={} uri={}", t.handle, t.uri);
                    println!(
                        "  user PIN: initialized={} count_low={} final_try={} locked={} wrong_tries={}",
                        pin.user_pin_initialized, pin.count_low, pin.final_try, pin.locked, pin.failures
                    );
                    for cert in t.certificates {
                        println!(
                            "  certificate {} serial={} issuer={:?} not_after={}{}",
                            cert.subject,
                            cert.serial,
                            cert.issuer,
                            date(&cert.not_after),
                            if cert.is_ca { " (CA)" } else { "" }
                        );
                    }
                }
            }
            TokenCall::Init {
                token,
                label,
                request_id,
                force,
                pins,
            } => {
                let (so, user) = pins.read()?;
                let (token_serial, token) = token.fields();
                let r = c
                    .initialize_token(pb::InitializeTokenRequest {
                        token_serial,
                        token,
                        so_pin: so.expose().to_owned(),
                        label,
                        user_pin: user.expose().to_owned(),
                        force,
                        request_id,
                    })
                    .await
                    .map_err(st)?
                    .into_inner();
                let previous = if r.previous_serial.is_empty() {
                    "none".to_owned()
                } else {
                    r.previous_serial
                };
                println!(
                    "token {} initialised (serial before: {previous}; request id {}; handle {})",
                    r.token_serial, r.request_id, r.handle
                );
            }
            TokenCall::Personalize(p) => {
                let user = pin("user-pin", &p.user_pin_file, &p.user_pin_env)?;
                let (token_serial, token) = p.token.fields();
                let req = pb::PersonalizeRequest {
                    token_serial,
                    token,
                    user_pin: user.expose().to_owned(),
                    key_algorithm: key_algorithm(&p.key_type)?,
                    profile: p.profile,
                    issuer: p.issuer,
                    subject: subject_attrs(&p.subject)?,
                    sans: p.sans.iter().map(|s| san(s)).collect::<Result<_, _>>()?,
                    validity_years: p.validity,
                    request_id: p.request_id,
                    approval: Some(p.approval.to_pb()),
                    label: p.label,
                };
                let r = c.personalize(req).await.map_err(st)?.into_inner();
                eprintln!(
                    "personalised: CKA_ID {} label {:?}",
                    hex::encode(&r.key_id),
                    r.label
                );
                write_or_print(p.out.as_deref(), &pem_certificate(&r.certificate))?;
            }
            TokenCall::ChangePin {
                token,
                old_pin_file,
                old_pin_env,
                new_pin_file,
                new_pin_env,
            } => {
                let old = pin("old-pin", &old_pin_file, &old_pin_env)?;
                let new = pin("new-pin", &new_pin_file, &new_pin_env)?;
                let (token_serial, name) = token.fields();
                c.change_pin(pb::ChangePinRequest {
                    token_serial,
                    token: name,
                    old_pin: old.expose().to_owned(),
                    new_pin: new.expose().to_owned(),
                })
                .await
                .map_err(st)?;
                println!("user PIN of token {} changed", token.shown());
            }
            TokenCall::Unblock { token, pins } => {
                let (so, user) = pins.read()?;
                let (token_serial, name) = token.fields();
                c.unblock_pin(pb::UnblockPinRequest {
                    token_serial,
                    token: name,
                    so_pin: so.expose().to_owned(),
                    new_user_pin: user.expose().to_owned(),
                })
                .await
                .map_err(st)?;
                println!("user PIN of token {} unblocked", token.shown());
            }
            TokenCall::Read {
                token,
                user_pin_file,
                user_pin_env,
            } => {
                let user = if user_pin_file.is_some() || user_pin_env.is_some() {
                    pin("user-pin", &user_pin_file, &user_pin_env)?
                        .expose()
                        .to_owned()
                } else {
                    String::new()
                };
                let r = c
                    .read_token(pb::ReadTokenRequest {
                        token_serial: token.fields().0,
                        token: token.fields().1,
                        user_pin: user,
                    })
                    .await
                    .map_err(st)?
                    .into_inner();
                for o in r.objects {
                    println!(
                        "{} label={:?} id={} {}",
                        o.class,
                        o.label,
                        hex::encode(&o.id),
                        o.attributes.join(" ")
                    );
                }
            }
        }
        Ok(())
    })
}
