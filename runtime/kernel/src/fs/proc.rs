//! The /proc files a program reads about its processes and the machine:
//! /proc/<pid>/{exe,cwd,maps,cmdline,environ,stat,status,comm,mounts} for
//! every process (/proc/self is a link to the caller's), /proc/cpuinfo,
//! /proc/meminfo and /proc/mounts, with true values. Contents are
//! generated when the file is opened.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use kiln_kernel::fs::stat::{dtype, mode, Stat};
use kiln_kernel::mm::vma::{prot, Backing, Label};

use crate::process::Process;

/// A /proc entry kiln provides.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// /proc.
    Root,
    /// /proc/self: a link to the caller's /proc/<pid>.
    SelfLink,
    /// /proc/cpuinfo.
    Cpuinfo,
    /// /proc/meminfo.
    Meminfo,
    /// /proc/mounts: the root file system and the volumes.
    Mounts,
    /// An entry of /proc/<pid>.
    Pid(u32, Item),
}

/// What /proc/<pid> holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Item {
    /// The directory itself.
    Dir,
    /// exe: a link to the program.
    Exe,
    /// cwd: a link to the current directory.
    Cwd,
    /// maps.
    Maps,
    /// cmdline.
    Cmdline,
    /// environ.
    Environ,
    /// stat.
    Stat,
    /// status.
    Status,
    /// comm.
    Comm,
    /// mounts.
    Mounts,
}

/// The names of /proc/<pid>'s entries.
const ITEMS: [(&str, Item); 9] = [
    ("exe", Item::Exe),
    ("cwd", Item::Cwd),
    ("maps", Item::Maps),
    ("cmdline", Item::Cmdline),
    ("environ", Item::Environ),
    ("stat", Item::Stat),
    ("status", Item::Status),
    ("comm", Item::Comm),
    ("mounts", Item::Mounts),
];

/// Whether process `pid` is there to show: the running one, a parked
/// one, or a zombie.
fn exists(pid: u32) -> bool {
    use crate::state::KERNEL;
    pid == crate::process::current_pid()
        || KERNEL.parked.lock().contains_key(&pid)
        || KERNEL.zombies.lock().iter().any(|z| z.pid == pid)
}

impl Entry {
    /// The entry an absolute, normalised path names.
    pub fn at(path: &str) -> Option<Entry> {
        let rest = path.strip_prefix("/proc")?;
        let (pid, item) = match rest {
            "" => return Some(Entry::Root),
            "/self" => return Some(Entry::SelfLink),
            "/cpuinfo" => return Some(Entry::Cpuinfo),
            "/meminfo" => return Some(Entry::Meminfo),
            "/mounts" => return Some(Entry::Mounts),
            _ => {
                let rest = rest.strip_prefix('/')?;
                rest.split_once('/').unwrap_or((rest, ""))
            }
        };
        let pid = match pid {
            "self" => crate::process::current_pid(),
            digits => digits.parse::<u32>().ok().filter(|&p| exists(p))?,
        };
        let item = match item {
            "" => Item::Dir,
            name => ITEMS.iter().find(|(n, _)| *n == name)?.1,
        };
        Some(Entry::Pid(pid, item))
    }

    /// The target of a link entry. `running` is the calling process when
    /// the caller holds it (its directory is known only then; its program
    /// path always is).
    pub fn link_target(self, running: Option<&Process>) -> Option<String> {
        let current = crate::process::current_pid();
        let parked = |pid: u32, f: fn(&Process) -> String| {
            crate::state::KERNEL.parked.lock().get(&pid).map(f)
        };
        match self {
            Entry::SelfLink => Some(alloc::format!("{current}")),
            Entry::Pid(pid, Item::Exe) if pid == current => Some(crate::process::exe_path()),
            Entry::Pid(pid, Item::Exe) => parked(pid, |t| t.exe.clone()),
            Entry::Pid(pid, Item::Cwd) if pid == current => running.map(|p| p.cwd.clone()),
            Entry::Pid(pid, Item::Cwd) => parked(pid, |t| t.cwd.clone()),
            _ => None,
        }
    }

    /// Whether it is a directory.
    pub fn is_dir(self) -> bool {
        matches!(self, Entry::Root | Entry::Pid(_, Item::Dir))
    }

    /// Its metadata.
    pub fn stat(self) -> Stat {
        let ino = match self {
            Entry::Root => 1,
            Entry::SelfLink => 2,
            Entry::Cpuinfo => 3,
            Entry::Meminfo => 4,
            Entry::Mounts => 5,
            Entry::Pid(pid, item) => (u64::from(pid) << 8) | (item as u64 + 1),
        } + 0xf000;
        let m = match self {
            Entry::Root | Entry::Pid(_, Item::Dir) => mode::S_IFDIR | 0o555,
            Entry::SelfLink | Entry::Pid(_, Item::Exe | Item::Cwd) => mode::S_IFLNK | 0o777,
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

    /// A directory's entries (after `.` and `..`): (inode, type, name).
    pub fn listing(self) -> Vec<(u64, u8, String)> {
        let mut out = Vec::new();
        match self {
            Entry::Root => {
                for (e, name) in [
                    (Entry::SelfLink, "self"),
                    (Entry::Cpuinfo, "cpuinfo"),
                    (Entry::Meminfo, "meminfo"),
                    (Entry::Mounts, "mounts"),
                ] {
                    let t = if e == Entry::SelfLink {
                        dtype::DT_LNK
                    } else {
                        dtype::DT_REG
                    };
                    out.push((e.stat().ino, t, name.into()));
                }
                for pid in pids() {
                    let ino = Entry::Pid(pid, Item::Dir).stat().ino;
                    out.push((ino, dtype::DT_DIR, alloc::format!("{pid}")));
                }
            }
            Entry::Pid(pid, Item::Dir) => {
                for (name, item) in ITEMS {
                    let e = Entry::Pid(pid, item);
                    let t = if matches!(item, Item::Exe | Item::Cwd) {
                        dtype::DT_LNK
                    } else {
                        dtype::DT_REG
                    };
                    out.push((e.stat().ino, t, name.into()));
                }
            }
            _ => {}
        }
        out
    }

    /// The file's contents now; `p` is the calling (running) process.
    pub fn contents(self, p: &mut Process) -> Vec<u8> {
        let mut out = String::new();
        match self {
            Entry::Cpuinfo => out = crate::arch::cpuinfo(),
            Entry::Meminfo => meminfo(&mut out),
            Entry::Mounts | Entry::Pid(_, Item::Mounts) => mounts(&mut out),
            Entry::Pid(pid, item) => {
                let running = p.pid == pid;
                let made = crate::process::with_process(p, pid, |t| process_file(t, running, item));
                return made.unwrap_or_else(|| zombie_file(pid, item).into_bytes());
            }
            Entry::Root | Entry::SelfLink => {}
        }
        out.into_bytes()
    }
}

/// The live processes' and zombies' pids, in order.
fn pids() -> Vec<u32> {
    use crate::state::KERNEL;
    let mut all: Vec<u32> = KERNEL.parked.lock().keys().copied().collect();
    all.push(crate::process::current_pid());
    all.extend(KERNEL.zombies.lock().iter().map(|z| z.pid));
    all.sort_unstable();
    all.dedup();
    all
}

fn mounts(out: &mut String) {
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

/// A /proc/<pid> file of live process `t` (`running`: the caller).
fn process_file(t: &Process, running: bool, item: Item) -> Vec<u8> {
    let mut out = String::new();
    let threads = crate::sched::threads_of(t.pid);
    match item {
        Item::Maps => maps(t, &mut out),
        Item::Cmdline => return nul_joined(&t.argv),
        Item::Environ => return nul_joined(&t.envp),
        Item::Stat => {
            let name = comm_text(&threads.comm);
            let (resident, _) = t.mem.resident_pages();
            let _ = writeln!(
                out,
                "{} ({name}) {} {} {} {} 0 -1 4194560 0 0 0 0 0 0 0 0 20 0 {} 0 0 {} {resident} 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0",
                t.pid,
                if running { 'R' } else { 'S' },
                t.ppid,
                t.pgid,
                t.sid,
                threads.count,
                t.mem.vmas.iter().map(|v| v.end - v.start).sum::<u64>()
            );
        }
        Item::Status => status(t, running, &threads, &mut out),
        Item::Comm => {
            let _ = writeln!(out, "{}", comm_text(&threads.comm));
        }
        Item::Dir | Item::Exe | Item::Cwd | Item::Mounts => {}
    }
    out.into_bytes()
}

/// A /proc/<pid> file of a zombie: its ids and state, nothing of the
/// memory it no longer has.
fn zombie_file(pid: u32, item: Item) -> String {
    let z = crate::state::KERNEL
        .zombies
        .lock()
        .iter()
        .find(|z| z.pid == pid)
        .copied();
    let mut out = String::new();
    let Some(z) = z else { return out };
    match item {
        Item::Stat => {
            let _ = writeln!(
                out,
                "{pid} (zombie) Z {} {} 0 0 -1 4194564 0 0 0 0 0 0 0 0 20 0 1 0 0 0 0 0",
                z.ppid, z.pgid
            );
        }
        Item::Status => {
            let _ = write!(
                out,
                "Name:\tzombie\nState:\tZ (zombie)\nTgid:\t{pid}\nPid:\t{pid}\nPPid:\t{}\nThreads:\t1\n",
                z.ppid
            );
        }
        _ => {}
    }
    out
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
    let exe = p.exe.clone();
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
            Label::Mmap | Label::SmallPages => "",
            Label::Shared => "/dev/zero (deleted)",
            Label::Trampoline => "[kiln-syscall]",
            Label::Vdso => "[vdso]",
        };
        let _ = write!(
            out,
            "{:08x}-{:08x} {}{}{}{} {:08x} 00:00 0",
            v.start,
            v.end,
            perm(prot::READ, 'r'),
            perm(prot::WRITE, 'w'),
            perm(prot::EXEC, 'x'),
            if v.label == Label::Shared { 's' } else { 'p' },
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

fn status(p: &Process, running: bool, threads: &crate::sched::ThreadsOf, out: &mut String) {
    let name = comm_text(&threads.comm);
    let vm_kib = p.mem.vmas.iter().map(|v| v.end - v.start).sum::<u64>() / 1024;
    let (resident, image) = p.mem.resident_pages();
    let (ignored, caught) = p.signals.summary();
    let pending = if running {
        crate::signal::pending::pending_signals()
    } else {
        threads.pending
    };
    let state = if p.stopped.is_some() {
        "T (stopped)"
    } else if running {
        "R (running)"
    } else {
        "S (sleeping)"
    };
    let [ruid, euid, suid] = p.cred.uids;
    let [rgid, egid, sgid] = p.cred.gids;
    let groups: Vec<String> = p
        .cred
        .groups
        .iter()
        .map(|g| alloc::format!("{g}"))
        .collect();
    let cpus = crate::sched::online_mask();
    let cpu_list = match 63 - cpus.leading_zeros() {
        0 => String::from("0"),
        last => alloc::format!("0-{last}"),
    };
    let _ = write!(
        out,
        "Name:\t{name}\nUmask:\t{:04o}\nState:\t{state}\nTgid:\t{pid}\nNgid:\t0\nPid:\t{pid}\n\
         PPid:\t{}\nTracerPid:\t0\nUid:\t{ruid}\t{euid}\t{suid}\t{euid}\n\
         Gid:\t{rgid}\t{egid}\t{sgid}\t{egid}\nFDSize:\t64\n\
         Groups:\t{}\nNSpgid:\t{}\nNSsid:\t{}\nVmPeak:\t{vm_kib:>8} kB\nVmSize:\t{vm_kib:>8} kB\n\
         VmRSS:\t{:>8} kB\nRssAnon:\t{:>8} kB\nRssFile:\t{:>8} kB\n\
         Threads:\t{}\nSigQ:\t0/{}\nSigPnd:\t{pending:016x}\nShdPnd:\t{pending:016x}\n\
         SigBlk:\t{:016x}\nSigIgn:\t{ignored:016x}\nSigCgt:\t{caught:016x}\n\
         CapInh:\t0000000000000000\nCapPrm:\t000001ffffffffff\nCapEff:\t000001ffffffffff\n\
         CapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\nNoNewPrivs:\t0\nSeccomp:\t0\n\
         Cpus_allowed:\t{cpus:x}\nCpus_allowed_list:\t{cpu_list}\nMems_allowed_list:\t0\n\
         voluntary_ctxt_switches:\t0\nnonvoluntary_ctxt_switches:\t0\n",
        p.umask,
        p.ppid,
        groups.join(" "),
        p.pgid,
        p.sid,
        resident * 4,
        (resident - image) * 4,
        image * 4,
        threads.count,
        kiln_kernel::signal::QUEUE_LIMIT,
        threads.mask,
        pid = p.pid,
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
