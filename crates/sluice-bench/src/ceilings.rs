//! The machine's own limits, measured in the same run so results are ratios.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

/// Sequential write bandwidth with an fdatasync after every `chunk` bytes, on the
/// filesystem holding `dir`: the best a log that syncs each write could do. MB/s.
pub fn fdatasync_write_mb_s(dir: &Path, total: usize, chunk: usize) -> Result<f64, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let path = dir.join("sluice-bench-disk-probe");
    let mut file = OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&path)
        .map_err(|e| e.to_string())?;
    let buf: Vec<u8> = (0..chunk).map(|i| (i * 31 % 251) as u8).collect();
    let start = Instant::now();
    let mut written = 0;
    while written < total {
        file.write_all(&buf).map_err(|e| e.to_string())?;
        file.sync_data().map_err(|e| e.to_string())?;
        written += chunk;
    }
    let secs = start.elapsed().as_secs_f64();
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok(written as f64 / secs / 1e6)
}

/// One TCP stream over loopback, 1 MiB writes, for `duration`. MB/s received.
pub fn loopback_tcp_mb_s(duration: Duration) -> Result<f64, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let reader = std::thread::spawn(move || -> u64 {
        let Ok((mut conn, _)) = listener.accept() else {
            return 0;
        };
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        while let Ok(n) = conn.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        total
    });
    let mut conn = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    let buf = vec![7u8; 1 << 20];
    let start = Instant::now();
    while start.elapsed() < duration {
        conn.write_all(&buf).map_err(|e| e.to_string())?;
    }
    drop(conn);
    let received = reader.join().map_err(|_| "reader panicked".to_string())?;
    Ok(received as f64 / start.elapsed().as_secs_f64() / 1e6)
}

/// What the disk alone does to the tail latency of anything that syncs before it answers.
#[derive(Debug, Clone, Copy)]
pub struct SyncFloor {
    /// Syncs issued.
    pub syncs: usize,
    /// Median fdatasync time, ms.
    pub p50_ms: f64,
    /// Longest fdatasync, ms.
    pub max_ms: f64,
    /// The wait that 1% of arrivals at uniformly random moments would exceed just to see the
    /// sync in progress finish (time-weighted, so one long stall counts for every arrival
    /// it holds up), ms: a floor under the p99 of any acks=all path that fsyncs on this disk.
    pub p99_wait_floor_ms: f64,
}

/// Small appends with an fdatasync after each, round robin over `files` files at about
/// `bytes_per_s`, for `duration`: the sync pattern of a partitioned log under light load.
pub fn sync_floor(
    dir: &Path,
    files: usize,
    bytes_per_s: f64,
    duration: Duration,
) -> Result<SyncFloor, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let chunk = 32 * 1024;
    let buf: Vec<u8> = (0..chunk).map(|i| (i * 17 % 251) as u8).collect();
    let paths: Vec<_> = (0..files)
        .map(|i| dir.join(format!("sluice-bench-sync-probe-{i}")))
        .collect();
    let mut handles = Vec::with_capacity(files);
    for path in &paths {
        handles.push(
            OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(path)
                .map_err(|e| e.to_string())?,
        );
    }
    let interval = Duration::from_secs_f64(chunk as f64 / bytes_per_s);
    let start = Instant::now();
    let mut syncs = Vec::new();
    let mut due = start;
    let mut i = 0;
    while start.elapsed() < duration {
        let now = Instant::now();
        if now < due {
            std::thread::sleep(due - now);
        }
        due += interval;
        let file = &mut handles[i % files];
        i += 1;
        file.write_all(&buf).map_err(|e| e.to_string())?;
        let t = Instant::now();
        file.sync_data().map_err(|e| e.to_string())?;
        syncs.push(t.elapsed().as_secs_f64());
    }
    let total = start.elapsed().as_secs_f64();
    drop(handles);
    for path in &paths {
        let _ = std::fs::remove_file(path);
    }
    syncs.sort_unstable_by(f64::total_cmp);
    let beyond = |x: f64| syncs.iter().map(|d| (d - x).max(0.0)).sum::<f64>() / total;
    let (mut lo, mut hi) = (0.0, syncs.last().copied().unwrap_or(0.0));
    for _ in 0..50 {
        let mid = (lo + hi) / 2.0;
        if beyond(mid) > 0.01 {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(SyncFloor {
        syncs: syncs.len(),
        p50_ms: syncs.get(syncs.len() / 2).copied().unwrap_or(0.0) * 1e3,
        max_ms: syncs.last().copied().unwrap_or(0.0) * 1e3,
        p99_wait_floor_ms: hi * 1e3,
    })
}
