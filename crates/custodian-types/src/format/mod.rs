//! Wire formats: the versioned ciphertext blob and the canonical encryption-context encoding.
//! Byte-by-byte documentation lives in `docs/formats.md`; test vectors in `tests/vectors/`.

pub mod blob;
pub mod context;

pub use blob::{Blob, BlobError};
pub use context::{ContextError, EncryptionContext};
