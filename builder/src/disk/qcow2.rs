//! The raw disk as a qcow2 (version 2) file, as QEMU documents the format
//! (`docs/interop/qcow2.txt`): a header, one L1 table, L2 tables for the
//! parts of the disk that hold data, a refcount table and blocks counting
//! every cluster of the file once, then the data clusters. Clusters that
//! are all zero are left out (they read as zero).

use std::io::{self, Write};

use super::raw::RawDisk;

const CLUSTER_BITS: u32 = 16;
const CLUSTER: u64 = 1 << CLUSTER_BITS;
/// Entries per L2 table (8-byte entries in one cluster).
const L2_ENTRIES: u64 = CLUSTER / 8;
/// Refcounts per refcount block (16-bit refcounts, version 2's only width).
const REFCOUNTS_PER_BLOCK: u64 = CLUSTER / 2;
/// "This cluster's refcount is exactly one": set in L1 and L2 entries.
const COPIED: u64 = 1 << 63;

/// Writes `raw` as qcow2 to `out`.
///
/// # Errors
/// When reading `raw` or writing `out` fails.
pub fn write(raw: &RawDisk, out: &mut impl Write) -> io::Result<()> {
    let size = raw.size();
    let guest_clusters = size.div_ceil(CLUSTER);
    let data = raw.nonzero_chunks(CLUSTER)?;
    let mut l2_tables: Vec<u64> = data.iter().map(|c| c / L2_ENTRIES).collect();
    l2_tables.dedup();
    let l1_size = guest_clusters.div_ceil(L2_ENTRIES);
    let l1_clusters = (l1_size * 8).div_ceil(CLUSTER);
    // The refcount metadata counts itself: grow it until it covers the file.
    let (mut rt_clusters, mut rb_count) = (1u64, 1u64);
    let total = loop {
        let total =
            1 + l1_clusters + rt_clusters + rb_count + l2_tables.len() as u64 + data.len() as u64;
        let need_rb = total.div_ceil(REFCOUNTS_PER_BLOCK);
        let need_rt = (need_rb * 8).div_ceil(CLUSTER);
        if need_rb <= rb_count && need_rt <= rt_clusters {
            break total;
        }
        rb_count = need_rb.max(rb_count);
        rt_clusters = need_rt.max(rt_clusters);
    };
    let l1_at = 1;
    let rt_at = l1_at + l1_clusters;
    let rb_at = rt_at + rt_clusters;
    let l2_at = rb_at + rb_count;
    let data_at = l2_at + l2_tables.len() as u64;
    debug_assert_eq!(data_at + data.len() as u64, total);

    let mut header = vec![0u8; CLUSTER as usize];
    header[0..4].copy_from_slice(b"QFI\xfb");
    header[4..8].copy_from_slice(&2u32.to_be_bytes());
    header[20..24].copy_from_slice(&CLUSTER_BITS.to_be_bytes());
    header[24..32].copy_from_slice(&size.to_be_bytes());
    header[36..40].copy_from_slice(&(l1_size as u32).to_be_bytes());
    header[40..48].copy_from_slice(&(l1_at * CLUSTER).to_be_bytes());
    header[48..56].copy_from_slice(&(rt_at * CLUSTER).to_be_bytes());
    header[56..60].copy_from_slice(&(rt_clusters as u32).to_be_bytes());
    out.write_all(&header)?;

    let mut l1 = vec![0u8; (l1_clusters * CLUSTER) as usize];
    for (i, table) in l2_tables.iter().enumerate() {
        let entry = ((l2_at + i as u64) * CLUSTER) | COPIED;
        let at = (*table * 8) as usize;
        l1[at..at + 8].copy_from_slice(&entry.to_be_bytes());
    }
    out.write_all(&l1)?;

    let mut rt = vec![0u8; (rt_clusters * CLUSTER) as usize];
    for i in 0..rb_count {
        let at = (i * 8) as usize;
        rt[at..at + 8].copy_from_slice(&((rb_at + i) * CLUSTER).to_be_bytes());
    }
    out.write_all(&rt)?;
    let mut rb = vec![0u8; (rb_count * CLUSTER) as usize];
    for cluster in 0..total {
        let at = (cluster * 2) as usize;
        rb[at..at + 2].copy_from_slice(&1u16.to_be_bytes());
    }
    out.write_all(&rb)?;

    let mut next_data = data_at;
    for table in &l2_tables {
        let mut l2 = vec![0u8; CLUSTER as usize];
        for &c in data.iter().filter(|c| *c / L2_ENTRIES == *table) {
            let at = ((c % L2_ENTRIES) * 8) as usize;
            l2[at..at + 8].copy_from_slice(&((next_data * CLUSTER) | COPIED).to_be_bytes());
            next_data += 1;
        }
        out.write_all(&l2)?;
    }
    for &c in &data {
        out.write_all(&raw.chunk(c, CLUSTER)?)?;
    }
    Ok(())
}
