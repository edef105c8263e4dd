//! Secrets at rest: the token key wrapped under PIN-derived keys, and key material sealed
//! under the token key.
//!
//! Each token has one random 256-bit token key. The SO PIN and the user PIN each derive a
//! key-encryption key (PBKDF2-HMAC-SHA256, a random salt per wrap) that wraps the token key
//! with AES-256-GCM; private key material is sealed under the token key, also with
//! AES-256-GCM. Checking a PIN is unwrapping with it, so C_InitPIN and C_SetPIN only rewrap
//! 32 bytes, and the store alone (without a PIN) yields no key.

use std::num::NonZeroU32;

use cryptoki_sys::*;
use ring::{aead, pbkdf2};
use zeroize::Zeroizing;

/// The token key, wiped when dropped.
pub type TokenKey = Zeroizing<[u8; 32]>;

/// PBKDF2 iterations for new wraps (stored in each wrap, so it can change later).
const PBKDF2_ITERATIONS: u32 = 100_000;
/// Format byte of a wrap: 1 = PBKDF2-HMAC-SHA256 + AES-256-GCM.
const WRAP_VERSION: u8 = 1;
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = aead::NONCE_LEN;

/// Random bytes from the operating system.
pub fn random(buf: &mut [u8]) -> Result<(), CK_RV> {
    getrandom::fill(buf).map_err(|_| CKR_DEVICE_ERROR)
}

/// A fresh random token key.
pub fn new_token_key() -> Result<TokenKey, CK_RV> {
    let mut key = Zeroizing::new([0u8; 32]);
    random(key.as_mut())?;
    Ok(key)
}

fn aes_key(key: &[u8]) -> Result<aead::LessSafeKey, CK_RV> {
    aead::UnboundKey::new(&aead::AES_256_GCM, key)
        .map(aead::LessSafeKey::new)
        .map_err(|_| CKR_GENERAL_ERROR)
}

/// AES-256-GCM with a random nonce: nonce ‖ ciphertext ‖ tag.
pub fn seal(key: &[u8], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CK_RV> {
    let mut nonce = [0u8; NONCE_LEN];
    random(&mut nonce)?;
    let mut in_out = plaintext.to_vec();
    aes_key(key)?
        .seal_in_place_append_tag(
            aead::Nonce::assume_unique_for_key(nonce),
            aead::Aad::from(aad),
            &mut in_out,
        )
        .map_err(|_| CKR_GENERAL_ERROR)?;
    let mut out = nonce.to_vec();
    out.extend_from_slice(&in_out);
    Ok(out)
}

/// Opens what [`seal`] made; `None` if the key or the associated data is not the one used.
pub fn open(key: &[u8], aad: &[u8], sealed: &[u8]) -> Result<Option<Zeroizing<Vec<u8>>>, CK_RV> {
    let Some((nonce, ciphertext)) = sealed.split_at_checked(NONCE_LEN) else {
        return Ok(None);
    };
    let nonce = aead::Nonce::try_assume_unique_for_key(nonce).map_err(|_| CKR_GENERAL_ERROR)?;
    let mut in_out = Zeroizing::new(ciphertext.to_vec());
    let len = match aes_key(key)?.open_in_place(nonce, aead::Aad::from(aad), &mut in_out) {
        Ok(plain) => plain.len(),
        Err(_) => return Ok(None),
    };
    in_out.truncate(len);
    Ok(Some(in_out))
}

fn pin_key(pin: &[u8], salt: &[u8], iterations: u32) -> Result<Zeroizing<[u8; 32]>, CK_RV> {
    let iterations = NonZeroU32::new(iterations).ok_or(CKR_DEVICE_ERROR)?;
    let mut kek = Zeroizing::new([0u8; 32]);
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iterations,
        salt,
        pin,
        kek.as_mut(),
    );
    Ok(kek)
}

/// Wraps the token key under a PIN: version ‖ iterations (u32 BE) ‖ salt ‖ sealed key.
/// `aad` binds the wrap to its token and role.
pub fn wrap_token_key(pin: &[u8], key: &TokenKey, aad: &[u8]) -> Result<Vec<u8>, CK_RV> {
    let mut salt = [0u8; SALT_LEN];
    random(&mut salt)?;
    let kek = pin_key(pin, &salt, PBKDF2_ITERATIONS)?;
    let mut out = vec![WRAP_VERSION];
    out.extend_from_slice(&PBKDF2_ITERATIONS.to_be_bytes());
    out.extend_from_slice(&salt);
    out.extend_from_slice(&seal(kek.as_ref(), aad, key.as_ref())?);
    Ok(out)
}

/// Unwraps the token key with a PIN; CKR_PIN_INCORRECT if the PIN is not the one it was
/// wrapped under.
pub fn unwrap_token_key(pin: &[u8], wrapped: &[u8], aad: &[u8]) -> Result<TokenKey, CK_RV> {
    let [WRAP_VERSION, i0, i1, i2, i3, rest @ ..] = wrapped else {
        return Err(CKR_DEVICE_ERROR);
    };
    let (salt, sealed) = rest.split_at_checked(SALT_LEN).ok_or(CKR_DEVICE_ERROR)?;
    let kek = pin_key(pin, salt, u32::from_be_bytes([*i0, *i1, *i2, *i3]))?;
    let plain = open(kek.as_ref(), aad, sealed)?.ok_or(CKR_PIN_INCORRECT)?;
    let mut key = Zeroizing::new([0u8; 32]);
    if plain.len() != key.len() {
        return Err(CKR_DEVICE_ERROR);
    }
    key.copy_from_slice(&plain);
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrapped_token_key_opens_only_with_its_pin_and_token() {
        let key = new_token_key().expect("random");
        let wrapped = wrap_token_key(b"123456", &key, b"token A").expect("wrap");
        let back = unwrap_token_key(b"123456", &wrapped, b"token A").expect("unwrap");
        assert_eq!(*back, *key);
        assert_eq!(
            unwrap_token_key(b"123457", &wrapped, b"token A"),
            Err(CKR_PIN_INCORRECT)
        );
        assert_eq!(
            unwrap_token_key(b"123456", &wrapped, b"token B"),
            Err(CKR_PIN_INCORRECT)
        );
    }

    #[test]
    fn sealed_material_opens_only_with_its_key() {
        let key = new_token_key().expect("random");
        let other = new_token_key().expect("random");
        let sealed = seal(key.as_ref(), b"aad", b"secret scalar").expect("seal");
        let opened = open(key.as_ref(), b"aad", &sealed)
            .expect("open")
            .expect("right key");
        assert_eq!(opened.as_slice(), b"secret scalar");
        assert!(
            open(other.as_ref(), b"aad", &sealed)
                .expect("open")
                .is_none()
        );
    }
}
