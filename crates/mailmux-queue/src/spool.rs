//! The body spool: every queued message's body in a file of its own, written once on its way to
//! the `250`, so the database holds only the small rows that point at it.
//!
//! Why: in the database, a body was written twice (SQLite's WAL, then the database file at the
//! checkpoint; Postgres's WAL, then its heap), so a 100 KiB message cost 201 KiB of disk
//! writes. Here it is written once, and its row (envelope, recipients, `body_path`) stays small.
//!
//! The order that keeps a row from ever pointing at a missing body: the session writes the file
//! and `fdatasync`s it, the directory entry is made durable (one directory `fsync` covers every
//! file created before it started, so concurrent sessions share it: [`DirSync`]), and only then
//! does the queue's group commit write the row. A crash before that commit leaves a file no row
//! names: the sweep at start-up (and hourly) deletes it. A finished message's file is deleted
//! right after the commit that finished it; a crash in between leaves an unreferenced file for
//! the sweep too.
//!
//! Several nodes: each writes into its own sub-directory, `<spool_dir>/<node_id>/<queue id>`,
//! and rows store that relative path, so whichever node delivers a message reads the body from
//! the shared directory. A node's start-up sweep touches only its own sub-directory (no other
//! process writes there, and its own listeners are not open yet); the hourly sweep considers
//! every node's files, but only those older than [`SWEEP_GRACE`], which no body whose row is
//! still on its way ever is.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use mailmux_core::QueueId;
use tracing::warn;

/// How old an unreferenced file of another node must be before the hourly sweep deletes it: far
/// longer than any write-then-commit takes, so a body whose row is still on its way is safe.
pub const SWEEP_GRACE: Duration = Duration::from_secs(3600);

pub struct Spool {
    root: PathBuf,
    /// This node's sub-directory name (its node id).
    node: String,
    dir_sync: DirSync,
}

impl Spool {
    /// Opens (creating) `root` and this node's sub-directory in it, both made durable.
    pub fn open(root: &Path, node: &str) -> std::io::Result<Spool> {
        if node.is_empty() || node.contains(['/', '\\']) || node.starts_with('.') {
            return Err(std::io::Error::new(
                ErrorKind::InvalidInput,
                format!("node id {node:?} cannot name a spool directory"),
            ));
        }
        let own = root.join(node);
        std::fs::create_dir_all(&own)?;
        // The new directories' entries in their parents.
        File::open(root)?.sync_all()?;
        if let Some(parent) = root.parent().filter(|p| !p.as_os_str().is_empty()) {
            File::open(parent)?.sync_all()?;
        }
        Ok(Spool {
            root: root.to_owned(),
            node: node.to_owned(),
            dir_sync: DirSync::new(own),
        })
    }

    /// The path a body of this node's is stored under, relative to the spool (what rows keep).
    pub fn body_path(&self, id: &QueueId) -> String {
        format!("{}/{}", self.node, id.0)
    }

    /// Writes `body` as message `id`'s file and makes it durable (data and directory entry);
    /// returns the path to store in the row. On error nothing is left behind.
    pub async fn write(&self, id: &QueueId, body: Arc<Vec<u8>>) -> std::io::Result<String> {
        let relative = self.body_path(id);
        let path = self.root.join(&relative);
        let written = tokio::task::spawn_blocking(move || write_file(&path, &body))
            .await
            .map_err(std::io::Error::other)?;
        written?;
        self.dir_sync.sync().await?;
        Ok(relative)
    }

    /// The body stored under `relative` (a path from [`Spool::write`], possibly another node's).
    pub async fn read(&self, relative: &str) -> std::io::Result<Vec<u8>> {
        let path = self.resolve(relative)?;
        tokio::task::spawn_blocking(move || std::fs::read(path))
            .await
            .map_err(std::io::Error::other)?
    }

    /// Deletes the bodies under `relatives` (finished messages, or bodies whose rows were never
    /// written). Errors are logged: an undeleted file is an orphan the sweep removes.
    pub async fn remove(&self, relatives: Vec<String>) {
        if relatives.is_empty() {
            return;
        }
        let paths: Vec<PathBuf> = relatives
            .iter()
            .filter_map(|r| match self.resolve(r) {
                Ok(path) => Some(path),
                Err(error) => {
                    warn!(%error, path = r, "not a spool path; nothing deleted");
                    None
                }
            })
            .collect();
        let removed = tokio::task::spawn_blocking(move || {
            for path in paths {
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(error) => {
                        warn!(%error, path = %path.display(), "cannot delete a spooled body")
                    }
                }
            }
        })
        .await;
        if let Err(error) = removed {
            warn!(%error, "deleting spooled bodies failed");
        }
    }

    /// The files a sweep may consider, as relative paths: at start-up (`older_than: None`,
    /// nothing is being written yet) every file of this node's; later, every node's files last
    /// modified longer than `older_than` ago (a body whose row is still on its way is younger).
    pub async fn candidates(&self, older_than: Option<Duration>) -> std::io::Result<Vec<String>> {
        let root = self.root.clone();
        let node = self.node.clone();
        tokio::task::spawn_blocking(move || list(&root, &node, older_than))
            .await
            .map_err(std::io::Error::other)?
    }

    /// `root/relative`, refusing anything that could leave the spool (`..`, absolute paths).
    fn resolve(&self, relative: &str) -> std::io::Result<PathBuf> {
        let mut parts = relative.split('/');
        let (Some(node), Some(file), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad_path(relative));
        };
        let fine = |s: &str| !s.is_empty() && !s.starts_with('.') && !s.contains('\\');
        if !fine(node) || !fine(file) {
            return Err(bad_path(relative));
        }
        Ok(self.root.join(node).join(file))
    }
}

fn bad_path(relative: &str) -> std::io::Error {
    std::io::Error::new(
        ErrorKind::InvalidData,
        format!("{relative:?} is not a spool path"),
    )
}

fn write_file(path: &Path, body: &[u8]) -> std::io::Result<()> {
    // create_new: a queue id is never reused, so an existing file is a bug, not a body to
    // overwrite (nor to delete below).
    let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
    let written = file.write_all(body).and_then(|()| file.sync_data());
    if written.is_err() {
        // A partial file (disk full, I/O error) must not linger until the sweep.
        drop(file);
        let _ = std::fs::remove_file(path);
    }
    written
}

fn list(root: &Path, node: &str, older_than: Option<Duration>) -> std::io::Result<Vec<String>> {
    let mut out = Vec::new();
    let now = SystemTime::now();
    for dir in std::fs::read_dir(root)? {
        let dir = dir?;
        let name = dir.file_name().to_string_lossy().into_owned();
        if !dir.file_type()?.is_dir() || (older_than.is_none() && name != node) {
            continue;
        }
        for file in std::fs::read_dir(dir.path())? {
            let file = file?;
            if let Some(limit) = older_than {
                let age = file
                    .metadata()?
                    .modified()
                    .ok()
                    .and_then(|modified| now.duration_since(modified).ok());
                if age.is_none_or(|age| age < limit) {
                    continue;
                }
            }
            out.push(format!("{name}/{}", file.file_name().to_string_lossy()));
        }
    }
    Ok(out)
}

/// Makes new directory entries durable with as few directory `fsync`s as possible: whoever
/// syncs covers every file created before the sync started, so sessions that finished their
/// files meanwhile wait for that one sync instead of making their own.
struct DirSync {
    dir: PathBuf,
    /// Tickets handed out: one per file created (taken after its creation).
    requested: AtomicU64,
    /// Every ticket up to this one is covered by a completed directory sync.
    synced: AtomicU64,
    /// One sync at a time; the others wait and usually find themselves covered.
    turn: tokio::sync::Mutex<()>,
}

impl DirSync {
    fn new(dir: PathBuf) -> DirSync {
        DirSync {
            dir,
            requested: AtomicU64::new(0),
            synced: AtomicU64::new(0),
            turn: tokio::sync::Mutex::new(()),
        }
    }

    async fn sync(&self) -> std::io::Result<()> {
        let ticket = self.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let _turn = self.turn.lock().await;
        if self.synced.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        // Every ticket taken so far belongs to a file created before this read, hence before
        // the sync below starts: the sync covers them all.
        let covered = self.requested.load(Ordering::SeqCst);
        let dir = self.dir.clone();
        tokio::task::spawn_blocking(move || File::open(&dir)?.sync_all())
            .await
            .map_err(std::io::Error::other)??;
        self.synced.fetch_max(covered, Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_root(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mailmux-spool-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[tokio::test]
    async fn write_read_remove_round_trip() {
        let root = temp_root("round-trip");
        let spool = Spool::open(&root, "node-a").unwrap();
        let id = QueueId("0123456789abcdef0123".into());
        let body = Arc::new(b"Subject: x\r\n\r\nbody \x00\xff bytes\r\n".to_vec());
        let path = spool.write(&id, body.clone()).await.unwrap();
        assert_eq!(path, "node-a/0123456789abcdef0123");
        assert_eq!(spool.read(&path).await.unwrap(), *body);
        // A queue id is written once.
        assert!(spool.write(&id, body.clone()).await.is_err());
        assert_eq!(
            spool.read(&path).await.unwrap(),
            *body,
            "the first body is intact"
        );
        spool.remove(vec![path.clone()]).await;
        assert_eq!(
            spool.read(&path).await.unwrap_err().kind(),
            ErrorKind::NotFound
        );
        // Removing what is gone is fine.
        spool.remove(vec![path]).await;
        let _ = std::fs::remove_dir_all(&root);
    }

    #[tokio::test]
    async fn paths_cannot_leave_the_spool() {
        let root = temp_root("paths");
        let spool = Spool::open(&root, "node-a").unwrap();
        for bad in [
            "../x",
            "node-a/../../etc/passwd",
            "/etc/passwd",
            "a",
            "a/b/c",
            "a/.x",
            "",
        ] {
            assert_eq!(
                spool.read(bad).await.unwrap_err().kind(),
                ErrorKind::InvalidData,
                "{bad}"
            );
        }
        assert!(Spool::open(&root, "../up").is_err());
        let _ = std::fs::remove_dir_all(&root);
    }

    #[tokio::test]
    async fn sweep_candidates_spare_recent_and_other_nodes_files() {
        let root = temp_root("sweep");
        let a = Spool::open(&root, "node-a").unwrap();
        let b = Spool::open(&root, "node-b").unwrap();
        let mine = a
            .write(&QueueId("aaaa".into()), Arc::new(b"a".to_vec()))
            .await
            .unwrap();
        let theirs = b
            .write(&QueueId("bbbb".into()), Arc::new(b"b".to_vec()))
            .await
            .unwrap();
        // Start-up: every file of our own, none of another node's.
        assert_eq!(a.candidates(None).await.unwrap(), vec![mine.clone()]);
        // Later: nothing written in the last grace period, ours or theirs.
        assert!(a.candidates(Some(SWEEP_GRACE)).await.unwrap().is_empty());
        let mut any_age = a.candidates(Some(Duration::ZERO)).await.unwrap();
        any_age.sort();
        assert_eq!(any_age, vec![mine, theirs]);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[tokio::test]
    async fn concurrent_writers_share_directory_syncs() {
        let root = temp_root("dirsync");
        let spool = Arc::new(Spool::open(&root, "n").unwrap());
        let writers: Vec<_> = (0..32)
            .map(|n| {
                let spool = spool.clone();
                tokio::spawn(async move {
                    spool
                        .write(&QueueId(format!("id{n}")), Arc::new(vec![b'x'; 1000]))
                        .await
                })
            })
            .collect();
        for writer in writers {
            writer.await.unwrap().unwrap();
        }
        assert_eq!(spool.dir_sync.requested.load(Ordering::SeqCst), 32);
        assert_eq!(spool.dir_sync.synced.load(Ordering::SeqCst), 32);
        let _ = std::fs::remove_dir_all(&root);
    }
}
