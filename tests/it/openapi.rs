//! `docs/openapi.json` is generated from the API's types (`custodian::api_types::openapi`): the
//! checked-in file must equal the generator's output, so the two cannot drift. Run with
//! `CUSTODIAN_UPDATE_OPENAPI=1` to rewrite the file after changing a type or the base.

use custodian::api_types::openapi;

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
