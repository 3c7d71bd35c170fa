//! The process-wide KVM handle and what is worth fetching from it once.
//!
//! KVM_GET_SUPPORTED_CPUID costs ~0.3 ms on the PVM host (a quarter of a
//! VM's creation). Every VM of a process reuses one copy, and the table is
//! also cached on disk for the next kiln-vmm process: it depends only on the
//! host's kernel and CPU, so the cache is keyed by the boot ID (new on every
//! host boot) and the KVM API version, lives in the user's own cache
//! directory, and any doubt about it (missing, short, other key) means
//! asking KVM again.

use std::io::Write;
use std::path::PathBuf;

use kvm_bindings::{kvm_cpuid_entry2, CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Cap, Kvm};

/// `/dev/kvm`, opened once, with the host-supported CPUID table.
pub struct Hypervisor {
    kvm: Kvm,
    supported_cpuid: CpuId,
    /// kiln's cache directory and this host boot's ID (see [`host_cache`]),
    /// read once.
    host_cache: Option<(PathBuf, String)>,
}

/// Magic and format version of the CPUID cache file.
const CACHE_MAGIC: &[u8; 8] = b"KILNCPU1";
const ENTRY_SIZE: usize = std::mem::size_of::<kvm_cpuid_entry2>();

/// Why KVM cannot be used, or which ioctl failed.
#[derive(Debug, thiserror::Error)]
pub enum KvmError {
    /// /dev/kvm cannot be opened.
    #[error("KVM is not available: {0} (kiln needs /dev/kvm, readable and writable by this user)")]
    Unavailable(#[source] kvm_ioctls::Error),
    /// /dev/kvm lacks a capability kiln needs.
    #[error("KVM is not available: /dev/kvm lacks {0}")]
    MissingCapability(&'static str),
    /// The interrupt routing table could not be built.
    #[error("cannot build an interrupt routing table of {0} entries")]
    Routing(usize),
    /// An MSR list could not be built.
    #[error("cannot build a list of {0} MSRs")]
    MsrList(usize),
    /// KVM did not take a value it was given back (a saved MSR).
    #[error("KVM refused to restore {what}")]
    Refused {
        /// What it refused.
        what: String,
    },
    /// An ioctl failed.
    #[error("{ioctl} failed: {source}")]
    Ioctl {
        /// The ioctl's name (`KVM_CREATE_VM`, …).
        ioctl: &'static str,
        /// What KVM said.
        #[source]
        source: kvm_ioctls::Error,
    },
}

impl KvmError {
    /// A `map_err` adapter naming the failed `ioctl`.
    pub fn ioctl(ioctl: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Self {
        move |source| KvmError::Ioctl { ioctl, source }
    }
}

impl Hypervisor {
    /// Opens `/dev/kvm` (or the device `$KILN_KVM_DEVICE` names — a
    /// container may have it elsewhere) and checks the capabilities kiln
    /// needs.
    ///
    /// # Errors
    /// When the device is missing or inaccessible, or lacks a capability.
    pub fn open() -> Result<Self, KvmError> {
        let kvm = match std::env::var_os("KILN_KVM_DEVICE") {
            Some(path) => {
                use std::os::unix::ffi::OsStrExt;
                let c = std::ffi::CString::new(path.as_bytes()).map_err(|_| {
                    KvmError::Unavailable(vmm_sys_util::errno::Error::new(libc::EINVAL))
                })?;
                Kvm::new_with_path(&c).map_err(KvmError::Unavailable)?
            }
            None => Kvm::new().map_err(KvmError::Unavailable)?,
        };
        for (cap, name) in [
            (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
            (Cap::ExtCpuid, "KVM_CAP_EXT_CPUID"),
            (Cap::ReadonlyMem, "KVM_CAP_READONLY_MEM"),
        ] {
            if !kvm.check_extension(cap) {
                return Err(KvmError::MissingCapability(name));
            }
        }
        let host_cache = host_cache();
        let key = host_cache.as_ref().map(|h| cache_key(&kvm, h));
        let supported_cpuid = match key.as_ref().and_then(read_cache) {
            Some(cpuid) => cpuid,
            None => {
                let cpuid = kvm
                    .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
                    .map_err(KvmError::ioctl("KVM_GET_SUPPORTED_CPUID"))?;
                if let Some(k) = &key {
                    // A cache that cannot be written only costs the next run time.
                    let _ = write_cache(k, &cpuid);
                }
                cpuid
            }
        };
        Ok(Self {
            kvm,
            supported_cpuid,
            host_cache,
        })
    }

    /// The kvm-ioctls handle.
    pub fn kvm(&self) -> &Kvm {
        &self.kvm
    }

    /// The host-supported CPUID table.
    pub fn supported_cpuid(&self) -> &CpuId {
        &self.supported_cpuid
    }

    /// kiln's cache directory and this host boot's ID, when both exist.
    pub fn host_cache(&self) -> Option<&(PathBuf, String)> {
        self.host_cache.as_ref()
    }
}

/// Where the cache lives and what it must say about the host.
struct CacheKey {
    path: PathBuf,
    /// Boot ID and KVM API version, as the file's header records them.
    host: Vec<u8>,
}

/// kiln's directory in the user's cache (`$XDG_CACHE_HOME/kiln`, else
/// `~/.cache/kiln`), and this host boot's ID: what a cache of facts about
/// the host is kept in and keyed by.
fn host_cache() -> Option<(PathBuf, String)> {
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let dir = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?
        .join("kiln");
    Some((dir, boot_id.trim().to_owned()))
}

fn cache_key(kvm: &Kvm, (dir, boot_id): &(PathBuf, String)) -> CacheKey {
    let host = format!("{boot_id} api {}", kvm.get_api_version()).into_bytes();
    CacheKey {
        path: dir.join("kvm-supported-cpuid"),
        host,
    }
}

fn read_cache(key: &CacheKey) -> Option<CpuId> {
    let data = std::fs::read(&key.path).ok()?;
    let rest = data.strip_prefix(CACHE_MAGIC.as_slice())?;
    let (host_len, rest) = rest.split_first_chunk::<4>()?;
    let host_len = u32::from_le_bytes(*host_len) as usize;
    let (host, entries) = (rest.get(..host_len)?, rest.get(host_len..)?);
    if host != key.host.as_slice() || entries.is_empty() || entries.len() % ENTRY_SIZE != 0 {
        return None;
    }
    let count = entries.len() / ENTRY_SIZE;
    if count > KVM_MAX_CPUID_ENTRIES {
        return None;
    }
    let list: Vec<kvm_cpuid_entry2> = entries
        .chunks_exact(ENTRY_SIZE)
        .map(|chunk| {
            // SAFETY: kvm_cpuid_entry2 is plain integers (no padding
            // invariants); `chunk` holds exactly one entry's bytes, read
            // unaligned.
            unsafe { std::ptr::read_unaligned(chunk.as_ptr().cast::<kvm_cpuid_entry2>()) }
        })
        .collect();
    CpuId::from_entries(&list).ok()
}

fn write_cache(key: &CacheKey, cpuid: &CpuId) -> std::io::Result<()> {
    let dir = key.path.parent().unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir)?;
    let mut data = Vec::with_capacity(16 + key.host.len() + cpuid.as_slice().len() * ENTRY_SIZE);
    data.extend_from_slice(CACHE_MAGIC);
    data.extend_from_slice(&(key.host.len() as u32).to_le_bytes());
    data.extend_from_slice(&key.host);
    for e in cpuid.as_slice() {
        // SAFETY: viewing a plain-integer struct as its bytes.
        let bytes = unsafe {
            std::slice::from_raw_parts((e as *const kvm_cpuid_entry2).cast::<u8>(), ENTRY_SIZE)
        };
        data.extend_from_slice(bytes);
    }
    write_atomically(&key.path, &data)
}

/// Writes `data` to `path` whole or not at all: into a temporary file
/// beside it, then renamed over it (so concurrent kiln processes never
/// read half a cache).
///
/// # Errors
/// When the temporary file cannot be written or renamed.
pub(crate) fn write_atomically(path: &std::path::Path, data: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    drop(f);
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(dir: &std::path::Path) -> CacheKey {
        CacheKey {
            path: dir.join("kvm-supported-cpuid"),
            host: b"boot-1 api 12".to_vec(),
        }
    }

    #[test]
    fn cache_round_trips_and_rejects_another_host() {
        let dir = std::env::temp_dir().join(format!("kiln-cpuid-test-{}", std::process::id()));
        let entries = [
            kvm_cpuid_entry2 {
                function: 1,
                eax: 0x1234,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 7,
                ebx: 1,
                ..Default::default()
            },
        ];
        let cpuid = CpuId::from_entries(&entries).unwrap();
        write_cache(&key(&dir), &cpuid).unwrap();
        let back = read_cache(&key(&dir)).expect("cache reads back");
        assert_eq!(back.as_slice(), cpuid.as_slice());
        let other = CacheKey {
            host: b"boot-2 api 12".to_vec(),
            ..key(&dir)
        };
        assert!(read_cache(&other).is_none());
        // A truncated file is ignored, not trusted.
        let data = std::fs::read(&key(&dir).path).unwrap();
        std::fs::write(&key(&dir).path, &data[..data.len() - 3]).unwrap();
        assert!(read_cache(&key(&dir)).is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
