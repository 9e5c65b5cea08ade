//! The streaming file format (version 1): envelope encryption of data of any size in constant
//! memory. Byte by byte in `docs/formats.md#streaming-file-format`; vectors in
//! `tests/vectors/stream-v1.json`.
//!
//! ```text
//! header  "CSTF" ‖ 0x01 version ‖ 0x01 suite ‖ u32 BE frame size ‖ 32-byte salt
//!         ‖ u16 BE length ‖ wrapped data key (a Custodian blob: key id, version, algorithm)
//!         ‖ u32 BE length ‖ canonical encryption context
//! frames  AES-256-GCM(file key, nonce_i, frame_i) ‖ 16-byte tag, one after another
//!
//! file key = HKDF-SHA256(salt, data key, "custodian/stream/v1" ‖ SHA-256(header))
//! nonce_i  = 0x000000 ‖ u64 BE i ‖ 0x01 on the final frame, else 0x00
//! ```
//!
//! Every frame but the last holds exactly `frame size` plaintext bytes; the last holds 0 to
//! `frame size` bytes (0 only when it is the only frame). This is the STREAM construction
//! (Hoang, Reyhanitabar, Rogaway, Vizár 2015) as Tink's streaming AEAD and age use it: a
//! frame moved, repeated, dropped or taken from another file fails its tag (its index or the
//! file key differ), and a file cut at a frame boundary ends on a frame not sealed as final.
//! The header is bound through the file key: one changed bit changes the key, and the first
//! frame fails. The context is bound twice: the server unwraps the data key only under the
//! context it was wrapped with, and the header's hash enters the file key.
//!
//! [`Encryptor`] and [`Decryptor`] hold the per-file key; they wrap a writer or reader:
//! [`EncryptWriter`] / [`DecryptReader`] (`std::io`) and [`AsyncEncryptWriter`] /
//! [`AsyncDecryptReader`] (`tokio::io`). The client's
//! [`file_encryptor`](crate::Client::file_encryptor) and
//! [`file_decryptor`](crate::Client::file_decryptor) make them with a data key from the server.

mod io_async;
mod io_sync;

use std::fmt;

use hkdf::Hkdf;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use custodian_types::format::blob::{Blob, BlobError, MAX_BLOB_LEN};
use custodian_types::format::EncryptionContext;

pub use io_async::{read_header_async, AsyncDecryptReader, AsyncEncryptWriter};
pub use io_sync::{read_header, DecryptReader, EncryptWriter};

/// The first four bytes of every streaming file.
pub const MAGIC: [u8; 4] = *b"CSTF";
/// The format version this code writes and reads.
pub const VERSION: u8 = 1;
/// Suite 1: HKDF-SHA256 per-file key, AES-256-GCM frames, STREAM nonces.
pub const SUITE_AES256GCM_HKDF_SHA256: u8 = 1;
/// Bytes of the per-file salt.
pub const SALT_LEN: usize = 32;
/// Bytes of a frame's GCM tag.
pub const TAG_LEN: usize = 16;
/// Bytes of the data key the server is asked for.
pub const DATA_KEY_LEN: usize = 32;
/// The frame size written unless another is asked for: 64 KiB of plaintext, as age.
pub const DEFAULT_FRAME_SIZE: u32 = 64 * 1024;
/// The smallest frame size accepted.
pub const MIN_FRAME_SIZE: u32 = 64;
/// The largest frame size accepted: a reader holds about two frames in memory.
pub const MAX_FRAME_SIZE: u32 = 16 * 1024 * 1024;
/// The longest canonical context: [`EncryptionContext::MAX_PAIRS`] pairs of the longest key
/// and value, each with two length prefixes, after the count.
pub const MAX_CONTEXT_LEN: usize = 4 + EncryptionContext::MAX_PAIRS
    * (8 + EncryptionContext::MAX_KEY_LEN + EncryptionContext::MAX_VALUE_LEN);
/// Bytes before the wrapped key: magic, version, suite, frame size, salt, its length.
pub const FIXED_HEADER_LEN: usize = 4 + 1 + 1 + 4 + SALT_LEN + 2;
/// Bytes of magic, version and suite.
const PREFIX_LEN: usize = 6;
/// The HKDF info label; the header's SHA-256 follows it.
pub const KDF_LABEL: &[u8] = b"custodian/stream/v1";

/// Why a streaming file was refused. Each variant names where the file went wrong, never a
/// key byte or plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The first bytes are not `CSTF`.
    #[error("not a Custodian streaming file (bad magic)")]
    BadMagic,
    /// A format version this code does not read.
    #[error("unsupported streaming format version {0}")]
    UnsupportedVersion(u8),
    /// A suite this code does not read.
    #[error("unsupported streaming suite {0}")]
    UnsupportedSuite(u8),
    /// A frame size outside [`MIN_FRAME_SIZE`]..=[`MAX_FRAME_SIZE`].
    #[error("frame size {0} is outside {MIN_FRAME_SIZE}..={MAX_FRAME_SIZE}")]
    FrameSize(u32),
    /// The wrapped key is empty, too long or not a Custodian blob.
    #[error("the wrapped data key is not a Custodian blob: {0}")]
    WrappedKey(BlobError),
    /// The context is too long or not a canonical encoding.
    #[error("the header's encryption context is malformed")]
    Context,
    /// The file ends inside the header.
    #[error("the file ends inside its header")]
    TruncatedHeader,
    /// The file ends before its final frame (cut at or inside a frame).
    #[error("the file is truncated: it ends before its final frame")]
    Truncated,
    /// Frame `index` failed authentication: tampered, reordered, repeated, from another file,
    /// or the file was cut there.
    #[error(
        "frame {index} failed authentication (tampered, reordered, truncated, or another file's)"
    )]
    Frame {
        /// 0-based frame index.
        index: u64,
    },
    /// An empty final frame after other frames: not how this format ends a file.
    #[error("frame {index} is an empty final frame after others")]
    EmptyFinalFrame {
        /// 0-based frame index.
        index: u64,
    },
    /// More frames than the 64-bit counter holds.
    #[error("too many frames")]
    TooManyFrames,
    /// The data key has the wrong length.
    #[error("the data key is {0} bytes, not {DATA_KEY_LEN}")]
    DataKeyLength(usize),
    /// The OS random number generator failed (no salt, no file).
    #[error("the OS random number generator failed")]
    Rng,
    /// Data written after the final frame was sealed.
    #[error("the stream is already finished")]
    Finished,
}

impl From<StreamError> for std::io::Error {
    fn from(e: StreamError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidData, e)
    }
}

/// A streaming file's header.
#[derive(Clone, PartialEq, Eq)]
pub struct Header {
    /// Plaintext bytes per frame (every frame but the last).
    pub frame_size: u32,
    /// The per-file salt (random).
    pub salt: [u8; SALT_LEN],
    /// The wrapped data key: a Custodian blob, as the server returned it.
    pub wrapped_key: Vec<u8>,
    /// The encryption context the data key was wrapped with.
    pub context: EncryptionContext,
}

impl fmt::Debug for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Header");
        d.field("frame_size", &self.frame_size);
        if let Ok(blob) = Blob::parse(&self.wrapped_key) {
            d.field("key_id", &blob.key_id.to_string())
                .field("key_version", &blob.key_version.get());
        }
        d.field("context", &self.context).finish_non_exhaustive()
    }
}

impl Header {
    /// The header's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let ctx = self.context.canonical();
        let mut out = Vec::with_capacity(FIXED_HEADER_LEN + self.wrapped_key.len() + 4 + ctx.len());
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(SUITE_AES256GCM_HKDF_SHA256);
        out.extend_from_slice(&self.frame_size.to_be_bytes());
        out.extend_from_slice(&self.salt);
        // Bounded by MAX_BLOB_LEN (checked wherever a header is made or parsed).
        let wlen = u16::try_from(self.wrapped_key.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&wlen.to_be_bytes());
        out.extend_from_slice(&self.wrapped_key);
        let clen = u32::try_from(ctx.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&clen.to_be_bytes());
        out.extend_from_slice(&ctx);
        out
    }

    /// The wrapped key as a blob: which key and version the server must open it with.
    ///
    /// # Errors
    /// [`StreamError::WrappedKey`].
    pub fn blob(&self) -> Result<Blob, StreamError> {
        Blob::parse(&self.wrapped_key).map_err(StreamError::WrappedKey)
    }

    /// Checks magic, version and suite: the first [`PREFIX_LEN`] bytes, read before the rest so
    /// that a short file of another kind is named for what it is.
    fn check_prefix(b: &[u8; PREFIX_LEN]) -> Result<(), StreamError> {
        if b[..4] != MAGIC {
            return Err(StreamError::BadMagic);
        }
        if b[4] != VERSION {
            return Err(StreamError::UnsupportedVersion(b[4]));
        }
        if b[5] != SUITE_AES256GCM_HKDF_SHA256 {
            return Err(StreamError::UnsupportedSuite(b[5]));
        }
        Ok(())
    }

    /// Checks the rest of the fixed part (bytes [`PREFIX_LEN`]..[`FIXED_HEADER_LEN`]) and
    /// returns the frame size, salt and wrapped key length.
    fn parse_fixed_rest(
        b: &[u8; FIXED_HEADER_LEN - PREFIX_LEN],
    ) -> Result<(u32, [u8; SALT_LEN], usize), StreamError> {
        let frame_size = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        check_frame_size(frame_size)?;
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(&b[4..4 + SALT_LEN]);
        let wlen = usize::from(u16::from_be_bytes([b[36], b[37]]));
        if wlen == 0 {
            return Err(StreamError::WrappedKey(BlobError::Truncated));
        }
        if wlen > MAX_BLOB_LEN {
            return Err(StreamError::WrappedKey(BlobError::TooLong));
        }
        Ok((frame_size, salt, wlen))
    }

    /// The header from its read parts: the context must be canonical and the wrapped key a
    /// blob.
    fn from_parts(
        frame_size: u32,
        salt: [u8; SALT_LEN],
        wrapped_key: Vec<u8>,
        context: &[u8],
    ) -> Result<Self, StreamError> {
        let context = EncryptionContext::from_canonical(context).ok_or(StreamError::Context)?;
        let header = Self {
            frame_size,
            salt,
            wrapped_key,
            context,
        };
        header.blob()?;
        Ok(header)
    }

    /// The context length that follows the wrapped key.
    fn parse_context_len(b: [u8; 4]) -> Result<usize, StreamError> {
        let len = usize::try_from(u32::from_be_bytes(b)).map_err(|_| StreamError::Context)?;
        if len > MAX_CONTEXT_LEN {
            return Err(StreamError::Context);
        }
        Ok(len)
    }
}

/// Refuses a frame size outside the bounds.
fn check_frame_size(frame_size: u32) -> Result<(), StreamError> {
    if (MIN_FRAME_SIZE..=MAX_FRAME_SIZE).contains(&frame_size) {
        Ok(())
    } else {
        Err(StreamError::FrameSize(frame_size))
    }
}

/// The nonce of frame `index`.
fn nonce(index: u64, last: bool) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[3..11].copy_from_slice(&index.to_be_bytes());
    n[11] = u8::from(last);
    n
}

/// A file's AES-256-GCM key (derived) and the index of the next frame. The frames are sealed
/// by `ring` (its AES-GCM runs several times faster than the `aes-gcm` crate here: VAES and
/// VPCLMULQDQ; decision 0032). The derived key bytes are zeroised as soon as `ring` has
/// expanded them; `ring` does not wipe its expanded key schedule on drop (as for every
/// TLS session key of the process, also `ring`'s) — see the decision for why that is accepted.
struct FrameCipher {
    aead: LessSafeKey,
    next: u64,
}

impl FrameCipher {
    /// Derives the file key from the data key and the header.
    fn new(data_key: &[u8], header: &Header) -> Result<Self, StreamError> {
        if data_key.len() != DATA_KEY_LEN {
            return Err(StreamError::DataKeyLength(data_key.len()));
        }
        let mut info = KDF_LABEL.to_vec();
        info.extend_from_slice(&Sha256::digest(header.to_bytes()));
        let hk = Hkdf::<Sha256>::new(Some(&header.salt), data_key);
        let mut key = Zeroizing::new([0u8; 32]);
        // 32 bytes is far below HKDF-SHA256's limit of 255 × 32: expand cannot fail.
        hk.expand(&info, &mut key[..])
            .map_err(|_| StreamError::DataKeyLength(data_key.len()))?;
        let aead = UnboundKey::new(&AES_256_GCM, &key[..])
            .map(LessSafeKey::new)
            .map_err(|_| StreamError::DataKeyLength(data_key.len()))?;
        Ok(Self { aead, next: 0 })
    }

    /// Seals frame `index` in place: `slot` holds the plaintext in its first `len` bytes and
    /// room for the tag after it.
    fn seal_slot(
        &self,
        index: u64,
        last: bool,
        slot: &mut [u8],
        len: usize,
    ) -> Result<(), StreamError> {
        let (body, rest) = slot.split_at_mut(len);
        let tag = self
            .aead
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce(index, last)),
                Aad::empty(),
                body,
            )
            .map_err(|_| StreamError::TooManyFrames)?;
        let room = rest.get_mut(..TAG_LEN).ok_or(StreamError::TooManyFrames)?;
        room.copy_from_slice(tag.as_ref());
        Ok(())
    }

    /// Opens frame `index` in place: `slot` holds `len` ciphertext bytes and the tag after
    /// them. On failure the slot's contents are unspecified and never handed out (the caller
    /// stops at the error).
    fn open_slot(
        &self,
        index: u64,
        last: bool,
        slot: &mut [u8],
        len: usize,
    ) -> Result<(), StreamError> {
        if last && len == 0 && index > 0 {
            return Err(StreamError::EmptyFinalFrame { index });
        }
        let sealed = slot
            .get_mut(..len + TAG_LEN)
            .ok_or(StreamError::Frame { index })?;
        self.aead
            .open_in_place(
                Nonce::assume_unique_for_key(nonce(index, last)),
                Aad::empty(),
                sealed,
            )
            .map(|_| ())
            .map_err(|_| StreamError::Frame { index })
    }
}

/// Plaintext bytes a batch of frames holds at most: frames are sealed and opened a batch at a
/// time, spread over the CPU's cores (each frame is independent given its index), so that a
/// file goes at the speed of several cores rather than one. Memory stays within two batches
/// (the buffers grow to a batch only as data fills them: see [`grow_to`]).
const BATCH_BYTES: usize = 1 << 20;

/// Threads a batch is spread over: the cores available, at most 4 (read once).
fn threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get().min(4)))
}

/// One frame of a batch: its index, whether it is the final frame, its slot (body ‖ tag room)
/// and its body length.
struct Slot<'a> {
    index: u64,
    last: bool,
    bytes: &'a mut [u8],
    len: usize,
}

/// Runs `work` on every slot, the slots split into contiguous runs over [`threads`] threads
/// (the calling thread takes the first run). Returns each slot's result, in order.
fn each_slot<F>(slots: Vec<Slot<'_>>, work: F) -> Vec<Result<(), StreamError>>
where
    F: Fn(&mut Slot<'_>) -> Result<(), StreamError> + Sync,
{
    let n = threads().min(slots.len()).max(1);
    if n == 1 {
        return slots.into_iter().map(|mut s| work(&mut s)).collect();
    }
    let per = slots.len().div_ceil(n);
    let mut runs: Vec<Vec<Slot<'_>>> = Vec::with_capacity(n);
    let mut rest = slots.into_iter();
    loop {
        let run: Vec<Slot<'_>> = rest.by_ref().take(per).collect();
        if run.is_empty() {
            break;
        }
        runs.push(run);
    }
    let work = &work;
    std::thread::scope(|scope| {
        let mut runs = runs.into_iter();
        let first = runs.next().unwrap_or_default();
        let others: Vec<_> = runs
            .map(|run| {
                scope.spawn(move || {
                    run.into_iter()
                        .map(|mut s| work(&mut s))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut results: Vec<Result<(), StreamError>> =
            first.into_iter().map(|mut s| work(&mut s)).collect();
        for h in others {
            // A panic in a worker (none of the AEAD calls panics) is reported as a failed
            // frame, never as success.
            match h.join() {
                Ok(r) => results.extend(r),
                Err(_) => results.push(Err(StreamError::Frame { index: u64::MAX })),
            }
        }
        results
    })
}

/// Frames per batch for `frame` bytes of plaintext per frame.
fn batch_frames(frame: usize) -> usize {
    (BATCH_BYTES / frame).max(1)
}

/// What a batch buffer starts with: it grows (doubling) to a whole batch only as the data
/// fills it, so a small file costs a small buffer whatever its frame size.
const FIRST_BUFFER: usize = 4096;

/// Grows `buf` to at least `need` bytes (doubling, at most `cap`) by copying into a new
/// buffer: the old one is zeroized as it is dropped, where `Vec::resize` would free it
/// unwiped.
fn grow_to(buf: &mut Zeroizing<Vec<u8>>, need: usize, cap: usize) {
    if buf.len() >= need {
        return;
    }
    let len = need.max(buf.len() * 2).max(FIRST_BUFFER).min(cap.max(need));
    let mut bigger = Zeroizing::new(vec![0; len]);
    bigger[..buf.len()].copy_from_slice(buf);
    *buf = bigger;
}

/// What seals one file: its header and its file key. Made by
/// [`Client::file_encryptor`](crate::Client::file_encryptor), or by [`Encryptor::new`] from a
/// data key the caller holds.
pub struct Encryptor {
    header: Header,
    cipher: FrameCipher,
}

impl fmt::Debug for Encryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Encryptor")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

impl Encryptor {
    /// An encryptor under `data_key` (the plaintext copy) whose header carries `wrapped_key`
    /// (the server's blob of the same key) and `context`, with a fresh random salt.
    ///
    /// # Errors
    /// [`StreamError::FrameSize`], [`StreamError::WrappedKey`], [`StreamError::DataKeyLength`];
    /// [`StreamError::Rng`].
    pub fn new(
        data_key: &[u8],
        wrapped_key: &[u8],
        context: &EncryptionContext,
        frame_size: u32,
    ) -> Result<Self, StreamError> {
        let mut salt = [0u8; SALT_LEN];
        getrandom::getrandom(&mut salt).map_err(|_| StreamError::Rng)?;
        Self::with_salt(data_key, wrapped_key, context, frame_size, salt)
    }

    /// As [`Encryptor::new`] with the salt given: for test vectors only. A salt used twice
    /// under one data key gives two files the same file key.
    ///
    /// # Errors
    /// As [`Encryptor::new`].
    #[doc(hidden)]
    pub fn with_salt(
        data_key: &[u8],
        wrapped_key: &[u8],
        context: &EncryptionContext,
        frame_size: u32,
        salt: [u8; SALT_LEN],
    ) -> Result<Self, StreamError> {
        check_frame_size(frame_size)?;
        Blob::parse(wrapped_key).map_err(StreamError::WrappedKey)?;
        let header = Header {
            frame_size,
            salt,
            wrapped_key: wrapped_key.to_vec(),
            context: context.clone(),
        };
        let cipher = FrameCipher::new(data_key, &header)?;
        Ok(Self { header, cipher })
    }

    /// The header this encryptor writes first.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Wraps `out`: the header is written now, frames as data comes, the final frame by
    /// [`EncryptWriter::finish`].
    ///
    /// # Errors
    /// Writing the header failed.
    pub fn writer<W: std::io::Write>(self, out: W) -> std::io::Result<EncryptWriter<W>> {
        EncryptWriter::new(out, self)
    }

    /// Wraps an async `out`: the header goes out with the first write (or at shutdown).
    pub fn async_writer<W: tokio::io::AsyncWrite + Unpin>(self, out: W) -> AsyncEncryptWriter<W> {
        AsyncEncryptWriter::new(out, self)
    }
}

/// What opens one file: its header and its file key. Made by
/// [`Client::file_decryptor`](crate::Client::file_decryptor), or by [`Decryptor::new`] from a
/// data key the caller holds.
pub struct Decryptor {
    header: Header,
    cipher: FrameCipher,
}

impl fmt::Debug for Decryptor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Decryptor")
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

impl Decryptor {
    /// A decryptor for the file whose `header` was read, under `data_key` (the unwrapped copy of
    /// the header's wrapped key).
    ///
    /// # Errors
    /// [`StreamError::DataKeyLength`].
    pub fn new(data_key: &[u8], header: Header) -> Result<Self, StreamError> {
        let cipher = FrameCipher::new(data_key, &header)?;
        Ok(Self { header, cipher })
    }

    /// The header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Wraps `input`, positioned just after the header.
    pub fn reader<R: std::io::Read>(self, input: R) -> DecryptReader<R> {
        DecryptReader::new(input, self)
    }

    /// Wraps an async `input`, positioned just after the header.
    pub fn async_reader<R: tokio::io::AsyncRead + Unpin>(self, input: R) -> AsyncDecryptReader<R> {
        AsyncDecryptReader::new(input, self)
    }
}

/// The sealing state shared by the sync and async writers: a batch of frames being filled
/// (each in a slot of frame + tag bytes, so sealing happens in place) and the sealed bytes not
/// yet written.
struct SealState {
    cipher: FrameCipher,
    frame: usize,
    batch: usize,
    /// Slots of the batch being filled; `len` plaintext bytes so far.
    plain: Zeroizing<Vec<u8>>,
    len: usize,
    /// Bytes waiting to be written: `out[out_pos..out_end]` (first the header).
    out: Zeroizing<Vec<u8>>,
    out_pos: usize,
    out_end: usize,
    finished: bool,
}

impl SealState {
    fn new(enc: Encryptor) -> Self {
        let frame = enc.header.frame_size as usize;
        let batch = batch_frames(frame);
        let header = enc.header.to_bytes();
        let out_end = header.len();
        Self {
            cipher: enc.cipher,
            frame,
            batch,
            plain: Zeroizing::new(Vec::new()),
            len: 0,
            out: Zeroizing::new(header),
            out_pos: 0,
            out_end,
            finished: false,
        }
    }

    /// Bytes waiting to be written.
    fn pending(&self) -> &[u8] {
        &self.out[self.out_pos..self.out_end]
    }

    /// `n` pending bytes were written.
    fn consumed(&mut self, n: usize) {
        self.out_pos += n;
    }

    /// Takes plaintext; call only with nothing pending. Full frames are sealed as non-final
    /// only once more data arrives, since only then is it known none of them is the last.
    fn accept(&mut self, data: &[u8]) -> Result<usize, StreamError> {
        if self.finished {
            return Err(StreamError::Finished);
        }
        if data.is_empty() {
            return Ok(0);
        }
        if self.len == self.batch * self.frame {
            self.seal(false)?;
        }
        let mut taken = 0;
        while taken < data.len() && self.len < self.batch * self.frame {
            let (slot, off) = (self.len / self.frame, self.len % self.frame);
            let n = (self.frame - off).min(data.len() - taken);
            let at = slot * (self.frame + TAG_LEN) + off;
            grow_to(
                &mut self.plain,
                at + n + TAG_LEN,
                self.batch * (self.frame + TAG_LEN),
            );
            self.plain[at..at + n].copy_from_slice(&data[taken..taken + n]);
            self.len += n;
            taken += n;
        }
        Ok(taken)
    }

    /// Seals what is buffered, the last frame as final (once); call only with nothing pending.
    fn finish(&mut self) -> Result<(), StreamError> {
        if !self.finished {
            self.seal(true)?;
            self.finished = true;
        }
        Ok(())
    }

    /// Seals the batch: all full frames when not `last`; else every frame there is (one,
    /// maybe empty, at least), the last one final. The sealed bytes become the pending output.
    fn seal(&mut self, last: bool) -> Result<(), StreamError> {
        let (f, stride) = (self.frame, self.frame + TAG_LEN);
        let count = if last {
            self.len.div_ceil(f).max(1)
        } else {
            self.batch
        };
        let first = self.cipher.next;
        let end_index = first
            .checked_add(count as u64)
            .ok_or(StreamError::TooManyFrames)?;
        let last_len = self.len - (count - 1) * f;
        // Room for the last frame's tag (an empty file's buffer was never grown).
        let end = (count - 1) * stride + last_len + TAG_LEN;
        grow_to(&mut self.plain, end, self.batch * stride);
        let slots: Vec<Slot<'_>> = self
            .plain
            .chunks_mut(stride)
            .take(count)
            .enumerate()
            .map(|(j, bytes)| Slot {
                index: first + j as u64,
                last: last && j + 1 == count,
                bytes,
                len: if j + 1 == count { last_len } else { f },
            })
            .collect();
        let cipher = &self.cipher;
        for r in each_slot(slots, |s| cipher.seal_slot(s.index, s.last, s.bytes, s.len)) {
            r?;
        }
        self.cipher.next = end_index;
        // The sealed batch becomes the pending output; the written-out buffer takes new
        // plaintext (growing as it comes, the first time, when it held the header).
        std::mem::swap(&mut self.plain, &mut self.out);
        self.out_pos = 0;
        self.out_end = end;
        self.len = 0;
        Ok(())
    }
}

/// The opening state shared by the sync and async readers: a batch of frames gathered (with
/// one byte beyond, which tells whether more follows), opened in place, and handed out frame by
/// frame.
struct OpenState {
    cipher: FrameCipher,
    frame: usize,
    /// The batch's bytes; `filled` of them read. It grows to `full` bytes as input comes.
    ct: Zeroizing<Vec<u8>>,
    filled: usize,
    /// A whole batch and one byte beyond.
    full: usize,
    eof: bool,
    /// The byte read beyond a full batch: the start of the next one.
    carry: Option<u8>,
    /// Body lengths of the opened frames that may be handed out; `cur` and `pos` say where.
    opened: Vec<usize>,
    cur: usize,
    pos: usize,
    /// A frame of this batch failed: reported once the frames before it are handed out.
    failed: Option<StreamError>,
    /// The batch is consumed and the next must be read.
    refill: bool,
    done: bool,
}

impl OpenState {
    fn new(dec: Decryptor) -> Self {
        let frame = dec.header.frame_size as usize;
        let batch = batch_frames(frame);
        Self {
            cipher: dec.cipher,
            frame,
            ct: Zeroizing::new(Vec::new()),
            filled: 0,
            full: batch * (frame + TAG_LEN) + 1,
            eof: false,
            carry: None,
            opened: Vec::with_capacity(batch),
            cur: 0,
            pos: 0,
            failed: None,
            refill: true,
            done: false,
        }
    }

    /// Opened plaintext of the current frame not yet handed out.
    fn available(&self) -> &[u8] {
        match self.opened.get(self.cur) {
            Some(&len) => {
                let start = self.cur * (self.frame + TAG_LEN);
                &self.ct[start + self.pos..start + len]
            }
            None => &[],
        }
    }

    /// Hands out up to `out.len()` opened bytes (from one frame).
    fn take(&mut self, out: &mut [u8]) -> usize {
        let avail = self.available();
        let n = avail.len().min(out.len());
        out[..n].copy_from_slice(&avail[..n]);
        self.pos += n;
        if self
            .opened
            .get(self.cur)
            .is_some_and(|&len| self.pos == len)
        {
            self.cur += 1;
            self.pos = 0;
        }
        n
    }

    /// The error of a failed frame, once every frame before it was handed out.
    fn failure(&mut self) -> Option<StreamError> {
        if self.cur >= self.opened.len() {
            self.failed.take()
        } else {
            None
        }
    }

    /// True while the next batch needs more input (starting it when the last one is
    /// consumed).
    fn wants_input(&mut self) -> bool {
        if self.done || self.failed.is_some() {
            return false;
        }
        if self.refill && self.cur >= self.opened.len() {
            self.refill = false;
            self.opened.clear();
            self.cur = 0;
            self.pos = 0;
            self.filled = 0;
            if let Some(b) = self.carry.take() {
                self.ct[0] = b;
                self.filled = 1;
            }
        }
        !self.refill && !self.eof && self.filled < self.full
    }

    /// Where the next input goes (never empty while input is wanted).
    fn space(&mut self) -> &mut [u8] {
        grow_to(&mut self.ct, self.filled + 1, self.full);
        &mut self.ct[self.filled..]
    }

    /// `n` bytes of input arrived; 0 is the end of the input.
    fn filled(&mut self, n: usize) {
        if n == 0 {
            self.eof = true;
        } else {
            self.filled += n;
        }
    }

    /// True when a gathered batch waits to be opened.
    fn ready(&self) -> bool {
        !self.done && !self.refill && self.failed.is_none()
    }

    /// Opens the gathered batch once no more input is wanted: with a byte beyond it, all its
    /// frames are non-final (the byte is kept for the next batch); without, its last frame is
    /// the final frame.
    fn open(&mut self) -> Result<(), StreamError> {
        let (f, stride) = (self.frame, self.frame + TAG_LEN);
        let full = self.full;
        let (count, last, last_body) = if self.filled == full {
            self.carry = Some(self.ct[full - 1]);
            ((full - 1) / stride, false, f)
        } else {
            let n = self.filled;
            let count = n.div_ceil(stride).max(1);
            let last_chunk = n.saturating_sub((count - 1) * stride);
            if last_chunk < TAG_LEN {
                return Err(StreamError::Truncated);
            }
            self.done = true;
            (count, true, last_chunk - TAG_LEN)
        };
        let first = self.cipher.next;
        let slots: Vec<Slot<'_>> = self
            .ct
            .chunks_mut(stride)
            .take(count)
            .enumerate()
            .map(|(j, bytes)| Slot {
                index: first + j as u64,
                last: last && j + 1 == count,
                bytes,
                len: if j + 1 == count { last_body } else { f },
            })
            .collect();
        let cipher = &self.cipher;
        let results = each_slot(slots, |s| cipher.open_slot(s.index, s.last, s.bytes, s.len));
        self.opened.clear();
        for (j, r) in results.into_iter().enumerate() {
            match r {
                Ok(()) => self.opened.push(if j + 1 == count { last_body } else { f }),
                Err(e) => {
                    self.failed = Some(e);
                    self.done = true;
                    break;
                }
            }
        }
        self.cipher.next = first
            .checked_add(count as u64)
            .ok_or(StreamError::TooManyFrames)?;
        self.cur = 0;
        self.pos = 0;
        self.refill = true;
        // An empty final frame hands out nothing: skip past it.
        while self.opened.get(self.cur) == Some(&0) {
            self.cur += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests;
