//! `cargo xtask bench-density --via kilnd`: the same fleet of idle
//! appliances launched through kilnd's API instead of one `kiln run` each:
//! launches per second (first request to the last VM's "ready" in its
//! log), each launch's latency (request sent to "ready"), the API's own
//! answer time (create, and listing the whole fleet), and the memory of
//! kilnd and of the per-appliance monitors with the fleet up. kilnd runs
//! with a KILN_HOME of its own; it, the monitors and the VMs are killed at
//! the end, also on errors.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

/// Client threads sending create requests at once.
const CLIENTS: usize = 8;

/// kilnd with its home, killed with everything it started on drop.
struct Daemon {
    home: PathBuf,
    socket: PathBuf,
    child: Child,
}

impl Daemon {
    fn start(kiln: &Path, home: &Path) -> Result<Self> {
        let _ = std::fs::remove_dir_all(home);
        std::fs::create_dir_all(home)?;
        let kilnd = kiln.with_file_name("kilnd");
        let child = Command::new(&kilnd)
            .env("KILN_HOME", home)
            .env_remove("KILN_HOST")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", kilnd.display()))?;
        let daemon = Self {
            home: home.to_path_buf(),
            socket: home.join("kilnd").join("kilnd.sock"),
            child,
        };
        let end = Instant::now() + Duration::from_secs(10);
        while UnixStream::connect(&daemon.socket).is_err() {
            if Instant::now() > end {
                bail!("kilnd did not listen on {}", daemon.socket.display());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(daemon)
    }

    fn vms(&self) -> PathBuf {
        self.home.join("kilnd").join("vms")
    }

    /// The pids of every monitor and VM (from their state files).
    fn pids(&self) -> (Vec<u32>, Vec<u32>) {
        let (mut monitors, mut vms) = (Vec::new(), Vec::new());
        for entry in std::fs::read_dir(self.vms())
            .into_iter()
            .flatten()
            .flatten()
        {
            let Ok(text) = std::fs::read_to_string(entry.path().join("state.json")) else {
                continue;
            };
            let state: Value = serde_json::from_str(&text).unwrap_or_default();
            monitors.extend(state["monitor"][0].as_u64().map(|p| p as u32));
            vms.extend(state["pid"].as_u64().map(|p| p as u32));
        }
        (monitors, vms)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let (monitors, vms) = self.pids();
        for pid in monitors.into_iter().chain(vms) {
            // SAFETY: kill(2) has no memory effects.
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

/// One request on kilnd's socket: status and body.
fn call(socket: &Path, method: &str, path: &str, body: Option<&str>) -> Result<(u16, String)> {
    let mut stream = UnixStream::connect(socket).context("connecting to kilnd")?;
    let body = body.unwrap_or("");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: kilnd\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let status = answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("kilnd's answer has no status")?;
    let body = answer
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    Ok((status, body))
}

/// Launches `count` appliances of `image` (`memory` MiB) through kilnd and
/// measures them; the JSON of the `kilnd` section.
///
/// # Errors
/// When kilnd cannot start, refuses a launch, or a VM is not ready in time.
pub fn measure(kiln: &Path, image: &Path, count: usize, memory: u64) -> Result<Value> {
    let daemon = Daemon::start(
        kiln,
        &crate::paths::bench().join("density").join("kilnd-home"),
    )?;
    let socket = daemon.socket.clone();
    let (tx, rx) = mpsc::channel::<Result<(Instant, Duration, String)>>();
    let start = Instant::now();
    for client in 0..CLIENTS {
        let (tx, socket, image) = (tx.clone(), socket.clone(), image.to_path_buf());
        std::thread::spawn(move || {
            for i in (client..count).step_by(CLIENTS) {
                let body = json!({"name": format!("d{i}"), "image": image, "memory_mib": memory});
                let sent = Instant::now();
                let result = match call(&socket, "POST", "/v1/vms", Some(&body.to_string())) {
                    Ok((201, text)) => serde_json::from_str::<Value>(&text)
                        .ok()
                        .and_then(|v| v["id"].as_str().map(str::to_owned))
                        .map(|id| (sent, sent.elapsed(), id))
                        .context("kilnd's create answer has no id"),
                    Ok((status, text)) => Err(anyhow::anyhow!("create {i}: {status} {text}")),
                    Err(e) => Err(e),
                };
                let failed = result.is_err();
                if tx.send(result).is_err() || failed {
                    return;
                }
            }
        });
    }
    drop(tx);
    // Ready: "ready" in the VM's log, polled while the creates go on.
    let deadline = Duration::from_secs(60) + Duration::from_millis(50) * count as u32;
    let mut pending: Vec<(Instant, PathBuf)> = Vec::with_capacity(count);
    let (mut created, mut create_ms, mut latencies) = (0, Vec::new(), Vec::new());
    while latencies.len() < count {
        if start.elapsed() > deadline {
            bail!(
                "only {} of {count} appliances were ready after {:.0} s ({created} created)",
                latencies.len(),
                deadline.as_secs_f64()
            );
        }
        while let Ok(answer) = rx.try_recv() {
            let (sent, answered, id) = answer?;
            created += 1;
            create_ms.push(answered.as_secs_f64() * 1e3);
            pending.push((sent, daemon.vms().join(id).join("log")));
        }
        pending.retain(|(sent, log)| {
            let ready = std::fs::read_to_string(log).is_ok_and(|t| t.contains("ready\n"));
            if ready {
                latencies.push(sent.elapsed().as_secs_f64() * 1e3);
            }
            !ready
        });
        std::thread::sleep(Duration::from_millis(2));
    }
    let all_up = start.elapsed();
    let listed = Instant::now();
    let (status, list) = call(&socket, "GET", "/v1/vms", None)?;
    let list_ms = listed.elapsed().as_secs_f64() * 1e3;
    let running = serde_json::from_str::<Value>(&list)
        .ok()
        .and_then(|v| v.as_array().map(Vec::len))
        .unwrap_or(0);
    if status != 200 || running != count {
        bail!("kilnd lists {running} running appliances of {count} (status {status})");
    }
    let (monitors, _) = daemon.pids();
    let monitor_kib: u64 = monitors.iter().map(|&p| crate::density::rss_pss(p).0).sum();
    let kilnd_kib = crate::density::rss_pss(daemon.child.id()).0;
    let at = |v: &mut Vec<f64>, q: f64| crate::density::percentile(v, q);
    Ok(json!({
        "clients": CLIENTS,
        "all_ready_s": all_up.as_secs_f64(),
        "launches_per_s": count as f64 / all_up.as_secs_f64(),
        "launch_latency_ms": {
            "median": at(&mut latencies, 0.5),
            "p90": at(&mut latencies, 0.9),
            "p99": at(&mut latencies, 0.99),
            "max": at(&mut latencies, 1.0),
        },
        "create_answer_ms": {
            "median": at(&mut create_ms, 0.5),
            "p99": at(&mut create_ms, 0.99),
        },
        "list_ms": list_ms,
        "kilnd_rss_kib": kilnd_kib,
        "monitor_rss_kib_per_vm": monitor_kib as f64 / count as f64,
    }))
}
