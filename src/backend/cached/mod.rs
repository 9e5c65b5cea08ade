//! The software half of the "cached" wrapping mode: version-KEKs held briefly in locked memory,
//! and data keys wrapped under them with RFC 5649 KWP; [`CachedBackend`] puts the mode over any
//! device backend.
//!
//! # The scheme
//!
//! ```text
//! root key (device, per key version, non-extractable)
//!  └─ version-KEK: 256 bits from the device RNG, wrapped by the root key in the device and
//!     │            stored wrapped; unwrapped on demand into a VersionKek, cached for ≤ TTL
//!     └─ K = HKDF-SHA256(version-KEK, info = "custodian/kwp/v1" ‖ len ‖ header ‖ nonce ‖ len ‖ context)
//!         └─ data key wrapped with AES-256-KWP (RFC 5649) under K, in software
//! ```
//!
//! - [`kek`]: [`VersionKek`], 32 bytes in `mlock`ed memory, zeroised on drop, no `Clone`.
//! - [`kwp`]: [`kwp::wrap`] / [`kwp::unwrap`], the per-(header, context) derivation and KWP.
//!   A changed header, a context that differs in one pair, a flipped bit or another KEK all
//!   fail KWP's integrity check ([`KwpError::IntegrityCheckFailed`]).
//! - [`cache`]: [`KekCache`], the TTL + LRU cache with single-flight unwraps.
//!
//! The blob layout (algorithm byte `0x02`) is in `docs/formats.md`: the blob's 96-bit IV field
//! carries a fresh nonce that joins the header in the derivation's "header" input, so two wraps
//! of one data key under one context differ. [`CachedBackend`] is the mode over a device; the
//! reasoning is in
//! `docs/decisions/0010-cached-mode-kwp.md`.
//!
//! # Threat model trade-off
//!
//! In **direct** mode a data key is only ever wrapped and unwrapped inside the device: an
//! attacker who reads this process's memory learns the data keys that pass through it, never
//! anything that unwraps other data keys. Every wrap costs one device call, which a hardware TPM
//! manages at single-digit rates per second.
//!
//! In **cached** mode one device call unwraps a version-KEK, which then wraps and unwraps every
//! data key of that key version in software for at most the TTL. The cost is custody: while a
//! KEK is cached, an attacker who can read process memory (a memory-disclosure bug, a core dump,
//! a debugger, root on the host) obtains a key that unwraps *every* data key of that version,
//! past and future, for as long as the stored wrapped keys exist — not only the ones in flight.
//! The mitigations bound, but do not remove, that exposure:
//!
//! - the KEK lives only in a [`VersionKek`]: locked against swap (`mlock`, best effort — see
//!   [`kek`]), zeroised on drop, never `Debug`-printed, cloned or serialised;
//! - it is served for at most the TTL after its unwrap and dropped by [`KekCache::sweep`] once
//!   expired; a request in flight keeps its `Arc` until it finishes, so the last copy zeroises
//!   at most one request's duration after expiry (or eviction, or invalidation);
//! - at most `capacity` KEKs are held (LRU), bounding how many versions one disclosure exposes;
//! - the root key stays in the device, so a stolen database alone yields nothing, and an
//!   attacker who loses memory access loses the ability to unwrap new KEKs.
//!
//! Not covered: core dumps (disable them for the service: `RLIMIT_CORE` 0 / `PR_SET_DUMPABLE`),
//! copies the compiler leaves in registers or on the stack (HKDF/HMAC state is not zeroised by
//! `hkdf` 0.12), and the buffer the device's unwrap output arrives in before it is copied into
//! a [`VersionKek`] (the caller's `SecretBytes`, which zeroises but is not locked).

pub mod backend;
pub mod cache;
pub mod kek;
pub mod kwp;

pub use backend::CachedBackend;
pub use cache::{KekCache, KekCacheConfig, KekCacheMetrics};
pub use kek::{KekError, MemoryLock, VersionKek, KEK_LEN};
pub use kwp::KwpError;
