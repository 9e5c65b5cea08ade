//! Custodian's Rust client library, used by applications and by the `custodian` CLI alike.
//!
//! - [`Client`]: typed calls to the native API with the request and response types the server
//!   itself uses (`custodian_types::api_types`); a bearer token or a TLS client certificate;
//!   retries with back-off on `503` and `429` that honour `Retry-After` ([`RetryPolicy`]);
//!   connect and request timeouts; errors that carry the server's code and request id
//!   ([`Error`]).
//! - [`DataKey`]: a data key's plaintext (zeroised on drop, never in `Debug`) and wrapped copy.
//! - [`DataKeyCache`]: reuse of data keys within bounds on age, messages, bytes and entries,
//!   like the AWS Encryption SDK's caching materials manager; off unless configured.
//! - [`stream`]: envelope encryption of data of any size in constant memory, as
//!   `Read`/`Write` and `AsyncRead`/`AsyncWrite` adapters (format in `docs/formats.md`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), custodian_client::Error> {
//! use custodian_client::{Client, StreamOptions};
//! use custodian_client::types::format::EncryptionContext;
//! use custodian_client::types::secret::BearerToken;
//! use std::io::Write as _;
//!
//! let client = Client::builder("https://kms.example:8200")
//!     .bearer_token(BearerToken::new(std::env::var("CUSTODIAN_TOKEN").unwrap_or_default()))
//!     .build()?;
//! let context = EncryptionContext::from_pairs([("tenant".into(), "acme".into())])?;
//! let enc = client.file_encryptor("orders", &context, StreamOptions::default()).await?;
//! let mut out = enc.writer(std::fs::File::create("data.cstf")?)?;
//! out.write_all(b"any amount of data")?;
//! out.finish()?;
//!
//! let mut input = std::fs::File::open("data.cstf")?;
//! let header = custodian_client::stream::read_header(&mut input)?;
//! let mut plain = client.file_decryptor(header).await?.reader(input);
//! std::io::copy(&mut plain, &mut std::io::sink())?; // Ok only when the whole file verified
//! # Ok(())
//! # }
//! ```
//!
//! # Safety and secrets
//!
//! Plaintext data keys and file keys live in zeroising types and never appear in `Debug`
//! output; the bearer token neither. This crate links no device or database driver and no
//! server code (`docs/decisions/0030-client-crate-layout.md`). `unsafe` is forbidden.

pub mod cache;
pub mod client;
pub mod database;
pub mod datakey;
pub mod error;
pub mod stream;

pub use cache::{CacheLimits, DataKeyCache};
pub use client::{Client, ClientBuilder, Retry, RetryPolicy};
/// The shared types (identifiers, blob and context formats, secret holders, API wire types).
pub use custodian_types as types;
pub use datakey::{DataKey, StreamOptions};
pub use error::Error;
