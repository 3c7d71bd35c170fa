//! `kiln stop`: end appliances in order.

use anyhow::Result;

/// Stop appliances: SIGTERM (the VM ends in order, as on Ctrl-C), then
/// SIGKILL after the grace time; the restart policy does not apply
#[derive(clap::Args)]
pub struct Args {
    /// Appliances: names, ids or unique starts of ids
    #[arg(value_name = "VM", required = true)]
    vms: Vec<String>,
    /// Seconds to wait before SIGKILL
    #[arg(
        short = 't',
        long = "time",
        value_name = "SECONDS",
        default_value_t = 10
    )]
    time: u64,
}

/// Runs `kiln stop`.
pub fn run(args: Args) -> Result<u8> {
    let client = super::kilnd()?;
    super::each(&args.vms, |vm| {
        client.call(
            "POST",
            &format!("{}/stop?t={}", super::vm_path(vm), args.time),
            None,
        )?;
        Ok(())
    })
}
