//! kiln-vmm: one VM per process, as small as Firecracker's idea of a VMM.
//!
//! [`run`] creates the VM and its memory, loads the kiln guest kernel,
//! writes the boot contract (`kiln_boot`), starts vCPU 0 directly in
//! 64-bit mode and runs it until the guest reports how the program ended.
//! The binary (`src/main.rs`) is the command-line front end.

pub mod arch;
pub mod bootinfo;
pub mod cli;
pub mod devices;
pub mod exit_report;
pub mod ha;
pub mod loader;
pub mod net;
pub mod seccomp;
pub mod snapshot;
pub mod source;
pub mod stop;
pub mod terminal;
pub mod timeout;
pub mod timings;
pub mod vstate;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use kiln_boot::{flags, ExitReport};

/// Guest memory as every part of the VMM sees it: vm-memory's mmap
/// backend with a dirty bitmap, so the pages the VMM itself writes (virtio
/// buffers, used rings) are known to a standby's checkpoints (`ha`) as
/// KVM's dirty log knows the guest's.
pub type GuestMem = vm_memory::GuestMemoryMmap<vm_memory::bitmap::AtomicBitmap>;
use kvm_ioctls::VcpuFd;

use self::arch::Flavour;
use self::devices::event_loop::{DevicesThread, Served};
use self::devices::legacy::console::Console;
use self::devices::virtio::block::Block;
use self::devices::virtio::console::{self as vconsole, Input, InputSource};
use self::devices::virtio::device::Traffic;
use self::devices::virtio::mmio::MmioTransport;
use self::devices::virtio::rng::Rng;
use self::devices::virtio::{Interrupt, VirtioDevice};
use self::devices::{MmioBus, MmioDevice, PortBus};
use self::terminal::Resizes;
use self::timings::{Phase, Timings};
use self::vstate::kvm::{Hypervisor, KvmError};
use self::vstate::stats::Counters;

/// Everything that can stop a VM from running to the program's end: the
/// error of the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum VmmError {
    /// The guest memory asked for (by `--memory` or the image's
    /// configuration) is out of range.
    #[error(
        "guest memory of {0} MiB is out of range ({min} to {max} MiB)",
        min = kiln_boot::layout::MIN_MEMORY_MIB,
        max = kiln_boot::layout::MAX_MEMORY_MIB
    )]
    MemorySize(u64),
    /// The seccomp filter could not be put in place.
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
    /// KVM is unusable or an ioctl failed.
    #[error(transparent)]
    Kvm(#[from] vstate::kvm::KvmError),
    /// Guest memory could not be set up.
    #[error(transparent)]
    Memory(#[from] vstate::memory::MemoryError),
    /// The kernel image is unusable.
    #[error(transparent)]
    Loader(#[from] loader::LoaderError),
    /// The boot page tables could not be written.
    #[error("cannot write the boot page tables: {0}")]
    PageTables(#[source] vm_memory::GuestMemoryError),
    /// The boot data could not be written.
    #[error(transparent)]
    BootInfo(#[from] bootinfo::BootInfoError),
    /// The guest stopped without reporting an exit, or a device failed.
    #[error(transparent)]
    Vcpu(#[from] vstate::vcpu::VcpuError),
    /// The timeout (or the stop signal) could not be armed.
    #[error("cannot arm the --timeout timer: {0}")]
    Timer(#[source] std::io::Error),
    /// The virtio devices could not be set up.
    #[error("cannot set up the virtio devices: {0}")]
    Devices(#[source] std::io::Error),
    /// A device failed on the host side while the VM ran.
    #[error(transparent)]
    Device(#[from] devices::DeviceError),
    /// The network could not come up.
    #[error(transparent)]
    Network(#[from] net::NetError),
    /// The vsock device's host side could not be set up.
    #[error(transparent)]
    Vsock(#[from] devices::virtio::vsock::MuxerError),
    /// A `--disk` cannot be used.
    #[error(transparent)]
    Disk(#[from] devices::virtio::block::DiskError),
    /// Replication to a standby failed, or a standby could not take over.
    #[error(transparent)]
    Ha(#[from] ha::HaError),
    /// A snapshot cannot be taken or restored.
    #[error(transparent)]
    Snapshot(#[from] snapshot::SnapshotError),
    /// A `-v` volume cannot be served.
    #[error(transparent)]
    Volume(#[from] devices::virtio::fs::VolumeError),
    /// virtiofsd did not take the volume.
    #[error("volume {path}: {source}")]
    VolumeSetup {
        /// The host directory.
        path: std::path::PathBuf,
        /// What failed.
        #[source]
        source: devices::virtio::QueueError,
    },
}

/// What to boot and how.
#[derive(Clone, Debug)]
pub struct VmConfig {
    /// The guest kernel ELF.
    pub kernel: source::FileSlice,
    /// The kernel's SHA-256 (hex), when the caller verified it (an image's
    /// kernel section): the CPUID table a VM learns is kept for VMs of the
    /// same kernel only. `None`: kiln-vmm hashes the kernel itself.
    pub kernel_digest: Option<String>,
    /// The boot module mapped into the guest: the program's ELF file, or a
    /// rootfs tar archive that holds it at `guest_path`.
    pub module: source::FileSlice,
    /// The program's path inside the guest.
    pub guest_path: String,
    /// argv, `argv[0]` first.
    pub argv: Vec<Vec<u8>>,
    /// envp.
    pub envp: Vec<Vec<u8>>,
    /// Guest RAM in MiB.
    pub memory_mib: u64,
    /// Stop the guest after this long.
    pub timeout: Option<Duration>,
    /// Ask the kernel to trace every system call.
    pub trace_syscalls: bool,
    /// Ask the kernel to reap orphaned processes (`--init`).
    pub init: bool,
    /// Number of vCPUs (1 to `kiln_boot::layout::MAX_VCPUS`).
    pub cpus: u8,
    /// Collect KVM statistics.
    pub stats: bool,
    /// Someone reads the run's phases (`--timings`, `--timings-json`): the
    /// kernel reports its entry and the program's (otherwise it does only
    /// when something else needs them).
    pub phases: bool,
    /// Map the module from the host's page cache instead of copying it
    /// into guest memory (`--share-image`).
    pub share_image: bool,
    /// Leave the VM's destruction to a helper process that outlives this
    /// one (`vstate::teardown`): for one-shot processes, which exit right
    /// after the run; guest memory then stays mapped.
    pub background_teardown: bool,
    /// Put [`seccomp`]'s filter on every thread of this process just
    /// before the guest runs: afterwards this process can no longer run
    /// programs, mount, ptrace and the like (for one-shot processes).
    pub seccomp: bool,
    /// Become this user and group (setresuid/setresgid, no supplementary
    /// groups) after the set-up and before the guest runs (`--user`).
    pub user: Option<(u32, u32)>,
    /// Boot-info layout version to write (tests change it).
    pub boot_info_version: u32,
    /// Kernel command-line options.
    pub cmdline: String,
    /// What the program's standard input reads.
    pub stdin: InputSource,
    /// The host terminal the guest's follows (size, resizes) when the
    /// console is a terminal (`-t`).
    pub terminal: Option<std::os::fd::RawFd>,
    /// The network: backend, addresses, published ports.
    pub net: net::NetSpec,
    /// A vsock device and its host side (`--vsock`).
    pub vsock: Option<cli::VsockSpec>,
    /// Raw disk files for virtio block devices (`--disk`), in /dev/vdX
    /// order.
    pub disks: Vec<devices::virtio::block::DiskSpec>,
    /// Host directories shared with the guest (`-v`).
    pub volumes: Vec<devices::virtio::fs::VolumeSpec>,
    /// A snapshot to take (`--snapshot-at`).
    pub snapshot: Option<snapshot::SnapshotRequest>,
    /// A standby to stream checkpoints to (`--standby`).
    pub standby: Option<ha::StandbyTarget>,
}

/// How the VM ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The guest reported the program's end.
    Program(ExitReport),
    /// `--timeout` expired.
    TimedOut,
    /// kiln-vmm received this terminating signal (SIGINT, SIGTERM,
    /// SIGHUP) and stopped the guest.
    Terminated(i32),
    /// The snapshot asked for was saved and the run ended there.
    Snapshotted,
}

impl Ending {
    /// The status `kiln run` exits with: the program's, 124 after
    /// `--timeout`, 128 + the signal that stopped it, 0 after a snapshot.
    pub fn exit_status(self) -> u8 {
        match self {
            Ending::Program(report) => report.exit_status(),
            Ending::TimedOut => 124,
            Ending::Terminated(signal) => 128u8.wrapping_add(signal as u8),
            Ending::Snapshotted => 0,
        }
    }
}

/// One virtio device's counters.
#[derive(Clone, Debug, Default)]
pub struct DeviceStats {
    /// Its name.
    pub name: &'static str,
    /// Queue notifications handled.
    pub kicks: u64,
    /// Interrupts sent.
    pub interrupts: u64,
    /// Bytes moved.
    pub traffic: Traffic,
    /// Times the guest broke it (DEVICE_NEEDS_RESET).
    pub faults: u64,
}

/// KVM counters of the run.
#[derive(Clone, Debug, Default)]
pub struct VmStats {
    /// The vCPUs' counters (exits, insn_emulation, pf_fixed, …), summed.
    pub vcpu: Counters,
    /// The VM's own counters (mmu_pte_write, mmu_flooded, …).
    pub vm: Counters,
    /// The virtio devices.
    pub devices: Vec<DeviceStats>,
    /// Console writes refused because of a bad length.
    pub console_refused: u64,
    /// Writes to ports no device owns.
    pub unknown_port_writes: u64,
}

impl VmStats {
    /// Reads the counters of `vcpus` (summed) and `vm` — all of them, or
    /// only the cumulative ones for a `baseline` — and the devices' and
    /// ports'.
    pub(crate) fn read<'a>(
        vcpus: impl Iterator<Item = &'a kvm_ioctls::VcpuFd>,
        vm: &kvm_ioctls::VmFd,
        mmio: &MmioBus,
        bus: &PortBus,
        baseline: bool,
    ) -> Self {
        fn read(fd: &impl std::os::fd::AsRawFd, baseline: bool) -> std::io::Result<Counters> {
            if baseline {
                vstate::stats::read_cumulative(fd)
            } else {
                vstate::stats::read(fd)
            }
        }
        Self {
            vcpu: vcpus.filter_map(|v| read(v, baseline).ok()).fold(
                Counters::new(),
                |mut sum, counters| {
                    for (name, value) in counters {
                        *sum.entry(name).or_default() += value;
                    }
                    sum
                },
            ),
            vm: read(vm, baseline).unwrap_or_default(),
            devices: mmio
                .devices
                .iter()
                .map(|d| {
                    let t = devices::lock(&d.transport);
                    DeviceStats {
                        name: t.device().name(),
                        kicks: t.kicks,
                        interrupts: t
                            .interrupt()
                            .count
                            .load(std::sync::atomic::Ordering::Relaxed),
                        traffic: t.device().traffic(),
                        faults: t.faults,
                    }
                })
                .collect(),
            console_refused: bus.console.refused,
            unknown_port_writes: bus.unknown_writes,
        }
    }

    /// What was counted since `before` (a baseline [`VmStats::read`] with
    /// the cumulative counters only): gauges stay as they are.
    #[must_use]
    pub(crate) fn since(mut self, before: &VmStats) -> Self {
        vstate::stats::subtract(&mut self.vcpu, &before.vcpu);
        vstate::stats::subtract(&mut self.vm, &before.vm);
        for (now, then) in self.devices.iter_mut().zip(&before.devices) {
            now.kicks = now.kicks.saturating_sub(then.kicks);
            now.interrupts = now.interrupts.saturating_sub(then.interrupts);
            now.traffic.from_guest = now
                .traffic
                .from_guest
                .saturating_sub(then.traffic.from_guest);
            now.traffic.to_guest = now.traffic.to_guest.saturating_sub(then.traffic.to_guest);
            now.faults = now.faults.saturating_sub(then.faults);
        }
        self.console_refused = self.console_refused.saturating_sub(before.console_refused);
        self.unknown_port_writes = self
            .unknown_port_writes
            .saturating_sub(before.unknown_port_writes);
        self
    }
}

/// Host memory used by the run.
#[derive(Clone, Copy, Debug, Default)]
pub struct MemoryUse {
    /// kiln-vmm's peak resident set (VmHWM), bytes.
    pub vmm_peak_rss: u64,
    /// Guest memory resident at the end, bytes: RAM the guest touched plus
    /// the pages of the program file it ran (the part of the RSS that is
    /// the guest's, not kiln-vmm's own).
    pub guest_resident: u64,
}

/// The result of a run.
#[derive(Debug)]
pub struct RunReport {
    /// Host memory used (measured when the phases are read: reading
    /// /proc/self/status and mincore cost ~0.1 ms of every run).
    pub memory: Option<MemoryUse>,
    /// How it ended.
    pub ending: Ending,
    /// Phase timings.
    pub timings: Timings,
    /// Which KVM ran it.
    pub flavour: Flavour,
    /// KVM counters, when asked for.
    pub stats: Option<VmStats>,
    /// The snapshot taken during the run.
    pub snapshot: Option<snapshot::SavedSnapshot>,
    /// What replication to a standby did (`--standby`).
    pub replication: Option<ha::Summary>,
    /// How many of the program's pages the guest touched while the VM
    /// waited to be claimed (a warm VM, `kiln warm`).
    pub prepared_pages: Option<u32>,
}

impl RunReport {
    /// KVM's counters and the devices' (`--stats`), when they were
    /// collected: a summary line, then every non-zero counter of the vCPUs
    /// (summed) and of the VM, then the devices.
    pub fn stats_line(&self) -> Option<String> {
        let stats = self.stats.as_ref()?;
        let get = |k: &str| stats.vcpu.get(k).copied().unwrap_or(0);
        let mut line = format!(
            "stats ({} KVM): exits {} (io {}, mmio {}, halt {}, irq {}), emulated instructions {}, \
             signal exits {}, console refused {}, unknown port writes {}",
            self.flavour.name(),
            get("exits"),
            get("io_exits"),
            get("mmio_exits"),
            get("halt_exits"),
            get("irq_exits"),
            get("insn_emulation"),
            get("signal_exits"),
            stats.console_refused,
            stats.unknown_port_writes
        );
        let nonzero = |c: &vstate::stats::Counters| {
            c.iter()
                .filter(|(_, &v)| v != 0)
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        if let Some(serde_json::Value::Object(at)) = self.timings.exits_json() {
            let milestones: Vec<String> = at.iter().map(|(k, v)| format!("{k} {v}")).collect();
            line.push_str(&format!(
                "\n  exits so far at each milestone (the reporting vCPU's): {}",
                milestones.join(", ")
            ));
        }
        line.push_str(&format!(
            "\n  vCPU counters (every vCPU, summed): {}\n  VM counters: {}\n  devices:",
            nonzero(&stats.vcpu),
            nonzero(&stats.vm)
        ));
        for (i, d) in stats.devices.iter().enumerate() {
            line.push_str(&format!(
                "{} virtio {}: kicks {}, interrupts {}, bytes from guest {}, to guest {}{}",
                if i == 0 { "" } else { ";" },
                d.name,
                d.kicks,
                d.interrupts,
                d.traffic.from_guest,
                d.traffic.to_guest,
                if d.faults > 0 {
                    format!(", broken by the guest {} times", d.faults)
                } else {
                    String::new()
                }
            ));
        }
        Some(line)
    }

    /// The run as JSON (`--timings-json`): phases in ms, exit status, KVM
    /// flavour, memory and, when collected, KVM counters.
    pub fn json(&self) -> serde_json::Value {
        let mut doc = serde_json::json!({
            "phases_ms": self.timings.json(),
            "exit_status": self.exit_status(),
            "kvm_flavour": self.flavour.name(),
        });
        if let Some(memory) = &self.memory {
            doc["vmm_peak_rss_kib"] = (memory.vmm_peak_rss / 1024).into();
            doc["guest_resident_kib"] = (memory.guest_resident / 1024).into();
        }
        if let Some(exits) = self.timings.exits_json() {
            doc["exits_at"] = exits;
        }
        if let Some(pages) = self.prepared_pages {
            doc["warm_pages_touched"] = pages.into();
        }
        if let Some(r) = &self.replication {
            doc["replication"] = serde_json::json!({
                "checkpoints": r.checkpoints,
                "acknowledged": r.acknowledged,
                "pages_sent": r.pages,
                "disk_bytes_sent": r.disk_bytes,
                "pause_mean_ms": if r.checkpoints == 0 { 0.0 } else { r.pause_total.as_secs_f64() * 1000.0 / r.checkpoints as f64 },
                "pause_max_ms": r.pause_max.as_secs_f64() * 1000.0,
                "frames_held": r.frames_held,
                "standby_lost": r.lost,
            });
        }
        if let Some(saved) = &self.snapshot {
            doc["snapshot"] = serde_json::json!({
                "path": saved.path,
                "memory_bytes": saved.memory_size,
                "data_bytes": saved.data_bytes,
                "pause_ms": saved.pause.as_secs_f64() * 1e3,
            });
        }
        if let Some(stats) = &self.stats {
            doc["kvm_stats"] = serde_json::json!(stats.vcpu);
            doc["kvm_vm_stats"] = serde_json::json!(stats.vm);
            doc["devices"] = stats
                .devices
                .iter()
                .map(|d| {
                    serde_json::json!({
                        "name": d.name,
                        "kicks": d.kicks,
                        "interrupts": d.interrupts,
                        "bytes_from_guest": d.traffic.from_guest,
                        "bytes_to_guest": d.traffic.to_guest,
                        "faults": d.faults,
                    })
                })
                .collect();
        }
        doc
    }

    /// The process exit status kiln-vmm reports (docker-run conventions;
    /// 124 for a timeout, like timeout(1)).
    pub fn exit_status(&self) -> u8 {
        self.ending.exit_status()
    }
}

/// Writes `data` to a temporary file beside `path`, then renames it, so
/// readers never see a half-written file.
///
/// # Errors
/// When writing or renaming fails (the temporary file is removed).
pub fn write_atomically(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    write_durably(path, data, 0o644)
}

/// [`write_atomically`] with the file's permission bits, made durable: the
/// temporary file is flushed to disk before the rename and the directory
/// after it, so a power cut leaves the old file or the new one, never an
/// empty or partial one under the final name. The temporary name is
/// `<path>.tmp.<pid>` (a later writer may remove it if that process is
/// gone).
///
/// # Errors
/// When writing, flushing or renaming fails (the temporary file is removed).
pub fn write_durably(path: &std::path::Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    replace_file(path, data, mode, true)
}

/// Writes `data` to a temporary file beside `path`, removes the old file
/// and renames the new one into place, with no flush to disk: for reports
/// of a run (`--timings-json`), which a reader may find missing for a
/// moment but never half-written, and a power cut may lose. Flushing (or
/// renaming over the old file, which ext4 flushes at once) cost each run
/// ~0.5 ms.
///
/// # Errors
/// When writing or renaming fails (the temporary file is removed).
pub fn write_replacing(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    replace_file(path, data, 0o644, false)
}

/// Writes `data` beside `path` and renames it there; `durable`: flushed to
/// disk first, and the directory after (else the old file is removed
/// first, see [`write_replacing`]).
fn replace_file(
    path: &std::path::Path,
    data: &[u8],
    mode: u32,
    durable: bool,
) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(format!(".tmp.{}", std::process::id()));
    let tmp = std::path::PathBuf::from(tmp_name);
    // A leftover of an earlier process with this pid: never reused (its
    // permissions may not be `mode`).
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(data)?;
        if durable {
            f.sync_all()?;
        }
        drop(f);
        if !durable {
            // ext4 flushes a file renamed over another at once (its
            // auto_da_alloc), ~0.5 ms: the old report goes first.
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            return std::fs::rename(&tmp, path);
        }
        std::fs::rename(&tmp, path)?;
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Host entropy for the guest's random seed.
pub(crate) fn host_seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    // SAFETY: getrandom writes at most `seed.len()` bytes into `seed`.
    let n = unsafe { libc::getrandom(seed.as_mut_ptr().cast(), seed.len(), 0) };
    if n != seed.len() as isize {
        // Not fatal: the guest prefers RDRAND; fall back to the clock.
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        seed[..16].copy_from_slice(&t.to_le_bytes());
    }
    seed
}

/// Sets vCPU `index` up to enter the kernel at `entry` in 64-bit mode with
/// the boot page tables (PML4 at `cr3`), loading `preset` when given (the
/// kernel's CPU state, `arch::cpu_preset`): on vCPU 0, what KVM refuses of
/// it is dropped, or all of it (`*preset` becomes `None`). Every vCPU but 0
/// starts UNINITIALIZED under the in-kernel irqchip (waiting for INIT/SIPI):
/// it is made runnable here, and its thread runs it once the kernel asks
/// (`kiln_boot::port::START_CPU`).
pub(crate) fn setup_vcpu(
    hv: &Hypervisor,
    vcpu: &VcpuFd,
    entry: u64,
    cr3: u64,
    flavour: Flavour,
    index: u8,
    preset: &mut Option<kiln_boot::CpuPreset>,
) -> Result<(), KvmError> {
    let cpuid = arch::guest_cpuid(hv.supported_cpuid(), index);
    vcpu.set_cpuid2(&cpuid)
        .map_err(KvmError::ioctl("KVM_SET_CPUID2"))?;
    let sregs = vcpu.get_sregs().map_err(KvmError::ioctl("KVM_GET_SREGS"))?;
    let sregs = arch::boot_sregs(sregs, arch::has_fsgsbase(&cpuid), cr3);
    let loaded = match preset.as_mut() {
        Some(p) => arch::cpu_preset::apply(vcpu, sregs, p, index)?,
        None => false,
    };
    if !loaded {
        if preset.is_some() && index != 0 {
            // vCPU 0 took it: the kernel counts on every vCPU having it.
            return Err(KvmError::Refused {
                what: format!("the kernel's CPU state on vCPU {index}"),
            });
        }
        *preset = None;
        vcpu.set_sregs(&sregs)
            .map_err(KvmError::ioctl("KVM_SET_SREGS"))?;
    }
    let pv_page = if flavour == Flavour::Pvm {
        arch::layout::PV_PAGES.0 + u64::from(index) * 0x1000
    } else {
        0
    };
    vcpu.set_regs(&arch::boot_regs(entry, index, pv_page))
        .map_err(KvmError::ioctl("KVM_SET_REGS"))?;
    if index != 0 {
        vcpu.set_mp_state(kvm_bindings::kvm_mp_state {
            mp_state: kvm_bindings::KVM_MP_STATE_RUNNABLE,
        })
        .map_err(KvmError::ioctl("KVM_SET_MP_STATE"))?;
    }
    Ok(())
}

/// The host side of the guest's console devices, its vsock device, the
/// irqfd a snapshot signal raises (`snapshot::catch_signal`), and the
/// NIC's address.
pub(crate) struct ConsoleSetup<'a> {
    pub(crate) stdin: InputSource,
    pub(crate) terminal: Option<std::os::fd::RawFd>,
    pub(crate) vsock: Option<cli::VsockSpec>,
    pub(crate) snapshot_irq: Option<&'a EventFd>,
    /// The NIC's MAC address.
    pub(crate) mac: [u8; 6],
    /// Holds the program's output until its checkpoint is acknowledged
    /// (`--standby`).
    pub(crate) output_gate: Option<&'a Arc<ha::gate::OutputGate>>,
}

/// The VM's virtio devices: standard input and output (and everything on a
/// terminal), standard error, entropy. Returns the MMIO bus, what the
/// devices thread serves, and the boot-info device table.
pub(crate) fn create_devices(
    vm: &kvm_ioctls::VmFd,
    mem: &crate::GuestMem,
    console: &ConsoleSetup<'_>,
    network: Option<&mut net::Network>,
    disks: Vec<devices::virtio::block::Disk>,
    volumes: Vec<(devices::virtio::fs::Virtiofsd, String)>,
    ram: Option<devices::virtio::fs::SharedRam>,
) -> Result<(MmioBus, Vec<Served>, Vec<kiln_boot::VirtioDevice>), VmmError> {
    let sink = |stream: usize, sink: vconsole::Output| -> vconsole::Output {
        match console.output_gate {
            Some(gate) => Box::new(gate.hold_console(stream, sink)),
            None => sink,
        }
    };
    let mut stdio = vconsole::Console::new(
        sink(0, Box::new(std::io::stdout())),
        Some(Input::start(console.stdin).map_err(VmmError::Devices)?),
    );
    if let Some(fd) = console.terminal {
        let (cols, rows) = terminal::size(fd).unwrap_or((80, 24));
        stdio.set_size(cols, rows).map_err(VmmError::Devices)?;
        stdio.follow_resizes(Resizes::watch(fd).map_err(VmmError::Devices)?);
    }
    let stderr = vconsole::Console::new(sink(1, Box::new(std::io::stderr())), None);
    let mut list: Vec<(Box<dyn VirtioDevice>, u32)> = vec![
        (Box::new(stdio), kiln_boot::role::DEFAULT),
        (Box::new(stderr), kiln_boot::role::CONSOLE_STDERR),
        (Box::new(Rng::new()), kiln_boot::role::DEFAULT),
    ];
    if let Some(n) = network {
        if let Some(backend) = n.backend.take() {
            let nic = devices::virtio::net::Net::new(backend, console.mac, n.mtu);
            list.push((Box::new(nic), kiln_boot::role::DEFAULT));
        }
    }
    for disk in disks {
        list.push((Box::new(Block::new(disk)), kiln_boot::role::DEFAULT));
    }
    for (daemon, tag) in volumes {
        let path = daemon.spec.host.clone();
        let ram = ram.ok_or_else(|| VmmError::VolumeSetup {
            path: path.clone(),
            source: devices::virtio::QueueError::Host(std::io::Error::other(
                "guest RAM is not shared",
            )),
        })?;
        let fs = devices::virtio::fs::Fs::new(daemon, &tag, ram)
            .map_err(|source| VmmError::VolumeSetup { path, source })?;
        list.push((Box::new(fs), kiln_boot::role::DEFAULT));
    }
    if let Some(v) = &console.vsock {
        let muxer = devices::virtio::vsock::Muxer::new(&v.path, v.cid)?;
        let device = devices::virtio::vsock::Vsock::new(muxer);
        list.push((Box::new(device), kiln_boot::role::DEFAULT));
    }
    let mut bus = MmioBus::default();
    let mut served = Vec::new();
    let mut table = Vec::new();
    let mut irqfds = Vec::new();
    if list.len() > kiln_boot::layout::VIRTIO_DEVICES_MAX {
        return Err(VmmError::Devices(std::io::Error::other(format!(
            "{} virtio devices asked for; a VM has at most {} (fewer --disk or -v)",
            list.len(),
            kiln_boot::layout::VIRTIO_DEVICES_MAX
        ))));
    }
    for (i, (mut device, role)) in list.into_iter().enumerate() {
        let base = arch::layout::VIRTIO_MMIO_BASE + i as u64 * arch::layout::VIRTIO_MMIO_SIZE;
        let vector = arch::layout::VIRTIO_VECTOR_BASE + i as u32;
        let irqfd = EventFd::new(EFD_NONBLOCK).map_err(VmmError::Devices)?;
        let interrupt = Arc::new(Interrupt::new(irqfd));
        let device_type = device.device_type();
        let features = device.features() | devices::virtio::VIRTIO_F_VERSION_1;
        let queue_max = device
            .queue_max_sizes()
            .iter()
            .copied()
            .max()
            .map_or(0, u32::from);
        let mut queue_events = Vec::new();
        for q in 0..device.queue_max_sizes().len() {
            let evt = EventFd::new(EFD_NONBLOCK).map_err(VmmError::Devices)?;
            vstate::irq::notify_event(vm, &evt, MmioTransport::notify_address(base), q as u32)?;
            queue_events.push(evt);
        }
        // A device served elsewhere (virtiofsd) takes the kicks itself.
        if device
            .use_queue_events(&queue_events)
            .map_err(VmmError::Devices)?
        {
            queue_events.clear();
        }
        let transport = MmioTransport::new(device, mem.clone(), interrupt.clone());
        let transport = Arc::new(Mutex::new(transport));
        bus.devices.push(MmioDevice {
            base,
            transport: transport.clone(),
            role,
        });
        served.push(Served {
            transport,
            queue_events,
        });
        table.push(kiln_boot::VirtioDevice {
            base,
            size: arch::layout::VIRTIO_MMIO_SIZE,
            features,
            device_type,
            vector,
            role,
            queue_max,
        });
        irqfds.push((vstate::irq::FIRST_GSI + i as u32, vector, interrupt));
    }
    let mut routes: Vec<vstate::irq::MsiRoute<'_>> = irqfds
        .iter()
        .map(|(gsi, vector, interrupt)| vstate::irq::MsiRoute {
            gsi: *gsi,
            vector: *vector,
            irqfd: interrupt.irqfd(),
        })
        .collect();
    if let Some(irqfd) = console.snapshot_irq {
        // The snapshot signal's interrupt, to vCPU 0 (`snapshot::catch_signal`).
        routes.push(vstate::irq::MsiRoute {
            gsi: vstate::irq::FIRST_GSI + routes.len() as u32,
            vector: u32::from(kiln_boot::snapshot::VECTOR),
            irqfd,
        });
    }
    vstate::irq::route_msis(vm, &routes)?;
    Ok((bus, served, table))
}

/// Boots `config` and runs it to the end, writing the program's output to
/// `console`. `timings` starts at kiln-vmm's start.
///
/// # Errors
/// [`VmmError`] for anything that keeps the program from running to its
/// end (the program's own failure is a normal [`RunReport`]).
pub fn run(
    hv: &Hypervisor,
    config: &VmConfig,
    mut console: Console,
    mut timings: Timings,
) -> Result<RunReport, VmmError> {
    // The memory size is checked before anything starts: an image's
    // configuration is not trusted.
    use kiln_boot::layout::{MAX_MEMORY_MIB, MIN_MEMORY_MIB};
    if !(MIN_MEMORY_MIB..=MAX_MEMORY_MIB).contains(&config.memory_mib) {
        return Err(VmmError::MemorySize(config.memory_mib));
    }
    if let Some(request) = &config.snapshot {
        check_snapshot_request(config, request)?;
    }
    if config.standby.is_some() {
        check_standby(config)?;
    }
    // Disks first: a missing or locked one is refused before anything
    // starts.
    let disks = config
        .disks
        .iter()
        .map(devices::virtio::block::Disk::open)
        .collect::<Result<Vec<_>, _>>()?;
    // virtiofsd next (one per volume): they start while the VM is built.
    let volumes = config
        .volumes
        .iter()
        .map(devices::virtio::fs::Virtiofsd::start)
        .collect::<Result<Vec<_>, _>>()?;
    // The network next: passt starts while the VM is built.
    let mut network = net::Network::start(&config.net)?;
    // The standby answers before anything runs: one that cannot be
    // reached or refuses stops the run here.
    let standby = match &config.standby {
        Some(target) => Some((target, ha::primary::connect(target)?)),
        None => None,
    };
    let gate = match &standby {
        Some(_) => Some(ha::gate::OutputGate::new().map_err(VmmError::Devices)?),
        None => None,
    };
    if let Some(gate) = &gate {
        console.hold_output(gate);
    }
    if let (Some(gate), Some(network)) = (&gate, network.as_mut()) {
        network.backend = network.backend.take().map(|backend| {
            Box::new(ha::gate::GatedBackend::new(backend, gate.clone()))
                as Box<dyn devices::virtio::net::Backend>
        });
    }
    let mut cmdline = config.cmdline.clone();
    if config.init {
        cmdline.push_str(" kiln.init=1");
    }
    if let Some(option) = config.snapshot.as_ref().and_then(|r| r.at.kernel_option()) {
        cmdline.push_str(" kiln.snapshot_at=");
        cmdline.push_str(option);
    }
    for option in net::common_kernel_options(&config.net, network.as_ref()) {
        if !cmdline.is_empty() {
            cmdline.push(' ');
        }
        cmdline.push_str(&option);
    }
    let volumes: Vec<_> = volumes
        .into_iter()
        .enumerate()
        .map(|(i, daemon)| {
            let tag = format!("kiln-vol{i}");
            cmdline.push_str(&format!(
                " kiln.volume={tag}:{}{}",
                daemon.spec.guest,
                if daemon.spec.read_only { ":ro" } else { "" }
            ));
            (daemon, tag)
        })
        .collect();
    let vm = hv
        .kvm()
        .create_vm()
        .map_err(KvmError::ioctl("KVM_CREATE_VM"))?;
    // Memory goes in before the irqchip: with an irqchip present, KVM
    // takes ~7 ms longer to add the slot (measured on PVM).
    let memory_size = config.memory_mib << 20;
    let layout = vstate::memory::create_guest_memory(
        &vm,
        memory_size,
        &config.module,
        !volumes.is_empty(),
        !config.share_image,
    )?;
    let shared_ram = layout
        .ram_file
        .as_ref()
        .map(|f| devices::virtio::fs::SharedRam {
            fd: std::os::fd::AsRawFd::as_raw_fd(f),
            size: memory_size,
        });
    vstate::irqchip::create_local_apic(&vm)?;
    let cpus = config.cpus.clamp(1, arch::layout::MAX_VCPUS as u8);
    let vcpu = vm
        .create_vcpu(0)
        .map_err(KvmError::ioctl("KVM_CREATE_VCPU"))?;
    let flavour = arch::detect_flavour(&vcpu);
    let other_vcpus = (1..cpus)
        .map(|i| {
            vm.create_vcpu(u64::from(i))
                .map_err(KvmError::ioctl("KVM_CREATE_VCPU"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    timings.mark(Phase::VmCreated);

    let mem = &layout.mem;
    let kernel = loader::load_kernel(&config.kernel, mem, memory_size)?;
    let boot_tables = arch::BootTables::place(memory_size, layout.mapped_end);
    arch::write_boot_page_tables(mem, layout.mapped_end, boot_tables)
        .map_err(VmmError::PageTables)?;
    let tsc_khz = u64::from(vcpu.get_tsc_khz().unwrap_or(0));
    let mut boot_flags = 0;
    if flavour == Flavour::Pvm {
        boot_flags |= flags::PVM;
    }
    if config.trace_syscalls {
        boot_flags |= flags::TRACE_SYSCALLS;
    }
    if config.terminal.is_some() {
        boot_flags |= flags::TERMINAL;
    }
    // Each milestone is an exit to kiln-vmm: asked for only when read (the
    // phases, the exits at each, a snapshot or a standby following the
    // program's entry; the CPUID table a learning kernel filled is read
    // at the program's entry).
    let milestones_read = config.phases
        || config.stats
        || config.snapshot.is_some()
        || config.standby.is_some()
        || std::env::var_os(timings::BOOT_REPORT_ENV).is_some_and(|p| !p.is_empty());
    let mac = net::random_mac();
    let saved_net = match (&network, config.snapshot.is_some() || standby.is_some()) {
        (Some(n), true) => Some(snapshot::SavedNet {
            address: n.guest.v4.to_string(),
            gateway: n.guest.gw4.to_string(),
            dns: n.guest.dns.iter().map(ToString::to_string).collect(),
            publish: config.net.publish.iter().map(ToString::to_string).collect(),
            mac,
        }),
        _ => None,
    };
    let snapshot_irq = match config.snapshot.as_ref().map(|r| r.at) {
        Some(snapshot::SnapshotPoint::Signal(_)) => {
            Some(EventFd::new(EFD_NONBLOCK).map_err(VmmError::Devices)?)
        }
        _ if standby.is_some() => Some(EventFd::new(EFD_NONBLOCK).map_err(VmmError::Devices)?),
        _ => None,
    };
    let (mmio, served, table) = create_devices(
        &vm,
        mem,
        &ConsoleSetup {
            stdin: config.stdin,
            terminal: config.terminal,
            vsock: config.vsock.clone(),
            snapshot_irq: snapshot_irq.as_ref(),
            mac,
            output_gate: gate.as_ref(),
        },
        network.as_mut(),
        disks,
        volumes,
        shared_ram,
    )?;
    if let (Some(irqfd), Some(snapshot::SnapshotPoint::Signal(signal))) = (
        snapshot_irq.as_ref(),
        config.snapshot.as_ref().map(|r| r.at),
    ) {
        snapshot::catch_signal(signal, irqfd).map_err(|cause| snapshot::SnapshotError::Io {
            what: "catching the --snapshot-at signal".into(),
            cause,
        })?;
    }
    // The CPUID table an earlier VM of this host learnt, or this VM's
    // kernel learns it (kept after the run for the next ones).
    let kernel_digest = match &config.kernel_digest {
        Some(d) => Some(d.clone()),
        None => config.kernel.sha256_hex().ok(),
    };
    let learnt = kernel_digest
        .as_deref()
        .and_then(|d| arch::learnt_cpuid::LearntCpuid::for_host(hv, flavour.name(), d));
    let learnt_table = learnt
        .as_ref()
        .and_then(arch::learnt_cpuid::LearntCpuid::load);
    let learn_cpuid = if learnt_table.is_none() { learnt } else { None };
    if !milestones_read && learn_cpuid.is_none() {
        boot_flags |= flags::QUIET_MILESTONES;
    }
    let info = bootinfo::write_boot_data(
        mem,
        &bootinfo::BootSpec {
            memory_size,
            module_addr: layout.module_addr,
            module_len: layout.module_len,
            kernel_end: kernel.end,
            page_tables: boot_tables,
            flags: boot_flags,
            cmdline: cmdline.as_bytes(),
            path: config.guest_path.as_bytes(),
            argv: &config.argv,
            envp: &config.envp,
            tsc_khz,
            seed: host_seed(),
            version: config.boot_info_version,
            devices: &table,
            vcpus: cpus,
            cpuid: learnt_table.as_deref(),
        },
    )?;
    // The kernel's CPU state loaded with the boot registers (on PVM each
    // instruction loading it would be emulated).
    let boot_cr4 = arch::boot_sregs(
        kvm_bindings::kvm_sregs::default(),
        arch::has_fsgsbase(hv.supported_cpuid()),
        boot_tables.pml4,
    )
    .cr4;
    let mut preset = kernel.cpu_state.as_ref().and_then(|note| {
        arch::cpu_preset::plan(
            note,
            cpus,
            boot_cr4,
            boot_tables.pml4,
            learnt_table.as_deref(),
        )
    });
    for (i, v) in std::iter::once(&vcpu).chain(&other_vcpus).enumerate() {
        setup_vcpu(
            hv,
            v,
            kernel.entry,
            boot_tables.pml4,
            flavour,
            i as u8,
            &mut preset,
        )?;
    }
    let mut info = info;
    if let Some(preset) = &preset {
        arch::cpu_preset::write(mem, preset).map_err(bootinfo::BootInfoError::Write)?;
        info.flags |= kiln_boot::flags::CPU_PRESET;
    }
    timings.mark(Phase::MemoryReady);

    let realtime = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let tsc = arch::guest_tsc(&vcpu).unwrap_or(0);
    bootinfo::finish(mem, info, realtime, tsc)?;

    let disks = config
        .disks
        .iter()
        .map(snapshot::SavedDisk::of)
        .collect::<Result<_, _>>()
        .map_err(|cause| snapshot::SnapshotError::Io {
            what: "examining the disks for the snapshot".into(),
            cause,
        })?;
    let facts = snapshot::VmFacts {
        flavour,
        ram_size: memory_size,
        kernel_entry: kernel.entry,
        boot_page_tables: boot_tables.pml4,
        anonymous_memory: !config.share_image && layout.ram_file.is_none(),
        net: saved_net,
        disks,
    };
    let coordinator = match (config.snapshot.clone(), standby, &snapshot_irq, &gate) {
        (Some(request), ..) => Some(snapshot::Coordinator::new(
            request,
            facts,
            usize::from(cpus),
        )),
        (None, Some((target, stream)), Some(irqfd), Some(gate)) => {
            vstate::memory::log_dirty_pages(&vm, mem)?;
            let started = ha::Replicator::start(
                stream,
                gate.clone(),
                irqfd.try_clone().map_err(VmmError::Devices)?,
                target.interval,
            )
            .map_err(VmmError::Devices)?;
            Some(snapshot::Coordinator::replicating(
                started,
                facts,
                usize::from(cpus),
            ))
        }
        _ => None,
    };
    let report = launch(
        Launch {
            vm,
            vcpu,
            other_vcpus,
            layout,
            mmio,
            served,
            flavour,
            timings,
            started: vec![true],
            coordinator,
            learn_cpuid,
            warm: None,
        },
        console,
        &RunLimits {
            timeout: config.timeout,
            stats: config.stats,
            measure_memory: config.phases,
            seccomp: config.seccomp,
            user: config.user,
            background_teardown: config.background_teardown,
        },
    );
    if snapshot_irq.is_some() {
        snapshot::release_signal();
    }
    report
}

/// A VM ready to run: what [`launch`] takes over.
pub(crate) struct Launch {
    pub(crate) vm: kvm_ioctls::VmFd,
    pub(crate) vcpu: VcpuFd,
    pub(crate) other_vcpus: Vec<VcpuFd>,
    pub(crate) layout: vstate::memory::GuestMemoryLayout,
    pub(crate) mmio: MmioBus,
    pub(crate) served: Vec<Served>,
    pub(crate) flavour: Flavour,
    pub(crate) timings: Timings,
    /// Which vCPUs run from the start.
    pub(crate) started: Vec<bool>,
    pub(crate) coordinator: Option<snapshot::Coordinator>,
    /// Where to keep the CPUID table this VM's kernel learns (flag
    /// `CPUID_LEARN`), read back after the run.
    pub(crate) learn_cpuid: Option<arch::learnt_cpuid::LearntCpuid>,
    /// A warm VM's hold (`kiln warm`): vCPU 0 waits at the guest's resume
    /// report until a client claims the VM.
    pub(crate) warm: Option<std::sync::Arc<snapshot::warm::WarmHold>>,
}

/// How a run is limited and watched.
pub(crate) struct RunLimits {
    pub(crate) timeout: Option<Duration>,
    pub(crate) stats: bool,
    /// Measure the host memory the run used (for the JSON report).
    pub(crate) measure_memory: bool,
    pub(crate) seccomp: bool,
    pub(crate) user: Option<(u32, u32)>,
    pub(crate) background_teardown: bool,
}

/// Runs a VM that is ready to the end: timers and signals armed, seccomp
/// in place, the devices thread and the vCPUs started; then the report,
/// and the VM destroyed (or handed to the teardown helper).
pub(crate) fn launch(
    ready: Launch,
    console: Console,
    limits: &RunLimits,
) -> Result<RunReport, VmmError> {
    let Launch {
        vm,
        mut vcpu,
        mut other_vcpus,
        mut layout,
        mmio,
        served,
        flavour,
        mut timings,
        started,
        coordinator,
        learn_cpuid,
        warm,
    } = ready;
    let mut port_bus = PortBus::new(console);
    port_bus.learn_cpuid = learn_cpuid;
    let bus = Mutex::new(port_bus);
    if let Some(limit) = limits.timeout {
        timeout::arm(limit).map_err(VmmError::Timer)?;
    }
    stop::prepare().map_err(VmmError::Timer)?;
    let termination = stop::catch_termination().map_err(VmmError::Timer)?;
    // Before the filters: it makes a timer and opens statistics files.
    let exit_report =
        exit_report::ExitReport::from_env(std::iter::once(&vcpu).chain(other_vcpus.iter()));
    if let Some(hold) = &warm {
        hold.serve().map_err(VmmError::Devices)?;
    }
    // Everything the run starts (passt, virtiofsd, the vsock sweeper) runs
    // by now: from here on each thread gets the filter of its role (the
    // main one on every thread, then the devices thread and the vCPU
    // threads narrow theirs).
    seccomp::contain(limits.user)?;
    let (devices_filter, vcpu_filter) = if limits.seccomp {
        seccomp::install_process()?;
        (
            Some(seccomp::program(seccomp::Role::Devices)?),
            Some(seccomp::program(seccomp::Role::Vcpu)?),
        )
    } else {
        (None, None)
    };
    // A one-shot run's VM goes to the teardown helper; the devices thread
    // starts it while the guest boots (the devices' irqfds exist by now).
    let teardown = Arc::new(std::sync::OnceLock::new());
    let start_teardown = limits.background_teardown.then(|| {
        let vm_fd = std::os::fd::AsRawFd::as_raw_fd(&vm);
        let irqfds = irqfds(&mmio);
        let slot = Arc::clone(&teardown);
        Box::new(move || {
            if let Some(helper) = vstate::teardown::start(vm_fd, &irqfds) {
                let _ = slot.set(helper);
            }
        }) as Box<dyn FnOnce() + Send>
    });
    let devices_thread = DevicesThread::start(
        served,
        termination,
        stop::request,
        devices_filter,
        exit_report,
        start_teardown,
    )
    .map_err(VmmError::Devices)?;
    timings.mark(Phase::VcpuStart);
    layout.start_working_set();
    if let Some(hold) = &warm {
        // A warm VM is offered once the write set is copied too: the copy
        // would otherwise compete with the claimed run.
        hold.publish_after(layout.working_set_copied());
    }
    let mem = &layout.mem;
    let timings = Mutex::new(timings);
    let ending = vstate::crew::run(
        &mut vcpu,
        &mut other_vcpus,
        &vm,
        mem,
        &bus,
        &mmio,
        &timings,
        limits.timeout,
        limits.stats,
        vcpu_filter.as_ref(),
        &started,
        coordinator.as_ref(),
        warm.as_deref(),
    );
    let mut timings = timings
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let bus = bus
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if limits.timeout.is_some() {
        timeout::disarm();
    }
    // A devices-thread failure is why the vCPU stopped, if it did.
    let devices_result = devices_thread.finish();
    let ending = match (ending, devices_result) {
        (Err(vstate::vcpu::VcpuError::Stopped), Err(e)) => return Err(VmmError::Device(e)),
        (ending, _) => ending,
    };
    // The standby learns how the run ended (it takes over only when the
    // primary died without saying so); the output held for it goes out.
    let replication = coordinator
        .as_ref()
        .and_then(|c| c.end_replication(ending.as_ref().ok().map(|e| i32::from(e.exit_status()))));
    if replication.is_some() {
        mmio.flush_network().map_err(VmmError::Device)?;
    }
    // Output the guest queued but the devices thread did not get to.
    if ending.is_ok() {
        mmio.flush_consoles().map_err(VmmError::Device)?;
    }
    for d in &mmio.devices {
        if let Some(at) = devices::lock(&d.transport).device().first_output() {
            timings.mark_at(Phase::FirstOutput, at);
        }
    }
    let ending = ending?;
    if let (Some(hold), Ending::Program(_)) = (&warm, &ending) {
        hold.program_ended(ending.exit_status());
    }
    // A claimed warm VM counts from the claim (its baseline), when the
    // claim asked for `--stats`.
    let claim_baseline = warm.as_ref().and_then(|h| h.stats_baseline());
    let stats = (limits.stats || claim_baseline.is_some()).then(|| {
        let stats = VmStats::read(
            std::iter::once(&vcpu).chain(other_vcpus.iter()),
            &vm,
            &mmio,
            &bus,
            false,
        );
        match &claim_baseline {
            Some(before) => stats.since(before),
            None => stats,
        }
    });
    // The snapshot taken during the run, flushed and under its name (an
    // error is reported once the VM is gone).
    let snapshot = coordinator
        .as_ref()
        .map_or(Ok(None), snapshot::Coordinator::finish);
    let memory = limits.measure_memory.then(|| MemoryUse {
        vmm_peak_rss: peak_rss(),
        guest_resident: guest_resident(mem),
    });
    // The VM and vCPU go before the memory their slots point at: here, or
    // in the helper that destroys the VM after this process has exited
    // (then this process's descriptors are mere copies, and the memory
    // must stay mapped for the VM).
    layout.end_working_set();
    // Started by the devices thread (which has ended by now) before its
    // first event; absent when the clone failed (then this process tears
    // the VM down itself).
    let handed_over = teardown
        .get()
        .map(vstate::teardown::Helper::wait_until_alone)
        .is_some();
    drop(vcpu);
    drop(other_vcpus);
    drop(vm);
    if handed_over {
        std::mem::forget(layout);
    } else {
        drop(layout);
    }
    Ok(RunReport {
        ending,
        timings,
        flavour,
        stats,
        memory,
        snapshot: snapshot?,
        replication,
        prepared_pages: bus.prepared_pages,
    })
}

/// The devices' irqfds: the teardown helper keeps them (their last close
/// costs KVM work).
fn irqfds(mmio: &MmioBus) -> Vec<std::os::fd::RawFd> {
    mmio.devices
        .iter()
        .map(|d| std::os::fd::AsRawFd::as_raw_fd(devices::lock(&d.transport).interrupt().irqfd()))
        .collect()
}

/// Refuses a snapshot request kiln cannot carry out, before anything
/// starts: a VM with devices whose host side a snapshot cannot hold yet,
/// or a directory that exists.
fn check_snapshot_request(
    config: &VmConfig,
    request: &snapshot::SnapshotRequest,
) -> Result<(), VmmError> {
    if let Some(devices) = unsaveable_devices(config, "saved") {
        return Err(snapshot::SnapshotError::Unsupported(format!(
            "it has {devices} (snapshots hold the console, entropy, user-network and disk devices so far)"
        ))
        .into());
    }
    if request.path.exists() {
        return Err(snapshot::SnapshotError::Io {
            what: format!("snapshot {}", request.path.display()),
            cause: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
        }
        .into());
    }
    Ok(())
}

/// The devices of `config` whose host side neither a snapshot nor a
/// standby can hold yet, named for a message (`done`: what user
/// networking can be instead), if it has any.
fn unsaveable_devices(config: &VmConfig, done: &str) -> Option<String> {
    let mut devices = Vec::new();
    if matches!(config.net.mode, net::Mode::Tap { .. }) {
        devices.push(format!(
            "a tap network (user networking, --net user, can be {done})"
        ));
    }
    if !config.volumes.is_empty() {
        devices.push("a volume".into());
    }
    if config.vsock.is_some() {
        devices.push("a vsock device".into());
    }
    (!devices.is_empty()).then(|| devices.join(" and "))
}

/// Refuses a standby kiln cannot keep in step, before anything starts.
fn check_standby(config: &VmConfig) -> Result<(), VmmError> {
    if let Some(devices) = unsaveable_devices(config, "replicated") {
        return Err(ha::HaError::Unsupported(format!(
            "it has {devices} (a standby follows the console, entropy, user-network and disk devices so far)"
        ))
        .into());
    }
    if config.snapshot.is_some() {
        return Err(ha::HaError::Unsupported(
            "--snapshot-at and --standby cannot be combined".into(),
        )
        .into());
    }
    Ok(())
}

/// kiln-vmm's peak resident set size (VmHWM in /proc/self/status), bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Bytes of guest memory resident in host memory (mincore over the mapping).
fn guest_resident(mem: &crate::GuestMem) -> u64 {
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
    let page = 4096usize;
    let mut total = 0;
    for region in mem.iter() {
        let Ok(host) = region.get_host_address(vm_memory::MemoryRegionAddress(0)) else {
            continue;
        };
        let len = region.len() as usize;
        let mut vec = vec![0u8; len.div_ceil(page)];
        // SAFETY: `host..host+len` is the region's own live mapping (page
        // aligned, owned by `mem`), and `vec` has one byte per page of it.
        let rc = unsafe { libc::mincore(host.cast(), len, vec.as_mut_ptr()) };
        if rc == 0 {
            total += vec.iter().filter(|&&b| b & 1 != 0).count() as u64 * page as u64;
        }
    }
    total
}
