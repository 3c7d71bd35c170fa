//! `kilnd`: the daemon that manages a host's appliances (see
//! `kiln_builder::daemon`). `kiln run -d`, `kiln ps` and the other
//! management commands start it on demand; run it yourself (or as a
//! systemd unit, README) to choose its socket.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use kiln_builder::daemon::{monitor, record::Root, record::VmDir, server};

#[derive(Parser)]
#[command(
    name = "kilnd",
    version,
    about = "Manage kiln appliances: a REST API over a Unix socket (docs/api/kilnd.openapi.json)",
    after_help = "kilnd keeps its state under --root; the VMs it starts run on if kilnd stops, \
                  is killed or restarts, and a new kilnd finds them there. `kiln run -d`, `kiln ps`, \
                  `kiln logs`, `kiln stop`, `kiln kill`, `kiln rm`, `kiln stats` talk to it \
                  (starting it when none answers)."
)]
struct Cli {
    /// The API's socket [default: ROOT/kilnd.sock, or $KILN_HOST]
    #[arg(long, value_name = "PATH", global = true)]
    socket: Option<PathBuf>,
    /// kilnd's state directory [default: $KILN_HOME/kilnd]
    #[arg(long, value_name = "DIR", global = true)]
    root: Option<PathBuf>,
    /// Also serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9464; off unless given; the API socket has GET /metrics too)
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run and supervise one appliance (kilnd starts these itself)
    #[command(hide = true)]
    Monitor {
        /// The appliance's directory
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let root = cli.root.map_or_else(Root::default_root, Root::at);
    let result = match cli.command {
        Some(Command::Monitor { dir }) => {
            // A monitor waits for its VM: SIGCHLD must not be ignored (as
            // kilnd ignores it).
            // SAFETY: setting a signal's disposition has no preconditions.
            unsafe { libc::signal(libc::SIGCHLD, libc::SIG_DFL) };
            monitor::run(&root, &VmDir::at(dir)).map_err(|e| e.to_string())
        }
        None => {
            let socket = cli.socket.unwrap_or_else(|| root.api_socket());
            server::serve(root, &socket, cli.metrics).map_err(|e| e.to_string())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kilnd: error: {e}");
            ExitCode::from(1)
        }
    }
}
