//! Helpers shared by signet's fuzz targets: the fixed software test keys (the same file the
//! unit and integration tests include) and a throwaway CA certificate made with them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub use signet::pki::{KeyType, SignatureAlgorithm, alg};

#[path = "../../tests/support/soft_signer.rs"]
pub mod soft_signer;

use std::sync::OnceLock;
use std::time::{Duration, UNIX_EPOCH};

use der::{Encode, Tagged};
use signet::pki::{SubjectSpec, cert, serial};
use soft_signer::SoftKey;
use x509_cert::Certificate;

/// A self-signed CA certificate named `CN={cn}` for `key`, valid from a fixed time.
pub fn self_signed(key: &SoftKey, cn: &str) -> Certificate {
    let subject = SubjectSpec::parse(&format!("CN={cn}")).expect("fixed subject");
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
        UNIX_EPOCH + Duration::from_secs(1_800_000_000),
    )
    .expect("fixed CA TBS builds");
    let sig = key.sign(key.default_alg(), &tbs.to_der().expect("TBS encodes"));
    cert::assemble(tbs, &sig).expect("fixed CA assembles")
}

/// One P-256 CA certificate per process, built on first use.
pub fn test_ca() -> &'static (SoftKey, Certificate) {
    static CA: OnceLock<(SoftKey, Certificate)> = OnceLock::new();
    CA.get_or_init(|| {
        let key = SoftKey::p256(42);
        let cert = self_signed(&key, "signet fuzz CA");
        (key, cert)
    })
}

/// An accepted subject keeps its meaning: its X.509 Name has one attribute per RDN, in
/// order, each with the OID of the attribute and exactly the accepted text; and its text
/// form parses back to the same subject.
pub fn assert_subject_keeps_meaning(spec: &SubjectSpec) {
    let name = spec
        .to_name()
        .unwrap_or_else(|e| panic!("accepted subject {spec} does not encode: {e}"));
    assert_eq!(name.len(), spec.attrs().len(), "{spec}");
    for (atv, (attr, value)) in name.iter().zip(spec.attrs()) {
        assert_eq!(atv.oid, attr.oid(), "{spec}");
        let tag = atv.value.tag();
        assert!(
            tag == der::Tag::Utf8String || tag == der::Tag::PrintableString,
            "{attr} encoded as {tag}"
        );
        assert_eq!(
            std::str::from_utf8(atv.value.value()).ok(),
            Some(value.as_str()),
            "{attr} changed on encoding"
        );
    }
    let text = spec.to_string();
    let again = SubjectSpec::parse(&text)
        .unwrap_or_else(|e| panic!("the text {text:?} of accepted subject does not parse: {e}"));
    assert_eq!(&again, spec, "{text:?}");
}

/// An accepted subject alternative name keeps its meaning: its GeneralName carries exactly
/// the accepted value, and its text form (`dns:`, `ip:`, `email:`) parses back to it.
pub fn assert_san_keeps_meaning(san: &signet::pki::San) {
    use signet::pki::San;
    use x509_cert::ext::pkix::name::GeneralName;
    let general = san
        .to_general_name()
        .unwrap_or_else(|e| panic!("accepted SAN {san} does not encode: {e}"));
    match (san, &general) {
        (San::Dns(d), GeneralName::DnsName(g)) => assert_eq!(g.as_str(), d),
        (San::Email(e), GeneralName::Rfc822Name(g)) => assert_eq!(g.as_str(), e),
        (San::Ip(std::net::IpAddr::V4(a)), GeneralName::IpAddress(o)) => {
            assert_eq!(o.as_bytes(), a.octets())
        }
        (San::Ip(std::net::IpAddr::V6(a)), GeneralName::IpAddress(o)) => {
            assert_eq!(o.as_bytes(), a.octets())
        }
        (s, g) => panic!("{s} became {g:?}"),
    }
    let text = san.to_string();
    let again: San = text
        .parse()
        .unwrap_or_else(|e| panic!("the text {text:?} of an accepted SAN does not parse: {e}"));
    assert_eq!(&again, san);
}
