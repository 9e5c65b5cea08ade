//! The error body every failed request answers with: `{"error": {"code", "message",
//! "request_id", "current_version"?}}`.

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::ToSchema;

/// Every stable error code the native API answers with (the `code` enum of the document's
/// `Error` schema; `docs/api.md` explains each).
///
/// Kept complete by tests, not by hand: every code of the service's table
/// (`ServiceError::classify`, unit test `every_service_code_is_published` in
/// `service::error`) and every code a front door answers with itself (`ApiError::client` and
/// `bad_request` calls under `src/api/`, `tests/it/openapi.rs`) must be listed here.
pub const CODES: &[&str] = &[
    "missing_token",
    "client_certificate_refused",
    "invalid_token",
    "token_expired",
    "forbidden",
    "key_not_found",
    "key_name_taken",
    "key_disabled",
    "conflict",
    "invalid_key_name",
    "plaintext_too_large",
    "plaintext_empty",
    "malformed_ciphertext",
    "unsupported_ciphertext_version",
    "unsupported_ciphertext_algorithm",
    "ciphertext_key_not_found",
    "wrong_key",
    "key_on_other_node",
    "decryption_failed",
    "malformed_json",
    "invalid_request",
    "unknown_field",
    "invalid_field",
    "invalid_context",
    "invalid_base64",
    "invalid_bytes",
    "body_too_large",
    "unsupported_media_type",
    "invalid_query",
    "invalid_limit",
    "route_not_found",
    "method_not_allowed",
    "request_timeout",
    "device_unavailable",
    "device_busy",
    "store_unavailable",
    "storage_full",
    "key_material_missing",
    "default_key_missing",
    "internal_error",
    "invalid_secret_path",
    "secret_not_found",
    "secret_version_not_found",
    "secret_version_deleted",
    "secret_version_destroyed",
    "secret_version_expired",
    "value_too_large",
    "cas_mismatch",
    "write_conflict",
    "key_required",
    "secret_not_generated",
    "invalid_metadata",
    "secret_integrity_failed",
    "key_pending_deletion",
    "key_destroyed",
    "invalid_key_state",
    "key_version_not_found",
    "key_version_disabled",
    "key_version_destroyed",
    "key_version_below_minimum",
    "primary_version",
    "key_version_in_use",
    "rotation_conflict",
    "invalid_pending_days",
    "wrap_limit_reached",
    "alias_not_found",
    "alias_exists",
    "invalid_alias_name",
    "job_not_found",
    "token_revoked",
    "incomplete_signature",
    "invalid_access_key",
    "signature_mismatch",
    "signature_expired",
    "access_key_expired",
    "access_key_revoked",
    "access_key_not_found",
    "db_connection_not_found",
    "db_connection_exists",
    "db_connection_in_use",
    "invalid_db_connection",
    "db_role_not_found",
    "db_role_exists",
    "db_role_in_use",
    "invalid_db_role",
    "db_role_wrong_kind",
    "db_lease_not_found",
    "db_lease_ended",
    "lease_max_ttl_exceeded",
    "db_password_version_not_found",
    "database_unavailable",
    "database_login_failed",
    "database_privileges_insufficient",
    "database_role_missing",
    "database_statement_failed",
    "too_many_auth_failures",
    "too_many_unauthenticated_requests",
    "invalid_policy",
    "policy_not_found",
    "invalid_policy_name",
    "principal_not_found",
    "principal_exists",
    "invalid_principal_name",
    "token_not_found",
    "unknown_action",
    "invalid_resource",
    "backend_not_configured",
    "key_blob_rejected",
    "unsupported_by_device",
    "concurrent_change",
    "audit_unavailable",
    "audit_chain_broken",
    "audit_archived",
    "not_a_checkpoint",
    "export_mismatch",
    "invalid_audit_query",
];

/// An error response body.
///
/// The server sends no other members (the document says `additionalProperties: false`, set by
/// the generator); the client ignores any it finds, as it always did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(as = Error, description = "The body of every error response.", example = json!({"error": {
    "code": "key_not_found",
    "message": "key nokey not found",
    "request_id": "b14f1b04-ba7d-4398-8251-85dfee9f0bc3"
}}))]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// The `error` member of an [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[schema(description = "The `error` member of an error response.")]
pub struct ErrorDetail {
    /// Stable error code.
    #[schema(schema_with = code_schema)]
    pub code: String,
    /// Human-readable; opaque for 5xx.
    pub message: String,
    /// Equals the x-request-id response header.
    ///
    /// Always sent; a client tolerates its absence (an answer from something that is not
    /// Custodian).
    #[serde(default)]
    #[schema(required = true, schema_with = request_id_schema)]
    pub request_id: String,
    /// Only with `cas_mismatch`: the secret's current version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, nullable = false)]
    pub current_version: Option<u64>,
}

/// `code`: a string, one of [`CODES`].
fn code_schema() -> RefOr<Schema> {
    RefOr::T(Schema::Object(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(CODES.iter().copied()))
            .description(Some("Stable error code."))
            .build(),
    ))
}

/// `request_id`: a string.
fn request_id_schema() -> RefOr<Schema> {
    RefOr::T(Schema::Object(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some("Equals the x-request-id response header."))
            .build(),
    ))
}
