//! The single place where authorisation is decided. Pure: no I/O.
//!
//! Policies are documents of statements ([`document`]); a principal carries attributes and a
//! list of attached policies. [`evaluate`] decides one request: an explicit deny wins, otherwise
//! an allow grants, otherwise the answer is deny. It is deterministic and total: a document
//! that passed validation can always be evaluated, and a condition that refers to something
//! absent (a missing principal attribute, no encryption context on this request, no source
//! address) is false.

pub mod document;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use time::OffsetDateTime;

pub use document::{Conditions, Effect, InvalidPolicy, PolicyDocument, Statement};

use crate::format::EncryptionContext;

/// Who is asking: the authenticated principal, its credential and where the request came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The principal's name.
    pub name: String,
    /// The id of the credential that authenticated it (non-secret).
    pub credential_id: String,
    /// The request's source address, when known.
    pub source: Option<IpAddr>,
}

/// The name of the principal that the bootstrap token authenticates.
pub const BOOTSTRAP_ADMIN: &str = "bootstrap-admin";

macro_rules! actions {
    ($($variant:ident => $name:literal, $doc:literal;)*) => {
        /// What is being asked for. The strings are the documented action vocabulary.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Action {
            $(#[doc = $doc] $variant,)*
        }

        impl Action {
            /// Every action, in vocabulary order.
            pub const ALL: &'static [Action] = &[$(Action::$variant,)*];

            /// The action's name in policy documents and audit records.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)*
                }
            }

            /// The action a name names.
            pub fn parse(s: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|a| a.as_str() == s)
            }
        }
    };
}

actions! {
    KeyCreate => "key:create", "`key:create`";
    KeyRead => "key:read", "`key:read`: show and list keys, versions, aliases, jobs";
    KeyUpdate => "key:update", "`key:update`: description, rotation period, min_decryption_version";
    KeyRotate => "key:rotate", "`key:rotate`: rotate, start a re-wrap";
    KeyDisable => "key:disable", "`key:disable`: disable and enable keys and versions";
    KeyDelete => "key:delete", "`key:delete`: schedule and cancel deletion, destroy versions";
    AliasWrite => "alias:write", "`alias:write`: create, re-point, delete aliases";
    DatakeyGenerate => "datakey:generate", "`datakey:generate`: wrapped copy only";
    DatakeyGeneratePlaintext => "datakey:generate-plaintext", "`datakey:generate-plaintext`: also the plaintext copy";
    Encrypt => "encrypt", "`encrypt`";
    Decrypt => "decrypt", "`decrypt`";
    Reencrypt => "reencrypt", "`reencrypt`";
    Random => "random", "`random`: random bytes from the device (or the host) generator";
    SecretRead => "secret:read", "`secret:read`: values and metadata";
    SecretList => "secret:list", "`secret:list`";
    SecretWrite => "secret:write", "`secret:write`: put, metadata, rotate";
    SecretUseKey => "secret:use-key", "`secret:use-key` on a key: wrap secret versions' data keys under it, make it a secret's key";
    SecretDelete => "secret:delete", "`secret:delete`: soft delete and undelete";
    SecretDestroy => "secret:destroy", "`secret:destroy`";
    PolicyAdmin => "policy:admin", "`policy:admin`: write and delete policies";
    PolicyRead => "policy:read", "`policy:read`: read policies, explain";
    PolicyAttach => "policy:attach", "`policy:attach` on a policy: attach it to (or detach it from) a principal";
    PrincipalAdmin => "principal:admin", "`principal:admin`: principals and their tokens";
    AuditRead => "audit:read", "`audit:read`: audit events, export, signing public key";
    AuditArchive => "audit:archive", "`audit:archive`: export and remove audit records up to a checkpoint";
    CustodyRead => "custody:read", "`custody:read`: the signed custody report";
    MetricsRead => "metrics:read", "`metrics:read`: this node's Prometheus metrics (`GET /metrics`)";
    DbCreds => "db:creds", "`db:creds` on `db/<connection>/<role>`: read a static role's password, create dynamic credentials, renew and revoke their leases";
    DbRotate => "db:rotate", "`db:rotate` on `db/<connection>/<role>`: rotate a static role's password now";
    DbAdmin => "db:admin", "`db:admin` on `db/<connection>` (connections) and `db/<connection>/<role>` (roles): create, show, list, delete";
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an action is applied to: a kind (`key`, `secret`, …) and the names it goes by (a key
/// is matched by its id and by its name). A pattern matches when it matches any of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// `key`, `alias`, `secret`, `policy`, `principal`, `token`, `job`.
    pub kind: &'static str,
    /// The names the resource goes by; `*` for "every resource of the kind".
    pub names: Vec<String>,
}

impl Resource {
    /// A key, by id and name.
    pub fn key(id: &crate::domain::KeyId, name: &str) -> Self {
        Self {
            kind: "key",
            names: vec![id.to_string(), name.to_owned()],
        }
    }

    /// A key named only as the request named it (unknown keys).
    pub fn key_ref(r: &crate::domain::KeyRef) -> Self {
        Self {
            kind: "key",
            names: vec![r.to_string()],
        }
    }

    /// Every key (create, list).
    pub fn all_keys() -> Self {
        Self::all("key")
    }

    /// Every resource of `kind` (collection-level actions).
    pub fn all(kind: &'static str) -> Self {
        Self {
            kind,
            names: vec!["*".to_owned()],
        }
    }

    /// One named resource of `kind`.
    pub fn named(kind: &'static str, name: impl Into<String>) -> Self {
        Self {
            kind,
            names: vec![name.into()],
        }
    }

    /// A secret, by path.
    pub fn secret(path: &crate::domain::secret::SecretPath) -> Self {
        Self::named("secret", path.as_str())
    }

    /// `kind/name` strings this resource answers to.
    pub fn qualified(&self) -> impl Iterator<Item = String> + '_ {
        self.names.iter().map(move |n| format!("{}/{n}", self.kind))
    }
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}",
            self.kind,
            self.names.last().map(String::as_str).unwrap_or("*")
        )
    }
}

/// A principal as policy sees it: its attributes and the documents attached to it.
#[derive(Debug, Clone, Default)]
pub struct Subject {
    /// Principal name.
    pub name: String,
    /// Attributes (`tenant`, `team`, …) for `${principal.<attr>}`.
    pub attributes: BTreeMap<String, String>,
    /// Attached policies, by name.
    pub policies: Vec<(String, Arc<PolicyDocument>)>,
}

/// One request to decide.
#[derive(Debug, Clone)]
pub struct Request<'a> {
    /// The action.
    pub action: Action,
    /// The resource.
    pub resource: &'a Resource,
    /// The encryption context, for actions that carry one.
    pub context: Option<&'a EncryptionContext>,
    /// The source address, when known.
    pub source: Option<IpAddr>,
    /// The time of the request.
    pub now: OffsetDateTime,
}

/// The statement that decided.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DecidedBy {
    /// Policy name.
    pub policy: String,
    /// Statement index in the policy.
    pub statement: usize,
    /// Its `sid`, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
}

/// The outcome, with what decided it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Decision {
    /// Allow or deny.
    pub effect: Effect,
    /// The statement that decided; none when nothing matched (deny by default).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<DecidedBy>,
}

impl Decision {
    /// True for allow.
    pub fn allowed(&self) -> bool {
        self.effect == Effect::Allow
    }
}

/// Glob match: `*` stands for any run of characters (including `/` and none).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] != b'*' && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

/// `${principal.<attr>}` resolved against the subject; `None` when the attribute is missing.
fn substitute<'a>(value: &'a str, subject: &'a Subject) -> Option<&'a str> {
    match value
        .strip_prefix("${principal.")
        .and_then(|r| r.strip_suffix('}'))
    {
        Some(attr) => subject.attributes.get(attr).map(String::as_str),
        None => Some(value),
    }
}

fn conditions_hold(c: &Conditions, subject: &Subject, req: &Request<'_>) -> bool {
    let needs_context =
        !c.context_equals.is_empty() || !c.context_in.is_empty() || !c.context_present.is_empty();
    if needs_context {
        let Some(ctx) = req.context else {
            return false;
        };
        let get = |k: &str| ctx.pairs().find(|(key, _)| *key == k).map(|(_, v)| v);
        for (k, want) in &c.context_equals {
            match (get(k), substitute(want, subject)) {
                (Some(have), Some(want)) if have == want => {}
                _ => return false,
            }
        }
        for (k, allowed) in &c.context_in {
            let Some(have) = get(k) else {
                return false;
            };
            if !allowed
                .iter()
                .filter_map(|a| substitute(a, subject))
                .any(|a| a == have)
            {
                return false;
            }
        }
        if c.context_present.iter().any(|k| get(k).is_none()) {
            return false;
        }
    }
    if !c.source_cidr.is_empty() {
        match req.source {
            Some(addr) if document::in_networks(&c.source_cidr, addr) => {}
            _ => return false,
        }
    }
    if let Some(w) = &c.time_window {
        if w.not_before.is_some_and(|t| req.now < t) || w.not_after.is_some_and(|t| req.now >= t) {
            return false;
        }
        if let (Some(from), Some(to)) = (w.from_hour_utc, w.to_hour_utc) {
            let hour = req.now.to_offset(time::UtcOffset::UTC).hour();
            let inside = if from < to {
                hour >= from && hour < to
            } else {
                hour >= from || hour < to
            };
            if !inside {
                return false;
            }
        }
    }
    true
}

fn statement_matches(st: &Statement, subject: &Subject, req: &Request<'_>) -> bool {
    st.actions
        .iter()
        .any(|a| glob_match(a, req.action.as_str()))
        && st.resources.iter().any(|pattern| {
            pattern == "*" || req.resource.qualified().any(|q| glob_match(pattern, &q))
        })
        && st
            .conditions
            .as_ref()
            .is_none_or(|c| conditions_hold(c, subject, req))
}

/// Decides `req` for `subject`: any matching deny → deny; else any matching allow → allow;
/// else deny. The first matching statement (policies in attachment order, statements in
/// document order) is reported.
pub fn evaluate(subject: &Subject, req: &Request<'_>) -> Decision {
    let mut allow = None;
    for (name, doc) in &subject.policies {
        for (i, st) in doc.statements.iter().enumerate() {
            if !statement_matches(st, subject, req) {
                continue;
            }
            let by = DecidedBy {
                policy: name.clone(),
                statement: i,
                sid: st.sid.clone(),
            };
            match st.effect {
                Effect::Deny => {
                    return Decision {
                        effect: Effect::Deny,
                        decided_by: Some(by),
                    }
                }
                Effect::Allow => {
                    allow.get_or_insert(by);
                }
            }
        }
    }
    match allow {
        Some(by) => Decision {
            effect: Effect::Allow,
            decided_by: Some(by),
        },
        None => Decision {
            effect: Effect::Deny,
            decided_by: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn doc(json: &str) -> Arc<PolicyDocument> {
        Arc::new(PolicyDocument::parse(json.as_bytes()).unwrap())
    }

    fn subject(docs: &[(&str, &str)]) -> Subject {
        let mut attributes = BTreeMap::new();
        attributes.insert("tenant".to_owned(), "acme".to_owned());
        Subject {
            name: "app".to_owned(),
            attributes,
            policies: docs
                .iter()
                .map(|(n, d)| ((*n).to_owned(), doc(d)))
                .collect(),
        }
    }

    fn ctx(pairs: &[(&str, &str)]) -> EncryptionContext {
        EncryptionContext::from_pairs(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
        .unwrap()
    }

    fn decide(
        s: &Subject,
        action: Action,
        resource: &Resource,
        context: Option<&EncryptionContext>,
    ) -> Decision {
        evaluate(
            s,
            &Request {
                action,
                resource,
                context,
                source: None,
                now: crate::clock::now(),
            },
        )
    }

    const BILLING: &str = r#"{"statements":[{"effect":"allow","actions":["datakey:generate","decrypt"],"resources":["key/billing-*"],
        "conditions":{"context_equals":{"tenant":"${principal.tenant}"}}}]}"#;

    #[test]
    fn globs() {
        assert!(glob_match("*", ""));
        assert!(glob_match("key:*", "key:read"));
        assert!(glob_match("key/billing-*", "key/billing-eu"));
        assert!(!glob_match("key/billing-*", "key/billinG-eu"));
        assert!(glob_match("secret/team/*/db", "secret/team/app/db"));
        assert!(!glob_match("secret/team/*/db", "secret/team/app/db2"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
    }

    #[test]
    fn context_conditions_and_substitution() {
        let s = subject(&[("billing", BILLING)]);
        let key = Resource {
            kind: "key",
            names: vec!["id-1".into(), "billing-eu".into()],
        };
        assert!(decide(&s, Action::Decrypt, &key, Some(&ctx(&[("tenant", "acme")]))).allowed());
        assert!(!decide(&s, Action::Decrypt, &key, Some(&ctx(&[("tenant", "evil")]))).allowed());
        assert!(!decide(&s, Action::Decrypt, &key, Some(&ctx(&[]))).allowed());
        assert!(!decide(&s, Action::Decrypt, &key, None).allowed());
        assert!(!decide(
            &s,
            Action::DatakeyGeneratePlaintext,
            &key,
            Some(&ctx(&[("tenant", "acme")]))
        )
        .allowed());
        let other = Resource {
            kind: "key",
            names: vec!["id-2".into(), "payroll".into()],
        };
        assert!(!decide(
            &s,
            Action::Decrypt,
            &other,
            Some(&ctx(&[("tenant", "acme")]))
        )
        .allowed());
        // A missing attribute makes the condition false.
        let mut no_attr = s.clone();
        no_attr.attributes.clear();
        assert!(!decide(
            &no_attr,
            Action::Decrypt,
            &key,
            Some(&ctx(&[("tenant", "acme")]))
        )
        .allowed());
    }

    #[test]
    fn deny_wins_and_explains() {
        let s = subject(&[
            (
                "all",
                r#"{"statements":[{"effect":"allow","actions":["*"],"resources":["*"]}]}"#,
            ),
            (
                "no-destroy",
                r#"{"statements":[{"sid":"keep","effect":"deny","actions":["secret:destroy"],"resources":["secret/prod/*"]}]}"#,
            ),
        ]);
        let prod = Resource::named("secret", "prod/db");
        let d = decide(&s, Action::SecretDestroy, &prod, None);
        assert_eq!(d.effect, Effect::Deny);
        assert_eq!(
            d.decided_by,
            Some(DecidedBy {
                policy: "no-destroy".into(),
                statement: 0,
                sid: Some("keep".into())
            })
        );
        let d = decide(&s, Action::SecretRead, &prod, None);
        assert_eq!(d.decided_by.unwrap().policy, "all");
        let nothing = subject(&[]);
        assert_eq!(
            decide(&nothing, Action::KeyRead, &Resource::all_keys(), None),
            Decision {
                effect: Effect::Deny,
                decided_by: None
            }
        );
    }

    #[test]
    fn source_and_time_conditions() {
        let s = subject(&[(
            "net",
            r#"{"statements":[{"effect":"allow","actions":["key:read"],"resources":["*"],
            "conditions":{"source_cidr":["10.0.0.0/8"],"time_window":{"from_hour_utc":22,"to_hour_utc":6}}}]}"#,
        )]);
        let r = Resource::all_keys();
        let at = |h: u8, src: &str| {
            let now = crate::clock::now().replace_hour(h).unwrap();
            evaluate(
                &s,
                &Request {
                    action: Action::KeyRead,
                    resource: &r,
                    context: None,
                    source: src.parse().ok(),
                    now,
                },
            )
            .allowed()
        };
        assert!(at(23, "10.1.2.3"));
        assert!(at(3, "10.1.2.3"));
        assert!(!at(12, "10.1.2.3"));
        assert!(!at(23, "192.168.1.1"));
        assert!(!at(23, "not an address"));
    }

    fn action_pattern() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("*".to_owned()),
            Just("key:*".to_owned()),
            Just("secret:*".to_owned()),
            proptest::sample::select(
                Action::ALL
                    .iter()
                    .map(|a| a.as_str().to_owned())
                    .collect::<Vec<_>>()
            ),
        ]
    }

    fn statement(effect: Effect) -> impl Strategy<Value = Statement> {
        (
            proptest::collection::vec(action_pattern(), 1..3),
            proptest::collection::vec(
                prop_oneof![
                    Just("*".to_owned()),
                    Just("key/a*".to_owned()),
                    Just("secret/x/*".to_owned())
                ],
                1..3,
            ),
            proptest::option::of(proptest::collection::btree_map(
                "[ab]",
                prop_oneof![Just("1".to_owned()), Just("${principal.tenant}".to_owned())],
                0..2,
            )),
        )
            .prop_map(move |(actions, resources, eq)| Statement {
                sid: None,
                effect,
                actions,
                resources,
                conditions: eq.map(|context_equals| Conditions {
                    context_equals,
                    ..Conditions::default()
                }),
            })
    }

    fn document() -> impl Strategy<Value = PolicyDocument> {
        proptest::collection::vec(
            prop_oneof![statement(Effect::Allow), statement(Effect::Deny)],
            1..5,
        )
        .prop_map(|statements| PolicyDocument { statements })
    }

    proptest! {
        /// Random documents evaluate without panicking, and adding a deny statement never turns
        /// a deny into an allow.
        #[test]
        fn adding_a_deny_never_grants(doc in document(), deny in statement(Effect::Deny),
                                      action in proptest::sample::select(Action::ALL.to_vec()),
                                      a in "[ab]", v in "[1x]") {
            let resource = Resource { kind: "key", names: vec!["abc".into()] };
            let context = EncryptionContext::from_pairs([(a, v)]).unwrap();
            let mut s = subject(&[]);
            s.policies.push(("p".into(), Arc::new(doc.clone())));
            let req = Request { action, resource: &resource, context: Some(&context), source: None, now: crate::clock::now() };
            let before = evaluate(&s, &req);
            let mut with_deny = doc;
            with_deny.statements.push(deny);
            s.policies[0].1 = Arc::new(with_deny);
            let after = evaluate(&s, &req);
            prop_assert!(before.allowed() || !after.allowed());
        }

        /// Arbitrary JSON never panics the parser.
        #[test]
        fn parsing_is_total(json in "\\PC{0,200}") {
            let _ = PolicyDocument::parse(json.as_bytes());
        }
    }
}
