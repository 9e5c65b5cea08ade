//! `docs/openapi.json` is generated (`custodian::api_types::openapi`) from the operation table
//! the router serves (`custodian::api_types::routes`) and from the API's types: the checked-in
//! file must equal the generator's output, so the two cannot drift, and the router serves
//! exactly the table's operations, so no route goes undocumented. Run with
//! `CUSTODIAN_UPDATE_OPENAPI=1` to rewrite the file after changing the table, a type or the base.

use custodian::api_types::openapi;
use custodian::api_types::routes::OPERATIONS;

const CHECKED_IN: &str = include_str!("../../docs/openapi.json");

#[test]
fn document_is_generated() -> anyhow::Result<()> {
    let generated = openapi::document_text()?;
    if std::env::var_os("CUSTODIAN_UPDATE_OPENAPI").is_some() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.json");
        std::fs::write(path, &generated)?;
        return Ok(());
    }
    assert!(
        generated == CHECKED_IN,
        "docs/openapi.json differs from what the types generate; run \
         `CUSTODIAN_UPDATE_OPENAPI=1 cargo test --test it openapi::` and commit the result"
    );
    Ok(())
}

/// The router serves every operation of the table once, at the route, with the method and the
/// access its entry gives (several entries share a handler only on the secrets' catch-all), and
/// the document describes each at its path and method.
#[test]
fn the_router_serves_every_documented_operation() -> anyhow::Result<()> {
    let served = custodian::api::served_operations();
    for s in &served {
        let o = s.operation;
        assert_eq!(
            (s.route, s.method, s.access),
            (o.router_path(), o.method, o.access),
            "{} is served by a handler of another route, method or access",
            o.id
        );
    }
    let mut served_ids: Vec<&str> = served.iter().map(|s| s.operation.id).collect();
    served_ids.sort_unstable();
    let mut table_ids: Vec<&str> = OPERATIONS.iter().map(|o| o.id).collect();
    table_ids.sort_unstable();
    assert_eq!(served_ids, table_ids, "the router and the table differ");
    assert!(table_ids.len() >= 54, "{table_ids:?}");

    let doc = openapi::document()?;
    let mut documented = 0;
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for (method, op) in item.as_object().into_iter().flatten() {
            documented += 1;
            let id = op["operationId"].as_str().unwrap_or_default();
            assert!(
                OPERATIONS
                    .iter()
                    .any(|o| o.id == id && o.path == path && o.method.as_str() == method),
                "{method} {path} ({id}) is documented but not in the table"
            );
        }
    }
    assert_eq!(documented, OPERATIONS.len());
    Ok(())
}

/// Routes reach the router only through the table: the one place under `src/api/` that adds a
/// route is `Served::serve`, which takes table entries (its two `.route(` calls, public and
/// authenticated); nothing nests a router or a service beside it.
#[test]
fn routes_are_added_only_from_the_table() -> anyhow::Result<()> {
    let mut files = Vec::new();
    rust_files(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api"),
        &mut files,
    )?;
    let mut routes = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f)?;
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for (n, line) in code.lines().enumerate() {
            let line = line.split("//").next().unwrap_or_default();
            for call in [
                ".route(",
                ".route_service(",
                ".nest(",
                ".nest_service(",
                ".fallback_service(",
            ] {
                if line.contains(call) {
                    routes.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert_eq!(
        routes.len(),
        2,
        "routes added outside `Served::serve`:\n{}",
        routes.join("\n")
    );
    for r in &routes {
        assert!(
            r.contains("src/api/mod.rs") && r.contains(".route(route, method_router)"),
            "route added outside `Served::serve`: {r}"
        );
    }
    Ok(())
}

fn rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
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

#[test]
fn typed_schemas_are_not_also_written_by_hand() -> anyhow::Result<()> {
    let base: serde_json::Value = serde_json::from_str(openapi::BASE)?;
    let names = openapi::typed_schema_names();
    assert!(names.len() >= 7, "{names:?}");
    for name in names {
        assert!(
            base["components"]["schemas"].get(&name).is_none(),
            "{name} is derived from a type and also in openapi_base.json"
        );
    }
    Ok(())
}

#[test]
fn every_reference_resolves() -> anyhow::Result<()> {
    let doc = openapi::document()?;
    let text = doc.to_string();
    for part in text.split("\"$ref\":\"#/").skip(1) {
        let target = part.split('"').next().unwrap_or_default();
        assert!(
            doc.pointer(&format!("/{target}")).is_some(),
            "dangling $ref #/{target}"
        );
    }
    Ok(())
}

/// The codes front doors answer with themselves (`ApiError::client(status, "code", …)` and
/// `ApiError::bad_request("code", …)` under `src/api/`, tests excluded) are in the document's
/// `Error` code enum; the service's own codes are checked by a unit test in `service::error`.
#[test]
fn every_front_door_code_is_published() -> anyhow::Result<()> {
    let mut files = Vec::new();
    rust_files(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/api"),
        &mut files,
    )?;
    let doc = openapi::document()?;
    let published: Vec<&str> = doc["components"]["schemas"]["ErrorDetail"]["properties"]["code"]
        ["enum"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c.as_str()).collect())
        .unwrap_or_default();
    assert!(published.contains(&"invalid_audit_query"), "{published:?}");
    let mut seen = 0;
    for f in files {
        let text = std::fs::read_to_string(&f)?;
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for call in code
            .split("ApiError::bad_request(")
            .skip(1)
            .chain(code.split("ApiError::client(").skip(1))
        {
            // The first string literal of the call is its code.
            let Some(literal) = call.split('"').nth(1) else {
                continue;
            };
            // Only a literal code: nothing before it but the status (`ApiError::client`).
            let head = call.split('"').next().unwrap_or_default().trim();
            let head = match head.strip_prefix("StatusCode::") {
                Some(rest) => rest.trim_start_matches(|c: char| c.is_ascii_uppercase() || c == '_'),
                None => head,
            };
            if !head.trim_start_matches(',').trim().is_empty() {
                continue; // the code is a variable, not a literal
            }
            seen += 1;
            assert!(
                published.contains(&literal),
                "{} answers with code {literal:?}, which the document's Error schema lacks",
                f.display()
            );
        }
    }
    assert!(
        seen >= 30,
        "found only {seen} front-door codes under src/api"
    );
    Ok(())
}
