//! The syntax of envelope addresses (RFC 5321 §4.1.2), checked on every listener before any
//! policy sees them. smtp-proto takes the address out of `<…>` but lets through forms that no
//! server can deliver to or bounce to (`user@`, `@`, `user@-bad-.example`); they get a
//! 501 with the enhanced code of their side (`5.1.7` sender, `5.1.3` recipient), never a
//! policy answer about a domain that is not one.

use mailmux_core::domain::{DomainNameError, normalize_domain};

/// Why an address is malformed; the text goes into the 501 reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BadAddress {
    NoAt,
    EmptyLocalPart,
    LocalPart,
    EmptyDomain,
    Domain,
    AddressLiteral,
}

impl BadAddress {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            BadAddress::NoAt => "no @domain",
            BadAddress::EmptyLocalPart => "nothing before the @",
            BadAddress::LocalPart => "the part before the @ is not valid",
            BadAddress::EmptyDomain => "nothing after the @",
            BadAddress::Domain => "the domain is not a valid host name",
            BadAddress::AddressLiteral => "the address literal is not a valid IP address",
        }
    }
}

/// Checks `local@domain` as smtp-proto hands it over (the `<>` removed, a quoted local part
/// with its quotes). The domain is a host name (letters, digits, hyphens; no empty label, no
/// label starting or ending with a hyphen; Unicode under SMTPUTF8) or an address literal
/// (`[192.0.2.1]`, `[IPv6:2001:db8::1]`).
pub(crate) fn check(address: &str) -> Result<(), BadAddress> {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return Err(BadAddress::NoAt);
    };
    check_local_part(local)?;
    if domain.is_empty() {
        return Err(BadAddress::EmptyDomain);
    }
    if let Some(literal) = domain.strip_prefix('[') {
        let literal = literal
            .strip_suffix(']')
            .ok_or(BadAddress::AddressLiteral)?;
        let valid = match literal.strip_prefix("IPv6:") {
            Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
            None => literal.parse::<std::net::Ipv4Addr>().is_ok(),
        };
        return valid.then_some(()).ok_or(BadAddress::AddressLiteral);
    }
    match normalize_domain(domain) {
        // A host name of one label (`user@localhost`) is well-formed; whether it is anyone's
        // is the policy's question. A trailing dot is not part of RFC 5321's syntax.
        Ok(_) | Err(DomainNameError::SingleLabel) if !domain.ends_with('.') => Ok(()),
        _ => Err(BadAddress::Domain),
    }
}

fn check_local_part(local: &str) -> Result<(), BadAddress> {
    if local.is_empty() {
        return Err(BadAddress::EmptyLocalPart);
    }
    if local.len() >= 2 && local.starts_with('"') && local.ends_with('"') {
        // A quoted string may hold blanks and specials; only its quoting must be whole.
        return Ok(());
    }
    // Dot-string: atoms of atext (or, under SMTPUTF8, any non-ASCII), one dot between them.
    let atext =
        |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c) || !c.is_ascii();
    let valid = local
        .split('.')
        .all(|atom| !atom.is_empty() && atom.chars().all(atext));
    valid.then_some(()).ok_or(BadAddress::LocalPart)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_syntax_table() {
        let cases: [(&str, Result<(), BadAddress>); 20] = [
            ("user@acme.test", Ok(())),
            ("first.last+tag@sub.acme.test", Ok(())),
            ("user@localhost", Ok(())),
            ("user@[192.0.2.1]", Ok(())),
            ("user@[IPv6:2001:db8::1]", Ok(())),
            ("\"a b\"@acme.test", Ok(())),
            ("jörg@bücher.example", Ok(())),
            ("user@xn--bcher-kva.example", Ok(())),
            ("user", Err(BadAddress::NoAt)),
            ("user@", Err(BadAddress::EmptyDomain)),
            ("@", Err(BadAddress::EmptyLocalPart)),
            ("@acme.test", Err(BadAddress::EmptyLocalPart)),
            ("user@-bad-.example", Err(BadAddress::Domain)),
            ("user@acme..test", Err(BadAddress::Domain)),
            ("user@acme.test.", Err(BadAddress::Domain)),
            ("user@under_score.test", Err(BadAddress::Domain)),
            ("a b@x.example", Err(BadAddress::LocalPart)),
            ("a..b@x.example", Err(BadAddress::LocalPart)),
            ("user@[300.1.1.1]", Err(BadAddress::AddressLiteral)),
            ("user@[IPv6:nope]", Err(BadAddress::AddressLiteral)),
        ];
        for (address, want) in cases {
            assert_eq!(check(address), want, "{address}");
        }
    }
}
