//! Policy files as text: GatePolicy, ValidatingAdmissionPolicy and
//! MutatingAdmissionPolicy documents with their bindings, lists and params,
//! through the loader (YAML split, decode, checks, CEL compile). A set that
//! loads then reviews two fixed requests on `/validate` and `/mutate`, so
//! mutated expressions in real policies are evaluated too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use safety_gate::policy::{Mode, PolicySet};
use safety_gate_fuzz::review_body;
use std::path::PathBuf;

const DEPLOYMENT_CREATE: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u1","kind":{"group":"apps","version":"v1","kind":"Deployment"},"resource":{"group":"apps","version":"v1","resource":"deployments"},"name":"web","namespace":"default","operation":"CREATE","userInfo":{"username":"alice","groups":["system:authenticated"]},"object":{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web","namespace":"default","labels":{"app":"web"}},"spec":{"replicas":3,"selector":{"matchLabels":{"app":"web"}},"template":{"metadata":{"labels":{"app":"web"}},"spec":{"containers":[{"name":"web","image":"nginx:latest","resources":{"limits":{"memory":"1Gi","cpu":"500m"}}}]}}}}}}"#;

const NAMESPACE_DELETE: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u2","kind":{"group":"","version":"v1","kind":"Namespace"},"resource":{"group":"","version":"v1","resource":"namespaces"},"name":"payments-prod","operation":"DELETE","userInfo":{"username":"bob","groups":["system:authenticated"]},"oldObject":{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"payments-prod","labels":{"safety-gate.dev/protected":"true","kubernetes.io/metadata.name":"payments-prod"}}}}}"#;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let sources = [(PathBuf::from("fuzz-policies.yaml"), text.to_string())];
    if let Ok(set) = PolicySet::load_texts(&sources) {
        for body in [DEPLOYMENT_CREATE, NAMESPACE_DELETE] {
            review_body(&set, body.as_bytes(), Mode::Enforce);
        }
    }
});
