//! The streaming format's correctness: round trips at frame boundaries, every truncation,
//! reordering, duplication, splicing and header change refused, property tests, and the
//! committed cross-version vectors (`tests/vectors/stream-v1.json`).

use std::io::{Read, Write};

use custodian_types::domain::{Algorithm, KeyId, KeyVersion};
use custodian_types::format::blob::{Blob, GCM_IV_LEN};
use custodian_types::format::EncryptionContext;

use super::*;

/// A syntactically valid wrapped key (the stream format only parses it; the server opens it).
pub(crate) fn test_blob() -> Vec<u8> {
    Blob {
        algorithm: Algorithm::from_code(1).unwrap(),
        key_id: KeyId::from_bytes(*b"0123456789abcdef"),
        key_version: KeyVersion::new(3).unwrap(),
        iv: [9; GCM_IV_LEN],
        ciphertext: vec![0x5a; DATA_KEY_LEN + 16],
    }
    .to_bytes()
}

const KEY: [u8; DATA_KEY_LEN] = [0x42; DATA_KEY_LEN];

fn ctx(pairs: &[(&str, &str)]) -> EncryptionContext {
    EncryptionContext::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
        .unwrap()
}

/// Deterministic plaintext of `len` bytes (not all alike, so a moved frame differs).
fn data(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64).wrapping_mul(2654435761).to_le_bytes()[1])
        .collect()
}

fn encrypt(plain: &[u8], frame: u32, context: &EncryptionContext) -> Vec<u8> {
    let enc = Encryptor::new(&KEY, &test_blob(), context, frame).unwrap();
    let mut w = enc.writer(Vec::new()).unwrap();
    // Odd-sized writes, so frames are filled across write calls.
    for chunk in plain.chunks(7919) {
        w.write_all(chunk).unwrap();
    }
    w.finish().unwrap()
}

fn decrypt_with(file: &[u8], key: &[u8]) -> Result<Vec<u8>, StreamError> {
    let mut input = file;
    let header = read_header(&mut input).map_err(to_stream)?;
    let dec = Decryptor::new(key, header)?;
    let mut out = Vec::new();
    dec.reader(input).read_to_end(&mut out).map_err(to_stream)?;
    Ok(out)
}

fn decrypt(file: &[u8]) -> Result<Vec<u8>, StreamError> {
    decrypt_with(file, &KEY)
}

fn to_stream(e: std::io::Error) -> StreamError {
    e.into_inner()
        .and_then(|e| e.downcast::<StreamError>().ok())
        .map(|e| *e)
        .unwrap_or(StreamError::Truncated)
}

fn header_len(file: &[u8]) -> usize {
    let mut input = file;
    read_header(&mut input).unwrap();
    file.len() - input.len()
}

#[test]
fn round_trips_at_frame_boundaries_up_to_64_mib() {
    let f = DEFAULT_FRAME_SIZE as usize;
    let big = 64 << 20;
    let source = data(big + 1);
    let mut sizes = vec![0, 1];
    for frames in [1, 2, 3, big / f] {
        sizes.extend([frames * f - 1, frames * f, frames * f + 1]);
    }
    let c = ctx(&[("tenant", "acme")]);
    for len in sizes {
        let plain = &source[..len];
        let file = encrypt(plain, DEFAULT_FRAME_SIZE, &c);
        // Exactly one tag per frame; an empty file has one (empty, final) frame.
        let frames = len.div_ceil(f).max(1);
        assert_eq!(
            file.len(),
            header_len(&file) + len + frames * TAG_LEN,
            "len {len}"
        );
        assert_eq!(decrypt(&file).unwrap(), plain, "len {len}");
    }
}

#[test]
fn every_truncation_is_refused() {
    let frame = MIN_FRAME_SIZE;
    let c = ctx(&[("a", "b")]);
    for len in [0, 1, 63, 64, 65, 200, 256] {
        let file = encrypt(&data(len), frame, &c);
        assert!(decrypt(&file).is_ok());
        // Every prefix: inside the header, inside a frame, at each frame boundary.
        for cut in 0..file.len() {
            let err = decrypt(&file[..cut]).expect_err(&format!("len {len} cut {cut}"));
            assert!(
                matches!(
                    err,
                    StreamError::TruncatedHeader
                        | StreamError::Truncated
                        | StreamError::EmptyFinalFrame { .. }
                        | StreamError::Frame { .. }
                ),
                "len {len} cut {cut}: {err:?}"
            );
        }
    }
}

#[test]
fn truncation_at_each_frame_boundary_names_the_frame_not_sealed_final() {
    let f = MIN_FRAME_SIZE as usize;
    let file = encrypt(&data(4 * f + 10), MIN_FRAME_SIZE, &ctx(&[]));
    let h = header_len(&file);
    for frames in 1..=4 {
        let cut = h + frames * (f + TAG_LEN);
        assert_eq!(
            decrypt(&file[..cut]),
            Err(StreamError::Frame {
                index: frames as u64 - 1
            }),
            "cut after {frames} frames"
        );
    }
    // Appending anything after the final frame turns it into a non-final one: refused.
    let mut longer = file.clone();
    longer.push(0);
    assert_eq!(decrypt(&longer), Err(StreamError::Frame { index: 4 }));
}

/// The largest buffer the opening state used for `file`, driven the way the readers drive it.
fn open_buffer_len(file: &[u8]) -> usize {
    let mut input = file;
    let header = read_header(&mut input).unwrap();
    let mut state = OpenState::new(Decryptor::new(&KEY, header).unwrap());
    let mut largest = 0;
    loop {
        while state.wants_input() {
            let n = input.read(state.space()).unwrap();
            state.filled(n);
        }
        largest = largest.max(state.ct.len());
        if !state.ready() {
            return largest;
        }
        state.open().unwrap();
        while !state.available().is_empty() {
            let mut sink = [0; 4096];
            state.take(&mut sink);
        }
    }
}

#[test]
fn batch_buffers_grow_with_the_data_up_to_one_batch() {
    let f = DEFAULT_FRAME_SIZE as usize;
    let stride = f + TAG_LEN;
    let full = batch_frames(f) * stride;
    // A small file: a small buffer each way, not a batch of frames.
    let small = data(100);
    let enc = Encryptor::new(&KEY, &test_blob(), &ctx(&[]), DEFAULT_FRAME_SIZE).unwrap();
    let mut seal = SealState::new(enc);
    assert_eq!(seal.accept(&small).unwrap(), small.len());
    seal.finish().unwrap();
    assert_eq!(seal.out.len(), FIRST_BUFFER);
    assert_eq!(
        open_buffer_len(&encrypt(&small, DEFAULT_FRAME_SIZE, &ctx(&[]))),
        FIRST_BUFFER
    );
    assert_eq!(
        open_buffer_len(&encrypt(&[], DEFAULT_FRAME_SIZE, &ctx(&[]))),
        FIRST_BUFFER
    );
    // Three batches and a bit: the buffers reach one batch (and the byte beyond) and no more.
    let big = data(3 * batch_frames(f) * f + 100);
    let enc = Encryptor::new(&KEY, &test_blob(), &ctx(&[]), DEFAULT_FRAME_SIZE).unwrap();
    let mut seal = SealState::new(enc);
    let mut taken = 0;
    while taken < big.len() {
        taken += seal.accept(&big[taken..]).unwrap();
        assert!(seal.plain.len() <= full);
        seal.consumed(seal.pending().len());
    }
    assert_eq!(seal.plain.len(), full);
    assert_eq!(
        open_buffer_len(&encrypt(&big, DEFAULT_FRAME_SIZE, &ctx(&[]))),
        full + 1
    );
}

#[test]
fn failures_across_batches_release_exactly_the_frames_before_them() {
    let f = 4096usize;
    let batch = batch_frames(f);
    assert!(batch > 1);
    let plain = data(3 * batch * f + 100);
    let file = encrypt(&plain, 4096, &ctx(&[]));
    let h = header_len(&file);
    assert_eq!(decrypt(&file).unwrap(), plain);
    // A frame in the second batch: the frames before it come out, then the error.
    let target = batch + 5;
    let mut bad = file.clone();
    bad[h + target * (f + TAG_LEN) + 3] ^= 1;
    let mut input = &bad[..];
    let header = read_header(&mut input).unwrap();
    let mut r = Decryptor::new(&KEY, header).unwrap().reader(input);
    let mut out = Vec::new();
    let err = r.read_to_end(&mut out).unwrap_err();
    assert_eq!(
        to_stream(err),
        StreamError::Frame {
            index: target as u64
        }
    );
    assert_eq!(out, plain[..target * f]);
    // Cut at a batch boundary, and one byte into the next batch.
    let cut = h + batch * (f + TAG_LEN);
    assert_eq!(
        decrypt(&file[..cut]),
        Err(StreamError::Frame {
            index: batch as u64 - 1
        })
    );
    assert_eq!(decrypt(&file[..cut + 1]), Err(StreamError::Truncated));
}

/// The file as header and frames.
fn split(file: &[u8], frame: usize) -> (Vec<u8>, Vec<Vec<u8>>) {
    let h = header_len(file);
    let frames = file[h..]
        .chunks(frame + TAG_LEN)
        .map(<[u8]>::to_vec)
        .collect();
    (file[..h].to_vec(), frames)
}

#[test]
fn reordered_duplicated_dropped_and_spliced_frames_are_refused() {
    let f = MIN_FRAME_SIZE as usize;
    let c = ctx(&[("a", "b")]);
    let file = encrypt(&data(4 * f + 10), MIN_FRAME_SIZE, &c);
    let (header, frames) = split(&file, f);
    assert_eq!(frames.len(), 5);
    let join = |fs: &[&Vec<u8>]| {
        let mut out = header.clone();
        for x in fs {
            out.extend_from_slice(x);
        }
        out
    };
    let [f0, f1, f2, f3, f4] = [&frames[0], &frames[1], &frames[2], &frames[3], &frames[4]];
    assert_eq!(
        decrypt(&join(&[f0, f1, f2, f3, f4])).unwrap().len(),
        4 * f + 10
    );
    // A swapped pair.
    assert_eq!(
        decrypt(&join(&[f1, f0, f2, f3, f4])),
        Err(StreamError::Frame { index: 0 })
    );
    assert_eq!(
        decrypt(&join(&[f0, f1, f3, f2, f4])),
        Err(StreamError::Frame { index: 2 })
    );
    // A duplicated frame.
    assert_eq!(
        decrypt(&join(&[f0, f1, f1, f2, f3, f4])),
        Err(StreamError::Frame { index: 2 })
    );
    // A dropped middle frame.
    assert_eq!(
        decrypt(&join(&[f0, f2, f3, f4])),
        Err(StreamError::Frame { index: 1 })
    );
    // The final frame moved up (still a final frame, at the wrong index).
    assert_eq!(
        decrypt(&join(&[f0, f4])),
        Err(StreamError::Frame { index: 1 })
    );
    // A frame from another file under the same data key and header but another salt.
    let other = encrypt(&data(4 * f + 10), MIN_FRAME_SIZE, &c);
    let (_, other_frames) = split(&other, f);
    assert_eq!(
        decrypt(&join(&[f0, &other_frames[1], f2, f3, f4])),
        Err(StreamError::Frame { index: 1 })
    );
    // Another file's frames under this file's header.
    let mut spliced = header.clone();
    spliced.extend_from_slice(&other[header_len(&other)..]);
    assert_eq!(decrypt(&spliced), Err(StreamError::Frame { index: 0 }));
}

#[test]
fn every_changed_header_bit_is_refused() {
    let c = ctx(&[("tenant", "acme")]);
    let file = encrypt(&data(100), MIN_FRAME_SIZE, &c);
    let h = header_len(&file);
    for i in 0..h {
        for bit in [0x01, 0x80] {
            let mut bad = file.clone();
            bad[i] ^= bit;
            assert!(decrypt(&bad).is_err(), "header byte {i} bit {bit:#x}");
        }
    }
    // And every changed body bit.
    for i in h..file.len() {
        let mut bad = file.clone();
        bad[i] ^= 0x10;
        assert!(
            matches!(decrypt(&bad), Err(StreamError::Frame { .. })),
            "body byte {i}"
        );
    }
}

#[test]
fn a_changed_context_or_key_is_refused() {
    let f = MIN_FRAME_SIZE;
    let file = encrypt(&data(300), f, &ctx(&[("tenant", "acme")]));
    // The same file with the header rewritten to another context (same length).
    let mut input = &file[..];
    let mut header = read_header(&mut input).unwrap();
    header.context = ctx(&[("tenant", "acmf")]);
    let mut forged = header.to_bytes();
    forged.extend_from_slice(input);
    assert_eq!(forged.len(), file.len());
    assert_eq!(decrypt(&forged), Err(StreamError::Frame { index: 0 }));
    // The right file under another data key.
    assert_eq!(
        decrypt_with(&file, &[0x43; DATA_KEY_LEN]),
        Err(StreamError::Frame { index: 0 })
    );
    assert_eq!(
        decrypt_with(&file, &[0x42; 16]),
        Err(StreamError::DataKeyLength(16))
    );
}

#[test]
fn malformed_headers_are_refused_by_name() {
    let file = encrypt(b"x", MIN_FRAME_SIZE, &ctx(&[]));
    let with = |i: usize, v: &[u8]| {
        let mut b = file.clone();
        b[i..i + v.len()].copy_from_slice(v);
        decrypt(&b)
    };
    assert_eq!(with(0, b"CSTD"), Err(StreamError::BadMagic));
    assert_eq!(with(4, &[2]), Err(StreamError::UnsupportedVersion(2)));
    assert_eq!(with(5, &[9]), Err(StreamError::UnsupportedSuite(9)));
    assert_eq!(
        with(6, &63u32.to_be_bytes()),
        Err(StreamError::FrameSize(63))
    );
    assert_eq!(
        with(6, &(MAX_FRAME_SIZE + 1).to_be_bytes()),
        Err(StreamError::FrameSize(MAX_FRAME_SIZE + 1))
    );
    assert!(matches!(with(42, &[0, 0]), Err(StreamError::WrappedKey(_))));
    assert!(matches!(
        with(42, &[0xff, 0xff]),
        Err(StreamError::WrappedKey(_))
    ));
    let ctx_len_at = FIXED_HEADER_LEN + test_blob().len();
    assert_eq!(
        with(ctx_len_at, &u32::MAX.to_be_bytes()),
        Err(StreamError::Context)
    );
    assert!(Encryptor::new(&KEY, b"not a blob", &ctx(&[]), MIN_FRAME_SIZE).is_err());
    assert_eq!(
        Encryptor::new(&KEY, &test_blob(), &ctx(&[]), MIN_FRAME_SIZE - 1).err(),
        Some(StreamError::FrameSize(MIN_FRAME_SIZE - 1))
    );
}

#[test]
fn writing_after_the_end_and_dropping_without_finish_fail_closed() {
    let mut buf = Vec::new();
    let enc = Encryptor::new(&KEY, &test_blob(), &ctx(&[]), MIN_FRAME_SIZE).unwrap();
    let mut w = enc.writer(&mut buf).unwrap();
    w.write_all(&data(500)).unwrap();
    w.flush().unwrap();
    // Dropped without finish(): only the frames known not to be last went out.
    drop(w);
    assert!(!buf.is_empty());
    assert!(decrypt(&buf).is_err());
    let enc = Encryptor::new(&KEY, &test_blob(), &ctx(&[]), MIN_FRAME_SIZE).unwrap();
    let mut state = SealState::new(enc);
    let n = state.pending().len();
    state.consumed(n);
    state.finish().unwrap();
    assert_eq!(state.accept(b"late"), Err(StreamError::Finished));
}

#[test]
fn debug_output_names_no_key_material() {
    let enc = Encryptor::new(&KEY, &test_blob(), &ctx(&[("t", "v")]), 64).unwrap();
    let text = format!("{enc:?}");
    assert!(text.contains("key_version: 3"), "{text}");
    assert!(!text.contains("66, 66") && !text.contains("4242"), "{text}");
}

#[tokio::test]
async fn async_adapters_round_trip_and_agree_with_the_sync_ones() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let c = ctx(&[("tenant", "acme")]);
    let f = MIN_FRAME_SIZE as usize;
    for len in [0, 1, f - 1, f, f + 1, 10 * f, 10 * f + 3] {
        let plain = data(len);
        let salt = [7u8; SALT_LEN];
        let enc = Encryptor::with_salt(&KEY, &test_blob(), &c, MIN_FRAME_SIZE, salt).unwrap();
        let mut w = enc.async_writer(Vec::new());
        for chunk in plain.chunks(50) {
            w.write_all(chunk).await.unwrap();
        }
        w.shutdown().await.unwrap();
        let file = w.into_inner();
        // Byte for byte what the sync writer makes with the same salt.
        let enc = Encryptor::with_salt(&KEY, &test_blob(), &c, MIN_FRAME_SIZE, salt).unwrap();
        let mut sw = enc.writer(Vec::new()).unwrap();
        sw.write_all(&plain).unwrap();
        assert_eq!(sw.finish().unwrap(), file, "len {len}");
        let mut input = &file[..];
        let header = read_header_async(&mut input).await.unwrap();
        let mut r = Decryptor::new(&KEY, header).unwrap().async_reader(input);
        let mut out = Vec::new();
        r.read_to_end(&mut out).await.unwrap();
        assert_eq!(out, plain, "len {len}");
        // Truncated by one byte: refused.
        let mut input = &file[..file.len() - 1];
        let header = read_header_async(&mut input).await.unwrap();
        let mut r = Decryptor::new(&KEY, header).unwrap().async_reader(input);
        let err = r.read_to_end(&mut Vec::new()).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData, "len {len}");
    }
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any data, any frame size, any write pattern: the file decrypts to the data, and
        /// its length is header + data + one tag per frame.
        #[test]
        fn framing_round_trips(
            plain in proptest::collection::vec(any::<u8>(), 0..2000),
            frame in MIN_FRAME_SIZE..300u32,
            chunk in 1usize..500,
        ) {
            let enc = Encryptor::new(&KEY, &test_blob(), &ctx(&[("p", "q")]), frame).unwrap();
            let mut w = enc.writer(Vec::new()).unwrap();
            for c in plain.chunks(chunk) {
                w.write_all(c).unwrap();
            }
            let file = w.finish().unwrap();
            let frames = plain.len().div_ceil(frame as usize).max(1);
            prop_assert_eq!(file.len(), header_len(&file) + plain.len() + frames * TAG_LEN);
            prop_assert_eq!(decrypt(&file).unwrap(), plain);
        }

        /// Any single flipped bit anywhere, and any cut short of the end, is refused.
        #[test]
        fn any_change_is_refused(
            len in 0usize..700,
            at in any::<prop::sample::Index>(),
            bit in 0u8..8,
            cut in any::<prop::sample::Index>(),
        ) {
            let file = encrypt(&data(len), MIN_FRAME_SIZE, &ctx(&[]));
            let mut bad = file.clone();
            let i = at.index(bad.len());
            bad[i] ^= 1 << bit;
            prop_assert!(decrypt(&bad).is_err());
            prop_assert!(decrypt(&file[..cut.index(file.len())]).is_err());
        }

        /// Reading the header is total: arbitrary bytes never panic, and what parses writes
        /// back to the same bytes.
        #[test]
        fn header_parsing_is_total_and_canonical(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut input = &bytes[..];
            if let Ok(h) = read_header(&mut input) {
                let used = bytes.len() - input.len();
                prop_assert_eq!(h.to_bytes(), bytes[..used].to_vec());
            }
        }
    }
}

/// The committed vectors (`tests/vectors/stream-v1.json`): each file decrypts to its plaintext
/// under its data key, and this code, given the vector's salt, writes the same bytes. Written
/// once; a format change that breaks them breaks files already written. Set
/// `CUSTODIAN_WRITE_STREAM_VECTORS=1` only to create the file for a new format version.
#[test]
fn cross_version_vectors() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/vectors/stream-v1.json"
    );
    if std::env::var_os("CUSTODIAN_WRITE_STREAM_VECTORS").is_some() {
        std::fs::write(path, make_vectors()).unwrap();
    }
    let text = std::fs::read_to_string(path).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let vectors = doc["vectors"].as_array().unwrap();
    assert!(vectors.len() >= 6, "{} vectors", vectors.len());
    for v in vectors {
        let name = v["name"].as_str().unwrap();
        let hexf = |k: &str| hex_decode(v[k].as_str().unwrap());
        let key = hexf("data_key");
        let file = hexf("file");
        let plain = hexf("plaintext");
        match v["expect"].as_str().unwrap() {
            "ok" => {
                assert_eq!(decrypt_with(&file, &key).unwrap(), plain, "{name}");
                let salt: [u8; SALT_LEN] = hexf("salt").try_into().unwrap();
                let context: EncryptionContext =
                    serde_json::from_value(v["context"].clone()).unwrap();
                let frame = u32::try_from(v["frame_size"].as_u64().unwrap()).unwrap();
                let enc = Encryptor::with_salt(&key, &hexf("wrapped_key"), &context, frame, salt)
                    .unwrap();
                let mut w = enc.writer(Vec::new()).unwrap();
                w.write_all(&plain).unwrap();
                assert_eq!(w.finish().unwrap(), file, "{name}: re-encryption differs");
            }
            refusal => {
                let err = decrypt_with(&file, &key).expect_err(name);
                assert_eq!(refusal_name(&err), refusal, "{name}: {err:?}");
            }
        }
    }
}

fn refusal_name(e: &StreamError) -> &'static str {
    match e {
        StreamError::Frame { .. } => "frame",
        StreamError::Truncated | StreamError::TruncatedHeader => "truncated",
        _ => "header",
    }
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The vector file's text (see [`cross_version_vectors`]).
fn make_vectors() -> String {
    let key: Vec<u8> = (0u8..32).collect();
    let salt: [u8; SALT_LEN] = std::array::from_fn(|i| 0xa0 ^ i as u8);
    let wrapped = test_blob();
    let mut out = Vec::new();
    let mut add = |name: &str,
                   plain: &[u8],
                   frame: u32,
                   c: EncryptionContext,
                   expect: &str,
                   edit: &dyn Fn(&mut Vec<u8>)| {
        let enc = Encryptor::with_salt(&key, &wrapped, &c, frame, salt).unwrap();
        let mut w = enc.writer(Vec::new()).unwrap();
        w.write_all(plain).unwrap();
        let mut file = w.finish().unwrap();
        edit(&mut file);
        out.push(serde_json::json!({
            "name": name,
            "expect": expect,
            "data_key": hex(&key),
            "salt": hex(&salt),
            "wrapped_key": hex(&wrapped),
            "context": c,
            "frame_size": frame,
            "plaintext": hex(plain),
            "file": hex(&file),
        }));
    };
    let c = ctx(&[("tenant", "acme"), ("app", "billing")]);
    let none = |_: &mut Vec<u8>| {};
    add(
        "empty file, one empty final frame",
        b"",
        64,
        ctx(&[]),
        "ok",
        &none,
    );
    add(
        "one partial frame",
        b"hello, custodian",
        64,
        c.clone(),
        "ok",
        &none,
    );
    add("exactly one frame", &data(64), 64, c.clone(), "ok", &none);
    add(
        "two frames and a partial",
        &data(64 * 2 + 5),
        64,
        c.clone(),
        "ok",
        &none,
    );
    add(
        "one byte over a frame",
        &data(65),
        64,
        ctx(&[]),
        "ok",
        &none,
    );
    add(
        "default frame size",
        &data(70000),
        DEFAULT_FRAME_SIZE,
        c.clone(),
        "ok",
        &none,
    );
    add(
        "truncated at a frame boundary",
        &data(64 * 2 + 5),
        64,
        c.clone(),
        "frame",
        &|f: &mut Vec<u8>| f.truncate(f.len() - (5 + TAG_LEN)),
    );
    add(
        "a changed header byte (salt)",
        &data(10),
        64,
        c.clone(),
        "frame",
        &|f: &mut Vec<u8>| f[12] ^= 1,
    );
    add(
        "a changed frame byte",
        &data(100),
        64,
        c.clone(),
        "frame",
        &|f: &mut Vec<u8>| {
            let n = f.len();
            f[n - 20] ^= 1;
        },
    );
    add("unknown version", b"x", 64, c, "header", &|f: &mut Vec<
        u8,
    >| f[4] = 2);
    let text = serde_json::to_string_pretty(&serde_json::json!({
        "format": "custodian streaming file, version 1 (docs/formats.md#streaming-file-format)",
        "note": "hex throughout; context as JSON; expect: ok (decrypts to plaintext, and re-encrypting with salt gives file), or the refusal: frame, truncated, header",
        "vectors": out,
    }))
    .unwrap();
    text + "\n"
}
