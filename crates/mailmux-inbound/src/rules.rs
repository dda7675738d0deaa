//! Which receipt rule a recipient falls under: the rule for the exact address (`user+tag`)
//! first, then the one for its base (`user`, plus-addressing), then the domain's catch-all.
//! Individual rules win over the catch-all whatever order they were made in (mixed mode).

use mailmux_core::ReceiptRule;
use mailmux_core::receipt_rule::CATCH_ALL;

use crate::address::Recipient;

/// The local parts whose rules can match `recipient`, most specific first.
pub fn candidates(recipient: &Recipient) -> Vec<&str> {
    let (base, _) = recipient.base_and_tag();
    let mut out = vec![recipient.local.as_str()];
    if base != recipient.local {
        out.push(base);
    }
    out.push(CATCH_ALL);
    out
}

/// The winning rule among `rules` (those [`candidates`] found), if any.
pub fn winner<'r>(recipient: &Recipient, rules: &'r [ReceiptRule]) -> Option<&'r ReceiptRule> {
    candidates(recipient).into_iter().find_map(|local| {
        rules
            .iter()
            .find(|r| r.domain == recipient.domain && r.local_part == local)
    })
}

#[cfg(test)]
mod tests {
    use mailmux_core::RuleAction;

    use super::*;
    use crate::address;

    fn rule(id: &str, local: &str) -> ReceiptRule {
        ReceiptRule {
            id: id.into(),
            tenant_id: "t".into(),
            domain: "acme.test".into(),
            local_part: local.into(),
            action: RuleAction::Store,
            reject_text: None,
            forward_to: Vec::new(),
            members: Vec::new(),
            created_at: 0,
            updated_at: 0,
        }
    }

    #[test]
    fn individual_then_base_then_catch_all() {
        let all = [
            rule("any", "*"),
            rule("sales", "sales"),
            rule("tagged", "sales+vip"),
        ];
        let cases = [
            ("sales@acme.test", Some("sales")),
            ("Sales+News@acme.test", Some("sales")),
            ("sales+vip@acme.test", Some("tagged")),
            ("bob@acme.test", Some("any")),
            ("bob@other.test", None),
        ];
        for (address, want) in cases {
            let r = address::parse(address).unwrap().unwrap();
            assert_eq!(winner(&r, &all).map(|r| r.id.as_str()), want, "{address}");
        }
        // Individual rules only: no catch-all, unknown addresses match nothing.
        let individual = [rule("sales", "sales")];
        let bob = address::parse("bob@acme.test").unwrap().unwrap();
        assert_eq!(winner(&bob, &individual), None);
        // Catch-all only.
        let catch_all = [rule("any", "*")];
        assert_eq!(winner(&bob, &catch_all).map(|r| r.id.as_str()), Some("any"));
    }
}
