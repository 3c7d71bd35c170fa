//! The devices thread: one epoll loop for all of a VM's virtio devices. It
//! waits on each queue's ioeventfd (KVM signals it when the guest writes
//! QueueNotify, without a return to the VMM) and on each device's backend
//! descriptors, and runs the device's queue processing — so a kick never
//! goes through the vCPU thread.
//!
//! A device may ask the guest not to kick a queue for a while and have the
//! loop look at it on a timer instead ([`VirtioDevice::polling`]); the
//! timer runs only while some device polls.
//!
//! A host-side failure (standard output gone bad, an irqfd that cannot be
//! written) ends the loop with the error and stops the vCPU; a guest's bad
//! queue only breaks that device.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::timerfd::TimerFd;

use super::virtio::mmio::MmioTransport;
#[cfg(doc)]
use super::virtio::VirtioDevice;
use super::{lock, DeviceError};

/// What an epoll token stands for.
#[derive(Clone, Copy, Debug)]
enum Source {
    /// The loop's stop eventfd.
    Stop,
    /// kiln-vmm received a terminating signal (`stop::catch_termination`).
    Terminate,
    /// Queue `queue` of device `device` was kicked.
    Queue { device: usize, queue: usize },
    /// A backend descriptor of device `device` is ready.
    Backend { device: usize, fd: RawFd },
    /// Time to rewrite the exit report.
    ExitReport,
    /// Time to look at the queues devices poll.
    Poll,
}

/// How often the loop looks at the queues devices poll instead of waiting
/// for their kicks: output the guest offers then waits at most this long.
const POLL_INTERVAL: Duration = Duration::from_micros(500);

/// One device as the loop serves it.
pub struct Served {
    /// The transport (shared with the vCPU thread's MMIO bus).
    pub transport: Arc<Mutex<MmioTransport>>,
    /// One ioeventfd per queue, in queue order.
    pub queue_events: Vec<EventFd>,
}

impl Served {
    /// Has the devices thread look at each queue of the device once, as if
    /// the guest had kicked it, when the device runs. For a restored VM:
    /// the guest may have kicked a queue just before the snapshot (its
    /// ioeventfd written, the devices thread not yet at the queue), so the
    /// request sits in the saved ring with its notification gone — a
    /// standby that took over such a disk write waited forever. Virtio
    /// drivers expect a device to find nothing new at times.
    ///
    /// # Errors
    /// When an eventfd cannot be written.
    pub fn kick_if_active(&self) -> std::io::Result<()> {
        if lock(&self.transport).is_active() {
            for event in &self.queue_events {
                event.write(1)?;
            }
        }
        Ok(())
    }
}

/// A backend descriptor as registered: its epoll token and the events
/// asked for.
struct Watch {
    fd: RawFd,
    token: u64,
    events: u32,
}

/// The running devices thread.
pub struct DevicesThread {
    stop: EventFd,
    /// How the loop ended, sent before the thread drops what it holds and
    /// exits: closing its descriptors and ending the thread (~0.1 ms) is
    /// nothing the caller needs to wait for.
    ended: std::sync::mpsc::Receiver<Result<(), DeviceError>>,
}

impl DevicesThread {
    /// Starts serving `devices`; `on_failure` runs (on the devices thread)
    /// when a host-side failure ends the loop, to stop the VM, and
    /// `crate::stop::request` when `terminate` (the terminating signals'
    /// eventfd) fires. `filter` ([`crate::seccomp::Role::Devices`]) goes on
    /// the thread before it serves anything. `exit_report`, when asked
    /// for, is rewritten on its timer and once more when the loop stops.
    /// `first` runs on the thread before anything else (work the caller
    /// need not wait for, done while the guest boots).
    ///
    /// # Errors
    /// When epoll or the thread cannot be set up.
    pub fn start(
        devices: Vec<Served>,
        terminate: EventFd,
        on_failure: impl FnOnce() + Send + 'static,
        filter: Option<seccompiler::BpfProgram>,
        mut exit_report: Option<crate::exit_report::ExitReport>,
        first: Option<Box<dyn FnOnce() + Send>>,
    ) -> std::io::Result<Self> {
        let stop = EventFd::new(EFD_NONBLOCK)?;
        let epoll = Epoll::new()?;
        let mut sources = vec![Source::Stop];
        let watch = |epoll: &Epoll, sources: &mut Vec<Source>, fd: RawFd, s: Source| {
            sources.push(s);
            epoll.ctl(
                ControlOperation::Add,
                fd,
                EpollEvent::new(EventSet::IN, (sources.len() - 1) as u64),
            )
        };
        epoll.ctl(
            ControlOperation::Add,
            stop.as_raw_fd(),
            EpollEvent::new(EventSet::IN, 0),
        )?;
        watch(
            &epoll,
            &mut sources,
            terminate.as_raw_fd(),
            Source::Terminate,
        )?;
        for (device, served) in devices.iter().enumerate() {
            for (queue, evt) in served.queue_events.iter().enumerate() {
                watch(
                    &epoll,
                    &mut sources,
                    evt.as_raw_fd(),
                    Source::Queue { device, queue },
                )?;
            }
        }
        if let Some(report) = &exit_report {
            watch(&epoll, &mut sources, report.timer_fd(), Source::ExitReport)?;
        }
        let poll_timer = TimerFd::new()?;
        watch(&epoll, &mut sources, poll_timer.as_raw_fd(), Source::Poll)?;
        let mut watches: Vec<Vec<Watch>> = Vec::new();
        for (device, served) in devices.iter().enumerate() {
            let mut list = Vec::new();
            let t = lock(&served.transport);
            for fd in t.device().backend_fds() {
                sources.push(Source::Backend { device, fd });
                let token = (sources.len() - 1) as u64;
                let events = t.device().backend_interest(fd);
                epoll.ctl(
                    ControlOperation::Add,
                    fd,
                    EpollEvent::new(EventSet::from_bits_truncate(events), token),
                )?;
                list.push(Watch { fd, token, events });
            }
            watches.push(list);
        }
        let stop_fd = stop.try_clone()?;
        let (report_end, ended) = std::sync::mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("kiln-devices".into())
            .spawn(move || {
                crate::stop::block_vcpu_signals();
                if let Some(first) = first {
                    first();
                }
                // Before the first guest request is looked at. The caller
                // does not wait for it (loading a filter takes a few
                // hundred microseconds here, off the boot path this way);
                // a failure stops the VM instead.
                if let Some(Err(e)) = filter.as_ref().map(crate::seccomp::install_thread) {
                    on_failure();
                    drop(devices);
                    let _ = report_end.send(Err(DeviceError::Loop(std::io::Error::other(e))));
                    return;
                }
                let result = serve(
                    &epoll,
                    &sources,
                    &devices,
                    &mut watches,
                    &stop_fd,
                    &terminate,
                    exit_report.as_mut(),
                    PollTimer {
                        timer: poll_timer,
                        armed: false,
                    },
                );
                if let Some(report) = &exit_report {
                    report.write();
                }
                if result.is_err() {
                    on_failure();
                }
                // The devices' last references may be these (a backend's
                // drop stops its daemon): gone before the caller goes on.
                drop(devices);
                let _ = report_end.send(result);
            })?;
        Ok(Self { stop, ended })
    }

    /// Stops the loop and reports how it ended.
    ///
    /// # Errors
    /// The host-side failure that ended it, if one did.
    pub fn finish(self) -> Result<(), DeviceError> {
        let _ = self.stop.write(1);
        // A thread that panicked sent nothing: as before, no error of its own.
        self.ended.recv().unwrap_or(Ok(()))
    }
}

/// Brings the epoll registration of `device`'s backend descriptors up to
/// what the device wants now.
fn refresh_interest(
    epoll: &Epoll,
    t: &MmioTransport,
    watches: &mut [Watch],
) -> Result<(), DeviceError> {
    for w in watches {
        let want = t.device().backend_interest(w.fd);
        if want != w.events {
            epoll
                .ctl(
                    ControlOperation::Modify,
                    w.fd,
                    EpollEvent::new(EventSet::from_bits_truncate(want), w.token),
                )
                .map_err(DeviceError::Loop)?;
            w.events = want;
        }
    }
    Ok(())
}

/// The timer that paces the polled queues, and whether it runs.
struct PollTimer {
    timer: TimerFd,
    armed: bool,
}

impl PollTimer {
    /// Runs the timer while some device polls, and only then (an idle VM
    /// costs the host no wake-ups).
    fn follow(&mut self, devices: &[Served]) -> Result<(), DeviceError> {
        let wanted = devices.iter().any(|d| lock(&d.transport).polling());
        if wanted != self.armed {
            if wanted {
                self.timer.reset(POLL_INTERVAL, Some(POLL_INTERVAL))
            } else {
                self.timer.clear()
            }
            .map_err(|e| DeviceError::Loop(e.into()))?;
            self.armed = wanted;
        }
        Ok(())
    }
}

#[allow(clippy::too_many_arguments)]
fn serve(
    epoll: &Epoll,
    sources: &[Source],
    devices: &[Served],
    watches: &mut [Vec<Watch>],
    stop: &EventFd,
    terminate: &EventFd,
    mut exit_report: Option<&mut crate::exit_report::ExitReport>,
    mut poll: PollTimer,
) -> Result<(), DeviceError> {
    let mut events = vec![EpollEvent::default(); 32];
    loop {
        let n = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(DeviceError::Loop(e));
            }
        };
        let mut served_a_device = false;
        for ev in &events[..n] {
            let Some(&source) = sources.get(ev.data() as usize) else {
                continue;
            };
            served_a_device |= matches!(
                source,
                Source::Queue { .. } | Source::Backend { .. } | Source::Poll
            );
            let result = match source {
                Source::Stop => {
                    let _ = stop.read();
                    return Ok(());
                }
                Source::Terminate => {
                    let _ = terminate.read();
                    crate::stop::request();
                    continue;
                }
                Source::ExitReport => {
                    if let Some(report) = exit_report.as_deref_mut() {
                        report.tick();
                    }
                    continue;
                }
                Source::Queue { device, queue } => {
                    let served = &devices[device];
                    let _ = served.queue_events[queue].read();
                    let mut t = lock(&served.transport);
                    let name = t.device().name();
                    let r = t.kick(queue).map_err(|source| (name, source));
                    refresh_interest(epoll, &t, &mut watches[device])?;
                    r
                }
                Source::Poll => {
                    let _ = poll.timer.wait();
                    poll_devices(epoll, devices, watches)?;
                    continue;
                }
                Source::Backend { device, fd } => {
                    let mut t = lock(&devices[device].transport);
                    let name = t.device().name();
                    let r = t
                        .backend_ready(fd, ev.events())
                        .map_err(|source| (name, source));
                    refresh_interest(epoll, &t, &mut watches[device])?;
                    r
                }
            };
            if let Err((device, source)) = result {
                return Err(DeviceError::Virtio { device, source });
            }
        }
        if served_a_device {
            poll.follow(devices)?;
        }
    }
}

/// The poll timer fired: each polling device looks at its queues.
fn poll_devices(
    epoll: &Epoll,
    devices: &[Served],
    watches: &mut [Vec<Watch>],
) -> Result<(), DeviceError> {
    for (served, watches) in devices.iter().zip(watches.iter_mut()) {
        let mut t = lock(&served.transport);
        if t.polling() {
            let device = t.device().name();
            t.poll()
                .map_err(|source| DeviceError::Virtio { device, source })?;
            refresh_interest(epoll, &t, watches)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::console::Console;
    use crate::devices::virtio::rng::Rng;
    use crate::devices::virtio::test_utils::{self, GuestQueue};
    use crate::devices::virtio::VIRTIO_F_VERSION_1;
    use vm_memory::{Bytes, GuestAddress};

    /// A devices thread serving `transport` with `queues` queues: the
    /// thread, the shared transport and a copy of each queue's kick.
    fn serving(
        transport: MmioTransport,
        queues: usize,
    ) -> (DevicesThread, Arc<Mutex<MmioTransport>>, Vec<EventFd>) {
        let served = Served {
            transport: Arc::new(Mutex::new(transport)),
            queue_events: (0..queues)
                .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
                .collect(),
        };
        let kicks = served
            .queue_events
            .iter()
            .map(|e| e.try_clone().unwrap())
            .collect();
        let transport = served.transport.clone();
        let thread = DevicesThread::start(
            vec![served],
            EventFd::new(EFD_NONBLOCK).unwrap(),
            || {},
            None,
            None,
            None,
        )
        .unwrap();
        (thread, transport, kicks)
    }

    /// A request the guest offered before a snapshot, whose kick the
    /// snapshot missed, is served once the restored device is kicked.
    #[test]
    fn a_restored_device_serves_a_request_whose_kick_the_snapshot_missed() {
        let mem = test_utils::memory();
        let (mut before, _) = test_utils::transport(Box::new(Rng::new()), &mem);
        let mut q = GuestQueue::new(0x10000, 16);
        test_utils::kiln_setup(&mut before, &mem, 0x20000, VIRTIO_F_VERSION_1, &[&q]);
        let head = q.add(&mem, &[(0x40000, 64, true)]);
        let saved = before.save().expect("rng saves");
        let (mut after, _) = test_utils::transport(Box::new(Rng::new()), &mem);
        after.restore(&saved).unwrap();
        let (thread, transport, mut kicks) = serving(after, 1);
        let kick = kicks.remove(0);
        // Nothing tells the device of the request yet.
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(q.used(&mem).is_empty());
        Served {
            transport,
            queue_events: vec![kick],
        }
        .kick_if_active()
        .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while q.used(&mem).is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert_eq!(q.used(&mem), [(u32::from(head), 64)]);
        thread.finish().unwrap();
    }

    /// Output a console offers with no kick (it asked for none after the
    /// first) reaches the host on the loop's poll timer, which stops once
    /// the console stops polling.
    #[test]
    fn the_poll_timer_takes_output_offered_without_a_kick() {
        let mem = test_utils::memory();
        let sink = test_utils::Sink::default();
        // Polled for 2 s after output: the test adds its second chain well
        // within that however slow the machine is.
        let console = Console::new(Box::new(sink.clone()), None)
            .with_output_quiet(std::time::Duration::from_secs(2));
        let (mut t, _) = test_utils::transport(Box::new(console), &mem);
        let rx = GuestQueue::new(0x10000, 64);
        let mut tx = GuestQueue::new(0x20000, 64);
        test_utils::kiln_setup(&mut t, &mem, 0x30000, VIRTIO_F_VERSION_1, &[&rx, &tx]);
        let (thread, transport, kicks) = serving(t, 2);
        let kick = &kicks[1];
        let wait_for = |what: &[u8]| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            while *sink.0.lock().unwrap() != what && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            assert_eq!(&*sink.0.lock().unwrap(), what);
        };
        mem.write_slice(b"first\nsecond\n", GuestAddress(0x40000))
            .unwrap();
        tx.add(&mem, &[(0x40000, 6, false)]);
        kick.write(1).unwrap();
        wait_for(b"first\n");
        // The console asks for no kicks just after its output went out.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !tx.kicks_unwanted(&mem) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(tx.kicks_unwanted(&mem));
        tx.add(&mem, &[(0x40006, 7, false)]);
        wait_for(b"first\nsecond\n");
        // Quiet: the console asks for kicks again and stops polling.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while lock(&transport).polling() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(!lock(&transport).polling());
        assert!(!tx.kicks_unwanted(&mem));
        thread.finish().unwrap();
    }
}
