//! The disk device: each request chain is a 16-byte header (type, sector),
//! the data (readable for writes, writable for reads) and a status byte
//! the device writes last. Reads and writes go to the host file at the
//! sector's offset; FLUSH is fdatasync(2), so what the guest flushed is on
//! the host's disk when the request completes; DISCARD and WRITE_ZEROES
//! punch holes. A request outside the disk, or a write to a read-only one,
//! fails with IOERR and the VM goes on.

use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use crate::GuestMem;
use kiln_boot::virtio_id;
use virtio_queue::Queue;

use super::{feature, request, status, Disk, QUEUE_SIZE, REQ_QUEUE, SECTOR};
use crate::devices::virtio::device::{read_config_bytes, Active, Traffic};
use crate::devices::virtio::queue::{self, Chain};
use crate::devices::virtio::{Interrupt, QueueError, VirtioDevice};

/// Bytes of a request header.
const HEADER: usize = 16;
/// Bytes of one DISCARD / WRITE_ZEROES range.
const RANGE: usize = 16;
/// Most ranges one DISCARD or WRITE_ZEROES request may carry.
const MAX_RANGES: u32 = 64;
/// Most sectors one range may cover (1 GiB).
const MAX_RANGE_SECTORS: u32 = (1 << 30) / SECTOR as u32;

/// A virtio block device over a host file.
pub struct Block {
    disk: Disk,
    active: Option<Active>,
    traffic: Traffic,
    /// Byte ranges written since a standby's last checkpoint (noted only
    /// once a standby asked, `replicate_writes`).
    written: Option<Vec<(u64, u64)>>,
}

/// Most bytes of a disk one replicated piece carries.
const REPLICATED_PIECE: u64 = 1 << 20;

impl Block {
    /// A device for `disk`.
    pub fn new(disk: Disk) -> Self {
        Self {
            disk,
            active: None,
            traffic: Traffic::default(),
            written: None,
        }
    }

    /// Notes that `[offset, offset + len)` changed, for a standby.
    fn note_written(&mut self, offset: u64, len: u64) {
        if let Some(w) = self.written.as_mut() {
            w.push((offset, len));
        }
    }

    /// The disk's bytes in `[offset, offset + len)`, in pieces.
    fn read_pieces(
        &self,
        offset: u64,
        len: u64,
        out: &mut Vec<(u64, Vec<u8>)>,
    ) -> std::io::Result<()> {
        let mut at = offset;
        while at < offset + len {
            let n = (offset + len - at).min(REPLICATED_PIECE);
            let mut data = vec![0u8; n as usize];
            self.disk.file.read_exact_at(&mut data, at)?;
            out.push((at, data));
            at += n;
        }
        Ok(())
    }

    /// The configuration space (virtio 1.2 §5.2.4) up to the write-zeroes
    /// fields.
    fn config(&self) -> [u8; 60] {
        let mut c = [0u8; 60];
        c[0..8].copy_from_slice(&self.disk.sectors.to_le_bytes());
        c[20..24].copy_from_slice(&4096u32.to_le_bytes()); // blk_size
        c[34..36].copy_from_slice(&1u16.to_le_bytes()); // num_queues
        c[36..40].copy_from_slice(&MAX_RANGE_SECTORS.to_le_bytes()); // max_discard_sectors
        c[40..44].copy_from_slice(&MAX_RANGES.to_le_bytes()); // max_discard_seg
        c[44..48].copy_from_slice(&1u32.to_le_bytes()); // discard_sector_alignment
        c[48..52].copy_from_slice(&MAX_RANGE_SECTORS.to_le_bytes()); // max_write_zeroes_sectors
        c[52..56].copy_from_slice(&MAX_RANGES.to_le_bytes()); // max_write_zeroes_seg
        c
    }

    /// The byte range `[offset, offset + len)` of sectors from `sector`,
    /// when it lies inside the disk.
    fn range(&self, sector: u64, len: u64) -> Option<u64> {
        let offset = sector.checked_mul(SECTOR)?;
        let end = offset.checked_add(len)?;
        (end <= self.disk.sectors * SECTOR).then_some(offset)
    }

    /// Carries out one request; returns the bytes to put in the writable
    /// descriptors (the data read, if any, then the status byte).
    fn serve(&mut self, readable: &[u8], writable_len: usize) -> Vec<u8> {
        let answer = |mut data: Vec<u8>, s: u8| {
            data.push(s);
            data
        };
        let Some(header) = readable.get(..HEADER) else {
            return answer(Vec::new(), status::IOERR);
        };
        let kind = u32::from_le_bytes(header[0..4].try_into().unwrap_or_default());
        let sector = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
        let payload = &readable[HEADER..];
        let data_len = writable_len.saturating_sub(1);
        match kind {
            request::IN => {
                let mut data = vec![0u8; data_len];
                let s = match self.range(sector, data_len as u64) {
                    Some(offset) if (data_len as u64).is_multiple_of(SECTOR) => {
                        match self.disk.file.read_exact_at(&mut data, offset) {
                            Ok(()) => {
                                self.traffic.to_guest += data_len as u64;
                                status::OK
                            }
                            Err(_) => status::IOERR,
                        }
                    }
                    _ => status::IOERR,
                };
                answer(data, s)
            }
            request::OUT => {
                let s = match self.range(sector, payload.len() as u64) {
                    _ if self.disk.read_only => status::IOERR,
                    Some(offset) if (payload.len() as u64).is_multiple_of(SECTOR) => {
                        match self.disk.file.write_all_at(payload, offset) {
                            Ok(()) => {
                                self.traffic.from_guest += payload.len() as u64;
                                self.note_written(offset, payload.len() as u64);
                                status::OK
                            }
                            Err(_) => status::IOERR,
                        }
                    }
                    _ => status::IOERR,
                };
                answer(vec![0u8; data_len], s)
            }
            request::FLUSH => {
                let s = if self.disk.read_only || self.disk.file.sync_data().is_ok() {
                    status::OK
                } else {
                    status::IOERR
                };
                answer(vec![0u8; data_len], s)
            }
            request::GET_ID => {
                let mut id = self.disk.serial().to_vec();
                id.resize(data_len, 0);
                answer(id, status::OK)
            }
            request::DISCARD | request::WRITE_ZEROES => {
                let s = if self.disk.read_only {
                    status::IOERR
                } else {
                    self.clear_ranges(payload, kind == request::WRITE_ZEROES)
                };
                answer(vec![0u8; data_len], s)
            }
            _ => answer(vec![0u8; data_len], status::UNSUPP),
        }
    }

    /// DISCARD or WRITE_ZEROES over the ranges in `payload`: each is
    /// punched out of the file (it then reads as zeros); where the host
    /// file system cannot punch, a discard does nothing (it is a hint) and
    /// write-zeroes writes zeros.
    fn clear_ranges(&mut self, payload: &[u8], zeroes: bool) -> u8 {
        if payload.is_empty()
            || !payload.len().is_multiple_of(RANGE)
            || payload.len() / RANGE > MAX_RANGES as usize
        {
            return status::IOERR;
        }
        for r in payload.chunks_exact(RANGE) {
            let sector = u64::from_le_bytes(r[0..8].try_into().unwrap_or_default());
            let count = u32::from_le_bytes(r[8..12].try_into().unwrap_or_default());
            if count > MAX_RANGE_SECTORS {
                return status::IOERR;
            }
            let len = u64::from(count) * SECTOR;
            let Some(offset) = self.range(sector, len) else {
                return status::IOERR;
            };
            self.note_written(offset, len);
            if punch_hole(&self.disk.file, offset, len).is_err() && zeroes {
                let zeros = vec![0u8; len as usize];
                if self.disk.file.write_all_at(&zeros, offset).is_err() {
                    return status::IOERR;
                }
            }
        }
        status::OK
    }

    fn serve_chain(&mut self, a_mem: &GuestMem, chain: &Chain) -> Result<u32, QueueError> {
        let writable_len = chain.writable_len();
        if writable_len == 0 {
            return Err(QueueError::Chain {
                queue: REQ_QUEUE,
                reason: "a block request has no status byte",
            });
        }
        let readable = chain.read_all(a_mem, REQ_QUEUE)?;
        let answer = self.serve(&readable, writable_len);
        let n = chain.write_all(a_mem, REQ_QUEUE, &answer)?;
        Ok(n as u32)
    }
}

/// fallocate(PUNCH_HOLE | KEEP_SIZE).
fn punch_hole(file: &std::fs::File, offset: u64, len: u64) -> std::io::Result<()> {
    // SAFETY: fallocate on a descriptor `file` owns; no memory is passed.
    let r = unsafe {
        libc::fallocate(
            file.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset as libc::off_t,
            len as libc::off_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        virtio_id::BLOCK
    }

    fn name(&self) -> &'static str {
        "block"
    }

    fn queue_max_sizes(&self) -> &'static [u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        let rw = feature::FLUSH | feature::DISCARD | feature::WRITE_ZEROES;
        feature::BLK_SIZE | if self.disk.read_only { feature::RO } else { rw }
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config(), offset, data);
    }

    fn activate(
        &mut self,
        mem: GuestMem,
        queues: Vec<Queue>,
        interrupt: Arc<Interrupt>,
        _features: u64,
    ) -> Result<(), QueueError> {
        self.active = Some(Active {
            mem,
            queues,
            interrupt,
        });
        Ok(())
    }

    fn reset(&mut self) {
        self.active = None;
    }

    /// Requests complete within `process_queue`: nothing is in flight
    /// between kicks, so the queues are the whole state.
    fn replicate_writes(
        &mut self,
        everything: bool,
    ) -> Option<std::io::Result<Vec<(u64, Vec<u8>)>>> {
        let ranges = if everything || self.written.is_none() {
            self.written = Some(Vec::new());
            let size = self.disk.sectors * SECTOR;
            match crate::source::data_extents(&self.disk.file, size) {
                Ok(extents) => extents,
                Err(e) => return Some(Err(e)),
            }
        } else {
            self.written.replace(Vec::new()).unwrap_or_default()
        };
        let mut out = Vec::new();
        for (offset, len) in ranges {
            if let Err(e) = self.read_pieces(offset, len, &mut out) {
                return Some(Err(e));
            }
        }
        Some(Ok(out))
    }

    fn snapshot_queues(&self) -> Option<&[Queue]> {
        self.active.as_ref().map(|a| a.queues.as_slice())
    }

    fn process_queue(&mut self, index: usize) -> Result<(), QueueError> {
        if index != REQ_QUEUE {
            return Ok(());
        }
        let Some(mut a) = self.active.take() else {
            return Ok(());
        };
        let result = self.drain(&mut a);
        self.active = Some(a);
        result
    }

    fn traffic(&self) -> Traffic {
        self.traffic
    }
}

impl Block {
    /// Serves every request the guest has queued.
    fn drain(&mut self, a: &mut Active) -> Result<(), QueueError> {
        let mut used = false;
        while let Some(chain) = queue::pop(&mut a.queues[REQ_QUEUE], &a.mem, REQ_QUEUE)? {
            let n = self.serve_chain(&a.mem, &chain)?;
            queue::complete(&mut a.queues[REQ_QUEUE], &a.mem, REQ_QUEUE, chain.head, n)?;
            used = true;
        }
        a.signal_used(REQ_QUEUE, used)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::block::DiskSpec;
    use crate::devices::virtio::test_utils::{self, GuestQueue};
    use crate::devices::virtio::VIRTIO_F_VERSION_1;
    use vm_memory::{Bytes, GuestAddress};

    fn disk(name: &str, sectors: u64, read_only: bool) -> (Disk, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!("kiln-blk-{}-{name}", std::process::id()));
        let bytes: Vec<u8> = (0..sectors * SECTOR).map(|i| (i / SECTOR) as u8).collect();
        std::fs::write(&path, bytes).unwrap();
        let d = Disk::open(&DiskSpec {
            path: path.clone(),
            read_only,
        })
        .unwrap();
        (d, path)
    }

    fn header(mem: &GuestMem, at: u64, kind: u32, sector: u64) {
        mem.write_obj(kind, GuestAddress(at)).unwrap();
        mem.write_obj(sector, GuestAddress(at + 8)).unwrap();
    }

    fn status_at(mem: &GuestMem, at: u64) -> u8 {
        mem.read_obj(GuestAddress(at)).unwrap()
    }

    #[test]
    fn reads_writes_and_refuses_out_of_range() {
        let (d, path) = disk("rw", 16, false);
        let mem = test_utils::memory();
        let (mut t, _) = test_utils::transport(Box::new(Block::new(d)), &mem);
        let mut q = GuestQueue::new(0x10000, 16);
        test_utils::kiln_setup(&mut t, &mem, 0x20000, VIRTIO_F_VERSION_1, &[&q]);
        // Read sectors 2..4.
        header(&mem, 0x30000, request::IN, 2);
        let r = q.add(
            &mem,
            &[
                (0x30000, 16, false),
                (0x40000, 1024, true),
                (0x30100, 1, true),
            ],
        );
        // Write sector 5 with 0xee.
        header(&mem, 0x31000, request::OUT, 5);
        mem.write_slice(&[0xee; 512], GuestAddress(0x42000))
            .unwrap();
        let w = q.add(
            &mem,
            &[
                (0x31000, 16, false),
                (0x42000, 512, false),
                (0x31100, 1, true),
            ],
        );
        // Past the end.
        header(&mem, 0x32000, request::IN, 16);
        let bad = q.add(
            &mem,
            &[
                (0x32000, 16, false),
                (0x43000, 512, true),
                (0x32100, 1, true),
            ],
        );
        // Flush.
        header(&mem, 0x33000, request::FLUSH, 0);
        let f = q.add(&mem, &[(0x33000, 16, false), (0x33100, 1, true)]);
        t.kick(REQ_QUEUE).unwrap();
        assert_eq!(
            q.used(&mem),
            [
                (u32::from(r), 1025),
                (u32::from(w), 1),
                (u32::from(bad), 513),
                (u32::from(f), 1)
            ]
        );
        let mut got = [0u8; 1024];
        mem.read_slice(&mut got, GuestAddress(0x40000)).unwrap();
        assert!(got[..512].iter().all(|&b| b == 2) && got[512..].iter().all(|&b| b == 3));
        assert_eq!(status_at(&mem, 0x30100), status::OK);
        assert_eq!(status_at(&mem, 0x31100), status::OK);
        assert_eq!(status_at(&mem, 0x32100), status::IOERR);
        assert_eq!(status_at(&mem, 0x33100), status::OK);
        let file = std::fs::read(&path).unwrap();
        assert!(file[5 * 512..6 * 512].iter().all(|&b| b == 0xee));
        assert!(file[4 * 512..5 * 512].iter().all(|&b| b == 4));
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_read_only_disk_refuses_writes() {
        let (d, path) = disk("ro", 4, true);
        let mem = test_utils::memory();
        let block = Block::new(d);
        assert_ne!(block.features() & feature::RO, 0);
        let (mut t, _) = test_utils::transport(Box::new(block), &mem);
        let mut q = GuestQueue::new(0x10000, 16);
        test_utils::kiln_setup(&mut t, &mem, 0x20000, VIRTIO_F_VERSION_1, &[&q]);
        header(&mem, 0x31000, request::OUT, 0);
        q.add(
            &mem,
            &[
                (0x31000, 16, false),
                (0x42000, 512, false),
                (0x31100, 1, true),
            ],
        );
        t.kick(REQ_QUEUE).unwrap();
        assert_eq!(status_at(&mem, 0x31100), status::IOERR);
        assert!(std::fs::read(&path).unwrap()[..512].iter().all(|&b| b == 0));
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn a_corrupt_request_breaks_the_device_and_leaves_the_disk_alone() {
        let (d, path) = disk("hostile", 8, false);
        let before = std::fs::read(&path).unwrap();
        let mem = test_utils::memory();
        let (mut t, _) = test_utils::transport(Box::new(Block::new(d)), &mem);
        let mut q = GuestQueue::new(0x10000, 16);
        test_utils::kiln_setup(&mut t, &mem, 0x20000, VIRTIO_F_VERSION_1, &[&q]);
        // A write whose data descriptor points past guest memory.
        header(&mem, 0x31000, request::OUT, 0);
        q.add(
            &mem,
            &[
                (0x31000, 16, false),
                (0xfff_0000, 512, false),
                (0x31100, 1, true),
            ],
        );
        t.kick(REQ_QUEUE).unwrap();
        assert!(!t.is_active(), "the device is marked broken");
        assert_ne!(
            test_utils::status(&t) & crate::devices::virtio::status::DEVICE_NEEDS_RESET,
            0
        );
        assert_eq!(
            std::fs::read(&path).unwrap(),
            before,
            "nothing reached the disk"
        );
        // A request with no status byte at all.
        let (d, path2) = disk("hostile2", 8, false);
        let (mut t, _) = test_utils::transport(Box::new(Block::new(d)), &mem);
        let mut q = GuestQueue::new(0x10000, 16);
        test_utils::kiln_setup(&mut t, &mem, 0x20000, VIRTIO_F_VERSION_1, &[&q]);
        header(&mem, 0x31000, request::OUT, 0);
        q.add(&mem, &[(0x31000, 16, false), (0x42000, 512, false)]);
        t.kick(REQ_QUEUE).unwrap();
        assert!(!t.is_active());
        assert!(std::fs::read(&path2).unwrap()[..512]
            .iter()
            .all(|&b| b == 0));
        std::fs::remove_file(path).unwrap();
        std::fs::remove_file(path2).unwrap();
    }

    #[test]
    fn discard_reads_back_as_zeros() {
        let (d, path) = disk("discard", 8, false);
        let mem = test_utils::memory();
        let (mut t, _) = test_utils::transport(Box::new(Block::new(d)), &mem);
        let mut q = GuestQueue::new(0x10000, 16);
        test_utils::kiln_setup(&mut t, &mem, 0x20000, VIRTIO_F_VERSION_1, &[&q]);
        header(&mem, 0x31000, request::WRITE_ZEROES, 0);
        mem.write_obj(1u64, GuestAddress(0x31010)).unwrap();
        mem.write_obj(2u32, GuestAddress(0x31018)).unwrap();
        q.add(&mem, &[(0x31000, 32, false), (0x31100, 1, true)]);
        t.kick(REQ_QUEUE).unwrap();
        assert_eq!(status_at(&mem, 0x31100), status::OK);
        let file = std::fs::read(&path).unwrap();
        assert!(file[512..1536].iter().all(|&b| b == 0));
        assert!(file[1536..2048].iter().all(|&b| b == 3));
        std::fs::remove_file(path).unwrap();
    }
}
