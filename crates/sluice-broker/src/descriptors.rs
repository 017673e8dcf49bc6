//! Keeping connections and partition files within the process's open-file limit.
//!
//! Every connection holds a socket and every open segment a file. When they together reach
//! `RLIMIT_NOFILE`, the next `open` fails with EMFILE, wherever it happens: a segment roll, an
//! index write, a checkpoint. So the broker budgets descriptors: storage keeps at most
//! [`segment_files_for`] segment files open (closing the least recently used, reopening on
//! use), and a connection is accepted only while what is open stays below the limit by a
//! reserve ([`reserve_for`]) kept for the files the broker opens briefly (checkpoints, index
//! writes, directory syncs), its listeners and the admin API. However many partitions exist,
//! they never need more descriptors than that.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The least number of descriptors kept free of connections and partitions.
pub(crate) const RESERVE_MIN: usize = 64;

/// The process's soft limit on open files.
pub(crate) fn open_file_limit() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0
        || limit.rlim_cur == libc::RLIM_INFINITY
    {
        return usize::MAX;
    }
    usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX)
}

/// Raises the soft open-file limit to the hard one, so the broker can hold as many
/// connections and partition files as the administrator allows rather than the shell's
/// default (often 1,024). Returns the new soft limit if it was raised. Called at start-up,
/// before anything reads the limit.
pub(crate) fn raise_open_file_limit() -> std::io::Result<Option<libc::rlim_t>> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur >= limit.rlim_max {
        return Ok(None);
    }
    limit.rlim_cur = limit.rlim_max;
    // SAFETY: setrlimit reads only the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Some(limit.rlim_cur))
}

/// Descriptors kept free for short-lived files and the rest of the process: a sixteenth of
/// the limit, and at least [`RESERVE_MIN`].
pub(crate) fn reserve_for(limit: usize) -> usize {
    (limit / 16).max(RESERVE_MIN)
}

/// The segment files storage may keep open: half of what the reserve leaves, and at least
/// [`RESERVE_MIN`]. The other half is for connections.
pub(crate) fn segment_files_for(limit: usize) -> usize {
    (limit.saturating_sub(reserve_for(limit)) / 2).max(RESERVE_MIN)
}

/// The connections open now, and the accounting behind admitting more.
#[derive(Debug, Default)]
pub(crate) struct Descriptors {
    connections: Arc<AtomicUsize>,
}

/// Why a connection or a partition does not fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NoRoom {
    pub open_files: usize,
    pub connections: usize,
    pub limit: usize,
    pub reserve: usize,
}

impl std::fmt::Display for NoRoom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} partition files and {} connections are open; the open-file limit is {}, of \
             which {} are kept in reserve",
            self.open_files, self.connections, self.limit, self.reserve
        )
    }
}

/// A connection counted as open until this is dropped.
#[derive(Debug)]
pub(crate) struct ConnectionSlot(Arc<AtomicUsize>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Descriptors {
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Whether `new` more descriptors fit beside what is open now.
    fn room_for(&self, new: usize, connections: usize) -> Result<(), NoRoom> {
        fits(
            sluice_partition::open_file_count(),
            connections,
            new,
            open_file_limit(),
        )
    }

    /// Admits one more connection if it stays within `max_connections` and the descriptor
    /// budget. The caller already holds the accepted socket, so it counts as open here.
    pub fn admit(&self, max_connections: usize) -> Result<ConnectionSlot, Refused> {
        let open = self.connections.fetch_add(1, Ordering::SeqCst);
        let slot = ConnectionSlot(self.connections.clone());
        if open >= max_connections {
            return Err(Refused::MaxConnections);
        }
        // `open` others plus this one, whose socket is already counted by the process.
        self.room_for(0, open + 1).map_err(Refused::Descriptors)?;
        Ok(slot)
    }

    /// Whether partitions needing `files` new segment files can be created now. They hold
    /// no descriptor for good (storage closes segment files beyond its share), so creating
    /// any number needs one free descriptor at a time beside the reserve.
    pub fn room_for_files(&self, files: usize) -> Result<(), NoRoom> {
        self.room_for(files.min(1), self.connections())
    }
}

/// Whether `new` descriptors fit beside `open_files` and `connections` under `limit`, keeping
/// the reserve free.
fn fits(open_files: usize, connections: usize, new: usize, limit: usize) -> Result<(), NoRoom> {
    let reserve = reserve_for(limit);
    let wanted = open_files
        .saturating_add(connections)
        .saturating_add(new)
        .saturating_add(reserve);
    if wanted > limit {
        return Err(NoRoom {
            open_files,
            connections,
            limit,
            reserve,
        });
    }
    Ok(())
}

/// Why a connection was closed on accept.
#[derive(Debug)]
pub(crate) enum Refused {
    MaxConnections,
    Descriptors(NoRoom),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Connections are admitted up to max.connections and counted until their slot drops.
    #[test]
    fn connections_are_counted_until_their_slot_drops() {
        let d = Descriptors::default();
        let a = d.admit(2).expect("first fits");
        let b = d.admit(2).expect("second fits");
        assert!(matches!(d.admit(2), Err(Refused::MaxConnections)));
        assert_eq!(d.connections(), 2);
        drop(a);
        assert_eq!(d.connections(), 1);
        let _c = d.admit(2).expect("a slot was freed");
        drop(b);
        assert_eq!(d.connections(), 1);
    }

    /// After raising, the soft limit is the hard one, and the budget reads the raised value.
    #[test]
    fn the_soft_limit_is_raised_to_the_hard_one() {
        raise_open_file_limit().expect("getrlimit and setrlimit");
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes only the struct we pass.
        assert_eq!(
            unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) },
            0
        );
        assert_eq!(limit.rlim_cur, limit.rlim_max);
        if limit.rlim_max != libc::RLIM_INFINITY {
            assert_eq!(open_file_limit() as libc::rlim_t, limit.rlim_max);
        }
        assert_eq!(raise_open_file_limit().expect("no-op"), None);
    }

    /// Files and connections fit up to the limit less the reserve, and not one more.
    #[test]
    fn descriptors_fit_up_to_the_limit_less_the_reserve() {
        let limit = 4096;
        let reserve = reserve_for(limit);
        assert_eq!(reserve, 256);
        assert!(fits(3000, 800, limit - reserve - 3800, limit).is_ok());
        let err = fits(3000, 800, limit - reserve - 3800 + 1, limit).unwrap_err();
        assert_eq!(
            (err.open_files, err.connections, err.reserve),
            (3000, 800, 256)
        );
        assert_eq!(reserve_for(256), RESERVE_MIN);
        assert!(fits(0, 0, 1, usize::MAX).is_ok());
    }
}
