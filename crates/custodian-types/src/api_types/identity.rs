//! Principals, policies, explain and bearer tokens: the bodies of `/v1/principals…`,
//! `/v1/policies…` and `/v1/tokens…`. A policy document (`PUT /v1/policies/{name}`) is passed
//! through as the text the caller wrote: the server's policy parser judges it.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use utoipa::ToSchema;
use zeroize::Zeroizing;

use super::{array_of, described_ref, optional_ref, schema_fns, schema_ref, string_enum};
use crate::domain::secret::HumanDuration;
use crate::domain::{self, KeyName, PolicyRecord, PrincipalRecord};
use crate::format::EncryptionContext;

/// Principal attributes: names to values.
pub type Attributes = BTreeMap<String, String>;

/// `POST /v1/principals` body. `A` is the attribute map.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(bound = "", description = "`POST /v1/principals` body.")]
pub struct CreatePrincipalRequest<A = Attributes> {
    /// Key name rules (`invalid_principal_name` otherwise).
    #[schema(schema_with = principal_name_schema)]
    pub name: String,
    /// The principal's attributes.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = attributes_schema)]
    pub attributes: Option<A>,
    /// Names of the policies attached, in order.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = policy_names_schema)]
    pub policies: Option<Vec<String>>,
}

impl CreatePrincipalRequest {
    /// Every field, for the server's `unknown_field` check.
    pub const FIELDS: &'static [&'static str] = &["name", "attributes", "policies"];
}

/// `PATCH /v1/principals/{name}` body: each field given replaces the whole map or list; a field
/// left out stays as it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(
    bound = "",
    description = "Each field given replaces the whole map or list; a field left out stays as it is."
)]
pub struct PatchPrincipalRequest<A = Attributes> {
    /// Replaces every attribute.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = attributes_schema)]
    pub attributes: Option<A>,
    /// Replaces the attached policies.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = policy_names_schema)]
    pub policies: Option<Vec<String>>,
}

impl<A> Default for PatchPrincipalRequest<A> {
    fn default() -> Self {
        Self {
            attributes: None,
            policies: None,
        }
    }
}

impl PatchPrincipalRequest {
    /// Every field, for the server's `unknown_field` check.
    pub const FIELDS: &'static [&'static str] = &["attributes", "policies"];
}

/// A principal: a named identity with attributes and attached policies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(description = "A named identity with attributes and attached policies.")]
pub struct Principal {
    /// Unique name (key name rules).
    pub name: KeyName,
    /// Attributes for `${principal.<attr>}` conditions.
    #[schema(schema_with = attributes_schema)]
    pub attributes: Attributes,
    /// Attached policy names, evaluated in this order.
    #[schema(schema_with = policy_names_schema)]
    pub policies: Vec<KeyName>,
    /// When created.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// When last changed.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
}

impl From<&PrincipalRecord> for Principal {
    fn from(p: &PrincipalRecord) -> Self {
        Self {
            name: p.name.clone(),
            attributes: p.attributes.clone(),
            policies: p.policies.clone(),
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

/// A stored policy document and its version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(description = "A stored policy document and its version.")]
pub struct Policy {
    /// Unique name (key name rules).
    pub name: KeyName,
    /// 1 for the first write; every PUT adds one.
    #[schema(minimum = 1)]
    pub version: u32,
    /// The document, as the server's policy parser accepted it (its schema is written out in
    /// the document's base: the parser, not serde, judges it).
    #[schema(schema_with = policy_document_schema)]
    pub document: serde_json::Value,
    /// When version 1 was written.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// When this version was written.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub updated_at: OffsetDateTime,
}

impl From<&PolicyRecord> for Policy {
    fn from(p: &PolicyRecord) -> Self {
        Self {
            name: p.name.clone(),
            version: p.version,
            document: p.document.clone(),
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

/// `GET /v1/principals` response.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(bound = "")]
pub struct PrincipalList<P = Principal> {
    /// Every principal the caller may read, by name.
    #[schema(schema_with = principals_schema)]
    pub principals: Vec<P>,
}

/// `GET /v1/policies` response.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(bound = "")]
pub struct PolicyList<P = Policy> {
    /// Every policy the caller may read, by name.
    #[schema(schema_with = policies_schema)]
    pub policies: Vec<P>,
}

/// `POST /v1/policies/explain` body: an imagined request. `C` is its encryption context.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(
    bound = "",
    description = "`POST /v1/policies/explain` body: an imagined request."
)]
pub struct ExplainRequest<C = EncryptionContext> {
    /// The principal asked about (`invalid_principal_name`); one that does not exist is denied
    /// everything.
    #[schema(schema_with = explain_principal_schema)]
    pub principal: String,
    /// An action of the vocabulary (`unknown_action` otherwise).
    #[schema(example = "datakey:generate")]
    pub action: String,
    /// `<kind>/<name>`: `key/billing-eu`, `key/alias/current`, `alias/current`,
    /// `secret/team/app/db`, `policy/billing`, `principal/billing-app` (`invalid_resource`
    /// otherwise). A key is looked up, so patterns on its id match too.
    #[schema(example = "key/billing-eu")]
    pub resource: String,
    /// The encryption context of the imagined request; absent: a request without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = explain_context_schema)]
    pub context: Option<C>,
    /// Source IP address of the imagined request (`invalid_field` if not one); absent: unknown,
    /// so `source_cidr` conditions are false.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, nullable = false, example = "10.1.2.3")]
    pub source: Option<IpAddr>,
}

impl ExplainRequest {
    /// Every field, for the server's `unknown_field` check.
    pub const FIELDS: &'static [&'static str] =
        &["principal", "action", "resource", "context", "source"];
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Allowed.
    Allow,
    /// Denied.
    Deny,
}

/// The statement that decided an explained request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(description = "The statement that decided.")]
pub struct DecidedBy {
    /// The policy's name.
    #[schema(value_type = KeyName)]
    pub policy: String,
    /// Index of the statement in the document.
    pub statement: u64,
    /// The statement's sid, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub sid: Option<String>,
}

/// `POST /v1/policies/explain` response: the decision, the action and the resource as
/// evaluated (the server builds it from the policy engine's `Decision`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(
    description = "The decision on an imagined request.",
    examples(json!({
        "effect": "allow",
        "decided_by": {"policy": "billing", "statement": 0, "sid": "tenant-data-keys"},
        "action": "datakey:generate",
        "resource": "key/billing-eu"
    }))
)]
pub struct ExplainResponse {
    /// Allow or deny.
    #[schema(schema_with = effect_schema)]
    pub effect: Effect,
    /// The first matching deny, else the first matching allow (policies in attachment order,
    /// statements in document order). Absent for a default deny.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = decided_by_schema)]
    pub decided_by: Option<DecidedBy>,
    /// The action.
    pub action: String,
    /// The resource as evaluated (as written: never what a key reference resolved to).
    pub resource: String,
}

/// A token's metadata: never the token text or its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(description = "Token metadata: never the token text or its hash.")]
pub struct TokenInfo {
    /// Public id.
    #[schema(schema_with = token_id_schema)]
    pub id: String,
    /// The principal it authenticates.
    #[schema(value_type = KeyName)]
    pub principal: String,
    /// Free text.
    pub description: String,
    /// When it was minted.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// Absent for a token without a TTL.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime, nullable = false)]
    pub expires_at: Option<OffsetDateTime>,
    /// Present once revoked.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime, nullable = false)]
    pub revoked_at: Option<OffsetDateTime>,
}

impl From<&domain::TokenInfo> for TokenInfo {
    fn from(t: &domain::TokenInfo) -> Self {
        Self {
            id: t.id.clone(),
            principal: t.principal.clone(),
            description: t.description.clone(),
            created_at: t.created_at,
            expires_at: t.expires_at,
            revoked_at: t.revoked_at,
        }
    }
}

/// `POST /v1/tokens` body. `D` is the lifetime.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(bound = "", description = "`POST /v1/tokens` body.")]
pub struct CreateTokenRequest<D = HumanDuration> {
    /// An existing principal (`principal_not_found`).
    #[schema(schema_with = token_principal_schema)]
    pub principal: String,
    /// Lifetime; absent: no expiry.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = ttl_schema)]
    pub ttl: Option<D>,
    /// At most 1024 bytes.
    #[serde(default)]
    #[schema(max_length = 1024, default = "")]
    pub description: String,
}

impl CreateTokenRequest {
    /// Every field, for the server's `unknown_field` check.
    pub const FIELDS: &'static [&'static str] = &["principal", "ttl", "description"];
}

/// `POST /v1/tokens` response: the token text, shown once, and its metadata (a new token is
/// never revoked, so there is no `revoked_at`).
///
/// # Security
/// `Debug` never shows the token.
#[derive(Serialize, Deserialize, ToSchema)]
#[schema(
    description = "A new token. `token` is shown in this response only; the server stores a hash."
)]
pub struct TokenCreated {
    /// The bearer token. Keep it secret; it cannot be shown again.
    #[schema(value_type = String, pattern = "^cst_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$")]
    pub token: Zeroizing<String>,
    /// Public id.
    #[schema(schema_with = token_id_schema)]
    pub id: String,
    /// The principal it authenticates.
    #[schema(value_type = KeyName)]
    pub principal: String,
    /// Free text.
    pub description: String,
    /// When it was minted.
    #[serde(with = "time::serde::rfc3339")]
    #[schema(value_type = String, format = DateTime)]
    pub created_at: OffsetDateTime,
    /// Absent for a token without a TTL.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    #[schema(value_type = Option<String>, format = DateTime, nullable = false)]
    pub expires_at: Option<OffsetDateTime>,
}

impl TokenCreated {
    /// The answer for a token minted with the text `token` and the metadata `info`.
    pub fn new(token: Zeroizing<String>, info: &domain::TokenInfo) -> Self {
        Self {
            token,
            id: info.id.clone(),
            principal: info.principal.clone(),
            description: info.description.clone(),
            created_at: info.created_at,
            expires_at: info.expires_at,
        }
    }

    /// The metadata, without the token.
    pub fn info(&self) -> TokenInfo {
        TokenInfo {
            id: self.id.clone(),
            principal: self.principal.clone(),
            description: self.description.clone(),
            created_at: self.created_at,
            expires_at: self.expires_at,
            revoked_at: None,
        }
    }
}

impl fmt::Debug for TokenCreated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCreated")
            .field("token", &"[REDACTED]")
            .field("id", &self.id)
            .field("principal", &self.principal)
            .finish_non_exhaustive()
    }
}

/// `GET /v1/tokens` query: `?principal=`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListTokensQuery {
    /// Only this principal's tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
}

/// `GET /v1/tokens` response: metadata only, never token text.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(bound = "")]
pub struct TokenList<T = TokenInfo> {
    /// The tokens.
    #[schema(schema_with = tokens_schema)]
    pub tokens: Vec<T>,
}

schema_fns! {
    /// A principal's `name`.
    principal_name_schema => described_ref(
        "KeyName",
        "Key name rules (`invalid_principal_name` otherwise).",
    );
    /// `attributes`.
    attributes_schema => schema_ref("PrincipalAttributes");
    /// `policies`.
    policy_names_schema => schema_ref("PolicyNames");
    /// `principals`.
    principals_schema => array_of("Principal", None);
    /// `policies` of a list.
    policies_schema => array_of("Policy", None);
    /// `principal` of explain.
    explain_principal_schema => described_ref(
        "KeyName",
        "The principal asked about (`invalid_principal_name`); one that does not exist is \
         denied everything.",
    );
    /// `context` of explain.
    explain_context_schema => described_ref(
        "EncryptionContext",
        "The encryption context of the imagined request; absent: a request without one.",
    );
    /// `principal` of a token.
    token_principal_schema => described_ref(
        "KeyName",
        "An existing principal (`principal_not_found`).",
    );
    /// `ttl`.
    ttl_schema => described_ref("Duration", "Lifetime; absent: no expiry.");
    /// `tokens`.
    tokens_schema => array_of("TokenInfo", None);
    /// `effect`.
    effect_schema => string_enum(&["allow", "deny"], None, None);
    /// A token's `id`.
    token_id_schema => schema_ref("TokenId");
    /// A policy's `document`.
    policy_document_schema => schema_ref("PolicyDocument");
    /// `decided_by`.
    decided_by_schema => optional_ref(
        "DecidedBy",
        "The first matching deny, else the first matching allow (policies in attachment order, \
         statements in document order). Absent for a default deny.",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_minted_tokens() -> Result<(), serde_json::Error> {
        let minted: TokenCreated = serde_json::from_str(
            r#"{"token": "cst_0123456789abcdef_secretpart", "id": "0123456789abcdef",
                "principal": "app", "description": "", "created_at": "2024-01-01T00:00:00Z"}"#,
        )?;
        let shown = format!("{minted:?}");
        assert!(!shown.contains("secretpart"), "{shown}");
        assert!(shown.contains("0123456789abcdef"), "{shown}");
        Ok(())
    }
}
