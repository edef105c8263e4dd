//! OCSP (RFC 6960): the request and response structures, defined here with `der` derive
//! (the x509-ocsp crate is on another der version), request parsing with limits, CertID
//! matching against an issuer, and building and checking a signed BasicOCSPResponse. Pure,
//! no I/O: the signature comes in as bytes from whoever holds the key.

use std::time::SystemTime;

use const_oid::ObjectIdentifier;
use der::asn1::{Any, BitString, GeneralizedTime, Int, OctetString};
use der::{Decode, Encode, Enumerated, Sequence};
use sha1::Digest;
use spki::{AlgorithmIdentifierOwned, SubjectPublicKeyInfoOwned};
use x509_cert::Certificate;
use x509_cert::ext::Extension;
use x509_cert::ext::pkix::CrlReason;

use super::PkiError;
use super::alg::SignatureAlgorithm;
use super::crl::reason_of;
use super::revocation::RevocationReason;
use super::verify::verify_signature;

/// id-pkix-ocsp-basic.
pub const ID_PKIX_OCSP_BASIC: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.1");
/// id-pkix-ocsp-nonce.
pub const ID_PKIX_OCSP_NONCE: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.5.5.7.48.1.2");
/// id-sha1.
pub const ID_SHA1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.14.3.2.26");
pub use super::alg::oid::SHA256 as ID_SHA256;

/// The largest request accepted, in bytes.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// The most CertIDs one request may ask about.
pub const MAX_REQUESTS: usize = 20;

fn enc(e: der::Error) -> PkiError {
    PkiError::Encoding(e.to_string())
}

/// CertID.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct CertId {
    /// hashAlgorithm.
    pub hash_algorithm: AlgorithmIdentifierOwned,
    /// issuerNameHash.
    pub issuer_name_hash: OctetString,
    /// issuerKeyHash.
    pub issuer_key_hash: OctetString,
    /// serialNumber (an INTEGER; kept as sent so it is echoed exactly).
    pub serial_number: Int,
}

/// Request.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct Request {
    /// reqCert.
    pub req_cert: CertId,
    /// singleRequestExtensions.
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub single_request_extensions: Option<Vec<Extension>>,
}

/// TBSRequest.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct TbsRequest {
    /// version (v1 = 0), tolerated when sent explicitly.
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub version: Option<u8>,
    /// requestorName (a GeneralName, not interpreted).
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    pub requestor_name: Option<Any>,
    /// requestList.
    pub request_list: Vec<Request>,
    /// requestExtensions.
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT", optional = "true")]
    pub request_extensions: Option<Vec<Extension>>,
}

/// OCSPRequest.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct OcspRequest {
    /// tbsRequest.
    pub tbs_request: TbsRequest,
    /// optionalSignature (ignored).
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub optional_signature: Option<Any>,
}

/// OCSPResponseStatus.
#[derive(Clone, Copy, Debug, Eq, PartialEq, Enumerated)]
#[repr(u32)]
pub enum OcspResponseStatus {
    /// Response has valid confirmations.
    Successful = 0,
    /// Illegal confirmation request.
    MalformedRequest = 1,
    /// Internal error in issuer.
    InternalError = 2,
    /// Try again later.
    TryLater = 3,
    /// Must sign the request.
    SigRequired = 5,
    /// Request unauthorized.
    Unauthorized = 6,
}

/// ResponseBytes.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct ResponseBytes {
    /// responseType.
    pub response_type: ObjectIdentifier,
    /// response.
    pub response: OctetString,
}

/// OCSPResponse.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct OcspResponse {
    /// responseStatus.
    pub response_status: OcspResponseStatus,
    /// responseBytes.
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub response_bytes: Option<ResponseBytes>,
}

/// RevokedInfo.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct RevokedInfo {
    /// revocationTime.
    pub revocation_time: GeneralizedTime,
    /// revocationReason.
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub revocation_reason: Option<CrlReason>,
}

/// SingleResponse. certStatus is a CHOICE of IMPLICIT tags, kept as the encoded element.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct SingleResponse {
    /// certID.
    pub cert_id: CertId,
    /// certStatus.
    pub cert_status: Any,
    /// thisUpdate.
    pub this_update: GeneralizedTime,
    /// nextUpdate.
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub next_update: Option<GeneralizedTime>,
    /// singleExtensions.
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    pub single_extensions: Option<Vec<Extension>>,
}

/// ResponseData; signet always answers with version v1 (omitted) and responderID byKey.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct ResponseData {
    /// version, absent (v1 is the default).
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub version: Option<u8>,
    /// responderID byKey [2] EXPLICIT KeyHash.
    #[asn1(context_specific = "2", tag_mode = "EXPLICIT")]
    pub responder_key_hash: OctetString,
    /// producedAt.
    pub produced_at: GeneralizedTime,
    /// responses.
    pub responses: Vec<SingleResponse>,
    /// responseExtensions.
    #[asn1(context_specific = "1", tag_mode = "EXPLICIT", optional = "true")]
    pub response_extensions: Option<Vec<Extension>>,
}

/// BasicOCSPResponse.
#[derive(Clone, Debug, Eq, PartialEq, Sequence)]
pub struct BasicOcspResponse {
    /// tbsResponseData.
    pub tbs_response_data: ResponseData,
    /// signatureAlgorithm.
    pub signature_algorithm: AlgorithmIdentifierOwned,
    /// signature.
    pub signature: BitString,
    /// certs.
    #[asn1(context_specific = "0", tag_mode = "EXPLICIT", optional = "true")]
    pub certs: Option<Vec<Certificate>>,
}

/// Parse a DER OCSPRequest: at most [`MAX_REQUEST_BYTES`], one to [`MAX_REQUESTS`] CertIDs.
pub fn parse_request(der: &[u8]) -> Result<OcspRequest, PkiError> {
    if der.len() > MAX_REQUEST_BYTES {
        return Err(PkiError::invalid("ocsp request", "too large"));
    }
    let req =
        OcspRequest::from_der(der).map_err(|e| PkiError::invalid("ocsp request", e.to_string()))?;
    let n = req.tbs_request.request_list.len();
    if n == 0 || n > MAX_REQUESTS {
        return Err(PkiError::invalid(
            "ocsp request",
            format!("must ask about 1 to {MAX_REQUESTS} certificates, not {n}"),
        ));
    }
    Ok(req)
}

/// A DER OCSPRequest asking about `ids`, with a nonce extension (RFC 8954: an OCTET
/// STRING of 1 to 32 octets) when `nonce` is given. Relying parties' side: for the
/// benchmark and tests.
pub fn build_request(ids: Vec<CertId>, nonce: Option<&[u8]>) -> Result<Vec<u8>, PkiError> {
    let request_extensions = match nonce {
        Some(n) => Some(vec![Extension {
            extn_id: ID_PKIX_OCSP_NONCE,
            critical: false,
            extn_value: OctetString::new(OctetString::new(n).map_err(enc)?.to_der().map_err(enc)?)
                .map_err(enc)?,
        }]),
        None => None,
    };
    OcspRequest {
        tbs_request: TbsRequest {
            version: None,
            requestor_name: None,
            request_list: ids
                .into_iter()
                .map(|req_cert| Request {
                    req_cert,
                    single_request_extensions: None,
                })
                .collect(),
            request_extensions,
        },
        optional_signature: None,
    }
    .to_der()
    .map_err(enc)
}

/// The nonce extension of a request, if any.
pub fn nonce(req: &OcspRequest) -> Option<&Extension> {
    req.tbs_request
        .request_extensions
        .as_ref()?
        .iter()
        .find(|e| e.extn_id == ID_PKIX_OCSP_NONCE)
}

fn public_key_bytes(cert: &Certificate) -> &[u8] {
    cert.tbs_certificate()
        .subject_public_key_info()
        .subject_public_key
        .raw_bytes()
}

/// Whether `id` names `issuer` (issuerNameHash over its DER subject, issuerKeyHash over its
/// subjectPublicKey), with SHA-1 or SHA-256.
pub fn cert_id_matches(id: &CertId, issuer: &Certificate) -> bool {
    IssuerHashes::new(issuer).is_some_and(|h| h.matches(id))
}

/// An issuer's name and key hashes under SHA-1 and SHA-256, computed once, so that matching
/// a CertID costs two comparisons.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuerHashes {
    sha1: (Vec<u8>, Vec<u8>),
    sha256: (Vec<u8>, Vec<u8>),
}

impl IssuerHashes {
    /// The hashes of `issuer`; `None` if its subject cannot be encoded.
    pub fn new(issuer: &Certificate) -> Option<IssuerHashes> {
        let name = issuer.tbs_certificate().subject().to_der().ok()?;
        let key = public_key_bytes(issuer);
        Some(IssuerHashes {
            sha1: (
                sha1::Sha1::digest(&name).to_vec(),
                sha1::Sha1::digest(key).to_vec(),
            ),
            sha256: (
                sha2::Sha256::digest(&name).to_vec(),
                sha2::Sha256::digest(key).to_vec(),
            ),
        })
    }

    /// The CertID of the certificate with serial `serial` (its INTEGER content octets)
    /// from this issuer, hashed with SHA-1 (`ID_SHA1`) or SHA-256 (`ID_SHA256`).
    pub fn cert_id(&self, alg: ObjectIdentifier, serial: &[u8]) -> Result<CertId, PkiError> {
        let (name, key) = if alg == ID_SHA1 {
            &self.sha1
        } else if alg == ID_SHA256 {
            &self.sha256
        } else {
            return Err(PkiError::invalid(
                "hash_algorithm",
                "must be SHA-1 or SHA-256",
            ));
        };
        Ok(CertId {
            hash_algorithm: AlgorithmIdentifierOwned {
                oid: alg,
                parameters: None,
            },
            issuer_name_hash: OctetString::new(name.clone()).map_err(enc)?,
            issuer_key_hash: OctetString::new(key.clone()).map_err(enc)?,
            serial_number: Int::new(serial).map_err(enc)?,
        })
    }

    /// Whether `id` names this issuer.
    pub fn matches(&self, id: &CertId) -> bool {
        let alg = &id.hash_algorithm.oid;
        let (name, key) = if *alg == ID_SHA1 {
            &self.sha1
        } else if *alg == ID_SHA256 {
            &self.sha256
        } else {
            return false;
        };
        name.as_slice() == id.issuer_name_hash.as_bytes()
            && key.as_slice() == id.issuer_key_hash.as_bytes()
    }
}

/// The serial of a CertID as lower-case hex of its content octets.
pub fn serial_hex(id: &CertId) -> String {
    hex::encode(id.serial_number.as_bytes())
}

/// The status of one certificate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Issued and not revoked.
    Good,
    /// Revoked at this time, for this reason.
    Revoked {
        /// revocationTime.
        at: SystemTime,
        /// revocationReason (left out when unspecified).
        reason: RevocationReason,
    },
    /// Not issued by this issuer as far as the responder knows.
    Unknown,
}

fn gtime(t: SystemTime, what: &str) -> Result<GeneralizedTime, PkiError> {
    GeneralizedTime::from_system_time(t)
        .map_err(|e| PkiError::invalid(what, format!("out of range: {e}")))
}

fn status_element(s: Status) -> Result<Any, PkiError> {
    let bytes = match s {
        Status::Good => vec![0x80, 0x00],
        Status::Unknown => vec![0x82, 0x00],
        Status::Revoked { at, reason } => {
            let info = RevokedInfo {
                revocation_time: gtime(at, "revocation_time")?,
                revocation_reason: (reason != RevocationReason::Unspecified)
                    .then(|| reason_of(reason)),
            };
            // [1] IMPLICIT RevokedInfo: the SEQUENCE with its tag replaced.
            let mut der = info.to_der().map_err(enc)?;
            der[0] = 0xa1;
            der
        }
    };
    Any::from_der(&bytes).map_err(enc)
}

/// What one response says, apart from who signs it.
#[derive(Clone, Debug)]
pub struct ResponseContent<'a> {
    /// Each CertID asked about, with its status.
    pub entries: &'a [(CertId, Status)],
    /// producedAt and thisUpdate.
    pub produced_at: SystemTime,
    /// nextUpdate.
    pub next_update: SystemTime,
    /// The request's nonce extension, echoed.
    pub nonce: Option<&'a Extension>,
}

/// SHA-1 of a certificate's subjectPublicKey: the responderID byKey.
pub fn key_hash(cert: &Certificate) -> Vec<u8> {
    sha1::Sha1::digest(public_key_bytes(cert)).to_vec()
}

/// The ResponseData signed by `signer`.
pub fn build_response_data(
    signer: &Certificate,
    content: &ResponseContent<'_>,
) -> Result<ResponseData, PkiError> {
    let this_update = gtime(content.produced_at, "produced_at")?;
    let next_update = gtime(content.next_update, "next_update")?;
    let responses = content
        .entries
        .iter()
        .map(|(id, s)| {
            Ok(SingleResponse {
                cert_id: id.clone(),
                cert_status: status_element(*s)?,
                this_update,
                next_update: Some(next_update),
                single_extensions: None,
            })
        })
        .collect::<Result<Vec<_>, PkiError>>()?;
    let response_extensions = content.nonce.map(|n| {
        vec![Extension {
            extn_id: n.extn_id,
            critical: false,
            extn_value: n.extn_value.clone(),
        }]
    });
    Ok(ResponseData {
        version: None,
        responder_key_hash: OctetString::new(key_hash(signer)).map_err(enc)?,
        produced_at: this_update,
        responses,
        response_extensions,
    })
}

/// Put ResponseData, signature and certificates together into a successful OCSPResponse,
/// checking the signature against `signer_spki` first. Returns the DER.
pub fn assemble_response(
    tbs: ResponseData,
    alg: SignatureAlgorithm,
    signature: &[u8],
    signer_spki: &SubjectPublicKeyInfoOwned,
    certs: Option<Vec<Certificate>>,
) -> Result<Vec<u8>, PkiError> {
    let message = tbs.to_der().map_err(enc)?;
    let signature_algorithm = alg.algorithm_identifier();
    verify_signature(
        signer_spki,
        &signature_algorithm,
        &message,
        signature,
        "OCSP response",
    )?;
    let basic = BasicOcspResponse {
        tbs_response_data: tbs,
        signature_algorithm,
        signature: BitString::from_bytes(signature).map_err(enc)?,
        certs,
    };
    OcspResponse {
        response_status: OcspResponseStatus::Successful,
        response_bytes: Some(ResponseBytes {
            response_type: ID_PKIX_OCSP_BASIC,
            response: OctetString::new(basic.to_der().map_err(enc)?).map_err(enc)?,
        }),
    }
    .to_der()
    .map_err(enc)
}

/// An unsuccessful OCSPResponse (no responseBytes).
pub fn error_response(status: OcspResponseStatus) -> Vec<u8> {
    // Three fixed bytes inside a SEQUENCE: 30 03 0a 01 <status>.
    vec![0x30, 0x03, 0x0a, 0x01, status as u8]
}

/// OCSPResponse with status malformedRequest.
pub fn malformed_request() -> Vec<u8> {
    error_response(OcspResponseStatus::MalformedRequest)
}

/// OCSPResponse with status unauthorized.
pub fn unauthorized() -> Vec<u8> {
    error_response(OcspResponseStatus::Unauthorized)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::soft_signer::SoftKey;
    use crate::pki::test_ca;

    fn cert_id(issuer: &Certificate, alg: ObjectIdentifier, serial: &[u8]) -> CertId {
        IssuerHashes::new(issuer)
            .unwrap()
            .cert_id(alg, serial)
            .unwrap()
    }

    #[test]
    fn a_signed_response_round_trips_with_cert_ids_echoed_and_the_nonce() {
        let key = SoftKey::p256(11);
        let issuer = test_ca(&key, "Test OCSP Issuer");
        let other = test_ca(&SoftKey::p256(12), "Test OCSP Issuer");
        let sha1 = cert_id(&issuer, ID_SHA1, &[0x7f, 1]);
        let sha256 = cert_id(&issuer, ID_SHA256, &[0x01]);
        assert!(cert_id_matches(&sha1, &issuer) && cert_id_matches(&sha256, &issuer));
        assert!(!cert_id_matches(&sha1, &other));
        assert_eq!(serial_hex(&sha1), "7f01");
        let request = OcspRequest {
            tbs_request: TbsRequest {
                version: None,
                requestor_name: None,
                request_list: vec![Request {
                    req_cert: sha1.clone(),
                    single_request_extensions: None,
                }],
                request_extensions: Some(vec![Extension {
                    extn_id: ID_PKIX_OCSP_NONCE,
                    critical: false,
                    extn_value: OctetString::new(vec![4, 2, 9, 9]).unwrap(),
                }]),
            },
            optional_signature: None,
        };
        let parsed = parse_request(&request.to_der().unwrap()).unwrap();
        assert_eq!(parsed, request);
        let now = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
        let entries = [
            (sha1.clone(), Status::Good),
            (
                sha256.clone(),
                Status::Revoked {
                    at: now,
                    reason: RevocationReason::Superseded,
                },
            ),
        ];
        let content = ResponseContent {
            entries: &entries,
            produced_at: now,
            next_update: now + std::time::Duration::from_secs(3600),
            nonce: nonce(&parsed),
        };
        let tbs = build_response_data(&issuer, &content).unwrap();
        let sig = key.sign(key.default_alg(), &tbs.to_der().unwrap());
        let der =
            assemble_response(tbs.clone(), key.default_alg(), &sig, &key.spki(), None).unwrap();
        // A signature by another key is refused.
        assert!(
            assemble_response(
                tbs,
                key.default_alg(),
                &sig,
                &SoftKey::p256(12).spki(),
                None
            )
            .is_err()
        );
        let resp = OcspResponse::from_der(&der).unwrap();
        assert_eq!(resp.response_status, OcspResponseStatus::Successful);
        let bytes = resp.response_bytes.unwrap();
        assert_eq!(bytes.response_type, ID_PKIX_OCSP_BASIC);
        let basic = BasicOcspResponse::from_der(bytes.response.as_bytes()).unwrap();
        let data = basic.tbs_response_data;
        assert_eq!(data.responder_key_hash.as_bytes(), key_hash(&issuer));
        assert_eq!(data.responses[0].cert_id, sha1);
        assert_eq!(data.responses[1].cert_id, sha256);
        assert_eq!(data.responses[0].cert_status.to_der().unwrap(), [0x80, 0]);
        let nonce_back = data.response_extensions.unwrap();
        assert_eq!(nonce_back[0].extn_value.as_bytes(), [4, 2, 9, 9]);
    }

    #[test]
    fn error_responses_decode() {
        let r = OcspResponse::from_der(&malformed_request()).unwrap();
        assert_eq!(r.response_status, OcspResponseStatus::MalformedRequest);
        assert!(r.response_bytes.is_none());
        let r = OcspResponse::from_der(&unauthorized()).unwrap();
        assert_eq!(r.response_status, OcspResponseStatus::Unauthorized);
    }

    #[test]
    fn garbage_is_malformed() {
        assert!(parse_request(&[]).is_err());
        assert!(parse_request(&[0x30, 0x80, 1, 2]).is_err());
        assert!(parse_request(&vec![0u8; MAX_REQUEST_BYTES + 1]).is_err());
    }

    #[test]
    fn status_elements_carry_implicit_tags() {
        assert_eq!(
            status_element(Status::Good).unwrap().to_der().unwrap(),
            [0x80, 0]
        );
        assert_eq!(
            status_element(Status::Unknown).unwrap().to_der().unwrap(),
            [0x82, 0]
        );
        let r = status_element(Status::Revoked {
            at: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000),
            reason: RevocationReason::KeyCompromise,
        })
        .unwrap()
        .to_der()
        .unwrap();
        assert_eq!(r[0], 0xa1);
    }
}
