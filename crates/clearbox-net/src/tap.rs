//! Taps joined to the engine's interfaces with tc: an ingress qdisc on each side and a u32
//! match-all filter whose `mirred` action redirects every frame to the other side's egress.
//! The tap is not persistent: it vanishes when its last fd (QEMU's) closes; the veth keeps an
//! ingress qdisc until [`unwire`] removes it.

use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::tc::{
    TcAction, TcActionAttribute, TcActionMirrorOption, TcActionOption, TcActionType, TcAttribute,
    TcFilterU32Option, TcHandle, TcMessage, TcMirror, TcMirrorActionType, TcOption, TcU32Key,
    TcU32Selector, TcU32SelectorFlags,
};
use netlink_packet_route::RouteNetlinkMessage;

use crate::apply::set_link;
use crate::netlink::{is_errno, Netlink};
use crate::scan::links;
use crate::{Error, Interface};

/// `TUNSETIFF` = `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
/// The ingress qdisc's handle, `ffff:`.
const INGRESS_HANDLE: TcHandle = TcHandle {
    major: 0xffff,
    minor: 0,
};
/// Priority of our filter (as `tc filter add … prio 1`).
const FILTER_PRIO: u32 = 1;

/// A tap wired to an interface.
#[derive(Debug)]
pub struct Tap {
    pub name: String,
    /// Open tap queue, for the hypervisor (`-netdev tap,fd=N`). Close-on-exec.
    pub fd: OwnedFd,
}

/// Opens a new (non-persistent) tap named `name` with a virtio-net header, as QEMU wants it.
fn open_tap(name: &str) -> Result<OwnedFd, Error> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(Error::Invalid(format!("bad tap name {name:?}")));
    }
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/net/tun")
        .map_err(|e| Error::io("open /dev/net/tun", e))?;
    // SAFETY: an all-zero ifreq is valid; we fill the name (shorter than IFNAMSIZ, so it stays
    // NUL-terminated) and the flags, and TUNSETIFF reads exactly this struct.
    let rc = unsafe {
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
            *d = s as libc::c_char;
        }
        ifr.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as i16;
        libc::ioctl(f.as_raw_fd(), TUNSETIFF as _, &ifr)
    };
    if rc < 0 {
        return Err(Error::io(
            format!("create tap {name}"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(OwnedFd::from(f))
}

fn index_of(nl: &mut Netlink, name: &str) -> Result<u32, Error> {
    links(nl)?
        .into_iter()
        .find(|l| l.name == name)
        .map(|l| l.index)
        .ok_or_else(|| Error::Invalid(format!("no network interface {name}")))
}

/// The ingress qdisc of link `index` (`tc qdisc … dev X ingress`).
fn ingress_qdisc(index: u32) -> TcMessage {
    let mut m = TcMessage::default();
    m.header.index = index as i32;
    m.header.parent = TcHandle::INGRESS;
    m.header.handle = INGRESS_HANDLE;
    m.attributes.push(TcAttribute::Kind("ingress".into()));
    m
}

fn add_ingress(nl: &mut Netlink, index: u32, name: &str) -> Result<(), Error> {
    let r = nl.request(
        RouteNetlinkMessage::NewQueueDiscipline(ingress_qdisc(index)),
        NLM_F_CREATE | NLM_F_EXCL,
        &format!("add an ingress qdisc to {name}"),
    );
    if is_errno(&r, &[libc::EEXIST]) {
        return Err(Error::Invalid(format!(
            "{name} already has an ingress qdisc (another VM or tool redirects its traffic)"
        )));
    }
    r
}

fn del_ingress(nl: &mut Netlink, index: u32, name: &str) -> Result<(), Error> {
    let r = nl.request(
        RouteNetlinkMessage::DelQueueDiscipline(ingress_qdisc(index)),
        0,
        &format!("remove the ingress qdisc of {name}"),
    );
    // Already gone (or the device is).
    if is_errno(&r, &[libc::ENOENT, libc::EINVAL, libc::ENODEV]) {
        return Ok(());
    }
    r
}

/// `tc filter add dev FROM parent ffff: protocol all prio 1 u32 match u32 0 0
///  action mirred egress redirect dev TO`
fn add_redirect(nl: &mut Netlink, from: u32, to: u32, what: &str) -> Result<(), Error> {
    let mut sel = TcU32Selector::default();
    sel.flags = TcU32SelectorFlags::Terminal;
    sel.nkeys = 1;
    sel.keys = vec![TcU32Key::default()];
    let mut mirror = TcMirror::default();
    mirror.generic.action = TcActionType::Stolen;
    mirror.eaction = TcMirrorActionType::EgressRedir;
    mirror.ifindex = to;
    let mut action = TcAction::default();
    action.attributes = vec![
        TcActionAttribute::Kind("mirred".into()),
        TcActionAttribute::Options(vec![TcActionOption::Mirror(TcActionMirrorOption::Parms(
            mirror,
        ))]),
    ];
    let mut m = TcMessage::default();
    m.header.index = from as i32;
    m.header.parent = INGRESS_HANDLE;
    let eth_p_all = (libc::ETH_P_ALL as u16).to_be();
    m.header.info = (FILTER_PRIO << 16) | u32::from(eth_p_all);
    m.attributes.push(TcAttribute::Kind("u32".into()));
    m.attributes.push(TcAttribute::Options(vec![
        TcOption::U32(TcFilterU32Option::Selector(sel)),
        TcOption::U32(TcFilterU32Option::Action(vec![action])),
    ]));
    nl.request(
        RouteNetlinkMessage::NewTrafficFilter(m),
        NLM_F_CREATE | NLM_F_EXCL,
        &format!("redirect {what}"),
    )
}

/// Creates tap `tap_name` in the current network namespace with `iface`'s MTU, and joins it
/// to `iface` both ways. Undoes its own work on failure.
pub fn wire(iface: &Interface, tap_name: &str) -> Result<Tap, Error> {
    let mut nl = Netlink::open()?;
    let veth = index_of(&mut nl, &iface.name)?;
    let fd = open_tap(tap_name)?;
    // Whether the veth's ingress qdisc is ours to remove on failure.
    let mut veth_qdisc = false;
    let res = (|| {
        let tap = index_of(&mut nl, tap_name)?;
        set_link(&mut nl, tap, None, Some(iface.mtu), true)?;
        add_ingress(&mut nl, veth, &iface.name)?;
        veth_qdisc = true;
        add_redirect(&mut nl, veth, tap, &format!("{} to {tap_name}", iface.name))?;
        add_ingress(&mut nl, tap, tap_name)?;
        add_redirect(&mut nl, tap, veth, &format!("{tap_name} to {}", iface.name))
    })();
    match res {
        Ok(()) => Ok(Tap {
            name: tap_name.to_string(),
            fd,
        }),
        Err(e) => {
            // The tap goes with its fd; a qdisc someone else put on the veth stays.
            drop(fd);
            if veth_qdisc {
                let _ = del_ingress(&mut nl, veth, &iface.name);
            }
            Err(e)
        }
    }
}

/// Removes what [`wire`] added: the ingress qdisc (and with it the filter) of `veth`, and the
/// tap if it still exists. Missing pieces are fine.
pub fn unwire(veth: &str, tap_name: &str) -> Result<(), Error> {
    let mut nl = Netlink::open()?;
    let present = links(&mut nl)?;
    let mut first_err = None;
    if let Some(l) = present.iter().find(|l| l.name == veth) {
        if let Err(e) = del_ingress(&mut nl, l.index, veth) {
            first_err.get_or_insert(e);
        }
    }
    if let Some(l) = present.iter().find(|l| l.name == tap_name) {
        let mut m = netlink_packet_route::link::LinkMessage::default();
        m.header.index = l.index;
        let r = nl.request(
            RouteNetlinkMessage::DelLink(m),
            0,
            &format!("remove {tap_name}"),
        );
        if !is_errno(&r, &[libc::ENODEV]) {
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
