//! The recipient address as the MX judges it, before any lookup. Whatever looks like an attempt
//! to route through us to somewhere else — the percent hack (`user%elsewhere@ours`), a bang path
//! (`elsewhere!user@ours`), a quoted local part holding an `@`, an address literal, a trailing
//! dot, a source route (`@hop:user@domain`) — is refused as relaying (`550 5.7.1`), never looked
//! up: mailmux is the final destination of the addresses it accepts and routes nothing onward by
//! address syntax.

use mailmux_core::normalize_domain;

/// A recipient split into what rules match on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipient {
    /// Lowercase; the whole local part (`user+tag`).
    pub local: String,
    /// Lowercase A-labels.
    pub domain: String,
}

impl Recipient {
    /// The local part without its `+tag` (`user` of `user+tag`), and the tag.
    pub fn base_and_tag(&self) -> (&str, Option<&str>) {
        match self.local.split_once('+') {
            Some((base, tag)) if !base.is_empty() => (base, Some(tag)),
            _ => (&self.local, None),
        }
    }

    pub fn is_postmaster(&self) -> bool {
        self.local == "postmaster"
    }
}

/// Why an address is relaying in disguise; the text goes into the 550.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayTrick {
    Percent,
    Bang,
    SourceRoute,
    QuotedAt,
    AddressLiteral,
    TrailingDot,
    NoDomain,
}

impl RelayTrick {
    pub fn as_str(self) -> &'static str {
        match self {
            RelayTrick::Percent => "percent-hack routing",
            RelayTrick::Bang => "bang-path routing",
            RelayTrick::SourceRoute => "source routing",
            RelayTrick::QuotedAt => "a quoted local part holding an address",
            RelayTrick::AddressLiteral => "an address literal",
            RelayTrick::TrailingDot => "a trailing dot",
            RelayTrick::NoDomain => "no domain",
        }
    }
}

/// Splits `address` (as smtp-proto hands it over) for rule matching, or names the relay trick
/// it uses. `Ok(None)`: the domain is not a domain name at all (not ours, whatever it is).
pub fn parse(address: &str) -> Result<Option<Recipient>, RelayTrick> {
    let Some((local, domain)) = address.rsplit_once('@') else {
        return Err(if address.contains('!') {
            RelayTrick::Bang
        } else {
            RelayTrick::NoDomain
        });
    };
    if local.starts_with('@') {
        return Err(RelayTrick::SourceRoute);
    }
    // smtp-proto hands a quoted local part over with or without its quotes; an `@` left in the
    // local part is one either way.
    if local.contains('@') {
        return Err(RelayTrick::QuotedAt);
    }
    if local.contains(':') {
        return Err(RelayTrick::SourceRoute);
    }
    if local.contains('%') {
        return Err(RelayTrick::Percent);
    }
    if local.contains('!') {
        return Err(RelayTrick::Bang);
    }
    if domain.starts_with('[') {
        return Err(RelayTrick::AddressLiteral);
    }
    if domain.ends_with('.') {
        return Err(RelayTrick::TrailingDot);
    }
    let Ok(domain) = normalize_domain(domain) else {
        return Ok(None);
    };
    // A quoted local part without specials is the same address unquoted (RFC 5321 §4.1.2).
    let local = local
        .strip_prefix('"')
        .and_then(|l| l.strip_suffix('"'))
        .unwrap_or(local);
    Ok(Some(Recipient {
        local: local.to_lowercase(),
        domain,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(local: &str, domain: &str) -> Result<Option<Recipient>, RelayTrick> {
        Ok(Some(Recipient {
            local: local.into(),
            domain: domain.into(),
        }))
    }

    #[test]
    fn relay_tricks_are_named_and_plain_addresses_split() {
        let cases = [
            ("User@Acme.TEST", ok("user", "acme.test")),
            ("user+tag@acme.test", ok("user+tag", "acme.test")),
            ("\"user\"@acme.test", ok("user", "acme.test")),
            ("user%other.example@acme.test", Err(RelayTrick::Percent)),
            ("other.example!user@acme.test", Err(RelayTrick::Bang)),
            ("other.example!user", Err(RelayTrick::Bang)),
            (
                "\"user@other.example\"@acme.test",
                Err(RelayTrick::QuotedAt),
            ),
            (
                "@acme.test:user@other.example",
                Err(RelayTrick::SourceRoute),
            ),
            ("user@[127.0.0.1]", Err(RelayTrick::AddressLiteral)),
            ("user@[IPv6:::1]", Err(RelayTrick::AddressLiteral)),
            ("user@acme.test.", Err(RelayTrick::TrailingDot)),
            ("user", Err(RelayTrick::NoDomain)),
            ("user@localhost", Ok(None)),
        ];
        for (address, want) in cases {
            assert_eq!(parse(address), want, "{address}");
        }
    }

    #[test]
    fn plus_addressing_keeps_the_tag() {
        let r = parse("user+news+x@acme.test").unwrap().unwrap();
        assert_eq!(r.base_and_tag(), ("user", Some("news+x")));
        let r = parse("+only@acme.test").unwrap().unwrap();
        assert_eq!(r.base_and_tag(), ("+only", None));
    }
}
