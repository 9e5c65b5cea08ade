//! HTTPS with client certificates: a test CA made at test time, a certificate's one identity SAN
//! (`custodian:principal:<name>`, or a DNS name when so configured) mapped to a principal,
//! policy applied to it like to any principal; certificates naming no principal, several, or
//! lacking the clientAuth EKU answer 401 `client_certificate_refused`; certificates from another
//! CA, missing certificates in `required` mode and plain HTTP are refused.

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use reqwest::{Certificate, Client, Identity};
use serde_json::{json, Value};

use crate::common::Deployment;

pub(crate) struct Ca {
    pub(crate) cert: rcgen::Certificate,
    key: KeyPair,
}

pub(crate) fn ca(name: &str) -> Ca {
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

/// What goes into a client certificate.
#[derive(Clone, Copy)]
enum Eku {
    ClientAuth,
    ServerAuthOnly,
    Absent,
}

/// A client certificate signed by `ca` with subject CN `cn`, these SANs and this EKU: PEM of the
/// certificate and of its key.
fn client_cert(ca: &Ca, cn: &str, sans: &[SanType], eku: Eku) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.subject_alt_names = sans.to_vec();
    params.extended_key_usages = match eku {
        Eku::ClientAuth => vec![ExtendedKeyUsagePurpose::ClientAuth],
        Eku::ServerAuthOnly => vec![ExtendedKeyUsagePurpose::ServerAuth],
        Eku::Absent => Vec::new(),
    };
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A URI SAN naming principal `name`.
fn principal_uri(name: &str) -> SanType {
    SanType::URI(format!("custodian:principal:{name}").try_into().unwrap())
}

/// A client certificate naming principal `name` the default way (one URI SAN, clientAuth).
pub(crate) fn leaf_for(ca: &Ca, name: &str) -> (String, String) {
    client_cert(ca, "ignored-cn", &[principal_uri(name)], Eku::ClientAuth)
}

/// The server certificate for 127.0.0.1 / localhost.
pub(crate) fn server_cert(ca: &Ca) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "custodian");
    params
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
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
    let server = server_cert(&root);
    let app = leaf_for(&root, "cert-app");
    let stranger = leaf_for(&root, "stranger");
    let forged = leaf_for(&other, "cert-app");
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

    // The certificate's principal URI SAN names the principal (not its CN); its policy applies.
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

/// A TLS deployment (optional client certificates from `root`), its server, and the HTTPS base.
pub(crate) async fn tls_server(
    root: &Ca,
) -> anyhow::Result<(Deployment, crate::common::Server, String)> {
    let server = server_cert(root);
    let mut d = Deployment::new()?;
    for (name, text) in [
        ("server.pem", &server.0),
        ("server.key", &server.1),
        ("clients-ca.pem", &root.cert.pem()),
    ] {
        std::fs::write(d.path().join(name), text)?;
    }
    d.append_config("[server.tls]\ncert_file = \"server.pem\"\nkey_file = \"server.key\"\nclient_ca_file = \"clients-ca.pem\"\nclient_auth = \"optional\"\n")?;
    let s = d.start().await?;
    let base = s.base.replace("http://", "https://");
    Ok((d, s, base))
}

/// POSTs a data-key request with `cert` and no token; returns status and body.
async fn datakey_with(
    ca_pem: &str,
    cert: &(String, String),
    url: &str,
    token: Option<&str>,
) -> Result<(u16, Value), reqwest::Error> {
    status(&client(ca_pem, Some(cert)), url, token, Some(json!({}))).await
}

#[track_caller]
fn assert_refused(got: (u16, Value), reason: &str) {
    let (code, body) = got;
    assert_eq!(code, 401, "{body}");
    assert_eq!(
        body["error"]["code"], "client_certificate_refused",
        "{body}"
    );
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(reason), "{reason:?} not in {message:?}");
    assert!(
        body["error"]["request_id"]
            .as_str()
            .is_some_and(|r| !r.is_empty()),
        "{body}"
    );
}

#[tokio::test]
async fn client_certificates_name_exactly_one_principal_for_client_auth() -> anyhow::Result<()> {
    let root = ca("custodian test CA");
    let ca_pem = root.cert.pem();
    let (mut d, s, base) = tls_server(&root).await?;
    let admin = client(&ca_pem, None);
    let url = format!("{base}/v1/keys/cert-key/datakey");
    for (path, body) in [
        ("/v1/keys", json!({ "name": "cert-key" })),
        (
            "/v1/principals",
            json!({ "name": "cert-app", "policies": ["application"] }),
        ),
    ] {
        let (code, body) =
            status(&admin, &format!("{base}{path}"), Some(&s.token), Some(body)).await?;
        assert_eq!(code, 201, "{body}");
    }

    // Exactly one principal URI SAN and clientAuth: authenticated as that principal, whatever
    // the CN says and whatever other (non-principal) URIs the certificate carries.
    let good = client_cert(
        &root,
        "admin",
        &[
            principal_uri("cert-app"),
            SanType::URI("spiffe://example.org/app".try_into()?),
            SanType::DnsName("admin".try_into()?),
        ],
        Eku::ClientAuth,
    );
    let (code, body) = datakey_with(&ca_pem, &good, &url, None).await?;
    assert_eq!(code, 200, "{body}");
    // ...and it is that principal, not the admin its CN names.
    let (code, _) = status(
        &client(&ca_pem, Some(&good)),
        &format!("{base}/v1/keys"),
        None,
        Some(json!({ "name": "cn-must-not-count" })),
    )
    .await?;
    assert_eq!(code, 403);

    // Negative twins: each is refused with its reason, never mapped some other way.
    let cn_only = client_cert(&root, "cert-app", &[], Eku::ClientAuth);
    assert_refused(datakey_with(&ca_pem, &cn_only, &url, None).await?, "no URI");
    let two = client_cert(
        &root,
        "cert-app",
        &[principal_uri("cert-app"), principal_uri("other")],
        Eku::ClientAuth,
    );
    assert_refused(datakey_with(&ca_pem, &two, &url, None).await?, "2 URI");
    let no_eku = client_cert(&root, "cert-app", &[principal_uri("cert-app")], Eku::Absent);
    assert_refused(
        datakey_with(&ca_pem, &no_eku, &url, None).await?,
        "no extended key usage",
    );
    let bad_name = client_cert(
        &root,
        "cert-app",
        &[principal_uri("../cert-app")],
        Eku::ClientAuth,
    );
    assert_refused(
        datakey_with(&ca_pem, &bad_name, &url, None).await?,
        "invalid",
    );
    let dns_only = client_cert(
        &root,
        "cert-app",
        &[SanType::DnsName("cert-app".try_into()?)],
        Eku::ClientAuth,
    );
    assert_refused(
        datakey_with(&ca_pem, &dns_only, &url, None).await?,
        "no URI",
    );
    // A serverAuth-only certificate does not even complete the handshake (rustls requires
    // clientAuth when an EKU is present): refused, and never authenticated.
    let server_only = client_cert(
        &root,
        "cert-app",
        &[principal_uri("cert-app")],
        Eku::ServerAuthOnly,
    );
    match datakey_with(&ca_pem, &server_only, &url, None).await {
        Err(_) => {}
        Ok(got) => assert_refused(got, "clientAuth"),
    }
    // A bearer token still takes precedence over a refused certificate.
    let (code, body) = datakey_with(&ca_pem, &two, &url, Some(&s.token)).await?;
    assert_eq!(code, 200, "{body}");
    s.kill();

    // `identity = "dns"`: exactly one DNS SAN names the principal; URI SANs no longer count.
    let text = std::fs::read_to_string(d.config())?.replace(
        "client_auth = \"optional\"",
        "client_auth = \"optional\"\nidentity = \"dns\"",
    );
    std::fs::write(d.config(), text)?;
    let s = d.start().await?;
    let base = s.base.replace("http://", "https://");
    let url = format!("{base}/v1/keys/cert-key/datakey");
    let (code, body) = datakey_with(&ca_pem, &dns_only, &url, None).await?;
    assert_eq!(code, 200, "{body}");
    assert_refused(
        datakey_with(&ca_pem, &leaf_for(&root, "cert-app"), &url, None).await?,
        "no DNS",
    );
    let two_dns = client_cert(
        &root,
        "cert-app",
        &[
            SanType::DnsName("cert-app".try_into()?),
            SanType::DnsName("other".try_into()?),
        ],
        Eku::ClientAuth,
    );
    assert_refused(datakey_with(&ca_pem, &two_dns, &url, None).await?, "2 DNS");
    Ok(())
}
