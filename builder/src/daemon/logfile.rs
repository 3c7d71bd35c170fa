//! An appliance's log with a size limit, as docker's `--log-opt
//! max-size=… max-file=…`: when the current file (`log`) would pass
//! `max-size`, it becomes `log.1` (`log.1` becomes `log.2`, …, the oldest
//! beyond `max-file` files is dropped) and a new `log` begins. The monitor
//! writes it from a pipe the VM's output goes to; kilnd reads the files
//! oldest first.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The default largest size of one file (docker's `local` driver's).
pub const DEFAULT_MAX_SIZE: u64 = 20 << 20;
/// The default number of files kept, the current one included.
pub const DEFAULT_MAX_FILES: u32 = 5;

/// `--log-opt` values that kiln refuses.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LogOptError {
    /// Not KEY=VALUE with a key kiln knows.
    #[error("--log-opt {0}: kiln knows max-size=SIZE (e.g. 10m) and max-file=N")]
    Unknown(String),
    /// A value out of range or unreadable.
    #[error("--log-opt {0}: {1}")]
    Value(String, &'static str),
}

/// How large an appliance's log may grow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogLimits {
    /// The largest size of one file, bytes (at least 4 KiB).
    pub max_size: u64,
    /// Files kept, the current one included (1: the log starts over).
    pub max_files: u32,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            max_size: DEFAULT_MAX_SIZE,
            max_files: DEFAULT_MAX_FILES,
        }
    }
}

impl LogLimits {
    /// Reads docker-style options (`max-size=10m`, `max-file=3`) over the
    /// defaults.
    ///
    /// # Errors
    /// [`LogOptError`] naming the option.
    pub fn parse(opts: &[String]) -> Result<Self, LogOptError> {
        let mut limits = LogLimits::default();
        for opt in opts {
            match opt.split_once('=') {
                Some(("max-size", value)) => {
                    limits.max_size =
                        parse_size(value).filter(|&n| n >= 4096).ok_or_else(|| {
                            LogOptError::Value(opt.clone(), "a size of at least 4k (b, k, m, g)")
                        })?;
                }
                Some(("max-file", value)) => {
                    limits.max_files = value
                        .parse()
                        .ok()
                        .filter(|n| (1..=100).contains(n))
                        .ok_or_else(|| LogOptError::Value(opt.clone(), "a count from 1 to 100"))?;
                }
                _ => return Err(LogOptError::Unknown(opt.clone())),
            }
        }
        Ok(limits)
    }
}

/// `10m`, `512k`, `1g`, `4096` (bytes; units of 1024, as docker's).
fn parse_size(text: &str) -> Option<u64> {
    let text = text.trim().to_ascii_lowercase();
    let (digits, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => text.split_at(i),
        None => (text.as_str(), ""),
    };
    let shift = match unit.trim_end_matches('b') {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        _ => return None,
    };
    digits.parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// The log files of `log`, oldest first (`log.N` … `log.1`, `log`), those
/// that exist.
pub fn files(log: &Path) -> Vec<PathBuf> {
    let mut rotated: Vec<(u32, PathBuf)> = Vec::new();
    let name = log.file_name().map(|n| n.to_string_lossy().into_owned());
    if let (Some(parent), Some(name)) = (log.parent(), name) {
        if let Ok(entries) = std::fs::read_dir(parent) {
            for entry in entries.flatten() {
                let file = entry.file_name().to_string_lossy().into_owned();
                if let Some(n) = file
                    .strip_prefix(&name)
                    .and_then(|rest| rest.strip_prefix('.'))
                    .and_then(|n| n.parse().ok())
                {
                    rotated.push((n, entry.path()));
                }
            }
        }
    }
    rotated.sort_by_key(|r| std::cmp::Reverse(r.0));
    let mut all: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
    if log.exists() {
        all.push(log.to_path_buf());
    }
    all
}

/// The path of rotated file `n` of `log`.
fn rotated(log: &Path, n: u32) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(format!(".{n}"));
    name.into()
}

/// A log being written with [`LogLimits`].
pub struct RotatingLog {
    path: PathBuf,
    limits: LogLimits,
    file: File,
    size: u64,
}

impl RotatingLog {
    /// Opens `path` to append.
    ///
    /// # Errors
    /// When it cannot be opened.
    pub fn open(path: &Path, limits: LogLimits) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(RotatingLog {
            path: path.to_path_buf(),
            limits,
            file,
            size,
        })
    }

    /// Appends `data`, rotating first when it would take the file past
    /// the limit (a single write larger than the limit gets a file of
    /// its own).
    ///
    /// # Errors
    /// When writing or rotating fails.
    pub fn write(&mut self, data: &[u8]) -> std::io::Result<()> {
        if self.size > 0 && self.size + data.len() as u64 > self.limits.max_size {
            self.rotate()?;
        }
        self.file.write_all(data)?;
        self.size += data.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let keep = self.limits.max_files.saturating_sub(1);
        if keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            for n in (1..keep).rev() {
                let from = rotated(&self.path, n);
                if from.exists() {
                    std::fs::rename(&from, rotated(&self.path, n + 1))?;
                }
            }
            std::fs::rename(&self.path, rotated(&self.path, 1))?;
        }
        *self = RotatingLog::open(&self.path, self.limits)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_read_like_dockers() {
        let opts =
            |o: &[&str]| LogLimits::parse(&o.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(opts(&[]), Ok(LogLimits::default()));
        assert_eq!(
            opts(&["max-size=10m", "max-file=2"]),
            Ok(LogLimits {
                max_size: 10 << 20,
                max_files: 2
            })
        );
        assert_eq!(opts(&["max-size=8KB"]).unwrap().max_size, 8192);
        assert!(matches!(
            opts(&["max-size=1k"]),
            Err(LogOptError::Value(..))
        ));
        assert!(matches!(opts(&["max-file=0"]), Err(LogOptError::Value(..))));
        assert!(matches!(
            opts(&["compress=true"]),
            Err(LogOptError::Unknown(..))
        ));
    }

    #[test]
    fn the_log_rotates_at_its_limit_and_keeps_max_file_files() {
        let dir = std::env::temp_dir().join(format!("kiln-logfile-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log");
        let limits = LogLimits {
            max_size: 4096,
            max_files: 3,
        };
        let mut log = RotatingLog::open(&path, limits).unwrap();
        for i in 0..10u8 {
            log.write(&[b'a' + i; 3000]).unwrap();
        }
        let all = files(&path);
        let names: Vec<_> = all
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["log.2", "log.1", "log"]);
        // Newest last: the last three writes, one per file.
        let last: Vec<u8> = all.iter().map(|p| std::fs::read(p).unwrap()[0]).collect();
        assert_eq!(last, [b'h', b'i', b'j']);
        // max-file=1: the log starts over.
        let mut single = RotatingLog::open(
            &dir.join("one"),
            LogLimits {
                max_size: 4096,
                max_files: 1,
            },
        )
        .unwrap();
        single.write(&[b'x'; 3000]).unwrap();
        single.write(&[b'y'; 3000]).unwrap();
        assert_eq!(std::fs::read(dir.join("one")).unwrap(), vec![b'y'; 3000]);
        assert_eq!(files(&dir.join("one")).len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
