//! `kiln kill`: signal appliances.

use anyhow::Result;

/// Send a signal to running appliances' VMs (KILL by default; the
/// restart policy does not apply, except for USR1/USR2, which are no stop)
#[derive(clap::Args)]
pub struct Args {
    /// Appliances: names, ids or unique starts of ids
    #[arg(value_name = "VM", required = true)]
    vms: Vec<String>,
    /// The signal: a name (KILL, TERM, INT, HUP, QUIT, USR1, USR2) or number
    #[arg(short, long, value_name = "SIGNAL", default_value = "KILL")]
    signal: String,
}

/// Runs `kiln kill`.
pub fn run(args: Args) -> Result<u8> {
    let client = super::kilnd()?;
    let signal = kiln_builder::daemon::http::percent_encode(&args.signal);
    super::each(&args.vms, |vm| {
        client.call(
            "POST",
            &format!("{}/kill?signal={signal}", super::vm_path(vm)),
            None,
        )?;
        Ok(())
    })
}
