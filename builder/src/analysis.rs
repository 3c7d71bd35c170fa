//! ELF analysis of the program and its shared libraries: class and
//! machine checks, static / static-pie / dynamic, the interpreter, and the
//! DT_NEEDED closure resolved the way ld.so(8) resolves it on a Debian host:
//! DT_RPATH (when there is no DT_RUNPATH), DT_RUNPATH, both with `$ORIGIN`,
//! `$LIB` and `$PLATFORM`, then the directories of /etc/ld.so.conf and the
//! standard multiarch directories. Only 64-bit x86-64 shared objects are
//! accepted as candidates, as ld.so skips incompatible ones.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

use goblin::elf::dynamic::{DT_NEEDED, DT_RPATH, DT_RUNPATH, DT_SONAME};
use goblin::elf::header::{EM_386, EM_AARCH64, EM_ARM, EM_RISCV, EM_X86_64, ET_DYN, ET_EXEC};
use goblin::elf::program_header::{PT_DYNAMIC, PT_INTERP};
use goblin::elf::Elf;
use serde::Serialize;

/// Why a file cannot go into an image as a program or library.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    /// The file cannot be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Not an ELF file at all.
    #[error("{0} is not an ELF program (kiln runs Linux x86-64 ELF executables)")]
    NotElf(PathBuf),
    /// An ELF of the wrong class or machine.
    #[error("{path} is {what}; kiln runs only 64-bit x86-64 ELF programs")]
    WrongArch {
        /// The file.
        path: PathBuf,
        /// "a 32-bit ELF", "an ELF for aarch64", …
        what: String,
    },
    /// An ELF that is not an executable or shared object.
    #[error("{path} is an ELF {what}, not an executable")]
    NotExecutable {
        /// The file.
        path: PathBuf,
        /// Its type.
        what: String,
    },
    /// A DT_NEEDED library was not found.
    #[error("shared library {name} (needed by {needed_by}) not found; searched {searched}")]
    MissingLibrary {
        /// The library's name.
        name: String,
        /// Who needs it.
        needed_by: String,
        /// Where ld.so would have looked.
        searched: String,
    },
}

/// How the program is linked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Linkage {
    /// Static ET_EXEC.
    Static,
    /// Static position-independent executable (ET_DYN without PT_INTERP).
    StaticPie,
    /// Dynamically linked: needs its interpreter.
    Dynamic {
        /// PT_INTERP.
        interpreter: String,
    },
}

/// What one ELF file says about itself.
#[derive(Clone, Debug, Serialize)]
pub struct ElfInfo {
    /// How it is linked.
    pub linkage: Linkage,
    /// DT_NEEDED entries, in order.
    pub needed: Vec<String>,
    /// DT_RPATH directories (unexpanded).
    pub rpath: Vec<String>,
    /// DT_RUNPATH directories (unexpanded).
    pub runpath: Vec<String>,
    /// DT_SONAME.
    pub soname: Option<String>,
}

/// A shared object going into the image.
#[derive(Clone, Debug, Serialize)]
pub struct Library {
    /// The name it was asked for (DT_NEEDED, manifest, or PT_INTERP).
    pub name: String,
    /// Where it was found on the host.
    pub host_path: PathBuf,
    /// Where it goes in the guest (the directory ld.so found it in, so the
    /// guest's ld.so finds it there too).
    pub guest_path: String,
    /// Who asked for it first.
    pub needed_by: String,
    /// Size in bytes.
    pub size: u64,
}

/// The analysis of a program and everything it loads.
#[derive(Clone, Debug, Serialize)]
pub struct Analysis {
    /// The program itself.
    pub program: ElfInfo,
    /// Its interpreter, when dynamic.
    pub interpreter: Option<Library>,
    /// The transitive closure of shared libraries (DT_NEEDED and the
    /// manifest's dlopen list), in the order found.
    pub libraries: Vec<Library>,
}

fn machine_name(m: u16) -> String {
    match m {
        EM_386 => "i386".into(),
        EM_ARM => "arm".into(),
        EM_AARCH64 => "aarch64".into(),
        EM_RISCV => "riscv".into(),
        other => format!("machine {other}"),
    }
}

/// Reads and checks one ELF file.
///
/// # Errors
/// [`AnalysisError`] naming the file.
pub fn inspect(path: &Path) -> Result<ElfInfo, AnalysisError> {
    let read_err = |e: std::io::Error| AnalysisError::Read {
        path: path.into(),
        reason: e.to_string(),
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    if file.metadata().map_err(read_err)?.is_dir() {
        return Err(AnalysisError::Read {
            path: path.into(),
            reason: "it is a directory".into(),
        });
    }
    // SAFETY: read-only private mapping of a file kiln only reads; a file
    // changed meanwhile makes the analysis fail or misreport, nothing worse.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(read_err)?;
    inspect_bytes(path, &map)
}

/// Checks `bytes` (the contents of `path`).
///
/// # Errors
/// As [`inspect`].
pub fn inspect_bytes(path: &Path, bytes: &[u8]) -> Result<ElfInfo, AnalysisError> {
    if bytes.len() < 20 || &bytes[..4] != b"\x7fELF" {
        return Err(AnalysisError::NotElf(path.into()));
    }
    if bytes[4] != 2 {
        let what = if bytes[4] == 1 {
            "a 32-bit ELF".to_string()
        } else {
            format!("an ELF of class {}", bytes[4])
        };
        return Err(AnalysisError::WrongArch {
            path: path.into(),
            what,
        });
    }
    let machine = u16::from_le_bytes([bytes[18], bytes[19]]);
    if bytes[5] != 1 || machine != EM_X86_64 {
        return Err(AnalysisError::WrongArch {
            path: path.into(),
            what: format!("an ELF for {}", machine_name(machine)),
        });
    }
    let elf = Elf::parse(bytes).map_err(|e| AnalysisError::Read {
        path: path.into(),
        reason: format!("damaged ELF: {e}"),
    })?;
    let e_type = elf.header.e_type;
    if e_type != ET_EXEC && e_type != ET_DYN {
        let what = match e_type {
            1 => "relocatable object".into(),
            4 => "core dump".into(),
            t => format!("file of type {t}"),
        };
        return Err(AnalysisError::NotExecutable {
            path: path.into(),
            what,
        });
    }
    let interpreter = elf
        .program_headers
        .iter()
        .find(|p| p.p_type == PT_INTERP)
        .and_then(|_| elf.interpreter.map(String::from));
    let has_dynamic = elf.program_headers.iter().any(|p| p.p_type == PT_DYNAMIC);
    let linkage = match (interpreter, e_type) {
        (Some(interpreter), _) => Linkage::Dynamic { interpreter },
        (None, ET_EXEC) => Linkage::Static,
        (None, _) => Linkage::StaticPie,
    };
    let mut info = ElfInfo {
        linkage,
        needed: Vec::new(),
        rpath: Vec::new(),
        runpath: Vec::new(),
        soname: None,
    };
    if let (true, Some(dynamic)) = (has_dynamic, &elf.dynamic) {
        for d in &dynamic.dyns {
            let text = || elf.dynstrtab.get_at(d.d_val as usize).map(String::from);
            match d.d_tag {
                DT_NEEDED => info.needed.extend(text()),
                DT_RPATH => info.rpath.extend(
                    text()
                        .iter()
                        .flat_map(|t| t.split(':').map(String::from).collect::<Vec<_>>()),
                ),
                DT_RUNPATH => info.runpath.extend(
                    text()
                        .iter()
                        .flat_map(|t| t.split(':').map(String::from).collect::<Vec<_>>()),
                ),
                DT_SONAME => info.soname = text(),
                _ => {}
            }
        }
    }
    Ok(info)
}

/// The default search directories of the host's ld.so: /etc/ld.so.conf
/// (with its includes), then the standard multiarch and legacy directories.
pub fn system_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    read_ld_so_conf(Path::new("/etc/ld.so.conf"), &mut dirs, 0);
    for d in [
        "/lib/x86_64-linux-gnu",
        "/usr/lib/x86_64-linux-gnu",
        "/lib64",
        "/usr/lib64",
        "/lib",
        "/usr/lib",
    ] {
        let d = PathBuf::from(d);
        if !dirs.contains(&d) {
            dirs.push(d);
        }
    }
    dirs
}

fn read_ld_so_conf(path: &Path, dirs: &mut Vec<PathBuf>, depth: usize) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    if depth > 8 {
        return;
    }
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some(pattern) = line.strip_prefix("include ") {
            let pattern = pattern.trim();
            // Only the `dir/*.conf` form Debian uses.
            if let Some(dir) = pattern.strip_suffix("/*.conf") {
                let mut confs: Vec<PathBuf> = std::fs::read_dir(dir)
                    .into_iter()
                    .flatten()
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "conf"))
                    .collect();
                confs.sort();
                for c in confs {
                    read_ld_so_conf(&c, dirs, depth + 1);
                }
            }
        } else if line.starts_with('/') {
            let d = PathBuf::from(line);
            if !dirs.contains(&d) {
                dirs.push(d);
            }
        }
    }
}

/// Expands `$ORIGIN`, `$LIB` and `$PLATFORM` in an RPATH/RUNPATH entry.
fn expand(dir: &str, origin: &Path) -> PathBuf {
    let origin = origin.display().to_string();
    PathBuf::from(
        dir.replace("${ORIGIN}", &origin)
            .replace("$ORIGIN", &origin)
            .replace("${LIB}", "lib/x86_64-linux-gnu")
            .replace("$LIB", "lib/x86_64-linux-gnu")
            .replace("${PLATFORM}", "x86_64")
            .replace("$PLATFORM", "x86_64"),
    )
}

/// `p` as an absolute guest path without `.` or `..` (clamped at the root).
fn normalise_guest(p: &Path) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in p.components() {
        match c {
            std::path::Component::Normal(n) => parts.push(n.to_string_lossy().into_owned()),
            std::path::Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    format!("/{}", parts.join("/"))
}

/// Whether `path` is a 64-bit x86-64 ELF (what ld.so would accept).
fn compatible(path: &Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 20];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && is_x86_64_elf(&head)
}

/// Whether `bytes` start with the header of a 64-bit little-endian x86-64
/// ELF file (its first 20 bytes are enough).
pub fn is_x86_64_elf(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x7fELF\x02\x01") && bytes.get(18..20) == Some(&EM_X86_64.to_le_bytes()[..])
}

/// The guest directory where libraries found in the host's system
/// directories go: the first one the guest's ld.so searches without a cache.
pub const GUEST_LIB_DIR: &str = "/lib/x86_64-linux-gnu";

/// Resolves the libraries of `program` (`info` is its analysis; it will sit
/// at `guest_program` in the image) plus the manifest's `dlopen` names
/// (sonames or absolute host paths).
///
/// Libraries found through the system directories go to
/// [`GUEST_LIB_DIR`]; those found through an RPATH/RUNPATH go where the same
/// entry leads in the guest (`$ORIGIN` is the guest directory of the
/// object, so relative layouts survive).
///
/// # Errors
/// [`AnalysisError::MissingLibrary`] naming the library and who needs it.
pub fn resolve(
    program: &Path,
    guest_program: &str,
    info: ElfInfo,
    dlopen: &[String],
    system: &[PathBuf],
) -> Result<Analysis, AnalysisError> {
    let program_name = program.display().to_string();
    let interpreter = match &info.linkage {
        Linkage::Dynamic { interpreter } => {
            let host = PathBuf::from(interpreter);
            if !compatible(&host) {
                return Err(AnalysisError::MissingLibrary {
                    name: interpreter.clone(),
                    needed_by: program_name.clone(),
                    searched: "its PT_INTERP path on this host".into(),
                });
            }
            let size = std::fs::metadata(&host).map(|m| m.len()).unwrap_or(0);
            Some(Library {
                name: interpreter.clone(),
                host_path: host,
                guest_path: interpreter.clone(),
                needed_by: program_name.clone(),
                size,
            })
        }
        _ => None,
    };
    /// Who asks for a library: its name, host and guest paths, and ELF info.
    struct Requester {
        name: String,
        host: PathBuf,
        guest: String,
        info: ElfInfo,
    }
    let dir_of = |p: &str| {
        Path::new(p)
            .parent()
            .map_or("/".to_string(), |d| d.display().to_string())
    };
    let exe = Requester {
        name: program_name.clone(),
        host: program.to_path_buf(),
        guest: guest_program.into(),
        info: info.clone(),
    };
    // The executable's DT_RPATH applies to every lookup (unless it has a RUNPATH).
    let exe_rpath: Vec<(PathBuf, PathBuf)> = if info.runpath.is_empty() {
        let (host_origin, guest_origin) = (
            program.parent().unwrap_or(Path::new("/")),
            dir_of(guest_program),
        );
        info.rpath
            .iter()
            .map(|d| (expand(d, host_origin), expand(d, Path::new(&guest_origin))))
            .collect()
    } else {
        Vec::new()
    };
    let mut found: BTreeMap<String, Library> = BTreeMap::new();
    let mut order: Vec<String> = Vec::new();
    let mut queue: VecDeque<(String, std::rc::Rc<Requester>)> = VecDeque::new();
    let exe = std::rc::Rc::new(exe);
    for name in &info.needed {
        queue.push_back((name.clone(), exe.clone()));
    }
    let manifest = std::rc::Rc::new(Requester {
        name: "the manifest's libraries list".into(),
        host: program.to_path_buf(),
        guest: guest_program.into(),
        info: ElfInfo {
            linkage: Linkage::Static,
            needed: Vec::new(),
            rpath: Vec::new(),
            runpath: Vec::new(),
            soname: None,
        },
    });
    for name in dlopen {
        queue.push_back((name.clone(), manifest.clone()));
    }
    while let Some((name, req)) = queue.pop_front() {
        if found.contains_key(&name) {
            continue;
        }
        let host_origin = req.host.parent().unwrap_or(Path::new("/")).to_path_buf();
        let guest_origin = PathBuf::from(dir_of(&req.guest));
        // (host candidate, guest path it would have)
        let mut candidates: Vec<(PathBuf, PathBuf)> = Vec::new();
        let from_dirs = |dirs: &[String], cands: &mut Vec<(PathBuf, PathBuf)>| {
            for d in dirs {
                cands.push((
                    expand(d, &host_origin).join(&name),
                    expand(d, &guest_origin).join(&name),
                ));
            }
        };
        if name.contains('/') {
            candidates.push((PathBuf::from(&name), PathBuf::from(&name)));
        } else {
            if req.info.runpath.is_empty() {
                from_dirs(&req.info.rpath, &mut candidates);
                candidates.extend(
                    exe_rpath
                        .iter()
                        .map(|(h, g)| (h.join(&name), g.join(&name))),
                );
            }
            from_dirs(&req.info.runpath, &mut candidates);
            candidates.extend(
                system
                    .iter()
                    .map(|d| (d.join(&name), Path::new(GUEST_LIB_DIR).join(&name))),
            );
        }
        let Some((host, guest)) = candidates
            .iter()
            .find(|(c, _)| c.is_file() && compatible(c))
            .cloned()
        else {
            let mut dirs: Vec<String> = candidates
                .iter()
                .filter_map(|(c, _)| c.parent().map(|p| p.display().to_string()))
                .collect();
            dirs.dedup();
            return Err(AnalysisError::MissingLibrary {
                name,
                needed_by: req.name.clone(),
                searched: dirs.join(", "),
            });
        };
        let lib_info = inspect(&host)?;
        let guest_path = normalise_guest(&guest);
        let size = std::fs::metadata(&host).map(|m| m.len()).unwrap_or(0);
        let needed_by = req.name.clone();
        let me = std::rc::Rc::new(Requester {
            name: name.clone(),
            host: host.clone(),
            guest: guest_path.clone(),
            info: lib_info.clone(),
        });
        for dep in &lib_info.needed {
            queue.push_back((dep.clone(), me.clone()));
        }
        order.push(name.clone());
        found.insert(
            name.clone(),
            Library {
                name,
                host_path: host,
                guest_path,
                needed_by,
                size,
            },
        );
    }
    let libraries = order.into_iter().filter_map(|n| found.remove(&n)).collect();
    Ok(Analysis {
        program: info,
        interpreter,
        libraries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_non_elf_and_other_classes() {
        let e = inspect_bytes(Path::new("/s.sh"), b"#!/bin/sh\necho hi\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/s.sh") && e.contains("not an ELF"), "{e}");
        let mut elf32 = vec![0u8; 64];
        elf32[..4].copy_from_slice(b"\x7fELF");
        elf32[4] = 1;
        let e = inspect_bytes(Path::new("/x32"), &elf32)
            .unwrap_err()
            .to_string();
        assert!(e.contains("32-bit"), "{e}");
        let mut arm = vec![0u8; 64];
        arm[..4].copy_from_slice(b"\x7fELF");
        arm[4] = 2;
        arm[5] = 1;
        arm[18..20].copy_from_slice(&EM_AARCH64.to_le_bytes());
        let e = inspect_bytes(Path::new("/arm"), &arm)
            .unwrap_err()
            .to_string();
        assert!(e.contains("aarch64"), "{e}");
    }

    #[test]
    fn normalises_guest_paths() {
        assert_eq!(
            normalise_guest(Path::new("/app/bin/../lib/x.so")),
            "/app/lib/x.so"
        );
        assert_eq!(normalise_guest(Path::new("/../../lib/x.so")), "/lib/x.so");
    }

    #[test]
    fn expands_origin() {
        assert_eq!(
            expand("$ORIGIN/../lib", Path::new("/opt/app/bin")),
            PathBuf::from("/opt/app/bin/../lib")
        );
        assert_eq!(
            expand("${ORIGIN}/$LIB", Path::new("/x")),
            PathBuf::from("/x/lib/x86_64-linux-gnu")
        );
    }

    #[test]
    fn resolves_a_debian_program_closure() {
        let ls = Path::new("/usr/bin/ls");
        if !ls.exists() {
            return;
        }
        let info = inspect(ls).unwrap();
        assert!(matches!(info.linkage, Linkage::Dynamic { .. }));
        let a = resolve(ls, "/app/ls", info, &[], &system_dirs()).unwrap();
        assert!(a.interpreter.is_some());
        let names: Vec<&str> = a.libraries.iter().map(|l| l.name.as_str()).collect();
        assert!(names.contains(&"libc.so.6"), "{names:?}");
        let libc = a.libraries.iter().find(|l| l.name == "libc.so.6").unwrap();
        assert_eq!(libc.guest_path, "/lib/x86_64-linux-gnu/libc.so.6");
        let e = resolve(
            ls,
            "/app/ls",
            ElfInfo {
                needed: vec!["libdoesnotexist.so.9".into()],
                ..inspect(ls).unwrap()
            },
            &[],
            &system_dirs(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("libdoesnotexist.so.9") && e.contains("/usr/bin/ls"),
            "{e}"
        );
    }
}
