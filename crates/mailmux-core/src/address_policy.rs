//! Which addresses mailmux may connect to when someone else's DNS or URL names the destination:
//! direct MX delivery (`delivery.allowed_networks`) and webhook endpoints
//! (`webhooks.allowed_networks`). One rule for both, so the two can never disagree on what
//! "private" means.
//!
//! DNS is the sender's to choose: anyone can publish an MX (or, with no MX, an A record) that
//! points at `127.0.0.1`, at `10.0.0.1` or at the cloud metadata service `169.254.169.254`,
//! and a relay that connects wherever DNS points then speaks SMTP into the operator's own
//! network. So only public addresses are reached, unless the operator lists a network in
//! `delivery.allowed_networks` (a test rig on loopback, an internal MX on purpose). The
//! smarthost is the operator's own setting and is not filtered. A webhook URL is the tenant's to
//! choose, so the same holds for it, with `webhooks.allowed_networks`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// The rule, built once from an `allowed_networks` list.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    allowed: Vec<IpNet>,
}

impl AddressPolicy {
    pub fn new(allowed: &[IpNet]) -> AddressPolicy {
        AddressPolicy {
            allowed: allowed.to_vec(),
        }
    }

    /// Why `ip` must not be connected to (`"loopback"`, `"private"`, …), or `None` when it may.
    pub fn refusal(&self, ip: IpAddr) -> Option<&'static str> {
        let ip = ip.to_canonical();
        let kind = non_public_kind(ip)?;
        if self.allowed.iter().any(|net| net.contains(&ip)) {
            return None;
        }
        Some(kind)
    }
}

/// What kind of non-public address `ip` is; `None` for a public one.
fn non_public_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_kind(v4),
        IpAddr::V6(v6) => v6_kind(v6),
    }
}

fn v4_kind(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b) {
        _ if ip.is_unspecified() || a == 0 => "unspecified (0.0.0.0/8)",
        _ if ip.is_loopback() => "loopback",
        // RFC 1918.
        _ if ip.is_private() => "private (RFC 1918)",
        // 169.254.0.0/16, where cloud metadata services answer (169.254.169.254).
        _ if ip.is_link_local() => "link-local (cloud metadata)",
        // RFC 6598 carrier-grade NAT: someone's internal network.
        (100, 64..=127) => "shared address space (RFC 6598)",
        // IETF protocol assignments (some clouds' metadata live here too, 192.0.0.192).
        (192, 0) if c == 0 => "IETF protocol assignment (192.0.0.0/24)",
        // Benchmarking (RFC 2544).
        (198, 18..=19) => "benchmarking (198.18.0.0/15)",
        _ if ip.is_multicast() => "multicast",
        // 240.0.0.0/4 and the broadcast address.
        _ if a >= 240 => "reserved",
        _ => return None,
    })
}

fn v6_kind(ip: Ipv6Addr) -> Option<&'static str> {
    let segments = ip.segments();
    Some(match segments[0] {
        _ if ip.is_unspecified() => "unspecified",
        _ if ip.is_loopback() => "loopback",
        // fc00::/7, unique local (AWS's metadata service is fd00:ec2::254).
        s if s & 0xfe00 == 0xfc00 => "unique local (ULA)",
        s if s & 0xffc0 == 0xfe80 => "link-local",
        _ if ip.is_multicast() => "multicast",
        // 64:ff9b::/96: NAT64, which reaches the IPv4 address in its last 32 bits.
        0x0064 if segments[1] == 0xff9b && segments[2..6] == [0, 0, 0, 0] => {
            let [.., hi, lo] = segments;
            let v4 = Ipv4Addr::from(((hi as u32) << 16) | lo as u32);
            return v4_kind(v4);
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_pass_by_default() {
        let policy = AddressPolicy::default();
        let refused = [
            "127.0.0.1",
            "127.9.9.9",
            "10.0.0.1",
            "172.16.5.4",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "0.1.2.3",
            "192.0.0.192",
            "198.18.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "240.0.0.1",
            "::",
            "::1",
            "fd00:ec2::254",
            "fc00::1",
            "fe80::1",
            "ff02::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "64:ff9b::a9fe:a9fe",
        ];
        for ip in refused {
            let ip: IpAddr = ip.parse().unwrap();
            assert!(policy.refusal(ip).is_some(), "{ip} must be refused");
        }
        let public = [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "192.0.2.1",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ];
        for ip in public {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(policy.refusal(ip), None, "{ip} is public");
        }
        let ip: IpAddr = "169.254.169.254".parse().unwrap();
        assert_eq!(policy.refusal(ip), Some("link-local (cloud metadata)"));
    }

    #[test]
    fn allowed_networks_open_exactly_what_they_list() {
        let policy = AddressPolicy::new(&["127.0.0.0/8".parse().unwrap()]);
        assert_eq!(policy.refusal("127.0.0.1".parse().unwrap()), None);
        assert_eq!(policy.refusal("::ffff:127.0.0.2".parse().unwrap()), None);
        assert!(policy.refusal("::1".parse().unwrap()).is_some());
        assert!(policy.refusal("10.0.0.1".parse().unwrap()).is_some());
        assert!(policy.refusal("169.254.169.254".parse().unwrap()).is_some());
    }
}
