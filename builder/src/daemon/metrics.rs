//! kilnd's metrics in Prometheus's text format (`GET /metrics` on the API
//! socket, and on `--metrics ADDR` when asked): appliances by status,
//! restarts, each VM's KVM exits (its current or last run, from the
//! `exits.json` its `kiln run` rewrites every second), each running VM's
//! CPU time and resident memory, a histogram
//! of boot times (kiln's start to the program's first instruction, one
//! observation per boot, from each appliance's `boots.jsonl`), and kilnd's
//! own memory. Everything is read from the records when scraped.

use std::fmt::Write as _;

use super::api::Status;
use super::record::{self, Root};

/// The boot-time histogram's upper bounds, seconds.
const BOOT_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// The text of one scrape.
pub fn render(root: &Root) -> String {
    let mut out = String::new();
    let all = root.all();
    let mut by_status = [
        (Status::Created, "created", 0u32),
        (Status::Running, "running", 0),
        (Status::Restarting, "restarting", 0),
        (Status::Exited, "exited", 0),
        (Status::Dead, "dead", 0),
    ];
    let mut restarts = String::new();
    let mut cpu = String::new();
    let mut rss = String::new();
    let mut exits = String::new();
    let mut boots: Vec<f64> = Vec::new();
    for (dir, config) in &all {
        let state = dir.state();
        let status = dir.status(&state);
        if let Some(entry) = by_status.iter_mut().find(|(s, _, _)| *s == status) {
            entry.2 += 1;
        }
        let labels = format!("id=\"{}\",name=\"{}\"", &config.id[..12], config.name);
        let _ = writeln!(
            restarts,
            "kiln_vm_restarts_total{{{labels}}} {}",
            state.restarts
        );
        if let Some(n) = dir.exit_count() {
            let _ = writeln!(exits, "kiln_vm_exits_total{{{labels}}} {n}");
        }
        if let (Status::Running, Some(pid)) = (status, state.pid) {
            if let Some((seconds, bytes)) = record::process_usage(pid) {
                let _ = writeln!(cpu, "kiln_vm_cpu_seconds_total{{{labels}}} {seconds}");
                let _ = writeln!(rss, "kiln_vm_memory_rss_bytes{{{labels}}} {bytes}");
            }
        }
        if let Ok(text) = std::fs::read_to_string(dir.boots()) {
            boots.extend(text.lines().filter_map(|l| {
                serde_json::from_str::<serde_json::Value>(l).ok()?["ms"]
                    .as_f64()
                    .map(|ms| ms / 1e3)
            }));
        }
    }
    out.push_str("# HELP kiln_vms Appliances kilnd manages, by status.\n# TYPE kiln_vms gauge\n");
    for (_, name, n) in by_status {
        let _ = writeln!(out, "kiln_vms{{status=\"{name}\"}} {n}");
    }
    out.push_str("# HELP kiln_vm_restarts_total Restarts by the appliance's restart policy.\n# TYPE kiln_vm_restarts_total counter\n");
    out.push_str(&restarts);
    out.push_str("# HELP kiln_vm_exits_total KVM exits of an appliance's VM, all vCPUs, in its current (or last) run; updated every second, reset when it restarts.\n# TYPE kiln_vm_exits_total counter\n");
    out.push_str(&exits);
    out.push_str("# HELP kiln_vm_cpu_seconds_total CPU time of a running appliance's VM process (vCPUs, devices, VMM).\n# TYPE kiln_vm_cpu_seconds_total counter\n");
    out.push_str(&cpu);
    out.push_str("# HELP kiln_vm_memory_rss_bytes Resident memory of a running appliance's VM process.\n# TYPE kiln_vm_memory_rss_bytes gauge\n");
    out.push_str(&rss);
    out.push_str("# HELP kiln_vm_boot_seconds From kiln's start to the program's first instruction (or a snapshot's resume), each boot of each appliance.\n# TYPE kiln_vm_boot_seconds histogram\n");
    for bound in BOOT_BUCKETS {
        let n = boots.iter().filter(|&&b| b <= bound).count();
        let _ = writeln!(out, "kiln_vm_boot_seconds_bucket{{le=\"{bound}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "kiln_vm_boot_seconds_bucket{{le=\"+Inf\"}} {}",
        boots.len()
    );
    let _ = writeln!(
        out,
        "kiln_vm_boot_seconds_sum {}",
        boots.iter().sum::<f64>()
    );
    let _ = writeln!(out, "kiln_vm_boot_seconds_count {}", boots.len());
    if let Some((_, bytes)) = record::process_usage(std::process::id()) {
        out.push_str("# HELP kilnd_memory_rss_bytes kilnd's own resident memory.\n# TYPE kilnd_memory_rss_bytes gauge\n");
        let _ = writeln!(out, "kilnd_memory_rss_bytes {bytes}");
    }
    out
}
