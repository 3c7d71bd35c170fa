//! Boot phase timings, from kiln-vmm's start to the program's exit
//! (`--timings`, `--timings-json`). Guest milestones arrive through the
//! boot-timer port; the VMM stamps them with its monotonic clock when the
//! port write exits to it.

use std::time::{Duration, Instant};

use serde::Serialize;

/// A point in the life of a VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The image was read and verified (`kiln run` only).
    ImageVerified,
    /// A snapshot's state was read and its memory file checked
    /// (`--from-snapshot` only).
    SnapshotVerified,
    /// A warm VM received this run's claim (`--from-snapshot` served by
    /// `kiln warm`; the phases before it happened in the warm VM, ahead
    /// of the claim, and are not shown).
    Claimed,
    /// KVM opened and the VM created.
    VmCreated,
    /// Guest RAM mapped, kernel and boot data written.
    MemoryReady,
    /// The vCPU is about to run for the first time.
    VcpuStart,
    /// The guest kernel's first Rust code runs.
    KernelEntry,
    /// A vCPU restored from a snapshot runs natively again, where it
    /// parked (`--from-snapshot` only).
    Resumed,
    /// The program's first instruction is about to run.
    ProgramEntry,
    /// The guest's first byte of console output reached the host.
    FirstOutput,
    /// The program accepted its first connection from outside the guest.
    FirstAccept,
    /// The program has exited.
    ProgramExit,
}

impl Phase {
    /// Every phase in order.
    pub const ALL: [Phase; 12] = [
        Phase::ImageVerified,
        Phase::SnapshotVerified,
        Phase::Claimed,
        Phase::VmCreated,
        Phase::MemoryReady,
        Phase::VcpuStart,
        Phase::KernelEntry,
        Phase::Resumed,
        Phase::ProgramEntry,
        Phase::FirstOutput,
        Phase::FirstAccept,
        Phase::ProgramExit,
    ];

    /// The label used in tables and JSON.
    pub fn label(self) -> &'static str {
        match self {
            Phase::ImageVerified => "image_verified",
            Phase::SnapshotVerified => "snapshot_verified",
            Phase::Claimed => "claimed",
            Phase::VmCreated => "vm_created",
            Phase::MemoryReady => "memory_ready",
            Phase::VcpuStart => "vcpu_start",
            Phase::KernelEntry => "kernel_entry",
            Phase::Resumed => "resumed",
            Phase::ProgramEntry => "program_entry",
            Phase::FirstOutput => "first_output",
            Phase::FirstAccept => "first_accept",
            Phase::ProgramExit => "program_exit",
        }
    }
}

/// Phase times relative to a start instant.
#[derive(Clone, Debug)]
pub struct Timings {
    start: Instant,
    marks: Vec<(Phase, Duration)>,
    /// KVM exits of the vCPU that reported a phase, counted when it did
    /// (with `--stats`).
    exits: Vec<(Phase, u64)>,
}

impl Timings {
    /// Starts the clock at `start` (kiln-vmm's `main`).
    pub fn new(start: Instant) -> Self {
        Self {
            start,
            marks: Vec::with_capacity(Phase::ALL.len()),
            exits: Vec::new(),
        }
    }

    /// Counts from `start` instead, forgetting what was recorded: a warm
    /// VM's run counts from its client's start.
    pub fn rebase(&mut self, start: Instant) {
        self.start = start;
        self.marks.clear();
        self.exits.clear();
    }

    /// How many phases are recorded (to notice a new one).
    pub fn count(&self) -> usize {
        self.marks.len()
    }

    /// Records the exit count at the phases recorded since there were
    /// `since` of them.
    pub fn record_exits(&mut self, since: usize, exits: u64) {
        let new: Vec<Phase> = self.marks.iter().skip(since).map(|(p, _)| *p).collect();
        self.exits.extend(new.into_iter().map(|p| (p, exits)));
    }

    /// `{"program_entry": 83, ...}`: the exits counted at each phase, when
    /// they were.
    pub fn exits_json(&self) -> Option<serde_json::Value> {
        if self.exits.is_empty() {
            return None;
        }
        let mut m = serde_json::Map::new();
        for (phase, n) in &self.exits {
            m.insert(phase.label().into(), serde_json::json!(n));
        }
        Some(serde_json::Value::Object(m))
    }

    /// Records `phase` as having happened at `at`, unless it was recorded
    /// earlier (another thread saw it: the devices thread's first output).
    pub fn mark_at(&mut self, phase: Phase, at: Instant) {
        let when = at.saturating_duration_since(self.start);
        match self.marks.iter_mut().find(|(p, _)| *p == phase) {
            Some((_, t)) if *t <= when => {}
            Some((_, t)) => *t = when,
            None => self.marks.push((phase, when)),
        }
    }

    /// Records `phase` now (the first time only).
    pub fn mark(&mut self, phase: Phase) {
        if self.get(phase).is_none() {
            let at = self.start.elapsed();
            self.marks.push((phase, at));
            if matches!(phase, Phase::ProgramEntry | Phase::Resumed) {
                report_boot(phase, at);
            }
        }
    }

    /// When `phase` happened, if it did.
    pub fn get(&self, phase: Phase) -> Option<Duration> {
        self.marks
            .iter()
            .find(|(p, _)| *p == phase)
            .map(|(_, d)| *d)
    }

    /// A table for humans.
    pub fn table(&self) -> String {
        let mut out = String::from("boot timings (ms since the command started; +delta)\n");
        let mut last = Duration::ZERO;
        for phase in Phase::ALL {
            if let Some(at) = self.get(phase) {
                out.push_str(&format!(
                    "  {:<14} {:>9.3}  +{:.3}\n",
                    phase.label(),
                    at.as_secs_f64() * 1e3,
                    (at - last.min(at)).as_secs_f64() * 1e3
                ));
                last = at;
            }
        }
        out
    }

    /// `{"vm_created": 0.41, ...}` in milliseconds.
    pub fn json(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for phase in Phase::ALL {
            if let Some(at) = self.get(phase) {
                m.insert(
                    phase.label().into(),
                    serde_json::json!(at.as_secs_f64() * 1e3),
                );
            }
        }
        serde_json::Value::Object(m)
    }
}

/// The variable naming a file that gets one JSON line per boot, as the
/// program starts (`{"phase": "program_entry", "ms": 12.3}`, ms since the
/// command's start; `resumed` for a snapshot). kilnd's monitors set it
/// for the boot-time histogram of its metrics.
pub const BOOT_REPORT_ENV: &str = "KILN_BOOT_REPORT";

/// Appends this boot's line to [`BOOT_REPORT_ENV`]'s file, when set (one
/// write to a file opened to append; failures are ignored: a report, not
/// the run).
fn report_boot(phase: Phase, at: Duration) {
    use std::io::Write;
    let Some(path) = std::env::var_os(BOOT_REPORT_ENV).filter(|p| !p.is_empty()) else {
        return;
    };
    let line = format!(
        "{{\"phase\":\"{}\",\"ms\":{:.3}}}\n",
        phase.label(),
        at.as_secs_f64() * 1e3
    );
    if let Ok(mut file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    {
        let _ = file.write_all(line.as_bytes());
    }
}

/// CLOCK_MONOTONIC at the start of the command's `main`, ns.
static MAIN_MONO_NS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// CLOCK_MONOTONIC now, ns.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Records the start of `main` (kiln-vmm's or kiln's), for
/// [`spawn_to_main_ms`].
pub fn note_main_start() {
    MAIN_MONO_NS.store(monotonic_ns(), std::sync::atomic::Ordering::Relaxed);
}

/// Benchmark hook: when the launcher put its CLOCK_MONOTONIC time (ns) in
/// `KILN_SPAWN_MONO_NS` just before spawning the command, the time from
/// the spawn to `main` (exec, dynamic loading), in ms.
pub fn spawn_to_main_ms() -> Option<f64> {
    let spawn: u64 = std::env::var("KILN_SPAWN_MONO_NS").ok()?.parse().ok()?;
    let main = MAIN_MONO_NS.load(std::sync::atomic::Ordering::Relaxed);
    main.checked_sub(spawn).map(|ns| ns as f64 / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first_mark_of_each_phase_in_order() {
        let mut t = Timings::new(Instant::now());
        t.mark(Phase::VmCreated);
        let first = t.get(Phase::VmCreated).unwrap();
        std::thread::sleep(Duration::from_millis(2));
        t.mark(Phase::VmCreated);
        t.mark(Phase::ProgramExit);
        assert_eq!(t.get(Phase::VmCreated), Some(first));
        assert!(t.get(Phase::ProgramExit).unwrap() > first);
        let json = t.json();
        assert!(json.get("vm_created").is_some() && json.get("kernel_entry").is_none());
        assert!(t.table().contains("program_exit"));
    }
}
