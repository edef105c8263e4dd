//! Objects as the token keeps them: attribute maps, templates, defaults, matching and the
//! byte encoding the store writes.
//!
//! An attribute value is kept exactly as a PKCS#11 caller sees it (CK_ULONG in native byte
//! order, CK_BBOOL as one byte), so C_GetAttributeValue copies bytes and C_FindObjects
//! compares bytes. Key material is never an attribute: it lives beside the object
//! (encrypted at rest), so no code path can hand it out by accident.

use std::collections::BTreeMap;

use cryptoki_sys::*;

/// An object's attributes, by type.
pub type Attrs = BTreeMap<CK_ATTRIBUTE_TYPE, Vec<u8>>;

/// A caller's template, copied out of its memory (in the caller's order).
#[derive(Debug, Default, Clone)]
pub struct Template(pub Vec<(CK_ATTRIBUTE_TYPE, Vec<u8>)>);

/// Attributes whose value is one CK_BBOOL.
const BOOL_ATTRS: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_TOKEN,
    CKA_PRIVATE,
    CKA_MODIFIABLE,
    CKA_COPYABLE,
    CKA_DESTROYABLE,
    CKA_TRUSTED,
    CKA_SENSITIVE,
    CKA_ENCRYPT,
    CKA_DECRYPT,
    CKA_WRAP,
    CKA_UNWRAP,
    CKA_SIGN,
    CKA_SIGN_RECOVER,
    CKA_VERIFY,
    CKA_VERIFY_RECOVER,
    CKA_DERIVE,
    CKA_EXTRACTABLE,
    CKA_LOCAL,
    CKA_NEVER_EXTRACTABLE,
    CKA_ALWAYS_SENSITIVE,
    CKA_ALWAYS_AUTHENTICATE,
    CKA_WRAP_WITH_TRUSTED,
];

/// Attributes whose value is one CK_ULONG.
const ULONG_ATTRS: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_CLASS,
    CKA_KEY_TYPE,
    CKA_CERTIFICATE_TYPE,
    CKA_CERTIFICATE_CATEGORY,
    CKA_MODULUS_BITS,
    CKA_KEY_GEN_MECHANISM,
    CKA_JAVA_MIDP_SECURITY_DOMAIN,
    CKA_NAME_HASH_ALGORITHM,
];

/// Private-key attributes that are never revealed (CKA_SENSITIVE is always true here).
pub const SENSITIVE_ATTRS: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_VALUE,
    CKA_PRIVATE_EXPONENT,
    CKA_PRIME_1,
    CKA_PRIME_2,
    CKA_EXPONENT_1,
    CKA_EXPONENT_2,
    CKA_COEFFICIENT,
];

/// Attributes C_SetAttributeValue may change (when the object is modifiable).
pub const SETTABLE_ATTRS: &[CK_ATTRIBUTE_TYPE] = &[
    CKA_LABEL,
    CKA_ID,
    CKA_SUBJECT,
    CKA_APPLICATION,
    CKA_START_DATE,
    CKA_END_DATE,
];

/// The bytes of a CK_ULONG attribute value.
pub fn ulong(v: CK_ULONG) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}

/// The bytes of a CK_BBOOL attribute value.
pub fn bbool(v: bool) -> Vec<u8> {
    vec![if v { CK_TRUE } else { CK_FALSE }]
}

fn as_ulong(v: &[u8]) -> Option<CK_ULONG> {
    Some(CK_ULONG::from_ne_bytes(v.try_into().ok()?))
}

/// A CK_ULONG attribute of an object, if present and well formed.
pub fn get_ulong(attrs: &Attrs, t: CK_ATTRIBUTE_TYPE) -> Option<CK_ULONG> {
    attrs.get(&t).and_then(|v| as_ulong(v))
}

/// A CK_BBOOL attribute of an object (absent counts as false).
pub fn get_bool(attrs: &Attrs, t: CK_ATTRIBUTE_TYPE) -> bool {
    matches!(attrs.get(&t).map(Vec::as_slice), Some([b]) if *b != CK_FALSE)
}

impl Template {
    /// The value the template gives for `t` (the last one, if it repeats).
    pub fn get(&self, t: CK_ATTRIBUTE_TYPE) -> Option<&[u8]> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| *k == t)
            .map(|(_, v)| v.as_slice())
    }

    /// A CK_BBOOL from the template; a value of the wrong size is the caller's error.
    pub fn get_bool(&self, t: CK_ATTRIBUTE_TYPE) -> Result<Option<bool>, CK_RV> {
        match self.get(t) {
            None => Ok(None),
            Some([b]) => Ok(Some(*b != CK_FALSE)),
            Some(_) => Err(CKR_ATTRIBUTE_VALUE_INVALID),
        }
    }

    /// A CK_ULONG from the template; a value of the wrong size is the caller's error.
    pub fn get_ulong(&self, t: CK_ATTRIBUTE_TYPE) -> Result<Option<CK_ULONG>, CK_RV> {
        match self.get(t) {
            None => Ok(None),
            Some(v) => as_ulong(v).map(Some).ok_or(CKR_ATTRIBUTE_VALUE_INVALID),
        }
    }

    /// Checks the sizes of every boolean and integer value in the template.
    pub fn check_sizes(&self) -> Result<(), CK_RV> {
        for (t, v) in &self.0 {
            if BOOL_ATTRS.contains(t) && v.len() != 1
                || ULONG_ATTRS.contains(t) && v.len() != size_of::<CK_ULONG>()
            {
                return Err(CKR_ATTRIBUTE_VALUE_INVALID);
            }
        }
        Ok(())
    }

    /// Whether an object has every attribute of the template with exactly that value.
    /// Sensitive values are not attributes here, so a template naming them matches nothing.
    pub fn matches(&self, attrs: &Attrs) -> bool {
        self.0.iter().all(|(t, v)| attrs.get(t) == Some(v))
    }
}

/// Attributes every storage object has, with their PKCS#11 defaults unless the template
/// sets them; `private_default` is CKA_PRIVATE's default for this class.
pub fn storage_defaults(attrs: &mut Attrs, private_default: bool) {
    for (t, v) in [
        (CKA_TOKEN, false),
        (CKA_PRIVATE, private_default),
        (CKA_MODIFIABLE, true),
        (CKA_COPYABLE, true),
        (CKA_DESTROYABLE, true),
    ] {
        attrs.entry(t).or_insert_with(|| bbool(v));
    }
    attrs.entry(CKA_LABEL).or_default();
}

/// Serialises attributes for the store: per attribute, type (u64 LE), length (u32 LE), bytes.
pub fn encode(attrs: &Attrs) -> Vec<u8> {
    let mut out = Vec::new();
    for (t, v) in attrs {
        // CK_ULONG is 32 bits on some platforms; the store always writes 64.
        #[allow(clippy::unnecessary_cast)]
        out.extend_from_slice(&(*t as u64).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
        out.extend_from_slice(v);
    }
    out
}

/// Reads what [`encode`] wrote; anything malformed is a damaged store.
pub fn decode(mut bytes: &[u8]) -> Result<Attrs, CK_RV> {
    let mut attrs = Attrs::new();
    while !bytes.is_empty() {
        let (t, rest) = bytes.split_at_checked(8).ok_or(CKR_DEVICE_ERROR)?;
        let (len, rest) = rest.split_at_checked(4).ok_or(CKR_DEVICE_ERROR)?;
        let t = u64::from_le_bytes(t.try_into().map_err(|_| CKR_DEVICE_ERROR)?);
        let len = u32::from_le_bytes(len.try_into().map_err(|_| CKR_DEVICE_ERROR)?) as usize;
        let (v, rest) = rest.split_at_checked(len).ok_or(CKR_DEVICE_ERROR)?;
        attrs.insert(t as CK_ATTRIBUTE_TYPE, v.to_vec());
        bytes = rest;
    }
    Ok(attrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_round_trips_and_rejects_truncation() {
        let mut attrs = Attrs::new();
        attrs.insert(CKA_CLASS, ulong(CKO_CERTIFICATE));
        attrs.insert(CKA_LABEL, b"ca".to_vec());
        attrs.insert(CKA_ID, Vec::new());
        let bytes = encode(&attrs);
        assert_eq!(decode(&bytes), Ok(attrs));
        assert_eq!(decode(&bytes[..bytes.len() - 1]), Err(CKR_DEVICE_ERROR));
    }

    #[test]
    fn template_matching_compares_exact_bytes() {
        let mut attrs = Attrs::new();
        attrs.insert(CKA_CLASS, ulong(CKO_PUBLIC_KEY));
        attrs.insert(CKA_ID, vec![1]);
        assert!(Template(vec![(CKA_ID, vec![1])]).matches(&attrs));
        assert!(!Template(vec![(CKA_ID, vec![1, 0])]).matches(&attrs));
        assert!(!Template(vec![(CKA_VALUE, vec![])]).matches(&attrs));
        assert!(Template(vec![]).matches(&attrs));
    }
}
