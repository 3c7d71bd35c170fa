//! Warm VMs (`kiln warm SNAPSHOT`): a snapshot resumed ahead of need, held
//! at the moment its guest reports itself resumed, and handed to the first
//! `kiln run --from-snapshot` that claims it.
//!
//! A restore in a fresh process spends ~1.5 ms before the guest runs again
//! on this kind of host: the VM, its memory slot and vCPU are made
//! (KVM_CREATE_VM alone waits ~0.2 ms), the devices and threads started,
//! and the guest's resume path takes its first shadow faults. A warm VM has
//! done all of that already — the guest has even set its clock and its
//! random generator from this VM's own fresh seed — and waits with vCPU 0
//! out of KVM_RUN. A claim hands it the client's standard input, output
//! and error (`SCM_RIGHTS`), and vCPU 0 goes on: the program runs again
//! within a fraction of a millisecond of the request.
//!
//! The wire, one Unix stream connection per claim (the socket lives in a
//! directory of the user's kiln home, named after the snapshot, and only
//! the warm VM's own user may claim it):
//!
//! * client → warm VM: one [`WarmRequest`] as a JSON line, sent with the
//!   three descriptors;
//! * warm VM → client: `{"claimed":PID}` once it runs for the client, then
//!   `{"exit":STATUS}` (or `{"error":MESSAGE}`) when the run is over.
//!
//! The client forwards SIGINT, SIGTERM and SIGHUP to the warm VM; when the
//! client goes away, the warm VM stops as if it got SIGTERM.

use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// What a client asks of the warm VM it claims.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct WarmRequest {
    /// The client's start (its `main`), in CLOCK_MONOTONIC nanoseconds
    /// ([`crate::timings::monotonic_ns`], which [`Instant`] also reads):
    /// the warm VM's timings count from there.
    pub start_mono_ns: u64,
    /// Milliseconds from the client's spawn to its `main`, when its
    /// spawner said (`KILN_SPAWN_MONO_NS`).
    pub spawn_to_main_ms: Option<f64>,
    /// `--timeout` in seconds.
    pub timeout_s: Option<f64>,
    /// `--timings`.
    pub timings: bool,
    /// `--timings-json` (absolute).
    pub timings_json: Option<PathBuf>,
    /// `--stats`: KVM's and the devices' counters, counted from the claim.
    #[serde(default)]
    pub stats: bool,
    /// Not a claim: stop the warm VM (`kiln warm --stop`).
    pub stop: bool,
}

impl WarmRequest {
    /// Whether the client waits for a report of the run (its phases or
    /// counters), written once the VM is down, rather than only for the
    /// exit status.
    pub fn wants_report(&self) -> bool {
        self.timings || self.timings_json.is_some() || self.stats
    }
}

/// A claim that reached the warm VM: the request and when it came.
#[derive(Clone, Debug)]
pub struct Claim {
    /// What the client asked.
    pub request: WarmRequest,
    /// When the claim was received.
    pub at: Instant,
}

impl Claim {
    /// The client's start as an [`Instant`] of this process (both are
    /// CLOCK_MONOTONIC); `at` when the clocks disagree.
    pub fn client_start(&self) -> Instant {
        let now = Instant::now();
        crate::timings::monotonic_ns()
            .checked_sub(self.request.start_mono_ns)
            .and_then(|ago| now.checked_sub(Duration::from_nanos(ago)))
            .unwrap_or(self.at)
    }
}

/// Where a warm VM stands.
#[derive(Clone, Debug)]
enum Stage {
    /// Restoring; the guest has not resumed yet.
    Restoring,
    /// vCPU 0 waits at the guest's resume report.
    Held,
    /// Claimed by a client; vCPU 0 goes on.
    Claimed(Claim),
    /// Stopped before any claim (idle timeout, `--stop`, a signal).
    Stopped,
}

/// Why a warm VM's socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum WarmError {
    /// The socket or its directory could not be made.
    #[error("warm VM socket {path}: {cause}")]
    Socket {
        /// The socket's path.
        path: PathBuf,
        /// What failed.
        cause: std::io::Error,
    },
}

/// A warm VM's side: its listening socket, the hold vCPU 0 waits in, and
/// the client's connection once claimed.
pub struct WarmHold {
    stage: Mutex<Stage>,
    changed: Condvar,
    listener: Mutex<Option<UnixListener>>,
    /// The socket is under its ready name: vCPU 0 accepts claims on it.
    published: AtomicBool,
    /// Where the socket is bound until the VM is held (clients ignore it).
    pending: PathBuf,
    /// Where it is renamed once held: clients find it there.
    ready: PathBuf,
    idle: Option<Duration>,
    client: Mutex<Option<UnixStream>>,
    /// The run is over and its status sent: the client's hang-up is no
    /// reason to stop anything.
    finished: AtomicBool,
    /// Set when the VM's memory is ready to run at full speed (its write
    /// set copied): the socket is published only then.
    memory_ready: Mutex<Option<Arc<AtomicBool>>>,
    /// The vCPUs besides vCPU 0 that ran when the snapshot was taken:
    /// started once the VM is claimed.
    later: Mutex<Vec<u32>>,
    /// This process's own standard streams, kept when a claim replaces
    /// them with the client's: put back once the client has its answer.
    own_streams: Mutex<Vec<OwnedFd>>,
    /// The counters at the claim, for a client that asked for `--stats`.
    stats_baseline: Mutex<Option<crate::VmStats>>,
}

impl std::fmt::Debug for WarmHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmHold")
            .field("socket", &self.ready)
            .field("stage", &*lock(&self.stage))
            .finish_non_exhaustive()
    }
}

/// Suffix of a claimable warm VM's socket.
const READY_SUFFIX: &str = ".sock";
/// Suffix of a socket whose VM is not held yet.
const PENDING_SUFFIX: &str = ".pending";
/// How long a client waits for a warm VM to say it is claimed.
const CLAIM_WAIT: Duration = Duration::from_secs(2);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl WarmHold {
    /// Binds a new warm VM's socket in `dir` (made, private to this user,
    /// when missing), under a name clients ignore until the VM is held.
    /// `idle`: how long it waits for a claim once held.
    ///
    /// # Errors
    /// [`WarmError::Socket`].
    pub fn bind(dir: &Path, idle: Option<Duration>) -> Result<Arc<Self>, WarmError> {
        let fail = |path: &Path| {
            let path = path.to_path_buf();
            move |cause| WarmError::Socket { path, cause }
        };
        make_dir(dir).map_err(fail(dir))?;
        let stem = format!("{}-{:08x}", std::process::id(), rand_u32());
        let pending = dir.join(format!("{stem}{PENDING_SUFFIX}"));
        let ready = dir.join(format!("{stem}{READY_SUFFIX}"));
        let listener = UnixListener::bind(&pending).map_err(fail(&pending))?;
        Ok(Arc::new(Self {
            stage: Mutex::new(Stage::Restoring),
            changed: Condvar::new(),
            listener: Mutex::new(Some(listener)),
            published: AtomicBool::new(false),
            pending,
            ready,
            idle,
            client: Mutex::new(None),
            finished: AtomicBool::new(false),
            memory_ready: Mutex::new(None),
            later: Mutex::new(Vec::new()),
            own_streams: Mutex::new(Vec::new()),
            stats_baseline: Mutex::new(None),
        }))
    }

    /// Starts the thread that publishes the socket once vCPU 0 is held and
    /// serves the claim. Called before the seccomp filters go in: the
    /// thread gets the process's filter, which allows what it does.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn serve(self: &Arc<Self>) -> std::io::Result<()> {
        let me = Arc::clone(self);
        std::thread::Builder::new()
            .name("kiln-warm".into())
            .spawn(move || {
                crate::stop::block_vcpu_signals();
                me.serve_claims();
            })
            .map(drop)
    }

    /// Keeps the counters read at the claim: the run's `--stats` count
    /// from there.
    pub fn set_stats_baseline(&self, baseline: crate::VmStats) {
        *lock(&self.stats_baseline) = Some(baseline);
    }

    /// The counters at the claim, when the client asked for `--stats`.
    pub fn stats_baseline(&self) -> Option<crate::VmStats> {
        lock(&self.stats_baseline).clone()
    }

    /// Notes the vCPUs (besides vCPU 0) to start once the VM is claimed.
    pub fn start_on_claim(&self, vcpus: Vec<u32>) {
        *lock(&self.later) = vcpus;
    }

    /// The vCPUs to start now that the VM is claimed (once).
    pub fn vcpus_to_start(&self) -> Vec<u32> {
        std::mem::take(&mut *lock(&self.later))
    }

    /// Publishes the socket only once `ready` is set as well (the write
    /// set's copy, [`crate::vstate::memory::GuestMemoryLayout::working_set_copied`]).
    pub fn publish_after(&self, ready: Arc<AtomicBool>) {
        *lock(&self.memory_ready) = Some(ready);
    }

    /// vCPU 0 at the guest's resume report: waits until a client claims
    /// the VM (`Some`) or the run is stopped first (`None`; the run loop
    /// then sees the stop). Once the socket is published vCPU 0 accepts
    /// the claim itself: the client's connection wakes the thread that
    /// runs the guest, with no second thread to hand it over (a wake-up
    /// of a sleeping thread took 0.1 ms and more on these hosts).
    pub fn wait_for_claim(&self) -> Option<Claim> {
        {
            let mut stage = lock(&self.stage);
            if matches!(*stage, Stage::Restoring) {
                *stage = Stage::Held;
                self.changed.notify_all();
            }
        }
        loop {
            match &*lock(&self.stage) {
                Stage::Claimed(claim) => return Some(claim.clone()),
                Stage::Stopped => return None,
                Stage::Restoring | Stage::Held => {}
            }
            if crate::stop::requested() || crate::stop::terminated_by().is_some() {
                return None;
            }
            let listening = self
                .published
                .load(Ordering::SeqCst)
                .then(|| lock(&self.listener).as_ref().map(AsRawFd::as_raw_fd))
                .flatten();
            let Some(fd) = listening else {
                // Not offered yet: the serving thread publishes it.
                let stage = lock(&self.stage);
                if matches!(*stage, Stage::Held) {
                    let _ = self.changed.wait_timeout(stage, Duration::from_millis(20));
                }
                continue;
            };
            // Wake at least every 20 ms to notice a stop meanwhile.
            if !readable(fd, 20) {
                continue;
            }
            let accepted = lock(&self.listener).as_ref().map(UnixListener::accept);
            let Some(Ok((stream, _))) = accepted else {
                continue;
            };
            match self.take_claim(stream) {
                Taken::Claimed(claim) => return Some(claim),
                Taken::Stop => {
                    self.withdraw();
                    self.stop_run();
                    return None;
                }
                Taken::Refused => {}
            }
        }
    }

    /// The claim that runs this VM, if one came.
    pub fn claim(&self) -> Option<Claim> {
        match &*lock(&self.stage) {
            Stage::Claimed(claim) => Some(claim.clone()),
            _ => None,
        }
    }

    /// Tells the client how the run ended (its exit status) and lets go.
    pub fn finish(&self, status: u8) {
        self.send_last(&serde_json::json!({ "exit": status }));
    }

    /// The program has ended and all its output is out on the client's
    /// streams: a client that asked for no report (`--timings`,
    /// `--timings-json`) gets its exit status now, before the VM is taken
    /// down — it would wait ~0.5 ms longer for nothing it uses. Otherwise
    /// [`Self::finish`] answers once the report is written.
    pub fn program_ended(&self, status: u8) {
        let wants_report = matches!(
            &*lock(&self.stage),
            Stage::Claimed(c) if c.request.wants_report()
        );
        if !wants_report {
            self.finish(status);
            self.release_client_streams();
        }
    }

    /// Puts this process's own standard streams back in place of the
    /// client's, so that the client's pipes and terminal are no longer held
    /// open here: a reader of the client's output (`kiln run … | cat`,
    /// a caller capturing it) sees its end now, not when this process has
    /// finished taking its VM down. Nothing more is written for the client.
    fn release_client_streams(&self) {
        let own = std::mem::take(&mut *lock(&self.own_streams));
        for (target, fd) in own.iter().enumerate() {
            // SAFETY: dup2 of a descriptor this process owns onto one of
            // its standard descriptors (which the devices no longer write:
            // the program has ended and its output is out).
            unsafe { libc::dup2(fd.as_raw_fd(), target as RawFd) };
        }
    }

    /// Tells the client the run failed with `message`.
    pub fn fail(&self, message: &str) {
        self.send_last(&serde_json::json!({ "error": message }));
    }

    fn send_last(&self, message: &serde_json::Value) {
        self.finished.store(true, Ordering::SeqCst);
        if let Some(client) = lock(&self.client).take() {
            let _ = send_line(&client, message);
            let _ = client.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Removes the socket (both names) so that no client finds it (the
    /// run is over, or never got as far as holding the guest).
    pub fn withdraw(&self) {
        let _ = std::fs::remove_file(&self.pending);
        let _ = std::fs::remove_file(&self.ready);
    }

    /// Ends the run the way SIGTERM does (the devices thread stops the VM
    /// in order); `Stopped` first, so a held vCPU lets go.
    fn stop_run(&self) {
        {
            let mut stage = lock(&self.stage);
            if !matches!(*stage, Stage::Claimed(_)) {
                *stage = Stage::Stopped;
            }
            self.changed.notify_all();
        }
        // SAFETY: kill(2) on this very process with a signal kiln-vmm
        // catches (`stop::catch_termination`); no memory is involved.
        unsafe { libc::kill(libc::getpid(), libc::SIGTERM) };
    }

    /// The serving thread: publish once held, keep the idle limit until
    /// vCPU 0 takes a claim (or a stop), then withdraw the socket and
    /// watch the client.
    fn serve_claims(&self) {
        // Until vCPU 0 is held nobody can use the VM: keep the socket's
        // pending name.
        {
            let mut stage = lock(&self.stage);
            while matches!(*stage, Stage::Restoring) {
                stage = self
                    .changed
                    .wait(stage)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            if matches!(*stage, Stage::Stopped) {
                self.withdraw();
                return;
            }
        }
        let memory_ready = lock(&self.memory_ready).clone();
        if let Some(ready) = memory_ready {
            while !ready.load(Ordering::SeqCst) {
                if crate::stop::terminated_by().is_some() {
                    self.withdraw();
                    return;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        if std::fs::rename(&self.pending, &self.ready).is_err() {
            self.withdraw();
            self.stop_run();
            return;
        }
        self.published.store(true, Ordering::SeqCst);
        self.changed.notify_all();
        // vCPU 0 takes the claim (or a stop); this thread keeps the idle
        // limit and notices a signal that stopped the run meanwhile.
        let deadline = self.idle.map(|d| Instant::now() + d);
        let mut stage = lock(&self.stage);
        loop {
            match &*stage {
                Stage::Claimed(_) => break,
                Stage::Stopped => {
                    drop(stage);
                    self.withdraw();
                    return;
                }
                Stage::Restoring | Stage::Held => {}
            }
            if crate::stop::terminated_by().is_some() {
                drop(stage);
                self.withdraw();
                return;
            }
            let wait = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if wait == Some(Duration::ZERO) {
                drop(stage);
                self.withdraw();
                self.stop_run();
                return;
            }
            let slice = wait.map_or(Duration::from_millis(100), |w| {
                w.min(Duration::from_millis(100))
            });
            stage = self
                .changed
                .wait_timeout(stage, slice)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        drop(stage);
        // Claimed: no other client may find or reach this VM now.
        self.withdraw();
        drop(lock(&self.listener).take());
        // The client's hang-up before the run is over ends the run, as a
        // foreground `kiln run` ends with its terminal.
        let reader = lock(&self.client).as_ref().and_then(|c| c.try_clone().ok());
        let Some(reader) = reader else {
            return;
        };
        let mut reader = BufReader::new(reader);
        let mut line = String::new();
        while matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
            line.clear();
        }
        if !self.finished.load(Ordering::SeqCst) {
            self.stop_run();
        }
    }

    /// Reads a connection's request and descriptors; a claim makes them
    /// this process's standard streams and releases vCPU 0.
    fn take_claim(&self, stream: UnixStream) -> Taken {
        if !same_user(&stream) {
            return Taken::Refused;
        }
        let _ = stream.set_read_timeout(Some(CLAIM_WAIT));
        let Ok((line, fds)) = receive(&stream) else {
            return Taken::Refused;
        };
        let Ok(request) = serde_json::from_str::<WarmRequest>(&line) else {
            return Taken::Refused;
        };
        if request.stop {
            let _ = writeln!(&stream, "{}", serde_json::json!({ "stopping": true }));
            return Taken::Stop;
        }
        if fds.len() != 3 {
            return Taken::Refused;
        }
        // Held until the claim is made, so that the serving thread's idle
        // limit cannot stop the VM in between: a VM stopped first refuses.
        let mut stage = lock(&self.stage);
        if !matches!(*stage, Stage::Held) {
            return Taken::Refused;
        }
        let at = Instant::now();
        *lock(&self.own_streams) = own_streams();
        for (target, fd) in fds.iter().enumerate() {
            // SAFETY: dup2 onto this process's standard descriptors, which
            // kiln-vmm writes the program's output to by number; `fd` is
            // a descriptor just received and owned here.
            if unsafe { libc::dup2(fd.as_raw_fd(), target as RawFd) } < 0 {
                return Taken::Refused;
            }
        }
        drop(fds);
        let _ = stream.set_read_timeout(None);
        if send_line(
            &stream,
            &serde_json::json!({ "claimed": std::process::id() }),
        )
        .is_err()
        {
            // The client gave up (its wait ran out): nobody to run for.
            return Taken::Stop;
        }
        // The client's connection is where the run's end is told (and
        // the serving thread watches it for a hang-up).
        *lock(&self.client) = Some(stream);
        let claim = Claim { request, at };
        *stage = Stage::Claimed(claim.clone());
        self.changed.notify_all();
        Taken::Claimed(claim)
    }
}

/// Copies of this process's standard input, output and error (close on
/// exec), or none if one cannot be copied.
fn own_streams() -> Vec<OwnedFd> {
    (0..3)
        .map(|fd| {
            // SAFETY: F_DUPFD_CLOEXEC makes a new descriptor (or fails);
            // it is owned by nobody else.
            let copy = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
            // SAFETY: `copy` is a fresh descriptor of this process.
            (copy >= 0).then(|| unsafe { OwnedFd::from_raw_fd(copy) })
        })
        .collect::<Option<Vec<_>>>()
        .unwrap_or_default()
}

/// What one connection to a held VM turned out to be.
enum Taken {
    Claimed(Claim),
    Stop,
    Refused,
}

/// Whether `fd` becomes readable within `ms` milliseconds.
fn readable(fd: RawFd, ms: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, ms) > 0 }
}

/// Whether the peer of `stream` runs as this process's user.
fn same_user(stream: &UnixStream) -> bool {
    let mut cred = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED fills a ucred of `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            std::ptr::addr_of_mut!(cred).cast(),
            &mut len,
        )
    };
    // SAFETY: geteuid has no preconditions.
    rc == 0 && cred.uid == unsafe { libc::geteuid() }
}

/// A random word for socket names (collisions only cost a retry of bind).
fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    // SAFETY: getrandom writes at most 4 bytes into `b`.
    unsafe { libc::getrandom(b.as_mut_ptr().cast(), 4, 0) };
    u32::from_le_bytes(b)
}

/// Most descriptors one message carries.
const MAX_FDS: usize = 3;

/// Writes `message` and a newline to the client in one write: written
/// straight to the socket, JSON's formatter would send each piece alone
/// (eight system calls for `{"exit":0}`, each waking the client).
fn send_line(mut stream: &UnixStream, message: &serde_json::Value) -> std::io::Result<()> {
    let mut line = message.to_string();
    line.push('\n');
    stream.write_all(line.as_bytes())
}

/// Sends `line` (a newline is added) with `fds` attached.
fn send(stream: &UnixStream, line: &str, fds: &[RawFd]) -> std::io::Result<()> {
    let mut bytes = line.as_bytes().to_vec();
    bytes.push(b'\n');
    let mut iov = libc::iovec {
        iov_base: bytes.as_mut_ptr().cast(),
        iov_len: bytes.len(),
    };
    let data_len = std::mem::size_of_val(fds);
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(data_len as u32) } as usize;
    let mut control = vec![0u8; space];
    // SAFETY: msghdr is plain data; zeroed is valid and filled below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space;
        // SAFETY: `control` holds CMSG_SPACE(data_len) bytes, enough for
        // one header and `fds`; CMSG_FIRSTHDR points into it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(data_len as u32) as usize;
            std::ptr::copy_nonoverlapping(
                fds.as_ptr().cast::<u8>(),
                libc::CMSG_DATA(cmsg),
                data_len,
            );
        }
    }
    // SAFETY: `msg` points at `iov` and `control`, both alive for the call.
    let sent = unsafe { libc::sendmsg(stream.as_raw_fd(), &msg, libc::MSG_NOSIGNAL) };
    if sent < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if sent as usize != bytes.len() {
        return Err(std::io::Error::from(std::io::ErrorKind::WriteZero));
    }
    Ok(())
}

/// Receives one line (at most 64 KiB, in one message) and the descriptors
/// sent with it.
fn receive(stream: &UnixStream) -> std::io::Result<(String, Vec<OwnedFd>)> {
    let mut bytes = vec![0u8; 64 * 1024];
    let mut iov = libc::iovec {
        iov_base: bytes.as_mut_ptr().cast(),
        iov_len: bytes.len(),
    };
    // SAFETY: CMSG_SPACE only computes a size.
    let space =
        unsafe { libc::CMSG_SPACE((MAX_FDS * std::mem::size_of::<RawFd>()) as u32) } as usize;
    let mut control = vec![0u8; space];
    // SAFETY: msghdr is plain data; zeroed is valid and filled below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space;
    // SAFETY: `msg` points at `iov` and `control`, both alive for the
    // call; MSG_CMSG_CLOEXEC keeps the descriptors from any child.
    let got = unsafe { libc::recvmsg(stream.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if got < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let mut fds = Vec::new();
    // SAFETY: the kernel filled `msg_control` with `msg_controllen` bytes
    // of headers, which CMSG_FIRSTHDR/CMSG_NXTHDR walk within; each
    // SCM_RIGHTS payload holds descriptors now owned by this process.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let payload = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let count = payload / std::mem::size_of::<RawFd>();
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidData));
    }
    bytes.truncate(got as usize);
    let text = String::from_utf8(bytes)
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidData))?;
    Ok((text.trim_end().to_string(), fds))
}

/// The client's side of a claimed warm VM.
pub struct WarmClient {
    reader: BufReader<UnixStream>,
    /// The warm VM's process (signals are forwarded to it).
    pub pid: u32,
}

/// How a warm VM's run ended, as its client hears it.
#[derive(Debug)]
pub enum WarmOutcome {
    /// The run's exit status.
    Exited(u8),
    /// The run failed; the warm VM's message.
    Failed(String),
}

/// Makes `dir`, where a snapshot's warm VMs keep their sockets (and
/// `kiln warm` their logs), private to this user.
///
/// # Errors
/// When it cannot be made.
pub fn make_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// The sockets in `dir` whose names end in `suffix`, oldest first.
fn sockets(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.to_str().is_some_and(|s| s.ends_with(suffix)))
        .map(|p| {
            let when = std::fs::symlink_metadata(&p)
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            (when, p)
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, p)| p).collect()
}

/// The claimable warm VMs' sockets in `dir`, oldest first.
pub fn ready_sockets(dir: &Path) -> Vec<PathBuf> {
    sockets(dir, READY_SUFFIX)
}

/// The sockets of `dir`'s warm VMs that are still restoring (bound, not
/// offered yet).
pub fn pending_sockets(dir: &Path) -> Vec<PathBuf> {
    sockets(dir, PENDING_SUFFIX)
}

/// The process a warm VM's socket belongs to (its name starts with it).
pub fn socket_pid(socket: &Path) -> Option<u32> {
    socket
        .file_name()?
        .to_str()?
        .split('-')
        .next()?
        .parse()
        .ok()
}

/// Sends `line` with `fds` to the warm VM at `socket` and reads its one
/// answer line (waiting at most [`CLAIM_WAIT`]); `None` when it does not
/// answer. A socket nobody listens on any more (its VM was killed) is
/// removed.
fn ask(socket: &Path, line: &str, fds: &[RawFd]) -> Option<(BufReader<UnixStream>, String)> {
    let stream = match UnixStream::connect(socket) {
        Ok(s) => s,
        Err(e) => {
            if e.kind() == std::io::ErrorKind::ConnectionRefused {
                let _ = std::fs::remove_file(socket);
            }
            return None;
        }
    };
    send(&stream, line, fds).ok()?;
    stream.set_read_timeout(Some(CLAIM_WAIT)).ok()?;
    let mut reader = BufReader::new(stream);
    let mut answer = String::new();
    reader.read_line(&mut answer).ok()?;
    Some((reader, answer))
}

/// Claims one warm VM of `dir` for `request`, handing it this process's
/// standard input, output and error; `None` when none answers.
pub fn claim(dir: &Path, request: &WarmRequest) -> Option<WarmClient> {
    let line = serde_json::to_string(request).ok()?;
    ready_sockets(dir).iter().find_map(|socket| {
        let (reader, answer) = ask(socket, &line, &[0, 1, 2])?;
        let pid = serde_json::from_str::<serde_json::Value>(&answer)
            .ok()?
            .get("claimed")?
            .as_u64()?;
        reader.get_ref().set_read_timeout(None).ok()?;
        Some(WarmClient {
            reader,
            pid: pid as u32,
        })
    })
}

/// Asks every held warm VM of `dir` to stop; how many said they would.
pub fn stop_all(dir: &Path) -> usize {
    let request = WarmRequest {
        stop: true,
        ..WarmRequest::default()
    };
    let Ok(line) = serde_json::to_string(&request) else {
        return 0;
    };
    ready_sockets(dir)
        .iter()
        .filter_map(|socket| ask(socket, &line, &[]))
        .filter(|(_, answer)| answer.contains("stopping"))
        .count()
}

impl WarmClient {
    /// Waits for the end of the run.
    ///
    /// # Errors
    /// When the warm VM went away without saying how its run ended.
    pub fn wait(mut self) -> std::io::Result<WarmOutcome> {
        let mut line = String::new();
        loop {
            line.clear();
            match self.reader.read_line(&mut line) {
                Ok(0) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("the warm VM (process {}) ended without a status", self.pid),
                    ))
                }
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let Ok(value) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            if let Some(status) = value.get("exit").and_then(serde_json::Value::as_u64) {
                return Ok(WarmOutcome::Exited(status.min(255) as u8));
            }
            if let Some(message) = value.get("error").and_then(serde_json::Value::as_str) {
                return Ok(WarmOutcome::Failed(message.to_string()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_and_descriptors_cross_a_socket_pair() {
        let (a, b) = UnixStream::pair().unwrap();
        let file = std::fs::File::open("/dev/null").unwrap();
        send(&a, "{\"x\":1}", &[file.as_raw_fd()]).unwrap();
        let (line, fds) = receive(&b).unwrap();
        assert_eq!(line, "{\"x\":1}");
        assert_eq!(fds.len(), 1);
        // The received descriptor is another open file of /dev/null.
        let meta = std::fs::metadata(format!("/proc/self/fd/{}", fds[0].as_raw_fd())).unwrap();
        assert_eq!(
            std::os::unix::fs::MetadataExt::rdev(&meta),
            std::os::unix::fs::MetadataExt::rdev(&std::fs::metadata("/dev/null").unwrap())
        );
    }

    #[test]
    fn only_published_sockets_are_offered_and_dead_ones_are_removed() {
        let dir = std::env::temp_dir().join(format!("kiln-warm-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let hold = WarmHold::bind(&dir, None).unwrap();
        assert!(
            ready_sockets(&dir).is_empty(),
            "a pending socket is offered"
        );
        // A leftover of a VM that died: bound once, nobody listens.
        let dead = dir.join(format!("dead{READY_SUFFIX}"));
        drop(UnixListener::bind(&dead).unwrap());
        assert_eq!(ready_sockets(&dir), vec![dead.clone()]);
        assert!(claim(&dir, &WarmRequest::default()).is_none());
        assert!(!dead.exists(), "the dead socket stays");
        hold.withdraw();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
