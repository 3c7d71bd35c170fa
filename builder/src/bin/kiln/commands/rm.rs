//! `kiln rm`: forget appliances.

use anyhow::Result;

/// Remove appliances (their records and logs); a running one only with -f,
/// which kills it first
#[derive(clap::Args)]
pub struct Args {
    /// Appliances: names, ids or unique starts of ids
    #[arg(value_name = "VM", required = true)]
    vms: Vec<String>,
    /// Kill running ones first
    #[arg(short, long)]
    force: bool,
}

/// Runs `kiln rm`.
pub fn run(args: Args) -> Result<u8> {
    let client = super::kilnd()?;
    let force = if args.force { "?force=1" } else { "" };
    super::each(&args.vms, |vm| {
        client.call("DELETE", &format!("{}{force}", super::vm_path(vm)), None)?;
        Ok(())
    })
}
