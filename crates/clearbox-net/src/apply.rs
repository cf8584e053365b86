//! Configuring interfaces and routes in the current network namespace: what the guest agent
//! does with the host's scan, so the VM's NICs look like the engine's interfaces.

use std::collections::HashMap;
use std::net::IpAddr;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use crate::netlink::{is_errno, Netlink};
use crate::scan::links;
use crate::{Error, Interface, IpNet, MacAddr, Route};

/// Sets a link's name and MTU (each when given) and its up/down state.
pub(crate) fn set_link(
    nl: &mut Netlink,
    index: u32,
    name: Option<&str>,
    mtu: Option<u32>,
    up: bool,
) -> Result<(), Error> {
    let mut m = LinkMessage::default();
    m.header.index = index;
    m.header.change_mask = LinkFlags::Up;
    if up {
        m.header.flags = LinkFlags::Up;
    }
    if let Some(n) = name {
        m.attributes.push(LinkAttribute::IfName(n.to_string()));
    }
    if let Some(mtu) = mtu {
        m.attributes.push(LinkAttribute::Mtu(mtu));
    }
    nl.request(
        RouteNetlinkMessage::SetLink(m),
        0,
        &format!("configure interface {}", name.unwrap_or("#")),
    )
}

/// Brings `lo` up.
pub fn loopback_up() -> Result<(), Error> {
    let mut nl = Netlink::open()?;
    let lo = links(&mut nl)?
        .into_iter()
        .find(|l| l.loopback)
        .ok_or_else(|| Error::Invalid("no loopback interface".into()))?;
    set_link(&mut nl, lo.index, None, None, true)
}

/// A VM restored from a template has NICs whose MACs are the template's placeholders
/// (`placeholder(i)` for the VM's NIC `i`, which carries `interfaces[i]`): each takes its
/// interface's MAC here, before [`configure_interfaces`] finds NICs by MAC. NICs that already
/// have their interface's MAC (a cold-booted VM) are left alone.
pub fn claim_template_nics(
    interfaces: &[Interface],
    placeholder: impl Fn(usize) -> MacAddr,
) -> Result<(), Error> {
    let mut nl = Netlink::open()?;
    let present = links(&mut nl)?;
    for (i, want) in interfaces.iter().enumerate() {
        if present.iter().any(|l| l.mac == Some(want.mac)) {
            continue;
        }
        let Some(link) = present.iter().find(|l| l.mac == Some(placeholder(i))) else {
            continue;
        };
        let mut m = LinkMessage::default();
        m.header.index = link.index;
        m.attributes
            .push(LinkAttribute::Address(want.mac.0.to_vec()));
        nl.request(
            RouteNetlinkMessage::SetLink(m),
            0,
            &format!("give {} the MAC {}", link.name, want.mac),
        )?;
    }
    Ok(())
}

/// Gives each NIC of this namespace (found by MAC) the interface's name, MTU and addresses, and
/// brings it up.
pub fn configure_interfaces(interfaces: &[Interface]) -> Result<(), Error> {
    let mut nl = Netlink::open()?;
    let present = links(&mut nl)?;
    for want in interfaces {
        let link = present
            .iter()
            .find(|l| l.mac == Some(want.mac))
            .ok_or_else(|| {
                Error::Invalid(format!(
                    "no network device with MAC {} for interface {}",
                    want.mac, want.name
                ))
            })?;
        let clash = present
            .iter()
            .any(|l| l.name == want.name && l.index != link.index);
        if want.name.is_empty() || want.name.len() > 15 || want.name.contains('/') || clash {
            return Err(Error::Invalid(format!(
                "cannot name the network device {}: bad or taken name {:?}",
                link.name, want.name
            )));
        }
        let mtu = (want.mtu > 0).then_some(want.mtu);
        // A name change needs the link down.
        set_link(&mut nl, link.index, None, None, false)?;
        set_link(&mut nl, link.index, Some(&want.name), mtu, true)?;
        for a in &want.addresses {
            add_address(&mut nl, link.index, a).map_err(|e| {
                Error::Invalid(format!("add address {a} to {}: {}", want.name, chain(&e)))
            })?;
        }
    }
    Ok(())
}

use clearbox_util::error::chain;

fn family(ip: &IpAddr) -> AddressFamily {
    match ip {
        IpAddr::V4(_) => AddressFamily::Inet,
        IpAddr::V6(_) => AddressFamily::Inet6,
    }
}

fn add_address(nl: &mut Netlink, index: u32, a: &IpNet) -> Result<(), Error> {
    let mut m = AddressMessage::default();
    m.header.family = family(&a.addr);
    m.header.prefix_len = a.prefix_len;
    m.header.index = index;
    m.attributes.push(AddressAttribute::Local(a.addr));
    m.attributes.push(AddressAttribute::Address(a.addr));
    if let IpAddr::V4(v4) = a.addr {
        if a.prefix_len < 31 {
            let host_bits = 32 - u32::from(a.prefix_len);
            let bcast = u32::from(v4) | ((1u64 << host_bits) - 1) as u32;
            m.attributes
                .push(AddressAttribute::Broadcast(std::net::Ipv4Addr::from(bcast)));
        }
    } else {
        // The address is already in use by this very interface on the host side of the tap;
        // duplicate address detection would only delay it.
        m.attributes
            .push(AddressAttribute::Flags(AddressFlags::Nodad));
    }
    nl.request(
        RouteNetlinkMessage::NewAddress(m),
        NLM_F_CREATE | NLM_F_REPLACE,
        "add address",
    )
}

/// Adds `routes` (in order; gateways after the routes that reach them). A route that exists
/// already is fine.
pub fn add_routes(routes: &[Route]) -> Result<(), Error> {
    let mut nl = Netlink::open()?;
    let index: HashMap<String, u32> = links(&mut nl)?
        .into_iter()
        .map(|l| (l.name, l.index))
        .collect();
    let mut ordered: Vec<&Route> = routes.iter().collect();
    ordered.sort_by_key(|r| r.gateway.is_some());
    for r in ordered {
        let oif = *index.get(&r.device).ok_or_else(|| {
            Error::Invalid(format!("route {}: no interface {}", describe(r), r.device))
        })?;
        let res = add_route(&mut nl, oif, r);
        if !is_errno(&res, &[libc::EEXIST]) {
            res.map_err(|e| Error::Invalid(format!("add route {}: {}", describe(r), chain(&e))))?;
        }
    }
    Ok(())
}

fn describe(r: &Route) -> String {
    let dest = r.dest.map_or("default".to_string(), |d| d.to_string());
    match r.gateway {
        Some(g) => format!("{dest} via {g} dev {}", r.device),
        None => format!("{dest} dev {}", r.device),
    }
}

fn add_route(nl: &mut Netlink, oif: u32, r: &Route) -> Result<(), Error> {
    let mut m = RouteMessage::default();
    m.header.address_family = if r.ipv6 {
        AddressFamily::Inet6
    } else {
        AddressFamily::Inet
    };
    m.header.table = RouteHeader::RT_TABLE_MAIN;
    m.header.protocol = RouteProtocol::Boot;
    m.header.scope = RouteScope::from(r.scope);
    m.header.kind = RouteType::Unicast;
    if let Some(d) = r.dest {
        m.header.destination_prefix_length = d.prefix_len;
        m.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(d.addr)));
    }
    if let Some(g) = r.gateway {
        m.attributes
            .push(RouteAttribute::Gateway(RouteAddress::from(g)));
    }
    if let Some(s) = r.source {
        m.attributes
            .push(RouteAttribute::PrefSource(RouteAddress::from(s)));
    }
    if let Some(p) = r.metric {
        m.attributes.push(RouteAttribute::Priority(p));
    }
    m.attributes.push(RouteAttribute::Oif(oif));
    nl.request(
        RouteNetlinkMessage::NewRoute(m),
        NLM_F_CREATE | NLM_F_EXCL,
        "add route",
    )
}
