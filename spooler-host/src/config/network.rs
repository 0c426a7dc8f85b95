//! Networks written as CIDR (`192.0.2.0/24`, `2001:db8::/32`, or a bare address), and
//! whether a client's address is in one: who may send without authenticating.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// An address prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    address: IpAddr,
    prefix: u8,
}

impl Network {
    /// 127.0.0.0/8 and ::1: the default networks allowed to send without AUTH.
    pub fn loopback() -> Vec<Network> {
        vec![
            Network {
                address: IpAddr::from([127, 0, 0, 0]),
                prefix: 8,
            },
            Network {
                address: IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
                prefix: 128,
            },
        ]
    }

    /// Whether `client` is in this network (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, client: IpAddr) -> bool {
        let client = match client {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(client, IpAddr::V4),
            v4 => v4,
        };
        match (self.address, client) {
            (IpAddr::V4(network), IpAddr::V4(client)) => {
                mask(u32::from(network).into(), self.prefix, 32)
                    == mask(u32::from(client).into(), self.prefix, 32)
            }
            (IpAddr::V6(network), IpAddr::V6(client)) => {
                mask(u128::from(network), self.prefix, 128)
                    == mask(u128::from(client), self.prefix, 128)
            }
            _ => false,
        }
    }
}

/// The first `prefix` bits of a `width`-bit address.
fn mask(bits: u128, prefix: u8, width: u8) -> u128 {
    if prefix == 0 {
        0
    } else {
        bits >> (width - prefix)
    }
}

impl FromStr for Network {
    type Err = String;

    fn from_str(text: &str) -> Result<Network, String> {
        let bad = || format!("`{text}` is not a network such as 192.0.2.0/24 or 2001:db8::/32");
        let (address, prefix) = match text.trim().split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text.trim(), None),
        };
        let address: IpAddr = address.parse().map_err(|_| bad())?;
        let width = if address.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(prefix) => prefix.parse::<u8>().map_err(|_| bad())?,
            None => width,
        };
        if prefix > width {
            return Err(bad());
        }
        Ok(Network { address, prefix })
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn addresses_are_matched_by_prefix() {
        let lan: Network = "192.168.1.0/24".parse().unwrap();
        assert!(lan.contains(ip("192.168.1.77")));
        assert!(!lan.contains(ip("192.168.2.1")));
        assert!(lan.contains(ip("::ffff:192.168.1.5")));
        let all: Network = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("8.8.8.8")));
        let v6: Network = "2001:db8::/32".parse().unwrap();
        assert!(v6.contains(ip("2001:db8:1::2")));
        assert!(!v6.contains(ip("10.0.0.1")));
        let host: Network = "10.1.2.3".parse().unwrap();
        assert!(host.contains(ip("10.1.2.3")) && !host.contains(ip("10.1.2.4")));
        let loopback = Network::loopback();
        assert!(loopback.iter().any(|n| n.contains(ip("127.0.0.1"))));
        assert!(loopback.iter().any(|n| n.contains(ip("::1"))));
        assert!(!loopback.iter().any(|n| n.contains(ip("192.0.2.1"))));
    }

    #[test]
    fn bad_networks_are_refused() {
        for bad in ["10.0.0.0/33", "nonsense", "10.0.0/8", "::1/129"] {
            assert!(bad.parse::<Network>().is_err(), "{bad}");
        }
    }
}
