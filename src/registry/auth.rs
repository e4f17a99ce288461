//! Registry credentials: docker config files and pull secrets, matched to images the way the
//! kubelet matches them.
//!
//! A key is a registry host, optionally with a port, a path prefix and `*` wildcards standing for
//! whole host labels (`*.registry.example`). Every key that matches an image applies, most
//! specific first, so a repository-level credential wins over a registry-wide one. Docker Hub's
//! many spellings (`https://index.docker.io/v1/`, `docker.io`, `registry-1.docker.io`) are one.
//!
//! Secrets never leave this module in printable form: `Debug` and `Display` redact them, and
//! errors about a malformed config name the entry and the field, never a value.
//!
//! A credential from a keyring remembers the key it was configured under, and
//! [`Credential::applies_to`] tells the client whether a request may carry it: credentials for
//! a registry are not sent to its mirror (or anywhere else) unless configured for the mirror too.

use std::fmt;

use base64::Engine as _;

/// One set of credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    pub username: String,
    pub password: String,
    /// An OAuth2 refresh token (docker's `identitytoken`), used in the token flow instead of
    /// the password.
    pub identity_token: Option<String>,
    /// A bearer token to send as it is (docker's `registrytoken`).
    pub registry_token: Option<String>,
    /// The keyring key this credential was configured under; `None` for one made directly,
    /// which applies to any registry.
    issued_for: Option<Key>,
}

impl Credential {
    pub fn basic(username: &str, password: &str) -> Self {
        Credential {
            username: username.to_string(),
            password: password.to_string(),
            identity_token: None,
            registry_token: None,
            issued_for: None,
        }
    }

    /// Whether a request to `registry/repository` may carry this credential: only where the
    /// key it was configured under matches, as when it was looked up.
    pub fn applies_to(&self, registry: &str, repository: &str) -> bool {
        self.issued_for
            .as_ref()
            .is_none_or(|key| key_matches(key, &parse_key(&format!("{registry}/{repository}"))))
    }

    /// A stable fingerprint (never the secret itself) to keep tokens of different credentials
    /// apart in caches.
    pub fn fingerprint(&self) -> String {
        let d = crate::digest::Digest::sha256_of(
            format!(
                "{}\0{}\0{}\0{}",
                self.username,
                self.password,
                self.identity_token.as_deref().unwrap_or(""),
                self.registry_token.as_deref().unwrap_or("")
            )
            .as_bytes(),
        );
        d.hex()[..16].to_string()
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// A docker config file (`config.json`, `.dockerconfigjson`) or legacy `.dockercfg` that cannot
/// be read. The messages name the entry and the field, never a value (values are credentials).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("not a docker config: invalid JSON at line {line}, column {column}")]
    Json { line: usize, column: usize },
    #[error("not a docker config: {0}")]
    Shape(&'static str),
    #[error("entry {key:?}: {problem}")]
    BadEntry { key: String, problem: String },
    #[error("entry {key:?}: the auth field is not base64 of user:password")]
    BadAuth { key: String },
}

#[derive(Default)]
struct AuthEntry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
    identitytoken: Option<String>,
    registrytoken: Option<String>,
}

impl AuthEntry {
    /// Reads an entry field by field, so that no error can quote a value (serde's would).
    fn from_json(key: &str, value: serde_json::Value) -> Result<Self, ConfigError> {
        let serde_json::Value::Object(mut fields) = value else {
            return Err(ConfigError::BadEntry {
                key: key.to_string(),
                problem: format!("expected an object, found {}", json_kind(&value)),
            });
        };
        let mut field = |name: &str| match fields.remove(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(ConfigError::BadEntry {
                key: key.to_string(),
                problem: format!(
                    "field {name:?} should be a string, found {}",
                    json_kind(&other)
                ),
            }),
        };
        Ok(AuthEntry {
            auth: field("auth")?,
            username: field("username")?,
            password: field("password")?,
            identitytoken: field("identitytoken")?,
            registrytoken: field("registrytoken")?,
        })
    }
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Key {
    host: String,
    port: Option<String>,
    path: String,
}

/// Credentials by registry key.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    entries: Vec<(Key, Credential)>,
}

impl Keyring {
    /// Parses a docker config (`{"auths": {...}}`) or a legacy dockercfg (the map itself).
    pub fn from_docker_config(json: &[u8]) -> Result<Self, ConfigError> {
        let value: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| ConfigError::Json {
                line: e.line(),
                column: e.column(),
            })?;
        // Anything but an object holds no entries (as a legacy dockercfg would not).
        let serde_json::Value::Object(mut top) = value else {
            return Ok(Keyring::default());
        };
        // Sorted by key, whatever order the JSON map keeps: equal-specificity ties are stable.
        let auths: std::collections::BTreeMap<String, AuthEntry> = match top.remove("auths") {
            Some(serde_json::Value::Object(map)) => map
                .into_iter()
                .map(|(k, v)| AuthEntry::from_json(&k, v).map(|e| (k, e)))
                .collect::<Result<_, _>>()?,
            Some(serde_json::Value::Null) => Default::default(),
            Some(_) => return Err(ConfigError::Shape("\"auths\" should be an object")),
            // A legacy dockercfg holds only entries, possibly among unrelated keys.
            None => top
                .into_iter()
                .filter_map(|(k, v)| AuthEntry::from_json(&k, v).ok().map(|e| (k, e)))
                .collect(),
        };
        let mut ring = Keyring::default();
        for (key, entry) in auths {
            let (mut username, mut password) = (
                entry.username.unwrap_or_default(),
                entry.password.unwrap_or_default(),
            );
            if let Some(auth) = entry.auth.filter(|a| !a.is_empty()) {
                let decoded = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| ConfigError::BadAuth { key: key.clone() })?;
                let (u, p) = decoded
                    .split_once(':')
                    .ok_or_else(|| ConfigError::BadAuth { key: key.clone() })?;
                username = u.to_string();
                password = p.to_string();
            }
            let credential = Credential {
                username,
                password,
                identity_token: entry.identitytoken.filter(|t| !t.is_empty()),
                registry_token: entry.registrytoken.filter(|t| !t.is_empty()),
                issued_for: None,
            };
            ring.insert(&key, credential);
        }
        Ok(ring)
    }

    /// Adds a credential under a key (`host[:port][/path]`, with or without a scheme).
    pub fn insert(&mut self, key: &str, mut credential: Credential) {
        let key = parse_key(key);
        credential.issued_for = Some(key.clone());
        self.entries.push((key, credential));
        self.sort();
    }

    /// Appends another keyring's entries after this one's (they are tried later at equal
    /// specificity).
    pub fn extend(&mut self, other: &Keyring) {
        self.entries.extend(other.entries.iter().cloned());
        self.sort();
    }

    /// Most specific first: longer paths, then hosts without wildcards, then longer hosts. The
    /// sort is stable, so earlier entries win ties.
    fn sort(&mut self) {
        self.entries.sort_by(|(a, _), (b, _)| {
            b.path
                .len()
                .cmp(&a.path.len())
                .then_with(|| a.host.contains('*').cmp(&b.host.contains('*')))
                .then_with(|| b.host.len().cmp(&a.host.len()))
        });
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every credential whose key matches `registry/repository`, most specific first.
    pub fn lookup(&self, registry: &str, repository: &str) -> Vec<&Credential> {
        let target = parse_key(&format!("{registry}/{repository}"));
        self.entries
            .iter()
            .filter(|(k, _)| key_matches(k, &target))
            .map(|(_, c)| c)
            .collect()
    }
}

fn parse_key(raw: &str) -> Key {
    let s = raw.trim();
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let (hostport, path) = s.split_once('/').unwrap_or((s, ""));
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
            (h, Some(p.to_string()))
        }
        _ => (hostport, None),
    };
    let mut host = host.to_ascii_lowercase();
    let mut path = path.trim_end_matches('/').to_string();
    if matches!(
        host.as_str(),
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" | "docker.io"
    ) {
        host = "docker.io".into();
        // `https://index.docker.io/v1/` names the whole of Docker Hub.
        if path == "v1" || path == "v2" {
            path.clear();
        }
    }
    Key { host, port, path }
}

fn key_matches(key: &Key, target: &Key) -> bool {
    if key.port != target.port {
        return false;
    }
    let kl: Vec<&str> = key.host.split('.').collect();
    let tl: Vec<&str> = target.host.split('.').collect();
    if kl.len() != tl.len() || !kl.iter().zip(&tl).all(|(k, t)| label_matches(k, t)) {
        return false;
    }
    key.path.is_empty()
        || target.path == key.path
        || (target.path.starts_with(&key.path)
            && target.path.as_bytes().get(key.path.len()) == Some(&b'/'))
}

/// One host label against a pattern label with `*` wildcards (`*`, `reg-*`).
fn label_matches(pattern: &str, label: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == label,
        Some((prefix, rest)) => {
            label.starts_with(prefix)
                && (0..=label.len() - prefix.len())
                    .any(|i| label_matches(rest, &label[prefix.len() + i..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(json: &str) -> Keyring {
        Keyring::from_docker_config(json.as_bytes()).unwrap()
    }

    fn users(r: &Keyring, registry: &str, repo: &str) -> Vec<String> {
        r.lookup(registry, repo)
            .into_iter()
            .map(|c| c.username.clone())
            .collect()
    }

    #[test]
    fn reads_auth_fields_and_username_password() {
        let auth = base64::engine::general_purpose::STANDARD.encode("alice:s3cret:with:colons");
        let r = ring(&format!(
            r#"{{"auths": {{"reg.example:5000": {{"auth": "{auth}"}}, "other.example": {{"username": "bob", "password": "pw"}}}}}}"#
        ));
        let c = r.lookup("reg.example:5000", "team/app")[0];
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("alice", "s3cret:with:colons")
        );
        assert_eq!(users(&r, "other.example", "x"), vec!["bob"]);
        assert!(
            r.lookup("reg.example", "team/app").is_empty(),
            "ports must match"
        );
    }

    #[test]
    fn legacy_dockercfg_is_the_map_itself() {
        let r = ring(r#"{"https://index.docker.io/v1/": {"auth": "dTpw"}}"#);
        assert_eq!(users(&r, "docker.io", "library/nginx"), vec!["u"]);
    }

    #[test]
    fn docker_hub_spellings_are_one_registry() {
        let r = ring(
            r#"{"auths": {"https://index.docker.io/v1/": {"username": "hub", "password": "p"}}}"#,
        );
        assert_eq!(users(&r, "docker.io", "library/nginx"), vec!["hub"]);
        assert_eq!(users(&r, "index.docker.io", "library/nginx"), vec!["hub"]);
    }

    #[test]
    fn wildcards_match_whole_labels_and_paths_are_prefixes() {
        let r = ring(
            r#"{"auths": {
                "*.reg.example": {"username": "wild", "password": "p"},
                "eu.reg.example/team": {"username": "team", "password": "p"},
                "eu.reg.example/team/app": {"username": "app", "password": "p"}
            }}"#,
        );
        assert_eq!(
            users(&r, "eu.reg.example", "team/app"),
            vec!["app", "team", "wild"]
        );
        assert_eq!(
            users(&r, "eu.reg.example", "team/other"),
            vec!["team", "wild"]
        );
        assert_eq!(users(&r, "eu.reg.example", "teamx/a"), vec!["wild"]);
        assert!(users(&r, "reg.example", "a").is_empty());
        assert!(users(&r, "a.b.reg.example", "a").is_empty());
    }

    #[test]
    fn secrets_never_print() {
        let c = Credential::basic("alice", "hunter2");
        assert!(!format!("{c:?}").contains("hunter2"));
        assert!(!c.fingerprint().contains("hunter2"));
    }

    #[test]
    fn a_malformed_entry_is_named_and_its_value_never_appears_in_the_error() {
        let secret = "alice:hunter2-very-secret";
        for json in [
            format!(r#"{{"auths": {{"r.example": "{secret}"}}}}"#),
            format!(r#"{{"auths": {{"r.example": {{"password": ["{secret}"]}}}}}}"#),
            format!(r#"{{"auths": {{"r.example": {{"auth": 1, "x": "{secret}"}}}}}}"#),
            format!(r#"{{"auths": "{secret}"}}"#),
            format!(r#"{{"auths": {{"r.example": {{"auth": "{secret}"#),
        ] {
            let e = Keyring::from_docker_config(json.as_bytes()).unwrap_err();
            for text in [e.to_string(), format!("{e:?}")] {
                assert!(!text.contains("hunter2"), "{text}");
            }
        }
        let e = Keyring::from_docker_config(
            format!(r#"{{"auths": {{"r.example": "{secret}"}}}}"#).as_bytes(),
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"entry "r.example": expected an object, found a string"#
        );
        let e = Keyring::from_docker_config(
            br#"{"auths": {"r.example": {"username": "u", "password": 7}}}"#,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"entry "r.example": field "password" should be a string, found a number"#
        );
    }

    #[test]
    fn a_credential_applies_only_where_its_key_matches() {
        let r = ring(r#"{"auths": {"origin.example/team": {"username": "u", "password": "p"}}}"#);
        let c = r.lookup("origin.example", "team/app")[0];
        assert!(c.applies_to("origin.example", "team/app"));
        assert!(!c.applies_to("mirror.example", "team/app"));
        assert!(!c.applies_to("origin.example", "other/app"));
        assert!(Credential::basic("u", "p").applies_to("anywhere.example", "x"));
    }

    #[test]
    fn invalid_auth_field_is_a_clear_error() {
        let e = Keyring::from_docker_config(br#"{"auths": {"r.example": {"auth": "!!"}}}"#)
            .unwrap_err();
        assert!(e.to_string().contains("r.example"), "{e}");
    }
}
