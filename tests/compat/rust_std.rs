//! std::thread, std::sync, std::fs and std::time in an ordinary Rust
//! program (dynamically linked against glibc, as cargo builds it).

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn main() {
    // Threads sharing a counter, a map behind a mutex, and a channel.
    let counter = Arc::new(AtomicU64::new(0));
    let words = Arc::new(Mutex::new(BTreeMap::new()));
    let text = fs::read_to_string("/data/words.txt").expect("reading /data/words.txt");
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let (tx, rx) = mpsc::channel();
    let handles: Vec<_> = lines
        .chunks(2)
        .enumerate()
        .map(|(i, chunk)| {
            let chunk = chunk.to_vec();
            let counter = counter.clone();
            let words = words.clone();
            let tx = tx.clone();
            thread::Builder::new()
                .name(format!("worker-{i}"))
                .spawn(move || {
                    for line in &chunk {
                        for w in line.split_whitespace() {
                            counter.fetch_add(1, Ordering::Relaxed);
                            *words.lock().unwrap().entry(w.to_owned()).or_insert(0) += 1;
                        }
                    }
                    tx.send((i, thread::current().name().unwrap_or("?").to_owned()))
                        .unwrap();
                    chunk.len()
                })
                .unwrap()
        })
        .collect();
    drop(tx);
    let total_lines: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let mut names: Vec<(usize, String)> = rx.iter().collect();
    names.sort();
    println!("lines {total_lines}, words {}", counter.load(Ordering::Relaxed));
    println!("threads reported: {:?}", names.iter().map(|n| n.1.as_str()).collect::<Vec<_>>());
    let top: Vec<_> = words
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, &n)| n > 1)
        .map(|(w, n)| format!("{w}={n}"))
        .collect();
    println!("repeated words: {}", top.join(" "));

    // A barrier and a condition variable.
    let barrier = Arc::new(Barrier::new(4));
    let leaders: usize = (0..4)
        .map(|_| {
            let b = barrier.clone();
            thread::spawn(move || b.wait().is_leader())
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| usize::from(h.join().unwrap()))
        .sum();
    println!("barrier leaders: {leaders}");
    let pair = Arc::new((Mutex::new(false), Condvar::new()));
    let p2 = pair.clone();
    let waker = thread::spawn(move || {
        thread::sleep(Duration::from_millis(20));
        *p2.0.lock().unwrap() = true;
        p2.1.notify_all();
    });
    let (lock, cv) = &*pair;
    let ready = cv
        .wait_timeout_while(lock.lock().unwrap(), Duration::from_secs(5), |r| !*r)
        .unwrap();
    println!("condvar woken: {}, timed out: {}", *ready.0, ready.1.timed_out());
    drop(ready);
    waker.join().unwrap();

    // Time.
    let start = Instant::now();
    thread::sleep(Duration::from_millis(30));
    let slept = start.elapsed();
    println!(
        "slept 30 ms: {}",
        slept >= Duration::from_millis(30) && slept < Duration::from_secs(2)
    );
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    println!("wall clock after 2024: {}", now.as_secs() > 1_704_067_200);

    // Files: create, append, read back by line, rename, list, remove.
    fs::create_dir_all("/tmp/rust/sub").unwrap();
    {
        let mut f = fs::File::create("/tmp/rust/out.txt").unwrap();
        for i in 0..5 {
            writeln!(f, "row {i}").unwrap();
        }
    }
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open("/tmp/rust/out.txt")
        .unwrap();
    writeln!(f, "appended").unwrap();
    drop(f);
    let rows: Vec<String> = BufReader::new(fs::File::open("/tmp/rust/out.txt").unwrap())
        .lines()
        .map(Result::unwrap)
        .collect();
    println!("file rows: {}, last {:?}", rows.len(), rows.last().unwrap());
    fs::rename("/tmp/rust/out.txt", "/tmp/rust/sub/moved.txt").unwrap();
    let meta = fs::metadata("/tmp/rust/sub/moved.txt").unwrap();
    println!("moved: {} bytes, is_file {}", meta.len(), meta.is_file());
    let mut entries: Vec<String> = fs::read_dir("/tmp/rust")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    println!("dir: {entries:?}");
    match fs::read("/tmp/rust/missing") {
        Ok(_) => println!("missing file read?"),
        Err(e) => println!("missing file: {:?}", e.kind()),
    }
    fs::remove_dir_all("/tmp/rust").unwrap();
    println!("removed: {}", !std::path::Path::new("/tmp/rust").exists());
    let args: Vec<String> = std::env::args().collect();
    println!("args: {:?}", &args[1..]);
    std::process::exit(if args.len() > 1 { 7 } else { 0 });
}
