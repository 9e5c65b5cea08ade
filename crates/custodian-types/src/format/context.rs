//! The encryption context: a small string → string map that a caller binds to a ciphertext.
//!
//! Its canonical encoding goes into the AAD of every blob, so that a context that differs in any
//! pair fails decryption. Pairs are sorted by key (bytewise UTF-8) and every string is length
//! prefixed, so no two distinct contexts encode alike:
//!
//! ```text
//! u32 BE  pair count
//! per pair, sorted by key:  u32 BE key length ‖ key bytes ‖ u32 BE value length ‖ value bytes
//! ```

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// Why a context was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ContextError {
    /// More than [`EncryptionContext::MAX_PAIRS`] pairs.
    #[error(
        "an encryption context has at most {} pairs",
        EncryptionContext::MAX_PAIRS
    )]
    TooManyPairs,
    /// A key that is empty or longer than [`EncryptionContext::MAX_KEY_LEN`] bytes.
    #[error(
        "an encryption context key has 1 to {} bytes",
        EncryptionContext::MAX_KEY_LEN
    )]
    KeyLength,
    /// A value longer than [`EncryptionContext::MAX_VALUE_LEN`] bytes.
    #[error(
        "an encryption context value has at most {} bytes",
        EncryptionContext::MAX_VALUE_LEN
    )]
    ValueLength,
    /// The same key twice.
    #[error("encryption context key {0:?} appears twice")]
    DuplicateKey(String),
    /// A key in the `custodian:` namespace, which the service reserves for its own use.
    #[error(
        "encryption context keys starting with \"{}\" are reserved",
        EncryptionContext::RESERVED_PREFIX
    )]
    Reserved,
}

/// A validated encryption context. Keys are unique and sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct EncryptionContext(BTreeMap<String, String>);

impl EncryptionContext {
    /// The most pairs a context may have.
    pub const MAX_PAIRS: usize = 64;
    /// The longest key, in bytes.
    pub const MAX_KEY_LEN: usize = 256;
    /// The longest value, in bytes.
    pub const MAX_VALUE_LEN: usize = 1024;
    /// Keys with this prefix are the service's own (secret data keys); callers cannot send them.
    pub const RESERVED_PREFIX: &'static str = "custodian:";

    /// An empty context.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Builds a context from pairs, refusing duplicates and out-of-bounds sizes.
    ///
    /// # Errors
    /// [`ContextError`] naming the first bound that is broken.
    pub fn from_pairs<I>(pairs: I) -> Result<Self, ContextError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let mut map = BTreeMap::new();
        for (k, v) in pairs {
            if k.is_empty() || k.len() > Self::MAX_KEY_LEN {
                return Err(ContextError::KeyLength);
            }
            if v.len() > Self::MAX_VALUE_LEN {
                return Err(ContextError::ValueLength);
            }
            if map.contains_key(&k) {
                return Err(ContextError::DuplicateKey(k));
            }
            map.insert(k, v);
            if map.len() > Self::MAX_PAIRS {
                return Err(ContextError::TooManyPairs);
            }
        }
        Ok(Self(map))
    }

    /// The pairs, sorted by key.
    pub fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Number of pairs.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no pairs.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The canonical encoding described in the module docs.
    pub fn canonical(&self) -> Vec<u8> {
        let size = 4 + self
            .0
            .iter()
            .map(|(k, v)| 8 + k.len() + v.len())
            .sum::<usize>();
        let mut out = Vec::with_capacity(size);
        push_len(&mut out, self.0.len());
        for (k, v) in &self.0 {
            push_len(&mut out, k.len());
            out.extend_from_slice(k.as_bytes());
            push_len(&mut out, v.len());
            out.extend_from_slice(v.as_bytes());
        }
        out
    }
}

impl EncryptionContext {
    /// Reads back a [`canonical`](Self::canonical) encoding (e.g. from a streaming file's
    /// header): `None` unless `bytes` is exactly the canonical encoding of a valid context, so
    /// pairs out of order, a repeated key, a length past the end, trailing bytes, text that is
    /// not UTF-8 and out-of-bounds sizes are all refused.
    pub fn from_canonical(bytes: &[u8]) -> Option<Self> {
        fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            let (head, tail) = rest.split_at_checked(n)?;
            *rest = tail;
            Some(head)
        }
        fn len(rest: &mut &[u8]) -> Option<usize> {
            let b = take(rest, 4)?;
            usize::try_from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])).ok()
        }
        fn text(rest: &mut &[u8]) -> Option<String> {
            let n = len(rest)?;
            String::from_utf8(take(rest, n)?.to_vec()).ok()
        }
        let mut rest = bytes;
        let count = len(&mut rest)?;
        if count > Self::MAX_PAIRS {
            return None;
        }
        let mut pairs = Vec::with_capacity(count);
        for _ in 0..count {
            let k = text(&mut rest)?;
            let v = text(&mut rest)?;
            pairs.push((k, v));
        }
        let ctx = Self::from_pairs(pairs).ok()?;
        // Sorted, unique and nothing left over: the one encoding of this context.
        (ctx.canonical() == bytes).then_some(ctx)
    }
}

/// Appends a length as u32 BE. Every length here is bounded far below `u32::MAX` by the
/// constructor's checks, so the conversion cannot saturate in practice.
fn push_len(out: &mut Vec<u8>, len: usize) {
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
}

impl<'de> Deserialize<'de> for EncryptionContext {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ContextVisitor;

        impl<'de> Visitor<'de> for ContextVisitor {
            type Value = EncryptionContext;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of string keys to string values")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Self::Value, A::Error> {
                let mut pairs = Vec::new();
                while let Some((k, v)) = access.next_entry::<String, String>()? {
                    if pairs.len() >= EncryptionContext::MAX_PAIRS {
                        return Err(de::Error::custom(ContextError::TooManyPairs));
                    }
                    pairs.push((k, v));
                }
                if pairs
                    .iter()
                    .any(|(k, _)| k.starts_with(EncryptionContext::RESERVED_PREFIX))
                {
                    return Err(de::Error::custom(ContextError::Reserved));
                }
                EncryptionContext::from_pairs(pairs).map_err(de::Error::custom)
            }
        }

        deserializer.deserialize_map(ContextVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_encodings_read_back_and_nothing_else_does() {
        for c in [
            ctx(&[]),
            ctx(&[("a", "")]),
            ctx(&[("tenant", "acme"), ("app", "billing")]),
        ] {
            assert_eq!(EncryptionContext::from_canonical(&c.canonical()), Some(c));
        }
        let two = ctx(&[("a", "1"), ("b", "2")]).canonical();
        // Trailing byte, cut short, pairs swapped, a repeated key, an empty key, not UTF-8.
        let mut trailing = two.clone();
        trailing.push(0);
        let swapped = [&[0, 0, 0, 2][..], &two[4 + 10..], &two[4..4 + 10]].concat();
        let repeated = [&[0, 0, 0, 2][..], &two[4..4 + 10], &two[4..4 + 10]].concat();
        let empty_key = [0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0].to_vec();
        let not_utf8 = [0, 0, 0, 1, 0, 0, 0, 1, 0xff, 0, 0, 0, 0].to_vec();
        for bad in [
            trailing,
            two[..two.len() - 1].to_vec(),
            swapped,
            repeated,
            empty_key,
            not_utf8,
            vec![],
            vec![0, 0, 0, 65],
        ] {
            assert_eq!(EncryptionContext::from_canonical(&bad), None, "{bad:?}");
        }
    }

    fn ctx(pairs: &[(&str, &str)]) -> EncryptionContext {
        EncryptionContext::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
            .unwrap()
    }

    #[test]
    fn canonical_encoding_is_sorted_and_length_prefixed() {
        let c = ctx(&[("b", "2"), ("a", "1")]);
        let expected: Vec<u8> = [
            &[0, 0, 0, 2][..],
            &[0, 0, 0, 1],
            b"a",
            &[0, 0, 0, 1],
            b"1",
            &[0, 0, 0, 1],
            b"b",
            &[0, 0, 0, 1],
            b"2",
        ]
        .concat();
        assert_eq!(c.canonical(), expected);
        assert_eq!(EncryptionContext::empty().canonical(), vec![0, 0, 0, 0]);
    }

    #[test]
    fn distinct_contexts_never_encode_alike() {
        // Pairs that a naive "k=v;" join would confuse.
        let a = ctx(&[("a", "b=c")]);
        let b = ctx(&[("a=b", "c")]);
        let c = ctx(&[("a", "b"), ("c", "")]);
        let d = ctx(&[("a", "bc")]);
        let all = [a, b, c, d, EncryptionContext::empty()];
        for (i, x) in all.iter().enumerate() {
            for y in &all[i + 1..] {
                assert_ne!(x.canonical(), y.canonical(), "{x:?} vs {y:?}");
            }
        }
    }

    #[test]
    fn json_must_be_a_string_map_without_duplicates() {
        let ok: EncryptionContext = serde_json::from_str(r#"{"tenant":"a","app":"b"}"#).unwrap();
        assert_eq!(ok.len(), 2);
        assert!(serde_json::from_str::<EncryptionContext>(r#"{"a":1}"#).is_err());
        assert!(serde_json::from_str::<EncryptionContext>(r#"["a"]"#).is_err());
        assert!(serde_json::from_str::<EncryptionContext>(r#"{"a":"1","a":"2"}"#).is_err());
        assert!(serde_json::from_str::<EncryptionContext>(r#"{"":"1"}"#).is_err());
        assert!(serde_json::from_str::<EncryptionContext>(r#"{"a":null}"#).is_err());
        let reserved = r#"{"custodian:secret_path":"x"}"#;
        assert!(serde_json::from_str::<EncryptionContext>(reserved).is_err());
    }

    #[test]
    fn bounds_are_enforced() {
        let many = (0..=EncryptionContext::MAX_PAIRS).map(|i| (format!("k{i}"), String::new()));
        assert_eq!(
            EncryptionContext::from_pairs(many),
            Err(ContextError::TooManyPairs)
        );
        let long_key = [(
            "k".repeat(EncryptionContext::MAX_KEY_LEN + 1),
            String::new(),
        )];
        assert_eq!(
            EncryptionContext::from_pairs(long_key),
            Err(ContextError::KeyLength)
        );
        let long_value = [(
            "k".to_owned(),
            "v".repeat(EncryptionContext::MAX_VALUE_LEN + 1),
        )];
        assert_eq!(
            EncryptionContext::from_pairs(long_value),
            Err(ContextError::ValueLength)
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn context() -> impl Strategy<Value = EncryptionContext> {
            proptest::collection::btree_map("[a-z=;:]{1,6}", "[a-z=;:]{0,6}", 0..5)
                .prop_map(|m| EncryptionContext::from_pairs(m).unwrap())
        }

        proptest! {
            /// The canonical encoding is injective: distinct contexts never share an encoding.
            #[test]
            fn canonical_encoding_is_injective(a in context(), b in context()) {
                prop_assert_eq!(a == b, a.canonical() == b.canonical());
            }

            /// Arbitrary JSON objects of strings either parse or are refused; never a panic.
            #[test]
            fn deserialisation_is_total(pairs in proptest::collection::vec(("\\PC{0,8}", "\\PC{0,8}"), 0..70)) {
                let json = serde_json::Value::Object(pairs.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect());
                let _ = serde_json::from_value::<EncryptionContext>(json);
            }
        }
    }
}
