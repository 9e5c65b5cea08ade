//! Connecting to PostgreSQL as an operator would: a role with a password (from a file, never from
//! the URL), TLS required by the server (`hostssl` only) with a certificate from a CA made at test
//! time. `verify-full` with that CA connects; another CA is refused; `require` connects without
//! checking; no TLS, a wrong password, a password file readable by others and a password in the
//! URL are each refused at start-up with a message that says why.

use crate::common::postgres::PrivateCluster;
use crate::common::Deployment;

const PASSWORD: &str = "correct horse battery staple";

fn store(port: u16, extra: &str) -> String {
    format!(
        "[store]\nkind = \"postgres\"\nurl = \"postgres://custodian@localhost:{port}/custodian\"\n\
         password_file = \"db-password\"\nconnect_timeout = \"3s\"\n{extra}"
    )
}

fn write_private(d: &Deployment, name: &str, text: &str, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let path = d.path().join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[tokio::test]
async fn password_file_and_tls_verify_full_connect_and_each_wrong_setting_is_refused(
) -> anyhow::Result<()> {
    let cluster = PrivateCluster::start();
    cluster
        .admin_sql(&format!(
            "CREATE ROLE custodian LOGIN PASSWORD '{PASSWORD}'"
        ))
        .await;
    cluster
        .admin_sql("CREATE DATABASE custodian OWNER custodian")
        .await;
    let db_ca = crate::tls::ca("database CA");
    let (cert, key) = crate::tls::server_cert(&db_ca);
    let other_ca = crate::tls::ca("some other CA");
    cluster.configure(
        Some((&cert, &key)),
        "host all postgres 127.0.0.1/32 trust\n\
         hostnossl all custodian 127.0.0.1/32 reject\n\
         hostssl all custodian 127.0.0.1/32 scram-sha-256\n",
    );
    let port = cluster.port();
    let mut d = Deployment::new()?;
    write_private(&d, "db-password", &format!("{PASSWORD}\n"), 0o600);
    write_private(&d, "db-ca.pem", &db_ca.cert.pem(), 0o644);
    write_private(&d, "other-ca.pem", &other_ca.cert.pem(), 0o644);

    // verify-full with the database's CA and the right password: serves.
    d.set_store(&store(
        port,
        "sslmode = \"verify-full\"\nca_file = \"db-ca.pem\"",
    ))?;
    let s = d.start().await?;
    s.create_key("over-tls").await;
    s.get("/v1/keys/over-tls").await.ok();
    drop(s);

    // require: encrypted, the certificate not checked: serves even with another CA around.
    d.set_store(&store(port, "sslmode = \"require\""))?;
    let s = d.start().await?;
    s.get("/v1/keys/over-tls").await.ok();
    drop(s);

    // verify-full against a CA that did not issue the server's certificate: refused.
    d.set_store(&store(
        port,
        "sslmode = \"verify-full\"\nca_file = \"other-ca.pem\"",
    ))?;
    let err = d.start_expecting_failure()?;
    assert!(
        err.to_lowercase().contains("certificate"),
        "a certificate from an unknown CA: {err}"
    );

    // No TLS: the server's pg_hba refuses the connection.
    d.set_store(&store(port, "sslmode = \"disable\""))?;
    let err = d.start_expecting_failure()?;
    assert!(err.contains("pg_hba.conf"), "no TLS: {err}");

    // A wrong password.
    d.set_store(&store(port, "sslmode = \"require\""))?;
    write_private(&d, "db-password", "not the password\n", 0o600);
    let err = d.start_expecting_failure()?;
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(
        !err.contains("not the password"),
        "the password is never shown: {err}"
    );

    // The right password in a file others may read: refused before connecting.
    write_private(&d, "db-password", &format!("{PASSWORD}\n"), 0o644);
    let err = d.start_expecting_failure()?;
    assert!(err.contains("chmod 600"), "{err}");
    assert!(
        !err.contains(PASSWORD),
        "the password is never shown: {err}"
    );

    // A password in the URL: refused by the configuration, and not echoed.
    d.set_store(&format!(
        "[store]\nkind = \"postgres\"\nurl = \"postgres://custodian:{}@localhost:{port}/custodian\"",
        "hunter2"
    ))?;
    let err = d.start_expecting_failure()?;
    assert!(err.contains("must not contain a password"), "{err}");
    assert!(
        !err.contains("hunter2"),
        "the password is never shown: {err}"
    );

    // Back to the good settings: the data is all there.
    write_private(&d, "db-password", &format!("{PASSWORD}\n"), 0o600);
    d.set_store(&store(
        port,
        "sslmode = \"verify-full\"\nca_file = \"db-ca.pem\"",
    ))?;
    let s = d.start().await?;
    s.get("/v1/keys/over-tls").await.ok();
    Ok(())
}
