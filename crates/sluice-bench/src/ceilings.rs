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
