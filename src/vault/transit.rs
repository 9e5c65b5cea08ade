//! Vault Transit on Custodian's keys: keys (create, read, list, rotate, config, delete),
//! `encrypt`/`decrypt` (single and `batch_input`), `datakey/plaintext|wrapped`, `rewrap`,
//! `random`.
//!
//! - Ciphertext is `vault:v<N>:<base64 of Custodian's blob>`; `N` is the key version the blob
//!   names. The blob itself is authoritative (it names key and version); the prefix is checked
//!   against it.
//! - Vault's `context` (base64, for derived keys) and `associated_data` (base64 AAD) both become
//!   entries of Custodian's encryption context, `vault:context` and `vault:associated_data`,
//!   holding the base64 text as sent. Decrypt and rewrap must send the same ones; rewrap keeps
//!   them (Vault's rewrap drops associated data).
//! - Only `aes256-gcm96` keys (the default type) exist: every Custodian key is an AES-256-GCM
//!   key in the device. Other types are refused with 400.
//! - `random`'s sources map to Custodian's: `platform` (the default) is the host's generator,
//!   `seal` the HSM's, `all` both XORed; each is its own policy resource (`random/host`,
//!   `random/device`, `random/mixed`).
//! - `DELETE` schedules the key's deletion (the configured waiting period; cancellable through
//!   the native API) whatever `deletion_allowed` says: Custodian never destroys a key at once.

use axum::extract::{Path, Query};
use axum::handler::Handler;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::routing::{get, post, MethodRouter};
use axum::{Extension, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::{body_of, ok, VaultError};
use crate::api::AppState;
use crate::domain::{Key, KeyName, KeyRef, VersionState};
use crate::format::context::EncryptionContext;
use crate::secret::{SecretBytes, SecretText};
use crate::service::lifecycle::KeyPatch;
use crate::service::random::EntropySource;
use crate::service::{Authorized, DataKeyLen, KeyPlacement, PlaintextCopy};
use zeroize::Zeroizing;

/// The Transit routes.
pub fn routes(mount: &str) -> Router<AppState> {
    let at = |path: &str| format!("/v1/{mount}/{path}");
    Router::new()
        .route(&at("keys"), get(list_keys))
        .route(
            &at("keys/{name}"),
            write(create_key).get(read_key).delete(delete_key),
        )
        .route(&at("keys/{name}/rotate"), write(rotate_key))
        .route(&at("keys/{name}/config"), write(config_key))
        .route(&at("encrypt/{name}"), write(encrypt))
        .route(&at("decrypt/{name}"), write(decrypt))
        .route(&at("rewrap/{name}"), write(rewrap))
        .route(&at("datakey/{kind}/{name}"), write(datakey))
        .route(&at("random"), write(random))
        .route(&at("random/{bytes}"), write(random_bytes))
        .route(&at("random/{source}/{bytes}"), write(random_from))
}

/// A write route: Vault treats `PUT` and `POST` alike (OpenBao's own transit seal sends `PUT`).
fn write<H, T>(handler: H) -> MethodRouter<AppState>
where
    H: Handler<T, AppState>,
    T: 'static,
{
    post(handler.clone()).put(handler)
}

/// The Vault type of every Custodian key.
const KEY_TYPE: &str = "aes256-gcm96";

/// Most items in one `batch_input`.
const MAX_BATCH: usize = 1000;

type Result<T> = std::result::Result<T, VaultError>;

fn key_name(name: &str) -> Result<KeyName> {
    KeyName::try_from(name.to_owned())
        .map_err(|e| VaultError::invalid("invalid_key_name", format!("invalid key name: {e}")))
}

fn key_ref(name: &str) -> Result<KeyRef> {
    Ok(KeyRef::Name(key_name(name)?))
}

/// Key creation options refused when true: a Custodian key never leaves its device.
const CREATE_FLAGS_REFUSED: &[&str] = &["exportable", "allow_plaintext_backup"];

/// 400 for any of `flags` set true: options Custodian's keys do not have.
fn refuse_flags(body: &Value, flags: &[&str]) -> Result<()> {
    match flags
        .iter()
        .find(|f| body.get(**f).and_then(Value::as_bool) == Some(true))
    {
        Some(flag) => Err(VaultError::invalid(
            "unsupported_option",
            format!("{flag} is not supported: keys never leave the device"),
        )),
        None => Ok(()),
    }
}

/// A count as Vault clients send it: a JSON number or a string of digits.
fn number(v: &Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}

fn field<'a>(v: &'a Value, name: &str) -> Option<&'a str> {
    v.get(name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Custodian's encryption context for Vault's `context` and `associated_data` (module docs).
fn context_of(item: &Value) -> Result<EncryptionContext> {
    let mut pairs = Vec::new();
    for (name, entry) in [
        ("context", "vault:context"),
        ("associated_data", "vault:associated_data"),
    ] {
        if let Some(b64) = field(item, name) {
            STANDARD.decode(b64).map_err(|_| {
                VaultError::invalid("invalid_context", format!("{name} is not valid base64"))
            })?;
            pairs.push((entry.to_owned(), b64.to_owned()));
        }
    }
    EncryptionContext::from_pairs(pairs).map_err(|e| {
        VaultError::invalid("invalid_context", format!("{name}: {e}", name = "context"))
    })
}

fn vault_ciphertext(version: u32, blob: &[u8]) -> String {
    format!("vault:v{version}:{}", STANDARD.encode(blob))
}

/// The blob inside `vault:v<N>:<base64>`, checked against its prefix.
fn blob_of(ciphertext: &str) -> Result<Vec<u8>> {
    let invalid = || VaultError::invalid("invalid_ciphertext", "invalid ciphertext: no prefix");
    let rest = ciphertext.strip_prefix("vault:v").ok_or_else(invalid)?;
    let (version, b64) = rest.split_once(':').ok_or_else(invalid)?;
    let version: u32 = version.parse().map_err(|_| invalid())?;
    let blob = STANDARD
        .decode(b64)
        .map_err(|_| VaultError::invalid("invalid_ciphertext", "invalid ciphertext: not base64"))?;
    let parsed = crate::format::blob::Blob::parse(&blob)
        .map_err(|_| VaultError::invalid("invalid_ciphertext", "invalid ciphertext"))?;
    if parsed.key_version.get() != version {
        return Err(VaultError::invalid(
            "invalid_ciphertext",
            "invalid ciphertext: the version prefix does not match the ciphertext",
        ));
    }
    Ok(blob)
}

/// Vault's view of a key.
fn key_info(key: &Key) -> Value {
    let keys: Map<String, Value> = key
        .versions
        .iter()
        .filter(|v| v.state != VersionState::Destroyed)
        .map(|v| {
            (
                v.version.get().to_string(),
                json!(v.created_at.unix_timestamp()),
            )
        })
        .collect();
    json!({
        "name": key.name.as_str(),
        "type": KEY_TYPE,
        "keys": keys,
        "latest_version": key.primary_version.get(),
        "min_available_version": 0,
        "min_decryption_version": key.min_decryption_version.get(),
        "min_encryption_version": 0,
        "deletion_allowed": false,
        "derived": false,
        "exportable": false,
        "allow_plaintext_backup": false,
        "imported_key": false,
        "supports_encryption": true,
        "supports_decryption": true,
        "supports_derivation": true,
        "supports_signing": false,
        "auto_rotate_period": key.rotation_period.map_or(0, |d| d.0.as_secs()),
    })
}

#[derive(Debug, Deserialize)]
struct ListQuery {
    list: Option<String>,
}

/// `LIST /v1/transit/keys` (or `GET ?list=true`): names of the keys the caller may read; none
/// is 404, as Vault answers an empty list.
async fn list_keys(
    headers: HeaderMap,
    Extension(p): Extension<Authorized>,
    Query(q): Query<ListQuery>,
) -> Result<Response> {
    if q.list.as_deref() != Some("true") {
        return Err(VaultError::not_found("route_not_found"));
    }
    let mut names = Vec::new();
    let mut after = None;
    loop {
        let page = p
            .list_keys(after.clone(), 1000)
            .await
            .map_err(|e| VaultError::from_service(&e, true))?;
        names.extend(page.keys.iter().map(|k| k.name.as_str().to_owned()));
        match page.next {
            Some(next) if names.len() < 100_000 => after = Some(next),
            _ => break,
        }
    }
    if names.is_empty() {
        return Err(VaultError::not_found("key_not_found"));
    }
    Ok(ok(&headers, json!({ "keys": names })))
}

/// `POST /v1/transit/keys/{name}`: creates an `aes256-gcm96` key on the default device.
async fn create_key(
    headers: HeaderMap,
    Extension(p): Extension<Authorized>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response> {
    let body = body_of(&body)?;
    if let Some(t) = field(&body, "type") {
        if t != KEY_TYPE {
            return Err(VaultError::invalid(
                "unsupported_key_type",
                format!("key type {t:?} is not supported: Custodian keys are {KEY_TYPE}"),
            ));
        }
    }
    for flag in [
        "derived",
        "exportable",
        "allow_plaintext_backup",
        "convergent_encryption",
    ] {
        if body.get(flag).and_then(Value::as_bool) == Some(true) {
            return Err(VaultError::invalid(
                "unsupported_option",
                format!("{flag} is not supported: keys never leave the device"),
            ));
        }
    }
    let placement = KeyPlacement::default_for(crate::domain::BackendKind::Pkcs11);
    let key = p
        .create_key(key_name(&name)?, String::new(), placement)
        .await
        .map_err(|e| VaultError::from_service(&e, false))?;
    Ok(ok(&headers, key_info(&key)))
}

/// `GET /v1/transit/keys/{name}`.
async fn read_key(
    headers: HeaderMap,
    Extension(p): Extension<Authorized>,
    Path(name): Path<String>,
) -> Result<Response> {
    let key = p
        .key(&key_ref(&name)?)
        .await
        .map_err(|e| VaultError::from_service(&e, true))?;
    Ok(ok(&headers, key_info(&key)))
}

/// `POST /v1/transit/keys/{name}/rotate`.
async fn rotate_key(
    headers: HeaderMap,
    Extension(p): Extension<Authorized>,
    Path(name): Path<String>,
) -> Result<Response> {
    let key = p
        .rotate_key(&key_ref(&name)?)
        .await
        .map_err(|e| VaultError::from_service(&e, false))?;
    Ok(ok(&headers, key_info(&key)))
}

/// `POST /v1/transit/keys/{name}/config`: `min_decryption_version` is applied;
/// `deletion_allowed` is accepted (see the module docs on deletion); options Custodian does not
/// have are refused.
async fn config_key(
    headers: HeaderMap,
    Extension(p): Extension<Authorized>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response> {
    let body = body_of(&body)?;
    let r = key_ref(&name)?;
    refuse_flags(&body, CREATE_FLAGS_REFUSED)?;
    let min = match body.get("min_decryption_version") {
        None | Some(Value::Null) => None,
        Some(v) => Some(
            number(v)
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    VaultError::invalid(
                        "invalid_field",
                        "min_decryption_version must be a version number",
                    )
                })?,
        ),
    };
    let key = match min {
        Some(n) if n > 0 => p
            .update_key(
                &r,
                KeyPatch {
                    min_decryption_version: Some(n),
                    ..KeyPatch::default()
                },
            )
            .await
            .map_err(|e| VaultError::from_service(&e, false))?,
        _ => p
            .key(&r)
            .await
            .map_err(|e| VaultError::from_service(&e, false))?,
    };
    Ok(ok(&headers, key_info(&key)))
}

/// `DELETE /v1/transit/keys/{name}`: schedules deletion (module docs); 204 as Vault answers.
async fn delete_key(
    Extension(p): Extension<Authorized>,
    Path(name): Path<String>,
) -> Result<axum::http::StatusCode> {
    p.schedule_key_deletion(&key_ref(&name)?, None)
        .await
        .map_err(|e| VaultError::from_service(&e, false))?;
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// The items of a request: `batch_input`, or the body itself.
fn items(body: &Value) -> Result<(Vec<Value>, bool)> {
    match body.get("batch_input") {
        None | Some(Value::Null) => Ok((vec![body.clone()], false)),
        Some(Value::Array(items)) if !items.is_empty() && items.len() <= MAX_BATCH => {
            Ok((items.clone(), true))
        }
        Some(_) => Err(VaultError::invalid(
            "invalid_batch",
            format!("batch_input must be a list of 1 to {MAX_BATCH} items"),
        )),
    }
}

/// One answer per item; a batch reports each item's error in place (as Vault does), a single
/// request fails with it.
fn answer(headers: &HeaderMap, results: Vec<Result<Value>>, batch: bool) -> Result<Response> {
    if !batch {
        let Some(first) = results.into_iter().next() else {
            return Err(VaultError::invalid("invalid_batch", "nothing to do"));
        };
        return Ok(ok(headers, first?));
    }
    let results: Vec<Value> = results
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| json!({ "error": e.messages.join("; ") })))
        .collect();
    Ok(ok(headers, json!({ "batch_results": results })))
}

/// One item to encrypt. The plaintext is held as a secret (zeroised on drop, never in `Debug`).
#[derive(Deserialize)]
struct EncryptItem {
    plaintext: Option<SecretText>,
    context: Option<String>,
    associated_data: Option<String>,
    key_version: Option<u64>,
}

/// An encrypt request: one item, or `batch_input` (hvac sends `"plaintext": null` beside it).
#[derive(Deserialize)]
struct EncryptBody {
    #[serde(flatten)]
    item: EncryptItem,
    batch_input: Option<Vec<EncryptItem>>,
}

/// `POST /v1/transit/encrypt/{name}`.
async fn encrypt(
    headers: HeaderMap,
    Extension(p): Extension<Authorized>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response> {
    let body: EncryptBody = serde_json::from_slice(&body)
        .map_err(|_| VaultError::invalid("malformed_json", "failed to parse JSON input"))?;
    let r = key_ref(&name)?;
    let (items, batch) = match body.batch_input {
        None => (vec![body.item], false),
        Some(items) if !items.is_empty() && items.len() <= MAX_BATCH => (items, true),
        Some(_) => {
            return Err(VaultError::invalid(
                "invalid_batch",
                format!("batch_input must be a list of 1 to {MAX_BATCH} items"),
            ))
        }
    };
    let mut results = Vec::with_capacity(items.len());
    for item in &items {
        results.push(encrypt_one(&p, &r, item).await);
    }
    answer(&headers, results, batch)
}

/// What one encrypt item asks for: the plaintext and its context, read and checked.
fn read_encrypt_item(item: &EncryptItem) -> Result<(SecretBytes, EncryptionContext)> {
    if item.key_version.is_some_and(|v| v != 0) {
        return Err(VaultError::invalid(
            "unsupported_option",
            "key_version is not supported: Custodian encrypts with the latest version",
        ));
    }
    let plaintext = item
        .plaintext
        .as_ref()
        .ok_or_else(|| VaultError::invalid("missing_plaintext", "missing plaintext to encrypt"))?;
    let plaintext = SecretBytes::new(
        STANDARD
            .decode(plaintext.expose_secret())
            .map(Zeroizing::new)
            .map_err(|_| {
                VaultError::invalid("invalid_plaintext", "plaintext is not valid base64")
            })?,
    );
    let context = context_of(&json!({
        "context": item.context,
        "associated_data": item.associated_data,
    }))?;
    Ok((plaintext, context))
}

async fn encrypt_one(p: &Authorized, r: &KeyRef, item: &EncryptItem) -> Result<Value> {
    let (plaintext, context) = read_encrypt_item(item)?;
    let sealed = p
        .encrypt(r, plaintext, &context)
        .await
        .map_err(|e| VaultError::from_service(&e, false))?;
    Ok(json!({
        "ciphertext": vault_ciphertext(sealed.key_version.get(), &sealed.ciphertext),
        "key_version": sealed.key_version.get(),
    }))
}

/// `POST /v1/transit/decrypt/{name}`.
async fn decrypt(
    headers: HeaderMap,
    Extension(p): Extension<Authorized>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response> {
    let body = body_of(&body)?;
    let r = key_ref(&name)?;
    let (items, batch) = items(&body)?;
    let mut results = Vec::with_capacity(items.len());
    for item in &items {
        results.push(decrypt_one(&p, &r, item).await);
    }
    answer(&headers, results, batch)
}

fn ciphertext_field(item: &Value) -> Result<&str> {
    item.get("ciphertext")
        .and_then(Value::as_str)
        .ok_or_else(|| VaultError::invalid("missing_ciphertext", "missing ciphertext"))
}

/// One item: the path names the key, and the blob must have been sealed by it (checked by the
/// service, which needs only `decrypt` on that key).
async fn decrypt_one(p: &Authorized, r: &KeyRef, item: &Value) -> Result<Value> {
    let blob = blob_of(ciphertext_field(item)?)?;
    let context = context_of(item)?;
    let opened = p
        .decrypt(&blob, &context, Some(r))
        .await
        .map_err(|e| VaultError::from_service(&e, false))?;
    Ok(json!({ "plaintext": STANDARD.encode(opened.plaintext.expose_secret()) }))
}

/// `POST /v1/transit/rewrap/{name}`: to the key's latest version, keeping the context.
async fn rewrap(
    headers: HeaderMap,
    Extension(p): Extension<Authorized>,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response> {
    let body = body_of(&body)?;
    let r = key_ref(&name)?;
    let (items, batch) = items(&body)?;
    let mut results = Vec::with_capacity(items.len());
    for item in &items {
        results.push(rewrap_one(&p, &r, item).await);
    }
    answer(&headers, results, batch)
}

async fn rewrap_one(p: &Authorized, r: &KeyRef, item: &Value) -> Result<Value> {
    let blob = blob_of(ciphertext_field(item)?)?;
    let context = context_of(item)?;
    let re = p
        .reencrypt(&blob, &context, Some(r), Some(r), Some(&context))
        .await
        .map_err(|e| VaultError::from_service(&e, false))?;
    Ok(json!({
        "ciphertext": vault_ciphertext(re.sealed.key_version.get(), &re.sealed.ciphertext),
        "key_version": re.sealed.key_version.get(),
    }))
}

/// `POST /v1/transit/datakey/{plaintext|wrapped}/{name}`: `bits` 128 or 256 (default 256).
async fn datakey(
    headers: HeaderMap,
    Extension(p): Extension<Authorized>,
    Path((kind, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response> {
    let body = body_of(&body)?;
    let copy = match kind.as_str() {
        "plaintext" => PlaintextCopy::Include,
        "wrapped" => PlaintextCopy::Omit,
        _ => {
            return Err(VaultError::invalid(
                "invalid_datakey_type",
                "the data key type must be \"plaintext\" or \"wrapped\"",
            ))
        }
    };
    let bits = match body.get("bits") {
        None | Some(Value::Null) => 256,
        Some(v) => number(v).unwrap_or(0),
    };
    let len =
        match bits {
            128 => DataKeyLen::Bytes16,
            256 => DataKeyLen::Bytes32,
            512 => return Err(VaultError::invalid(
                "invalid_bits",
                "512-bit data keys are not supported: Custodian data keys are AES keys of 128 or \
                 256 bits",
            )),
            _ => {
                return Err(VaultError::invalid(
                    "invalid_bits",
                    "invalid bit size for data key: 128 or 256",
                ))
            }
        };
    let context = context_of(&body)?;
    let dk = p
        .generate_data_key(&key_ref(&name)?, len, &context, copy)
        .await
        .map_err(|e| VaultError::from_service(&e, false))?;
    let mut data = json!({
        "ciphertext": vault_ciphertext(dk.sealed.key_version.get(), &dk.sealed.ciphertext),
        "key_version": dk.sealed.key_version.get(),
    });
    if let (Some(pt), Some(obj)) = (dk.plaintext, data.as_object_mut()) {
        obj.insert(
            "plaintext".to_owned(),
            Value::String(STANDARD.encode(pt.expose_secret())),
        );
    }
    Ok(ok(&headers, data))
}

/// `POST random` (bytes and source from the body, or defaults).
async fn random(
    headers: HeaderMap,
    Extension(p): Extension<Authorized>,
    body: axum::body::Bytes,
) -> Result<Response> {
    random_answer(&headers, &p, None, None, &body).await
}

/// `POST random/<bytes>`.
async fn random_bytes(
    headers: HeaderMap,
    Extension(p): Extension<Authorized>,
    Path(bytes): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response> {
    random_answer(&headers, &p, None, Some(&bytes), &body).await
}

/// `POST random/<source>/<bytes>`.
async fn random_from(
    headers: HeaderMap,
    Extension(p): Extension<Authorized>,
    Path((source, bytes)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response> {
    random_answer(&headers, &p, Some(&source), Some(&bytes), &body).await
}

/// Vault's default byte count.
const DEFAULT_RANDOM_BYTES: usize = 32;

/// Random bytes as Vault answers them: `random_bytes` in `format` (`base64` or `hex`). The path's
/// values win over the body's, as in Vault.
async fn random_answer(
    headers: &HeaderMap,
    p: &Authorized,
    path_source: Option<&str>,
    path_bytes: Option<&str>,
    body: &[u8],
) -> Result<Response> {
    let body = body_of(body)?;
    let n = match path_bytes {
        Some(text) => text.parse::<usize>().map_err(|_| {
            VaultError::invalid(
                "invalid_bytes",
                format!("error parsing url-set byte count: {text:?} is not a number"),
            )
        })?,
        None => match body.get("bytes") {
            None | Some(Value::Null) => DEFAULT_RANDOM_BYTES,
            Some(v) => number(v)
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| VaultError::invalid("invalid_bytes", "'bytes' must be a number"))?,
        },
    };
    let source = match path_source.or_else(|| field(&body, "source")) {
        None | Some("platform") => EntropySource::Host,
        Some("seal") => EntropySource::Device,
        Some("all") => EntropySource::Mixed,
        Some(other) => {
            return Err(VaultError::invalid(
                "invalid_source",
                format!(
                "unsupported entropy source {other:?}; must be \"platform\", \"seal\" or \"all\""
            ),
            ))
        }
    };
    let hex = match field(&body, "format") {
        None | Some("base64") => false,
        Some("hex") => true,
        Some(other) => {
            return Err(VaultError::invalid(
                "invalid_format",
                format!("unsupported encoding format {other:?}; must be \"hex\" or \"base64\""),
            ))
        }
    };
    let bytes = p
        .random(n, source)
        .await
        .map_err(|e| VaultError::from_service(&e, false))?;
    let text = if hex {
        hex::encode(bytes.expose_secret())
    } else {
        STANDARD.encode(bytes.expose_secret())
    };
    Ok(ok(headers, json!({ "random_bytes": text })))
}

/// What the transit routes read from a request before the service is called: the key name in
/// the path; an encrypt body and its items (plaintext, context); a decrypt or rewrap body and
/// its items (the `vault:v<N>:` prefix, the blob, the context); a data key's or random request's
/// count. For `custodian::fuzzing`: no request path calls it. Returns how many parts were
/// readable.
#[doc(hidden)]
pub fn read_for_fuzzing(name: &str, body: &[u8]) -> usize {
    let mut readable = usize::from(key_ref(name).is_ok());
    if let Ok(b) = serde_json::from_slice::<EncryptBody>(body) {
        let items = b.batch_input.unwrap_or_else(|| vec![b.item]);
        readable += items
            .iter()
            .filter(|i| read_encrypt_item(i).is_ok())
            .count();
    }
    if let Ok(v) = body_of(body) {
        if let Ok((items, _)) = items(&v) {
            readable += items
                .iter()
                .filter(|i| ciphertext_field(i).and_then(blob_of).is_ok() && context_of(i).is_ok())
                .count();
        }
        readable += usize::from(refuse_flags(&v, CREATE_FLAGS_REFUSED).is_ok());
        readable += ["bits", "bytes"]
            .iter()
            .filter_map(|f| v.get(*f))
            .filter(|n| number(n).is_some())
            .count();
    }
    readable
}
