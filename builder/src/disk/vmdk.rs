//! The raw disk as a VMDK in the hosted "monolithicSparse" layout
//! (VMware's Virtual Disk Format 1.1): a sparse-extent header, the text
//! descriptor, a grain directory, grain tables, then the 64 KiB grains
//! that hold data (all-zero grains are left out). VMware Workstation and
//! QEMU open it directly; on ESXi, `vmkfstools -i` turns it into a
//! datastore disk.

use std::io::{self, Write};

use super::raw::RawDisk;

const SECTOR: u64 = 512;
/// Sectors per grain (64 KiB).
const GRAIN_SECTORS: u64 = 128;
const GRAIN: u64 = GRAIN_SECTORS * SECTOR;
/// Entries per grain table.
const GT_ENTRIES: u64 = 512;
/// Sectors reserved for the descriptor.
const DESCRIPTOR_SECTORS: u64 = 20;

/// Writes `raw` as a monolithicSparse VMDK to `out`; `file_name` is what
/// the descriptor's extent line names (the VMDK's own file name) and
/// `cid` its content id.
///
/// # Errors
/// When reading `raw` or writing `out` fails.
pub fn write(raw: &RawDisk, file_name: &str, cid: u32, out: &mut impl Write) -> io::Result<()> {
    let size = raw.size();
    let capacity = size.div_ceil(SECTOR);
    let grains = size.div_ceil(GRAIN);
    let tables = grains.div_ceil(GT_ENTRIES);
    let gd_at = 1 + DESCRIPTOR_SECTORS;
    let gd_sectors = (tables * 4).div_ceil(SECTOR);
    let gt_at = gd_at + gd_sectors;
    let gt_sectors = GT_ENTRIES * 4 / SECTOR;
    let overhead = (gt_at + tables * gt_sectors).next_multiple_of(GRAIN_SECTORS);
    let data = raw.nonzero_chunks(GRAIN)?;

    let mut header = vec![0u8; SECTOR as usize];
    header[0..4].copy_from_slice(b"KDMV");
    header[4..8].copy_from_slice(&1u32.to_le_bytes()); // version
    header[8..12].copy_from_slice(&1u32.to_le_bytes()); // flags: newline test valid
    header[12..20].copy_from_slice(&capacity.to_le_bytes());
    header[20..28].copy_from_slice(&GRAIN_SECTORS.to_le_bytes());
    header[28..36].copy_from_slice(&1u64.to_le_bytes()); // descriptor offset
    header[36..44].copy_from_slice(&DESCRIPTOR_SECTORS.to_le_bytes());
    header[44..48].copy_from_slice(&(GT_ENTRIES as u32).to_le_bytes());
    header[48..56].copy_from_slice(&0u64.to_le_bytes()); // no redundant directory
    header[56..64].copy_from_slice(&gd_at.to_le_bytes());
    header[64..72].copy_from_slice(&overhead.to_le_bytes());
    header[72] = 0; // clean
    header[73..77].copy_from_slice(b"\n \r\n");
    out.write_all(&header)?;

    let mut descriptor = descriptor(capacity, file_name, cid).into_bytes();
    descriptor.resize((DESCRIPTOR_SECTORS * SECTOR) as usize, 0);
    out.write_all(&descriptor)?;

    let mut gd = vec![0u8; (gd_sectors * SECTOR) as usize];
    for t in 0..tables {
        let at = (t * 4) as usize;
        let sector = (gt_at + t * gt_sectors) as u32;
        gd[at..at + 4].copy_from_slice(&sector.to_le_bytes());
    }
    out.write_all(&gd)?;

    let mut gts = vec![0u8; (tables * gt_sectors * SECTOR) as usize];
    for (i, &grain) in data.iter().enumerate() {
        let at = (grain * 4) as usize;
        let sector = (overhead + i as u64 * GRAIN_SECTORS) as u32;
        gts[at..at + 4].copy_from_slice(&sector.to_le_bytes());
    }
    out.write_all(&gts)?;
    let written = gt_at + tables * gt_sectors;
    out.write_all(&vec![0u8; ((overhead - written) * SECTOR) as usize])?;
    for &grain in &data {
        out.write_all(&raw.chunk(grain, GRAIN)?)?;
    }
    Ok(())
}

/// The embedded text descriptor.
fn descriptor(capacity: u64, file_name: &str, cid: u32) -> String {
    let cylinders = (capacity / (16 * 63)).clamp(1, 16383);
    format!(
        "# Disk DescriptorFile\n\
         version=1\n\
         CID={cid:08x}\n\
         parentCID=ffffffff\n\
         createType=\"monolithicSparse\"\n\
         \n\
         # Extent description\n\
         RW {capacity} SPARSE \"{file_name}\"\n\
         \n\
         # The Disk Data Base\n\
         #DDB\n\
         \n\
         ddb.virtualHWVersion = \"4\"\n\
         ddb.geometry.cylinders = \"{cylinders}\"\n\
         ddb.geometry.heads = \"16\"\n\
         ddb.geometry.sectors = \"63\"\n\
         ddb.adapterType = \"ide\"\n"
    )
}
