//! Subject names and subject alternative names as an RA submits them: checked attribute by
//! attribute, then encoded exactly as given (UTF8String for text, PrintableString where
//! RFC 5280 demands it).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use const_oid::ObjectIdentifier;
use der::asn1::{Ia5String, OctetString, PrintableString, SetOfVec, Utf8StringRef};
use der::{Any, Decode, Encode};
use serde::{Deserialize, Serialize};
use x509_cert::attr::AttributeTypeAndValue;
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::name::{Name, RdnSequence, RelativeDistinguishedName};

use super::PkiError;
use super::dns::check_dns_name;
use super::text::check_chars;

/// A subject attribute signet accepts. The declaration order is the order in which
/// attributes appear in an issued name (most general first, commonName last).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Attr {
    /// countryName (C): two upper-case letters, ISO 3166.
    #[serde(rename = "C")]
    Country,
    /// stateOrProvinceName (ST).
    #[serde(rename = "ST")]
    State,
    /// localityName (L).
    #[serde(rename = "L")]
    Locality,
    /// organizationName (O).
    #[serde(rename = "O")]
    Organization,
    /// organizationalUnitName (OU).
    #[serde(rename = "OU")]
    OrganizationalUnit,
    /// organizationIdentifier (X.520; carries a unified social credit code).
    #[serde(rename = "organizationIdentifier")]
    OrganizationIdentifier,
    /// serialNumber (a device id, an ID number, or a credit code).
    #[serde(rename = "serialNumber")]
    SerialNumber,
    /// surname (SN).
    #[serde(rename = "SN")]
    Surname,
    /// givenName (GN).
    #[serde(rename = "GN")]
    GivenName,
    /// commonName (CN).
    #[serde(rename = "CN")]
    CommonName,
}

impl Attr {
    /// Every attribute, in name order.
    pub const ALL: [Attr; 10] = [
        Attr::Country,
        Attr::State,
        Attr::Locality,
        Attr::Organization,
        Attr::OrganizationalUnit,
        Attr::OrganizationIdentifier,
        Attr::SerialNumber,
        Attr::Surname,
        Attr::GivenName,
        Attr::CommonName,
    ];

    /// The short name used in configuration, on the command line and in errors.
    pub fn short_name(self) -> &'static str {
        match self {
            Attr::Country => "C",
            Attr::State => "ST",
            Attr::Locality => "L",
            Attr::Organization => "O",
            Attr::OrganizationalUnit => "OU",
            Attr::OrganizationIdentifier => "organizationIdentifier",
            Attr::SerialNumber => "serialNumber",
            Attr::Surname => "SN",
            Attr::GivenName => "GN",
            Attr::CommonName => "CN",
        }
    }

    /// Look an attribute up by its short name (case-sensitive, as in RFC 4514).
    pub fn from_short_name(s: &str) -> Option<Attr> {
        Attr::ALL.into_iter().find(|a| a.short_name() == s)
    }

    /// The attribute type's OID (X.520).
    pub fn oid(self) -> ObjectIdentifier {
        let s = match self {
            Attr::Country => "2.5.4.6",
            Attr::State => "2.5.4.8",
            Attr::Locality => "2.5.4.7",
            Attr::Organization => "2.5.4.10",
            Attr::OrganizationalUnit => "2.5.4.11",
            Attr::OrganizationIdentifier => "2.5.4.97",
            Attr::SerialNumber => "2.5.4.5",
            Attr::Surname => "2.5.4.4",
            Attr::GivenName => "2.5.4.42",
            Attr::CommonName => "2.5.4.3",
        };
        ObjectIdentifier::new_unwrap(s)
    }

    /// Upper bound on the value's length in characters (RFC 5280 appendix A.1).
    pub fn max_chars(self) -> usize {
        match self {
            Attr::Country => 2,
            Attr::State | Attr::Locality => 128,
            Attr::Organization
            | Attr::OrganizationalUnit
            | Attr::CommonName
            | Attr::SerialNumber
            | Attr::OrganizationIdentifier
            | Attr::Surname
            | Attr::GivenName => 64,
        }
    }

    /// True where RFC 5280 requires PrintableString rather than a DirectoryString.
    fn printable(self) -> bool {
        matches!(self, Attr::Country | Attr::SerialNumber)
    }
}

impl fmt::Display for Attr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.short_name())
    }
}

/// The characters of ASN.1 PrintableString.
fn is_printable_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || " '()+,-./:=?".contains(c)
}

/// A subject as the RA verified it: attributes and their exact values. Kept in name order;
/// each attribute appears at most once.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectSpec {
    attrs: Vec<(Attr, String)>,
}

impl SubjectSpec {
    /// Build a subject from `(short name, value)` pairs, checking every one. Errors name the
    /// attribute (`subject.CN`) and the problem.
    pub fn from_pairs<K: AsRef<str>, V: AsRef<str>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Result<SubjectSpec, PkiError> {
        let mut attrs: Vec<(Attr, String)> = Vec::new();
        for (k, v) in pairs {
            let (k, v) = (k.as_ref(), v.as_ref());
            let attr = Attr::from_short_name(k).ok_or_else(|| {
                let known: Vec<_> = Attr::ALL.iter().map(|a| a.short_name()).collect();
                PkiError::invalid(
                    format!("subject.{k}"),
                    format!("unknown attribute (allowed: {})", known.join(", ")),
                )
            })?;
            if attrs.iter().any(|(a, _)| *a == attr) {
                return Err(PkiError::invalid(
                    format!("subject.{attr}"),
                    "given more than once",
                ));
            }
            check_value(attr, v)?;
            attrs.push((attr, v.to_owned()));
        }
        attrs.sort_by_key(|(a, _)| *a);
        Ok(SubjectSpec { attrs })
    }

    /// Parse `CN=..., O=...` style text as typed on the command line: pairs separated by
    /// commas, a backslash escapes a comma or backslash inside a value.
    pub fn parse(text: &str) -> Result<SubjectSpec, PkiError> {
        let mut pairs = Vec::new();
        let mut cur = String::new();
        let mut chars = text.chars();
        let mut parts = Vec::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(n) => cur.push(n),
                    None => return Err(PkiError::invalid("subject", "ends with a lone backslash")),
                },
                ',' => parts.push(std::mem::take(&mut cur)),
                c => cur.push(c),
            }
        }
        parts.push(cur);
        for part in parts {
            let part = part.trim_start();
            if part.is_empty() {
                continue;
            }
            let (k, v) = part.split_once('=').ok_or_else(|| {
                PkiError::invalid("subject", format!("{part:?} is not NAME=value"))
            })?;
            pairs.push((k.trim().to_owned(), v.to_owned()));
        }
        SubjectSpec::from_pairs(pairs)
    }

    /// The value of `attr`, if present.
    pub fn get(&self, attr: Attr) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(a, _)| *a == attr)
            .map(|(_, v)| v.as_str())
    }

    /// The attributes in name order.
    pub fn attrs(&self) -> &[(Attr, String)] {
        &self.attrs
    }

    /// True when there is no attribute at all.
    pub fn is_empty(&self) -> bool {
        self.attrs.is_empty()
    }

    /// Encode as an X.509 Name: one attribute per RDN, C and serialNumber as
    /// PrintableString, everything else as UTF8String (RFC 5280 section 4.1.2.6).
    pub fn to_name(&self) -> Result<Name, PkiError> {
        let mut rdns = RdnSequence::default();
        for (attr, value) in &self.attrs {
            let any = if attr.printable() {
                Any::encode_from(&PrintableString::new(value).map_err(|e| {
                    PkiError::invalid(
                        format!("subject.{attr}"),
                        format!("not a PrintableString: {e}"),
                    )
                })?)
            } else {
                Any::encode_from(&Utf8StringRef::new(value).map_err(|e| {
                    PkiError::invalid(format!("subject.{attr}"), format!("not UTF-8 text: {e}"))
                })?)
            }
            .map_err(|e| PkiError::Encoding(format!("subject.{attr}: {e}")))?;
            let atv = AttributeTypeAndValue {
                oid: attr.oid(),
                value: any,
            };
            let set =
                SetOfVec::try_from(vec![atv]).map_err(|e| PkiError::Encoding(e.to_string()))?;
            let rdn = RelativeDistinguishedName::try_from(set.into_vec())
                .map_err(|e| PkiError::Encoding(e.to_string()))?;
            rdns.push(rdn);
        }
        // Round-trip through DER so the result is a Name the decoder itself accepts.
        let der = rdns
            .to_der()
            .map_err(|e| PkiError::Encoding(e.to_string()))?;
        Name::from_der(&der).map_err(|e| PkiError::Encoding(e.to_string()))
    }
}

impl fmt::Display for SubjectSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (a, v)) in self.attrs.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{a}={}", v.replace('\\', "\\\\").replace(',', "\\,"))?;
        }
        Ok(())
    }
}

fn check_value(attr: Attr, v: &str) -> Result<(), PkiError> {
    let field = || format!("subject.{attr}");
    if v.is_empty() {
        return Err(PkiError::invalid(field(), "is empty"));
    }
    let n = v.chars().count();
    if n > attr.max_chars() {
        return Err(PkiError::invalid(
            field(),
            format!(
                "is {n} characters long; at most {} allowed",
                attr.max_chars()
            ),
        ));
    }
    check_chars(v).map_err(|m| PkiError::invalid(field(), m))?;
    if v.trim() != v {
        return Err(PkiError::invalid(
            field(),
            "has leading or trailing white space",
        ));
    }
    if attr.printable() {
        if let Some(c) = v.chars().find(|c| !is_printable_char(*c)) {
            return Err(PkiError::invalid(
                field(),
                format!(
                    "character {c:?} is not allowed (PrintableString: letters, digits, space and '()+,-./:=?)"
                ),
            ));
        }
    }
    if attr == Attr::Country && !(v.len() == 2 && v.chars().all(|c| c.is_ascii_uppercase())) {
        return Err(PkiError::invalid(
            field(),
            "must be a two-letter upper-case ISO 3166 code such as CN",
        ));
    }
    Ok(())
}

/// The character set of the unified social credit code (GB 32100-2015): digits and upper-case
/// letters without I, O, Z, S and V.
const USCC_CHARSET: &str = "0123456789ABCDEFGHJKLMNPQRTUWXY";
const USCC_WEIGHTS: [u32; 17] = [
    1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28,
];

/// Check a unified social credit code (统一社会信用代码): 18 characters from the GB 32100-2015
/// alphabet whose last character is the check character over the first 17.
pub fn check_credit_code(code: &str) -> Result<(), String> {
    let chars: Vec<char> = code.chars().collect();
    if chars.len() != 18 {
        return Err(format!(
            "a unified social credit code has 18 characters, this has {}",
            chars.len()
        ));
    }
    let mut values = Vec::with_capacity(18);
    for c in &chars {
        match USCC_CHARSET.find(*c) {
            Some(i) => values.push(i as u32),
            None => {
                return Err(format!(
                    "character {c:?} is not allowed in a unified social credit code"
                ));
            }
        }
    }
    Ok(()).and_then(|()| {
        let sum: u32 = values[..17]
            .iter()
            .zip(USCC_WEIGHTS)
            .map(|(v, w)| v * w)
            .sum();
        let check = (31 - sum % 31) % 31;
        if values[17] == check {
            Ok(())
        } else {
            Err("check character does not match (GB 32100-2015)".to_owned())
        }
    })
}

/// Compute the check character for the first 17 characters of a credit code; used by tests
/// and tooling that need valid codes.
pub fn credit_code_check_char(first17: &str) -> Option<char> {
    let values: Option<Vec<u32>> = first17
        .chars()
        .map(|c| USCC_CHARSET.find(c).map(|i| i as u32))
        .collect();
    let values = values?;
    if values.len() != 17 {
        return None;
    }
    let sum: u32 = values.iter().zip(USCC_WEIGHTS).map(|(v, w)| v * w).sum();
    USCC_CHARSET.chars().nth(((31 - sum % 31) % 31) as usize)
}

/// A subject alternative name an RA may ask for.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "lowercase")]
pub enum San {
    /// dNSName: an ASCII host name, internationalised labels as IDNA 2008 A-labels (xn--);
    /// `*` allowed as the whole first label, never directly over a public suffix (whether a
    /// profile takes wildcards at all is the profile's rule).
    Dns(String),
    /// iPAddress: IPv4 or IPv6.
    Ip(IpAddr),
    /// rfc822Name: an e-mail address with an ASCII domain.
    Email(String),
}

impl San {
    /// Check the value and build the SAN. `field` names it in errors (`sans[2]`).
    pub fn checked(self, field: &str) -> Result<San, PkiError> {
        match &self {
            San::Dns(d) => check_dns_name(d, true).map_err(|m| PkiError::invalid(field, m))?,
            San::Email(e) => check_email(e).map_err(|m| PkiError::invalid(field, m))?,
            San::Ip(_) => {}
        }
        Ok(self)
    }

    /// The GeneralName placed in the subjectAltName extension.
    pub fn to_general_name(&self) -> Result<GeneralName, PkiError> {
        let enc = |e: der::Error| PkiError::Encoding(e.to_string());
        Ok(match self {
            San::Dns(d) => GeneralName::DnsName(Ia5String::new(d).map_err(enc)?),
            San::Email(e) => GeneralName::Rfc822Name(Ia5String::new(e).map_err(enc)?),
            San::Ip(IpAddr::V4(a)) => {
                GeneralName::IpAddress(OctetString::new(a.octets().to_vec()).map_err(enc)?)
            }
            San::Ip(IpAddr::V6(a)) => {
                GeneralName::IpAddress(OctetString::new(a.octets().to_vec()).map_err(enc)?)
            }
        })
    }

    /// The value as text (without its type).
    pub fn value(&self) -> String {
        match self {
            San::Dns(d) | San::Email(d) => d.clone(),
            San::Ip(a) => a.to_string(),
        }
    }
}

impl fmt::Display for San {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            San::Dns(d) => write!(f, "dns:{d}"),
            San::Ip(a) => write!(f, "ip:{a}"),
            San::Email(e) => write!(f, "email:{e}"),
        }
    }
}

impl FromStr for San {
    type Err = PkiError;

    /// Parse `dns:host`, `ip:addr` or `email:addr`.
    fn from_str(s: &str) -> Result<San, PkiError> {
        let (kind, value) = s.split_once(':').ok_or_else(|| {
            PkiError::invalid(
                "san",
                format!("{s:?} must be dns:NAME, ip:ADDRESS or email:ADDRESS"),
            )
        })?;
        let san = match kind {
            "dns" => San::Dns(value.to_owned()),
            "email" => San::Email(value.to_owned()),
            "ip" => San::Ip(value.parse().map_err(|_| {
                PkiError::invalid("san", format!("{value:?} is not an IP address"))
            })?),
            other => {
                return Err(PkiError::invalid(
                    "san",
                    format!("unknown type {other:?} (expected dns, ip or email)"),
                ));
            }
        };
        san.checked("san")
    }
}

fn check_email(e: &str) -> Result<(), String> {
    check_chars(e)?;
    let (local, domain) = e
        .rsplit_once('@')
        .ok_or_else(|| format!("e-mail address {e:?} has no @"))?;
    if local.is_empty() || local.len() > 64 {
        return Err(format!(
            "e-mail address {e:?} has an empty or over-long local part"
        ));
    }
    if !e.is_ascii()
        || local
            .chars()
            .any(|c| c.is_ascii_control() || c == ' ' || c == '@')
    {
        return Err(format!(
            "e-mail address {e:?} must be plain ASCII without spaces"
        ));
    }
    check_dns_name(domain, false).map_err(|m| format!("e-mail address {e:?}: {m}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chinese_organisation_name_is_encoded_as_utf8_exactly() {
        let s = SubjectSpec::from_pairs([
            ("O", "宁津县精神卫生中心"),
            ("CN", "宁津县精神卫生中心"),
            ("C", "CN"),
        ])
        .unwrap();
        let name = s.to_name().unwrap();
        let der = name.to_der().unwrap();
        let utf8 = "宁津县精神卫生中心".as_bytes();
        assert!(
            der.windows(utf8.len()).any(|w| w == utf8),
            "UTF-8 bytes present verbatim"
        );
        // C first, CN last
        assert_eq!(s.attrs()[0].0, Attr::Country);
        assert_eq!(s.attrs().last().unwrap().0, Attr::CommonName);
    }

    #[test]
    fn bad_subject_values_name_the_attribute() {
        let e = SubjectSpec::from_pairs([("CN", "x".repeat(65))]).unwrap_err();
        assert!(e.to_string().contains("subject.CN"), "{e}");
        let e = SubjectSpec::from_pairs([("C", "cn")]).unwrap_err();
        assert!(e.to_string().contains("subject.C"), "{e}");
        let e = SubjectSpec::from_pairs([("XX", "a")]).unwrap_err();
        assert!(e.to_string().contains("subject.XX"), "{e}");
        let e = SubjectSpec::from_pairs([("CN", "a"), ("CN", "b")]).unwrap_err();
        assert!(e.to_string().contains("more than once"), "{e}");
        let e = SubjectSpec::from_pairs([("serialNumber", "编号")]).unwrap_err();
        assert!(e.to_string().contains("subject.serialNumber"), "{e}");
    }

    #[test]
    fn subject_text_parses_with_escaped_commas() {
        let s = SubjectSpec::parse(r"CN=Zhang\, San, O=示例, C=CN").unwrap();
        assert_eq!(s.get(Attr::CommonName), Some("Zhang, San"));
        assert_eq!(s.get(Attr::Organization), Some("示例"));
        assert_eq!(SubjectSpec::parse(&s.to_string()).unwrap(), s);
    }

    #[test]
    fn credit_code_checksum() {
        // Published codes of well-known companies pass.
        for code in [
            "914403001922038216",
            "9144030071526726XG",
            "91330100716105852F",
        ] {
            check_credit_code(code).unwrap();
        }
        // A made-up code completed with its check character passes; a changed character fails.
        let first = "91320500MA1MXXXX0";
        let c = credit_code_check_char(first).unwrap();
        let code = format!("{first}{c}");
        check_credit_code(&code).unwrap();
        let mut wrong: Vec<char> = code.chars().collect();
        wrong[17] = if wrong[17] == '0' { '1' } else { '0' };
        assert!(check_credit_code(&wrong.iter().collect::<String>()).is_err());
        assert!(check_credit_code("123").is_err());
        assert!(check_credit_code("91320500MA1MXXXXOI").is_err());
    }

    #[test]
    fn sans_parse_and_reject() {
        assert_eq!(
            "dns:www.example.cn".parse::<San>().unwrap(),
            San::Dns("www.example.cn".into())
        );
        assert_eq!(
            "ip:10.0.0.1".parse::<San>().unwrap(),
            San::Ip("10.0.0.1".parse().unwrap())
        );
        assert!("dns:例子.中国".parse::<San>().is_err());
        assert!("dns:-bad.example".parse::<San>().is_err());
        assert!("dns:localhost".parse::<San>().is_err());
        assert!("email:nobody".parse::<San>().is_err());
        assert!("uri:http://x".parse::<San>().is_err());
        assert!("dns:*.example.cn".parse::<San>().is_ok());
    }
}
