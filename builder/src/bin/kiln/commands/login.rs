//! `kiln login REGISTRY` and `kiln logout REGISTRY`.

use std::io::BufRead;

use anyhow::{bail, Context, Result};
use kiln_builder::oci::reference::Reference;
use kiln_builder::registry::{auth, Client, Credentials};

/// Log in to a registry: check the credentials, then keep them.
#[derive(clap::Args)]
#[command(
    after_help = "The credentials are checked against the registry (GET /v2/, answering \
                  its basic or bearer-token challenge) and saved in $KILN_HOME/auth.json (mode \
                  0600, Docker's config.json format). Without `kiln login`, kiln also reads \
                  Docker's config.json ($DOCKER_CONFIG or ~/.docker).\n\n\
                  Example:\n  \
                  echo \"$TOKEN\" | kiln login registry.example.com -u ci --password-stdin"
)]
pub struct LoginArgs {
    #[arg(value_name = "REGISTRY", help = "The registry: HOST[:PORT]")]
    registry: String,

    /// User name
    #[arg(short, long)]
    username: String,

    /// Read the password from standard input (one line)
    #[arg(long, conflicts_with = "password")]
    password_stdin: bool,

    /// The password (visible to other users in the process list: prefer --password-stdin)
    #[arg(short, long)]
    password: Option<String>,

    #[command(flatten)]
    registry_args: super::RegistryArgs,
}

/// Forget the credentials kept for a registry.
#[derive(clap::Args)]
pub struct LogoutArgs {
    #[arg(value_name = "REGISTRY", help = "The registry: HOST[:PORT]")]
    registry: String,
}

fn registry_reference(registry: &str) -> Result<Reference> {
    // Any repository will do for GET /v2/.
    let r = Reference::parse(&format!("{registry}/kiln-login-check"))
        .with_context(|| format!("{registry:?} is not a registry host"))?;
    if r.registry.as_deref() != Some(registry) {
        bail!("{registry:?} is not a registry host (HOST[:PORT], with a dot, a port or localhost)");
    }
    Ok(r)
}

/// Runs `kiln login`.
pub fn login(args: LoginArgs) -> Result<u8> {
    let store = super::store();
    let reference = registry_reference(&args.registry)?;
    let password = match (args.password, args.password_stdin) {
        (Some(p), _) => p,
        (None, true) => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .context("reading the password from stdin")?;
            line.trim_end_matches(['\n', '\r']).to_owned()
        }
        (None, false) => bail!("give the password with --password-stdin (or --password)"),
    };
    let creds = Credentials {
        username: args.username,
        password,
    };
    let mut opts = args.registry_args.options(None, &store)?;
    opts.credentials = Some(creds.clone());
    let client = Client::new(&reference, &opts, false)?;
    client
        .ping()
        .with_context(|| format!("logging in to {}", args.registry))?;
    let file = auth::kiln_auth_file(store.root());
    auth::save(&file, &args.registry, &creds)?;
    eprintln!(
        "kiln: logged in to {} as {} (saved in {})",
        args.registry,
        creds.username,
        file.display()
    );
    Ok(0)
}

/// Runs `kiln logout`.
pub fn logout(args: LogoutArgs) -> Result<u8> {
    let store = super::store();
    let file = auth::kiln_auth_file(store.root());
    if auth::forget(&file, &args.registry)? {
        eprintln!("kiln: removed the credentials for {}", args.registry);
    } else {
        eprintln!("kiln: no credentials kept for {}", args.registry);
    }
    Ok(0)
}
