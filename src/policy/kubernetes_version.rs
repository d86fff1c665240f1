//! The Kubernetes release whose CEL environment policies are checked against.
//!
//! kube-apiserver checks a *new* or changed policy expression with the CEL
//! environment of its compatibility version, one minor release below its own
//! (kube-apiserver 1.37 accepts what 1.36 can run, so that a rollback never
//! meets an expression it cannot compile). A library Kubernetes introduced "in
//! 1.34" is therefore usable in new policies from kube-apiserver 1.35 on. The
//! gate loads every policy as a new expression: with `--kubernetes-version 1.N`
//! it accepts exactly the functions, call styles and macros that kube-apiserver
//! 1.N accepts (`k8s.io/apiserver/pkg/cel/environment/base.go`; checked against
//! that code's own declarations by `tests/differential_environment.rs`).

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};

/// The first release in which ValidatingAdmissionPolicy is GA.
const OLDEST_MINOR: u32 = 30;
/// The release the gate is built and tested against (`e2e/go.mod`).
const PINNED_MINOR: u32 = 37;

/// A Kubernetes release `1.MINOR` between 1.30 and the pinned release.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KubernetesVersion {
    minor: u32,
}

impl KubernetesVersion {
    /// The release this build is tested against: the default.
    pub const PINNED: KubernetesVersion = KubernetesVersion {
        minor: PINNED_MINOR,
    };

    /// `1.minor`, if the gate knows that release.
    pub fn new(minor: u32) -> Option<Self> {
        (OLDEST_MINOR..=PINNED_MINOR)
            .contains(&minor)
            .then_some(KubernetesVersion { minor })
    }

    /// The minor release number (37 for 1.37).
    pub fn minor(self) -> u32 {
        self.minor
    }

    /// The minor version of the CEL environment kube-apiserver of this release
    /// checks new expressions with (its compatibility version).
    pub fn compatibility_minor(self) -> u32 {
        self.minor - 1
    }
}

impl Default for KubernetesVersion {
    fn default() -> Self {
        Self::PINNED
    }
}

impl fmt::Display for KubernetesVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "1.{}", self.minor)
    }
}

/// Why a `--kubernetes-version` value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    #[error("'{0}' is not a Kubernetes release: write it as 1.MINOR (for example 1.33)")]
    Syntax(String),
    #[error(
        "Kubernetes {0} is not supported: ValidatingAdmissionPolicy is GA from 1.{OLDEST_MINOR}, \
         and this build knows releases up to 1.{PINNED_MINOR}"
    )]
    OutOfRange(String),
}

impl FromStr for KubernetesVersion {
    type Err = VersionError;

    /// Accepts `1.33`, `v1.33` and `1.33.2` (the patch release does not change
    /// the CEL environment).
    fn from_str(s: &str) -> Result<Self, VersionError> {
        let trimmed = s.trim();
        let bare = trimmed.strip_prefix('v').unwrap_or(trimmed);
        let mut parts = bare.split('.');
        let (Some(major), Some(minor)) = (parts.next(), parts.next()) else {
            return Err(VersionError::Syntax(s.to_string()));
        };
        let patch_ok = match parts.next() {
            None => true,
            Some(p) => !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()),
        };
        let number = |t: &str| {
            (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
                .then(|| t.parse::<u32>().ok())
                .flatten()
        };
        match (number(major), number(minor), patch_ok, parts.next()) {
            (Some(1), Some(minor), true, None) => KubernetesVersion::new(minor)
                .ok_or_else(|| VersionError::OutOfRange(format!("1.{minor}"))),
            (Some(_), Some(_), true, None) => Err(VersionError::OutOfRange(bare.to_string())),
            _ => Err(VersionError::Syntax(s.to_string())),
        }
    }
}

static SELECTED: AtomicU32 = AtomicU32::new(PINNED_MINOR);

/// Selects the release every later policy load is checked against. Called once
/// by the command line at start-up (`--kubernetes-version`); the default is
/// [`KubernetesVersion::PINNED`].
pub fn select(version: KubernetesVersion) {
    SELECTED.store(version.minor, Ordering::Relaxed);
}

/// The release policies are checked against.
pub fn selected() -> KubernetesVersion {
    KubernetesVersion::new(SELECTED.load(Ordering::Relaxed)).unwrap_or_default()
}

/// How Kubernetes declares a function: `x.f()`, `f(x)` or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallStyle {
    Member,
    Global,
    Both,
}

impl CallStyle {
    fn allows(self, member_call: bool) -> bool {
        match self {
            CallStyle::Both => true,
            CallStyle::Member => member_call,
            CallStyle::Global => !member_call,
        }
    }
}

/// One function of Kubernetes' CEL environment that the gate can evaluate.
#[derive(Debug, Clone, Copy)]
pub struct Declared {
    /// As the parser names it: `lists.range` for namespaced functions.
    pub name: &'static str,
    pub style: CallStyle,
    /// The first CEL compatibility version that declares it (Kubernetes' own
    /// `IntroducedVersion`); usable in new policies one release later.
    pub since_compatibility: u32,
    /// The library that brings it, for messages.
    pub library: &'static str,
}

/// Libraries that are in every supported release's environment for new
/// expressions (compatibility version 1.29 and later).
const BASE: u32 = 29;

/// Two-variable comprehensions (`all(i, v, …)`, `transformMap`, …): cel-go's
/// TwoVarComprehensions library.
pub const TWO_VARIABLE_COMPREHENSIONS: Declared = Declared {
    name: "two-variable comprehensions",
    style: CallStyle::Member,
    since_compatibility: 32,
    library: "the two-variable comprehension macros",
};

/// The `sortBy` macro of cel-go's lists extension v3.
pub const SORT_BY: Declared = Declared {
    name: "sortBy",
    style: CallStyle::Member,
    since_compatibility: 34,
    library: "the lists extension",
};

macro_rules! declared {
    ($($name:literal $style:ident $since:expr, $library:literal;)*) => {
        &[$(Declared { name: $name, style: CallStyle::$style, since_compatibility: $since, library: $library },)*]
    };
}

/// Every function a policy may call, with its call style and the release that
/// brought it. Read off `e2e/oracle` (kube-apiserver 1.37.2's base environment
/// at compatibility versions 1.29–1.36); `tests/differential_environment.rs`
/// fails when a row disagrees with it.
pub const FUNCTIONS: &[Declared] = declared![
    // cel-go standard library
    "contains" Member BASE, "the standard library";
    "size" Both BASE, "the standard library";
    "startsWith" Member BASE, "the standard library";
    "endsWith" Member BASE, "the standard library";
    "matches" Both BASE, "the standard library";
    "string" Global BASE, "the standard library";
    "bytes" Global BASE, "the standard library";
    "double" Global BASE, "the standard library";
    "int" Global BASE, "the standard library";
    "uint" Global BASE, "the standard library";
    "dyn" Global BASE, "the standard library";
    "type" Global BASE, "the standard library";
    "bool" Global BASE, "the standard library";
    "duration" Global BASE, "the standard library";
    "timestamp" Global BASE, "the standard library";
    "getFullYear" Member BASE, "the standard library";
    "getMonth" Member BASE, "the standard library";
    "getDayOfYear" Member BASE, "the standard library";
    "getDayOfMonth" Member BASE, "the standard library";
    "getDate" Member BASE, "the standard library";
    "getDayOfWeek" Member BASE, "the standard library";
    "getHours" Member BASE, "the standard library";
    "getMinutes" Member BASE, "the standard library";
    "getSeconds" Member BASE, "the standard library";
    "getMilliseconds" Member BASE, "the standard library";
    // optional types
    "optional.none" Global BASE, "optional types";
    "optional.of" Global BASE, "optional types";
    "optional.ofNonZeroValue" Global BASE, "optional types";
    "value" Member BASE, "optional types";
    "hasValue" Member BASE, "optional types";
    "or" Member BASE, "optional types";
    "orValue" Member BASE, "optional types";
    "optional.unwrap" Global BASE, "optional types";
    "unwrapOpt" Member BASE, "optional types";
    // cel-go strings extension (v2)
    "charAt" Member BASE, "the strings extension";
    "format" Member BASE, "the strings extension";
    "indexOf" Member BASE, "the strings extension and the Kubernetes list library";
    "lastIndexOf" Member BASE, "the strings extension and the Kubernetes list library";
    "join" Member BASE, "the strings extension";
    "lowerAscii" Member BASE, "the strings extension";
    "upperAscii" Member BASE, "the strings extension";
    "replace" Member BASE, "the strings extension";
    "split" Member BASE, "the strings extension";
    "substring" Member BASE, "the strings extension";
    "trim" Member BASE, "the strings extension";
    "strings.quote" Global BASE, "the strings extension";
    // cel-go sets extension
    "sets.contains" Global BASE, "the sets extension";
    "sets.equivalent" Global BASE, "the sets extension";
    "sets.intersects" Global BASE, "the sets extension";
    // Kubernetes list library
    "isSorted" Member BASE, "the Kubernetes list library";
    "sum" Member BASE, "the Kubernetes list library";
    "max" Member BASE, "the Kubernetes list library";
    "min" Member BASE, "the Kubernetes list library";
    "first" Member BASE, "the Kubernetes list library";
    "last" Member BASE, "the Kubernetes list library";
    // Kubernetes regex, URL and quantity libraries
    "find" Member BASE, "the Kubernetes regex library";
    "findAll" Member BASE, "the Kubernetes regex library";
    "url" Global BASE, "the Kubernetes URL library";
    "isURL" Global BASE, "the Kubernetes URL library";
    "getScheme" Member BASE, "the Kubernetes URL library";
    "getHost" Member BASE, "the Kubernetes URL library";
    "getHostname" Member BASE, "the Kubernetes URL library";
    "getPort" Member BASE, "the Kubernetes URL library";
    "getEscapedPath" Member BASE, "the Kubernetes URL library";
    "getQuery" Member BASE, "the Kubernetes URL library";
    "quantity" Global BASE, "the Kubernetes quantity library";
    "isQuantity" Global BASE, "the Kubernetes quantity library";
    "sign" Global BASE, "the Kubernetes quantity library";
    "isInteger" Member BASE, "the Kubernetes quantity library";
    "asInteger" Member BASE, "the Kubernetes quantity library";
    "asApproximateFloat" Member BASE, "the Kubernetes quantity library";
    "add" Member BASE, "the Kubernetes quantity library";
    "sub" Member BASE, "the Kubernetes quantity library";
    "isGreaterThan" Member BASE, "the Kubernetes quantity and semver libraries";
    "isLessThan" Member BASE, "the Kubernetes quantity and semver libraries";
    "compareTo" Member BASE, "the Kubernetes quantity and semver libraries";
    // Kubernetes IP and CIDR libraries
    "ip" Both 30, "the Kubernetes IP library";
    "isIP" Global 30, "the Kubernetes IP library";
    "ip.isCanonical" Global 30, "the Kubernetes IP library";
    "family" Member 30, "the Kubernetes IP library";
    "isUnspecified" Member 30, "the Kubernetes IP library";
    "isLoopback" Member 30, "the Kubernetes IP library";
    "isLinkLocalMulticast" Member 30, "the Kubernetes IP library";
    "isLinkLocalUnicast" Member 30, "the Kubernetes IP library";
    "isGlobalUnicast" Member 30, "the Kubernetes IP library";
    "cidr" Global 30, "the Kubernetes CIDR library";
    "isCIDR" Global 30, "the Kubernetes CIDR library";
    "containsIP" Member 30, "the Kubernetes CIDR library";
    "containsCIDR" Member 30, "the Kubernetes CIDR library";
    "masked" Member 30, "the Kubernetes CIDR library";
    "prefixLength" Member 30, "the Kubernetes CIDR library";
    // Kubernetes format library
    "format.named" Global 31, "the Kubernetes format library";
    "format.dns1123Label" Global 31, "the Kubernetes format library";
    "format.dns1123LabelPrefix" Global 31, "the Kubernetes format library";
    "format.dns1123Subdomain" Global 31, "the Kubernetes format library";
    "format.dns1123SubdomainPrefix" Global 31, "the Kubernetes format library";
    "format.dns1035Label" Global 31, "the Kubernetes format library";
    "format.dns1035LabelPrefix" Global 31, "the Kubernetes format library";
    "format.qualifiedName" Global 31, "the Kubernetes format library";
    "format.labelValue" Global 31, "the Kubernetes format library";
    "format.uri" Global 31, "the Kubernetes format library";
    "format.uuid" Global 31, "the Kubernetes format library";
    "format.byte" Global 31, "the Kubernetes format library";
    "format.date" Global 31, "the Kubernetes format library";
    "format.datetime" Global 31, "the Kubernetes format library";
    "validate" Member 31, "the Kubernetes format library";
    // Kubernetes semver library
    "semver" Global 33, "the Kubernetes semver library";
    "isSemver" Global 33, "the Kubernetes semver library";
    "major" Member 33, "the Kubernetes semver library";
    "minor" Member 33, "the Kubernetes semver library";
    "patch" Member 33, "the Kubernetes semver library";
    // cel-go lists extension (v3)
    "lists.range" Global 34, "the lists extension";
    "slice" Member 34, "the lists extension";
    "flatten" Member 34, "the lists extension";
    "distinct" Member 34, "the lists extension";
    "reverse" Member 34, "the lists extension";
    "sort" Member 34, "the lists extension";
    // Kubernetes authz library (`authorizer`, see authz.rs)
    "path" Member BASE, "the Kubernetes authz library";
    "group" Member BASE, "the Kubernetes authz library";
    "serviceAccount" Member BASE, "the Kubernetes authz library";
    "resource" Member BASE, "the Kubernetes authz library";
    "subresource" Member BASE, "the Kubernetes authz library";
    "namespace" Member BASE, "the Kubernetes authz library";
    "name" Member BASE, "the Kubernetes authz library";
    "check" Member BASE, "the Kubernetes authz library";
    "allowed" Member BASE, "the Kubernetes authz library";
    "reason" Member BASE, "the Kubernetes authz library";
    "errored" Member BASE, "the Kubernetes authz library";
    "error" Member BASE, "the Kubernetes authz library";
    "fieldSelector" Member 31, "the Kubernetes authz selectors library";
    "labelSelector" Member 31, "the Kubernetes authz selectors library";
];

/// The row for a function name, if the gate knows it.
pub fn declared(name: &str) -> Option<&'static Declared> {
    FUNCTIONS.iter().find(|d| d.name == name)
}

/// Whether kube-apiserver of `version` accepts a call of `name` in a new
/// expression, written as a member call (`x.name()`) or a global one. The
/// error says why not, in terms of the release (names the gate does not know
/// at all are the caller's "undeclared reference").
pub fn check_call(name: &str, member_call: bool, version: KubernetesVersion) -> Result<(), String> {
    let Some(d) = declared(name) else {
        return Ok(());
    };
    check_declared(d, member_call, version)
}

/// As [`check_call`], for a known row (also [`TWO_VARIABLE_COMPREHENSIONS`]).
pub fn check_declared(
    d: &Declared,
    member_call: bool,
    version: KubernetesVersion,
) -> Result<(), String> {
    if d.since_compatibility > version.compatibility_minor() {
        return Err(format!(
            "{what} is not available in Kubernetes {version}: {library} is accepted in new \
             policies from Kubernetes 1.{from} (the release is set by --kubernetes-version)",
            what = if d.name.contains(' ') {
                d.name.to_string()
            } else {
                format!("function '{}'", d.name)
            },
            library = d.library,
            from = d.since_compatibility + 1,
        ));
    }
    if !d.style.allows(member_call) {
        let short = d.name.rsplit('.').next().unwrap_or(d.name);
        return Err(match d.style {
            CallStyle::Member => format!(
                "Kubernetes declares '{}' only as a method: write x.{short}(…), not {short}(x)",
                d.name
            ),
            _ => format!(
                "Kubernetes declares '{}' only as a function: write {}(x), not x.{short}()",
                d.name, d.name
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> KubernetesVersion {
        s.parse().expect("a known release")
    }

    #[test]
    fn releases_parse_as_kubectl_prints_them() {
        assert_eq!(v("1.33").minor(), 33);
        assert_eq!(v("v1.33.2").minor(), 33);
        assert_eq!(v(" 1.37 "), KubernetesVersion::PINNED);
        assert!(matches!(
            "1.29".parse::<KubernetesVersion>(),
            Err(VersionError::OutOfRange(_))
        ));
        assert!(matches!(
            "1.38".parse::<KubernetesVersion>(),
            Err(VersionError::OutOfRange(_))
        ));
        assert!(matches!(
            "2.1".parse::<KubernetesVersion>(),
            Err(VersionError::OutOfRange(_))
        ));
        for bad in ["", "1", "1.x", "latest", "1.33.", "1.33.2.1", "1.+3"] {
            assert!(
                matches!(
                    bad.parse::<KubernetesVersion>(),
                    Err(VersionError::Syntax(_))
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn a_library_is_usable_in_new_policies_one_release_after_kubernetes_introduced_it() {
        // Kubernetes introduced semver in 1.33: kube-apiserver 1.33 still refuses it
        // in a new policy, 1.34 accepts it.
        let e = check_call("semver", false, v("1.33")).expect_err("not yet");
        assert!(e.contains("Kubernetes 1.34"), "{e}");
        assert!(check_call("semver", false, v("1.34")).is_ok());
        assert!(check_call("ip", false, v("1.30")).is_err());
        assert!(check_call("ip", false, v("1.31")).is_ok());
        assert!(check_call("lists.range", false, v("1.34")).is_err());
        assert!(check_call("lists.range", false, v("1.35")).is_ok());
        assert!(check_declared(&TWO_VARIABLE_COMPREHENSIONS, true, v("1.32")).is_err());
        assert!(check_declared(&TWO_VARIABLE_COMPREHENSIONS, true, v("1.33")).is_ok());
    }

    #[test]
    fn call_style_follows_kubernetes_declarations() {
        let pinned = KubernetesVersion::PINNED;
        // `sign` is declared as sign(quantity), though Kubernetes' docs write q.sign().
        let e = check_call("sign", true, pinned).expect_err("member call");
        assert!(e.contains("write sign(x)"), "{e}");
        assert!(check_call("sign", false, pinned).is_ok());
        let e = check_call("max", false, pinned).expect_err("global call");
        assert!(e.contains("write x.max(…)"), "{e}");
        assert!(
            check_call("size", true, pinned).is_ok() && check_call("size", false, pinned).is_ok()
        );
    }

    #[test]
    fn names_are_unique() {
        for (i, d) in FUNCTIONS.iter().enumerate() {
            assert!(
                FUNCTIONS[..i].iter().all(|e| e.name != d.name),
                "{} twice",
                d.name
            );
        }
    }
}
