//! The vendor-defined PKCS#11 numbers for SM2 and SM3, in one place.
//!
//! PKCS#11 has no standard SM2 mechanism. These are the numbers of the TASS family of HSMs
//! (published in their vendor headers); signet takes its own copy from configuration, so a
//! token with other numbers only needs another configuration.

use cryptoki_sys::{CK_KEY_TYPE, CK_MECHANISM_TYPE};

/// Key type of SM2 keys (CKA_KEY_TYPE).
pub const CKK_SM2: CK_KEY_TYPE = 0x8000_0004;
/// SM2 key-pair generation on sm2p256v1.
pub const CKM_SM2_KEY_PAIR_GEN: CK_MECHANISM_TYPE = 0x8000_8001;
/// Raw SM2 signature over a 32-byte e computed by the caller (e = SM3(ZA ‖ M)).
pub const CKM_SM2: CK_MECHANISM_TYPE = 0x8000_8000;
/// SM2 with SM3: the token computes ZA from the distinguishing ID (mechanism parameter,
/// default "1234567812345678") and the public key, then e = SM3(ZA ‖ M).
pub const CKM_SM2_SM3: CK_MECHANISM_TYPE = 0x8000_8100;
/// SM2 public-key encryption (GM/T 0003.4); ciphertexts are GM/T 0009 DER SM2Cipher.
pub const CKM_SM2_ENCRYPT: CK_MECHANISM_TYPE = 0x8000_8200;
/// SM3 digest (vendor-defined: PKCS#11 3.x has no SM3 either).
pub const CKM_SM3: CK_MECHANISM_TYPE = 0x8000_0201;

/// The GM/T 0009 default distinguishing ID, used when CKM_SM2_SM3 has no parameter.
pub const DEFAULT_SM2_ID: &[u8] = b"1234567812345678";

/// DER of the sm2p256v1 OID 1.2.156.10197.1.301 (CKA_EC_PARAMS of SM2 keys).
pub const SM2P256V1_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x81, 0x1c, 0xcf, 0x55, 0x01, 0x82, 0x2d];
/// DER of the prime256v1 OID 1.2.840.10045.3.1.7 (CKA_EC_PARAMS of P-256 keys).
pub const PRIME256V1_PARAMS: &[u8] = &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
