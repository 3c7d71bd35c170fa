//! `kiln ps`: the appliances kilnd manages.

use anyhow::Result;
use kiln_builder::daemon::api::{Status, VmSummary};

/// List appliances (kilnd's; running ones unless -a).
#[derive(clap::Args)]
pub struct Args {
    /// All appliances, not only those running or restarting
    #[arg(short, long)]
    all: bool,
    /// Only the ids
    #[arg(short, long)]
    quiet: bool,
    /// Print JSON (the API's list) instead of a table
    #[arg(long)]
    json: bool,
}

/// Runs `kiln ps`.
pub fn run(args: Args) -> Result<u8> {
    let client = super::kilnd()?;
    let path = if args.all { "/v1/vms?all=1" } else { "/v1/vms" };
    let vms: Vec<VmSummary> = client.json("GET", path, None)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&vms)?);
        return Ok(0);
    }
    if args.quiet {
        for vm in &vms {
            println!("{}", &vm.id[..12]);
        }
        return Ok(0);
    }
    println!(
        "{:<12}  {:<20}  {:<30}  {:<22}  {:>8}",
        "ID", "NAME", "IMAGE", "STATUS", "PID"
    );
    for vm in &vms {
        let status = match vm.status {
            Status::Exited => format!("exited ({})", vm.exit_code.unwrap_or(0)),
            Status::Running if vm.restarts > 0 => format!("running ({} restarts)", vm.restarts),
            s => format!("{s:?}").to_lowercase(),
        };
        println!(
            "{:<12}  {:<20}  {:<30}  {:<22}  {:>8}",
            &vm.id[..12],
            vm.name,
            shorten(&vm.image, 30),
            status,
            vm.pid.map_or(String::new(), |p| p.to_string())
        );
    }
    Ok(0)
}

/// `text`, cut to its last `width` characters with an ellipsis.
fn shorten(text: &str, width: usize) -> String {
    let count = text.chars().count();
    if count <= width {
        return text.to_string();
    }
    let tail: String = text.chars().skip(count - (width - 1)).collect();
    format!("…{tail}")
}
