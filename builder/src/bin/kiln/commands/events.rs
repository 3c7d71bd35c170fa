//! `kiln events`: what happens to appliances.

use std::io::{BufRead, BufReader, Write};

use anyhow::Result;
use kiln_builder::daemon::api::Event;

/// Print appliance events (create, start, die, restart, revive, stop, kill,
/// destroy): past ones with --since, then new ones as they come until
/// interrupted (or only past ones with --no-follow)
#[derive(clap::Args)]
pub struct Args {
    /// Also the events since this time (seconds since the epoch; 0: all kept)
    #[arg(long, value_name = "SECONDS")]
    since: Option<f64>,
    /// Print the events kept, then stop
    #[arg(long)]
    no_follow: bool,
    /// Print kilnd's JSON lines as they are
    #[arg(long)]
    json: bool,
}

/// Runs `kiln events`.
pub fn run(args: Args) -> Result<u8> {
    let client = super::kilnd()?;
    let mut path = String::from("/v1/events?");
    if !args.no_follow {
        path.push_str("follow=1&");
    }
    if let Some(since) = args.since {
        path.push_str(&format!("since={since}"));
    } else if args.no_follow {
        path.push_str("since=0");
    }
    let response = client.call("GET", &path, None)?;
    let mut out = std::io::stdout().lock();
    for line in BufReader::new(response).lines() {
        let line = line?;
        if args.json {
            writeln!(out, "{line}")?;
        } else if let Ok(e) = serde_json::from_str::<Event>(&line) {
            let code = e
                .exit_code
                .map_or(String::new(), |c| format!(" (exit {c})"));
            writeln!(
                out,
                "{:.3}  {:<8} {} {}{code}",
                e.time,
                e.action,
                &e.id[..12],
                e.name
            )?;
        }
        out.flush()?;
    }
    Ok(0)
}
