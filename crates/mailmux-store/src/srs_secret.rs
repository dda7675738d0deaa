//! The relay's SRS secret (`srs_secret`, one row): the HMAC key every node signs and checks
//! SRS addresses with (`mailmux_core::srs`). In the database rather than in each node's config
//! so that nodes sharing Postgres cannot disagree on it (a bounce reaching another node must
//! verify there), and sealed with the master key like DKIM keys, so a dump alone reveals nothing.

use std::path::Path;

use mailmux_core::srs::Srs;
use ring::rand::{SecureRandom, SystemRandom};

use crate::{MasterKey, Result, Store, StoreError};

/// The seal's context: the sealed value opens only as this row.
const CONTEXT: &str = "srs_secret/1";
const SECRET_LEN: usize = 32;

impl Store {
    /// The relay's SRS signer, its secret opened with the master key at `master_key_path`
    /// (created if this is the first secret the relay keeps). Build it once and keep it.
    pub async fn srs(&self, master_key_path: &Path) -> Result<Srs> {
        let master = MasterKey::load_or_create(master_key_path)
            .map_err(|e| StoreError::Corrupt(format!("master key for the SRS secret: {e}")))?;
        Ok(Srs::new(&self.srs_secret(&master).await?))
    }

    /// The SRS secret, created on first use. Two nodes creating it at once both insert with
    /// `ON CONFLICT DO NOTHING` and then read the one row that won, so all agree.
    pub async fn srs_secret(&self, master: &MasterKey) -> Result<Vec<u8>> {
        if let Some(secret) = self.read_srs_secret(master).await? {
            return Ok(secret);
        }
        let mut secret = [0u8; SECRET_LEN];
        SystemRandom::new()
            .fill(&mut secret)
            .map_err(|_| StoreError::Corrupt("system random generator failed".into()))?;
        let sealed = master
            .seal(&secret, CONTEXT)
            .map_err(|e| StoreError::Corrupt(format!("sealing the SRS secret: {e}")))?;
        sqlx::query(
            "INSERT INTO srs_secret (id, sealed, created_at) VALUES (1, $1, $2) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(sealed)
        .bind(mailmux_core::now_ms())
        .execute(&self.pool)
        .await?;
        self.read_srs_secret(master)
            .await?
            .ok_or_else(|| StoreError::Corrupt("SRS secret vanished after its insert".into()))
    }

    async fn read_srs_secret(&self, master: &MasterKey) -> Result<Option<Vec<u8>>> {
        let sealed: Option<Vec<u8>> =
            sqlx::query_scalar("SELECT sealed FROM srs_secret WHERE id = 1")
                .fetch_optional(&self.pool)
                .await?;
        sealed
            .map(|sealed| {
                master.open(&sealed, CONTEXT).map_err(|e| {
                    StoreError::Corrupt(format!(
                        "SRS secret: {e} (is this node's master.key the one the others use?)"
                    ))
                })
            })
            .transpose()
    }
}
