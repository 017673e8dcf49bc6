//! Starts and stops the real `sluice` binary for integration tests.
//!
//! The binary is `$SLUICE_BIN`, or `target/debug/sluice` in this workspace (build it first:
//! `cargo build -p sluice`). Each broker gets a loopback port chosen by the OS and is killed
//! when dropped, so nothing outlives a test.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const START_TIMEOUT: Duration = Duration::from_secs(60);

fn binary() -> PathBuf {
    std::env::var_os("SLUICE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/sluice"))
}

/// A running broker over one data directory.
pub struct Broker {
    child: Option<Child>,
    data_dir: PathBuf,
    port: u16,
}

impl Broker {
    /// Starts a broker on a free port and waits for its `listening on` line.
    pub fn start(data_dir: &Path) -> Self {
        let mut broker = Self {
            child: None,
            data_dir: data_dir.to_path_buf(),
            port: 0,
        };
        broker.launch();
        broker
    }

    fn launch(&mut self) {
        let bin = binary();
        assert!(
            bin.exists(),
            "{} missing: run `cargo build -p sluice` first",
            bin.display()
        );
        let mut child = Command::new(&bin)
            .args(["serve", "--data-dir"])
            .arg(&self.data_dir)
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--admin-listen", "127.0.0.1:0"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sluice");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("[sluice] {line}");
                if line.contains("admin listening") {
                    continue;
                }
                if let Some(addr) = line.split("listening on ").nth(1) {
                    let port = addr.trim().rsplit(':').next().and_then(|p| p.parse().ok());
                    let _ = tx.send(port);
                }
            }
        });
        self.child = Some(child);
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(Some(port)) => self.port = port,
            other => {
                self.kill();
                panic!("sluice did not report its port: {other:?}");
            }
        }
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// SIGTERM and wait: a clean shutdown that must exit 0.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let status = Command::new("kill").arg(child.id().to_string()).status();
            assert!(status.is_ok_and(|s| s.success()), "could not signal sluice");
            let status = child.wait().expect("wait for sluice");
            assert!(status.success(), "sluice exited with {status}");
        }
    }

    /// SIGKILL: no flush, no checkpoint.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Clean stop, then start again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}
