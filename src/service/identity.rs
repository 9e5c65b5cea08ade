//! Principals, policies, tokens and explain. The built-in roles (`config/policies/*.json`) are
//! installed at start-up when absent; the bootstrap principal gets the `admin` policy.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use super::{auth, KeyService, ServiceError};
use crate::domain::secret::HumanDuration;
use crate::domain::{KeyName, PolicyRecord, PrincipalRecord, TokenInfo};
use crate::format::EncryptionContext;
use crate::policy::{self, Action, PolicyDocument, Principal, Resource, Subject};
use crate::secret::BearerToken;
use crate::store::StoreError;

/// Built-in roles shipped as policy documents, installed when absent.
pub const BUILT_IN_POLICIES: &[(&str, &str)] = &[
    ("admin", include_str!("../../config/policies/admin.json")),
    (
        "key-operator",
        include_str!("../../config/policies/key-operator.json"),
    ),
    (
        "application",
        include_str!("../../config/policies/application.json"),
    ),
    (
        "auditor",
        include_str!("../../config/policies/auditor.json"),
    ),
    (
        "monitoring",
        include_str!("../../config/policies/monitoring.json"),
    ),
];

/// Most attributes on a principal, and policies attached to one.
const MAX_ATTRIBUTES: usize = 32;
const MAX_ATTACHED: usize = 32;

/// What a principal write asks for.
#[derive(Debug, Clone, Default)]
pub struct PrincipalRequest {
    /// Attributes (replaced as a whole when given).
    pub attributes: Option<BTreeMap<String, String>>,
    /// Attached policies (replaced as a whole when given).
    pub policies: Option<Vec<KeyName>>,
}

/// A freshly minted token: shown once.
#[derive(Debug)]
pub struct MintedToken {
    /// The token text.
    pub token: BearerToken,
    /// Its metadata.
    pub info: TokenInfo,
}

fn check_attributes(a: &BTreeMap<String, String>) -> Result<(), ServiceError> {
    let bad_key = |k: &String| {
        k.is_empty()
            || k.len() > 64
            || !k
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    if a.len() > MAX_ATTRIBUTES || a.keys().any(bad_key) || a.values().any(|v| v.len() > 1024) {
        return Err(ServiceError::InvalidLifecycleValue(
            "attributes: at most 32, names of 1 to 64 letters, digits, '_' or '-', values up to 1024 bytes",
        ));
    }
    Ok(())
}

impl KeyService {
    /// The principal as policy sees it, cached for [`auth::CACHE_TTL`]. A principal or policy
    /// that cannot be read or parsed yields no policies at all: everything is denied.
    pub(crate) async fn subject(&self, name: &str) -> Result<Arc<Subject>, ServiceError> {
        if self.coherence.trusted() {
            if let Ok(cache) = self.subjects.read() {
                if let Some((s, at)) = cache.get(name) {
                    if at.elapsed() < auth::CACHE_TTL {
                        return Ok(Arc::clone(s));
                    }
                }
            }
        }
        let ticket = self.coherence.ticket();
        let mut subject = Subject {
            name: name.to_owned(),
            ..Subject::default()
        };
        if let Some(p) = self.store.principal(name).await? {
            subject.attributes = p.attributes;
            let mut docs = Vec::new();
            for policy_name in &p.policies {
                // A deleted policy simply grants nothing any more.
                let Some(rec) = self.store.policy(policy_name.as_str()).await? else {
                    continue;
                };
                let parsed = serde_json::to_vec(&rec.document)
                    .ok()
                    .and_then(|b| PolicyDocument::parse(&b).ok());
                let Some(doc) = parsed else {
                    tracing::error!(principal = name, policy = %policy_name, "stored policy does not parse; denying everything to this principal");
                    docs.clear();
                    break;
                };
                docs.push((policy_name.to_string(), Arc::new(doc)));
            }
            subject.policies = docs;
        }
        let subject = Arc::new(subject);
        if !self.coherence.may_cache(ticket) {
            return Ok(subject);
        }
        if let Ok(mut cache) = self.subjects.write() {
            if cache.len() > 10_000 {
                cache.clear();
            }
            cache.insert(name.to_owned(), (Arc::clone(&subject), Instant::now()));
        }
        Ok(subject)
    }

    /// Forgets cached subjects after a principal or policy change (this node sees it at once;
    /// other nodes within [`auth::CACHE_TTL`]).
    pub(crate) fn forget_subjects(&self) {
        if let Ok(mut cache) = self.subjects.write() {
            cache.clear();
        }
    }

    /// Installs the built-in role policies that are absent.
    ///
    /// # Errors
    /// `Store`; an invalid built-in document is a bug reported as `InvalidPolicy`.
    pub async fn install_built_in_policies(&self) -> Result<(), ServiceError> {
        let now = crate::clock::now();
        for (name, text) in BUILT_IN_POLICIES {
            let doc =
                PolicyDocument::parse(text.as_bytes()).map_err(ServiceError::InvalidPolicy)?;
            let value = serde_json::to_value(&doc)
                .map_err(|_| ServiceError::InvalidLifecycleValue("built-in policy"))?;
            let name = KeyName::try_from((*name).to_owned())
                .map_err(|_| ServiceError::InvalidLifecycleValue("built-in policy name"))?;
            self.store.put_policy(&name, &value, true, now).await?;
        }
        Ok(())
    }

    /// Makes sure the bootstrap principal exists with the `admin` policy.
    pub(crate) async fn ensure_bootstrap_principal(&self) -> Result<(), ServiceError> {
        let now = crate::clock::now();
        let name = KeyName::try_from(policy::BOOTSTRAP_ADMIN.to_owned())
            .map_err(|_| ServiceError::InvalidLifecycleValue("bootstrap name"))?;
        let admin = KeyName::try_from("admin".to_owned())
            .map_err(|_| ServiceError::InvalidLifecycleValue("admin"))?;
        let record = PrincipalRecord {
            name,
            attributes: BTreeMap::new(),
            policies: vec![admin],
            created_at: now,
            updated_at: now,
        };
        match self.store.put_principal(&record, true).await {
            Ok(_) | Err(StoreError::Conflict { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Authorises `policy:attach` on every policy a principal write attaches or detaches
    /// (`changed`), then checks that each policy to attach exists: an unknown name is reported
    /// only to a principal that may attach it. `principal:admin` alone never grants a policy:
    /// otherwise a principal admin scoped to a few principals could attach `admin` to one.
    async fn check_attachable(
        &self,
        p: &Principal,
        attach: &[KeyName],
        changed: &[&KeyName],
    ) -> Result<(), ServiceError> {
        if attach.len() > MAX_ATTACHED {
            return Err(ServiceError::InvalidLifecycleValue(
                "at most 32 policies per principal",
            ));
        }
        for n in changed {
            self.authorize(
                p,
                Action::PolicyAttach,
                &Resource::named("policy", n.as_str()),
                None,
            )
            .await?;
        }
        self.check_policies_exist(attach).await
    }

    async fn check_policies_exist(&self, names: &[KeyName]) -> Result<(), ServiceError> {
        for n in names {
            if self.store.policy(n.as_str()).await?.is_none() {
                return Err(ServiceError::PolicyNotFound(n.to_string()));
            }
        }
        Ok(())
    }

    /// Creates a principal.
    ///
    /// # Errors
    /// `Forbidden`, `PrincipalExists`, `PolicyNotFound`, `InvalidLifecycleValue`, `Store`.
    pub async fn create_principal(
        &self,
        p: &Principal,
        name: KeyName,
        req: PrincipalRequest,
    ) -> Result<PrincipalRecord, ServiceError> {
        self.authorize(
            p,
            Action::PrincipalAdmin,
            &Resource::named("principal", name.as_str()),
            None,
        )
        .await?;
        let attributes = req.attributes.unwrap_or_default();
        check_attributes(&attributes)?;
        let policies = req.policies.unwrap_or_default();
        let changed: Vec<&KeyName> = policies.iter().collect();
        self.check_attachable(p, &policies, &changed).await?;
        let now = crate::clock::now();
        let record = PrincipalRecord {
            name: name.clone(),
            attributes,
            policies,
            created_at: now,
            updated_at: now,
        };
        self.changing().await?;
        let out = match self.store.put_principal(&record, true).await {
            Err(StoreError::Conflict { .. }) => {
                return Err(ServiceError::PrincipalExists(name.to_string()))
            }
            other => other?,
        };
        self.forget_subjects();
        tracing::info!(principal = %name, "principal created");
        Ok(out)
    }

    /// Changes a principal's attributes and/or policies (each replaced as a whole).
    ///
    /// # Errors
    /// `Forbidden`, `PrincipalNotFound`, `PolicyNotFound`, `InvalidLifecycleValue`, `Store`.
    pub async fn update_principal(
        &self,
        p: &Principal,
        name: &KeyName,
        req: PrincipalRequest,
    ) -> Result<PrincipalRecord, ServiceError> {
        self.authorize(
            p,
            Action::PrincipalAdmin,
            &Resource::named("principal", name.as_str()),
            None,
        )
        .await?;
        let mut record = self
            .store
            .principal(name.as_str())
            .await?
            .ok_or_else(|| ServiceError::PrincipalNotFound(name.to_string()))?;
        if let Some(a) = req.attributes {
            check_attributes(&a)?;
            record.attributes = a;
        }
        if let Some(pol) = req.policies {
            // Attached or detached: detaching a policy that denies is a grant too.
            let changed: Vec<&KeyName> = pol
                .iter()
                .filter(|n| !record.policies.contains(n))
                .chain(record.policies.iter().filter(|n| !pol.contains(n)))
                .collect();
            self.check_attachable(p, &pol, &changed).await?;
            record.policies = pol;
        }
        record.updated_at = crate::clock::now();
        self.changing().await?;
        let out = match self.store.put_principal(&record, false).await {
            Err(StoreError::NotFound) => {
                return Err(ServiceError::PrincipalNotFound(name.to_string()))
            }
            other => other?,
        };
        self.forget_subjects();
        Ok(out)
    }

    /// One principal.
    ///
    /// # Errors
    /// `Forbidden`, `PrincipalNotFound`, `Store`.
    pub async fn principal(
        &self,
        p: &Principal,
        name: &KeyName,
    ) -> Result<PrincipalRecord, ServiceError> {
        self.authorize(
            p,
            Action::PrincipalAdmin,
            &Resource::named("principal", name.as_str()),
            None,
        )
        .await?;
        self.store
            .principal(name.as_str())
            .await?
            .ok_or_else(|| ServiceError::PrincipalNotFound(name.to_string()))
    }

    /// Every principal.
    ///
    /// # Errors
    /// `Forbidden`, `Store`.
    pub async fn principals(&self, p: &Principal) -> Result<Vec<PrincipalRecord>, ServiceError> {
        let filter = self
            .item_filter(p, Action::PrincipalAdmin, "principal")
            .await?;
        let mut principals = self.store.list_principals().await?;
        principals.retain(|r| filter.allows(&Resource::named("principal", r.name.as_str())));
        Ok(principals)
    }

    /// Deletes a principal and revokes its tokens.
    ///
    /// # Errors
    /// `Forbidden`, `PrincipalNotFound`, `Store`.
    pub async fn delete_principal(
        &self,
        p: &Principal,
        name: &KeyName,
    ) -> Result<(), ServiceError> {
        self.authorize(
            p,
            Action::PrincipalAdmin,
            &Resource::named("principal", name.as_str()),
            None,
        )
        .await?;
        // Its tokens, to end the database leases they created once they are revoked.
        let tokens: Vec<String> = self
            .store
            .list_tokens(Some(name.as_str()))
            .await?
            .into_iter()
            .filter(|t| t.revoked_at.is_none())
            .map(|t| t.id)
            .collect();
        self.changing().await?;
        if !self
            .store
            .delete_principal(name.as_str(), crate::clock::now())
            .await?
        {
            return Err(ServiceError::PrincipalNotFound(name.to_string()));
        }
        self.forget_subjects();
        self.auth.forget_all();
        tracing::info!(principal = %name, "principal deleted; its tokens revoked");
        self.end_leases_of_tokens(&tokens).await;
        Ok(())
    }

    /// Writes a policy (a new version); the document is validated first.
    ///
    /// # Errors
    /// `Forbidden`, `InvalidPolicy` naming the JSON path, `Store`.
    pub async fn put_policy(
        &self,
        p: &Principal,
        name: &KeyName,
        body: &[u8],
    ) -> Result<PolicyRecord, ServiceError> {
        self.authorize(
            p,
            Action::PolicyAdmin,
            &Resource::named("policy", name.as_str()),
            None,
        )
        .await?;
        let doc = PolicyDocument::parse(body).map_err(ServiceError::InvalidPolicy)?;
        let value = serde_json::to_value(&doc)
            .map_err(|_| ServiceError::InvalidLifecycleValue("policy"))?;
        self.changing().await?;
        let out = self
            .store
            .put_policy(name, &value, false, crate::clock::now())
            .await?;
        self.forget_subjects();
        tracing::info!(policy = %name, version = out.version, "policy written");
        Ok(out)
    }

    /// One policy.
    ///
    /// # Errors
    /// `Forbidden`, `PolicyNotFound`, `Store`.
    pub async fn policy(
        &self,
        p: &Principal,
        name: &KeyName,
    ) -> Result<PolicyRecord, ServiceError> {
        self.authorize(
            p,
            Action::PolicyRead,
            &Resource::named("policy", name.as_str()),
            None,
        )
        .await?;
        self.store
            .policy(name.as_str())
            .await?
            .ok_or_else(|| ServiceError::PolicyNotFound(name.to_string()))
    }

    /// Every policy.
    ///
    /// # Errors
    /// `Forbidden`, `Store`.
    pub async fn policies(&self, p: &Principal) -> Result<Vec<PolicyRecord>, ServiceError> {
        let filter = self.item_filter(p, Action::PolicyRead, "policy").await?;
        let mut policies = self.store.list_policies().await?;
        policies.retain(|r| filter.allows(&Resource::named("policy", r.name.as_str())));
        Ok(policies)
    }

    /// Deletes a policy; principals that had it lose its rights at once.
    ///
    /// # Errors
    /// `Forbidden`, `PolicyNotFound`, `Store`.
    pub async fn delete_policy(&self, p: &Principal, name: &KeyName) -> Result<(), ServiceError> {
        self.authorize(
            p,
            Action::PolicyAdmin,
            &Resource::named("policy", name.as_str()),
            None,
        )
        .await?;
        self.changing().await?;
        if !self.store.delete_policy(name.as_str()).await? {
            return Err(ServiceError::PolicyNotFound(name.to_string()));
        }
        self.forget_subjects();
        Ok(())
    }

    /// Mints a token for `principal` (shown once).
    ///
    /// # Errors
    /// `Forbidden`, `PrincipalNotFound`, `Store`.
    pub async fn create_token(
        &self,
        p: &Principal,
        principal: &KeyName,
        ttl: Option<HumanDuration>,
        description: String,
    ) -> Result<MintedToken, ServiceError> {
        self.authorize(
            p,
            Action::PrincipalAdmin,
            &Resource::named("principal", principal.as_str()),
            None,
        )
        .await?;
        if self.store.principal(principal.as_str()).await?.is_none() {
            return Err(ServiceError::PrincipalNotFound(principal.to_string()));
        }
        let (token, mut record) = auth::mint(principal.as_str(), &description).map_err(|e| {
            ServiceError::Backend(crate::backend::BackendError::Device(Box::new(e)))
        })?;
        record.expires_at = ttl.map(|t| record.created_at + t.0);
        self.changing().await?;
        self.store.insert_token(&record).await?;
        tracing::info!(token_id = %record.id, principal = %principal, "token minted");
        Ok(MintedToken {
            info: TokenInfo::from(&record),
            token,
        })
    }

    /// Token metadata, of one principal or all.
    ///
    /// # Errors
    /// `Forbidden`, `Store`.
    pub async fn tokens(
        &self,
        p: &Principal,
        principal: Option<&KeyName>,
    ) -> Result<Vec<TokenInfo>, ServiceError> {
        if let Some(n) = principal {
            self.authorize(
                p,
                Action::PrincipalAdmin,
                &Resource::named("principal", n.as_str()),
                None,
            )
            .await?;
        }
        let filter = self
            .item_filter(p, Action::PrincipalAdmin, "principal")
            .await?;
        let mut tokens = self
            .store
            .list_tokens(principal.map(KeyName::as_str))
            .await?;
        tokens.retain(|t| filter.allows(&Resource::named("principal", t.principal.as_str())));
        Ok(tokens.iter().map(TokenInfo::from).collect())
    }

    /// Revokes a token at once (this node immediately; others within the auth cache bound).
    ///
    /// # Errors
    /// `Forbidden`, `TokenNotFound`, `Store`.
    pub async fn revoke_token(&self, p: &Principal, id: &str) -> Result<(), ServiceError> {
        let Some(token) = self.store.token(id).await? else {
            // Only a principal allowed to manage every principal learns that an id is unknown.
            self.authorize(p, Action::PrincipalAdmin, &Resource::all("principal"), None)
                .await?;
            return Err(ServiceError::TokenNotFound(id.to_owned()));
        };
        self.authorize(
            p,
            Action::PrincipalAdmin,
            &Resource::named("principal", token.principal.as_str()),
            None,
        )
        .await?;
        self.changing().await?;
        self.store.revoke_token(id, crate::clock::now()).await?;
        self.auth.forget(id);
        tracing::info!(token_id = id, principal = %token.principal, "token revoked");
        self.end_leases_of_tokens(&[id.to_owned()]).await;
        Ok(())
    }

    /// Ends the database leases that revoked `tokens` created (unless their role keeps them);
    /// the background duty revokes them within its interval. A failure is logged: the tokens
    /// stay revoked and the leases run to their own end.
    async fn end_leases_of_tokens(&self, tokens: &[String]) {
        let mut ended = 0;
        for id in tokens {
            match self.end_token_leases(id).await {
                Ok(n) => ended += n,
                Err(e) => {
                    tracing::error!(token_id = %id, error = %e, "a token is revoked, but its database leases could not be ended; they run to their own expiry")
                }
            }
        }
        if ended > 0 {
            crate::audit::note::detail("db_leases_ended", ended.to_string());
        }
    }

    /// The resource `kind/name` as enforcement would see it for `p`: a key is known by its id
    /// and name (and the alias used), so explain matches the same patterns enforcement does.
    /// A key is resolved only for a principal that may read it (`key:read`); for anyone else
    /// the resource stays as written, so explain never tells whether a key exists or which id
    /// goes with which name.
    ///
    /// # Errors
    /// `Store`.
    async fn resource_for(
        &self,
        p: &Principal,
        kind: &'static str,
        name: &str,
    ) -> Result<Resource, ServiceError> {
        let as_written = Resource::named(kind, name);
        if kind != "key" {
            return Ok(as_written);
        }
        let Ok(r) = name.parse::<crate::domain::KeyRef>() else {
            return Ok(as_written);
        };
        let Some(key) = self.lookup_key(&r).await? else {
            return Ok(as_written);
        };
        let mut res = Resource::key(&key.id, key.name.as_str());
        if matches!(r, crate::domain::KeyRef::Alias(_)) {
            res.names.push(name.to_owned());
        }
        let may_read = self.decide(p, Action::KeyRead, &res, None).await?.allowed();
        Ok(if may_read { res } else { as_written })
    }

    /// Explains the decision `principal` would get for `action` on `kind/name` (with `context`
    /// and `source`), using the same evaluation as enforcement.
    ///
    /// # Errors
    /// `Forbidden`, `Store`.
    #[allow(clippy::too_many_arguments)] // one per field of the explain request
    pub async fn explain(
        &self,
        p: &Principal,
        principal: &KeyName,
        action: Action,
        kind: &'static str,
        name: &str,
        context: Option<&EncryptionContext>,
        source: Option<std::net::IpAddr>,
    ) -> Result<policy::Decision, ServiceError> {
        self.authorize(
            p,
            Action::PolicyRead,
            &Resource::named("principal", principal.as_str()),
            None,
        )
        .await?;
        let resource = self.resource_for(p, kind, name).await?;
        let who = Principal {
            name: principal.to_string(),
            credential_id: String::new(),
            source,
        };
        self.decide(&who, action, &resource, context).await
    }
}
