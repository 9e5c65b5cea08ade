//! The component schemas of the identifiers and formats the bodies share: the domain's newtypes
//! (`KeyId`, `KeyName`, key version numbers, `SecretPath`, durations, job states), the encryption
//! context, and schema-only markers for values the wire carries as plain numbers, strings or
//! maps (`SecretVersionNumber`, `TokenId`, `AuditHash`, `AuditTime`, `CustomMetadata`, …).
//!
//! Each is a small [`ToSchema`] implementation rather than a derive: the types serialise as a
//! string, a number or a map (`#[serde(transparent)]` or a hand-written `Serialize`), so their
//! schemas are those formats with the bounds the types check, which no derive can see.

use std::borrow::Cow;

use serde_json::json;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::{RefOr, SchemaFormat};
use utoipa::{PartialSchema, ToSchema};

use crate::domain::job::JobState;
use crate::domain::secret::{HumanDuration, SecretPath};
use crate::domain::{KeyId, KeyName, KeyVersion};
use crate::format::EncryptionContext;

/// Implements [`ToSchema`] for `$ty` as the component `$name`, whose schema `$body` builds.
macro_rules! component {
    ($($ty:ty => $name:literal, $body:expr;)*) => {
        $(
            impl PartialSchema for $ty {
                fn schema() -> RefOr<Schema> {
                    RefOr::T($body)
                }
            }

            impl ToSchema for $ty {
                fn name() -> Cow<'static, str> {
                    Cow::Borrowed($name)
                }
            }
        )*
    };
}

/// A number of a secret's version, from 1 (the wire carries a plain `u32`). Schema only.
#[derive(Debug)]
pub struct SecretVersionNumber;

/// A list of secret version numbers in a request (1 to 1000 of them). Schema only.
#[derive(Debug)]
pub struct SecretVersionList;

/// A token's public id (the wire carries a string). Schema only.
#[derive(Debug)]
pub struct TokenId;

/// A SHA-256 value as 64 lowercase hex digits (the wire carries a string). Schema only.
#[derive(Debug)]
pub struct AuditHash;

/// An audit time: RFC 3339, UTC, 6 fractional digits (the wire carries a string). Schema only.
#[derive(Debug)]
pub struct AuditTime;

/// A secret's custom metadata map (the domain's `CustomMetadata`, a map alias). Schema only.
#[derive(Debug)]
pub struct CustomMetadata;

/// A principal's attribute map (a map alias on the wire). Schema only.
#[derive(Debug)]
pub struct PrincipalAttributes;

/// The names of the policies attached to a principal. Schema only.
#[derive(Debug)]
pub struct PolicyNames;

/// A string schema.
fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

/// An integer schema from 1 to `u32::MAX`: a version number.
fn version_number() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .minimum(Some(1))
        .maximum(Some(u32::MAX))
}

/// A string-to-string map of at most `max` pairs whose names match `names` and whose values
/// have at most 1024 bytes.
fn string_map(max: usize, names: ObjectBuilder, description: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .max_properties(Some(max))
        .property_names(Some(names))
        .additional_properties(Some(string().max_length(Some(1024))))
        .description(Some(description))
}

component! {
    KeyId => "KeyId", Schema::Object(
        string()
            .format(Some(SchemaFormat::Custom("uuid".to_owned())))
            .description(Some("Immutable key id."))
            .build(),
    );
    KeyName => "KeyName", Schema::Object(
        string()
            .min_length(Some(1))
            .max_length(Some(KeyName::MAX_LEN))
            .pattern(Some("^[A-Za-z0-9][A-Za-z0-9._-]*$"))
            .description(Some(
                "Unique key name: letters, digits, '-', '_', '.', starting with a letter or \
                 digit; never shaped like a UUID.",
            ))
            .build(),
    );
    KeyVersion => "KeyVersionNumber", Schema::Object(version_number().build());
    SecretPath => "SecretPath", Schema::Object(
        string()
            .min_length(Some(1))
            .max_length(Some(SecretPath::MAX_LEN))
            .pattern(Some("^[A-Za-z0-9._-]{1,128}(/[A-Za-z0-9._-]{1,128}){0,15}$"))
            .description(Some(
                "Segments of letters, digits, '-', '_', '.' joined by '/'; no '.' or '..' \
                 segment; the last segment is not metadata, undelete, destroy or rotate.",
            ))
            .examples(["team/app/db-password"])
            .build(),
    );
    HumanDuration => "Duration", Schema::Object(
        string()
            .pattern(Some("^([0-9]+[dhms])+$"))
            .description(Some(
                "One or more <number><unit> parts, units d, h, m, s: `90d`, `1h30m`, `45s`. Not \
                 zero, at most 100 years. Returned in canonical form, largest unit first (`90s` \
                 is `1m30s`).",
            ))
            .examples(["90d"])
            .build(),
    );
    EncryptionContext => "EncryptionContext", Schema::Object(
        string_map(
            EncryptionContext::MAX_PAIRS,
            string().min_length(Some(1)).max_length(Some(256)),
            "Encryption context: string keys (1 to 256 bytes) to string values (at most 1024 \
             bytes), at most 64 pairs, no repeated key. Bound into the AAD of the blob; not \
             stored.",
        )
        .default(Some(json!({})))
        .build(),
    );
    JobState => "JobState", Schema::Object(
        string()
            .enum_values(Some(
                [JobState::Running, JobState::Completed, JobState::Failed].map(JobState::as_str),
            ))
            .build(),
    );
    SecretVersionNumber => "SecretVersionNumber", Schema::Object(
        version_number()
            .description(Some("A version number; versions are numbered from 1."))
            .build(),
    );
    SecretVersionList => "SecretVersionList", Schema::Array(
        ArrayBuilder::new()
            .items(SecretVersionNumber::schema_ref())
            .min_items(Some(1))
            .max_items(Some(1000))
            .build(),
    );
    TokenId => "TokenId", Schema::Object(
        string()
            .pattern(Some("^[0-9a-f]{16}$"))
            .description(Some(
                "Public token id: the part of the token between `cst_` and the secret.",
            ))
            .examples(["8bdb945d60c9c068"])
            .build(),
    );
    AuditHash => "AuditHash", Schema::Object(
        string()
            .pattern(Some("^[0-9a-f]{64}$"))
            .description(Some("64 lowercase hex digits: a SHA-256 value."))
            .build(),
    );
    AuditTime => "AuditTime", Schema::Object(
        string()
            .pattern(Some(
                "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{6}Z$",
            ))
            .description(Some(
                "RFC 3339, UTC, always 6 fractional digits: `2026-11-27T12:00:00.000000Z`.",
            ))
            .build(),
    );
    CustomMetadata => "CustomMetadata", Schema::Object(
        string_map(
            32,
            string().min_length(Some(1)).max_length(Some(128)),
            "Free string metadata: at most 32 pairs, keys 1 to 128 bytes, values at most 1024 \
             bytes.",
        )
        .build(),
    );
    PrincipalAttributes => "PrincipalAttributes", Schema::Object(
        string_map(
            32,
            string().pattern(Some("^[A-Za-z0-9_-]{1,64}$")),
            "Principal attributes, referred to as `${principal.<name>}` in policy conditions: \
             at most 32, names of 1 to 64 letters, digits, '_' or '-', values up to 1024 bytes \
             (`invalid_field` otherwise).",
        )
        .examples([json!({"tenant": "acme"})])
        .build(),
    );
    PolicyNames => "PolicyNames", Schema::Array(
        ArrayBuilder::new()
            .items(KeyName::schema_ref())
            .max_items(Some(32))
            .description(Some(
                "Attached policies, by name, evaluated in this order; each must exist \
                 (`policy_not_found`). At most 32 (`invalid_field`).",
            ))
            .build(),
    );
}

/// A reference to a type's component schema.
trait SchemaRef {
    /// `{"$ref": "#/components/schemas/<name>"}`.
    fn schema_ref() -> RefOr<Schema>;
}

impl<T: ToSchema> SchemaRef for T {
    fn schema_ref() -> RefOr<Schema> {
        RefOr::Ref(utoipa::openapi::Ref::from_schema_name(T::name()))
    }
}

/// The components of this module, for the document's `components.schemas`.
pub fn components() -> Vec<(String, RefOr<Schema>)> {
    fn entry<T: ToSchema>() -> (String, RefOr<Schema>) {
        (T::name().into_owned(), T::schema())
    }
    vec![
        entry::<KeyId>(),
        entry::<KeyName>(),
        entry::<KeyVersion>(),
        entry::<SecretPath>(),
        entry::<HumanDuration>(),
        entry::<EncryptionContext>(),
        entry::<JobState>(),
        entry::<SecretVersionNumber>(),
        entry::<SecretVersionList>(),
        entry::<TokenId>(),
        entry::<AuditHash>(),
        entry::<AuditTime>(),
        entry::<CustomMetadata>(),
        entry::<PrincipalAttributes>(),
        entry::<PolicyNames>(),
    ]
}
