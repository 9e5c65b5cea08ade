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
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api_types");
    let mut files = Vec::new();
    rust_files(&dir, &mut files)?;
    assert!(
        files.len() >= 4,
        "only {} files under src/api_types",
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
