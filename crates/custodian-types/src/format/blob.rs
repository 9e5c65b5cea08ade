//! The ciphertext blob, format version 1: self-describing, binary, strict and bounded.
//!
//! ```text
//! offset  size  field
//!      0     4  magic "CSTD" (0x43 0x53 0x54 0x44)
//!      4     1  format version (0x01)
//!      5     1  algorithm (0x01 = AES-256-GCM computed by the device)
//!      6    16  key id (UUID bytes)
//!     22     4  key version (u32 BE, ≥ 1)
//!     26     1  IV length (12 for AES-256-GCM)
//!     27     N  IV
//!   27+N     …  ciphertext
//!    end    16  GCM tag
//! ```
//!
//! The AAD is bytes 0..26 (the header) followed by the canonical encryption context
//! ([`super::EncryptionContext::canonical`]). The IV is authenticated by GCM itself.

use crate::domain::{Algorithm, KeyId, KeyVersion};

use super::EncryptionContext;

/// The four bytes every blob starts with.
pub const MAGIC: [u8; 4] = *b"CSTD";
/// The format version this code writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// Length of the authenticated header.
pub const HEADER_LEN: usize = 26;
/// AES-GCM IV length used by algorithm 0x01.
pub const GCM_IV_LEN: usize = 12;
/// AES-GCM tag length used by algorithm 0x01.
pub const GCM_TAG_LEN: usize = 16;
/// The largest payload `encrypt` accepts.
pub const MAX_PLAINTEXT_LEN: usize = 4096;
/// The largest blob the parser accepts: the largest payload plus every fixed field.
pub const MAX_BLOB_LEN: usize = HEADER_LEN + 1 + GCM_IV_LEN + MAX_PLAINTEXT_LEN + GCM_TAG_LEN;

/// Why bytes are not a blob this code can open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlobError {
    /// Fewer bytes than the fixed fields need.
    #[error("ciphertext is truncated")]
    Truncated,
    /// More bytes than any blob this service makes.
    #[error("ciphertext is longer than {MAX_BLOB_LEN} bytes")]
    TooLong,
    /// Not a Custodian blob.
    #[error("ciphertext does not start with the Custodian magic bytes")]
    BadMagic,
    /// A format version this build does not know.
    #[error("ciphertext format version {0} is not supported (this build reads version {FORMAT_VERSION})")]
    UnsupportedVersion(u8),
    /// An algorithm byte this build does not know.
    #[error("ciphertext algorithm 0x{0:02x} is not supported")]
    UnknownAlgorithm(u8),
    /// Key version 0.
    #[error("ciphertext names key version 0")]
    InvalidKeyVersion,
    /// An IV length the algorithm does not use.
    #[error("ciphertext IV length {0} does not match its algorithm")]
    InvalidIvLength(u8),
}

/// A parsed (or freshly sealed) blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Blob {
    /// The algorithm that sealed it.
    pub algorithm: Algorithm,
    /// The key that sealed it.
    pub key_id: KeyId,
    /// The key version that sealed it.
    pub key_version: KeyVersion,
    /// The GCM IV.
    pub iv: [u8; GCM_IV_LEN],
    /// Ciphertext followed by the 16-byte tag.
    pub ciphertext: Vec<u8>,
}

/// The authenticated header of a blob, before the device has sealed anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The algorithm that will seal it.
    pub algorithm: Algorithm,
    /// The key that will seal it.
    pub key_id: KeyId,
    /// The key version that will seal it.
    pub key_version: KeyVersion,
}

impl Header {
    /// The 26 header bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&MAGIC);
        out[4] = FORMAT_VERSION;
        out[5] = self.algorithm.code();
        out[6..22].copy_from_slice(self.key_id.as_bytes());
        out[22..26].copy_from_slice(&self.key_version.get().to_be_bytes());
        out
    }

    /// AAD for sealing and opening: header bytes ‖ canonical context.
    pub fn aad(&self, context: &EncryptionContext) -> Vec<u8> {
        let mut aad = self.to_bytes().to_vec();
        aad.extend_from_slice(&context.canonical());
        aad
    }
}

impl Blob {
    /// The header this blob authenticates.
    pub fn header(&self) -> Header {
        Header {
            algorithm: self.algorithm,
            key_id: self.key_id,
            key_version: self.key_version,
        }
    }

    /// Serialises the blob.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + 1 + GCM_IV_LEN + self.ciphertext.len());
        out.extend_from_slice(&self.header().to_bytes());
        out.push(GCM_IV_LEN as u8);
        out.extend_from_slice(&self.iv);
        out.extend_from_slice(&self.ciphertext);
        out
    }

    /// Parses a blob strictly: every field is checked, nothing is guessed.
    ///
    /// # Errors
    /// [`BlobError`] naming the first field that is wrong.
    pub fn parse(bytes: &[u8]) -> Result<Self, BlobError> {
        if bytes.len() > MAX_BLOB_LEN {
            return Err(BlobError::TooLong);
        }
        let magic = bytes.get(0..4).ok_or(BlobError::Truncated)?;
        if magic != MAGIC {
            return Err(BlobError::BadMagic);
        }
        let version = *bytes.get(4).ok_or(BlobError::Truncated)?;
        if version != FORMAT_VERSION {
            return Err(BlobError::UnsupportedVersion(version));
        }
        let alg_code = *bytes.get(5).ok_or(BlobError::Truncated)?;
        let algorithm =
            Algorithm::from_code(alg_code).ok_or(BlobError::UnknownAlgorithm(alg_code))?;
        let key_id: [u8; 16] = fixed(bytes, 6)?;
        let key_version = u32::from_be_bytes(fixed(bytes, 22)?);
        let key_version = KeyVersion::new(key_version).ok_or(BlobError::InvalidKeyVersion)?;
        let iv_len = *bytes.get(HEADER_LEN).ok_or(BlobError::Truncated)?;
        if usize::from(iv_len) != GCM_IV_LEN {
            return Err(BlobError::InvalidIvLength(iv_len));
        }
        let iv: [u8; GCM_IV_LEN] = fixed(bytes, HEADER_LEN + 1)?;
        let ciphertext = bytes
            .get(HEADER_LEN + 1 + GCM_IV_LEN..)
            .ok_or(BlobError::Truncated)?;
        if ciphertext.len() < GCM_TAG_LEN {
            return Err(BlobError::Truncated);
        }
        Ok(Self {
            algorithm,
            key_id: KeyId::from_bytes(key_id),
            key_version,
            iv,
            ciphertext: ciphertext.to_vec(),
        })
    }
}

/// `N` bytes at `offset`, or [`BlobError::Truncated`].
fn fixed<const N: usize>(bytes: &[u8], offset: usize) -> Result<[u8; N], BlobError> {
    bytes
        .get(offset..offset + N)
        .and_then(|s| s.try_into().ok())
        .ok_or(BlobError::Truncated)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Blob {
        Blob {
            algorithm: Algorithm::Aes256GcmDevice,
            key_id: KeyId::from_bytes([7; 16]),
            key_version: KeyVersion::new(3).unwrap(),
            iv: [9; GCM_IV_LEN],
            ciphertext: vec![1; 32 + GCM_TAG_LEN],
        }
    }

    #[test]
    fn round_trips() {
        let b = sample();
        assert_eq!(Blob::parse(&b.to_bytes()), Ok(b));
    }

    #[test]
    fn every_prefix_is_rejected() {
        let bytes = sample().to_bytes();
        let shortest = HEADER_LEN + 1 + GCM_IV_LEN + GCM_TAG_LEN;
        for n in 0..shortest {
            assert!(
                Blob::parse(&bytes[..n]).is_err(),
                "prefix of {n} bytes parsed"
            );
        }
        assert!(Blob::parse(&bytes[..shortest]).is_ok());
    }

    #[test]
    fn each_header_field_is_checked() {
        let good = sample().to_bytes();
        let with = |i: usize, v: u8| {
            let mut b = good.clone();
            b[i] = v;
            Blob::parse(&b)
        };
        assert_eq!(with(0, b'X'), Err(BlobError::BadMagic));
        assert_eq!(with(4, 2), Err(BlobError::UnsupportedVersion(2)));
        assert_eq!(with(5, 0x7f), Err(BlobError::UnknownAlgorithm(0x7f)));
        assert_eq!(with(HEADER_LEN, 16), Err(BlobError::InvalidIvLength(16)));
        let mut zero_version = good.clone();
        zero_version[22..26].copy_from_slice(&[0; 4]);
        assert_eq!(
            Blob::parse(&zero_version),
            Err(BlobError::InvalidKeyVersion)
        );
        let mut long = good;
        long.resize(MAX_BLOB_LEN + 1, 0);
        assert_eq!(Blob::parse(&long), Err(BlobError::TooLong));
    }

    #[test]
    fn aad_is_header_then_context() {
        let b = sample();
        let ctx = EncryptionContext::from_pairs([("a".to_owned(), "b".to_owned())]).unwrap();
        let aad = b.header().aad(&ctx);
        assert_eq!(&aad[..HEADER_LEN], &b.to_bytes()[..HEADER_LEN]);
        assert_eq!(&aad[HEADER_LEN..], &ctx.canonical()[..]);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            /// Arbitrary bytes never panic the parser, and whatever parses serialises back to
            /// exactly the same bytes (no two encodings of one blob).
            #[test]
            fn parse_is_total_and_canonical(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
                if let Ok(b) = Blob::parse(&bytes) {
                    prop_assert_eq!(b.to_bytes(), bytes);
                }
            }

            /// Valid blobs with any single byte changed either fail to parse or parse to a
            /// different blob (the device check then rejects it).
            #[test]
            fn single_byte_changes_are_visible(
                key in any::<[u8; 16]>(),
                version in 1u32..,
                iv in any::<[u8; GCM_IV_LEN]>(),
                ct in proptest::collection::vec(any::<u8>(), GCM_TAG_LEN..80),
                at in any::<prop::sample::Index>(),
                flip in 1u8..,
            ) {
                let blob = Blob {
                    algorithm: Algorithm::Aes256GcmDevice,
                    key_id: KeyId::from_bytes(key),
                    key_version: KeyVersion::new(version).unwrap(),
                    iv,
                    ciphertext: ct,
                };
                let mut bytes = blob.to_bytes();
                let i = at.index(bytes.len());
                bytes[i] ^= flip;
                prop_assert_ne!(Blob::parse(&bytes).ok(), Some(blob));
            }
        }
    }
}
