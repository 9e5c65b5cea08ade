//! `custodian encrypt-file` / `decrypt-file` and the client library's streaming adapters against
//! a real server: round trips (files and `-`), what the file names, and the negative twins —
//! tampered, truncated, reordered frames, a changed context, an unexpected context, a disabled
//! key, a denied principal, an unknown key — each refused with nothing left under the output
//! name. The library: async adapters, the data-key cache's message bound seen in the files'
//! wrapped keys, a 429 with a long `Retry-After` ending at once with the request id, mTLS.

use std::io::Write as _;
use std::path::Path;
use std::process::Command;

use serde_json::json;

use custodian::format::Blob;
use custodian_client::stream::{read_header, TAG_LEN};
use custodian_client::types::format::EncryptionContext;
use custodian_client::types::secret::BearerToken;
use custodian_client::{CacheLimits, Client, DataKeyCache, StreamOptions};

use crate::common::cli::{admin_cli as cli, fails_with, finish};
use crate::common::server::{Server, BIN};
use crate::common::{unique, Deployment};

/// Deterministic, non-repeating test data.
fn data(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64).wrapping_mul(0x9e37_79b9).to_le_bytes()[2])
        .collect()
}

/// The directory's entries other than `keep`: temporary files left behind would show here.
fn others(dir: &Path, keep: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !keep.contains(&n.as_str()))
        .collect();
    v.sort();
    v
}

/// Writes `plain` to `dir/in`, runs `encrypt-file KEY dir/in dir/enc --context tenant=acme`
/// and returns the encrypted file.
fn encrypt_in_dir(s: &Server, key: &str, plain: &[u8], dir: &Path) -> Vec<u8> {
    let p = |n: &str| dir.join(n).to_string_lossy().into_owned();
    std::fs::write(p("in"), plain).unwrap();
    let args = [
        "encrypt-file",
        key,
        &p("in"),
        &p("enc"),
        "--context",
        "tenant=acme",
    ];
    ok(&run(s, &args));
    std::fs::read(p("enc")).unwrap()
}

fn run(s: &Server, args: &[&str]) -> std::process::Output {
    cli(s, args, b"")
}

#[track_caller]
fn ok(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn files_of_any_size_round_trip_through_the_cli() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    let key = unique("files");
    ok(&run(&s, &["keys", "create", &key]));
    let dir = tempfile::tempdir()?;
    let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    let f = 64 * 1024;
    for len in [0, 1, f - 1, f, f + 1, 3 * f + 7, 5 << 20] {
        let plain = data(len);
        let file = encrypt_in_dir(&s, &key, &plain, dir.path());
        // One data key, named in the header with its key and version; the context is there in
        // the clear; the data is not.
        let mut input = &file[..];
        let header = read_header(&mut input)?;
        let blob = Blob::parse(&header.wrapped_key)?;
        assert_eq!(blob.key_version.get(), 1);
        assert_eq!(
            header.context.pairs().collect::<Vec<_>>(),
            [("tenant", "acme")]
        );
        let frames = len.div_ceil(f).max(1);
        assert_eq!(input.len(), len + frames * TAG_LEN, "len {len}");
        if (64..=1 << 20).contains(&len) {
            assert!(!file.windows(64).any(|w| w == &plain[..64]));
        }
        ok(&run(&s, &["decrypt-file", &p("enc"), &p("out")]));
        assert_eq!(std::fs::read(p("out"))?, plain, "len {len}");
        // Output files are the user's alone.
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(p("out"))?.permissions().mode() & 0o077, 0);
    }
    assert_eq!(
        others(dir.path(), &["in", "enc", "out"]),
        Vec::<String>::new()
    );

    // stdin to stdout both ways (small: the harness reads stdout only once the CLI exits).
    let plain = data(40_000);
    let enc = finish(cli_command(&s, &["encrypt-file", &key, "-", "-"]), &plain);
    ok(&enc);
    let dec = finish(cli_command(&s, &["decrypt-file", "-", "-"]), &enc.stdout);
    ok(&dec);
    assert_eq!(dec.stdout, plain);
    // The key as an alias, and the expected context present: fine.
    ok(&run(
        &s,
        &["aliases", "create", &format!("{key}-alias"), &key],
    ));
    ok(&run(
        &s,
        &[
            "encrypt-file",
            &format!("alias/{key}-alias"),
            &p("in"),
            &p("enc2"),
        ],
    ));
    ok(&run(
        &s,
        &[
            "decrypt-file",
            &p("enc"),
            &p("out2"),
            "--expect-context",
            "tenant=acme",
        ],
    ));
    Ok(())
}

fn cli_command(s: &Server, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args)
        .env("CUSTODIAN_ADDR", &s.base)
        .env("CUSTODIAN_TOKEN", &s.token)
        .env_remove("CUSTODIAN_TOKEN_FILE");
    c
}

#[tokio::test]
async fn bad_files_and_refused_requests_leave_nothing_under_the_output_name() -> anyhow::Result<()>
{
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    let key = unique("files-neg");
    ok(&run(&s, &["keys", "create", &key]));
    let dir = tempfile::tempdir()?;
    let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    let f = 64 * 1024;
    let plain = data(3 * f + 100);
    let file = encrypt_in_dir(&s, &key, &plain, dir.path());
    let h = {
        let mut input = &file[..];
        read_header(&mut input)?;
        file.len() - input.len()
    };
    let frame = f + TAG_LEN;
    let refuse = |name: &str, bytes: &[u8], code: &str| {
        std::fs::write(p(name), bytes).unwrap();
        let out = run(&s, &["decrypt-file", &p(name), &p("out")]);
        let stderr = fails_with(&out, code);
        assert!(
            !dir.path().join("out").exists(),
            "{name}: output left: {stderr}"
        );
        assert_eq!(
            others(dir.path(), &["in", "enc", name]),
            Vec::<String>::new(),
            "{name}: temporary file left"
        );
        std::fs::remove_file(p(name)).unwrap();
    };
    // A changed byte in the last frame: the first frames decrypted, yet no output stands.
    let mut tampered = file.clone();
    let last = tampered.len() - 5;
    tampered[last] ^= 1;
    refuse("tampered", &tampered, "frame 3 failed authentication");
    // Cut at a frame boundary, and inside a frame.
    refuse(
        "cut-boundary",
        &file[..h + 2 * frame],
        "frame 1 failed authentication",
    );
    refuse("cut-inside", &file[..h + 2 * frame + 10], "truncated");
    refuse("cut-header", &file[..h - 1], "ends inside its header");
    // Two frames swapped; a frame duplicated.
    let fr = |i: usize| &file[h + i * frame..h + (i + 1) * frame];
    let swapped = [&file[..h], fr(1), fr(0), fr(2), &file[h + 3 * frame..]].concat();
    refuse("swapped", &swapped, "frame 0 failed authentication");
    let duplicated = [
        &file[..h],
        fr(0),
        fr(1),
        fr(1),
        fr(2),
        &file[h + 3 * frame..],
    ]
    .concat();
    refuse("duplicated", &duplicated, "frame 2 failed authentication");
    // The context in the header changed (same length): the server refuses the data key.
    let needle = b"acme";
    let at = file.windows(4).position(|w| w == needle).unwrap();
    let mut other_ctx = file.clone();
    other_ctx[at..at + 4].copy_from_slice(b"acmf");
    refuse("context", &other_ctx, "decryption_failed");
    // A changed byte in the wrapped key: the server refuses it too.
    let mut wrapped = file.clone();
    wrapped[44 + 40] ^= 1;
    refuse("wrapped", &wrapped, "decryption_failed");
    // Not this format at all.
    refuse("garbage", b"CSTD\x01 not a streaming file", "bad magic");

    // The context the caller expects is checked before the server is asked.
    let out = run(
        &s,
        &[
            "decrypt-file",
            &p("enc"),
            &p("out"),
            "--expect-context",
            "tenant=other",
        ],
    );
    fails_with(&out, "context_mismatch");
    assert!(!dir.path().join("out").exists());

    // To stdout: the verified frames went out, then the error; exit status 1. (Small frames:
    // the harness reads stdout only once the CLI exits.)
    let small = &plain[..3 * 4096 + 100];
    std::fs::write(p("small"), small)?;
    ok(&run(
        &s,
        &[
            "encrypt-file",
            &key,
            &p("small"),
            &p("small.enc"),
            "--frame-size",
            "4096",
        ],
    ));
    let mut bad = std::fs::read(p("small.enc"))?;
    let n = bad.len();
    bad[n - 1] ^= 1;
    std::fs::write(p("small.bad"), &bad)?;
    let out = run(&s, &["decrypt-file", &p("small.bad"), "-"]);
    assert!(!out.status.success());
    assert_eq!(out.stdout, small[..3 * 4096]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("frame 3 failed authentication"));

    // Refused requests: unknown key, reserved context key, a denied principal, a disabled key.
    fails_with(
        &run(&s, &["encrypt-file", "no-such-key", &p("in"), &p("x")]),
        "key_not_found",
    );
    fails_with(
        &run(
            &s,
            &[
                "encrypt-file",
                &key,
                &p("in"),
                &p("x"),
                "--context",
                "custodian:x=1",
            ],
        ),
        "invalid_context",
    );
    fails_with(
        &run(
            &s,
            &[
                "encrypt-file",
                &key,
                &p("in"),
                &p("x"),
                "--frame-size",
                "10",
            ],
        ),
        "frame size 10",
    );
    assert!(!dir.path().join("x").exists());
    let auditor = s
        .post(
            "/v1/principals",
            json!({"name": "file-auditor", "policies": ["auditor"]}),
        )
        .await;
    assert_eq!(auditor.status, 201);
    let token = s
        .post("/v1/tokens", json!({"principal": "file-auditor"}))
        .await;
    let token = token.ok()["token"].as_str().unwrap().to_owned();
    for args in [
        vec!["encrypt-file", key.as_str(), "IN", "X"],
        vec!["decrypt-file", "ENC", "X"],
    ] {
        let args: Vec<String> = args
            .iter()
            .map(|a| match *a {
                "IN" => p("in"),
                "ENC" => p("enc"),
                "X" => p("x"),
                other => other.to_owned(),
            })
            .collect();
        let mut c = Command::new(BIN);
        c.args(&args)
            .env("CUSTODIAN_ADDR", &s.base)
            .env("CUSTODIAN_TOKEN", &token);
        fails_with(&finish(c, b""), "forbidden");
    }
    assert!(!dir.path().join("x").exists());
    ok(&run(&s, &["keys", "disable", &key]));
    fails_with(
        &run(&s, &["encrypt-file", &key, &p("in"), &p("x")]),
        "key_disabled",
    );
    fails_with(
        &run(&s, &["decrypt-file", &p("enc"), &p("x")]),
        "key_disabled",
    );
    assert!(!dir.path().join("x").exists());
    ok(&run(&s, &["keys", "enable", &key]));
    ok(&run(&s, &["decrypt-file", &p("enc"), &p("x")]));
    assert_eq!(std::fs::read(p("x"))?, plain);
    Ok(())
}

fn ctx(v: &str) -> EncryptionContext {
    EncryptionContext::from_pairs([("tenant".to_owned(), v.to_owned())]).unwrap()
}

#[tokio::test]
async fn the_library_streams_asynchronously_and_caches_within_bounds() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    let key = unique("lib");
    assert_eq!(s.post("/v1/keys", json!({"name": key})).await.status, 201);
    let client = Client::builder(&s.base)
        .bearer_token(BearerToken::new(s.token.clone()))
        .build()?;
    let debug = format!("{client:?}");
    assert!(!debug.contains(&s.token[s.token.len() - 20..]), "{debug}");

    // Async adapters, through the server's data key.
    let plain = data(1 << 20);
    let enc = client
        .file_encryptor(&key, &ctx("acme"), StreamOptions::default())
        .await?;
    let mut w = enc.async_writer(Vec::new());
    w.write_all(&plain).await?;
    w.shutdown().await?;
    let file = w.into_inner();
    let mut input = &file[..];
    let header = custodian_client::stream::read_header_async(&mut input).await?;
    let mut r = client.file_decryptor(header).await?.async_reader(input);
    let mut out = Vec::new();
    r.read_to_end(&mut out).await?;
    assert_eq!(out, plain);

    // Data keys: plaintext redacted in Debug; a payload round trip; a wrong context refused
    // with the server's code and request id.
    let dk = client.generate_data_key(&key, &ctx("acme")).await?;
    let shown = format!("{dk:?}");
    assert!(shown.contains("REDACTED"), "{shown}");
    let opened = client.decrypt(dk.wrapped(), &ctx("acme")).await?;
    assert_eq!(opened.expose_secret(), dk.plaintext().expose_secret());
    let err = client
        .decrypt(dk.wrapped(), &ctx("other"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("decryption_failed"));
    assert!(err.request_id().is_some_and(|id| !id.is_empty()), "{err}");
    assert!(err.to_string().contains(err.request_id().unwrap()));

    // The cache: off by default (two files, two data keys); with max_messages = 2, files 1 and
    // 2 share a data key and file 3 gets a new one; another context never shares.
    let wrapped_of = |e: &custodian_client::stream::Encryptor| e.header().wrapped_key.clone();
    let opts = StreamOptions {
        plaintext_len: Some(10),
        ..StreamOptions::default()
    };
    let a = client.file_encryptor(&key, &ctx("acme"), opts).await?;
    let b = client.file_encryptor(&key, &ctx("acme"), opts).await?;
    assert_ne!(wrapped_of(&a), wrapped_of(&b));
    let cache = std::sync::Arc::new(DataKeyCache::new(CacheLimits {
        max_messages: 2,
        ..CacheLimits::default()
    }));
    let cached = Client::builder(&s.base)
        .bearer_token(BearerToken::new(s.token.clone()))
        .data_key_cache(cache.clone())
        .build()?;
    let e1 = cached.file_encryptor(&key, &ctx("acme"), opts).await?;
    let e2 = cached.file_encryptor(&key, &ctx("acme"), opts).await?;
    let e3 = cached.file_encryptor(&key, &ctx("acme"), opts).await?;
    let other = cached.file_encryptor(&key, &ctx("other"), opts).await?;
    assert_eq!(wrapped_of(&e1), wrapped_of(&e2));
    assert_ne!(wrapped_of(&e2), wrapped_of(&e3));
    assert_ne!(wrapped_of(&e3), wrapped_of(&other));
    // Distinct salts: one data key, distinct file keys.
    assert_ne!(e1.header().salt, e2.header().salt);
    // Unknown length: the cache is not used.
    let u1 = cached
        .file_encryptor(&key, &ctx("acme"), StreamOptions::default())
        .await?;
    assert_ne!(wrapped_of(&u1), wrapped_of(&e3));
    // Files sealed with a cached key open through a fresh client.
    let mut sink = Vec::new();
    let mut w = e2.writer(&mut sink)?;
    w.write_all(b"cached key")?;
    w.finish()?;
    let mut input = &sink[..];
    let header = read_header(&mut input)?;
    let mut plain = String::new();
    std::io::Read::read_to_string(
        &mut client.file_decryptor(header).await?.reader(input),
        &mut plain,
    )?;
    assert_eq!(plain, "cached key");
    Ok(())
}

#[tokio::test]
async fn a_long_retry_after_ends_the_call_at_once_with_the_servers_answer() -> anyhow::Result<()> {
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    let client = Client::builder(&s.base)
        .bearer_token(BearerToken::new("cst_0000_not-a-valid-token".to_owned()))
        .retry(custodian_client::RetryPolicy {
            max_attempts: 5,
            max_retry_after: std::time::Duration::from_secs(2),
            ..custodian_client::RetryPolicy::default()
        })
        .build()?;
    // Bad tokens until the server throttles this source (429 with Retry-After, ~60 s).
    let started = std::time::Instant::now();
    let mut throttled = None;
    for _ in 0..40 {
        match client.generate_data_key("any", &ctx("a")).await {
            Err(e) if e.status().map(|s| s.as_u16()) == Some(429) => {
                throttled = Some(e);
                break;
            }
            Err(e) => assert_eq!(e.status().map(|s| s.as_u16()), Some(401), "{e}"),
            Ok(_) => panic!("a bad token was accepted"),
        }
    }
    let e = throttled.expect("throttled within 40 attempts");
    match &e {
        custodian_client::Error::Api {
            retry_after: Some(wait),
            request_id,
            ..
        } => {
            assert!(*wait > std::time::Duration::from_secs(2), "{wait:?}");
            assert!(!request_id.is_empty());
        }
        other => panic!("no Retry-After: {other:?}"),
    }
    // Nothing waited for a Retry-After beyond the cap.
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    // A server that is not there: connection errors are retried, then reported.
    let gone = Client::builder("http://127.0.0.1:9")
        .retry(custodian_client::RetryPolicy {
            max_attempts: 3,
            initial_backoff: std::time::Duration::from_millis(10),
            ..custodian_client::RetryPolicy::default()
        })
        .build()?;
    let err = gone.generate_data_key("k", &ctx("a")).await.unwrap_err();
    assert!(matches!(err, custodian_client::Error::Http(_)), "{err}");
    Ok(())
}

#[tokio::test]
async fn the_library_authenticates_with_a_client_certificate() -> anyhow::Result<()> {
    let root = crate::tls::ca("custodian test CA");
    let (_d, s, base) = crate::tls::tls_server(&root).await?;
    let key = unique("mtls");
    let admin = Client::builder(&base)
        .ca_certificate_pem(root.cert.pem().as_bytes())?
        .bearer_token(BearerToken::new(s.token.clone()))
        .build()?;
    admin
        .call::<_, serde_json::Value>(
            reqwest::Method::POST,
            "/v1/keys",
            &json!({"name": key}),
            custodian_client::Retry::Unsafe,
        )
        .await?;
    admin
        .call::<_, serde_json::Value>(
            reqwest::Method::POST,
            "/v1/principals",
            &json!({"name": "mtls-app", "policies": ["application"]}),
            custodian_client::Retry::Unsafe,
        )
        .await?;
    let (cert, key_pem) = crate::tls::leaf_for(&root, "mtls-app");
    let identity = zeroize::Zeroizing::new(format!("{cert}{key_pem}").into_bytes());
    let app = Client::builder(&base)
        .ca_certificate_pem(root.cert.pem().as_bytes())?
        .client_identity_pem(&identity)?
        .build()?;
    let dk = app.generate_data_key(&key, &ctx("acme")).await?;
    assert_eq!(dk.plaintext().len(), 32);
    // Negative twins: no certificate and no token (401), a server CA not trusted (handshake).
    let anonymous = Client::builder(&base)
        .ca_certificate_pem(root.cert.pem().as_bytes())?
        .build()?;
    let e = anonymous
        .generate_data_key(&key, &ctx("acme"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("missing_token"), "{e}");
    let other = crate::tls::ca("another CA");
    let untrusting = Client::builder(&base)
        .ca_certificate_pem(other.cert.pem().as_bytes())?
        .client_identity_pem(&identity)?
        .build()?;
    assert!(matches!(
        untrusting.generate_data_key(&key, &ctx("acme")).await,
        Err(custodian_client::Error::Http(_))
    ));
    // The CLI with the same files: --ca-file and --client-identity, no token.
    let dir = tempfile::tempdir()?;
    let ca_file = dir.path().join("ca.pem");
    let id_file = dir.path().join("id.pem");
    std::fs::write(&ca_file, root.cert.pem())?;
    let mut f = std::fs::File::create(&id_file)?;
    f.write_all(&identity)?;
    let input = dir.path().join("in");
    std::fs::write(&input, data(100_000))?;
    let mut c = Command::new(BIN);
    c.args(["encrypt-file", &key])
        .arg(&input)
        .arg(dir.path().join("enc"))
        .arg("--ca-file")
        .arg(&ca_file)
        .arg("--client-identity")
        .arg(&id_file)
        .env("CUSTODIAN_ADDR", &base)
        .env_remove("CUSTODIAN_TOKEN")
        .env_remove("CUSTODIAN_TOKEN_FILE")
        .env("HOME", dir.path());
    ok(&finish(c, b""));
    assert!(dir.path().join("enc").exists());
    Ok(())
}

#[tokio::test]
async fn an_independent_reader_agrees_with_the_vectors_and_the_cli() -> anyhow::Result<()> {
    let script = format!("{}/tests/clients/stream_v1.py", env!("CARGO_MANIFEST_DIR"));
    let vectors = format!(
        "{}/tests/vectors/stream-v1.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = Command::new(crate::vault::python())
        .args([&script, "vectors", &vectors])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.lines().count() >= 6, "{text}");
    // A file written by the CLI, read by the Python reader (data key unwrapped by the server).
    let mut d = Deployment::new()?;
    let s = d.start().await?;
    let key = unique("py");
    ok(&run(&s, &["keys", "create", &key]));
    let dir = tempfile::tempdir()?;
    let p = |n: &str| dir.path().join(n).to_string_lossy().into_owned();
    let plain = data(200_000);
    std::fs::write(p("in"), &plain)?;
    ok(&run(
        &s,
        &[
            "encrypt-file",
            &key,
            &p("in"),
            &p("enc"),
            "--context",
            "app=py",
        ],
    ));
    let python = |src: &str| {
        Command::new(crate::vault::python())
            .args([&script, "decrypt", &p(src), &p("out")])
            .env("CUSTODIAN_ADDR", &s.base)
            .env("CUSTODIAN_TOKEN", &s.token)
            .output()
            .unwrap()
    };
    let out = python("enc");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(p("out"))?, plain);
    // Its negative twin: a changed last byte fails there too.
    let mut bad = std::fs::read(p("enc"))?;
    let n = bad.len();
    bad[n - 1] ^= 1;
    std::fs::write(p("bad"), bad)?;
    assert!(!python("bad").status.success());
    Ok(())
}
