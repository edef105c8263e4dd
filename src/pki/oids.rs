//! Policy and key-purpose OIDs: the CA's own arc and what signet derives from it (default
//! certificate policies, the TSA policy, the policy of signet's own certificates, the audit
//! key's purpose), the CA/Browser Forum's reserved policy identifiers, the TLS validity
//! limits of the Baseline Requirements, and the example arcs that must not reach production.

use std::time::SystemTime;

use const_oid::ObjectIdentifier;

/// anyPolicy (RFC 5280 section 4.2.1.4).
pub const ANY_POLICY: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.5.29.32.0");

/// Arcs reserved for examples and documentation, which no certificate in production should
/// carry: the one signet's sample configurations use, the private enterprise number IANA
/// set aside for documentation (RFC 5612), and ITU-T X.660's example arc.
pub const EXAMPLE_ARCS: [&str; 3] = ["1.3.6.1.4.1.99999", "1.3.6.1.4.1.32473", "2.999"];

/// The example arc `oid` lies under (or is), if any.
pub fn example_arc(oid: &ObjectIdentifier) -> Option<&'static str> {
    let text = oid.to_string();
    EXAMPLE_ARCS
        .into_iter()
        .find(|arc| text == *arc || text.starts_with(&format!("{arc}.")))
}

/// The OIDs signet derives from the CA's arc (`[ca] oid_arc`, e.g. the CA's IANA private
/// enterprise number `1.3.6.1.4.1.NNNNN`):
///
/// | OID | meaning |
/// |---|---|
/// | `{arc}.1.1` … `{arc}.1.6` | default certificate policy of the personal, organization, device, server, code_signing and payment_gateway kinds |
/// | `{arc}.2.1` | default TSA policy (`[tsa] policy_oid`) |
/// | `{arc}.3.1` | certificate policy of signet's own certificates (TLS server, RA clients, OCSP responders, TSA, audit key) |
/// | `{arc}.3.2` | key purpose of the audit key: signing audit-log checkpoints (its certificate's only, critical, extendedKeyUsage) |
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CaOids {
    arc: ObjectIdentifier,
    service_policy: ObjectIdentifier,
}

impl CaOids {
    /// The OIDs under `arc`; `service_policy` overrides `{arc}.3.1`.
    pub fn new(
        arc: ObjectIdentifier,
        service_policy: Option<ObjectIdentifier>,
    ) -> Result<CaOids, String> {
        let service = match service_policy {
            Some(p) => p,
            None => under(&arc, &[3, 1])?,
        };
        // Every derived OID must fit; checking them all now leaves no error for later.
        for tail in [[1, 9], [2, 1], [3, 2]] {
            under(&arc, &tail)?;
        }
        Ok(CaOids {
            arc,
            service_policy: service,
        })
    }

    /// The arc itself.
    pub fn arc(&self) -> &ObjectIdentifier {
        &self.arc
    }

    /// The default certificate policy of the subscriber kind numbered `n`
    /// ([`super::ProfileKind::policy_number`]): `{arc}.1.N`, N from 1 for personal to 6 for
    /// payment_gateway.
    pub fn profile_policy(&self, n: u32) -> ObjectIdentifier {
        self.derived(&[1, n])
    }

    /// The default TSA policy: `{arc}.2.1`.
    pub fn tsa_policy(&self) -> ObjectIdentifier {
        self.derived(&[2, 1])
    }

    /// The certificate policy of signet's own certificates: `{arc}.3.1` unless overridden.
    pub fn service_policy(&self) -> ObjectIdentifier {
        self.service_policy
    }

    /// The audit key's purpose (its certificate's only extendedKeyUsage): `{arc}.3.2`.
    pub fn audit_key_purpose(&self) -> ObjectIdentifier {
        self.derived(&[3, 2])
    }

    fn derived(&self, tail: &[u32]) -> ObjectIdentifier {
        // `new` checked every tail this is called with.
        under(&self.arc, tail).unwrap_or(self.arc)
    }
}

/// `arc` followed by `tail`.
fn under(arc: &ObjectIdentifier, tail: &[u32]) -> Result<ObjectIdentifier, String> {
    let mut text = arc.to_string();
    for t in tail {
        text.push_str(&format!(".{t}"));
    }
    ObjectIdentifier::new(&text).map_err(|e| format!("{arc} is too long to derive {text}: {e}"))
}

/// The CA/Browser Forum's reserved certificate policy identifiers (TLS Baseline
/// Requirements 7.1.6.1, S/MIME Baseline Requirements 7.1.6.1).
pub mod cabf {
    use const_oid::ObjectIdentifier;

    /// TLS, domain validated (subject without organization or person).
    pub const TLS_DV: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.140.1.2.1");
    /// TLS, organization validated.
    pub const TLS_OV: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.140.1.2.2");
    /// TLS, individual validated.
    pub const TLS_IV: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.23.140.1.2.3");
    /// S/MIME, mailbox validated, multipurpose generation.
    pub const SMIME_MAILBOX_MULTIPURPOSE: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("2.23.140.1.5.1.2");
    /// S/MIME, organization validated, multipurpose generation.
    pub const SMIME_ORGANIZATION_MULTIPURPOSE: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("2.23.140.1.5.2.2");
    /// S/MIME, individual validated, multipurpose generation.
    pub const SMIME_INDIVIDUAL_MULTIPURPOSE: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("2.23.140.1.5.4.2");

    /// The CA/Browser Forum's arc, which a CA's own policy OIDs must not use.
    pub const ARC: &str = "2.23.140";
}

/// The longest a TLS server certificate whose validity starts at `not_before` may be valid
/// under the CA/B Forum TLS Baseline Requirements 6.3.2 (ballot SC-081), in whole days, one
/// day inside each limit: 397 before 15 March 2026, 199 before 15 March 2027, 99 before
/// 15 March 2029, 46 from then on.
pub fn cabf_tls_max_days(not_before: SystemTime) -> u64 {
    // 2026-03-15, 2027-03-15 and 2029-03-15 at 00:00:00 UTC.
    const STEPS: [(i64, u64); 3] = [
        (1_773_532_800, 397),
        (1_805_068_800, 199),
        (1_868_227_200, 99),
    ];
    let t = not_before
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    STEPS
        .into_iter()
        .find(|(until, _)| t < *until)
        .map_or(46, |(_, days)| days)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn oid(s: &str) -> ObjectIdentifier {
        ObjectIdentifier::new_unwrap(s)
    }

    #[test]
    fn signets_oids_hang_under_the_cas_arc() {
        let o = CaOids::new(oid("1.3.6.1.4.1.61234"), None).unwrap();
        assert_eq!(o.profile_policy(1), oid("1.3.6.1.4.1.61234.1.1"));
        assert_eq!(o.profile_policy(6), oid("1.3.6.1.4.1.61234.1.6"));
        assert_eq!(o.tsa_policy(), oid("1.3.6.1.4.1.61234.2.1"));
        assert_eq!(o.service_policy(), oid("1.3.6.1.4.1.61234.3.1"));
        assert_eq!(o.audit_key_purpose(), oid("1.3.6.1.4.1.61234.3.2"));
        let o = CaOids::new(oid("1.3.6.1.4.1.61234"), Some(oid("1.2.156.1.2.3"))).unwrap();
        assert_eq!(o.service_policy(), oid("1.2.156.1.2.3"));
    }

    #[test]
    fn example_arcs_are_recognised_and_lookalikes_are_not() {
        assert_eq!(
            example_arc(&oid("1.3.6.1.4.1.99999.1.4")),
            Some("1.3.6.1.4.1.99999")
        );
        assert_eq!(
            example_arc(&oid("1.3.6.1.4.1.99999")),
            Some("1.3.6.1.4.1.99999")
        );
        assert_eq!(
            example_arc(&oid("1.3.6.1.4.1.32473.1")),
            Some("1.3.6.1.4.1.32473")
        );
        assert_eq!(example_arc(&oid("1.3.6.1.4.1.999991.1")), None);
        assert_eq!(example_arc(&oid("1.3.6.1.4.1.61234.1.1")), None);
    }

    #[test]
    fn tls_validity_limits_follow_the_ballot_schedule() {
        let at = |unix: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(unix);
        assert_eq!(cabf_tls_max_days(at(1_773_532_799)), 397);
        assert_eq!(cabf_tls_max_days(at(1_773_532_800)), 199);
        assert_eq!(cabf_tls_max_days(at(1_805_068_800)), 99);
        assert_eq!(cabf_tls_max_days(at(1_868_227_200)), 46);
    }
}
