//! The primary's side: a connection to the standby, a thread that asks
//! the guest for a checkpoint every interval (the snapshot interrupt), the
//! capture itself (vCPU 0, every vCPU parked, every device locked), and a
//! thread that sends each checkpoint and releases the output it covers
//! once the standby acknowledged it.
//!
//! One checkpoint is in flight at a time: the next is asked for an
//! interval after the previous one was acknowledged.

use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vm_memory::{GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};
use vmm_sys_util::eventfd::EventFd;

use super::gate::OutputGate;
use super::wire::{self, Checkpoint, PAGE};
use super::{HaError, StandbyTarget};
use crate::arch::VcpuState;
use crate::devices::MmioBus;
use crate::snapshot::{Coordinator, MemoryFile, SnapshotError};
use crate::GuestMem;

/// How long a checkpoint asked for may take to start before it is asked
/// for again.
const ASK_AGAIN: Duration = Duration::from_millis(200);
/// How often the sender says "alive" when it has nothing else to send.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long the standby may take to take a checkpoint (or a write to go
/// out) before it counts as lost.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// What replication did during a run (`kiln run --standby`'s report).
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Checkpoints the standby acknowledged.
    pub acknowledged: u64,
    /// Checkpoints taken.
    pub checkpoints: u64,
    /// Pages of memory sent, in all.
    pub pages: u64,
    /// Disk bytes sent, in all.
    pub disk_bytes: u64,
    /// The longest the vCPUs stood still for one checkpoint.
    pub pause_max: Duration,
    /// The time the vCPUs stood still, in all.
    pub pause_total: Duration,
    /// Frames the gate held until their checkpoint was acknowledged.
    pub frames_held: u64,
    /// Why the standby was lost, if it was (the VM ran on unprotected).
    pub lost: Option<String>,
}

impl Summary {
    /// One line for the end of a run.
    pub fn line(&self) -> String {
        let mean = if self.checkpoints == 0 {
            0.0
        } else {
            self.pause_total.as_secs_f64() * 1000.0 / self.checkpoints as f64
        };
        let mut line = format!(
            "standby: {} checkpoints ({} acknowledged), {:.1} MiB of memory and {:.1} MiB of disk sent, pause mean {mean:.2} ms, max {:.2} ms, {} frames held for their checkpoint",
            self.checkpoints,
            self.acknowledged,
            (self.pages * PAGE as u64) as f64 / f64::from(1 << 20),
            self.disk_bytes as f64 / f64::from(1 << 20),
            self.pause_max.as_secs_f64() * 1000.0,
            self.frames_held
        );
        if let Some(why) = &self.lost {
            line.push_str(&format!(
                "; the standby was lost ({why}), the VM ran on unprotected"
            ));
        }
        line
    }
}

enum Outgoing {
    Checkpoint(Checkpoint),
    Done(i32),
}

#[derive(Default)]
struct Flow {
    /// The last checkpoint handed to the sender.
    sent: u64,
    /// The last checkpoint the standby acknowledged.
    acked: u64,
    /// The standby is gone.
    lost: Option<String>,
    /// The run is ending: no more checkpoints.
    stopping: bool,
    /// The guest's boot is over (checkpoints start then).
    booted: bool,
}

/// Replication of one VM to its standby.
pub struct Replicator {
    gate: Arc<OutputGate>,
    interval: Duration,
    outgoing: Mutex<Option<SyncSender<Outgoing>>>,
    flow: Mutex<Flow>,
    changed: Condvar,
    /// The next checkpoint sends all of memory (dirty tracking starts).
    first: AtomicBool,
    summary: Mutex<Summary>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Connects to the standby at `target` and says hello.
///
/// # Errors
/// When it cannot be reached or refuses.
pub fn connect(target: &StandbyTarget) -> Result<TcpStream, HaError> {
    use std::net::ToSocketAddrs;
    let link = |what: String| move |cause| HaError::Link { what, cause };
    let addresses = target
        .address
        .to_socket_addrs()
        .map_err(link(format!("resolving the standby {}", target.address)))?;
    let mut last = None;
    for address in addresses {
        match TcpStream::connect_timeout(&address, Duration::from_secs(5)) {
            Ok(mut stream) => {
                stream
                    .set_nodelay(true)
                    .map_err(link("configuring the standby's connection".into()))?;
                wire::send_hello(&mut stream)?;
                wire::read_welcome(&mut stream)?;
                return Ok(stream);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(HaError::Link {
        what: format!("connecting to the standby {}", target.address),
        cause: last.unwrap_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound)),
    })
}

impl Replicator {
    /// Starts replicating over `stream` (from [`connect`]): `gate` holds
    /// the NIC's output, `irqfd` raises the snapshot interrupt.
    ///
    /// # Errors
    /// When its threads cannot start.
    pub fn start(
        stream: TcpStream,
        gate: Arc<OutputGate>,
        irqfd: EventFd,
        interval: Duration,
    ) -> std::io::Result<Arc<Self>> {
        let (tx, rx) = sync_channel::<Outgoing>(1);
        let replicator = Arc::new(Self {
            gate,
            interval,
            outgoing: Mutex::new(Some(tx)),
            flow: Mutex::new(Flow::default()),
            changed: Condvar::new(),
            first: AtomicBool::new(true),
            summary: Mutex::new(Summary::default()),
            threads: Mutex::new(Vec::new()),
        });
        let sender = {
            let me = replicator.clone();
            std::thread::Builder::new()
                .name("kiln-ha-send".into())
                .spawn(move || me.send_loop(stream, &rx))?
        };
        let ticker = {
            let me = replicator.clone();
            std::thread::Builder::new()
                .name("kiln-ha-tick".into())
                .spawn(move || me.tick_loop(&irqfd))?
        };
        lock(&replicator.threads).extend([sender, ticker]);
        Ok(replicator)
    }

    /// Sends checkpoints as they come; each acknowledgement releases the
    /// output it covers.
    fn send_loop(&self, mut stream: TcpStream, rx: &std::sync::mpsc::Receiver<Outgoing>) {
        // A standby that stops answering is lost, not waited for forever.
        let timeouts = stream
            .set_read_timeout(Some(ACK_TIMEOUT))
            .and_then(|()| stream.set_write_timeout(Some(ACK_TIMEOUT)));
        let mut reader = match timeouts.and_then(|()| stream.try_clone()) {
            Ok(r) => r,
            Err(e) => return self.lose(e.to_string()),
        };
        loop {
            let message = match rx.recv_timeout(HEARTBEAT) {
                Ok(m) => m,
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if let Err(e) = wire::send_heartbeat(&mut stream) {
                        return self.lose(e.to_string());
                    }
                    continue;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
            };
            let result = match message {
                Outgoing::Done(status) => {
                    let _ = wire::send_done(&mut stream, status);
                    return;
                }
                Outgoing::Checkpoint(c) => wire::send_checkpoint(&mut stream, &c)
                    .and_then(|()| wire::read_ack(&mut reader))
                    .and_then(|acked| {
                        if acked == c.epoch {
                            Ok(acked)
                        } else {
                            Err(HaError::Protocol(format!(
                                "the standby acknowledged checkpoint {acked}, not {}",
                                c.epoch
                            )))
                        }
                    }),
            };
            match result {
                Ok(epoch) => {
                    self.gate.release(epoch);
                    lock(&self.summary).acknowledged += 1;
                    lock(&self.flow).acked = epoch;
                    self.changed.notify_all();
                }
                Err(e) => return self.lose(e.to_string()),
            }
        }
    }

    /// The standby is gone: the VM runs on unprotected, its output flows.
    fn lose(&self, why: String) {
        eprintln!("kiln: the standby is gone ({why}); the VM runs on without one");
        self.gate.open();
        lock(&self.summary).lost = Some(why.clone());
        lock(&self.flow).lost = Some(why);
        self.changed.notify_all();
    }

    /// The guest reached its program's entry: checkpoints may start.
    pub fn program_entered(&self) {
        lock(&self.flow).booted = true;
        self.changed.notify_all();
    }

    /// Asks for a checkpoint an interval after the previous one was
    /// acknowledged; the first once the guest's boot is over (a snapshot
    /// round while the boot CPU brings the others up could wait for a CPU
    /// whose interrupts are not on yet).
    fn tick_loop(&self, irqfd: &EventFd) {
        {
            let mut flow = lock(&self.flow);
            while !flow.booted && flow.lost.is_none() && !flow.stopping {
                flow = self
                    .changed
                    .wait_timeout(flow, Duration::from_millis(100))
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .0;
            }
        }
        // The first checkpoint at once: the standby holds nothing yet.
        let mut wait = Duration::ZERO;
        loop {
            let deadline = Instant::now() + wait;
            let mut flow = lock(&self.flow);
            loop {
                if flow.lost.is_some() || flow.stopping {
                    return;
                }
                let now = Instant::now();
                if flow.acked == flow.sent && now >= deadline {
                    break;
                }
                let pause = if flow.acked == flow.sent {
                    deadline - now
                } else {
                    Duration::from_millis(100)
                };
                flow = self
                    .changed
                    .wait_timeout(flow, pause)
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .0;
            }
            let asked = flow.sent;
            drop(flow);
            let _ = irqfd.write(1);
            // Until the guest has parked and the checkpoint is taken (asked
            // again after a while, should the interrupt have been lost).
            let mut flow = lock(&self.flow);
            while flow.sent == asked && flow.lost.is_none() && !flow.stopping {
                let (next, waited) = self
                    .changed
                    .wait_timeout(flow, ASK_AGAIN)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                flow = next;
                if waited.timed_out() && flow.sent == asked {
                    let _ = irqfd.write(1);
                }
            }
            wait = self.interval;
        }
    }

    /// Takes a checkpoint (vCPU 0, every vCPU parked since `since`) and
    /// hands it to the sender. A failure loses the standby, not the VM.
    pub(crate) fn checkpoint(
        &self,
        coordinator: &Coordinator,
        vcpus: Vec<Option<VcpuState>>,
        since: Instant,
        vm: &kvm_ioctls::VmFd,
        mem: &GuestMem,
        mmio: &MmioBus,
    ) {
        if lock(&self.flow).lost.is_some() {
            return;
        }
        match self.capture(coordinator, vcpus, vm, mem, mmio) {
            Ok(checkpoint) => {
                let pause = since.elapsed();
                {
                    let mut summary = lock(&self.summary);
                    summary.checkpoints += 1;
                    summary.pages += checkpoint.pages.len() as u64;
                    summary.disk_bytes += checkpoint
                        .disks
                        .iter()
                        .map(|(_, _, d)| d.len() as u64)
                        .sum::<u64>();
                    summary.pause_total += pause;
                    summary.pause_max = summary.pause_max.max(pause);
                }
                let epoch = checkpoint.epoch;
                let handed = lock(&self.outgoing)
                    .as_ref()
                    .is_some_and(|tx| tx.send(Outgoing::Checkpoint(checkpoint)).is_ok());
                if handed {
                    lock(&self.flow).sent = epoch;
                    self.changed.notify_all();
                }
            }
            Err(e) => self.lose(e.to_string()),
        }
    }

    fn capture(
        &self,
        coordinator: &Coordinator,
        vcpus: Vec<Option<VcpuState>>,
        vm: &kvm_ioctls::VmFd,
        mem: &GuestMem,
        mmio: &MmioBus,
    ) -> Result<Checkpoint, SnapshotError> {
        // Devices locked: no queue moves, no buffer is written.
        let mut transports: Vec<_> = mmio
            .devices
            .iter()
            .map(|d| crate::devices::lock(&d.transport))
            .collect();
        let devices = Coordinator::save_devices(&transports, mmio)?;
        let first = self.first.swap(false, Ordering::SeqCst);
        let mut disks = Vec::new();
        let mut disk = 0u32;
        for t in &mut transports {
            if let Some(written) = t.device_mut().replicate_writes(first) {
                let written = written.map_err(|cause| SnapshotError::Io {
                    what: format!("reading disk {disk} for the standby"),
                    cause,
                })?;
                disks.extend(
                    written
                        .into_iter()
                        .map(|(offset, data)| (disk, offset, data)),
                );
                disk += 1;
            }
        }
        let region = mem
            .iter()
            .next()
            .ok_or_else(|| SnapshotError::Unsupported("it has no memory".into()))?;
        let size = region.len() as usize;
        let host = region
            .get_host_address(MemoryRegionAddress(0))
            .map_err(|e| SnapshotError::Unsupported(format!("guest memory: {e}")))?;
        // SAFETY: `host..host + size` is guest memory's one live mapping,
        // owned by `mem` for the whole call; every vCPU is parked and every
        // device locked, so nothing writes it while the slice exists.
        let bytes = unsafe { std::slice::from_raw_parts(host, size) };
        // Both logs are read (and so cleared) every time; the first
        // checkpoint sends every page that holds data instead.
        let kvm_log = vm
            .get_dirty_log(0, size)
            .map_err(crate::vstate::kvm::KvmError::ioctl("KVM_GET_DIRTY_LOG"))?;
        let vmm_log = std::ops::Deref::deref(region).bitmap().get_and_reset();
        let pages: Vec<u64> = if first {
            let resident = crate::snapshot::memory::candidate_pages(
                host,
                size,
                coordinator.facts().anonymous_memory,
            );
            resident
                .iter()
                .enumerate()
                .filter(|&(i, &r)| r && !crate::snapshot::memory::is_zero(page_of(bytes, i)))
                .map(|(i, _)| i as u64)
                .collect()
        } else {
            dirty_pages(&kvm_log, &vmm_log, size.div_ceil(PAGE))
        };
        let mut data = Vec::with_capacity(pages.len() * PAGE);
        for &page in &pages {
            let chunk = page_of(bytes, page as usize);
            data.extend_from_slice(chunk);
            data.resize(data.len() + (PAGE - chunk.len()), 0);
        }
        let epoch = self.gate.seal();
        drop(transports);
        let state = coordinator.state_document(
            None,
            vcpus,
            devices,
            MemoryFile {
                size: size as u64,
                data_bytes: 0,
                sha256: String::new(),
            },
        )?;
        Ok(Checkpoint {
            epoch,
            state,
            pages,
            data,
            disks,
        })
    }

    /// The run ended with `status` (`None`: not by itself): no more
    /// checkpoints; the standby is told so it does not take over, and the
    /// gate opens. Returns what replication did.
    pub fn finish(&self, status: Option<i32>) -> Summary {
        {
            let mut flow = lock(&self.flow);
            flow.stopping = true;
        }
        self.changed.notify_all();
        if let Some(tx) = lock(&self.outgoing).take() {
            if let Some(status) = status {
                let _ = tx.send(Outgoing::Done(status));
            }
        }
        for thread in lock(&self.threads).drain(..) {
            let _ = thread.join();
        }
        self.gate.open();
        let mut summary = lock(&self.summary).clone();
        summary.frames_held = self.gate.held().0;
        summary
    }
}

/// Page `i` of `bytes` (shorter at the end).
fn page_of(bytes: &[u8], i: usize) -> &[u8] {
    let start = (i * PAGE).min(bytes.len());
    &bytes[start..(start + PAGE).min(bytes.len())]
}

/// The pages set in either bitmap (bit `i % 64` of word `i / 64` stands
/// for page `i`), below `count`.
fn dirty_pages(a: &[u64], b: &[u64], count: usize) -> Vec<u64> {
    let words = a.len().max(b.len());
    let mut pages = Vec::new();
    for w in 0..words {
        let mut bits = a.get(w).copied().unwrap_or(0) | b.get(w).copied().unwrap_or(0);
        while bits != 0 {
            let page = w * 64 + bits.trailing_zeros() as usize;
            if page < count {
                pages.push(page as u64);
            }
            bits &= bits - 1;
        }
    }
    pages
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirty_pages_merge_both_logs_in_order() {
        assert_eq!(
            dirty_pages(&[0b101, 1 << 63], &[0b110], 200),
            vec![0, 1, 2, 127]
        );
        assert_eq!(dirty_pages(&[u64::MAX], &[], 3), vec![0, 1, 2]);
    }
}
