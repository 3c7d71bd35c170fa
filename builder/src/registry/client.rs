//! The HTTP side of the OCI distribution spec for one repository: blob
//! HEAD, cross-repository mount, monolithic and chunked uploads, manifest
//! PUT and GET, blob GET; with basic or bearer authentication answered
//! when the registry asks (a 401 and its `WWW-Authenticate` challenge).

use std::io::Read;
use std::sync::Mutex;
use std::time::Duration;

use ureq::http::{Response, StatusCode};
use ureq::Body;

use super::auth::{Challenge, Credentials};
use super::{RegistryError, RegistryOptions};
use crate::oci::reference::Reference;
use crate::oci::{BlobRef, MANIFEST_MEDIA_TYPE, MAX_MANIFEST_SIZE};

/// What a request carries.
enum Payload<'a> {
    None,
    Bytes(&'a [u8], &'a str),
}

/// A client for one repository of one registry.
pub struct Client {
    agent: ureq::Agent,
    /// `http://host:port` or `https://host:port`.
    base: String,
    /// The registry host, for messages and credentials.
    pub registry: String,
    /// The repository path.
    pub repository: String,
    credentials: Option<Credentials>,
    /// Whether the registry asked for basic auth (sent on every request
    /// from then on).
    basic: Mutex<bool>,
    /// The bearer token last granted.
    token: Mutex<Option<String>>,
    /// The scopes to ask a token service for.
    scopes: Mutex<Vec<String>>,
}

/// The result of a mount attempt.
pub enum Mount {
    /// The registry linked the blob from the other repository.
    Mounted,
    /// It did not; an upload session was opened at this location instead.
    Upload(String),
}

fn read_limited(resp: &mut Response<Body>, limit: u64) -> Result<Vec<u8>, ureq::Error> {
    let mut out = Vec::new();
    resp.body_mut()
        .with_config()
        .limit(limit)
        .reader()
        .take(limit)
        .read_to_end(&mut out)
        .map_err(ureq::Error::Io)?;
    Ok(out)
}

/// The message of a registry's error body (`{"errors":[{"code","message"}]}`).
fn error_message(resp: &mut Response<Body>) -> String {
    let body = read_limited(resp, 16 * 1024).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let from_json: Vec<String> = v["errors"]
        .as_array()
        .map(|errs| {
            errs.iter()
                .map(|e| {
                    format!(
                        "{} {}",
                        e["code"].as_str().unwrap_or(""),
                        e["message"].as_str().unwrap_or("")
                    )
                    .trim()
                    .to_owned()
                })
                .collect()
        })
        .unwrap_or_default();
    if !from_json.is_empty() {
        return from_json.join("; ");
    }
    let text = String::from_utf8_lossy(&body);
    text.trim().chars().take(200).collect()
}

/// Percent-encodes a query parameter value.
fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn is_loopback(host: &str) -> bool {
    let name = host.rsplit_once(':').map_or(host, |(h, p)| {
        if p.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    name == "localhost" || name.starts_with("127.") || name == "[::1]"
}

/// Docker Hub's names for itself.
pub const DOCKER_HUB: [&str; 3] = ["docker.io", "index.docker.io", "registry-1.docker.io"];

/// Where the API of `registry` is, and the repository path it knows:
/// Docker Hub answers at registry-1.docker.io and keeps single-name
/// repositories under `library/`; every other registry is itself.
pub fn endpoint(registry: &str, repository: &str) -> (String, String) {
    if DOCKER_HUB.contains(&registry) {
        let repository = if repository.contains('/') {
            repository.to_owned()
        } else {
            format!("library/{repository}")
        };
        return ("registry-1.docker.io".into(), repository);
    }
    (registry.into(), repository.into())
}

impl Client {
    /// A client for `reference`'s repository; `push` asks for push rights
    /// when a token service is involved.
    ///
    /// # Errors
    /// [`RegistryError`] when the reference has no registry or the CA file
    /// is unusable.
    pub fn new(
        reference: &Reference,
        opts: &RegistryOptions,
        push: bool,
    ) -> Result<Self, RegistryError> {
        let registry = reference
            .registry
            .clone()
            .ok_or_else(|| RegistryError::NoRegistry(reference.to_string()))?;
        let mut tls = ureq::tls::TlsConfig::builder();
        if let Some(path) = &opts.ca_cert {
            let pem = std::fs::read(path).map_err(|e| RegistryError::CaCert {
                path: path.clone(),
                reason: e.to_string(),
            })?;
            let certs: Vec<_> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect();
            if certs.is_empty() {
                return Err(RegistryError::CaCert {
                    path: path.clone(),
                    reason: "no PEM certificate in the file".into(),
                });
            }
            tls = tls.root_certs(ureq::tls::RootCerts::new_with_certs(&certs));
        }
        let mut config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .tls_config(tls.build())
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_recv_response(Some(Duration::from_secs(120)))
            // A registry that stops sending mid-blob must not hang kiln.
            .timeout_recv_body(Some(Duration::from_secs(600)))
            .timeout_send_body(Some(Duration::from_secs(600)))
            .user_agent(concat!("kiln/", env!("CARGO_PKG_VERSION")));
        if is_loopback(&registry) {
            config = config.proxy(None);
        }
        let scheme = if opts.plain_http { "http" } else { "https" };
        let action = if push { "pull,push" } else { "pull" };
        let (host, repository) = endpoint(&registry, &reference.repository);
        Ok(Self {
            agent: ureq::Agent::new_with_config(config.build()),
            base: format!("{scheme}://{host}"),
            scopes: Mutex::new(vec![format!("repository:{repository}:{action}")]),
            repository,
            credentials: opts.credentials.clone(),
            basic: Mutex::new(false),
            token: Mutex::new(None),
            registry,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}/v2/{}/{path}", self.base, self.repository)
    }

    /// A `Location` header made absolute.
    fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.into()
        } else {
            format!("{}{location}", self.base)
        }
    }

    /// The Authorization header for a request to `url`: only ever to the
    /// registry's own origin (scheme, host and port) — an upload location
    /// or other URL the registry names elsewhere (a storage service) gets
    /// none, as a redirect does not.
    fn authorization_for(&self, url: &str) -> Option<String> {
        if origin(url)? != origin(&self.base)? {
            return None;
        }
        self.authorization()
    }

    fn authorization(&self) -> Option<String> {
        if let Some(t) = self.token.lock().ok().and_then(|t| t.clone()) {
            return Some(format!("Bearer {t}"));
        }
        let basic = self.basic.lock().is_ok_and(|b| *b);
        self.credentials
            .as_ref()
            .filter(|_| basic)
            .map(Credentials::basic_header)
    }

    fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        payload: &Payload<'_>,
    ) -> Result<Response<Body>, RegistryError> {
        let mut builder = ureq::http::Request::builder().method(method).uri(url);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        if let Some(a) = self.authorization_for(url) {
            builder = builder.header("Authorization", a);
        }
        let http = |error: ureq::Error| RegistryError::Http {
            method: method.into(),
            url: url.into(),
            error,
        };
        let invalid = |e: ureq::http::Error| RegistryError::Http {
            method: method.into(),
            url: url.into(),
            error: ureq::Error::Http(e),
        };
        match payload {
            Payload::None => self
                .agent
                .run(builder.body(()).map_err(invalid)?)
                .map_err(http),
            Payload::Bytes(data, content_type) => self
                .agent
                .run(
                    builder
                        .header("Content-Type", *content_type)
                        .body(*data)
                        .map_err(invalid)?,
                )
                .map_err(http),
        }
    }

    /// Sends a request; on a 401, answers the challenge and sends it once
    /// more.
    fn request(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        payload: Payload<'_>,
    ) -> Result<Response<Body>, RegistryError> {
        let resp = self.send(method, url, headers, &payload)?;
        if resp.status() != StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let challenge = resp
            .headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .and_then(Challenge::parse);
        self.authenticate(challenge)?;
        let resp = self.send(method, url, headers, &payload)?;
        if resp.status() == StatusCode::UNAUTHORIZED {
            return Err(RegistryError::Unauthorized {
                registry: self.registry.clone(),
                reason: match &self.credentials {
                    Some(c) => format!(
                        "the registry refused the credentials of user {:?}",
                        c.username
                    ),
                    None => "authentication required: log in with `kiln login`".into(),
                },
            });
        }
        Ok(resp)
    }

    fn authenticate(&self, challenge: Option<Challenge>) -> Result<(), RegistryError> {
        let unauthorized = |reason: String| RegistryError::Unauthorized {
            registry: self.registry.clone(),
            reason,
        };
        match challenge {
            None => Err(unauthorized(
                "the registry answered 401 without a usable WWW-Authenticate challenge".into(),
            )),
            Some(Challenge::Basic) => {
                if self.credentials.is_none() {
                    return Err(unauthorized(
                        "the registry wants a user name and password: `kiln login` first".into(),
                    ));
                }
                if let Ok(mut b) = self.basic.lock() {
                    *b = true;
                }
                Ok(())
            }
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let mut scopes = self.scopes.lock().map(|s| s.clone()).unwrap_or_default();
                if let Some(s) = scope {
                    if !scopes.contains(&s) {
                        scopes.push(s);
                    }
                }
                let mut query = Vec::new();
                if let Some(s) = &service {
                    query.push(format!("service={}", encode(s)));
                }
                query.extend(scopes.iter().map(|s| format!("scope={}", encode(s))));
                let sep = if realm.contains('?') { '&' } else { '?' };
                let url = format!("{realm}{sep}{}", query.join("&"));
                let mut builder = ureq::http::Request::builder().method("GET").uri(&url);
                if let Some(c) = &self.credentials {
                    // The password goes to the token service the registry
                    // names only over TLS — or, when the user chose plain
                    // HTTP for this registry, to the registry's own host.
                    if !self.may_send_password_to(&realm) {
                        return Err(unauthorized(format!(
                            "refusing to send the password of user {:?} to the token service \
                             {realm}: it is not HTTPS{}",
                            c.username,
                            if self.base.starts_with("http://") {
                                " and not on the registry's host"
                            } else {
                                ""
                            }
                        )));
                    }
                    builder = builder.header("Authorization", c.basic_header());
                }
                let request = builder.body(()).map_err(|e| RegistryError::Http {
                    method: "GET".into(),
                    url: url.clone(),
                    error: ureq::Error::Http(e),
                })?;
                let mut resp = self
                    .agent
                    .run(request)
                    .map_err(|error| RegistryError::Http {
                        method: "GET".into(),
                        url: url.clone(),
                        error,
                    })?;
                if !resp.status().is_success() {
                    let msg = error_message(&mut resp);
                    return Err(unauthorized(format!(
                        "the token service {realm} answered {}{}",
                        resp.status(),
                        if msg.is_empty() {
                            String::new()
                        } else {
                            format!(": {msg}")
                        }
                    )));
                }
                let body =
                    read_limited(&mut resp, 64 * 1024).map_err(|error| RegistryError::Http {
                        method: "GET".into(),
                        url: url.clone(),
                        error,
                    })?;
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let token = v["token"]
                    .as_str()
                    .or(v["access_token"].as_str())
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| {
                        unauthorized(format!("the token service {realm} returned no token"))
                    })?;
                if let Ok(mut t) = self.token.lock() {
                    *t = Some(token.to_owned());
                }
                Ok(())
            }
        }
    }

    /// Whether the user's password may go to the token service at `realm`.
    fn may_send_password_to(&self, realm: &str) -> bool {
        match (origin(realm), origin(&self.base)) {
            (Some(("https", _, _)), _) => true,
            (Some((_, host, _)), Some(("http", registry_host, _))) => host == registry_host,
            _ => false,
        }
    }

    fn fail(&self, what: &str, url: &str, mut resp: Response<Body>) -> RegistryError {
        RegistryError::Status {
            what: what.into(),
            url: url.into(),
            status: resp.status().as_u16(),
            message: error_message(&mut resp),
        }
    }

    /// Checks that the registry speaks the distribution API (and that the
    /// credentials work): `GET /v2/`.
    ///
    /// # Errors
    /// [`RegistryError`].
    pub fn ping(&self) -> Result<(), RegistryError> {
        let url = format!("{}/v2/", self.base);
        let resp = self.request("GET", &url, &[], Payload::None)?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(self.fail("checking the registry", &url, resp))
        }
    }

    /// Whether the repository already has the blob (`HEAD`).
    ///
    /// # Errors
    /// [`RegistryError`].
    pub fn has_blob(&self, digest: &str) -> Result<bool, RegistryError> {
        let url = self.url(&format!("blobs/{digest}"));
        let resp = self.request("HEAD", &url, &[], Payload::None)?;
        match resp.status().as_u16() {
            200 => Ok(true),
            404 => Ok(false),
            _ => Err(self.fail("checking for a blob", &url, resp)),
        }
    }

    fn start_upload(&self, query: &str) -> Result<Response<Body>, RegistryError> {
        let url = self.url(&format!("blobs/uploads/{query}"));
        self.request("POST", &url, &[("Content-Length", "0")], Payload::None)
    }

    fn location(
        &self,
        what: &str,
        url: &str,
        resp: Response<Body>,
    ) -> Result<String, RegistryError> {
        match resp.headers().get("location").and_then(|v| v.to_str().ok()) {
            Some(l) if resp.status() == StatusCode::ACCEPTED => Ok(self.absolute(l)),
            _ => Err(self.fail(what, url, resp)),
        }
    }

    /// Asks the registry to link `digest` from repository `from`.
    ///
    /// # Errors
    /// [`RegistryError`].
    pub fn mount(&self, digest: &str, from: &str) -> Result<Mount, RegistryError> {
        if let Ok(mut s) = self.scopes.lock() {
            let scope = format!("repository:{from}:pull");
            if !s.contains(&scope) {
                s.push(scope);
            }
        }
        let query = format!("?mount={}&from={}", encode(digest), encode(from));
        let url = self.url(&format!("blobs/uploads/{query}"));
        let resp = self.start_upload(&query)?;
        if resp.status() == StatusCode::CREATED {
            return Ok(Mount::Mounted);
        }
        Ok(Mount::Upload(self.location(
            "mounting a blob",
            &url,
            resp,
        )?))
    }

    /// Opens an upload session; its location.
    ///
    /// # Errors
    /// [`RegistryError`].
    pub fn open_upload(&self) -> Result<String, RegistryError> {
        let url = self.url("blobs/uploads/");
        let resp = self.start_upload("")?;
        self.location("starting an upload", &url, resp)
    }

    /// Uploads `data` (whose digest is `digest`) to the session at
    /// `location`: in one PUT when `chunk` is None or at least the blob's
    /// size, else in PATCHes of `chunk` bytes and a closing PUT. `done`
    /// hears of every byte sent.
    ///
    /// # Errors
    /// [`RegistryError`].
    pub fn upload(
        &self,
        mut location: String,
        data: &[u8],
        digest: &str,
        chunk: Option<u64>,
        done: &dyn Fn(u64),
    ) -> Result<(), RegistryError> {
        let with_digest = |l: &str| {
            let sep = if l.contains('?') { '&' } else { '?' };
            format!("{l}{sep}digest={}", encode(digest))
        };
        let octets = "application/octet-stream";
        let chunk = chunk.filter(|&c| c > 0 && c < data.len() as u64);
        let closing: &[u8] = match chunk {
            None => data,
            Some(c) => {
                for (i, piece) in data.chunks(c as usize).enumerate() {
                    let start = i as u64 * c;
                    let range = format!("{start}-{}", start + piece.len() as u64 - 1);
                    let resp = self.request(
                        "PATCH",
                        &location,
                        &[("Content-Range", &range)],
                        Payload::Bytes(piece, octets),
                    )?;
                    let here = location.clone();
                    location = self.location("uploading a chunk", &here, resp)?;
                    done(piece.len() as u64);
                }
                &[]
            }
        };
        let url = with_digest(&location);
        let resp = self.request("PUT", &url, &[], Payload::Bytes(closing, octets))?;
        if resp.status() != StatusCode::CREATED {
            return Err(self.fail("finishing an upload", &url, resp));
        }
        if !closing.is_empty() {
            done(closing.len() as u64);
        }
        // The registry names the blob by the digest it computed.
        if let Some(d) = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
        {
            if d != digest {
                return Err(RegistryError::Lies {
                    what: format!("blob {digest}"),
                    reason: format!("after the upload the registry reports digest {d}"),
                });
            }
        }
        Ok(())
    }

    /// Stores a manifest under `key` (a tag or its digest); returns the
    /// digest the registry reports.
    ///
    /// # Errors
    /// [`RegistryError`].
    pub fn put_manifest(
        &self,
        key: &str,
        manifest: &[u8],
    ) -> Result<Option<String>, RegistryError> {
        let url = self.url(&format!("manifests/{key}"));
        let resp = self.request(
            "PUT",
            &url,
            &[],
            Payload::Bytes(manifest, MANIFEST_MEDIA_TYPE),
        )?;
        if resp.status() != StatusCode::CREATED {
            return Err(self.fail("storing the manifest", &url, resp));
        }
        Ok(resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned))
    }

    /// Fetches the manifest `key` (tag or digest): its bytes and the digest
    /// the registry claims for it.
    ///
    /// # Errors
    /// [`RegistryError`]; a missing manifest is a 404 status error.
    pub fn get_manifest(&self, key: &str) -> Result<(Vec<u8>, Option<String>), RegistryError> {
        let url = self.url(&format!("manifests/{key}"));
        let mut resp = self.request(
            "GET",
            &url,
            &[("Accept", MANIFEST_MEDIA_TYPE)],
            Payload::None,
        )?;
        if !resp.status().is_success() {
            return Err(self.fail("fetching the manifest", &url, resp));
        }
        let claimed = resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = read_limited(&mut resp, MAX_MANIFEST_SIZE + 1).map_err(|error| {
            RegistryError::Http {
                method: "GET".into(),
                url: url.clone(),
                error,
            }
        })?;
        Ok((bytes, claimed))
    }

    /// Fetches a blob (at most its stated size + 1 bytes, so an overlong
    /// answer is caught without being loaded). `done` hears of every byte.
    ///
    /// # Errors
    /// [`RegistryError`]; a connection that drops says how far it got.
    pub fn get_blob(&self, blob: &BlobRef, done: &dyn Fn(u64)) -> Result<Vec<u8>, RegistryError> {
        self.get_blob_named(&blob.digest, blob.size, &blob.describe(), done)
    }

    /// [`Client::get_blob`] of the blob `digest` of `size` bytes, called
    /// `what` in messages.
    ///
    /// # Errors
    /// As [`Client::get_blob`].
    pub fn get_blob_named(
        &self,
        digest: &str,
        size: u64,
        what: &str,
        done: &dyn Fn(u64),
    ) -> Result<Vec<u8>, RegistryError> {
        let url = self.url(&format!("blobs/{digest}"));
        let mut resp = self.request("GET", &url, &[], Payload::None)?;
        if !resp.status().is_success() {
            return Err(self.fail(&format!("fetching the {what}"), &url, resp));
        }
        let limit = size + 1;
        let mut reader = resp
            .body_mut()
            .with_config()
            .limit(limit)
            .reader()
            .take(limit);
        let mut out = Vec::with_capacity(size.min(64 << 20) as usize);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    done(n as u64);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(RegistryError::Transfer {
                        what: what.to_owned(),
                        reason: format!(
                            "the connection failed after {} of {size} bytes: {e}",
                            out.len(),
                        ),
                    })
                }
            }
        }
        Ok(out)
    }
}

/// The (scheme, host, port) of an absolute http(s) URL, lower-cased,
/// the port defaulted; `None` for anything else.
fn origin(url: &str) -> Option<(&'static str, String, u16)> {
    let (scheme, rest, default_port) = if let Some(r) = url.strip_prefix("https://") {
        ("https", r, 443)
    } else if let Some(r) = url.strip_prefix("http://") {
        ("http", r, 80)
    } else {
        return None;
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    // Credentials in a URL (`user@host`) name no other origin.
    if authority.contains('@') || authority.is_empty() {
        return None;
    }
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']')?;
        match after.strip_prefix(':') {
            Some(p) => (host, p.parse().ok()?),
            None if after.is_empty() => (host, default_port),
            None => return None,
        }
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, p.parse().ok()?),
            None => (authority, default_port),
        }
    };
    Some((scheme, host.to_ascii_lowercase(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_compare_scheme_host_and_port() {
        assert_eq!(
            origin("https://Registry.example.com/v2/x"),
            Some(("https", "registry.example.com".into(), 443))
        );
        assert_eq!(
            origin("http://127.0.0.1:5000/v2/"),
            Some(("http", "127.0.0.1".into(), 5000))
        );
        assert_eq!(
            origin("https://example.com:443?x"),
            origin("https://example.com/")
        );
        assert_ne!(
            origin("http://example.com/"),
            origin("https://example.com/")
        );
        assert_ne!(origin("http://a:5000/"), origin("http://a:5001/"));
        assert_eq!(origin("http://user@evil.com/"), None);
        assert_eq!(origin("ftp://x/"), None);
        assert_eq!(origin("/v2/relative"), None);
        assert_eq!(origin("http://a:notaport/"), None);
        assert_eq!(
            origin("http://[::1]:5000/v2/"),
            Some(("http", "::1".into(), 5000))
        );
        assert_eq!(origin("https://[::1]/"), Some(("https", "::1".into(), 443)));
    }

    #[test]
    fn docker_hub_has_its_own_api_host_and_library_namespace() {
        assert_eq!(
            endpoint("docker.io", "hello"),
            ("registry-1.docker.io".into(), "library/hello".into())
        );
        assert_eq!(
            endpoint("index.docker.io", "team/app"),
            ("registry-1.docker.io".into(), "team/app".into())
        );
        assert_eq!(
            endpoint("localhost:5000", "hello"),
            ("localhost:5000".into(), "hello".into())
        );
        assert_eq!(
            encode("repository:a/b:pull,push"),
            "repository%3Aa%2Fb%3Apull%2Cpush"
        );
        assert!(
            is_loopback("127.0.0.1:5000")
                && is_loopback("localhost")
                && !is_loopback("example.com:443")
        );
    }
}
