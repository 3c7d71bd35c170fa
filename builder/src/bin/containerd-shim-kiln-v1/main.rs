//! `containerd-shim-kiln-v1`: containerd's runtime v2 shim for kiln
//! (`ctr run --runtime io.containerd.kiln.v1 REF ID`, or a Kubernetes
//! RuntimeClass with handler `kiln`; docs/kubernetes.md).
//!
//! containerd starts one shim per task and talks ttrpc to it (the
//! `containerd-shim` crate serves the protocol); the image is the
//! container form `kiln push --containerd` publishes, whose root
//! filesystem holds the `.kiln` file at `kiln/image.kiln`. Each task is
//! one `kiln run` process (found beside this program, or at `$KILN_BIN`)
//! with the task's stdio, arguments and environment: the VM is the task.
//!
//! The crate's reaper reaps every child on SIGCHLD, so exits reach the
//! task through its monitor (`monitor_subscribe`), never `Child::wait`.

mod bundle;
mod stdio;
mod task;

use std::sync::Arc;

use containerd_shim::{
    self as shim, api::DeleteResponse, publisher::RemotePublisher, Config, ExitSignal, Flags,
    StartOpts,
};

/// The hidden argument that makes this program a pod sandbox's
/// placeholder process (see [`pause`]).
const PAUSE_ARG: &str = "--kiln-pod-sandbox";

/// This program's name, should its path be unknown.
const SHIM_NAME: &str = "containerd-shim-kiln-v1";

/// The runtime name containerd maps to this binary
/// (`io.containerd.kiln.v1` → `containerd-shim-kiln-v1`).
const RUNTIME_ID: &str = "io.containerd.kiln.v1";

/// The shim process: its command-line actions (`start`, `delete`) and
/// the task service it serves.
struct KilnShim {
    /// containerd's namespace of the task (events are published in it).
    namespace: String,
    /// The task's id.
    id: String,
    /// The bundle directory (`-bundle`, else the working directory
    /// containerd starts the shim in).
    bundle: std::path::PathBuf,
    /// Set by the task service's Shutdown; the server stops then.
    exit: Arc<ExitSignal>,
}

impl shim::Shim for KilnShim {
    type T = task::KilnTask;

    fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        let bundle = if args.bundle.is_empty() {
            std::env::current_dir().unwrap_or_default()
        } else {
            args.bundle.clone().into()
        };
        KilnShim {
            namespace: args.namespace.clone(),
            id: args.id.clone(),
            bundle,
            exit: Arc::new(ExitSignal::default()),
        }
    }

    /// Starts the long-lived shim process (this binary again, serving
    /// ttrpc on a socket named after the task) and answers its address.
    fn start_shim(&mut self, opts: StartOpts) -> shim::Result<String> {
        let grouping = opts.id.clone();
        let (_pid, address) = shim::spawn(opts, &grouping, Vec::new())?;
        // The server reads it back to remove its socket when it stops.
        shim::util::write_address(&address)?;
        Ok(address)
    }

    /// Cleans up after a shim that died: unmounts the task's root
    /// filesystem and reports the task killed.
    fn delete_shim(&mut self) -> shim::Result<DeleteResponse> {
        bundle::Bundle::new(&self.bundle)
            .unmount_rootfs()
            .map_err(|e| shim::Error::Other(e.to_string()))?;
        Ok(DeleteResponse {
            exit_status: 128 + libc::SIGKILL as u32,
            exited_at: shim::protos::protobuf::MessageField::some(shim::util::timestamp()?),
            ..Default::default()
        })
    }

    fn wait(&mut self) {
        self.exit.wait();
    }

    fn create_task_service(&self, publisher: RemotePublisher) -> Self::T {
        task::KilnTask::new(
            self.id.clone(),
            self.namespace.clone(),
            publisher,
            self.exit.clone(),
        )
    }
}

/// A Kubernetes pod sandbox's process. kiln appliances need no shared
/// namespaces to hold, so the sandbox only has to exist until it is
/// killed, like the `pause` program of a pod's sandbox image — which is
/// never run on the host.
fn pause() -> ! {
    loop {
        // SAFETY: pause(2) only waits for a signal; a default-action
        // signal (SIGTERM, SIGKILL) ends the process.
        unsafe { libc::pause() };
    }
}

fn main() {
    if std::env::args_os().nth(1).is_some_and(|a| a == PAUSE_ARG) {
        pause();
    }
    shim::run::<KilnShim>(RUNTIME_ID, None);
}
