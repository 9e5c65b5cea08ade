//! What the layers below the API learn about a request, noted for its audit record.
//!
//! The API's audit middleware opens a [`Note`] for every request ([`scope`]); authentication,
//! [`crate::service::KeyService::authorize`] and the crypto paths add to it through the free
//! functions here, which do nothing outside a request (background workers). The note is
//! task-local, so it follows the request's future and nothing else.

use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use crate::domain::{KeyId, KeyVersion};
use crate::format::EncryptionContext;

tokio::task_local! {
    static NOTE: Note;
}

/// The facts gathered while a request runs.
#[derive(Debug, Default, Clone)]
pub struct Noted {
    /// Authenticated principal.
    pub principal: Option<String>,
    /// Its credential id.
    pub credential: Option<String>,
    /// The action of the first authorisation, or of the first denied one.
    pub action: Option<String>,
    /// Its resource.
    pub resource: Option<String>,
    /// Whether an authorisation was denied (the denied one is what `action` names).
    pub denied: bool,
    /// The first key version used.
    pub key: Option<(String, u32)>,
    /// Further key versions used, `id/vN`.
    pub other_keys: Vec<String>,
    /// Digest and key names of the first encryption context seen.
    pub context: Option<(String, Vec<String>)>,
    /// Further named facts for the record's `details`.
    pub details: std::collections::BTreeMap<String, String>,
    /// What the front door (or the worker) said of the request when it opened the scope.
    pub request: RequestFacts,
    /// Whether the record announcing a state change of this request was written.
    pub change_announced: bool,
    /// Whether something already took effect that could not be announced (background work
    /// that reports an event after the fact).
    pub happened: bool,
}

/// What is known of a request before it runs: who serves it and where it came from.
#[derive(Debug, Default, Clone)]
pub struct RequestFacts {
    /// The request id (for background work: one made for the unit of work).
    pub request_id: String,
    /// The wire method (`-` for background work).
    pub method: String,
    /// The route template (`(background)` for background work).
    pub route: String,
    /// The client's address.
    pub source: Option<std::net::IpAddr>,
    /// The front door that received it, when not the native API (`vault`, `aws`): recorded in
    /// the record's `details` as `front_door`, so native records are unchanged.
    pub front_door: Option<&'static str>,
}

/// A request's note; cheap to clone (shared).
#[derive(Debug, Default, Clone)]
pub struct Note(Arc<Mutex<Noted>>);

impl Note {
    /// A note for a request described by `facts`.
    pub fn new(facts: RequestFacts) -> Self {
        let mut details = std::collections::BTreeMap::new();
        if let Some(door) = facts.front_door {
            details.insert("front_door".to_owned(), door.to_owned());
        }
        Self(Arc::new(Mutex::new(Noted {
            request: facts,
            details,
            ..Noted::default()
        })))
    }

    /// Whether a principal was noted (without copying the note).
    pub fn has_principal(&self) -> bool {
        match self.0.lock() {
            Ok(n) => n.principal.is_some(),
            Err(p) => p.into_inner().principal.is_some(),
        }
    }

    /// What was noted so far.
    pub fn snapshot(&self) -> Noted {
        match self.0.lock() {
            Ok(n) => n.clone(),
            // A poisoned note still holds what was written before the panic.
            Err(p) => p.into_inner().clone(),
        }
    }
}

/// Runs `f` with `note` as the current request's note.
pub async fn scope<F: std::future::Future>(note: Note, f: F) -> F::Output {
    NOTE.scope(note, f).await
}

fn with(f: impl FnOnce(&mut Noted)) {
    let _ = NOTE.try_with(|n| match n.0.lock() {
        Ok(mut g) => f(&mut g),
        Err(p) => f(&mut p.into_inner()),
    });
}

/// Notes the authenticated principal.
pub fn principal(name: &str, credential: &str) {
    with(|n| {
        n.principal = Some(name.to_owned());
        n.credential = Some(credential.to_owned());
    });
}

/// Notes an authorisation decision. The first one is kept unless a later one is denied.
pub fn authorization(action: &str, resource: &str, allowed: bool) {
    with(|n| {
        if n.action.is_none() || (!allowed && !n.denied) {
            n.action = Some(action.to_owned());
            n.resource = Some(resource.to_owned());
            n.denied = !allowed;
        }
    });
}

/// Notes a key version used for a wrap or unwrap.
pub fn key_used(key: &KeyId, version: KeyVersion) {
    with(|n| {
        let id = key.to_string();
        match &n.key {
            None => n.key = Some((id, version.get())),
            Some((k, v)) if *k == id && *v == version.get() => {}
            Some(_) => {
                let other = format!("{id}/v{}", version.get());
                if !n.other_keys.contains(&other) {
                    n.other_keys.push(other);
                }
            }
        }
    });
}

/// Notes the encryption context: its digest and key names, never its values.
pub fn context(ctx: &EncryptionContext) {
    with(|n| {
        if n.context.is_none() {
            n.context = Some(context_digest(ctx));
        }
    });
}

/// Notes the context a request binds its output to when it differs from the input's
/// (`reencrypt`): its digest and key names, never its values.
pub fn destination_context(ctx: &EncryptionContext) {
    let (digest, keys) = context_digest(ctx);
    detail("destination_context_digest", digest);
    detail("destination_context_keys", keys.join(","));
}

/// Marks the current request as about to change stored state, once: returns what was noted so
/// far the first time (so the announcement can be recorded), and `None` on later calls or
/// outside any request.
pub fn announce_change() -> Option<Noted> {
    NOTE.try_with(|n| {
        let mut g = match n.0.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if g.change_announced {
            return None;
        }
        g.change_announced = true;
        Some(g.clone())
    })
    .ok()
    .flatten()
}

/// Notes that the current unit of work did something that took effect before it could be
/// announced (a version-KEK that left memory): its record is written all the same.
pub fn happened() {
    with(|n| n.happened = true);
}

/// Takes back an announcement that could not be recorded (the request fails; a retry of the
/// same work announces again).
pub fn withdraw_change() {
    with(|n| n.change_announced = false);
}

/// Notes a named fact for the record's `details` (never a secret).
pub fn detail(name: &str, value: impl Into<String>) {
    let value = value.into();
    with(|n| {
        n.details.insert(name.to_owned(), value);
    });
}

/// Hex SHA-256 of the context's canonical encoding, and its key names in canonical order.
pub fn context_digest(ctx: &EncryptionContext) -> (String, Vec<String>) {
    let digest = hex::encode(Sha256::digest(ctx.canonical()));
    (digest, ctx.pairs().map(|(k, _)| k.to_owned()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn notes_stay_within_their_request() {
        let note = Note::default();
        scope(note.clone(), async {
            principal("app", "tok_1");
            authorization("decrypt", "key/a", true);
            authorization("encrypt", "key/b", false);
            authorization("decrypt", "key/c", false);
            key_used(&KeyId::generate(), KeyVersion::FIRST);
        })
        .await;
        // Outside any request: ignored, no panic.
        principal("other", "x");
        let n = note.snapshot();
        assert_eq!(n.principal.as_deref(), Some("app"));
        assert_eq!(n.action.as_deref(), Some("encrypt"));
        assert_eq!(n.resource.as_deref(), Some("key/b"));
        assert!(n.denied);
        assert!(n.key.is_some());
    }

    #[tokio::test]
    async fn second_key_goes_to_other_keys() {
        let note = Note::default();
        let (a, b) = (KeyId::generate(), KeyId::generate());
        scope(note.clone(), async {
            key_used(&a, KeyVersion::FIRST);
            key_used(&a, KeyVersion::FIRST);
            key_used(&b, KeyVersion::FIRST);
        })
        .await;
        let n = note.snapshot();
        assert_eq!(n.key, Some((a.to_string(), 1)));
        assert_eq!(n.other_keys, vec![format!("{b}/v1")]);
    }
}
