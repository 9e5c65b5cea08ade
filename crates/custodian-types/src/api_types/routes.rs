//! The native API's operations: one entry per documented method and path, the single list that
//! both the router (`api::router` serves each operation through its entry, and nothing else)
//! and the generator of `docs/openapi.json` ([`super::openapi`]) read.
//!
//! An entry holds what the document says of the operation: its id, summary, description, tags,
//! parameters, request body (with examples), answers and the error answers it may give, and
//! whether it needs a credential. Schemas of the wire types are named by their Rust type
//! ([`Schema::of`]), so a renamed or removed type fails to compile here; the schemas still
//! written by hand in `openapi_base.json` are named by their component name ([`Schema::Named`]),
//! and a test checks that every reference of the document resolves.
//!
//! Data only: no axum, no handler, so the client side can use these types too.

use std::borrow::Cow;

use utoipa::ToSchema;

use super::access_keys::{AccessKeyList, CreateAccessKeyRequest};
use super::audit::{AuditArchive, AuditArchiveRequest, AuditEventList, AuditOutcome};
use super::crypto::{
    DataKeyRequest, DataKeyResponse, DecryptRequest, DecryptResponse, EncryptRequest,
    EncryptResponse, ReencryptRequest, ReencryptResponse,
};
use super::database::{
    CreateDbConnectionRequest, DbConnection, DbConnectionList, DbCreds, DbCredsRequest, DbLease,
    DbRole, DbRoleList, PutDbRoleRequest, RenewLeaseRequest, RotatedRole, StaticCreds,
};
use super::health::{Live, Ready};
use super::identity::{
    CreatePrincipalRequest, CreateTokenRequest, ExplainRequest, ExplainResponse,
    PatchPrincipalRequest, Policy, PolicyList, Principal, PrincipalList, TokenCreated, TokenList,
};
use super::keys::{CreateKeyRequest, Key, KeyList};
use super::lifecycle::{
    Alias, AliasList, CreateAliasRequest, Job, JobEventList, JobList, KeyVersionList,
    PatchKeyRequest, RepointAliasRequest, ScheduleDeletionRequest,
};
use super::scalars::{SecretVersionNumber, TokenId};
use super::secrets::{
    DestroySecretRequest, PutSecretMetadataRequest, PutSecretRequest, SecretChanged, SecretList,
    SecretRecord, SecretValue, SecretVersionsRequest, SecretWritten,
};
use crate::domain::job::JobState;
use crate::domain::secret::SecretPath;
use crate::domain::{KeyName, KeyVersion};

/// The HTTP method of an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// `GET`.
    Get,
    /// `POST`.
    Post,
    /// `PUT`.
    Put,
    /// `PATCH`.
    Patch,
    /// `DELETE`.
    Delete,
}

impl Method {
    /// The method as an OpenAPI path item names it (lower case).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "get",
            Self::Post => "post",
            Self::Put => "put",
            Self::Patch => "patch",
            Self::Delete => "delete",
        }
    }
}

/// Who may call an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A bearer token or a client certificate naming a principal (the document's default
    /// `bearerAuth`); the router serves the operation behind authentication.
    Authenticated,
    /// Anyone (`security: []`); the router serves the operation outside authentication.
    Public,
}

/// The schema of a parameter, a body or an answer.
#[derive(Clone, Copy)]
pub enum Schema {
    /// A component schema derived from a wire type (see [`Schema::of`]); the function is the
    /// type's `ToSchema::name`.
    Typed(fn() -> Cow<'static, str>),
    /// A component schema still written by hand in `openapi_base.json`, by name.
    Named(&'static str),
    /// An inline schema, as JSON text.
    Json(&'static str),
}

impl Schema {
    /// The component schema derived from `T`.
    pub const fn of<T: ToSchema>() -> Self {
        Self::Typed(T::name)
    }
}

impl std::fmt::Debug for Schema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Typed(name) => write!(f, "Typed({})", name()),
            Self::Named(name) => write!(f, "Named({name})"),
            Self::Json(json) => write!(f, "Json({json})"),
        }
    }
}

/// Where a parameter is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// A segment of the path.
    Path,
    /// A query parameter.
    Query,
}

/// A parameter of an operation.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    /// Its name.
    pub name: &'static str,
    /// Where it is.
    pub location: Location,
    /// Whether it must be sent.
    pub required: bool,
    /// What it means and which values it takes.
    pub description: &'static str,
    /// Its schema.
    pub schema: Schema,
    /// An example value, as JSON text.
    pub example: Option<&'static str>,
}

/// A parameter several operations share (`#/components/parameters/<component>`).
#[derive(Debug, Clone, Copy)]
pub struct SharedParam {
    /// Its component name.
    pub component: &'static str,
    /// The parameter.
    pub param: Param,
}

/// A parameter as an operation uses it.
#[derive(Debug, Clone, Copy)]
pub enum ParamUse {
    /// A shared parameter, by reference.
    Shared(&'static SharedParam),
    /// A parameter of this operation only.
    Own(Param),
}

/// The examples of a request body.
#[derive(Debug, Clone, Copy)]
pub enum Examples {
    /// No example.
    None,
    /// One example (`example`), as JSON text.
    One(&'static str),
    /// Named examples (`examples`), each as JSON text.
    Named(&'static [(&'static str, &'static str)]),
}

/// The request body of an operation; always `application/json`.
#[derive(Debug, Clone, Copy)]
pub struct Body {
    /// Its schema.
    pub schema: Schema,
    /// Whether it must be sent.
    pub required: bool,
    /// Its examples.
    pub examples: Examples,
}

/// The content of an answer.
#[derive(Debug, Clone, Copy)]
pub struct Content {
    /// Its media type.
    pub media: &'static str,
    /// Its schema.
    pub schema: Schema,
}

/// An answer of an operation other than the shared error answers ([`Refusal`]).
#[derive(Debug, Clone, Copy)]
pub struct Answer {
    /// Its status code.
    pub status: u16,
    /// What it means.
    pub description: &'static str,
    /// Its body; `None` for no body (204).
    pub content: Option<Content>,
}

/// An error answer, shared by the operations that may give it
/// (`#/components/responses/<name>`); its body is an `Error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Refusal {
    /// 400.
    BadRequest,
    /// 401.
    Unauthorized,
    /// 403.
    Forbidden,
    /// 404.
    NotFound,
    /// 405.
    MethodNotAllowed,
    /// 409.
    Conflict,
    /// 410.
    Gone,
    /// 413.
    PayloadTooLarge,
    /// 415.
    UnsupportedMediaType,
    /// 429, with `Retry-After`.
    TooManyRequests,
    /// 500.
    InternalError,
    /// 503.
    Unavailable,
}

impl Refusal {
    /// Its status code.
    pub fn status(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::Conflict => 409,
            Self::Gone => 410,
            Self::PayloadTooLarge => 413,
            Self::UnsupportedMediaType => 415,
            Self::TooManyRequests => 429,
            Self::InternalError => 500,
            Self::Unavailable => 503,
        }
    }

    /// Its component name.
    pub fn component(self) -> &'static str {
        match self {
            Self::BadRequest => "BadRequest",
            Self::Unauthorized => "Unauthorized",
            Self::Forbidden => "Forbidden",
            Self::NotFound => "NotFound",
            Self::MethodNotAllowed => "MethodNotAllowed",
            Self::Conflict => "Conflict",
            Self::Gone => "Gone",
            Self::PayloadTooLarge => "PayloadTooLarge",
            Self::UnsupportedMediaType => "UnsupportedMediaType",
            Self::TooManyRequests => "TooManyRequests",
            Self::InternalError => "InternalError",
            Self::Unavailable => "Unavailable",
        }
    }

    /// What it means, with the error codes it carries.
    pub fn description(self) -> &'static str {
        match self {
            Self::BadRequest => {
                "The request is invalid. Codes: `invalid_key_name`, `plaintext_too_large`, \
                    `plaintext_empty`, `malformed_ciphertext`, `unsupported_ciphertext_version`, \
                    `unsupported_ciphertext_algorithm`, `ciphertext_key_not_found`, \
                    `decryption_failed`, `malformed_json`, `invalid_request`, `unknown_field`, \
                    `invalid_field`, `invalid_context`, `invalid_base64`, `invalid_bytes`, \
                    `body_too_large`, `invalid_query`, `invalid_limit`, `invalid_secret_path`, \
                    `key_required`, `secret_not_generated`, `invalid_metadata`, \
                    `invalid_pending_days`, `invalid_alias_name`, `invalid_policy`, \
                    `invalid_policy_name`, `invalid_principal_name`, `unknown_action`, \
                    `invalid_resource`, `invalid_audit_query`."
            }
            Self::Unauthorized => {
                "No valid bearer token. Codes: `missing_token`, `invalid_token`, `token_expired`, \
                    `token_revoked`, `client_certificate_refused` (no token, and the client \
                    certificate names no principal)."
            }
            Self::Forbidden => {
                "The principal's policies do not allow the action on the resource \
                    (docs/policy.md); also every request of a principal that does not exist or \
                    has no policy. Codes: `forbidden`."
            }
            Self::NotFound => {
                "No such key, key version, alias, job, secret, secret version, principal, policy, \
                    token or route. Codes: `key_not_found`, `key_version_not_found`, \
                    `alias_not_found`, `job_not_found`, `secret_not_found`, \
                    `secret_version_not_found`, `secret_version_deleted`, `principal_not_found`, \
                    `policy_not_found`, `token_not_found`, `route_not_found`."
            }
            Self::MethodNotAllowed => {
                "The route exists but not with this method; the Allow header lists the methods \
                    (on the secrets routes, a method the addressed sub-resource does not take is \
                    answered after authentication, its Allow naming what that sub-resource \
                    takes). Codes: `method_not_allowed`."
            }
            Self::Conflict => {
                "The request conflicts with the current state. Codes: `key_name_taken`, \
                    `key_disabled`, `key_pending_deletion`, `invalid_key_state`, \
                    `key_version_disabled`, `key_version_below_minimum`, `primary_version`, \
                    `key_version_in_use`, `rotation_conflict`, `alias_exists`, \
                    `principal_exists`, `conflict`, `cas_mismatch` (with `current_version`), \
                    `write_conflict`, `not_a_checkpoint`, `export_mismatch`."
            }
            Self::UnsupportedMediaType => {
                "The body was not sent as application/json. Codes: `unsupported_media_type`."
            }
            Self::Unavailable => {
                "A dependency is unavailable or the request took too long; retry later. Codes: \
                    `device_unavailable`, `device_busy`, `store_unavailable`, `request_timeout`, \
                    `key_material_missing` (a root key the store records is not in the token), \
                    `default_key_missing` (`secrets.default_key` names no key), \
                    `wrap_limit_reached` (the primary version has used its 2^32 wrap budget and \
                    the key has not been rotated yet), `audit_unavailable` (the audit log could \
                    not record this request: any route may answer it, and nothing else was \
                    returned)."
            }
            Self::Gone => {
                "The key, key version or secret version is gone for good or no longer served. \
                    Codes: `key_destroyed`, `key_version_destroyed`, `secret_version_destroyed`, \
                    `secret_version_expired`, `audit_archived` (the audit records asked for were \
                    archived)."
            }
            Self::PayloadTooLarge => {
                "The secret value is over `secrets.max_value_bytes`. Codes: `value_too_large`."
            }
            Self::InternalError => {
                "An internal error; the message is opaque, quote the request id. Codes: \
                    `internal_error`, `secret_integrity_failed` (a stored secret version failed \
                    authentication), `audit_chain_broken` (the stored audit chain does not \
                    verify; nothing is signed over it)."
            }
            Self::TooManyRequests => {
                "Too many requests that do not authenticate. `too_many_auth_failures`: the \
                    credential failed, and its source address or its token id (the public \
                    `cst_<id>_` part) already failed 20 times within the minute; a valid \
                    credential is never refused with it. `too_many_unauthenticated_requests`: the \
                    request ended without an authenticated principal (or carried no credential) \
                    and its source address used its budget of individually audited \
                    unauthenticated requests for the minute \
                    (`server.anonymous_requests_per_minute`); it is counted into an aggregate \
                    audit record. Codes: `too_many_auth_failures`, \
                    `too_many_unauthenticated_requests`."
            }
        }
    }

    /// Whether it carries `Retry-After`.
    pub fn retries_after(self) -> bool {
        matches!(self, Self::TooManyRequests)
    }
}

/// One documented operation: a method on a path.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    /// Its `operationId`.
    pub id: &'static str,
    /// Its method.
    pub method: Method,
    /// Its path as documented, parameters in braces.
    pub path: &'static str,
    /// The router's pattern that serves it when that is not [`Operation::path`]: the secrets
    /// routes are one catch-all whose handlers tell the sub-resources apart by the last segment.
    pub served_at: Option<&'static str>,
    /// Its tags (each one of the document's top-level tags).
    pub tags: &'static [&'static str],
    /// Its summary.
    pub summary: &'static str,
    /// Its description.
    pub description: Option<&'static str>,
    /// Who may call it.
    pub access: Access,
    /// Its parameters.
    pub params: &'static [ParamUse],
    /// Its request body.
    pub body: Option<Body>,
    /// Its answers other than the shared error answers; each carries `x-request-id`.
    pub answers: &'static [Answer],
    /// The shared error answers it may give.
    pub refusals: &'static [Refusal],
}

impl Operation {
    /// The router's pattern that serves it.
    pub fn router_path(&self) -> &'static str {
        self.served_at.unwrap_or(self.path)
    }
}

/// `#/components/parameters/Key`.
pub const KEY: SharedParam = SharedParam {
    component: "Key",
    param: Param {
        name: "key",
        location: Location::Path,
        required: true,
        description: "A key id (UUID), a key name, or `alias/<name>` with the `/` percent-encoded \
            (`alias%2Fbilling-current`).",
        schema: Schema::Json(r#"{"type": "string"}"#),
        example: None,
    },
};

/// `#/components/parameters/SecretPath`.
pub const SECRET_PATH: SharedParam = SharedParam {
    component: "SecretPath",
    param: Param {
        name: "path",
        location: Location::Path,
        required: true,
        description: "The secret path: the rest of the URL, '/' included \
            (`team/app/db-password`). Percent-encode each segment, not the '/' between them; the \
            path is percent-decoded before it is checked, so `%2F` separates segments like '/'. \
            Rules: 1 to 512 bytes, 1 to 16 segments of 1 to 128 characters from `A-Z a-z 0-9 - _ \
            .`, no empty, `.` or `..` segment, and a last segment other than `metadata`, \
            `undelete`, `destroy` and `rotate` (those words address the sub-resources). Otherwise \
            400 `invalid_secret_path`.",
        schema: Schema::of::<SecretPath>(),
        example: None,
    },
};

/// `#/components/parameters/Version`.
pub const VERSION: SharedParam = SharedParam {
    component: "Version",
    param: Param {
        name: "version",
        location: Location::Path,
        required: true,
        description: "A key version number; anything else is 404 `key_version_not_found`.",
        schema: Schema::of::<KeyVersion>(),
        example: None,
    },
};

/// `#/components/parameters/VersionAction`.
pub const VERSION_ACTION: SharedParam = SharedParam {
    component: "VersionAction",
    param: Param {
        name: "action",
        location: Location::Path,
        required: true,
        description: "What to do to the version; any other word is 404 `route_not_found`.",
        schema: Schema::Json(r#"{"type": "string", "enum": ["disable", "enable", "destroy"]}"#),
        example: None,
    },
};

/// `#/components/parameters/JobId`.
pub const JOB_ID: SharedParam = SharedParam {
    component: "JobId",
    param: Param {
        name: "id",
        location: Location::Path,
        required: true,
        description: "A job id.",
        schema: Schema::Json(r#"{"type": "string", "maxLength": 64}"#),
        example: None,
    },
};

/// `#/components/parameters/AliasName`.
pub const ALIAS_NAME: SharedParam = SharedParam {
    component: "AliasName",
    param: Param {
        name: "name",
        location: Location::Path,
        required: true,
        description: "An alias name (without the `alias/` prefix). A name that breaks the name \
            rules is 404 `alias_not_found`.",
        schema: Schema::of::<KeyName>(),
        example: None,
    },
};

/// `#/components/parameters/JobState`.
pub const JOB_STATE: SharedParam = SharedParam {
    component: "JobState",
    param: Param {
        name: "state",
        location: Location::Query,
        required: false,
        description: "Only jobs in this state.",
        schema: Schema::of::<JobState>(),
        example: None,
    },
};

/// `#/components/parameters/JobLimit`.
pub const JOB_LIMIT: SharedParam = SharedParam {
    component: "JobLimit",
    param: Param {
        name: "limit",
        location: Location::Query,
        required: false,
        description: "Page size, 1 to 1000 (`invalid_limit` otherwise).",
        schema: Schema::Json(
            r#"{"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}"#,
        ),
        example: None,
    },
};

/// `#/components/parameters/PrincipalName`.
pub const PRINCIPAL_NAME: SharedParam = SharedParam {
    component: "PrincipalName",
    param: Param {
        name: "name",
        location: Location::Path,
        required: true,
        description: "A principal name. A name that breaks the name rules is 404 \
            `principal_not_found`.",
        schema: Schema::of::<KeyName>(),
        example: None,
    },
};

/// `#/components/parameters/PolicyName`.
pub const POLICY_NAME: SharedParam = SharedParam {
    component: "PolicyName",
    param: Param {
        name: "name",
        location: Location::Path,
        required: true,
        description: "A policy name. On GET and DELETE a name that breaks the name rules is 404 \
            `policy_not_found`; on PUT it is 400 `invalid_policy_name`. `explain` is the explain \
            route, not a name: PUT, GET and DELETE on `/v1/policies/explain` are 405.",
        schema: Schema::of::<KeyName>(),
        example: None,
    },
};

/// `#/components/parameters/TokenId`.
pub const TOKEN_ID: SharedParam = SharedParam {
    component: "TokenId",
    param: Param {
        name: "id",
        location: Location::Path,
        required: true,
        description: "A token id: the 16 hex digits after `cst_`. Anything else is 404 \
            `token_not_found`.",
        schema: Schema::of::<TokenId>(),
        example: None,
    },
};

/// `#/components/parameters/TokenPrincipal`.
pub const TOKEN_PRINCIPAL: SharedParam = SharedParam {
    component: "TokenPrincipal",
    param: Param {
        name: "principal",
        location: Location::Query,
        required: false,
        description: "Only this principal's tokens (`invalid_query` for a name that breaks the \
            name rules).",
        schema: Schema::of::<KeyName>(),
        example: None,
    },
};

/// `#/components/parameters/AccessKeyId`.
pub const ACCESS_KEY_ID: SharedParam = SharedParam {
    component: "AccessKeyId",
    param: Param {
        name: "id",
        location: Location::Path,
        required: true,
        description: "An access key id: `CKIA` and 16 characters of `A-Z2-7`. Anything else is \
            404 `access_key_not_found`.",
        schema: Schema::Json(r#"{"type": "string", "pattern": "^CKIA[A-Z2-7]{16}$"}"#),
        example: None,
    },
};

/// `#/components/parameters/AccessKeyPrincipal`.
pub const ACCESS_KEY_PRINCIPAL: SharedParam = SharedParam {
    component: "AccessKeyPrincipal",
    param: Param {
        name: "principal",
        location: Location::Query,
        required: false,
        description: "Only this principal's access keys (`invalid_query` for a name that breaks \
            the name rules).",
        schema: Schema::Named("KeyName"),
        example: None,
    },
};

/// `#/components/parameters/DbConnectionName`.
pub const DB_CONNECTION_NAME: SharedParam = SharedParam {
    component: "DbConnectionName",
    param: Param {
        name: "name",
        location: Location::Path,
        required: true,
        description: "A database connection's name (key name rules; otherwise 404 \
            `db_connection_not_found`).",
        schema: Schema::of::<KeyName>(),
        example: None,
    },
};

/// `#/components/parameters/DbRoleName`.
pub const DB_ROLE_NAME: SharedParam = SharedParam {
    component: "DbRoleName",
    param: Param {
        name: "name",
        location: Location::Path,
        required: true,
        description: "A database role's name (key name rules; otherwise 404 `db_role_not_found`).",
        schema: Schema::of::<KeyName>(),
        example: None,
    },
};

/// `#/components/parameters/DbLeaseId`.
pub const DB_LEASE_ID: SharedParam = SharedParam {
    component: "DbLeaseId",
    param: Param {
        name: "id",
        location: Location::Path,
        required: true,
        description: "A lease id: `dbl_` and 26 characters of `a-z2-7`. Anything else is 404 \
            `db_lease_not_found`.",
        schema: Schema::Json(r#"{"type": "string", "pattern": "^dbl_[a-z2-7]{26}$"}"#),
        example: None,
    },
};

/// `#/components/parameters/AuditAfter`.
pub const AUDIT_AFTER: SharedParam = SharedParam {
    component: "AuditAfter",
    param: Param {
        name: "after",
        location: Location::Query,
        required: false,
        description: "Records after this sequence.",
        schema: Schema::Json(
            r#"{"type": "integer", "minimum": 0, "maximum": 18446744073709551615}"#,
        ),
        example: None,
    },
};

/// `POST /v1/keys`.
pub const CREATE_KEY: Operation = Operation {
    id: "createKey",
    method: Method::Post,
    path: "/v1/keys",
    served_at: None,
    tags: &["keys"],
    summary: "Create a key",
    description: Some(
        "Generates the version-1 root key inside the device (PKCS#11 token or TPM; \
        in cached mode also its version-KEK), then records the key. Action `key:create`.",
    ),
    access: Access::Authenticated,
    params: &[],
    body: Some(Body {
        schema: Schema::of::<CreateKeyRequest>(),
        required: true,
        examples: Examples::Named(&[
            (
                "pkcs11",
                r#"{"name": "demo", "description": "docs example"}"#,
            ),
            (
                "tpm-direct",
                r#"{"name": "vault-tpm", "backend": "tpm", "mode": "direct"}"#,
            ),
        ]),
    }),
    answers: &[Answer {
        status: 201,
        description: "The key was created.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<Key>(),
        }),
    }],
    refusals: &[
        Refusal::BadRequest,
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::Conflict,
        Refusal::UnsupportedMediaType,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `GET /v1/keys`.
pub const LIST_KEYS: Operation = Operation {
    id: "listKeys",
    method: Method::Get,
    path: "/v1/keys",
    served_at: None,
    tags: &["keys"],
    summary: "List keys",
    description: Some(
        "Keys ordered by name (bytewise). Pass `next` as `after` to get the next \
        page. Action `key:read`.",
    ),
    access: Access::Authenticated,
    params: &[
        ParamUse::Own(Param {
            name: "limit",
            location: Location::Query,
            required: false,
            description: "Page size, 1 to 1000 (`invalid_limit` otherwise).",
            schema: Schema::Json(
                r#"{"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}"#,
            ),
            example: None,
        }),
        ParamUse::Own(Param {
            name: "after",
            location: Location::Query,
            required: false,
            description: "A key name; the page starts after it.",
            schema: Schema::of::<KeyName>(),
            example: None,
        }),
    ],
    body: None,
    answers: &[Answer {
        status: 200,
        description: "One page of keys.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<KeyList>(),
        }),
    }],
    refusals: &[
        Refusal::BadRequest,
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `GET /v1/keys/{key}`.
pub const SHOW_KEY: Operation = Operation {
    id: "showKey",
    method: Method::Get,
    path: "/v1/keys/{key}",
    served_at: None,
    tags: &["keys"],
    summary: "Show a key",
    description: Some("`{key}` is a key id or a key name. Action `key:read`."),
    access: Access::Authenticated,
    params: &[ParamUse::Shared(&KEY)],
    body: None,
    answers: &[Answer {
        status: 200,
        description: "The key.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<Key>(),
        }),
    }],
    refusals: &[
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `PATCH /v1/keys/{key}`.
pub const UPDATE_KEY: Operation = Operation {
    id: "updateKey",
    method: Method::Patch,
    path: "/v1/keys/{key}",
    served_at: None,
    tags: &["lifecycle"],
    summary: "Change a key",
    description: Some(
        "Changes `description`, `rotation_period` and `min_decryption_version`; \
        fields left out keep their value. Allowed in every state but `destroyed`. Action \
        `key:update`.",
    ),
    access: Access::Authenticated,
    params: &[ParamUse::Shared(&KEY)],
    body: Some(Body {
        schema: Schema::of::<PatchKeyRequest>(),
        required: true,
        examples: Examples::One(r#"{"rotation_period": "90d", "min_decryption_version": 2}"#),
    }),
    answers: &[Answer {
        status: 200,
        description: "The key after the change.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<Key>(),
        }),
    }],
    refusals: &[
        Refusal::BadRequest,
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::Conflict,
        Refusal::Gone,
        Refusal::UnsupportedMediaType,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `POST /v1/keys/{key}/datakey`.
pub const GENERATE_DATA_KEY: Operation = Operation {
    id: "generateDataKey",
    method: Method::Post,
    path: "/v1/keys/{key}/datakey",
    served_at: None,
    tags: &["crypto"],
    summary: "Generate a data key",
    description: Some(
        "Draws a data key and seals it under the key's primary version, bound to the \
        context. Action `datakey:generate-plaintext` when the plaintext copy is returned, \
        `datakey:generate` otherwise.",
    ),
    access: Access::Authenticated,
    params: &[ParamUse::Shared(&KEY)],
    body: Some(Body {
        schema: Schema::of::<DataKeyRequest>(),
        required: true,
        examples: Examples::One(r#"{"context": {"app": "demo"}, "bytes": 32, "plaintext": true}"#),
    }),
    answers: &[Answer {
        status: 200,
        description: "The wrapped data key and, unless `plaintext` was false, its plaintext \
                copy.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<DataKeyResponse>(),
        }),
    }],
    refusals: &[
        Refusal::BadRequest,
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::Conflict,
        Refusal::UnsupportedMediaType,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `POST /v1/keys/{key}/encrypt`.
pub const ENCRYPT: Operation = Operation {
    id: "encrypt",
    method: Method::Post,
    path: "/v1/keys/{key}/encrypt",
    served_at: None,
    tags: &["crypto"],
    summary: "Encrypt a payload",
    description: Some(
        "Seals 1 to 4096 bytes under the key's primary version, bound to the \
        context. Action `encrypt`.",
    ),
    access: Access::Authenticated,
    params: &[ParamUse::Shared(&KEY)],
    body: Some(Body {
        schema: Schema::of::<EncryptRequest>(),
        required: true,
        examples: Examples::One(r#"{"plaintext": "aGVsbG8=", "context": {"app": "demo"}}"#),
    }),
    answers: &[Answer {
        status: 200,
        description: "The blob.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<EncryptResponse>(),
        }),
    }],
    refusals: &[
        Refusal::BadRequest,
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::Conflict,
        Refusal::UnsupportedMediaType,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `POST /v1/keys/{key}/rotate`.
pub const ROTATE_KEY: Operation = Operation {
    id: "rotateKey",
    method: Method::Post,
    path: "/v1/keys/{key}/rotate",
    served_at: None,
    tags: &["lifecycle"],
    summary: "Rotate a key now",
    description: Some(
        "Generates a new root key in the device and records it as the next version, \
        the new primary; the previous primary becomes `active`. Moves `next_rotation_at` when the \
        key has a `rotation_period`, and starts a re-wrap job unless `keys.rewrap_after_rotation` \
        is false. Only an `enabled` key rotates. No body. Action `key:rotate`.",
    ),
    access: Access::Authenticated,
    params: &[ParamUse::Shared(&KEY)],
    body: None,
    answers: &[Answer {
        status: 200,
        description: "The key after the rotation.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<Key>(),
        }),
    }],
    refusals: &[
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::Conflict,
        Refusal::Gone,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `POST /v1/keys/{key}/disable`.
pub const DISABLE_KEY: Operation = Operation {
    id: "disableKey",
    method: Method::Post,
    path: "/v1/keys/{key}/disable",
    served_at: None,
    tags: &["lifecycle"],
    summary: "Disable a key",
    description: Some(
        "`enabled → disabled`: the key no longer wraps, unwraps or rotates. On a \
        disabled key it changes nothing (200). No body. Action `key:disable`.",
    ),
    access: Access::Authenticated,
    params: &[ParamUse::Shared(&KEY)],
    body: None,
    answers: &[Answer {
        status: 200,
        description: "The key.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<Key>(),
        }),
    }],
    refusals: &[
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::Conflict,
        Refusal::Gone,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `POST /v1/keys/{key}/enable`.
pub const ENABLE_KEY: Operation = Operation {
    id: "enableKey",
    method: Method::Post,
    path: "/v1/keys/{key}/enable",
    served_at: None,
    tags: &["lifecycle"],
    summary: "Enable a key",
    description: Some(
        "`disabled → enabled`. On an enabled key it changes nothing (200); a \
        `pending_deletion` key is 409 `invalid_key_state` (cancel the deletion first). No body. \
        Action `key:disable`.",
    ),
    access: Access::Authenticated,
    params: &[ParamUse::Shared(&KEY)],
    body: None,
    answers: &[Answer {
        status: 200,
        description: "The key.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<Key>(),
        }),
    }],
    refusals: &[
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::Conflict,
        Refusal::Gone,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `POST /v1/keys/{key}/schedule-deletion`.
pub const SCHEDULE_KEY_DELETION: Operation = Operation {
    id: "scheduleKeyDeletion",
    method: Method::Post,
    path: "/v1/keys/{key}/schedule-deletion",
    served_at: None,
    tags: &["lifecycle"],
    summary: "Schedule a key's destruction",
    description: Some(
        "`enabled | disabled → pending_deletion`, with `deletion_date` = now + \
        `pending_days` (7 to 30, default 30). The key is unusable meanwhile. On the date the \
        lifecycle worker destroys every version, unless stored data keys still reference one \
        (then `deletion_blocked` says why and the deletion waits). The body is optional; when \
        sent it must be application/json. Action `key:delete`.",
    ),
    access: Access::Authenticated,
    params: &[ParamUse::Shared(&KEY)],
    body: Some(Body {
        schema: Schema::of::<ScheduleDeletionRequest>(),
        required: false,
        examples: Examples::One(r#"{"pending_days": 7}"#),
    }),
    answers: &[Answer {
        status: 200,
        description: "The key, with `deletion_date`.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<Key>(),
        }),
    }],
    refusals: &[
        Refusal::BadRequest,
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::Conflict,
        Refusal::Gone,
        Refusal::UnsupportedMediaType,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `POST /v1/keys/{key}/cancel-deletion`.
pub const CANCEL_KEY_DELETION: Operation = Operation {
    id: "cancelKeyDeletion",
    method: Method::Post,
    path: "/v1/keys/{key}/cancel-deletion",
    served_at: None,
    tags: &["lifecycle"],
    summary: "Cancel a scheduled destruction",
    description: Some(
        "`pending_deletion → disabled` (enable the key to use it again). No body. \
        Action `key:delete`.",
    ),
    access: Access::Authenticated,
    params: &[ParamUse::Shared(&KEY)],
    body: None,
    answers: &[Answer {
        status: 200,
        description: "The key.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<Key>(),
        }),
    }],
    refusals: &[
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::Conflict,
        Refusal::Gone,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `GET /v1/keys/{key}/versions`.
pub const LIST_KEY_VERSIONS: Operation = Operation {
    id: "listKeyVersions",
    method: Method::Get,
    path: "/v1/keys/{key}/versions",
    served_at: None,
    tags: &["lifecycle"],
    summary: "Versions and their use",
    description: Some(
        "Every version of the key with the number of stored data keys (secret \
        versions) it wraps now. Read from the database. Action `key:read`.",
    ),
    access: Access::Authenticated,
    params: &[ParamUse::Shared(&KEY)],
    body: None,
    answers: &[Answer {
        status: 200,
        description: "The versions.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<KeyVersionList>(),
        }),
    }],
    refusals: &[
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `POST /v1/keys/{key}/versions/{version}/{action}`.
pub const CHANGE_KEY_VERSION: Operation = Operation {
    id: "changeKeyVersion",
    method: Method::Post,
    path: "/v1/keys/{key}/versions/{version}/{action}",
    served_at: None,
    tags: &["lifecycle"],
    summary: "Disable, enable or destroy a version",
    description: Some(
        "`disable`: `active → disabled`; `enable`: `disabled → active` (repeats \
        change nothing); `destroy`: `active | disabled → destroyed`, irreversible, refused while \
        stored data keys reference the version (409 `key_version_in_use`). The primary version \
        cannot be changed (409 `primary_version`). Destruction marks the database first, then \
        destroys the root key in the device (retried by the lifecycle worker on failure). No \
        body. Action `key:disable` (disable, enable) or `key:delete` (destroy).",
    ),
    access: Access::Authenticated,
    params: &[
        ParamUse::Shared(&KEY),
        ParamUse::Shared(&VERSION),
        ParamUse::Shared(&VERSION_ACTION),
    ],
    body: None,
    answers: &[Answer {
        status: 200,
        description: "The key.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<Key>(),
        }),
    }],
    refusals: &[
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::Conflict,
        Refusal::Gone,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `POST /v1/keys/{key}/rewrap`.
pub const START_REWRAP: Operation = Operation {
    id: "startRewrap",
    method: Method::Post,
    path: "/v1/keys/{key}/rewrap",
    served_at: None,
    tags: &["lifecycle", "jobs"],
    summary: "Start a re-wrap job",
    description: Some(
        "Starts a job that moves every stored wrapped data key of the key to its \
        primary version, or returns the job already running to that version. No body. Action \
        `key:rotate`.",
    ),
    access: Access::Authenticated,
    params: &[ParamUse::Shared(&KEY)],
    body: None,
    answers: &[Answer {
        status: 202,
        description: "The job.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<Job>(),
        }),
    }],
    refusals: &[
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::Conflict,
        Refusal::Gone,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `POST /v1/decrypt`.
pub const DECRYPT: Operation = Operation {
    id: "decrypt",
    method: Method::Post,
    path: "/v1/decrypt",
    served_at: None,
    tags: &["crypto"],
    summary: "Decrypt a blob",
    description: Some(
        "Opens a blob made by `datakey` or `encrypt`; the blob names its key and \
        version. The context must equal the one used to seal. Action `decrypt`.",
    ),
    access: Access::Authenticated,
    params: &[],
    body: Some(Body {
        schema: Schema::of::<DecryptRequest>(),
        required: true,
        examples: Examples::One(
            r#"{"ciphertext": "Q1NURAEB7Kpm0T78TFKGP8bIVoh9DQAAAAEMPFR6NFwY/QTZSHEfb+MvrhgxoWetfD9rD7QN816v3tlt", "context": {"app": "demo"}}"#,
        ),
    }),
    answers: &[Answer {
        status: 200,
        description: "The plaintext.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<DecryptResponse>(),
        }),
    }],
    refusals: &[
        Refusal::BadRequest,
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::Conflict,
        Refusal::UnsupportedMediaType,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `POST /v1/reencrypt`.
pub const REENCRYPT: Operation = Operation {
    id: "reencrypt",
    method: Method::Post,
    path: "/v1/reencrypt",
    served_at: None,
    tags: &["crypto", "lifecycle"],
    summary: "Re-encrypt a blob",
    description: Some(
        "Opens the blob and seals the same plaintext under the primary version of \
        `destination_key` (default: the blob's own key), with `destination_context` (default: \
        `context`). The plaintext is never returned. Action `reencrypt` on the blob's key and on \
        the destination key.",
    ),
    access: Access::Authenticated,
    params: &[],
    body: Some(Body {
        schema: Schema::of::<ReencryptRequest>(),
        required: true,
        examples: Examples::One(
            r#"{"ciphertext": "Q1NURAEB7Kpm0T78TFKGP8bIVoh9DQAAAAEM\u2026", "context": {"tenant": "acme"}}"#,
        ),
    }),
    answers: &[Answer {
        status: 200,
        description: "The new blob.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<ReencryptResponse>(),
        }),
    }],
    refusals: &[
        Refusal::BadRequest,
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::Conflict,
        Refusal::Gone,
        Refusal::UnsupportedMediaType,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `GET /v1/secrets`.
pub const LIST_SECRETS: Operation = Operation {
    id: "listSecrets",
    method: Method::Get,
    path: "/v1/secrets",
    served_at: None,
    tags: &["secrets"],
    summary: "List secrets",
    description: Some(
        "Metadata records ordered by path (bytewise), never values. Action \
        `secret:list` on `secret/{prefix}*`.",
    ),
    access: Access::Authenticated,
    params: &[
        ParamUse::Own(Param {
            name: "prefix",
            location: Location::Query,
            required: false,
            description: "Paths starting with this string (plain prefix, no wildcards); at most \
                512 bytes.",
            schema: Schema::Json(r#"{"type": "string", "maxLength": 512, "default": ""}"#),
            example: None,
        }),
        ParamUse::Own(Param {
            name: "limit",
            location: Location::Query,
            required: false,
            description: "Page size, 1 to 1000 (`invalid_limit` otherwise).",
            schema: Schema::Json(
                r#"{"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}"#,
            ),
            example: None,
        }),
        ParamUse::Own(Param {
            name: "after",
            location: Location::Query,
            required: false,
            description: "A secret path; the page starts after it.",
            schema: Schema::of::<SecretPath>(),
            example: None,
        }),
    ],
    body: None,
    answers: &[Answer {
        status: 200,
        description: "A page of records.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<SecretList>(),
        }),
    }],
    refusals: &[
        Refusal::BadRequest,
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::MethodNotAllowed,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `GET /v1/secrets/{path}`.
pub const GET_SECRET: Operation = Operation {
    id: "getSecret",
    method: Method::Get,
    path: "/v1/secrets/{path}",
    served_at: Some("/v1/secrets/{*path}"),
    tags: &["secrets"],
    summary: "Read a secret version",
    description: Some(
        "The newest live version, or `version`. Action `secret:read`. The newest \
        live version past `expires_after` is 410, with no fall-back to an older one.",
    ),
    access: Access::Authenticated,
    params: &[
        ParamUse::Shared(&SECRET_PATH),
        ParamUse::Own(Param {
            name: "version",
            location: Location::Query,
            required: false,
            description: "A version number; default: the newest live version.",
            schema: Schema::of::<SecretVersionNumber>(),
            example: None,
        }),
        ParamUse::Own(Param {
            name: "text",
            location: Location::Query,
            required: false,
            description: "Also return `value_text` when the value is valid UTF-8.",
            schema: Schema::Json(r#"{"type": "boolean", "default": false}"#),
            example: None,
        }),
    ],
    body: None,
    answers: &[Answer {
        status: 200,
        description: "The value.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<SecretValue>(),
        }),
    }],
    refusals: &[
        Refusal::BadRequest,
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::Conflict,
        Refusal::Gone,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `PUT /v1/secrets/{path}`.
pub const PUT_SECRET: Operation = Operation {
    id: "putSecret",
    method: Method::Put,
    path: "/v1/secrets/{path}",
    served_at: Some("/v1/secrets/{*path}"),
    tags: &["secrets"],
    summary: "Write a secret version",
    description: Some(
        "Writes the next version (creating the path on its first write), its data \
        key drawn and wrapped by the device. Writes to one path are serialised; the version \
        number and `cas` are checked in the transaction that records the version. Action \
        `secret:write`.",
    ),
    access: Access::Authenticated,
    params: &[ParamUse::Shared(&SECRET_PATH)],
    body: Some(Body {
        schema: Schema::of::<PutSecretRequest>(),
        required: true,
        examples: Examples::One(r#"{"value_text": "s3cr3t", "cas": 0}"#),
    }),
    answers: &[Answer {
        status: 200,
        description: "The version written.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<SecretWritten>(),
        }),
    }],
    refusals: &[
        Refusal::BadRequest,
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::Conflict,
        Refusal::PayloadTooLarge,
        Refusal::UnsupportedMediaType,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `DELETE /v1/secrets/{path}`.
pub const DELETE_SECRET_VERSIONS: Operation = Operation {
    id: "deleteSecretVersions",
    method: Method::Delete,
    path: "/v1/secrets/{path}",
    served_at: Some("/v1/secrets/{*path}"),
    tags: &["secrets"],
    summary: "Soft-delete secret versions",
    description: Some(
        "Hides versions until they are undeleted. Default: the newest live version. \
        Action `secret:delete`.",
    ),
    access: Access::Authenticated,
    params: &[
        ParamUse::Shared(&SECRET_PATH),
        ParamUse::Own(Param {
            name: "versions",
            location: Location::Query,
            required: false,
            description: "Comma-separated version numbers (1 to 1000), e.g. `1,3`.",
            schema: Schema::Json(r#"{"type": "string", "pattern": "^[0-9]{1,9}(,[0-9]{1,9})*$"}"#),
            example: Some(r#""1,3""#),
        }),
    ],
    body: None,
    answers: &[Answer {
        status: 200,
        description: "The versions whose state changed.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<SecretChanged>(),
        }),
    }],
    refusals: &[
        Refusal::BadRequest,
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `GET /v1/secrets/{path}/metadata`.
pub const GET_SECRET_METADATA: Operation = Operation {
    id: "getSecretMetadata",
    method: Method::Get,
    path: "/v1/secrets/{path}/metadata",
    served_at: Some("/v1/secrets/{*path}"),
    tags: &["secrets"],
    summary: "Show secret metadata",
    description: Some(
        "Metadata and version history, never values. Takes no query parameters. \
        Action `secret:read`.",
    ),
    access: Access::Authenticated,
    params: &[ParamUse::Shared(&SECRET_PATH)],
    body: None,
    answers: &[Answer {
        status: 200,
        description: "The record.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<SecretRecord>(),
        }),
    }],
    refusals: &[
        Refusal::BadRequest,
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `PUT /v1/secrets/{path}/metadata`.
pub const PUT_SECRET_METADATA: Operation = Operation {
    id: "putSecretMetadata",
    method: Method::Put,
    path: "/v1/secrets/{path}/metadata",
    served_at: Some("/v1/secrets/{*path}"),
    tags: &["secrets"],
    summary: "Create or change secret metadata",
    description: Some(
        "Creates the path (without a version) if absent. Setting `generate` on a \
        path without versions writes version 1 at once. Action `secret:write`.",
    ),
    access: Access::Authenticated,
    params: &[ParamUse::Shared(&SECRET_PATH)],
    body: Some(Body {
        schema: Schema::of::<PutSecretMetadataRequest>(),
        required: true,
        examples: Examples::One(
            r#"{"max_versions": 5, "custom": {"owner": "team-a"}, "generate": {"length": 40, "charset": "alphanumeric", "rotate_every": "30d"}}"#,
        ),
    }),
    answers: &[Answer {
        status: 200,
        description: "The record after the change.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<SecretRecord>(),
        }),
    }],
    refusals: &[
        Refusal::BadRequest,
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::Conflict,
        Refusal::PayloadTooLarge,
        Refusal::UnsupportedMediaType,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `POST /v1/secrets/{path}/undelete`.
pub const UNDELETE_SECRET_VERSIONS: Operation = Operation {
    id: "undeleteSecretVersions",
    method: Method::Post,
    path: "/v1/secrets/{path}/undelete",
    served_at: Some("/v1/secrets/{*path}"),
    tags: &["secrets"],
    summary: "Restore soft-deleted secret versions",
    description: Some(
        "Default: the newest deleted version. A destroyed version is 410. The body \
        is required (at least `{}`). Action `secret:delete`.",
    ),
    access: Access::Authenticated,
    params: &[ParamUse::Shared(&SECRET_PATH)],
    body: Some(Body {
        schema: Schema::of::<SecretVersionsRequest>(),
        required: true,
        examples: Examples::One(r#"{"versions": [1, 3]}"#),
    }),
    answers: &[Answer {
        status: 200,
        description: "The versions whose state changed.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<SecretChanged>(),
        }),
    }],
    refusals: &[
        Refusal::BadRequest,
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::Gone,
        Refusal::UnsupportedMediaType,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `POST /v1/secrets/{path}/destroy`.
pub const DESTROY_SECRET_VERSIONS: Operation = Operation {
    id: "destroySecretVersions",
    method: Method::Post,
    path: "/v1/secrets/{path}/destroy",
    served_at: Some("/v1/secrets/{*path}"),
    tags: &["secrets"],
    summary: "Destroy secret versions",
    description: Some(
        "Erases the ciphertext and wrapped data key of each version for good; the \
        row stays as a `destroyed` tombstone. Action `secret:destroy`.",
    ),
    access: Access::Authenticated,
    params: &[ParamUse::Shared(&SECRET_PATH)],
    body: Some(Body {
        schema: Schema::of::<DestroySecretRequest>(),
        required: true,
        examples: Examples::One(r#"{"versions": [1]}"#),
    }),
    answers: &[Answer {
        status: 200,
        description: "The versions whose state changed.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<SecretChanged>(),
        }),
    }],
    refusals: &[
        Refusal::BadRequest,
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::UnsupportedMediaType,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `POST /v1/secrets/{path}/rotate`.
pub const ROTATE_SECRET: Operation = Operation {
    id: "rotateSecret",
    method: Method::Post,
    path: "/v1/secrets/{path}/rotate",
    served_at: Some("/v1/secrets/{*path}"),
    tags: &["secrets"],
    summary: "Rotate a generated secret",
    description: Some(
        "Writes a fresh generated version now and moves `next_rotation_at` to now + \
        `rotate_every`. No body. Action `secret:write`.",
    ),
    access: Access::Authenticated,
    params: &[ParamUse::Shared(&SECRET_PATH)],
    body: None,
    answers: &[Answer {
        status: 200,
        description: "The version written.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<SecretWritten>(),
        }),
    }],
    refusals: &[
        Refusal::BadRequest,
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::Conflict,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `GET /v1/jobs`.
pub const LIST_JOBS: Operation = Operation {
    id: "listJobs",
    method: Method::Get,
    path: "/v1/jobs",
    served_at: None,
    tags: &["jobs"],
    summary: "List jobs",
    description: Some("Jobs, newest first, with their progress. Action `key:read` on `key/*`."),
    access: Access::Authenticated,
    params: &[ParamUse::Shared(&JOB_STATE), ParamUse::Shared(&JOB_LIMIT)],
    body: None,
    answers: &[Answer {
        status: 200,
        description: "A page of jobs.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<JobList>(),
        }),
    }],
    refusals: &[
        Refusal::BadRequest,
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::MethodNotAllowed,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `GET /v1/jobs/{id}`.
pub const SHOW_JOB: Operation = Operation {
    id: "showJob",
    method: Method::Get,
    path: "/v1/jobs/{id}",
    served_at: None,
    tags: &["jobs"],
    summary: "Show a job",
    description: Some(
        "The job with its live progress (`remaining`, `versions`, \
        `rate_per_second`). Action `key:read` on the job's key.",
    ),
    access: Access::Authenticated,
    params: &[ParamUse::Shared(&JOB_ID)],
    body: None,
    answers: &[Answer {
        status: 200,
        description: "The job.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<Job>(),
        }),
    }],
    refusals: &[
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `POST /v1/aliases`.
pub const CREATE_ALIAS: Operation = Operation {
    id: "createAlias",
    method: Method::Post,
    path: "/v1/aliases",
    served_at: None,
    tags: &["aliases"],
    summary: "Create an alias",
    description: Some(
        "Creates an alias pointing at a key id or name (not at another alias, not at \
        a destroyed key). Action `alias:write` on `alias/{name}` and `key:read` on the key.",
    ),
    access: Access::Authenticated,
    params: &[],
    body: Some(Body {
        schema: Schema::of::<CreateAliasRequest>(),
        required: true,
        examples: Examples::One(r#"{"name": "billing-current", "key": "billing"}"#),
    }),
    answers: &[Answer {
        status: 201,
        description: "The alias was created.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<Alias>(),
        }),
    }],
    refusals: &[
        Refusal::BadRequest,
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::Conflict,
        Refusal::Gone,
        Refusal::UnsupportedMediaType,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `GET /v1/aliases`.
pub const LIST_ALIASES: Operation = Operation {
    id: "listAliases",
    method: Method::Get,
    path: "/v1/aliases",
    served_at: None,
    tags: &["aliases"],
    summary: "List aliases",
    description: Some("Every alias. Action `key:read` on `alias/*`."),
    access: Access::Authenticated,
    params: &[],
    body: None,
    answers: &[Answer {
        status: 200,
        description: "The aliases.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<AliasList>(),
        }),
    }],
    refusals: &[
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::MethodNotAllowed,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `GET /v1/aliases/{name}`.
pub const SHOW_ALIAS: Operation = Operation {
    id: "showAlias",
    method: Method::Get,
    path: "/v1/aliases/{name}",
    served_at: None,
    tags: &["aliases"],
    summary: "Show an alias",
    description: Some("Action `key:read` on `alias/{name}`."),
    access: Access::Authenticated,
    params: &[ParamUse::Shared(&ALIAS_NAME)],
    body: None,
    answers: &[Answer {
        status: 200,
        description: "The alias.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<Alias>(),
        }),
    }],
    refusals: &[
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `PUT /v1/aliases/{name}`.
pub const REPOINT_ALIAS: Operation = Operation {
    id: "repointAlias",
    method: Method::Put,
    path: "/v1/aliases/{name}",
    served_at: None,
    tags: &["aliases"],
    summary: "Re-point an alias",
    description: Some(
        "Points an existing alias at another key id or name. New work through the \
        alias goes to that key at once; existing blobs name their key id and are unaffected. \
        Action `alias:write` on `alias/{name}` and `key:read` on the key.",
    ),
    access: Access::Authenticated,
    params: &[ParamUse::Shared(&ALIAS_NAME)],
    body: Some(Body {
        schema: Schema::of::<RepointAliasRequest>(),
        required: true,
        examples: Examples::One(r#"{"key": "billing-2027"}"#),
    }),
    answers: &[Answer {
        status: 200,
        description: "The alias after the change.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<Alias>(),
        }),
    }],
    refusals: &[
        Refusal::BadRequest,
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::Gone,
        Refusal::UnsupportedMediaType,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `DELETE /v1/aliases/{name}`.
pub const DELETE_ALIAS: Operation = Operation {
    id: "deleteAlias",
    method: Method::Delete,
    path: "/v1/aliases/{name}",
    served_at: None,
    tags: &["aliases"],
    summary: "Delete an alias",
    description: Some(
        "Deletes the alias; the key is untouched. Action `alias:write` on \
        `alias/{name}`.",
    ),
    access: Access::Authenticated,
    params: &[ParamUse::Shared(&ALIAS_NAME)],
    body: None,
    answers: &[Answer {
        status: 204,
        description: "The alias was deleted.",
        content: None,
    }],
    refusals: &[
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `GET /v1/health/live`.
pub const LIVE: Operation = Operation {
    id: "live",
    method: Method::Get,
    path: "/v1/health/live",
    served_at: None,
    tags: &["health"],
    summary: "Liveness",
    description: Some("The process is serving HTTP. Public."),
    access: Access::Public,
    params: &[],
    body: None,
    answers: &[Answer {
        status: 200,
        description: "Live.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<Live>(),
        }),
    }],
    refusals: &[Refusal::MethodNotAllowed],
};

/// `GET /v1/health/ready`.
pub const READY: Operation = Operation {
    id: "ready",
    method: Method::Get,
    path: "/v1/health/ready",
    served_at: None,
    tags: &["health"],
    summary: "Readiness",
    description: Some(
        "A device session works now, the database accepts a write now, and the audit \
        log is writable with its stored chain intact (`audit`). Public.",
    ),
    access: Access::Public,
    params: &[],
    body: None,
    answers: &[
        Answer {
            status: 200,
            description: "Ready.",
            content: Some(Content {
                media: "application/json",
                schema: Schema::of::<Ready>(),
            }),
        },
        Answer {
            status: 503,
            description: "Not ready: the device or the database is not usable.",
            content: Some(Content {
                media: "application/json",
                schema: Schema::of::<Ready>(),
            }),
        },
    ],
    refusals: &[Refusal::MethodNotAllowed],
};

/// `GET /v1/openapi.json`.
pub const OPENAPI: Operation = Operation {
    id: "openapi",
    method: Method::Get,
    path: "/v1/openapi.json",
    served_at: None,
    tags: &["meta"],
    summary: "This document",
    description: Some("The OpenAPI document, embedded in the binary. Public."),
    access: Access::Public,
    params: &[],
    body: None,
    answers: &[Answer {
        status: 200,
        description: "The OpenAPI document.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::Json(r#"{"type": "object"}"#),
        }),
    }],
    refusals: &[Refusal::MethodNotAllowed],
};

/// `GET /v1/jobs/{id}/events`.
pub const JOB_EVENTS: Operation = Operation {
    id: "jobEvents",
    method: Method::Get,
    path: "/v1/jobs/{id}/events",
    served_at: None,
    tags: &["lifecycle"],
    summary: "The trail of a job: started, one event per committed batch, completed or failed",
    description: None,
    access: Access::Authenticated,
    params: &[ParamUse::Shared(&JOB_ID)],
    body: None,
    answers: &[Answer {
        status: 200,
        description: "The events, oldest first",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<JobEventList>(),
        }),
    }],
    refusals: &[
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `POST /v1/principals`.
pub const CREATE_PRINCIPAL: Operation = Operation {
    id: "createPrincipal",
    method: Method::Post,
    path: "/v1/principals",
    served_at: None,
    tags: &["principals"],
    summary: "Create a principal",
    description: Some(
        "A named identity with attributes and attached policies. Action \
        `principal:admin` on `principal/{name}`.",
    ),
    access: Access::Authenticated,
    params: &[],
    body: Some(Body {
        schema: Schema::of::<CreatePrincipalRequest>(),
        required: true,
        examples: Examples::One(
            r#"{"name": "billing-app", "attributes": {"tenant": "acme"}, "policies": ["billing"]}"#,
        ),
    }),
    answers: &[Answer {
        status: 201,
        description: "The principal was created.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<Principal>(),
        }),
    }],
    refusals: &[
        Refusal::BadRequest,
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::Conflict,
        Refusal::UnsupportedMediaType,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `GET /v1/principals`.
pub const LIST_PRINCIPALS: Operation = Operation {
    id: "listPrincipals",
    method: Method::Get,
    path: "/v1/principals",
    served_at: None,
    tags: &["principals"],
    summary: "List principals",
    description: Some("Every principal. Action `principal:admin` on `principal/*`."),
    access: Access::Authenticated,
    params: &[],
    body: None,
    answers: &[Answer {
        status: 200,
        description: "The principals.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<PrincipalList>(),
        }),
    }],
    refusals: &[
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::MethodNotAllowed,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `GET /v1/principals/{name}`.
pub const SHOW_PRINCIPAL: Operation = Operation {
    id: "showPrincipal",
    method: Method::Get,
    path: "/v1/principals/{name}",
    served_at: None,
    tags: &["principals"],
    summary: "Show a principal",
    description: Some("Action `principal:admin` on `principal/{name}`."),
    access: Access::Authenticated,
    params: &[ParamUse::Shared(&PRINCIPAL_NAME)],
    body: None,
    answers: &[Answer {
        status: 200,
        description: "The principal.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<Principal>(),
        }),
    }],
    refusals: &[
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `PATCH /v1/principals/{name}`.
pub const UPDATE_PRINCIPAL: Operation = Operation {
    id: "updatePrincipal",
    method: Method::Patch,
    path: "/v1/principals/{name}",
    served_at: None,
    tags: &["principals"],
    summary: "Change a principal",
    description: Some(
        "Replaces the attributes and/or the attached policies, each as a whole; a \
        field left out stays. Applies at once on this node, within 5 s on others. Action \
        `principal:admin` on `principal/{name}`.",
    ),
    access: Access::Authenticated,
    params: &[ParamUse::Shared(&PRINCIPAL_NAME)],
    body: Some(Body {
        schema: Schema::of::<PatchPrincipalRequest>(),
        required: true,
        examples: Examples::One(r#"{"attributes": {"tenant": "globex"}}"#),
    }),
    answers: &[Answer {
        status: 200,
        description: "The principal after the change.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<Principal>(),
        }),
    }],
    refusals: &[
        Refusal::BadRequest,
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::UnsupportedMediaType,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `DELETE /v1/principals/{name}`.
pub const DELETE_PRINCIPAL: Operation = Operation {
    id: "deletePrincipal",
    method: Method::Delete,
    path: "/v1/principals/{name}",
    served_at: None,
    tags: &["principals"],
    summary: "Delete a principal",
    description: Some(
        "Deletes the principal and revokes every token it has (refused at once on \
        this node, within 5 s on others). Action `principal:admin` on `principal/{name}`.",
    ),
    access: Access::Authenticated,
    params: &[ParamUse::Shared(&PRINCIPAL_NAME)],
    body: None,
    answers: &[Answer {
        status: 204,
        description: "The principal was deleted.",
        content: None,
    }],
    refusals: &[
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `GET /v1/policies`.
pub const LIST_POLICIES: Operation = Operation {
    id: "listPolicies",
    method: Method::Get,
    path: "/v1/policies",
    served_at: None,
    tags: &["policies"],
    summary: "List policies",
    description: Some("Every policy, current versions. Action `policy:read` on `policy/*`."),
    access: Access::Authenticated,
    params: &[],
    body: None,
    answers: &[Answer {
        status: 200,
        description: "The policies.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<PolicyList>(),
        }),
    }],
    refusals: &[
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::MethodNotAllowed,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `POST /v1/policies/explain`.
pub const EXPLAIN_DECISION: Operation = Operation {
    id: "explainDecision",
    method: Method::Post,
    path: "/v1/policies/explain",
    served_at: None,
    tags: &["policies"],
    summary: "Explain a decision",
    description: Some(
        "The decision a principal would get for an action on a resource, with a \
        context and a source address, evaluated as enforcement would, and the statement that made \
        it. Action `policy:read` on `principal/{principal}`.",
    ),
    access: Access::Authenticated,
    params: &[],
    body: Some(Body {
        schema: Schema::of::<ExplainRequest>(),
        required: true,
        examples: Examples::One(
            r#"{"principal": "billing-app", "action": "datakey:generate", "resource": "key/billing-eu", "context": {"tenant": "acme"}}"#,
        ),
    }),
    answers: &[Answer {
        status: 200,
        description: "The decision.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<ExplainResponse>(),
        }),
    }],
    refusals: &[
        Refusal::BadRequest,
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::MethodNotAllowed,
        Refusal::UnsupportedMediaType,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `GET /v1/policies/{name}`.
pub const SHOW_POLICY: Operation = Operation {
    id: "showPolicy",
    method: Method::Get,
    path: "/v1/policies/{name}",
    served_at: None,
    tags: &["policies"],
    summary: "Show a policy",
    description: Some("The current version. Action `policy:read` on `policy/{name}`."),
    access: Access::Authenticated,
    params: &[ParamUse::Shared(&POLICY_NAME)],
    body: None,
    answers: &[Answer {
        status: 200,
        description: "The policy.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<Policy>(),
        }),
    }],
    refusals: &[
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `PUT /v1/policies/{name}`.
pub const PUT_POLICY: Operation = Operation {
    id: "putPolicy",
    method: Method::Put,
    path: "/v1/policies/{name}",
    served_at: None,
    tags: &["policies"],
    summary: "Write a policy",
    description: Some(
        "The body is the policy document. Every PUT writes a new version; it applies \
        at once on this node and within 5 s on others. An invalid document is 400 \
        `invalid_policy` naming the JSON path. Action `policy:admin` on `policy/{name}`.",
    ),
    access: Access::Authenticated,
    params: &[ParamUse::Shared(&POLICY_NAME)],
    body: Some(Body {
        schema: Schema::Named("PolicyDocument"),
        required: true,
        examples: Examples::One(
            r#"{"statements": [{"sid": "tenant-data-keys", "effect": "allow", "actions": ["datakey:generate", "decrypt"], "resources": ["key/billing-*"], "conditions": {"context_equals": {"tenant": "${principal.tenant}"}}}]}"#,
        ),
    }),
    answers: &[Answer {
        status: 200,
        description: "The policy as written.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<Policy>(),
        }),
    }],
    refusals: &[
        Refusal::BadRequest,
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::MethodNotAllowed,
        Refusal::UnsupportedMediaType,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `DELETE /v1/policies/{name}`.
pub const DELETE_POLICY: Operation = Operation {
    id: "deletePolicy",
    method: Method::Delete,
    path: "/v1/policies/{name}",
    served_at: None,
    tags: &["policies"],
    summary: "Delete a policy",
    description: Some(
        "Principals it is attached to stop getting what it allowed (and what it \
        denied) at once. A deleted built-in role is installed again at the next start. Action \
        `policy:admin` on `policy/{name}`.",
    ),
    access: Access::Authenticated,
    params: &[ParamUse::Shared(&POLICY_NAME)],
    body: None,
    answers: &[Answer {
        status: 204,
        description: "The policy was deleted.",
        content: None,
    }],
    refusals: &[
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `POST /v1/tokens`.
pub const CREATE_TOKEN: Operation = Operation {
    id: "createToken",
    method: Method::Post,
    path: "/v1/tokens",
    served_at: None,
    tags: &["tokens"],
    summary: "Mint a token",
    description: Some(
        "A bearer token for a principal, shown once in the response. Action \
        `principal:admin` on `principal/{principal}`.",
    ),
    access: Access::Authenticated,
    params: &[],
    body: Some(Body {
        schema: Schema::of::<CreateTokenRequest>(),
        required: true,
        examples: Examples::One(
            r#"{"principal": "billing-app", "ttl": "30d", "description": "billing service"}"#,
        ),
    }),
    answers: &[Answer {
        status: 201,
        description: "The token and its metadata.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<TokenCreated>(),
        }),
    }],
    refusals: &[
        Refusal::BadRequest,
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::UnsupportedMediaType,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `GET /v1/tokens`.
pub const LIST_TOKENS: Operation = Operation {
    id: "listTokens",
    method: Method::Get,
    path: "/v1/tokens",
    served_at: None,
    tags: &["tokens"],
    summary: "List tokens",
    description: Some(
        "Token metadata (never the token text), revoked and expired tokens included. \
        Action `principal:admin` on `principal/{principal}`, or on `principal/*` without the \
        filter.",
    ),
    access: Access::Authenticated,
    params: &[ParamUse::Shared(&TOKEN_PRINCIPAL)],
    body: None,
    answers: &[Answer {
        status: 200,
        description: "The tokens.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<TokenList>(),
        }),
    }],
    refusals: &[
        Refusal::BadRequest,
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::MethodNotAllowed,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `DELETE /v1/tokens/{id}`.
pub const REVOKE_TOKEN: Operation = Operation {
    id: "revokeToken",
    method: Method::Delete,
    path: "/v1/tokens/{id}",
    served_at: None,
    tags: &["tokens"],
    summary: "Revoke a token",
    description: Some(
        "The token is refused (`token_revoked`) at once by this node and within 5 s \
        by other nodes. Revoking a revoked token changes nothing. The token is looked up before \
        authorising, to know its principal. Action `principal:admin` on `principal/{the token's \
        principal}`.",
    ),
    access: Access::Authenticated,
    params: &[ParamUse::Shared(&TOKEN_ID)],
    body: None,
    answers: &[Answer {
        status: 204,
        description: "The token was revoked.",
        content: None,
    }],
    refusals: &[
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `POST /v1/access-keys`.
pub const CREATE_ACCESS_KEY: Operation = Operation {
    id: "createAccessKey",
    method: Method::Post,
    path: "/v1/access-keys",
    served_at: None,
    tags: &["access-keys"],
    summary: "Create an access key",
    description: Some(
        "An AWS SigV4 access key for a principal, for the AWS KMS-compatible door: the secret \
        is shown once in the response and stored sealed by the device under `key` (else \
        `[aws] access_key_key`, else `secrets.default_key`). Action `principal:admin` on \
        `principal/{principal}`, and `secret:use-key` on the sealing key.",
    ),
    access: Access::Authenticated,
    params: &[],
    body: Some(Body {
        schema: Schema::of::<CreateAccessKeyRequest>(),
        required: true,
        examples: Examples::One(
            r#"{"principal": "billing-app", "ttl": "90d", "description": "boto3 in billing"}"#,
        ),
    }),
    answers: &[Answer {
        status: 201,
        description: "The secret access key and the access key's metadata.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::Named("AccessKeyCreated"),
        }),
    }],
    refusals: &[
        Refusal::BadRequest,
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::Conflict,
        Refusal::UnsupportedMediaType,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `GET /v1/access-keys`.
pub const LIST_ACCESS_KEYS: Operation = Operation {
    id: "listAccessKeys",
    method: Method::Get,
    path: "/v1/access-keys",
    served_at: None,
    tags: &["access-keys"],
    summary: "List access keys",
    description: Some(
        "Access key metadata (never a secret), revoked and expired keys included. Action \
        `principal:admin` on `principal/{principal}`, or on `principal/*` without the filter.",
    ),
    access: Access::Authenticated,
    params: &[ParamUse::Shared(&ACCESS_KEY_PRINCIPAL)],
    body: None,
    answers: &[Answer {
        status: 200,
        description: "The access keys.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<AccessKeyList>(),
        }),
    }],
    refusals: &[
        Refusal::BadRequest,
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::MethodNotAllowed,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `DELETE /v1/access-keys/{id}`.
pub const REVOKE_ACCESS_KEY: Operation = Operation {
    id: "revokeAccessKey",
    method: Method::Delete,
    path: "/v1/access-keys/{id}",
    served_at: None,
    tags: &["access-keys"],
    summary: "Revoke an access key",
    description: Some(
        "Requests signed with the access key are refused (`access_key_revoked`) at once. \
        Revoking a revoked access key changes nothing. The access key is looked up before \
        authorising, to know its principal. Action `principal:admin` on `principal/{the access \
        key's principal}`.",
    ),
    access: Access::Authenticated,
    params: &[ParamUse::Shared(&ACCESS_KEY_ID)],
    body: None,
    answers: &[Answer {
        status: 204,
        description: "The access key was revoked.",
        content: None,
    }],
    refusals: &[
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `POST /v1/db/connections`.
pub const CREATE_DB_CONNECTION: Operation = Operation {
    id: "createDbConnection",
    method: Method::Post,
    path: "/v1/db/connections",
    served_at: None,
    tags: &["database"],
    summary: "Create a database connection",
    description: Some("Connects to the database as the admin and checks that it may manage roles (`CREATEROLE` or superuser) before anything is stored; the admin password is sealed like a secret (a data key of its own under `key`, else `secrets.default_key`) and never returned. Action `db:admin` on `db/{name}`, and `secret:use-key` on the sealing key."),
    access: Access::Authenticated,
    params: &[],
    body: Some(Body {
        schema: Schema::of::<CreateDbConnectionRequest>(),
        required: true,
        examples: Examples::One(r#"{"name": "orders", "url": "postgres://db.internal:5432/orders", "admin_user": "custodian_admin", "admin_password": "(read from a file)", "sslmode": "require"}"#),
    }),
    answers: &[Answer {
        status: 201,
        description: "The connection (never its password).",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<DbConnection>(),
        }),
    }],
    refusals: &[
        Refusal::BadRequest,
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::Conflict,
        Refusal::UnsupportedMediaType,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `GET /v1/db/connections`.
pub const LIST_DB_CONNECTIONS: Operation = Operation {
    id: "listDbConnections",
    method: Method::Get,
    path: "/v1/db/connections",
    served_at: None,
    tags: &["database"],
    summary: "List database connections",
    description: Some(
        "The connections the caller may administer (`db:admin` on `db/{name}`), by name.",
    ),
    access: Access::Authenticated,
    params: &[],
    body: None,
    answers: &[Answer {
        status: 200,
        description: "The connections.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<DbConnectionList>(),
        }),
    }],
    refusals: &[
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::MethodNotAllowed,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `GET /v1/db/connections/{name}`.
pub const SHOW_DB_CONNECTION: Operation = Operation {
    id: "showDbConnection",
    method: Method::Get,
    path: "/v1/db/connections/{name}",
    served_at: None,
    tags: &["database"],
    summary: "Show a database connection",
    description: Some("Action `db:admin` on `db/{name}`."),
    access: Access::Authenticated,
    params: &[ParamUse::Shared(&DB_CONNECTION_NAME)],
    body: None,
    answers: &[Answer {
        status: 200,
        description: "The connection.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<DbConnection>(),
        }),
    }],
    refusals: &[
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `DELETE /v1/db/connections/{name}`.
pub const DELETE_DB_CONNECTION: Operation = Operation {
    id: "deleteDbConnection",
    method: Method::Delete,
    path: "/v1/db/connections/{name}",
    served_at: None,
    tags: &["database"],
    summary: "Delete a database connection",
    description: Some(
        "Refused (`db_connection_in_use`) while a role names it. Action `db:admin` on `db/{name}`.",
    ),
    access: Access::Authenticated,
    params: &[ParamUse::Shared(&DB_CONNECTION_NAME)],
    body: None,
    answers: &[Answer {
        status: 204,
        description: "The connection was deleted.",
        content: None,
    }],
    refusals: &[
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
        Refusal::Conflict,
    ],
};

/// `PUT /v1/db/roles/{name}`.
pub const PUT_DB_ROLE: Operation = Operation {
    id: "putDbRole",
    method: Method::Put,
    path: "/v1/db/roles/{name}",
    served_at: None,
    tags: &["database"],
    summary: "Create or change a database role",
    description: Some("A static role takes over the password of an existing database role: its first password is generated and set in the database at once. A dynamic role stores SQL templates. Action `db:admin` on `db/{connection}/{name}`."),
    access: Access::Authenticated,
    params: &[ParamUse::Shared(&DB_ROLE_NAME)],
    body: Some(Body {
        schema: Schema::of::<PutDbRoleRequest>(),
        required: true,
        examples: Examples::One(r#"{"connection": "orders", "kind": "dynamic", "creation_statements": ["CREATE ROLE {{name}} LOGIN PASSWORD {{password}} VALID UNTIL {{expiration}}", "GRANT SELECT ON ALL TABLES IN SCHEMA public TO {{name}}"], "default_ttl": "1h", "max_ttl": "24h"}"#),
    }),
    answers: &[Answer {
        status: 200,
        description: "The role.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<DbRole>(),
        }),
    }],
    refusals: &[
        Refusal::BadRequest,
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::Conflict,
        Refusal::UnsupportedMediaType,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `GET /v1/db/roles`.
pub const LIST_DB_ROLES: Operation = Operation {
    id: "listDbRoles",
    method: Method::Get,
    path: "/v1/db/roles",
    served_at: None,
    tags: &["database"],
    summary: "List database roles",
    description: Some(
        "The roles the caller may administer (`db:admin` on `db/{connection}/{name}`), by name.",
    ),
    access: Access::Authenticated,
    params: &[],
    body: None,
    answers: &[Answer {
        status: 200,
        description: "The roles.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<DbRoleList>(),
        }),
    }],
    refusals: &[
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::MethodNotAllowed,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `GET /v1/db/roles/{name}`.
pub const SHOW_DB_ROLE: Operation = Operation {
    id: "showDbRole",
    method: Method::Get,
    path: "/v1/db/roles/{name}",
    served_at: None,
    tags: &["database"],
    summary: "Show a database role",
    description: Some("Action `db:admin` on `db/{connection}/{name}`."),
    access: Access::Authenticated,
    params: &[ParamUse::Shared(&DB_ROLE_NAME)],
    body: None,
    answers: &[Answer {
        status: 200,
        description: "The role.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<DbRole>(),
        }),
    }],
    refusals: &[
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `DELETE /v1/db/roles/{name}`.
pub const DELETE_DB_ROLE: Operation = Operation {
    id: "deleteDbRole",
    method: Method::Delete,
    path: "/v1/db/roles/{name}",
    served_at: None,
    tags: &["database"],
    summary: "Delete a database role",
    description: Some("Refused (`db_role_in_use`) while a lease of the role is live. A static role's database role keeps its last password. Action `db:admin` on `db/{connection}/{name}`."),
    access: Access::Authenticated,
    params: &[ParamUse::Shared(&DB_ROLE_NAME)],
    body: None,
    answers: &[Answer {
        status: 204,
        description: "The role was deleted.",
        content: None,
    }],
    refusals: &[
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
        Refusal::Conflict,
    ],
};

/// `GET /v1/db/static-creds/{name}`.
pub const READ_STATIC_CREDS: Operation = Operation {
    id: "readStaticCreds",
    method: Method::Get,
    path: "/v1/db/static-creds/{name}",
    served_at: None,
    tags: &["database"],
    summary: "Read a static role's password",
    description: Some("The current password and its version (or, with `version`, the previous one within its overlap). A rotation left unfinished (a crash, the database down) is finished first. Action `db:creds` on `db/{connection}/{name}`."),
    access: Access::Authenticated,
    params: &[ParamUse::Shared(&DB_ROLE_NAME),
        ParamUse::Own(Param {
            name: "version",
            location: Location::Query,
            required: false,
            description: "A password version (`db_password_version_not_found` unless it is the \
                current one or the previous one within its overlap).",
            schema: Schema::Json(r#"{"type": "integer", "minimum": 1}"#),
            example: None,
        }),],
    body: None,
    answers: &[Answer {
        status: 200,
        description: "The password.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<StaticCreds>(),
        }),
    }],
    refusals: &[
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
        Refusal::BadRequest,
    ],
};

/// `POST /v1/db/rotate-role/{name}`.
pub const ROTATE_DB_ROLE: Operation = Operation {
    id: "rotateDbRole",
    method: Method::Post,
    path: "/v1/db/rotate-role/{name}",
    served_at: None,
    tags: &["database"],
    summary: "Rotate a static role's password now",
    description: Some("Generates a password, records it as pending, sets it in the database, then makes it current. With the database down: 503 `database_unavailable`, the old password stays current and the rotation is retried in the background. Action `db:rotate` on `db/{connection}/{name}`."),
    access: Access::Authenticated,
    params: &[ParamUse::Shared(&DB_ROLE_NAME)],
    body: None,
    answers: &[Answer {
        status: 200,
        description: "The version now current.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<RotatedRole>(),
        }),
    }],
    refusals: &[
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
        Refusal::Conflict,
    ],
};

/// `POST /v1/db/creds/{name}`.
pub const CREATE_DB_CREDS: Operation = Operation {
    id: "createDbCreds",
    method: Method::Post,
    path: "/v1/db/creds/{name}",
    served_at: None,
    tags: &["database"],
    summary: "Create dynamic database credentials",
    description: Some("Creates a database user with the creation statements of the role and returns it with a lease; at the end of the lease a background duty revokes it. Action `db:creds` on `db/{connection}/{name}`."),
    access: Access::Authenticated,
    params: &[ParamUse::Shared(&DB_ROLE_NAME)],
    body: Some(Body {
        schema: Schema::of::<DbCredsRequest>(),
        required: false,
        examples: Examples::One(r#"{"ttl": "15m"}"#),
    }),
    answers: &[Answer {
        status: 201,
        description: "The user, its password and its lease.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<DbCreds>(),
        }),
    }],
    refusals: &[
        Refusal::BadRequest,
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::Conflict,
        Refusal::UnsupportedMediaType,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `POST /v1/db/leases/{id}/renew`.
pub const RENEW_DB_LEASE: Operation = Operation {
    id: "renewDbLease",
    method: Method::Post,
    path: "/v1/db/leases/{id}/renew",
    served_at: None,
    tags: &["database"],
    summary: "Renew a lease",
    description: Some("Moves the end of the lease (and the user's `VALID UNTIL`) to now + `increment`; past the max TTL is refused (`lease_max_ttl_exceeded`). Action `db:creds` on `db/{connection}/{role}`."),
    access: Access::Authenticated,
    params: &[ParamUse::Shared(&DB_LEASE_ID)],
    body: Some(Body {
        schema: Schema::of::<RenewLeaseRequest>(),
        required: false,
        examples: Examples::One(r#"{"increment": "30m"}"#),
    }),
    answers: &[Answer {
        status: 200,
        description: "The lease.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<DbLease>(),
        }),
    }],
    refusals: &[
        Refusal::BadRequest,
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::Conflict,
        Refusal::UnsupportedMediaType,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `DELETE /v1/db/leases/{id}`.
pub const REVOKE_DB_LEASE: Operation = Operation {
    id: "revokeDbLease",
    method: Method::Delete,
    path: "/v1/db/leases/{id}",
    served_at: None,
    tags: &["database"],
    summary: "Revoke a lease",
    description: Some("Runs the revocation statements of the role now; revoking a revoked lease changes nothing. Action `db:creds` on `db/{connection}/{role}`."),
    access: Access::Authenticated,
    params: &[ParamUse::Shared(&DB_LEASE_ID)],
    body: None,
    answers: &[Answer {
        status: 204,
        description: "The lease was revoked.",
        content: None,
    }],
    refusals: &[
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::NotFound,
        Refusal::MethodNotAllowed,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `GET /v1/audit/events`.
pub const AUDIT_EVENTS: Operation = Operation {
    id: "auditEvents",
    method: Method::Get,
    path: "/v1/audit/events",
    served_at: None,
    tags: &["audit"],
    summary: "Query audit records",
    description: Some(
        "Audit records in sequence order, filtered. Time filters take RFC 3339 \
        (`invalid_query` otherwise); a limit outside 1 to 1000 is `invalid_limit`. Action \
        `audit:read` on `audit/log`.",
    ),
    access: Access::Authenticated,
    params: &[
        ParamUse::Shared(&AUDIT_AFTER),
        ParamUse::Own(Param {
            name: "limit",
            location: Location::Query,
            required: false,
            description: "Page size, 1 to 1000 (`invalid_limit` otherwise).",
            schema: Schema::Json(
                r#"{"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}"#,
            ),
            example: None,
        }),
        ParamUse::Own(Param {
            name: "principal",
            location: Location::Query,
            required: false,
            description: "Only this principal.",
            schema: Schema::Json(r#"{"type": "string"}"#),
            example: None,
        }),
        ParamUse::Own(Param {
            name: "key",
            location: Location::Query,
            required: false,
            description: "Only records whose `key_id` is this key id.",
            schema: Schema::Json(r#"{"type": "string"}"#),
            example: None,
        }),
        ParamUse::Own(Param {
            name: "action",
            location: Location::Query,
            required: false,
            description: "Only this policy action.",
            schema: Schema::Json(r#"{"type": "string"}"#),
            example: None,
        }),
        ParamUse::Own(Param {
            name: "outcome",
            location: Location::Query,
            required: false,
            description: "Only this outcome.",
            schema: Schema::of::<AuditOutcome>(),
            example: None,
        }),
        ParamUse::Own(Param {
            name: "since",
            location: Location::Query,
            required: false,
            description: "Only records at or after this time (RFC 3339).",
            schema: Schema::Json(r#"{"type": "string", "format": "date-time"}"#),
            example: None,
        }),
        ParamUse::Own(Param {
            name: "until",
            location: Location::Query,
            required: false,
            description: "Only records before this time (RFC 3339).",
            schema: Schema::Json(r#"{"type": "string", "format": "date-time"}"#),
            example: None,
        }),
    ],
    body: None,
    answers: &[Answer {
        status: 200,
        description: "A page of records.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<AuditEventList>(),
        }),
    }],
    refusals: &[
        Refusal::BadRequest,
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::MethodNotAllowed,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `GET /v1/audit/export`.
pub const AUDIT_EXPORT: Operation = Operation {
    id: "auditExport",
    method: Method::Get,
    path: "/v1/audit/export",
    served_at: None,
    tags: &["audit"],
    summary: "Export the audit log",
    description: Some(
        "JSON Lines, streamed: a header, the records after `after` (default: where \
        the stored log starts) and the checkpoints, each right after the record it signs; it ends \
        on a checkpoint. Without `until` the server first signs a checkpoint over everything \
        written, unless an export had one signed within `audit.export_checkpoint_interval` \
        (default 60 s): then the export ends at the latest checkpoint; with `until` the export \
        stops at the last checkpoint at or before it. If the server fails mid-stream the body \
        ends early and the file fails verification. Verify offline with `custodian audit verify` \
        (docs/audit.md). Action `audit:read` on `audit/log`.",
    ),
    access: Access::Authenticated,
    params: &[
        ParamUse::Own(Param {
            name: "after",
            location: Location::Query,
            required: false,
            description: "Start after this sequence (not below the last archive: \
                `audit_archived`).",
            schema: Schema::Json(
                r#"{"type": "integer", "minimum": 0, "maximum": 18446744073709551615}"#,
            ),
            example: None,
        }),
        ParamUse::Own(Param {
            name: "until",
            location: Location::Query,
            required: false,
            description: "Stop at the last checkpoint at or before this sequence.",
            schema: Schema::Json(
                r#"{"type": "integer", "minimum": 0, "maximum": 18446744073709551615}"#,
            ),
            example: None,
        }),
    ],
    body: None,
    answers: &[Answer {
        status: 200,
        description: "The export, one JSON object per line.",
        content: Some(Content {
            media: "application/x-ndjson",
            schema: Schema::Named("AuditExportLine"),
        }),
    }],
    refusals: &[
        Refusal::BadRequest,
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::MethodNotAllowed,
        Refusal::Gone,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `GET /v1/audit/public-key`.
pub const AUDIT_PUBLIC_KEY: Operation = Operation {
    id: "auditPublicKey",
    method: Method::Get,
    path: "/v1/audit/public-key",
    served_at: None,
    tags: &["audit"],
    summary: "The audit signing public key",
    description: Some(
        "The ECDSA P-256 public key that signs checkpoints and custody reports, as \
        PEM (SubjectPublicKeyInfo). Its fingerprint is the hex SHA-256 of the DER form. Check it \
        against a fingerprint obtained out-of-band before relying on it. Action `audit:read` on \
        `audit/log`.",
    ),
    access: Access::Authenticated,
    params: &[],
    body: None,
    answers: &[Answer {
        status: 200,
        description: "PEM public key.",
        content: Some(Content {
            media: "application/x-pem-file",
            schema: Schema::Json(r#"{"type": "string"}"#),
        }),
    }],
    refusals: &[
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::MethodNotAllowed,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `POST /v1/audit/archive`.
pub const AUDIT_ARCHIVE: Operation = Operation {
    id: "auditArchive",
    method: Method::Post,
    path: "/v1/audit/archive",
    served_at: None,
    tags: &["audit"],
    summary: "Archive audit records up to a checkpoint",
    description: Some(
        "`through` must be a checkpoint's sequence (`not_a_checkpoint`). The server \
        recomputes the export of the records up to it, as `GET /v1/audit/export?until={through}` \
        returns it, and compares its SHA-256 with `export_sha256` (`export_mismatch`: nothing is \
        removed); then, in one transaction, removes those records and stores the archive entry. \
        Checkpoints are kept; later exports start at `through`. Action `audit:archive` on \
        `audit/log`.",
    ),
    access: Access::Authenticated,
    params: &[],
    body: Some(Body {
        schema: Schema::of::<AuditArchiveRequest>(),
        required: true,
        examples: Examples::None,
    }),
    answers: &[Answer {
        status: 200,
        description: "The archive entry.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::of::<AuditArchive>(),
        }),
    }],
    refusals: &[
        Refusal::BadRequest,
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::MethodNotAllowed,
        Refusal::Conflict,
        Refusal::PayloadTooLarge,
        Refusal::UnsupportedMediaType,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `GET /v1/custody/report`.
pub const CUSTODY_REPORT: Operation = Operation {
    id: "custodyReport",
    method: Method::Get,
    path: "/v1/custody/report",
    served_at: None,
    tags: &["audit"],
    summary: "The signed custody report",
    description: Some(
        "Every key version's root key read back from the device now (attributes, \
        type, size), with mode, dates, state, stored data keys and anomalies, plus the device and \
        the signing key; signed by the device-resident audit key. No report when the device \
        cannot be read (`device_unavailable`). Verify offline with `custodian custody verify` or \
        OpenSSL (docs/audit.md). Action `custody:read` on `custody/report`.",
    ),
    access: Access::Authenticated,
    params: &[],
    body: None,
    answers: &[Answer {
        status: 200,
        description: "The signed envelope.",
        content: Some(Content {
            media: "application/json",
            schema: Schema::Named("SignedReport"),
        }),
    }],
    refusals: &[
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::MethodNotAllowed,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// `GET /metrics`.
pub const METRICS: Operation = Operation {
    id: "metrics",
    method: Method::Get,
    path: "/metrics",
    served_at: None,
    tags: &["operations"],
    summary: "This node's Prometheus metrics",
    description: Some(
        "Requests, device operations and sessions, the KEK cache, audit commits and the chain \
        head, store latency and pool use, re-wrap job progress and the key inventory, in the \
        OpenMetrics text format (docs/operations.md lists every series). Values read at scrape \
        time (inventory, jobs, pools) are read fresh on each request. Action `metrics:read` on \
        `metrics/node` (the built-in role `monitoring` has it).",
    ),
    access: Access::Authenticated,
    params: &[],
    body: None,
    answers: &[Answer {
        status: 200,
        description: "The metrics, ending with `# EOF`.",
        content: Some(Content {
            media: "application/openmetrics-text",
            schema: Schema::Json(r#"{"type": "string"}"#),
        }),
    }],
    refusals: &[
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::MethodNotAllowed,
        Refusal::TooManyRequests,
        Refusal::Unavailable,
        Refusal::InternalError,
    ],
};

/// A file of the auditor's page, served from the binary: public (it carries no data; every
/// value the page shows comes from an API call made with the token typed into it).
macro_rules! ui_file {
    ($id:literal, $path:literal, $summary:literal, $media:literal) => {
        Operation {
            id: $id,
            method: Method::Get,
            path: $path,
            served_at: None,
            tags: &["operations"],
            summary: $summary,
            description: Some(
                "Part of the auditor's page (docs/operations.md), checked into the repository \
                and embedded in the binary; no third-party assets. Served with a strict \
                Content-Security-Policy (scripts and styles from this origin only, no inline \
                script, no framing). Public and not audited, like the OpenAPI document.",
            ),
            access: Access::Public,
            params: &[],
            body: None,
            answers: &[Answer {
                status: 200,
                description: "The file.",
                content: Some(Content {
                    media: $media,
                    schema: Schema::Json(r#"{"type": "string"}"#),
                }),
            }],
            refusals: &[Refusal::MethodNotAllowed],
        }
    };
}

/// `GET /ui/`.
pub const UI_PAGE: Operation = ui_file!("uiPage", "/ui/", "The auditor's page", "text/html");

/// `GET /ui/app.js`.
pub const UI_SCRIPT: Operation = ui_file!(
    "uiScript",
    "/ui/app.js",
    "The auditor's page: its script",
    "text/javascript"
);

/// `GET /ui/verify.js`.
pub const UI_VERIFIER: Operation = ui_file!(
    "uiVerifier",
    "/ui/verify.js",
    "The auditor's page: the audit export verifier (WebCrypto)",
    "text/javascript"
);

/// `GET /ui/style.css`.
pub const UI_STYLE: Operation = ui_file!(
    "uiStyle",
    "/ui/style.css",
    "The auditor's page: its style sheet",
    "text/css"
);

/// Every operation of the API, in the order of the document's first hand-written version.
pub const OPERATIONS: &[&Operation] = &[
    &CREATE_KEY,
    &LIST_KEYS,
    &SHOW_KEY,
    &UPDATE_KEY,
    &GENERATE_DATA_KEY,
    &ENCRYPT,
    &ROTATE_KEY,
    &DISABLE_KEY,
    &ENABLE_KEY,
    &SCHEDULE_KEY_DELETION,
    &CANCEL_KEY_DELETION,
    &LIST_KEY_VERSIONS,
    &CHANGE_KEY_VERSION,
    &START_REWRAP,
    &DECRYPT,
    &REENCRYPT,
    &LIST_SECRETS,
    &GET_SECRET,
    &PUT_SECRET,
    &DELETE_SECRET_VERSIONS,
    &GET_SECRET_METADATA,
    &PUT_SECRET_METADATA,
    &UNDELETE_SECRET_VERSIONS,
    &DESTROY_SECRET_VERSIONS,
    &ROTATE_SECRET,
    &LIST_JOBS,
    &SHOW_JOB,
    &CREATE_ALIAS,
    &LIST_ALIASES,
    &SHOW_ALIAS,
    &REPOINT_ALIAS,
    &DELETE_ALIAS,
    &LIVE,
    &READY,
    &OPENAPI,
    &JOB_EVENTS,
    &CREATE_PRINCIPAL,
    &LIST_PRINCIPALS,
    &SHOW_PRINCIPAL,
    &UPDATE_PRINCIPAL,
    &DELETE_PRINCIPAL,
    &LIST_POLICIES,
    &EXPLAIN_DECISION,
    &SHOW_POLICY,
    &PUT_POLICY,
    &DELETE_POLICY,
    &CREATE_TOKEN,
    &LIST_TOKENS,
    &REVOKE_TOKEN,
    &CREATE_ACCESS_KEY,
    &LIST_ACCESS_KEYS,
    &REVOKE_ACCESS_KEY,
    &CREATE_DB_CONNECTION,
    &LIST_DB_CONNECTIONS,
    &SHOW_DB_CONNECTION,
    &DELETE_DB_CONNECTION,
    &PUT_DB_ROLE,
    &LIST_DB_ROLES,
    &SHOW_DB_ROLE,
    &DELETE_DB_ROLE,
    &READ_STATIC_CREDS,
    &ROTATE_DB_ROLE,
    &CREATE_DB_CREDS,
    &RENEW_DB_LEASE,
    &REVOKE_DB_LEASE,
    &AUDIT_EVENTS,
    &AUDIT_EXPORT,
    &AUDIT_PUBLIC_KEY,
    &AUDIT_ARCHIVE,
    &CUSTODY_REPORT,
    &METRICS,
    &UI_PAGE,
    &UI_SCRIPT,
    &UI_VERIFIER,
    &UI_STYLE,
];
