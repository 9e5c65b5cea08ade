//! The test PostgreSQL cluster: the README's test command starts a throwaway PostgreSQL 15
//! cluster and names its superuser URL in `CUSTODIAN_TEST_POSTGRES_URL`; every test that needs
//! a database gets a fresh one of its own there. No test skips for want of a database: without
//! the variable, such a test fails and says how to provide one.

use custodian::store::postgres::PostgresSettings;

/// The superuser URL of the test cluster.
pub fn admin_url() -> String {
    std::env::var("CUSTODIAN_TEST_POSTGRES_URL").unwrap_or_else(|_| {
        panic!(
            "CUSTODIAN_TEST_POSTGRES_URL is not set: run the tests through scripts/test, which \
             starts a throwaway PostgreSQL 15 cluster (or start one with scripts/lib.sh's \
             start_test_postgres and export its URL)"
        )
    })
}

/// A connection to the test cluster as its superuser, on database `db` (`postgres` if `None`).
pub async fn admin(db: Option<&str>) -> tokio_postgres::Client {
    let mut cfg: tokio_postgres::Config = admin_url().parse().unwrap();
    if let Some(db) = db {
        cfg.dbname(db);
    }
    let (client, connection) = cfg.connect(tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

/// A new, empty database; returns its name and the settings that reach it.
pub async fn fresh_database() -> (String, PostgresSettings) {
    let name = format!("custodian_test_{}", uuid::Uuid::new_v4().simple());
    admin(None)
        .await
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .unwrap();
    let mut cfg: tokio_postgres::Config = admin_url().parse().unwrap();
    cfg.dbname(&name);
    let url = url_of(&cfg);
    (name, PostgresSettings::new(url))
}

/// The URL of `cfg` (host, port, user, database).
pub fn url_of(cfg: &tokio_postgres::Config) -> String {
    let host = match cfg.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".to_owned(),
    };
    let port = cfg.get_ports().first().copied().unwrap_or(5432);
    format!(
        "postgres://{}@{host}:{port}/{}",
        cfg.get_user().unwrap_or("postgres"),
        cfg.get_dbname().unwrap_or("postgres")
    )
}
