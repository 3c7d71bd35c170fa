//! The standby's side (`kiln standby --listen`): it accepts one primary,
//! keeps the latest whole checkpoint — guest memory in a memfd, the state
//! document beside it — and acknowledges each once applied. When the
//! primary's connection ends without its "done" (the process died, the
//! host went away) or stays silent too long, the standby resumes the VM
//! from that checkpoint, as `kiln run --from-snapshot` resumes a snapshot:
//! with its own network (its own `-p`), fresh randomness and the host's
//! time.

use std::fs::File;
use std::io::BufReader;
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::time::Duration;

use super::wire::{self, Message, PAGE};
use super::HaError;
use crate::devices::legacy::console::Console;
use crate::snapshot::{RestoreConfig, SnapshotState};
use crate::timings::{Phase, Timings};
use crate::vstate::kvm::Hypervisor;
use crate::{RunReport, VmmError};

/// How a standby waits and resumes.
#[derive(Clone, Debug)]
pub struct StandbyConfig {
    /// `[HOST:]PORT` to listen on (port 0: any free one, printed).
    pub listen: String,
    /// How long the primary may stay silent before it counts as gone.
    pub silence: Duration,
    /// How the VM resumes (its `path` only names it in messages).
    pub resume: RestoreConfig,
}

/// How a standby ended.
pub enum StandbyOutcome {
    /// The primary's VM ended by itself with this status: nothing to do.
    PrimaryEnded(i32),
    /// The primary died; the VM resumed here and ran to its end.
    TookOver(Box<RunReport>),
}

/// The last whole checkpoint.
struct Replica {
    memory: File,
    pages: u64,
    state: Option<(u64, SnapshotState)>,
    /// The standby's copies of the primary's disks (`--disk`).
    disks: Vec<File>,
}

impl Replica {
    fn new(disks: &[crate::devices::virtio::block::DiskSpec]) -> Result<Self, HaError> {
        let disks = disks
            .iter()
            .map(|d| {
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&d.path)
                    .map_err(|cause| HaError::Link {
                        what: format!("opening the standby's disk {}", d.path.display()),
                        cause,
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            memory: crate::vstate::memory::memfd(c"kiln-standby-memory").map_err(|cause| {
                HaError::Link {
                    what: "making the standby's copy of guest memory".into(),
                    cause,
                }
            })?,
            pages: 0,
            state: None,
            disks,
        })
    }

    /// Checks a checkpoint's disks against the standby's copies: as many,
    /// and every piece inside its disk.
    fn check_disks(
        &self,
        state: &SnapshotState,
        pieces: &[(u32, u64, Vec<u8>)],
    ) -> Result<(), HaError> {
        if state.disks.len() != self.disks.len() {
            return Err(HaError::Unsupported(format!(
                "the primary has {} disks; give the standby as many --disk files for its copies ({} given)",
                state.disks.len(),
                self.disks.len()
            )));
        }
        for (disk, offset, data) in pieces {
            let Some(saved) = state.disks.get(*disk as usize) else {
                return Err(HaError::Protocol(format!(
                    "a piece of disk {disk}, which the VM lacks"
                )));
            };
            if offset
                .checked_add(data.len() as u64)
                .is_none_or(|end| end > saved.size)
            {
                return Err(HaError::Protocol(format!(
                    "{} bytes at {offset} lie beyond disk {disk}",
                    data.len()
                )));
            }
        }
        Ok(())
    }

    /// Makes each disk copy an empty file of its primary disk's size (the
    /// first checkpoint then brings all of its data).
    fn size_disks(&self, state: &SnapshotState) -> Result<(), HaError> {
        for (file, saved) in self.disks.iter().zip(&state.disks) {
            file.set_len(0)
                .and_then(|()| file.set_len(saved.size))
                .map_err(|cause| {
                    HaError::Damaged(format!(
                        "sizing the standby's copy of {}: {cause}",
                        saved.path.display()
                    ))
                })?;
        }
        Ok(())
    }

    /// Writes a checkpoint's disk pieces (checked) into the copies.
    fn apply_disks(&self, pieces: &[(u32, u64, Vec<u8>)]) -> Result<(), HaError> {
        for (disk, offset, data) in pieces {
            if let Some(file) = self.disks.get(*disk as usize) {
                file.write_all_at(data, *offset).map_err(|cause| {
                    HaError::Damaged(format!(
                        "writing the standby's copy of disk {disk}: {cause}"
                    ))
                })?;
            }
        }
        Ok(())
    }
}

/// The most pages guest memory can have.
const PAGES_MAX: u64 = crate::arch::layout::BOOT_PDS_MAX * crate::arch::layout::GIB / PAGE as u64;

/// Listens, follows one primary, and takes over when it dies.
///
/// # Errors
/// [`VmmError`]: the address cannot be listened on, the primary broke the
/// protocol before its first checkpoint, or the resumed VM failed.
pub fn serve(
    hv: &Hypervisor,
    config: &StandbyConfig,
    console: Console,
    mut timings: Timings,
) -> Result<StandbyOutcome, VmmError> {
    let listen = if config.listen.contains(':') {
        config.listen.clone()
    } else {
        format!("0.0.0.0:{}", config.listen)
    };
    let listener = TcpListener::bind(&listen).map_err(|cause| HaError::Link {
        what: format!("listening on {listen}"),
        cause,
    })?;
    let local = listener.local_addr().map_err(|cause| HaError::Link {
        what: "reading the listening address".into(),
        cause,
    })?;
    eprintln!("kiln: standby listening on {local}");
    let (stream, peer) = listener.accept().map_err(|cause| HaError::Link {
        what: format!("accepting a primary on {local}"),
        cause,
    })?;
    drop(listener);
    eprintln!("kiln: standby following the primary at {peer}");
    let mut replica = Replica::new(&config.resume.disks)?;
    let why = follow(stream, config.silence, &mut replica);
    // The disk copies are flushed and closed: the resumed VM opens (and
    // locks) them itself.
    for file in replica.disks.drain(..) {
        let _ = file.sync_all();
    }
    let ended = match why {
        Ok(Some(status)) => return Ok(StandbyOutcome::PrimaryEnded(status)),
        Ok(None) => "its connection closed".to_string(),
        // Half a checkpoint applied: nothing whole to resume from.
        Err(e @ HaError::Damaged(_)) => return Err(e.into()),
        Err(e) => e.to_string(),
    };
    let Some((epoch, state)) = replica.state.take() else {
        return Err(HaError::NoCheckpoint(ended).into());
    };
    timings.mark(Phase::SnapshotVerified);
    eprintln!("kiln: the primary is gone ({ended}); resuming from checkpoint {epoch}");
    let report = crate::snapshot::restore::resume(
        hv,
        &config.resume,
        state,
        replica.memory,
        None,
        console,
        timings,
    )?;
    Ok(StandbyOutcome::TookOver(Box::new(report)))
}

/// Applies checkpoints until the primary ends: `Ok(Some(status))` when its
/// VM ended by itself, `Ok(None)` when the connection closed, `Err` for a
/// broken or silent link.
fn follow(
    stream: TcpStream,
    silence: Duration,
    replica: &mut Replica,
) -> Result<Option<i32>, HaError> {
    let link = |what: &str| {
        let what = what.to_owned();
        move |cause| HaError::Link { what, cause }
    };
    stream
        .set_read_timeout(Some(silence))
        .map_err(link("configuring the primary's connection"))?;
    let mut writer = stream.try_clone().map_err(link("cloning the connection"))?;
    let mut reader = BufReader::with_capacity(1 << 20, stream);
    if let Err(e) = wire::read_hello(&mut reader) {
        let _ = wire::send_welcome(&mut writer, Some(&e.to_string()));
        return Err(e);
    }
    wire::send_welcome(&mut writer, None)?;
    loop {
        let pages_max = if replica.pages > 0 {
            replica.pages
        } else {
            PAGES_MAX
        };
        let message = match wire::read_message(&mut reader, pages_max)? {
            None => return Ok(None),
            Some(Message::Done(status)) => return Ok(Some(status)),
            Some(Message::Heartbeat) => continue,
            Some(Message::Checkpoint(c)) => c,
        };
        let state = crate::snapshot::parse_state(
            &message.state,
            std::path::Path::new("the primary's checkpoint"),
        )
        .map_err(|e| HaError::Protocol(e.to_string()))?;
        // Everything is checked before anything is applied: a checkpoint
        // refused here leaves the last good one whole (to resume from).
        let first = replica.state.is_none();
        let size = state.memory.size;
        let pages = size / PAGE as u64;
        if first && (size == 0 || !size.is_multiple_of(PAGE as u64)) {
            return Err(HaError::Protocol(format!("guest memory of {size} bytes")));
        }
        if !first && pages != replica.pages {
            return Err(HaError::Protocol("guest memory changed size".into()));
        }
        if let Some(&bad) = message.pages.iter().find(|&&p| p >= pages) {
            return Err(HaError::Protocol(format!(
                "page {bad} lies beyond guest memory"
            )));
        }
        replica.check_disks(&state, &message.disks)?;
        // Applying: a failure now leaves a copy that is neither checkpoint.
        let damaged = |what: &str| {
            let what = what.to_owned();
            move |cause| HaError::Damaged(format!("{what}: {cause}"))
        };
        if first {
            replica
                .memory
                .set_len(size)
                .map_err(damaged("sizing the standby's copy of guest memory"))?;
            replica.pages = pages;
            replica.size_disks(&state)?;
        }
        for (page, data) in message.pages.iter().zip(message.data.chunks_exact(PAGE)) {
            replica
                .memory
                .write_all_at(data, page * PAGE as u64)
                .map_err(damaged("writing the standby's copy of guest memory"))?;
        }
        replica.apply_disks(&message.disks)?;
        replica.state = Some((message.epoch, state));
        wire::send_ack(&mut writer, message.epoch)?;
    }
}
