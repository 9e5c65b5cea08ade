//! Custodian: a key management service whose master keys live in hardware.
//!
//! The crate is laid out the way a request travels (see `docs/architecture.md`):
//!
//! ```text
//! api  →  service  →  { policy, backend, store }  →  domain / format
//! ```
//!
//! - [`api`]: the axum router, authentication, request extraction and the error → HTTP mapping.
//! - [`api_types`]: the native API's request and response bodies, shared by the handlers and the
//!   CLI client, and the generator of `docs/openapi.json`.
//! - [`service`]: [`service::KeyService`], where the backend, the store and policy meet.
//! - [`policy`]: the single place where authorisation is decided.
//! - [`audit`]: the hash-chained audit log, its signed checkpoints, export and offline checks,
//!   and the signed custody report.
//! - [`backend`]: the [`backend::KeyBackend`] trait and its PKCS#11 implementation.
//! - [`store`]: the [`store::Store`] trait and its SQLite implementation.
//! - [`format`]: the versioned ciphertext blob and the canonical encryption-context encoding.
//! - [`domain`]: identifiers and states shared by every layer; no I/O.
//! - [`metrics`]: the Prometheus registry behind `GET /metrics`.
//! - [`process`]: start-up hardening (no core dumps, `RLIMIT_NOFILE` raised).
//! - `fuzzing` (hidden): the bodies of the fuzz targets in `fuzz/`, shared with the stable
//!   corpus replay test.
//!
//! # Safety and secrets
//!
//! - Master keys are generated inside the device and are never readable: no code path, flag or
//!   API exports them. The backend hands out encrypt/decrypt operations, never key bytes.
//! - Plaintext data keys, payloads, PINs and bearer tokens live in the types of [`secret`]:
//!   zeroised on drop, redacted in `Debug`, never serialised except into a response body for a
//!   caller who asked for them.
//! - Nothing here logs a secret: every `tracing` span lists its fields explicitly.
//! - `unsafe` is forbidden; the FFI lives inside `cryptoki`.

pub mod api;
pub use custodian_types::api_types;
pub mod app;
pub mod audit;
pub mod aws;
pub mod backend;
pub mod cli;
pub mod clock;
pub mod config;
pub mod database;
pub use custodian_types::domain;
pub mod format;
#[doc(hidden)]
pub mod fuzzing;
pub mod metrics;
pub mod policy;
pub mod process;
pub mod rotation;
pub use custodian_types::secret;
pub mod service;
pub mod store;
pub mod telemetry;
pub mod vault;
