//! Wire form of [`clearbox_net`]'s interfaces and routes, converted in one place for both
//! sides (the host shim sends, the agent receives).

use std::net::IpAddr;

use clearbox_net::{Interface, IpNet, Route};

use crate::pb::agent as pb;

/// Host side: an interface as the agent's `Interface` message.
pub fn interface_to_wire(i: &Interface) -> pb::Interface {
    let mut w = pb::Interface::new();
    w.name = i.name.clone();
    w.hwaddr = i.mac.to_string();
    w.mtu = i.mtu;
    w.addresses = i
        .addresses
        .iter()
        .map(|a| {
            let mut x = pb::IpAddress::new();
            x.address = a.addr.to_string();
            x.prefix_len = u32::from(a.prefix_len);
            x
        })
        .collect();
    w
}

/// Host side: a route as the agent's `Route` message.
pub fn route_to_wire(r: &Route) -> pb::Route {
    let mut w = pb::Route::new();
    w.dest = r.dest.map(|d| d.to_string()).unwrap_or_default();
    w.gateway = r.gateway.map(|g| g.to_string()).unwrap_or_default();
    w.device = r.device.clone();
    w.source = r.source.map(|s| s.to_string()).unwrap_or_default();
    w.scope = u32::from(r.scope);
    w.family = if r.ipv6 { 6 } else { 4 };
    w.metric = r.metric.unwrap_or(0);
    w
}

fn ip(field: &str, s: &str) -> Result<Option<IpAddr>, String> {
    if s.is_empty() {
        return Ok(None);
    }
    s.parse()
        .map(Some)
        .map_err(|_| format!("{field}: bad IP address {s:?}"))
}

/// Guest side: checks and converts an `Interface` message.
pub fn interface_from_wire(w: &pb::Interface) -> Result<Interface, String> {
    let mac = w.hwaddr.parse().map_err(|e| format!("{e}"))?;
    let addresses = w
        .addresses
        .iter()
        .map(|a| {
            let addr = ip("address", &a.address)?.ok_or("empty address")?;
            let len = u8::try_from(a.prefix_len).map_err(|_| "bad prefix length".to_string())?;
            IpNet::new(addr, len).map_err(|e| e.to_string())
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Interface {
        name: w.name.clone(),
        mac,
        mtu: w.mtu,
        addresses,
    })
}

/// Guest side: checks and converts a `Route` message.
pub fn route_from_wire(w: &pb::Route) -> Result<Route, String> {
    let ipv6 = match w.family {
        4 => false,
        6 => true,
        f => return Err(format!("route family must be 4 or 6, not {f}")),
    };
    let dest = match w.dest.as_str() {
        "" => None,
        d => Some(d.parse::<IpNet>().map_err(|e| e.to_string())?),
    };
    let gateway = ip("gateway", &w.gateway)?;
    let source = ip("source", &w.source)?;
    let family_ok = |a: Option<IpAddr>| a.is_none_or(|a| a.is_ipv6() == ipv6);
    if !family_ok(dest.map(|d| d.addr)) || !family_ok(gateway) || !family_ok(source) {
        return Err(format!("route {w:?} mixes address families"));
    }
    Ok(Route {
        dest,
        gateway,
        device: w.device.clone(),
        source,
        scope: u8::try_from(w.scope).map_err(|_| format!("bad route scope {}", w.scope))?,
        ipv6,
        metric: (w.metric != 0).then_some(w.metric),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let i = Interface {
            name: "eth0".into(),
            mac: "0a:58:0a:58:00:02".parse().unwrap(),
            mtu: 1500,
            addresses: vec![
                "10.88.0.2/16".parse().unwrap(),
                "fd00::2/64".parse().unwrap(),
            ],
        };
        assert_eq!(interface_from_wire(&interface_to_wire(&i)).unwrap(), i);
        let r = Route {
            dest: None,
            gateway: Some("fd00::1".parse().unwrap()),
            device: "eth0".into(),
            source: None,
            scope: 0,
            ipv6: true,
            metric: Some(1024),
        };
        assert_eq!(route_from_wire(&route_to_wire(&r)).unwrap(), r);
        let mut bad = route_to_wire(&r);
        bad.gateway = "10.0.0.1".into();
        assert!(route_from_wire(&bad).unwrap_err().contains("families"));
        let mut bad = interface_to_wire(&i);
        bad.hwaddr = "nope".into();
        assert!(interface_from_wire(&bad).is_err());
    }
}
