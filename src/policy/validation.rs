//! The object validation kube-apiserver applies to `admissionregistration.k8s.io/v1`
//! ValidatingAdmissionPolicy and ValidatingAdmissionPolicyBinding documents before it
//! stores them (Kubernetes v1.37.2, `pkg/apis/admissionregistration/validation`), for
//! everything that is not CEL compilation (that is `compile.rs`).
//!
//! The rules run on the document after kube-apiserver's defaulting (`failurePolicy:
//! Fail`, `matchPolicy: Equivalent`, empty selectors, `scope: "*"`), so an absent field
//! that has a default is never an error here. Errors use kube-apiserver's field-error
//! vocabulary ("Required value", "Invalid value", "Unsupported value", "Duplicate value",
//! "Forbidden", "Too many") so a user can match them to what `kubectl apply` would say.

use super::model::{LabelSelector, MatchResources, ResourceRule};
use std::collections::HashSet;

/// One problem with one field, in kube-apiserver's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

pub fn required(field: impl Into<String>, detail: &str) -> FieldError {
    FieldError {
        field: field.into(),
        message: if detail.is_empty() {
            "Required value".to_string()
        } else {
            format!("Required value: {detail}")
        },
    }
}

pub fn invalid(field: impl Into<String>, value: &str, detail: &str) -> FieldError {
    FieldError {
        field: field.into(),
        message: format!("Invalid value: {value:?}: {detail}"),
    }
}

pub fn not_supported(field: impl Into<String>, value: &str, supported: &[&str]) -> FieldError {
    let list: Vec<String> = supported.iter().map(|s| format!("{s:?}")).collect();
    FieldError {
        field: field.into(),
        message: format!(
            "Unsupported value: {value:?}: supported values: {}",
            list.join(", ")
        ),
    }
}

pub fn duplicate(field: impl Into<String>, value: &str) -> FieldError {
    FieldError {
        field: field.into(),
        message: format!("Duplicate value: {value:?}"),
    }
}

pub fn forbidden(field: impl Into<String>, detail: &str) -> FieldError {
    FieldError {
        field: field.into(),
        message: format!("Forbidden: {detail}"),
    }
}

/// The supported values of `validations[].reason` on a ValidatingAdmissionPolicy.
/// `Unauthorized` maps to 401 in the admission plugin, but kube-apiserver refuses to
/// store a policy that names it.
pub const VAP_REASONS: &[&str] = &["Forbidden", "Invalid", "RequestEntityTooLarge"];

/// At most this many `auditAnnotations` per policy.
pub const MAX_AUDIT_ANNOTATIONS: usize = 20;
/// `auditAnnotations[].valueExpression` (trimmed) may not be longer than this.
pub const MAX_VALUE_EXPRESSION_BYTES: usize = 5 * 1024;
/// At most this many `matchConditions`.
pub const MAX_MATCH_CONDITIONS: usize = 64;

const DNS1123_SUBDOMAIN_MAX: usize = 253;
const NAME_PART_MAX: usize = 63;
const LABEL_VALUE_MAX: usize = 63;
const OPERATIONS: &[&str] = &["*", "CONNECT", "CREATE", "DELETE", "UPDATE"];
const SCOPES: &[&str] = &["*", "Cluster", "Namespaced"];
const MATCH_POLICIES: &[&str] = &["Equivalent", "Exact"];
const VALIDATION_ACTIONS: &[&str] = &["Audit", "Deny", "Warn"];

/// Why `value` is not a DNS-1123 subdomain (Kubernetes object names): at most 253
/// characters, dot-separated labels of `[a-z0-9]` and `-` that start and end with an
/// alphanumeric. Unlike a DNS label there is no per-label length limit.
pub fn dns1123_subdomain_errors(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX {
        errors.push(format!(
            "must be no more than {DNS1123_SUBDOMAIN_MAX} characters"
        ));
    }
    let label_ok = |label: &str| {
        let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
        !label.is_empty()
            && label.chars().all(|c| alnum(c) || c == '-')
            && label.starts_with(alnum)
            && label.ends_with(alnum)
    };
    if !value.split('.').all(label_ok) {
        errors.push(
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character".to_string(),
        );
    }
    errors
}

/// Why `value` is not a qualified name (label keys, matchCondition names, audit
/// annotation keys): an optional DNS-1123 subdomain prefix and `/`, then a name part of
/// 1 to 63 characters of `[A-Za-z0-9._-]` that starts and ends with an alphanumeric.
pub fn qualified_name_errors(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errors.push("prefix part must be non-empty".to_string());
            } else {
                errors.extend(
                    dns1123_subdomain_errors(prefix)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            *name
        }
        _ => {
            return vec![
                "a qualified name must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character, with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')".to_string(),
            ];
        }
    };
    if name.is_empty() {
        errors.push("name part must be non-empty".to_string());
    } else if name.len() > NAME_PART_MAX {
        errors.push(format!(
            "name part must be no more than {NAME_PART_MAX} characters"
        ));
    }
    if !is_label_token(name) {
        errors.push(
            "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character".to_string(),
        );
    }
    errors
}

/// Why `value` is not a label value: empty, or at most 63 characters of the name-part
/// alphabet.
pub fn label_value_errors(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > LABEL_VALUE_MAX {
        errors.push(format!("must be no more than {LABEL_VALUE_MAX} characters"));
    }
    if !value.is_empty() && !is_label_token(value) {
        errors.push(
            "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character".to_string(),
        );
    }
    errors
}

fn is_label_token(s: &str) -> bool {
    let alnum = |c: char| c.is_ascii_alphanumeric();
    !s.is_empty()
        && s.chars().all(|c| alnum(c) || matches!(c, '-' | '_' | '.'))
        && s.starts_with(alnum)
        && s.ends_with(alnum)
}

/// Resource names in rules end up in URL paths: not `.` or `..`, no `/` or `%`.
fn path_segment_errors(value: &str) -> Vec<String> {
    if value == "." || value == ".." {
        return vec![format!("may not be '{value}'")];
    }
    ['/', '%']
        .iter()
        .filter(|c| value.contains(**c))
        .map(|c| format!("may not contain '{c}'"))
        .collect()
}

/// A CEL identifier that is not a reserved word (variable names).
pub fn is_cel_identifier(name: &str) -> bool {
    const RESERVED: &[&str] = &[
        "true",
        "false",
        "null",
        "in",
        "as",
        "break",
        "const",
        "continue",
        "else",
        "for",
        "function",
        "if",
        "import",
        "let",
        "loop",
        "package",
        "namespace",
        "return",
        "var",
        "void",
        "while",
    ];
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c == '_' || c.is_ascii_alphabetic())
        && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
        && !RESERVED.contains(&name)
}

/// `metadata.name` (and a binding's `spec.policyName`): a DNS-1123 subdomain.
pub fn object_name(field: &str, name: &str, out: &mut Vec<FieldError>) {
    if name.is_empty() {
        out.push(required(field, "name or generateName is required"));
        return;
    }
    for m in dns1123_subdomain_errors(name) {
        out.push(invalid(field, name, &m));
    }
}

/// `metadata.labels` and `metadata.annotations` of a stored object: label keys
/// and annotation keys are qualified names (annotation keys compared lower-cased),
/// label values are label values, and annotations total at most 256 KiB.
pub fn labels_and_annotations(
    labels: &std::collections::BTreeMap<String, String>,
    annotations: &std::collections::BTreeMap<String, String>,
    out: &mut Vec<FieldError>,
) {
    const ANNOTATIONS_MAX_BYTES: usize = 256 * 1024;
    for (key, value) in labels {
        for m in qualified_name_errors(key) {
            out.push(invalid("metadata.labels", key, &m));
        }
        for m in label_value_errors(value) {
            out.push(invalid("metadata.labels", value, &m));
        }
    }
    let mut total = 0;
    for (key, value) in annotations {
        for m in qualified_name_errors(&key.to_lowercase()) {
            out.push(invalid("metadata.annotations", key, &m));
        }
        total += key.len() + value.len();
    }
    if total > ANNOTATIONS_MAX_BYTES {
        out.push(FieldError {
            field: "metadata.annotations".to_string(),
            message: format!("Too long: may not be more than {ANNOTATIONS_MAX_BYTES} bytes"),
        });
    }
}

/// `MatchResources` of a policy (`spec.matchConstraints`) or a binding
/// (`spec.matchResources`). Only a policy must have resource rules: they give the
/// expressions their types.
pub fn match_resources(m: &MatchResources, path: &str, out: &mut Vec<FieldError>) {
    if let Some(policy) = &m.match_policy
        && !MATCH_POLICIES.contains(&policy.as_str())
    {
        out.push(not_supported(
            format!("{path}.matchPolicy"),
            policy,
            MATCH_POLICIES,
        ));
    }
    if let Some(s) = &m.namespace_selector {
        label_selector(s, &format!("{path}.namespaceSelector"), out);
    }
    if let Some(s) = &m.object_selector {
        label_selector(s, &format!("{path}.objectSelector"), out);
    }
    for (i, r) in m.resource_rules.iter().enumerate() {
        named_rule(r, &format!("{path}.resourceRules[{i}]"), out);
    }
    for (i, r) in m.exclude_resource_rules.iter().enumerate() {
        named_rule(r, &format!("{path}.excludeResourceRules[{i}]"), out);
    }
}

pub fn label_selector(s: &LabelSelector, path: &str, out: &mut Vec<FieldError>) {
    for (key, value) in &s.match_labels {
        for m in qualified_name_errors(key) {
            out.push(invalid(format!("{path}.matchLabels"), key, &m));
        }
        for m in label_value_errors(value) {
            out.push(invalid(format!("{path}.matchLabels"), value, &m));
        }
    }
    for (i, r) in s.match_expressions.iter().enumerate() {
        let at = format!("{path}.matchExpressions[{i}]");
        match r.operator.as_str() {
            "In" | "NotIn" if r.values.is_empty() => out.push(required(
                format!("{at}.values"),
                "must be specified when `operator` is 'In' or 'NotIn'",
            )),
            "Exists" | "DoesNotExist" if !r.values.is_empty() => out.push(forbidden(
                format!("{at}.values"),
                "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => out.push(invalid(
                format!("{at}.operator"),
                other,
                "not a valid selector operator",
            )),
        }
        for m in qualified_name_errors(&r.key) {
            out.push(invalid(format!("{at}.key"), &r.key, &m));
        }
        for (j, v) in r.values.iter().enumerate() {
            for m in label_value_errors(v) {
                out.push(invalid(format!("{at}.values[{j}]"), v, &m));
            }
        }
    }
}

fn named_rule(r: &ResourceRule, path: &str, out: &mut Vec<FieldError>) {
    let mut names = HashSet::new();
    for (i, name) in r.resource_names.iter().enumerate() {
        let field = format!("{path}.resourceNames[{i}]");
        for m in path_segment_errors(name) {
            out.push(invalid(field.clone(), name, &m));
        }
        if !names.insert(name) {
            out.push(duplicate(field, name));
        }
    }
    if r.operations.is_empty() {
        out.push(required(format!("{path}.operations"), ""));
    }
    if r.operations.len() > 1 && r.operations.iter().any(|o| o == "*") {
        out.push(invalid(
            format!("{path}.operations"),
            &r.operations.join(","),
            "if '*' is present, must not specify other operations",
        ));
    }
    for (i, op) in r.operations.iter().enumerate() {
        if !OPERATIONS.contains(&op.as_str()) {
            out.push(not_supported(
                format!("{path}.operations[{i}]"),
                op,
                OPERATIONS,
            ));
        }
    }
    if r.api_groups.is_empty() {
        out.push(required(format!("{path}.apiGroups"), ""));
    }
    if r.api_groups.len() > 1 && r.api_groups.iter().any(|g| g == "*") {
        out.push(invalid(
            format!("{path}.apiGroups"),
            &r.api_groups.join(","),
            "if '*' is present, must not specify other API groups",
        ));
    }
    if r.api_versions.is_empty() {
        out.push(required(format!("{path}.apiVersions"), ""));
    }
    if r.api_versions.len() > 1 && r.api_versions.iter().any(|v| v == "*") {
        out.push(invalid(
            format!("{path}.apiVersions"),
            &r.api_versions.join(","),
            "if '*' is present, must not specify other API versions",
        ));
    }
    for (i, v) in r.api_versions.iter().enumerate() {
        if v.is_empty() {
            out.push(required(format!("{path}.apiVersions[{i}]"), ""));
        }
    }
    resources(&r.resources, &format!("{path}.resources"), out);
    if let Some(scope) = &r.scope
        && !SCOPES.contains(&scope.as_str())
    {
        out.push(not_supported(format!("{path}.scope"), scope, SCOPES));
    }
}

/// `resources` of a rule, with kube-apiserver's rules for subresource wildcards.
fn resources(list: &[String], path: &str, out: &mut Vec<FieldError>) {
    if list.is_empty() {
        out.push(required(path, ""));
    }
    let mut with_any_sub: HashSet<&str> = HashSet::new(); // "x/*"
    let mut sub_of_any: HashSet<&str> = HashSet::new(); // "*/x"
    let mut double_wildcard = false;
    let mut single_wildcard = false;
    let mut plain = false;
    for (i, entry) in list.iter().enumerate() {
        if entry.is_empty() {
            out.push(required(format!("{path}[{i}]"), ""));
            continue;
        }
        double_wildcard |= entry == "*/*";
        single_wildcard |= entry == "*";
        let Some((res, sub)) = entry.split_once('/') else {
            // As in kube-apiserver, only the last entry without a subresource counts.
            plain = entry != "*";
            continue;
        };
        if with_any_sub.contains(res) {
            out.push(invalid(
                format!("{path}[{i}]"),
                entry,
                &format!("if '{res}/*' is present, must not specify {entry}"),
            ));
        }
        if sub_of_any.contains(sub) {
            out.push(invalid(
                format!("{path}[{i}]"),
                entry,
                &format!("if '*/{sub}' is present, must not specify {entry}"),
            ));
        }
        if sub == "*" {
            with_any_sub.insert(res);
        }
        if res == "*" {
            sub_of_any.insert(sub);
        }
    }
    if list.len() > 1 && double_wildcard {
        out.push(invalid(
            path,
            &list.join(","),
            "if '*/*' is present, must not specify other resources",
        ));
    }
    if single_wildcard && plain {
        out.push(invalid(
            path,
            &list.join(","),
            "if '*' is present, must not specify other resources without subresources",
        ));
    }
}

/// A binding's `validationActions`: a non-empty set of Deny, Warn and Audit, never
/// both Deny and Warn.
pub fn validation_actions(actions: &[String], path: &str, out: &mut Vec<FieldError>) {
    let mut seen = HashSet::new();
    for (i, a) in actions.iter().enumerate() {
        if !VALIDATION_ACTIONS.contains(&a.as_str()) {
            out.push(not_supported(format!("{path}[{i}]"), a, VALIDATION_ACTIONS));
        }
        if !seen.insert(a.as_str()) {
            out.push(duplicate(format!("{path}[{i}]"), a));
        }
    }
    if seen.contains("Deny") && seen.contains("Warn") {
        out.push(invalid(
            path,
            &actions.join(","),
            "must not contain both Deny and Warn (repeating the same validation failure information in the API response and headers serves no purpose)",
        ));
    }
    if seen.is_empty() {
        out.push(required(path, "at least one validation action is required"));
    }
}

/// `message` of a validation, checked after trimming as kube-apiserver does: a
/// message that is only whitespace, or has a line break inside, is refused. A message
/// is never required, even for a multi-line expression.
pub fn validation_message(message: &str, path: &str, out: &mut Vec<FieldError>) {
    let trimmed = message.trim();
    if !message.is_empty() && trimmed.is_empty() {
        out.push(invalid(path, message, "must be non-empty if specified"));
    } else if trimmed.contains(['\n', '\r']) {
        out.push(invalid(path, message, "must not contain line breaks"));
    }
}

const DNS1035_LABEL_MAX: usize = 63;
const PARAM_NOT_FOUND_ACTIONS: &[&str] = &["Deny", "Allow"];

/// Why `value` is not a DNS-1035 label (versions, lower-cased kinds): at most 63
/// characters of `[a-z0-9-]`, starting with a letter and ending with an alphanumeric.
fn dns1035_label_errors(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > DNS1035_LABEL_MAX {
        errors.push(format!(
            "must be no more than {DNS1035_LABEL_MAX} characters"
        ));
    }
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    let ok = value.starts_with(|c: char| c.is_ascii_lowercase())
        && value.ends_with(alnum)
        && value.chars().all(|c| alnum(c) || c == '-');
    if !ok {
        errors.push("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')".to_string());
    }
    errors
}

/// Why `value` is not a DNS-1123 label (namespace names): at most 63 characters of
/// `[a-z0-9-]` that start and end with an alphanumeric.
pub fn dns1123_label_errors(value: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if value.len() > 63 {
        errors.push("must be no more than 63 characters".to_string());
    }
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    if !(value.starts_with(alnum)
        && value.ends_with(alnum)
        && value.chars().all(|c| alnum(c) || c == '-'))
    {
        errors.push("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character".to_string());
    }
    errors
}

/// kube-apiserver's check of a policy's `spec.paramKind`.
pub fn param_kind(p: &super::model::ParamKind, path: &str, out: &mut Vec<FieldError>) {
    let field = format!("{path}.apiVersion");
    // kube-apiserver's parseGroupVersion: "" and "/" parse as empty; more than one
    // slash does not parse.
    let parsed = match p.api_version.as_str() {
        "" | "/" => Some(("", "")),
        v => match v.matches('/').count() {
            0 => Some(("", v)),
            1 => v.split_once('/'),
            _ => None,
        },
    };
    if p.api_version.is_empty() {
        out.push(required(field, ""));
    } else if let Some((group, version)) = parsed {
        if !group.is_empty() {
            let errors = dns1123_subdomain_errors(group);
            if !errors.is_empty() {
                out.push(invalid(field.clone(), group, &errors.join(",")));
            }
        }
        if version.is_empty() {
            out.push(invalid(field, &p.api_version, "version must be specified"));
        } else {
            let errors = dns1035_label_errors(version);
            if !errors.is_empty() {
                out.push(invalid(field, version, &errors.join(",")));
            }
        }
    } else {
        out.push(invalid(
            field,
            &p.api_version,
            &format!("unexpected GroupVersion string: {}", p.api_version),
        ));
    }
    let field = format!("{path}.kind");
    if p.kind.is_empty() {
        out.push(required(field, ""));
    } else {
        let errors = dns1035_label_errors(&p.kind.to_lowercase());
        if !errors.is_empty() {
            out.push(invalid(
                field,
                &p.kind,
                &format!(
                    "may have mixed case, but should otherwise match: {}",
                    errors.join(",")
                ),
            ));
        }
    }
}

/// kube-apiserver's check of a binding's `spec.paramRef`.
pub fn param_ref(p: &super::model::ParamRef, path: &str, out: &mut Vec<FieldError>) {
    if !p.name.is_empty() {
        for m in path_segment_errors(&p.name) {
            out.push(invalid(format!("{path}.name"), &p.name, &m));
        }
        if p.selector.is_some() {
            out.push(forbidden(
                format!("{path}.name"),
                "name and selector are mutually exclusive",
            ));
        }
    }
    if let Some(s) = &p.selector {
        label_selector(s, &format!("{path}.selector"), out);
        if !p.name.is_empty() {
            out.push(forbidden(
                format!("{path}.selector"),
                "name and selector are mutually exclusive",
            ));
        }
    }
    if p.name.is_empty() && p.selector.is_none() {
        out.push(required(path, "one of name or selector must be specified"));
    }
    match p.parameter_not_found_action.as_deref() {
        None | Some("") => out.push(required(format!("{path}.parameterNotFoundAction"), "")),
        Some(a) if !PARAM_NOT_FOUND_ACTIONS.contains(&a) => out.push(not_supported(
            format!("{path}.parameterNotFoundAction"),
            a,
            PARAM_NOT_FOUND_ACTIONS,
        )),
        Some(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(ops: &[&str], resources: &[&str]) -> ResourceRule {
        ResourceRule {
            operations: ops.iter().map(|s| s.to_string()).collect(),
            api_groups: vec!["".into()],
            api_versions: vec!["v1".into()],
            resources: resources.iter().map(|s| s.to_string()).collect(),
            resource_names: vec![],
            scope: None,
        }
    }

    fn rule_errors(r: ResourceRule) -> Vec<FieldError> {
        let mut out = Vec::new();
        named_rule(&r, "r", &mut out);
        out
    }

    #[test]
    fn names_are_dns_subdomains_without_a_label_limit() {
        let long_label = "a".repeat(100);
        assert!(dns1123_subdomain_errors(&long_label).is_empty());
        assert!(dns1123_subdomain_errors(&format!("{long_label}.example.com")).is_empty());
        assert!(!dns1123_subdomain_errors(&"a".repeat(254)).is_empty());
        for bad in ["", "Upper", "-a", "a-", "a..b", "a_b", ".a"] {
            assert!(!dns1123_subdomain_errors(bad).is_empty(), "{bad}");
        }
    }

    #[test]
    fn qualified_names_and_label_values() {
        assert!(qualified_name_errors("app.kubernetes.io/name").is_empty());
        assert!(qualified_name_errors("My_Name-1.x").is_empty());
        assert!(!qualified_name_errors("a/b/c").is_empty());
        assert!(!qualified_name_errors("/x").is_empty());
        assert!(!qualified_name_errors(&"x".repeat(64)).is_empty());
        assert!(!qualified_name_errors("Bad_Prefix/x").is_empty());
        assert!(label_value_errors("").is_empty());
        assert!(!label_value_errors("-x").is_empty());
    }

    #[test]
    fn rules_follow_kube_apiserver() {
        assert!(rule_errors(rule(&["CREATE"], &["pods", "pods/status"])).is_empty());
        assert!(rule_errors(rule(&["*"], &["*", "*/scale"])).is_empty());
        let e = rule_errors(rule(&[], &["pods"]));
        assert_eq!(e, vec![required("r.operations", "")]);
        assert!(
            rule_errors(rule(&["*", "CREATE"], &["pods"]))[0]
                .message
                .contains("if '*' is present")
        );
        assert!(
            rule_errors(rule(&["PATCH"], &["pods"]))[0]
                .message
                .starts_with("Unsupported value: \"PATCH\"")
        );
        assert_eq!(rule_errors(rule(&["*"], &["*/*", "pods"])).len(), 1);
        assert_eq!(rule_errors(rule(&["*"], &["*", "pods"])).len(), 1);
        assert_eq!(rule_errors(rule(&["*"], &["pods/*", "pods/log"])).len(), 1);
        let mut named = rule(&["*"], &["configmaps"]);
        named.resource_names = vec!["a".into(), "a".into(), "b/c".into()];
        assert_eq!(rule_errors(named).len(), 2);
    }

    #[test]
    fn validation_actions_are_a_set_without_deny_and_warn() {
        let check = |a: &[&str]| {
            let mut out = Vec::new();
            let a: Vec<String> = a.iter().map(|s| s.to_string()).collect();
            validation_actions(&a, "spec.validationActions", &mut out);
            out
        };
        assert!(check(&["Deny", "Audit"]).is_empty());
        assert!(check(&["Warn"]).is_empty());
        assert_eq!(
            check(&[]),
            vec![required(
                "spec.validationActions",
                "at least one validation action is required"
            )]
        );
        assert_eq!(check(&["Deny", "Warn"]).len(), 1);
        assert_eq!(check(&["Audit", "Audit"]).len(), 1);
        assert_eq!(check(&["Block"]).len(), 1);
    }

    #[test]
    fn messages_are_trimmed_and_never_required() {
        let check = |m: &str| {
            let mut out = Vec::new();
            validation_message(m, "m", &mut out);
            out
        };
        assert!(check("").is_empty());
        assert!(check("a message ending in a newline\n").is_empty());
        assert!(check("  padded  ").is_empty());
        assert_eq!(check("   ").len(), 1);
        assert!(check("two\nlines")[0].message.contains("line breaks"));
        assert!(check("two\rlines")[0].message.contains("line breaks"));
    }

    #[test]
    fn labels_and_annotations_of_stored_objects() {
        let map = |pairs: &[(&str, &str)]| -> std::collections::BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let check = |labels, annotations| {
            let mut out = Vec::new();
            labels_and_annotations(&labels, &annotations, &mut out);
            out
        };
        let ok = check(
            map(&[("app.kubernetes.io/name", "web")]),
            map(&[("Example.com/Note", "any text at all\n")]),
        );
        assert!(ok.is_empty(), "{ok:?}");
        assert_eq!(check(map(&[("a", "has space")]), map(&[])).len(), 1);
        assert_eq!(check(map(&[]), map(&[("a/b/c", "")])).len(), 1);
        let big = "x".repeat(300 * 1024);
        assert_eq!(check(map(&[]), map(&[("big", big.as_str())])).len(), 1);
    }

    #[test]
    fn cel_identifiers() {
        assert!(is_cel_identifier("_x1"));
        assert!(!is_cel_identifier("1x"));
        assert!(!is_cel_identifier("in"));
        assert!(!is_cel_identifier("a-b"));
        assert!(!is_cel_identifier(""));
    }
}
