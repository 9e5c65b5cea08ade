//! Wire formats: the versioned ciphertext blob and the canonical encryption-context encoding
//! (shared with the client, from `custodian-types`), and the server's sealing of stored secret
//! values ([`secret`]). Byte-by-byte documentation lives in `docs/formats.md`; test vectors in
//! `tests/vectors/`.

pub mod secret;

pub use custodian_types::format::{
    blob, context, Blob, BlobError, ContextError, EncryptionContext,
};
