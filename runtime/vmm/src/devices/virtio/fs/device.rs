//! The virtio-fs device as a vhost-user frontend: the guest sees a
//! virtio-fs device (its tag in the configuration, two queues); when the
//! driver starts it, the rings, kick and call eventfds and guest memory go
//! to virtiofsd, which serves the queues from then on. kiln-vmm's devices
//! thread never sees a kick of this device.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use crate::GuestMem;
use kiln_boot::virtio_id;
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryBackend};
use vmm_sys_util::eventfd::EventFd;

use super::{Virtiofsd, QUEUE_COUNT, QUEUE_SIZE, TAG_LEN};
use crate::devices::virtio::device::{read_config_bytes, Traffic};
use crate::devices::virtio::{Interrupt, QueueError, VirtioDevice};

/// VHOST_USER_F_PROTOCOL_FEATURES: the backend speaks the protocol
/// extensions (rings then start disabled until enabled).
const PROTOCOL_FEATURES: u64 = 1 << 30;

/// Guest RAM as virtiofsd maps it: a memfd at guest-physical 0.
#[derive(Clone, Copy, Debug)]
pub struct SharedRam {
    /// The memfd (owned by guest memory's creator, open for the VM's life).
    pub fd: RawFd,
    /// Its size in bytes.
    pub size: u64,
}

/// A virtio-fs device whose queues virtiofsd serves.
pub struct Fs {
    daemon: Virtiofsd,
    frontend: Frontend,
    ram: SharedRam,
    tag: [u8; TAG_LEN],
    /// The backend's virtio features (VERSION_1 and friends).
    backend_features: u64,
    /// KVM's ioeventfd of each queue (copies: virtiofsd reads them).
    kicks: Vec<EventFd>,
    active: bool,
}

fn host<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> QueueError {
    move |e| QueueError::Host(std::io::Error::other(format!("virtiofsd: {what}: {e}")))
}

impl Fs {
    /// Connects to `daemon` as its vhost-user frontend; the guest will see
    /// the volume under `tag`.
    ///
    /// # Errors
    /// When virtiofsd does not answer as a vhost-user file-system backend.
    pub fn new(mut daemon: Virtiofsd, tag: &str, ram: SharedRam) -> Result<Self, QueueError> {
        let stream = daemon
            .stream
            .take()
            .ok_or_else(|| QueueError::Host(std::io::Error::other("virtiofsd: no connection")))?;
        let frontend = Frontend::from_stream(stream, QUEUE_COUNT as u64);
        frontend.set_owner().map_err(host("SET_OWNER"))?;
        let backend_features = frontend.get_features().map_err(host("GET_FEATURES"))?;
        if backend_features & PROTOCOL_FEATURES == 0 {
            return Err(host::<&str>("features")(
                "it does not speak vhost-user's protocol features",
            ));
        }
        let mut t = [0u8; TAG_LEN];
        let n = tag.len().min(TAG_LEN);
        t[..n].copy_from_slice(&tag.as_bytes()[..n]);
        Ok(Self {
            daemon,
            frontend,
            ram,
            tag: t,
            backend_features,
            kicks: Vec::new(),
            active: false,
        })
    }

    /// Hands virtiofsd memory, rings and eventfds, and enables the rings.
    fn start(
        &mut self,
        mem: &GuestMem,
        queues: &[Queue],
        interrupt: &Interrupt,
        features: u64,
    ) -> Result<(), QueueError> {
        let f = &mut self.frontend;
        f.set_features(features | PROTOCOL_FEATURES)
            .map_err(host("SET_FEATURES"))?;
        let offered = f
            .get_protocol_features()
            .map_err(host("GET_PROTOCOL_FEATURES"))?;
        f.set_protocol_features(offered & VhostUserProtocolFeatures::MQ)
            .map_err(host("SET_PROTOCOL_FEATURES"))?;
        let ram_host = mem
            .get_host_address(GuestAddress(0))
            .map_err(host("guest memory"))?;
        f.set_mem_table(&[VhostUserMemoryRegionInfo {
            guest_phys_addr: 0,
            memory_size: self.ram.size,
            userspace_addr: ram_host as u64,
            mmap_offset: 0,
            mmap_handle: self.ram.fd,
        }])
        .map_err(host("SET_MEM_TABLE"))?;
        for (i, q) in queues.iter().enumerate() {
            // Ring addresses go as kiln-vmm's own addresses: the backend
            // translates them through the memory table. Each must lie in
            // RAM (the only region virtiofsd maps).
            let hva = |gpa: u64, len: u64| -> Result<u64, QueueError> {
                if gpa.checked_add(len).is_none_or(|end| end > self.ram.size) {
                    return Err(QueueError::Chain {
                        queue: i,
                        reason: "a ring lies outside guest RAM",
                    });
                }
                mem.get_host_address(GuestAddress(gpa))
                    .map(|p| p as u64)
                    .map_err(|source| QueueError::Memory { queue: i, source })
            };
            let size = u64::from(q.size());
            let config = VringConfigData {
                queue_max_size: QUEUE_SIZE,
                queue_size: q.size(),
                flags: 0,
                desc_table_addr: hva(q.desc_table(), 16 * size)?,
                used_ring_addr: hva(q.used_ring(), 6 + 8 * size)?,
                avail_ring_addr: hva(q.avail_ring(), 6 + 2 * size)?,
                log_addr: None,
            };
            f.set_vring_num(i, q.size())
                .map_err(host("SET_VRING_NUM"))?;
            f.set_vring_addr(i, &config)
                .map_err(host("SET_VRING_ADDR"))?;
            f.set_vring_base(i, 0).map_err(host("SET_VRING_BASE"))?;
            f.set_vring_call(i, interrupt.irqfd())
                .map_err(host("SET_VRING_CALL"))?;
            let kick = self.kicks.get(i).ok_or_else(|| {
                QueueError::Host(std::io::Error::other("virtiofsd: no kick eventfd"))
            })?;
            f.set_vring_kick(i, kick).map_err(host("SET_VRING_KICK"))?;
            f.set_vring_enable(i, true)
                .map_err(host("SET_VRING_ENABLE"))?;
        }
        Ok(())
    }
}

impl VirtioDevice for Fs {
    fn device_type(&self) -> u32 {
        virtio_id::FS
    }

    fn name(&self) -> &'static str {
        "fs"
    }

    fn queue_max_sizes(&self) -> &'static [u16] {
        &[QUEUE_SIZE; QUEUE_COUNT]
    }

    fn features(&self) -> u64 {
        // What the backend offers of what kiln's driver may use: VERSION_1
        // only (no event index, no indirect descriptors).
        self.backend_features & crate::devices::virtio::VIRTIO_F_VERSION_1
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let mut config = [0u8; TAG_LEN + 8];
        config[..TAG_LEN].copy_from_slice(&self.tag);
        config[TAG_LEN..TAG_LEN + 4].copy_from_slice(&1u32.to_le_bytes()); // num_request_queues
        read_config_bytes(&config, offset, data);
    }

    fn use_queue_events(&mut self, events: &[EventFd]) -> std::io::Result<bool> {
        self.kicks = events
            .iter()
            .map(EventFd::try_clone)
            .collect::<Result<_, _>>()?;
        Ok(true)
    }

    fn activate(
        &mut self,
        mem: GuestMem,
        queues: Vec<Queue>,
        interrupt: Arc<Interrupt>,
        features: u64,
    ) -> Result<(), QueueError> {
        if self.active {
            return Err(QueueError::Chain {
                queue: 0,
                reason: "the file-system device was started twice",
            });
        }
        self.start(&mem, &queues, &interrupt, features)?;
        self.active = true;
        Ok(())
    }

    fn reset(&mut self) {
        // Stop the rings: virtiofsd stops serving them.
        if self.active {
            for i in 0..QUEUE_COUNT {
                let _ = self.frontend.get_vring_base(i);
            }
        }
    }

    fn process_queue(&mut self, _index: usize) -> Result<(), QueueError> {
        // virtiofsd serves the queues; a kick never reaches here.
        Ok(())
    }

    fn backend_fds(&self) -> Vec<RawFd> {
        // The vhost-user connection: virtiofsd never writes on it unasked,
        // so readiness means it closed — virtiofsd is gone, and a guest
        // waiting for a reply would wait forever. The VM stops instead.
        vec![self.frontend.as_raw_fd()]
    }

    fn process_backend(&mut self, fd: RawFd, _events: u32) -> Result<(), QueueError> {
        let mut byte = 0u8;
        // SAFETY: a one-byte peek into `byte` on the connection's socket,
        // without blocking; nothing is consumed.
        let n = unsafe {
            libc::recv(
                fd,
                (&raw mut byte).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        let ended = n == 0
            || (n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::WouldBlock);
        if !ended {
            // A reply the vCPU thread's setup is about to read (it held the
            // device while the readiness was reported).
            return Ok(());
        }
        let status = self
            .daemon
            .exited()
            .map_or_else(String::new, |s| format!(" ({s})"));
        Err(QueueError::Host(std::io::Error::other(format!(
            "virtiofsd serving {} ended{status}; the volume is gone, so the VM stops",
            self.daemon.spec.host.display()
        ))))
    }

    fn traffic(&self) -> Traffic {
        Traffic::default()
    }
}
