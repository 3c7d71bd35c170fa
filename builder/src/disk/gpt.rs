//! A GUID partition table (UEFI 2.10 §5.3) with one partition: the
//! protective MBR, the primary header and entry array at the start of the
//! disk and their backup copies at its end. Written here rather than with
//! a crate so every byte, GUIDs included, is derived from the image and
//! the disk is reproducible.

use std::io;
use std::os::unix::fs::FileExt;

/// Bytes per logical block.
pub const SECTOR: u64 = 512;
/// Entries in each partition entry array (the minimum the spec allows
/// for 16 KiB of entries).
const ENTRIES: u64 = 128;
const ENTRY_SIZE: u64 = 128;
/// Blocks the entry array takes.
const ENTRY_BLOCKS: u64 = ENTRIES * ENTRY_SIZE / SECTOR;

/// The EFI system partition type, C12A7328-F81F-11D2-BA4B-00A0C93EC93B,
/// in its on-disk (mixed-endian) byte order.
pub const EFI_SYSTEM_PARTITION: [u8; 16] = [
    0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9, 0x3b,
];

/// The one partition of the table.
pub struct Partition {
    /// Its type GUID (on-disk byte order).
    pub type_guid: [u8; 16],
    /// Its unique GUID (on-disk byte order).
    pub guid: [u8; 16],
    /// First block.
    pub first_lba: u64,
    /// Last block (inclusive).
    pub last_lba: u64,
    /// Its name (UTF-16 in the table, at most 36 units).
    pub name: &'static str,
}

/// The first block a partition may use: blocks 0-33 hold the MBR, header
/// and entries.
pub const FIRST_USABLE_LBA: u64 = 2 + ENTRY_BLOCKS;

/// Blocks the backup table takes at the end of the disk.
pub const BACKUP_BLOCKS: u64 = 1 + ENTRY_BLOCKS;

/// Writes the table for a disk of `disk_blocks` blocks into `disk`.
///
/// # Errors
/// When writing fails.
pub fn write(
    disk: &std::fs::File,
    disk_blocks: u64,
    disk_guid: [u8; 16],
    part: &Partition,
) -> io::Result<()> {
    let last_lba = disk_blocks - 1;
    let mut entries = vec![0u8; (ENTRIES * ENTRY_SIZE) as usize];
    entries[0..16].copy_from_slice(&part.type_guid);
    entries[16..32].copy_from_slice(&part.guid);
    entries[32..40].copy_from_slice(&part.first_lba.to_le_bytes());
    entries[40..48].copy_from_slice(&part.last_lba.to_le_bytes());
    for (i, unit) in part.name.encode_utf16().take(36).enumerate() {
        entries[56 + 2 * i..58 + 2 * i].copy_from_slice(&unit.to_le_bytes());
    }
    let entries_crc = crc32fast::hash(&entries);
    let header = |current: u64, backup: u64, entries_lba: u64| {
        let mut h = vec![0u8; SECTOR as usize];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&current.to_le_bytes());
        h[32..40].copy_from_slice(&backup.to_le_bytes());
        h[40..48].copy_from_slice(&FIRST_USABLE_LBA.to_le_bytes());
        h[48..56].copy_from_slice(&(disk_blocks - BACKUP_BLOCKS - 1).to_le_bytes());
        h[56..72].copy_from_slice(&disk_guid);
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&(ENTRIES as u32).to_le_bytes());
        h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
        h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = crc32fast::hash(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    };
    disk.write_all_at(&protective_mbr(disk_blocks), 0)?;
    disk.write_all_at(&header(1, last_lba, 2), SECTOR)?;
    disk.write_all_at(&entries, 2 * SECTOR)?;
    let backup_entries = last_lba - ENTRY_BLOCKS;
    disk.write_all_at(&entries, backup_entries * SECTOR)?;
    disk.write_all_at(&header(last_lba, 1, backup_entries), last_lba * SECTOR)?;
    Ok(())
}

/// An MBR whose one partition (type 0xEE) covers the disk, so tools that
/// know only MBR see it as in use.
fn protective_mbr(disk_blocks: u64) -> Vec<u8> {
    let mut mbr = vec![0u8; SECTOR as usize];
    let entry = &mut mbr[446..462];
    entry[1..4].copy_from_slice(&[0x00, 0x02, 0x00]); // CHS of LBA 1
    entry[4] = 0xee;
    entry[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
    entry[8..12].copy_from_slice(&1u32.to_le_bytes());
    let size = u32::try_from(disk_blocks - 1).unwrap_or(u32::MAX);
    entry[12..16].copy_from_slice(&size.to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    mbr
}

/// A version-4-shaped GUID (RFC 9562 layout, on-disk byte order) taken from
/// the first 16 bytes of `digest`, so the same image gets the same GUIDs.
pub fn guid_from(digest: &[u8; 32]) -> [u8; 16] {
    let mut g = [0u8; 16];
    g.copy_from_slice(&digest[..16]);
    g[7] = (g[7] & 0x0f) | 0x40; // version 4 (high nibble of the LE u16)
    g[8] = (g[8] & 0x3f) | 0x80; // RFC variant
    g
}
