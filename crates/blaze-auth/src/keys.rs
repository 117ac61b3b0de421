//! The key set behind every biscuit.
//!
//! Tokens carry the id of the root key that signed them. Rotation: configure
//! a new `signing_key` with a new id and keep the old public key in
//! `verify_keys` for one token lifetime, then drop it.

use std::collections::HashMap;

use biscuit_auth::{Algorithm, KeyPair, PrivateKey, PublicKey, error};

#[derive(Clone)]
pub struct KeySet {
    current_id: u32,
    signer: Option<std::sync::Arc<KeyPair>>,
    public: HashMap<u32, PublicKey>,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid key material: {0}")]
pub struct KeyError(String);

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet").field("current_id", &self.current_id).field("ids", &self.public.keys().collect::<Vec<_>>()).finish()
    }
}

impl KeySet {
    /// `signing_key_hex`: Ed25519 private key (hex, optionally prefixed
    /// `ed25519-private/`); `verify_keys`: `"<id>:<hex public key>"` entries.
    pub fn from_config(signing_key_hex: &str, signing_key_id: u32, verify_keys: &[String]) -> Result<KeySet, KeyError> {
        let mut public = HashMap::new();
        for entry in verify_keys {
            let (id, hex) = entry.split_once(':').ok_or_else(|| KeyError(format!("verify key {entry:?} is not <id>:<hex>")))?;
            let id: u32 = id.trim().parse().map_err(|_| KeyError(format!("verify key id {id:?} is not a number")))?;
            let hex = hex.trim().trim_start_matches("ed25519/");
            let key = PublicKey::from_bytes_hex(hex, Algorithm::Ed25519).map_err(|e| KeyError(e.to_string()))?;
            public.insert(id, key);
        }
        let signer = if signing_key_hex.trim().is_empty() {
            None
        } else {
            let hex = signing_key_hex.trim().trim_start_matches("ed25519-private/");
            let private = PrivateKey::from_bytes_hex(hex, Algorithm::Ed25519).map_err(|e| KeyError(e.to_string()))?;
            let pair = KeyPair::from(&private);
            public.insert(signing_key_id, pair.public());
            Some(std::sync::Arc::new(pair))
        };
        if public.is_empty() {
            return Err(KeyError("no signing key and no verify keys configured".into()));
        }
        Ok(KeySet { current_id: signing_key_id, signer, public })
    }

    /// A fresh random key set (tests, `blaze dev up`).
    pub fn generate(id: u32) -> KeySet {
        let pair = KeyPair::new();
        let mut public = HashMap::new();
        public.insert(id, pair.public());
        KeySet { current_id: id, signer: Some(std::sync::Arc::new(pair)), public }
    }

    /// Hex of a new random private key, for configuration.
    pub fn new_private_key_hex() -> String {
        KeyPair::new().private().to_bytes_hex()
    }

    /// Rotate: sign with a new key from now on, keep verifying the old ones.
    pub fn rotated(&self, new_id: u32) -> KeySet {
        let pair = KeyPair::new();
        let mut public = self.public.clone();
        public.insert(new_id, pair.public());
        KeySet { current_id: new_id, signer: Some(std::sync::Arc::new(pair)), public }
    }

    /// Stop accepting tokens signed by `id`.
    pub fn without(&self, id: u32) -> KeySet {
        let mut next = self.clone();
        next.public.remove(&id);
        next
    }

    pub fn current_id(&self) -> u32 {
        self.current_id
    }

    pub fn can_sign(&self) -> bool {
        self.signer.is_some()
    }

    pub(crate) fn signer(&self) -> Result<&KeyPair, error::Token> {
        self.signer.as_deref().ok_or(error::Token::Format(error::Format::InvalidKey("no signing key configured".into())))
    }

    /// `"<id>:<hex>"` of the current public key (to hand to verify-only roles).
    pub fn public_entry(&self) -> Option<String> {
        self.public.get(&self.current_id).map(|k| format!("{}:{}", self.current_id, k.to_bytes_hex()))
    }

    pub(crate) fn public(&self, id: Option<u32>) -> Result<PublicKey, error::Format> {
        id.and_then(|id| self.public.get(&id).copied()).ok_or(error::Format::UnknownPublicKey)
    }
}
