//! kilnd's API server: a Unix socket, one thread per connection, the
//! routes of docs/api/kilnd.openapi.json. Appliances are created under a
//! lock (names stay unique); everything else reads the records monitors
//! write.

use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::api::{self, CreateVm, Created, ErrorBody, Event, Status, VmDetails, VmStats};
use super::http::{self, Chunked, Request};
use super::metrics;
use super::record::{self, Root, VmConfig, VmDir};

/// The OpenAPI document of this API.
pub const OPENAPI: &str = include_str!("../../../docs/api/kilnd.openapi.json");

/// How long `stop` waits after SIGTERM before SIGKILL, unless `?t=`.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long create and start wait for the monitor to report the VM.
const START_WAIT: Duration = Duration::from_secs(5);
/// How often followed logs and events look for more.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

/// kilnd failures that end it.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Another kilnd serves the same directory.
    #[error("another kilnd serves {0} (its lock is held)")]
    Busy(PathBuf),
    /// The directory, lock or socket.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// An answer that is an error: status and message.
struct Failure(u16, String);

fn fail<T>(status: u16, message: impl Into<String>) -> Result<T, Failure> {
    Err(Failure(status, message.into()))
}

/// The daemon's shared state.
struct Daemon {
    root: Root,
    /// Every appliance's name → id, read from disk at the start and kept
    /// in step by create and remove (under this lock: names stay unique).
    /// Finding an appliance then reads one directory, not all of them.
    names: Mutex<std::collections::HashMap<String, String>>,
}

/// Serves the API on `socket` for the appliances under `root` until the
/// process ends. Takes `root`'s lock first: one kilnd per directory.
///
/// # Errors
/// [`ServeError`] when the lock is held or the socket cannot be made.
pub fn serve(
    root: Root,
    socket: &Path,
    metrics: Option<std::net::SocketAddr>,
) -> Result<(), ServeError> {
    let io = |what: String| move |source| ServeError::Io { what, source };
    std::fs::create_dir_all(root.vms())
        .map_err(io(format!("creating {}", root.vms().display())))?;
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(root.lock_file())
        .map_err(io(format!("opening {}", root.lock_file().display())))?;
    // SAFETY: flock on a descriptor `lock` owns; it stays open (and
    // locked) for the life of the process.
    if unsafe {
        libc::flock(
            std::os::fd::AsRawFd::as_raw_fd(&lock),
            libc::LOCK_EX | libc::LOCK_NB,
        )
    } != 0
    {
        return Err(ServeError::Busy(root.dir().to_path_buf()));
    }
    // Monitors that end while kilnd runs are reaped by the kernel (no
    // thread waits for each).
    // SAFETY: setting a signal's disposition has no preconditions; kilnd
    // waits for no child of its own.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
    // Appliance directories a crash left half made or half removed.
    for entry in std::fs::read_dir(root.vms())
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".new") || name.ends_with(".gone") {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    // A socket file left by a kilnd that was killed: nobody serves it.
    let _ = std::fs::remove_file(socket);
    let listener =
        UnixListener::bind(socket).map_err(io(format!("listening on {}", socket.display())))?;
    // Only the owner may drive the appliances (as docker's socket is for
    // root and the docker group).
    std::fs::set_permissions(socket, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(io(format!("securing {}", socket.display())))?;
    if let Some(address) = metrics {
        let listener = std::net::TcpListener::bind(address)
            .map_err(io(format!("listening for metrics on {address}")))?;
        let root = root.clone();
        // The bound address: port 0 asks for any free one.
        let bound = listener.local_addr().unwrap_or(address);
        eprintln!("kilnd: metrics on http://{bound}/metrics");
        std::thread::Builder::new()
            .name("kilnd-metrics".into())
            .spawn(move || serve_metrics(&listener, &root))
            .map_err(io("starting the metrics thread".into()))?;
    }
    let names = root
        .all()
        .into_iter()
        .map(|(_, c)| (c.name, c.id))
        .collect();
    let daemon = Arc::new(Daemon {
        root,
        names: Mutex::new(names),
    });
    // In the background: the API answers meanwhile.
    let reviving = Arc::clone(&daemon);
    let _ = std::thread::Builder::new()
        .name("kilnd-revive".into())
        .spawn(move || reviving.revive());
    eprintln!(
        "kilnd: serving {} (pid {})",
        socket.display(),
        std::process::id()
    );
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let daemon = Arc::clone(&daemon);
        let _ = std::thread::Builder::new()
            .name("kilnd-conn".into())
            .spawn(move || daemon.handle(&stream));
    }
    drop(lock);
    Ok(())
}

/// The Prometheus text format's content type.
const METRICS_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Answers `GET /metrics` on the metrics port (one connection at a time:
/// scrapes are rare and quick), 404 for anything else.
fn serve_metrics(listener: &std::net::TcpListener, root: &Root) {
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        match http::read_request(&stream) {
            Ok(r) if r.method == "GET" && r.path == "/metrics" => {
                let _ = http::respond(&stream, 200, METRICS_TYPE, metrics::render(root).as_bytes());
            }
            Ok(r) => {
                let message = format!("only GET /metrics here, not {} {}", r.method, r.path);
                let _ = http::respond(
                    &stream,
                    404,
                    "application/json",
                    &json(&ErrorBody { message }),
                );
            }
            Err(_) => {}
        }
    }
}

fn json<T: serde::Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}

fn respond_json<T: serde::Serialize>(stream: &UnixStream, status: u16, value: &T) {
    let _ = http::respond(stream, status, "application/json", &json(value));
}

impl Daemon {
    fn handle(&self, stream: &UnixStream) {
        // A client that connects and says nothing does not keep a thread.
        let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
        let request = match http::read_request(stream) {
            Ok(r) => r,
            Err(e) => {
                let status = if matches!(e, http::HttpError::TooLarge(_)) {
                    413
                } else {
                    400
                };
                respond_json(
                    stream,
                    status,
                    &ErrorBody {
                        message: e.to_string(),
                    },
                );
                return;
            }
        };
        match self.route(&request, stream) {
            Ok(Some((status, body))) => {
                let _ = http::respond(stream, status, "application/json", &body);
            }
            Ok(None) => {}
            Err(Failure(status, message)) => respond_json(stream, status, &ErrorBody { message }),
        }
    }

    /// Answers `request`: `Some((status, JSON body))`, or `None` when the
    /// handler streamed the answer itself.
    fn route(
        &self,
        request: &Request,
        stream: &UnixStream,
    ) -> Result<Option<(u16, Vec<u8>)>, Failure> {
        let segments: Vec<&str> = request.path.trim_matches('/').split('/').collect();
        let method = request.method.as_str();
        let done = |status: u16, body: Vec<u8>| Ok(Some((status, body)));
        match (method, segments.as_slice()) {
            ("GET", ["openapi.json"]) => {
                let _ = http::respond(stream, 200, "application/json", OPENAPI.as_bytes());
                Ok(None)
            }
            ("GET", ["metrics"]) => {
                let _ = http::respond(
                    stream,
                    200,
                    METRICS_TYPE,
                    metrics::render(&self.root).as_bytes(),
                );
                Ok(None)
            }
            ("GET", [api::VERSION, "version"]) => done(
                200,
                json(&api::Version {
                    version: env!("CARGO_PKG_VERSION").into(),
                    api: api::VERSION.into(),
                    pid: std::process::id(),
                }),
            ),
            ("GET", [api::VERSION, "vms"]) => done(200, json(&self.list(request.flag("all")))),
            ("POST", [api::VERSION, "vms"]) => done(201, json(&self.create(&request.body)?)),
            ("GET", [api::VERSION, "vms", r]) => done(200, json(&self.details(&self.find(r)?))),
            ("DELETE", [api::VERSION, "vms", r]) => {
                self.remove(&self.find(r)?, request.flag("force"))?;
                done(204, Vec::new())
            }
            ("POST", [api::VERSION, "vms", r, "start"]) => {
                let status = self.start(&self.find(r)?)?;
                done(status, Vec::new())
            }
            ("POST", [api::VERSION, "vms", r, "stop"]) => {
                let timeout = match request.param("t") {
                    Some(t) => Duration::from_secs(
                        t.parse()
                            .map_err(|_| Failure(400, format!("t={t}: seconds, a whole number")))?,
                    ),
                    None => STOP_TIMEOUT,
                };
                let status = self.stop(&self.find(r)?, timeout)?;
                done(status, Vec::new())
            }
            ("POST", [api::VERSION, "vms", r, "kill"]) => {
                let signal = parse_signal(request.param("signal").unwrap_or("KILL"))?;
                self.kill(&self.find(r)?, signal)?;
                done(204, Vec::new())
            }
            ("GET", [api::VERSION, "vms", r, "logs"]) => {
                let vm = self.find(r)?;
                let tail = match request.param("tail") {
                    None | Some("all") => None,
                    Some(n) => Some(n.parse::<usize>().map_err(|_| {
                        Failure(400, format!("tail={n}: a number of lines, or all"))
                    })?),
                };
                self.logs(&vm, tail, request.flag("follow"), stream);
                Ok(None)
            }
            ("GET", [api::VERSION, "vms", r, "stats"]) => {
                done(200, json(&self.stats(&self.find(r)?)?))
            }
            ("GET", [api::VERSION, "events"]) => {
                let since = match request.param("since") {
                    Some(s) => Some(s.parse::<f64>().map_err(|_| {
                        Failure(400, format!("since={s}: seconds since the epoch"))
                    })?),
                    None => None,
                };
                self.events(since, request.flag("follow"), stream);
                Ok(None)
            }
            (_, [api::VERSION, "vms"])
            | (_, [api::VERSION, "vms", _])
            | (_, [api::VERSION, "vms", _, "start" | "stop" | "kill" | "logs" | "stats"])
            | (_, [api::VERSION, "events" | "version"]) => {
                fail(405, format!("{method} is not allowed on {}", request.path))
            }
            _ => fail(404, format!("no such API path: {}", request.path)),
        }
    }

    /// Starts again the appliances whose restart policy asks for it
    /// (`always`, `on-failure`) and whose monitor vanished while they ran
    /// — the host rebooted, or something killed it — as docker's daemon
    /// does at its start. Appliances stopped through kilnd stay stopped.
    fn revive(&self) {
        for (dir, config) in self.root.all() {
            let wants = config
                .spec
                .restart
                .as_deref()
                .and_then(|p| p.parse::<api::RestartPolicy>().ok())
                .is_some_and(|p| p != api::RestartPolicy::No);
            if wants && dir.status(&dir.state()) == Status::Dead {
                eprintln!(
                    "kilnd: {} was running when its monitor vanished; starting it again",
                    config.name
                );
                self.event(&config, "revive");
                if let Err(Failure(_, message)) = self.start(&(dir, config)) {
                    eprintln!("kilnd: {message}");
                }
            }
        }
    }

    /// The appliance `text` names: its id, its name, or a prefix of one
    /// id only.
    fn find(&self, text: &str) -> Result<(VmDir, VmConfig), Failure> {
        let id = {
            let names = self.names();
            if let Some(id) = names.get(text) {
                id.clone()
            } else if names.values().any(|id| id == text) {
                text.to_string()
            } else {
                let matches: Vec<&String> = names
                    .values()
                    .filter(|id| !text.is_empty() && id.starts_with(text))
                    .collect();
                match matches.as_slice() {
                    [one] => (*one).clone(),
                    [] => return fail(404, format!("no such appliance: {text}")),
                    _ => {
                        return fail(
                            400,
                            format!(
                                "{text} is the start of {} appliances' ids: give more of it",
                                matches.len()
                            ),
                        )
                    }
                }
            }
        };
        let dir = self.root.vm(&id);
        match dir.config() {
            Ok(config) => Ok((dir, config)),
            Err(_) => fail(404, format!("no such appliance: {text}")),
        }
    }

    /// The name index, locked.
    fn names(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, String>> {
        self.names
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn summary(&self, dir: &VmDir, config: &VmConfig) -> api::VmSummary {
        let state = dir.state();
        let status = dir.status(&state);
        api::VmSummary {
            id: config.id.clone(),
            name: config.name.clone(),
            image: config.spec.image.clone(),
            status,
            pid: state.pid.filter(|_| status == Status::Running),
            exit_code: state.exit_code,
            created: config.created,
            restarts: state.restarts,
        }
    }

    fn list(&self, all: bool) -> Vec<api::VmSummary> {
        self.root
            .all()
            .iter()
            .map(|(d, c)| self.summary(d, c))
            .filter(|s| all || matches!(s.status, Status::Running | Status::Restarting))
            .collect()
    }

    fn details(&self, (dir, config): &(VmDir, VmConfig)) -> VmDetails {
        let state = dir.state();
        VmDetails {
            summary: self.summary(dir, config),
            config: config.spec.clone(),
            started_at: state.started_at,
            finished_at: state.finished_at,
            command: config.command.clone(),
            log_path: dir.log().display().to_string(),
        }
    }

    fn event(&self, config: &VmConfig, action: &str) {
        let _ = self.root.record_event(&Event {
            time: record::now(),
            id: config.id.clone(),
            name: config.name.clone(),
            action: action.into(),
            exit_code: None,
        });
    }

    fn create(&self, body: &[u8]) -> Result<Created, Failure> {
        let spec: CreateVm = serde_json::from_slice(body)
            .map_err(|e| Failure(400, format!("the request body: {e}")))?;
        let command = command_line(&spec)?;
        let mut names = self.names();
        let id = new_id().map_err(|e| Failure(500, format!("making an id: {e}")))?;
        let name = match &spec.name {
            Some(name) => {
                check_name(name)?;
                name.clone()
            }
            None => format!("vm-{}", &id[..12]),
        };
        if names.contains_key(&name) {
            return fail(
                409,
                format!("the name {name} is taken (kiln rm it, or pick another)"),
            );
        }
        let config = VmConfig {
            id: id.clone(),
            name: name.clone(),
            created: record::now(),
            spec,
            command,
        };
        // Made beside and renamed: a crash leaves no half appliance.
        let staging = self.root.vms().join(format!("{id}.new"));
        let made = std::fs::create_dir_all(&staging)
            .and_then(|()| VmDir::at(staging.clone()).write_config(&config))
            .and_then(|()| std::fs::rename(&staging, self.root.vm(&id).path()));
        if let Err(e) = made {
            let _ = std::fs::remove_dir_all(&staging);
            return fail(
                500,
                format!(
                    "recording the appliance in {}: {e}",
                    self.root.vms().display()
                ),
            );
        }
        names.insert(name.clone(), id.clone());
        // Other creates go on while this one's VM starts.
        drop(names);
        self.event(&config, "create");
        let dir = self.root.vm(&id);
        self.spawn_monitor(&dir)?;
        self.wait_started(&dir);
        Ok(Created { id, name })
    }

    /// Starts the appliance's monitor, in a session of its own (it
    /// outlives kilnd).
    fn spawn_monitor(&self, dir: &VmDir) -> Result<(), Failure> {
        use std::os::unix::process::CommandExt;
        let exe = std::env::current_exe()
            .map_err(|e| Failure(500, format!("finding kilnd's program: {e}")))?;
        let mut command = std::process::Command::new(exe);
        command
            .arg("--root")
            .arg(self.root.dir())
            .arg("monitor")
            .arg(dir.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null());
        // SAFETY: setsid and signal are async-signal-safe and only change
        // the child: a session of its own, and SIGCHLD back to the default
        // (kilnd ignores it, so that its monitors are reaped by the
        // kernel; a monitor must wait for its VM).
        unsafe {
            command.pre_exec(|| {
                libc::setsid();
                libc::signal(libc::SIGCHLD, libc::SIG_DFL);
                Ok(())
            });
        }
        command.spawn().map_err(|e| {
            Failure(
                500,
                format!("starting the monitor of {}: {e}", dir.path().display()),
            )
        })?;
        Ok(())
    }

    /// Waits (a little) until the monitor has reported the VM started or
    /// ended.
    fn wait_started(&self, dir: &VmDir) {
        let end = Instant::now() + START_WAIT;
        while Instant::now() < end {
            let state = dir.state();
            if state.status.is_some()
                && (state.pid.is_some() || state.status != Some(Status::Running))
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn is_up(dir: &VmDir) -> bool {
        matches!(
            dir.status(&dir.state()),
            Status::Running | Status::Restarting
        )
    }

    fn start(&self, (dir, _): &(VmDir, VmConfig)) -> Result<u16, Failure> {
        if Self::is_up(dir) {
            return Ok(304);
        }
        let _ = std::fs::remove_file(dir.stop_marker());
        // The new monitor's first state must not be mistaken for the old.
        let _ = std::fs::remove_file(dir.path().join("state.json"));
        self.spawn_monitor(dir)?;
        self.wait_started(dir);
        Ok(204)
    }

    /// Marks the stop and signals the VM (the monitor signals it itself if
    /// it had not written its pid down yet).
    fn signal(dir: &VmDir, signal: i32) -> Result<(), Failure> {
        std::fs::write(dir.stop_marker(), signal.to_string()).map_err(|e| {
            Failure(
                500,
                format!("marking the stop in {}: {e}", dir.path().display()),
            )
        })?;
        if let Some(pid) = dir.state().pid {
            // SAFETY: kill(2) has no memory effects; the pid is the VM's,
            // as its monitor wrote it.
            unsafe { libc::kill(pid as i32, signal) };
        }
        Ok(())
    }

    fn stop(&self, (dir, config): &(VmDir, VmConfig), timeout: Duration) -> Result<u16, Failure> {
        if !Self::is_up(dir) {
            return Ok(304);
        }
        self.event(config, "stop");
        Self::signal(dir, libc::SIGTERM)?;
        if !wait_down(dir, timeout) {
            Self::signal(dir, libc::SIGKILL)?;
            wait_down(dir, Duration::from_secs(5));
        }
        Ok(204)
    }

    fn kill(&self, (dir, config): &(VmDir, VmConfig), signal: i32) -> Result<(), Failure> {
        let state = dir.state();
        if dir.status(&state) != Status::Running {
            return fail(409, format!("{} is not running", config.name));
        }
        self.event(config, "kill");
        if matches!(signal, libc::SIGUSR1 | libc::SIGUSR2) {
            // Not a stop (kiln run saves a snapshot on SIGUSR2).
            if let Some(pid) = state.pid {
                // SAFETY: as in `signal`.
                unsafe { libc::kill(pid as i32, signal) };
            }
            return Ok(());
        }
        Self::signal(dir, signal)
    }

    fn remove(&self, (dir, config): &(VmDir, VmConfig), force: bool) -> Result<(), Failure> {
        if Self::is_up(dir) {
            if !force {
                return fail(
                    409,
                    format!(
                        "{} is running: stop it first, or remove it with force",
                        config.name
                    ),
                );
            }
            Self::signal(dir, libc::SIGKILL)?;
            if !wait_down(dir, Duration::from_secs(10)) {
                return fail(500, format!("{} did not end after SIGKILL", config.name));
            }
        }
        let mut names = self.names();
        // Renamed away first: a crash halfway leaves no half appliance.
        let doomed = self.root.vms().join(format!("{}.gone", config.id));
        std::fs::rename(dir.path(), &doomed)
            .map_err(|e| Failure(500, format!("removing {}: {e}", dir.path().display())))?;
        names.remove(&config.name);
        drop(names);
        let _ = std::fs::remove_dir_all(&doomed);
        self.event(config, "destroy");
        Ok(())
    }

    fn stats(&self, (dir, config): &(VmDir, VmConfig)) -> Result<VmStats, Failure> {
        let state = dir.state();
        let pid = match (dir.status(&state), state.pid) {
            (Status::Running, Some(pid)) => pid,
            _ => return fail(409, format!("{} is not running", config.name)),
        };
        let (cpu_seconds, rss_bytes) = record::process_usage(pid)
            .ok_or_else(|| Failure(409, format!("{} is not running", config.name)))?;
        Ok(VmStats {
            id: config.id.clone(),
            name: config.name.clone(),
            pid,
            cpu_seconds,
            rss_bytes,
            uptime_seconds: state
                .started_at
                .map_or(0.0, |t| (record::now() - t).max(0.0)),
            restarts: state.restarts,
        })
    }

    fn logs(
        &self,
        (dir, _): &(VmDir, VmConfig),
        tail: Option<usize>,
        follow: bool,
        stream: &UnixStream,
    ) {
        use std::io::{Seek, SeekFrom};
        let Ok(mut chunks) = Chunked::start(stream, "text/plain; charset=utf-8") else {
            return;
        };
        // The rotated files first, oldest first, from where `tail` starts.
        let files = super::logfile::files(&dir.log());
        let (first, mut offset) = match tail {
            Some(n) => tail_start(&files, n),
            None => (0, 0),
        };
        let mut buf = vec![0u8; 64 * 1024];
        for path in files.iter().skip(first) {
            if *path == dir.log() {
                break;
            }
            if let Ok(mut f) = std::fs::File::open(path) {
                if f.seek(SeekFrom::Start(offset)).is_ok()
                    && send_rest(&mut f, &mut buf, &mut chunks).is_err()
                {
                    return;
                }
            }
            offset = 0;
        }
        let mut file = std::fs::File::open(dir.log()).ok();
        loop {
            if file.is_none() {
                file = std::fs::File::open(dir.log()).ok();
            }
            // Whether it still runs is read before the log: what it wrote
            // before ending is then read in this round.
            let up = follow && Self::is_up(dir);
            let mut rotated = false;
            if let Some(f) = file.as_mut() {
                if f.seek(SeekFrom::Start(offset)).is_err() {
                    return;
                }
                match send_rest(f, &mut buf, &mut chunks) {
                    Ok(n) => offset += n,
                    Err(_) => return,
                }
                // The monitor rotated the log: the rest of this file, then
                // the next newer one from its start.
                rotated = follow && !same_file(f, &dir.log());
                if rotated {
                    if send_rest(f, &mut buf, &mut chunks).is_err() {
                        return;
                    }
                    let newer = newer_log_file(f, &dir.log());
                    file = std::fs::File::open(newer).ok();
                    offset = 0;
                }
            }
            if rotated {
                continue;
            }
            if !up || peer_gone(stream, FOLLOW_POLL) {
                break;
            }
        }
        let _ = chunks.finish();
    }

    fn events(&self, since: Option<f64>, follow: bool, stream: &UnixStream) {
        use std::os::unix::fs::MetadataExt;
        let Ok(mut chunks) = Chunked::start(stream, "application/x-ndjson") else {
            return;
        };
        let path = self.root.events();
        let inode = |p: &Path| std::fs::metadata(p).ok().map(|m| m.ino());
        // Following without `since`: only what happens from now on;
        // otherwise the rotated log first.
        let (mut offset, mut reading) = match (follow, since) {
            (true, None) => (
                std::fs::metadata(&path).map_or(0, |m| m.len()),
                inode(&path),
            ),
            _ => {
                if send_events(&self.root.old_events(), 0, since, &mut chunks, None).is_err() {
                    return;
                }
                (0, None)
            }
        };
        loop {
            let now = inode(&path);
            if reading.is_some() && now != reading {
                // Rotated since the last round: the rest of the file being
                // read (now the old log), then the new one from its start.
                if inode(&self.root.old_events()) == reading
                    && send_events(&self.root.old_events(), offset, since, &mut chunks, reading)
                        .is_err()
                {
                    return;
                }
                offset = 0;
            }
            reading = now;
            match send_events(&path, offset, since, &mut chunks, now) {
                Ok(end) => offset = end,
                Err(_) => return,
            }
            if !follow || peer_gone(stream, FOLLOW_POLL) {
                break;
            }
        }
        let _ = chunks.finish();
    }
}

/// Sends the whole lines of the event log `path` from `offset` (those at
/// or after `since`); where it stopped. With `inode`, only when the file
/// opened is still that one (a rotation in between is left to the
/// caller's next round).
fn send_events(
    path: &Path,
    offset: u64,
    since: Option<f64>,
    chunks: &mut Chunked<'_>,
    inode: Option<u64>,
) -> std::io::Result<u64> {
    use std::io::{BufRead, BufReader, Seek, SeekFrom};
    use std::os::unix::fs::MetadataExt;
    let Ok(mut file) = std::fs::File::open(path) else {
        return Ok(offset);
    };
    if inode.is_some() && file.metadata().ok().map(|m| m.ino()) != inode {
        return Ok(offset);
    }
    if file.seek(SeekFrom::Start(offset)).is_err() {
        return Ok(offset);
    }
    let mut end = offset;
    let mut reader = BufReader::new(file);
    let mut line = String::new();
    // Whole lines only: a line being appended is read next round.
    while matches!(reader.read_line(&mut line), Ok(n) if n > 0) && line.ends_with('\n') {
        end += line.len() as u64;
        let keep =
            serde_json::from_str::<Event>(&line).is_ok_and(|e| since.is_none_or(|s| e.time >= s));
        if keep {
            chunks.send(line.as_bytes())?;
        }
        line.clear();
    }
    Ok(end)
}

/// Waits until the VM in `dir` is down; false after `timeout`.
fn wait_down(dir: &VmDir, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if !Daemon::is_up(dir) {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits up to `wait` for the client to hang up; true when it did.
fn peer_gone(stream: &UnixStream, wait: Duration) -> bool {
    use std::os::fd::AsRawFd;
    let mut fds = libc::pollfd {
        fd: stream.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one pollfd, valid for the call.
    let n = unsafe { libc::poll(&mut fds, 1, wait.as_millis() as libc::c_int) };
    let gone = n > 0 && fds.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0;
    if n > 0 && !gone {
        // Bytes the client sent after its request: not a hang-up, and no
        // reason to spin.
        std::thread::sleep(wait);
    }
    gone
}

/// Where the last `lines` lines of `file` start.
/// Sends what is left of `file` from where it stands; how much.
fn send_rest(
    file: &mut std::fs::File,
    buf: &mut [u8],
    chunks: &mut Chunked<'_>,
) -> std::io::Result<u64> {
    use std::io::Read;
    let mut sent = 0u64;
    loop {
        match file.read(buf) {
            Ok(0) | Err(_) => return Ok(sent),
            Ok(n) => {
                sent += n as u64;
                chunks.send(&buf[..n])?;
            }
        }
    }
}

/// The log file written after `file` (a rotated one): the next newer
/// of `log`'s files, found by inode since rotation renames them all.
fn newer_log_file(file: &std::fs::File, log: &Path) -> PathBuf {
    let files = super::logfile::files(log);
    files
        .iter()
        .position(|p| same_file(file, p))
        .and_then(|i| files.get(i + 1))
        .or(files.first())
        .cloned()
        .unwrap_or_else(|| log.to_path_buf())
}

/// Whether `file` is still the file at `path` (not renamed away).
fn same_file(file: &std::fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => true,
    }
}

/// Where the last `lines` lines of the log `files` (oldest first) begin:
/// the file's index and the offset in it.
fn tail_start(files: &[PathBuf], lines: usize) -> (usize, u64) {
    let mut left = lines;
    for (i, path) in files.iter().enumerate().rev() {
        let Ok(text) = std::fs::read(path) else {
            continue;
        };
        let body = text.strip_suffix(b"\n").unwrap_or(&text);
        let count = if body.is_empty() && text.is_empty() {
            0
        } else {
            body.iter().filter(|&&b| b == b'\n').count() + 1
        };
        if count >= left {
            return (i, tail_offset(&text, left));
        }
        left -= count;
    }
    (0, 0)
}

/// Where the last `lines` lines of a log's text begin.
fn tail_offset(all: &[u8], lines: usize) -> u64 {
    let body = all.strip_suffix(b"\n").unwrap_or(all);
    if lines == 0 {
        return all.len() as u64;
    }
    let start = body
        .iter()
        .enumerate()
        .rev()
        .filter(|(_, b)| **b == b'\n')
        .nth(lines - 1)
        .map_or(0, |(i, _)| i + 1);
    start as u64
}

/// A signal by name (`KILL`, `SIGTERM`, …) or number.
fn parse_signal(text: &str) -> Result<i32, Failure> {
    if let Ok(n) = text.parse::<i32>() {
        if (1..=64).contains(&n) {
            return Ok(n);
        }
    }
    let name = text.trim_start_matches("SIG");
    Ok(match name {
        "KILL" => libc::SIGKILL,
        "TERM" => libc::SIGTERM,
        "INT" => libc::SIGINT,
        "HUP" => libc::SIGHUP,
        "QUIT" => libc::SIGQUIT,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        _ => return fail(400, format!("signal={text}: not a signal kilnd knows")),
    })
}

/// Names as docker allows them: a letter or digit, then letters, digits,
/// `_`, `.`, `-`; at most 64.
fn check_name(name: &str) -> Result<(), Failure> {
    let ok = name.len() <= 64
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if ok {
        Ok(())
    } else {
        fail(400, format!("name {name:?}: use letters, digits, _ . - (starting with a letter or digit, at most 64)"))
    }
}

/// 64 random hex digits.
fn new_id() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The `kiln` arguments that boot `spec` (checked as far as kilnd can
/// without booting: the image exists, numbers are in range, the restart
/// policy parses; `kiln run` checks the rest and says so in the log).
fn command_line(spec: &CreateVm) -> Result<Vec<String>, Failure> {
    let image = &spec.image;
    if image.is_empty() {
        return fail(400, "image: empty");
    }
    let looks_like_file =
        image.ends_with(".kiln") || image.contains('/') && Path::new(image).exists();
    if looks_like_file || image.starts_with('/') || image.starts_with('.') {
        if !image.starts_with('/') {
            return fail(400, format!("image {image}: give a file's absolute path (kilnd's working directory is not the caller's)"));
        }
        if !Path::new(image).is_file() {
            return fail(404, format!("image {image}: no such file"));
        }
    } else if let Err(e) =
        crate::store::Store::open(&crate::store::Store::default_root()).resolve(image)
    {
        return fail(404, format!("image {image}: {e} (kiln pull it first)"));
    }
    if let Some(policy) = &spec.restart {
        policy
            .parse::<api::RestartPolicy>()
            .map_err(|e| Failure(400, e))?;
    }
    super::logfile::LogLimits::parse(&spec.log_opts).map_err(|e| Failure(400, e.to_string()))?;
    let mut args = vec!["run".to_string()];
    if let Some(m) = spec.memory_mib {
        if !(kiln_boot::layout::MIN_MEMORY_MIB..=kiln_boot::layout::MAX_MEMORY_MIB).contains(&m) {
            return fail(
                400,
                format!(
                    "memory_mib {m}: from {} to {}",
                    kiln_boot::layout::MIN_MEMORY_MIB,
                    kiln_boot::layout::MAX_MEMORY_MIB
                ),
            );
        }
        args.extend(["--memory".into(), m.to_string()]);
    }
    if let Some(c) = spec.cpus {
        if c == 0 || u64::from(c) > kiln_boot::layout::MAX_VCPUS {
            return fail(
                400,
                format!("cpus {c}: from 1 to {}", kiln_boot::layout::MAX_VCPUS),
            );
        }
        args.extend(["--cpus".into(), c.to_string()]);
    }
    if spec.init {
        args.push("--init".into());
    }
    let check = |what: &str, value: &str, parsed: Result<(), String>| {
        parsed.map_err(|e| Failure(400, format!("{what} {value:?}: {e}")))
    };
    for e in &spec.env {
        if !e.contains('=') || e.starts_with('=') {
            return fail(400, format!("env {e:?}: NAME=VALUE"));
        }
    }
    for p in &spec.publish {
        check("publish", p, p.parse::<kiln_vmm::net::PortMap>().map(drop))?;
    }
    // Host paths: kilnd's working directory is not the caller's.
    let host_path = |what: &str, value: &str, parsed: Result<(), String>| {
        check(what, value, parsed)?;
        if value.starts_with('/') {
            Ok(())
        } else {
            fail(
                400,
                format!("{what} {value:?}: give the host path absolutely"),
            )
        }
    };
    for v in &spec.volumes {
        host_path(
            "volume",
            v,
            v.parse::<kiln_vmm::devices::virtio::fs::VolumeSpec>()
                .map(drop),
        )?;
    }
    for d in &spec.disks {
        host_path(
            "disk",
            d,
            d.parse::<kiln_vmm::devices::virtio::block::DiskSpec>()
                .map(drop),
        )?;
    }
    if let Some(net) = &spec.net {
        check("net", net, net.parse::<kiln_vmm::net::Mode>().map(drop))?;
    }
    // `--flag=VALUE`, one word each: a value that starts with `-` stays a
    // value and can never become a flag of its own.
    for (flag, values) in [
        ("--env", &spec.env),
        ("--publish", &spec.publish),
        ("--volume", &spec.volumes),
        ("--disk", &spec.disks),
    ] {
        for value in values {
            args.push(format!("{flag}={value}"));
        }
    }
    if let Some(net) = &spec.net {
        args.push(format!("--net={net}"));
    }
    // Never pull inside a VM's monitor: the image was checked above.
    args.extend(["--pull".into(), "never".into(), image.clone()]);
    if let Some(program_args) = &spec.args {
        args.push("--".into());
        args.extend(program_args.iter().cloned());
    }
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_lines_of_a_log_are_found() {
        let path = std::env::temp_dir().join(format!("kilnd-tail-{}", std::process::id()));
        std::fs::write(&path, "a\nb\nc\n").unwrap();
        let text = std::fs::read(&path).unwrap();
        assert_eq!(tail_offset(&text, 2), 2);
        assert_eq!(tail_offset(&text, 10), 0);
        assert_eq!(tail_offset(&text, 0), 6);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn names_and_signals_are_checked() {
        assert!(check_name("web-1.a_b").is_ok());
        assert!(check_name("-x").is_err() && check_name("a b").is_err() && check_name("").is_err());
        assert_eq!(parse_signal("SIGTERM").ok(), Some(libc::SIGTERM));
        assert_eq!(parse_signal("9").ok(), Some(9));
        assert!(parse_signal("NOPE").is_err() && parse_signal("0").is_err());
    }
}
