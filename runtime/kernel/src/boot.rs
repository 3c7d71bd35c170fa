//! What the kernel learned from whoever booted it, in one arch-free shape.
//!
//! The platform code (kiln-vmm boot-info, or a PVH start-info from QEMU)
//! fills a [`BootParams`] before the heap exists, so it holds fixed-size
//! arrays and slices into boot memory (reached through the direct map).

/// Largest number of memory regions kept.
pub const MAX_REGIONS: usize = 32;
/// Largest number of virtio devices kept.
pub const MAX_DEVICES: usize = kiln_boot::layout::VIRTIO_DEVICES_MAX;

/// A range of guest-physical memory.
#[derive(Clone, Copy, Debug, Default)]
pub struct Region {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

/// Where the program's arguments come from.
#[derive(Clone, Copy, Debug)]
pub enum ArgSource {
    /// Explicit NUL-separated blocks (kiln-vmm).
    Blocks {
        /// argv block and count.
        argv: (&'static [u8], usize),
        /// envp block and count.
        envp: (&'static [u8], usize),
    },
    /// Parsed from the command line (PVH/QEMU: `NAME=value … -- args`).
    CommandLine,
}

/// Everything the boot protocol told the kernel.
#[derive(Clone, Copy, Debug)]
pub struct BootParams {
    /// RAM the kernel may allocate from.
    pub usable: [Region; MAX_REGIONS],
    /// Number of valid entries in `usable`.
    pub usable_count: usize,
    /// The 2 MiB where page tables go (empty: anywhere), see
    /// `kiln_boot::region::PAGE_TABLES`.
    pub table_area: Region,
    /// Kernel command line.
    pub cmdline: &'static [u8],
    /// The program's bytes: physical address and length (length 0: none).
    pub module: Region,
    /// The program's path in the guest (may be empty: use the default).
    pub path: &'static [u8],
    /// argv/envp.
    pub args: ArgSource,
    /// [`kiln_boot::flags`] bits.
    pub flags: u64,
    /// TSC frequency in kHz, 0 when unknown.
    pub tsc_khz: u64,
    /// Wall-clock time at `boot_tsc` (ns since the epoch), 0 when unknown.
    pub boot_realtime_ns: u64,
    /// TSC at `boot_realtime_ns`.
    pub boot_tsc: u64,
    /// Host-provided entropy (all zero when none).
    pub seed: [u8; 32],
    /// Total RAM in bytes.
    pub memory_size: u64,
    /// The virtio-mmio devices.
    pub devices: [kiln_boot::VirtioDevice; MAX_DEVICES],
    /// Number of valid entries in `devices`.
    pub device_count: usize,
    /// Number of vCPUs the VM has (1 when the platform does not say).
    pub cpus: usize,
}

impl BootParams {
    /// An empty set of parameters, to be filled by the platform code.
    pub const fn empty() -> Self {
        Self {
            usable: [Region { start: 0, end: 0 }; MAX_REGIONS],
            usable_count: 0,
            table_area: Region { start: 0, end: 0 },
            cmdline: &[],
            module: Region { start: 0, end: 0 },
            path: &[],
            args: ArgSource::CommandLine,
            flags: 0,
            tsc_khz: 0,
            boot_realtime_ns: 0,
            boot_tsc: 0,
            seed: [0; 32],
            memory_size: 0,
            devices: [kiln_boot::VirtioDevice {
                base: 0,
                size: 0,
                features: 0,
                device_type: 0,
                vector: 0,
                role: 0,
                queue_max: 0,
            }; MAX_DEVICES],
            device_count: 0,
            cpus: 1,
        }
    }

    /// The virtio devices the platform described.
    pub fn devices(&self) -> &[kiln_boot::VirtioDevice] {
        &self.devices[..self.device_count]
    }

    /// Adds usable RAM `[start, end)`, minus everything in `reserved`.
    pub fn add_usable(&mut self, start: u64, end: u64, reserved: &[Region]) {
        let mut pieces = [Region { start, end }; 1 + 8];
        let mut n = 1;
        for r in reserved {
            let mut next = [Region::default(); 1 + 8];
            let mut m = 0;
            for p in &pieces[..n] {
                if r.end <= p.start || r.start >= p.end {
                    next[m] = *p;
                    m += 1;
                    continue;
                }
                if p.start < r.start && m < next.len() {
                    next[m] = Region {
                        start: p.start,
                        end: r.start,
                    };
                    m += 1;
                }
                if r.end < p.end && m < next.len() {
                    next[m] = Region {
                        start: r.end,
                        end: p.end,
                    };
                    m += 1;
                }
            }
            pieces = next;
            n = m;
        }
        for p in &pieces[..n] {
            let start = (p.start + 0xfff) & !0xfff;
            let end = p.end & !0xfff;
            if start < end && self.usable_count < MAX_REGIONS {
                self.usable[self.usable_count] = Region { start, end };
                self.usable_count += 1;
            }
        }
    }

    /// Whether a [`kiln_boot::flags`] bit is set.
    pub fn has(&self, flag: u64) -> bool {
        self.flags & flag != 0
    }
}
