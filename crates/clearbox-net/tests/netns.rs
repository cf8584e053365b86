//! Wiring, scanning and applying in a private network namespace (needs root, as CI has).
//! The test sets up with `ip` (allowed in tests) and checks with `ip`/`tc`.

#![allow(clippy::unwrap_used)]

use std::process::Command;

use clearbox_net::{apply, netns, scan, tap, Interface, IpNet, Route};

fn sh(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// MAC of `dev` (/sys shows the host's namespace, so ask `ip`).
fn mac_of(dev: &str) -> String {
    let out = sh(&format!("ip -o link show {dev}"));
    let at = out.find("link/ether ").unwrap() + "link/ether ".len();
    out[at..at + 17].to_string()
}

#[test]
fn wire_scan_apply_unwire() {
    // A thread of its own: its network namespace is private, processes it starts inherit it.
    std::thread::spawn(|| {
        netns::enter_new().unwrap();
        assert!(sh("ip link show lo").contains("UP"));
        sh("ip link add veth0 type veth peer name peer0");
        sh("ip link set veth0 mtu 1400 up && ip link set peer0 up");
        sh("ip addr add 10.9.0.2/24 dev veth0");
        sh("ip -6 addr add fd00:9::2/64 dev veth0 nodad");
        sh("ip route add default via 10.9.0.1");
        sh("ip route add 10.10.0.0/16 via 10.9.0.1 metric 7");

        let net = scan::scan().unwrap();
        let veth = net.interfaces.iter().find(|i| i.name == "veth0").unwrap();
        assert_eq!(veth.mtu, 1400);
        assert_eq!(veth.mac.to_string(), mac_of("veth0"));
        assert!(veth.addresses.contains(&"10.9.0.2/24".parse().unwrap()));
        assert!(veth.addresses.contains(&"fd00:9::2/64".parse().unwrap()));
        assert!(
            veth.addresses
                .iter()
                .all(|a| !a.to_string().starts_with("fe80")),
            "{net:?}"
        );
        let default = net
            .routes
            .iter()
            .find(|r| r.dest.is_none() && !r.ipv6)
            .unwrap();
        assert_eq!(default.gateway, Some("10.9.0.1".parse().unwrap()));
        assert_eq!(default.device, "veth0");
        let r = net
            .routes
            .iter()
            .find(|r| r.dest == Some("10.10.0.0/16".parse().unwrap()))
            .unwrap();
        assert_eq!(r.metric, Some(7));
        // The kernel's own prefix route is left to the guest's kernel.
        assert!(
            !net.routes
                .iter()
                .any(|r| r.dest == Some("10.9.0.0/24".parse().unwrap())),
            "{net:?}"
        );

        // Wire a tap to veth0: qdiscs and filters both ways.
        let t = tap::wire(veth, "cbtap0").unwrap();
        assert_eq!(scan::clearbox_taps().unwrap(), vec!["cbtap0".to_string()]);
        let f = sh("tc filter show dev veth0 ingress");
        assert!(f.contains("mirred") && f.contains("cbtap0"), "{f}");
        let f = sh("tc filter show dev cbtap0 ingress");
        assert!(f.contains("mirred") && f.contains("veth0"), "{f}");
        assert!(sh("ip link show cbtap0").contains("mtu 1400"));
        // The scan never reports our own taps.
        assert!(!scan::scan()
            .unwrap()
            .interfaces
            .iter()
            .any(|i| i.name == "cbtap0"));
        // Wiring the same interface twice is refused.
        let e = tap::wire(veth, "cbtap1").unwrap_err();
        assert!(
            e.to_string().contains("already has an ingress qdisc"),
            "{e}"
        );
        assert!(scan::clearbox_taps().unwrap() == vec!["cbtap0".to_string()]);
        // ... and the refusal leaves the first wiring alone.
        assert!(sh("tc filter show dev veth0 ingress").contains("cbtap0"));

        // The tap dies with its last fd; unwire removes the veth's qdisc.
        drop(t);
        assert!(scan::clearbox_taps().unwrap().is_empty());
        tap::unwire("veth0", "cbtap0").unwrap();
        assert!(!sh("tc qdisc show dev veth0").contains("ingress"));
        tap::unwire("veth0", "cbtap0").unwrap();

        // Guest side: give peer0 (found by MAC) a name, MTU, addresses, routes.
        let want = Interface {
            name: "eth5".into(),
            mac: mac_of("peer0").parse().unwrap(),
            mtu: 1300,
            addresses: vec![
                "10.9.0.3/24".parse().unwrap(),
                "fd00:9::3/64".parse::<IpNet>().unwrap(),
            ],
        };
        sh("ip link set peer0 down");
        apply::configure_interfaces(std::slice::from_ref(&want)).unwrap();
        let show = sh("ip addr show eth5");
        assert!(
            show.contains("mtu 1300") && show.contains("10.9.0.3/24"),
            "{show}"
        );
        assert!(
            show.contains("fd00:9::3/64") && show.contains("UP"),
            "{show}"
        );
        let route = Route {
            dest: Some("10.11.0.0/16".parse().unwrap()),
            gateway: Some("10.9.0.1".parse().unwrap()),
            device: "eth5".into(),
            source: None,
            scope: 0,
            ipv6: false,
            metric: None,
        };
        apply::add_routes(std::slice::from_ref(&route)).unwrap();
        // Twice is fine.
        apply::add_routes(&[route]).unwrap();
        assert!(sh("ip route show").contains("10.11.0.0/16 via 10.9.0.1 dev eth5"));
        let bad = Interface {
            mac: "02:00:00:00:00:99".parse().unwrap(),
            ..want
        };
        let e = apply::configure_interfaces(&[bad]).unwrap_err();
        assert!(e.to_string().contains("no network device with MAC"), "{e}");
    })
    .join()
    .unwrap();
}
