//! Certificate profiles: the six certificate kinds of the subscriber agreements, each with its
//! key usages, extended key usages, subject and SAN rules, validities and liability notice.

use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use const_oid::ObjectIdentifier;
use serde::{Deserialize, Serialize};
use x509_cert::ext::pkix::KeyUsages;

use super::PkiError;
use super::alg::KeyType;
use super::name::{Attr, San, SubjectSpec, check_credit_code};
use super::oids::{self, cabf};

/// Extended key usage OIDs (RFC 5280 section 4.2.1.12).
pub mod eku {
    use const_oid::ObjectIdentifier;

    /// id-kp-serverAuth.
    pub const SERVER_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.1");
    /// id-kp-clientAuth.
    pub const CLIENT_AUTH: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.2");
    /// id-kp-codeSigning.
    pub const CODE_SIGNING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.3");
    /// id-kp-emailProtection.
    pub const EMAIL_PROTECTION: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.4");
    /// id-kp-timeStamping.
    pub const TIME_STAMPING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.8");
    /// id-kp-OCSPSigning.
    pub const OCSP_SIGNING: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.3.9");
}

/// A certificate kind from the subscriber agreements. The kind fixes the rules; a
/// [`Profile`] adds what an operator may tune (validities, issuers, policy OID, liability).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProfileKind {
    /// Personal identity (个人身份证书).
    Personal,
    /// Enterprise / organisation (机构证书).
    Organization,
    /// Device (设备证书).
    Device,
    /// TLS server (服务器证书).
    Server,
    /// Personal code signing (代码签名证书).
    CodeSigning,
    /// Payment gateway (支付网关证书).
    PaymentGateway,
    /// An RA office's TLS client certificate for signet's own RA API (made by the ceremony).
    RaClient,
    /// The timestamp authority's certificate (made by the ceremony): critical
    /// extendedKeyUsage timeStamping only, as RFC 3161 requires.
    TimeStamping,
    /// The audit key's certificate (made by the ceremony): it signs audit-log checkpoints
    /// and nothing else, so it carries no extendedKeyUsage a relying party would accept.
    AuditSigning,
}

impl ProfileKind {
    /// Every kind.
    pub const ALL: [ProfileKind; 9] = [
        ProfileKind::Personal,
        ProfileKind::Organization,
        ProfileKind::Device,
        ProfileKind::Server,
        ProfileKind::CodeSigning,
        ProfileKind::PaymentGateway,
        ProfileKind::RaClient,
        ProfileKind::TimeStamping,
        ProfileKind::AuditSigning,
    ];

    /// The name used in configuration.
    pub fn name(self) -> &'static str {
        match self {
            ProfileKind::Personal => "personal",
            ProfileKind::Organization => "organization",
            ProfileKind::Device => "device",
            ProfileKind::Server => "server",
            ProfileKind::CodeSigning => "code_signing",
            ProfileKind::PaymentGateway => "payment_gateway",
            ProfileKind::RaClient => "ra_client",
            ProfileKind::TimeStamping => "time_stamping",
            ProfileKind::AuditSigning => "audit_signing",
        }
    }

    /// Key usages for a subscriber key of type `key`: keyEncipherment only where an RSA key
    /// may carry TLS key transport.
    pub fn key_usage(self, key: KeyType) -> Vec<KeyUsages> {
        let mut ku = vec![KeyUsages::DigitalSignature];
        match self {
            ProfileKind::Personal
            | ProfileKind::Organization
            | ProfileKind::TimeStamping
            | ProfileKind::AuditSigning => ku.push(KeyUsages::NonRepudiation),
            ProfileKind::Device | ProfileKind::Server | ProfileKind::PaymentGateway => {
                if key.is_rsa() {
                    ku.push(KeyUsages::KeyEncipherment);
                }
            }
            ProfileKind::CodeSigning | ProfileKind::RaClient => {}
        }
        ku
    }

    /// Extended key usages.
    pub fn extended_key_usage(self) -> Vec<ObjectIdentifier> {
        match self {
            ProfileKind::Personal | ProfileKind::Organization => {
                vec![eku::CLIENT_AUTH, eku::EMAIL_PROTECTION]
            }
            ProfileKind::Device | ProfileKind::RaClient => vec![eku::CLIENT_AUTH],
            ProfileKind::Server => vec![eku::SERVER_AUTH],
            ProfileKind::CodeSigning => vec![eku::CODE_SIGNING],
            ProfileKind::PaymentGateway => vec![eku::SERVER_AUTH, eku::CLIENT_AUTH],
            ProfileKind::TimeStamping => vec![eku::TIME_STAMPING],
            ProfileKind::AuditSigning => vec![],
        }
    }

    /// Whether the extendedKeyUsage extension is critical: for the TSA, whose certificate
    /// RFC 3161 section 2.3 requires to carry a critical timeStamping EKU, and for the audit
    /// key, whose only purpose is one of the CA's own that no other software acts on.
    pub fn extended_key_usage_critical(self) -> bool {
        matches!(self, ProfileKind::TimeStamping | ProfileKind::AuditSigning)
    }

    /// The number of the kind's default certificate policy under the CA's arc
    /// (`{oid_arc}.1.N`): 1 personal, 2 organization, 3 device, 4 server, 5 code_signing,
    /// 6 payment_gateway; `None` for signet's own kinds, which no `[profiles]` entry takes.
    pub fn policy_number(self) -> Option<u32> {
        match self {
            ProfileKind::Personal => Some(1),
            ProfileKind::Organization => Some(2),
            ProfileKind::Device => Some(3),
            ProfileKind::Server => Some(4),
            ProfileKind::CodeSigning => Some(5),
            ProfileKind::PaymentGateway => Some(6),
            ProfileKind::RaClient | ProfileKind::TimeStamping | ProfileKind::AuditSigning => None,
        }
    }

    /// TLS server kinds: their certificates carry serverAuth, so browsers and TLS clients
    /// are their relying parties.
    pub fn is_tls_server(self) -> bool {
        matches!(self, ProfileKind::Server | ProfileKind::PaymentGateway)
    }

    /// Kinds whose certificates carry emailProtection (when they name an e-mail address).
    pub fn takes_email_protection(self) -> bool {
        self.extended_key_usage().contains(&eku::EMAIL_PROTECTION)
    }

    /// Kinds whose certificates the CA/Browser Forum's TLS or S/MIME Baseline Requirements
    /// govern, and which follow them unless configured otherwise (`cabf_requirements`).
    pub fn cabf_applies(self) -> bool {
        self.is_tls_server() || self.takes_email_protection()
    }

    /// The subscriber key types a profile of this kind accepts unless configured otherwise:
    /// RSA and ECDSA. Ed25519 is left out everywhere: browsers and Windows do not use it
    /// in TLS (NSS: "key usage inadequate", and the TLS Baseline Requirements forbid it),
    /// and NSS does not recognise its OID in a personal, organisation or device certificate
    /// at all (SEC_ERROR_UNRECOGNIZED_OID), nor do Windows and macOS verify Authenticode
    /// or S/MIME signatures made with it. An operator who knows the relying parties enables
    /// it per profile in `key_types`.
    pub fn default_key_types(self) -> Vec<KeyType> {
        KeyType::ALL
            .into_iter()
            .filter(|k| *k != KeyType::Ed25519)
            .collect()
    }

    /// What a certificate of this kind with an Ed25519 key fails with, for the warning
    /// an operator gets when enabling it; `None` when nothing is known to refuse it.
    pub fn ed25519_caveat(self) -> Option<&'static str> {
        match self {
            ProfileKind::Server | ProfileKind::PaymentGateway => Some(
                "browsers and Windows do not accept Ed25519 TLS certificates (NSS: key usage inadequate, -8102), and the CA/B TLS Baseline Requirements forbid them",
            ),
            ProfileKind::Personal | ProfileKind::Organization | ProfileKind::Device => Some(
                "NSS (Firefox, Thunderbird) does not recognise Ed25519 certificates (-8049 unrecognized OID) and Windows does not use them for client authentication or S/MIME",
            ),
            ProfileKind::CodeSigning => {
                Some("Windows Authenticode and macOS code signing do not verify Ed25519 signatures")
            }
            ProfileKind::RaClient | ProfileKind::TimeStamping | ProfileKind::AuditSigning => None,
        }
    }

    /// The `openssl verify -purpose` that a certificate of this kind must pass. OpenSSL 3.0
    /// has no code-signing purpose, so code signing is checked as `any` plus its EKU.
    pub fn openssl_purpose(self) -> &'static str {
        match self {
            ProfileKind::Personal
            | ProfileKind::Organization
            | ProfileKind::Device
            | ProfileKind::RaClient => "sslclient",
            ProfileKind::Server | ProfileKind::PaymentGateway => "sslserver",
            ProfileKind::CodeSigning | ProfileKind::AuditSigning => "any",
            ProfileKind::TimeStamping => "timestampsign",
        }
    }

    /// Subject attributes the kind requires.
    pub fn required_attrs(self) -> &'static [Attr] {
        match self {
            ProfileKind::Personal
            | ProfileKind::CodeSigning
            | ProfileKind::RaClient
            | ProfileKind::TimeStamping
            | ProfileKind::AuditSigning => &[Attr::CommonName],
            ProfileKind::Organization | ProfileKind::PaymentGateway => {
                &[Attr::Organization, Attr::CommonName]
            }
            ProfileKind::Device => &[Attr::CommonName, Attr::SerialNumber],
            ProfileKind::Server => &[],
        }
    }

    /// Whether a profile of this kind takes wildcard dNSNames unless configured otherwise:
    /// only the server kind. Chinese CAs sell wildcard (通配符) SSL certificates as server
    /// certificates; a payment gateway names the hosts its 500,000 CNY liability covers, and
    /// a device certificate names one device.
    pub fn wildcards_by_default(self) -> bool {
        self == ProfileKind::Server
    }

    /// Whether the kind takes dNSName SANs at all (and so may be configured to take wildcards).
    pub fn takes_dns_names(self) -> bool {
        self.san_allowed(&San::Dns(String::new()))
    }

    /// Which SAN types the kind accepts.
    fn san_allowed(self, san: &San) -> bool {
        matches!(
            (self, san),
            (
                ProfileKind::Personal | ProfileKind::Organization | ProfileKind::CodeSigning,
                San::Email(_)
            ) | (
                ProfileKind::Device | ProfileKind::Server,
                San::Dns(_) | San::Ip(_)
            ) | (ProfileKind::PaymentGateway, San::Dns(_))
        )
    }

    /// Check a subject and SANs against the kind's rules. Errors name the field at fault;
    /// the first problem is returned ([`ProfileKind::name_problems`] has them all).
    pub fn check_names(self, subject: &SubjectSpec, sans: &[San]) -> Result<(), PkiError> {
        match self.name_problems(subject, sans).into_iter().next() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Every way a subject and SANs break the kind's rules, each naming its field.
    pub fn name_problems(self, subject: &SubjectSpec, sans: &[San]) -> Vec<PkiError> {
        let mut bad = Vec::new();
        for attr in self.required_attrs() {
            if subject.get(*attr).is_none() {
                bad.push(PkiError::invalid(
                    format!("subject.{attr}"),
                    format!("is required by the {} profile", self.name()),
                ));
            }
        }
        let code = subject
            .get(Attr::OrganizationIdentifier)
            .map(|c| (Attr::OrganizationIdentifier, strip_ntr(c)))
            .or_else(|| {
                subject
                    .get(Attr::SerialNumber)
                    .map(|c| (Attr::SerialNumber, c))
            });
        match code {
            None if self == ProfileKind::Organization => bad.push(PkiError::invalid(
                "subject.organizationIdentifier",
                "the organization profile requires the unified social credit code (in organizationIdentifier or serialNumber)",
            )),
            // organizationIdentifier is always a credit code; serialNumber only stands for
            // one in the organization profile.
            Some((attr, c))
                if self == ProfileKind::Organization || attr == Attr::OrganizationIdentifier =>
            {
                if let Err(m) = check_credit_code(c) {
                    bad.push(PkiError::invalid(format!("subject.{attr}"), m));
                }
            }
            _ => {}
        }
        for (i, san) in sans.iter().enumerate() {
            if !self.san_allowed(san) {
                bad.push(PkiError::invalid(
                    format!("sans[{i}]"),
                    format!("{san} is not allowed by the {} profile", self.name()),
                ));
            } else if sans[..i].contains(san) {
                bad.push(PkiError::invalid(
                    format!("sans[{i}]"),
                    format!("{san} is listed twice"),
                ));
            }
        }
        match self {
            ProfileKind::Server if !sans.iter().any(|s| matches!(s, San::Dns(_) | San::Ip(_))) => {
                bad.push(PkiError::invalid(
                    "sans",
                    "the server profile requires at least one dns: or ip: SAN",
                ));
            }
            ProfileKind::PaymentGateway if !sans.iter().any(|s| matches!(s, San::Dns(_))) => {
                bad.push(PkiError::invalid(
                    "sans",
                    "the payment_gateway profile requires a dns: SAN",
                ));
            }
            _ => {}
        }
        // A TLS server name in CN must be one of the SANs, or clients see two different names.
        if self.is_tls_server()
            && let Some(cn) = subject.get(Attr::CommonName)
            && !sans.iter().any(|s| s.value() == cn)
        {
            bad.push(PkiError::invalid(
                "subject.CN",
                format!(
                    "{cn:?} must also appear as a SAN in the {} profile",
                    self.name()
                ),
            ));
        }
        if subject.is_empty() && sans.is_empty() {
            bad.push(PkiError::invalid(
                "subject",
                "a certificate needs a subject or a SAN",
            ));
        }
        bad
    }
}

impl fmt::Display for ProfileKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// When a profile whose kind carries emailProtection (personal, organization) puts that
/// extended key usage in a certificate (`email_protection` in the profile's configuration).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EmailProtection {
    /// Only when the request names an e-mail address (an `email:` SAN); a certificate
    /// without one is issued for client authentication and signing alone. The default: an
    /// S/MIME certificate that names no mailbox is one no mail client can use, and
    /// validators refuse it.
    #[default]
    IfEmailSan,
    /// Always; a request without an `email:` SAN is refused, naming `sans`.
    RequireEmailSan,
}

impl EmailProtection {
    /// The name used in configuration.
    pub fn name(self) -> &'static str {
        match self {
            EmailProtection::IfEmailSan => "if-email-san",
            EmailProtection::RequireEmailSan => "require-email-san",
        }
    }
}

/// Where a unified social credit code sent in `organizationIdentifier` is written
/// (`org_id_form` in the profile's configuration).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OrgIdForm {
    /// `organizationIdentifier = NTRCN-<code>`: the national trade register scheme of
    /// ETSI EN 319 412-1 section 5.1.4 and the CA/B S/MIME Baseline Requirements 7.1.4.2.2
    /// (the default).
    #[default]
    Ntr,
    /// `organizationIdentifier = <code>`, the 18 characters alone, for relying parties that
    /// compare the attribute with the code as registered.
    Bare,
    /// `serialNumber = <code>` and no organizationIdentifier, the form of older Chinese
    /// certificates that some government systems still read the code from.
    SerialNumber,
}

impl OrgIdForm {
    /// The name used in configuration.
    pub fn name(self) -> &'static str {
        match self {
            OrgIdForm::Ntr => "ntr",
            OrgIdForm::Bare => "bare",
            OrgIdForm::SerialNumber => "serial-number",
        }
    }
}

/// The prefix of a credit code in the NTR form: scheme NTR, country CN (EN 319 412-1).
pub const NTR_CN_PREFIX: &str = "NTRCN-";

/// An organizationIdentifier value without its `NTRCN-` prefix, as RAs may send either.
fn strip_ntr(value: &str) -> &str {
    value.strip_prefix(NTR_CN_PREFIX).unwrap_or(value)
}

/// A configured profile: a kind plus the operator's choices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Profile {
    /// The profile's name, as requests name it.
    pub name: String,
    /// The certificate kind, which fixes key usages and name rules.
    pub kind: ProfileKind,
    /// Validities allowed, in whole years (the agreements allow 1 or 2).
    pub validity_years: Vec<u32>,
    /// Renewal is allowed in this many days before not-after.
    pub renewal_window_days: u32,
    /// The certificate policy OID placed in every certificate of this profile.
    pub policy_oid: ObjectIdentifier,
    /// Liability limit as shown to relying parties (e.g. `500,000 CNY`), if the kind has one.
    pub liability: Option<String>,
    /// Subscriber key types accepted.
    pub key_types: Vec<KeyType>,
    /// Issuers (by name) allowed to sign this profile; the first is the default.
    pub issuers: Vec<String>,
    /// Whether a dNSName SAN may be a wildcard (`*.example.cn`; leftmost label only, never
    /// directly over a public suffix).
    pub allow_wildcards: bool,
    /// When emailProtection goes into a certificate (kinds that carry it).
    pub email_protection: EmailProtection,
    /// Where a unified social credit code is written.
    pub org_id_form: OrgIdForm,
    /// Whether certificates follow the CA/Browser Forum's Baseline Requirements (TLS for
    /// server kinds, S/MIME for certificates with emailProtection): a reserved policy OID,
    /// their subject and name rules, and for TLS no user notice and the validity limit.
    pub cabf: bool,
    /// A key purpose of the CA's own arc, the audit key's only extendedKeyUsage.
    pub private_eku: Option<ObjectIdentifier>,
}

/// What the CA/B Forum Baseline Requirements call a certificate, from its subject and SANs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CabfType {
    TlsDv,
    TlsOv,
    TlsIv,
    SmimeMailbox,
    SmimeIndividual,
    SmimeOrganization,
}

impl CabfType {
    fn policy(self) -> ObjectIdentifier {
        match self {
            CabfType::TlsDv => cabf::TLS_DV,
            CabfType::TlsOv => cabf::TLS_OV,
            CabfType::TlsIv => cabf::TLS_IV,
            CabfType::SmimeMailbox => cabf::SMIME_MAILBOX_MULTIPURPOSE,
            CabfType::SmimeIndividual => cabf::SMIME_INDIVIDUAL_MULTIPURPOSE,
            CabfType::SmimeOrganization => cabf::SMIME_ORGANIZATION_MULTIPURPOSE,
        }
    }
}

fn has_email(sans: &[San]) -> bool {
    sans.iter().any(|s| matches!(s, San::Email(_)))
}

impl Profile {
    /// A profile of `kind` with the defaults a configuration gets when it names only the
    /// kind, its policy and its issuers.
    pub fn with_defaults(
        name: &str,
        kind: ProfileKind,
        policy_oid: ObjectIdentifier,
        issuers: Vec<String>,
    ) -> Profile {
        Profile {
            name: name.to_owned(),
            kind,
            validity_years: vec![1, 2],
            renewal_window_days: 90,
            policy_oid,
            liability: None,
            key_types: kind.default_key_types(),
            issuers,
            allow_wildcards: kind.wildcards_by_default(),
            email_protection: EmailProtection::default(),
            org_id_form: OrgIdForm::default(),
            cabf: kind.cabf_applies(),
            private_eku: None,
        }
    }

    /// The user-notice text placed in certificatePolicies: the liability limit if any, and
    /// none in TLS certificates under the CA/B rules, which allow no user notice there
    /// (TLS Baseline Requirements 7.1.2.7.9). Kept under 200 characters (RFC 5280 section
    /// 4.2.1.4).
    pub fn notice_text(&self) -> Option<String> {
        if self.cabf && self.kind.is_tls_server() {
            return None;
        }
        self.liability
            .as_ref()
            .map(|l| format!("Liability limit per certificate / 每张证书赔偿上限: {l}"))
    }

    /// Whether a certificate for these SANs carries emailProtection.
    fn email_protection_for(&self, sans: &[San]) -> bool {
        self.kind.takes_email_protection()
            && (self.email_protection == EmailProtection::RequireEmailSan || has_email(sans))
    }

    /// The extendedKeyUsage of a certificate for these SANs: the kind's, without
    /// emailProtection when no e-mail address is named, and the CA's own purpose for the
    /// audit key.
    pub fn extended_key_usage(&self, sans: &[San]) -> Vec<ObjectIdentifier> {
        let email = self.email_protection_for(sans);
        let mut out: Vec<ObjectIdentifier> = self
            .kind
            .extended_key_usage()
            .into_iter()
            .filter(|e| *e != eku::EMAIL_PROTECTION || email)
            .collect();
        out.extend(self.private_eku);
        out
    }

    /// The CA/B type of a certificate with this subject and SANs, when the profile follows
    /// the CA/B rules and the certificate is one they govern.
    fn cabf_type(&self, subject: &SubjectSpec, sans: &[San]) -> Option<CabfType> {
        if !self.cabf {
            return None;
        }
        let has = |a| subject.get(a).is_some();
        if self.kind.is_tls_server() {
            return Some(if has(Attr::Organization) {
                CabfType::TlsOv
            } else if has(Attr::GivenName) || has(Attr::Surname) {
                CabfType::TlsIv
            } else {
                CabfType::TlsDv
            });
        }
        if !self.email_protection_for(sans) {
            return None;
        }
        Some(match self.kind {
            ProfileKind::Organization => CabfType::SmimeOrganization,
            _ if has(Attr::GivenName) || has(Attr::Surname) => CabfType::SmimeIndividual,
            _ => CabfType::SmimeMailbox,
        })
    }

    /// The certificate policies of a certificate with this subject and SANs: the CA/B
    /// reserved identifier first when the CA/B rules apply, then the profile's own.
    pub fn policies(&self, subject: &SubjectSpec, sans: &[San]) -> Vec<ObjectIdentifier> {
        let mut out: Vec<ObjectIdentifier> = self
            .cabf_type(subject, sans)
            .map(CabfType::policy)
            .into_iter()
            .collect();
        out.push(self.policy_oid);
        out
    }

    /// The longest a certificate starting at `not_before` may be valid, beyond its calendar
    /// years: the CA/B TLS limit in TLS profiles that follow the CA/B rules (the years are
    /// then the subscription, served by renewals); `None` elsewhere.
    pub fn max_lifetime(&self, not_before: SystemTime) -> Option<Duration> {
        (self.cabf && self.kind.is_tls_server())
            .then(|| Duration::from_secs(oids::cabf_tls_max_days(not_before) * 86_400))
    }

    /// The subject as the certificate carries it: the request's, with the unified social
    /// credit code written in the profile's `org_id_form`.
    pub fn certificate_subject(&self, subject: &SubjectSpec) -> Result<SubjectSpec, PkiError> {
        let org_id = subject.get(Attr::OrganizationIdentifier);
        // In the organization kind a serialNumber stands for the code when no
        // organizationIdentifier carries it.
        let code = match (org_id, self.kind) {
            (Some(v), _) => Some(strip_ntr(v).to_owned()),
            (None, ProfileKind::Organization) => subject.get(Attr::SerialNumber).map(str::to_owned),
            (None, _) => None,
        };
        let Some(code) = code else {
            return Ok(subject.clone());
        };
        let mut attrs: Vec<(Attr, String)> = subject
            .attrs()
            .iter()
            .filter(|(a, v)| match a {
                Attr::OrganizationIdentifier => false,
                // The code itself when it came in serialNumber, or a copy of it.
                Attr::SerialNumber => org_id.is_some() && *v != code,
                _ => true,
            })
            .cloned()
            .collect();
        match self.org_id_form {
            OrgIdForm::Ntr => attrs.push((
                Attr::OrganizationIdentifier,
                format!("{NTR_CN_PREFIX}{code}"),
            )),
            OrgIdForm::Bare => attrs.push((Attr::OrganizationIdentifier, code)),
            OrgIdForm::SerialNumber => {
                if let Some((_, other)) = attrs.iter().find(|(a, _)| *a == Attr::SerialNumber) {
                    return Err(PkiError::invalid(
                        "subject.serialNumber",
                        format!(
                            "profile {} writes the credit code into serialNumber (org_id_form = \"serial-number\"), which the request fills with {other:?}",
                            self.name
                        ),
                    ));
                }
                attrs.push((Attr::SerialNumber, code));
            }
        }
        SubjectSpec::from_pairs(attrs.iter().map(|(a, v)| (a.short_name(), v.as_str())))
    }

    /// Check a request's names, validity and key type against this profile; the first
    /// problem is returned ([`Profile::request_problems`] has them all).
    pub fn check_request(
        &self,
        subject: &SubjectSpec,
        sans: &[San],
        validity_years: u32,
        key: KeyType,
    ) -> Result<(), PkiError> {
        match self
            .request_problems(subject, sans, validity_years, Some(key))
            .into_iter()
            .next()
        {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Every way a request's validity, key type (when known) and names break this profile,
    /// each naming its field, in that order.
    pub fn request_problems(
        &self,
        subject: &SubjectSpec,
        sans: &[San],
        validity_years: u32,
        key: Option<KeyType>,
    ) -> Vec<PkiError> {
        let mut bad = Vec::new();
        if !self.validity_years.contains(&validity_years) {
            bad.push(PkiError::invalid(
                "validity_years",
                format!(
                    "{validity_years} is not allowed by profile {} (allowed: {:?})",
                    self.name, self.validity_years
                ),
            ));
        }
        if let Some(key) = key
            && !self.key_types.contains(&key)
        {
            let allowed: Vec<_> = self.key_types.iter().map(|k| k.name()).collect();
            bad.push(PkiError::invalid(
                "csr",
                format!(
                    "key type {key} is not allowed by profile {} (allowed: {})",
                    self.name,
                    allowed.join(", ")
                ),
            ));
        }
        if !self.allow_wildcards {
            for (i, san) in sans.iter().enumerate() {
                if matches!(san, San::Dns(d) if super::dns::is_wildcard(d)) {
                    bad.push(PkiError::invalid(
                        format!("sans[{i}]"),
                        format!(
                            "{san} is a wildcard, which profile {} does not allow (allow_wildcards = false)",
                            self.name
                        ),
                    ));
                }
            }
        }
        bad.extend(self.kind.name_problems(subject, sans));
        if self.kind.takes_email_protection()
            && self.email_protection == EmailProtection::RequireEmailSan
            && !has_email(sans)
        {
            bad.push(PkiError::invalid(
                "sans",
                format!(
                    "profile {} puts emailProtection in every certificate (email_protection = \"require-email-san\"), so it needs an email: SAN",
                    self.name
                ),
            ));
        }
        if let Err(e) = self.certificate_subject(subject) {
            bad.push(e);
        }
        if let Some(t) = self.cabf_type(subject, sans) {
            bad.extend(self.cabf_problems(t, subject, sans));
        }
        bad
    }

    /// What the CA/B Baseline Requirements forbid in a certificate of type `t`, each naming
    /// the request field.
    fn cabf_problems(&self, t: CabfType, subject: &SubjectSpec, sans: &[San]) -> Vec<PkiError> {
        let mut bad = Vec::new();
        let has = |a| subject.get(a).is_some();
        let (what, rule, allowed, required): (&str, &str, &[Attr], &[Attr]) = match t {
            CabfType::TlsDv => (
                "a domain-validated TLS certificate (no O, SN or GN)",
                "TLS Baseline Requirements 7.1.2.7.2",
                &[Attr::Country, Attr::CommonName],
                &[],
            ),
            CabfType::TlsOv => (
                "an organisation TLS certificate",
                "TLS Baseline Requirements 7.1.2.7.4",
                &[
                    Attr::Country,
                    Attr::State,
                    Attr::Locality,
                    Attr::Organization,
                    Attr::OrganizationIdentifier,
                    Attr::SerialNumber,
                    Attr::CommonName,
                ],
                &[Attr::Country, Attr::Organization],
            ),
            CabfType::TlsIv => (
                "an individual TLS certificate",
                "TLS Baseline Requirements 7.1.2.7.3",
                &[
                    Attr::Country,
                    Attr::State,
                    Attr::Locality,
                    Attr::Surname,
                    Attr::GivenName,
                    Attr::SerialNumber,
                    Attr::CommonName,
                ],
                &[Attr::Country, Attr::Surname, Attr::GivenName],
            ),
            CabfType::SmimeMailbox => (
                "a mailbox S/MIME certificate (an email: SAN and no SN or GN)",
                "S/MIME Baseline Requirements 7.1.4.2.3",
                &[Attr::SerialNumber, Attr::CommonName],
                &[],
            ),
            CabfType::SmimeIndividual => (
                "an individual S/MIME certificate",
                "S/MIME Baseline Requirements 7.1.4.2.3",
                &[
                    Attr::Country,
                    Attr::State,
                    Attr::Locality,
                    Attr::SerialNumber,
                    Attr::Surname,
                    Attr::GivenName,
                    Attr::CommonName,
                ],
                &[],
            ),
            CabfType::SmimeOrganization => (
                "an organisation S/MIME certificate",
                "S/MIME Baseline Requirements 7.1.4.2.3",
                &[
                    Attr::Country,
                    Attr::State,
                    Attr::Locality,
                    Attr::Organization,
                    Attr::OrganizationalUnit,
                    Attr::OrganizationIdentifier,
                    Attr::SerialNumber,
                    Attr::CommonName,
                ],
                &[Attr::Organization],
            ),
        };
        let cabf_note = "(cabf_requirements = false lifts the CA/B rules)";
        for (attr, _) in subject.attrs() {
            if !allowed.contains(attr) {
                bad.push(PkiError::invalid(
                    format!("subject.{attr}"),
                    format!("is not allowed in {what} ({rule}) {cabf_note}"),
                ));
            }
        }
        for attr in required {
            if !has(*attr) {
                bad.push(PkiError::invalid(
                    format!("subject.{attr}"),
                    format!("is required in {what} ({rule})"),
                ));
            }
        }
        if matches!(t, CabfType::TlsOv | CabfType::TlsIv)
            && !has(Attr::State)
            && !has(Attr::Locality)
        {
            bad.push(PkiError::invalid(
                "subject.L",
                format!("{what} needs L or ST, where the subscriber is ({rule})"),
            ));
        }
        let emails: Vec<String> = sans
            .iter()
            .filter(|s| matches!(s, San::Email(_)))
            .map(San::value)
            .collect();
        match t {
            CabfType::SmimeMailbox => {
                if let Some(cn) = subject.get(Attr::CommonName)
                    && !emails.iter().any(|e| e == cn)
                {
                    bad.push(PkiError::invalid(
                        "subject.CN",
                        format!(
                            "{cn:?}: {what} may only carry the e-mail address as CN; give the person's name as SN and GN to make it an individual certificate ({rule})"
                        ),
                    ));
                }
            }
            CabfType::SmimeOrganization => {
                if self.org_id_form != OrgIdForm::Ntr {
                    bad.push(PkiError::invalid(
                        "subject.organizationIdentifier",
                        format!(
                            "{what} needs the credit code as organizationIdentifier NTRCN-<code> (S/MIME Baseline Requirements 7.1.4.2.2), but profile {} writes it as {:?} (org_id_form)",
                            self.name,
                            self.org_id_form.name()
                        ),
                    ));
                }
                if let Some(cn) = subject.get(Attr::CommonName)
                    && subject.get(Attr::Organization) != Some(cn)
                    && !emails.iter().any(|e| e == cn)
                {
                    bad.push(PkiError::invalid(
                        "subject.CN",
                        format!("{cn:?}: in {what} CN must be the organisation's name (O) or its e-mail address ({rule})"),
                    ));
                }
                if let Some(c) = subject.get(Attr::Country)
                    && c != "CN"
                {
                    bad.push(PkiError::invalid(
                        "subject.C",
                        format!("{c:?} differs from CN, the country of the unified social credit code in organizationIdentifier ({rule})"),
                    ));
                }
            }
            _ => {}
        }
        if self.kind.is_tls_server() {
            for (i, san) in sans.iter().enumerate() {
                let problem = match san {
                    San::Dns(d) if !super::dns::is_public_name(d) => Some(format!(
                        "{san} is not a public domain name (its top-level domain is not in the Public Suffix List), which a TLS certificate may not name (TLS Baseline Requirements 7.1.2.7.12) {cabf_note}"
                    )),
                    San::Ip(ip) if !is_public_address(ip) => Some(format!(
                        "{san} is a private or reserved address, which a TLS certificate may not name (TLS Baseline Requirements 7.1.2.7.12) {cabf_note}"
                    )),
                    _ => None,
                };
                if let Some(p) = problem {
                    bad.push(PkiError::invalid(format!("sans[{i}]"), p));
                }
            }
        }
        bad
    }
}

/// Whether `ip` is a public unicast address: none of the private, shared, loopback,
/// link-local, documentation, benchmarking, multicast or other special-purpose ranges of
/// the IANA registries (RFC 6890).
pub fn is_public_address(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => {
            let [x, y, z, _] = a.octets();
            !(x == 0
                || x == 10
                || x == 127
                || (x == 100 && (64..128).contains(&y))
                || (x == 169 && y == 254)
                || (x == 172 && (16..32).contains(&y))
                || (x == 192 && y == 0 && (z == 0 || z == 2))
                || (x == 192 && y == 88 && z == 99)
                || (x == 192 && y == 168)
                || (x == 198 && (18..20).contains(&y))
                || (x == 198 && y == 51 && z == 100)
                || (x == 203 && y == 0 && z == 113)
                || x >= 224)
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            // Global unicast is 2000::/3; inside it, the IETF protocol assignments
            // (2001::/23), documentation (2001:db8::/32 and 3fff::/20) and 6to4 (2002::/16).
            (s[0] & 0xe000) == 0x2000
                && !(s[0] == 0x2001 && s[1] < 0x0200)
                && !(s[0] == 0x2001 && s[1] == 0x0db8)
                && s[0] != 0x2002
                && (s[0] & 0xfff0) != 0x3ff0
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(kind: ProfileKind) -> Profile {
        Profile {
            key_types: KeyType::ALL.to_vec(),
            ..Profile::with_defaults(
                kind.name(),
                kind,
                ObjectIdentifier::new_unwrap("1.3.6.1.4.1.99999.1.1"),
                vec!["issuing-ec".into()],
            )
        }
    }

    fn subj(p: &[(&str, &str)]) -> SubjectSpec {
        SubjectSpec::from_pairs(p.iter().copied()).unwrap()
    }

    #[test]
    fn server_needs_a_dns_or_ip_san() {
        let p = profile(ProfileKind::Server);
        let e = p
            .check_request(&subj(&[]), &[], 1, KeyType::P256)
            .unwrap_err();
        assert!(e.to_string().starts_with("sans:"), "{e}");
        p.check_request(
            &subj(&[]),
            &[San::Dns("a.example.cn".into())],
            1,
            KeyType::P256,
        )
        .unwrap();
        let e = p
            .check_request(
                &subj(&[("CN", "b.example.cn")]),
                &[San::Dns("a.example.cn".into())],
                1,
                KeyType::P256,
            )
            .unwrap_err();
        assert!(e.to_string().starts_with("subject.CN"), "{e}");
    }

    #[test]
    fn organization_needs_a_valid_credit_code() {
        let p = profile(ProfileKind::Organization);
        let base = [("O", "宁津县精神卫生中心"), ("CN", "宁津县精神卫生中心")];
        let e = p
            .check_request(&subj(&base), &[], 1, KeyType::Rsa2048)
            .unwrap_err();
        assert!(e.to_string().contains("credit code"), "{e}");
        let mut bad = base.to_vec();
        bad.push(("organizationIdentifier", "914403001922038217"));
        let e = p
            .check_request(&subj(&bad), &[], 1, KeyType::Rsa2048)
            .unwrap_err();
        assert!(
            e.to_string().starts_with("subject.organizationIdentifier"),
            "{e}"
        );
        let mut good = base.to_vec();
        good.push(("organizationIdentifier", "914403001922038216"));
        p.check_request(&subj(&good), &[], 2, KeyType::Rsa2048)
            .unwrap();
    }

    #[test]
    fn validity_and_key_type_are_checked() {
        let mut p = profile(ProfileKind::Personal);
        let s = subj(&[("CN", "张三")]);
        let e = p.check_request(&s, &[], 3, KeyType::P256).unwrap_err();
        assert!(e.to_string().starts_with("validity_years"), "{e}");
        p.key_types = vec![KeyType::P256];
        let e = p.check_request(&s, &[], 1, KeyType::Ed25519).unwrap_err();
        assert!(e.to_string().starts_with("csr"), "{e}");
    }

    #[test]
    fn key_encipherment_only_for_rsa_tls_keys() {
        assert!(
            ProfileKind::Server
                .key_usage(KeyType::Rsa2048)
                .contains(&KeyUsages::KeyEncipherment)
        );
        assert!(
            !ProfileKind::Server
                .key_usage(KeyType::P256)
                .contains(&KeyUsages::KeyEncipherment)
        );
        assert!(
            !ProfileKind::Personal
                .key_usage(KeyType::Rsa2048)
                .contains(&KeyUsages::KeyEncipherment)
        );
        assert!(
            ProfileKind::Personal
                .key_usage(KeyType::P256)
                .contains(&KeyUsages::NonRepudiation)
        );
    }

    #[test]
    fn wildcards_only_where_the_profile_allows_them() {
        let wild = [San::Dns("*.example.cn".into())];
        let server = profile(ProfileKind::Server);
        server
            .check_request(&subj(&[]), &wild, 1, KeyType::P256)
            .unwrap();
        let mut no = server.clone();
        no.allow_wildcards = false;
        let e = no
            .check_request(&subj(&[]), &wild, 1, KeyType::P256)
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("sans[0]: dns:*.example.cn is a wildcard"),
            "{e}"
        );
        let pay = profile(ProfileKind::PaymentGateway);
        let e = pay
            .check_request(
                &subj(&[("O", "示例支付有限公司"), ("CN", "pay.example.cn")]),
                &[
                    San::Dns("pay.example.cn".into()),
                    San::Dns("*.example.cn".into()),
                ],
                1,
                KeyType::P256,
            )
            .unwrap_err();
        assert!(e.to_string().starts_with("sans[1]:"), "{e}");
        assert!(ProfileKind::Device.takes_dns_names());
        assert!(!ProfileKind::Personal.takes_dns_names());
    }

    #[test]
    fn every_problem_of_a_request_is_found() {
        let p = profile(ProfileKind::Server);
        let problems = p.request_problems(
            &subj(&[("CN", "b.example.cn")]),
            &[
                San::Email("a@example.cn".into()),
                San::Dns("a.example.cn".into()),
                San::Dns("a.example.cn".into()),
            ],
            3,
            None,
        );
        let fields: Vec<String> = problems
            .iter()
            .map(|e| match e {
                PkiError::Invalid { field, .. } => field.clone(),
                other => panic!("{other}"),
            })
            .collect();
        assert_eq!(
            fields,
            ["validity_years", "sans[0]", "sans[2]", "subject.CN"]
        );
        // The first of them is what check_request reports.
        let e = p
            .check_request(&subj(&[("CN", "b.example.cn")]), &[], 3, KeyType::P256)
            .unwrap_err();
        assert!(e.to_string().starts_with("validity_years"), "{e}");
    }

    #[test]
    fn sans_outside_the_kind_are_refused() {
        let p = profile(ProfileKind::CodeSigning);
        let e = p
            .check_request(
                &subj(&[("CN", "dev")]),
                &[San::Dns("x.example.cn".into())],
                1,
                KeyType::P256,
            )
            .unwrap_err();
        assert!(e.to_string().starts_with("sans[0]"), "{e}");
    }

    fn fields(problems: &[PkiError]) -> Vec<String> {
        problems
            .iter()
            .map(|e| match e {
                PkiError::Invalid { field, .. } => field.clone(),
                other => panic!("{other}"),
            })
            .collect()
    }

    fn oid(s: &str) -> ObjectIdentifier {
        ObjectIdentifier::new_unwrap(s)
    }

    #[test]
    fn ed25519_is_no_default_key_type_and_tls_profiles_refuse_it() {
        for kind in ProfileKind::ALL {
            assert!(
                !kind.default_key_types().contains(&KeyType::Ed25519),
                "{kind}"
            );
            assert!(kind.default_key_types().contains(&KeyType::P256), "{kind}");
        }
        let p = Profile::with_defaults(
            "server",
            ProfileKind::Server,
            oid("1.3.6.1.4.1.99999.1.4"),
            vec![],
        );
        let e = p
            .check_request(
                &subj(&[]),
                &[San::Dns("www.example.cn".into())],
                1,
                KeyType::Ed25519,
            )
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("csr: key type ed25519 is not allowed by profile server"),
            "{e}"
        );
        assert!(
            ProfileKind::Server
                .ed25519_caveat()
                .unwrap()
                .contains("NSS")
        );
        assert!(
            ProfileKind::Device
                .ed25519_caveat()
                .unwrap()
                .contains("NSS")
        );
    }

    #[test]
    fn payment_gateway_cn_must_be_one_of_the_sans() {
        let p = profile(ProfileKind::PaymentGateway);
        let subject = subj(&[
            ("C", "CN"),
            ("L", "深圳市"),
            ("O", "示例支付有限公司"),
            ("CN", "www.example.cn"),
        ]);
        let sans = [San::Dns("pay.example.cn".into())];
        let e = p
            .check_request(&subject, &sans, 1, KeyType::P256)
            .unwrap_err();
        assert!(
            e.to_string().starts_with(
                "subject.CN: \"www.example.cn\" must also appear as a SAN in the payment_gateway profile"
            ),
            "{e}"
        );
        let sans = [
            San::Dns("pay.example.cn".into()),
            San::Dns("www.example.cn".into()),
        ];
        p.check_request(&subject, &sans, 1, KeyType::P256).unwrap();
    }

    #[test]
    fn email_protection_only_with_an_email_san_unless_required() {
        let mut p = profile(ProfileKind::Organization);
        let with_email = [San::Email("office@example.cn".into())];
        assert_eq!(
            p.extended_key_usage(&[]),
            vec![eku::CLIENT_AUTH],
            "no e-mail address, no emailProtection"
        );
        assert_eq!(
            p.extended_key_usage(&with_email),
            vec![eku::CLIENT_AUTH, eku::EMAIL_PROTECTION]
        );
        p.email_protection = EmailProtection::RequireEmailSan;
        let subject = subj(&[
            ("O", "宁津县精神卫生中心"),
            ("organizationIdentifier", "914403001922038216"),
            ("CN", "宁津县精神卫生中心"),
        ]);
        let e = p
            .check_request(&subject, &[], 1, KeyType::P256)
            .unwrap_err();
        assert!(
            e.to_string()
                .starts_with("sans: profile organization puts emailProtection")
                && e.to_string().contains("require-email-san"),
            "{e}"
        );
        p.check_request(&subject, &with_email, 1, KeyType::P256)
            .unwrap();
        // Kinds without emailProtection are untouched.
        assert_eq!(
            profile(ProfileKind::Server).extended_key_usage(&[]),
            vec![eku::SERVER_AUTH]
        );
    }

    #[test]
    fn the_credit_code_is_written_in_the_profiles_form() {
        let code = "914403001922038216";
        let mut p = profile(ProfileKind::Organization);
        let sent = subj(&[
            ("C", "CN"),
            ("O", "宁津县精神卫生中心"),
            ("organizationIdentifier", code),
            ("CN", "宁津县精神卫生中心"),
        ]);
        let out = p.certificate_subject(&sent).unwrap();
        assert_eq!(
            out.get(Attr::OrganizationIdentifier),
            Some(format!("NTRCN-{code}").as_str())
        );
        // The NTR form sent by the RA is taken as is; its code is still checked.
        let ntr = subj(&[
            ("O", "宁津县精神卫生中心"),
            ("organizationIdentifier", &format!("NTRCN-{code}")),
            ("CN", "宁津县精神卫生中心"),
        ]);
        p.check_request(&ntr, &[], 1, KeyType::P256).unwrap();
        assert_eq!(
            p.certificate_subject(&ntr)
                .unwrap()
                .get(Attr::OrganizationIdentifier),
            Some(format!("NTRCN-{code}").as_str())
        );
        let bad = subj(&[
            ("O", "宁津县精神卫生中心"),
            ("organizationIdentifier", "NTRCN-914403001922038217"),
            ("CN", "宁津县精神卫生中心"),
        ]);
        let e = p.check_request(&bad, &[], 1, KeyType::P256).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("subject.organizationIdentifier: check character"),
            "{e}"
        );
        // A code in serialNumber (the organization kind's other place) moves too.
        let in_serial = subj(&[
            ("O", "宁津县精神卫生中心"),
            ("serialNumber", code),
            ("CN", "宁津县精神卫生中心"),
        ]);
        let out = p.certificate_subject(&in_serial).unwrap();
        assert_eq!(out.get(Attr::SerialNumber), None);
        assert_eq!(
            out.get(Attr::OrganizationIdentifier),
            Some(format!("NTRCN-{code}").as_str())
        );
        p.org_id_form = OrgIdForm::Bare;
        assert_eq!(
            p.certificate_subject(&ntr)
                .unwrap()
                .get(Attr::OrganizationIdentifier),
            Some(code)
        );
        p.org_id_form = OrgIdForm::SerialNumber;
        let out = p.certificate_subject(&sent).unwrap();
        assert_eq!(out.get(Attr::OrganizationIdentifier), None);
        assert_eq!(out.get(Attr::SerialNumber), Some(code));
        // serialNumber already holding something else: refused, naming it.
        let both = subj(&[
            ("O", "宁津县精神卫生中心"),
            ("organizationIdentifier", code),
            ("serialNumber", "REG-7"),
            ("CN", "宁津县精神卫生中心"),
        ]);
        let e = p.check_request(&both, &[], 1, KeyType::P256).unwrap_err();
        assert!(e.to_string().starts_with("subject.serialNumber:"), "{e}");
    }

    #[test]
    fn cabf_tls_rules_pick_the_reserved_policy_and_refuse_what_the_requirements_forbid() {
        let p = profile(ProfileKind::Server);
        assert!(p.cabf);
        let dns = [San::Dns("www.example.cn".into())];
        let dv = subj(&[("CN", "www.example.cn")]);
        assert_eq!(
            p.policies(&dv, &dns),
            vec![oids::cabf::TLS_DV, p.policy_oid]
        );
        let ov = subj(&[
            ("C", "CN"),
            ("L", "北京市"),
            ("O", "示例有限公司"),
            ("CN", "www.example.cn"),
        ]);
        assert_eq!(p.policies(&ov, &dns)[0], oids::cabf::TLS_OV);
        p.check_request(&ov, &dns, 1, KeyType::P256).unwrap();
        // OU, a DV subject with more than C and CN, an OV subject without a place.
        let bad = p.request_problems(
            &subj(&[
                ("C", "CN"),
                ("O", "示例有限公司"),
                ("OU", "IT"),
                ("CN", "www.example.cn"),
            ]),
            &dns,
            1,
            None,
        );
        assert_eq!(fields(&bad), ["subject.OU", "subject.L"]);
        let bad = p.request_problems(
            &subj(&[("L", "北京市"), ("CN", "www.example.cn")]),
            &dns,
            1,
            None,
        );
        assert_eq!(fields(&bad), ["subject.L"]);
        // Internal names and reserved addresses.
        let bad = p.request_problems(
            &subj(&[]),
            &[
                San::Dns("intranet.local".into()),
                San::Ip("192.168.1.10".parse().unwrap()),
                San::Ip("198.41.0.4".parse().unwrap()),
                San::Dns("*.example.cn".into()),
            ],
            1,
            None,
        );
        assert_eq!(fields(&bad), ["sans[0]", "sans[1]"]);
        // The liability stays out of TLS certificates; the rules off, it comes back.
        let mut p = Profile {
            liability: Some("100,000 CNY".into()),
            ..p
        };
        assert_eq!(p.notice_text(), None);
        p.cabf = false;
        assert!(p.notice_text().unwrap().contains("100,000 CNY"));
        assert_eq!(p.policies(&dv, &dns), vec![p.policy_oid]);
        p.check_request(
            &subj(&[]),
            &[San::Dns("intranet.local".into())],
            1,
            KeyType::P256,
        )
        .unwrap();
    }

    #[test]
    fn cabf_tls_lifetime_is_the_limit_of_its_start() {
        let p = profile(ProfileKind::Server);
        let day = 86_400;
        let at = |unix: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(unix);
        // 2026-11-30: 199 days; 2030: 46 days.
        assert_eq!(
            p.max_lifetime(at(1_796_000_000)),
            Some(Duration::from_secs(199 * day))
        );
        assert_eq!(
            p.max_lifetime(at(1_900_000_000)),
            Some(Duration::from_secs(46 * day))
        );
        // Other kinds, and TLS without the CA/B rules, keep their calendar years.
        assert_eq!(profile(ProfileKind::Personal).max_lifetime(at(0)), None);
        let off = Profile { cabf: false, ..p };
        assert_eq!(off.max_lifetime(at(1_796_000_000)), None);
    }

    #[test]
    fn cabf_smime_rules_apply_to_certificates_with_an_email_address() {
        let p = profile(ProfileKind::Personal);
        let email = [San::Email("zhangsan@example.cn".into())];
        let person = subj(&[("C", "CN"), ("SN", "张"), ("GN", "三"), ("CN", "张三")]);
        assert_eq!(
            p.policies(&person, &email),
            vec![oids::cabf::SMIME_INDIVIDUAL_MULTIPURPOSE, p.policy_oid]
        );
        p.check_request(&person, &email, 1, KeyType::P256).unwrap();
        // A name in CN alone is neither an individual nor a mailbox certificate.
        let bare = subj(&[("C", "CN"), ("CN", "张三")]);
        assert_eq!(
            fields(&p.request_problems(&bare, &email, 1, None)),
            ["subject.C", "subject.CN"]
        );
        // Without an e-mail address the certificate is no S/MIME certificate.
        p.check_request(&bare, &[], 1, KeyType::P256).unwrap();
        assert_eq!(p.policies(&bare, &[]), vec![p.policy_oid]);
        let mailbox = subj(&[("CN", "zhangsan@example.cn")]);
        assert_eq!(
            p.policies(&mailbox, &email)[0],
            oids::cabf::SMIME_MAILBOX_MULTIPURPOSE
        );
        p.check_request(&mailbox, &email, 1, KeyType::P256).unwrap();

        let org = profile(ProfileKind::Organization);
        let email = [San::Email("office@example.cn".into())];
        let s = subj(&[
            ("C", "CN"),
            ("O", "宁津县精神卫生中心"),
            ("organizationIdentifier", "914403001922038216"),
            ("CN", "院办公室"),
        ]);
        assert_eq!(
            p.policies(&s, &[]),
            vec![p.policy_oid],
            "personal without e-mail"
        );
        assert_eq!(
            org.policies(&s, &email)[0],
            oids::cabf::SMIME_ORGANIZATION_MULTIPURPOSE
        );
        assert_eq!(
            fields(&org.request_problems(&s, &email, 1, None)),
            ["subject.CN"]
        );
        let bare_form = Profile {
            org_id_form: OrgIdForm::Bare,
            ..org
        };
        let s = subj(&[
            ("O", "宁津县精神卫生中心"),
            ("organizationIdentifier", "914403001922038216"),
            ("CN", "宁津县精神卫生中心"),
        ]);
        assert_eq!(
            fields(&bare_form.request_problems(&s, &email, 1, None)),
            ["subject.organizationIdentifier"]
        );
    }

    #[test]
    fn public_addresses_are_told_from_reserved_ones() {
        for a in [
            "198.41.0.4",
            "114.114.114.114",
            "2400:cb00::7",
            "2409:8000::1",
        ] {
            assert!(is_public_address(&a.parse().unwrap()), "{a}");
        }
        for a in [
            "10.1.2.3",
            "127.0.0.1",
            "100.64.0.1",
            "169.254.1.1",
            "172.20.0.1",
            "192.0.2.10",
            "192.168.0.1",
            "198.18.0.1",
            "203.0.113.9",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "fe80::1",
            "fc00::1",
            "2001:db8::7",
            "2002:c000:0204::1",
            "::ffff:198.41.0.4",
        ] {
            assert!(!is_public_address(&a.parse().unwrap()), "{a}");
        }
    }
}
