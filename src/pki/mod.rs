//! Pure X.509 work, no I/O: profiles, names, CSR checks, certificate building and
//! verification, CRLs, certs-only PKCS#7. Nothing here knows about PKCS#11, gRPC or the store;
//! signatures come in as bytes from whoever holds the key.

pub mod alg;
pub mod cert;
pub mod crl;
pub mod csr;
pub mod dns;
pub mod name;
pub mod ocsp;
pub mod oids;
pub mod pkcs7;
pub mod profile;
pub mod revocation;
pub mod serial;
pub mod text;
pub mod tsp;
pub mod verify;

pub use alg::{KeyType, SignatureAlgorithm};
pub use name::{Attr, San, SubjectSpec};
pub use profile::{EmailProtection, OrgIdForm, Profile, ProfileKind};
pub use revocation::RevocationReason;

/// What can go wrong building or checking X.509 structures.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Input that breaks a rule; `field` names the offending part of the request.
    #[error("{field}: {problem}")]
    Invalid {
        /// The request field at fault, e.g. `csr`, `subject.CN`, `validity_years`.
        field: String,
        /// What is wrong with it, in a sentence.
        problem: String,
    },
    /// A signature did not verify.
    #[error("{what}: signature does not verify")]
    BadSignature {
        /// What carried the signature (the CSR, the certificate just assembled, ...).
        what: String,
    },
    /// DER encoding failed; a bug or an impossible value rather than bad input.
    #[error("encoding failed: {0}")]
    Encoding(String),
}

impl PkiError {
    /// An input error naming the field and the problem.
    pub fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Self {
        PkiError::Invalid {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// The test-only software signer, shared with the integration tests.
#[cfg(test)]
#[path = "../../tests/support/soft_signer.rs"]
pub(crate) mod soft_signer;

/// A self-signed CA certificate named `CN={cn}` for `key`, for unit tests that need an
/// issuer (CRLs, OCSP, PKCS#7).
#[cfg(test)]
pub(crate) fn test_ca(key: &soft_signer::SoftKey, cn: &str) -> x509_cert::Certificate {
    use der::Encode;
    let subject = SubjectSpec::parse(&format!("CN={cn}")).expect("test subject");
    let spki = key.spki();
    let req = cert::CaRequest {
        subject: &subject,
        spki: &spki,
        path_len: None,
        validity_years: 5,
    };
    let urls = cert::Urls {
        base: "http://pki.example.cn".into(),
    };
    let tbs = cert::build_ca_tbs(
        None,
        key.default_alg(),
        &urls,
        &req,
        serial::random_serial(),
        std::time::SystemTime::now(),
    )
    .expect("test CA TBS");
    let sig = key.sign(key.default_alg(), &tbs.to_der().expect("TBS encodes"));
    cert::assemble(tbs, &sig).expect("test CA assembles")
}
