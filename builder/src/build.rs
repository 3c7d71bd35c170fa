//! Building an image from a manifest: analyse the program, gather its
//! libraries and the manifest's files into a rootfs, and write the image.
//! Nothing is written unless everything succeeds, and then only through a
//! temporary file renamed into place.

use std::path::{Path, PathBuf};

use crate::analysis::{self, Analysis, Linkage};
use crate::config::{BootConfig, ConfigLibrary, ProgramInfo, CONFIG_VERSION};
use crate::image::{self, SectionKind};
use crate::manifest::{self, LoadedManifest, ManifestError, MAX_IMAGE_SIZE};
use crate::rootfs::{Entry, EntryKind, Rootfs, RootfsError, Source};

/// What to build.
#[derive(Clone, Debug)]
pub struct BuildOptions {
    /// The manifest.
    pub manifest: PathBuf,
    /// Where the image goes (default `images/<name>.kiln`).
    pub output: Option<PathBuf>,
    /// The guest kernel ELF to embed.
    pub kernel: PathBuf,
    /// Timestamp for every rootfs entry (SOURCE_DATE_EPOCH, else 0).
    pub mtime: u64,
    /// Print progress lines on stderr.
    pub progress: bool,
}

/// What was built.
#[derive(Clone, Debug)]
pub struct Built {
    /// The image file.
    pub path: PathBuf,
    /// Its size.
    pub size: u64,
    /// Its id (sha256 of the header).
    pub digest: String,
    /// The boot configuration inside.
    pub config: BootConfig,
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The manifest (or something it names) is wrong; located in the file.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// Assembling the rootfs failed.
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    /// The guest kernel cannot be read.
    #[error("cannot read the guest kernel {path}: {error} (build it with `cargo xtask kernel`)")]
    Kernel {
        /// The kernel path.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// The image is larger than its budget.
    #[error("image {name} would be {size} bytes, over its budget of {budget} bytes; largest contributors: {largest}")]
    OverBudget {
        /// Image name.
        name: String,
        /// Its size.
        size: u64,
        /// The budget.
        budget: u64,
        /// "path (N KiB), …".
        largest: String,
    },
    /// Writing the image failed.
    #[error(transparent)]
    Image(#[from] image::ImageError),
}

/// The timestamp for rootfs entries: SOURCE_DATE_EPOCH when set and valid.
pub fn source_date_epoch() -> u64 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The files every image has unless the manifest brings its own.
fn defaults() -> Vec<(&'static str, &'static [u8])> {
    vec![
        ("/etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"),
        ("/etc/group", b"root:x:0:\nnogroup:x:65534:\n"),
        ("/etc/hosts", b"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"),
        ("/etc/hostname", b"kiln\n"),
    ]
}

fn kib(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / f64::from(1u32 << 20))
    } else {
        format!("{:.1} KiB", n as f64 / 1024.0)
    }
}

fn host_file(path: &Path, mode: u32, origin: String) -> Result<Entry, String> {
    let meta =
        std::fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    // Read once now so that unreadable files fail here, located.
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut [0u8; 1]))
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(Entry {
        kind: EntryKind::File {
            source: Source::Host(path.into()),
            size: meta.len(),
        },
        mode,
        origin,
    })
}

/// Lexically normalises `p` (no `.`/`..`; `..` above the root stays at the root).
fn lexical(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            std::path::Component::Normal(n) => out.push(n),
            std::path::Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// Copies the host directory tree `src` to guest `dst`. Symbolic links are
/// kept, but only when they resolve to something inside the tree (a link
/// out of it would dangle or point elsewhere in the image); loops are
/// refused.
fn copy_tree(fs: &mut Rootfs, src: &Path, dst: &str, origin: &str) -> Result<(), String> {
    let root =
        std::fs::canonicalize(src).map_err(|e| format!("cannot read {}: {e}", src.display()))?;
    let mut stack = vec![(root.clone(), dst.to_string())];
    while let Some((dir, guest)) = stack.pop() {
        let mode = std::fs::metadata(&dir)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
            .unwrap_or(0o755);
        fs.add(
            &guest,
            Entry {
                kind: EntryKind::Dir,
                mode,
                origin: origin.into(),
            },
        )
        .map_err(|e| e.to_string())?;
        let mut children: Vec<_> = std::fs::read_dir(&dir)
            .map_err(|e| format!("cannot read {}: {e}", dir.display()))?
            .collect::<Result<_, _>>()
            .map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
        children.sort_by_key(|e| e.file_name());
        for child in children {
            let host = child.path();
            let name = child.file_name().to_string_lossy().into_owned();
            let guest_child = format!("{guest}/{name}");
            let meta = std::fs::symlink_metadata(&host)
                .map_err(|e| format!("cannot read {}: {e}", host.display()))?;
            let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777;
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&host)
                    .map_err(|e| format!("cannot read {}: {e}", host.display()))?;
                check_link(&root, &host)?;
                let text = if target.is_absolute() {
                    // An absolute link into the tree: the same place in the guest.
                    let inside = lexical(&target);
                    let rel = inside.strip_prefix(&root).unwrap_or(Path::new(""));
                    format!("{dst}/{}", rel.display())
                        .trim_end_matches('/')
                        .to_string()
                } else {
                    target.display().to_string()
                };
                fs.add(
                    &guest_child,
                    Entry {
                        kind: EntryKind::Symlink(text),
                        mode: 0o777,
                        origin: origin.into(),
                    },
                )
                .map_err(|e| e.to_string())?;
            } else if meta.is_dir() {
                stack.push((host, guest_child));
            } else if meta.is_file() {
                let entry = host_file(&host, mode, origin.into())?;
                fs.add(&guest_child, entry).map_err(|e| e.to_string())?;
            } else {
                return Err(format!(
                    "{} is not a file, directory or symbolic link",
                    host.display()
                ));
            }
        }
    }
    Ok(())
}

/// Follows the symbolic link `link` (inside `root`) lexically; it must end
/// at an existing entry inside `root` within 40 links.
fn check_link(root: &Path, link: &Path) -> Result<(), String> {
    let mut current = link.to_path_buf();
    for _ in 0..40 {
        let meta = match std::fs::symlink_metadata(&current) {
            Ok(m) => m,
            Err(_) => {
                return Err(format!(
                    "symbolic link {} dangles (its target {} does not exist)",
                    link.display(),
                    current.display()
                ))
            }
        };
        if !meta.file_type().is_symlink() {
            return if current.starts_with(root) {
                Ok(())
            } else {
                Err(format!(
                    "symbolic link {} escapes the copied tree (it leads to {})",
                    link.display(),
                    current.display()
                ))
            };
        }
        let target = std::fs::read_link(&current)
            .map_err(|e| format!("cannot read {}: {e}", current.display()))?;
        let next = if target.is_absolute() {
            target
        } else {
            current.parent().unwrap_or(Path::new("/")).join(target)
        };
        current = lexical(&next);
        if !current.starts_with(root) {
            return Err(format!(
                "symbolic link {} escapes the copied tree (it leads to {})",
                link.display(),
                current.display()
            ));
        }
    }
    Err(format!("symbolic link loop at {}", link.display()))
}

/// Builds the image a manifest describes.
///
/// # Errors
/// [`BuildError`]; nothing is written then.
pub fn build(opts: &BuildOptions) -> Result<Built, BuildError> {
    let say = |msg: String| {
        if opts.progress {
            eprintln!("kiln: {msg}");
        }
    };
    say(format!("reading {}", opts.manifest.display()));
    let loaded = manifest::load(&opts.manifest)?;
    let m = &loaded.manifest;
    let (image_bytes, config, rootfs) = assemble(&loaded, opts, &say)?;

    let budget = m
        .max_size
        .as_ref()
        .map_or(MAX_IMAGE_SIZE, |s| s.get_ref().0)
        .min(MAX_IMAGE_SIZE);
    if image_bytes.len() as u64 > budget {
        let kernel_size = std::fs::metadata(&opts.kernel)
            .map(|m| m.len())
            .unwrap_or(0);
        let mut sizes: Vec<(String, u64)> = rootfs
            .entries()
            .filter_map(|(p, e)| match e.kind {
                EntryKind::File { size, .. } => Some((p.clone(), size)),
                _ => None,
            })
            .collect();
        sizes.push(("(guest kernel)".into(), kernel_size));
        sizes.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let largest: Vec<String> = sizes
            .iter()
            .take(5)
            .map(|(p, s)| format!("{p} ({})", kib(*s)))
            .collect();
        return Err(BuildError::OverBudget {
            name: m.name.get_ref().clone(),
            size: image_bytes.len() as u64,
            budget,
            largest: largest.join(", "),
        });
    }
    let output = opts
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from("images").join(format!("{}.kiln", m.name.get_ref())));
    let digest = image::hex(&<sha2::Sha256 as sha2::Digest>::digest(
        &image_bytes[..image::HEADER_SIZE as usize],
    ));
    image::write_file(&output, &image_bytes)?;
    say(format!(
        "wrote {} ({}, sha256:{digest})",
        output.display(),
        kib(image_bytes.len() as u64)
    ));
    Ok(Built {
        path: output,
        size: image_bytes.len() as u64,
        digest,
        config,
    })
}

/// Everything but the writing: the image bytes, its configuration and rootfs.
fn assemble(
    loaded: &LoadedManifest,
    opts: &BuildOptions,
    say: &dyn Fn(String),
) -> Result<(Vec<u8>, BootConfig, Rootfs), BuildError> {
    let m = &loaded.manifest;
    let program_host = loaded.host_path(m.program.path.get_ref());
    let at_program = |msg: String| loaded.error_at(m.program.path.span(), msg);
    if !program_host.exists() {
        return Err(at_program(format!("program {} not found", program_host.display())).into());
    }
    let info = analysis::inspect(&program_host).map_err(|e| at_program(e.to_string()))?;
    let guest_program = match &m.program.guest_path {
        Some(p) => p.get_ref().clone(),
        None => format!(
            "/app/{}",
            program_host
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "program".into())
        ),
    };
    let dlopen: Vec<String> = m
        .program
        .libraries
        .iter()
        .map(|l| l.get_ref().clone())
        .collect();
    let analysis: Analysis = analysis::resolve(
        &program_host,
        &guest_program,
        info,
        &dlopen,
        &analysis::system_dirs(),
    )
    .map_err(|e| at_program(e.to_string()))?;
    let linkage = match &analysis.program.linkage {
        Linkage::Static => "static",
        Linkage::StaticPie => "static-pie",
        Linkage::Dynamic { .. } => "dynamic",
    };
    let lib_bytes: u64 = analysis.libraries.iter().map(|l| l.size).sum::<u64>()
        + analysis.interpreter.as_ref().map_or(0, |i| i.size);
    say(format!(
        "{}: {linkage} x86-64 program, {} shared librar{} ({})",
        program_host.display(),
        analysis.libraries.len(),
        if analysis.libraries.len() == 1 {
            "y"
        } else {
            "ies"
        },
        kib(lib_bytes)
    ));

    let mut fs = Rootfs::new();
    let mode_of = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
            .unwrap_or(0o755)
    };
    let program_entry = host_file(
        &program_host,
        mode_of(&program_host) | 0o111,
        format!("the program {}", program_host.display()),
    )
    .map_err(&at_program)?;
    fs.add(&guest_program, program_entry)?;
    for lib in analysis.interpreter.iter().chain(&analysis.libraries) {
        let entry = host_file(
            &lib.host_path,
            0o755,
            format!("library {} (needed by {})", lib.name, lib.needed_by),
        )
        .map_err(&at_program)?;
        fs.add(&lib.guest_path, entry)?;
    }
    for f in &m.files {
        let src = loaded.host_path(f.src.get_ref());
        let dst = f.dst.get_ref();
        let origin = format!("files entry {}", src.display());
        let at_src = |msg: String| loaded.error_at(f.src.span(), msg);
        match std::fs::metadata(&src) {
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Err(at_src(format!("symbolic link loop at {}", src.display())).into())
            }
            Err(e) => return Err(at_src(format!("cannot read {}: {e}", src.display())).into()),
            Ok(meta) if meta.is_dir() => copy_tree(&mut fs, &src, dst, &origin).map_err(at_src)?,
            Ok(meta) => {
                let mode = f.mode.map_or(
                    std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777,
                    |m| m.0,
                );
                let entry = host_file(&src, mode, origin).map_err(at_src)?;
                fs.add(dst, entry)
                    .map_err(|e| loaded.error_at(f.dst.span(), e.to_string()))?;
            }
        }
    }
    for d in &m.dirs {
        let mode = d.mode.map_or(0o755, |m| m.0);
        fs.add(
            d.path.get_ref(),
            Entry {
                kind: EntryKind::Dir,
                mode,
                origin: format!("dirs entry {}", d.path.get_ref()),
            },
        )
        .map_err(|e| loaded.error_at(d.path.span(), e.to_string()))?;
    }
    for (path, data) in defaults() {
        if !fs.contains(path) {
            fs.add(path, Entry::bytes(data, 0o644, "kiln defaults"))?;
        }
    }
    if !fs.contains("/tmp") {
        fs.add(
            "/tmp",
            Entry {
                kind: EntryKind::Dir,
                mode: 0o1777,
                origin: "kiln defaults".into(),
            },
        )?;
    }

    let mut rootfs_bytes = Vec::new();
    fs.write(&mut rootfs_bytes, opts.mtime)?;
    say(format!(
        "rootfs: {} entries, {} of files, {} archive",
        fs.entries().count(),
        kib(fs.content_size()),
        kib(rootfs_bytes.len() as u64)
    ));

    let kernel = std::fs::read(&opts.kernel).map_err(|error| BuildError::Kernel {
        path: opts.kernel.clone(),
        error,
    })?;
    let mut env: Vec<String> = m.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if !m.env.contains_key("PATH") {
        env.insert(0, kiln_boot::DEFAULT_PATH_ENV.into());
    }
    let config = BootConfig {
        config_version: CONFIG_VERSION,
        name: m.name.get_ref().clone(),
        version: m.version.clone(),
        entrypoint: guest_program,
        args: m.program.args.clone(),
        env,
        memory_mib: m.vm.memory,
        vcpus: m.vm.vcpus,
        cmdline: m.vm.cmdline.clone(),
        program: ProgramInfo {
            linkage: linkage.into(),
            interpreter: analysis.interpreter.as_ref().map(|i| i.guest_path.clone()),
            needed: analysis.program.needed.clone(),
            libraries: analysis
                .libraries
                .iter()
                .map(|l| ConfigLibrary {
                    name: l.name.clone(),
                    path: l.guest_path.clone(),
                    size: l.size,
                })
                .collect(),
        },
        net: m.net.as_ref().map(|n| crate::config::ImageNet {
            mode: n.mode.as_ref().map(|v| v.get_ref().clone()),
            address: n.address.as_ref().map(|v| v.get_ref().clone()),
            gateway: n.gateway.as_ref().map(|v| v.get_ref().clone()),
            dns: n.dns.iter().map(|v| v.get_ref().clone()).collect(),
            search: n.search.clone(),
            hostname: n.hostname.as_ref().map(|v| v.get_ref().clone()),
            ports: n.ports.clone(),
        }),
        volumes: m
            .volumes
            .iter()
            .map(|v| v.path.get_ref().trim_end_matches('/').to_string())
            .collect(),
        disks: m.disks.iter().map(|d| d.size.get_ref().0).collect(),
    };
    let config_bytes = config.to_bytes();
    let bytes = image::encode(&[
        (SectionKind::Config, &config_bytes),
        (SectionKind::Kernel, &kernel),
        (SectionKind::Rootfs, &rootfs_bytes),
    ]);
    Ok((bytes, config, fs))
}
