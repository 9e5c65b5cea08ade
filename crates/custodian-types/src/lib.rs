//! Custodian's shared types, linked by the server (`custodian`) and the client library
//! (`custodian-client`) alike, so both ends read and write one definition of everything on the
//! wire.
//!
//! - [`domain`]: identifiers and states (`KeyId`, `KeyName`, `KeyVersion`, `SecretPath`, …); no
//!   I/O.
//! - [`format`]: the versioned ciphertext blob and the canonical encryption-context encoding.
//! - [`secret`]: zeroising, redacting holders of secret bytes and text.
//! - [`api_types`]: the native API's request and response bodies, the table of its operations,
//!   and the generator of `docs/openapi.json`.
//!
//! Nothing here names a device, a database or an HTTP stack: the crate compiles to plain data
//! types and pure functions (see `docs/decisions/0030-client-crate-layout.md`).
//!
//! # Safety and secrets
//!
//! Plaintext data keys, payloads and bearer tokens live in the types of [`secret`]: zeroised on
//! drop, redacted in `Debug`. `unsafe` is forbidden.

pub mod api_types;
pub mod domain;
pub mod format;
pub mod secret;
