//! The I/O APIC of a standard PC, for devices that raise an interrupt line
//! rather than an MSI (virtio-mmio under QEMU's microvm, which names each
//! device's line in `virtio_mmio.device=`). One I/O APIC at its standard
//! address, lines routed to the boot CPU.

use core::ptr::{read_volatile, write_volatile};

/// Where a PC's first I/O APIC lives.
const BASE: u64 = 0xfec0_0000;
/// IOREGSEL and IOWIN.
const SELECT: u64 = 0x00;
const WINDOW: u64 = 0x10;
/// The version register (bits 16-23: the highest redirection entry).
const VERSION: u32 = 0x01;
/// First redirection-table register; entry `n` is `+ 2n` (low), `+ 2n + 1`.
const REDIRECTION: u32 = 0x10;
/// Level-triggered (active high is bit 13 clear).
const LEVEL: u32 = 1 << 15;

/// Why a line could not be routed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteError {
    /// The registers could not be mapped.
    Unmapped,
    /// The I/O APIC has no such line.
    NoSuchLine(u32),
}

impl core::fmt::Display for RouteError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            RouteError::Unmapped => write!(f, "the I/O APIC's registers cannot be mapped"),
            RouteError::NoSuchLine(l) => write!(f, "the I/O APIC has no interrupt line {l}"),
        }
    }
}

fn read(va: u64, reg: u32) -> u32 {
    // SAFETY: `va` maps the I/O APIC's registers uncached (`route`);
    // selecting a register and reading the window touch nothing else.
    unsafe {
        write_volatile((va + SELECT) as *mut u32, reg);
        read_volatile((va + WINDOW) as *const u32)
    }
}

fn write(va: u64, reg: u32, value: u32) {
    // SAFETY: as in `read`.
    unsafe {
        write_volatile((va + SELECT) as *mut u32, reg);
        write_volatile((va + WINDOW) as *mut u32, value);
    }
}

/// Routes interrupt line `line` (level-triggered, active high, as virtio
/// devices raise it) to `vector` on the boot CPU, unmasked. The device's
/// interrupt status must be acknowledged before the end of interrupt, or
/// the still-raised line interrupts again.
pub fn route(line: u32, vector: u8) -> Result<(), RouteError> {
    let va = super::map_uncached(BASE).ok_or(RouteError::Unmapped)?;
    let highest = (read(va, VERSION) >> 16) & 0xff;
    if line > highest {
        return Err(RouteError::NoSuchLine(line));
    }
    let reg = REDIRECTION + 2 * line;
    // Destination: local APIC 0 (the boot CPU), physical mode.
    write(va, reg + 1, 0);
    write(va, reg, u32::from(vector) | LEVEL);
    Ok(())
}
