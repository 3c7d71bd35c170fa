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

/// Reads the scalar statistics of a VM or vCPU fd.
///
/// # Errors
/// When the kernel has no binary statistics or the file is malformed.
pub fn read(fd: &impl AsRawFd) -> std::io::Result<Counters> {
    // SAFETY: KVM_GET_STATS_FD takes no argument and returns a new fd or -1;
    // `fd` is a VM or vCPU fd that outlives the call.
    let raw = unsafe { ioctl(fd, KVM_GET_STATS_FD()) };
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh fd owned by nobody else.
    let file = unsafe { File::from_raw_fd(raw) };
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
    let mut out = Counters::new();
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
        let mut value = [0u8; 8];
        file.read_exact_at(&mut value, data_offset + offset)?;
        out.insert(name.into_owned(), u64::from_le_bytes(value));
    }
    Ok(out)
}
