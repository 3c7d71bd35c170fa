//! The system-call table: every Linux x86-64 system call, by number (from
//! Linux's `arch/x86/entry/syscalls/syscall_64.tbl`, up to 462 `mseal`),
//! with — for the ones kiln provides — the type of each argument and the
//! handler. This one list drives dispatch (each register decoded into its
//! type before the handler runs), `--trace-syscalls` (each argument shown
//! the way its type says) and the names in traces and reports. A call
//! listed without arguments is one kiln does not provide: ENOSYS.
//!
//! To add a system call: give its line argument types and a handler
//! `fn(p: &mut Call, …typed arguments) -> Result<u64, Errno>` (or an
//! [`Outcome`]) in the file of its area.

use super::args::{Arg, DirFd, Flags, Mode, Show, UserAddr, UserData, Word};
use super::{cred, fd, futex, io, mm, path, poll, signal, socket, stat, task, thread, time};
use super::{Call, Outcome};
use crate::fd::Fd;
use crate::mm::uaccess::{UserCStr, UserPtr};
use crate::signal::SigAction;
use io::IoVec;
use kiln_kernel::errno::Errno;

/// Expands the table into `nr` (the numbers by name), [`name`], [`shows`]
/// and [`dispatch`].
macro_rules! syscalls {
    ($( $nr:literal $name:ident $( ( $( $arg:ident : $ty:ty ),* ) => $handler:path )? ; )*) => {
        /// System-call numbers, by their Linux names.
        #[allow(non_upper_case_globals, dead_code)]
        pub mod nr {
            $( pub const $name: u64 = $nr; )*
        }

        /// The name of system call `number` (None: Linux has none).
        pub fn name(number: u64) -> Option<&'static str> {
            match number {
                $( $nr => Some(stringify!($name)), )*
                _ => None,
            }
        }

        /// How the tracer shows the arguments of `number` (None: kiln does
        /// not provide it).
        pub fn shows(number: u64) -> Option<&'static [Show]> {
            match number {
                $( $( $nr => {
                    const SHOWS: &[Show] = &[ $( <$ty as Arg>::SHOW ),* ];
                    Some(SHOWS)
                } )? )*
                _ => None,
            }
        }

        /// Runs system call `number` with the argument registers `regs`.
        pub fn dispatch(p: &mut Call<'_>, number: u64, regs: [u64; 6]) -> Outcome {
            // Arguments are decoded in order (Rust evaluates call
            // arguments left to right).
            let mut next = regs.into_iter();
            #[allow(unused_mut, unused_variables)]
            let mut reg = move || next.next().unwrap_or(0);
            match number {
                $( $( $nr => Outcome::from($handler(p, $( <$ty as Arg>::from_reg({ let $arg = reg(); $arg }) ),* )), )? )*
                _ => Outcome::Return(Err(Errno::Nosys)),
            }
        }
    };
}

syscalls! {
    0 read(fd: Fd, buf: UserPtr<u8>, count: u64) => io::read;
    1 write(fd: Fd, buf: UserData, count: u64) => io::write;
    2 open(path: UserCStr, flags: Flags, mode: Mode) => path::open;
    3 close(fd: Fd) => fd::close;
    4 stat(path: UserCStr, buf: UserPtr<u8>) => stat::stat;
    5 fstat(fd: Fd, buf: UserPtr<u8>) => stat::fstat;
    6 lstat(path: UserCStr, buf: UserPtr<u8>) => stat::lstat;
    7 poll(fds: UserPtr<u8>, count: u64, timeout_ms: i32) => poll::poll;
    8 lseek(fd: Fd, offset: i64, whence: u32) => io::lseek;
    9 mmap(addr: UserAddr, len: u64, prot: Flags, flags: Flags, fd: Fd, offset: u64) => mm::mmap;
    10 mprotect(addr: UserAddr, len: u64, prot: Flags) => mm::mprotect;
    11 munmap(addr: UserAddr, len: u64) => mm::munmap;
    12 brk(addr: UserAddr) => mm::brk;
    13 rt_sigaction(signal: u64, act: UserPtr<SigAction>, oldact: UserPtr<[u64; 4]>, size: u64) => signal::rt_sigaction;
    14 rt_sigprocmask(how: u32, set: UserPtr<u64>, oldset: UserPtr<u64>, size: u64) => signal::rt_sigprocmask;
    // rt_sigreturn is handled on the entry path: it never returns to its caller.
    15 rt_sigreturn;
    16 ioctl(fd: Fd, request: Flags, arg: Word) => fd::ioctl;
    17 pread64(fd: Fd, buf: UserPtr<u8>, count: u64, offset: i64) => io::pread64;
    18 pwrite64(fd: Fd, buf: UserData, count: u64, offset: i64) => io::pwrite64;
    19 readv(fd: Fd, iov: UserPtr<IoVec>, count: u64) => io::readv;
    20 writev(fd: Fd, iov: UserPtr<IoVec>, count: u64) => io::writev;
    21 access(path: UserCStr, mode: u32) => stat::access;
    22 pipe(fds: UserPtr<[i32; 2]>) => fd::pipe;
    23 select(nfds: u64, readfds: UserPtr<u64>, writefds: UserPtr<u64>, exceptfds: UserPtr<u64>, timeout: UserPtr<[i64; 2]>) => poll::select;
    24 sched_yield() => thread::sched_yield;
    25 mremap(old: UserAddr, old_size: u64, new_size: u64, flags: Flags, new_addr: UserAddr) => mm::mremap;
    26 msync(addr: UserAddr, len: u64, flags: Flags) => mm::msync;
    27 mincore;
    28 madvise(addr: UserAddr, len: u64, advice: u32) => mm::madvise;
    29 shmget;
    30 shmat;
    31 shmctl;
    32 dup(fd: Fd) => fd::dup;
    33 dup2(old: Fd, new: Fd) => fd::dup2;
    34 pause() => signal::pause;
    35 nanosleep(req: UserPtr<[i64; 2]>, rem: UserPtr<[u64; 2]>) => time::nanosleep;
    36 getitimer(which: u32, curr: UserPtr<[u64; 4]>) => time::getitimer;
    37 alarm(seconds: u32) => time::alarm;
    38 setitimer(which: u32, new: UserPtr<[i64; 4]>, old: UserPtr<[u64; 4]>) => time::setitimer;
    39 getpid() => task::getpid;
    40 sendfile(out: Fd, input: Fd, offset: UserPtr<i64>, count: u64) => io::sendfile;
    41 socket(domain: i32, ty: Flags, protocol: i32) => socket::socket;
    42 connect(fd: Fd, addr: UserPtr<u8>, len: u32) => socket::connect;
    43 accept(fd: Fd, addr: UserPtr<u8>, len: UserPtr<u32>) => socket::accept;
    44 sendto(fd: Fd, buf: UserData, len: u64, flags: Flags, addr: UserPtr<u8>, addr_len: u32) => socket::sendto;
    45 recvfrom(fd: Fd, buf: UserPtr<u8>, len: u64, flags: Flags, addr: UserPtr<u8>, addr_len: UserPtr<u32>) => socket::recvfrom;
    46 sendmsg(fd: Fd, msg: UserPtr<u8>, flags: Flags) => socket::sendmsg;
    47 recvmsg(fd: Fd, msg: UserPtr<u8>, flags: Flags) => socket::recvmsg;
    48 shutdown(fd: Fd, how: i32) => socket::shutdown;
    49 bind(fd: Fd, addr: UserPtr<u8>, len: u32) => socket::bind;
    50 listen(fd: Fd, backlog: i32) => socket::listen;
    51 getsockname(fd: Fd, addr: UserPtr<u8>, len: UserPtr<u32>) => socket::getsockname;
    52 getpeername(fd: Fd, addr: UserPtr<u8>, len: UserPtr<u32>) => socket::getpeername;
    53 socketpair(domain: i32, ty: Flags, protocol: i32, sv: UserPtr<[i32; 2]>) => socket::socketpair;
    54 setsockopt(fd: Fd, level: i32, name: i32, value: UserPtr<u8>, len: u32) => socket::setsockopt;
    55 getsockopt(fd: Fd, level: i32, name: i32, value: UserPtr<u8>, len: UserPtr<u32>) => socket::getsockopt;
    56 clone(flags: Flags, stack: UserAddr, parent_tid: UserPtr<u32>, child_tid: UserPtr<u32>, tls: UserAddr) => thread::clone;
    57 fork() => task::fork;
    58 vfork() => task::vfork;
    59 execve(path: UserCStr, argv: UserPtr<u64>, envp: UserPtr<u64>) => task::execve;
    60 exit(status: i32) => thread::exit;
    61 wait4(pid: i32, status: UserPtr<i32>, options: Flags, rusage: UserPtr<u8>) => task::wait4;
    62 kill(pid: i32, signal: u64) => signal::kill;
    63 uname(buf: UserPtr<u8>) => task::uname;
    64 semget;
    65 semop;
    66 semctl;
    67 shmdt;
    68 msgget;
    69 msgsnd;
    70 msgrcv;
    71 msgctl;
    72 fcntl(fd: Fd, cmd: u32, arg: Word) => fd::fcntl;
    73 flock(fd: Fd, operation: Flags) => fd::flock;
    74 fsync(fd: Fd) => io::fsync;
    75 fdatasync(fd: Fd) => io::fsync;
    76 truncate(path: UserCStr, len: i64) => path::truncate;
    77 ftruncate(fd: Fd, len: i64) => io::ftruncate;
    78 getdents;
    79 getcwd(buf: UserPtr<u8>, size: u64) => path::getcwd;
    80 chdir(path: UserCStr) => path::chdir;
    81 fchdir(fd: Fd) => path::fchdir;
    82 rename(old: UserCStr, new: UserCStr) => path::rename;
    83 mkdir(path: UserCStr, mode: Mode) => path::mkdir;
    84 rmdir(path: UserCStr) => path::rmdir;
    85 creat(path: UserCStr, mode: Mode) => path::creat;
    86 link(old: UserCStr, new: UserCStr) => path::link;
    87 unlink(path: UserCStr) => path::unlink;
    88 symlink(target: UserCStr, path: UserCStr) => path::symlink;
    89 readlink(path: UserCStr, buf: UserPtr<u8>, size: u64) => path::readlink;
    90 chmod(path: UserCStr, mode: Mode) => path::chmod;
    91 fchmod(fd: Fd, mode: Mode) => path::fchmod;
    92 chown(path: UserCStr, uid: u32, gid: u32) => path::chown;
    93 fchown(fd: Fd, uid: u32, gid: u32) => path::fchown;
    94 lchown(path: UserCStr, uid: u32, gid: u32) => path::chown;
    95 umask(mask: Mode) => path::umask;
    96 gettimeofday(tv: UserPtr<[u64; 2]>, tz: UserPtr<u8>) => time::gettimeofday;
    97 getrlimit(resource: u32, limit: UserPtr<[u64; 2]>) => task::getrlimit;
    98 getrusage;
    99 sysinfo(info: UserPtr<u8>) => task::sysinfo;
    100 times;
    101 ptrace;
    102 getuid() => cred::getuid;
    103 syslog;
    104 getgid() => cred::getgid;
    105 setuid(uid: u32) => cred::setuid;
    106 setgid(gid: u32) => cred::setgid;
    107 geteuid() => cred::geteuid;
    108 getegid() => cred::getegid;
    109 setpgid(pid: i32, pgid: i32) => task::setpgid;
    110 getppid() => task::getppid;
    111 getpgrp() => task::getpgrp;
    112 setsid() => task::setsid;
    113 setreuid(real: u32, effective: u32) => cred::setreuid;
    114 setregid(real: u32, effective: u32) => cred::setregid;
    115 getgroups(size: i32, list: UserPtr<u32>) => cred::getgroups;
    116 setgroups(size: u64, list: UserPtr<u32>) => cred::setgroups;
    117 setresuid(real: u32, effective: u32, saved: u32) => cred::setresuid;
    118 getresuid(real: UserPtr<u32>, effective: UserPtr<u32>, saved: UserPtr<u32>) => cred::getresuid;
    119 setresgid(real: u32, effective: u32, saved: u32) => cred::setresgid;
    120 getresgid(real: UserPtr<u32>, effective: UserPtr<u32>, saved: UserPtr<u32>) => cred::getresgid;
    121 getpgid(pid: i32) => task::getpgid;
    122 setfsuid(uid: u32) => cred::setfsuid;
    123 setfsgid(gid: u32) => cred::setfsgid;
    124 getsid(pid: i32) => task::getsid;
    125 capget;
    126 capset;
    127 rt_sigpending(set: UserPtr<u8>, size: u64) => signal::rt_sigpending;
    128 rt_sigtimedwait(set: UserPtr<u64>, info: UserPtr<u8>, timeout: UserPtr<[i64; 2]>, size: u64) => signal::rt_sigtimedwait;
    129 rt_sigqueueinfo(pid: i32, signal: u64, info: UserPtr<[u8; 32]>) => signal::rt_sigqueueinfo;
    130 rt_sigsuspend(set: UserPtr<u64>, size: u64) => signal::rt_sigsuspend;
    131 sigaltstack(new: UserPtr<[u8; 24]>, old: UserPtr<u8>) => signal::sigaltstack;
    132 utime;
    133 mknod;
    134 uselib;
    135 personality;
    136 ustat;
    137 statfs(path: UserCStr, buf: UserPtr<u8>) => stat::statfs;
    138 fstatfs(fd: Fd, buf: UserPtr<u8>) => stat::fstatfs;
    139 sysfs;
    140 getpriority;
    141 setpriority;
    142 sched_setparam;
    143 sched_getparam;
    144 sched_setscheduler;
    145 sched_getscheduler;
    146 sched_get_priority_max;
    147 sched_get_priority_min;
    148 sched_rr_get_interval;
    149 mlock;
    150 munlock;
    151 mlockall;
    152 munlockall;
    153 vhangup;
    154 modify_ldt;
    155 pivot_root;
    156 _sysctl;
    157 prctl(option: u32, arg: Word) => task::prctl;
    158 arch_prctl(code: u32, addr: Word) => thread::arch_prctl;
    159 adjtimex;
    160 setrlimit(resource: u32, limit: UserPtr<[u64; 2]>) => task::setrlimit;
    161 chroot;
    162 sync() => io::sync;
    163 acct;
    164 settimeofday;
    165 mount;
    166 umount2;
    167 swapon;
    168 swapoff;
    169 reboot;
    170 sethostname;
    171 setdomainname;
    172 iopl;
    173 ioperm;
    174 create_module;
    175 init_module;
    176 delete_module;
    177 get_kernel_syms;
    178 query_module;
    179 quotactl;
    180 nfsservctl;
    181 getpmsg;
    182 putpmsg;
    183 afs_syscall;
    184 tuxcall;
    185 security;
    186 gettid() => task::gettid;
    187 readahead;
    188 setxattr(path: UserCStr, name: UserCStr, value: UserPtr<u8>, size: u64, flags: Flags) => stat::setxattr;
    189 lsetxattr(path: UserCStr, name: UserCStr, value: UserPtr<u8>, size: u64, flags: Flags) => stat::lsetxattr;
    190 fsetxattr(fd: Fd, name: UserCStr, value: UserPtr<u8>, size: u64, flags: Flags) => stat::fsetxattr;
    191 getxattr(path: UserCStr, name: UserCStr, value: UserPtr<u8>, size: u64) => stat::getxattr;
    192 lgetxattr(path: UserCStr, name: UserCStr, value: UserPtr<u8>, size: u64) => stat::lgetxattr;
    193 fgetxattr(fd: Fd, name: UserCStr, value: UserPtr<u8>, size: u64) => stat::fgetxattr;
    194 listxattr(path: UserCStr, list: UserPtr<u8>, size: u64) => stat::listxattr;
    195 llistxattr(path: UserCStr, list: UserPtr<u8>, size: u64) => stat::llistxattr;
    196 flistxattr(fd: Fd, list: UserPtr<u8>, size: u64) => stat::flistxattr;
    197 removexattr(path: UserCStr, name: UserCStr) => stat::removexattr;
    198 lremovexattr(path: UserCStr, name: UserCStr) => stat::lremovexattr;
    199 fremovexattr(fd: Fd, name: UserCStr) => stat::fremovexattr;
    200 tkill(tid: i32, signal: u64) => signal::tkill;
    201 time(tloc: UserPtr<u64>) => time::time;
    202 futex(word: UserPtr<u32>, op: Flags, val: u32, timeout: UserPtr<[i64; 2]>, word2: UserPtr<u32>, val3: u32) => futex::futex;
    203 sched_setaffinity(pid: i32, size: u64, mask: UserPtr<u64>) => task::sched_setaffinity;
    204 sched_getaffinity(pid: i32, size: u64, mask: UserPtr<u64>) => task::sched_getaffinity;
    205 set_thread_area;
    206 io_setup;
    207 io_destroy;
    208 io_getevents;
    209 io_submit;
    210 io_cancel;
    211 get_thread_area;
    212 lookup_dcookie;
    213 epoll_create(size: i32) => poll::epoll_create;
    214 epoll_ctl_old;
    215 epoll_wait_old;
    216 remap_file_pages;
    217 getdents64(fd: Fd, buf: UserPtr<u8>, count: u64) => io::getdents64;
    218 set_tid_address(tidptr: UserPtr<u32>) => thread::set_tid_address;
    219 restart_syscall() => signal::restart_syscall;
    220 semtimedop;
    221 fadvise64(fd: Fd, offset: i64, len: i64, advice: u32) => io::fadvise64;
    222 timer_create(clock: u32, sevp: UserPtr<[u8; 20]>, id: UserPtr<i32>) => time::timer_create;
    223 timer_settime(id: i32, flags: Flags, new: UserPtr<[i64; 4]>, old: UserPtr<[u64; 4]>) => time::timer_settime;
    224 timer_gettime(id: i32, curr: UserPtr<[u64; 4]>) => time::timer_gettime;
    225 timer_getoverrun(id: i32) => time::timer_getoverrun;
    226 timer_delete(id: i32) => time::timer_delete;
    227 clock_settime;
    228 clock_gettime(clock: u32, tp: UserPtr<[u64; 2]>) => time::clock_gettime;
    229 clock_getres(clock: u32, res: UserPtr<[u64; 2]>) => time::clock_getres;
    230 clock_nanosleep(clock: u32, flags: Flags, req: UserPtr<[i64; 2]>, rem: UserPtr<[u64; 2]>) => time::clock_nanosleep;
    231 exit_group(status: i32) => thread::exit_group;
    232 epoll_wait(epfd: Fd, events: UserPtr<u8>, max: i32, timeout_ms: i32) => poll::epoll_wait;
    233 epoll_ctl(epfd: Fd, op: u32, fd: Fd, event: UserPtr<[u8; 12]>) => poll::epoll_ctl;
    234 tgkill(tgid: i32, tid: i32, signal: u64) => signal::tgkill;
    235 utimes;
    236 vserver;
    237 mbind;
    238 set_mempolicy;
    239 get_mempolicy;
    240 mq_open;
    241 mq_unlink;
    242 mq_timedsend;
    243 mq_timedreceive;
    244 mq_notify;
    245 mq_getsetattr;
    246 kexec_load;
    247 waitid(which: u32, id: i32, info: UserPtr<u8>, options: Flags) => task::waitid;
    248 add_key;
    249 request_key;
    250 keyctl;
    251 ioprio_set;
    252 ioprio_get;
    253 inotify_init;
    254 inotify_add_watch;
    255 inotify_rm_watch;
    256 migrate_pages;
    257 openat(dirfd: DirFd, path: UserCStr, flags: Flags, mode: Mode) => path::openat;
    258 mkdirat(dirfd: DirFd, path: UserCStr, mode: Mode) => path::mkdirat;
    259 mknodat;
    260 fchownat(dirfd: DirFd, path: UserCStr, uid: u32, gid: u32, flags: Flags) => path::fchownat;
    261 futimesat;
    262 newfstatat(dirfd: DirFd, path: UserCStr, buf: UserPtr<u8>, flags: Flags) => stat::newfstatat;
    263 unlinkat(dirfd: DirFd, path: UserCStr, flags: Flags) => path::unlinkat;
    264 renameat(olddirfd: DirFd, old: UserCStr, newdirfd: DirFd, new: UserCStr) => path::renameat;
    265 linkat(olddirfd: DirFd, old: UserCStr, newdirfd: DirFd, new: UserCStr, flags: Flags) => path::linkat;
    266 symlinkat(target: UserCStr, dirfd: DirFd, path: UserCStr) => path::symlinkat;
    267 readlinkat(dirfd: DirFd, path: UserCStr, buf: UserPtr<u8>, size: u64) => path::readlinkat;
    268 fchmodat(dirfd: DirFd, path: UserCStr, mode: Mode) => path::fchmodat;
    269 faccessat(dirfd: DirFd, path: UserCStr, mode: u32) => stat::faccessat;
    270 pselect6(nfds: u64, readfds: UserPtr<u64>, writefds: UserPtr<u64>, exceptfds: UserPtr<u64>, timeout: UserPtr<[i64; 2]>, sigmask: UserPtr<[u64; 2]>) => poll::pselect6;
    271 ppoll(fds: UserPtr<u8>, count: u64, timeout: UserPtr<[i64; 2]>, sigmask: UserPtr<u64>, size: u64) => poll::ppoll;
    272 unshare;
    273 set_robust_list(head: UserPtr<u8>, len: u64) => thread::set_robust_list;
    274 get_robust_list;
    275 splice;
    276 tee;
    277 sync_file_range(fd: Fd, offset: i64, len: i64, flags: Flags) => io::sync_file_range;
    278 vmsplice;
    279 move_pages;
    280 utimensat(dirfd: DirFd, path: UserCStr, times: UserPtr<[i64; 4]>, flags: Flags) => path::utimensat;
    281 epoll_pwait(epfd: Fd, events: UserPtr<u8>, max: i32, timeout_ms: i32, sigmask: UserPtr<u64>, size: u64) => poll::epoll_pwait;
    282 signalfd;
    283 timerfd_create;
    284 eventfd(initial: u32) => fd::eventfd;
    285 fallocate(fd: Fd, mode: Flags, offset: i64, len: i64) => io::fallocate;
    286 timerfd_settime;
    287 timerfd_gettime;
    288 accept4(fd: Fd, addr: UserPtr<u8>, len: UserPtr<u32>, flags: Flags) => socket::accept4;
    289 signalfd4;
    290 eventfd2(initial: u32, flags: Flags) => fd::eventfd2;
    291 epoll_create1(flags: Flags) => poll::epoll_create1;
    292 dup3(old: Fd, new: Fd, flags: Flags) => fd::dup3;
    293 pipe2(fds: UserPtr<[i32; 2]>, flags: Flags) => fd::pipe2;
    294 inotify_init1;
    295 preadv;
    296 pwritev;
    297 rt_tgsigqueueinfo(tgid: i32, tid: i32, signal: u64, info: UserPtr<[u8; 32]>) => signal::rt_tgsigqueueinfo;
    298 perf_event_open;
    299 recvmmsg(fd: Fd, vec: UserPtr<u8>, count: u32, flags: Flags, timeout: UserPtr<u8>) => socket::recvmmsg;
    300 fanotify_init;
    301 fanotify_mark;
    302 prlimit64(pid: i32, resource: u32, new: UserPtr<[u64; 2]>, old: UserPtr<[u64; 2]>) => task::prlimit64;
    303 name_to_handle_at;
    304 open_by_handle_at;
    305 clock_adjtime;
    306 syncfs(fd: Fd) => io::fsync;
    307 sendmmsg(fd: Fd, vec: UserPtr<u8>, count: u32, flags: Flags) => socket::sendmmsg;
    308 setns;
    309 getcpu(cpu: UserPtr<u32>, node: UserPtr<u32>, _cache: Word) => task::getcpu;
    310 process_vm_readv;
    311 process_vm_writev;
    312 kcmp;
    313 finit_module;
    314 sched_setattr;
    315 sched_getattr;
    316 renameat2(olddirfd: DirFd, old: UserCStr, newdirfd: DirFd, new: UserCStr, flags: Flags) => path::renameat2;
    317 seccomp;
    318 getrandom(buf: UserPtr<u8>, count: u64, flags: Flags) => task::getrandom;
    319 memfd_create;
    320 kexec_file_load;
    321 bpf;
    322 execveat(dirfd: DirFd, path: UserCStr, argv: UserPtr<u64>, envp: UserPtr<u64>, flags: Flags) => task::execveat;
    323 userfaultfd;
    324 membarrier;
    325 mlock2;
    326 copy_file_range;
    327 preadv2;
    328 pwritev2;
    329 pkey_mprotect;
    330 pkey_alloc;
    331 pkey_free;
    332 statx(dirfd: DirFd, path: UserCStr, flags: Flags, mask: u32, buf: UserPtr<u8>) => stat::statx;
    333 io_pgetevents;
    334 rseq;
    424 pidfd_send_signal;
    425 io_uring_setup;
    426 io_uring_enter;
    427 io_uring_register;
    428 open_tree;
    429 move_mount;
    430 fsopen;
    431 fsconfig;
    432 fsmount;
    433 fspick;
    434 pidfd_open;
    435 clone3(args: UserPtr<[u64; 8]>, size: u64) => thread::clone3;
    436 close_range;
    437 openat2;
    438 pidfd_getfd;
    439 faccessat2(dirfd: DirFd, path: UserCStr, mode: u32, flags: Flags) => stat::faccessat2;
    440 process_madvise;
    441 epoll_pwait2(epfd: Fd, events: UserPtr<u8>, max: i32, timeout: UserPtr<[i64; 2]>, sigmask: UserPtr<u64>, size: u64) => poll::epoll_pwait2;
    442 mount_setattr;
    443 quotactl_fd;
    444 landlock_create_ruleset;
    445 landlock_add_rule;
    446 landlock_restrict_self;
    447 memfd_secret;
    448 process_mrelease;
    449 futex_waitv;
    450 set_mempolicy_home_node;
    451 cachestat;
    452 fchmodat2;
    453 map_shadow_stack;
    454 futex_wake;
    455 futex_wait;
    456 futex_requeue;
    457 statmount;
    458 listmount;
    459 lsm_get_self_attr;
    460 lsm_set_self_attr;
    461 lsm_list_modules;
    462 mseal;
}
