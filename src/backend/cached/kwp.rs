//! Software wrapping of data keys under a [`VersionKek`]: RFC 5649 AES key wrap with padding
//! (KWP) under a key derived per (blob header, encryption context) with HKDF-SHA256.
//!
//! ```text
//! info = "custodian/kwp/v1" ‖ u32 BE len(header) ‖ header ‖ u32 BE len(context) ‖ context
//! K    = HKDF-SHA256(ikm = version-KEK, salt = none, info)  — 32 bytes
//! out  = AES-256-KWP(K, data key)                           — 8 + ⌈len/8⌉·8 bytes
//! ```
//!
//! `context` is the canonical encoding of the encryption context
//! ([`crate::format::EncryptionContext::canonical`]). Both parts are length-prefixed, so no two
//! (header, context) pairs give the same `info`: a different header or context gives a
//! different K, and KWP's integrity check (the 32-bit constant and the message length in its
//! alternative IV) then fails with [`KwpError::IntegrityCheckFailed`] — never garbage.
//!
//! **Salt: none** (HKDF's default of 32 zero bytes). The input keying material is already a
//! uniformly random 256-bit key from the device RNG, which is the case RFC 5869 §3.1 says needs
//! no salt; domain separation is the job of the `info` label, which also names the version of
//! this scheme. Leaving the salt out keeps the derivation reproducible with any HKDF library.

use aes_kw::KekAes256;
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::kek::VersionKek;
use crate::format::EncryptionContext;
use crate::secret::SecretBytes;

/// The label that starts the HKDF `info` (16 ASCII bytes, no terminator).
pub const INFO_LABEL: &[u8] = b"custodian/kwp/v1";
/// The longest authenticated header accepted (the v1 blob header is 26 bytes).
pub const MAX_HEADER_LEN: usize = 256;
/// The longest canonical context accepted: the largest context
/// [`EncryptionContext`] admits (64 pairs of a 256-byte key and a 1024-byte value).
pub const MAX_CONTEXT_LEN: usize = 4 + EncryptionContext::MAX_PAIRS
    * (8 + EncryptionContext::MAX_KEY_LEN + EncryptionContext::MAX_VALUE_LEN);
/// The shortest input wrapped: one byte (`encrypt` payloads start there; data keys are 16+).
pub const MIN_DATA_KEY_LEN: usize = 1;
/// The longest input wrapped: the largest `encrypt` payload (data keys are at most 32 bytes).
pub const MAX_DATA_KEY_LEN: usize = crate::format::blob::MAX_PLAINTEXT_LEN;
/// Bytes KWP adds to a data key whose length is a multiple of 8 (its alternative IV).
pub const KWP_OVERHEAD: usize = 8;

/// Why a wrap or an unwrap failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KwpError {
    // --- the input (a caller's blob or context) ---
    /// The wrapped key, its header or its context was changed, or another KEK wrapped it.
    /// Nothing of the unwrapped bytes is returned.
    #[error("the wrapped key failed its integrity check")]
    IntegrityCheckFailed,
    /// The wrapped bytes cannot be KWP output for a data key of an accepted length.
    #[error(
        "a wrapped data key is {min} to {max} bytes and a multiple of 8, not {0}",
        min = wrapped_len(MIN_DATA_KEY_LEN),
        max = wrapped_len(MAX_DATA_KEY_LEN)
    )]
    WrappedLength(usize),
    /// The data key is shorter than [`MIN_DATA_KEY_LEN`] or longer than [`MAX_DATA_KEY_LEN`].
    #[error("a data key is {MIN_DATA_KEY_LEN} to {MAX_DATA_KEY_LEN} bytes, not {0}")]
    DataKeyLength(usize),
    /// The header is longer than [`MAX_HEADER_LEN`].
    #[error("the authenticated header is at most {MAX_HEADER_LEN} bytes, not {0}")]
    HeaderLength(usize),
    /// The canonical context is longer than [`MAX_CONTEXT_LEN`].
    #[error("the canonical context is at most {MAX_CONTEXT_LEN} bytes, not {0}")]
    ContextLength(usize),

    // --- a bug ---
    /// Something that must hold did not.
    #[error("KWP invariant violated: {0}")]
    Invariant(&'static str),
}

/// The length of the KWP output for a data key of `data_key_len` bytes (RFC 5649 §4.1).
pub const fn wrapped_len(data_key_len: usize) -> usize {
    KWP_OVERHEAD + data_key_len.div_ceil(8) * 8
}

/// Wraps `data_key` under `kek`, bound to `header` and the canonical `context`.
///
/// # Errors
/// [`KwpError::DataKeyLength`], [`KwpError::HeaderLength`], [`KwpError::ContextLength`] for
/// inputs out of bounds; [`KwpError::Invariant`] should never happen.
pub fn wrap(
    kek: &VersionKek,
    header: &[u8],
    context: &[u8],
    data_key: &[u8],
) -> Result<Vec<u8>, KwpError> {
    if !(MIN_DATA_KEY_LEN..=MAX_DATA_KEY_LEN).contains(&data_key.len()) {
        return Err(KwpError::DataKeyLength(data_key.len()));
    }
    let kwp = derive(kek, header, context)?;
    let wrapped = kwp
        .wrap_with_padding_vec(data_key)
        .map_err(|_| KwpError::Invariant("KWP wraps any data key of an accepted length"))?;
    if wrapped.len() != wrapped_len(data_key.len()) {
        return Err(KwpError::Invariant("KWP output has the RFC 5649 length"));
    }
    Ok(wrapped)
}

/// Unwraps what [`wrap`] produced with the same `kek`, `header` and `context`.
///
/// # Errors
/// [`KwpError::IntegrityCheckFailed`] when anything differs from the wrap (a bit of `wrapped`,
/// the header, the context, the KEK); [`KwpError::WrappedLength`] when `wrapped` cannot be a
/// wrapped data key; [`KwpError::DataKeyLength`] when it authenticates but holds a key of a
/// length [`wrap`] refuses; the bound errors of [`wrap`] for header and context.
pub fn unwrap(
    kek: &VersionKek,
    header: &[u8],
    context: &[u8],
    wrapped: &[u8],
) -> Result<SecretBytes, KwpError> {
    let len_ok = (wrapped_len(MIN_DATA_KEY_LEN)..=wrapped_len(MAX_DATA_KEY_LEN))
        .contains(&wrapped.len())
        && wrapped.len() % 8 == 0;
    if !len_ok {
        return Err(KwpError::WrappedLength(wrapped.len()));
    }
    let kwp = derive(kek, header, context)?;
    // Unwrap into a zeroising buffer: on an integrity failure it holds decrypted garbage, which
    // is wiped like a key.
    let mut out = Zeroizing::new(vec![0u8; wrapped.len() - KWP_OVERHEAD]);
    let key_len = match kwp.unwrap_with_padding(wrapped, &mut out) {
        Ok(key) => key.len(),
        Err(aes_kw::Error::IntegrityCheckFailed) => return Err(KwpError::IntegrityCheckFailed),
        Err(_) => return Err(KwpError::WrappedLength(wrapped.len())),
    };
    if !(MIN_DATA_KEY_LEN..=MAX_DATA_KEY_LEN).contains(&key_len) {
        return Err(KwpError::DataKeyLength(key_len));
    }
    out.truncate(key_len);
    Ok(SecretBytes::new(out))
}

/// The HKDF `info`: label ‖ u32 BE len(header) ‖ header ‖ u32 BE len(context) ‖ context.
fn info(header: &[u8], context: &[u8]) -> Result<Vec<u8>, KwpError> {
    if header.len() > MAX_HEADER_LEN {
        return Err(KwpError::HeaderLength(header.len()));
    }
    if context.len() > MAX_CONTEXT_LEN {
        return Err(KwpError::ContextLength(context.len()));
    }
    let header_len = u32::try_from(header.len())
        .map_err(|_| KwpError::Invariant("a bounded header length fits in u32"))?;
    let context_len = u32::try_from(context.len())
        .map_err(|_| KwpError::Invariant("a bounded context length fits in u32"))?;
    let mut info = Vec::with_capacity(INFO_LABEL.len() + 8 + header.len() + context.len());
    info.extend_from_slice(INFO_LABEL);
    info.extend_from_slice(&header_len.to_be_bytes());
    info.extend_from_slice(header);
    info.extend_from_slice(&context_len.to_be_bytes());
    info.extend_from_slice(context);
    Ok(info)
}

/// The KWP key for this (KEK, header, context). The derived bytes live in a zeroising buffer;
/// the AES key schedule built from them is wiped on drop (`aes` with its `zeroize` feature).
fn derive(kek: &VersionKek, header: &[u8], context: &[u8]) -> Result<KekAes256, KwpError> {
    let info = info(header, context)?;
    let hkdf = Hkdf::<Sha256>::new(None, kek.expose_secret());
    let mut okm = Zeroizing::new([0u8; 32]);
    hkdf.expand(&info, okm.as_mut())
        .map_err(|_| KwpError::Invariant("HKDF-SHA256 yields 32 bytes"))?;
    KekAes256::try_from(&okm[..]).map_err(|_| KwpError::Invariant("the KWP key is 32 bytes"))
}

#[cfg(test)]
mod tests {
    use aes_kw::KekAes192;
    use proptest::prelude::*;

    use super::*;
    use crate::domain::{KeyId, KeyVersion};

    const KEK: [u8; 32] = [0x42; 32];

    fn kek() -> VersionKek {
        VersionKek::from_slice(&KEK).unwrap()
    }

    fn header() -> Vec<u8> {
        let id = KeyId::from_bytes([7; 16]);
        sample_header(id, KeyVersion::new(3).unwrap()).to_vec()
    }

    fn sample_header(key_id: KeyId, key_version: KeyVersion) -> [u8; 26] {
        let mut h = [0u8; 26];
        h[..4].copy_from_slice(b"CSTD");
        h[4] = 1;
        h[5] = 0x02;
        h[6..22].copy_from_slice(key_id.as_bytes());
        h[22..26].copy_from_slice(&key_version.get().to_be_bytes());
        h
    }

    fn context(pairs: &[(&str, &str)]) -> Vec<u8> {
        EncryptionContext::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .unwrap()
            .canonical()
    }

    // RFC 5649 §6, both examples, through the same aes-kw KWP code path this module uses
    // (the RFC's KEK is 192 bits, hence `KekAes192`).
    const RFC5649_KEK: &str = "5840df6e29b02af1ab493b705bf16ea1ae8338f4dcc176a8";

    #[test]
    fn rfc5649_example_20_byte_key() {
        let kek = KekAes192::try_from(&hex::decode(RFC5649_KEK).unwrap()[..]).unwrap();
        let key = hex::decode("c37b7e6492584340bed12207808941155068f738").unwrap();
        let expected =
            hex::decode("138bdeaa9b8fa7fc61f97742e72248ee5ae6ae5360d1ae6a5f54f373fa543b6a")
                .unwrap();
        assert_eq!(kek.wrap_with_padding_vec(&key).unwrap(), expected);
        assert_eq!(kek.unwrap_with_padding_vec(&expected).unwrap(), key);
        assert_eq!(wrapped_len(key.len()), expected.len());
    }

    #[test]
    fn rfc5649_example_7_byte_key() {
        let kek = KekAes192::try_from(&hex::decode(RFC5649_KEK).unwrap()[..]).unwrap();
        let key = hex::decode("466f7250617369").unwrap();
        let expected = hex::decode("afbeb0f07dfbf5419200f2ccb50bb24f").unwrap();
        assert_eq!(kek.wrap_with_padding_vec(&key).unwrap(), expected);
        assert_eq!(kek.unwrap_with_padding_vec(&expected).unwrap(), key);
        assert_eq!(wrapped_len(key.len()), expected.len());
    }

    #[test]
    fn info_layout_is_label_then_length_prefixed_parts() {
        let got = info(&[0xaa, 0xbb], &[0xcc]).unwrap();
        let mut want = b"custodian/kwp/v1".to_vec();
        want.extend_from_slice(&[0, 0, 0, 2, 0xaa, 0xbb, 0, 0, 0, 1, 0xcc]);
        assert_eq!(got, want);
        // Moving a byte across the boundary changes the info.
        assert_ne!(info(&[0xaa], &[0xbb, 0xcc]).unwrap(), got);
    }

    /// Cross-checked with Python's `cryptography` (HKDF-SHA256, salt None, then
    /// `aes_key_wrap_with_padding`); the same vector is printed in `docs/formats.md`.
    #[test]
    fn known_answer_for_the_derivation() {
        let kek = VersionKek::from_slice(&hex::decode(KAT_KEK).unwrap()).unwrap();
        let header = hex::decode(KAT_HEADER).unwrap();
        let ctx = context(&[("tenant", "acme"), ("app", "billing")]);
        let dek = hex::decode(KAT_DEK).unwrap();
        let wrapped = wrap(&kek, &header, &ctx, &dek).unwrap();
        assert_eq!(hex::encode(&wrapped), KAT_WRAPPED);
        let back = unwrap(&kek, &header, &ctx, &wrapped).unwrap();
        assert_eq!(back.expose_secret(), &dek[..]);
    }

    const KAT_KEK: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    const KAT_HEADER: &str = "4353544401027c9e6679742540de944be07fc1f90ae700000007";
    const KAT_DEK: &str = "606162636465666768696a6b6c6d6e6f707172737475767778797a7b7c7d7e7f";
    const KAT_WRAPPED: &str =
        "d498c08caa56e1028253c466acd5006ab4c6b1e19699b707976a51baff92a51e40dcb4325536022f";

    #[test]
    fn round_trip_for_each_data_key_size() {
        let (kek, h, ctx) = (kek(), header(), context(&[("tenant", "acme")]));
        for len in [16, 24, 32] {
            let dek: Vec<u8> = (0..len as u8).collect();
            let wrapped = wrap(&kek, &h, &ctx, &dek).unwrap();
            assert_eq!(wrapped.len(), wrapped_len(len));
            assert_ne!(&wrapped[..], &dek[..]);
            let back = unwrap(&kek, &h, &ctx, &wrapped).unwrap();
            assert_eq!(back.expose_secret(), &dek[..]);
        }
    }

    #[test]
    fn flipped_bit_fails_integrity() {
        let (kek, h, ctx) = (kek(), header(), context(&[]));
        let mut wrapped = wrap(&kek, &h, &ctx, &[9; 32]).unwrap();
        wrapped[17] ^= 0x01;
        assert_eq!(
            unwrap(&kek, &h, &ctx, &wrapped).unwrap_err(),
            KwpError::IntegrityCheckFailed
        );
    }

    #[test]
    fn changed_header_fails_integrity() {
        let (kek, h, ctx) = (kek(), header(), context(&[]));
        let wrapped = wrap(&kek, &h, &ctx, &[9; 32]).unwrap();
        for i in 0..h.len() {
            let mut other = h.clone();
            other[i] ^= 0x80;
            assert_eq!(
                unwrap(&kek, &other, &ctx, &wrapped).unwrap_err(),
                KwpError::IntegrityCheckFailed,
                "header byte {i}"
            );
        }
        // Another key version under the same KEK: the header differs only there.
        let id = KeyId::from_bytes([7; 16]);
        let v4 = sample_header(id, KeyVersion::new(4).unwrap());
        assert_eq!(
            unwrap(&kek, &v4, &ctx, &wrapped).unwrap_err(),
            KwpError::IntegrityCheckFailed
        );
    }

    #[test]
    fn context_differing_in_one_pair_fails_integrity() {
        let (kek, h) = (kek(), header());
        let ctx = context(&[("tenant", "acme"), ("app", "billing")]);
        let wrapped = wrap(&kek, &h, &ctx, &[9; 32]).unwrap();
        let others = [
            context(&[("tenant", "acme"), ("app", "billinG")]),
            context(&[("tenant", "acme")]),
            context(&[("tenant", "acme"), ("app", "billing"), ("x", "")]),
            context(&[]),
        ];
        for other in &others {
            assert_eq!(
                unwrap(&kek, &h, other, &wrapped).unwrap_err(),
                KwpError::IntegrityCheckFailed
            );
        }
        // Moving bytes between header and context is not the same binding either.
        let mut shifted_ctx = h[25..].to_vec();
        shifted_ctx.extend_from_slice(&ctx);
        assert_eq!(
            unwrap(&kek, &h[..25], &shifted_ctx, &wrapped).unwrap_err(),
            KwpError::IntegrityCheckFailed
        );
    }

    #[test]
    fn other_kek_fails_integrity() {
        let (h, ctx) = (header(), context(&[]));
        let wrapped = wrap(&kek(), &h, &ctx, &[9; 32]).unwrap();
        let mut other = KEK;
        other[31] ^= 1;
        let other = VersionKek::from_slice(&other).unwrap();
        assert_eq!(
            unwrap(&other, &h, &ctx, &wrapped).unwrap_err(),
            KwpError::IntegrityCheckFailed
        );
    }

    #[test]
    fn bounds_are_enforced() {
        let (kek, h, ctx) = (kek(), header(), context(&[]));
        assert_eq!(
            wrap(&kek, &h, &ctx, &[]).unwrap_err(),
            KwpError::DataKeyLength(0)
        );
        let too_long = vec![1; MAX_DATA_KEY_LEN + 1];
        assert_eq!(
            wrap(&kek, &h, &ctx, &too_long).unwrap_err(),
            KwpError::DataKeyLength(MAX_DATA_KEY_LEN + 1)
        );
        // The largest payload round-trips.
        let largest = vec![7; MAX_DATA_KEY_LEN];
        let wrapped = wrap(&kek, &h, &ctx, &largest).unwrap();
        assert_eq!(
            unwrap(&kek, &h, &ctx, &wrapped).unwrap().expose_secret(),
            &largest[..]
        );
        let long_header = vec![0; MAX_HEADER_LEN + 1];
        assert_eq!(
            wrap(&kek, &long_header, &ctx, &[1; 32]).unwrap_err(),
            KwpError::HeaderLength(MAX_HEADER_LEN + 1)
        );
        let long_ctx = vec![0; MAX_CONTEXT_LEN + 1];
        assert_eq!(
            wrap(&kek, &h, &long_ctx, &[1; 32]).unwrap_err(),
            KwpError::ContextLength(MAX_CONTEXT_LEN + 1)
        );
        for len in [0, 8, 15, 23, 25, 33, wrapped_len(MAX_DATA_KEY_LEN) + 8] {
            assert_eq!(
                unwrap(&kek, &h, &ctx, &vec![0; len]).unwrap_err(),
                KwpError::WrappedLength(len)
            );
        }
        // The largest context the parser admits is within the bound.
        let big = EncryptionContext::from_pairs((0..EncryptionContext::MAX_PAIRS).map(|i| {
            (
                format!("{i:0>256}"),
                "v".repeat(EncryptionContext::MAX_VALUE_LEN),
            )
        }))
        .unwrap()
        .canonical();
        assert_eq!(big.len(), MAX_CONTEXT_LEN);
        let wrapped = wrap(&kek, &h, &big, &[1; 32]).unwrap();
        assert!(unwrap(&kek, &h, &big, &wrapped).is_ok());
    }

    proptest! {
        #[test]
        fn round_trips_and_every_bit_flip_fails(
            dek in proptest::collection::vec(any::<u8>(), MIN_DATA_KEY_LEN..=80),
            kek_bytes in any::<[u8; 32]>(),
            bit in any::<proptest::sample::Index>(),
        ) {
            let kek = VersionKek::from_slice(&kek_bytes).unwrap();
            let (h, ctx) = (header(), context(&[("k", "v")]));
            let wrapped = wrap(&kek, &h, &ctx, &dek).unwrap();
            prop_assert_eq!(wrapped.len(), wrapped_len(dek.len()));
            let back = unwrap(&kek, &h, &ctx, &wrapped).unwrap();
            prop_assert_eq!(back.expose_secret(), &dek[..]);

            let bit = bit.index(wrapped.len() * 8);
            let mut tampered = wrapped.clone();
            tampered[bit / 8] ^= 1 << (bit % 8);
            prop_assert_eq!(
                unwrap(&kek, &h, &ctx, &tampered).unwrap_err(),
                KwpError::IntegrityCheckFailed
            );
        }
    }
}
