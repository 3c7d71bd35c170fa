//! `kiln inspect IMAGE`.

use std::path::PathBuf;

use anyhow::{Context, Result};
use kiln_builder::config::BootConfig;
use kiln_builder::image::{Image, SectionKind};
use kiln_kernel::tarfs::{Kind, TarFs};

/// Show what an image holds.
#[derive(clap::Args)]
pub struct Args {
    /// The image
    image: PathBuf,

    /// Print JSON instead of text
    #[arg(long)]
    json: bool,
}

/// Runs `kiln inspect`.
pub fn run(args: Args) -> Result<u8> {
    let image = Image::open(&args.image)?;
    let config =
        BootConfig::from_bytes(&image.read(SectionKind::Config)?).map_err(anyhow::Error::msg)?;
    let rootfs = image.read(SectionKind::Rootfs)?;
    let index = TarFs::parse(&rootfs)
        .map_err(|e| anyhow::anyhow!("{}: rootfs: {e}", args.image.display()))?;
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
            "image": args.image, "digest": format!("sha256:{}", image.digest), "size": image.size,
            "sections": image.sections.iter().map(|s| serde_json::json!({
                "kind": s.kind, "media_type": s.kind.media_type(), "offset": s.offset, "size": s.size,
                "digest": format!("sha256:{}", s.sha256),
            })).collect::<Vec<_>>(),
            "config": config, "files": files,
        });
        println!("{}", serde_json::to_string_pretty(&doc).context("JSON")?);
        return Ok(0);
    }
    println!(
        "image     {} ({}, {} bytes)",
        args.image.display(),
        super::human_size(image.size),
        image.size
    );
    println!("digest    sha256:{}", image.digest);
    println!("name      {} {}", config.name, config.version);
    println!("\nsections");
    for s in &image.sections {
        println!(
            "  {:<7} {:>10}  sha256:{}  {}",
            s.kind.name(),
            super::human_size(s.size),
            s.sha256,
            s.kind.media_type()
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
