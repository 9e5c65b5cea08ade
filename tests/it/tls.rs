//! HTTPS with client certificates: a test CA made at test time, a certificate's subject mapped
//! to a principal, policy applied to it like to any principal; certificates from another CA,
//! missing certificates in `required` mode and plain HTTP are refused.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use reqwest::{Certificate, Client, Identity};
use serde_json::{json, Value};

use crate::common::Deployment;

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).unwrap();
    Ca { cert, key }
}

/// A certificate signed by `ca`: PEM of the certificate and of its key.
fn leaf(ca: &Ca, cn: &str, server: bool) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(if server {
        vec!["localhost".to_owned()]
    } else {
        Vec::new()
    })
    .unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    if server {
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    } else {
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    }
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    (cert.pem(), key.serialize_pem())
}

fn client(ca_pem: &str, identity: Option<&(String, String)>) -> Client {
    let mut b = Client::builder()
        .use_rustls_tls()
        .add_root_certificate(Certificate::from_pem(ca_pem.as_bytes()).unwrap());
    if let Some((cert, key)) = identity {
        b = b.identity(Identity::from_pem(format!("{cert}{key}").as_bytes()).unwrap());
    }
    b.build().unwrap()
}

async fn status(
    c: &Client,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> Result<(u16, Value), reqwest::Error> {
    let mut req = match body {
        Some(b) => c.post(url).json(&b),
        None => c.get(url),
    };
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let res = req.send().await?;
    let status = res.status().as_u16();
    Ok((status, res.json().await.unwrap_or(Value::Null)))
}

#[tokio::test]
async fn client_certificates_authenticate_principals_under_policy() -> anyhow::Result<()> {
    let root = ca("custodian test CA");
    let other = ca("someone else's CA");
    let server = leaf(&root, "custodian", true);
    let app = leaf(&root, "cert-app", false);
    let stranger = leaf(&root, "stranger", false);
    let forged = leaf(&other, "cert-app", false);
    let ca_pem = root.cert.pem();

    let mut d = Deployment::new()?;
    for (name, text) in [
        ("server.pem", &server.0),
        ("server.key", &server.1),
        ("clients-ca.pem", &ca_pem),
    ] {
        std::fs::write(d.path().join(name), text)?;
    }
    d.append_config("[server.tls]\ncert_file = \"server.pem\"\nkey_file = \"server.key\"\nclient_ca_file = \"clients-ca.pem\"\nclient_auth = \"optional\"\n")?;
    let s = d.start().await?;
    let base = s.base.replace("http://", "https://");
    let url = |p: &str| format!("{base}{p}");

    // Optional mode: the bootstrap token works over TLS without a certificate.
    let admin = client(&ca_pem, None);
    assert_eq!(
        status(&admin, &url("/v1/health/live"), None, None).await?.0,
        200
    );
    assert_eq!(
        status(
            &admin,
            &url("/v1/keys"),
            Some(&s.token),
            Some(json!({ "name": "tls-key" }))
        )
        .await?
        .0,
        201
    );
    let (code, body) = status(
        &admin,
        &url("/v1/principals"),
        Some(&s.token),
        Some(json!({ "name": "cert-app", "policies": ["application"] })),
    )
    .await?;
    assert_eq!(code, 201, "{body}");
    // Neither token nor certificate: 401.
    let (code, body) = status(&admin, &url("/v1/keys"), None, None).await?;
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (401, Some("missing_token"))
    );

    // The certificate's CN is the principal; its policy applies.
    let as_app = client(&ca_pem, Some(&app));
    let (code, body) = status(
        &as_app,
        &url("/v1/keys/tls-key/datakey"),
        None,
        Some(json!({})),
    )
    .await?;
    assert_eq!(code, 200, "{body}");
    let (code, body) = status(
        &as_app,
        &url("/v1/keys"),
        None,
        Some(json!({ "name": "not-allowed" })),
    )
    .await?;
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    // A certificate naming no principal gets nothing.
    let as_stranger = client(&ca_pem, Some(&stranger));
    let (code, body) = status(&as_stranger, &url("/v1/keys/tls-key"), None, None).await?;
    assert_eq!(
        (code, body["error"]["code"].as_str()),
        (403, Some("forbidden"))
    );
    // A certificate from another CA never gets through the handshake.
    assert!(status(
        &client(&ca_pem, Some(&forged)),
        &url("/v1/keys"),
        None,
        None
    )
    .await
    .is_err());
    // Plain HTTP to the TLS port fails.
    assert!(reqwest::get(format!("{}/v1/health/live", s.base))
        .await
        .is_err());
    s.kill();

    // Required mode: no certificate, no connection, even with a valid token.
    let text = std::fs::read_to_string(d.config())?
        .replace("client_auth = \"optional\"", "client_auth = \"required\"");
    std::fs::write(d.config(), text)?;
    let s = d.start().await?;
    let base = s.base.replace("http://", "https://");
    assert!(status(
        &client(&ca_pem, None),
        &format!("{base}/v1/keys"),
        Some(&s.token),
        None
    )
    .await
    .is_err());
    let (code, _) = status(
        &client(&ca_pem, Some(&app)),
        &format!("{base}/v1/keys/tls-key/datakey"),
        None,
        Some(json!({})),
    )
    .await?;
    assert_eq!(code, 200);
    Ok(())
}

#[test]
fn a_bad_tls_setup_refuses_to_start() -> anyhow::Result<()> {
    let d = Deployment::new()?;
    d.append_config("[server.tls]\ncert_file = \"missing.pem\"\nkey_file = \"missing.key\"\n")?;
    let stderr = d.start_expecting_failure()?;
    assert!(stderr.contains("missing.pem"), "{stderr}");
    let d = Deployment::new()?;
    d.append_config(
        "[server.tls]\ncert_file = \"a.pem\"\nkey_file = \"a.key\"\nclient_auth = \"required\"\n",
    )?;
    let out = d
        .command()
        .args(["serve", "--check-config", "--config"])
        .arg(d.config())
        .output()?;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("server.tls.client_ca_file"));
    Ok(())
}
