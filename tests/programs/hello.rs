//! The Rust greeting program of the boot tests (linked with crt-static,
//! which makes a static-pie): greeting, arguments, one environment variable.
fn main() {
    let greeting = std::env::var("GREETING").unwrap_or_else(|_| "no GREETING".into());
    println!("hello from kiln (rust, {greeting})");
    for (i, arg) in std::env::args().enumerate() {
        println!("argv[{i}] = {arg}");
    }
}
