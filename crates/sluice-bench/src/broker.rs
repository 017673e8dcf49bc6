//! A Sluice broker in its own process, so its CPU time and memory can be read from /proc
//! apart from the client's.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const START_TIMEOUT: Duration = Duration::from_secs(600);

/// Finds the release `sluice` binary, building it first so that it matches the source
/// (cargo does nothing when it is up to date; a stale binary would benchmark old code).
pub fn locate_binary(explicit: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(path) = explicit.or_else(|| std::env::var_os("SLUICE_BIN").map(PathBuf::from)) {
        return Ok(path);
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let sibling = exe.with_file_name("sluice");
    eprintln!("building the sluice binary (cargo build --release -p sluice)");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "-p", "sluice"])
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err("building sluice failed".into());
    }
    Ok(sibling)
}

pub struct Broker {
    /// Lines the broker logged that a benchmark waits for (see [`Broker::wait_for_log`]).
    watched: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// Lines logged since the last start, and their bytes.
    logged: std::sync::Arc<(AtomicU64, AtomicU64)>,
    /// `RLIMIT_NOFILE` for the broker process, if set.
    nofile: Option<u64>,
    bin: PathBuf,
    data_dir: PathBuf,
    extra: Vec<String>,
    child: Option<Child>,
    port: u16,
    /// The admin listener's address (`HOST:PORT`), from the broker's log.
    admin: std::sync::Arc<std::sync::Mutex<Option<String>>>,
}

impl Broker {
    pub fn start(bin: &Path, data_dir: &Path, extra: &[&str]) -> Result<Self, String> {
        Self::start_with_nofile(bin, data_dir, extra, None)
    }

    /// Starts a broker whose open-file limit (soft and hard) is `nofile`.
    pub fn start_with_nofile(
        bin: &Path,
        data_dir: &Path,
        extra: &[&str],
        nofile: Option<u64>,
    ) -> Result<Self, String> {
        let mut broker = Self {
            watched: Default::default(),
            logged: Default::default(),
            nofile,
            bin: bin.to_path_buf(),
            data_dir: data_dir.to_path_buf(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            child: None,
            port: 0,
            admin: Default::default(),
        };
        broker.launch()?;
        Ok(broker)
    }

    /// Starts the process and returns how long it took until it accepted connections.
    fn launch(&mut self) -> Result<Duration, String> {
        let started = Instant::now();
        let mut command = Command::new(&self.bin);
        command
            .args(["serve", "--data-dir"])
            .arg(&self.data_dir)
            .args(["--listen", &format!("127.0.0.1:{}", self.port)])
            .args(["--admin-listen", "127.0.0.1:0"])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(n) = self.nofile {
            use std::os::unix::process::CommandExt;
            let limit = libc::rlimit {
                rlim_cur: n as libc::rlim_t,
                rlim_max: n as libc::rlim_t,
            };
            // SAFETY: setrlimit is async-signal-safe and touches only the child.
            unsafe {
                command.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.bin.display()))?;
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        let watched = self.watched.clone();
        watched.lock().expect("log lines").clear();
        let logged = self.logged.clone();
        let admin = self.admin.clone();
        logged.0.store(0, Ordering::SeqCst);
        logged.1.store(0, Ordering::SeqCst);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                logged.0.fetch_add(1, Ordering::Relaxed);
                logged.1.fetch_add(line.len() as u64 + 1, Ordering::Relaxed);
                if line.contains("coordinator loaded") || line.contains("cleaned log") {
                    watched.lock().expect("log lines").push(line.clone());
                }
                if let Some(url) = line.split("admin listening on http://").nth(1) {
                    let addr = url.split_whitespace().next().unwrap_or_default();
                    *admin.lock().expect("admin address") = Some(addr.to_string());
                    continue;
                }
                if let Some(addr) = line.split("listening on ").nth(1) {
                    let _ = tx.send(addr.trim().rsplit(':').next().and_then(|p| p.parse().ok()));
                }
                if line.contains("ERROR") {
                    eprintln!("[sluice] {line}");
                }
            }
        });
        self.child = Some(child);
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(Some(port)) => {
                self.port = port;
                Ok(started.elapsed())
            }
            other => {
                self.kill();
                Err(format!("broker did not start: {other:?}"))
            }
        }
    }

    /// Waits (up to the start timeout) for a watched log line containing `needle` since the
    /// last start, and returns it.
    pub fn wait_for_log(&self, needle: &str) -> Result<String, String> {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(line) = self
                .watched
                .lock()
                .expect("log lines")
                .iter()
                .find(|l| l.contains(needle))
            {
                return Ok(line.clone());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(format!("the broker never logged {needle:?}"))
    }

    /// Lines and bytes the broker has logged since it last started.
    pub fn logged(&self) -> (u64, u64) {
        (
            self.logged.0.load(Ordering::Relaxed),
            self.logged.1.load(Ordering::Relaxed),
        )
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The admin listener (`HOST:PORT`), once the broker has logged it.
    pub fn admin_addr(&self) -> Option<String> {
        self.admin.lock().expect("admin address").clone()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// User plus system CPU seconds the broker process has used.
    pub fn cpu_seconds(&self) -> f64 {
        let Some(pid) = self.pid() else { return 0.0 };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return 0.0;
        };
        // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
        let rest = stat.rsplit(')').next().unwrap_or_default();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = [11, 12]
            .iter()
            .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
            .sum();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        ticks / hz.max(1.0)
    }

    fn status_kib(&self, field: &str) -> u64 {
        let Some(pid) = self.pid() else { return 0 };
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with(field))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    }

    /// Resident memory now, in MiB.
    pub fn rss_mib(&self) -> f64 {
        self.status_kib("VmRSS:") as f64 / 1024.0
    }

    /// Peak resident memory since start, in MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        self.status_kib("VmHWM:") as f64 / 1024.0
    }

    /// SIGTERM (clean shutdown) and wait.
    pub fn stop(&mut self) -> Result<(), String> {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let status = child.wait().map_err(|e| e.to_string())?;
            if !status.success() {
                return Err(format!("broker exited with {status}"));
            }
        }
        Ok(())
    }

    /// Clean shutdown, then start again; returns the start-up time.
    pub fn restart(&mut self) -> Result<Duration, String> {
        self.stop()?;
        self.launch()
    }

    /// kill -9, then start again; returns the start-up time (recovery included).
    pub fn crash_restart(&mut self) -> Result<Duration, String> {
        self.kill();
        self.launch()
    }

    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}
