//! RFC 3161 timestamps: the request and response structures, defined here with `der` derive
//! (the x509-tsp crate is on another der version), request parsing with limits, and building
//! the signed token: a CMS SignedData over a TSTInfo, with the signed attributes contentType,
//! messageDigest and ESS signingCertificateV2 (RFC 5816) that `openssl ts -verify` checks.
//! Pure, no I/O: the signature comes in as bytes from whoever holds the key.

use std::time::SystemTime;

use cms::cert::{CertificateChoices, IssuerAndSerialNumber};
use cms::content_info::{CmsVersion, ContentInfo};
use cms::signed_data::{
    CertificateSet, EncapsulatedContentInfo, SignedAttributes, SignedData, SignerIdentifier,
    SignerInfo, SignerInfos,
};
use const_oid::ObjectIdentifier;
use const_oid::db::rfc5911::ID_SIGNED_DATA;
use der::asn1::{Any, BitString, GeneralizedTime, Int, OctetString, SetOfVec};
use der::{Decode, Encode, Sequence, Tagged};
use sha2::Digest;
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::Certificate;
use x509_cert::attr::Attribute;
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::serial_number::SerialNumber;

use super::PkiError;
use super::alg::{Hash, SignatureAlgorithm};
use super::verify::verify_signature;

pub use super::alg::oid::{SHA256 as ID_SHA256, SHA384 as ID_SHA384, SHA512 as ID_SHA512};
pub use const_oid::db::rfc3161::ID_CT_TST_INFO;
pub use const_oid::db::rfc5911::{
    ID_AA_SIGNING_CERTIFICATE_V_2 as ID_AA_SIGNING_CERTIFICATE_V2, ID_CONTENT_TYPE,
    ID_MESSAGE_DIGEST,
};

/// The largest request accepted, in bytes (a request is an imprint, a nonce and a policy).
pub const MAX_REQUEST_BYTES: usize = 16 * 1024;
/// The longest nonce accepted, in content octets.
pub const MAX_NONCE_BYTES: usize = 64;

fn enc(e: der::Error) -> PkiError {
    PkiError::Encoding(e.to_string())
}

/// MessageImprint.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct MessageImprint {
    /// hashAlgorithm.
    pub hash_algorithm: AlgorithmIdentifierOwned,
    /// hashedMessage.
    pub hashed_message: OctetString,
}

/// TimeStampReq.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct TimeStampReq {
    /// version (v1 = 1).
    pub version: u8,
    /// messageImprint.
    pub message_imprint: MessageImprint,
    /// reqPolicy.
    #[asn1(optional = "true")]
    pub req_policy: Option<ObjectIdentifier>,
    /// nonce (kept as sent so it is echoed exactly).
    #[asn1(optional = "true")]
    pub nonce: Option<Int>,
    /// certReq.
    #[asn1(default = "Default::default")]
    pub cert_req: bool,
    /// extensions (none is supported).
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT", optional = "true")]
    pub extensions: Option<Vec<Extension>>,
}

/// Accuracy.
#[derive(Clone, Copy, Debug, Eq, PartialEq, Sequence)]
pub struct Accuracy {
    /// seconds.
    #[asn1(optional = "true")]
    pub seconds: Option<u32>,
    /// millis (1..999).
    #[asn1(context_specific = "0", tag_mode = "IMPLICIT", optional = "true")]
    pub millis: Option<u16>,
    /// micros (1..999).
    #[asn1(context_specific = "1", tag_mode = "IMPLICIT", optional = "true")]
    pub micros: Option<u16>,
}

/// TSTInfo.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct TstInfo {
    /// version (v1 = 1).
    pub version: u8,
    /// policy.
    pub policy: ObjectIdentifier,
    /// messageImprint, copied from the request.
    pub message_imprint: MessageImprint,
    /// serialNumber.
    pub serial_number: u64,
    /// genTime.
    pub gen_time: GeneralizedTime,
    /// accuracy.
    #[asn1(optional = "true")]
    pub accuracy: Option<Accuracy>,
    /// nonce, copied from the request.
    #[asn1(optional = "true")]
    pub nonce: Option<Int>,
}

/// PKIStatusInfo.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct PkiStatusInfo {
    /// status: 0 granted, 2 rejection.
    pub status: u8,
    /// statusString.
    #[asn1(optional = "true")]
    pub status_string: Option<Vec<String>>,
    /// failInfo.
    #[asn1(optional = "true")]
    pub fail_info: Option<BitString>,
}

/// TimeStampResp.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct TimeStampResp {
    /// status.
    pub status: PkiStatusInfo,
    /// timeStampToken.
    #[asn1(optional = "true")]
    pub time_stamp_token: Option<ContentInfo>,
}

/// IssuerSerial (RFC 5035).
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct IssuerSerial {
    /// issuer.
    pub issuer: Vec<GeneralName>,
    /// serialNumber.
    pub serial_number: SerialNumber,
}

/// ESSCertIDv2 with the default hash algorithm (SHA-256), which DER leaves out.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct EssCertIdV2 {
    /// certHash: SHA-256 of the TSA certificate.
    pub cert_hash: OctetString,
    /// issuerSerial.
    #[asn1(optional = "true")]
    pub issuer_serial: Option<IssuerSerial>,
}

/// SigningCertificateV2.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct SigningCertificateV2 {
    /// certs: the TSA certificate first.
    pub certs: Vec<EssCertIdV2>,
}

/// Why a request gets a rejection instead of a token (PKIFailureInfo bit numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureInfo {
    /// Unrecognized or unsupported algorithm identifier.
    BadAlg = 0,
    /// Transaction not permitted or supported.
    BadRequest = 2,
    /// The data submitted has the wrong format.
    BadDataFormat = 5,
    /// The TSA's time source is not available.
    TimeNotAvailable = 14,
    /// The requested TSA policy is not supported.
    UnacceptedPolicy = 15,
    /// The requested extension is not supported.
    UnacceptedExtension = 16,
    /// The request cannot be handled due to system failure.
    SystemFailure = 25,
}

/// A request refused: the failure bit and a sentence for the statusString.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// The failInfo bit.
    pub info: FailureInfo,
    /// What is wrong, in a sentence naming the field.
    pub text: String,
}

impl Rejection {
    /// A rejection with this bit and text.
    pub fn new(info: FailureInfo, text: impl Into<String>) -> Rejection {
        Rejection {
            info,
            text: text.into(),
        }
    }
}

/// The imprint hash algorithms accepted, with their digest lengths.
fn imprint_len(oid: &ObjectIdentifier) -> Option<usize> {
    match *oid {
        ID_SHA256 => Some(32),
        ID_SHA384 => Some(48),
        ID_SHA512 => Some(64),
        // GM/T 0033 timestamps of SM3 digests.
        super::alg::oid::SM3 => Some(32),
        _ => None,
    }
}

/// Parse and check a DER TimeStampReq: version 1, a SHA-256/384/512 imprint of the right
/// length (anything else is badAlg), `policy` or no policy, a bounded nonce, no extensions.
pub fn parse_request(der: &[u8], policy: &ObjectIdentifier) -> Result<TimeStampReq, Rejection> {
    if der.len() > MAX_REQUEST_BYTES {
        return Err(Rejection::new(
            FailureInfo::BadDataFormat,
            format!("request: longer than {MAX_REQUEST_BYTES} bytes"),
        ));
    }
    let req = TimeStampReq::from_der(der).map_err(|e| {
        Rejection::new(
            FailureInfo::BadDataFormat,
            format!("request: not a DER TimeStampReq: {e}"),
        )
    })?;
    if req.version != 1 {
        return Err(Rejection::new(
            FailureInfo::BadRequest,
            format!("version: {} is not supported (only 1)", req.version),
        ));
    }
    let alg = &req.message_imprint.hash_algorithm;
    let Some(len) = imprint_len(&alg.oid) else {
        return Err(Rejection::new(
            FailureInfo::BadAlg,
            format!(
                "messageImprint.hashAlgorithm: {} is not accepted (use SHA-256, SHA-384, SHA-512 or SM3)",
                alg.oid
            ),
        ));
    };
    if alg
        .parameters
        .as_ref()
        .is_some_and(|p| p.tag() != der::Tag::Null || !p.value().is_empty())
    {
        return Err(Rejection::new(
            FailureInfo::BadAlg,
            "messageImprint.hashAlgorithm: parameters must be absent or NULL",
        ));
    }
    let got = req.message_imprint.hashed_message.as_bytes().len();
    if got != len {
        return Err(Rejection::new(
            FailureInfo::BadDataFormat,
            format!("messageImprint.hashedMessage: {got} bytes, the algorithm gives {len}"),
        ));
    }
    if let Some(p) = &req.req_policy
        && p != policy
    {
        return Err(Rejection::new(
            FailureInfo::UnacceptedPolicy,
            format!("reqPolicy: {p} is not this TSA's policy ({policy})"),
        ));
    }
    if let Some(n) = &req.nonce
        && n.as_bytes().len() > MAX_NONCE_BYTES
    {
        return Err(Rejection::new(
            FailureInfo::BadRequest,
            format!("nonce: longer than {MAX_NONCE_BYTES} octets"),
        ));
    }
    if req.extensions.as_ref().is_some_and(|e| !e.is_empty()) {
        return Err(Rejection::new(
            FailureInfo::UnacceptedExtension,
            "extensions: no request extension is supported",
        ));
    }
    Ok(req)
}

/// What one token says.
pub struct TokenContent<'a> {
    /// The TSA policy.
    pub policy: ObjectIdentifier,
    /// The request.
    pub request: &'a TimeStampReq,
    /// The serial number, unique for this TSA.
    pub serial: u64,
    /// The time, whole seconds.
    pub gen_time: SystemTime,
    /// The stated accuracy.
    pub accuracy: Accuracy,
}

/// A token being built: the TSTInfo DER and the signed attributes whose DER is signed.
pub struct PreparedToken {
    tst_der: Vec<u8>,
    signed_attrs: SignedAttributes,
    signed_attrs_der: Vec<u8>,
    hash: Hash,
}

impl PreparedToken {
    /// The bytes the TSA key signs (the DER SET OF signed attributes).
    pub fn to_be_signed(&self) -> &[u8] {
        &self.signed_attrs_der
    }
}

fn attribute(oid: ObjectIdentifier, value: Any) -> Result<Attribute, PkiError> {
    Ok(Attribute {
        oid,
        values: SetOfVec::try_from(vec![value]).map_err(enc)?,
    })
}

/// The ESS signingCertificateV2 attribute (RFC 5816) that binds every token to
/// `tsa_cert`: the same for every token, so made once.
pub fn signing_certificate_attribute(tsa_cert: &Certificate) -> Result<Attribute, PkiError> {
    let cert_der = tsa_cert.to_der().map_err(enc)?;
    let signing_cert = SigningCertificateV2 {
        certs: vec![EssCertIdV2 {
            cert_hash: OctetString::new(sha2::Sha256::digest(&cert_der).to_vec()).map_err(enc)?,
            issuer_serial: Some(IssuerSerial {
                issuer: vec![GeneralName::DirectoryName(
                    tsa_cert.tbs_certificate().issuer().clone(),
                )],
                serial_number: tsa_cert.tbs_certificate().serial_number().clone(),
            }),
        }],
    };
    attribute(
        ID_AA_SIGNING_CERTIFICATE_V2,
        Any::encode_from(&signing_cert).map_err(enc)?,
    )
}

/// Build the TSTInfo and the signed attributes (with the TSA's `signing_certificate`
/// attribute) for a key signing with `alg`.
pub fn prepare_token(
    content: &TokenContent,
    signing_certificate: &Attribute,
    alg: SignatureAlgorithm,
) -> Result<PreparedToken, PkiError> {
    let hash = alg.hash().ok_or_else(|| {
        PkiError::invalid(
            "tsa.key_type",
            "the TSA key must sign with SHA-256 or SHA-384",
        )
    })?;
    let tst = TstInfo {
        version: 1,
        policy: content.policy,
        message_imprint: content.request.message_imprint.clone(),
        serial_number: content.serial,
        gen_time: GeneralizedTime::from_system_time(content.gen_time).map_err(enc)?,
        accuracy: Some(content.accuracy),
        nonce: content.request.nonce.clone(),
    };
    let tst_der = tst.to_der().map_err(enc)?;
    let attrs = vec![
        attribute(
            ID_CONTENT_TYPE,
            Any::encode_from(&ID_CT_TST_INFO).map_err(enc)?,
        )?,
        attribute(
            ID_MESSAGE_DIGEST,
            Any::encode_from(&OctetString::new(hash.digest(&tst_der)).map_err(enc)?)
                .map_err(enc)?,
        )?,
        signing_certificate.clone(),
    ];
    let signed_attrs = SetOfVec::try_from(attrs).map_err(enc)?;
    let signed_attrs_der = signed_attrs.to_der().map_err(enc)?;
    Ok(PreparedToken {
        tst_der,
        signed_attrs,
        signed_attrs_der,
        hash,
    })
}

/// Assemble the signed token, after checking `signature` against the TSA key, and wrap it
/// in a granted TimeStampResp (DER). With `include_cert` the TSA certificate travels in the
/// SignedData (the request's certReq).
pub fn assemble_granted(
    prepared: PreparedToken,
    tsa_cert: &Certificate,
    alg: SignatureAlgorithm,
    signature: &[u8],
    include_cert: bool,
) -> Result<Vec<u8>, PkiError> {
    let tbs = tsa_cert.tbs_certificate();
    let spki: &SubjectPublicKeyInfoOwned = tbs.subject_public_key_info();
    let sig_alg = alg.algorithm_identifier();
    verify_signature(
        spki,
        &sig_alg,
        &prepared.signed_attrs_der,
        signature,
        "timestamp token",
    )?;
    let digest_alg = AlgorithmIdentifierOwned {
        oid: prepared.hash.oid(),
        parameters: None,
    };
    let signer = SignerInfo {
        version: CmsVersion::V1,
        sid: SignerIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: tbs.issuer().clone(),
            serial_number: tbs.serial_number().clone(),
        }),
        digest_alg: digest_alg.clone(),
        signed_attrs: Some(prepared.signed_attrs),
        signature_algorithm: sig_alg,
        signature: OctetString::new(signature.to_vec()).map_err(enc)?,
        unsigned_attrs: None,
    };
    let certificates = if include_cert {
        Some(CertificateSet(
            SetOfVec::try_from(vec![CertificateChoices::Certificate(tsa_cert.clone())])
                .map_err(enc)?,
        ))
    } else {
        None
    };
    let signed = SignedData {
        version: CmsVersion::V3,
        digest_algorithms: SetOfVec::try_from(vec![digest_alg]).map_err(enc)?,
        encap_content_info: EncapsulatedContentInfo {
            econtent_type: ID_CT_TST_INFO,
            econtent: Some(
                Any::encode_from(&OctetString::new(prepared.tst_der).map_err(enc)?).map_err(enc)?,
            ),
        },
        certificates,
        crls: None,
        signer_infos: SignerInfos(SetOfVec::try_from(vec![signer]).map_err(enc)?),
    };
    TimeStampResp {
        status: PkiStatusInfo {
            status: 0,
            status_string: None,
            fail_info: None,
        },
        time_stamp_token: Some(ContentInfo {
            content_type: ID_SIGNED_DATA,
            content: Any::encode_from(&signed).map_err(enc)?,
        }),
    }
    .to_der()
    .map_err(enc)
}

/// A rejection TimeStampResp (status 2) carrying the failInfo bit and the text.
pub fn rejection(r: &Rejection) -> Vec<u8> {
    let bit = r.info as usize;
    let mut bytes = vec![0u8; bit / 8 + 1];
    bytes[bit / 8] = 0x80 >> (bit % 8);
    let unused = (7 - bit % 8) as u8;
    let resp = TimeStampResp {
        status: PkiStatusInfo {
            status: 2,
            status_string: Some(vec![r.text.clone()]),
            fail_info: BitString::new(unused, bytes).ok(),
        },
        time_stamp_token: None,
    };
    // Encoding a status, a short string and a bit string cannot fail; should it ever, the
    // fixed encoding of a bare systemFailure rejection is the answer.
    resp.to_der().unwrap_or_else(|_| {
        vec![
            0x30, 0x0c, 0x30, 0x0a, 0x02, 0x01, 0x02, 0x03, 0x05, 0x06, 0x00, 0x00, 0x00, 0x40,
        ]
    })
}

/// The TSTInfo inside a granted response, for tests and the benchmark's own checks.
pub fn tst_info_of(response: &[u8]) -> Result<TstInfo, PkiError> {
    let resp = TimeStampResp::from_der(response).map_err(enc)?;
    let token = resp
        .time_stamp_token
        .ok_or_else(|| PkiError::invalid("response", "no token (a rejection)"))?;
    let signed: SignedData = token.content.decode_as().map_err(enc)?;
    let econtent = signed
        .encap_content_info
        .econtent
        .ok_or_else(|| PkiError::invalid("response", "the token has no content"))?;
    let octets: OctetString = econtent.decode_as().map_err(enc)?;
    TstInfo::from_der(octets.as_bytes()).map_err(enc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(alg: ObjectIdentifier, len: usize, nonce: Option<&[u8]>) -> Vec<u8> {
        TimeStampReq {
            version: 1,
            message_imprint: MessageImprint {
                hash_algorithm: AlgorithmIdentifierOwned {
                    oid: alg,
                    parameters: None,
                },
                hashed_message: OctetString::new(vec![7u8; len]).unwrap(),
            },
            req_policy: None,
            nonce: nonce.map(|n| Int::new(n).unwrap()),
            cert_req: true,
            extensions: None,
        }
        .to_der()
        .unwrap()
    }

    #[test]
    fn accepted_and_refused_imprints() {
        let policy = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.99999.2.1");
        for (oid, len) in [
            (ID_SHA256, 32),
            (ID_SHA384, 48),
            (ID_SHA512, 64),
            (super::super::alg::oid::SM3, 32),
        ] {
            let r = parse_request(&request(oid, len, Some(&[1, 2, 3])), &policy).unwrap();
            assert!(r.cert_req);
        }
        let md5 = ObjectIdentifier::new_unwrap("1.2.840.113549.2.5");
        let sha1 = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
        for (oid, len) in [(md5, 16), (sha1, 20)] {
            let e = parse_request(&request(oid, len, None), &policy).unwrap_err();
            assert_eq!(e.info, FailureInfo::BadAlg);
        }
        let e = parse_request(&request(ID_SHA256, 20, None), &policy).unwrap_err();
        assert_eq!(e.info, FailureInfo::BadDataFormat);
        assert!(e.text.starts_with("messageImprint.hashedMessage"), "{e:?}");
        let e = parse_request(b"\x30\x03\x02\x01", &policy).unwrap_err();
        assert_eq!(e.info, FailureInfo::BadDataFormat);
    }

    #[test]
    fn a_rejection_carries_its_failure_bit() {
        let der = rejection(&Rejection::new(FailureInfo::TimeNotAvailable, "clock"));
        let resp = TimeStampResp::from_der(&der).unwrap();
        assert_eq!(resp.status.status, 2);
        let bits = resp.status.fail_info.unwrap();
        assert_eq!(bits.raw_bytes(), [0x00, 0x02]);
        assert_eq!(bits.unused_bits(), 1);
        assert!(resp.time_stamp_token.is_none());
    }
}
