//! The kernel command line.
//!
//! Words are separated by blanks; double quotes group blanks into a word.
//! Words before `--` are kernel options (`kiln.*`) or, when they contain
//! `=`, environment variables for the program (as Linux passes unknown
//! `NAME=value` words to init). Words after `--` are the program's
//! arguments. Under kiln-vmm the argument and environment vectors come
//! exactly from boot-info and the command line carries options only; under
//! QEMU (`-append`) the command line is the only channel.

use alloc::string::String;
use alloc::vec::Vec;

/// What the command line asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelArgs {
    /// `kiln.trace_syscalls`: print every system call.
    pub trace_syscalls: bool,
    /// `kiln.path=/p`: the program's path in the guest.
    pub path: Option<String>,
    /// `kiln.syscall_rewrite=0`: keep every SYSCALL instruction trapping
    /// (the default rewrites them into calls where that is safe).
    pub no_syscall_rewrite: bool,
    /// `kiln.vdso=0`: give the program no vDSO (time calls then are
    /// system calls).
    pub no_vdso: bool,
    /// The network configuration (`kiln.ip=`, `kiln.gw=`, …).
    pub net: crate::net::config::NetConfig,
    /// Network options with bad values (reported, then ignored).
    pub bad: Vec<String>,
    /// `NAME=value` words before `--`.
    pub env: Vec<String>,
    /// Words after `--` (`argv[1..]`).
    pub args: Vec<String>,
    /// `kiln.*` words the kernel does not know (reported, then ignored).
    pub unknown: Vec<String>,
}

/// Splits a command line into words (double quotes group, no escapes).
pub fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_ascii_whitespace() && !quoted => {
                if in_word {
                    out.push(core::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(word);
    }
    out
}

/// Parses a command line.
pub fn parse(line: &str) -> KernelArgs {
    let mut args = KernelArgs::default();
    let mut rest = false;
    for w in words(line) {
        if rest {
            args.args.push(w);
        } else if w == "--" {
            rest = true;
        } else if w == "kiln.trace_syscalls" || w == "kiln.trace_syscalls=1" {
            args.trace_syscalls = true;
        } else if w == "kiln.syscall_rewrite=0" {
            args.no_syscall_rewrite = true;
        } else if w == "kiln.syscall_rewrite=1" {
            args.no_syscall_rewrite = false;
        } else if w == "kiln.vdso=0" {
            args.no_vdso = true;
        } else if w == "kiln.vdso=1" {
            args.no_vdso = false;
        } else if let Some(p) = w.strip_prefix("kiln.path=") {
            args.path = Some(p.into());
        } else if w.starts_with("kiln.") {
            match args.net.take(&w) {
                Ok(true) => {}
                Ok(false) => args.unknown.push(w),
                Err(bad) => args.bad.push(bad.0),
            }
        } else if w.contains('=') {
            args.env.push(w);
        } else {
            args.unknown.push(w);
        }
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_options_env_and_args() {
        let a = parse(r#"kiln.trace_syscalls GREETING="hi there" kiln.path=/hello -- a "b c""#);
        assert!(a.trace_syscalls);
        assert_eq!(a.path.as_deref(), Some("/hello"));
        assert_eq!(a.env, ["GREETING=hi there"]);
        assert_eq!(a.args, ["a", "b c"]);
        assert!(a.unknown.is_empty());
    }

    #[test]
    fn keeps_empty_quoted_words_and_unknown_options() {
        let a = parse(r#"kiln.bogus console=ttyS0 -- "" x"#);
        assert_eq!(a.unknown, ["kiln.bogus"]);
        assert_eq!(a.env, ["console=ttyS0"]);
        assert_eq!(a.args, ["", "x"]);
    }

    #[test]
    fn network_options_are_taken_apart() {
        let a = parse("kiln.ip=10.0.2.15/24 kiln.gw=10.0.2.2 kiln.ip=nonsense");
        assert_eq!(a.net.addresses.len(), 1);
        assert_eq!(a.net.gateways.len(), 1);
        assert_eq!(a.bad, ["kiln.ip=nonsense"]);
        assert!(a.unknown.is_empty());
    }
}
