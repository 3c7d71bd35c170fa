//! kiln's descriptor-chain walking over a guest memory the fuzzer fills:
//! a hostile driver's rings, with sizes and ring addresses from the first
//! bytes. Every chain popped is read, written and returned.
#![no_main]
use kiln_vmm::devices::virtio::queue::{complete, pop};
use libfuzzer_sys::fuzz_target;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Guest memory: 64 KiB at guest-physical 0.
const MEMORY: usize = 64 << 10;

fuzz_target!(|data: &[u8]| {
    let Some((header, rest)) = data.split_first_chunk::<14>() else {
        return;
    };
    let word = |i: usize| u16::from_le_bytes([header[i], header[i + 1]]);
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEMORY)]).expect("memory");
    let _ = mem.write_slice(&rest[..rest.len().min(MEMORY)], GuestAddress(0));
    let Ok(mut queue) = Queue::new(256) else {
        return;
    };
    queue.set_size(word(0));
    // Ring addresses anywhere in the low 128 KiB (half of it outside
    // guest memory), any alignment the driver wrote.
    let address = |w: u16| u32::from(w) * 2;
    queue.set_desc_table_address(Some(address(word(2))), Some(0));
    queue.set_avail_ring_address(Some(address(word(4))), Some(0));
    queue.set_used_ring_address(Some(address(word(6))), Some(0));
    queue.set_event_idx(header[8] & 1 != 0);
    queue.set_ready(true);
    let write = vec![0xa5u8; usize::from(word(10)) & 0xfff];
    for _ in 0..usize::from(header[12]).max(1) {
        match pop(&mut queue, &mem, 0) {
            Ok(Some(chain)) => {
                let _ = chain.read_all(&mem, 0);
                let written = chain.write_all(&mem, 0, &write).unwrap_or(0);
                assert!(written <= chain.writable_len());
                let _ = complete(&mut queue, &mem, 0, chain.head, written as u32);
            }
            Ok(None) | Err(_) => break,
        }
    }
});
