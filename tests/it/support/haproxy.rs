//! Debian's HAProxy in TCP mode, round-robin, in front of pgmux replicas: the stand-in for a
//! Kubernetes Service in front of a fleet (tests/it/peers.rs, tests/it/fleet.rs).

use std::time::Duration;

use super::free_port;

/// HAProxy on a port of its own (killed on drop).
pub struct Balancer {
    child: std::process::Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Balancer {
    /// Round-robin over pgmux on 127.0.0.1 at `ports`.
    pub fn start(ports: &[u16]) -> Balancer {
        let replicas: Vec<_> = ports.iter().map(|p| ("127.0.0.1", *p)).collect();
        Balancer::start_at(&replicas, None)
    }

    /// Round-robin over `replicas` (address, port). With `ready` (a port on each replica's
    /// address serving pgmux's /ready), a replica is taken out while /ready fails (checked
    /// every 100 ms), as a Kubernetes Service does with a readiness probe, and a connection
    /// refused goes to another replica.
    pub fn start_at(replicas: &[(&str, u16)], ready: Option<u16>) -> Balancer {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let check = ready
            .map(|p| format!(" check port {p} inter 100 fall 1 rise 2"))
            .unwrap_or_default();
        let servers: String = (replicas.iter().enumerate())
            .map(|(i, (a, p))| format!("  server r{i} {a}:{p}{check}\n"))
            .collect();
        let probe = match ready {
            Some(_) => "  option httpchk GET /ready\n  retries 3\n  option redispatch\n",
            None => "",
        };
        let cfg = format!(
            "global\n  maxconn 4000\ndefaults\n  mode tcp\n  timeout connect 5s\n  \
             timeout client 1m\n  timeout server 1m\nlisten fleet\n  bind 127.0.0.1:{port}\n  \
             balance roundrobin\n{probe}{servers}"
        );
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, cfg).unwrap();
        let child = std::process::Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("haproxy (scripts/test.sh installs it)");
        Balancer {
            child,
            port,
            _dir: dir,
        }
    }

    /// Wait until HAProxy listens (it does a moment after it starts).
    pub async fn listening(&self) {
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("haproxy did not start");
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
