//! Starting a VM from a snapshot (`kiln run --from-snapshot`): guest
//! memory mapped private from the memory file, fresh vCPUs given the saved
//! state, fresh devices given the saved queues, and every vCPU that ran
//! resumed where it parked — each with the host's time and its own random
//! bytes (`kiln_boot::snapshot::RESUMED`).

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::devices::legacy::console::Console;
use crate::devices::virtio::console::InputSource;
use crate::timings::{Phase, Timings};
use crate::vstate::kvm::{Hypervisor, KvmError};
use crate::{arch, devices, vstate, RunReport, VmmError};

use super::{SnapshotError, MEMORY_FILE};

/// What to restore and how to run it.
#[derive(Clone, Debug)]
pub struct RestoreConfig {
    /// The snapshot directory.
    pub path: PathBuf,
    /// The image the caller expects the snapshot to come from (refused
    /// when the snapshot names another).
    pub image: Option<String>,
    /// Stop the guest after this long.
    pub timeout: Option<Duration>,
    /// Collect KVM statistics.
    pub stats: bool,
    /// Put the seccomp filters in place (as [`crate::VmConfig::seccomp`]).
    pub seccomp: bool,
    /// Become this user and group before the guest runs.
    pub user: Option<(u32, u32)>,
    /// Leave the VM's destruction to a helper process.
    pub background_teardown: bool,
    /// What the program's standard input reads from now on.
    pub stdin: InputSource,
    /// The host terminal, with `-t`.
    pub terminal: Option<std::os::fd::RawFd>,
    /// How guest memory comes from the memory file.
    pub memory: vstate::memory::SnapshotMemory,
    /// Ports to publish instead of the snapshot's (`-p`; `None`: the
    /// snapshot's).
    pub publish: Option<Vec<crate::net::PortMap>>,
    /// Disk files to attach instead of the snapshot's, in the same order
    /// (`--disk`, each clone its own copy; empty: the snapshot's own).
    pub disks: Vec<crate::devices::virtio::block::DiskSpec>,
    /// A snapshot of the resumed VM to take (`--snapshot-at SIGUSR2` only:
    /// the kernel's own points were passed before the first snapshot).
    pub snapshot: Option<super::SnapshotRequest>,
    /// Run as a warm VM (`kiln warm`): hold the guest where it reports
    /// itself resumed until a client claims it through this socket.
    pub warm: Option<std::sync::Arc<super::warm::WarmHold>>,
}

/// The disks of a resumed VM, opened (and locked): the snapshot's own,
/// unchanged since it was taken, or the caller's replacements of the same
/// sizes.
fn open_disks(
    saved: &[super::SavedDisk],
    replacements: &[crate::devices::virtio::block::DiskSpec],
) -> Result<Vec<crate::devices::virtio::block::Disk>, VmmError> {
    use crate::devices::virtio::block::{Disk, DiskSpec};
    if !replacements.is_empty() && replacements.len() != saved.len() {
        return Err(SnapshotError::Unresumable(format!(
            "the snapshot has {} disks, {} --disk given",
            saved.len(),
            replacements.len()
        ))
        .into());
    }
    let mut disks = Vec::new();
    for (i, s) in saved.iter().enumerate() {
        let spec = match replacements.get(i) {
            Some(r) => r.clone(),
            None => DiskSpec {
                path: s.path.clone(),
                read_only: s.read_only,
            },
        };
        let (size, mtime_ns) =
            super::size_and_mtime(&spec.path).map_err(|cause| SnapshotError::Io {
                what: format!("examining disk {}", spec.path.display()),
                cause,
            })?;
        if size != s.size {
            return Err(SnapshotError::Unresumable(format!(
                "disk {} holds {size} bytes, the snapshot's held {}",
                spec.path.display(),
                s.size
            ))
            .into());
        }
        if replacements.is_empty() && mtime_ns != s.mtime_ns {
            return Err(SnapshotError::Unresumable(format!(
                "disk {} changed since the snapshot was taken (give each resumed VM a copy made then, with --disk)",
                spec.path.display()
            ))
            .into());
        }
        disks.push(Disk::open(&spec)?);
    }
    Ok(disks)
}

/// The network spec that brings a saved VM's user network up again.
fn network_spec(
    saved: &super::SavedNet,
    publish: Option<&[crate::net::PortMap]>,
) -> Result<crate::net::NetSpec, SnapshotError> {
    let bad = |what: &str, value: &str| {
        SnapshotError::Unresumable(format!("the snapshot's network has a bad {what} {value:?}"))
    };
    let publish = match publish {
        Some(p) => p.to_vec(),
        None => saved
            .publish
            .iter()
            .map(|p| p.parse().map_err(|_| bad("published port", p)))
            .collect::<Result<_, _>>()?,
    };
    Ok(crate::net::NetSpec {
        mode: crate::net::Mode::User,
        address: Some(
            saved
                .address
                .parse()
                .map_err(|_| bad("address", &saved.address))?,
        ),
        gateway: Some(
            saved
                .gateway
                .parse()
                .map_err(|_| bad("gateway", &saved.gateway))?,
        ),
        dns: saved
            .dns
            .iter()
            .map(|d| d.parse().map_err(|_| bad("name server", d)))
            .collect::<Result<_, _>>()?,
        publish,
        ..crate::net::NetSpec::default()
    })
}

/// The interrupt flag in RFLAGS.
const RFLAGS_IF: u64 = 1 << 9;

/// Restores the snapshot `config.path` and runs it to the end.
///
/// # Errors
/// [`VmmError`]; a snapshot that is corrupt, from another kiln or host
/// flavour, or from another image than `config.image` is refused before
/// anything runs.
pub fn restore(
    hv: &Hypervisor,
    config: &RestoreConfig,
    console: Console,
    mut timings: Timings,
) -> Result<RunReport, VmmError> {
    let state = super::load(&config.path)?;
    timings.mark(Phase::SnapshotVerified);
    let memory_path = config.path.join(MEMORY_FILE);
    let memory_file = std::fs::File::open(&memory_path).map_err(|cause| SnapshotError::Io {
        what: format!("opening {}", memory_path.display()),
        cause,
    })?;
    // Shared memory learns and prefetches the write set kept next to the
    // memory file.
    let write_set_dir =
        (config.memory == vstate::memory::SnapshotMemory::Shared).then_some(config.path.as_path());
    resume(
        hv,
        config,
        state,
        memory_file,
        write_set_dir,
        console,
        timings,
    )
}

/// Resumes a VM whose state (checked) is `state` and whose memory is
/// `memory_file` (a snapshot's, or a standby's copy); `config.path` names
/// it in messages. `write_set_dir`: where the memory's write set is kept
/// ([`vstate::working_set`]).
///
/// # Errors
/// As [`restore`].
pub(crate) fn resume(
    hv: &Hypervisor,
    config: &RestoreConfig,
    state: super::SnapshotState,
    memory_file: std::fs::File,
    write_set_dir: Option<&std::path::Path>,
    console: Console,
    mut timings: Timings,
) -> Result<RunReport, VmmError> {
    if let (Some(want), Some(have)) = (&config.image, &state.image) {
        if want != have {
            return Err(SnapshotError::Incompatible {
                path: config.path.clone(),
                why: format!("taken from image {have}, not {want}"),
            }
            .into());
        }
    }
    let count = state.vcpus.len();
    if !(1..=arch::layout::MAX_VCPUS as usize).contains(&count) {
        return Err(SnapshotError::NotASnapshot {
            path: config.path.clone(),
            why: format!("{count} vCPUs"),
        }
        .into());
    }
    if let Some(request) = &config.snapshot {
        if !matches!(request.at, super::SnapshotPoint::Signal(_)) {
            return Err(SnapshotError::Unresumable(
                "a resumed VM can be saved again on a signal only (--snapshot-at SIGUSR2): it passed its program entry and first output before"
                    .into(),
            )
            .into());
        }
        if request.path.exists() {
            return Err(SnapshotError::Io {
                what: format!("snapshot {}", request.path.display()),
                cause: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
            }
            .into());
        }
    }
    let disks = open_disks(&state.disks, &config.disks)?;
    // The network before the VM: a taken port is refused before it is made.
    let mut network = match &state.net {
        Some(saved) => {
            crate::net::Network::start(&network_spec(saved, config.publish.as_deref())?)?
        }
        None if config.publish.as_ref().is_some_and(|p| !p.is_empty()) => {
            return Err(SnapshotError::Unresumable(
                "-p: the snapshot's VM has no network (take it with --net user to publish ports)"
                    .into(),
            )
            .into())
        }
        None => None,
    };
    let vm = hv
        .kvm()
        .create_vm()
        .map_err(KvmError::ioctl("KVM_CREATE_VM"))?;
    let layout = vstate::memory::map_snapshot_memory(
        &vm,
        &memory_file,
        state.memory.size,
        state.ram_size,
        config.memory,
        write_set_dir,
    )?;
    drop(memory_file);
    vstate::irqchip::create_local_apic(&vm)?;
    let vcpus = (0..count)
        .map(|i| {
            vm.create_vcpu(i as u64)
                .map_err(KvmError::ioctl("KVM_CREATE_VCPU"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let flavour = arch::detect_flavour(&vcpus[0]);
    if state.flavour != flavour.name() {
        return Err(SnapshotError::Incompatible {
            path: config.path.clone(),
            why: format!(
                "taken on a {} KVM host; this host's KVM is {}",
                state.flavour,
                flavour.name()
            ),
        }
        .into());
    }
    timings.mark(Phase::VmCreated);

    let snapshot_irq = match &config.snapshot {
        Some(_) => Some(
            vmm_sys_util::eventfd::EventFd::new(vmm_sys_util::eventfd::EFD_NONBLOCK)
                .map_err(VmmError::Devices)?,
        ),
        None => None,
    };
    let (mmio, served, _table) = crate::create_devices(
        &vm,
        &layout.mem,
        &crate::ConsoleSetup {
            stdin: config.stdin,
            terminal: config.terminal,
            vsock: None,
            snapshot_irq: snapshot_irq.as_ref(),
            mac: state.net.as_ref().map_or([0; 6], |n| n.mac),
            output_gate: None,
        },
        network.as_mut(),
        disks,
        Vec::new(),
        None,
    )?;
    if mmio.devices.len() != state.devices.len() {
        return Err(SnapshotError::Unresumable(format!(
            "the snapshot has {} virtio devices; kiln made {} for it",
            state.devices.len(),
            mmio.devices.len()
        ))
        .into());
    }
    for (device, saved) in mmio.devices.iter().zip(&state.devices) {
        devices::lock(&device.transport)
            .restore(&saved.transport)
            .map_err(|e| SnapshotError::Unresumable(e.to_string()))?;
    }
    for s in &served {
        s.kick_if_active().map_err(VmmError::Devices)?;
    }
    if let Some(net) = &network {
        if let std::net::IpAddr::V4(ip) = net.guest.v4.addr {
            for device in &mmio.devices {
                devices::lock(&device.transport)
                    .device_mut()
                    .announce(ip)
                    .map_err(VmmError::Devices)?;
            }
        }
    }
    let mut started: Vec<bool> = state.vcpus.iter().map(Option::is_some).collect();
    if let Some(hold) = &config.warm {
        // A warm VM holds vCPU 0 at the guest's resume report; the other
        // vCPUs that ran start only when it is claimed (else they would
        // run the program on before anyone asked).
        let later: Vec<u32> = (1..started.len())
            .filter(|&i| started[i])
            .map(|i| i as u32)
            .collect();
        for &i in &later {
            started[i as usize] = false;
        }
        hold.start_on_claim(later);
    }
    let coordinator = match (&config.snapshot, &snapshot_irq) {
        (Some(request), Some(irqfd)) => {
            if let super::SnapshotPoint::Signal(signal) = request.at {
                super::catch_signal(signal, irqfd).map_err(|cause| SnapshotError::Io {
                    what: "catching the --snapshot-at signal".into(),
                    cause,
                })?;
            }
            let mut net = state.net.clone();
            if let (Some(n), Some(publish)) = (net.as_mut(), &config.publish) {
                n.publish = publish.iter().map(ToString::to_string).collect();
            }
            let disks = if config.disks.is_empty() {
                state
                    .disks
                    .iter()
                    .map(|d| crate::devices::virtio::block::DiskSpec {
                        path: d.path.clone(),
                        read_only: d.read_only,
                    })
                    .collect()
            } else {
                config.disks.clone()
            };
            let disks = disks
                .iter()
                .map(super::SavedDisk::of)
                .collect::<Result<_, _>>()
                .map_err(|cause| SnapshotError::Io {
                    what: "examining the disks for the snapshot".into(),
                    cause,
                })?;
            let mut request = request.clone();
            // A snapshot of a resumed VM comes from the same image.
            if request.image.is_none() {
                request.image.clone_from(&state.image);
            }
            Some(super::Coordinator::new(
                request,
                super::VmFacts {
                    flavour,
                    ram_size: state.ram_size,
                    kernel_entry: state.kernel_entry,
                    boot_page_tables: state.boot_page_tables,
                    // Copied memory is anonymous; a mapped memory file is
                    // read whole (its pages need not be resident).
                    anonymous_memory: config.memory == vstate::memory::SnapshotMemory::Copy,
                    net,
                    disks,
                },
                count,
            ))
        }
        _ => None,
    };
    for (i, (vcpu, saved)) in vcpus.iter().zip(&state.vcpus).enumerate() {
        let index = i as u8;
        match saved {
            Some(saved) => {
                let cpuid = arch::guest_cpuid(hv.supported_cpuid(), index);
                vcpu.set_cpuid2(&cpuid)
                    .map_err(KvmError::ioctl("KVM_SET_CPUID2"))?;
                let seed = crate::host_seed();
                saved.restore(vcpu, |regs| {
                    let word = |n: usize| {
                        u64::from_le_bytes(seed[n * 8..n * 8 + 8].try_into().unwrap_or_default())
                    };
                    regs.rax = kiln_boot::snapshot::RESUMED;
                    regs.r8 = word(0);
                    regs.r9 = word(1);
                    regs.r10 = word(2);
                    regs.r11 = word(3);
                    // A warm VM's boot CPU touches the program's pages
                    // before it reports itself resumed and is held.
                    regs.rdx = if config.warm.is_some() && index == 0 {
                        kiln_boot::snapshot::hints::PREPARE
                    } else {
                        0
                    };
                    // Until it registers again the vCPU is emulated on
                    // PVM: no interrupt before that.
                    regs.rflags &= !RFLAGS_IF;
                })?;
                // The host's time now, and the guest's TSC with it, read
                // back: on PVM the guest's TSC is the host's whatever was
                // written (the saved value is not the guest's now).
                let realtime = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos() as u64;
                let tsc = arch::guest_tsc(vcpu).unwrap_or(0);
                let mut regs = vcpu.get_regs().map_err(KvmError::ioctl("KVM_GET_REGS"))?;
                regs.rdi = realtime;
                regs.rsi = tsc;
                vcpu.set_regs(&regs)
                    .map_err(KvmError::ioctl("KVM_SET_REGS"))?;
            }
            None => {
                // A vCPU the kernel had not started (never vCPU 0): as at
                // boot, with the CPU state the kernel was told every vCPU
                // has (`setup_vcpu` fails if KVM refuses it).
                crate::setup_vcpu(
                    hv,
                    vcpu,
                    state.kernel_entry,
                    state.boot_page_tables,
                    flavour,
                    index,
                    &mut arch::cpu_preset::read(&layout.mem, count as u8),
                )?;
            }
        }
    }
    timings.mark(Phase::MemoryReady);
    let mut vcpus = vcpus.into_iter();
    let vcpu = vcpus.next().ok_or(SnapshotError::NotASnapshot {
        path: config.path.clone(),
        why: "no vCPU".into(),
    })?;
    let report = crate::launch(
        crate::Launch {
            vm,
            vcpu,
            other_vcpus: vcpus.collect(),
            layout,
            mmio,
            served,
            flavour,
            timings,
            started,
            coordinator,
            learn_cpuid: None,
            warm: config.warm.clone(),
        },
        console,
        &crate::RunLimits {
            timeout: config.timeout,
            stats: config.stats,
            measure_memory: true,
            seccomp: config.seccomp,
            user: config.user,
            background_teardown: config.background_teardown,
        },
    );
    if snapshot_irq.is_some() {
        super::release_signal();
    }
    // passt (and its published ports) stay up to the VM's end.
    drop(network);
    report
}
