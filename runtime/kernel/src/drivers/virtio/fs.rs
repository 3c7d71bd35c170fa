//! The virtio-fs driver (virtio 1.2 §5.11): FUSE requests to the host's
//! virtiofsd, one at a time, each waited for in place (`request`). A
//! request's header and arguments are copied into one bounce buffer, the
//! reply comes back in another; `fs::volume` says what to ask.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;

use kiln_kernel::errno::Errno;
use kiln_kernel::fs::fuse::{self, IN_HEADER, OUT_HEADER};
use spin::Mutex;
use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::Transport as _;

use super::console::SetupError;
use super::hal::KernelHal;
use super::request::{self, Bounce};
use super::Transport;

/// Entries per queue (kiln-vmm's device offers 128).
const QUEUE_SIZE: usize = 128;
/// The request queue (0 is the high-priority one, unused: kiln never
/// interrupts a request or forgets nodes).
const REQUEST_QUEUE: u16 = 1;
/// Most data bytes one READ or WRITE moves.
pub const MAX_IO: usize = 512 * 1024;
/// Pages of each bounce buffer: the data and a page for headers.
const BOUNCE_PAGES: usize = MAX_IO / 4096 + 1;
/// Bytes of the configuration's tag.
const TAG_LEN: usize = 36;

/// One shared directory's device.
pub struct FsDriver {
    transport: Transport,
    _hiprio: VirtQueue<KernelHal, QUEUE_SIZE>,
    queue: VirtQueue<KernelHal, QUEUE_SIZE>,
    request: Bounce,
    reply: Bounce,
    unique: u64,
    /// The device's tag (which `kiln.volume=` names it).
    pub tag: String,
    /// Most bytes one READ/WRITE may move (the smaller of kiln's and the
    /// server's limits, known once the session is open).
    pub max_io: usize,
    /// The FUSE session is open (INIT answered).
    session: bool,
}

/// The devices, in boot order. Boxed: drivers are kilobytes.
#[allow(clippy::vec_box)]
static DEVICES: Mutex<Vec<Box<FsDriver>>> = Mutex::new(Vec::new());

/// Starts the driver of a file-system device found at boot (the FUSE
/// session too); false (said) when it fails.
#[inline(never)]
pub(super) fn attach(transport: Transport) -> bool {
    match FsDriver::new(transport) {
        Ok(driver) => {
            DEVICES.lock().push(Box::new(driver));
            true
        }
        Err(e) => {
            crate::kprintln!("kiln: virtio fs: setup failed: {e}");
            false
        }
    }
}

/// The index of the device tagged `tag`.
pub fn find(tag: &str) -> Option<usize> {
    DEVICES.lock().iter().position(|d| d.tag == tag)
}

/// Runs `f` on device `index`.
///
/// # Errors
/// ENODEV when there is no such device; `f`'s errors.
pub fn with<R>(
    index: usize,
    f: impl FnOnce(&mut FsDriver) -> Result<R, Errno>,
) -> Result<R, Errno> {
    let mut devices = DEVICES.lock();
    f(devices.get_mut(index).ok_or(Errno::Nodev)?)
}

impl FsDriver {
    /// Sets the device up (the FUSE session opens at the first request).
    ///
    /// # Errors
    /// [`SetupError`] when the device, memory or virtiofsd refuses.
    pub fn new(mut transport: Transport) -> Result<Self, SetupError> {
        super::begin_init(&mut transport, 0);
        let hiprio = VirtQueue::new(&mut transport, 0, false, false)?;
        let queue = VirtQueue::new(&mut transport, REQUEST_QUEUE, false, false)?;
        transport.finish_init();
        let mut tag = [0u8; TAG_LEN];
        for (i, b) in tag.iter_mut().enumerate() {
            *b = transport.read_config_space::<u8>(i).unwrap_or(0);
        }
        let end = tag.iter().position(|&b| b == 0).unwrap_or(TAG_LEN);
        let d = Self {
            transport,
            _hiprio: hiprio,
            queue,
            request: Bounce::new(BOUNCE_PAGES).ok_or(SetupError::OutOfMemory)?,
            reply: Bounce::new(BOUNCE_PAGES).ok_or(SetupError::OutOfMemory)?,
            unique: 0,
            tag: String::from_utf8_lossy(&tag[..end]).into_owned(),
            max_io: MAX_IO,
            session: false,
        };
        Ok(d)
    }

    /// Opens the FUSE session (INIT) before the first request: at boot,
    /// before the program runs, the kernel cannot wait for interrupts yet.
    fn open_session(&mut self) -> Result<(), Errno> {
        let mut out = [0u8; 64];
        let init = fuse::init_in(MAX_IO as u32);
        self.session = true;
        let n = self
            .send(fuse::op::INIT, 0, &[&init.0], &mut out)
            .inspect_err(|_| {
                self.session = false;
            })?;
        let (_, _, max_write) = fuse::init_out(&out[..n.min(out.len())])?;
        if max_write >= 4096 {
            self.max_io = self.max_io.min(max_write as usize);
        }
        Ok(())
    }

    /// Sends request `opcode` on `nodeid` with `args`, waits for the
    /// reply, copies its result into `out` (as much as fits) and returns
    /// the result's full length.
    ///
    /// # Errors
    /// The errno virtiofsd answered; EIO for a broken reply; EINVAL when
    /// the arguments do not fit a request.
    pub fn call(
        &mut self,
        opcode: u32,
        nodeid: u64,
        args: &[&[u8]],
        out: &mut [u8],
    ) -> Result<usize, Errno> {
        if !self.session {
            self.open_session()?;
        }
        self.send(opcode, nodeid, args, out)
    }

    fn send(
        &mut self,
        opcode: u32,
        nodeid: u64,
        args: &[&[u8]],
        out: &mut [u8],
    ) -> Result<usize, Errno> {
        let body: usize = args.iter().map(|a| a.len()).sum();
        let reply_len = OUT_HEADER + out.len();
        if IN_HEADER + body > self.request.len() || reply_len > self.reply.len() {
            return Err(Errno::Inval);
        }
        self.unique += 1;
        let unique = self.unique;
        let req = self.request.bytes();
        req[..IN_HEADER].copy_from_slice(&fuse::in_header(opcode, nodeid, unique, body));
        let mut at = IN_HEADER;
        for a in args {
            req[at..at + a.len()].copy_from_slice(a);
            at += a.len();
        }
        let req = &req[..at];
        let reply = &mut self.reply.bytes()[..reply_len];
        reply[..OUT_HEADER].fill(0);
        let written = request::call(
            &mut self.queue,
            &mut self.transport,
            REQUEST_QUEUE,
            &[req],
            &mut [reply],
        )?;
        let reply = &self.reply.bytes()[..reply_len];
        let len = fuse::out_header(reply, unique, written as usize)?;
        let n = len.min(out.len());
        out[..n].copy_from_slice(&reply[OUT_HEADER..OUT_HEADER + n]);
        Ok(len)
    }
}
