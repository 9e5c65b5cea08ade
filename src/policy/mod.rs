//! The single place where authorisation is decided. Pure: no I/O.
//!
//! Today the only credential is the bootstrap admin token, so the decision is simple: the admin
//! principal may do everything, any other principal nothing. Principals, attributes and policy
//! documents plug in here; call sites already pass the action and the resource.

use std::fmt;

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The principal's name.
    pub name: String,
    /// The id of the credential that authenticated it (non-secret).
    pub credential_id: String,
}

/// The name of the principal that the bootstrap token authenticates.
pub const BOOTSTRAP_ADMIN: &str = "bootstrap-admin";

/// What is being asked for. The strings are the documented action vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// `key:create`
    KeyCreate,
    /// `key:read` (show and list, versions, aliases, jobs)
    KeyRead,
    /// `key:update` (description, rotation period, min_decryption_version)
    KeyUpdate,
    /// `key:rotate` (rotate, start a re-wrap)
    KeyRotate,
    /// `key:disable` (disable and enable keys and versions)
    KeyDisable,
    /// `key:delete` (schedule and cancel deletion, destroy versions)
    KeyDelete,
    /// `alias:write` (create, re-point, delete aliases)
    AliasWrite,
    /// `reencrypt`
    Reencrypt,
    /// `datakey:generate` (wrapped copy only)
    DatakeyGenerate,
    /// `datakey:generate-plaintext` (also the plaintext copy)
    DatakeyGeneratePlaintext,
    /// `encrypt`
    Encrypt,
    /// `decrypt`
    Decrypt,
    /// `secret:read` (values and metadata)
    SecretRead,
    /// `secret:list`
    SecretList,
    /// `secret:write` (put, metadata, rotate)
    SecretWrite,
    /// `secret:delete` (soft delete and undelete)
    SecretDelete,
    /// `secret:destroy`
    SecretDestroy,
}

impl Action {
    /// The action's name in policy documents and audit records.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::KeyCreate => "key:create",
            Self::KeyRead => "key:read",
            Self::KeyUpdate => "key:update",
            Self::KeyRotate => "key:rotate",
            Self::KeyDisable => "key:disable",
            Self::KeyDelete => "key:delete",
            Self::AliasWrite => "alias:write",
            Self::Reencrypt => "reencrypt",
            Self::DatakeyGenerate => "datakey:generate",
            Self::DatakeyGeneratePlaintext => "datakey:generate-plaintext",
            Self::Encrypt => "encrypt",
            Self::Decrypt => "decrypt",
            Self::SecretRead => "secret:read",
            Self::SecretList => "secret:list",
            Self::SecretWrite => "secret:write",
            Self::SecretDelete => "secret:delete",
            Self::SecretDestroy => "secret:destroy",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an action is applied to: `key/<id>`, or `key/*` for collection-level actions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource(pub String);

impl Resource {
    /// A key, by id.
    pub fn key(id: &crate::domain::KeyId) -> Self {
        Self(format!("key/{id}"))
    }

    /// A secret, by path.
    pub fn secret(path: &crate::domain::secret::SecretPath) -> Self {
        Self(format!("secret/{path}"))
    }

    /// Every key (create, list).
    pub fn all_keys() -> Self {
        Self("key/*".to_owned())
    }
}

/// The outcome, with the reason for audit and explain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed, and why.
    Allow(&'static str),
    /// Denied, and why.
    Deny(&'static str),
}

/// Decides whether `principal` may do `action` on `resource`. Deny by default.
pub fn authorize(principal: &Principal, action: Action, resource: &Resource) -> Decision {
    // Both are inputs to the future policy evaluation; unused until documents exist.
    let _ = (action, resource);
    if principal.name == BOOTSTRAP_ADMIN {
        Decision::Allow("bootstrap admin")
    } else {
        Decision::Deny("no policy allows this")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(name: &str) -> Principal {
        Principal {
            name: name.to_owned(),
            credential_id: "id".to_owned(),
        }
    }

    #[test]
    fn admin_is_allowed_and_everyone_else_denied() {
        let r = Resource::all_keys();
        assert!(matches!(
            authorize(&who(BOOTSTRAP_ADMIN), Action::KeyCreate, &r),
            Decision::Allow(_)
        ));
        assert!(matches!(
            authorize(&who("app"), Action::KeyRead, &r),
            Decision::Deny(_)
        ));
        assert!(matches!(
            authorize(&who(""), Action::Decrypt, &r),
            Decision::Deny(_)
        ));
    }

    #[test]
    fn action_names_are_the_documented_vocabulary() {
        assert_eq!(
            Action::DatakeyGeneratePlaintext.as_str(),
            "datakey:generate-plaintext"
        );
        assert_eq!(Action::KeyCreate.to_string(), "key:create");
    }
}
