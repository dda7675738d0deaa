//! The destinations of `forward` and `list` receipt rules (`forward_to`, `members`), checked
//! when a rule is made or changed: real addresses only (the MX's own reading of an address,
//! so no relay syntax hides in them), at most `MAX_FORWARD_TO` / `MAX_MEMBERS`, none twice,
//! never the rule's own address (a forward to itself is a loop), and `list` only for tenants
//! with `mailing_lists`. Refusals are 422 with a message naming the field.

use mailmux_core::receipt_rule::{MAX_FORWARD_TO, MAX_MEMBERS};
use mailmux_core::{Feature, RuleAction, Tenant};

use crate::error::{AdminError, Result};

/// `(forward_to, members)` for a rule with `action` at `own` (`local@domain`), from what the
/// request gave.
pub fn checked(
    tenant: &Tenant,
    action: RuleAction,
    own: &str,
    forward_to: Option<&[String]>,
    members: Option<&[String]>,
) -> Result<(Vec<String>, Vec<String>)> {
    let invalid = |text: String| Err(AdminError::Invalid(text));
    match action {
        RuleAction::Forward => {
            if members.is_some() {
                return invalid("members: only for action list".into());
            }
            let to = addresses("forward_to", forward_to, MAX_FORWARD_TO, own)?;
            Ok((to, Vec::new()))
        }
        RuleAction::List => {
            if forward_to.is_some() {
                return invalid("forward_to: only for action forward".into());
            }
            if !tenant.features.has(Feature::MailingLists) {
                return invalid(
                    "action \"list\" needs the tenant's mailing_lists feature, which is off".into(),
                );
            }
            let members = addresses("members", members, MAX_MEMBERS, own)?;
            Ok((Vec::new(), members))
        }
        RuleAction::Store | RuleAction::Reject => {
            if forward_to.is_some() {
                return invalid("forward_to: only for action forward".into());
            }
            if members.is_some() {
                return invalid("members: only for action list".into());
            }
            Ok((Vec::new(), Vec::new()))
        }
    }
}

/// A dot-string local part (RFC 5321 §4.1.2): atoms of atext, one dot between them.
pub(crate) fn valid_local(local: &str) -> bool {
    let atext =
        |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii();
    local.len() <= 64
        && local
            .split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(atext))
}

/// The addresses of `field`, each checked and with its domain normalised.
fn addresses(field: &str, given: Option<&[String]>, max: usize, own: &str) -> Result<Vec<String>> {
    let given = given.unwrap_or_default();
    if given.is_empty() {
        return Err(AdminError::Invalid(format!(
            "{field}: at least one address is needed"
        )));
    }
    if given.len() > max {
        return Err(AdminError::Invalid(format!(
            "{field}: at most {max} addresses ({} given)",
            given.len()
        )));
    }
    let mut out: Vec<String> = Vec::with_capacity(given.len());
    for raw in given {
        let address = raw.trim();
        let parsed = match address.rsplit_once('@') {
            Some((local, _)) if valid_local(local) => {
                mailmux_inbound::address::parse(address).ok().flatten()
            }
            _ => None,
        };
        let Some(parsed) = parsed else {
            return Err(AdminError::Invalid(format!(
                "{field}: {raw:?} is not an address (user@domain)"
            )));
        };
        let local = &address[..address.rfind('@').unwrap_or(0)];
        let normalised = format!("{local}@{}", parsed.domain);
        if format!("{}@{}", parsed.local, parsed.domain) == own {
            return Err(AdminError::Invalid(format!(
                "{field}: {raw:?} is the rule's own address (a loop)"
            )));
        }
        if out.iter().any(|o| o.eq_ignore_ascii_case(&normalised)) {
            return Err(AdminError::Invalid(format!(
                "{field}: {raw:?} is listed twice"
            )));
        }
        out.push(normalised);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailmux_core::Tier;

    fn tenant(tier: Tier) -> Tenant {
        Tenant::new("t_1".into(), "Acme".into(), tier, 1)
    }

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn destinations_are_checked_per_action() {
        let pro = tenant(Tier::Professional);
        let own = "info@acme.test";
        let to = list(&["Bob@Example.ORG", "carol@example.net"]);
        let (forward, members) = checked(&pro, RuleAction::Forward, own, Some(&to), None).unwrap();
        assert_eq!(forward, ["Bob@example.org", "carol@example.net"]);
        assert!(members.is_empty());
        let (_, members) = checked(&pro, RuleAction::List, own, None, Some(&to)).unwrap();
        assert_eq!(members.len(), 2);

        let refused = [
            (RuleAction::Forward, None, None, "at least one"),
            (RuleAction::Forward, Some(list(&[])), None, "at least one"),
            (
                RuleAction::Forward,
                Some(list(&["nobody"])),
                None,
                "not an address",
            ),
            (
                RuleAction::Forward,
                Some(list(&["a%b@c.test"])),
                None,
                "not an address",
            ),
            (
                RuleAction::Forward,
                Some(list(&["x@[127.0.0.1]"])),
                None,
                "not an address",
            ),
            (
                RuleAction::Forward,
                Some(list(&["INFO@acme.test"])),
                None,
                "own address",
            ),
            (
                RuleAction::Forward,
                Some(list(&["a@b.test", "A@B.test"])),
                None,
                "twice",
            ),
            (
                RuleAction::Forward,
                Some(to.clone()),
                Some(to.clone()),
                "members: only",
            ),
            (RuleAction::List, Some(to.clone()), None, "forward_to: only"),
            (
                RuleAction::Store,
                Some(to.clone()),
                None,
                "forward_to: only",
            ),
            (RuleAction::Reject, None, Some(to.clone()), "members: only"),
        ];
        for (action, forward_to, members, want) in refused {
            let error = checked(&pro, action, own, forward_to.as_deref(), members.as_deref())
                .unwrap_err()
                .to_string();
            assert!(error.contains(want), "{action:?}: {error}");
        }
        let eleven: Vec<String> = (0..11).map(|n| format!("u{n}@example.org")).collect();
        let error = checked(&pro, RuleAction::Forward, own, Some(&eleven), None).unwrap_err();
        assert!(error.to_string().contains("at most 10"), "{error}");
        // Lists need the feature.
        let free = tenant(Tier::Free);
        let error = checked(&free, RuleAction::List, own, None, Some(&to)).unwrap_err();
        assert!(error.to_string().contains("mailing_lists"), "{error}");
    }
}
