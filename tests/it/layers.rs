//! The layering the architecture promises, checked on the source: front doors (`src/api/`, `src/vault/`)
//! reach the service only through its front-door handles, never the device or the store, and
//! never the service object that background workers use.

use std::path::{Path, PathBuf};

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            rust_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// Where `files` name any of `forbidden` outside comments (comments may name what the code
/// must not use), as `path:line: word`.
fn uses(files: &[PathBuf], forbidden: &[&str]) -> std::io::Result<Vec<String>> {
    let mut found = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(f)?;
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            for word in forbidden {
                if code.contains(word) {
                    found.push(format!("{}:{}: {word}", f.display(), n + 1));
                }
            }
        }
    }
    Ok(found)
}

#[test]
fn front_doors_import_nothing_from_the_device_or_the_store() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src/api"), &mut files)?;
    assert!(
        files.len() >= 10,
        "only {} files under src/api",
        files.len()
    );
    // The Vault-compatible door is a front door too.
    let before = files.len();
    rust_files(&root.join("src/vault"), &mut files)?;
    assert!(
        files.len() >= before + 2,
        "the Vault door's files are checked"
    );
    // So is the AWS KMS door.
    let before = files.len();
    rust_files(&root.join("src/aws"), &mut files)?;
    assert!(
        files.len() >= before + 2,
        "the AWS KMS door's files are checked"
    );
    // Paths and names that would let a door reach below the service, or around its handles.
    let forbidden = [
        "crate::backend",
        "crate::store",
        "cryptoki",
        "tss_esapi",
        "rusqlite",
        "KeyService",
        "service::Internal",
        "Internal::new",
        "audit::note",
        "AuditEntry",
    ];
    let found = uses(&files, &forbidden)?;
    assert!(
        found.is_empty(),
        "front doors reach below the service:\n{}",
        found.join("\n")
    );
    // The check can fail: the service itself uses what doors may not.
    let service =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/service/mod.rs"))?;
    assert!(service.contains("crate::store") && service.contains("crate::backend"));
    Ok(())
}

#[test]
fn api_types_import_no_server_layer() -> anyhow::Result<()> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/custodian-types/src/api_types");
    let mut files = Vec::new();
    rust_files(&dir, &mut files)?;
    assert!(
        files.len() >= 4,
        "only {} files under crates/custodian-types/src/api_types",
        files.len()
    );
    // The client compiles these types: no handler, no router, nothing below the service.
    let forbidden = [
        "axum",
        "crate::api::",
        "crate::service",
        "crate::backend",
        "crate::store",
        "crate::cli",
    ];
    let found = uses(&files, &forbidden)?;
    assert!(
        found.is_empty(),
        "api_types reach into the server:\n{}",
        found.join("\n")
    );
    Ok(())
}

/// The packages `root` depends on, directly or not, as `Cargo.lock` records them (every version
/// of a name alike: the lock file is the build's own account of what it links).
fn lock_closure(lock: &str, root: &str) -> anyhow::Result<std::collections::BTreeSet<String>> {
    let lock: toml::Value = toml::from_str(lock)?;
    let packages = lock
        .get("package")
        .and_then(toml::Value::as_array)
        .ok_or_else(|| anyhow::anyhow!("Cargo.lock has no [[package]]"))?;
    let mut deps: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for p in packages {
        let name = p
            .get("name")
            .and_then(toml::Value::as_str)
            .unwrap_or_default();
        let entry = deps.entry(name.to_owned()).or_default();
        for d in p
            .get("dependencies")
            .and_then(toml::Value::as_array)
            .into_iter()
            .flatten()
        {
            // "name" or "name version" or "name version (source)".
            let d = d.as_str().unwrap_or_default();
            entry.push(d.split(' ').next().unwrap_or_default().to_owned());
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut todo = vec![root.to_owned()];
    while let Some(name) = todo.pop() {
        if seen.insert(name.clone()) {
            todo.extend(deps.get(&name).into_iter().flatten().cloned());
        }
    }
    anyhow::ensure!(seen.len() > 1, "{root} is not in Cargo.lock");
    Ok(seen)
}

#[test]
fn the_client_library_links_no_device_database_or_server_crate() -> anyhow::Result<()> {
    let lock = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock"))?;
    let server_only = [
        "cryptoki",
        "tss-esapi",
        "rusqlite",
        "tokio-postgres",
        "deadpool-postgres",
        "axum",
        "custodian",
    ];
    for crate_name in ["custodian-client", "custodian-types"] {
        let linked = lock_closure(&lock, crate_name)?;
        let found: Vec<_> = server_only
            .iter()
            .filter(|c| linked.contains(**c))
            .collect();
        assert!(found.is_empty(), "{crate_name} links {found:?}");
    }
    // The check can fail: the server links each of them (but itself).
    let server = lock_closure(&lock, "custodian")?;
    for c in &server_only[..server_only.len() - 1] {
        assert!(server.contains(*c), "the server does not link {c}?");
    }
    assert!(server.contains("custodian-client") && server.contains("custodian-types"));
    Ok(())
}
