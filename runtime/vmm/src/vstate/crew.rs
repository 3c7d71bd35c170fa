//! The vCPUs of one VM, each on a thread of its own: vCPU 0 runs on the
//! calling thread from the start; the others wait until the guest kernel
//! starts them (`kiln_boot::port::START_CPU`), once it has their stacks
//! ready. Whichever vCPU sees the VM end (the program's exit report, a
//! crash, the timeout, a terminating signal) decides how the run ended;
//! the others are then interrupted (SIGUSR1, see `stop`) until they have
//! all left KVM_RUN, and the threads are joined before this returns.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::GuestMem;
use kvm_ioctls::VcpuFd;

use super::vcpu::{self, Shared, VcpuError};
use crate::devices::{MmioBus, PortBus};
use crate::timings::Timings;
use crate::{stop, Ending};

/// Where one vCPU thread is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the guest to start it.
    Waiting,
    /// The guest started it.
    Started,
    /// The VM ended before the guest started it.
    Cancelled,
}

/// One vCPU thread's record.
struct Member {
    phase: Phase,
    /// Its pthread, once it runs (what `stop::kick` interrupts).
    thread: Option<libc::pthread_t>,
    /// It left its run loop.
    done: bool,
}

/// Every vCPU thread of the VM, and the first ending one of them saw.
struct Crew {
    members: Mutex<Vec<Member>>,
    changed: Condvar,
    ending: Mutex<Option<Result<Ending, VcpuError>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn this_thread() -> libc::pthread_t {
    // SAFETY: pthread_self has no preconditions.
    unsafe { libc::pthread_self() }
}

impl Crew {
    /// `started[i]`: vCPU i runs from the start (vCPU 0 always does; a
    /// restored snapshot's started ones too).
    fn new(started: &[bool]) -> Self {
        let members = started
            .iter()
            .enumerate()
            .map(|(i, &s)| Member {
                phase: if i == 0 || s {
                    Phase::Started
                } else {
                    Phase::Waiting
                },
                thread: (i == 0).then(this_thread),
                done: false,
            })
            .collect();
        Crew {
            members: Mutex::new(members),
            changed: Condvar::new(),
            ending: Mutex::new(None),
        }
    }

    /// The guest asks for vCPU `index`: false if there is no such vCPU
    /// waiting.
    fn start(&self, index: u32) -> bool {
        let mut members = lock(&self.members);
        match members.get_mut(index as usize) {
            Some(m) if m.phase == Phase::Waiting => {
                m.phase = Phase::Started;
                self.changed.notify_all();
                true
            }
            _ => false,
        }
    }

    /// Which vCPUs run.
    fn started(&self) -> Vec<bool> {
        lock(&self.members)
            .iter()
            .map(|m| m.phase == Phase::Started && !m.done)
            .collect()
    }

    /// Waits until vCPU `index` is started (true) or the VM ended (false).
    fn wait_for_start(&self, index: usize) -> bool {
        let mut members = lock(&self.members);
        loop {
            match members[index].phase {
                Phase::Started => {
                    members[index].thread = Some(this_thread());
                    return true;
                }
                Phase::Cancelled => return false,
                Phase::Waiting => {
                    members = self
                        .changed
                        .wait(members)
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                }
            }
        }
    }

    /// vCPU `index` left its run loop with `result`: the first real ending
    /// is the VM's; every other vCPU is then stopped.
    fn finish(&self, index: usize, result: Result<Ending, VcpuError>) {
        if !matches!(result, Err(VcpuError::Stopped)) {
            lock(&self.ending).get_or_insert(result);
        }
        stop::end_vm();
        let mut members = lock(&self.members);
        members[index].done = true;
        for m in members.iter_mut() {
            if m.phase == Phase::Waiting {
                m.phase = Phase::Cancelled;
                m.done = true;
            }
        }
        self.changed.notify_all();
        drop(members);
        // A kick that lands between a thread's check of the flag and its
        // KVM_RUN interrupts nothing: repeat until every thread is out.
        loop {
            let running: Vec<libc::pthread_t> = lock(&self.members)
                .iter()
                .filter(|m| !m.done)
                .filter_map(|m| m.thread)
                .collect();
            if running.is_empty() {
                break;
            }
            for thread in running {
                stop::kick(thread);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Runs vCPU 0 (`first`) on this thread and `others` (vCPUs 1, 2, …) on
/// threads of their own, each of which first adds `vcpu_filter`
/// ([`crate::seccomp::Role::Vcpu`]) to its seccomp filters; returns how
/// the VM ended. `started[i]`: vCPU i runs at once (a restored snapshot's)
/// rather than when the guest starts it; `snapshot`: where vCPUs park for
/// a snapshot.
///
/// # Errors
/// The first [`VcpuError`] a vCPU met; [`VcpuError::Stopped`] when the
/// devices thread stopped the VM.
#[allow(clippy::too_many_arguments)]
pub fn run(
    first: &mut VcpuFd,
    others: &mut [VcpuFd],
    vm: &kvm_ioctls::VmFd,
    mem: &GuestMem,
    bus: &Mutex<PortBus>,
    mmio: &MmioBus,
    timings: &Mutex<Timings>,
    limit: Option<Duration>,
    count_exits: bool,
    vcpu_filter: Option<&seccompiler::BpfProgram>,
    started: &[bool],
    snapshot: Option<&crate::snapshot::Coordinator>,
    hold: Option<&crate::snapshot::warm::WarmHold>,
) -> Result<Ending, VcpuError> {
    let mut all = vec![false; 1 + others.len()];
    for (a, s) in all.iter_mut().zip(started) {
        *a = *s;
    }
    let crew = Crew::new(&all);
    let start_cpu = |index: u32| crew.start(index);
    let running = || crew.started();
    let shared = Shared {
        vm,
        mem,
        bus,
        mmio,
        timings,
        start_cpu: &start_cpu,
        limit,
        count_exits,
        snapshot,
        started: &running,
        hold,
    };
    if others.is_empty() {
        return vcpu::run(first, 0, &shared);
    }
    std::thread::scope(|scope| {
        for (i, vcpu) in others.iter_mut().enumerate() {
            let (crew, shared) = (&crew, &shared);
            let name = format!("kiln-vcpu{}", i + 1);
            let spawned = std::thread::Builder::new()
                .name(name)
                .spawn_scoped(scope, move || {
                    let filtered = vcpu_filter.map_or(Ok(()), crate::seccomp::install_thread);
                    if let Err(e) = filtered {
                        crew.finish(i + 1, Err(e.into()));
                    } else if crew.wait_for_start(i + 1) {
                        crew.finish(i + 1, vcpu::run(vcpu, i + 1, shared));
                    }
                });
            if let Err(e) = spawned {
                crew.finish(i + 1, Err(VcpuError::Thread(e)));
            }
        }
        crew.finish(0, vcpu::run(first, 0, &shared));
    });
    crew.ending
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .unwrap_or(Err(VcpuError::Stopped))
}
