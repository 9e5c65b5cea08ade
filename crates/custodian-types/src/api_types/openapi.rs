//! The generator of `docs/openapi.json`.
//!
//! The operations (`paths`, with their parameters, bodies, examples and answers, and the shared
//! parameters, error answers and header they refer to) are built from the operation table
//! ([`super::routes::OPERATIONS`]), the list the router serves. The component schemas of the
//! types in this module's siblings are derived from the types themselves (`utoipa::ToSchema`).
//! `openapi_base.json` next to this file holds the rest: `info`, `servers`, the default
//! security requirement and its scheme, the tags, and the schemas of what no wire type
//! describes: the policy document (judged by the policy parser, not serde) and the audit
//! export's lines and the signed custody report (the audit module's own formats).
//! The base may hold neither a derived schema nor anything the table generates (a test checks).
//!
//! `docs/openapi.json` is this function's output, checked in; the test
//! `openapi::document_is_generated` fails when the two differ and rewrites the file when run with
//! `CUSTODIAN_UPDATE_OPENAPI=1`.

use serde_json::{json, Map, Value};
use utoipa::openapi::RefOr;
use utoipa::{OpenApi, ToSchema};

use super::access_keys::{AccessKeyList, CreateAccessKeyRequest};
use super::audit::{
    AuditArchive, AuditArchiveRequest, AuditEventList, AuditOutcome, AuditRecord, AuditStatus,
};
use super::crypto::{
    DataKeyRequest, DataKeyResponse, DecryptRequest, DecryptResponse, EncryptRequest,
    EncryptResponse, ReencryptRequest, ReencryptResponse,
};
use super::database::{
    CreateDbConnectionRequest, DbConnection, DbConnectionList, DbCreds, DbCredsRequest, DbLease,
    DbRole, DbRoleList, PutDbRoleRequest, RenewLeaseRequest, RotatedRole, StaticCreds,
};
use super::error::{ErrorBody, ErrorDetail};
use super::health::{DeviceHealth, Live, Ready};
use super::identity::{
    CreatePrincipalRequest, CreateTokenRequest, DecidedBy, ExplainRequest, ExplainResponse,
    PatchPrincipalRequest, Policy, PolicyList, Principal, PrincipalList, TokenCreated, TokenInfo,
    TokenList,
};
use super::keys::{CreateKeyRequest, Key, KeyList, KeyVersionRecord};
use super::lifecycle::{
    Alias, AliasList, CreateAliasRequest, Job, JobEvent, JobEventList, JobList, KeyVersionList,
    KeyVersionUsage, PatchKeyRequest, RepointAliasRequest, ScheduleDeletionRequest, VersionCount,
};
use super::routes::{
    Access, Answer, Examples, Operation, Param, ParamUse, Refusal, Schema, OPERATIONS,
};
use super::secrets::{
    DestroySecretRequest, GenerateSpecBody, PutSecretMetadataRequest, PutSecretRequest,
    SecretChanged, SecretList, SecretRecord, SecretValue, SecretVersionInfo, SecretVersionsRequest,
    SecretWritten,
};

/// The hand-written rest of the document.
pub const BASE: &str = include_str!("openapi_base.json");

/// The schemas derived from the wire types (with those of the identifiers and formats they
/// share, [`super::scalars::components`]).
#[derive(OpenApi)]
#[openapi(components(schemas(
    ErrorBody,
    ErrorDetail,
    CreateKeyRequest,
    Key,
    KeyVersionRecord,
    KeyList,
    DataKeyRequest,
    DataKeyResponse,
    EncryptRequest,
    EncryptResponse,
    DecryptRequest,
    DecryptResponse,
    ReencryptRequest,
    ReencryptResponse,
    PatchKeyRequest,
    ScheduleDeletionRequest,
    KeyVersionUsage,
    KeyVersionList,
    Job,
    VersionCount,
    JobList,
    JobEvent,
    JobEventList,
    Alias,
    CreateAliasRequest,
    RepointAliasRequest,
    AliasList,
    SecretValue,
    PutSecretRequest,
    SecretWritten,
    PutSecretMetadataRequest,
    SecretVersionsRequest,
    DestroySecretRequest,
    SecretChanged,
    GenerateSpecBody,
    SecretVersionInfo,
    SecretRecord,
    SecretList,
    Principal,
    CreatePrincipalRequest,
    PatchPrincipalRequest,
    PrincipalList,
    Policy,
    PolicyList,
    ExplainRequest,
    DecidedBy,
    ExplainResponse,
    CreateTokenRequest,
    TokenInfo,
    TokenCreated,
    TokenList,
    Live,
    Ready,
    DeviceHealth,
    AuditOutcome,
    AuditRecord,
    CreateAccessKeyRequest,
    AccessKeyList,
    AuditEventList,
    AuditArchiveRequest,
    AuditArchive,
    AuditStatus,
    CreateDbConnectionRequest,
    DbConnection,
    DbConnectionList,
    PutDbRoleRequest,
    DbRole,
    DbRoleList,
    StaticCreds,
    RotatedRole,
    DbCredsRequest,
    DbLease,
    DbCreds,
    RenewLeaseRequest,
)))]
struct Typed;

/// The typed answers, closed on the wire (the server sends no other members), though the
/// client reads them leniently: their types have no `deny_unknown_fields`, so the document's
/// `additionalProperties: false` is set here rather than derived.
const CLOSED_ANSWERS: &[&str] = &[
    "Error",
    "ErrorDetail",
    "DataKeyResponse",
    "EncryptResponse",
    "DecryptResponse",
    "ReencryptResponse",
    "Key",
    "KeyVersion",
    "KeyVersionUsage",
    "KeyVersions",
    "Job",
    "VersionCount",
    "JobEvent",
    "Alias",
    "SecretVersionInfo",
    "SecretRecord",
    "Principal",
    "Policy",
    "DecidedBy",
    "ExplainResponse",
    "TokenInfo",
    "TokenCreated",
    "AuditArchive",
    "JobList",
    "JobEventList",
    "AliasList",
    "SecretValue",
    "SecretWritten",
    "SecretChanged",
    "SecretList",
    "PrincipalList",
    "PolicyList",
    "TokenList",
    "AccessKeyList",
    "AuditEventList",
    "DbConnection",
    "DbConnectionList",
    "DbRole",
    "DbRoleList",
    "StaticCreds",
    "RotatedRole",
    "DbLease",
    "DbCreds",
    // Schema-only: the wire type is `UndeleteSecretRequest`'s, which is closed.
    "DestroySecretRequest",
];

/// Why the document could not be built.
#[derive(Debug, thiserror::Error)]
pub enum OpenApiError {
    /// The base is not JSON, or a schema does not serialise.
    #[error("openapi document: {0}")]
    Json(#[from] serde_json::Error),
    /// The base lacks `components.schemas`.
    #[error("openapi base: no components.schemas object")]
    NoSchemas,
    /// The base still describes a schema that a type now describes.
    #[error("openapi base: schema {0} is derived from a type; remove it from the base")]
    Duplicate(String),
    /// The base still holds a part the operation table generates.
    #[error("openapi base: {0} is generated from the operation table; remove it from the base")]
    Generated(&'static str),
    /// An operation names a tag the base does not list.
    #[error("operation {0}: tag {1} is not one of the document's tags")]
    UnknownTag(&'static str, &'static str),
    /// Two operations share a method and path.
    #[error("operation {0}: another operation has its method and path")]
    Twice(&'static str),
}

/// The schemas derived from types, by name.
fn typed_schemas() -> std::collections::BTreeMap<String, RefOr<utoipa::openapi::schema::Schema>> {
    let mut schemas = Typed::openapi()
        .components
        .map(|c| c.schemas)
        .unwrap_or_default();
    schemas.extend(super::scalars::components());
    schemas
}

/// The names of the schemas derived from types.
pub fn typed_schema_names() -> Vec<String> {
    typed_schemas().into_keys().collect()
}

/// The whole document.
///
/// # Errors
/// [`OpenApiError`]: the base is malformed or overlaps the typed schemas.
pub fn document() -> Result<Value, OpenApiError> {
    let mut doc: Value = serde_json::from_str(BASE)?;
    for (part, pointer) in [
        ("paths", "/paths"),
        ("components.parameters", "/components/parameters"),
        ("components.responses", "/components/responses"),
        ("components.headers", "/components/headers"),
    ] {
        if doc.pointer(pointer).is_some() {
            return Err(OpenApiError::Generated(part));
        }
    }
    let tags: Vec<String> = doc["tags"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let operations = Operations::build(OPERATIONS, &tags)?;
    if let Some(o) = doc.as_object_mut() {
        o.insert("paths".to_owned(), Value::Object(operations.paths));
    }
    if let Some(c) = doc
        .pointer_mut("/components")
        .and_then(Value::as_object_mut)
    {
        c.insert(
            "parameters".to_owned(),
            Value::Object(operations.parameters),
        );
        c.insert("responses".to_owned(), Value::Object(operations.responses));
        c.insert(
            "headers".to_owned(),
            json!({ "XRequestId": {
                "description": "Server-generated request id (UUID); repeated in error bodies.",
                "schema": {"type": "string", "format": "uuid"}
            }}),
        );
    }
    let schemas = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
        .ok_or(OpenApiError::NoSchemas)?;
    for (name, schema) in typed_schemas() {
        if schemas.contains_key(&name) {
            return Err(OpenApiError::Duplicate(name));
        }
        let schema = serde_json::to_value(schema)?;
        schemas.insert(name, schema);
    }
    for name in CLOSED_ANSWERS.iter().copied() {
        if let Some(schema) = schemas.get_mut(name) {
            close(schema);
        }
    }
    // What serde cannot say: a secret write sends exactly one of its two value members.
    if let Some(o) = schemas
        .get_mut("PutSecretRequest")
        .and_then(Value::as_object_mut)
    {
        o.insert(
            "oneOf".to_owned(),
            serde_json::json!([{"required": ["value"]}, {"required": ["value_text"]}]),
        );
    }
    Ok(doc)
}

/// The generated part of the document: the paths and the components they share.
struct Operations {
    paths: Map<String, Value>,
    parameters: Map<String, Value>,
    responses: Map<String, Value>,
}

impl Operations {
    /// The paths of `operations`, each tagged with some of `tags`.
    fn build(operations: &[&Operation], tags: &[String]) -> Result<Self, OpenApiError> {
        let mut built = Self {
            paths: Map::new(),
            parameters: Map::new(),
            responses: Map::new(),
        };
        for op in operations {
            if let Some(tag) = op.tags.iter().find(|t| !tags.iter().any(|n| n == *t)) {
                return Err(OpenApiError::UnknownTag(op.id, tag));
            }
            let item = built.operation(op)?;
            let path = built
                .paths
                .entry(op.path)
                .or_insert_with(|| Value::Object(Map::new()));
            if let Some(path) = path.as_object_mut() {
                if path.insert(op.method.as_str().to_owned(), item).is_some() {
                    return Err(OpenApiError::Twice(op.id));
                }
            }
        }
        Ok(built)
    }

    /// The operation object of `op`; notes the shared parameters and answers it refers to.
    fn operation(&mut self, op: &Operation) -> Result<Value, OpenApiError> {
        let mut o = Map::new();
        o.insert("operationId".to_owned(), json!(op.id));
        o.insert("summary".to_owned(), json!(op.summary));
        if let Some(d) = op.description {
            o.insert("description".to_owned(), json!(d));
        }
        o.insert("tags".to_owned(), json!(op.tags));
        if !op.params.is_empty() {
            let mut params = Vec::new();
            for p in op.params {
                params.push(match p {
                    ParamUse::Shared(shared) => {
                        self.parameters
                            .insert(shared.component.to_owned(), param(&shared.param)?);
                        json!({"$ref": format!("#/components/parameters/{}", shared.component)})
                    }
                    ParamUse::Own(p) => param(p)?,
                });
            }
            o.insert("parameters".to_owned(), Value::Array(params));
        }
        if let Some(body) = &op.body {
            let mut media = Map::new();
            media.insert("schema".to_owned(), schema(body.schema)?);
            match body.examples {
                Examples::None => {}
                Examples::One(e) => {
                    media.insert("example".to_owned(), serde_json::from_str(e)?);
                }
                Examples::Named(named) => {
                    let mut examples = Map::new();
                    for (name, e) in named {
                        let value: Value = serde_json::from_str(e)?;
                        examples.insert((*name).to_owned(), json!({ "value": value }));
                    }
                    media.insert("examples".to_owned(), Value::Object(examples));
                }
            }
            o.insert(
                "requestBody".to_owned(),
                json!({"required": body.required, "content": {"application/json": media}}),
            );
        }
        let mut responses = Map::new();
        for a in op.answers {
            responses.insert(a.status.to_string(), answer(a)?);
        }
        for r in op.refusals {
            self.responses.insert(r.component().to_owned(), refusal(*r));
            responses.insert(
                r.status().to_string(),
                json!({"$ref": format!("#/components/responses/{}", r.component())}),
            );
        }
        o.insert("responses".to_owned(), Value::Object(responses));
        if op.access == Access::Public {
            o.insert("security".to_owned(), json!([]));
        }
        Ok(Value::Object(o))
    }
}

/// The reference to the request-id header every answer carries.
fn request_id_header() -> Value {
    json!({"x-request-id": {"$ref": "#/components/headers/XRequestId"}})
}

/// A schema as the document writes it.
fn schema(s: Schema) -> Result<Value, OpenApiError> {
    Ok(match s {
        Schema::Typed(name) => json!({"$ref": format!("#/components/schemas/{}", name())}),
        Schema::Named(name) => json!({"$ref": format!("#/components/schemas/{name}")}),
        Schema::Json(text) => serde_json::from_str(text)?,
    })
}

/// A parameter object.
fn param(p: &Param) -> Result<Value, OpenApiError> {
    let location = match p.location {
        super::routes::Location::Path => "path",
        super::routes::Location::Query => "query",
    };
    let mut o = json!({
        "name": p.name,
        "in": location,
        "required": p.required,
        "description": p.description,
        "schema": schema(p.schema)?,
    });
    if let (Some(example), Some(o)) = (p.example, o.as_object_mut()) {
        o.insert("example".to_owned(), serde_json::from_str(example)?);
    }
    Ok(o)
}

/// A response object of an operation's own answer.
fn answer(a: &Answer) -> Result<Value, OpenApiError> {
    let mut o = json!({"description": a.description, "headers": request_id_header()});
    if let (Some(content), Some(o)) = (&a.content, o.as_object_mut()) {
        o.insert(
            "content".to_owned(),
            json!({ content.media: {"schema": schema(content.schema)?} }),
        );
    }
    Ok(o)
}

/// The shared response object of an error answer.
fn refusal(r: Refusal) -> Value {
    let mut headers = request_id_header();
    if let (true, Some(h)) = (r.retries_after(), headers.as_object_mut()) {
        h.insert(
            "Retry-After".to_owned(),
            json!({
                "description": "Seconds until the window of the address (or token id) ends.",
                "schema": {"type": "integer", "minimum": 1}
            }),
        );
    }
    json!({
        "description": r.description(),
        "headers": headers,
        "content": {"application/json": {"schema": {
            "$ref": format!("#/components/schemas/{}", ErrorBody::name())
        }}},
    })
}

/// Marks an object schema `additionalProperties: false`.
fn close(schema: &mut Value) {
    if let Some(o) = schema.as_object_mut() {
        o.insert("additionalProperties".to_owned(), Value::Bool(false));
    }
}

/// The document as `docs/openapi.json` holds it: pretty-printed, with a final newline.
///
/// # Errors
/// As [`document`].
pub fn document_text() -> Result<String, OpenApiError> {
    let mut text = serde_json::to_string_pretty(&document()?)?;
    text.push('\n');
    Ok(text)
}
