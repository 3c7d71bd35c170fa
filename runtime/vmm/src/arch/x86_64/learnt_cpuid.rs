//! The guest's CPUID as the instruction answers it, learnt from one VM
//! and kept for the next: on the PVM host the CPUID instruction is
//! emulated (~20 µs) and does not answer from the `KVM_SET_CPUID2` table
//! (it passes the host's values through, some bits cleared), so only a
//! guest can say what it returns. The first VM of a host boot runs with
//! boot flag `CPUID_LEARN` and its kernel fills the table page
//! (`kiln_boot::CpuidTable`); kiln-vmm reads the page back after the run
//! when the kernel reports the program's entry — before any program code
//! ran, so a program cannot poison the table — and keeps it in its cache,
//! keyed by the host's boot ID, kiln's version, the KVM flavour and the
//! kernel's digest (a table only ever serves VMs of the kernel that learnt
//! it); later VMs get it with flag `CPUID_TABLE`, and their kernels and
//! programs' loaders answer CPUID from it.

use std::path::PathBuf;

use kiln_boot::layout::{CPUID_TABLE, CPUID_TABLE_MAX};
use kiln_boot::{CpuidEntry, CpuidTable};
use vm_memory::{ByteValued, Bytes, GuestAddress};

use crate::GuestMem;

/// Magic and format version of the cache file.
const MAGIC: &[u8; 8] = b"KILNCPL1";
/// Bytes of one entry.
const ENTRY: usize = 32;

/// [`CpuidTable`] as vm-memory plain data.
#[derive(Clone, Copy, Default)]
#[repr(transparent)]
struct TableBytes(CpuidTable);
// SAFETY: CpuidTable is repr(C): eight u32, no padding.
unsafe impl ByteValued for TableBytes {}

/// [`CpuidEntry`] as vm-memory plain data.
#[derive(Clone, Copy, Default)]
#[repr(transparent)]
struct EntryBytes(CpuidEntry);
// SAFETY: CpuidEntry is repr(C): eight u32, no padding.
unsafe impl ByteValued for EntryBytes {}

/// Where the table of this host is kept, and what its header must say.
pub struct LearntCpuid {
    path: PathBuf,
    host: Vec<u8>,
}

impl LearntCpuid {
    /// The cache of `hv`'s host boot for VMs of `flavour` booting the
    /// kernel whose SHA-256 is `kernel` (`None` without a cache directory
    /// or boot ID).
    pub fn for_host(
        hv: &crate::vstate::kvm::Hypervisor,
        flavour: &str,
        kernel: &str,
    ) -> Option<Self> {
        let (dir, boot_id) = hv.host_cache()?;
        let short = kernel.get(..16).unwrap_or(kernel);
        Some(Self::at(
            dir.join(format!("guest-cpuid-{short}")),
            format!(
                "{boot_id} kiln {} {flavour} kernel {kernel}",
                env!("CARGO_PKG_VERSION")
            ),
        ))
    }

    fn at(path: PathBuf, host: String) -> Self {
        Self {
            path,
            host: host.into_bytes(),
        }
    }

    /// The table learnt earlier on this host, if any.
    pub fn load(&self) -> Option<Vec<CpuidEntry>> {
        let data = std::fs::read(&self.path).ok()?;
        let rest = data.strip_prefix(MAGIC.as_slice())?;
        let (host_len, rest) = rest.split_first_chunk::<4>()?;
        let host_len = u32::from_le_bytes(*host_len) as usize;
        let (host, entries) = (rest.get(..host_len)?, rest.get(host_len..)?);
        let count = entries.len() / ENTRY;
        if host != self.host.as_slice()
            || entries.is_empty()
            || entries.len() % ENTRY != 0
            || count as u64 > CPUID_TABLE_MAX
        {
            return None;
        }
        Some(
            entries
                .chunks_exact(ENTRY)
                .map(|c| {
                    let w = |i: usize| u32::from_le_bytes(c[4 * i..4 * i + 4].try_into().unwrap());
                    CpuidEntry {
                        function: w(0),
                        index: w(1),
                        flags: w(2),
                        eax: w(3),
                        ebx: w(4),
                        ecx: w(5),
                        edx: w(6),
                        reserved: 0,
                    }
                })
                .collect(),
        )
    }

    /// Keeps `table` for the next VMs (written whole, then renamed).
    ///
    /// # Errors
    /// When the cache cannot be written (the next VM then learns again).
    pub fn store(&self, table: &[CpuidEntry]) -> std::io::Result<()> {
        let dir = self.path.parent().unwrap_or(std::path::Path::new("."));
        std::fs::create_dir_all(dir)?;
        let mut data = Vec::with_capacity(12 + self.host.len() + table.len() * ENTRY);
        data.extend_from_slice(MAGIC);
        data.extend_from_slice(&(self.host.len() as u32).to_le_bytes());
        data.extend_from_slice(&self.host);
        for e in table {
            for w in [e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx, 0] {
                data.extend_from_slice(&w.to_le_bytes());
            }
        }
        crate::vstate::kvm::write_atomically(&self.path, &data)
    }
}

/// Writes `table` into its page of guest memory.
///
/// # Errors
/// When guest memory refuses a write, or the table is longer than the page.
pub fn write_table(
    mem: &GuestMem,
    table: &[CpuidEntry],
) -> Result<(), vm_memory::GuestMemoryError> {
    if table.len() as u64 > CPUID_TABLE_MAX {
        return Err(vm_memory::GuestMemoryError::InvalidGuestAddress(
            GuestAddress(CPUID_TABLE),
        ));
    }
    let head = CpuidTable {
        count: table.len() as u32,
        source: CpuidTable::LEARNT,
        reserved: [0; 6],
    };
    mem.write_obj(TableBytes(head), GuestAddress(CPUID_TABLE))?;
    for (i, e) in table.iter().enumerate() {
        mem.write_obj(
            EntryBytes(*e),
            GuestAddress(CPUID_TABLE + 32 * (1 + i as u64)),
        )?;
    }
    Ok(())
}

/// The table a kernel learnt into its page, if it did (the guest is not
/// trusted: a table that is not whole is ignored).
pub fn read_learnt(mem: &GuestMem) -> Option<Vec<CpuidEntry>> {
    let head = mem
        .read_obj::<TableBytes>(GuestAddress(CPUID_TABLE))
        .ok()?
        .0;
    if head.source != CpuidTable::LEARNT
        || head.count == 0
        || u64::from(head.count) > CPUID_TABLE_MAX
    {
        return None;
    }
    (0..u64::from(head.count))
        .map(|i| {
            mem.read_obj::<EntryBytes>(GuestAddress(CPUID_TABLE + 32 * (1 + i)))
                .ok()
                .map(|e| CpuidEntry { reserved: 0, ..e.0 })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32) -> CpuidEntry {
        CpuidEntry {
            function,
            index,
            flags: CpuidEntry::SIGNIFICANT_INDEX,
            eax: function ^ index,
            ebx: 2,
            ecx: 3,
            edx: 4,
            reserved: 0,
        }
    }

    #[test]
    fn cache_round_trips_and_rejects_another_host() {
        let dir = std::env::temp_dir().join(format!("kiln-learnt-cpuid-{}", std::process::id()));
        let path = dir.join("guest-cpuid");
        let table = vec![entry(7, 0), entry(7, 1), entry(0x8000_0001, 0)];
        let cache = LearntCpuid::at(path.clone(), "boot-1 kiln 0.1.0 pvm".into());
        assert_eq!(cache.load(), None);
        cache.store(&table).unwrap();
        assert_eq!(cache.load(), Some(table));
        let other = LearntCpuid::at(path, "boot-2 kiln 0.1.0 pvm".into());
        assert_eq!(other.load(), None, "another boot's table is not used");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_table_goes_through_guest_memory_and_a_half_one_is_ignored() {
        let mem = crate::GuestMem::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        assert_eq!(read_learnt(&mem), None, "nothing learnt");
        let table = vec![entry(4, 0), entry(4, 1)];
        write_table(&mem, &table).unwrap();
        assert_eq!(read_learnt(&mem), Some(table));
        let lying = CpuidTable {
            count: CPUID_TABLE_MAX as u32 + 1,
            source: CpuidTable::LEARNT,
            reserved: [0; 6],
        };
        mem.write_obj(TableBytes(lying), GuestAddress(CPUID_TABLE))
            .unwrap();
        assert_eq!(read_learnt(&mem), None);
    }
}
