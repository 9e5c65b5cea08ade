//! The bodies of the fuzz targets in `fuzz/` (cargo-fuzz, libFuzzer), one function per parser
//! of outside input. The fuzz targets call these, and so does the corpus replay test at the
//! bottom of this file on the stable toolchain, so the two cannot drift apart
//! (docs/decisions/0060-fuzzing.md, docs/testing.md#fuzzing).
//!
//! Each body takes the raw input, feeds it to the production function and checks what must
//! hold for every input (a parser is canonical, a round trip is exact, deny wins). A broken
//! invariant is an `assert!` failure: libFuzzer records the input as a crash, and the replay
//! test fails on it. Nothing here runs on a request path.
//!
//! Keys and secrets are fixed test values, never a deployment's: the openers that are pure
//! software (cached-mode KWP, the streaming file format) run under them; what needs a device
//! (a PKCS#11 GCM open, the TPM's HMAC) is fuzzed up to the device call.

use std::io::{Cursor, Read as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, OnceLock};

use arbitrary::Unstructured;
use serde_json::Value;

use crate::api::extract::{parse, RequestBody};
use crate::api_types;
use crate::audit::custody::SignedReport;
use crate::audit::signature::PublicKey;
use crate::backend::cached::kek::VersionKek;
use crate::backend::cached::kwp;
use crate::domain::secret::{HumanDuration, SecretPath};
use crate::domain::Algorithm;
use crate::format::blob::{Blob, HEADER_LEN};
use crate::format::EncryptionContext;
use crate::policy::document::{Effect, PolicyDocument};
use crate::policy::{evaluate, Action, Request, Resource, Subject};

/// One fuzz target: its name (the directory under `fuzz/corpus/`) and its body.
pub struct Target {
    /// The name of the target in `fuzz/fuzz_targets/` and of its corpus directory.
    pub name: &'static str,
    /// The body: every input is fed through it.
    pub run: fn(&[u8]),
}

/// Every target. `fuzz/Cargo.toml` declares one binary per entry, and the replay test requires a
/// non-empty corpus directory for each.
pub const TARGETS: &[Target] = &[
    Target {
        name: "blob",
        run: blob,
    },
    Target {
        name: "context",
        run: context,
    },
    Target {
        name: "policy",
        run: policy,
    },
    Target {
        name: "secret_path",
        run: secret_path,
    },
    Target {
        name: "duration",
        run: duration,
    },
    Target {
        name: "api_bodies",
        run: api_bodies,
    },
    Target {
        name: "audit_export",
        run: audit_export,
    },
    Target {
        name: "custody_report",
        run: custody_report,
    },
    Target {
        name: "tpm_attestation",
        run: tpm_attestation,
    },
    Target {
        name: "vault_request",
        run: vault_request,
    },
    Target {
        name: "aws_request",
        run: aws_request,
    },
    Target {
        name: "sigv4",
        run: sigv4,
    },
    Target {
        name: "stream",
        run: stream,
    },
];

/// The version-KEK of the blob target's cached-mode opener: a fixed test value.
const TEST_KEK: [u8; 32] = [0x4b; 32];
/// The data key of the stream target: the one `tests/vectors/stream-v1.json` uses, so that the
/// vectors in its seed corpus decrypt and the fuzzer starts from files that open.
const TEST_STREAM_KEY: [u8; 32] = [
    0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,
    0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x1b, 0x1c, 0x1d, 0x1e, 0x1f,
];
/// The secret access key of the SigV4 target: the AWS test suite's, as in its seed corpus.
const TEST_SIGV4_SECRET: &[u8] = b"wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
/// The largest plaintext the stream target reads back (its inputs are far smaller).
const STREAM_READ_LIMIT: u64 = 1 << 20;

/// A P-256 public key from a fixed scalar: the key the verifiers check against. Every input's
/// signature fails under it unless the fuzzer forges ECDSA; the parsing before and around the
/// signature is what is fuzzed. Derived once: a scalar multiplication per input would be most
/// of an execution's time.
fn test_public_key() -> &'static PublicKey {
    static KEY: OnceLock<PublicKey> = OnceLock::new();
    KEY.get_or_init(|| {
        let secret = p256::SecretKey::from_slice(&[0x11; 32]);
        let public = secret.map(|s| s.public_key().to_sec1_bytes());
        let key = public
            .map_err(drop)
            .and_then(|p| PublicKey::from_sec1(&p).map_err(drop));
        assert!(key.is_ok(), "the fixed test scalar is a valid P-256 key");
        key.unwrap_or_else(|()| unreachable!("asserted above"))
    })
}

/// The first line of `data` (as text, if it is) and the bytes after it.
fn first_line(data: &[u8]) -> (Option<&str>, &[u8]) {
    match data.iter().position(|b| *b == b'\n') {
        Some(i) => (std::str::from_utf8(&data[..i]).ok(), &data[i + 1..]),
        None => (std::str::from_utf8(data).ok(), &[]),
    }
}

/// The ciphertext blob parser, then the cached-mode opener (RFC 5649 KWP under HKDF of a fixed
/// version-KEK, bound to the header and nonce) for the KWP algorithms. `Aes256GcmDevice` is
/// opened by the device and `Aes256KwpTpmHmac`'s key comes from the TPM: those are fuzzed up to
/// the device call (the parser and the AAD). The parser must be canonical: a blob it accepts
/// serialises back to exactly the input.
pub fn blob(data: &[u8]) {
    let Ok(blob) = Blob::parse(data) else {
        return;
    };
    assert_eq!(
        blob.to_bytes(),
        data,
        "an accepted blob is its own serialisation"
    );
    let header = blob.header();
    let empty = EncryptionContext::empty();
    let aad = header.aad(&empty);
    let (aad_header, aad_context) = aad.split_at(HEADER_LEN);
    assert_eq!(
        aad_header,
        &data[..HEADER_LEN],
        "the AAD starts with the blob's header"
    );
    assert_eq!(
        aad_context,
        empty.canonical(),
        "and goes on with the canonical context"
    );
    if blob.algorithm == Algorithm::Aes256KwpCached {
        let Ok(kek) = VersionKek::from_slice(&TEST_KEK) else {
            unreachable!("a 32-byte KEK is accepted")
        };
        let mut bound = header.to_bytes().to_vec();
        bound.extend_from_slice(&blob.iv);
        // An integrity failure or a length refusal; a KWP forgery is 2^-32 per try, so an
        // opened key is not asserted against.
        let _ = kwp::unwrap(
            &kek,
            &bound,
            &EncryptionContext::empty().canonical(),
            &blob.ciphertext,
        );
    }
}

/// The encryption context: its JSON form and its canonical encoding. Whatever JSON is accepted
/// encodes canonically and reads back equal; whatever canonical bytes are accepted re-encode to
/// exactly themselves.
pub fn context(data: &[u8]) {
    if let Ok(ctx) = serde_json::from_slice::<EncryptionContext>(data) {
        let canonical = ctx.canonical();
        assert_eq!(
            EncryptionContext::from_canonical(&canonical).as_ref(),
            Some(&ctx)
        );
    }
    if let Some(ctx) = EncryptionContext::from_canonical(data) {
        assert_eq!(ctx.canonical(), data, "the canonical encoding is unique");
    }
}

/// A policy document and its evaluation. The input's first byte `n` says how many of the
/// following bytes draw the request (action, resource, context, source, time) and the
/// principal's attributes; the rest is the document. A parsed document serialises and
/// re-parses equal; with every statement turned into a deny the same request is denied (deny
/// wins; no match denies); a subject with no policy is denied.
pub fn policy(data: &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let (drawn, document) = rest.split_at(usize::from(n).min(rest.len()));
    let mut u = Unstructured::new(drawn);
    let Ok(request) = policy_request(&mut u) else {
        return;
    };
    let Ok(attributes) = u.arbitrary::<std::collections::BTreeMap<String, String>>() else {
        return;
    };
    let Ok(doc) = PolicyDocument::parse(document) else {
        return;
    };
    let Ok(json) = serde_json::to_vec(&doc) else {
        unreachable!("a parsed policy serialises")
    };
    assert_eq!(
        PolicyDocument::parse(&json).as_ref(),
        Ok(&doc),
        "a policy round-trips"
    );
    let PolicyRequest {
        action,
        resource,
        context,
        source,
        now,
    } = &request;
    let req = Request {
        action: *action,
        resource,
        context: context.as_ref(),
        source: *source,
        now: *now,
    };
    let mut denying = doc.clone();
    for st in &mut denying.statements {
        st.effect = Effect::Deny;
    }
    let subject = |doc: Option<PolicyDocument>| Subject {
        name: "fuzz".to_owned(),
        attributes: attributes.clone(),
        policies: doc
            .map(|d| ("p".to_owned(), Arc::new(d)))
            .into_iter()
            .collect(),
    };
    let decision = evaluate(&subject(Some(doc)), &req);
    let denied = evaluate(&subject(Some(denying)), &req);
    assert!(!denied.allowed(), "a document of denies allows nothing");
    if decision.allowed() {
        assert!(
            denied.decided_by.is_some(),
            "the statement that allowed now denies"
        );
    }
    assert!(
        !evaluate(&subject(None), &req).allowed(),
        "no policy denies"
    );
}

/// The policy target's request, drawn from the start of the input.
struct PolicyRequest {
    action: Action,
    resource: Resource,
    context: Option<EncryptionContext>,
    source: Option<IpAddr>,
    now: time::OffsetDateTime,
}

/// Draws a [`PolicyRequest`].
fn policy_request(u: &mut Unstructured<'_>) -> arbitrary::Result<PolicyRequest> {
    let action = *u.choose(Action::ALL)?;
    let kind = *u.choose(crate::policy::document::RESOURCE_KINDS)?;
    let names: Vec<String> = (0..u.int_in_range(1..=3)?)
        .map(|_| u.arbitrary::<String>())
        .collect::<arbitrary::Result<_>>()?;
    let pairs: Vec<(String, String)> = u.arbitrary()?;
    let context = if u.arbitrary()? {
        EncryptionContext::from_pairs(pairs).ok()
    } else {
        None
    };
    let source = match u.int_in_range(0..=2u8)? {
        0 => None,
        1 => Some(IpAddr::V4(Ipv4Addr::from(u.arbitrary::<[u8; 4]>()?))),
        _ => Some(IpAddr::V6(Ipv6Addr::from(u.arbitrary::<[u8; 16]>()?))),
    };
    // 1970 to 2100: the range a request's clock can be in.
    let now = time::OffsetDateTime::from_unix_timestamp(u.int_in_range(0..=4_102_444_800i64)?)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    Ok(PolicyRequest {
        action,
        resource: Resource { kind, names },
        context,
        source,
        now,
    })
}

/// A secret path, from a URL or a JSON body: both readings agree, and an accepted path is the
/// text it was read from.
pub fn secret_path(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let direct = SecretPath::try_from(text.to_owned());
    let json = serde_json::from_value::<SecretPath>(Value::String(text.to_owned()));
    assert_eq!(direct.is_ok(), json.is_ok(), "both readings agree");
    if let Ok(path) = direct {
        assert_eq!(path.as_str(), text);
        assert!(path.as_str().len() <= SecretPath::MAX_LEN);
        let _ = crate::policy::Resource::secret(&path);
    }
}

/// A duration (`90d`, `1h30m`): an accepted one is positive, bounded, and its text form reads
/// back equal; the JSON reading agrees with the text one.
pub fn duration(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let parsed = HumanDuration::parse(text);
    let json = serde_json::from_value::<HumanDuration>(Value::String(text.to_owned()));
    assert_eq!(parsed.is_ok(), json.is_ok(), "both readings agree");
    if let Ok(d) = parsed {
        assert!(!d.0.is_zero() && d.0 <= HumanDuration::MAX);
        assert_eq!(
            HumanDuration::parse(&d.to_text()),
            Ok(d),
            "the text form round-trips"
        );
    }
}

/// One request body type through the native API's JSON extractor.
fn body<T: RequestBody>(bytes: &[u8]) {
    if parse::<T>(bytes).is_ok() {
        let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
        assert_eq!(first, Some(&b'{'), "only a JSON object is accepted");
    }
}

/// The native API's request bodies: the input's first byte picks the body type, the rest is
/// the body, read by the extractor every route uses ([`crate::api::extract::parse`]). The
/// router itself needs a device and a store to be built (docs/decisions/0060-fuzzing.md).
pub fn api_bodies(data: &[u8]) {
    use api_types::{access_keys, audit, crypto, database, identity, keys, lifecycle, secrets};
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let bodies: [fn(&[u8]); 22] = [
        body::<crypto::DataKeyRequest>,
        body::<crypto::EncryptRequest>,
        body::<crypto::DecryptRequest>,
        body::<keys::CreateKeyRequest>,
        body::<lifecycle::PatchKeyRequest>,
        body::<lifecycle::ScheduleDeletionRequest>,
        body::<lifecycle::CreateAliasRequest>,
        body::<lifecycle::RepointAliasRequest>,
        body::<crypto::ReencryptRequest>,
        body::<secrets::PutSecretRequest>,
        body::<secrets::PutSecretMetadataRequest>,
        body::<secrets::SecretVersionsRequest>,
        body::<identity::CreatePrincipalRequest>,
        body::<identity::PatchPrincipalRequest>,
        body::<identity::ExplainRequest>,
        body::<identity::CreateTokenRequest>,
        body::<access_keys::CreateAccessKeyRequest>,
        body::<audit::AuditArchiveRequest>,
        body::<database::CreateDbConnectionRequest>,
        body::<database::PutDbRoleRequest>,
        body::<database::DbCredsRequest>,
        body::<database::RenewLeaseRequest>,
    ];
    bodies[usize::from(which) % bodies.len()](rest);
}

/// The audit export verifier (`custodian audit verify`), on the input as an export file, under
/// a fixed public key.
pub fn audit_export(data: &[u8]) {
    let key = test_public_key();
    if let Ok(intact) = crate::audit::export::verify(Cursor::new(data), key) {
        let lines = data.split(|b| *b == b'\n').count() as u64;
        assert!(
            intact.records + intact.checkpoints < lines,
            "one line per record"
        );
    }
}

/// The custody report verifier (`custodian custody verify` and `custody report --format md`):
/// the input as a signed envelope, verified under a fixed key; and the input as a payload,
/// read the way the summary, the attestation checks and the Markdown rendering read a payload
/// whose signature verified.
pub fn custody_report(data: &[u8]) {
    let key = test_public_key();
    if let Ok(report) = crate::cli::audit::parse_report(data, "fuzz") {
        let _ = report.verify(key);
        let _ = crate::cli::audit::render_markdown(&report);
    }
    let Ok(payload_text) = std::str::from_utf8(data) else {
        return;
    };
    let report = SignedReport {
        payload: payload_text.to_owned(),
        algorithm: crate::audit::signature::ALGORITHM.to_owned(),
        key_fingerprint: key.fingerprint(),
        signature: String::new(),
    };
    let _ = crate::cli::audit::render_markdown(&report);
    if let Ok(payload) = serde_json::from_str::<Value>(payload_text) {
        let checks = crate::cli::attest::check_attestations(&payload, Some(key));
        let _ = crate::cli::audit::report_summary(&report, &payload);
        let _ = crate::cli::audit::attestation_summary(&payload, &checks, true);
        let tally = crate::cli::attest::tally(&checks);
        assert_eq!(tally.verified + tally.failed, checks.len());
    }
}

/// A TPM2_Certify statement. A JSON input is an attestation object as the custody report
/// carries it: checked whole (hex fields, the AK's PEM, the DER signature, then the statement),
/// and its statement checked past the signature (which the fuzzer cannot forge). Any other
/// input is a marshalled `TPMS_ATTEST` and `TPM2B_PUBLIC` for the TPM structure parsers.
pub fn tpm_attestation(data: &[u8]) {
    use crate::backend::tpm::attest::{check_statement, Certification};
    use crate::backend::tpm::keys::{name_of, parse_public};
    use tss_esapi::structures::Attest;
    use tss_esapi::traits::UnMarshall as _;

    if let Ok(v) = serde_json::from_slice::<Value>(data) {
        let _ = crate::cli::attest::check_one(&v, &v["key_name"], None);
        let hex = |name: &str| v[name].as_str().and_then(|s| hex::decode(s).ok());
        if let (Some(attest), Some(key_name), Some(public), Some(qualifying)) = (
            hex("attest"),
            hex("key_name"),
            hex("key_public"),
            hex("qualifying_data"),
        ) {
            let cert = Certification {
                attest,
                signature_der: Vec::new(),
                attestation_key_pem: String::new(),
                key_name,
            };
            if check_statement(&cert, &public, &qualifying).is_ok() {
                let parsed = parse_public(&public)
                    .map_err(drop)
                    .and_then(|p| name_of(&p).map_err(drop));
                assert_eq!(
                    parsed.ok(),
                    Some(cert.key_name),
                    "the statement certifies this key"
                );
            }
        }
        return;
    }
    let _ = Attest::unmarshall(data);
    if let Ok(public) = parse_public(data) {
        let _ = name_of(&public);
    }
}

/// The Vault door's request reading: the first line is the key name or secret path of the
/// URL, the rest the body, through the transit and the KV routes' readers.
pub fn vault_request(data: &[u8]) {
    let (line, body) = first_line(data);
    let name = line.unwrap_or_default();
    let _ = crate::vault::transit::read_for_fuzzing(name, body);
    let _ = crate::vault::kv::read_for_fuzzing(name, body);
}

/// The AWS KMS door's request reading: the first line names the operation (as the
/// `X-Amz-Target` header does), the rest is the body.
pub fn aws_request(data: &[u8]) {
    let (line, body) = first_line(data);
    let op = line.unwrap_or_default();
    let _ = crate::aws::read_for_fuzzing(&crate::config::AwsConfig::default(), op, body);
}

/// SigV4: the input is an HTTP request as the AWS test suite writes one (request line,
/// `Name:value` header lines, a blank line, the body). Its `Authorization` and date are parsed
/// and its canonical request and string to sign built, then the signature checked under the
/// suite's secret key, twice with the same verdict.
pub fn sigv4(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(req) = signed_request(text) {
        let _ = req.scope_matches_date();
        let _ = req.is_fresh(time::OffsetDateTime::UNIX_EPOCH);
        let verified = req.verify(TEST_SIGV4_SECRET);
        assert_eq!(
            req.verify(TEST_SIGV4_SECRET),
            verified,
            "verification is deterministic"
        );
    }
}

/// The SigV4 target's reading of a test-suite request: its `Authorization` and `X-Amz-Date`
/// parsed on their own, then the whole request through [`SignedRequest::from_parts`].
fn signed_request(text: &str) -> Option<crate::service::sigv4::SignedRequest> {
    use crate::service::sigv4::{self, SignedRequest};

    let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
    let mut lines = head.lines();
    let mut parts = lines.next()?.splitn(3, ' ');
    let method = parts.next().unwrap_or_default();
    let target = parts.next().unwrap_or_default();
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect();
    let authorization = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("authorization"))
        .map(|(_, v)| v.as_str())
        .unwrap_or_default();
    let _ = sigv4::parse_authorization(authorization);
    for (_, v) in headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("x-amz-date"))
    {
        let _ = sigv4::parse_amz_date(v.trim());
    }
    SignedRequest::from_parts(
        authorization,
        method,
        path,
        query,
        &headers,
        body.as_bytes(),
    )
    .ok()
}

/// The client's streaming file format reader: the header, then every frame under a fixed data
/// key. A file that decrypts re-encrypts (same salt, key, context and frame size) to exactly
/// the input: the format admits one encoding of each plaintext.
pub fn stream(data: &[u8]) {
    use custodian_client::stream::{read_header, Decryptor, Encryptor};
    use std::io::Write as _;

    let mut input = Cursor::new(data);
    let Ok(header) = read_header(&mut input) else {
        return;
    };
    let Ok(decryptor) = Decryptor::new(&TEST_STREAM_KEY, header.clone()) else {
        return;
    };
    let mut plaintext = Vec::new();
    let read = decryptor
        .reader(input)
        .take(STREAM_READ_LIMIT)
        .read_to_end(&mut plaintext);
    if read.is_err() {
        return;
    }
    let Ok(encryptor) = Encryptor::with_salt(
        &TEST_STREAM_KEY,
        &header.wrapped_key,
        &header.context,
        header.frame_size,
        header.salt,
    ) else {
        unreachable!("a header that was read can be written")
    };
    let again = encryptor.writer(Vec::new()).and_then(|mut w| {
        w.write_all(&plaintext)?;
        w.finish()
    });
    assert_eq!(
        again.ok().as_deref(),
        Some(data),
        "one encoding per plaintext"
    );
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;

    fn fuzz_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
    }

    /// The files of `dir`, sorted; none when it does not exist.
    fn files(dir: &Path) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .collect();
        out.sort();
        out
    }

    /// Every file of every target's corpus and regressions goes through the target's body on
    /// the stable toolchain; a corpus directory that is missing or empty fails the test.
    #[test]
    fn every_corpus_file_replays_through_its_target() {
        let mut empty = Vec::new();
        let mut replayed = 0;
        for target in TARGETS {
            let corpus = files(&fuzz_dir().join("corpus").join(target.name));
            if corpus.is_empty() {
                empty.push(target.name);
            }
            let regressions = files(&fuzz_dir().join("regressions").join(target.name));
            for file in corpus.iter().chain(&regressions) {
                let data =
                    std::fs::read(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
                let outcome = std::panic::catch_unwind(|| (target.run)(&data));
                assert!(
                    outcome.is_ok(),
                    "{} fails on {}",
                    target.name,
                    file.display()
                );
                replayed += 1;
            }
        }
        assert!(empty.is_empty(), "no corpus for fuzz targets {empty:?}");
        assert!(replayed >= TARGETS.len());
    }

    /// Every target has a fuzz target file and a `[[bin]]` in `fuzz/Cargo.toml`, and nothing
    /// else is declared there: the list above and the fuzz crate agree.
    #[test]
    fn the_fuzz_crate_declares_every_target() {
        let manifest = std::fs::read_to_string(fuzz_dir().join("Cargo.toml")).unwrap_or_default();
        let declared = manifest.matches("[[bin]]").count();
        assert_eq!(declared, TARGETS.len(), "one [[bin]] per target");
        for target in TARGETS {
            let file = fuzz_dir()
                .join("fuzz_targets")
                .join(format!("{}.rs", target.name));
            let source = std::fs::read_to_string(&file).unwrap_or_default();
            assert!(
                source.contains(&format!("custodian::fuzzing::{}(", target.name)),
                "{} calls custodian::fuzzing::{}",
                file.display(),
                target.name
            );
        }
    }

    /// The committed corpora reach past what the fuzzer cannot forge: an export whose chain and
    /// checkpoints verify under the test key, a TPM statement that verifies, a streaming file
    /// that decrypts under the test data key, a SigV4 request signed with the suite's secret.
    /// (A minimisation that dropped them would leave the deep checks unfuzzed.)
    #[test]
    fn the_corpora_hold_inputs_that_pass_every_check() {
        let corpus = |t: &str| files(&fuzz_dir().join("corpus").join(t));
        let read = |f: &PathBuf| std::fs::read(f).expect("corpus file");
        let key = test_public_key();
        assert!(corpus("audit_export").iter().any(|f| {
            crate::audit::export::verify(Cursor::new(read(f)), key)
                .is_ok_and(|i| i.records > 0 && i.checkpoints > 0)
        }));
        assert!(corpus("tpm_attestation").iter().any(|f| {
            serde_json::from_slice::<Value>(&read(f))
                .is_ok_and(|v| crate::cli::attest::check_one(&v, &v["key_name"], None).is_ok())
        }));
        assert!(corpus("stream").iter().any(|f| {
            let data = read(f);
            let mut input = Cursor::new(&data[..]);
            let header = custodian_client::stream::read_header(&mut input);
            header.is_ok_and(|h| {
                let mut out = Vec::new();
                custodian_client::stream::Decryptor::new(&TEST_STREAM_KEY, h)
                    .is_ok_and(|d| d.reader(input).read_to_end(&mut out).is_ok() && !out.is_empty())
            })
        }));
        assert!(corpus("sigv4").iter().any(|f| {
            let text = String::from_utf8(read(f)).unwrap_or_default();
            signed_request(&text).is_some_and(|r| r.verify(TEST_SIGV4_SECRET))
        }));
    }
}
