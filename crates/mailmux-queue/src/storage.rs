//! The storage contract: everything the queue asks of the database, in one small trait, so the
//! queue's rules (group commit, leases, fencing, journal recovery) read against what they
//! need and not against the whole store. `mailmux_store::Store` implements it in SQL on SQLite
//! and Postgres; its storage suite checks every promise below on both.

use std::future::Future;

use mailmux_store::{Backend, Store, StoreError};

use crate::{CommitOutcome, DeliveryReport, JournaledDelivery, NewMessage, QueuedMessage};

pub type StorageResult<T> = std::result::Result<T, StoreError>;

/// What the queue needs from storage. Each method is one transaction. Bodies live in the
/// queue's spool; a row only names its body's file (`body_path`).
pub trait QueueStorage: Clone + Send + Sync + 'static {
    /// Writes `messages` and records `reports` atomically: after it returns `Ok`, all of it is
    /// durable (fsync'd); after `Err`, none of it is. Each message is admitted against its
    /// tenant's daily quota inside this transaction ([`crate::Admission`]). Each report is
    /// fenced on its lease: recorded only if the message is still leased to
    /// `report.lease_owner`, else nothing of it is written (its bounce included).
    fn commit_batch(
        &self,
        messages: &[NewMessage],
        reports: &[DeliveryReport],
    ) -> impl Future<Output = StorageResult<CommitOutcome>> + Send;

    /// Leases up to `limit` due messages of active tenants to `owner` until `lease_until`
    /// (highest priority, then oldest first) and answers their ids. On several nodes no two
    /// claims take the same message.
    fn claim_due_ids(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
        limit: usize,
    ) -> impl Future<Output = StorageResult<Vec<String>>> + Send;

    /// A message with its pending recipients; `None` when it has none left.
    fn load_pending(
        &self,
        id: &str,
    ) -> impl Future<Output = StorageResult<Option<QueuedMessage>>> + Send;

    /// Extends `owner`'s leases on `ids` to `until`; answers how many it still held.
    fn renew_leases(
        &self,
        owner: &str,
        ids: &[String],
        until: i64,
    ) -> impl Future<Output = StorageResult<u64>> + Send;

    /// Gives one lease back, the message due at `now`, no attempt counted.
    fn release_lease(
        &self,
        message_id: &str,
        owner: &str,
        now: i64,
    ) -> impl Future<Output = StorageResult<bool>> + Send;

    /// Gives back every lease `owner` holds (start-up and shutdown).
    fn release_leases(
        &self,
        owner: &str,
        now: i64,
    ) -> impl Future<Output = StorageResult<u64>> + Send;

    /// Records as delivered what the journal says a remote accepted, for messages still
    /// leased to `owner`; answers how many recipients it recorded.
    fn record_journaled_deliveries(
        &self,
        owner: &str,
        deliveries: &[JournaledDelivery],
    ) -> impl Future<Output = StorageResult<u64>> + Send;

    /// Forgets finished messages created before `before`; answers how many.
    fn purge_finished(&self, before: i64) -> impl Future<Output = StorageResult<u64>> + Send;

    /// How many [`QueueStorage::commit_batch`] may run at once: 1 where there is a single
    /// writer (SQLite), more where the database commits concurrently (Postgres).
    fn commits_in_flight(&self) -> usize;

    /// Which of the spool files `paths` a queued message still points at (the rest are the
    /// spool sweep's orphans).
    fn referenced_bodies(
        &self,
        paths: &[String],
    ) -> impl Future<Output = StorageResult<Vec<String>>> + Send;
}

impl QueueStorage for Store {
    fn commit_batch(
        &self,
        messages: &[NewMessage],
        reports: &[DeliveryReport],
    ) -> impl Future<Output = StorageResult<CommitOutcome>> + Send {
        Store::commit_batch(self, messages, reports)
    }

    fn claim_due_ids(
        &self,
        owner: &str,
        now: i64,
        lease_until: i64,
        limit: usize,
    ) -> impl Future<Output = StorageResult<Vec<String>>> + Send {
        Store::claim_due_ids(self, owner, now, lease_until, limit)
    }

    fn load_pending(
        &self,
        id: &str,
    ) -> impl Future<Output = StorageResult<Option<QueuedMessage>>> + Send {
        Store::load_pending(self, id)
    }

    fn renew_leases(
        &self,
        owner: &str,
        ids: &[String],
        until: i64,
    ) -> impl Future<Output = StorageResult<u64>> + Send {
        Store::renew_leases(self, owner, ids, until)
    }

    fn release_lease(
        &self,
        message_id: &str,
        owner: &str,
        now: i64,
    ) -> impl Future<Output = StorageResult<bool>> + Send {
        Store::release_lease(self, message_id, owner, now)
    }

    fn release_leases(
        &self,
        owner: &str,
        now: i64,
    ) -> impl Future<Output = StorageResult<u64>> + Send {
        Store::release_leases(self, owner, now)
    }

    fn record_journaled_deliveries(
        &self,
        owner: &str,
        deliveries: &[JournaledDelivery],
    ) -> impl Future<Output = StorageResult<u64>> + Send {
        Store::record_journaled_deliveries(self, owner, deliveries)
    }

    fn purge_finished(&self, before: i64) -> impl Future<Output = StorageResult<u64>> + Send {
        Store::purge_finished(self, before)
    }

    fn commits_in_flight(&self) -> usize {
        match self.backend() {
            Backend::Sqlite => 1,
            // Enough to keep the server's WAL flushes and this node's CPU busy; beyond a few,
            // batches only get smaller.
            Backend::Postgres => 4,
        }
    }

    fn referenced_bodies(
        &self,
        paths: &[String],
    ) -> impl Future<Output = StorageResult<Vec<String>>> + Send {
        Store::referenced_bodies(self, paths)
    }
}
