//! KVM's binary statistics (KVM_GET_STATS_FD, Documentation/virt/kvm/api.rst
//! §4.133): exit and emulation counters, for `--stats` and for checking
//! that the guest kernel runs natively on PVM (a handful of emulated
//! instructions per boot, not thousands).

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::fs::FileExt;

use vmm_sys_util::ioctl::ioctl;

mod ioctls {
    #![allow(missing_docs)]
    vmm_sys_util::ioctl_io_nr!(KVM_GET_STATS_FD, kvm_bindings::KVMIO, 0xce);
}
use ioctls::KVM_GET_STATS_FD;

const STATS_TYPE_MASK: u32 = 0xf;
const STATS_TYPE_CUMULATIVE: u32 = 0;
const STATS_TYPE_INSTANT: u32 = 1;
const STATS_TYPE_PEAK: u32 = 2;

/// Named counters read from a VM or vCPU stats file.
pub type Counters = BTreeMap<String, u64>;

/// Opens the binary statistics file of a VM or vCPU fd (a descriptor of
/// its own, readable from any thread for as long as it is open).
///
/// # Errors
/// When the kernel has no binary statistics.
pub fn open(fd: &impl AsRawFd) -> std::io::Result<File> {
    // SAFETY: KVM_GET_STATS_FD takes no argument and returns a new fd or -1;
    // `fd` is a VM or vCPU fd that outlives the call.
    let raw = unsafe { ioctl(fd, KVM_GET_STATS_FD()) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh fd owned by nobody else.
    Ok(unsafe { File::from_raw_fd(raw) })
}

/// Reads the scalar statistics of a VM or vCPU fd.
///
/// # Errors
/// When the kernel has no binary statistics or the file is malformed.
pub fn read(fd: &impl AsRawFd) -> std::io::Result<Counters> {
    read_file(&open(fd)?)
}

/// Reads the cumulative counters of a VM or vCPU fd (exits, pf_fixed, …,
/// not gauges such as pages_4k): what a later reading is compared with
/// ([`subtract`]).
///
/// # Errors
/// As for [`read`].
pub fn read_cumulative(fd: &impl AsRawFd) -> std::io::Result<Counters> {
    counters(&open(fd)?, |kind| kind == STATS_TYPE_CUMULATIVE)
}

/// Turns `now` into what happened since `before` (a [`read_cumulative`]
/// reading): each counter `before` has is reduced by its value then;
/// the others (gauges) stay as they are.
pub fn subtract(now: &mut Counters, before: &Counters) {
    for (name, then) in before {
        if let Some(value) = now.get_mut(name) {
            *value = value.saturating_sub(*then);
        }
    }
}

/// Reads every scalar counter of an open statistics file.
///
/// # Errors
/// When the file is malformed.
pub fn read_file(file: &File) -> std::io::Result<Counters> {
    counters(file, |_| true)
}

/// The scalar counters of an open statistics file whose type `keep`
/// accepts, with their values now.
fn counters(file: &File, keep: impl Fn(u32) -> bool) -> std::io::Result<Counters> {
    let mut out = Counters::new();
    for (name, at, kind) in scalars(file)? {
        if keep(kind) {
            out.insert(name, value_at(file, at)?);
        }
    }
    Ok(out)
}

/// Where counter `name`'s value sits in an open statistics file (read it
/// with [`value_at`]), if the kernel has it.
///
/// # Errors
/// When the file is malformed.
pub fn offset_of(file: &File, name: &str) -> std::io::Result<Option<u64>> {
    Ok(scalars(file)?
        .into_iter()
        .find(|(n, _, _)| n == name)
        .map(|(_, at, _)| at))
}

/// The counter at `at` of an open statistics file, now.
///
/// # Errors
/// When it cannot be read.
pub fn value_at(file: &File, at: u64) -> std::io::Result<u64> {
    let mut value = [0u8; 8];
    file.read_exact_at(&mut value, at)?;
    Ok(u64::from_le_bytes(value))
}

/// The scalar counters a statistics file describes: each name, the file
/// offset of its value and its type (cumulative, instant, peak).
fn scalars(file: &File) -> std::io::Result<Vec<(String, u64, u32)>> {
    let mut header = [0u8; 24];
    file.read_exact_at(&mut header, 0)?;
    let word =
        |b: &[u8], i: usize| u32::from_le_bytes(b[i * 4..i * 4 + 4].try_into().unwrap_or_default());
    let (name_size, num_desc, desc_offset, data_offset) = (
        word(&header, 1) as usize,
        word(&header, 2) as usize,
        word(&header, 4) as u64,
        word(&header, 5) as u64,
    );
    let desc_size = 16 + name_size;
    if num_desc > 4096 || name_size > 256 {
        return Err(std::io::Error::other("implausible KVM stats header"));
    }
    let mut descs = vec![0u8; desc_size * num_desc];
    file.read_exact_at(&mut descs, desc_offset)?;
    let mut out = Vec::new();
    for d in descs.chunks_exact(desc_size) {
        let flags = word(d, 0);
        let size = u16::from_le_bytes([d[6], d[7]]);
        let offset = word(d, 2) as u64;
        let kind = flags & STATS_TYPE_MASK;
        if size != 1
            || !matches!(
                kind,
                STATS_TYPE_CUMULATIVE | STATS_TYPE_INSTANT | STATS_TYPE_PEAK
            )
        {
            continue;
        }
        let name_bytes = &d[16..];
        let name = String::from_utf8_lossy(
            &name_bytes[..name_bytes.iter().position(|&b| b == 0).unwrap_or(name_size)],
        );
        out.push((name.into_owned(), data_offset + offset, kind));
    }
    Ok(out)
}
