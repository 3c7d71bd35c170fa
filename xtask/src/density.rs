//! `cargo xtask bench-density`: how many appliances one host holds, and
//! how fast they start. K copies of an image are launched at once with
//! `kiln run`: the idle image (a static program that prints "ready" and
//! sleeps), or with `--appliance httpd` the nginx appliance, each with its
//! own published port (user networking: a passt each) and ready once it
//! answers an HTTP request. The run reports launches per second (first
//! spawn to the last ready VM),
//! each VM's launch latency, host memory per VM (proportional set size,
//! and the drop of the host's MemAvailable) and the CPU the idle VMs use.
//! Every VM is killed and reaped at the end, also on errors. Prints a
//! table and writes `target/bench/density.json` (`density-httpd.json`).

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::json;
use xtask::{build, host, paths};

/// What each appliance of the fleet is.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Appliance {
    /// A static program that prints "ready" and sleeps.
    #[default]
    Idle,
    /// Debian's nginx (manifests/httpd.toml) with a published port; ready
    /// when it answers an HTTP request.
    Httpd,
}

/// How the httpd appliances are reached.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FleetNet {
    /// A tap device each (root), in a network namespace.
    Tap,
    /// User networking: a passt each.
    User,
}

/// Options of `bench-density`.
#[derive(clap::Args, Clone, Debug)]
pub struct DensityArgs {
    /// Appliances to start at once
    #[arg(long, default_value_t = 200)]
    pub count: usize,
    /// What each appliance is
    #[arg(long, value_enum, default_value_t = Appliance::Idle)]
    pub appliance: Appliance,
    /// Guest memory of each, in MiB (default: 8 for idle, the image's for httpd)
    #[arg(long)]
    pub memory: Option<u64>,
    /// The httpd appliances' network: `tap` (root: a tap device each, in a
    /// network namespace of the benchmark's) or `user` (a passt each, ~28 MiB
    /// of host memory apiece). Default: tap as root, else user
    #[arg(long, value_enum)]
    pub net: Option<FleetNet>,
    /// Seconds to watch the idle fleet's CPU use once every VM is up
    #[arg(long, default_value_t = 2.0)]
    pub idle_seconds: f64,
    /// Also launch the fleet through kilnd's API (after the direct one):
    /// launches/s and latency side by side, kilnd's and the monitors' memory
    #[arg(long, value_enum, default_value_t = Via::Direct)]
    pub via: Via,
}

/// How the fleet is launched.
#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Via {
    /// One `kiln run` per appliance, spawned by the benchmark.
    #[default]
    Direct,
    /// The same, then through kilnd (`POST /v1/vms`), for comparison.
    Kilnd,
}

impl Default for DensityArgs {
    fn default() -> Self {
        Self {
            count: 200,
            appliance: Appliance::Idle,
            memory: None,
            net: None,
            idle_seconds: 2.0,
            via: Via::Direct,
        }
    }
}

/// Most appliances one run starts (a bound, not a target).
const MAX_COUNT: usize = 4000;

/// The running VMs: killed and reaped when dropped, whatever happened.
struct Fleet(Vec<Child>);

impl Fleet {
    /// Kills and reaps every VM; how long that took.
    fn stop(&mut self) -> Duration {
        let t = Instant::now();
        for c in &mut self.0 {
            let _ = c.kill();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
        self.0.clear();
        t.elapsed()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A field of /proc/meminfo, KiB.
fn meminfo(field: &str) -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Rss and Pss of a process from /proc/PID/smaps_rollup, KiB.
pub(crate) fn rss_pss(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    (field("Rss"), field("Pss"))
}

/// User + system CPU time of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after ')'.
    get(11) + get(12)
}

fn raise_fd_limit() {
    // SAFETY: getrlimit/setrlimit read and write one rlimit.
    unsafe {
        let mut r = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 && r.rlim_cur < r.rlim_max {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

pub(crate) fn percentile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(((v.len().max(1) - 1) as f64 * q).round() as usize)
        .copied()
        .unwrap_or(f64::NAN)
}

/// Builds the idle image into `dir`.
fn idle_image(kiln: &Path, dir: &Path, memory: u64) -> Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir)?;
    let manifest = dir.join("idle.toml");
    let program = paths::program("idle");
    std::fs::write(
        &manifest,
        format!(
            "# Written by cargo xtask bench-density.\nname = \"idle\"\nversion = \"1.0.0\"\n\n\
             [program]\npath = {:?}\nguest_path = \"/app/idle\"\n\n[vm]\nmemory = {memory}\n",
            program.display().to_string()
        ),
    )?;
    let image = dir.join("idle.kiln");
    build::kiln_build(kiln, &manifest, &image)?;
    Ok(image)
}

/// Whether the nginx appliance on host port `port` answers a request.
fn answers_http(port: u16) -> bool {
    use std::io::Write;
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    // Short: a connection passt took before the guest listened may
    // never be answered; the next attempt is.
    let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
    if s.write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

/// Runs the benchmark.
pub fn run(args: &DensityArgs) -> Result<()> {
    if !host::kvm_available() {
        bail!("bench-density needs /dev/kvm");
    }
    if args.count == 0 || args.count > MAX_COUNT {
        bail!("--count {} must be between 1 and {MAX_COUNT}", args.count);
    }
    let httpd = args.appliance == Appliance::Httpd;
    let memory = args.memory.unwrap_or(if httpd { 64 } else { 8 });
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let tap = httpd
        && args
            .net
            .unwrap_or(if root { FleetNet::Tap } else { FleetNet::User })
            == FleetNet::Tap;
    if tap && !root {
        bail!("bench-density --net tap needs root");
    }
    // Each VM needs its VMM (a few MiB; with httpd a passt too) and the
    // guest memory it touches (well under its size); refuse what cannot
    // fit with a wide margin.
    let per_vm_kib = if httpd {
        (if tap { 8 } else { 36 }) * 1024 + memory * 1024 / 4
    } else {
        4 * 1024 + memory * 1024 / 2
    };
    let need_kib = args.count as u64 * per_vm_kib;
    let available = meminfo("MemAvailable");
    if need_kib > available / 4 * 3 {
        bail!(
            "{} appliances of {} MiB could need ~{} MiB, more than 3/4 of the {} MiB available",
            args.count,
            memory,
            need_kib / 1024,
            available / 1024
        );
    }
    host::ensure_tools(&host::TOOLS[..2])?;
    if httpd {
        for tool in ["nginx", if tap { "ip" } else { "passt" }] {
            if !host::has(tool) {
                bail!("bench-density --appliance httpd needs {tool}: run `cargo xtask deps`");
            }
        }
    }
    build::kernel()?;
    build::programs()?;
    let kiln = build::kiln_release()?;
    let dir = paths::bench().join("density");
    let image = if httpd {
        std::fs::create_dir_all(&dir)?;
        crate::bench_net::httpd_image(&kiln, &dir)?
    } else {
        idle_image(&kiln, &dir, memory)?
    };
    raise_fd_limit();
    // With taps, every VM lives in one network namespace, where every port
    // is free; with passt, one free host port per nginx, chosen before any
    // VM starts.
    let ns = if tap {
        Some(crate::bench_net::Netns::new()?)
    } else {
        None
    };
    let ports: Vec<u16> = if tap {
        (0..args.count).map(|i| 20000 + i as u16).collect()
    } else if httpd {
        let held: Vec<std::net::TcpListener> = (0..args.count)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .collect::<std::io::Result<_>>()?;
        held.iter()
            .map(|l| l.local_addr().map(|a| a.port()))
            .collect::<std::io::Result<_>>()?
    } else {
        Vec::new()
    };

    let mem_before = meminfo("MemAvailable");
    let mut fleet = Fleet(Vec::with_capacity(args.count));
    let (tx, rx) = mpsc::channel::<(usize, Result<Duration, String>)>();
    let deadline = Duration::from_secs(60) + Duration::from_millis(50) * args.count as u32;
    let start = Instant::now();
    for i in 0..args.count {
        let spawned = Instant::now();
        let mut cmd = match &ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns.name()]).arg(&kiln);
                c
            }
            None => Command::new(&kiln),
        };
        cmd.arg("run");
        if httpd {
            if tap {
                cmd.args(["--net", "tap"]);
            }
            cmd.args(["-p", &format!("127.0.0.1:{}:80", ports[i])])
                .args(["--memory", &memory.to_string()]);
        }
        let mut child = cmd
            .arg(&image)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting appliance {i}"))?;
        let (out, mut err) = (child.stdout.take(), child.stderr.take());
        fleet.0.push(child);
        let tx = tx.clone();
        let port = ports.get(i).copied();
        let netns = ns.as_ref().map(|n| n.name().to_owned());
        std::thread::spawn(move || {
            if let Some(name) = netns {
                // This thread asks the VM's published port inside the
                // namespace.
                if let Err(e) = crate::bench_net::enter_netns(&name) {
                    let _ = tx.send((i, Err(format!("entering the namespace: {e}"))));
                    return;
                }
            }
            let ready = match port {
                // nginx logs its first notice once its sockets are open;
                // from then on it is asked every 20 ms until it answers.
                // (Asking from the start would have every booting VM's
                // passt and guest refuse thousands of connections a second,
                // which on two cores slows the boots it waits for.)
                Some(port) => {
                    let mut line = String::new();
                    let started = err
                        .as_mut()
                        .map(BufReader::new)
                        .is_some_and(|mut r| r.read_line(&mut line).is_ok_and(|n| n > 0));
                    started
                        && loop {
                            if answers_http(port) {
                                break true;
                            }
                            if start.elapsed() > deadline {
                                break false;
                            }
                            std::thread::sleep(Duration::from_millis(20));
                        }
                }
                None => {
                    let mut line = String::new();
                    out.map(BufReader::new)
                        .is_some_and(|mut r| r.read_line(&mut line).is_ok() && line == "ready\n")
                }
            };
            let result = if ready {
                Ok(spawned.elapsed())
            } else {
                let mut text = String::new();
                if let Some(e) = err.as_mut() {
                    let _ = e.read_to_string(&mut text);
                }
                Err(text.trim().to_owned())
            };
            let _ = tx.send((i, result));
        });
    }
    drop(tx);
    let mut latencies = Vec::with_capacity(args.count);
    while latencies.len() < args.count {
        let left = deadline.saturating_sub(start.elapsed());
        match rx.recv_timeout(left) {
            Ok((_, Ok(latency))) => latencies.push(latency.as_secs_f64() * 1e3),
            Ok((i, Err(msg))) => bail!(
                "appliance {i} stopped before it was ready ({} were up): {msg}",
                latencies.len()
            ),
            Err(_) => bail!(
                "only {} of {} appliances were ready after {:.0} s",
                latencies.len(),
                args.count,
                deadline.as_secs_f64()
            ),
        }
    }
    let all_up = start.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    let mem_up = meminfo("MemAvailable");
    let pids: Vec<u32> = fleet.0.iter().map(Child::id).collect();
    let (mut rss, mut pss) = (0u64, 0u64);
    for &pid in &pids {
        let (r, p) = rss_pss(pid);
        rss += r;
        pss += p;
    }
    let ticks_before: u64 = pids.iter().map(|&p| cpu_ticks(p)).sum();
    let watch = Instant::now();
    std::thread::sleep(Duration::from_secs_f64(args.idle_seconds.max(0.1)));
    let ticks: u64 = pids.iter().map(|&p| cpu_ticks(p)).sum::<u64>() - ticks_before;
    let watched = watch.elapsed().as_secs_f64();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let cpu_percent = ticks as f64 / hz / watched * 100.0;
    let alive = fleet
        .0
        .iter_mut()
        .map(|c| matches!(c.try_wait(), Ok(None)))
        .filter(|&up| up)
        .count();
    let teardown = fleet.stop();
    std::thread::sleep(Duration::from_millis(300));
    let mem_after = meminfo("MemAvailable");

    let through_kilnd = match args.via {
        Via::Kilnd if httpd => bail!("--via kilnd launches the idle appliance only"),
        Via::Kilnd => Some(crate::density_kilnd::measure(
            &kiln, &image, args.count, memory,
        )?),
        Via::Direct => None,
    };
    let k = args.count as f64;
    let launches_per_s = k / all_up.as_secs_f64();
    let host_kib_per_vm = mem_before.saturating_sub(mem_up) as f64 / k;
    let doc = json!({
        "count": args.count,
        "appliance": if httpd { "httpd" } else { "idle" },
        "net": if !httpd { "none" } else if tap { "tap" } else { "user" },
        "guest_memory_mib": memory,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "all_ready_s": all_up.as_secs_f64(),
        "launches_per_s": launches_per_s,
        "launch_latency_ms": {
            "median": percentile(&mut latencies, 0.5),
            "p90": percentile(&mut latencies, 0.9),
            "p99": percentile(&mut latencies, 0.99),
            "max": percentile(&mut latencies, 1.0),
        },
        "still_running_after_idle": alive,
        "pss_kib_per_vm": pss as f64 / k,
        "rss_kib_per_vm": rss as f64 / k,
        "host_memavailable_drop_kib_per_vm": host_kib_per_vm,
        "idle_cpu_percent_total": cpu_percent,
        "teardown_s": teardown.as_secs_f64(),
        "memavailable_kib": { "before": mem_before, "all_up": mem_up, "after_teardown": mem_after },
        "kilnd": through_kilnd,
    });
    println!(
        "bench-density: {} {} appliances ({} MiB guests) on {} cores",
        args.count,
        if !httpd {
            "idle"
        } else if tap {
            "httpd (--net tap, each answered a request)"
        } else {
            "httpd (--net user, each answered a request)"
        },
        memory,
        doc["cores"]
    );
    println!(
        "  {:<40} {:>10.1}",
        "launches per second (spawn → all ready)", launches_per_s
    );
    println!(
        "  {:<40} {:>10.3} s",
        "time until every VM was ready",
        all_up.as_secs_f64()
    );
    for q in ["median", "p90", "p99", "max"] {
        println!(
            "  {:<40} {:>10.2} ms",
            format!("launch latency {q}"),
            doc["launch_latency_ms"][q].as_f64().unwrap_or(f64::NAN)
        );
    }
    println!(
        "  {:<40} {:>10}",
        "still running after the idle period", alive
    );
    println!("  {:<40} {:>10.0} KiB", "PSS per VM", pss as f64 / k);
    println!("  {:<40} {:>10.0} KiB", "RSS per VM", rss as f64 / k);
    println!(
        "  {:<40} {:>10.0} KiB",
        "host MemAvailable drop per VM", host_kib_per_vm
    );
    println!(
        "  {:<40} {:>10.2} %",
        "CPU used by the idle fleet", cpu_percent
    );
    println!(
        "  {:<40} {:>10.3} s",
        "kill and reap all",
        teardown.as_secs_f64()
    );
    println!(
        "  {:<40} {:>10} MiB",
        "MemAvailable before / after",
        format!("{} / {}", mem_before / 1024, mem_after / 1024)
    );
    if let Some(d) = &through_kilnd {
        println!(
            "  through kilnd ({} clients sending creates):",
            d["clients"]
        );
        println!(
            "  {:<40} {:>10.1}   (direct {:.1}, {:.2}x)",
            "launches per second",
            d["launches_per_s"].as_f64().unwrap_or(f64::NAN),
            launches_per_s,
            d["launches_per_s"].as_f64().unwrap_or(f64::NAN) / launches_per_s
        );
        for q in ["median", "p99"] {
            println!(
                "  {:<40} {:>10.2} ms (direct {:.2} ms)",
                format!("launch latency {q}"),
                d["launch_latency_ms"][q].as_f64().unwrap_or(f64::NAN),
                doc["launch_latency_ms"][q].as_f64().unwrap_or(f64::NAN)
            );
        }
        println!(
            "  {:<40} {:>10.2} ms",
            "create answer median",
            d["create_answer_ms"]["median"].as_f64().unwrap_or(f64::NAN)
        );
        println!(
            "  {:<40} {:>10.2} ms",
            format!("list of {} appliances", args.count),
            d["list_ms"].as_f64().unwrap_or(f64::NAN)
        );
        println!(
            "  {:<40} {:>10} KiB",
            "kilnd RSS with the fleet up", d["kilnd_rss_kib"]
        );
        println!(
            "  {:<40} {:>10.0} KiB",
            "monitor RSS per appliance",
            d["monitor_rss_kib_per_vm"].as_f64().unwrap_or(f64::NAN)
        );
    }
    let out = paths::bench().join(if httpd {
        "density-httpd.json"
    } else {
        "density.json"
    });
    build::write_atomically(&out, serde_json::to_string_pretty(&doc)?.as_bytes())?;
    println!("  wrote {}", out.display());
    if alive != args.count {
        bail!(
            "{} of {} appliances died while idle",
            args.count - alive,
            args.count
        );
    }
    Ok(())
}
