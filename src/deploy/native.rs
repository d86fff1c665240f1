//! `safety-gate manifests --native`: the GatePolicies kube-apiserver can
//! enforce itself, rendered as `admissionregistration.k8s.io/v1`
//! ValidatingAdmissionPolicy + ValidatingAdmissionPolicyBinding documents that
//! decide as the gate does (issue 14), so the protection outlives the webhook.
//!
//! What a GatePolicy adds to VAP and how each part is carried:
//! - `action` (and the gate's `--mode`) → the binding's `validationActions`;
//! - the default reason (GatePolicy 403, VAP 422) → an explicit `reason: Forbidden`;
//! - `exemptions` → a variable holding the first exemption that holds (or `''`),
//!   `exempt || expression` in every validation, an audit annotation naming the
//!   user, and a companion policy (`<policy>.break-glass.safety-gate.dev`,
//!   Warn + Audit, fail open) whose validations fail exactly where the
//!   policy's would have and an exemption let the request through: it carries
//!   the gate's `[break-glass]` warning and audit record;
//! - variable names kube-apiserver reserves (`namespace`, …) → renamed in the
//!   variable list and in every `variables.<name>` reference.
//!
//! What kube-apiserver cannot carry is refused, by name and with the reason:
//! `lookups` (cluster state), `annotate`/`mutations` (VAP only validates).

use crate::documents::split_documents;
use crate::policy::string_literal_end;
use crate::policy::{Mode, Policy, PolicyKind, PolicySet};
use serde_json::{Map, Value as Json, json};
use std::collections::BTreeSet;

/// Suffix of every native object's name: `<policy>.safety-gate.dev`.
pub const NAME_SUFFIX: &str = ".safety-gate.dev";
/// Infix of the break-glass companion: `<policy>.break-glass.safety-gate.dev`.
pub const BREAK_GLASS_INFIX: &str = ".break-glass";
/// The variable that holds the name of the exemption that holds, or `''`.
pub const EXEMPTION_VARIABLE: &str = "safetyGateExemption";
const VAP_API_VERSION: &str = "admissionregistration.k8s.io/v1";

/// One rendered policy: its file name under `--out` and its documents.
#[derive(Debug, Clone)]
pub struct NativePolicy {
    /// The GatePolicy's name.
    pub policy: String,
    /// `<policy>.yaml`.
    pub file_name: String,
    /// VAP, binding, and (with exemptions) the break-glass VAP and binding.
    pub objects: Vec<Json>,
    /// The objects as one YAML stream with a header.
    pub yaml: String,
}

/// A policy that kube-apiserver cannot enforce as the gate does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotRendered {
    pub policy: String,
    pub file: String,
    pub reasons: Vec<String>,
}

impl std::fmt::Display for NotRendered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "policy {} ({}): not rendered natively: {}",
            self.policy,
            self.file,
            self.reasons.join("; ")
        )
    }
}

#[derive(Debug, Default)]
pub struct NativeRender {
    pub rendered: Vec<NativePolicy>,
    pub not_rendered: Vec<NotRendered>,
}

/// The native name of a policy, as a DNS-1123 subdomain.
pub fn native_name(policy: &str) -> String {
    format!("{policy}{NAME_SUFFIX}")
}

/// The break-glass companion's name.
pub fn break_glass_name(policy: &str) -> String {
    format!("{policy}{BREAK_GLASS_INFIX}{NAME_SUFFIX}")
}

/// Renders every GatePolicy of `set` that kube-apiserver can carry; the
/// others are listed with their reasons. `mode` is the gate's global mode.
pub fn render_native(set: &PolicySet, mode: Mode) -> NativeRender {
    let mut out = NativeRender::default();
    for p in set.policies() {
        if p.kind != PolicyKind::GatePolicy {
            // Plain VAP documents are native already; apply them as they are.
            continue;
        }
        match render_policy(p, mode) {
            Ok(r) => out.rendered.push(r),
            Err(reasons) => out.not_rendered.push(NotRendered {
                policy: p.name.clone(),
                file: format!("{}:{}", p.file.display(), p.line),
                reasons,
            }),
        }
    }
    out
}

/// The GatePolicy document `p` was loaded from, as JSON.
fn source_document(p: &Policy) -> Result<Json, String> {
    let text = std::fs::read_to_string(&p.file)
        .map_err(|e| format!("cannot read {}: {e}", p.file.display()))?;
    for doc in split_documents(&p.file, &text) {
        let Ok(value) = doc.decode::<Json>() else {
            continue;
        };
        if value["kind"] == "GatePolicy" && value["metadata"]["name"] == p.name.as_str() {
            return Ok(value);
        }
    }
    Err(format!(
        "the GatePolicy document is no longer in {}",
        p.file.display()
    ))
}

fn render_policy(p: &Policy, mode: Mode) -> Result<NativePolicy, Vec<String>> {
    let doc = source_document(p).map_err(|e| vec![e])?;
    let spec = doc["spec"].as_object().cloned().unwrap_or_default();
    let mut reasons = Vec::new();
    let non_empty = |key: &str| match spec.get(key) {
        Some(Json::Array(a)) => !a.is_empty(),
        Some(Json::Object(m)) => !m.is_empty(),
        Some(Json::Null) | None => false,
        Some(_) => true,
    };
    if non_empty("lookups") {
        reasons.push(
            "it reads cluster state (`lookups`), which a ValidatingAdmissionPolicy cannot fetch"
                .to_string(),
        );
    }
    if non_empty("annotate") || non_empty("mutations") {
        reasons.push(
            "it mutates (`annotate`/`mutations`); a ValidatingAdmissionPolicy only validates"
                .to_string(),
        );
    }
    let main_name = native_name(&p.name);
    let companion_name = break_glass_name(&p.name);
    for name in [&main_name, &companion_name] {
        if name.len() > 253 {
            reasons.push(format!(
                "the native name {name} is longer than 253 characters"
            ));
        }
    }
    let text_of = |v: &Json| v.as_str().unwrap_or_default().to_string();

    // Variables: reserved names renamed, the exemption variable first.
    let variables_in: Vec<(String, String)> = spec
        .get("variables")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .map(|v| (text_of(&v["name"]), text_of(&v["expression"])))
        .collect();
    let taken: BTreeSet<String> = variables_in.iter().map(|(n, _)| n.clone()).collect();
    if taken.contains(EXEMPTION_VARIABLE) {
        reasons.push(format!(
            "it has a variable named {EXEMPTION_VARIABLE}, the name the rendering gives the exemptions"
        ));
    }
    let mut renames: Vec<(String, String)> = Vec::new();
    for (name, _) in &variables_in {
        if !crate::policy::is_cel_identifier(name) {
            let mut new = format!("{name}_");
            while taken.contains(&new) || renames.iter().any(|(_, n)| n == &new) {
                new.push('_');
            }
            renames.push((name.clone(), new));
        }
    }
    let rewrite = |expr: &str| -> String {
        let mut e = expr.to_string();
        for (from, to) in &renames {
            e = rename_variable_references(&e, from, to);
        }
        e
    };

    let exemptions: Vec<(String, String)> = spec
        .get("exemptions")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .map(|v| (text_of(&v["name"]), text_of(&v["expression"])))
        .collect();
    let exempt = !exemptions.is_empty();
    let mut variables = Vec::new();
    if exempt {
        // The first exemption that holds, as the gate reports it.
        let mut expr = "''".to_string();
        for (name, e) in exemptions.iter().rev() {
            expr = format!("({}) ? {} : {expr}", e.trim(), cel_string(name));
        }
        variables.push(json!({"name": EXEMPTION_VARIABLE, "expression": expr}));
    }
    for (name, e) in &variables_in {
        let new = renames
            .iter()
            .find(|(from, _)| from == name)
            .map(|(_, to)| to.clone())
            .unwrap_or_else(|| name.clone());
        variables.push(json!({"name": new, "expression": rewrite(e)}));
    }
    let exempt_ref = format!("variables.{EXEMPTION_VARIABLE}");

    // Validations: `exempt || expression`, an explicit reason, and the gate's
    // message where kube-apiserver would quote the (changed) expression.
    let mut validations = Vec::new();
    let mut companion_validations = Vec::new();
    for (i, v) in spec
        .get("validations")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        let original = text_of(&v["expression"]);
        let renamed = rewrite(&original);
        let expression = if exempt {
            format!("{exempt_ref} != '' || ({})", renamed.trim())
        } else {
            renamed.clone()
        };
        let mut out = Map::new();
        out.insert("expression".into(), json!(expression));
        let message = v.get("message").and_then(Json::as_str).map(str::to_string);
        let message_expression = v
            .get("messageExpression")
            .and_then(Json::as_str)
            .map(&rewrite);
        // Without a usable message kube-apiserver says `failed expression: <expression>`;
        // the gate quotes the expression as written, so the rendering must too.
        let message = match message {
            Some(m) if !m.trim().is_empty() => Some(m),
            _ if expression.trim() == original.trim() => None,
            _ if original.trim().contains('\n') => {
                reasons.push(format!(
                    "spec.validations[{i}] has no message and a multi-line expression; kube-apiserver would quote the rewritten expression (add a message)"
                ));
                None
            }
            _ => Some(format!("failed expression: {}", original.trim())),
        };
        if let Some(m) = &message {
            out.insert("message".into(), json!(m));
        }
        if let Some(m) = &message_expression {
            out.insert("messageExpression".into(), json!(m));
        }
        out.insert(
            "reason".into(),
            v.get("reason").cloned().unwrap_or(json!("Forbidden")),
        );
        validations.push(Json::Object(out));

        if exempt {
            // Fails exactly where the policy's validation would have and an
            // exemption let the request through; its message is the gate's
            // `[break-glass]` warning.
            let fallback = message
                .clone()
                .unwrap_or_else(|| format!("failed expression: {}", original.trim()));
            let text = match &message_expression {
                Some(m) => format!("({m})"),
                None => cel_string(&fallback),
            };
            let prefix = format!("[break-glass] {}: bypassed by ", p.name);
            companion_validations.push(json!({
                "expression": format!("{exempt_ref} == '' || ({})", renamed.trim()),
                "messageExpression": format!(
                    "{} + request.userInfo.username + \" through exemption '\" + {exempt_ref} + \"': \" + {text}",
                    cel_string(&prefix)
                ),
                "message": format!("{prefix}a member of an exempted group: {}", single_line(&fallback)),
            }));
        }
    }

    let mut audit_annotations: Vec<Json> = spec
        .get("auditAnnotations")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .map(|a| json!({"key": a["key"], "valueExpression": rewrite(&text_of(&a["valueExpression"]))}))
        .collect();
    if exempt {
        // `''` and not `null`: kube-apiserver's type check refuses `string : null`
        // here, and a blank value writes no annotation (in both engines).
        audit_annotations.push(json!({
            "key": break_glass_key(&p.name),
            "valueExpression": format!(
                "{exempt_ref} != '' ? 'request by ' + request.userInfo.username + \" passed through exemption '\" + {exempt_ref} + \"' of {}\" : ''",
                p.name
            ),
        }));
    }

    if !reasons.is_empty() {
        return Err(reasons);
    }

    let failure_policy = spec.get("failurePolicy").cloned().unwrap_or(json!("Fail"));
    let actions = validation_actions(p, mode);
    let metadata = |name: &str, component: &str| {
        json!({
            "name": name,
            "labels": {
                "app.kubernetes.io/name": "safety-gate",
                "app.kubernetes.io/component": component,
            },
            "annotations": {"safety-gate.dev/policy": p.name},
        })
    };
    let mut policy_spec = Map::new();
    policy_spec.insert("failurePolicy".into(), failure_policy);
    for key in ["matchConstraints", "matchConditions"] {
        if let Some(v) = spec.get(key) {
            policy_spec.insert(key.into(), v.clone());
        }
    }
    let companion_base = policy_spec.clone();
    if !variables.is_empty() {
        policy_spec.insert("variables".into(), Json::Array(variables.clone()));
    }
    policy_spec.insert("validations".into(), Json::Array(validations));
    if !audit_annotations.is_empty() {
        policy_spec.insert("auditAnnotations".into(), Json::Array(audit_annotations));
    }
    let binding = |name: &str, component: &str, actions: Vec<&str>| {
        json!({
            "apiVersion": VAP_API_VERSION,
            "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": metadata(name, component),
            "spec": {"policyName": name, "validationActions": actions},
        })
    };
    let mut objects = vec![
        json!({
            "apiVersion": VAP_API_VERSION,
            "kind": "ValidatingAdmissionPolicy",
            "metadata": metadata(&main_name, "native-policy"),
            "spec": Json::Object(policy_spec),
        }),
        binding(&main_name, "native-policy", actions.clone()),
    ];
    if exempt {
        let mut companion = companion_base;
        // A record, never a denial: it fails open.
        companion.insert("failurePolicy".into(), json!("Ignore"));
        companion.insert("variables".into(), Json::Array(variables));
        companion.insert("validations".into(), Json::Array(companion_validations));
        objects.push(json!({
            "apiVersion": VAP_API_VERSION,
            "kind": "ValidatingAdmissionPolicy",
            "metadata": metadata(&companion_name, "native-break-glass"),
            "spec": Json::Object(companion),
        }));
        objects.push(binding(
            &companion_name,
            "native-break-glass",
            vec!["Warn", "Audit"],
        ));
    }
    let mut yaml = format!(
        "# Rendered by `safety-gate manifests --native` from GatePolicy {} ({}).\n\
         # Do not edit: change the policy and render again. validationActions: {}{}.\n",
        p.name,
        p.file.display(),
        actions.join(", "),
        if mode == Mode::DryRun {
            " (--mode dry-run)"
        } else {
            ""
        },
    );
    if !renames.is_empty() {
        let list: Vec<String> = renames.iter().map(|(a, b)| format!("{a} -> {b}")).collect();
        yaml.push_str(&format!(
            "# Variables renamed (kube-apiserver reserves their names): {}.\n",
            list.join(", ")
        ));
    }
    for o in &objects {
        yaml.push_str("---\n");
        match serde_saphyr::to_string(o) {
            Ok(text) => yaml.push_str(&text),
            Err(e) => return Err(vec![format!("cannot write YAML: {e}")]),
        }
    }
    Ok(NativePolicy {
        policy: p.name.clone(),
        file_name: format!("{}.yaml", p.name),
        objects,
        yaml,
    })
}

/// `validationActions` for a GatePolicy under the gate's global mode: audit
/// mode turns a denial into a warning plus a record, as the gate does.
fn validation_actions(p: &Policy, mode: Mode) -> Vec<&'static str> {
    let a = p.actions;
    let mut out = Vec::new();
    if a.deny && mode == Mode::Enforce {
        out.push("Deny");
    }
    if a.warn || (a.deny && mode == Mode::DryRun) {
        out.push("Warn");
    }
    if a.audit || (a.deny && mode == Mode::DryRun) {
        out.push("Audit");
    }
    out
}

/// The audit annotation key of a policy's break-glass record: unique per
/// policy (the gate refuses one key in two policies), a qualified name ≤ 63.
pub fn break_glass_key(policy: &str) -> String {
    let key = format!("{policy}-break-glass");
    if key.len() <= 63 && !key.contains('.') {
        return key;
    }
    // FNV-1a: stable across builds and platforms.
    let mut h: u64 = 0xcbf29ce484222325;
    for b in policy.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("break-glass-{h:016x}")
}

/// A CEL string literal (double-quoted; JSON escapes are CEL escapes).
fn cel_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_string())
}

fn single_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Renames `variables.<from>` (also `variables.?<from>`, whitespace and
/// comments allowed around the dot) to `variables.<to>` in a CEL expression,
/// leaving string and bytes literals (raw, triple-quoted), comments and
/// other identifiers alone. `variables` must be a top-level identifier (not
/// the field of something else, as in `x.variables.namespace`).
pub fn rename_variable_references(expr: &str, from: &str, to: &str) -> String {
    // Everything looked at is ASCII (names, dots, quotes, comment slashes), so
    // the text is scanned as bytes and copied in slices between renamed names.
    let bytes = expr.as_bytes();
    let mut out = String::with_capacity(expr.len());
    let mut copied_to = 0;
    let mut i = 0;
    // The last significant (non-space, non-comment) byte seen.
    let mut last_significant: Option<u8> = None;
    let is_ident = |b: u8| b == b'_' || b.is_ascii_alphanumeric();
    // Skips whitespace and `//` comments from `j`; returns the next index.
    let skip_space = |mut j: usize| -> usize {
        loop {
            while j < bytes.len() && bytes[j].is_ascii_whitespace() {
                j += 1;
            }
            if bytes.get(j) == Some(&b'/') && bytes.get(j + 1) == Some(&b'/') {
                while j < bytes.len() && bytes[j] != b'\n' {
                    j += 1;
                }
                continue;
            }
            return j;
        }
    };
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'/' && bytes.get(i + 1) == Some(&b'/') {
            i = skip_space(i);
            continue;
        }
        // String and bytes literals; their `r`/`b` prefixes were read as a name.
        if b == b'\'' || b == b'"' {
            i = string_literal_end(bytes, i);
            last_significant = Some(b);
            continue;
        }
        if b == b'_' || b.is_ascii_alphabetic() {
            let start = i;
            while i < bytes.len() && is_ident(bytes[i]) {
                i += 1;
            }
            let selected = last_significant == Some(b'.');
            last_significant = Some(b'x');
            if &expr[start..i] != "variables" || selected {
                continue;
            }
            // `variables` [space] `.` [`?`] [space] <name>
            let dot = skip_space(i);
            if bytes.get(dot) != Some(&b'.') {
                continue;
            }
            let mut name_at = dot + 1;
            if bytes.get(name_at) == Some(&b'?') {
                name_at += 1;
            }
            name_at = skip_space(name_at);
            let mut end = name_at;
            while end < bytes.len() && is_ident(bytes[end]) {
                end += 1;
            }
            if &expr[name_at..end] == from {
                out.push_str(&expr[copied_to..name_at]);
                out.push_str(to);
                copied_to = end;
                i = end;
            }
            continue;
        }
        if !b.is_ascii_whitespace() {
            last_significant = Some(b);
        }
        i += 1;
    }
    out.push_str(&expr[copied_to..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_only_variable_references() {
        let r = |e: &str| rename_variable_references(e, "namespace", "namespace_");
        assert_eq!(r("variables.namespace"), "variables.namespace_");
        assert_eq!(
            r("variables.namespace + variables.namespaced"),
            "variables.namespace_ + variables.namespaced"
        );
        assert_eq!(r("variables . namespace"), "variables . namespace_");
        assert_eq!(r("variables.?namespace"), "variables.?namespace_");
        assert_eq!(
            r("variables.\n  // a comment\n  namespace"),
            "variables.\n  // a comment\n  namespace_"
        );
        // Not a variable reference.
        assert_eq!(
            r("object.variables.namespace"),
            "object.variables.namespace"
        );
        assert_eq!(r("object.namespace"), "object.namespace");
        assert_eq!(r("namespace"), "namespace");
        assert_eq!(r("myvariables.namespace"), "myvariables.namespace");
        // Literals and comments stay as written.
        for lit in [
            "'variables.namespace'",
            "\"variables.namespace\"",
            "r'variables.namespace'",
            "b\"variables.namespace\"",
            "'''variables.namespace'''",
            "'it\\'s variables.namespace'",
            "\"\"\"a \"variables.namespace\" b\"\"\"",
            "r'\\' + 'variables.namespace'",
            "br'\\' + 'variables.namespace'",
            "'grüße variables.namespace ✓'",
        ] {
            assert_eq!(r(lit), lit, "{lit}");
            let e = format!("{lit} + variables.namespace");
            assert_eq!(r(&e), format!("{lit} + variables.namespace_"), "{e}");
        }
        assert_eq!(
            r("// variables.namespace\nvariables.namespace"),
            "// variables.namespace\nvariables.namespace_"
        );
        assert_eq!(
            r("[variables.namespace].exists(x, x == variables.namespace)"),
            "[variables.namespace_].exists(x, x == variables.namespace_)"
        );
    }

    #[test]
    fn break_glass_keys_are_qualified_names() {
        assert_eq!(
            break_glass_key("protect-namespaces"),
            "protect-namespaces-break-glass"
        );
        let long = "a".repeat(80);
        let k = break_glass_key(&long);
        assert!(k.len() <= 63 && k.starts_with("break-glass-"));
        assert_ne!(k, break_glass_key(&"b".repeat(80)));
    }
}
