//! A live count of a VM's KVM exits in a file, for kilnd's metrics
//! (`kiln_vm_exits_total`): when [`EXIT_REPORT_ENV`] names a file, the
//! devices thread rewrites it every [`INTERVAL`] and once more when the
//! VM stops, with the exits of all vCPUs so far.
//!
//! The vCPUs' statistics descriptors are opened before the threads start
//! (they stay readable from any thread), and the file is written in place
//! with one `pwrite` of a fixed-width line, so the devices thread needs no
//! system call its seccomp filter does not already allow, and a reader
//! never sees half a number.

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::FileExt;
use std::time::Duration;

use vmm_sys_util::timerfd::TimerFd;

use crate::vstate::stats;

/// The variable naming the report file (kilnd's monitors set it).
pub const EXIT_REPORT_ENV: &str = "KILN_EXIT_REPORT";

/// How often the count is rewritten.
pub const INTERVAL: Duration = Duration::from_secs(1);

/// The report: the file, each vCPU's statistics file with the offset of
/// its `exits` counter, and the timer that paces the writes.
pub struct ExitReport {
    file: File,
    counters: Vec<(File, u64)>,
    timer: TimerFd,
}

impl ExitReport {
    /// The report [`EXIT_REPORT_ENV`] asks for, counting the exits of
    /// `vcpus`; `None` when it is not set or cannot be made (a report,
    /// not the run: the VM boots without it).
    pub fn from_env<'a>(vcpus: impl IntoIterator<Item = &'a kvm_ioctls::VcpuFd>) -> Option<Self> {
        let path = std::env::var_os(EXIT_REPORT_ENV).filter(|p| !p.is_empty())?;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(path)
            .ok()?;
        let mut counters = Vec::new();
        for vcpu in vcpus {
            let stats = stats::open(vcpu).ok()?;
            let at = stats::offset_of(&stats, "exits").ok()??;
            counters.push((stats, at));
        }
        let mut timer = TimerFd::new().ok()?;
        timer.reset(INTERVAL, Some(INTERVAL)).ok()?;
        let report = ExitReport {
            file,
            counters,
            timer,
        };
        report.write();
        Some(report)
    }

    /// The timer's descriptor, for the devices thread's epoll set.
    pub fn timer_fd(&self) -> RawFd {
        self.timer.as_raw_fd()
    }

    /// The timer fired: consumes it and rewrites the count.
    pub fn tick(&mut self) {
        let _ = self.timer.wait();
        self.write();
    }

    /// The exits of all vCPUs so far.
    pub fn total(&self) -> u64 {
        self.counters
            .iter()
            .filter_map(|(file, at)| stats::value_at(file, *at).ok())
            .sum()
    }

    /// Rewrites the file: one line, always the same length.
    pub fn write(&self) {
        let _ = self.file.write_all_at(line(self.total()).as_bytes(), 0);
    }
}

/// The report's text for `exits`: JSON with the number right-aligned in
/// 20 columns (any u64), so every write covers the last one exactly.
pub fn line(exits: u64) -> String {
    format!("{{\"exits\":{exits:>20}}}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_line_has_the_same_length_and_parses_as_json() {
        let short = line(0);
        let long = line(u64::MAX);
        assert_eq!(short.len(), long.len());
        let v: serde_json::Value = serde_json::from_str(&long).unwrap();
        assert_eq!(v["exits"].as_u64(), Some(u64::MAX));
        let v: serde_json::Value = serde_json::from_str(&short).unwrap();
        assert_eq!(v["exits"].as_u64(), Some(0));
    }
}
