//! Debian's Python 3 in an image: the interpreter and exactly the modules a
//! script loads, found by running the script natively once. Used by
//! bench-apps (a benchmark script) and compat (Python cases).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// Where Debian installs a program; an error naming the package when it is
/// missing.
pub fn debian_program(path: &str, package: &str) -> Result<PathBuf> {
    let p = PathBuf::from(path);
    if !p.is_file() {
        bail!("{path} is missing: install Debian's {package} (cargo xtask deps)");
    }
    Ok(p)
}

/// Debian's versioned interpreter that `/usr/bin/python3` leads to (3.11
/// on Debian 12). Not whatever `python3` is first on PATH: the image must
/// hold a Debian program and its Debian modules.
pub fn interpreter() -> Result<PathBuf> {
    Ok(std::fs::canonicalize(debian_program(
        "/usr/bin/python3",
        "python3",
    )?)?)
}

/// The files a script needs besides the interpreter.
pub struct Modules {
    /// Source and byte-code files, each at its host path in the image.
    pub files: Vec<PathBuf>,
    /// Extension modules (shared objects): the image's `libraries`, so that
    /// their own libraries come too.
    pub extensions: Vec<String>,
}

/// The modules `python` loads to run `script` (with `args`), found by
/// running it natively once (`-I`: no user site, no environment).
pub fn modules(python: &Path, script: &Path, args: &[String]) -> Result<Modules> {
    const LIST: &str = "import runpy, sys\n\
        sys.argv = sys.argv[1:]\n\
        try:\n\
        \x20   runpy.run_path(sys.argv[0], run_name='__main__')\n\
        except SystemExit:\n\
        \x20   pass\n\
        for m in list(sys.modules.values()):\n\
        \x20   for a in ('__file__', '__cached__'):\n\
        \x20       f = getattr(m, a, None)\n\
        \x20       if f: print(f, file=sys.stderr)\n";
    let out = Command::new(python)
        .args(["-I", "-c", LIST])
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .output()
        .with_context(|| format!("running {} natively to list its modules", script.display()))?;
    if !out.status.success() {
        bail!(
            "{} failed natively: {}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut files = Vec::new();
    let mut extensions = Vec::new();
    for line in String::from_utf8_lossy(&out.stderr).lines() {
        let p = PathBuf::from(line);
        if !p.is_absolute() || !p.is_file() || p == script {
            continue;
        }
        if line.ends_with(".so") {
            extensions.push(line.to_owned());
        } else {
            files.push(p);
        }
    }
    files.sort();
    files.dedup();
    extensions.sort();
    extensions.dedup();
    Ok(Modules { files, extensions })
}
