//! `kiln start`: boot stopped appliances again.

use anyhow::Result;

/// Start appliances that ended (with the command and policy they were
/// created with)
#[derive(clap::Args)]
pub struct Args {
    /// Appliances: names, ids or unique starts of ids
    #[arg(value_name = "VM", required = true)]
    vms: Vec<String>,
}

/// Runs `kiln start`.
pub fn run(args: Args) -> Result<u8> {
    let client = super::kilnd()?;
    super::each(&args.vms, |vm| {
        client.call("POST", &format!("{}/start", super::vm_path(vm)), None)?;
        Ok(())
    })
}
