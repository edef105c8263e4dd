//! RFC 5280 revocation reasons (CRLReason, section 5.3.1): the codes a CRL entry or OCSP
//! response carries and the names operators and RAs use for them. Pure, no I/O.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a certificate was revoked: every CRLReason that can start a revocation. The RFC's
/// `removeFromCRL` (8) only ever appears in delta CRLs to release a hold, so it is not a
/// variant and [`RevocationReason::from_code`] refuses it; code 7 is unassigned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RevocationReason {
    /// unspecified (0).
    Unspecified,
    /// keyCompromise (1): the subscriber's private key is, or may be, known to others.
    KeyCompromise,
    /// cACompromise (2): the issuing CA's key is compromised.
    CaCompromise,
    /// affiliationChanged (3): the subject's name or other information changed.
    AffiliationChanged,
    /// superseded (4): replaced by another certificate.
    Superseded,
    /// cessationOfOperation (5): no longer needed.
    CessationOfOperation,
    /// certificateHold (6): suspended, e.g. while a token is reported lost.
    CertificateHold,
    /// privilegeWithdrawn (9): the subscriber may no longer hold the certificate.
    PrivilegeWithdrawn,
    /// aACompromise (10): an attribute authority is compromised.
    AaCompromise,
}

impl RevocationReason {
    /// Every reason, in code order.
    pub const ALL: [RevocationReason; 9] = [
        RevocationReason::Unspecified,
        RevocationReason::KeyCompromise,
        RevocationReason::CaCompromise,
        RevocationReason::AffiliationChanged,
        RevocationReason::Superseded,
        RevocationReason::CessationOfOperation,
        RevocationReason::CertificateHold,
        RevocationReason::PrivilegeWithdrawn,
        RevocationReason::AaCompromise,
    ];

    /// The CRLReason code.
    pub fn code(self) -> u8 {
        match self {
            RevocationReason::Unspecified => 0,
            RevocationReason::KeyCompromise => 1,
            RevocationReason::CaCompromise => 2,
            RevocationReason::AffiliationChanged => 3,
            RevocationReason::Superseded => 4,
            RevocationReason::CessationOfOperation => 5,
            RevocationReason::CertificateHold => 6,
            RevocationReason::PrivilegeWithdrawn => 9,
            RevocationReason::AaCompromise => 10,
        }
    }

    /// The reason with this code; `None` for 7 (unassigned), 8 (removeFromCRL, not a
    /// revocation) and anything above 10.
    pub fn from_code(code: u8) -> Option<RevocationReason> {
        RevocationReason::ALL.into_iter().find(|r| r.code() == code)
    }

    /// The name RFC 5280 gives the reason (`keyCompromise`, `cACompromise`, ...).
    pub fn name(self) -> &'static str {
        match self {
            RevocationReason::Unspecified => "unspecified",
            RevocationReason::KeyCompromise => "keyCompromise",
            RevocationReason::CaCompromise => "cACompromise",
            RevocationReason::AffiliationChanged => "affiliationChanged",
            RevocationReason::Superseded => "superseded",
            RevocationReason::CessationOfOperation => "cessationOfOperation",
            RevocationReason::CertificateHold => "certificateHold",
            RevocationReason::PrivilegeWithdrawn => "privilegeWithdrawn",
            RevocationReason::AaCompromise => "aACompromise",
        }
    }
}

impl RevocationReason {
    /// Why an RA may not give this reason for a subscriber's certificate, or `None` when it
    /// may. cACompromise and aACompromise say that an authority's key is compromised: only
    /// the CA itself knows and declares that (the operator's `signet revoke`), never an RA
    /// speaking for a subscriber.
    pub fn ra_refusal(self) -> Option<String> {
        let authority = match self {
            RevocationReason::CaCompromise => "the issuing CA's key",
            RevocationReason::AaCompromise => "an attribute authority's key",
            _ => return None,
        };
        Some(format!(
            "{} says {authority} is compromised, which only the CA declares (signet revoke, as \
             the operator); a subscriber's certificate is revoked for keyCompromise, \
             affiliationChanged, superseded, cessationOfOperation, privilegeWithdrawn, \
             certificateHold or unspecified",
            self.name()
        ))
    }
}

impl fmt::Display for RevocationReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A name that is not a revocation reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an RFC 5280 revocation reason")]
pub struct UnknownReason(pub String);

impl FromStr for RevocationReason {
    type Err = UnknownReason;

    /// Accepts the RFC 5280 name exactly as [`RevocationReason::name`] writes it.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RevocationReason::ALL
            .into_iter()
            .find(|r| r.name() == s)
            .ok_or_else(|| UnknownReason(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_names_round_trip_and_remove_from_crl_is_refused() {
        for r in RevocationReason::ALL {
            assert_eq!(RevocationReason::from_code(r.code()), Some(r));
            assert_eq!(r.name().parse::<RevocationReason>(), Ok(r));
        }
        assert_eq!(RevocationReason::from_code(7), None);
        assert_eq!(RevocationReason::from_code(8), None);
        assert_eq!(RevocationReason::from_code(11), None);
        assert!("removeFromCRL".parse::<RevocationReason>().is_err());
        assert!("keycompromise".parse::<RevocationReason>().is_err());
        assert_eq!(RevocationReason::KeyCompromise.code(), 1);
        assert_eq!(RevocationReason::AaCompromise.code(), 10);
        assert_eq!(RevocationReason::CaCompromise.name(), "cACompromise");
    }

    #[test]
    fn only_the_authority_compromise_reasons_are_refused_to_ras() {
        let refused: Vec<_> = RevocationReason::ALL
            .into_iter()
            .filter(|r| r.ra_refusal().is_some())
            .collect();
        assert_eq!(
            refused,
            [
                RevocationReason::CaCompromise,
                RevocationReason::AaCompromise
            ]
        );
        let why = RevocationReason::CaCompromise.ra_refusal().unwrap();
        assert!(
            why.starts_with("cACompromise says the issuing CA's key"),
            "{why}"
        );
    }

    #[test]
    fn serde_uses_snake_case() {
        let j = serde_json::to_string(&RevocationReason::CessationOfOperation).unwrap();
        assert_eq!(j, "\"cessation_of_operation\"");
        let back: RevocationReason = serde_json::from_str("\"aa_compromise\"").unwrap();
        assert_eq!(back, RevocationReason::AaCompromise);
    }
}
