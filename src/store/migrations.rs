//! Versioned schema migrations, embedded in the binary and applied in order at start-up, each in
//! its own transaction, recorded in `schema_migrations`.

/// One migration.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Strictly increasing version.
    pub version: u32,
    /// Short name.
    pub name: &'static str,
    /// SQL to run.
    pub sql: &'static str,
}

/// SQLite migrations, oldest first.
pub const SQLITE: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("migrations/sqlite/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "secrets",
        sql: include_str!("migrations/sqlite/0002_secrets.sql"),
    },
    Migration {
        version: 3,
        name: "jobs",
        sql: include_str!("migrations/sqlite/0003_jobs.sql"),
    },
    Migration {
        version: 4,
        name: "audit",
        sql: include_str!("migrations/sqlite/0004_audit.sql"),
    },
    Migration {
        version: 5,
        name: "device_material",
        sql: include_str!("migrations/sqlite/0005_device_material.sql"),
    },
    Migration {
        version: 6,
        name: "audit_details",
        sql: include_str!("migrations/sqlite/0006_audit_details.sql"),
    },
    Migration {
        version: 7,
        name: "access_keys",
        sql: include_str!("migrations/sqlite/0007_access_keys.sql"),
    },
    Migration {
        version: 8,
        name: "nodes",
        sql: include_str!("migrations/sqlite/0008_nodes.sql"),
    },
    Migration {
        version: 9,
        name: "database_credentials",
        sql: include_str!("migrations/sqlite/0009_database_credentials.sql"),
    },
    Migration {
        version: 10,
        name: "rewrap_walk",
        sql: include_str!("migrations/sqlite/0010_rewrap_walk.sql"),
    },
];

/// PostgreSQL migrations, oldest first: the same versions as [`SQLITE`], in PostgreSQL's dialect.
pub const POSTGRES: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("migrations/postgres/0001_init.sql"),
    },
    Migration {
        version: 2,
        name: "secrets",
        sql: include_str!("migrations/postgres/0002_secrets.sql"),
    },
    Migration {
        version: 3,
        name: "jobs",
        sql: include_str!("migrations/postgres/0003_jobs.sql"),
    },
    Migration {
        version: 4,
        name: "audit",
        sql: include_str!("migrations/postgres/0004_audit.sql"),
    },
    Migration {
        version: 5,
        name: "device_material",
        sql: include_str!("migrations/postgres/0005_device_material.sql"),
    },
    Migration {
        version: 6,
        name: "audit_details",
        sql: include_str!("migrations/postgres/0006_audit_details.sql"),
    },
    Migration {
        version: 7,
        name: "access_keys",
        sql: include_str!("migrations/postgres/0007_access_keys.sql"),
    },
    Migration {
        version: 8,
        name: "nodes",
        sql: include_str!("migrations/postgres/0008_nodes.sql"),
    },
    Migration {
        version: 9,
        name: "database_credentials",
        sql: include_str!("migrations/postgres/0009_database_credentials.sql"),
    },
    Migration {
        version: 10,
        name: "rewrap_walk",
        sql: include_str!("migrations/postgres/0010_rewrap_walk.sql"),
    },
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_strictly_increase_from_one() {
        for (i, m) in SQLITE.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1, "{}", m.name);
        }
        for (i, m) in POSTGRES.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1, "{}", m.name);
        }
    }

    #[test]
    fn both_dialects_have_the_same_versions_and_names() {
        let names = |ms: &[Migration]| ms.iter().map(|m| (m.version, m.name)).collect::<Vec<_>>();
        assert_eq!(names(SQLITE), names(POSTGRES));
    }
}
