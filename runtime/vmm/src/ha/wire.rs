//! The checkpoint stream between a primary and its standby (one TCP
//! connection, primary to standby, acknowledgements back):
//!
//! ```text
//! hello       "KILN-HA1" u32 version-length version          (primary)
//! welcome     u8 0 | u8 1 u32 length message                  (standby)
//! checkpoint  u8 1 u64 epoch u32 state-length state.json
//!             u32 pages { u64 page-number, 4096 bytes }*
//!             u32 pieces { u32 disk, u64 offset, u32 length, bytes }*
//!             u64 epoch
//! ack         u64 epoch                                       (standby)
//! done        u8 2 i32 exit-status: the primary's VM ended by itself
//! heartbeat   u8 3: the primary lives (sent when it has sent nothing for
//!             a second: a guest slow to park is no failure)
//! ```
//!
//! Integers are little-endian. A checkpoint counts only once it arrived
//! whole (its epoch repeated at the end); the standby applies it, then
//! acknowledges.

use std::io::{Read, Write};

use super::HaError;

/// The hello's magic.
const MAGIC: &[u8; 8] = b"KILN-HA1";
/// A checkpoint follows.
const CHECKPOINT: u8 = 1;
/// The primary's VM ended.
const DONE: u8 = 2;
/// The primary lives.
const HEARTBEAT: u8 = 3;
/// A page of guest memory.
pub const PAGE: usize = 4096;
/// Largest state document the standby accepts.
const MAX_STATE: u32 = 16 << 20;

/// One checkpoint: the VM's state (a snapshot's `state.json`) and the
/// pages of guest memory written since the previous one.
pub struct Checkpoint {
    /// Its number (1, 2, …).
    pub epoch: u64,
    /// `state.json`.
    pub state: Vec<u8>,
    /// Page numbers, in the order of `data`.
    pub pages: Vec<u64>,
    /// The pages' contents, [`PAGE`] bytes each.
    pub data: Vec<u8>,
    /// Disk bytes written since the previous checkpoint (all of each
    /// disk's data in the first): (disk index, offset, bytes).
    pub disks: Vec<(u32, u64, Vec<u8>)>,
}

/// Largest disk piece accepted.
pub const MAX_PIECE: u32 = 1 << 24;

/// What the primary sends after the hello.
pub enum Message {
    /// A checkpoint.
    Checkpoint(Checkpoint),
    /// The VM ended by itself with this status.
    Done(i32),
    /// The primary lives.
    Heartbeat,
}

fn io(what: &str) -> impl Fn(std::io::Error) -> HaError + '_ {
    move |cause| HaError::Link {
        what: what.to_owned(),
        cause,
    }
}

fn protocol(why: impl Into<String>) -> HaError {
    HaError::Protocol(why.into())
}

fn read_u32(r: &mut impl Read) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn read_u64(r: &mut impl Read) -> std::io::Result<u64> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// Sends the hello.
///
/// # Errors
/// When the connection fails.
pub fn send_hello(w: &mut impl Write) -> Result<(), HaError> {
    let version = env!("CARGO_PKG_VERSION").as_bytes();
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&(version.len() as u32).to_le_bytes());
    out.extend_from_slice(version);
    w.write_all(&out).map_err(io("sending the hello"))
}

/// Reads the hello; `Err` names a peer that is not a kiln primary of this
/// version.
///
/// # Errors
/// [`HaError::Protocol`] or [`HaError::Link`].
pub fn read_hello(r: &mut impl Read) -> Result<(), HaError> {
    let mut magic = [0u8; 8];
    r.read_exact(&mut magic).map_err(io("reading the hello"))?;
    if &magic != MAGIC {
        return Err(protocol("the peer is not a kiln primary"));
    }
    let len = read_u32(r).map_err(io("reading the hello"))?;
    if len > 256 {
        return Err(protocol("the hello's version is too long"));
    }
    let mut version = vec![0u8; len as usize];
    r.read_exact(&mut version)
        .map_err(io("reading the hello"))?;
    let version = String::from_utf8_lossy(&version);
    if version != env!("CARGO_PKG_VERSION") {
        return Err(protocol(format!(
            "the primary runs kiln {version}, this standby kiln {}",
            env!("CARGO_PKG_VERSION")
        )));
    }
    Ok(())
}

/// Answers a hello: `None` welcomes the primary, `Some(why)` refuses it.
///
/// # Errors
/// When the connection fails.
pub fn send_welcome(w: &mut impl Write, refusal: Option<&str>) -> Result<(), HaError> {
    let out = match refusal {
        None => vec![0],
        Some(why) => {
            let mut out = vec![1];
            out.extend_from_slice(&(why.len() as u32).to_le_bytes());
            out.extend_from_slice(why.as_bytes());
            out
        }
    };
    w.write_all(&out).map_err(io("answering the hello"))
}

/// Reads the standby's answer to the hello.
///
/// # Errors
/// [`HaError::Refused`] with the standby's reason, or a link failure.
pub fn read_welcome(r: &mut impl Read) -> Result<(), HaError> {
    let mut answer = [0u8; 1];
    r.read_exact(&mut answer)
        .map_err(io("waiting for the standby's welcome"))?;
    if answer[0] == 0 {
        return Ok(());
    }
    let len = read_u32(r).map_err(io("reading the standby's refusal"))?;
    let mut why = vec![0u8; (len as usize).min(4096)];
    r.read_exact(&mut why)
        .map_err(io("reading the standby's refusal"))?;
    Err(HaError::Refused(String::from_utf8_lossy(&why).into_owned()))
}

/// Sends one checkpoint.
///
/// # Errors
/// When the connection fails.
pub fn send_checkpoint(w: &mut impl Write, c: &Checkpoint) -> Result<(), HaError> {
    let fail = io("sending a checkpoint");
    let mut head = vec![CHECKPOINT];
    head.extend_from_slice(&c.epoch.to_le_bytes());
    head.extend_from_slice(&(c.state.len() as u32).to_le_bytes());
    w.write_all(&head).map_err(&fail)?;
    w.write_all(&c.state).map_err(&fail)?;
    w.write_all(&(c.pages.len() as u32).to_le_bytes())
        .map_err(&fail)?;
    for (page, data) in c.pages.iter().zip(c.data.chunks_exact(PAGE)) {
        w.write_all(&page.to_le_bytes()).map_err(&fail)?;
        w.write_all(data).map_err(&fail)?;
    }
    w.write_all(&(c.disks.len() as u32).to_le_bytes())
        .map_err(&fail)?;
    for (disk, offset, data) in &c.disks {
        w.write_all(&disk.to_le_bytes()).map_err(&fail)?;
        w.write_all(&offset.to_le_bytes()).map_err(&fail)?;
        w.write_all(&(data.len() as u32).to_le_bytes())
            .map_err(&fail)?;
        w.write_all(data).map_err(&fail)?;
    }
    w.write_all(&c.epoch.to_le_bytes()).map_err(&fail)?;
    w.flush().map_err(&fail)
}

/// Sends "the VM ended with `status`".
///
/// # Errors
/// When the connection fails.
pub fn send_done(w: &mut impl Write, status: i32) -> Result<(), HaError> {
    let mut out = vec![DONE];
    out.extend_from_slice(&status.to_le_bytes());
    w.write_all(&out)
        .and_then(|()| w.flush())
        .map_err(io("telling the standby the VM ended"))
}

/// Says "the primary lives".
///
/// # Errors
/// When the connection fails.
pub fn send_heartbeat(w: &mut impl Write) -> Result<(), HaError> {
    w.write_all(&[HEARTBEAT])
        .and_then(|()| w.flush())
        .map_err(io("sending a heartbeat"))
}

/// Reads the next message; `pages_max` bounds a checkpoint's page numbers
/// (guest memory's size in pages, or the most it can have). `Ok(None)`: the primary closed the
/// connection between messages.
///
/// # Errors
/// A message cut short or malformed ([`HaError::Protocol`]), or a link
/// failure — the standby treats both as the primary's end.
pub fn read_message(r: &mut impl Read, pages_max: u64) -> Result<Option<Message>, HaError> {
    let mut tag = [0u8; 1];
    match r.read(&mut tag) {
        Ok(0) => return Ok(None),
        Ok(_) => {}
        Err(cause) => {
            return Err(HaError::Link {
                what: "reading from the primary".into(),
                cause,
            })
        }
    }
    let fail = io("reading a checkpoint");
    match tag[0] {
        HEARTBEAT => Ok(Some(Message::Heartbeat)),
        DONE => {
            let mut b = [0u8; 4];
            r.read_exact(&mut b).map_err(fail)?;
            Ok(Some(Message::Done(i32::from_le_bytes(b))))
        }
        CHECKPOINT => {
            let epoch = read_u64(r).map_err(&fail)?;
            let len = read_u32(r).map_err(&fail)?;
            if len > MAX_STATE {
                return Err(protocol(format!("a {len}-byte state document")));
            }
            let mut state = vec![0u8; len as usize];
            r.read_exact(&mut state).map_err(&fail)?;
            let count = read_u32(r).map_err(&fail)?;
            if u64::from(count) > pages_max {
                return Err(protocol(format!("{count} pages, more than guest memory")));
            }
            // Grown as pages arrive: a lying count costs no allocation.
            let mut pages = Vec::new();
            let mut data = Vec::new();
            for _ in 0..count {
                let page = read_u64(r).map_err(&fail)?;
                if page >= pages_max {
                    return Err(protocol(format!("page {page} lies beyond guest memory")));
                }
                pages.push(page);
                let at = data.len();
                data.resize(at + PAGE, 0);
                r.read_exact(&mut data[at..]).map_err(&fail)?;
            }
            let pieces = read_u32(r).map_err(&fail)?;
            let mut disks = Vec::new();
            for _ in 0..pieces {
                let disk = read_u32(r).map_err(&fail)?;
                let offset = read_u64(r).map_err(&fail)?;
                let len = read_u32(r).map_err(&fail)?;
                if len > MAX_PIECE {
                    return Err(protocol(format!("a disk piece of {len} bytes")));
                }
                let mut bytes = vec![0u8; len as usize];
                r.read_exact(&mut bytes).map_err(&fail)?;
                disks.push((disk, offset, bytes));
            }
            let trailer = read_u64(r).map_err(&fail)?;
            if trailer != epoch {
                return Err(protocol(format!(
                    "checkpoint {epoch} ends with the number {trailer}"
                )));
            }
            Ok(Some(Message::Checkpoint(Checkpoint {
                epoch,
                state,
                pages,
                data,
                disks,
            })))
        }
        other => Err(protocol(format!("unknown message {other}"))),
    }
}

/// Acknowledges checkpoint `epoch`.
///
/// # Errors
/// When the connection fails.
pub fn send_ack(w: &mut impl Write, epoch: u64) -> Result<(), HaError> {
    w.write_all(&epoch.to_le_bytes())
        .and_then(|()| w.flush())
        .map_err(io("acknowledging a checkpoint"))
}

/// Waits for an acknowledgement.
///
/// # Errors
/// When the connection fails.
pub fn read_ack(r: &mut impl Read) -> Result<u64, HaError> {
    read_u64(r).map_err(io("waiting for the standby's acknowledgement"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            epoch: 7,
            state: b"{}".to_vec(),
            pages: vec![0, 3],
            data: [vec![1u8; PAGE], vec![2u8; PAGE]].concat(),
            disks: vec![(0, 512, b"sector".to_vec())],
        }
    }

    #[test]
    fn a_checkpoint_travels_whole() {
        let mut out = Vec::new();
        send_hello(&mut out).unwrap();
        send_heartbeat(&mut out).unwrap();
        send_checkpoint(&mut out, &checkpoint()).unwrap();
        send_done(&mut out, 3).unwrap();
        let mut r = out.as_slice();
        read_hello(&mut r).unwrap();
        assert!(matches!(
            read_message(&mut r, 4).unwrap(),
            Some(Message::Heartbeat)
        ));
        let Some(Message::Checkpoint(c)) = read_message(&mut r, 4).unwrap() else {
            panic!("no checkpoint");
        };
        assert_eq!(
            (c.epoch, c.pages.clone(), c.state.clone()),
            (7, vec![0, 3], b"{}".to_vec())
        );
        assert_eq!(c.data[PAGE], 2);
        assert_eq!(c.disks, vec![(0, 512, b"sector".to_vec())]);
        assert!(matches!(
            read_message(&mut r, 4).unwrap(),
            Some(Message::Done(3))
        ));
        assert!(read_message(&mut r, 4).unwrap().is_none());
    }

    #[test]
    fn a_cut_or_lying_checkpoint_is_refused() {
        let mut out = Vec::new();
        send_checkpoint(&mut out, &checkpoint()).unwrap();
        // Cut anywhere: never a checkpoint.
        for cut in [1, 20, out.len() - 1] {
            assert!(read_message(&mut &out[..cut], 4).is_err(), "cut at {cut}");
        }
        // A page beyond guest memory.
        assert!(read_message(&mut out.as_slice(), 3).is_err());
        // A wrong hello.
        assert!(read_hello(&mut &b"GET / HTTP/1.1\r\n"[..]).is_err());
    }
}
