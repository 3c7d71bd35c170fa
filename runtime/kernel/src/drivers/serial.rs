//! Standard input from a standard PC's first serial port, when the command
//! line asks for it (`kiln.serial_stdin=1`, which `kiln export --disk -i`
//! writes): an exported disk's console is that port. Without it (and on
//! kiln-vmm, whose console input is a virtio console) this does nothing.
//!
//! A reader that finds nothing turns the port's receive interrupt on and
//! waits for I/O; the interrupt turns it off again (so unread input does
//! not raise it over and over) and wakes the waiting threads, which read.
//! A Ctrl-D byte ([`SERIAL_END_OF_INPUT`]) ends standard input, as a
//! terminal's end-of-file key does, so a program reading to the end (`cat`,
//! `sha256sum`) can finish; a carriage return (a terminal's Enter key)
//! arrives as a newline. Nothing is echoed: the terminal shows what it
//! sends.

use core::sync::atomic::{AtomicBool, Ordering};

use kiln_boot::SERIAL_END_OF_INPUT;

use crate::arch::platform::{self, Serial};

/// The vector the port's interrupt line is routed to (just below the
/// virtio devices' vectors).
pub const VECTOR: u8 = 0x4f;

/// Whether standard input is the serial port.
static ENABLED: AtomicBool = AtomicBool::new(false);
/// Whether an interrupt came and its waiters were not woken yet.
static PENDING: AtomicBool = AtomicBool::new(false);
/// Whether [`SERIAL_END_OF_INPUT`] was read: standard input is at its end.
static ENDED: AtomicBool = AtomicBool::new(false);

/// Makes the serial port standard input when `wanted` and the machine is
/// a standard PC with an interrupt controller.
pub fn init(wanted: bool) {
    if !wanted || platform::serial().is_none() {
        return;
    }
    if !crate::arch::enable_interrupt_controller() {
        crate::kprintln!("kiln: no interrupt controller; standard input stays at end of file");
        return;
    }
    match crate::arch::route_interrupt_line(Serial::IRQ, VECTOR) {
        Ok(()) => {
            ENABLED.store(true, Ordering::SeqCst);
            crate::kprintln!("{}", kiln_boot::SERIAL_STDIN_READY_LINE);
        }
        Err(e) => crate::kprintln!(
            "kiln: serial input unavailable ({e}); standard input stays at end of file"
        ),
    }
}

/// Whether standard input is the serial port.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// What a read of the serial port found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// This many bytes.
    Data(usize),
    /// Nothing yet: the receive interrupt is armed, the caller may wait.
    Empty,
    /// End of input: [`SERIAL_END_OF_INPUT`] came (now or before).
    End,
}

/// Reads waiting input into `buf`, up to an [`SERIAL_END_OF_INPUT`] byte
/// (only once [`enabled`]: a standard PC's port).
pub fn read(buf: &mut [u8]) -> Input {
    if ended() {
        return Input::End;
    }
    let port = Serial;
    let mut n = port.read(buf);
    if n == 0 {
        port.rx_interrupt(true);
        // A byte that came before the interrupt was armed raises none.
        n = port.read(buf);
    }
    if let Some(end) = buf[..n].iter().position(|&b| b == SERIAL_END_OF_INPUT) {
        // What followed it is dropped: nothing is read after the end.
        ENDED.store(true, Ordering::Relaxed);
        n = end;
        if n == 0 {
            return Input::End;
        }
    }
    // The Enter key of a terminal on a serial line sends a carriage
    // return; programs expect a newline (a Linux tty's ICRNL default).
    for b in &mut buf[..n] {
        if *b == b'\r' {
            *b = b'\n';
        }
    }
    if n == 0 {
        Input::Empty
    } else {
        Input::Data(n)
    }
}

/// Whether standard input reached its end ([`SERIAL_END_OF_INPUT`] was read).
pub fn ended() -> bool {
    ENDED.load(Ordering::Relaxed)
}

/// Whether a read would not wait (input or its end waits; the receive
/// interrupt is armed when not).
pub fn readable() -> bool {
    if ended() {
        return true;
    }
    let port = Serial;
    if port.has_input() {
        return true;
    }
    port.rx_interrupt(true);
    port.has_input()
}

/// Notes the port's interrupt; false for other vectors.
pub fn interrupt(vector: u64) -> bool {
    if vector != u64::from(VECTOR) || !enabled() {
        return false;
    }
    Serial.rx_interrupt(false);
    PENDING.store(true, Ordering::SeqCst);
    true
}

/// Whether an interrupt waits to be serviced.
pub fn pending() -> bool {
    PENDING.load(Ordering::Relaxed)
}

/// Wakes the threads waiting for I/O after an interrupt.
pub fn service() {
    if PENDING.swap(false, Ordering::SeqCst) {
        crate::sched::notify_io();
    }
}

/// Whether input may still arrive (until [`SERIAL_END_OF_INPUT`] came).
pub fn may_wake() -> bool {
    enabled() && !ended()
}
