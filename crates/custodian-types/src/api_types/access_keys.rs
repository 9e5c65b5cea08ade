//! AWS SigV4 access keys: the bodies of `/v1/access-keys…` (issue 16). An access key is a
//! credential of a principal for the AWS KMS door; its secret is shown once, when created.

use std::fmt;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use zeroize::Zeroizing;

use super::{array_of, described_ref, schema_fns};
use crate::domain::secret::HumanDuration;
use crate::domain::AccessKeyInfo;

/// `POST /v1/access-keys` body. `D` is the lifetime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(bound = "", description = "`POST /v1/access-keys` body.")]
pub struct CreateAccessKeyRequest<D = HumanDuration> {
    /// An existing principal (`principal_not_found`).
    #[schema(schema_with = access_key_principal_schema)]
    pub principal: String,
    /// The key (name, id or `alias/…`) that seals the secret; absent: `[aws] access_key_key`,
    /// else `secrets.default_key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// Lifetime; absent: no expiry.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = access_key_ttl_schema)]
    pub ttl: Option<D>,
    /// At most 1024 bytes.
    #[serde(default)]
    #[schema(max_length = 1024, default = "")]
    pub description: String,
}

impl CreateAccessKeyRequest {
    /// Every field, for the server's `unknown_field` check.
    pub const FIELDS: &'static [&'static str] = &["principal", "key", "ttl", "description"];
}

/// `POST /v1/access-keys` response: the secret access key, shown once, and the metadata (`I`,
/// the domain's [`AccessKeyInfo`] on the server; its `id` is the access key id). Its schema
/// (`AccessKeyCreated`) is in the document's base.
///
/// # Security
/// `Debug` never shows the secret.
#[derive(Serialize, Deserialize)]
pub struct AccessKeyCreated<I = AccessKeyInfo> {
    /// The secret access key.
    pub secret_access_key: Zeroizing<String>,
    /// Its metadata.
    #[serde(flatten)]
    pub info: I,
}

impl<I: fmt::Debug> fmt::Debug for AccessKeyCreated<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessKeyCreated")
            .field("secret_access_key", &"[REDACTED]")
            .field("info", &self.info)
            .finish()
    }
}

/// `GET /v1/access-keys` query: `?principal=`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListAccessKeysQuery {
    /// Only this principal's access keys.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
}

/// `GET /v1/access-keys` response: metadata only, never a secret.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(bound = "")]
pub struct AccessKeyList<T = AccessKeyInfo> {
    /// The access keys.
    #[schema(schema_with = access_keys_schema)]
    pub access_keys: Vec<T>,
}

schema_fns! {
    /// `principal` of an access key.
    access_key_principal_schema => described_ref(
        "KeyName",
        "An existing principal (`principal_not_found`).",
    );
    /// `ttl`.
    access_key_ttl_schema => described_ref("Duration", "Lifetime; absent: no expiry.");
    /// `access_keys`.
    access_keys_schema => array_of("AccessKeyInfo", None);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_secret() -> Result<(), serde_json::Error> {
        let minted: AccessKeyCreated<serde_json::Value> = serde_json::from_str(
            r#"{"secret_access_key": "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
                "id": "CKIAABCDEFGHIJKLMNOP"}"#,
        )?;
        let shown = format!("{minted:?}");
        assert!(!shown.contains("wJalrXUtnFEMI"), "{shown}");
        assert!(shown.contains("CKIAABCDEFGHIJKLMNOP"), "{shown}");
        Ok(())
    }
}
