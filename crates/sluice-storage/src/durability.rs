//! The one I/O seam tests need to break: making bytes durable.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};

/// Makes written data durable. The production implementation calls fdatasync/fsync; tests
/// substitute one that fails to prove a failed sync takes the log directory offline.
pub trait Durability: Send + Sync + std::fmt::Debug {
    fn sync_file(&self, file: &File) -> io::Result<()>;
    /// Makes a directory's entries durable. The caller opens the directory first, so that
    /// running out of descriptors shows up before anything was renamed or created.
    fn sync_dir(&self, dir: &File) -> io::Result<()>;
    /// Makes everything written to the file system holding `dir` durable (files, their sizes,
    /// directory entries), reporting any write-back error on it since `dir` was opened.
    /// `Unsupported` where the platform cannot do that in one call; callers then sync file
    /// by file.
    fn sync_filesystem(&self, dir: &File) -> io::Result<()> {
        let _ = dir;
        Err(io::ErrorKind::Unsupported.into())
    }
}

/// `syncfs(2)` where it reports write-back errors (Linux 5.8 and later; before that it
/// returned success whatever happened, which would hide a failed write).
#[cfg(target_os = "linux")]
fn syncfs(dir: &File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    if !syncfs_supported() {
        return Err(io::ErrorKind::Unsupported.into());
    }
    // SAFETY: the descriptor is open for as long as `dir` is borrowed.
    if unsafe { libc::syncfs(dir.as_raw_fd()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn syncfs(_dir: &File) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}

/// Whether [`syncfs`] can work here: Linux 5.8 or later.
pub fn syncfs_supported() -> bool {
    #[cfg(target_os = "linux")]
    {
        kernel_syncfs_reports_errors()
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// Whether the running kernel is Linux 5.8 or later, from `uname -r`'s leading numbers.
#[cfg(target_os = "linux")]
fn kernel_syncfs_reports_errors() -> bool {
    static KNOWN: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *KNOWN.get_or_init(|| {
        // SAFETY: `uname` fills the zeroed struct it is given.
        let mut name: libc::utsname = unsafe { std::mem::zeroed() };
        if unsafe { libc::uname(&mut name) } != 0 {
            return false;
        }
        let release: Vec<u8> = name
            .release
            .iter()
            .take_while(|&&c| c != 0)
            .map(|&c| c as u8)
            .collect();
        release_at_least(&String::from_utf8_lossy(&release), (5, 8))
    })
}

/// Whether a kernel release string such as "6.1.0-18-amd64" is at least `want`.
fn release_at_least(release: &str, want: (u32, u32)) -> bool {
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => (major, minor) >= want,
        _ => false,
    }
}

/// fdatasync for files, fsync of the opened directory for directory entries.
#[derive(Debug, Default)]
pub struct Fsync;

impl Durability for Fsync {
    fn sync_file(&self, file: &File) -> io::Result<()> {
        file.sync_data()
    }
    fn sync_dir(&self, dir: &File) -> io::Result<()> {
        dir.sync_all()
    }
    fn sync_filesystem(&self, dir: &File) -> io::Result<()> {
        syncfs(dir)
    }
}

/// Syncs for real until `ok_syncs` syncs have happened, then fails every sync.
#[derive(Debug)]
pub struct FailAfter {
    remaining: AtomicU64,
}

impl FailAfter {
    pub fn new(ok_syncs: u64) -> Self {
        Self {
            remaining: AtomicU64::new(ok_syncs),
        }
    }

    fn step(&self) -> io::Result<()> {
        let ok = self
            .remaining
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if ok {
            Ok(())
        } else {
            Err(io::Error::other("injected fsync failure"))
        }
    }
}

impl Durability for FailAfter {
    fn sync_file(&self, file: &File) -> io::Result<()> {
        self.step()?;
        file.sync_data()
    }
    fn sync_dir(&self, dir: &File) -> io::Result<()> {
        self.step()?;
        Fsync.sync_dir(dir)
    }
    fn sync_filesystem(&self, dir: &File) -> io::Result<()> {
        self.step()?;
        Fsync.sync_filesystem(dir)
    }
}

#[cfg(test)]
mod tests {
    use super::release_at_least;

    /// The version check reads the leading numbers of any distribution's release string.
    #[test]
    fn kernel_releases_compare_by_major_and_minor() {
        assert!(release_at_least("5.8.0", (5, 8)));
        assert!(release_at_least("6.1.0-18-amd64", (5, 8)));
        assert!(release_at_least("5.10.209-198.858.amzn2.x86_64", (5, 8)));
        assert!(!release_at_least("5.4.0-150-generic", (5, 8)));
        assert!(!release_at_least("4.19.0", (5, 8)));
        assert!(!release_at_least("garbage", (5, 8)));
        assert!(!release_at_least("", (5, 8)));
    }
}
