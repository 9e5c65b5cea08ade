//! Principals, policies, explain and bearer tokens: the bodies of `/v1/principals…`,
//! `/v1/policies…` and `/v1/tokens…`. A policy document (`PUT /v1/policies/{name}`) is passed
//! through as the text the caller wrote: the server's policy parser judges it.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use zeroize::Zeroizing;

use super::{array_of, described_ref, schema_fns, schema_ref};
use crate::domain::secret::HumanDuration;
use crate::domain::{PolicyRecord, PrincipalRecord, TokenInfo};
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

/// `GET /v1/principals` response.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(bound = "")]
pub struct PrincipalList<P = PrincipalRecord> {
    /// Every principal the caller may read, by name.
    #[schema(schema_with = principals_schema)]
    pub principals: Vec<P>,
}

/// `GET /v1/policies` response.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(bound = "")]
pub struct PolicyList<P = PolicyRecord> {
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

/// `POST /v1/policies/explain` response: the decision (`D`, the policy engine's `Decision`:
/// `effect` and `decided_by`), the action and the resource as evaluated. Its schema stays in the
/// document's base, next to the engine's `DecidedBy`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExplainResponse<D> {
    /// The decision.
    #[serde(flatten)]
    pub decision: D,
    /// The action.
    pub action: String,
    /// The resource as evaluated (as written: never what a key reference resolved to).
    pub resource: String,
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

/// `POST /v1/tokens` response: the token text, shown once, and its metadata (`I`, the domain's
/// [`TokenInfo`] on the server). Its schema (`TokenCreated`) stays in the document's base,
/// which spells out the flattened metadata.
///
/// # Security
/// `Debug` never shows the token.
#[derive(Serialize, Deserialize)]
pub struct TokenCreated<I = TokenInfo> {
    /// The bearer token.
    pub token: Zeroizing<String>,
    /// Its metadata.
    #[serde(flatten)]
    pub info: I,
}

impl<I: fmt::Debug> fmt::Debug for TokenCreated<I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCreated")
            .field("token", &"[REDACTED]")
            .field("info", &self.info)
            .finish()
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_minted_tokens() -> Result<(), serde_json::Error> {
        let minted: TokenCreated<serde_json::Value> = serde_json::from_str(
            r#"{"token": "cst_0123456789abcdef_secretpart", "id": "0123456789abcdef"}"#,
        )?;
        let shown = format!("{minted:?}");
        assert!(!shown.contains("secretpart"), "{shown}");
        assert!(shown.contains("0123456789abcdef"), "{shown}");
        Ok(())
    }
}
