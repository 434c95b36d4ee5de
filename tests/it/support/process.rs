//! The pgmux binary as a child process, its log (stderr) collected as it comes.

use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A pgmux process started from a config file, its log (stderr) collected as it comes.
pub struct Proc {
    child: Child,
    log: Arc<Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Proc {
    pub fn start(config: &Path) -> Proc {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgmux"));
        cmd.arg("-c").arg(config);
        Proc::spawn(cmd)
    }

    /// Start `cmd` (the pgmux binary with its arguments and environment); returns once it
    /// listens.
    pub fn spawn(mut cmd: Command) -> Proc {
        let mut child = cmd
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pgmux");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let reader = {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in std::io::BufReader::new(stderr)
                    .lines()
                    .map_while(Result::ok)
                {
                    let mut l = log.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
            })
        };
        let p = Proc {
            child,
            log,
            reader: Some(reader),
        };
        p.wait_log("pgmux listening", 10);
        p
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Wait until the log has `needle` `n` times (panics after `secs`).
    pub fn wait_log_n(&self, needle: &str, n: usize, secs: u64) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while self.log().matches(needle).count() < n {
            assert!(
                Instant::now() < deadline,
                "pgmux never logged {needle:?} ({n} times):\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn wait_log(&self, needle: &str, secs: u64) {
        self.wait_log_n(needle, 1, secs)
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }

    /// Wait for the process to exit (panics after `secs`); returns whether it exited 0.
    pub fn wait_exit(&mut self, secs: u64) -> bool {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                if let Some(r) = self.reader.take() {
                    r.join().unwrap();
                }
                return status.success();
            }
            assert!(
                Instant::now() < deadline,
                "pgmux did not exit within {secs} s:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
