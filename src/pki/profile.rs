//! Certificate profiles: the six certificate kinds of the subscriber agreements, each with its
//! key usages, extended key usages, subject and SAN rules, validities and liability notice.

use std::fmt;

use const_oid::ObjectIdentifier;
use serde::{Deserialize, Serialize};
use x509_cert::ext::pkix::KeyUsages;

use super::PkiError;
use super::alg::KeyType;
use super::name::{Attr, San, SubjectSpec, check_credit_code};

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

    /// Whether the extendedKeyUsage extension is critical: only for the TSA, whose
    /// certificate RFC 3161 section 2.3 requires to carry a critical timeStamping EKU.
    pub fn extended_key_usage_critical(self) -> bool {
        self == ProfileKind::TimeStamping
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
            .map(|c| (Attr::OrganizationIdentifier, c))
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
        if self == ProfileKind::Server
            && let Some(cn) = subject.get(Attr::CommonName)
            && !sans.iter().any(|s| s.value() == cn)
        {
            bad.push(PkiError::invalid(
                "subject.CN",
                format!("{cn:?} must also appear as a SAN in the server profile"),
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
}

impl Profile {
    /// The user-notice text placed in certificatePolicies: the liability limit if any.
    /// Kept under 200 characters (RFC 5280 section 4.2.1.4).
    pub fn notice_text(&self) -> Option<String> {
        self.liability
            .as_ref()
            .map(|l| format!("Liability limit per certificate / 每张证书赔偿上限: {l}"))
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
        bad
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(kind: ProfileKind) -> Profile {
        Profile {
            name: kind.name().into(),
            kind,
            validity_years: vec![1, 2],
            renewal_window_days: 90,
            policy_oid: ObjectIdentifier::new_unwrap("1.3.6.1.4.1.99999.1.1"),
            liability: None,
            key_types: KeyType::ALL.to_vec(),
            issuers: vec!["issuing-ec".into()],
            allow_wildcards: kind.wildcards_by_default(),
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
}
