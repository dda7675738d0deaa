//! Where things are (the repository, the support scripts, Python, the mailmux binary) and whether a tool the test needs is installed: skipped outside CI, failed under `CI=true`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The repository root (the root package's manifest dir).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `tests/support/`, where the Python helpers and `pg.sh` live.
pub fn support_dir() -> PathBuf {
    repo_root().join("tests").join("support")
}

/// The Python with the test requirements: `$MAILMUX_TEST_PYTHON`, else `<repo>/.venv/bin/python3`
/// (created by `.ci/run`).
pub fn python() -> PathBuf {
    match std::env::var_os("MAILMUX_TEST_PYTHON") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => repo_root().join(".venv").join("bin").join("python3"),
    }
}

/// The `mailmux` binary under test (built by cargo for this test run).
pub fn mailmux_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mailmux"))
}

fn in_ci() -> bool {
    matches!(
        std::env::var("CI")
            .map(|v| v.to_ascii_lowercase())
            .as_deref(),
        Ok("true" | "1" | "yes")
    )
}

fn current_test() -> String {
    std::thread::current()
        .name()
        .unwrap_or("<unnamed test>")
        .to_string()
}

/// Reports a missing tool: panics under `CI=true`, else prints `SKIPPED: ...` and returns false
/// so the caller can `return`.
fn missing(what: &str) -> bool {
    if in_ci() {
        panic!(
            "{}: {what} is required but not installed (CI=true; .ci/run installs it)",
            current_test()
        );
    }
    eprintln!(
        "SKIPPED: {}: {what} not installed (run .ci/run or install it)",
        current_test()
    );
    false
}

/// Finds an executable: an absolute/relative path as is, else on `PATH`, else (for PostgreSQL's
/// server tools, which Debian keeps off `PATH`) in the newest `/usr/lib/postgresql/*/bin`.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let is_exe = |p: &Path| p.is_file();
    if name.contains('/') {
        let p = PathBuf::from(name);
        return is_exe(&p).then_some(p);
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if is_exe(&p) {
                return Some(p);
            }
        }
    }
    pg_bindir().map(|d| d.join(name)).filter(|p| is_exe(p))
}

/// The newest PostgreSQL server binary dir (`/usr/lib/postgresql/<v>/bin` on Debian).
pub fn pg_bindir() -> Option<PathBuf> {
    let mut dirs: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    dirs.sort();
    dirs.pop().map(|(_, d)| d)
}

/// True when `name` can be run. Missing: panics under `CI=true`, else prints
/// `SKIPPED: <test>: <name> not installed ...` and returns false:
/// `if !require_tool("swaks") { return; }`
pub fn require_tool(name: &str) -> bool {
    find_tool(name).is_some() || missing(name)
}

/// True when `available`; else reported like a missing tool ([`require_tool`]) under the name
/// `what`: for what a test needs that is not a program (root, a tmpfs mount).
pub fn require(what: &str, available: bool) -> bool {
    available || missing(what)
}

/// True when the test Python exists and can import `module` (e.g. `"aiosmtpd"`, `"dkim"`).
/// Missing: as [`require_tool`].
pub fn require_python_module(module: &str) -> bool {
    let py = python();
    if !py.is_file() {
        return missing(&format!("python venv ({})", py.display()));
    }
    let ok = Command::new(&py)
        .args(["-c", &format!("import {module}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok || missing(&format!("python module {module} (in {})", py.display()))
}
