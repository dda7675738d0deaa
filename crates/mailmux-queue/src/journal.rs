//! The delivery journal: a remote server's "250" written down the moment it arrives.
//!
//! Between a remote server accepting a message and the commit of its delivery report, a crash
//! re-sends the message: nothing durable says it was delivered. The report goes through the
//! queue writer and the database (several statements, each a hop to the database's thread,
//! behind whatever the writer is doing), which takes milliseconds on a loaded machine. The
//! journal closes most of that window: one line appended to a file in the data dir, by the
//! delivery task itself, before it builds the report. At start-up, before this node's leases
//! are given back, the journal's deliveries are recorded in the store
//! ([`crate::QueueStorage::record_journaled_deliveries`]), so those recipients are not sent
//! again.
//!
//! The line is written, not fsync'd, on purpose. The journal does not make mail durable (the
//! queue does that); it only spares duplicates. A written line survives the process being
//! killed (a panic, the OOM killer, `kill -9`), since the kernel holds it; only the machine
//! going down can lose the last lines, and those deliveries are then sent again, as they were
//! before the journal existed. An fsync per delivery would cost about 10 % of the relay's
//! throughput (measured: benches/README.md) for that rarer case alone.
//!
//! Only deliveries are journaled: sending a bounced or deferred recipient again costs no
//! duplicate in anyone's mailbox.
//!
//! The file is rotated at [`ROTATE_AT_BYTES`]: the current file becomes `.previous`, replacing
//! the one before. An entry is needed only until its report commits (milliseconds, or the
//! report failed and the lease decides), so two files of several thousand entries each are
//! far more than enough; start-up reads both, then starts empty.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::JournaledDelivery;
use mailmux_core::sync::lock;
use tracing::warn;

/// Size at which the current file is rotated.
const ROTATE_AT_BYTES: u64 = 4 * 1024 * 1024;

const FILE_NAME: &str = "deliveries.journal";

/// Appends deliveries; shared by every delivery task.
pub(crate) struct Journal {
    file: Mutex<JournalFile>,
}

struct JournalFile {
    file: File,
    size: u64,
    current: PathBuf,
    previous: PathBuf,
}

impl Journal {
    /// Reads what the journal in `dir` holds (from before a crash or a restart) and opens an
    /// empty file for what comes. What was read stays on disk (as the `.previous` file) until
    /// the caller has recorded it and calls [`forget_recovered`]: a crash before that finds it
    /// again. Nothing is journaled meanwhile (delivery has not started), so no rotation can
    /// overwrite it.
    pub(crate) fn open(dir: &Path) -> std::io::Result<(Journal, Vec<JournaledDelivery>)> {
        let current = dir.join(FILE_NAME);
        let previous = dir.join(format!("{FILE_NAME}.previous"));
        let mut found = read_entries(&previous)?;
        found.extend(read_entries(&current)?);
        // The entries found, and only whole ones, become the previous file; the current one
        // starts empty (a torn last line must not run into the next entry).
        let mut kept = Vec::new();
        for entry in &found {
            kept.extend(serde_json::to_vec(entry).map_err(std::io::Error::other)?);
            kept.push(b'\n');
        }
        let staged = dir.join(format!("{FILE_NAME}.staged"));
        let mut file = File::create(&staged)?;
        file.write_all(&kept)?;
        file.sync_all()?;
        std::fs::rename(&staged, &previous)?;
        File::create(&current)?.sync_all()?;
        mailmux_store::sync_dir(&current)?;
        let file = JournalFile {
            file: open_append(&current)?,
            size: 0,
            current,
            previous,
        };
        Ok((
            Journal {
                file: Mutex::new(file),
            },
            found,
        ))
    }

    /// Appends `delivery` as one line (one `write`: see the module comment for why there is
    /// no fsync). An error means it is not written: the delivery is then only as safe from a
    /// crash as its report.
    pub(crate) fn record(&self, delivery: &JournaledDelivery) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(delivery).map_err(std::io::Error::other)?;
        line.push(b'\n');
        let mut journal = lock(&self.file);
        if journal.size >= ROTATE_AT_BYTES {
            journal.rotate()?;
        }
        journal.file.write_all(&line)?;
        journal.size += line.len() as u64;
        Ok(())
    }
}

impl JournalFile {
    fn rotate(&mut self) -> std::io::Result<()> {
        std::fs::rename(&self.current, &self.previous)?;
        self.file = open_append(&self.current)?;
        self.size = 0;
        Ok(())
    }
}

/// Forgets everything journaled before start-up, once the caller recorded it in the store.
pub(crate) fn forget_recovered(dir: &Path) -> std::io::Result<()> {
    let previous = dir.join(format!("{FILE_NAME}.previous"));
    match std::fs::remove_file(&previous) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    mailmux_store::sync_dir(&previous)
}

fn open_append(path: &Path) -> std::io::Result<File> {
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    mailmux_store::sync_dir(path)?;
    Ok(file)
}

/// The entries of one journal file; a torn last line (the crash came mid-write, so its
/// delivery was never reported as journaled) is skipped.
fn read_entries(path: &Path) -> std::io::Result<Vec<JournaledDelivery>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut entries = Vec::new();
    for line in BufReader::new(file).split(b'\n') {
        let line = line?;
        if line.is_empty() {
            continue;
        }
        match serde_json::from_slice(&line) {
            Ok(entry) => entries.push(entry),
            Err(error) => warn!(%error, path = %path.display(), "skipping a torn journal line"),
        }
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(id: &str) -> JournaledDelivery {
        JournaledDelivery {
            message_id: id.into(),
            at: 5,
            recipients: vec![(0, "250 2.0.0 ok".into()), (2, "250 ok, queued".into())],
        }
    }

    #[test]
    fn deliveries_survive_a_restart_and_are_then_forgotten() {
        let dir = std::env::temp_dir().join(format!("mailmux-journal-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (journal, found) = Journal::open(&dir).unwrap();
        assert!(found.is_empty());
        journal.record(&delivery("q1")).unwrap();
        journal.record(&delivery("q2")).unwrap();
        drop(journal);
        // A crash mid-write leaves a torn line: skipped, the others kept.
        let mut file = OpenOptions::new()
            .append(true)
            .open(dir.join(FILE_NAME))
            .unwrap();
        file.write_all(b"{\"message_id\":\"q3\",\"at\"").unwrap();
        drop(file);

        // Found again after the restart, also when the restart itself stops before the
        // caller has recorded them; what is journaled after the restart is kept apart.
        let (journal, found) = Journal::open(&dir).unwrap();
        let mut ids: Vec<&str> = found.iter().map(|d| d.message_id.as_str()).collect();
        ids.sort();
        assert_eq!(ids, ["q1", "q2"]);
        assert_eq!(found[0].recipients, delivery("q1").recipients);
        journal.record(&delivery("q4")).unwrap();
        drop(journal);
        let (journal, found) = Journal::open(&dir).unwrap();
        let mut ids: Vec<&str> = found.iter().map(|d| d.message_id.as_str()).collect();
        ids.sort();
        assert_eq!(ids, ["q1", "q2", "q4"], "nothing lost, the torn line gone");
        drop(journal);

        // Recorded by the caller: forgotten.
        forget_recovered(&dir).unwrap();
        let (journal, found) = Journal::open(&dir).unwrap();
        assert!(found.is_empty());
        journal.record(&delivery("q5")).unwrap();
        drop(journal);
        let (_journal, found) = Journal::open(&dir).unwrap();
        let ids: Vec<&str> = found.iter().map(|d| d.message_id.as_str()).collect();
        assert_eq!(ids, ["q5"], "only what was journaled after the recovery");
        std::fs::remove_dir_all(&dir).ok();
    }
}
