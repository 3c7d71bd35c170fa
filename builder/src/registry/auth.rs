//! Registry credentials and authentication challenges.
//!
//! Credentials come from `kiln login` (`$KILN_HOME/auth.json`) or, failing
//! that, Docker's `config.json` (`$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`); both use Docker's format: an `auths` map from
//! registry host to `{"auth": base64("user:password")}`. A 401 answer's
//! `WWW-Authenticate` header says which scheme the registry wants: HTTP
//! basic, or a bearer token from the token service it names.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// A user name and password (or identity token).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Credentials({}, ***)", self.username)
    }
}

impl Credentials {
    /// The `Authorization` header value for HTTP basic auth.
    pub fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

/// Why credentials cannot be read or saved.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A credentials file cannot be read or written.
    #[error("{path}: {error}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// A credentials file is not valid.
    #[error("{path}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct AuthEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    auth: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    password: Option<String>,
    #[serde(flatten)]
    other: BTreeMap<String, serde_json::Value>,
}

fn read_auth_file(path: &Path) -> Result<Option<AuthFile>, AuthError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| AuthError::Format {
                path: path.into(),
                reason: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(AuthError::Io {
            path: path.into(),
            error,
        }),
    }
}

fn entry_credentials(path: &Path, e: &AuthEntry) -> Result<Option<Credentials>, AuthError> {
    if let (Some(u), Some(p)) = (&e.username, &e.password) {
        return Ok(Some(Credentials {
            username: u.clone(),
            password: p.clone(),
        }));
    }
    let Some(auth) = e.auth.as_deref().filter(|a| !a.is_empty()) else {
        return Ok(None);
    };
    let bad = |reason: &str| AuthError::Format {
        path: path.into(),
        reason: reason.into(),
    };
    let raw = base64::engine::general_purpose::STANDARD
        .decode(auth)
        .map_err(|_| bad("an \"auth\" value is not base64"))?;
    let text = String::from_utf8(raw).map_err(|_| bad("an \"auth\" value is not UTF-8"))?;
    let (u, p) = text
        .split_once(':')
        .ok_or_else(|| bad("an \"auth\" value is not user:password"))?;
    Ok(Some(Credentials {
        username: u.into(),
        password: p.into(),
    }))
}

/// Where `kiln login` keeps credentials.
pub fn kiln_auth_file(kiln_home: &Path) -> PathBuf {
    kiln_home.join("auth.json")
}

/// Docker's config.json: `$DOCKER_CONFIG/config.json`, else
/// `~/.docker/config.json`.
pub fn docker_config_file() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|v| !v.is_empty()) {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker/config.json"))
}

/// The credentials for `registry` (`host[:port]`) from `files`, first
/// match wins. Docker Hub's entry may be written as its index URL.
///
/// # Errors
/// [`AuthError`] when a file exists but cannot be read or parsed.
pub fn lookup(registry: &str, files: &[PathBuf]) -> Result<Option<Credentials>, AuthError> {
    for path in files {
        let Some(file) = read_auth_file(path)? else {
            continue;
        };
        for (key, entry) in &file.auths {
            let host = key
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .split('/')
                .next()
                .unwrap_or_default();
            let hub = |h: &str| super::client::DOCKER_HUB.contains(&h);
            if host == registry || (hub(host) && hub(registry)) {
                if let Some(c) = entry_credentials(path, entry)? {
                    return Ok(Some(c));
                }
            }
        }
    }
    Ok(None)
}

/// Saves `creds` for `registry` in `path` (mode 0600, written through a
/// temporary file), keeping the file's other entries.
///
/// # Errors
/// [`AuthError`].
pub fn save(path: &Path, registry: &str, creds: &Credentials) -> Result<(), AuthError> {
    update(path, |file| {
        let raw = format!("{}:{}", creds.username, creds.password);
        file.auths.insert(
            registry.into(),
            AuthEntry {
                auth: Some(base64::engine::general_purpose::STANDARD.encode(raw)),
                ..AuthEntry::default()
            },
        );
    })
}

/// Removes `registry`'s credentials from `path`; whether there were any.
///
/// # Errors
/// [`AuthError`].
pub fn forget(path: &Path, registry: &str) -> Result<bool, AuthError> {
    let mut removed = false;
    update(path, |file| removed = file.auths.remove(registry).is_some())?;
    Ok(removed)
}

fn update(path: &Path, change: impl FnOnce(&mut AuthFile)) -> Result<(), AuthError> {
    let io = |error| AuthError::Io {
        path: path.into(),
        error,
    };
    let mut file = read_auth_file(path)?.unwrap_or_default();
    change(&mut file);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    // Owner-only from the start (the temporary file too): it holds
    // passwords.
    kiln_vmm::write_durably(
        path,
        &serde_json::to_vec_pretty(&file).unwrap_or_default(),
        0o600,
    )
    .map_err(io)
}

/// What a `WWW-Authenticate` header asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Challenge {
    /// HTTP basic auth.
    Basic,
    /// A bearer token from `realm` (with its `service` and `scope`).
    Bearer {
        /// The token service's URL.
        realm: String,
        /// The `service` parameter, if given.
        service: Option<String>,
        /// The `scope` parameter, if given.
        scope: Option<String>,
    },
}

impl Challenge {
    /// Parses a `WWW-Authenticate` value (`Bearer realm="…",service="…"`).
    pub fn parse(header: &str) -> Option<Self> {
        let header = header.trim();
        let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => Some(Self::Basic),
            "bearer" => {
                let params = parse_params(rest);
                Some(Self::Bearer {
                    realm: params.get("realm")?.clone(),
                    service: params.get("service").cloned(),
                    scope: params.get("scope").cloned(),
                })
            }
            _ => None,
        }
    }
}

/// `key="value", key=value` pairs (quoted values may hold commas).
fn parse_params(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let Some((key, after)) = rest.split_once('=') else {
            break;
        };
        let key = key
            .trim()
            .trim_start_matches(',')
            .trim()
            .to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            value.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => value.push(c),
                }
            }
            (value, &quoted[end.min(quoted.len())..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_owned(), &after[end..])
        };
        out.insert(key, value);
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges() {
        assert_eq!(
            Challenge::parse("Basic realm=\"Registry\""),
            Some(Challenge::Basic)
        );
        assert_eq!(
            Challenge::parse(
                "Bearer realm=\"https://auth.example.com/token\",service=\"registry.example.com\",scope=\"repository:a/b:pull,push\""
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example.com/token".into(),
                service: Some("registry.example.com".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(
            Challenge::parse("bearer realm=http://x/t"),
            Some(Challenge::Bearer {
                realm: "http://x/t".into(),
                service: None,
                scope: None
            })
        );
        assert_eq!(Challenge::parse("Negotiate abc"), None);
        assert_eq!(Challenge::parse("Bearer service=\"x\""), None);
    }

    #[test]
    fn credentials_round_trip_through_docker_format_files() {
        let dir = std::env::temp_dir().join(format!("kiln-auth-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let kiln = dir.join("auth.json");
        let docker = dir.join("config.json");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            &docker,
            r#"{"auths": {"https://registry.example.com/v1/": {"auth": "ZG9jazpod2Fs"},
                          "https://index.docker.io/v1/": {"username": "hub", "password": "pw"}},
                "credsStore": "desktop"}"#,
        )
        .unwrap();
        let creds = Credentials {
            username: "kiln".into(),
            password: "p:ss".into(),
        };
        save(&kiln, "localhost:5000", &creds).unwrap();
        let files = [kiln.clone(), docker.clone()];
        assert_eq!(lookup("localhost:5000", &files).unwrap(), Some(creds));
        let dock = lookup("registry.example.com", &files).unwrap().unwrap();
        assert_eq!(
            (dock.username.as_str(), dock.password.as_str()),
            ("dock", "hwal")
        );
        assert_eq!(lookup("other:1", &files).unwrap(), None);
        // Docker Hub's entry answers for docker.io.
        assert_eq!(
            lookup("docker.io", &files).unwrap().unwrap().username,
            "hub"
        );
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&kiln).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(forget(&kiln, "localhost:5000").unwrap());
        assert_eq!(lookup("localhost:5000", &files).unwrap(), None);
        std::fs::write(&docker, "{not json").unwrap();
        assert!(lookup("x", &[docker]).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
