//! Certificate building: the TBSCertificate of subscriber and CA certificates exactly as the
//! profiles and RFC 5280 require, kept apart from signing (an HSM call elsewhere), then the
//! signed certificate assembled and checked against the issuer's key before anyone sees it.

use std::time::{Duration, SystemTime};

use const_oid::{AssociatedOid, ObjectIdentifier};
use der::asn1::{BitString, Ia5String, OctetString};
use der::flagset::FlagSet;
use der::{Any, DateTime, Decode, Encode, Sequence};
use sha1::Digest;
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::certificate::{Certificate, TbsCertificate, Version};
use x509_cert::ext::pkix::certpolicy::{
    DisplayText, PolicyInformation, PolicyQualifierInfo, UserNotice,
};
use x509_cert::ext::pkix::crl::dp::DistributionPoint;
use x509_cert::ext::pkix::name::{DistributionPointName, GeneralName};
use x509_cert::ext::pkix::{
    AccessDescription, AuthorityInfoAccessSyntax, AuthorityKeyIdentifier, BasicConstraints,
    CertificatePolicies, CrlDistributionPoints, ExtendedKeyUsage, KeyUsage, KeyUsages,
    SubjectAltName, SubjectKeyIdentifier,
};
use x509_cert::ext::{Extension, Extensions};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};

use super::PkiError;
use super::alg::{KeyType, SignatureAlgorithm};
use super::name::{San, SubjectSpec};
use super::profile::Profile;
use super::verify::key_type_of;
use super::verify::verify_signature;

/// id-qt-unotice (RFC 5280 section 4.2.1.4).
const ID_QT_UNOTICE: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.2.2");
/// id-ad-ocsp (RFC 5280 section 4.2.2.1).
const ID_AD_OCSP: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1");
/// id-ad-caIssuers (RFC 5280 section 4.2.2.1).
const ID_AD_CA_ISSUERS: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.2");

/// Where relying parties fetch status; built from the configured public base URL (no
/// trailing slash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Urls {
    /// The public base URL, e.g. `http://pki.example.cn`.
    pub base: String,
}

impl Urls {
    fn base(&self) -> &str {
        self.base.trim_end_matches('/')
    }

    /// The CRL of `issuer`: `{base}/crl/{issuer}.crl`.
    pub fn crl(&self, issuer: &str) -> String {
        format!("{}/crl/{issuer}.crl", self.base())
    }

    /// The OCSP responder: `{base}/ocsp`.
    pub fn ocsp(&self) -> String {
        format!("{}/ocsp", self.base())
    }

    /// The certificate of `issuer`: `{base}/ca/{issuer}.crt`.
    pub fn ca_issuers(&self, issuer: &str) -> String {
        format!("{}/ca/{issuer}.crt", self.base())
    }
}

/// The issuer side of a certificate: its configured name (used in URLs), certificate, and the
/// algorithm its key signs with.
#[derive(Clone, Copy, Debug)]
pub struct IssuerRef<'a> {
    /// The issuer's configured name, as used in URLs.
    pub name: &'a str,
    /// The issuer's own certificate.
    pub cert: &'a Certificate,
    /// The algorithm the issuer's key signs with.
    pub signature: SignatureAlgorithm,
}

/// A subscriber certificate request that has passed profile checks.
#[derive(Clone, Copy, Debug)]
pub struct LeafRequest<'a> {
    /// The profile the certificate is issued under.
    pub profile: &'a Profile,
    /// The subject as the RA verified it.
    pub subject: &'a SubjectSpec,
    /// Subject alternative names as the RA verified them.
    pub sans: &'a [San],
    /// The subscriber's public key (from the checked CSR).
    pub spki: &'a SubjectPublicKeyInfoOwned,
    /// The type of that key.
    pub key_type: KeyType,
    /// Validity in whole years.
    pub validity_years: u32,
}

/// A CA certificate request: the subject, key and constraints of a root or intermediate.
#[derive(Clone, Copy, Debug)]
pub struct CaRequest<'a> {
    /// The CA's subject.
    pub subject: &'a SubjectSpec,
    /// The CA's public key.
    pub spki: &'a SubjectPublicKeyInfoOwned,
    /// basicConstraints pathLenConstraint; `None` for no limit.
    pub path_len: Option<u8>,
    /// Validity in whole years.
    pub validity_years: u32,
}

/// TBSCertificate with public fields, encoded and decoded into x509-cert's type (whose
/// fields are private to that crate). Field for field the structure of RFC 5280 section 4.1.
#[derive(Sequence)]
struct TbsOut {
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT")]
    version: Version,
    serial_number: SerialNumber,
    signature: AlgorithmIdentifierOwned,
    issuer: Name,
    validity: Validity,
    subject: Name,
    subject_public_key_info: SubjectPublicKeyInfoOwned,
    #[asn1(context_specific = "3", tag_mode = "EXPLICIT")]
    extensions: Extensions,
}

/// Certificate with public fields, for the same reason.
#[derive(Sequence)]
struct CertOut {
    tbs_certificate: TbsCertificate,
    signature_algorithm: AlgorithmIdentifierOwned,
    signature: BitString,
}

fn enc(e: der::Error) -> PkiError {
    PkiError::Encoding(e.to_string())
}

pub(crate) fn extension<T: Encode + AssociatedOid>(
    value: &T,
    critical: bool,
) -> Result<Extension, PkiError> {
    Ok(Extension {
        extn_id: T::OID,
        critical,
        extn_value: OctetString::new(value.to_der().map_err(enc)?).map_err(enc)?,
    })
}

/// A URL for CRL DP and AIA: http(s), ASCII, no white space or controls, so relying parties
/// (and pkilint's URI syntax check) can use it as is.
fn uri(u: &str) -> Result<GeneralName, PkiError> {
    let bad = || PkiError::invalid("urls.base", format!("{u:?} is not a plain http(s) URL"));
    let host = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"))
        .ok_or_else(bad)?;
    if host.is_empty() || host.starts_with('/') || u.chars().any(|c| !c.is_ascii_graphic()) {
        return Err(bad());
    }
    Ia5String::new(u)
        .map(GeneralName::UniformResourceIdentifier)
        .map_err(|_| bad())
}

fn key_usage(usages: &[KeyUsages]) -> KeyUsage {
    KeyUsage(
        usages
            .iter()
            .fold(FlagSet::<KeyUsages>::default(), |acc, u| acc | *u),
    )
}

/// SHA-1 of the subjectPublicKey BIT STRING contents (RFC 5280 section 4.2.1.2, method 1).
pub fn key_identifier(spki: &SubjectPublicKeyInfoOwned) -> Vec<u8> {
    sha1::Sha1::digest(spki.subject_public_key.raw_bytes()).to_vec()
}

fn ski_extension(spki: &SubjectPublicKeyInfoOwned) -> Result<Extension, PkiError> {
    let ski = SubjectKeyIdentifier(OctetString::new(key_identifier(spki)).map_err(enc)?);
    extension(&ski, false)
}

fn aki_extension(key_id: Vec<u8>) -> Result<Extension, PkiError> {
    let aki = AuthorityKeyIdentifier {
        key_identifier: Some(OctetString::new(key_id).map_err(enc)?),
        authority_cert_issuer: None,
        authority_cert_serial_number: None,
    };
    extension(&aki, false)
}

/// The key identifier of an issuer: its SKI extension, or computed from its key when absent.
pub(crate) fn issuer_key_id(cert: &Certificate) -> Vec<u8> {
    let tbs = cert.tbs_certificate();
    match tbs.get_extension::<SubjectKeyIdentifier>() {
        Ok(Some((_, ski))) => ski.0.as_bytes().to_vec(),
        _ => key_identifier(tbs.subject_public_key_info()),
    }
}

fn crl_dp_extension(url: &str) -> Result<Extension, PkiError> {
    let dp = CrlDistributionPoints(vec![DistributionPoint {
        distribution_point: Some(DistributionPointName::FullName(vec![uri(url)?])),
        reasons: None,
        crl_issuer: None,
    }]);
    extension(&dp, false)
}

fn aia_extension(urls: &Urls, issuer: &str) -> Result<Extension, PkiError> {
    let aia = AuthorityInfoAccessSyntax(vec![
        AccessDescription {
            access_method: ID_AD_OCSP,
            access_location: uri(&urls.ocsp())?,
        },
        AccessDescription {
            access_method: ID_AD_CA_ISSUERS,
            access_location: uri(&urls.ca_issuers(issuer))?,
        },
    ]);
    extension(&aia, false)
}

/// certificatePolicies with `policies` in order; the profile's user notice (its liability
/// limit), when it shows one, qualifies the profile's own policy.
fn policies_extension(
    profile: Option<&Profile>,
    policies: &[ObjectIdentifier],
) -> Result<Extension, PkiError> {
    let qualifiers = match profile.and_then(Profile::notice_text) {
        Some(text) => {
            let name = profile.map_or("", |p| p.name.as_str());
            if text.chars().count() > 200 {
                return Err(PkiError::invalid(
                    format!("profiles.{name}.liability"),
                    "the user notice would exceed 200 characters (RFC 5280 section 4.2.1.4)",
                ));
            }
            let notice = UserNotice {
                notice_ref: None,
                explicit_text: Some(DisplayText::Utf8String(text)),
            };
            Some(vec![PolicyQualifierInfo {
                policy_qualifier_id: ID_QT_UNOTICE,
                qualifier: Some(Any::encode_from(&notice).map_err(enc)?),
            }])
        }
        None => None,
    };
    let own = profile.map(|p| p.policy_oid);
    let policies = CertificatePolicies(
        policies
            .iter()
            .map(|oid| PolicyInformation {
                policy_identifier: *oid,
                policy_qualifiers: if Some(*oid) == own {
                    qualifiers.clone()
                } else {
                    None
                },
            })
            .collect(),
    );
    extension(&policies, false)
}

/// Check that `signature` can be produced by the key in `spki`; `field` names the issuer.
fn check_signer_key(
    spki: &SubjectPublicKeyInfoOwned,
    signature: SignatureAlgorithm,
    field: &str,
) -> Result<(), PkiError> {
    let key = key_type_of(spki, field)?;
    if signature.fits_key(key) {
        Ok(())
    } else {
        Err(PkiError::invalid(
            field,
            format!("signature algorithm {signature} does not fit the signing {key} key"),
        ))
    }
}

pub(crate) fn to_time(t: SystemTime, field: &str) -> Result<Time, PkiError> {
    // Time picks UTCTime through 2049 and GeneralizedTime from 2050 (RFC 5280 4.1.2.5).
    Time::try_from(t).map_err(|e| PkiError::invalid(field, format!("time out of range: {e}")))
}

fn fmt_time(t: SystemTime) -> String {
    DateTime::from_system_time(t)
        .map(|d| d.to_string())
        .unwrap_or_else(|_| format!("{t:?}"))
}

/// Validity from `not_before` to `end`, checked against the issuer's own validity; `what`
/// names the certificate in errors on `field`.
fn validity(
    not_before: SystemTime,
    end: SystemTime,
    issuer: Option<&IssuerRef>,
    field: &str,
    what: &str,
) -> Result<Validity, PkiError> {
    if let Some(issuer) = issuer {
        check_starts_within(issuer, not_before)?;
        check_outlived_by(issuer, end, field, what)?;
    }
    Ok(Validity::new(
        to_time(not_before, "not_before")?,
        to_time(end, field)?,
    ))
}

/// A certificate starting at `not_before` must not start before its issuer: with the clock
/// behind, it would be signed by a CA that was not yet valid.
fn check_starts_within(issuer: &IssuerRef, not_before: SystemTime) -> Result<(), PkiError> {
    let issuer_start = issuer
        .cert
        .tbs_certificate()
        .validity()
        .not_before
        .to_system_time();
    if not_before < issuer_start {
        return Err(PkiError::invalid(
            "not_before",
            format!(
                "{} is before the notBefore of its issuer {} ({}); is the clock behind?",
                fmt_time(not_before),
                issuer.name,
                fmt_time(issuer_start)
            ),
        ));
    }
    Ok(())
}

/// The notBefore of an issuer's certificate: nothing it signs may start earlier.
pub fn issuer_not_before(issuer: &Certificate) -> SystemTime {
    issuer
        .tbs_certificate()
        .validity()
        .not_before
        .to_system_time()
}

/// A certificate ending at `end` must not outlive its issuer; `what` names it in the error
/// on `field`.
fn check_outlived_by(
    issuer: &IssuerRef,
    end: SystemTime,
    field: &str,
    what: &str,
) -> Result<(), PkiError> {
    let issuer_end = issuer
        .cert
        .tbs_certificate()
        .validity()
        .not_after
        .to_system_time();
    if end > issuer_end {
        return Err(PkiError::invalid(
            field,
            format!(
                "{what} would expire {}, after its issuer {} ({})",
                fmt_time(end),
                issuer.name,
                fmt_time(issuer_end)
            ),
        ));
    }
    Ok(())
}

fn finish(tbs: TbsOut) -> Result<TbsCertificate, PkiError> {
    let der = tbs.to_der().map_err(enc)?;
    TbsCertificate::from_der(&der).map_err(enc)
}

/// `not_before` truncated to whole seconds (certificate times have no fractions).
fn whole_seconds(t: SystemTime) -> Result<SystemTime, PkiError> {
    let since = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| PkiError::invalid("not_before", "is before 1970"))?;
    Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(since.as_secs()))
}

/// A serial must be positive, at most 20 octets (RFC 5280 4.1.2.2) and long enough to hold the
/// 64 random bits the CA/B Forum asks for; [`super::serial::random_serial`] gives 16 octets.
fn check_serial(serial: &SerialNumber) -> Result<(), PkiError> {
    let bytes = serial.as_bytes();
    let problem = if bytes.first().is_none_or(|b| b & 0x80 != 0) {
        Some("must be positive".to_owned())
    } else if bytes.iter().all(|b| *b == 0) {
        Some("must not be zero".to_owned())
    } else if bytes.len() > 20 {
        Some(format!(
            "is {} octets long; at most 20 allowed",
            bytes.len()
        ))
    } else if bytes.len() < 9 {
        Some(format!(
            "is {} octets long; at least 9 needed to carry 64 random bits",
            bytes.len()
        ))
    } else {
        None
    };
    match problem {
        Some(p) => Err(PkiError::invalid("serial", p)),
        None => Ok(()),
    }
}

/// The issuer must be a CA whose certificate allows signing certificates; for a CA
/// certificate below it, its path length must leave room (`child_path_len` is the new CA's).
fn check_issuer_is_ca(
    issuer: &IssuerRef,
    child_path_len: Option<Option<u8>>,
) -> Result<(), PkiError> {
    let tbs = issuer.cert.tbs_certificate();
    let not_ca = |m: String| PkiError::invalid("issuer", format!("{}: {m}", issuer.name));
    let bc = match tbs.get_extension::<BasicConstraints>() {
        Ok(Some((_, bc))) if bc.ca => bc,
        _ => {
            return Err(not_ca(
                "certificate is not a CA (basicConstraints CA:TRUE missing)".into(),
            ));
        }
    };
    if let Ok(Some((_, ku))) = tbs.get_extension::<KeyUsage>() {
        if !ku.key_cert_sign() {
            return Err(not_ca("certificate does not allow keyCertSign".into()));
        }
    }
    if let (Some(child), Some(limit)) = (child_path_len, bc.path_len_constraint) {
        match child {
            _ if limit == 0 => {
                return Err(not_ca(
                    "pathLenConstraint 0 allows no CA certificates below it".into(),
                ));
            }
            Some(c) if c >= limit => {
                return Err(PkiError::invalid(
                    "path_len",
                    format!("{c} must be below the issuer's pathLenConstraint {limit}"),
                ));
            }
            None => {
                return Err(PkiError::invalid(
                    "path_len",
                    format!("must be set, below the issuer's pathLenConstraint {limit}"),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// What every end-entity certificate carries: critical CA:FALSE and keyUsage,
/// extendedKeyUsage (when it has any, critical when asked), and the subject and authority
/// key identifiers.
fn end_entity_extensions(
    ku: &[KeyUsages],
    (eku, eku_critical): (Vec<ObjectIdentifier>, bool),
    spki: &SubjectPublicKeyInfoOwned,
    issuer: &IssuerRef,
) -> Result<Vec<Extension>, PkiError> {
    let mut exts = vec![
        extension(
            &BasicConstraints {
                ca: false,
                path_len_constraint: None,
            },
            true,
        )?,
        extension(&key_usage(ku), true)?,
    ];
    if !eku.is_empty() {
        exts.push(extension(&ExtendedKeyUsage(eku), eku_critical)?);
    }
    exts.push(ski_extension(spki)?);
    exts.push(aki_extension(issuer_key_id(issuer.cert))?);
    Ok(exts)
}

/// The issuer of an end-entity certificate must be a CA whose key can make its configured
/// signature algorithm; returns its TBS.
fn check_end_entity_issuer<'a>(issuer: &IssuerRef<'a>) -> Result<&'a TbsCertificate, PkiError> {
    check_issuer_is_ca(issuer, None)?;
    let issuer_tbs = issuer.cert.tbs_certificate();
    check_signer_key(
        issuer_tbs.subject_public_key_info(),
        issuer.signature,
        "issuer",
    )?;
    Ok(issuer_tbs)
}

/// Build the TBSCertificate of a subscriber certificate (v3; see the module and DESIGN.md
/// "every leaf" for the extensions). The request is checked against its profile once more
/// here, so no caller can build a leaf the profile forbids.
pub fn build_leaf_tbs(
    issuer: &IssuerRef,
    urls: &Urls,
    req: &LeafRequest,
    serial: SerialNumber,
    not_before: SystemTime,
) -> Result<TbsCertificate, PkiError> {
    check_serial(&serial)?;
    let issuer_tbs = check_end_entity_issuer(issuer)?;
    let actual = key_type_of(req.spki, "csr")?;
    if actual != req.key_type {
        return Err(PkiError::invalid(
            "csr",
            format!("key is {actual}, but the request says {}", req.key_type),
        ));
    }
    req.profile
        .check_request(req.subject, req.sans, req.validity_years, req.key_type)?;
    let not_before = whole_seconds(not_before)?;
    let profile = req.profile;
    let kind = profile.kind;
    let subject = profile.certificate_subject(req.subject)?.to_name()?;

    let mut exts = end_entity_extensions(
        &kind.key_usage(req.key_type),
        (
            profile.extended_key_usage(req.sans),
            kind.extended_key_usage_critical(),
        ),
        req.spki,
        issuer,
    )?;
    if kind == super::ProfileKind::AuditSigning && profile.private_eku.is_none() {
        return Err(PkiError::invalid(
            "profile",
            "the audit key's certificate needs the CA's audit key purpose as its extendedKeyUsage",
        ));
    }
    if !req.sans.is_empty() {
        let names = req
            .sans
            .iter()
            .map(San::to_general_name)
            .collect::<Result<Vec<_>, _>>()?;
        // RFC 5280 4.2.1.6: critical exactly when the subject is empty.
        exts.push(extension(&SubjectAltName(names), req.subject.is_empty())?);
    }
    exts.push(policies_extension(
        Some(profile),
        &profile.policies(req.subject, req.sans),
    )?);
    exts.push(crl_dp_extension(&urls.crl(issuer.name))?);
    exts.push(aia_extension(urls, issuer.name)?);

    let mut end = not_after(not_before, req.validity_years)?;
    if let Some(max) = profile.max_lifetime(not_before) {
        end = end.min(not_before + max - Duration::from_secs(1));
    }
    let years = req.validity_years;
    finish(TbsOut {
        version: Version::V3,
        serial_number: serial,
        signature: issuer.signature.algorithm_identifier(),
        issuer: issuer_tbs.subject().clone(),
        validity: validity(
            not_before,
            end,
            Some(issuer),
            "validity_years",
            &format!("a {years}-year certificate"),
        )?,
        subject,
        subject_public_key_info: req.spki.clone(),
        extensions: exts,
    })
}

/// id-pkix-ocsp-nocheck (RFC 6960 section 4.2.2.2.1).
pub const ID_PKIX_OCSP_NOCHECK: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.5");

/// A delegated OCSP responder's certificate request (RFC 6960 section 4.2.2.2).
#[derive(Clone, Copy, Debug)]
pub struct ResponderRequest<'a> {
    /// The responder's subject.
    pub subject: &'a SubjectSpec,
    /// The responder's public key (a key in the HSM).
    pub spki: &'a SubjectPublicKeyInfoOwned,
    /// How long the certificate is valid: short, since nothing checks its revocation.
    pub lifetime: Duration,
    /// The certificate policy of the CA's own certificates.
    pub policy: ObjectIdentifier,
}

/// Build the TBSCertificate of a delegated OCSP responder for `issuer`: CA:FALSE,
/// keyUsage digitalSignature (critical), extendedKeyUsage id-kp-OCSPSigning only, and
/// id-pkix-ocsp-nocheck, so relying parties do not ask the responder about itself, and the
/// CA's policy for its own certificates. No CRL distribution point or AIA: a nocheck
/// certificate is trusted for its short life.
pub fn build_ocsp_responder_tbs(
    issuer: &IssuerRef,
    req: &ResponderRequest,
    serial: SerialNumber,
    not_before: SystemTime,
) -> Result<TbsCertificate, PkiError> {
    check_serial(&serial)?;
    let issuer_tbs = check_end_entity_issuer(issuer)?;
    key_type_of(req.spki, "spki")?;
    if req.subject.is_empty() {
        return Err(PkiError::invalid(
            "subject",
            "an OCSP responder certificate needs a subject",
        ));
    }
    if req.lifetime < Duration::from_secs(3600) {
        return Err(PkiError::invalid("lifetime", "must be at least one hour"));
    }
    let not_before = whole_seconds(not_before)?;
    let end = not_before + req.lifetime;
    check_starts_within(issuer, not_before)?;
    check_outlived_by(issuer, end, "lifetime", "the responder certificate")?;
    let nocheck = Extension {
        extn_id: ID_PKIX_OCSP_NOCHECK,
        critical: false,
        extn_value: OctetString::new(der::asn1::Null.to_der().map_err(enc)?).map_err(enc)?,
    };
    let mut exts = end_entity_extensions(
        &[KeyUsages::DigitalSignature],
        (vec![super::profile::eku::OCSP_SIGNING], false),
        req.spki,
        issuer,
    )?;
    exts.push(nocheck);
    exts.push(policies_extension(None, &[req.policy])?);
    finish(TbsOut {
        version: Version::V3,
        serial_number: serial,
        signature: issuer.signature.algorithm_identifier(),
        issuer: issuer_tbs.subject().clone(),
        validity: Validity::new(
            to_time(not_before, "not_before")?,
            to_time(end - Duration::from_secs(1), "lifetime")?,
        ),
        subject: req.subject.to_name()?,
        subject_public_key_info: req.spki.clone(),
        extensions: exts,
    })
}

/// Build the TBSCertificate of a CA certificate: a self-signed root when `issuer` is `None`
/// (issuer name = subject, AKI = own SKI, no CRL DP or AIA), otherwise an intermediate with
/// AKI, CRL distribution point and AIA pointing at `issuer`. `signature` is the algorithm of
/// the signing key (for a root, its own).
pub fn build_ca_tbs(
    issuer: Option<&IssuerRef>,
    signature: SignatureAlgorithm,
    urls: &Urls,
    req: &CaRequest,
    serial: SerialNumber,
    not_before: SystemTime,
) -> Result<TbsCertificate, PkiError> {
    if req.subject.is_empty() {
        return Err(PkiError::invalid(
            "subject",
            "a CA certificate needs a subject",
        ));
    }
    check_serial(&serial)?;
    let not_before = whole_seconds(not_before)?;
    let subject = req.subject.to_name()?;
    let own_key_id = key_identifier(req.spki);
    key_type_of(req.spki, "spki")?;

    let mut exts = vec![
        extension(
            &BasicConstraints {
                ca: true,
                path_len_constraint: req.path_len,
            },
            true,
        )?,
        extension(
            &key_usage(&[
                KeyUsages::DigitalSignature,
                KeyUsages::KeyCertSign,
                KeyUsages::CRLSign,
            ]),
            true,
        )?,
        ski_extension(req.spki)?,
    ];
    let issuer_name = match issuer {
        None => {
            check_signer_key(req.spki, signature, "signature")?;
            exts.push(aki_extension(own_key_id)?);
            subject.clone()
        }
        Some(issuer) => {
            check_issuer_is_ca(issuer, Some(req.path_len))?;
            let issuer_tbs = issuer.cert.tbs_certificate();
            check_signer_key(issuer_tbs.subject_public_key_info(), signature, "issuer")?;
            exts.push(aki_extension(issuer_key_id(issuer.cert))?);
            exts.push(crl_dp_extension(&urls.crl(issuer.name))?);
            exts.push(aia_extension(urls, issuer.name)?);
            issuer_tbs.subject().clone()
        }
    };

    finish(TbsOut {
        version: Version::V3,
        serial_number: serial,
        signature: signature.algorithm_identifier(),
        issuer: issuer_name,
        validity: validity(
            not_before,
            not_after(not_before, req.validity_years)?,
            issuer,
            "validity_years",
            &format!("a {}-year certificate", req.validity_years),
        )?,
        subject,
        subject_public_key_info: req.spki.clone(),
        extensions: exts,
    })
}

fn is_leap(year: u32) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

/// `not_before` + `years` calendar years, minus one second, so a 1-year certificate covers
/// 365 (or 366) days inclusive; 29 February maps to 28 February in a common year.
pub fn not_after(not_before: SystemTime, years: u32) -> Result<SystemTime, PkiError> {
    let field = "validity_years";
    if years == 0 {
        return Err(PkiError::invalid(field, "must be at least 1"));
    }
    let start = DateTime::from_system_time(whole_seconds(not_before)?)
        .map_err(|e| PkiError::invalid("not_before", format!("out of range: {e}")))?;
    let year = u32::from(start.year())
        .checked_add(years)
        .filter(|y| *y <= 9999)
        .ok_or_else(|| {
            PkiError::invalid(field, format!("{years} years runs past the year 9999"))
        })?;
    let day = if start.month() == 2 && start.day() == 29 && !is_leap(year) {
        28
    } else {
        start.day()
    };
    let end = DateTime::new(
        year as u16,
        start.month(),
        day,
        start.hour(),
        start.minutes(),
        start.seconds(),
    )
    .map_err(|e| PkiError::invalid(field, format!("end date out of range: {e}")))?;
    Ok(end.to_system_time() - Duration::from_secs(1))
}

/// Put TBS and signature together (signatureAlgorithm = tbs.signature).
pub fn assemble(tbs: TbsCertificate, signature: &[u8]) -> Result<Certificate, PkiError> {
    let cert = CertOut {
        signature_algorithm: tbs.signature().clone(),
        tbs_certificate: tbs,
        signature: BitString::from_bytes(signature).map_err(enc)?,
    };
    let der = cert.to_der().map_err(enc)?;
    Certificate::from_der(&der).map_err(enc)
}

/// Certificate over an already encoded TBS: the TBS's bytes are carried as they are.
#[derive(Sequence)]
struct CertOverTbs<'a> {
    tbs_certificate: der::asn1::AnyRef<'a>,
    signature_algorithm: AlgorithmIdentifierOwned,
    signature: der::asn1::BitStringRef<'a>,
}

/// The `signature` field of an encoded TBSCertificate (version, serialNumber, signature, ...),
/// read without decoding the rest.
fn tbs_signature_algorithm(tbs_der: &[u8]) -> Result<AlgorithmIdentifierOwned, PkiError> {
    use der::Reader;
    let mut reader = der::SliceReader::new(tbs_der).map_err(enc)?;
    reader
        .sequence(|r| {
            // version [0] EXPLICIT, present in every v3 certificate signet makes.
            let _version: Option<der::asn1::ContextSpecific<Version>> =
                der::asn1::ContextSpecific::decode_explicit(r, der::TagNumber(0))?;
            let _serial = der::asn1::IntRef::decode(r)?;
            let alg = AlgorithmIdentifierOwned::decode(r)?;
            // The rest is left to whoever reads the certificate.
            r.read_slice(r.remaining_len())?;
            Ok(alg)
        })
        .map_err(enc)
}

/// The certificate (DER) made of an encoded TBS and the issuer's signature over exactly those
/// bytes, checked against the issuer's public key first: the signature algorithm is the one
/// the TBS names, and the signature must verify over the TBS as it will be sent. The TBS is
/// neither decoded nor encoded again (the issuance path's own assembly; [`assemble`] and
/// [`check_signed_by`] do the same for a decoded TBS).
pub fn assemble_checked(
    tbs_der: &[u8],
    signature: &[u8],
    issuer_spki: &SubjectPublicKeyInfoOwned,
) -> Result<Vec<u8>, PkiError> {
    let alg = tbs_signature_algorithm(tbs_der)?;
    verify_signature(issuer_spki, &alg, tbs_der, signature, "certificate")?;
    CertOverTbs {
        tbs_certificate: der::asn1::AnyRef::from_der(tbs_der).map_err(enc)?,
        signature_algorithm: alg,
        signature: der::asn1::BitStringRef::from_bytes(signature).map_err(enc)?,
    }
    .to_der()
    .map_err(enc)
}

/// Check an assembled certificate's signature against the issuer's public key (done before
/// any certificate is returned).
pub fn check_signed_by(
    cert: &Certificate,
    issuer_spki: &SubjectPublicKeyInfoOwned,
) -> Result<(), PkiError> {
    let what = "certificate";
    let tbs = cert.tbs_certificate();
    if cert.signature_algorithm() != tbs.signature() {
        return Err(PkiError::invalid(
            what,
            "signatureAlgorithm differs from tbsCertificate.signature",
        ));
    }
    let message = tbs.to_der().map_err(enc)?;
    let signature = cert
        .signature()
        .as_bytes()
        .ok_or_else(|| PkiError::invalid(what, "signature BIT STRING has unused bits"))?;
    verify_signature(
        issuer_spki,
        cert.signature_algorithm(),
        &message,
        signature,
        what,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::ProfileKind;
    use crate::pki::soft_signer::SoftKey;
    use x509_cert::ext::pkix::KeyUsages;

    fn at(s: &str) -> SystemTime {
        let dt: DateTime = s.parse().unwrap();
        dt.to_system_time()
    }

    fn urls() -> Urls {
        Urls {
            base: "http://pki.example.cn".into(),
        }
    }

    fn sign(tbs: TbsCertificate, key: &SoftKey, alg: SignatureAlgorithm) -> Certificate {
        let sig = key.sign(alg, &tbs.to_der().unwrap());
        assemble(tbs, &sig).unwrap()
    }

    fn root(key: &SoftKey, start: &str, years: u32) -> Certificate {
        let subject = SubjectSpec::parse("C=CN, O=Signet Test, CN=Signet Test Root").unwrap();
        let spki = key.spki();
        let req = CaRequest {
            subject: &subject,
            spki: &spki,
            path_len: None,
            validity_years: years,
        };
        let tbs = build_ca_tbs(
            None,
            key.default_alg(),
            &urls(),
            &req,
            crate::pki::serial::random_serial(),
            at(start),
        )
        .unwrap();
        sign(tbs, key, key.default_alg())
    }

    /// A profile of `kind` with a liability notice, every key type and without the CA/B
    /// rules (the tests below that want them turn them on).
    fn profile(kind: ProfileKind) -> Profile {
        Profile {
            liability: Some("500,000 CNY".into()),
            key_types: KeyType::ALL.to_vec(),
            cabf: false,
            ..Profile::with_defaults(
                kind.name(),
                kind,
                ObjectIdentifier::new_unwrap("1.3.6.1.4.1.99999.1.1"),
                vec!["root".into()],
            )
        }
    }

    fn ext(cert: &Certificate, id: ObjectIdentifier) -> Option<&Extension> {
        cert.tbs_certificate()
            .extensions()?
            .iter()
            .find(|e| e.extn_id == id)
    }

    /// The issuer named "root" whose certificate is `cert`, signing with `key`'s default
    /// algorithm.
    fn root_issuer<'a>(cert: &'a Certificate, key: &SoftKey) -> IssuerRef<'a> {
        IssuerRef {
            name: "root",
            cert,
            signature: key.default_alg(),
        }
    }

    /// `build_leaf_tbs` for `req` under `issuer` with a fresh random serial, valid from `start`.
    fn leaf_tbs_at(
        issuer: &IssuerRef,
        req: &LeafRequest,
        start: SystemTime,
    ) -> Result<TbsCertificate, PkiError> {
        build_leaf_tbs(
            issuer,
            &urls(),
            req,
            crate::pki::serial::random_serial(),
            start,
        )
    }

    #[test]
    fn not_after_is_calendar_years_minus_one_second() {
        let cases = [
            ("2026-11-24T13:00:00Z", 1, "2027-11-24T12:59:59Z"),
            ("2026-11-24T13:00:00Z", 2, "2028-11-24T12:59:59Z"),
            ("2024-02-29T00:00:00Z", 1, "2025-02-27T23:59:59Z"),
            ("2024-02-29T10:00:00Z", 4, "2028-02-29T09:59:59Z"),
            ("2027-01-01T00:00:00Z", 1, "2027-12-31T23:59:59Z"),
        ];
        for (start, years, end) in cases {
            assert_eq!(
                not_after(at(start), years).unwrap(),
                at(end),
                "{start} + {years}"
            );
        }
        let e = not_after(at("2026-01-01T00:00:00Z"), 0).unwrap_err();
        assert!(e.to_string().starts_with("validity_years"), "{e}");
        // Fractions of a second are dropped rather than rounded up.
        let t = at("2026-11-24T13:00:00Z") + Duration::from_millis(700);
        assert_eq!(not_after(t, 1).unwrap(), at("2027-11-24T12:59:59Z"));
    }

    #[test]
    fn times_use_utctime_until_2049_and_generalizedtime_from_2050() {
        let key = SoftKey::p256(11);
        let cert = root(&key, "2040-06-01T00:00:00Z", 20);
        let v = cert.tbs_certificate().validity();
        assert!(matches!(v.not_before, Time::UtcTime(_)));
        assert!(matches!(v.not_after, Time::GeneralTime(_)));
        let der = cert.to_der().unwrap();
        // 2060-05-31T23:59:59Z as GeneralizedTime
        assert!(der.windows(17).any(|w| w == b"\x18\x0f20600531235959Z"));
        assert!(der.windows(15).any(|w| w == b"\x17\x0d400601000000Z"));
    }

    #[test]
    fn root_is_self_signed_with_ca_extensions() {
        let key = SoftKey::p384(12);
        let cert = root(&key, "2026-01-01T00:00:00Z", 20);
        check_signed_by(&cert, &key.spki()).unwrap();
        let tbs = cert.tbs_certificate();
        assert_eq!(tbs.issuer(), tbs.subject());
        assert_eq!(tbs.version(), Version::V3);
        let (crit, bc) = tbs.get_extension::<BasicConstraints>().unwrap().unwrap();
        assert!(crit && bc.ca);
        let (crit, ku) = tbs.get_extension::<KeyUsage>().unwrap().unwrap();
        assert!(crit && ku.key_cert_sign() && ku.crl_sign() && ku.digital_signature());
        let (_, ski) = tbs
            .get_extension::<SubjectKeyIdentifier>()
            .unwrap()
            .unwrap();
        let (_, aki) = tbs
            .get_extension::<AuthorityKeyIdentifier>()
            .unwrap()
            .unwrap();
        assert_eq!(ski.0.as_bytes(), key_identifier(&key.spki()));
        assert_eq!(aki.key_identifier.unwrap().as_bytes(), ski.0.as_bytes());
        assert!(
            tbs.get_extension::<CrlDistributionPoints>()
                .unwrap()
                .is_none()
        );
        assert!(
            tbs.get_extension::<AuthorityInfoAccessSyntax>()
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn leaf_carries_every_required_extension() {
        let ca_key = SoftKey::p256(13);
        let ca = root(&ca_key, "2026-01-01T00:00:00Z", 10);
        let issuer = root_issuer(&ca, &ca_key);
        let leaf_key = SoftKey::rsa2048();
        let spki = leaf_key.spki();
        let p = profile(ProfileKind::Server);
        let subject = SubjectSpec::parse("CN=www.example.cn").unwrap();
        let sans = [
            San::Dns("www.example.cn".into()),
            San::Ip("192.0.2.7".parse().unwrap()),
        ];
        let req = LeafRequest {
            profile: &p,
            subject: &subject,
            sans: &sans,
            spki: &spki,
            key_type: KeyType::Rsa2048,
            validity_years: 1,
        };
        let serial = crate::pki::serial::random_serial();
        let tbs = build_leaf_tbs(
            &issuer,
            &urls(),
            &req,
            serial.clone(),
            at("2026-03-01T08:00:00Z"),
        )
        .unwrap();
        assert_eq!(tbs.serial_number(), &serial);
        assert_eq!(tbs.issuer(), ca.tbs_certificate().subject());
        assert_eq!(
            tbs.signature(),
            &ca_key.default_alg().algorithm_identifier()
        );
        // The issuance path's assembly over the encoded TBS gives the very same certificate,
        // and refuses a signature by another key.
        let tbs_der = tbs.to_der().unwrap();
        let sig = ca_key.sign(ca_key.default_alg(), &tbs_der);
        let lean = assemble_checked(&tbs_der, &sig, &ca_key.spki()).unwrap();
        assert_eq!(lean, assemble(tbs.clone(), &sig).unwrap().to_der().unwrap());
        assert!(matches!(
            assemble_checked(&tbs_der, &sig, &SoftKey::p256(14).spki()),
            Err(PkiError::BadSignature { .. })
        ));
        let other = SoftKey::p256(14).sign(ca_key.default_alg(), &tbs_der);
        assert!(assemble_checked(&tbs_der, &other, &ca_key.spki()).is_err());
        let cert = sign(tbs, &ca_key, ca_key.default_alg());
        check_signed_by(&cert, &ca_key.spki()).unwrap();
        // The wrong key, and a damaged signature, are refused.
        assert!(matches!(
            check_signed_by(&cert, &SoftKey::p256(14).spki()),
            Err(PkiError::BadSignature { .. })
        ));
        let tbs = cert.tbs_certificate();
        let (crit, bc) = tbs.get_extension::<BasicConstraints>().unwrap().unwrap();
        assert!(crit && !bc.ca);
        let (crit, ku) = tbs.get_extension::<KeyUsage>().unwrap().unwrap();
        assert!(crit);
        assert_eq!(
            ku.0,
            KeyUsages::DigitalSignature | KeyUsages::KeyEncipherment
        );
        let (_, eku) = tbs.get_extension::<ExtendedKeyUsage>().unwrap().unwrap();
        assert_eq!(eku.0, ProfileKind::Server.extended_key_usage());
        let (crit, san) = tbs.get_extension::<SubjectAltName>().unwrap().unwrap();
        assert!(!crit);
        assert_eq!(san.0.len(), 2);
        let (_, aki) = tbs
            .get_extension::<AuthorityKeyIdentifier>()
            .unwrap()
            .unwrap();
        assert_eq!(
            aki.key_identifier.unwrap().as_bytes(),
            key_identifier(&ca_key.spki())
        );
        let (_, ski) = tbs
            .get_extension::<SubjectKeyIdentifier>()
            .unwrap()
            .unwrap();
        assert_eq!(ski.0.as_bytes(), key_identifier(&spki));
        let (_, pol) = tbs.get_extension::<CertificatePolicies>().unwrap().unwrap();
        assert_eq!(pol.0[0].policy_identifier, p.policy_oid);
        let der = ext(&cert, CertificatePolicies::OID)
            .unwrap()
            .extn_value
            .as_bytes()
            .to_vec();
        let notice = p.notice_text().unwrap();
        let mut utf8 = vec![0x0c, notice.len() as u8];
        utf8.extend_from_slice(notice.as_bytes());
        assert!(
            der.windows(utf8.len()).any(|w| w == utf8),
            "notice as UTF8String"
        );
        let cdp = ext(&cert, CrlDistributionPoints::OID)
            .unwrap()
            .extn_value
            .as_bytes();
        assert!(
            cdp.windows(30)
                .any(|w| w == b"http://pki.example.cn/crl/root")
        );
        let aia = ext(&cert, AuthorityInfoAccessSyntax::OID)
            .unwrap()
            .extn_value
            .as_bytes();
        assert!(aia.windows(26).any(|w| w == b"http://pki.example.cn/ocsp"));
        assert!(
            aia.windows(29)
                .any(|w| w == b"http://pki.example.cn/ca/root")
        );
    }

    #[test]
    fn san_is_critical_when_the_subject_is_empty() {
        let ca_key = SoftKey::ed25519(15);
        let ca = root(&ca_key, "2026-01-01T00:00:00Z", 10);
        let issuer = IssuerRef {
            name: "root",
            cert: &ca,
            signature: SignatureAlgorithm::Ed25519,
        };
        let spki = SoftKey::p256(16).spki();
        let p = profile(ProfileKind::Server);
        let subject = SubjectSpec::default();
        let sans = [San::Dns("api.example.cn".into())];
        let req = LeafRequest {
            profile: &p,
            subject: &subject,
            sans: &sans,
            spki: &spki,
            key_type: KeyType::P256,
            validity_years: 2,
        };
        let tbs = leaf_tbs_at(&issuer, &req, at("2026-05-01T00:00:00Z")).unwrap();
        assert!(tbs.subject().is_empty());
        let (crit, _) = tbs.get_extension::<SubjectAltName>().unwrap().unwrap();
        assert!(crit);
    }

    #[test]
    fn leaf_outliving_its_issuer_or_lying_about_its_key_is_refused() {
        let ca_key = SoftKey::p256(17);
        let ca = root(&ca_key, "2026-01-01T00:00:00Z", 1);
        let issuer = root_issuer(&ca, &ca_key);
        let spki = SoftKey::p256(18).spki();
        let p = profile(ProfileKind::Personal);
        let subject = SubjectSpec::parse("CN=张三").unwrap();
        let mut req = LeafRequest {
            profile: &p,
            subject: &subject,
            sans: &[],
            spki: &spki,
            key_type: KeyType::P256,
            validity_years: 1,
        };
        let e = leaf_tbs_at(&issuer, &req, at("2026-06-01T00:00:00Z")).unwrap_err();
        assert!(e.to_string().starts_with("validity_years:"), "{e}");
        req.key_type = KeyType::P384;
        let e = leaf_tbs_at(&issuer, &req, at("2026-02-01T00:00:00Z")).unwrap_err();
        assert!(e.to_string().starts_with("csr:"), "{e}");
        // An issuer algorithm that does not fit the issuer's key.
        let bad_issuer = IssuerRef {
            signature: SignatureAlgorithm::Ed25519,
            ..issuer
        };
        req.key_type = KeyType::P256;
        let e = leaf_tbs_at(&bad_issuer, &req, at("2026-02-01T00:00:00Z")).unwrap_err();
        assert!(e.to_string().starts_with("issuer:"), "{e}");
    }

    fn intermediate(
        parent: &Certificate,
        parent_key: &SoftKey,
        key: &SoftKey,
        path_len: Option<u8>,
    ) -> Result<Certificate, PkiError> {
        let subject = SubjectSpec::parse("C=CN, O=Signet Test, CN=Signet Test Issuing").unwrap();
        let spki = key.spki();
        let req = CaRequest {
            subject: &subject,
            spki: &spki,
            path_len,
            validity_years: 5,
        };
        let issuer = root_issuer(parent, parent_key);
        let tbs = build_ca_tbs(
            Some(&issuer),
            parent_key.default_alg(),
            &urls(),
            &req,
            crate::pki::serial::random_serial(),
            at("2026-02-01T00:00:00Z"),
        )?;
        Ok(sign(tbs, parent_key, parent_key.default_alg()))
    }

    #[test]
    fn intermediates_respect_the_issuers_path_length() {
        let root_key = SoftKey::p384(20);
        let root_cert = root(&root_key, "2026-01-01T00:00:00Z", 20);
        let rsa_key = SoftKey::rsa2048();
        let ca = intermediate(&root_cert, &root_key, &rsa_key, Some(0)).unwrap();
        check_signed_by(&ca, &root_key.spki()).unwrap();
        let (_, aki) = ca
            .tbs_certificate()
            .get_extension::<AuthorityKeyIdentifier>()
            .unwrap()
            .unwrap();
        assert_eq!(
            aki.key_identifier.unwrap().as_bytes(),
            key_identifier(&root_key.spki())
        );
        assert!(ext(&ca, CrlDistributionPoints::OID).is_some());
        assert!(ext(&ca, AuthorityInfoAccessSyntax::OID).is_some());
        // Nothing may be a CA below a pathLenConstraint of 0.
        let e = intermediate(&ca, &rsa_key, &SoftKey::p256(21), Some(0)).unwrap_err();
        assert!(e.to_string().starts_with("issuer:"), "{e}");
        // Below a limit of 1, the new CA must have a limit of 0.
        let one = intermediate(&root_cert, &root_key, &rsa_key, Some(1)).unwrap();
        let e = intermediate(&one, &rsa_key, &SoftKey::p256(21), None).unwrap_err();
        assert!(e.to_string().starts_with("path_len:"), "{e}");
        let e = intermediate(&one, &rsa_key, &SoftKey::p256(21), Some(1)).unwrap_err();
        assert!(e.to_string().starts_with("path_len:"), "{e}");
        intermediate(&one, &rsa_key, &SoftKey::p256(21), Some(0)).unwrap();
    }

    #[test]
    fn leaves_need_a_ca_issuer_and_a_sound_serial() {
        let ca_key = SoftKey::p256(22);
        let ca = root(&ca_key, "2026-01-01T00:00:00Z", 10);
        let spki = SoftKey::p256(23).spki();
        let p = profile(ProfileKind::Personal);
        let subject = SubjectSpec::parse("CN=王五").unwrap();
        let req = LeafRequest {
            profile: &p,
            subject: &subject,
            sans: &[],
            spki: &spki,
            key_type: KeyType::P256,
            validity_years: 1,
        };
        let issuer = root_issuer(&ca, &ca_key);
        let t = at("2026-02-01T00:00:00Z");
        for (bytes, why) in [
            (&[0x01, 0x02][..], "at least 9"),
            (
                &[0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00][..],
                "zero",
            ),
        ] {
            let serial = SerialNumber::new(bytes).unwrap();
            let e = build_leaf_tbs(&issuer, &urls(), &req, serial, t).unwrap_err();
            assert!(
                e.to_string().starts_with("serial:") && e.to_string().contains(why),
                "{e}"
            );
        }
        let leaf_tbs = leaf_tbs_at(&issuer, &req, t).unwrap();
        let leaf = sign(leaf_tbs, &ca_key, ca_key.default_alg());
        let not_a_ca = IssuerRef {
            name: "leaf",
            cert: &leaf,
            signature: SignatureAlgorithm::EcdsaSha256,
        };
        let e = leaf_tbs_at(&not_a_ca, &req, t).unwrap_err();
        assert!(e.to_string().contains("not a CA"), "{e}");
    }

    #[test]
    fn the_audit_certificate_has_a_critical_purpose_of_the_cas_own_and_no_any_policy() {
        let ca_key = SoftKey::p256(30);
        let ca = root(&ca_key, "2026-01-01T00:00:00Z", 10);
        let issuer = root_issuer(&ca, &ca_key);
        let spki = SoftKey::p256(31).spki();
        let purpose = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.61234.3.2");
        let policy = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.61234.3.1");
        let p = Profile {
            private_eku: Some(purpose),
            ..Profile::with_defaults(
                "audit_signing",
                ProfileKind::AuditSigning,
                policy,
                vec!["root".into()],
            )
        };
        let subject = SubjectSpec::parse("CN=Audit Key").unwrap();
        let req = LeafRequest {
            profile: &p,
            subject: &subject,
            sans: &[],
            spki: &spki,
            key_type: KeyType::P256,
            validity_years: 1,
        };
        let tbs = leaf_tbs_at(&issuer, &req, at("2026-02-01T00:00:00Z")).unwrap();
        let (crit, eku) = tbs.get_extension::<ExtendedKeyUsage>().unwrap().unwrap();
        assert!(crit);
        assert_eq!(eku.0, vec![purpose]);
        let (_, pol) = tbs.get_extension::<CertificatePolicies>().unwrap().unwrap();
        let oids: Vec<_> = pol.0.iter().map(|p| p.policy_identifier).collect();
        assert_eq!(oids, vec![policy]);
        // Without the purpose there is no audit certificate to make.
        let without = Profile {
            private_eku: None,
            ..p.clone()
        };
        let req = LeafRequest {
            profile: &without,
            ..req
        };
        let e = leaf_tbs_at(&issuer, &req, at("2026-02-01T00:00:00Z")).unwrap_err();
        assert!(e.to_string().starts_with("profile:"), "{e}");
    }

    #[test]
    fn nothing_starts_before_its_issuer() {
        let ca_key = SoftKey::p256(32);
        let ca = root(&ca_key, "2026-06-01T00:00:00Z", 10);
        let issuer = root_issuer(&ca, &ca_key);
        let spki = SoftKey::p256(33).spki();
        let p = profile(ProfileKind::Personal);
        let subject = SubjectSpec::parse("CN=张三").unwrap();
        let req = LeafRequest {
            profile: &p,
            subject: &subject,
            sans: &[],
            spki: &spki,
            key_type: KeyType::P256,
            validity_years: 1,
        };
        let e = leaf_tbs_at(&issuer, &req, at("2026-05-31T23:59:59Z")).unwrap_err();
        assert!(
            e.to_string().starts_with("not_before:") && e.to_string().contains("clock"),
            "{e}"
        );
        leaf_tbs_at(&issuer, &req, at("2026-06-01T00:00:00Z")).unwrap();
        let responder = ResponderRequest {
            subject: &subject,
            spki: &spki,
            lifetime: Duration::from_secs(86_400),
            policy: ObjectIdentifier::new_unwrap("1.3.6.1.4.1.61234.3.1"),
        };
        let e = build_ocsp_responder_tbs(
            &issuer,
            &responder,
            crate::pki::serial::random_serial(),
            at("2026-05-01T00:00:00Z"),
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("not_before:"), "{e}");
        let tbs = build_ocsp_responder_tbs(
            &issuer,
            &responder,
            crate::pki::serial::random_serial(),
            at("2026-06-02T00:00:00Z"),
        )
        .unwrap();
        let (_, pol) = tbs.get_extension::<CertificatePolicies>().unwrap().unwrap();
        assert_eq!(pol.0[0].policy_identifier, responder.policy);
    }

    #[test]
    fn cabf_tls_leaves_carry_the_reserved_policy_first_and_no_notice() {
        let ca_key = SoftKey::p256(34);
        let ca = root(&ca_key, "2026-01-01T00:00:00Z", 10);
        let issuer = root_issuer(&ca, &ca_key);
        let spki = SoftKey::p256(35).spki();
        let p = Profile {
            cabf: true,
            ..profile(ProfileKind::Server)
        };
        let subject = SubjectSpec::parse("CN=www.example.cn").unwrap();
        let sans = [San::Dns("www.example.cn".into())];
        let req = LeafRequest {
            profile: &p,
            subject: &subject,
            sans: &sans,
            spki: &spki,
            key_type: KeyType::P256,
            validity_years: 2,
        };
        let start = at("2026-11-30T00:00:00Z");
        let tbs = leaf_tbs_at(&issuer, &req, start).unwrap();
        let (_, pol) = tbs.get_extension::<CertificatePolicies>().unwrap().unwrap();
        let oids: Vec<_> = pol.0.iter().map(|p| p.policy_identifier).collect();
        assert_eq!(oids, vec![crate::pki::oids::cabf::TLS_DV, p.policy_oid]);
        assert!(pol.0.iter().all(|p| p.policy_qualifiers.is_none()));
        assert_eq!(
            tbs.validity().not_after.to_system_time(),
            start + Duration::from_secs(199 * 86_400 - 1)
        );
    }

    #[test]
    fn urls_are_built_from_the_base_and_checked() {
        let u = Urls {
            base: "https://pki.example.cn/".into(),
        };
        assert_eq!(
            u.crl("issuing-ec"),
            "https://pki.example.cn/crl/issuing-ec.crl"
        );
        assert_eq!(u.ocsp(), "https://pki.example.cn/ocsp");
        assert_eq!(u.ca_issuers("root"), "https://pki.example.cn/ca/root.crt");
        assert!(uri(&u.crl("issuing-ec")).is_ok());
        for bad in [
            "ftp://x.example/crl",
            "http://",
            "http://a b/crl",
            "http://例子.cn/crl",
        ] {
            let e = uri(bad).unwrap_err();
            assert!(e.to_string().starts_with("urls.base:"), "{bad}: {e}");
        }
    }
}
