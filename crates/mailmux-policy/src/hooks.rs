//! Content hooks: where spam filtering, virus scanning and mailing-list handling plug in. Their
//! scanners come in a later issue; what exists now is the plumbing, as values: each hook kind is
//! gated by the feature flag that names it, and a message is checked by the installed hooks of
//! the kinds its tenant has. With no hook installed nothing is checked and nothing is claimed to
//! have been (no `X-Spam-*` header, no "scanned" log line).

use std::sync::Arc;

use mailmux_core::{Feature, Tenant};

use crate::verdict::Verdict;

/// What a hook does, and the feature flag that turns it on for a tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HookKind {
    SpamFilter,
    VirusScan,
    MailingList,
}

impl HookKind {
    pub const ALL: [HookKind; 3] = [
        HookKind::SpamFilter,
        HookKind::VirusScan,
        HookKind::MailingList,
    ];

    pub fn feature(self) -> Feature {
        match self {
            HookKind::SpamFilter => Feature::SpamFiltering,
            HookKind::VirusScan => Feature::VirusScanning,
            HookKind::MailingList => Feature::MailingLists,
        }
    }
}

/// A check of a complete message, before it is queued. A refusal is a [`Verdict`] with the
/// reply the client gets (e.g. `554 5.7.1` for a virus).
pub trait ContentHook: Send + Sync {
    fn kind(&self) -> HookKind;
    fn check(&self, tenant: &Tenant, message: &[u8]) -> Verdict;
}

/// The installed hooks (none yet in production).
#[derive(Default, Clone)]
pub struct ContentHooks {
    hooks: Vec<Arc<dyn ContentHook>>,
}

impl ContentHooks {
    pub fn install(&mut self, hook: Arc<dyn ContentHook>) {
        self.hooks.push(hook);
    }

    /// The hook kinds that apply to `tenant`'s mail: those whose feature it has.
    pub fn kinds_for(tenant: &Tenant) -> Vec<HookKind> {
        HookKind::ALL
            .into_iter()
            .filter(|kind| tenant.features.has(kind.feature()))
            .collect()
    }

    /// Runs the installed hooks of the kinds `tenant` has; the first refusal wins.
    pub fn check(&self, tenant: &Tenant, message: &[u8]) -> Verdict {
        let kinds = Self::kinds_for(tenant);
        for hook in &self.hooks {
            if !kinds.contains(&hook.kind()) {
                continue;
            }
            if let refused @ Verdict::Refuse(_) = hook.check(tenant, message) {
                return refused;
            }
        }
        Verdict::Accept
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::{Refusal, RejectReason};
    use mailmux_core::Tier;
    use mailmux_core::reply::Reply;

    /// Refuses every message it sees: stands for a scanner that finds something.
    struct RefuseAll(HookKind);

    impl ContentHook for RefuseAll {
        fn kind(&self) -> HookKind {
            self.0
        }
        fn check(&self, _: &Tenant, _: &[u8]) -> Verdict {
            Verdict::Refuse(Refusal::new(
                RejectReason::Content,
                Reply::new(554, "5.7.1", format!("{:?} says no", self.0)),
            ))
        }
    }

    #[test]
    fn hooks_run_only_for_tenants_with_their_feature() {
        let mut tenant = Tenant::new("t_1".into(), "a".into(), Tier::Free, 0);
        tenant.features = Default::default();
        let mut hooks = ContentHooks::default();
        assert_eq!(
            hooks.check(&tenant, b"x"),
            Verdict::Accept,
            "none installed"
        );
        for kind in HookKind::ALL {
            hooks.install(Arc::new(RefuseAll(kind)));
        }
        assert!(ContentHooks::kinds_for(&tenant).is_empty());
        assert_eq!(hooks.check(&tenant, b"x"), Verdict::Accept, "all flags off");
        for kind in HookKind::ALL {
            let mut t = tenant.clone();
            match kind.feature() {
                Feature::SpamFiltering => t.features.spam_filtering = true,
                Feature::VirusScanning => t.features.virus_scanning = true,
                _ => t.features.mailing_lists = true,
            }
            assert_eq!(ContentHooks::kinds_for(&t), vec![kind]);
            let Verdict::Refuse(refusal) = hooks.check(&t, b"x") else {
                panic!("{kind:?} on: its hook runs");
            };
            assert!(refusal.reply.lines()[0].contains(&format!("{kind:?}")));
        }
        // The free tier has spam filtering (DESIGN.md "Tiers").
        let free = Tenant::new("t_2".into(), "b".into(), Tier::Free, 0);
        assert_eq!(ContentHooks::kinds_for(&free), vec![HookKind::SpamFilter]);
    }
}
