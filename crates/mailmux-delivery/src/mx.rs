//! MX resolution (RFC 5321 §5.1, RFC 7505) with hickory-resolver.
//!
//! - MX records are tried by preference, lowest first; hosts of equal preference are shuffled
//!   so that load spreads over them as their operator intended.
//! - A domain with no MX record has an implicit MX: the domain itself, if it has A/AAAA.
//! - A null MX (`0 .`) means the domain accepts no mail: permanent `556 5.1.10`.
//! - NXDOMAIN is permanent (`550 5.1.2`); SERVFAIL, timeouts and network errors are transient.
//!
//! The decisions live in [`plan`], a pure function over a classified answer, so they are
//! tested on constructed answers; [`MxResolver`] only asks DNS and classifies what it hears.

use std::net::{IpAddr, SocketAddr};

use hickory_resolver::TokioResolver;
use hickory_resolver::config::LookupIpStrategy;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::ProtoError;
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{Name, RData, RecordType};
use mailmux_core::reply::Reply;
use rand::Rng;
use rand::seq::SliceRandom;

use crate::error::{DeliveryError, Result};

/// One host to try for a domain, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MxHost {
    /// Host name without the trailing dot (what TLS and logs use).
    pub name: String,
    pub preference: u16,
    /// Known addresses; empty means "look them up when this host's turn comes", which spares
    /// lookups for backup MX hosts that are never needed.
    pub addrs: Vec<IpAddr>,
}

/// What DNS said about one query, reduced to what delivery decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer<T> {
    Records(T),
    /// The name exists but has no record of this type (NOERROR, empty answer).
    NoRecords,
    /// The name does not exist.
    NxDomain,
    /// DNS did not answer usefully (SERVFAIL, REFUSED, timeout, network): try again later.
    Failed(String),
}

/// Builds the ordered host list for `domain` from its MX answer and, when there is no MX, its
/// address answer (the implicit MX). `rng` shuffles equal preferences.
pub(crate) fn plan(
    domain: &str,
    mx: Answer<Vec<(u16, String)>>,
    implicit: impl FnOnce() -> Answer<Vec<IpAddr>>,
    rng: &mut impl Rng,
) -> Result<Vec<MxHost>> {
    let dns_error = |reply: Reply| DeliveryError::Dns {
        domain: domain.to_string(),
        reply,
    };
    match mx {
        Answer::Records(records) if !records.is_empty() => {
            // RFC 7505 §3: a null MX is the only MX of its domain; one mixed with others is a
            // broken zone, and the domain's intent ("no mail") still wins.
            if records.iter().any(|(_, exchange)| is_root(exchange)) {
                return Err(dns_error(Reply::parse(
                    556,
                    format!("5.1.10 {domain} does not accept mail (null MX)"),
                )));
            }
            let mut hosts: Vec<MxHost> = Vec::with_capacity(records.len());
            for (preference, exchange) in records {
                let name = exchange.trim_end_matches('.').to_ascii_lowercase();
                match hosts.iter_mut().find(|h| h.name == name) {
                    // The same host twice: keep its best preference.
                    Some(host) => host.preference = host.preference.min(preference),
                    None => hosts.push(MxHost {
                        name,
                        preference,
                        addrs: Vec::new(),
                    }),
                }
            }
            hosts.shuffle(rng);
            // Stable sort: the shuffle decides the order within one preference.
            hosts.sort_by_key(|h| h.preference);
            Ok(hosts)
        }
        Answer::Records(_) | Answer::NoRecords => match implicit() {
            Answer::Records(addrs) if !addrs.is_empty() => Ok(vec![MxHost {
                name: domain.to_string(),
                preference: 0,
                addrs,
            }]),
            Answer::Records(_) | Answer::NoRecords | Answer::NxDomain => {
                Err(dns_error(Reply::parse(
                    550,
                    format!("5.1.2 {domain} has no MX and no address record"),
                )))
            }
            Answer::Failed(why) => Err(dns_error(Reply::parse(
                451,
                format!("4.4.3 address lookup for {domain} failed: {why}"),
            ))),
        },
        Answer::NxDomain => Err(dns_error(Reply::parse(
            550,
            format!("5.1.2 {domain}: domain does not exist"),
        ))),
        Answer::Failed(why) => Err(dns_error(Reply::parse(
            451,
            format!("4.4.3 MX lookup for {domain} failed: {why}"),
        ))),
    }
}

fn is_root(exchange: &str) -> bool {
    exchange.is_empty() || exchange == "."
}

/// Asks DNS for MX and address records.
pub(crate) struct MxResolver {
    resolver: TokioResolver,
}

impl MxResolver {
    /// A resolver on `servers` (UDP, and TCP for truncated answers and UDP failures), or on
    /// the system configuration when `servers` is empty. Built once at start-up: it holds the
    /// cache and the connections.
    pub(crate) fn new(servers: &[SocketAddr]) -> Result<MxResolver> {
        let mut builder = mailmux_core::dns::resolver_builder(servers)
            .map_err(|e| DeliveryError::Resolver(e.to_string()))?;
        let options = builder.options_mut();
        options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        let resolver = builder
            .build()
            .map_err(|e| DeliveryError::Resolver(e.to_string()))?;
        Ok(MxResolver { resolver })
    }

    /// The hosts to try for `domain`, best first.
    pub(crate) async fn hosts(&self, domain: &str) -> Result<Vec<MxHost>> {
        if domain.is_empty() || domain.starts_with('[') {
            // No domain (`postmaster` alone), or an address literal (`bob@[192.0.2.1]`):
            // neither names a host DNS could vouch for, and a relay that connects wherever a
            // literal points can be aimed at internal networks.
            return Err(DeliveryError::Dns {
                domain: domain.to_string(),
                reply: Reply::parse(
                    553,
                    format!("5.1.3 recipient domain {domain:?} is not a domain name"),
                ),
            });
        }
        let Ok(name) = fqdn(domain) else {
            return Err(DeliveryError::Dns {
                domain: domain.to_string(),
                reply: Reply::parse(553, format!("5.1.3 {domain:?} is not a valid domain name")),
            });
        };
        let mx = match self.resolver.lookup(name.clone(), RecordType::MX).await {
            Ok(lookup) => Answer::Records(
                lookup
                    .answers()
                    .iter()
                    .filter_map(|record| match &record.data {
                        RData::MX(mx) => Some((mx.preference, mx.exchange.to_ascii())),
                        _ => None,
                    })
                    .collect::<Vec<_>>(),
            ),
            Err(error) => classify(&error),
        };
        // Only needed without MX; looked up before `plan` because `plan` is synchronous.
        let implicit = match mx {
            Answer::NoRecords => self.addresses_of(name).await,
            Answer::Records(ref records) if records.is_empty() => self.addresses_of(name).await,
            _ => Answer::NoRecords,
        };
        plan(domain, mx, || implicit, &mut rand::rng())
    }

    /// The addresses of one MX host. Any failure is transient: the MX record says mail is
    /// wanted there, so a missing address is someone's mistake being fixed, not a verdict.
    pub(crate) async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>> {
        let failed = |why: String| DeliveryError::Connection {
            host: host.to_string(),
            reply: Reply::parse(451, format!("4.4.3 no address for MX host {host}: {why}")),
        };
        let name = fqdn(host).map_err(|e| failed(e.to_string()))?;
        match self.addresses_of(name).await {
            Answer::Records(addrs) if !addrs.is_empty() => Ok(addrs),
            Answer::Records(_) | Answer::NoRecords => Err(failed("no A/AAAA record".into())),
            Answer::NxDomain => Err(failed("name does not exist".into())),
            Answer::Failed(why) => Err(failed(why)),
        }
    }

    async fn addresses_of(&self, name: Name) -> Answer<Vec<IpAddr>> {
        match self.resolver.lookup_ip(name).await {
            Ok(lookup) => Answer::Records(lookup.iter().collect()),
            Err(error) => classify(&error),
        }
    }
}

/// `domain` as a fully qualified name: the trailing dot keeps the resolver from trying search
/// domains (`example.com.corp.internal`).
fn fqdn(domain: &str) -> std::result::Result<Name, ProtoError> {
    let mut name = Name::from_utf8(domain)?;
    name.set_fqdn(true);
    Ok(name)
}

fn classify<T>(error: &NetError) -> Answer<T> {
    match error {
        NetError::Dns(DnsError::NoRecordsFound(no)) => match no.response_code {
            ResponseCode::NXDomain => Answer::NxDomain,
            _ => Answer::NoRecords,
        },
        NetError::Dns(DnsError::ResponseCode(ResponseCode::NXDomain)) => Answer::NxDomain,
        other => Answer::Failed(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn records(list: &[(u16, &str)]) -> MxAnswer {
        Answer::Records(list.iter().map(|(p, h)| (*p, h.to_string())).collect())
    }

    fn no_address() -> Answer<Vec<IpAddr>> {
        panic!("the implicit MX must not be looked up when MX records exist")
    }

    fn names(hosts: &[MxHost]) -> Vec<&str> {
        hosts.iter().map(|h| h.name.as_str()).collect()
    }

    #[test]
    fn mx_hosts_go_by_preference() {
        let mut rng = StdRng::seed_from_u64(1);
        let hosts = plan(
            "example.test",
            records(&[
                (20, "backup.example.test."),
                (10, "MX1.example.test."),
                (30, "last.example.test"),
            ]),
            no_address,
            &mut rng,
        )
        .unwrap();
        assert_eq!(
            names(&hosts),
            [
                "mx1.example.test",
                "backup.example.test",
                "last.example.test"
            ]
        );
        assert!(hosts.iter().all(|h| h.addrs.is_empty()));
    }

    #[test]
    fn equal_preferences_are_shuffled_but_stay_in_their_rank() {
        let answer = records(&[
            (10, "a.test."),
            (10, "b.test."),
            (10, "c.test."),
            (5, "first.test."),
            (50, "last.test."),
        ]);
        let mut seen_first = std::collections::HashSet::new();
        for seed in 0..64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let hosts = plan("x.test", answer.clone(), no_address, &mut rng).unwrap();
            let order = names(&hosts);
            assert_eq!(order[0], "first.test");
            assert_eq!(order[4], "last.test");
            let mut middle = order[1..4].to_vec();
            seen_first.insert(middle[0].to_string());
            middle.sort();
            assert_eq!(middle, ["a.test", "b.test", "c.test"]);
        }
        assert_eq!(
            seen_first.len(),
            3,
            "every equal host comes first sometimes"
        );
    }

    #[test]
    fn duplicate_exchanges_keep_the_best_preference() {
        let mut rng = StdRng::seed_from_u64(7);
        let hosts = plan(
            "x.test",
            records(&[(30, "a.test."), (10, "b.test."), (5, "a.test")]),
            no_address,
            &mut rng,
        )
        .unwrap();
        assert_eq!(names(&hosts), ["a.test", "b.test"]);
        assert_eq!(hosts[0].preference, 5);
    }

    #[test]
    fn no_mx_falls_back_to_the_domain_itself() {
        let mut rng = StdRng::seed_from_u64(1);
        let addr: IpAddr = "127.0.0.5".parse().unwrap();
        for mx in [Answer::NoRecords, Answer::Records(Vec::new())] {
            let hosts = plan("plain.test", mx, || Answer::Records(vec![addr]), &mut rng).unwrap();
            assert_eq!(
                hosts,
                [MxHost {
                    name: "plain.test".into(),
                    preference: 0,
                    addrs: vec![addr]
                }]
            );
        }
    }

    type MxAnswer = Answer<Vec<(u16, String)>>;
    type AddressAnswer = Answer<Vec<IpAddr>>;

    /// (MX answer, implicit answer, expected reply prefix)
    #[test]
    fn failures_are_classified() {
        let table: Vec<(MxAnswer, AddressAnswer, &str)> = vec![
            (records(&[(0, ".")]), Answer::NoRecords, "556 5.1.10"),
            (records(&[(0, "")]), Answer::NoRecords, "556 5.1.10"),
            (
                records(&[(10, "mx.test."), (0, ".")]),
                Answer::NoRecords,
                "556 5.1.10",
            ),
            (Answer::NxDomain, Answer::NoRecords, "550 5.1.2"),
            (Answer::NoRecords, Answer::NoRecords, "550 5.1.2"),
            (Answer::NoRecords, Answer::NxDomain, "550 5.1.2"),
            (Answer::NoRecords, Answer::Records(vec![]), "550 5.1.2"),
            (
                Answer::Failed("SERVFAIL".into()),
                Answer::NoRecords,
                "451 4.4.3",
            ),
            (
                Answer::Failed("timeout".into()),
                Answer::NoRecords,
                "451 4.4.3",
            ),
            (
                Answer::NoRecords,
                Answer::Failed("timeout".into()),
                "451 4.4.3",
            ),
        ];
        for (mx, implicit, want) in table {
            let label = format!("{mx:?} / {implicit:?}");
            let mut rng = StdRng::seed_from_u64(1);
            let err = plan("gone.test", mx, || implicit, &mut rng).unwrap_err();
            let reply = err.reply().to_string();
            assert!(reply.starts_with(want), "{label}: {reply}");
            assert!(reply.contains("gone.test"), "{label}: {reply}");
        }
    }

    #[test]
    fn resolver_errors_are_classified() {
        let servfail = NetError::Dns(DnsError::ResponseCode(ResponseCode::ServFail));
        assert!(matches!(classify::<()>(&servfail), Answer::Failed(_)));
        assert!(matches!(
            classify::<()>(&NetError::Timeout),
            Answer::Failed(_)
        ));
        let nx = NetError::Dns(DnsError::ResponseCode(ResponseCode::NXDomain));
        assert_eq!(classify::<()>(&nx), Answer::NxDomain);
    }
}
