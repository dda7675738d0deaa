//! Secrets at rest: DKIM private keys are stored in the database sealed with AES-256-GCM under
//! a master key that lives in a file beside the data (`<data_dir>/master.key`, mode 0600).
//!
//! Why sealed rows rather than one 0600 file per key: the database is what several nodes share
//! (Postgres), so a key added on one node signs on every node once `master.key` is copied to
//! each; a database dump or backup alone reveals no private key; and deleting a tenant deletes
//! its keys in the same cascade as its domains, with no files left behind.

use std::io::Write;
use std::path::{Path, PathBuf};

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// First byte of every sealed value: the format (AES-256-GCM, 96-bit random nonce).
const FORMAT_V1: u8 = 1;
const KEY_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum KeyVaultError {
    #[error("master key {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("master key {0} is not {KEY_LEN} bytes; restore it from a backup")]
    BadKeyFile(PathBuf),
    /// Only the places that create secrets make a master key; everything else needs the one
    /// that sealed them.
    #[error(
        "master key {0} does not exist; copy it from the node that created the keys (or restore it from a backup)"
    )]
    Missing(PathBuf),
    #[error("system random generator failed")]
    Random,
    /// Wrong master key, a tampered value, or a value sealed for another row.
    #[error("sealed value does not open with this master key")]
    Open,
}

/// The key that seals secrets stored in the database. Cheap to clone.
#[derive(Clone)]
pub struct MasterKey {
    key: std::sync::Arc<LessSafeKey>,
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(..)")
    }
}

impl MasterKey {
    /// Reads the key at `path`; a missing file is [`KeyVaultError::Missing`], never a new key:
    /// a new key would open none of the secrets sealed so far.
    pub fn load(path: &Path) -> Result<MasterKey, KeyVaultError> {
        match std::fs::read(path) {
            Ok(bytes) => MasterKey::from_bytes(&bytes, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(KeyVaultError::Missing(path.to_owned()))
            }
            Err(source) => Err(KeyVaultError::Io {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Reads the key at `path`, creating it (32 random bytes, mode 0600) if there is none.
    ///
    /// Two processes may get here at once (the CLI beside `serve`): the new key is written to a
    /// temporary file and hard-linked into place, which fails if the name exists, so exactly one
    /// key wins and the loser reads it.
    pub fn load_or_create(path: &Path) -> Result<MasterKey, KeyVaultError> {
        let io = |source| KeyVaultError::Io {
            path: path.to_owned(),
            source,
        };
        match std::fs::read(path) {
            Ok(bytes) => return MasterKey::from_bytes(&bytes, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut bytes = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| KeyVaultError::Random)?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        {
            use std::os::unix::fs::OpenOptionsExt;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io)?;
            file.write_all(&bytes).map_err(io)?;
            // Durable before it is visible: a key that vanished after a crash would leave
            // every key sealed with it unreadable.
            file.sync_all().map_err(io)?;
        }
        let linked = std::fs::hard_link(&tmp, path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => {
                // The name is durable only once its directory is: without this, a crash could
                // lose the file after secrets were sealed with it.
                sync_dir(path).map_err(io)?;
                MasterKey::from_bytes(&bytes, path)
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                MasterKey::from_bytes(&std::fs::read(path).map_err(io)?, path)
            }
            Err(e) => Err(io(e)),
        }
    }

    fn from_bytes(bytes: &[u8], path: &Path) -> Result<MasterKey, KeyVaultError> {
        // ring refuses a key of any length but 32 bytes.
        let key = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| KeyVaultError::BadKeyFile(path.to_owned()))?;
        Ok(MasterKey {
            key: std::sync::Arc::new(LessSafeKey::new(key)),
        })
    }

    /// Seals `plaintext`; `context` (e.g. domain and selector) must be given again to open it.
    pub fn seal(&self, plaintext: &[u8], context: &str) -> Result<Vec<u8>, KeyVaultError> {
        let mut nonce = [0u8; NONCE_LEN];
        // Random nonces: 2^32 seals per key before the collision risk matters, far more DKIM
        // keys than any deployment makes.
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| KeyVaultError::Random)?;
        let mut in_out = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut in_out,
            )
            .map_err(|_| KeyVaultError::Random)?;
        let mut sealed = Vec::with_capacity(1 + NONCE_LEN + in_out.len());
        sealed.push(FORMAT_V1);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&in_out);
        Ok(sealed)
    }

    /// Opens a value made by [`MasterKey::seal`] with the same `context`.
    pub fn open(&self, sealed: &[u8], context: &str) -> Result<Vec<u8>, KeyVaultError> {
        if sealed.len() < 1 + NONCE_LEN || sealed[0] != FORMAT_V1 {
            return Err(KeyVaultError::Open);
        }
        let nonce = Nonce::try_assume_unique_for_key(&sealed[1..1 + NONCE_LEN])
            .map_err(|_| KeyVaultError::Open)?;
        let mut in_out = sealed[1 + NONCE_LEN..].to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut in_out)
            .map_err(|_| KeyVaultError::Open)?;
        Ok(plain.to_vec())
    }
}

/// fsyncs the directory holding `path`, making a file created or renamed there durable.
pub fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mailmux-vault-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn created_once_private_and_reloaded() {
        use std::os::unix::fs::PermissionsExt;
        let dir = temp_dir("create");
        let path = dir.join("master.key");
        let first = MasterKey::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "master key must be private");
        let sealed = first.seal(b"private key", "example.com/mm202601").unwrap();
        assert!(!sealed.windows(11).any(|w| w == b"private key"));
        let again = MasterKey::load_or_create(&path).unwrap();
        assert_eq!(
            again.open(&sealed, "example.com/mm202601").unwrap(),
            b"private key"
        );
        let loaded = MasterKey::load(&path).unwrap();
        assert_eq!(
            loaded.open(&sealed, "example.com/mm202601").unwrap(),
            b"private key"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn load_never_creates_a_key() {
        let dir = temp_dir("load");
        let path = dir.join("master.key");
        let error = MasterKey::load(&path).unwrap_err();
        assert!(matches!(error, KeyVaultError::Missing(_)), "{error}");
        assert!(error.to_string().contains("does not exist"), "{error}");
        assert!(!path.exists(), "loading must not create the key");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn wrong_context_key_or_tampering_do_not_open() {
        let dir = temp_dir("wrong");
        let a = MasterKey::load_or_create(&dir.join("a.key")).unwrap();
        let b = MasterKey::load_or_create(&dir.join("b.key")).unwrap();
        let sealed = a.seal(b"secret", "one.example/s1").unwrap();
        assert!(a.open(&sealed, "two.example/s1").is_err());
        assert!(b.open(&sealed, "one.example/s1").is_err());
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(a.open(&tampered, "one.example/s1").is_err());
        assert!(a.open(&sealed[..5], "one.example/s1").is_err());
        std::fs::write(dir.join("short.key"), b"short").unwrap();
        assert!(matches!(
            MasterKey::load_or_create(&dir.join("short.key")),
            Err(KeyVaultError::BadKeyFile(_))
        ));
        std::fs::remove_dir_all(&dir).ok();
    }
}
