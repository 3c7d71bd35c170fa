//! `cargo xtask bench-net`: the network, measured side by side with the
//! same work done natively in one run.
//!
//! * HTTP: the httpd appliance (Debian's nginx, manifests/httpd.toml) under
//!   wrk — requests per second and latency p50/p99 — natively on the
//!   loopback, through `--net user` (passt) and through `--net tap` (root
//!   only; in a network namespace so the host's interfaces stay as they
//!   are).
//! * TCP throughput host→guest and guest→host through `--net user`, against
//!   the same echo program natively on the loopback.
//! * Time from `kiln-vmm` starting to the first connection the guest
//!   accepts and answers.
//!
//! A benchmark, not a test: it reports, the goals are for reading. Prints a
//! table and writes `target/bench/net.json`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use xtask::{build, host, paths};

/// Options of `bench-net`.
#[derive(clap::Args, Clone, Debug)]
pub struct NetArgs {
    /// Seconds of each wrk run
    #[arg(long, default_value_t = 5)]
    pub seconds: u32,
    /// wrk's concurrent connections
    #[arg(long, default_value_t = 32)]
    pub connections: u32,
    /// MiB moved in each throughput measurement
    #[arg(long, default_value_t = 256)]
    pub mib: u64,
    /// Starts measured for the time to the first connection
    #[arg(long, default_value_t = 10)]
    pub starts: usize,
}

/// A child killed and reaped when dropped.
pub(crate) struct Guard(pub(crate) Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until `url` answers (curl, optionally inside namespace `ns`).
pub(crate) fn wait_http(ns: Option<&str>, url: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut cmd = netns(ns, "curl");
        let ok = cmd
            .args(["--silent", "--output", "/dev/null", "--max-time", "2", url])
            .status()?
            .success();
        if ok {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{url} never answered");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `program`, run inside network namespace `ns` when given.
fn netns(ns: Option<&str>, program: &str) -> Command {
    match ns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, program]);
            c
        }
        None => Command::new(program),
    }
}

/// A duration as wrk prints it (`812.34us`, `1.23ms`, `2.00s`), in ms.
fn wrk_ms(text: &str) -> Option<f64> {
    let (num, unit) = text
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|i| text.split_at(i))?;
    let v: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => v / 1000.0,
        "ms" => v,
        "s" => v * 1000.0,
        "m" => v * 60_000.0,
        _ => return None,
    })
}

/// Runs wrk against `url`; requests/s and latency p50/p99 (ms).
pub(crate) fn wrk(ns: Option<&str>, url: &str, args: &NetArgs) -> Result<Value> {
    let out = netns(ns, "wrk")
        .args(["--latency", "-t2"])
        .arg(format!("-c{}", args.connections))
        .arg(format!("-d{}s", args.seconds))
        .arg(url)
        .output()
        .context("running wrk (Debian package wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!("wrk failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    }
    let mut rps = None;
    let (mut p50, mut p99) = (None, None);
    let mut errors = 0u64;
    for line in text.lines() {
        let t = line.trim();
        if let Some(v) = t.strip_prefix("Requests/sec:") {
            rps = v.trim().parse::<f64>().ok();
        } else if let Some(v) = t.strip_prefix("50%") {
            p50 = wrk_ms(v.trim());
        } else if let Some(v) = t.strip_prefix("99%") {
            p99 = wrk_ms(v.trim());
        } else if t.starts_with("Non-2xx") || t.starts_with("Socket errors") {
            errors += t
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    Ok(json!({
        "requests_per_s": rps.context("wrk printed no Requests/sec")?,
        "latency_p50_ms": p50,
        "latency_p99_ms": p99,
        "errors": errors,
    }))
}

/// nginx natively, with the appliance's configuration pointed at a
/// scratch prefix; listens on `port`.
fn native_nginx(dir: &Path, port: u16) -> Result<Guard> {
    let site = paths::root().join("manifests/httpd/site");
    std::fs::create_dir_all(dir.join("body"))?;
    let conf = std::fs::read_to_string(paths::root().join("manifests/httpd/nginx.conf"))?
        .replace(
            "listen 80 default_server;",
            &format!("listen 127.0.0.1:{port};"),
        )
        .replace("listen [::]:80 default_server;", "")
        .replace("/run/nginx.pid", &dir.join("nginx.pid").to_string_lossy())
        .replace("/var/lib/nginx/body", &dir.join("body").to_string_lossy())
        .replace("/srv/www", &site.to_string_lossy());
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf)?;
    let child = Command::new("nginx")
        .arg("-c")
        .arg(&path)
        .arg("-p")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting nginx (Debian package nginx-light)")?;
    Ok(Guard(child))
}

/// Builds the httpd image with the release tools.
pub(crate) fn httpd_image(kiln: &Path, dir: &Path) -> Result<PathBuf> {
    let image = dir.join("httpd.kiln");
    build::run(
        Command::new(kiln)
            .arg("build")
            .arg(paths::root().join("manifests/httpd.toml"))
            .arg("-o")
            .arg(&image)
            .arg("--kernel")
            .arg(paths::kernel()),
    )?;
    Ok(image)
}

/// The echo program in `mode`: natively (`vmm` None) or in kiln-vmm with
/// `--net user -p PORT:7`. Returns it once it listens, and the port.
fn echo(vmm: Option<&Path>, mode: &str) -> Result<(Guard, u16)> {
    let port = free_port()?;
    let program = paths::programs().join("echo");
    let mut cmd = match vmm {
        Some(vmm) => {
            let mut c = Command::new(vmm);
            c.arg("--kernel")
                .arg(paths::kernel())
                .args([
                    "--memory",
                    "256",
                    "-p",
                    &format!("127.0.0.1:{port}:7"),
                    "--app",
                ])
                .arg(&program)
                .args(["--", mode, "7"]);
            c
        }
        None => {
            let mut c = Command::new(&program);
            c.args([mode, &port.to_string()]);
            c
        }
    };
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the echo program")?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("no stdout")?).read_line(&mut line)?;
    if !line.starts_with("listening") {
        bail!("the echo program did not start: {line}");
    }
    Ok((Guard(child), port))
}

fn connect(port: u16) -> Result<TcpStream> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(s) => return Ok(s),
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(e).context(format!("connecting to port {port}")),
        }
    }
}

/// MB/s of `mib` MiB sent to a sink on `port` (host → program).
fn to_sink(port: u16, mib: u64) -> Result<f64> {
    let mut s = connect(port)?;
    let block = vec![0x5au8; 1 << 20];
    let t = Instant::now();
    for _ in 0..mib {
        s.write_all(&block)?;
    }
    s.shutdown(std::net::Shutdown::Write)?;
    let mut count = [0u8; 8];
    s.read_exact(&mut count)?;
    let secs = t.elapsed().as_secs_f64();
    if u64::from_le_bytes(count) != mib << 20 {
        bail!(
            "the sink counted {} bytes of {}",
            u64::from_le_bytes(count),
            mib << 20
        );
    }
    Ok((mib << 20) as f64 / secs / 1e6)
}

/// MB/s of `mib` MiB read from a source on `port` (program → host).
fn from_source(port: u16, mib: u64) -> Result<f64> {
    let mut s = connect(port)?;
    s.write_all(&(mib << 20).to_le_bytes())?;
    let mut buf = vec![0u8; 1 << 20];
    let mut got = 0u64;
    let t = Instant::now();
    while got < mib << 20 {
        let n = s.read(&mut buf)?;
        if n == 0 {
            bail!("the source stopped after {got} bytes");
        }
        got += n as u64;
    }
    Ok(got as f64 / t.elapsed().as_secs_f64() / 1e6)
}

/// ms from kiln-vmm's start to the first answered connection.
fn first_connection(vmm: &Path) -> Result<f64> {
    let port = free_port()?;
    let t = Instant::now();
    let _vm = Guard(
        Command::new(vmm)
            .arg("--kernel")
            .arg(paths::kernel())
            .args(["-p", &format!("127.0.0.1:{port}:7"), "--app"])
            .arg(paths::programs().join("echo"))
            .args(["--", "tcp", "7"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    loop {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            s.set_read_timeout(Some(Duration::from_millis(20)))?;
            let mut b = [0u8; 1];
            if s.write_all(b"x").is_ok() && s.read_exact(&mut b).is_ok() {
                return Ok(t.elapsed().as_secs_f64() * 1e3);
            }
        }
        if t.elapsed() > Duration::from_secs(20) {
            bail!("no connection was answered in 20 s");
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A network namespace with its loopback up, removed when dropped.
pub(crate) struct Netns(String);

impl Netns {
    /// A fresh namespace with its loopback up.
    pub(crate) fn new() -> Result<Netns> {
        let name = format!("kiln-bench-{}", std::process::id());
        build::run(Command::new("ip").args(["netns", "add", &name]))?;
        let ns = Netns(name);
        build::run(
            Command::new("ip").args(["netns", "exec", &ns.0, "ip", "link", "set", "lo", "up"]),
        )?;
        Ok(ns)
    }

    /// Its name (for `ip netns exec`).
    pub(crate) fn name(&self) -> &str {
        &self.0
    }
}

/// Moves the calling thread (only it) into network namespace `name`.
pub(crate) fn enter_netns(name: &str) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(format!("/var/run/netns/{name}"))?;
    // SAFETY: setns with a descriptor of a network namespace changes the
    // calling thread's namespace and nothing else.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Runs the benchmark.
pub fn run(args: &NetArgs) -> Result<()> {
    if !host::kvm_available() {
        bail!("bench-net needs /dev/kvm");
    }
    for tool in ["wrk", "nginx", "passt", "curl"] {
        if !host::has(tool) {
            bail!("bench-net needs {tool}: run `cargo xtask deps`");
        }
    }
    build::kernel()?;
    build::programs()?;
    let kiln = build::kiln_release()?;
    let vmm = build::vmm_release()?;
    let dir = paths::bench().join("net");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let image = httpd_image(&kiln, &dir)?;

    eprintln!("bench-net: nginx natively");
    let port = free_port()?;
    let native = {
        let _nginx = native_nginx(&dir.join("native"), port)?;
        let url = format!("http://127.0.0.1:{port}/");
        wait_http(None, &url)?;
        wrk(None, &url, args)?
    };

    eprintln!("bench-net: nginx in kiln, --net user");
    let port = free_port()?;
    let user = {
        let _vm = Guard(
            Command::new(&kiln)
                .args(["run", "-p", &format!("127.0.0.1:{port}:80")])
                .arg(&image)
                .env("KILN_HOME", dir.join("home"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
        let url = format!("http://127.0.0.1:{port}/");
        wait_http(None, &url)?;
        wrk(None, &url, args)?
    };

    // SAFETY: geteuid has no preconditions.
    let tap = if unsafe { libc::geteuid() } == 0 {
        eprintln!("bench-net: nginx in kiln, --net tap (in a network namespace)");
        let ns = Netns::new()?;
        let _vm = Guard(
            Command::new("ip")
                .args(["netns", "exec", &ns.0])
                .arg(&kiln)
                .args(["run", "--net", "tap", "--ip", "10.79.0.2/24"])
                .arg(&image)
                .env("KILN_HOME", dir.join("home"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        );
        let url = "http://10.79.0.2/";
        wait_http(Some(&ns.0), url)?;
        Some(wrk(Some(&ns.0), url, args)?)
    } else {
        eprintln!("bench-net: --net tap skipped (needs root)");
        None
    };

    eprintln!("bench-net: TCP throughput, {} MiB each way", args.mib);
    let mut throughput = serde_json::Map::new();
    for (name, vm) in [("native", None), ("kiln_user", Some(vmm.as_path()))] {
        let (_sink, port) = echo(vm, "sink")?;
        let up = to_sink(port, args.mib)?;
        let (_source, port) = echo(vm, "source")?;
        let down = from_source(port, args.mib)?;
        throughput.insert(
            name.into(),
            json!({ "host_to_program_mb_s": up, "program_to_host_mb_s": down }),
        );
    }

    eprintln!(
        "bench-net: time to the first answered connection ({} starts)",
        args.starts
    );
    let mut starts = Vec::new();
    for _ in 0..args.starts {
        starts.push(first_connection(&vmm)?);
    }

    let ratio = |v: &Value| {
        v["requests_per_s"].as_f64().unwrap_or(0.0)
            / native["requests_per_s"].as_f64().unwrap_or(1.0)
    };
    let doc = json!({
        "wrk": { "seconds": args.seconds, "connections": args.connections },
        "http": {
            "native": native,
            "kiln_user": user,
            "kiln_tap": tap,
            "ratio_user_to_native": ratio(&user),
            "ratio_tap_to_native": tap.as_ref().map(ratio),
        },
        "tcp_throughput": throughput,
        "first_connection_ms": { "median": median(starts.clone()), "all": starts },
    });
    print_table(&doc);
    let out = paths::bench().join("net.json");
    build::write_atomically(&out, serde_json::to_string_pretty(&doc)?.as_bytes())?;
    eprintln!("bench-net: wrote {}", out.display());
    Ok(())
}

fn print_table(doc: &Value) {
    let h = &doc["http"];
    println!(
        "\nHTTP (nginx, wrk {} s, {} connections)",
        doc["wrk"]["seconds"], doc["wrk"]["connections"]
    );
    println!(
        "{:<14} {:>12} {:>10} {:>10} {:>8}",
        "", "requests/s", "p50 ms", "p99 ms", "errors"
    );
    for (name, key) in [
        ("native", "native"),
        ("kiln user", "kiln_user"),
        ("kiln tap", "kiln_tap"),
    ] {
        let v = &h[key];
        if v.is_null() {
            println!("{name:<14} {:>12}", "(skipped)");
            continue;
        }
        println!(
            "{name:<14} {:>12.0} {:>10.2} {:>10.2} {:>8}",
            v["requests_per_s"].as_f64().unwrap_or(0.0),
            v["latency_p50_ms"].as_f64().unwrap_or(f64::NAN),
            v["latency_p99_ms"].as_f64().unwrap_or(f64::NAN),
            v["errors"]
        );
    }
    println!(
        "kiln/native requests/s: user {:.3}, tap {}",
        h["ratio_user_to_native"].as_f64().unwrap_or(0.0),
        h["ratio_tap_to_native"]
            .as_f64()
            .map_or_else(|| "(skipped)".into(), |r| format!("{r:.3}"))
    );
    println!("\nTCP throughput (MB/s)");
    println!("{:<14} {:>16} {:>16}", "", "host->program", "program->host");
    for (name, key) in [("native", "native"), ("kiln user", "kiln_user")] {
        let v = &doc["tcp_throughput"][key];
        println!(
            "{name:<14} {:>16.1} {:>16.1}",
            v["host_to_program_mb_s"].as_f64().unwrap_or(0.0),
            v["program_to_host_mb_s"].as_f64().unwrap_or(0.0)
        );
    }
    println!(
        "\nkiln-vmm start to the first answered connection: {:.1} ms (median)",
        doc["first_connection_ms"]["median"]
            .as_f64()
            .unwrap_or(f64::NAN)
    );
}
