//! `kiln logs`: an appliance's output.

use std::io::{Read, Write};

use anyhow::Result;

/// Print an appliance's output (its standard output and error)
#[derive(clap::Args)]
pub struct Args {
    /// The appliance: name, id or a unique start of an id
    #[arg(value_name = "VM")]
    vm: String,
    /// Keep printing what it writes until it ends
    #[arg(short, long)]
    follow: bool,
    /// Only the last N lines
    #[arg(short = 'n', long, value_name = "N")]
    tail: Option<usize>,
}

/// Runs `kiln logs`.
pub fn run(args: Args) -> Result<u8> {
    let client = super::kilnd()?;
    let mut path = format!("{}/logs?", super::vm_path(&args.vm));
    if args.follow {
        path.push_str("follow=1&");
    }
    if let Some(n) = args.tail {
        path.push_str(&format!("tail={n}"));
    }
    let mut response = client.call("GET", &path, None)?;
    let mut out = std::io::stdout().lock();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = response.read(&mut buf)?;
        if n == 0 {
            break;
        }
        out.write_all(&buf[..n])?;
        out.flush()?;
    }
    Ok(0)
}
