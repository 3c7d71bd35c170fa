//! The queues behind local (AF_UNIX) sockets. A connected pair has one
//! [`ByteQueue`] (SOCK_STREAM) or [`MessageQueue`] (SOCK_SEQPACKET) per
//! direction; a datagram socket receives into a [`MessageQueue`]. Both
//! carry attachments (`T`: the open files of SCM_RIGHTS) with the data
//! they came with, as Linux does: a stream read never merges bytes sent
//! with files into bytes sent without, so each batch of files arrives with
//! the data it was sent with.

use alloc::collections::VecDeque;
use alloc::vec::Vec;

/// Bytes a queue holds before writers wait (Linux's default unix socket
/// buffer is ~208 KiB).
pub const DEFAULT_CAPACITY: usize = 208 * 1024;

struct Segment<T> {
    data: Vec<u8>,
    /// Read so far (stream segments are consumed from the front).
    read: usize,
    attached: Option<T>,
}

/// One direction of a stream connection.
pub struct ByteQueue<T> {
    segments: VecDeque<Segment<T>>,
    len: usize,
    capacity: usize,
}

/// What a read took.
#[derive(Debug, PartialEq, Eq)]
pub struct Taken<T> {
    /// Bytes copied.
    pub len: usize,
    /// The attachment that came with them.
    pub attached: Option<T>,
    /// Datagrams: the message was longer than the buffer (its full length).
    pub full_len: usize,
}

impl<T> Default for ByteQueue<T> {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

impl<T> ByteQueue<T> {
    /// An empty queue of `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            segments: VecDeque::new(),
            len: 0,
            capacity: capacity.max(1),
        }
    }

    /// Bytes waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes that may still be written.
    pub fn room(&self) -> usize {
        self.capacity.saturating_sub(self.len)
    }

    /// Changes the capacity (SO_SNDBUF/SO_RCVBUF).
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
    }

    /// Appends as much of `data` as fits, with `attached` riding on the
    /// first byte; returns the count (0: full — or nothing to write).
    /// An attachment with no room for a byte is handed back.
    pub fn push(&mut self, data: &[u8], attached: Option<T>) -> Result<usize, Option<T>> {
        let n = data.len().min(self.room());
        if n == 0 {
            return Err(attached);
        }
        // Plain bytes join the previous plain segment.
        match self.segments.back_mut() {
            Some(last) if attached.is_none() && last.attached.is_none() => {
                last.data.extend_from_slice(&data[..n]);
            }
            _ => self.segments.push_back(Segment {
                data: data[..n].to_vec(),
                read: 0,
                attached,
            }),
        }
        self.len += n;
        Ok(n)
    }

    /// Reads into `out` (without consuming when `peek`): stops before a
    /// segment with an attachment unless it is the first, and after one
    /// that had one.
    pub fn read(&mut self, out: &mut [u8], peek: bool) -> Taken<T> {
        let mut done = 0;
        let mut attached = None;
        let mut index = 0;
        while done < out.len() {
            let Some(seg) = self.segments.get_mut(index) else {
                break;
            };
            if seg.attached.is_some() && done > 0 {
                break;
            }
            let carries = seg.attached.is_some();
            if carries && !peek {
                attached = seg.attached.take();
            }
            let avail = &seg.data[seg.read..];
            let n = avail.len().min(out.len() - done);
            out[done..done + n].copy_from_slice(&avail[..n]);
            done += n;
            if peek {
                index += 1;
            } else {
                seg.read += n;
                self.len -= n;
                if seg.read == seg.data.len() {
                    self.segments.pop_front();
                }
            }
            if carries {
                break;
            }
        }
        Taken {
            len: done,
            attached,
            full_len: done,
        }
    }

    /// Drops everything queued (shutdown of the reading side, close).
    pub fn clear(&mut self) -> Vec<T> {
        self.len = 0;
        self.segments.drain(..).filter_map(|s| s.attached).collect()
    }
}

/// A queue of whole messages (datagrams, seqpacket records), each with the
/// sender's name `A` and an attachment.
pub struct MessageQueue<A, T> {
    messages: VecDeque<(A, Vec<u8>, Option<T>)>,
    bytes: usize,
    capacity: usize,
}

impl<A: Clone, T> Default for MessageQueue<A, T> {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

impl<A: Clone, T> MessageQueue<A, T> {
    /// An empty queue holding up to `capacity` bytes of messages.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            messages: VecDeque::new(),
            bytes: 0,
            capacity: capacity.max(1),
        }
    }

    /// Messages waiting.
    pub fn count(&self) -> usize {
        self.messages.len()
    }

    /// Bytes of the first message (FIONREAD on a datagram socket).
    pub fn next_len(&self) -> Option<usize> {
        self.messages.front().map(|m| m.1.len())
    }

    /// Whether a message of `len` bytes fits now. One message always fits
    /// into an empty queue.
    pub fn fits(&self, len: usize) -> bool {
        self.messages.is_empty() || self.bytes + len <= self.capacity
    }

    /// Changes the capacity.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
    }

    /// Appends a message if it fits; hands the attachment back otherwise.
    pub fn push(&mut self, from: A, data: &[u8], attached: Option<T>) -> Result<(), Option<T>> {
        if !self.fits(data.len()) {
            return Err(attached);
        }
        self.bytes += data.len();
        self.messages.push_back((from, data.to_vec(), attached));
        Ok(())
    }

    /// Takes the first message into `out` (the rest of a longer one is
    /// lost, as on Linux; `full_len` says how long it was). With `peek` it
    /// stays queued (and its attachment with it).
    pub fn read(&mut self, out: &mut [u8], peek: bool) -> Option<(A, Taken<T>)> {
        let (from, data, _) = self.messages.front()?;
        let from = from.clone();
        let n = data.len().min(out.len());
        out[..n].copy_from_slice(&data[..n]);
        let full_len = data.len();
        let attached = if peek {
            None
        } else {
            let (_, data, attached) = self.messages.pop_front()?;
            self.bytes -= data.len();
            attached
        };
        Some((
            from,
            Taken {
                len: n,
                attached,
                full_len,
            },
        ))
    }

    /// Drops everything queued.
    pub fn clear(&mut self) -> Vec<T> {
        self.bytes = 0;
        self.messages.drain(..).filter_map(|m| m.2).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_bytes_flow_in_order_and_fill_up() {
        let mut q: ByteQueue<u32> = ByteQueue::with_capacity(10);
        assert_eq!(q.push(b"hello", None), Ok(5));
        assert_eq!(q.push(b" world!", None), Ok(5));
        assert_eq!(q.push(b"x", None), Err(None));
        let mut out = [0u8; 4];
        assert_eq!(q.read(&mut out, false).len, 4);
        assert_eq!(&out, b"hell");
        let mut out = [0u8; 16];
        let t = q.read(&mut out, false);
        assert_eq!(&out[..t.len], b"o worl");
        assert!(q.is_empty());
    }

    #[test]
    fn peek_leaves_the_bytes() {
        let mut q: ByteQueue<u32> = ByteQueue::default();
        q.push(b"abc", None).unwrap();
        q.push(b"def", Some(7)).unwrap();
        let mut out = [0u8; 8];
        let t = q.read(&mut out, true);
        assert_eq!(&out[..t.len], b"abc");
        assert_eq!(t.attached, None);
        assert_eq!(q.len(), 6);
    }

    #[test]
    fn attachments_arrive_with_their_own_bytes() {
        let mut q: ByteQueue<u32> = ByteQueue::default();
        q.push(b"plain", None).unwrap();
        q.push(b"with", Some(1)).unwrap();
        q.push(b"more", None).unwrap();
        let mut out = [0u8; 64];
        // The plain bytes stop before the attachment.
        let t = q.read(&mut out, false);
        assert_eq!((&out[..t.len], t.attached), (&b"plain"[..], None));
        // The attachment comes with its bytes, and the read ends there.
        let t = q.read(&mut out, false);
        assert_eq!((&out[..t.len], t.attached), (&b"with"[..], Some(1)));
        let t = q.read(&mut out, false);
        assert_eq!(&out[..t.len], b"more");
    }

    #[test]
    fn an_attachment_with_no_room_comes_back() {
        let mut q: ByteQueue<u32> = ByteQueue::with_capacity(2);
        q.push(b"ab", None).unwrap();
        assert_eq!(q.push(b"c", Some(9)), Err(Some(9)));
        assert_eq!(q.clear(), Vec::<u32>::new());
    }

    #[test]
    fn messages_keep_their_boundaries_and_truncate() {
        let mut q: MessageQueue<u8, u32> = MessageQueue::default();
        q.push(1, b"first message", None).unwrap();
        q.push(2, b"second", Some(5)).unwrap();
        assert_eq!(q.next_len(), Some(13));
        let mut out = [0u8; 5];
        let (from, t) = q.read(&mut out, false).unwrap();
        assert_eq!((from, &out[..], t.full_len), (1, &b"first"[..], 13));
        let mut out = [0u8; 64];
        let (from, t) = q.read(&mut out, true).unwrap();
        assert_eq!((from, t.attached), (2, None));
        let (_, t) = q.read(&mut out, false).unwrap();
        assert_eq!((&out[..t.len], t.attached), (&b"second"[..], Some(5)));
        assert!(q.read(&mut out, false).is_none());
    }

    #[test]
    fn a_full_message_queue_refuses_but_always_takes_one() {
        let mut q: MessageQueue<(), u32> = MessageQueue::with_capacity(4);
        q.push((), b"toolong", None).unwrap();
        assert_eq!(q.push((), b"x", Some(3)), Err(Some(3)));
        assert_eq!(q.count(), 1);
    }
}
