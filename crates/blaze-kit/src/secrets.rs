//! Sealing stored secrets (provider API keys) with AES-256-GCM. The key comes
//! from configuration (`secrets.encryption_key`, 32 bytes as hex); a sealed
//! value is `nonce (12 bytes) || ciphertext+tag`. Sealed values are written
//! to the database and never returned by any API.

use aes_gcm::{
    Aes256Gcm, Key, Nonce,
    aead::{Aead, KeyInit},
};
use rand::RngCore;

use crate::error::ApiError;

#[derive(Clone)]
pub struct SecretBox {
    cipher: Aes256Gcm,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(***)")
    }
}

impl SecretBox {
    pub fn from_hex(key_hex: &str) -> Result<SecretBox, String> {
        let bytes = hex::decode(key_hex.trim()).map_err(|_| "secrets.encryption_key must be hex".to_owned())?;
        if bytes.len() != 32 {
            return Err(format!("secrets.encryption_key must be 32 bytes (64 hex digits), got {}", bytes.len()));
        }
        let key: [u8; 32] = bytes.try_into().expect("checked length");
        Ok(SecretBox { cipher: Aes256Gcm::new(&Key::<Aes256Gcm>::from(key)) })
    }

    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; 12];
        rand::rng().fill_bytes(&mut nonce);
        let mut out = nonce.to_vec();
        out.extend(self.cipher.encrypt(&Nonce::from(nonce), plaintext).expect("AES-GCM encryption does not fail"));
        out
    }

    pub fn open(&self, sealed: &[u8]) -> Result<Vec<u8>, ApiError> {
        if sealed.len() < 12 + 16 {
            return Err(ApiError::internal("sealed secret too short"));
        }
        let (nonce, ciphertext) = sealed.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().expect("split at 12");
        self.cipher
            .decrypt(&Nonce::from(nonce), ciphertext)
            .map_err(|_| ApiError::internal("stored secret does not decrypt with the configured key"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open_round_trip_and_tampering_fails() {
        let b = SecretBox::from_hex(&"11".repeat(32)).unwrap();
        let sealed = b.seal(b"sk-secret");
        assert!(!sealed.windows(9).any(|w| w == b"sk-secret"));
        assert_eq!(b.open(&sealed).unwrap(), b"sk-secret");
        let mut bad = sealed.clone();
        bad[20] ^= 1;
        assert!(b.open(&bad).is_err());
        assert!(SecretBox::from_hex("abcd").is_err());
        let other = SecretBox::from_hex(&"22".repeat(32)).unwrap();
        assert!(other.open(&sealed).is_err());
    }
}
