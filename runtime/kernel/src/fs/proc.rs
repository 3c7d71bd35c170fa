//! The /proc files a program reads about itself and the machine:
//! /proc/self/{exe,maps,cmdline,environ,stat,status,comm}, /proc/cpuinfo and
//! /proc/meminfo, with true values. (The program is pid 1, so /proc/1 is
//! /proc/self.) Contents are generated when the file is opened.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use kiln_kernel::fs::stat::{mode, Stat};
use kiln_kernel::mm::vma::{prot, Backing, Label};

use crate::process::Process;

/// A /proc entry kiln provides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// /proc.
    Root,
    /// /proc/self (a directory here, rather than a link to /proc/1).
    SelfDir,
    /// /proc/self/exe: a link to the program.
    Exe,
    /// /proc/self/maps.
    Maps,
    /// /proc/self/cmdline.
    Cmdline,
    /// /proc/self/environ.
    Environ,
    /// /proc/self/stat.
    SelfStat,
    /// /proc/self/status.
    Status,
    /// /proc/self/comm.
    Comm,
    /// /proc/cpuinfo.
    Cpuinfo,
    /// /proc/meminfo.
    Meminfo,
    /// /proc/mounts and /proc/self/mounts: the root file system and the
    /// volumes.
    Mounts,
}

impl Entry {
    /// The entry an absolute, normalised path names.
    pub fn at(path: &str) -> Option<Entry> {
        let rest = path.strip_prefix("/proc")?;
        let rest = rest
            .strip_prefix("/self")
            .or_else(|| rest.strip_prefix("/1"))
            .ok_or(rest);
        Some(match rest {
            Err("") => Entry::Root,
            Err("/cpuinfo") => Entry::Cpuinfo,
            Err("/meminfo") => Entry::Meminfo,
            Err("/mounts") | Ok("/mounts") => Entry::Mounts,
            Ok("") => Entry::SelfDir,
            Ok("/exe") => Entry::Exe,
            Ok("/maps") => Entry::Maps,
            Ok("/cmdline") => Entry::Cmdline,
            Ok("/environ") => Entry::Environ,
            Ok("/stat") => Entry::SelfStat,
            Ok("/status") => Entry::Status,
            Ok("/comm") => Entry::Comm,
            _ => return None,
        })
    }

    /// The target of a link entry.
    pub fn link_target(self) -> Option<String> {
        (self == Entry::Exe).then(crate::process::exe_path)
    }

    /// Whether it is a directory.
    pub fn is_dir(self) -> bool {
        matches!(self, Entry::Root | Entry::SelfDir)
    }

    /// Its metadata.
    pub fn stat(self) -> Stat {
        let ino = 0xf000 + self as u64;
        let m = match self {
            Entry::Root | Entry::SelfDir => mode::S_IFDIR | 0o555,
            Entry::Exe => mode::S_IFLNK | 0o777,
            _ => mode::S_IFREG | 0o444,
        };
        Stat {
            dev: 0x16,
            ino,
            mode: m,
            nlink: 1,
            blksize: 1024,
            ..Stat::default()
        }
    }

    /// The file's contents now.
    pub fn contents(self, p: &Process) -> Vec<u8> {
        let mut out = String::new();
        match self {
            Entry::Maps => maps(p, &mut out),
            Entry::Cmdline => return nul_joined(&p.argv),
            Entry::Environ => return nul_joined(&p.envp),
            Entry::SelfStat => {
                let exe = crate::process::exe_path();
                let name = exe.rsplit('/').next().unwrap_or("app");
                let _ = writeln!(
                    out,
                    "1 ({name}) R 0 1 1 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 1 0 0 {} 0 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0",
                    p.mem.vmas.iter().map(|v| v.end - v.start).sum::<u64>()
                );
            }
            Entry::Status => status(p, &mut out),
            Entry::Comm => {
                let _ = writeln!(out, "{}", comm_text(&crate::sched::main_comm()));
            }
            Entry::Cpuinfo => out = crate::arch::cpuinfo(),
            Entry::Meminfo => meminfo(&mut out),
            Entry::Mounts => {
                out.push_str("rootfs / rootfs rw 0 0\n");
                for m in super::volume::mounts() {
                    let _ = writeln!(
                        out,
                        "{} {} virtiofs {},relatime 0 0",
                        m.tag,
                        m.path,
                        if m.read_only { "ro" } else { "rw" }
                    );
                }
            }
            Entry::Root | Entry::SelfDir | Entry::Exe => {}
        }
        out.into_bytes()
    }
}

fn nul_joined(items: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for i in items {
        out.extend_from_slice(i);
        out.push(0);
    }
    out
}

fn maps(p: &Process, out: &mut String) {
    let exe = crate::process::exe_path();
    for v in p.mem.vmas.iter() {
        let perm = |bit: u32, c: char| if v.prot & bit != 0 { c } else { '-' };
        let offset = match v.backing {
            Backing::Image { offset, .. } => offset,
            Backing::Anonymous => 0,
        };
        let name = match v.label {
            Label::Program => exe.as_str(),
            Label::Heap => "[heap]",
            Label::Stack => "[stack]",
            Label::Mmap => "",
            Label::Trampoline => "[kiln-syscall]",
            Label::Vdso => "[vdso]",
        };
        let _ = write!(
            out,
            "{:08x}-{:08x} {}{}{}p {:08x} 00:00 0",
            v.start,
            v.end,
            perm(prot::READ, 'r'),
            perm(prot::WRITE, 'w'),
            perm(prot::EXEC, 'x'),
            offset
        );
        if name.is_empty() {
            out.push('\n');
        } else {
            let _ = writeln!(out, "{:>width$}{name}", "", width = 10);
        }
    }
}

/// A thread name as text (up to its NUL).
fn comm_text(comm: &[u8; 16]) -> String {
    let len = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    String::from_utf8_lossy(&comm[..len]).into_owned()
}

fn status(p: &Process, out: &mut String) {
    let name = comm_text(&crate::sched::main_comm());
    let vm_kib = p.mem.vmas.iter().map(|v| v.end - v.start).sum::<u64>() / 1024;
    let (used, _) = crate::mm::frame::usage();
    let mask = crate::sched::with_current(|t| t.sig.mask);
    let pending = crate::signal::pending::pending_signals();
    let (ignored, caught) = p.signals.summary();
    let threads = crate::sched::thread_count();
    let _ = write!(
        out,
        "Name:\t{name}\nUmask:\t{:04o}\nState:\tR (running)\nTgid:\t1\nNgid:\t0\nPid:\t1\n\
         PPid:\t0\nTracerPid:\t0\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nFDSize:\t64\n\
         Groups:\t\nVmPeak:\t{vm_kib:>8} kB\nVmSize:\t{vm_kib:>8} kB\nVmRSS:\t{:>8} kB\n\
         Threads:\t{threads}\nSigQ:\t0/{}\nSigPnd:\t{pending:016x}\nShdPnd:\t{pending:016x}\n\
         SigBlk:\t{mask:016x}\nSigIgn:\t{ignored:016x}\nSigCgt:\t{caught:016x}\n\
         CapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\nCapEff:\t000001ffffffffff\n\
         CapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\nNoNewPrivs:\t0\nSeccomp:\t0\n\
         Cpus_allowed:\t1\nCpus_allowed_list:\t0\nMems_allowed_list:\t0\n\
         voluntary_ctxt_switches:\t0\nnonvoluntary_ctxt_switches:\t0\n",
        p.umask,
        used * 4,
        kiln_kernel::signal::QUEUE_LIMIT,
    );
}

fn meminfo(out: &mut String) {
    let (used, total) = crate::mm::frame::usage();
    let kib = |frames: u64| frames * 4;
    let free = total.saturating_sub(used);
    for (name, value) in [
        ("MemTotal", kib(total)),
        ("MemFree", kib(free)),
        ("MemAvailable", kib(free)),
        ("Buffers", 0),
        ("Cached", 0),
        ("SwapCached", 0),
        ("Active", kib(used)),
        ("Inactive", 0),
        ("SwapTotal", 0),
        ("SwapFree", 0),
        ("Shmem", 0),
    ] {
        let _ = writeln!(out, "{:<16}{:>8} kB", alloc::format!("{name}:"), value);
    }
}
