//! Plain descriptions of interfaces and routes, shared by the host (scan) and the guest
//! (apply), and stored in the VM record.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Error;

/// An Ethernet address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for MacAddr {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::Invalid(format!("bad MAC address {s:?}"));
        let mut out = [0u8; 6];
        let mut parts = s.split(':');
        for b in out.iter_mut() {
            let p = parts.next().ok_or_else(bad)?;
            if p.len() != 2 {
                return Err(bad());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(MacAddr(out))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An address with its prefix length (`10.88.0.2/16`, `fd00::2/64`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IpNet {
    pub addr: IpAddr,
    pub prefix_len: u8,
}

impl IpNet {
    /// Checks the prefix length against the family.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Result<Self, Error> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix_len > max {
            return Err(Error::Invalid(format!(
                "bad prefix length {addr}/{prefix_len}"
            )));
        }
        Ok(IpNet { addr, prefix_len })
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

impl FromStr for IpNet {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::Invalid(format!("bad address {s:?} (want ADDR/PREFIX)"));
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: IpAddr = a.parse().map_err(|_| bad())?;
        let prefix_len: u8 = p.parse().map_err(|_| bad())?;
        IpNet::new(addr, prefix_len)
    }
}

/// One Ethernet interface the engine prepared.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    pub mac: MacAddr,
    pub mtu: u32,
    /// IPv4 and global/unique-local IPv6 addresses (link-local ones the guest derives itself).
    pub addresses: Vec<IpNet>,
}

/// One route of the main table (kernel-generated prefix routes and router-advertised ones
/// left out: the guest's kernel makes those itself).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// `None`: the default route.
    pub dest: Option<IpNet>,
    pub gateway: Option<IpAddr>,
    /// Name of the outgoing interface.
    pub device: String,
    /// Preferred source address.
    pub source: Option<IpAddr>,
    /// `RT_SCOPE_*` (0 universe, 253 link, 254 host).
    pub scope: u8,
    pub ipv6: bool,
    pub metric: Option<u32>,
}

/// What a network namespace holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub interfaces: Vec<Interface>,
    pub routes: Vec<Route>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mac_round_trip() {
        let m: MacAddr = "0a:58:0A:58:00:02".parse().unwrap();
        assert_eq!(m.to_string(), "0a:58:0a:58:00:02");
        assert!("0a:58:0a:58:00".parse::<MacAddr>().is_err());
        assert!("0a:58:0a:58:00:02:03".parse::<MacAddr>().is_err());
        assert!("zz:58:0a:58:00:02".parse::<MacAddr>().is_err());
    }

    #[test]
    fn ipnet_parse() {
        let n: IpNet = "10.88.0.2/16".parse().unwrap();
        assert_eq!(n.to_string(), "10.88.0.2/16");
        assert!("10.88.0.2/33".parse::<IpNet>().is_err());
        assert!("fd00::2/64".parse::<IpNet>().is_ok());
        assert!("fd00::2".parse::<IpNet>().is_err());
    }
}
