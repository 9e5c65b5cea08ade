//! The AWS KMS operations: each request shape read, the same service operation the native API
//! calls, and the answer in AWS's shape. docs/compat.md has the table of operations and actions.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use zeroize::Zeroizing;

use super::AwsError;
use crate::config::AwsConfig;
use crate::domain::secret::HumanDuration;
use crate::domain::{Key, KeyId, KeyName, KeyRef, KeyState};
use crate::format::EncryptionContext;
use crate::secret::{SecretBytes, SecretText};
use crate::service::lifecycle::KeyPatch;
use crate::service::random::EntropySource;
use crate::service::{Authorized, DataKeyLen, KeyPlacement, PlaintextCopy};

type Result<T> = std::result::Result<T, AwsError>;

/// The only encryption algorithm of a Custodian key.
const ALGORITHM: &str = "SYMMETRIC_DEFAULT";
/// AWS's bound on `GenerateRandom`'s `NumberOfBytes`.
const MAX_RANDOM: u64 = 1024;
/// AWS's bounds on `CiphertextBlob`.
const MAX_CIPHERTEXT: usize = 6144;

/// One AWS KMS operation's request, read from its JSON body and nothing else (no service call).
enum Operation {
    Encrypt(EncryptRequest),
    Decrypt(DecryptRequest),
    DataKey(DataKeyRequest, PlaintextCopy),
    ReEncrypt(ReEncryptRequest),
    CreateKey(CreateKeyRequest),
    DescribeKey(KeyIdRequest),
    ListKeys(ListRequest),
    CreateAlias(CreateAliasRequest),
    ListAliases(ListAliasesRequest),
    EnableKey(KeyIdRequest),
    DisableKey(KeyIdRequest),
    ScheduleDeletion(ScheduleDeletionRequest),
    CancelDeletion(KeyIdRequest),
    EnableRotation(EnableRotationRequest),
    DisableRotation(KeyIdRequest),
    RotationStatus(KeyIdRequest),
    Rotate(KeyIdRequest),
    Random(RandomRequest),
}

/// Reads operation `op`'s request from `body`.
fn read(op: &str, body: &[u8]) -> Result<Operation> {
    use Operation as O;
    Ok(match op {
        "Encrypt" => O::Encrypt(parse(body)?),
        "Decrypt" => O::Decrypt(parse(body)?),
        "GenerateDataKey" => O::DataKey(parse(body)?, PlaintextCopy::Include),
        "GenerateDataKeyWithoutPlaintext" => O::DataKey(parse(body)?, PlaintextCopy::Omit),
        "ReEncrypt" => O::ReEncrypt(parse(body)?),
        "CreateKey" => O::CreateKey(parse(body)?),
        "DescribeKey" => O::DescribeKey(parse(body)?),
        "ListKeys" => O::ListKeys(parse(body)?),
        "CreateAlias" => O::CreateAlias(parse(body)?),
        "ListAliases" => O::ListAliases(parse(body)?),
        "EnableKey" => O::EnableKey(parse(body)?),
        "DisableKey" => O::DisableKey(parse(body)?),
        "ScheduleKeyDeletion" => O::ScheduleDeletion(parse(body)?),
        "CancelKeyDeletion" => O::CancelDeletion(parse(body)?),
        "EnableKeyRotation" => O::EnableRotation(parse(body)?),
        "DisableKeyRotation" => O::DisableRotation(parse(body)?),
        "GetKeyRotationStatus" => O::RotationStatus(parse(body)?),
        "RotateKeyOnDemand" => O::Rotate(parse(body)?),
        "GenerateRandom" => O::Random(parse(body)?),
        other => {
            return Err(AwsError::rejected(
                "UnknownOperationException",
                "route_not_found",
                format!("operation {other:?} is not supported by Custodian (docs/compat.md)"),
            ))
        }
    })
}

/// Runs operation `op` for `p` on the JSON `body`.
pub(super) async fn dispatch(
    cfg: &AwsConfig,
    p: &Authorized,
    op: &str,
    body: &[u8],
) -> Result<Value> {
    let d = Door { cfg, p };
    use Operation as O;
    match read(op, body)? {
        O::Encrypt(r) => d.encrypt(r).await,
        O::Decrypt(r) => d.decrypt(r).await,
        O::DataKey(r, copy) => d.data_key(r, copy).await,
        O::ReEncrypt(r) => d.reencrypt(r).await,
        O::CreateKey(r) => d.create_key(r).await,
        O::DescribeKey(r) => d.describe_key(r).await,
        O::ListKeys(r) => d.list_keys(r).await,
        O::CreateAlias(r) => d.create_alias(r).await,
        O::ListAliases(r) => d.list_aliases(r).await,
        O::EnableKey(r) => d.enable_key(r).await,
        O::DisableKey(r) => d.disable_key(r).await,
        O::ScheduleDeletion(r) => d.schedule_deletion(r).await,
        O::CancelDeletion(r) => d.cancel_deletion(r).await,
        O::EnableRotation(r) => d.enable_rotation(r).await,
        O::DisableRotation(r) => d.disable_rotation(r).await,
        O::RotationStatus(r) => d.rotation_status(r).await,
        O::Rotate(r) => d.rotate(r).await,
        O::Random(r) => d.random(r).await,
    }
}

/// The operations [`read`] knows, for the fuzzer to choose from (an unknown name is one more
/// case it tries).
#[doc(hidden)]
pub const OPERATIONS: &[&str] = &[
    "Encrypt",
    "Decrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "ReEncrypt",
    "CreateKey",
    "DescribeKey",
    "ListKeys",
    "CreateAlias",
    "ListAliases",
    "EnableKey",
    "DisableKey",
    "ScheduleKeyDeletion",
    "CancelKeyDeletion",
    "EnableKeyRotation",
    "DisableKeyRotation",
    "GetKeyRotationStatus",
    "RotateKeyOnDemand",
    "GenerateRandom",
];

/// What the door reads from a request before the service is called: the body for `op`, then
/// every key reference, ciphertext and algorithm name in it. For `custodian::fuzzing`; no
/// request path calls it. The result says only whether the request was readable.
#[doc(hidden)]
pub fn read_for_fuzzing(cfg: &AwsConfig, op: &str, body: &[u8]) -> bool {
    use Operation as O;
    let key = |k: &str| named_in(cfg, k).is_ok();
    let Ok(operation) = read(op, body) else {
        return false;
    };
    match operation {
        O::Encrypt(r) => {
            check_algorithm(r.encryption_algorithm.as_ref()).is_ok()
                && key(&r.key_id)
                && STANDARD.decode(r.plaintext.expose_secret()).is_ok()
        }
        O::Decrypt(r) => {
            check_algorithm(r.encryption_algorithm.as_ref()).is_ok()
                && ciphertext_of(&r.ciphertext_blob).is_ok()
                && r.key_id.as_deref().is_none_or(key)
        }
        O::DataKey(r, _) => key(&r.key_id),
        O::ReEncrypt(r) => {
            ciphertext_of(&r.ciphertext_blob).is_ok()
                && r.source_key_id.as_deref().is_none_or(key)
                && key(&r.destination_key_id)
        }
        O::CreateAlias(r) => {
            r.alias_name
                .strip_prefix("alias/")
                .is_some_and(|n| name_of(n).is_ok())
                && key(&r.target_key_id)
        }
        O::ListAliases(r) => r.key_id.as_deref().is_none_or(key),
        O::ScheduleDeletion(ScheduleDeletionRequest { key_id, .. })
        | O::EnableRotation(EnableRotationRequest { key_id, .. })
        | O::DescribeKey(KeyIdRequest { key_id })
        | O::EnableKey(KeyIdRequest { key_id })
        | O::DisableKey(KeyIdRequest { key_id })
        | O::CancelDeletion(KeyIdRequest { key_id })
        | O::DisableRotation(KeyIdRequest { key_id })
        | O::RotationStatus(KeyIdRequest { key_id })
        | O::Rotate(KeyIdRequest { key_id }) => key(&key_id),
        O::CreateKey(_) | O::ListKeys(_) | O::Random(_) => true,
    }
}

/// A request body; an empty one is `{}`.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| {
        // serde names the field and the expected type, never a string value's content.
        AwsError::rejected(
            "SerializationException",
            "malformed_json",
            format!("the request body does not match the operation's shape: {e}"),
        )
    })
}

fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

fn ciphertext_of(text: &str) -> Result<Vec<u8>> {
    let blob = STANDARD
        .decode(text)
        .map_err(|_| AwsError::validation("CiphertextBlob is not valid base64"))?;
    if blob.is_empty() || blob.len() > MAX_CIPHERTEXT {
        return Err(AwsError::validation(format!(
            "CiphertextBlob must be 1 to {MAX_CIPHERTEXT} bytes"
        )));
    }
    Ok(blob)
}

fn check_algorithm(a: Option<&String>) -> Result<()> {
    match a.map(String::as_str) {
        None | Some(ALGORITHM) => Ok(()),
        Some(other) => Err(AwsError::rejected(
            "InvalidKeyUsageException",
            "invalid_field",
            format!(
                "EncryptionAlgorithm {other:?} is not supported: Custodian keys are {ALGORITHM}"
            ),
        )),
    }
}

fn name_of(s: &str) -> Result<KeyName> {
    KeyName::try_from(s.to_owned()).map_err(|e| AwsError::validation(format!("{s:?}: {e}")))
}

fn not_found(what: &str) -> AwsError {
    AwsError::rejected(
        "NotFoundException",
        "key_not_found",
        format!("{what} is not found"),
    )
}

fn epoch(t: time::OffsetDateTime) -> Value {
    json!(t.unix_timestamp())
}

fn key_state(s: KeyState) -> &'static str {
    match s {
        KeyState::Enabled => "Enabled",
        KeyState::Disabled => "Disabled",
        KeyState::PendingDeletion => "PendingDeletion",
        KeyState::Destroyed => "Unavailable",
    }
}

/// The four shapes of `KeyId`, and a Custodian key name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Named {
    Id(KeyId),
    Other(KeyRef),
}

/// Reads `KeyId`: an id, a key ARN, `alias/<name>`, an alias ARN (of this partition,
/// region and account: another is not found), or a Custodian key name.
fn named_in(cfg: &AwsConfig, key_id: &str) -> Result<Named> {
    if let Some(rest) = key_id.strip_prefix("arn:") {
        let prefix = format!("{}:kms:{}:{}:", cfg.partition, cfg.region, cfg.account);
        let resource = rest
            .strip_prefix(&prefix)
            .ok_or_else(|| not_found(&format!("Key '{key_id}'")))?;
        if let Some(id) = resource.strip_prefix("key/") {
            return id
                .parse::<KeyId>()
                .map(Named::Id)
                .map_err(|_| not_found(&format!("Key '{key_id}'")));
        }
        if let Some(alias) = resource.strip_prefix("alias/") {
            return Ok(Named::Other(KeyRef::Alias(name_of(alias)?)));
        }
        return Err(not_found(&format!("Key '{key_id}'")));
    }
    match key_id.parse::<KeyRef>() {
        Ok(KeyRef::Id(id)) => Ok(Named::Id(id)),
        Ok(r) => Ok(Named::Other(r)),
        Err(_) => Err(not_found(&format!("Key '{key_id}'"))),
    }
}

struct Door<'a> {
    cfg: &'a AwsConfig,
    p: &'a Authorized,
}

impl Door<'_> {
    fn arn(&self, id: &KeyId) -> String {
        self.cfg.key_arn(&id.to_string())
    }

    fn named(&self, key_id: &str) -> Result<Named> {
        named_in(self.cfg, key_id)
    }

    fn key_ref(&self, key_id: &str) -> Result<KeyRef> {
        Ok(match self.named(key_id)? {
            Named::Id(id) => KeyRef::Id(id),
            Named::Other(r) => r,
        })
    }

    fn metadata(&self, key: &Key) -> Value {
        let mut m = json!({
            "AWSAccountId": self.cfg.account,
            "KeyId": key.id.to_string(),
            "Arn": self.arn(&key.id),
            "CreationDate": epoch(key.created_at),
            "Enabled": key.state == KeyState::Enabled,
            "Description": key.description,
            "KeyUsage": "ENCRYPT_DECRYPT",
            "KeyState": key_state(key.state),
            "Origin": "AWS_KMS",
            "KeyManager": "CUSTOMER",
            "CustomerMasterKeySpec": ALGORITHM,
            "KeySpec": ALGORITHM,
            "EncryptionAlgorithms": [ALGORITHM],
            "MultiRegion": false,
        });
        if let (Some(date), Some(obj)) = (key.deletion_date, m.as_object_mut()) {
            obj.insert("DeletionDate".to_owned(), epoch(date));
        }
        m
    }

    async fn encrypt(&self, r: EncryptRequest) -> Result<Value> {
        check_algorithm(r.encryption_algorithm.as_ref())?;
        let key = self.key_ref(&r.key_id)?;
        let plaintext = SecretBytes::new(
            STANDARD
                .decode(r.plaintext.expose_secret())
                .map(Zeroizing::new)
                .map_err(|_| AwsError::validation("Plaintext is not valid base64"))?,
        );
        let context = r.encryption_context.unwrap_or_default();
        let sealed = self.p.encrypt(&key, plaintext, &context).await?;
        Ok(json!({
            "CiphertextBlob": b64(&sealed.ciphertext),
            "KeyId": self.arn(&sealed.key_id),
            "EncryptionAlgorithm": ALGORITHM,
        }))
    }

    async fn decrypt(&self, r: DecryptRequest) -> Result<Value> {
        check_algorithm(r.encryption_algorithm.as_ref())?;
        let blob = ciphertext_of(&r.ciphertext_blob)?;
        let named = r.key_id.as_deref().map(|k| self.key_ref(k)).transpose()?;
        let context = r.encryption_context.unwrap_or_default();
        let opened = self.p.decrypt(&blob, &context, named.as_ref()).await?;
        Ok(json!({
            "KeyId": self.arn(&opened.key_id),
            "Plaintext": b64(opened.plaintext.expose_secret()),
            "EncryptionAlgorithm": ALGORITHM,
        }))
    }

    async fn data_key(&self, r: DataKeyRequest, copy: PlaintextCopy) -> Result<Value> {
        let len = match (r.number_of_bytes, r.key_spec.as_deref()) {
            (Some(_), Some(_)) => {
                return Err(AwsError::validation(
                    "Give either NumberOfBytes or KeySpec, not both",
                ))
            }
            (None, None) => {
                return Err(AwsError::validation(
                    "Please specify either number of bytes or key spec.",
                ))
            }
            (None, Some("AES_256")) => DataKeyLen::Bytes32,
            (None, Some("AES_128")) => DataKeyLen::Bytes16,
            (None, Some(other)) => {
                return Err(AwsError::validation(format!(
                    "KeySpec {other:?} is not supported: AES_128 or AES_256"
                )))
            }
            (Some(n), None) => DataKeyLen::from_bytes(n).ok_or_else(|| {
                AwsError::validation(format!(
                    "NumberOfBytes {n} is not supported: Custodian data keys are AES keys of \
                     16, 24 or 32 bytes"
                ))
            })?,
        };
        let key = self.key_ref(&r.key_id)?;
        let context = r.encryption_context.unwrap_or_default();
        let dk = self.p.generate_data_key(&key, len, &context, copy).await?;
        let mut out = json!({
            "CiphertextBlob": b64(&dk.sealed.ciphertext),
            "KeyId": self.arn(&dk.sealed.key_id),
        });
        if let (Some(pt), Some(obj)) = (dk.plaintext, out.as_object_mut()) {
            obj.insert(
                "Plaintext".to_owned(),
                Value::String(b64(pt.expose_secret())),
            );
        }
        Ok(out)
    }

    /// `GenerateRandom`: bytes from the HSM's generator (AWS's bounds: 1 to 1024).
    async fn random(&self, r: RandomRequest) -> Result<Value> {
        if r.custom_key_store_id.is_some() {
            return Err(AwsError::validation(
                "CustomKeyStoreId is not supported: Custodian's random bytes come from its HSM",
            ));
        }
        if r.recipient.is_some() {
            return Err(AwsError::validation(
                "Recipient (Nitro Enclaves attestation) is not supported",
            ));
        }
        let n = match r.number_of_bytes {
            Some(n @ 1..=MAX_RANDOM) => n as usize,
            Some(n) => {
                return Err(AwsError::validation(format!(
                    "NumberOfBytes {n} is out of range: 1 to {MAX_RANDOM}"
                )))
            }
            None => return Err(AwsError::validation("NumberOfBytes is required")),
        };
        let bytes = self.p.random(n, EntropySource::Device).await?;
        Ok(json!({ "Plaintext": b64(bytes.expose_secret()) }))
    }

    async fn reencrypt(&self, r: ReEncryptRequest) -> Result<Value> {
        check_algorithm(r.source_encryption_algorithm.as_ref())?;
        check_algorithm(r.destination_encryption_algorithm.as_ref())?;
        let blob = ciphertext_of(&r.ciphertext_blob)?;
        let source_named = r
            .source_key_id
            .as_deref()
            .map(|k| self.key_ref(k))
            .transpose()?;
        let destination = self.key_ref(&r.destination_key_id)?;
        let source_context = r.source_encryption_context.unwrap_or_default();
        // AWS binds the new ciphertext to DestinationEncryptionContext alone: absent, none.
        let destination_context = r.destination_encryption_context.unwrap_or_default();
        let re = self
            .p
            .reencrypt(
                &blob,
                &source_context,
                source_named.as_ref(),
                Some(&destination),
                Some(&destination_context),
            )
            .await?;
        Ok(json!({
            "CiphertextBlob": b64(&re.sealed.ciphertext),
            "SourceKeyId": self.arn(&re.source_key_id),
            "KeyId": self.arn(&re.sealed.key_id),
            "SourceEncryptionAlgorithm": ALGORITHM,
            "DestinationEncryptionAlgorithm": ALGORITHM,
        }))
    }

    async fn create_key(&self, r: CreateKeyRequest) -> Result<Value> {
        for (field, value, allowed) in [
            ("KeyUsage", r.key_usage.as_deref(), "ENCRYPT_DECRYPT"),
            ("KeySpec", r.key_spec.as_deref(), ALGORITHM),
            (
                "CustomerMasterKeySpec",
                r.customer_master_key_spec.as_deref(),
                ALGORITHM,
            ),
            ("Origin", r.origin.as_deref(), "AWS_KMS"),
        ] {
            if let Some(v) = value.filter(|v| *v != allowed) {
                return Err(AwsError::rejected(
                    "UnsupportedOperationException",
                    "invalid_field",
                    format!("{field} {v:?} is not supported: Custodian keys are {allowed}"),
                ));
            }
        }
        if r.policy.is_some() {
            return Err(AwsError::rejected(
                "UnsupportedOperationException",
                "invalid_field",
                "key policies are not supported: Custodian's own policies decide (docs/policy.md)",
            ));
        }
        if r.multi_region == Some(true) {
            return Err(AwsError::rejected(
                "UnsupportedOperationException",
                "invalid_field",
                "multi-Region keys are not supported",
            ));
        }
        let description = r.description.unwrap_or_default();
        if description.len() > 8192 {
            return Err(AwsError::validation(
                "Description is longer than 8192 characters",
            ));
        }
        // AWS keys have no name; Custodian's do: a fresh one, shown as the key's name in the
        // native API.
        let name = name_of(&format!(
            "aws-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..16]
        ))?;
        let placement = KeyPlacement::default_for(crate::domain::BackendKind::Pkcs11);
        let key = self.p.create_key(name, description, placement).await?;
        Ok(json!({ "KeyMetadata": self.metadata(&key) }))
    }

    async fn describe_key(&self, r: KeyIdRequest) -> Result<Value> {
        let key = self.p.key(&self.key_ref(&r.key_id)?).await?;
        Ok(json!({ "KeyMetadata": self.metadata(&key) }))
    }

    async fn list_keys(&self, r: ListRequest) -> Result<Value> {
        let limit = r.limit.unwrap_or(100);
        if !(1..=1000).contains(&limit) {
            return Err(AwsError::validation("Limit must be 1 to 1000"));
        }
        let after = r.marker.as_deref().map(name_of).transpose()?;
        let page = self.p.list_keys(after, limit).await?;
        let keys: Vec<Value> = page
            .keys
            .iter()
            .map(|k| json!({ "KeyId": k.id.to_string(), "KeyArn": self.arn(&k.id) }))
            .collect();
        let mut out = json!({ "Keys": keys, "Truncated": page.next.is_some() });
        if let (Some(next), Some(obj)) = (page.next, out.as_object_mut()) {
            obj.insert("NextMarker".to_owned(), Value::String(next.to_string()));
        }
        Ok(out)
    }

    async fn create_alias(&self, r: CreateAliasRequest) -> Result<Value> {
        let name = r
            .alias_name
            .strip_prefix("alias/")
            .ok_or_else(|| AwsError::validation("AliasName must begin with alias/"))?;
        if name.starts_with("aws/") {
            return Err(AwsError::validation(
                "alias/aws/ is reserved for AWS managed keys",
            ));
        }
        let target = self.key_ref(&r.target_key_id)?;
        self.p.create_alias(name_of(name)?, &target).await?;
        Ok(json!({}))
    }

    async fn list_aliases(&self, r: ListAliasesRequest) -> Result<Value> {
        let only = match r.key_id.as_deref() {
            None => None,
            Some(k) => Some(match self.named(k)? {
                Named::Id(id) => id,
                Named::Other(r) => self.p.key(&r).await?.id,
            }),
        };
        let aliases: Vec<Value> = self
            .p
            .aliases()
            .await?
            .iter()
            .filter(|a| only.is_none_or(|id| a.key_id == id))
            .map(|a| {
                json!({
                    "AliasName": format!("alias/{}", a.name),
                    "AliasArn": self.cfg.alias_arn(a.name.as_str()),
                    "TargetKeyId": a.key_id.to_string(),
                    "CreationDate": epoch(a.created_at),
                    "LastUpdatedDate": epoch(a.updated_at),
                })
            })
            .collect();
        Ok(json!({ "Aliases": aliases, "Truncated": false }))
    }

    async fn enable_key(&self, r: KeyIdRequest) -> Result<Value> {
        self.p.enable_key(&self.key_ref(&r.key_id)?).await?;
        Ok(json!({}))
    }

    async fn disable_key(&self, r: KeyIdRequest) -> Result<Value> {
        self.p.disable_key(&self.key_ref(&r.key_id)?).await?;
        Ok(json!({}))
    }

    async fn schedule_deletion(&self, r: ScheduleDeletionRequest) -> Result<Value> {
        if let Some(days) = r.pending_window_in_days {
            if !(7..=30).contains(&days) {
                return Err(AwsError::validation("PendingWindowInDays must be 7 to 30"));
            }
        }
        let key = self
            .p
            .schedule_key_deletion(&self.key_ref(&r.key_id)?, r.pending_window_in_days)
            .await?;
        let mut out = json!({
            "KeyId": self.arn(&key.id),
            "KeyState": key_state(key.state),
        });
        if let (Some(date), Some(obj)) = (key.deletion_date, out.as_object_mut()) {
            obj.insert("DeletionDate".to_owned(), epoch(date));
            let days = (date - key.updated_at).whole_days().max(0);
            obj.insert("PendingWindowInDays".to_owned(), json!(days));
        }
        Ok(out)
    }

    async fn cancel_deletion(&self, r: KeyIdRequest) -> Result<Value> {
        let key = self
            .p
            .cancel_key_deletion(&self.key_ref(&r.key_id)?)
            .await?;
        Ok(json!({ "KeyId": self.arn(&key.id) }))
    }

    async fn enable_rotation(&self, r: EnableRotationRequest) -> Result<Value> {
        let days = r.rotation_period_in_days.unwrap_or(365);
        if !(90..=2560).contains(&days) {
            return Err(AwsError::validation(
                "RotationPeriodInDays must be 90 to 2560",
            ));
        }
        let period = HumanDuration(std::time::Duration::from_secs(u64::from(days) * 86_400));
        self.p
            .update_key(
                &self.key_ref(&r.key_id)?,
                KeyPatch {
                    rotation_period: Some(Some(period)),
                    ..KeyPatch::default()
                },
            )
            .await?;
        Ok(json!({}))
    }

    async fn disable_rotation(&self, r: KeyIdRequest) -> Result<Value> {
        self.p
            .update_key(
                &self.key_ref(&r.key_id)?,
                KeyPatch {
                    rotation_period: Some(None),
                    ..KeyPatch::default()
                },
            )
            .await?;
        Ok(json!({}))
    }

    async fn rotation_status(&self, r: KeyIdRequest) -> Result<Value> {
        let key = self.p.key(&self.key_ref(&r.key_id)?).await?;
        let mut out = Map::new();
        out.insert(
            "KeyRotationEnabled".to_owned(),
            json!(key.rotation_period.is_some()),
        );
        out.insert("KeyId".to_owned(), json!(self.arn(&key.id)));
        if let Some(period) = key.rotation_period {
            out.insert(
                "RotationPeriodInDays".to_owned(),
                json!(period.0.as_secs() / 86_400),
            );
        }
        if let Some(next) = key.next_rotation_at {
            out.insert("NextRotationDate".to_owned(), epoch(next));
        }
        Ok(Value::Object(out))
    }

    async fn rotate(&self, r: KeyIdRequest) -> Result<Value> {
        let key = self.p.rotate_key(&self.key_ref(&r.key_id)?).await?;
        Ok(json!({ "KeyId": self.arn(&key.id) }))
    }
}

// --- request shapes (fields AWS defines that Custodian does not use, such as `GrantTokens`
// and `DryRun`, are accepted and ignored: serde skips unknown fields) ---

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EncryptRequest {
    key_id: String,
    plaintext: SecretText,
    encryption_context: Option<EncryptionContext>,
    encryption_algorithm: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DecryptRequest {
    ciphertext_blob: String,
    encryption_context: Option<EncryptionContext>,
    key_id: Option<String>,
    encryption_algorithm: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DataKeyRequest {
    key_id: String,
    number_of_bytes: Option<u64>,
    key_spec: Option<String>,
    encryption_context: Option<EncryptionContext>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct RandomRequest {
    number_of_bytes: Option<u64>,
    custom_key_store_id: Option<String>,
    recipient: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ReEncryptRequest {
    ciphertext_blob: String,
    source_encryption_context: Option<EncryptionContext>,
    source_key_id: Option<String>,
    destination_key_id: String,
    destination_encryption_context: Option<EncryptionContext>,
    source_encryption_algorithm: Option<String>,
    destination_encryption_algorithm: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateKeyRequest {
    description: Option<String>,
    key_usage: Option<String>,
    key_spec: Option<String>,
    customer_master_key_spec: Option<String>,
    origin: Option<String>,
    policy: Option<String>,
    multi_region: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KeyIdRequest {
    key_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListRequest {
    limit: Option<u32>,
    marker: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListAliasesRequest {
    key_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateAliasRequest {
    alias_name: String,
    target_key_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ScheduleDeletionRequest {
    key_id: String,
    pending_window_in_days: Option<u32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EnableRotationRequest {
    key_id: String,
    rotation_period_in_days: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> AwsConfig {
        AwsConfig::default()
    }

    #[test]
    fn key_ids_in_every_shape() {
        let cfg = cfg();
        let d = DoorNames { cfg: &cfg };
        let id = KeyId::generate();
        let arn = cfg.key_arn(&id.to_string());
        assert_eq!(d.named(&id.to_string()).ok(), Some(Named::Id(id)));
        assert_eq!(d.named(&arn).ok(), Some(Named::Id(id)));
        let alias = Named::Other(KeyRef::Alias(KeyName::try_from("app".to_owned()).unwrap()));
        assert_eq!(d.named("alias/app").ok(), Some(alias.clone()));
        assert_eq!(d.named(&cfg.alias_arn("app")).ok(), Some(alias));
        // Another account, region or partition is not found; so is a malformed ARN.
        for other in [
            arn.replace("000000000000", "111111111111"),
            arn.replace("us-east-1", "eu-west-1"),
            arn.replace("arn:aws:", "arn:aws-cn:"),
            arn.replace("key/", "kee/"),
            "arn:aws:kms:us-east-1:000000000000:key/not-an-id".to_owned(),
        ] {
            assert!(d.named(&other).is_err(), "{other}");
        }
    }

    /// [`Door::named`] without a principal (it needs none).
    struct DoorNames<'a> {
        cfg: &'a AwsConfig,
    }

    impl DoorNames<'_> {
        fn named(&self, key_id: &str) -> Result<Named> {
            named_in(self.cfg, key_id)
        }
    }
}
