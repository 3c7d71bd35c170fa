//! The kiln platform's port devices: the console (program stdout/stderr),
//! the boot timer and the exit port. Each guest `OUT` to a kiln port lands
//! in [`PortBus::out`].

pub mod console;

use kiln_boot::{port, ExitReport, Milestone};
use vm_memory::GuestMemoryMmap;

use self::console::{Console, Stream};
use crate::timings::{Phase, Timings};
/// What a device could not do.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The console buffer in guest memory could not be read.
    #[error("cannot read the guest's console buffer: {0}")]
    ConsoleBuffer(#[source] vm_memory::GuestMemoryError),
    /// Writing program output to the host failed.
    #[error("cannot write the program's output: {0}")]
    Output(#[source] std::io::Error),
    /// The guest wrote an exit value no kernel writes.
    #[error("the guest reported an invalid exit value {0:#x}")]
    BadExitValue(u32),
}

/// What the VM loop should do after a port write.
#[derive(Debug, PartialEq, Eq)]
pub enum PortEvent {
    /// Keep running.
    Continue,
    /// The guest reported the program's end.
    Exit(ExitReport),
}

/// Dispatches port writes to the devices.
pub struct PortBus {
    /// The console device.
    pub console: Console,
    /// Writes to ports no device owns (ignored, counted).
    pub unknown_writes: u64,
}

fn value(data: &[u8]) -> u32 {
    let mut b = [0u8; 4];
    let n = data.len().min(4);
    b[..n].copy_from_slice(&data[..n]);
    u32::from_le_bytes(b)
}

impl PortBus {
    /// A bus with `console`.
    pub fn new(console: Console) -> Self {
        Self {
            console,
            unknown_writes: 0,
        }
    }

    /// Handles an `OUT` of `data` to `port`.
    ///
    /// # Errors
    /// When the guest reports an impossible exit value, or host output fails.
    pub fn out(
        &mut self,
        port: u16,
        data: &[u8],
        mem: &GuestMemoryMmap,
        timings: &mut Timings,
    ) -> Result<PortEvent, DeviceError> {
        match port {
            port::CONSOLE_STDOUT => {
                self.console
                    .write_from_guest(Stream::Stdout, value(data), mem)?;
                if value(data) > 0 {
                    timings.mark(Phase::FirstOutput);
                }
            }
            port::CONSOLE_STDERR => {
                self.console
                    .write_from_guest(Stream::Stderr, value(data), mem)?;
                if value(data) > 0 {
                    timings.mark(Phase::FirstOutput);
                }
            }
            port::BOOT_TIMER => match Milestone::from_u32(value(data)) {
                Some(Milestone::KernelEntry) => timings.mark(Phase::KernelEntry),
                Some(Milestone::ProgramEntry) => timings.mark(Phase::ProgramEntry),
                None => self.unknown_writes += 1,
            },
            port::EXIT => {
                timings.mark(Phase::ProgramExit);
                let raw = value(data);
                let report = ExitReport::decode(raw).ok_or(DeviceError::BadExitValue(raw))?;
                return Ok(PortEvent::Exit(report));
            }
            _ => self.unknown_writes += 1,
        }
        Ok(PortEvent::Continue)
    }
}
