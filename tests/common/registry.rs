//! Test registries: Debian's `docker-registry` started on 127.0.0.1 (plain,
//! with htpasswd basic auth, or behind TLS with a CA made for the test), and
//! a small HTTP proxy in front of one that can demand bearer tokens, count
//! requests, or lie (corrupt or truncate blobs, alter manifests).
//!
//! Included by tests/registry.rs only: it needs the builder's dependencies.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How a registry is set up.
#[derive(Clone, Debug, Default)]
pub struct RegistrySetup {
    /// Require this user and password (htpasswd, bcrypt).
    pub htpasswd: Option<(String, String)>,
    /// Serve HTTPS with a certificate from a fresh CA.
    pub tls: bool,
}

/// A running docker-registry, stopped and deleted on drop.
pub struct Registry {
    /// Its port on 127.0.0.1.
    pub port: u16,
    /// The CA certificate (PEM) when it serves TLS.
    pub ca: Option<PathBuf>,
    /// Its scratch directory.
    pub dir: PathBuf,
    child: Child,
}

fn need(tool: &str, package: &str) {
    assert!(
        xtask::host::has(tool),
        "{tool} is missing (Debian package {package}); run `cargo xtask deps`"
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn run_ok(cmd: &mut Command) {
    let out = cmd.output().expect("tool runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for 127.0.0.1 signed by it.
fn make_certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    need("openssl", "openssl");
    let p = |n: &str| dir.join(n);
    run_ok(
        Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=kiln test CA"])
            .arg("-keyout")
            .arg(p("ca.key"))
            .arg("-out")
            .arg(p("ca.crt")),
    );
    run_ok(
        Command::new("openssl")
            .args(["req", "-newkey", "rsa:2048", "-nodes"])
            .args(["-subj", "/CN=127.0.0.1"])
            .arg("-keyout")
            .arg(p("server.key"))
            .arg("-out")
            .arg(p("server.csr")),
    );
    std::fs::write(
        p("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n\
         keyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run_ok(
        Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
            .arg("-in")
            .arg(p("server.csr"))
            .arg("-CA")
            .arg(p("ca.crt"))
            .arg("-CAkey")
            .arg(p("ca.key"))
            .arg("-extfile")
            .arg(p("ext.cnf"))
            .arg("-out")
            .arg(p("server.crt")),
    );
    (p("ca.crt"), p("server.crt"), p("server.key"))
}

impl Registry {
    /// Starts a registry in a scratch directory named after `test`.
    pub fn start(test: &str, setup: &RegistrySetup) -> Self {
        need("docker-registry", "docker-registry");
        let dir = crate::common::scratch(&format!("registry-{test}"));
        let port = free_port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("data").display()
        );
        let mut ca = None;
        if setup.tls {
            let (ca_crt, crt, key) = make_certificates(&dir);
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                crt.display(),
                key.display()
            ));
            ca = Some(ca_crt);
        }
        if let Some((user, pass)) = &setup.htpasswd {
            need("htpasswd", "apache2-utils");
            let out = Command::new("htpasswd")
                .args(["-Bbn", user, pass])
                .output()
                .expect("htpasswd runs");
            assert!(out.status.success());
            std::fs::write(dir.join("htpasswd"), &out.stdout).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n",
                dir.join("htpasswd").display()
            ));
        }
        std::fs::write(dir.join("config.yml"), config).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("registry.log")).unwrap(),
            ))
            .spawn()
            .expect("docker-registry starts");
        let registry = Self {
            port,
            ca,
            dir,
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on {port}: {}",
                std::fs::read_to_string(registry.dir.join("registry.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        registry
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What the proxy does to the traffic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forwards everything (and counts requests).
    Pass,
    /// Demands a bearer token from its own /token service, granted for
    /// this user and password.
    Bearer(String, String),
    /// The same, naming its token service by another host name
    /// (`localhost` rather than `127.0.0.1`) over plain HTTP.
    BearerOnOtherHost(String, String),
    /// Flips a byte in the middle of every blob it returns.
    CorruptBlobs,
    /// Sends half of every blob (with the full Content-Length), then hangs up.
    TruncateBlobs,
    /// Adds a space to every manifest it returns (same JSON, other digest).
    AlterManifests,
}

/// A proxy on 127.0.0.1 in front of a registry; stops on drop.
pub struct Proxy {
    /// Its port.
    pub port: u16,
    /// "METHOD /path" of every request it received, and "authorized
    /// METHOD /path" for those that carried an Authorization header.
    pub requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

const TOKEN: &str = "kiln-test-token";

impl Proxy {
    /// Starts a proxy to 127.0.0.1:`upstream`.
    pub fn start(upstream: u16, mode: ProxyMode) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (log, halt) = (requests.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if halt.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (log, mode) = (log.clone(), mode.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, upstream, port, &mode, &log);
                });
            }
        });
        Self {
            port,
            requests,
            stop,
        }
    }

    /// `127.0.0.1:PORT`.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// How many requests started with `prefix` ("PATCH", "GET /token").
    pub fn count(&self, prefix: &str) -> usize {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.starts_with(prefix))
            .count()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn respond(
    conn: &mut TcpStream,
    status: &str,
    headers: &[String],
    body: &[u8],
) -> std::io::Result<()> {
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    conn.write_all(head.as_bytes())?;
    conn.write_all(body)
}

/// One connection: one request, one answer, then close.
fn serve(
    mut conn: TcpStream,
    upstream: u16,
    port: u16,
    mode: &ProxyMode,
    log: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    use base64::Engine as _;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let request_line = line.trim_end().to_owned();
    let mut parts = request_line.split(' ');
    let (method, path) = (
        parts.next().unwrap_or("").to_owned(),
        parts.next().unwrap_or("").to_owned(),
    );
    let mut headers = Vec::new();
    let mut length = 0usize;
    let mut authorization = None;
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (name, value) = l.split_once(':').unwrap_or((l, ""));
        let lower = name.to_ascii_lowercase();
        match lower.as_str() {
            "content-length" => length = value.trim().parse().unwrap_or(0),
            "authorization" => {
                authorization = Some(value.trim().to_owned());
                continue;
            }
            "connection" => continue,
            _ => {}
        }
        headers.push(l.to_owned());
    }
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body)?;
    log.lock().unwrap().push(format!("{method} {path}"));
    if authorization.is_some() {
        log.lock()
            .unwrap()
            .push(format!("authorized {method} {path}"));
    }

    if let ProxyMode::Bearer(user, pass) | ProxyMode::BearerOnOtherHost(user, pass) = mode {
        let realm_host = if matches!(mode, ProxyMode::Bearer(..)) {
            "127.0.0.1"
        } else {
            "localhost"
        };
        if path.starts_with("/token") {
            let expected = format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
            );
            return if authorization.as_deref() == Some(expected.as_str()) {
                let token = format!("{{\"token\":\"{TOKEN}\"}}");
                respond(
                    &mut conn,
                    "200 OK",
                    &["Content-Type: application/json".into()],
                    token.as_bytes(),
                )
            } else {
                respond(
                    &mut conn,
                    "401 Unauthorized",
                    &[],
                    b"{\"errors\":[{\"code\":\"UNAUTHORIZED\",\"message\":\"bad credentials\"}]}",
                )
            };
        }
        if authorization.as_deref() != Some(&format!("Bearer {TOKEN}")) {
            let challenge = format!(
                "WWW-Authenticate: Bearer realm=\"http://{realm_host}:{port}/token\",service=\"kiln-test\""
            );
            return respond(
                &mut conn,
                "401 Unauthorized",
                &[challenge],
                b"{\"errors\":[{\"code\":\"UNAUTHORIZED\",\"message\":\"token required\"}]}",
            );
        }
    }

    let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
    let mut head = format!("{request_line}\r\n");
    for h in &headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    head.push_str("Connection: close\r\n\r\n");
    up.write_all(head.as_bytes())?;
    up.write_all(&body)?;
    let mut response = Vec::new();
    up.read_to_end(&mut response)?;

    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(response.len(), |p| p + 4);
    let (resp_head, resp_body) = response.split_at(split);
    let ok = resp_head.starts_with(b"HTTP/1.1 200");
    let is_blob = method == "GET" && path.contains("/blobs/sha256:") && ok;
    let is_manifest = method == "GET" && path.contains("/manifests/") && ok;
    match mode {
        ProxyMode::CorruptBlobs if is_blob && !resp_body.is_empty() => {
            let mut b = resp_body.to_vec();
            let mid = b.len() / 2;
            b[mid] ^= 0x01;
            conn.write_all(resp_head)?;
            conn.write_all(&b)
        }
        ProxyMode::TruncateBlobs if is_blob => {
            conn.write_all(resp_head)?;
            conn.write_all(&resp_body[..resp_body.len() / 2])?;
            conn.flush()?;
            conn.shutdown(std::net::Shutdown::Both)
        }
        ProxyMode::AlterManifests if is_manifest => {
            let text = String::from_utf8_lossy(resp_head).into_owned();
            let fixed: Vec<String> = text
                .split("\r\n")
                .map(|h| {
                    if h.to_ascii_lowercase().starts_with("content-length:") {
                        format!("Content-Length: {}", resp_body.len() + 1)
                    } else {
                        h.to_owned()
                    }
                })
                .collect();
            conn.write_all(fixed.join("\r\n").as_bytes())?;
            conn.write_all(resp_body)?;
            conn.write_all(b" ")
        }
        _ => conn.write_all(&response),
    }
}
