//! The client side of kilnd's API, for the `kiln` commands: finds the
//! socket (`$KILN_HOST`, else `$KILN_HOME/kilnd/kilnd.sock`), starts
//! kilnd when nothing answers there, and turns error answers into errors
//! that carry kilnd's message.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::http::{self, Response};
use super::record::Root;

/// How long `kiln` waits for a kilnd it started to answer.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Client failures.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answers on the socket and kilnd could not be started.
    #[error("kilnd does not answer on {socket}: {why}")]
    Unreachable {
        /// The socket.
        socket: PathBuf,
        /// Why.
        why: String,
    },
    /// kilnd answered with an error.
    #[error("{message}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// kilnd's message.
        message: String,
    },
    /// The exchange failed halfway.
    #[error("talking to kilnd: {0}")]
    Http(#[from] http::HttpError),
    /// An answer that is not the JSON expected.
    #[error("kilnd's answer: {0}")]
    Json(#[from] serde_json::Error),
}

/// A connection point to kilnd.
#[derive(Clone, Debug)]
pub struct Client {
    socket: PathBuf,
}

impl Client {
    /// The socket: `$KILN_HOST` (a path, or `unix://PATH`), else kilnd's
    /// default under `$KILN_HOME`.
    pub fn socket_path() -> PathBuf {
        Root::default_root().api_socket()
    }

    /// A client of the kilnd on `socket` (nothing is checked yet).
    pub fn at(socket: PathBuf) -> Self {
        Self { socket }
    }

    /// The socket it talks to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Whether a kilnd answers.
    pub fn answers(&self) -> bool {
        UnixStream::connect(&self.socket).is_ok()
    }

    /// A client of the kilnd at [`Self::socket_path`], started (the
    /// `kilnd` program beside this one, in a session of its own, its
    /// output in `kilnd.log`) when none answers.
    ///
    /// # Errors
    /// [`ClientError::Unreachable`] when it cannot be started or does not
    /// answer in time.
    pub fn connect_or_start() -> Result<Self, ClientError> {
        let client = Self::at(Self::socket_path());
        if client.answers() {
            return Ok(client);
        }
        let unreachable = |why: String| ClientError::Unreachable {
            socket: client.socket.clone(),
            why,
        };
        let kilnd = super::companion("KILND_BIN", "kilnd");
        let root = Root::default_root();
        std::fs::create_dir_all(root.dir())
            .map_err(|e| unreachable(format!("creating {}: {e}", root.dir().display())))?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(root.daemon_log())
            .map_err(|e| unreachable(format!("opening {}: {e}", root.daemon_log().display())))?;
        let err_log = log.try_clone().map_err(|e| unreachable(e.to_string()))?;
        let mut command = std::process::Command::new(&kilnd);
        command
            .arg("--socket")
            .arg(&client.socket)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(err_log);
        {
            use std::os::unix::process::CommandExt;
            // SAFETY: setsid is async-signal-safe and only changes the
            // child, which must outlive this command.
            unsafe {
                command.pre_exec(|| {
                    libc::setsid();
                    Ok(())
                });
            }
        }
        let mut child = command
            .spawn()
            .map_err(|e| unreachable(format!("starting {}: {e}", kilnd.display())))?;
        let end = Instant::now() + START_TIMEOUT;
        while Instant::now() < end {
            if client.answers() {
                // kilnd lives on (dropping the handle neither waits for
                // nor kills it).
                drop(child);
                return Ok(client);
            }
            if let Ok(Some(status)) = child.try_wait() {
                return Err(unreachable(format!(
                    "kilnd ended ({status}); see {}",
                    root.daemon_log().display()
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Err(unreachable(format!(
            "kilnd started but did not answer in {} s; see {}",
            START_TIMEOUT.as_secs(),
            root.daemon_log().display()
        )))
    }

    /// Sends a request; answers of 400 and more become [`ClientError::Api`].
    ///
    /// # Errors
    /// When kilnd cannot be reached or answers with an error.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Response, ClientError> {
        let stream = UnixStream::connect(&self.socket).map_err(|e| ClientError::Unreachable {
            socket: self.socket.clone(),
            why: e.to_string(),
        })?;
        let response = http::request(stream, method, path, body)?;
        if response.status >= 400 {
            let status = response.status;
            let body = response.body()?;
            let message = serde_json::from_slice::<super::api::ErrorBody>(&body)
                .map(|e| e.message)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
            return Err(ClientError::Api { status, message });
        }
        Ok(response)
    }

    /// Sends a request and parses the JSON answer.
    ///
    /// # Errors
    /// As [`Self::call`], and when the answer is not a `T`.
    pub fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<T, ClientError> {
        let body = self.call(method, path, body)?.body()?;
        Ok(serde_json::from_slice(&body)?)
    }
}
