//! `kiln stats`: what running appliances use.

use anyhow::Result;
use kiln_builder::daemon::api::{VmStats, VmSummary};

/// Show CPU time, memory and uptime of running appliances (all, or those
/// named), once
#[derive(clap::Args)]
pub struct Args {
    /// Appliances: names, ids or unique starts of ids [default: every running one]
    #[arg(value_name = "VM")]
    vms: Vec<String>,
    /// Print JSON instead of a table
    #[arg(long)]
    json: bool,
}

/// Runs `kiln stats`.
pub fn run(args: Args) -> Result<u8> {
    let client = super::kilnd()?;
    let names = if args.vms.is_empty() {
        let running: Vec<VmSummary> = client.json("GET", "/v1/vms", None)?;
        running.into_iter().map(|v| v.id).collect()
    } else {
        args.vms.clone()
    };
    let mut all = Vec::new();
    for vm in &names {
        let stats: VmStats = client.json("GET", &format!("{}/stats", super::vm_path(vm)), None)?;
        all.push(stats);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&all)?);
        return Ok(0);
    }
    println!(
        "{:<12}  {:<20}  {:>8}  {:>10}  {:>11}  {:>9}",
        "ID", "NAME", "PID", "CPU (s)", "MEMORY", "UPTIME"
    );
    for s in &all {
        println!(
            "{:<12}  {:<20}  {:>8}  {:>10.2}  {:>11}  {:>8.0}s",
            &s.id[..12],
            s.name,
            s.pid,
            s.cpu_seconds,
            super::human_size(s.rss_bytes),
            s.uptime_seconds
        );
    }
    Ok(0)
}
