//! Reading what a network namespace holds: Ethernet interfaces, their addresses, the routes of
//! the main table.

use std::collections::HashMap;
use std::net::IpAddr;

use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkLayerType, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::netlink::Netlink;
use crate::{Error, Interface, IpNet, MacAddr, Network, Route, TAP_PREFIX};

/// A link as the kernel reports it.
#[derive(Clone, Debug)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub mac: Option<MacAddr>,
    pub mtu: u32,
    pub ether: bool,
    pub loopback: bool,
}

pub(crate) fn links(nl: &mut Netlink) -> Result<Vec<Link>, Error> {
    let msgs = nl.dump(
        RouteNetlinkMessage::GetLink(LinkMessage::default()),
        "list network interfaces",
    )?;
    Ok(msgs
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => Some(link_of(&l)),
            _ => None,
        })
        .collect())
}

fn link_of(l: &LinkMessage) -> Link {
    let mut link = Link {
        index: l.header.index,
        name: String::new(),
        mac: None,
        mtu: 0,
        ether: l.header.link_layer_type == LinkLayerType::Ether,
        loopback: l.header.flags.contains(LinkFlags::Loopback)
            || l.header.link_layer_type == LinkLayerType::Loopback,
    };
    for a in &l.attributes {
        match a {
            LinkAttribute::IfName(n) => link.name = n.clone(),
            LinkAttribute::Mtu(m) => link.mtu = *m,
            LinkAttribute::Address(b) if b.len() == 6 => {
                let mut m = [0u8; 6];
                m.copy_from_slice(b);
                link.mac = Some(MacAddr(m));
            }
            _ => {}
        }
    }
    link
}

/// Every link of the current network namespace.
pub fn all_links() -> Result<Vec<Link>, Error> {
    links(&mut Netlink::open()?)
}

/// Names of clearbox taps in the current network namespace: a sign that a VM already uses it.
pub fn clearbox_taps() -> Result<Vec<String>, Error> {
    Ok(all_links()?
        .into_iter()
        .filter(|l| l.name.starts_with(TAP_PREFIX))
        .map(|l| l.name)
        .collect())
}

/// The Ethernet interfaces (not loopback, not our own taps) and main-table routes of the
/// current network namespace.
pub fn scan() -> Result<Network, Error> {
    let mut nl = Netlink::open()?;
    let links: Vec<Link> = links(&mut nl)?
        .into_iter()
        .filter(|l| l.ether && !l.loopback && !l.name.starts_with(TAP_PREFIX))
        .collect();
    let mut interfaces: Vec<Interface> = Vec::new();
    let mut by_index: HashMap<u32, usize> = HashMap::new();
    for l in &links {
        let Some(mac) = l.mac else { continue };
        by_index.insert(l.index, interfaces.len());
        interfaces.push(Interface {
            name: l.name.clone(),
            mac,
            mtu: l.mtu,
            addresses: Vec::new(),
        });
    }
    let addrs = nl.dump(
        RouteNetlinkMessage::GetAddress(AddressMessage::default()),
        "list addresses",
    )?;
    for m in addrs {
        let RouteNetlinkMessage::NewAddress(a) = m else {
            continue;
        };
        let Some(&i) = by_index.get(&a.header.index) else {
            continue;
        };
        if let Some(net) = address_of(&a) {
            interfaces[i].addresses.push(net);
        }
    }
    let names: HashMap<u32, String> = links.iter().map(|l| (l.index, l.name.clone())).collect();
    let msgs = nl.dump(
        RouteNetlinkMessage::GetRoute(RouteMessage::default()),
        "list routes",
    )?;
    let mut routes: Vec<Route> = msgs
        .into_iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewRoute(r) => route_of(&r, &names),
            _ => None,
        })
        .collect();
    // Routes through a gateway need the gateway's own route first.
    routes.sort_by_key(|r| r.gateway.is_some());
    Ok(Network { interfaces, routes })
}

fn address_of(a: &AddressMessage) -> Option<IpNet> {
    if a.header.scope == AddressScope::Host {
        return None;
    }
    let mut local = None;
    let mut address = None;
    for attr in &a.attributes {
        match attr {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            _ => {}
        }
    }
    // IFA_LOCAL is the interface's own address (IFA_ADDRESS is the peer on point-to-point).
    let addr = local.or(address)?;
    if let IpAddr::V6(v6) = addr {
        // fe80::/10: the guest's kernel derives its own from the same MAC.
        if v6.segments()[0] & 0xffc0 == 0xfe80 {
            return None;
        }
    }
    IpNet::new(addr, a.header.prefix_len).ok()
}

fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

fn route_of(r: &RouteMessage, names: &HashMap<u32, String>) -> Option<Route> {
    let h = &r.header;
    let ipv6 = match h.address_family {
        AddressFamily::Inet => false,
        AddressFamily::Inet6 => true,
        _ => return None,
    };
    if h.kind != RouteType::Unicast
        || matches!(h.protocol, RouteProtocol::Kernel | RouteProtocol::Ra)
    {
        return None;
    }
    let mut table = u32::from(h.table);
    let (mut dest, mut gateway, mut source, mut oif, mut metric) = (None, None, None, None, None);
    for a in &r.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(d) => dest = ip_of(d),
            RouteAttribute::Gateway(g) => gateway = ip_of(g),
            RouteAttribute::PrefSource(s) => source = ip_of(s),
            RouteAttribute::Oif(i) => oif = Some(*i),
            RouteAttribute::Priority(p) => metric = Some(*p),
            _ => {}
        }
    }
    if table != u32::from(RouteHeader::RT_TABLE_MAIN) {
        return None;
    }
    let device = names.get(&oif?)?.clone();
    let dest = match dest {
        Some(d) => Some(IpNet::new(d, h.destination_prefix_length).ok()?),
        None if h.destination_prefix_length == 0 => None,
        None => return None,
    };
    if let Some(IpNet {
        addr: IpAddr::V6(v6),
        ..
    }) = dest
    {
        if v6.segments()[0] & 0xffc0 == 0xfe80 || v6.is_multicast() {
            return None;
        }
    }
    Some(Route {
        dest,
        gateway,
        device,
        source,
        scope: u8::from(h.scope),
        ipv6,
        metric,
    })
}
