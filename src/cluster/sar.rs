//! Policies' `authorizer` checks as SubjectAccessReviews through the API
//! server (what kube-apiserver asks its own authorizer in-process), with a
//! short cache: the same question within [`CACHE_TTL`] is answered once.
//!
//! A review that cannot be made (API server unreachable, the gate may not
//! create SubjectAccessReviews, no answer within [`REVIEW_TIMEOUT`]) is an
//! error of the check, which the policy's failurePolicy decides; it is never
//! taken for an answer and never cached.

use crate::policy::authz::{Authorizer, AuthzAttributes, AuthzDecision, AuthzTarget, AuthzVerdict};
use k8s_openapi::api::authorization::v1::{
    FieldSelectorAttributes, LabelSelectorAttributes, NonResourceAttributes, ResourceAttributes,
    SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::Client;
use kube::api::{Api, PostParams};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long an answer is reused (RBAC changes take effect after at most this).
pub const CACHE_TTL: Duration = Duration::from_secs(10);
/// How long one review may take before the check fails.
pub const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);
/// Answers kept at most; past this the cache starts over.
const CACHE_ENTRIES: usize = 10_000;

pub struct SubjectAccessReviewer {
    client: Client,
    runtime: tokio::runtime::Handle,
    cache: Mutex<HashMap<AuthzAttributes, (Instant, AuthzDecision)>>,
}

impl SubjectAccessReviewer {
    /// Reviews run on `runtime`; [`Authorizer::authorize`] waits for them
    /// from any thread that is not one of its async workers (evaluation runs
    /// on the blocking pool in `serve`, on the main thread in `--cluster`).
    pub fn new(client: Client, runtime: tokio::runtime::Handle) -> Self {
        SubjectAccessReviewer {
            client,
            runtime,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, attributes: &AuthzAttributes) -> Option<AuthzDecision> {
        let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .get(attributes)
            .filter(|(at, _)| at.elapsed() < CACHE_TTL)
            .map(|(_, d)| d.clone())
    }

    fn remember(&self, attributes: &AuthzAttributes, decision: &AuthzDecision) {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_ENTRIES {
            cache.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
            if cache.len() >= CACHE_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(attributes.clone(), (Instant::now(), decision.clone()));
    }
}

/// The SubjectAccessReview for one check, with the attributes kube-apiserver's
/// CEL authz library gives its authorizer (resource checks at API version `*`).
pub fn review_for(a: &AuthzAttributes) -> SubjectAccessReview {
    let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
    let mut spec = SubjectAccessReviewSpec {
        user: Some(a.user.name.clone()),
        uid: some(&a.user.uid),
        groups: (!a.user.groups.is_empty()).then(|| a.user.groups.clone()),
        extra: (!a.user.extra.is_empty()).then(|| a.user.extra.clone()),
        ..Default::default()
    };
    match &a.target {
        AuthzTarget::Path(path) => {
            spec.non_resource_attributes = Some(NonResourceAttributes {
                path: Some(path.clone()),
                verb: Some(a.verb.clone()),
            });
        }
        AuthzTarget::Resource {
            group,
            resource,
            subresource,
            namespace,
            name,
            field_selector,
            label_selector,
        } => {
            spec.resource_attributes = Some(ResourceAttributes {
                group: Some(group.clone()),
                version: Some("*".to_string()),
                resource: Some(resource.clone()),
                subresource: some(subresource),
                namespace: some(namespace),
                name: some(name),
                verb: Some(a.verb.clone()),
                field_selector: some(field_selector).map(|raw| FieldSelectorAttributes {
                    raw_selector: Some(raw),
                    requirements: None,
                }),
                label_selector: some(label_selector).map(|raw| LabelSelectorAttributes {
                    raw_selector: Some(raw),
                    requirements: None,
                }),
            });
        }
    }
    SubjectAccessReview {
        spec,
        ..Default::default()
    }
}

impl Authorizer for SubjectAccessReviewer {
    fn authorize(&self, attributes: &AuthzAttributes) -> Result<AuthzDecision, String> {
        if let Some(d) = self.cached(attributes) {
            return Ok(d);
        }
        // Waiting for kube-apiserver on the server's async worker would stall it.
        crate::policy::cancel::before_blocking()?;
        let review = review_for(attributes);
        let api: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let (tx, rx) = std::sync::mpsc::channel();
        self.runtime.spawn(async move {
            let answer = api.create(&PostParams::default(), &review).await;
            // The waiting side may have timed out and gone.
            let _ = tx.send(answer);
        });
        let answer = match rx.recv_timeout(REVIEW_TIMEOUT) {
            Ok(Ok(answer)) => answer,
            Ok(Err(e)) => return Err(format!("SubjectAccessReview failed: {e}")),
            Err(_) => {
                return Err(format!(
                    "SubjectAccessReview got no answer within {REVIEW_TIMEOUT:?}"
                ));
            }
        };
        let status = answer
            .status
            .ok_or("SubjectAccessReview answered without a status")?;
        let decision = AuthzDecision {
            verdict: if status.allowed {
                AuthzVerdict::Allow
            } else if status.denied == Some(true) {
                AuthzVerdict::Deny
            } else {
                AuthzVerdict::NoOpinion
            },
            reason: status.reason.unwrap_or_default(),
            error: status.evaluation_error.filter(|e| !e.is_empty()),
        };
        self.remember(attributes, &decision);
        Ok(decision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::authz::AuthzUser;

    #[test]
    fn reviews_carry_what_the_authz_library_asks() {
        let user = AuthzUser {
            name: "alice".into(),
            uid: String::new(),
            groups: vec!["dev".into()],
            extra: Default::default(),
        };
        let r = review_for(&AuthzAttributes {
            user: user.clone(),
            verb: "create".into(),
            target: AuthzTarget::Resource {
                group: "apps".into(),
                resource: "deployments".into(),
                subresource: "scale".into(),
                namespace: "team-a".into(),
                name: String::new(),
                field_selector: String::new(),
                label_selector: "app=web".into(),
            },
        });
        let json = serde_json::to_value(&r.spec).expect("json");
        assert_eq!(
            json,
            serde_json::json!({
                "user": "alice", "groups": ["dev"],
                "resourceAttributes": {"group": "apps", "version": "*", "resource": "deployments",
                    "subresource": "scale", "namespace": "team-a", "verb": "create",
                    "labelSelector": {"rawSelector": "app=web"}}
            })
        );
        let r = review_for(&AuthzAttributes {
            user,
            verb: "get".into(),
            target: AuthzTarget::Path("/healthz".into()),
        });
        assert_eq!(
            serde_json::to_value(&r.spec).expect("json")["nonResourceAttributes"],
            serde_json::json!({"path": "/healthz", "verb": "get"})
        );
    }
}
