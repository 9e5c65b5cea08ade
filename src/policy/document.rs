//! Policy documents: parsing and validation. A document that is accepted can always be
//! evaluated: every action pattern names at least one known action, every resource pattern a
//! known kind, every condition is well-formed. Errors name the JSON path at fault.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{glob_match, Action};

/// Largest document, in statements.
pub const MAX_STATEMENTS: usize = 100;
/// Most patterns in one list.
pub const MAX_PATTERNS: usize = 64;
/// Resource kinds a pattern may name.
pub const RESOURCE_KINDS: &[&str] = &[
    "key",
    "alias",
    "secret",
    "policy",
    "principal",
    "token",
    "job",
    "audit",
    "custody",
    "random",
    "metrics",
    "db",
];

/// Allow or deny.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Grants, unless a deny matches.
    Allow,
    /// Refuses; wins over every allow.
    Deny,
}

/// A daily window in UTC hours (`from_hour` inclusive, `to_hour` exclusive; may wrap midnight).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeWindow {
    /// Not before this instant.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub not_before: Option<OffsetDateTime>,
    /// Not at or after this instant.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub not_after: Option<OffsetDateTime>,
    /// Daily start hour, UTC (0–23).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_hour_utc: Option<u8>,
    /// Daily end hour, UTC (1–24).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_hour_utc: Option<u8>,
}

/// Conditions of a statement; all given ones must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conditions {
    /// Encryption-context key → required value (`${principal.<attr>}` substitutes an attribute).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub context_equals: BTreeMap<String, String>,
    /// Encryption-context key → allowed values (each may use `${principal.<attr>}`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub context_in: BTreeMap<String, Vec<String>>,
    /// Encryption-context keys that must be present.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub context_present: Vec<String>,
    /// The request's source address is in one of these networks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_cidr: Vec<IpNet>,
    /// The request happens inside this window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_window: Option<TimeWindow>,
}

/// One statement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    /// Optional label, shown by explain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Allow or deny.
    pub effect: Effect,
    /// Action patterns (`decrypt`, `key:*`, `*`).
    pub actions: Vec<String>,
    /// Resource patterns (`key/billing-*`, `secret/team/app/*`, `*`).
    pub resources: Vec<String>,
    /// Conditions, all of which must hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Conditions>,
}

/// A policy document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDocument {
    /// The statements, evaluated all together (order does not matter: deny wins).
    pub statements: Vec<Statement>,
}

/// Why a document was refused: the JSON path and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct InvalidPolicy {
    /// JSON path of the offending value, e.g. `statements[0].actions[1]`.
    pub path: String,
    /// What is wrong.
    pub reason: String,
}

fn invalid(path: String, reason: impl Into<String>) -> InvalidPolicy {
    InvalidPolicy {
        path,
        reason: reason.into(),
    }
}

/// Checks a `${principal.<attr>}` reference, if the value is one.
fn check_reference(path: String, value: &str) -> Result<(), InvalidPolicy> {
    if value.contains("${") {
        let ok = value
            .strip_prefix("${principal.")
            .and_then(|r| r.strip_suffix('}'))
            .is_some_and(|attr| {
                !attr.is_empty()
                    && attr
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            });
        if !ok {
            return Err(invalid(
                path,
                "a substitution is exactly ${principal.<attribute>}",
            ));
        }
    }
    Ok(())
}

fn check_pattern_chars(path: &str, p: &str) -> Result<(), InvalidPolicy> {
    if p.is_empty() || p.len() > 600 || p.chars().any(char::is_control) {
        return Err(invalid(
            path.to_owned(),
            "a pattern has 1 to 600 printable characters",
        ));
    }
    Ok(())
}

impl PolicyDocument {
    /// Parses and validates a document.
    ///
    /// # Errors
    /// [`InvalidPolicy`] naming the JSON path of the first problem.
    pub fn parse(json: &[u8]) -> Result<Self, InvalidPolicy> {
        let mut de = serde_json::Deserializer::from_slice(json);
        let doc: Self = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            invalid(
                if path == "." || path.is_empty() {
                    "$".to_owned()
                } else {
                    path
                },
                e.inner().to_string(),
            )
        })?;
        de.end()
            .map_err(|e| invalid("$".to_owned(), e.to_string()))?;
        doc.validate()?;
        Ok(doc)
    }

    /// Checks everything serde cannot.
    ///
    /// # Errors
    /// [`InvalidPolicy`].
    pub fn validate(&self) -> Result<(), InvalidPolicy> {
        if self.statements.is_empty() || self.statements.len() > MAX_STATEMENTS {
            return Err(invalid(
                "statements".to_owned(),
                format!("a policy has 1 to {MAX_STATEMENTS} statements"),
            ));
        }
        for (i, st) in self.statements.iter().enumerate() {
            let at = |field: &str| format!("statements[{i}].{field}");
            if st.actions.is_empty() || st.actions.len() > MAX_PATTERNS {
                return Err(invalid(
                    at("actions"),
                    format!("1 to {MAX_PATTERNS} action patterns"),
                ));
            }
            for (j, a) in st.actions.iter().enumerate() {
                let path = format!("statements[{i}].actions[{j}]");
                check_pattern_chars(&path, a)?;
                if !Action::ALL
                    .iter()
                    .any(|known| glob_match(a, known.as_str()))
                {
                    return Err(invalid(
                        path,
                        format!("{a:?} matches no action (see docs/policy.md for the vocabulary)"),
                    ));
                }
            }
            if st.resources.is_empty() || st.resources.len() > MAX_PATTERNS {
                return Err(invalid(
                    at("resources"),
                    format!("1 to {MAX_PATTERNS} resource patterns"),
                ));
            }
            for (j, r) in st.resources.iter().enumerate() {
                let path = format!("statements[{i}].resources[{j}]");
                check_pattern_chars(&path, r)?;
                let kind = r.split('/').next().unwrap_or_default();
                if r != "*" && !RESOURCE_KINDS.contains(&kind) {
                    return Err(invalid(
                        path,
                        format!(
                            "resources start with one of {} followed by '/', or are \"*\"",
                            RESOURCE_KINDS.join(", ")
                        ),
                    ));
                }
            }
            if let Some(sid) = &st.sid {
                if sid.len() > 128 {
                    return Err(invalid(at("sid"), "a sid has at most 128 bytes"));
                }
            }
            if let Some(c) = &st.conditions {
                for (k, v) in &c.context_equals {
                    check_reference(format!("statements[{i}].conditions.context_equals.{k}"), v)?;
                }
                for (k, vs) in &c.context_in {
                    if vs.is_empty() || vs.len() > MAX_PATTERNS {
                        return Err(invalid(
                            format!("statements[{i}].conditions.context_in.{k}"),
                            format!("1 to {MAX_PATTERNS} values"),
                        ));
                    }
                    for (j, v) in vs.iter().enumerate() {
                        check_reference(
                            format!("statements[{i}].conditions.context_in.{k}[{j}]"),
                            v,
                        )?;
                    }
                }
                if c.source_cidr.len() > MAX_PATTERNS {
                    return Err(invalid(
                        format!("statements[{i}].conditions.source_cidr"),
                        "too many networks",
                    ));
                }
                if let Some(w) = &c.time_window {
                    let wp = format!("statements[{i}].conditions.time_window");
                    match (w.from_hour_utc, w.to_hour_utc) {
                        (None, None) => {}
                        (Some(f), Some(t)) if f <= 23 && (1..=24).contains(&t) && f != t => {}
                        _ => return Err(invalid(
                            wp,
                            "from_hour_utc (0-23) and to_hour_utc (1-24) go together and differ",
                        )),
                    }
                    if let (Some(a), Some(b)) = (w.not_before, w.not_after) {
                        if a >= b {
                            return Err(invalid(wp, "not_before must be earlier than not_after"));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

/// Whether `addr` is in one of `nets`.
pub fn in_networks(nets: &[IpNet], addr: IpAddr) -> bool {
    nets.iter().any(|n| n.contains(&addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> InvalidPolicy {
        PolicyDocument::parse(json.as_bytes()).unwrap_err()
    }

    #[test]
    fn valid_documents_parse() {
        let doc = PolicyDocument::parse(br#"{"statements":[{"effect":"allow","actions":["datakey:*","decrypt"],"resources":["key/billing-*"],
            "conditions":{"context_equals":{"tenant":"${principal.tenant}"},"source_cidr":["10.0.0.0/8"],
            "time_window":{"from_hour_utc":8,"to_hour_utc":18}}}]}"#).unwrap();
        assert_eq!(doc.statements[0].effect, Effect::Allow);
    }

    #[test]
    fn errors_name_the_json_path() {
        assert_eq!(
            err(r#"{"statements":[{"effect":"allow","actions":["key:fly"],"resources":["*"]}]}"#)
                .path,
            "statements[0].actions[0]"
        );
        assert_eq!(
            err(r#"{"statements":[{"effect":"maybe","actions":["*"],"resources":["*"]}]}"#).path,
            "statements[0].effect"
        );
        assert_eq!(
            err(r#"{"statements":[{"effect":"allow","actions":["*"],"resources":["disk/x"]}]}"#)
                .path,
            "statements[0].resources[0]"
        );
        assert_eq!(err(r#"{"statements":[{"effect":"allow","actions":["*"],"resources":["*"],"colour":1}]}"#).path, "statements[0].colour");
        assert_eq!(err(r#"{"statements":[]}"#).path, "statements");
        assert_eq!(
            err(r#"{"statements":[{"effect":"allow","actions":["*"],"resources":["*"],"conditions":{"source_cidr":["10.0.0.0/33"]}}]}"#).path,
            "statements[0].conditions.source_cidr[0]"
        );
        assert_eq!(
            err(r#"{"statements":[{"effect":"allow","actions":["*"],"resources":["*"],"conditions":{"context_equals":{"t":"${principal}"}}}]}"#).path,
            "statements[0].conditions.context_equals.t"
        );
        assert_eq!(
            err(r#"{"statements":[{"effect":"allow","actions":["*"],"resources":["*"],"conditions":{"time_window":{"from_hour_utc":8}}}]}"#).path,
            "statements[0].conditions.time_window"
        );
        assert_eq!(
            err(r#"{"statements":[{"effect":"allow","actions":["*"],"resources":["*"]}]} x"#).path,
            "$"
        );
    }
}
