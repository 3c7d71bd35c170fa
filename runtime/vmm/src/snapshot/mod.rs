//! Snapshots: a VM's whole state — vCPUs, devices, memory — saved to a
//! directory and started again from there, by this process or any other
//! (`kiln run --snapshot-at`, `--from-snapshot`).
//!
//! A snapshot is taken with the guest's help (`kiln_boot::snapshot`): every
//! running vCPU parks on the snapshot port at a point where its state is
//! whole, and the last one to park writes the snapshot while the others
//! wait ([`Coordinator`]). The directory holds:
//!
//! * `state.json`: the format and kiln version, the KVM flavour, each
//!   vCPU's registers, APIC and MSRs (`arch::VcpuState`), each virtio
//!   transport's registers and queue positions, and the memory file's size
//!   and digest;
//! * `state.sha256`: the state file's digest;
//! * `memory`: guest memory as a sparse file ([`memory`]).
//!
//! It is written under a temporary name and renamed into place, so a
//! snapshot directory is always whole.

pub mod memory;
pub mod restore;
pub mod warm;

use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::GuestMem;
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use crate::arch::{Flavour, VcpuState};
use crate::devices::virtio::mmio::SavedTransport;
use crate::devices::MmioBus;
use crate::vstate::kvm::KvmError;

pub use memory::MemoryFile;
pub use restore::{restore, RestoreConfig};

/// The snapshot format this kiln writes and reads.
pub const FORMAT: u32 = 1;
/// The state file in a snapshot directory.
pub const STATE_FILE: &str = "state.json";
/// The memory file in a snapshot directory.
pub const MEMORY_FILE: &str = "memory";
/// The sha256 of the state file (hex), so that a damaged state file is
/// refused like a damaged memory file.
pub const STATE_DIGEST_FILE: &str = "state.sha256";
/// Where a restore notes that the memory file matched its digest (so the
/// next restore of the unchanged file skips reading it all).
pub const VERIFIED_STAMP: &str = "memory.verified";

/// Why a snapshot could not be taken or used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A file could not be read or written.
    #[error("{what}: {cause}")]
    Io {
        /// What was being done.
        what: String,
        /// Why it failed (in the message, not as a separate cause: the
        /// vCPU threads pass the message on as text).
        cause: std::io::Error,
    },
    /// The directory is not a snapshot kiln can read.
    #[error("{path}: not a kiln snapshot ({why})")]
    NotASnapshot {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The snapshot was made by another kiln or for another host.
    #[error("{path}: {why}")]
    Incompatible {
        /// The directory.
        path: PathBuf,
        /// What differs.
        why: String,
    },
    /// The memory file does not match the state's digest.
    #[error("refusing a corrupt snapshot: {0}")]
    Corrupt(String),
    /// This VM cannot be saved (yet).
    #[error("cannot snapshot this VM: {0}")]
    Unsupported(String),
    /// The snapshot could not be flushed or moved into place.
    #[error("the snapshot could not be completed: {0}")]
    Incomplete(String),
    /// The snapshot cannot be resumed as asked.
    #[error("cannot resume the snapshot: {0}")]
    Unresumable(String),
    /// KVM refused to read or restore a vCPU.
    #[error(transparent)]
    Kvm(#[from] KvmError),
}

/// When the snapshot is taken (`--snapshot-at`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SnapshotPoint {
    /// Just before the program's first instruction.
    ProgramEntry,
    /// Just before the program's own first instruction, once its dynamic
    /// loader has loaded and relocated its libraries (a static program's
    /// entry).
    AfterLoader,
    /// Right after the program's first output reached kiln.
    FirstOutput,
    /// When kiln receives this signal (`kill -USR2 PID`, `kiln snapshot
    /// PID`).
    Signal(i32),
}

/// The signals `--snapshot-at` takes (SIGUSR1 is kiln's own, the others
/// end or steer the run).
const SNAPSHOT_SIGNALS: &[(&str, i32)] = &[("SIGUSR2", libc::SIGUSR2)];

impl SnapshotPoint {
    /// The `kiln.snapshot_at=` value, for the points the kernel itself
    /// notices.
    pub fn kernel_option(self) -> Option<&'static str> {
        match self {
            SnapshotPoint::ProgramEntry => Some(kiln_boot::snapshot::at::PROGRAM_ENTRY),
            SnapshotPoint::AfterLoader => Some(kiln_boot::snapshot::at::AFTER_LOADER),
            SnapshotPoint::FirstOutput => Some(kiln_boot::snapshot::at::FIRST_OUTPUT),
            SnapshotPoint::Signal(_) => None,
        }
    }
}

impl std::str::FromStr for SnapshotPoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            kiln_boot::snapshot::at::PROGRAM_ENTRY => Ok(SnapshotPoint::ProgramEntry),
            kiln_boot::snapshot::at::AFTER_LOADER => Ok(SnapshotPoint::AfterLoader),
            kiln_boot::snapshot::at::FIRST_OUTPUT => Ok(SnapshotPoint::FirstOutput),
            _ => {
                let name = s.to_ascii_uppercase();
                let name = if name.starts_with("SIG") {
                    name
                } else {
                    format!("SIG{name}")
                };
                SNAPSHOT_SIGNALS
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|&(_, signal)| SnapshotPoint::Signal(signal))
                    .ok_or_else(|| {
                        format!("{s:?} is not a snapshot point (program-entry, after-loader, first-output or SIGUSR2)")
                    })
            }
        }
    }
}

/// The irqfd a snapshot signal writes: KVM turns it into the snapshot
/// interrupt (`kiln_boot::snapshot::VECTOR`) for vCPU 0, whose kernel then
/// parks every vCPU.
static SIGNAL_IRQFD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(-1);

extern "C" fn on_snapshot_signal(_signal: libc::c_int) {
    let fd = SIGNAL_IRQFD.load(std::sync::atomic::Ordering::SeqCst);
    if fd >= 0 {
        let one: u64 = 1;
        // SAFETY: write(2) is async-signal-safe; 8 bytes from a local.
        unsafe { libc::write(fd, std::ptr::addr_of!(one).cast(), 8) };
    }
}

/// Stops a snapshot signal from writing the irqfd (the VM is gone; the
/// signal's handler stays, doing nothing).
pub fn release_signal() {
    SIGNAL_IRQFD.store(-1, std::sync::atomic::Ordering::SeqCst);
}

/// Makes `signal` raise the snapshot interrupt through `irqfd` (routed to
/// vCPU 0 by the caller).
///
/// # Errors
/// When the handler cannot be installed.
pub fn catch_signal(signal: i32, irqfd: &vmm_sys_util::eventfd::EventFd) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    SIGNAL_IRQFD.store(irqfd.as_raw_fd(), std::sync::atomic::Ordering::SeqCst);
    crate::stop::notify_on(signal, on_snapshot_signal)
}

/// A snapshot to take during a run.
#[derive(Clone, Debug)]
pub struct SnapshotRequest {
    /// The directory to create.
    pub path: PathBuf,
    /// When.
    pub at: SnapshotPoint,
    /// Keep the VM running afterwards (otherwise the run ends there, with
    /// status 0).
    pub leave_running: bool,
    /// What the VM was booted from (image digest or name), recorded.
    pub image: Option<String>,
}

/// A virtio device as saved: its role in the boot contract and its
/// transport's state.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SavedDevice {
    /// `kiln_boot::role`.
    pub role: u32,
    /// Registers and queues.
    pub transport: SavedTransport,
}

/// The network of a saved VM (user networking through passt), to bring
/// up again at restore: the guest's addresses and NIC stay as they were.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SavedNet {
    /// The guest's IPv4 address and prefix.
    pub address: String,
    /// Its IPv4 gateway.
    pub gateway: String,
    /// Its name servers.
    pub dns: Vec<String>,
    /// The ports it published (`-p`), used again unless the resuming
    /// command gives its own.
    pub publish: Vec<String>,
    /// The NIC's MAC address.
    pub mac: [u8; 6],
}

/// A disk of a saved VM (`--disk`): reopened at restore, and refused if
/// it changed since (a resumed guest would find other bytes than the ones
/// its program last read or wrote).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SavedDisk {
    /// The disk file (absolute).
    pub path: std::path::PathBuf,
    /// Attached read-only.
    pub read_only: bool,
    /// Its size in bytes.
    pub size: u64,
    /// Its modification time (ns since the epoch) when the snapshot was
    /// taken.
    pub mtime_ns: i128,
}

impl SavedDisk {
    /// The disk `spec` as it is now.
    ///
    /// # Errors
    /// When it cannot be examined.
    pub fn of(spec: &crate::devices::virtio::block::DiskSpec) -> std::io::Result<Self> {
        let path = std::fs::canonicalize(&spec.path)?;
        let (size, mtime_ns) = size_and_mtime(&path)?;
        Ok(Self {
            path,
            read_only: spec.read_only,
            size,
            mtime_ns,
        })
    }
}

/// A file's size and modification time (ns since the epoch).
pub fn size_and_mtime(path: &Path) -> std::io::Result<(u64, i128)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path)?;
    Ok((
        m.size(),
        i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
    ))
}

/// `state.json`.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct SnapshotState {
    /// [`FORMAT`].
    pub format: u32,
    /// The kiln version that wrote it (the kernel inside guest memory and
    /// the VMM's device state must agree, so only the same version reads
    /// it).
    pub kiln_version: String,
    /// The KVM flavour it ran on.
    pub flavour: String,
    /// When it was taken (seconds since the epoch).
    pub created_unix: u64,
    /// What the VM was booted from.
    pub image: Option<String>,
    /// Guest RAM in bytes (the module lies above it).
    pub ram_size: u64,
    /// The kernel's entry point (where vCPUs not started yet begin).
    pub kernel_entry: u64,
    /// The boot page tables' PML4 (CR3 of vCPUs not started yet).
    pub boot_page_tables: u64,
    /// Each vCPU's state; `None` for one the guest had not started.
    pub vcpus: Vec<Option<VcpuState>>,
    /// The virtio devices, in bus order.
    pub devices: Vec<SavedDevice>,
    /// The network, when the VM had one.
    #[serde(default)]
    pub net: Option<SavedNet>,
    /// The disks, in /dev/vdX order.
    #[serde(default)]
    pub disks: Vec<SavedDisk>,
    /// The memory file.
    pub memory: MemoryFile,
}

/// What was written, for the run's report.
#[derive(Clone, Debug)]
pub struct SavedSnapshot {
    /// The directory.
    pub path: PathBuf,
    /// Guest memory size.
    pub memory_size: u64,
    /// Bytes of memory saved (non-zero pages).
    pub data_bytes: u64,
    /// How long the vCPUs stood still for it.
    pub pause: Duration,
}

/// The VM facts a snapshot records besides vCPUs, devices and memory.
pub struct VmFacts {
    /// The KVM flavour.
    pub flavour: Flavour,
    /// Guest RAM size.
    pub ram_size: u64,
    /// The kernel's entry point.
    pub kernel_entry: u64,
    /// The boot page tables' PML4.
    pub boot_page_tables: u64,
    /// Guest memory is anonymous (pages the host never had are zero), not
    /// a file mapping.
    pub anonymous_memory: bool,
    /// The network.
    pub net: Option<SavedNet>,
    /// The disks.
    pub disks: Vec<SavedDisk>,
}

/// Where the parked vCPUs of one VM meet.
pub struct Coordinator {
    target: Target,
    facts: VmFacts,
    round: Mutex<Round>,
    done: Condvar,
    /// The thread that flushes the snapshot to disk and renames it into
    /// place once the vCPUs run again.
    finisher: Mutex<Option<std::thread::JoinHandle<Result<(), String>>>>,
}

/// What the parked vCPUs' state is for.
enum Target {
    /// One snapshot, saved to a directory.
    Directory(SnapshotRequest),
    /// A checkpoint each round, streamed to a standby.
    Standby(std::sync::Arc<crate::ha::Replicator>),
}

#[derive(Default)]
struct Round {
    /// Each vCPU's state once it parked.
    parked: Vec<Option<VcpuState>>,
    /// When the first one parked.
    since: Option<Instant>,
    /// Rounds completed (a standby's checkpoints come one round each).
    completed: u64,
    /// The snapshot's result, once written (kept after the round).
    result: Option<Result<SavedSnapshot, String>>,
}

/// What a parked vCPU does next.
pub enum Parked {
    /// Go on running.
    Continue,
    /// The run ends here (the snapshot was saved).
    Stop(SavedSnapshot),
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Coordinator {
    /// A coordinator for `request` on a VM with `vcpus` vCPUs.
    pub fn new(request: SnapshotRequest, facts: VmFacts, vcpus: usize) -> Self {
        Self::with_target(Target::Directory(request), facts, vcpus)
    }

    /// A coordinator that streams a checkpoint to a standby each round.
    pub fn replicating(
        replicator: std::sync::Arc<crate::ha::Replicator>,
        facts: VmFacts,
        vcpus: usize,
    ) -> Self {
        Self::with_target(Target::Standby(replicator), facts, vcpus)
    }

    fn with_target(target: Target, facts: VmFacts, vcpus: usize) -> Self {
        Self {
            target,
            facts,
            round: Mutex::new(Round {
                parked: (0..vcpus).map(|_| None).collect(),
                ..Round::default()
            }),
            done: Condvar::new(),
            finisher: Mutex::new(None),
        }
    }

    /// vCPU `index` parked with `state`; `started` says which vCPUs run.
    /// vCPU 0 (the main thread, whose seccomp filter allows writing files)
    /// waits for the others, then writes the snapshot; every vCPU returns
    /// what to do next. `cancelled` is polled while waiting (the VM ended).
    ///
    /// # Errors
    /// When the snapshot could not be written (every parked vCPU gets it).
    #[allow(clippy::too_many_arguments)]
    pub fn park(
        &self,
        index: usize,
        state: VcpuState,
        started: &dyn Fn() -> Vec<bool>,
        vm: &kvm_ioctls::VmFd,
        mem: &GuestMem,
        mmio: &MmioBus,
        cancelled: &dyn Fn() -> bool,
    ) -> Result<Parked, String> {
        let mut round = lock(&self.round);
        if let Some(done) = &round.result {
            // A request after the snapshot was taken: carry on.
            return done.clone().map(|_| Parked::Continue);
        }
        let this_round = round.completed;
        round.since.get_or_insert_with(Instant::now);
        if let Some(slot) = round.parked.get_mut(index) {
            *slot = Some(state);
        }
        self.done.notify_all();
        loop {
            if round.result.is_some() || round.completed != this_round {
                break;
            }
            let all = round
                .parked
                .iter()
                .zip(started())
                .all(|(p, s)| p.is_some() || !s);
            if index == 0 && all {
                let count = round.parked.len();
                let states =
                    std::mem::replace(&mut round.parked, (0..count).map(|_| None).collect());
                let since = round.since.take().unwrap_or_else(Instant::now);
                match &self.target {
                    Target::Directory(request) => {
                        round.result = Some(self.save(request, states, since, mem, mmio));
                    }
                    Target::Standby(replicator) => {
                        // A failed checkpoint loses the standby, not the
                        // VM: the replicator reports it and lets output go.
                        replicator.checkpoint(self, states, since, vm, mem, mmio);
                    }
                }
                round.completed += 1;
                self.done.notify_all();
                break;
            }
            if cancelled() {
                return Err("the VM ended before every vCPU parked for the snapshot".into());
            }
            round = self
                .done
                .wait_timeout(round, Duration::from_millis(20))
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .0;
        }
        let leave_running = match &self.target {
            Target::Directory(request) => request.leave_running,
            Target::Standby(_) => true,
        };
        match round.result.clone() {
            Some(Ok(saved)) if !leave_running => Ok(Parked::Stop(saved)),
            Some(Err(e)) => Err(e),
            _ => Ok(Parked::Continue),
        }
    }

    /// Writes the snapshot `request` asked for (every vCPU parked).
    fn save(
        &self,
        request: &SnapshotRequest,
        states: Vec<Option<VcpuState>>,
        since: Instant,
        mem: &GuestMem,
        mmio: &MmioBus,
    ) -> Result<SavedSnapshot, String> {
        self.write(request, states, mem, mmio)
            .and_then(|(memory_size, data_bytes, finish)| {
                let finisher = std::thread::Builder::new()
                    .name("kiln-snapshot".into())
                    .spawn(move || finish.run().map_err(|e| e.to_string()))
                    .map_err(|cause| SnapshotError::Io {
                        what: "starting the snapshot's finishing thread".into(),
                        cause,
                    })?;
                *lock(&self.finisher) = Some(finisher);
                Ok(SavedSnapshot {
                    path: request.path.clone(),
                    memory_size,
                    data_bytes,
                    pause: since.elapsed(),
                })
            })
            .map_err(|e| e.to_string())
    }

    /// The state of every virtio device; `transports` are all of `mmio`'s,
    /// locked.
    ///
    /// # Errors
    /// [`SnapshotError::Unsupported`] for a device that cannot be saved.
    pub(crate) fn save_devices(
        transports: &[MutexGuard<'_, crate::devices::virtio::mmio::MmioTransport>],
        mmio: &MmioBus,
    ) -> Result<Vec<SavedDevice>, SnapshotError> {
        let mut devices = Vec::new();
        for (t, d) in transports.iter().zip(&mmio.devices) {
            let Some(transport) = t.save() else {
                return Err(SnapshotError::Unsupported(format!(
                    "its virtio {} device cannot be saved yet",
                    t.device().name()
                )));
            };
            devices.push(SavedDevice {
                role: d.role,
                transport,
            });
        }
        Ok(devices)
    }

    /// The state document (`state.json`) of a VM whose vCPUs, devices and
    /// memory file are these.
    ///
    /// # Errors
    /// When the disks cannot be examined or the document encoded.
    pub(crate) fn state_document(
        &self,
        image: Option<String>,
        vcpus: Vec<Option<VcpuState>>,
        devices: Vec<SavedDevice>,
        memory: MemoryFile,
    ) -> Result<Vec<u8>, SnapshotError> {
        let state = SnapshotState {
            format: FORMAT,
            kiln_version: env!("CARGO_PKG_VERSION").into(),
            flavour: self.facts.flavour.name().into(),
            created_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            image,
            ram_size: self.facts.ram_size,
            kernel_entry: self.facts.kernel_entry,
            boot_page_tables: self.facts.boot_page_tables,
            vcpus,
            devices,
            net: self.facts.net.clone(),
            disks: self.current_disks()?,
            memory,
        };
        serde_json::to_vec(&state).map_err(|e| SnapshotError::Io {
            what: "encoding the snapshot's state".into(),
            cause: std::io::Error::other(e),
        })
    }

    /// The run ended (with this status, `None`: not by itself): a standby
    /// is told and replication stops; what it did, when there was one.
    pub fn end_replication(&self, status: Option<i32>) -> Option<crate::ha::Summary> {
        match &self.target {
            Target::Standby(replicator) => Some(replicator.finish(status)),
            Target::Directory(_) => None,
        }
    }

    /// The guest reached its program's entry (every vCPU is up).
    pub fn program_entered(&self) {
        if let Target::Standby(replicator) = &self.target {
            replicator.program_entered();
        }
    }

    /// The VM's facts.
    pub(crate) fn facts(&self) -> &VmFacts {
        &self.facts
    }

    /// The disks as they are now (every vCPU parked: their last writes are
    /// on the host's disk, so the modification time recorded is final
    /// unless the VM goes on running).
    fn current_disks(&self) -> Result<Vec<SavedDisk>, SnapshotError> {
        self.facts
            .disks
            .iter()
            .map(|d| {
                let (size, mtime_ns) =
                    size_and_mtime(&d.path).map_err(|cause| SnapshotError::Io {
                        what: format!("examining disk {}", d.path.display()),
                        cause,
                    })?;
                Ok(SavedDisk {
                    size,
                    mtime_ns,
                    ..d.clone()
                })
            })
            .collect()
    }

    /// The snapshot, once it is on disk under its name (waits for the
    /// finishing thread); `Ok(None)` when none was taken.
    ///
    /// # Errors
    /// When flushing or renaming it failed (nothing is left under the
    /// name, nor the temporary directory).
    pub fn finish(&self) -> Result<Option<SavedSnapshot>, SnapshotError> {
        if let Some(finisher) = lock(&self.finisher).take() {
            finisher
                .join()
                .unwrap_or_else(|_| Err("the finishing thread panicked".into()))
                .map_err(SnapshotError::Incomplete)?;
        }
        Ok(lock(&self.round).result.clone().and_then(Result::ok))
    }

    /// Writes the snapshot into its temporary directory (memory into the
    /// page cache); returns the memory size, the bytes of memory saved,
    /// and what is left to do once the vCPUs run again.
    fn write(
        &self,
        request: &SnapshotRequest,
        vcpus: Vec<Option<VcpuState>>,
        mem: &GuestMem,
        mmio: &MmioBus,
    ) -> Result<(u64, u64, Finish), SnapshotError> {
        // The devices stay locked while memory is saved: the devices
        // thread waits, so no queue moves and no buffer is written.
        let transports: Vec<_> = mmio
            .devices
            .iter()
            .map(|d| crate::devices::lock(&d.transport))
            .collect();
        let devices = Self::save_devices(&transports, mmio)?;
        let region = mem
            .iter()
            .next()
            .ok_or_else(|| SnapshotError::Unsupported("it has no memory".into()))?;
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .map_err(|e| SnapshotError::Unsupported(format!("guest memory: {e}")))?;
        let len = region.len() as usize;
        let path = &request.path;
        let tmp = temporary_dir(path);
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|cause| SnapshotError::Io {
            what: format!("creating {}", tmp.display()),
            cause,
        })?;
        let result = (|| {
            // SAFETY: `host..host + len` is guest memory's one live
            // mapping, owned by `mem` for the whole call; every running
            // vCPU is parked and every device locked, so nothing writes it
            // while the slice exists.
            let bytes = unsafe { std::slice::from_raw_parts(host, len) };
            let memory = memory::save(bytes, self.facts.anonymous_memory, &tmp.join(MEMORY_FILE))?;
            drop(transports);
            let state =
                self.state_document(request.image.clone(), vcpus, devices, memory.clone())?;
            Ok((
                memory.size,
                memory.data_bytes,
                Finish {
                    tmp: tmp.clone(),
                    path: path.clone(),
                    state,
                },
            ))
        })();
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        result
    }
}

/// What is left of writing a snapshot once the vCPUs run again: flushing
/// the memory file, writing the state file, renaming the directory into
/// place (the state file comes last, so a directory under the final name
/// is always whole).
struct Finish {
    tmp: PathBuf,
    path: PathBuf,
    state: Vec<u8>,
}

impl Finish {
    fn run(self) -> Result<(), SnapshotError> {
        let result = (|| {
            let memory = self.tmp.join(MEMORY_FILE);
            std::fs::File::open(&memory)
                .and_then(|f| f.sync_all())
                .map_err(|cause| SnapshotError::Io {
                    what: format!("flushing {}", memory.display()),
                    cause,
                })?;
            let digest = self.tmp.join(STATE_DIGEST_FILE);
            crate::write_atomically(&digest, memory::sha256_hex(&self.state).as_bytes()).map_err(
                |cause| SnapshotError::Io {
                    what: format!("writing {}", digest.display()),
                    cause,
                },
            )?;
            let state = self.tmp.join(STATE_FILE);
            crate::write_atomically(&state, &self.state).map_err(|cause| SnapshotError::Io {
                what: format!("writing {}", state.display()),
                cause,
            })?;
            std::fs::rename(&self.tmp, &self.path).map_err(|cause| SnapshotError::Io {
                what: format!("moving the snapshot to {}", self.path.display()),
                cause,
            })?;
            let parent = self
                .path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            std::fs::File::open(parent)
                .and_then(|d| d.sync_all())
                .map_err(|cause| SnapshotError::Io {
                    what: format!("flushing {}", parent.display()),
                    cause,
                })
        })();
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
        result
    }
}

/// `<path>.tmp.<pid>`: where a snapshot is written before it is renamed.
fn temporary_dir(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".tmp.{}", std::process::id()));
    PathBuf::from(name)
}

/// Reads and checks a snapshot directory: its format and kiln version, and
/// the memory file's digest (the KVM flavour is the restorer's to check).
///
/// # Errors
/// [`SnapshotError`] naming what is wrong; nothing is resumed then.
pub fn load(path: &Path) -> Result<SnapshotState, SnapshotError> {
    let state_path = path.join(STATE_FILE);
    let bytes = std::fs::read(&state_path).map_err(|cause| SnapshotError::Io {
        what: format!("reading {}", state_path.display()),
        cause,
    })?;
    let not = |why: String| SnapshotError::NotASnapshot {
        path: path.to_path_buf(),
        why,
    };
    let digest_path = path.join(STATE_DIGEST_FILE);
    let digest = std::fs::read_to_string(&digest_path)
        .map_err(|e| not(format!("{}: {e}", digest_path.display())))?;
    if digest.trim() != memory::sha256_hex(&bytes) {
        return Err(SnapshotError::Corrupt(format!(
            "{} does not match its digest in {}",
            state_path.display(),
            digest_path.display()
        )));
    }
    let state = parse_state(&bytes, path)?;
    memory::verify_once(
        &path.join(MEMORY_FILE),
        &state.memory,
        &path.join(VERIFIED_STAMP),
    )?;
    Ok(state)
}

/// Reads a state document (`state.json`, or a standby's checkpoint) of
/// this kiln's format and version; `path` names it in errors.
///
/// # Errors
/// [`SnapshotError::Incompatible`] for another format or kiln version,
/// [`SnapshotError::NotASnapshot`] for a document that is not one.
pub fn parse_state(bytes: &[u8], path: &Path) -> Result<SnapshotState, SnapshotError> {
    let not = |why: String| SnapshotError::NotASnapshot {
        path: path.to_path_buf(),
        why,
    };
    let probe: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| not(format!("{STATE_FILE}: {e}")))?;
    let format = probe.get("format").and_then(serde_json::Value::as_u64);
    let version = probe
        .get("kiln_version")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("?");
    if format != Some(u64::from(FORMAT)) || version != env!("CARGO_PKG_VERSION") {
        return Err(SnapshotError::Incompatible {
            path: path.to_path_buf(),
            why: format!(
                "written by kiln {version} (snapshot format {}); this kiln {} reads format {FORMAT} of its own version only",
                format.map_or("?".into(), |f| f.to_string()),
                env!("CARGO_PKG_VERSION")
            ),
        });
    }
    let state: SnapshotState =
        serde_json::from_slice(bytes).map_err(|e| not(format!("{STATE_FILE}: {e}")))?;
    if state.vcpus.first().is_none_or(Option::is_none) {
        return Err(not("vCPU 0 has no state".into()));
    }
    Ok(state)
}
