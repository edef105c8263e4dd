//! `[token]`: the token personalisation workstation, the PKCS#11 modules serving subscribers'
//! tokens, and the CA that certifies their keys.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::error::{ConfigError, invalid, is_simple_name};
use crate::pki::KeyType;

/// `[token]`: the token personalisation workstation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The workstation's name: the RA recorded for in-process issuance and the actor of
    /// its audit entries.
    pub actor: String,
    /// The PKCS#11 modules that serve subscribers' tokens (OpenSC, a vendor's library;
    /// SoftHSM in the quick start), searched in order for a token by serial.
    pub modules: Vec<TokenModuleConfig>,
    /// Shortest user PIN accepted.
    #[serde(default = "default_pin_min")]
    pub pin_min_len: usize,
    /// Longest user PIN accepted.
    #[serde(default = "default_pin_max")]
    pub pin_max_len: usize,
    /// Wrong user PINs before signet treats the PIN as locked (tokens count on their own
    /// too; SoftHSM never locks).
    #[serde(default = "default_max_pin_tries")]
    pub max_pin_tries: u32,
    /// Key algorithms allowed for subscriber keys.
    #[serde(default = "default_token_key_types")]
    pub key_types: Vec<KeyType>,
    /// CKA_LABEL of a personalised key pair and its certificate when the request names
    /// none: what certificate pickers show the subscriber. `{cn}` (the subject's CN, else the
    /// request id), `{profile}` and `{request_id}` are replaced; cut to 64 characters.
    #[serde(default = "default_label_template")]
    pub label_template: String,
    /// Where CSRs go.
    pub issuer: TokenIssuerConfig,
}

/// The default `[token] label_template`: `张三 (personal)`.
pub const DEFAULT_LABEL_TEMPLATE: &str = "{cn} ({profile})";

fn default_label_template() -> String {
    DEFAULT_LABEL_TEMPLATE.to_owned()
}

/// The placeholders a label template may hold.
const LABEL_PLACEHOLDERS: [&str; 3] = ["{cn}", "{profile}", "{request_id}"];

/// `template` with its placeholders replaced, control characters dropped, trimmed and cut
/// to `max_chars` characters; the request id if that leaves nothing.
pub fn render_label(
    template: &str,
    cn: &str,
    profile: &str,
    request_id: &str,
    max_chars: usize,
) -> String {
    let mut out = String::new();
    let mut rest = template;
    while !rest.is_empty() {
        let hit = [
            ("{cn}", cn),
            ("{profile}", profile),
            ("{request_id}", request_id),
        ]
        .into_iter()
        .find(|(p, _)| rest.starts_with(p));
        match hit {
            Some((p, value)) => {
                out.push_str(value);
                rest = &rest[p.len()..];
            }
            None => {
                let c = rest.chars().next().unwrap_or_default();
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    let label: String = out
        .chars()
        .filter(|c| !c.is_control())
        .collect::<String>()
        .trim()
        .chars()
        .take(max_chars)
        .collect::<String>()
        .trim_end()
        .to_owned();
    if label.is_empty() {
        request_id.chars().take(max_chars).collect()
    } else {
        label
    }
}

/// Every `{...}` of `template` must be a known placeholder.
fn check_label_template(template: &str) -> Result<(), String> {
    if template.trim().is_empty() {
        return Err("must not be empty (the default is \"{cn} ({profile})\")".into());
    }
    if template.chars().any(char::is_control) {
        return Err("contains control characters".into());
    }
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let tail = &rest[open..];
        match LABEL_PLACEHOLDERS.iter().find(|p| tail.starts_with(*p)) {
            Some(p) => rest = &tail[p.len()..],
            None => {
                let shown: String = tail.chars().take(16).collect();
                return Err(format!(
                    "{shown:?}: only {{cn}}, {{profile}} and {{request_id}} may appear in braces"
                ));
            }
        }
    }
    if rest.contains('}') {
        return Err("has a '}' without its '{'".into());
    }
    Ok(())
}

fn default_pin_min() -> usize {
    6
}
fn default_pin_max() -> usize {
    32
}
fn default_max_pin_tries() -> u32 {
    5
}
fn default_token_key_types() -> Vec<KeyType> {
    vec![KeyType::Rsa2048, KeyType::P256, KeyType::P384]
}

impl TokenConfig {
    /// The actor's name, at least one module, PIN rules that make sense, and an issuer kind
    /// with what it needs.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if !is_simple_name(&self.actor) {
            return Err(invalid(
                "token.actor",
                "must be a name of letters, digits, '-' and '_'",
            ));
        }
        if self.modules.is_empty() {
            return Err(invalid("token.modules", "list at least one PKCS#11 module"));
        }
        if self.pin_min_len < 4 || self.pin_max_len < self.pin_min_len || self.pin_max_len > 255 {
            return Err(invalid(
                "token.pin_min_len",
                "PIN lengths must satisfy 4 <= pin_min_len <= pin_max_len <= 255",
            ));
        }
        if !(1..=100).contains(&self.max_pin_tries) {
            return Err(invalid("token.max_pin_tries", "must be between 1 and 100"));
        }
        if self.key_types.is_empty() {
            return Err(invalid("token.key_types", "list at least one key type"));
        }
        let mut sm2 = false;
        for (i, m) in self.modules.iter().enumerate() {
            let key = format!("token.modules[{i}]");
            sm2 |= super::hsm::sm2_settings(&key, m.sm2_mechanisms.as_ref())?.is_some();
        }
        if self.key_types.contains(&KeyType::Sm2) && !sm2 {
            return Err(invalid(
                "token.key_types",
                "sm2 needs a module with its SM2 numbers ([[token.modules]] sm2_mechanisms)",
            ));
        }
        check_label_template(&self.label_template)
            .map_err(|m| invalid("token.label_template", m))?;
        match self.issuer.kind.as_str() {
            "in-process" => {}
            "remote" => {
                for (key, v) in [
                    ("endpoint", self.issuer.endpoint.is_some()),
                    ("ca_cert", self.issuer.ca_cert.is_some()),
                    ("client_cert", self.issuer.client_cert.is_some()),
                    ("client_key", self.issuer.client_key.is_some()),
                ] {
                    if !v {
                        return Err(invalid(
                            format!("token.issuer.{key}"),
                            "is required when kind = \"remote\"",
                        ));
                    }
                }
            }
            other => {
                return Err(invalid(
                    "token.issuer.kind",
                    format!("{other:?} is neither \"in-process\" nor \"remote\""),
                ));
            }
        }
        Ok(())
    }
}

/// `[[token.modules]]`: one PKCS#11 module for tokens.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenModuleConfig {
    /// Path of the module (shared library).
    pub path: PathBuf,
    /// Environment variables the module reads at load time, as in `[hsm]`.
    #[serde(default)]
    pub module_env: BTreeMap<String, String>,
    /// The module's vendor-defined SM2 numbers, as in `[hsm]`, for SM2 keys on its tokens.
    pub sm2_mechanisms: Option<super::hsm::Sm2MechanismsConfig>,
}

/// `[token.issuer]`: the CA that certifies tokens' keys.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenIssuerConfig {
    /// `in-process` (this process's authority) or `remote` (a central signet over mTLS).
    pub kind: String,
    /// Remote: `https://host:port` of the central signet.
    pub endpoint: Option<String>,
    /// Remote: PEM of the CA that issued the central signet's server certificate.
    pub ca_cert: Option<PathBuf>,
    /// Remote: the workstation's client certificate (PEM).
    pub client_cert: Option<PathBuf>,
    /// Remote: the workstation's client key (PKCS#8 PEM).
    pub client_key: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_rendered_from_the_template_and_cut_to_the_limit() {
        assert_eq!(
            render_label(DEFAULT_LABEL_TEMPLATE, "张三", "personal", "tok-1", 64),
            "张三 (personal)"
        );
        assert_eq!(
            render_label("{request_id}: {cn}", "李四", "personal", "tok-2", 64),
            "tok-2: 李四"
        );
        assert_eq!(render_label("{cn}", "", "p", "tok-3", 64), "tok-3");
        assert_eq!(
            render_label("{cn} x", &"长".repeat(80), "p", "r", 64)
                .chars()
                .count(),
            64
        );
    }

    #[test]
    fn unknown_placeholders_and_stray_braces_are_refused() {
        assert!(check_label_template(DEFAULT_LABEL_TEMPLATE).is_ok());
        assert!(check_label_template("{cn} [{profile}] {request_id}").is_ok());
        for bad in ["", "  ", "{name}", "{cn", "cn}", "{cn}\n"] {
            assert!(check_label_template(bad).is_err(), "{bad:?}");
        }
    }
}
