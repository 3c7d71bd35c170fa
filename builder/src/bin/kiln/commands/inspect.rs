//! `kiln inspect IMAGE|VM`.

use anyhow::{Context, Result};
use kiln_builder::config::BootConfig;
use kiln_builder::oci;
use kiln_kernel::fs::tarfs::{Kind, TarFs};

/// What `kiln inspect` looks at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Target {
    /// An image (a .kiln file or a stored image)
    Image,
    /// An appliance kilnd manages
    Vm,
}

/// Show what an image holds, or everything about an appliance
#[derive(clap::Args)]
#[command(
    after_help = "Without --type, a name that is not a file is looked up among kilnd's appliances                   first (when a kilnd answers), then among the stored images. An appliance is                   printed as the JSON of kilnd's GET /v1/vms/{vm}."
)]
pub struct Args {
    /// The image: a .kiln file (verified completely), or a name or digest in the local store; or an appliance's name or id
    #[arg(value_name = "IMAGE|REF|VM")]
    image: String,

    /// Print JSON instead of text
    #[arg(long)]
    json: bool,

    /// Only look for an image, or only for an appliance
    #[arg(long = "type", value_enum, value_name = "TYPE")]
    kind: Option<Target>,
}

/// Runs `kiln inspect`.
pub fn run(args: Args) -> Result<u8> {
    let vm = match args.kind {
        Some(Target::Image) => None,
        Some(Target::Vm) => Some(appliance(&super::kilnd()?, &args.image)?),
        None if super::is_file_name(&args.image) => None,
        None => {
            let client = kiln_builder::daemon::client::Client::at(
                kiln_builder::daemon::client::Client::socket_path(),
            );
            if client.answers() {
                appliance(&client, &args.image).ok()
            } else {
                None
            }
        }
    };
    if let Some(vm) = vm {
        println!("{}", serde_json::to_string_pretty(&vm)?);
        return Ok(0);
    }
    image(args)
}

/// kilnd's details of the appliance `name`.
fn appliance(
    client: &kiln_builder::daemon::client::Client,
    name: &str,
) -> Result<serde_json::Value> {
    Ok(client.json("GET", &super::vm_path(name), None)?)
}

/// `kiln inspect IMAGE`.
fn image(args: Args) -> Result<u8> {
    let store = super::store();
    let (parts, stored) = super::open_image(&args.image, &store)?;
    let config = BootConfig::from_bytes(&oci::read_part(&parts.config)?)?;
    let rootfs = oci::read_part(&parts.rootfs)?;
    let index =
        TarFs::parse(&rootfs).map_err(|e| anyhow::anyhow!("{}: rootfs: {e}", args.image))?;
    let digest = parts.image_digest();
    let (offsets, size) = parts.file_layout();
    let mut files = Vec::new();
    let mut stack = vec!["/".to_string()];
    while let Some(dir) = stack.pop() {
        for (name, node) in index.children(&dir) {
            let path = if dir == "/" {
                format!("/{name}")
            } else {
                format!("{dir}/{name}")
            };
            let (kind, target) = match &node.kind {
                Kind::File => ("file", None),
                Kind::Dir => {
                    stack.push(path.clone());
                    ("dir", None)
                }
                Kind::Symlink(t) => ("symlink", Some(t.clone())),
            };
            files.push(serde_json::json!({
                "path": path, "kind": kind, "mode": format!("{:04o}", node.mode), "size": node.size, "target": target,
            }));
        }
    }
    files.sort_by(|a, b| a["path"].as_str().cmp(&b["path"].as_str()));
    if args.json {
        let doc = serde_json::json!({
            "image": args.image, "digest": format!("sha256:{digest}"), "size": size,
            "sections": parts.all().iter().zip(offsets).map(|(p, offset)| serde_json::json!({
                "kind": p.kind, "media_type": p.kind.media_type(), "offset": offset, "size": p.size(),
                "digest": format!("sha256:{}", p.sha256),
            })).collect::<Vec<_>>(),
            "stored": stored,
            "config": config, "files": files,
        });
        println!("{}", serde_json::to_string_pretty(&doc).context("JSON")?);
        return Ok(0);
    }
    println!(
        "image     {} ({}, {size} bytes as a .kiln file)",
        args.image,
        super::human_size(size),
    );
    println!("digest    sha256:{digest}");
    if let Some(st) = &stored {
        println!("manifest  {} (local store)", st.digest);
        println!("names     {}", st.names.join(", "));
    }
    println!("name      {} {}", config.name, config.version);
    println!("\nsections");
    for p in parts.all() {
        println!(
            "  {:<7} {:>10}  sha256:{}  {}",
            p.kind.name(),
            super::human_size(p.size()),
            p.sha256,
            p.kind.media_type()
        );
    }
    println!("\nboot");
    println!("  entrypoint  {}", config.entrypoint);
    println!("  args        {:?}", config.args);
    println!("  env         {:?}", config.env);
    println!(
        "  memory      {} MiB, {} vCPU",
        config.memory_mib, config.vcpus
    );
    if !config.cmdline.is_empty() {
        println!("  cmdline     {}", config.cmdline);
    }
    for v in &config.volumes {
        println!("  volume      {v}");
    }
    for (i, d) in config.disks.iter().enumerate() {
        println!(
            "  disk        /dev/vd{} {}",
            (b'a' + i as u8) as char,
            super::human_size(*d)
        );
    }
    println!(
        "\nprogram     {} ({})",
        config.entrypoint, config.program.linkage
    );
    if let Some(i) = &config.program.interpreter {
        println!("  interpreter {i}");
    }
    if !config.program.needed.is_empty() {
        println!("  needed      {}", config.program.needed.join(", "));
    }
    for l in &config.program.libraries {
        println!(
            "  library     {:<28} {:>10}  {}",
            l.name,
            super::human_size(l.size),
            l.path
        );
    }
    println!("\nfiles");
    for f in &files {
        let target = f["target"]
            .as_str()
            .map(|t| format!(" -> {t}"))
            .unwrap_or_default();
        println!(
            "  {:<7} {} {:>10}  {}{target}",
            f["kind"].as_str().unwrap_or(""),
            f["mode"].as_str().unwrap_or(""),
            super::human_size(f["size"].as_u64().unwrap_or(0)),
            f["path"].as_str().unwrap_or("")
        );
    }
    Ok(0)
}
