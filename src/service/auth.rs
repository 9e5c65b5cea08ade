//! Bearer tokens: minting, parsing and verification.
//!
//! A token reads `cst_<id>_<secret>`: `id` is 16 hex digits (public, the lookup key, safe to
//! log), `secret` is 32 random bytes in unpadded base64url. Only
//! `SHA-256("custodian/token/v1" ‖ 0 ‖ id ‖ 0 ‖ secret)` is stored; a 256-bit random secret
//! needs no slow hash. Hashes are compared in constant time.
//!
//! Verified records are cached for [`CACHE_TTL`] so the hot path skips the database; that is
//! also the longest a revoked or expired token can keep working on a node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::error::{AuthFailure, ServiceError};
use crate::domain::TokenRecord;
use crate::policy::Principal;
use crate::secret::BearerToken;
use crate::store::Store;

/// How long a verified token record is trusted without reading the store again.
pub const CACHE_TTL: Duration = Duration::from_secs(5);
/// Most records cached at once; the cache is emptied when it would grow past this.
const CACHE_MAX: usize = 10_000;
const PREFIX: &str = "cst_";
const ID_HEX_LEN: usize = 16;
const SECRET_LEN: usize = 32;
/// Longest header value worth parsing.
const MAX_TOKEN_LEN: usize = 128;

/// A token's id and secret, parsed.
struct Parsed<'a> {
    id: &'a str,
    secret: Zeroizing<Vec<u8>>,
}

/// The public id of a presented token (`cst_<id>_…`), when it has a well-formed one; the
/// secret part is not looked at. For throttling failures per token id.
pub fn token_id(presented: &str) -> Option<&str> {
    if presented.len() > MAX_TOKEN_LEN {
        return None;
    }
    let (id, _) = presented.strip_prefix(PREFIX)?.split_once('_')?;
    (id.len() == ID_HEX_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
    .then_some(id)
}

fn parse(text: &str) -> Option<Parsed<'_>> {
    if text.len() > MAX_TOKEN_LEN {
        return None;
    }
    let rest = text.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    if id.len() != ID_HEX_LEN
        || !id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    {
        return None;
    }
    let secret = Zeroizing::new(URL_SAFE_NO_PAD.decode(secret).ok()?);
    if secret.len() != SECRET_LEN {
        return None;
    }
    Some(Parsed { id, secret })
}

fn hash(id: &str, secret: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"custodian/token/v1\0");
    h.update(id.as_bytes());
    h.update([0u8]);
    h.update(secret);
    h.finalize().into()
}

/// Mints a fresh token for `principal`: the text to show once, and the record to store.
///
/// # Errors
/// The OS random source failing.
pub fn mint(
    principal: &str,
    description: &str,
) -> Result<(BearerToken, TokenRecord), getrandom::Error> {
    let mut id = [0u8; ID_HEX_LEN / 2];
    getrandom::getrandom(&mut id)?;
    let id = hex::encode(id);
    let mut secret = Zeroizing::new([0u8; SECRET_LEN]);
    getrandom::getrandom(&mut secret[..])?;
    let text = format!("{PREFIX}{id}_{}", URL_SAFE_NO_PAD.encode(&secret[..]));
    let record = TokenRecord {
        secret_hash: hash(&id, &secret[..]),
        id,
        principal: principal.to_owned(),
        description: description.to_owned(),
        created_at: crate::clock::now(),
        expires_at: None,
        revoked_at: None,
    };
    Ok((BearerToken::new(text), record))
}

/// Verifies presented tokens against the store, with a short-lived cache.
pub struct Authenticator {
    store: Arc<dyn Store>,
    cache: Mutex<HashMap<String, (TokenRecord, Instant)>>,
    coherence: Arc<super::coherence::Coherence>,
}

impl Authenticator {
    /// A verifier reading `store`.
    pub fn new(store: Arc<dyn Store>, coherence: Arc<super::coherence::Coherence>) -> Self {
        Self {
            store,
            cache: Mutex::new(HashMap::new()),
            coherence,
        }
    }

    /// The principal `presented` authenticates.
    ///
    /// # Errors
    /// `Unauthenticated(Invalid | Expired)`; `Store` when the database fails.
    pub async fn verify(&self, presented: &str) -> Result<Principal, ServiceError> {
        let invalid = ServiceError::Unauthenticated(AuthFailure::Invalid);
        let parsed = parse(presented).ok_or(invalid)?;
        let record = match self.cached(parsed.id) {
            Some(r) => r,
            None => {
                let ticket = self.coherence.ticket();
                let r = self
                    .store
                    .token(parsed.id)
                    .await?
                    .ok_or(ServiceError::Unauthenticated(AuthFailure::Invalid))?;
                if self.coherence.may_cache(ticket) {
                    self.remember(&r);
                }
                r
            }
        };
        let presented_hash = hash(parsed.id, &parsed.secret);
        if !bool::from(presented_hash.ct_eq(&record.secret_hash)) {
            return Err(ServiceError::Unauthenticated(AuthFailure::Invalid));
        }
        if record.revoked_at.is_some() {
            return Err(ServiceError::Unauthenticated(AuthFailure::Revoked));
        }
        if record.expires_at.is_some_and(|t| t <= crate::clock::now()) {
            return Err(ServiceError::Unauthenticated(AuthFailure::Expired));
        }
        Ok(Principal {
            name: record.principal,
            credential_id: record.id,
            source: None,
        })
    }

    /// Drops the cached record of token `id` (after a revocation on this node).
    pub fn forget(&self, id: &str) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.remove(id);
        }
    }

    /// Drops every cached record (after a principal was deleted and its tokens revoked).
    pub fn forget_all(&self) {
        if let Ok(mut cache) = self.cache.lock() {
            cache.clear();
        }
    }

    fn cached(&self, id: &str) -> Option<TokenRecord> {
        if !self.coherence.trusted() {
            return None;
        }
        let cache = self.cache.lock().ok()?;
        let (record, at) = cache.get(id)?;
        (at.elapsed() < CACHE_TTL).then(|| record.clone())
    }

    fn remember(&self, record: &TokenRecord) {
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
            cache.insert(record.id.clone(), (record.clone(), Instant::now()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_parse_and_hash_to_their_record() {
        let (token, record) = mint("p", "d").unwrap();
        let parsed = parse(token.expose_secret()).unwrap();
        assert_eq!(parsed.id, record.id);
        assert_eq!(hash(parsed.id, &parsed.secret), record.secret_hash);
        assert!(token.expose_secret().len() >= PREFIX.len() + 16 + 1 + 43);
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let (token, _) = mint("p", "d").unwrap();
        let good = token.expose_secret();
        assert!(parse("").is_none());
        assert!(parse(&good.replacen("cst_", "cs_", 1)).is_none());
        assert!(parse(&good[..good.len() - 1]).is_none());
        assert!(parse(&format!("{good}A")).is_none());
        assert!(parse(&good.to_uppercase()).is_none());
        assert!(parse(&"x".repeat(MAX_TOKEN_LEN + 1)).is_none());
    }

    #[test]
    fn a_changed_secret_changes_the_hash() {
        let (token, record) = mint("p", "d").unwrap();
        let mut text = token.expose_secret().to_owned();
        let last = text.pop().unwrap();
        text.push(if last == 'A' { 'B' } else { 'A' });
        if let Some(p) = parse(&text) {
            assert_ne!(hash(p.id, &p.secret), record.secret_hash);
        }
    }
}
