//! The body spool at its limits: a full disk, and bodies left behind by a crash.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common;
use crate::common::Sink;
use crate::support::{dns, message, node, sender, sink_args, submit, submit_one, wait_for};

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. "1m") at `at`; `None` when this machine does not let us
    /// (not root, no mount permission).
    fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).ok()?;
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        mounted.then(|| Tmpfs(at.to_owned()))
    }

    fn resize(&self, size: &str) {
        let status = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "remount {} with size={size}",
            self.0.display()
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Files under the spool, in every node's sub-directory.
fn spooled(spool: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for node in std::fs::read_dir(spool).into_iter().flatten().flatten() {
        files.extend(
            std::fs::read_dir(node.path())
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path()),
        );
    }
    files
}

/// The spool is a 1 MiB tmpfs and the remote keeps deferring, so bodies of 400 KiB stay: the
/// first messages are accepted, the one that does not fit gets `451 4.3.0` (never 250), and so
/// does the next; nothing half-written stays behind. With room again (the tmpfs grown), the
/// next message is accepted.
#[test]
fn a_full_spool_answers_451_never_250() {
    if !common::require_support() {
        return;
    }
    let dir = common::TestDir::new("mailmux-faults-spool-full");
    let spool_dir = dir.path().join("spool");
    let Some(tmpfs) = Tmpfs::mount(&spool_dir, "1m") else {
        common::require("root, to mount a small tmpfs as the spool", false);
        return;
    };
    let dns = dns(&[]);
    let log = dir.path().join("sink.jsonl");
    let sink = Sink::start(&sink_args(&log, &["--tempfail-rcpt", "^held@:100000"]));
    let spool = spool_dir.display().to_string();
    let mm = node(
        &dns,
        sink.port(),
        &[("MAILMUX_QUEUE__SPOOL_DIR", spool.as_str())],
        None,
    );
    let acct = sender(&mm);
    let mut body = message("spool-full", "held@sink.test");
    let line = [b"x".repeat(78), b"\r\n".to_vec()].concat();
    for _ in 0..5000 {
        body.extend_from_slice(&line);
    }

    let mut codes = Vec::new();
    let mut first_refusal = None;
    for _ in 0..6 {
        let report = submit(&mm, &acct, &["held@sink.test"], &body, 1);
        let code = report["code"].as_u64().unwrap_or(0);
        codes.push(code);
        if code != 250 && first_refusal.is_none() {
            first_refusal = Some(report);
        }
    }
    let accepted = codes.iter().filter(|c| **c == 250).count();
    assert!(accepted >= 1, "the first 400 KiB fit in 1 MiB: {codes:?}");
    let refusal = first_refusal.unwrap_or_else(|| panic!("a full spool never refused: {codes:?}"));
    let text = refusal["text"].as_str().unwrap_or_default();
    assert_eq!(refusal["code"], 451, "{refusal}");
    assert!(text.starts_with("4.3.0"), "{refusal}");
    let first_451 = codes.iter().position(|c| *c != 250).unwrap();
    assert!(
        codes[first_451..].iter().all(|c| *c == 451),
        "once full, never 250 again until there is room: {codes:?}"
    );
    assert_eq!(
        spooled(&spool_dir).len(),
        accepted,
        "one body per accepted message, no partial file of a refused one"
    );

    tmpfs.resize("8m");
    submit_one(&mm, &acct, &["held@sink.test"], &body);
    assert_eq!(spooled(&spool_dir).len(), accepted + 1);
}

/// Bodies no row points at (a crash between a body's write and its commit, or between a
/// message's end and its body's deletion) are deleted when the node starts; the body of a
/// message still queued is kept and delivered, byte for byte, after the restart; another node's
/// recent file in a shared spool is left alone.
#[test]
fn orphaned_bodies_are_swept_at_start_up() {
    if !common::require_support() {
        return;
    }
    let dir = common::TestDir::new("mailmux-faults-spool-sweep");
    let dns = dns(&[]);
    let log = dir.path().join("sink.jsonl");
    // The remote defers the first tries, so the message is still queued across the restart.
    let sink = Sink::start(&sink_args(&log, &["--tempfail-rcpt", "^later@:3"]));
    let mut mm = node(&dns, sink.port(), &[], None);
    let acct = sender(&mm);
    let body = message("spool-sweep", "later@sink.test");
    submit_one(&mm, &acct, &["later@sink.test"], &body);
    mm.kill9();

    let spool = mm.data_dir().join("spool");
    let node_id = std::fs::read_to_string(mm.data_dir().join("node.id")).unwrap();
    let own = spool.join(node_id.trim());
    let queued = spooled(&spool);
    assert_eq!(queued.len(), 1, "{queued:?}");
    let orphan = own.join("0000000000000000orph");
    std::fs::write(&orphan, b"a body whose row never committed").unwrap();
    let other_node = spool.join("n_othernode000000");
    std::fs::create_dir_all(&other_node).unwrap();
    let theirs = other_node.join("0000000000000000live");
    std::fs::write(&theirs, b"another node's body, its row on the way").unwrap();

    mm.restart();
    assert!(!orphan.exists(), "the orphan is swept at start-up");
    assert!(queued[0].exists(), "a queued message's body is kept");
    assert!(
        theirs.exists(),
        "another node's recent file is not ours to judge"
    );

    let got = sink.wait_for_messages(1, Duration::from_secs(60));
    assert!(
        got[0].raw.ends_with(b"\r\n\r\nhello from spool-sweep\r\n"),
        "delivered from the spool after the restart"
    );
    wait_for(
        "the delivered body deleted",
        Duration::from_secs(30),
        || match queued[0].exists() {
            false => Ok(()),
            true => Err("still there".to_string()),
        },
    );
}
