//! A host of its own: a network namespace joined to this one by a veth pair, so a test can cut
//! it off without a RST (every packet dropped both ways), the way a cloud failover or a dropped
//! NAT flow does. Needs root (CI and the test machine run as root) and iproute2.

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// A namespace `ns` with address `addr`, reached from here through `host_if`.
pub struct NetHost {
    pub ns: String,
    host_if: String,
    ns_if: String,
    /// The namespace's address, as this side reaches it.
    pub addr: String,
}

fn ip(args: &str) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("ip {args}"))
        .output()
        .expect("ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl NetHost {
    /// Make one. Its addresses are in 10.254.0.0/16, private to this machine (the namespace
    /// has no other link).
    pub fn create() -> NetHost {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = (std::process::id() % 200) * 16 + N.fetch_add(1, Ordering::Relaxed);
        let ns = format!("pgmux-it-{n}");
        let (host_if, ns_if) = (format!("pgmh{n}"), format!("pgmn{n}"));
        let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        let _ = Command::new("ip").args(["link", "del", &host_if]).status();
        // A /31 per host: even address here, odd there.
        let b = n * 2;
        let here = format!("10.254.{}.{}", b / 256, b % 256);
        let there = format!("10.254.{}.{}", b / 256, b % 256 + 1);
        ip(&format!("netns add {ns}"));
        ip(&format!("link add {host_if} type veth peer name {ns_if}"));
        ip(&format!("link set {ns_if} netns {ns}"));
        ip(&format!("addr add {here}/31 dev {host_if}"));
        ip(&format!("link set {host_if} up"));
        ip(&format!("-n {ns} addr add {there}/31 dev {ns_if}"));
        ip(&format!("-n {ns} link set {ns_if} up"));
        ip(&format!("-n {ns} link set lo up"));
        NetHost {
            ns,
            host_if,
            ns_if,
            addr: there,
        }
    }

    /// Drop every packet the namespace sends, answering nothing (no RST, no ICMP, no ACK): a
    /// FIFO of length 0 on its end (tc's netem is not in every kernel). Dropping on this side
    /// instead would be seen by the sending socket as a local drop, unlike a real network.
    pub fn cut(&self) {
        let args = format!(
            "ip netns exec {} tc qdisc add dev {} root pfifo limit 0",
            self.ns, self.ns_if
        );
        let st = Command::new("sh").arg("-c").arg(&args).status().unwrap();
        assert!(st.success(), "{args}");
    }
}

impl Drop for NetHost {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .status();
    }
}
