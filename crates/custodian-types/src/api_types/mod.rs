//! The native API's wire types (`/v1/...`): one definition of each request and response body,
//! used by the server's handlers (`api::v1`), by the CLI's client (`cli::client`), and by the
//! generator of `docs/openapi.json` ([`openapi`]); and the table of the operations ([`routes`])
//! that the router serves and the generator documents.
//!
//! This module imports only `domain`, `format` and `secret`: no axum, no handler, no `backend`
//! or `store`, so the client side uses the types without pulling in the server. The serde
//! attributes here *are* the wire format (field names, `skip_serializing_if`,
//! `deny_unknown_fields`); the server's per-field error codes stay with the extractor
//! (`api::extract::RequestBody`).
//!
//! Request bodies that carry a context or a secret are generic over those fields' types: the
//! server deserialises them into the validating, zeroising types (the defaults), the client
//! serialises the values it was given on the command line, unvalidated, so that the server stays
//! the one that judges them (and answers with its error code, as before).

pub mod access_keys;
pub mod audit;
pub mod crypto;
pub mod database;
pub mod error;
pub mod health;
pub mod identity;
pub mod keys;
pub mod lifecycle;
pub mod openapi;
pub mod routes;
pub mod scalars;
pub mod secrets;

use serde::Deserialize;
use utoipa::openapi::schema::{
    AllOfBuilder, ArrayBuilder, ObjectBuilder, OneOfBuilder, Schema, Type,
};
use utoipa::openapi::{Ref, RefOr};

/// Deserialises a field that distinguishes "absent" (`None`, through `#[serde(default)]`) from
/// `null` (`Some(None)`), e.g. `rotation_period: null` turning scheduled rotation off.
///
/// # Errors
/// The value is neither `null` nor a `T`.
pub fn double_option<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// A reference to a component schema by name (for fields whose type is described elsewhere in
/// the document, e.g. the domain's `KeyId`).
fn schema_ref(name: &str) -> RefOr<Schema> {
    RefOr::Ref(Ref::from_schema_name(name))
}

/// A reference to a component schema with a description of this use of it.
fn described_ref(name: &str, description: &str) -> RefOr<Schema> {
    let mut r = Ref::from_schema_name(name);
    r.description = description.to_owned();
    RefOr::Ref(r)
}

/// `allOf: [$ref]` with a description: a referenced schema that may be absent.
fn optional_ref(name: &str, description: &str) -> RefOr<Schema> {
    RefOr::T(Schema::AllOf(
        AllOfBuilder::new()
            .item(Ref::from_schema_name(name))
            .description(Some(description))
            .build(),
    ))
}

/// An array of a referenced schema, with a description.
fn array_of(name: &str, description: Option<&str>) -> RefOr<Schema> {
    RefOr::T(Schema::Array(
        ArrayBuilder::new()
            .items(Ref::from_schema_name(name))
            .description(description)
            .build(),
    ))
}

/// `oneOf: [$ref, null]` with a description: a referenced schema that `null` clears.
fn nullable_ref(name: &str, description: &str) -> RefOr<Schema> {
    RefOr::T(Schema::OneOf(
        OneOfBuilder::new()
            .item(Ref::from_schema_name(name))
            .item(ObjectBuilder::new().schema_type(Type::Null))
            .description(Some(description))
            .build(),
    ))
}

/// A string schema: one of `values`, with a default when there is one.
fn string_enum(values: &[&str], default: Option<&str>, description: Option<&str>) -> RefOr<Schema> {
    RefOr::T(Schema::Object(
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(values.iter().copied()))
            .default(default.map(Into::into))
            .description(description)
            .build(),
    ))
}

/// Defines functions returning a schema, for `#[schema(schema_with = …)]` (which takes a
/// function without arguments).
macro_rules! schema_fns {
    ($($(#[$doc:meta])* $name:ident => $body:expr;)*) => {
        $(
            $(#[$doc])*
            fn $name() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                $body
            }
        )*
    };
}
pub(crate) use schema_fns;
