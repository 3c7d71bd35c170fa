//! The task service containerd calls over ttrpc: one task per shim, run
//! as one `kiln run` process. Its state (created → running → stopped)
//! lives behind one lock; a condition variable wakes Wait when the
//! process ends.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use containerd_shim::monitor::{monitor_subscribe, wait_pid, Topic};
use containerd_shim::protos::events::task::{TaskCreate, TaskDelete, TaskExit, TaskIO, TaskStart};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::{MessageDyn, MessageField};
use containerd_shim::protos::topics;
use containerd_shim::protos::ttrpc::{self, Code};
use containerd_shim::protos::types::task::ProcessInfo;
use containerd_shim::{
    api, publisher::RemotePublisher, Context, ExitSignal, TtrpcContext, TtrpcResult,
};

use crate::bundle::{Bundle, BundleError};
use crate::stdio::{self, StdioError};

/// Errors of the task service, each with the gRPC code containerd turns
/// into its own error kinds.
#[derive(Debug, thiserror::Error)]
pub enum TaskError {
    /// The bundle could not be read or mounted.
    #[error(transparent)]
    Bundle(#[from] BundleError),
    /// A standard stream could not be opened.
    #[error(transparent)]
    Stdio(#[from] StdioError),
    /// No task by that id (or an exec id: kiln has no exec).
    #[error("{0}: no such task in this shim")]
    NotFound(String),
    /// Create for a task that exists.
    #[error("task {0} already exists")]
    Exists(String),
    /// The task is not in the state the call needs.
    #[error("task {id} is {state}: {wanted}")]
    WrongState {
        /// The task.
        id: String,
        /// Its state.
        state: &'static str,
        /// What the call needs.
        wanted: &'static str,
    },
    /// Something kiln does not do.
    #[error("{0}")]
    Unsupported(&'static str),
    /// `kiln run` did not start.
    #[error("starting {program}: {source}")]
    Spawn {
        /// The kiln binary.
        program: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A signal could not be sent.
    #[error("signalling task {id} (pid {pid}): {source}")]
    Signal {
        /// The task.
        id: String,
        /// Its process.
        pid: u32,
        /// Why.
        source: std::io::Error,
    },
}

impl From<TaskError> for ttrpc::Error {
    fn from(e: TaskError) -> Self {
        let code = match &e {
            TaskError::NotFound(_) => Code::NOT_FOUND,
            TaskError::Exists(_) => Code::ALREADY_EXISTS,
            TaskError::WrongState { .. } => Code::FAILED_PRECONDITION,
            TaskError::Unsupported(_) => Code::UNIMPLEMENTED,
            TaskError::Bundle(BundleError::NotKiln(_) | BundleError::Spec { .. }) => {
                Code::INVALID_ARGUMENT
            }
            _ => Code::INTERNAL,
        };
        ttrpc::Error::RpcStatus(ttrpc::get_status(code, e.to_string()))
    }
}

/// Where the task is in its life.
#[derive(Clone, Copy)]
enum Phase {
    /// Created: rootfs mounted, `kiln run` not started.
    Created,
    /// `kiln run` is running as `pid`.
    Running { pid: u32 },
    /// It ended (pid 0: killed before it started).
    Stopped {
        pid: u32,
        status: u32,
        exited_at: (i64, i32),
    },
}

impl Phase {
    fn pid(self) -> u32 {
        match self {
            Phase::Created => 0,
            Phase::Running { pid } | Phase::Stopped { pid, .. } => pid,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Phase::Created => "created",
            Phase::Running { .. } => "running",
            Phase::Stopped { .. } => "stopped",
        }
    }
}

/// What a task runs.
enum Program {
    /// `kiln run` with these arguments.
    Kiln(Vec<OsString>),
    /// A pod sandbox's placeholder (this program, pausing).
    PodSandbox,
}

/// The one task of this shim.
struct Record {
    bundle: Bundle,
    program: Program,
    stdin: String,
    stdout: String,
    stderr: String,
    /// Whether the task asked for a terminal.
    wants_terminal: bool,
    /// Its terminal, once started.
    terminal: Option<stdio::Terminal>,
    phase: Phase,
}

/// The ttrpc task service.
pub struct KilnTask {
    /// The task's id (containerd's container id).
    id: String,
    /// containerd namespace for events.
    namespace: String,
    publisher: Arc<RemotePublisher>,
    /// Signalled by Shutdown.
    exit: Arc<ExitSignal>,
    /// The task, and the condition Wait sleeps on.
    state: Arc<(Mutex<Option<Record>>, Condvar)>,
}

impl KilnTask {
    /// The service for task `id` in `namespace`.
    pub fn new(
        id: String,
        namespace: String,
        publisher: RemotePublisher,
        exit: Arc<ExitSignal>,
    ) -> Self {
        KilnTask {
            id,
            namespace,
            publisher: Arc::new(publisher),
            exit,
            state: Arc::new((Mutex::new(None), Condvar::new())),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Record>> {
        self.state.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The task a request names (`id`, no exec id), locked.
    fn record<'a>(
        &self,
        guard: &'a mut MutexGuard<'_, Option<Record>>,
        id: &str,
        exec_id: &str,
    ) -> Result<&'a mut Record, TaskError> {
        if id != self.id || !exec_id.is_empty() {
            return Err(TaskError::NotFound(format!("{id} {exec_id}").trim().into()));
        }
        guard.as_mut().ok_or_else(|| TaskError::NotFound(id.into()))
    }

    fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        publish(&self.publisher, &self.namespace, topic, event);
    }

    fn create_task(
        &self,
        req: api::CreateTaskRequest,
    ) -> Result<api::CreateTaskResponse, TaskError> {
        let mut guard = self.lock();
        if guard.is_some() || req.id != self.id {
            return Err(TaskError::Exists(req.id));
        }
        if !req.checkpoint.is_empty() {
            return Err(TaskError::Unsupported(
                "kiln's shim does not restore containerd checkpoints (use kiln run --from-snapshot)",
            ));
        }
        let bundle = Bundle::new(&req.bundle);
        let spec = bundle.spec()?;
        bundle.mount_rootfs(&req.rootfs)?;
        let program = if spec.is_pod_sandbox() {
            Program::PodSandbox
        } else {
            match bundle.image() {
                Ok(image) => {
                    Program::Kiln(spec.run_args(&image, !req.stdin.is_empty(), req.terminal))
                }
                Err(e) => {
                    let _ = bundle.unmount_rootfs();
                    return Err(e.into());
                }
            }
        };
        *guard = Some(Record {
            bundle,
            program,
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            wants_terminal: req.terminal,
            terminal: None,
            phase: Phase::Created,
        });
        drop(guard);
        self.publish(
            topics::TASK_CREATE_EVENT_TOPIC,
            Box::new(TaskCreate {
                container_id: req.id.clone(),
                bundle: req.bundle.clone(),
                rootfs: req.rootfs.clone(),
                io: MessageField::some(TaskIO {
                    stdin: req.stdin,
                    stdout: req.stdout,
                    stderr: req.stderr,
                    terminal: req.terminal,
                    ..Default::default()
                }),
                ..Default::default()
            }),
        );
        Ok(api::CreateTaskResponse::default())
    }

    fn start_task(&self, req: api::StartRequest) -> Result<api::StartResponse, TaskError> {
        let mut guard = self.lock();
        let record = self.record(&mut guard, &req.id, &req.exec_id)?;
        if !matches!(record.phase, Phase::Created) {
            return Err(TaskError::WrongState {
                id: req.id,
                state: record.phase.name(),
                wanted: "only a created task starts",
            });
        }
        let (program, args) = match &record.program {
            Program::Kiln(args) => (
                kiln_builder::daemon::companion("KILN_BIN", "kiln"),
                args.clone(),
            ),
            Program::PodSandbox => (
                std::env::current_exe().unwrap_or_else(|_| crate::SHIM_NAME.into()),
                vec![crate::PAUSE_ARG.into()],
            ),
        };
        let mut command = Command::new(&program);
        command.args(&args).current_dir(record.bundle.dir());
        let mut terminal = None;
        if record.wants_terminal {
            let (pty, child_side) = stdio::terminal(&record.stdin, &record.stdout)?;
            let clone = |fd: &std::os::fd::OwnedFd| {
                fd.try_clone()
                    .map_err(|e| TaskError::Stdio(StdioError::Pty(e)))
            };
            command
                .stdin(clone(&child_side)?)
                .stdout(clone(&child_side)?)
                .stderr(child_side);
            // SAFETY: setsid and ioctl are async-signal-safe and touch no
            // memory of the parent: the program leads a session of its own
            // whose controlling terminal is its stdin, so a resize reaches
            // it as SIGWINCH.
            unsafe {
                command.pre_exec(|| {
                    if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            terminal = Some(pty);
        } else {
            let stdin = if record.stdin.is_empty() {
                std::process::Stdio::null()
            } else {
                stdio::input(&record.stdin)?
            };
            command
                .stdin(stdin)
                .stdout(stdio::output("stdout", &record.stdout)?)
                .stderr(stdio::output("stderr", &record.stderr)?);
        }
        // Subscribed before the spawn: the reaper may see the exit before
        // this function returns.
        let exits = monitor_subscribe(Topic::Pid).map_err(|e| TaskError::Spawn {
            program: program.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let child = command
            .spawn()
            .map_err(|source| TaskError::Spawn { program, source })?;
        let pid = child.id();
        // Never waited for here: the crate's reaper collects it.
        drop(child);
        record.phase = Phase::Running { pid };
        record.terminal = terminal;
        drop(guard);
        let state = self.state.clone();
        let publisher = self.publisher.clone();
        let (id, namespace) = (self.id.clone(), self.namespace.clone());
        std::thread::spawn(move || {
            let code = wait_pid(pid as i32, exits);
            let exited_at = now();
            let status = u32::try_from(code).unwrap_or(255);
            let (lock, ended) = &*state;
            if let Some(record) = lock.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
                record.phase = Phase::Stopped {
                    pid,
                    status,
                    exited_at,
                };
            }
            ended.notify_all();
            publish(
                &publisher,
                &namespace,
                topics::TASK_EXIT_EVENT_TOPIC,
                exit_event(&id, pid, status, exited_at),
            );
        });
        self.publish(
            topics::TASK_START_EVENT_TOPIC,
            Box::new(TaskStart {
                container_id: self.id.clone(),
                pid,
                ..Default::default()
            }),
        );
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }

    fn wait_task(&self, req: api::WaitRequest) -> Result<api::WaitResponse, TaskError> {
        let mut guard = self.lock();
        self.record(&mut guard, &req.id, &req.exec_id)?;
        loop {
            match guard.as_ref().map(|r| r.phase) {
                Some(Phase::Stopped {
                    status, exited_at, ..
                }) => {
                    return Ok(api::WaitResponse {
                        exit_status: status,
                        exited_at: MessageField::some(timestamp(exited_at)),
                        ..Default::default()
                    })
                }
                Some(_) => {
                    guard = self.state.1.wait(guard).unwrap_or_else(|e| e.into_inner());
                }
                None => return Err(TaskError::NotFound(req.id)),
            }
        }
    }

    fn kill_task(&self, req: api::KillRequest) -> Result<(), TaskError> {
        let mut guard = self.lock();
        let record = self.record(&mut guard, &req.id, &req.exec_id)?;
        match record.phase {
            Phase::Running { pid } => {
                // SAFETY: kill(2) touches no memory. The pid is our
                // child's; once the reaper collects it, the exit thread
                // marks the task Stopped under this lock, so only in that
                // instant could the signal miss (ESRCH, ignored below), as
                // with containerd's own shims.
                if unsafe { libc::kill(pid as i32, req.signal as i32) } != 0 {
                    let source = std::io::Error::last_os_error();
                    if source.raw_os_error() != Some(libc::ESRCH) {
                        return Err(TaskError::Signal {
                            id: req.id,
                            pid,
                            source,
                        });
                    }
                }
                Ok(())
            }
            Phase::Created => {
                // Nothing runs yet: the task ends as if the signal had
                // killed it.
                let exited_at = now();
                let status = 128 + req.signal;
                record.phase = Phase::Stopped {
                    pid: 0,
                    status,
                    exited_at,
                };
                drop(guard);
                self.state.1.notify_all();
                self.publish(
                    topics::TASK_EXIT_EVENT_TOPIC,
                    exit_event(&self.id, 0, status, exited_at),
                );
                Ok(())
            }
            Phase::Stopped { .. } => Err(TaskError::NotFound(format!(
                "{}: process already finished",
                req.id
            ))),
        }
    }

    fn delete_task(&self, req: api::DeleteRequest) -> Result<api::DeleteResponse, TaskError> {
        let mut guard = self.lock();
        let record = self.record(&mut guard, &req.id, &req.exec_id)?;
        if let Phase::Running { .. } = record.phase {
            return Err(TaskError::WrongState {
                id: req.id,
                state: "running",
                wanted: "kill it before deleting it",
            });
        }
        record.bundle.unmount_rootfs()?;
        let (pid, status, exited_at) = match record.phase {
            Phase::Stopped {
                pid,
                status,
                exited_at,
            } => (pid, status, exited_at),
            _ => (0, 0, now()),
        };
        *guard = None;
        drop(guard);
        self.publish(
            topics::TASK_DELETE_EVENT_TOPIC,
            Box::new(TaskDelete {
                container_id: self.id.clone(),
                id: self.id.clone(),
                pid,
                exit_status: status,
                exited_at: MessageField::some(timestamp(exited_at)),
                ..Default::default()
            }),
        );
        Ok(api::DeleteResponse {
            pid,
            exit_status: status,
            exited_at: MessageField::some(timestamp(exited_at)),
            ..Default::default()
        })
    }

    fn task_state(&self, req: api::StateRequest) -> Result<api::StateResponse, TaskError> {
        let mut guard = self.lock();
        let record = self.record(&mut guard, &req.id, &req.exec_id)?;
        let (status, exit_status, exited_at) = match record.phase {
            Phase::Created => (api::Status::CREATED, 0, MessageField::none()),
            Phase::Running { .. } => (api::Status::RUNNING, 0, MessageField::none()),
            Phase::Stopped {
                status, exited_at, ..
            } => (
                api::Status::STOPPED,
                status,
                MessageField::some(timestamp(exited_at)),
            ),
        };
        Ok(api::StateResponse {
            id: self.id.clone(),
            bundle: record.bundle.dir().display().to_string(),
            pid: record.phase.pid(),
            status: status.into(),
            stdin: record.stdin.clone(),
            stdout: record.stdout.clone(),
            stderr: record.stderr.clone(),
            exit_status,
            exited_at,
            ..Default::default()
        })
    }
}

/// Publishes an event to containerd; a failure is logged, not fatal
/// (containerd also learns the exit from Wait).
fn publish(publisher: &RemotePublisher, namespace: &str, topic: &str, event: Box<dyn MessageDyn>) {
    if let Err(e) = publisher.publish(Context::default(), topic, namespace, event) {
        containerd_shim::warn!("publishing {topic}: {e}");
    }
}

/// containerd's event for the end of task `id`'s process.
fn exit_event(id: &str, pid: u32, status: u32, exited_at: (i64, i32)) -> Box<TaskExit> {
    Box::new(TaskExit {
        container_id: id.into(),
        id: id.into(),
        pid,
        exit_status: status,
        exited_at: MessageField::some(timestamp(exited_at)),
        ..Default::default()
    })
}

/// Now, as seconds and nanoseconds since the epoch.
fn now() -> (i64, i32) {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (since.as_secs() as i64, since.subsec_nanos() as i32)
}

fn timestamp((seconds, nanos): (i64, i32)) -> Timestamp {
    Timestamp {
        seconds,
        nanos,
        ..Default::default()
    }
}

impl containerd_shim::Task for KilnTask {
    fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        Ok(self.create_task(req)?)
    }

    fn start(
        &self,
        _ctx: &TtrpcContext,
        req: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        Ok(self.start_task(req)?)
    }

    fn wait(&self, _ctx: &TtrpcContext, req: api::WaitRequest) -> TtrpcResult<api::WaitResponse> {
        Ok(self.wait_task(req)?)
    }

    fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        self.kill_task(req)?;
        Ok(api::Empty::default())
    }

    fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        Ok(self.delete_task(req)?)
    }

    fn state(
        &self,
        _ctx: &TtrpcContext,
        req: api::StateRequest,
    ) -> TtrpcResult<api::StateResponse> {
        Ok(self.task_state(req)?)
    }

    fn pids(&self, _ctx: &TtrpcContext, req: api::PidsRequest) -> TtrpcResult<api::PidsResponse> {
        let mut guard = self.lock();
        let record = self.record(&mut guard, &req.id, "")?;
        let processes = match record.phase {
            Phase::Running { pid } => vec![ProcessInfo {
                pid,
                ..Default::default()
            }],
            _ => Vec::new(),
        };
        Ok(api::PidsResponse {
            processes,
            ..Default::default()
        })
    }

    fn resize_pty(
        &self,
        _ctx: &TtrpcContext,
        req: api::ResizePtyRequest,
    ) -> TtrpcResult<api::Empty> {
        let mut guard = self.lock();
        let record = self.record(&mut guard, &req.id, &req.exec_id)?;
        let Some(terminal) = &record.terminal else {
            return Err(TaskError::WrongState {
                id: req.id,
                state: record.phase.name(),
                wanted: "only a running task with a terminal is resized",
            }
            .into());
        };
        let clamp = |n: u32| u16::try_from(n).unwrap_or(u16::MAX);
        terminal
            .resize(clamp(req.width), clamp(req.height))
            .map_err(|e| TaskError::Stdio(StdioError::Pty(e)))?;
        Ok(api::Empty::default())
    }

    fn close_io(&self, _ctx: &TtrpcContext, req: api::CloseIORequest) -> TtrpcResult<api::Empty> {
        // The stdin pump ends when the client closes its end of the FIFO,
        // which it does right after asking this.
        let mut guard = self.lock();
        self.record(&mut guard, &req.id, &req.exec_id)?;
        Ok(api::Empty::default())
    }

    fn connect(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        let task_pid = self.lock().as_ref().map_or(0, |r| r.phase.pid());
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        })
    }

    fn shutdown(&self, _ctx: &TtrpcContext, _req: api::ShutdownRequest) -> TtrpcResult<api::Empty> {
        // containerd asks once the task is deleted; a running task keeps
        // its shim.
        if self.lock().is_none() {
            self.exit.signal();
        }
        Ok(api::Empty::default())
    }
}
