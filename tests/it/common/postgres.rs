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

/// A PostgreSQL cluster of one test's own, which the test may stop and start (the shared test
/// cluster must stay up for every other test). Made by `scripts/lib.sh`'s
/// `start_test_postgres`, run as the `postgres` user; removed on drop.
pub struct PrivateCluster {
    dir: tempfile::TempDir,
    /// Superuser URL.
    pub url: String,
}

const PG_CTL: &str = "/usr/lib/postgresql/15/bin/pg_ctl";

impl PrivateCluster {
    /// Initialises and starts a cluster on a free port. Tries again (in a new directory) when
    /// the port was taken between being found free and being bound: tests that start clusters
    /// run in parallel.
    pub fn start() -> Self {
        let lib = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/lib.sh");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let dir = tempfile::tempdir().unwrap();
            let out = std::process::Command::new("bash")
                .arg("-c")
                .arg(format!(". {lib} && start_test_postgres \"$1\""))
                .arg("bash")
                .arg(dir.path())
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            // Up to ten tries, a little apart: the clusters of the database-credential, outage
            // and several-node tests all start at once.
            if !out.status.success() && stderr.contains("Address already in use") && attempt < 10 {
                std::thread::sleep(std::time::Duration::from_millis(50 * attempt));
                continue;
            }
            assert!(out.status.success(), "start_test_postgres: {stderr}");
            let url = String::from_utf8(out.stdout).unwrap().trim().to_owned();
            return Self { dir, url };
        }
    }

    fn pg_ctl(&self, args: &[&str]) {
        let data = self.dir.path().join("data");
        let log = self.dir.path().join("server.log");
        let mut c = if rustix::process::getuid().is_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--", PG_CTL]);
            c
        } else {
            std::process::Command::new(PG_CTL)
        };
        let out = c
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The cluster's port.
    pub fn port(&self) -> u16 {
        let cfg: tokio_postgres::Config = self.url.parse().unwrap();
        cfg.get_ports().first().copied().unwrap()
    }

    /// Runs `sql` as the superuser.
    pub async fn admin_sql(&self, sql: &str) {
        let (client, connection) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client.batch_execute(sql).await.unwrap();
    }

    /// Writes `name` into the data directory, owned by `postgres` with `mode`.
    fn write_owned(&self, name: &str, text: &str, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.path().join("data").join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        if rustix::process::getuid().is_root() {
            let out = std::process::Command::new("chown")
                .arg("postgres:")
                .arg(&path)
                .output()
                .unwrap();
            assert!(out.status.success(), "chown {}", path.display());
        }
    }

    /// Turns TLS on with this certificate and key (PEM), and replaces `pg_hba.conf` with
    /// `hba`; restarts the server.
    pub fn configure(&self, tls: Option<(&str, &str)>, hba: &str) {
        if let Some((cert, key)) = tls {
            self.write_owned("server.crt", cert, 0o644);
            self.write_owned("server.key", key, 0o600);
            use std::io::Write as _;
            let mut conf = std::fs::OpenOptions::new()
                .append(true)
                .open(self.dir.path().join("data/postgresql.conf"))
                .unwrap();
            writeln!(
                conf,
                "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'"
            )
            .unwrap();
        }
        self.write_owned("pg_hba.conf", hba, 0o600);
        self.stop();
        self.restart();
    }

    /// Stops the server (fast shutdown: connections are closed, transactions roll back).
    pub fn stop(&self) {
        self.pg_ctl(&["-m", "fast", "-w", "stop"]);
    }

    /// Starts it again on the same port.
    pub fn restart(&self) {
        self.pg_ctl(&["-w", "-t", "60", "start"]);
    }

    /// A new database on this cluster; the settings that reach it.
    pub async fn database(&self) -> PostgresSettings {
        let (client, connection) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .batch_execute("CREATE DATABASE custodian")
            .await
            .unwrap();
        let mut cfg: tokio_postgres::Config = self.url.parse().unwrap();
        cfg.dbname("custodian");
        PostgresSettings::new(url_of(&cfg))
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = std::process::Command::new("runuser")
            .args(["-u", "postgres", "--", PG_CTL, "-D"])
            .arg(&data)
            .args(["-m", "immediate", "stop"])
            .output();
    }
}
