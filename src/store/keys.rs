//! The CA hierarchy the ceremony made: HSM keys and the CA certificates signed with them.

/// A key the ceremony generated in the HSM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaKeyRecord {
    /// CKA_LABEL.
    pub label: String,
    /// Key type name (`p384`, `rsa2048`, ...).
    pub key_type: String,
    /// DER SubjectPublicKeyInfo.
    pub spki_der: Vec<u8>,
    /// Unix time of generation.
    pub created_at: i64,
}

/// A CA certificate the ceremony made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuerRecord {
    /// The issuer's configured name.
    pub name: String,
    /// The issuer that signed it; `None` for the root.
    pub parent: Option<String>,
    /// CKA_LABEL of its key.
    pub key_label: String,
    /// Signature algorithm name it signs with.
    pub signature: String,
    /// Serial (hex).
    pub serial: String,
    /// DER certificate.
    pub cert_der: Vec<u8>,
    /// Unix time of creation.
    pub created_at: i64,
    /// The configured issuer this is a generation of: its own name for the CA the first
    /// ceremony made, the configured name for the keys `signet ceremony --rotate` made since.
    pub family: String,
    /// 1 for the first key of `family`, one more for each rotation.
    pub generation: u32,
}
