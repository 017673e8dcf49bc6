//! The file-system seam: every open, read, write, sync, rename, unlink, truncation and
//! directory change the storage crate makes goes through [`Fs`], so that a test can swap the
//! disk for [`SimFs`], which loses what was not synced when it "loses power" and fails any call
//! it is told to.
//!
//! [`RealFs`] is the production implementation: one trait-object call per system call and no
//! extra copy (appends are one `pwritev` of the client's buffers, reads one `pread` into an
//! uninitialised vector). Its syncs go through a [`Durability`], the narrower seam the broker
//! uses to time fsyncs and tests use to fail them.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice};
use std::os::unix::fs::FileExt;
use std::path::{Component, Path};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::Durability;

/// How [`Fs::open`] opens a file; every file is opened for reading and writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// The file must exist.
    Existing,
    /// Created empty if missing, kept as it is otherwise.
    Create,
    /// Created if missing, emptied otherwise.
    Truncate,
}

/// A file opened through an [`Fs`].
pub trait FsFile: Send + Sync + Debug {
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()>;
    /// Reads exactly `len` bytes at `pos` into a new vector.
    fn read_vec_at(&self, len: usize, pos: u64) -> io::Result<Vec<u8>>;
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()>;
    /// Writes every slice, in order, from `pos` (one `pwritev` for the real file system).
    fn write_vectored_at(&self, slices: &mut [IoSlice<'_>], pos: u64) -> io::Result<()>;
    fn set_len(&self, len: u64) -> io::Result<()>;
    fn size(&self) -> io::Result<u64>;
    /// Makes the file's data durable (fdatasync).
    fn sync_data(&self) -> io::Result<()>;
    /// The operating system's descriptor of the file, for sending it without reading it
    /// (`sendfile`); `None` for a file that is not on a real file system.
    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        None
    }
}

/// A directory opened for syncing its entries. Opened before the change it makes durable, so
/// that running out of descriptors shows up before anything was renamed or created.
pub trait FsDir: Send + Sync + Debug {
    fn sync(&self) -> io::Result<()>;
    /// Syncs the whole file system this directory is on: every file's data and size and
    /// every directory's entries (see [`Durability::sync_filesystem`]).
    fn sync_filesystem(&self) -> io::Result<()>;
}

/// Held while a broker uses a data directory.
pub trait FsLock: Send + Sync + Debug {}

/// The file system the storage crate runs on.
pub trait Fs: Send + Sync + Debug {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn FsFile>>;
    fn open_dir(&self, path: &Path) -> io::Result<Box<dyn FsDir>>;
    /// The whole contents of a file.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    fn exists(&self, path: &Path) -> bool;
    /// The names of the entries of a directory.
    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Takes an exclusive lock on `path` (created if missing); `None` if another holds it.
    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn FsLock>>>;
}

/// Writes `bytes` to `dir/name` atomically: temp file, sync, rename, sync directory.
pub fn write_file_atomically(fs: &dyn Fs, dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    // Both descriptors first: running out of them must fail the write before the rename.
    let dir_handle = fs.open_dir(dir)?;
    let tmp = dir.join(format!("{name}.tmp"));
    let file = fs.open(&tmp, OpenMode::Truncate)?;
    file.write_all_at(bytes, 0)?;
    file.sync_data()?;
    drop(file);
    fs.rename(&tmp, &dir.join(name))?;
    dir_handle.sync()
}

/// Creates `path` and its missing parents, and syncs each new directory's entry into its
/// parent, so that what is later synced inside it survives a power cut too.
pub fn create_dir_all_durably(fs: &dyn Fs, path: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut at = path;
    while !fs.exists(at) {
        missing.push(at);
        match at.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => at = parent,
            _ => break,
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    fs.create_dir_all(path)?;
    for dir in missing.iter().rev() {
        if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs.open_dir(parent)?.sync()?;
        }
    }
    Ok(())
}

/// `remove_file`, where a file that is already gone counts as removed.
pub(crate) fn remove_if_present(fs: &dyn Fs, path: &Path) -> io::Result<()> {
    match fs.remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------------------------
// The real file system.

/// The operating system's file system, syncing through a [`Durability`].
#[derive(Debug)]
pub struct RealFs {
    durability: Arc<dyn Durability>,
}

impl RealFs {
    pub fn new(durability: Arc<dyn Durability>) -> Self {
        Self { durability }
    }
}

#[derive(Debug)]
struct RealFile {
    file: File,
    durability: Arc<dyn Durability>,
}

#[derive(Debug)]
struct RealDir {
    dir: File,
    durability: Arc<dyn Durability>,
}

#[derive(Debug)]
struct RealLock(#[allow(dead_code)] File);
impl FsLock for RealLock {}

impl Fs for RealFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn FsFile>> {
        let mut options = OpenOptions::new();
        options.read(true).write(true);
        match mode {
            OpenMode::Existing => {}
            OpenMode::Create => {
                options.create(true).truncate(false);
            }
            OpenMode::Truncate => {
                options.create(true).truncate(true);
            }
        }
        Ok(Box::new(RealFile {
            file: options.open(path)?,
            durability: self.durability.clone(),
        }))
    }
    fn open_dir(&self, path: &Path) -> io::Result<Box<dyn FsDir>> {
        Ok(Box::new(RealDir {
            dir: File::open(path)?,
            durability: self.durability.clone(),
        }))
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        std::fs::read_dir(path)?
            .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
            .collect()
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir_all(path)
    }
    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn FsLock>>> {
        let file = File::create(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(Box::new(RealLock(file)))),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

impl FsDir for RealDir {
    fn sync(&self) -> io::Result<()> {
        self.durability.sync_dir(&self.dir)
    }
    fn sync_filesystem(&self) -> io::Result<()> {
        self.durability.sync_filesystem(&self.dir)
    }
}

impl FsFile for RealFile {
    fn raw_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        Some(self.file.as_raw_fd())
    }
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        FileExt::read_exact_at(&self.file, buf, pos)
    }
    fn read_vec_at(&self, len: usize, pos: u64) -> io::Result<Vec<u8>> {
        read_exact_at_uninit(&self.file, len, pos)
    }
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        FileExt::write_all_at(&self.file, buf, pos)
    }
    fn write_vectored_at(&self, slices: &mut [IoSlice<'_>], pos: u64) -> io::Result<()> {
        write_all_vectored_at(&self.file, slices, pos)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
    fn sync_data(&self) -> io::Result<()> {
        self.durability.sync_file(&self.file)
    }
}

/// `pwritev` until every slice is written at `offset`: one system call for all the batches of
/// an append, however they are split, without gathering them into one buffer first.
fn write_all_vectored_at(
    file: &File,
    slices: &mut [IoSlice<'_>],
    mut offset: u64,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut slices = slices;
    // Skip empty slices up front so an all-empty tail ends the loop.
    IoSlice::advance_slices(&mut slices, 0);
    while !slices.is_empty() {
        let count = slices.len().min(IOV_MAX) as libc::c_int;
        let position = libc::off_t::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
        // SAFETY: IoSlice is ABI-compatible with struct iovec on Unix, and every slice
        // borrows memory that outlives this call; pwritev only reads from it.
        let written = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                slices.as_ptr().cast::<libc::iovec>(),
                count,
                position,
            )
        };
        if written < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if written == 0 {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "pwritev wrote nothing",
            ));
        }
        offset += written as u64;
        IoSlice::advance_slices(&mut slices, written as usize);
    }
    Ok(())
}

/// The most slices one `pwritev` takes (Linux's `IOV_MAX`).
const IOV_MAX: usize = 1024;

/// Reads exactly `len` bytes at `offset` into a new vector without zero-filling it first:
/// fetches read up to a megabyte per partition, and the profile showed the zeroing (and the
/// page faults it forces) among the broker's top costs.
fn read_exact_at_uninit(file: &File, len: usize, offset: u64) -> io::Result<Vec<u8>> {
    use std::os::fd::AsRawFd;
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    let mut filled = 0usize;
    while filled < len {
        let position = libc::off_t::try_from(offset + filled as u64)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
        let spare = &mut buf.spare_capacity_mut()[..len - filled];
        // SAFETY: pread writes at most `spare.len()` bytes into memory we own and do not read
        // before it returns; the bytes count as initialised only once pread reports them.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                spare.as_mut_ptr().cast(),
                spare.len(),
                position,
            )
        };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        filled += n as usize;
        // SAFETY: the first `filled` bytes were written by pread.
        unsafe { buf.set_len(filled) };
    }
    Ok(buf)
}

// ---------------------------------------------------------------------------------------------
// The simulated file system.

/// An in-memory file system that can lose power. Each file has its current contents (what
/// reads see) and its durable contents (as of its last sync); each directory has its current
/// entries and its durable entries (as of its last sync). [`SimFs::crash`] cuts power and
/// restarts: every file and directory falls back to its durable state, except that unsynced
/// changes may also have reached the disk on their own: each file keeps its durable contents,
/// all of its current contents, or (when only appended to) its durable contents plus a prefix
/// of what was appended; each directory keeps its durable entries or all its current ones.
///
/// Faults, from a seeded schedule: any call may fail with EIO (writes also with ENOSPC, after
/// writing a prefix of their bytes), and the power may go off at a given step, after which
/// every call fails until [`SimFs::crash`] restarts it. Handles opened before a crash fail
/// after it.
#[derive(Debug, Clone)]
pub struct SimFs {
    sim: Arc<Mutex<Sim>>,
}

const ROOT: u64 = 0;

#[derive(Debug)]
enum Inode {
    File {
        data: Vec<u8>,
        durable: Vec<u8>,
    },
    Dir {
        entries: BTreeMap<String, u64>,
        durable: BTreeMap<String, u64>,
    },
}

#[derive(Debug)]
struct Sim {
    inodes: BTreeMap<u64, Inode>,
    next_inode: u64,
    rng: u64,
    /// A call fails once in this many (0: never).
    fail_one_in: u64,
    /// The step at which the power goes off.
    power_off_at: Option<u64>,
    steps: u64,
    powered: bool,
    /// Incremented by each crash; handles from before it are dead.
    boot: u64,
    faults_injected: u64,
    /// What happened, when tracing: for a failing schedule's report.
    trace: Option<Vec<String>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Read,
    Write,
    Sync,
    Namespace,
}

impl Sim {
    fn random(&mut self) -> u64 {
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.random() % n
        }
    }

    /// Counts one call and decides whether it fails: the power is off (or goes off now), or a
    /// fault is injected. `Err` carries the error to return.
    fn step(&mut self, call: Call) -> io::Result<()> {
        let outcome = self.decide(call);
        if let Err(e) = &outcome {
            self.note(|| format!("  -> {e}"));
        }
        outcome
    }

    fn decide(&mut self, call: Call) -> io::Result<()> {
        if !self.powered {
            return Err(io::Error::other("simulated power loss"));
        }
        self.steps += 1;
        if self.power_off_at == Some(self.steps) {
            self.powered = false;
            return Err(io::Error::other("simulated power loss"));
        }
        if self.fail_one_in > 0 && self.below(self.fail_one_in) == 0 {
            self.faults_injected += 1;
            let enospc = call == Call::Write && self.below(2) == 0;
            let errno = if enospc { libc::ENOSPC } else { libc::EIO };
            return Err(io::Error::from_raw_os_error(errno));
        }
        Ok(())
    }

    fn note(&mut self, what: impl FnOnce() -> String) {
        if let Some(trace) = &mut self.trace {
            trace.push(what());
        }
    }

    fn lookup(&self, path: &Path) -> io::Result<u64> {
        let mut at = ROOT;
        for component in path.components() {
            match component {
                Component::RootDir => at = ROOT,
                Component::Normal(name) => {
                    let Some(Inode::Dir { entries, .. }) = self.inodes.get(&at) else {
                        return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
                    };
                    let name = name.to_string_lossy();
                    at = *entries
                        .get(name.as_ref())
                        .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
                }
                _ => return Err(io::Error::from(io::ErrorKind::InvalidInput)),
            }
        }
        Ok(at)
    }

    /// The directory holding `path` and `path`'s name in it.
    fn parent_of(&self, path: &Path) -> io::Result<(u64, String)> {
        let name = path
            .file_name()
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?
            .to_string_lossy()
            .into_owned();
        let parent = self.lookup(path.parent().unwrap_or(Path::new("/")))?;
        match self.inodes.get(&parent) {
            Some(Inode::Dir { .. }) => Ok((parent, name)),
            _ => Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
        }
    }

    fn entries_mut(&mut self, dir: u64) -> &mut BTreeMap<String, u64> {
        match self.inodes.get_mut(&dir) {
            Some(Inode::Dir { entries, .. }) => entries,
            _ => unreachable!("parent_of returns directories"),
        }
    }

    fn new_inode(&mut self, inode: Inode) -> u64 {
        let id = self.next_inode;
        self.next_inode += 1;
        self.inodes.insert(id, inode);
        id
    }

    fn file_mut(&mut self, id: u64) -> io::Result<(&mut Vec<u8>, &mut Vec<u8>)> {
        match self.inodes.get_mut(&id) {
            Some(Inode::File { data, durable }) => Ok((data, durable)),
            _ => Err(io::Error::from_raw_os_error(libc::EISDIR)),
        }
    }
}

impl SimFs {
    /// An empty file system whose faults and crashes follow `seed`. No faults until
    /// [`SimFs::set_faults`].
    pub fn new(seed: u64) -> Self {
        let mut inodes = BTreeMap::new();
        inodes.insert(
            ROOT,
            Inode::Dir {
                entries: BTreeMap::new(),
                durable: BTreeMap::new(),
            },
        );
        Self {
            sim: Arc::new(Mutex::new(Sim {
                inodes,
                next_inode: ROOT + 1,
                rng: seed,
                fail_one_in: 0,
                power_off_at: None,
                steps: 0,
                powered: true,
                boot: 0,
                faults_injected: 0,
                trace: None,
            })),
        }
    }

    fn sim(&self) -> MutexGuard<'_, Sim> {
        self.sim.lock().expect("sim lock")
    }

    /// From now on, one call in `fail_one_in` fails (0: none), and the power goes off at the
    /// call `power_off_after` calls from now (`None`: it stays on).
    pub fn set_faults(&self, fail_one_in: u64, power_off_after: Option<u64>) {
        let mut sim = self.sim();
        sim.fail_one_in = fail_one_in;
        sim.power_off_at = power_off_after.map(|n| sim.steps + n.max(1));
    }

    /// Starts recording every call (and its outcome), or stops and returns the record.
    pub fn trace(&self, on: bool) -> Vec<String> {
        let mut sim = self.sim();
        let old = sim.trace.take().unwrap_or_default();
        sim.trace = on.then(Vec::new);
        old
    }

    /// Whether the power has gone off (every call fails until [`SimFs::crash`]).
    pub fn is_powered_off(&self) -> bool {
        !self.sim().powered
    }

    /// Calls made so far.
    pub fn steps(&self) -> u64 {
        self.sim().steps
    }

    /// Calls failed on purpose so far.
    pub fn faults_injected(&self) -> u64 {
        self.sim().faults_injected
    }

    /// Cuts the power and restarts: what was not synced is lost, wholly or in part (see the
    /// type's documentation), every open handle dies, and faults are off.
    pub fn crash(&self) {
        let mut sim = self.sim();
        let ids: Vec<u64> = sim.inodes.keys().copied().collect();
        let mut notes = Vec::new();
        for id in ids {
            let choice = sim.below(4);
            let cut = sim.random();
            match sim.inodes.get_mut(&id).expect("listed") {
                Inode::File { data, durable } => {
                    if *data != *durable {
                        let before = (durable.len(), data.len());
                        let appended = data.len() > durable.len() && data.starts_with(durable);
                        match choice {
                            // Lost, as an fsync would have prevented.
                            0 | 1 => data.clone_from(durable),
                            // Torn: only part of what was appended reached the disk.
                            2 if appended => {
                                let extra = (cut % (data.len() - durable.len()) as u64) as usize;
                                data.truncate(durable.len() + extra);
                            }
                            // The page cache was written back before the power went.
                            _ => {}
                        }
                        durable.clone_from(data);
                        let kept = data.len();
                        notes.push(format!(
                            "crash: #{id} durable {} current {} kept {kept}",
                            before.0, before.1
                        ));
                    }
                }
                Inode::Dir { entries, durable } => {
                    if entries != durable {
                        let kept = if choice < 2 { "durable" } else { "current" };
                        let what = format!(
                            "crash: dir #{id} keeps {kept} entries {:?} (durable {:?})",
                            if choice < 2 { &*durable } else { &*entries },
                            durable
                        );
                        notes.push(what);
                    }
                    if choice < 2 {
                        entries.clone_from(durable);
                    } else {
                        durable.clone_from(entries);
                    }
                }
            }
        }
        if let Some(trace) = &mut sim.trace {
            trace.extend(notes);
        }
        sim.powered = true;
        sim.power_off_at = None;
        sim.fail_one_in = 0;
        sim.boot += 1;
    }

    fn handle(&self, inode: u64) -> SimHandle {
        SimHandle {
            fs: self.clone(),
            inode,
            boot: self.sim().boot,
        }
    }
}

/// An open file or directory of a [`SimFs`].
#[derive(Debug)]
struct SimHandle {
    fs: SimFs,
    inode: u64,
    boot: u64,
}

impl SimHandle {
    /// The simulation, once this call has been counted and has not failed.
    fn call(&self, call: Call) -> io::Result<MutexGuard<'_, Sim>> {
        let mut sim = self.fs.sim();
        if sim.boot != self.boot {
            return Err(io::Error::other("handle from before a simulated crash"));
        }
        sim.step(call)?;
        Ok(sim)
    }

    fn write(&self, bytes: &[u8], pos: u64) -> io::Result<()> {
        let mut sim = self.fs.sim();
        if sim.boot != self.boot {
            return Err(io::Error::other("handle from before a simulated crash"));
        }
        sim.note(|| format!("write #{} at {pos}: {} bytes", self.inode, bytes.len()));
        let failed = sim.step(Call::Write).err();
        // A failing write may still have written some of its bytes.
        let len = match &failed {
            Some(_) if sim.powered => sim.below(bytes.len() as u64 + 1) as usize,
            Some(_) => 0,
            None => bytes.len(),
        };
        let (data, _) = sim.file_mut(self.inode)?;
        let pos = pos as usize;
        let end = pos + len;
        if data.len() < end {
            data.resize(end, 0);
        }
        data[pos..end].copy_from_slice(&bytes[..len]);
        failed.map_or(Ok(()), Err)
    }
}

impl FsFile for SimHandle {
    fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> io::Result<()> {
        let mut sim = self.call(Call::Read)?;
        let (data, _) = sim.file_mut(self.inode)?;
        let start = usize::try_from(pos).unwrap_or(usize::MAX);
        let src = start
            .checked_add(buf.len())
            .and_then(|end| data.get(start..end))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(src);
        Ok(())
    }
    fn read_vec_at(&self, len: usize, pos: u64) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.read_exact_at(&mut buf, pos)?;
        Ok(buf)
    }
    fn write_all_at(&self, buf: &[u8], pos: u64) -> io::Result<()> {
        self.write(buf, pos)
    }
    fn write_vectored_at(&self, slices: &mut [IoSlice<'_>], pos: u64) -> io::Result<()> {
        let bytes: Vec<u8> = slices.iter().flat_map(|s| s.iter().copied()).collect();
        self.write(&bytes, pos)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.fs
            .sim()
            .note(|| format!("set_len #{} to {len}", self.inode));
        let mut sim = self.call(Call::Write)?;
        let (data, _) = sim.file_mut(self.inode)?;
        data.resize(len as usize, 0);
        Ok(())
    }
    fn size(&self) -> io::Result<u64> {
        let mut sim = self.call(Call::Read)?;
        let (data, _) = sim.file_mut(self.inode)?;
        Ok(data.len() as u64)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.fs.sim().note(|| format!("sync #{}", self.inode));
        let mut sim = self.call(Call::Sync)?;
        let (data, durable) = sim.file_mut(self.inode)?;
        durable.clone_from(data);
        Ok(())
    }
}

impl FsDir for SimHandle {
    fn sync(&self) -> io::Result<()> {
        self.fs.sim().note(|| format!("sync dir #{}", self.inode));
        let mut sim = self.call(Call::Sync)?;
        match sim.inodes.get_mut(&self.inode) {
            Some(Inode::Dir { entries, durable }) => {
                durable.clone_from(entries);
                Ok(())
            }
            _ => Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
        }
    }
    fn sync_filesystem(&self) -> io::Result<()> {
        self.fs.sim().note(|| "syncfs".to_string());
        let mut sim = self.call(Call::Sync)?;
        for inode in sim.inodes.values_mut() {
            match inode {
                Inode::File { data, durable } => durable.clone_from(data),
                Inode::Dir { entries, durable } => durable.clone_from(entries),
            }
        }
        Ok(())
    }
}

impl FsLock for SimHandle {}

impl Fs for SimFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Box<dyn FsFile>> {
        let mut sim = self.sim();
        sim.note(|| format!("open {} {mode:?}", path.display()));
        sim.step(Call::Namespace)?;
        let inode = match (sim.lookup(path), mode) {
            (Ok(id), OpenMode::Truncate) => {
                sim.file_mut(id)?.0.clear();
                id
            }
            (Ok(id), _) => {
                sim.file_mut(id)?;
                id
            }
            (Err(e), OpenMode::Existing) => return Err(e),
            (Err(_), _) => {
                let (parent, name) = sim.parent_of(path)?;
                let id = sim.new_inode(Inode::File {
                    data: Vec::new(),
                    durable: Vec::new(),
                });
                sim.entries_mut(parent).insert(name, id);
                id
            }
        };
        sim.note(|| format!("  = #{inode}"));
        drop(sim);
        Ok(Box::new(self.handle(inode)))
    }
    fn open_dir(&self, path: &Path) -> io::Result<Box<dyn FsDir>> {
        let mut sim = self.sim();
        sim.step(Call::Namespace)?;
        let id = sim.lookup(path)?;
        if !matches!(sim.inodes.get(&id), Some(Inode::Dir { .. })) {
            return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
        }
        drop(sim);
        Ok(Box::new(self.handle(id)))
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut sim = self.sim();
        sim.step(Call::Read)?;
        let id = sim.lookup(path)?;
        Ok(sim.file_mut(id)?.0.clone())
    }
    fn exists(&self, path: &Path) -> bool {
        self.sim().lookup(path).is_ok()
    }
    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut sim = self.sim();
        sim.step(Call::Read)?;
        let id = sim.lookup(path)?;
        match sim.inodes.get(&id) {
            Some(Inode::Dir { entries, .. }) => Ok(entries.keys().cloned().collect()),
            _ => Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
        }
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut sim = self.sim();
        sim.note(|| format!("rename {} {}", from.display(), to.display()));
        sim.step(Call::Namespace)?;
        let (from_dir, from_name) = sim.parent_of(from)?;
        let (to_dir, to_name) = sim.parent_of(to)?;
        let id = sim
            .entries_mut(from_dir)
            .remove(&from_name)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        sim.entries_mut(to_dir).insert(to_name, id);
        Ok(())
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut sim = self.sim();
        sim.note(|| format!("unlink {}", path.display()));
        sim.step(Call::Namespace)?;
        let (dir, name) = sim.parent_of(path)?;
        let id = sim.lookup(path)?;
        sim.file_mut(id)?;
        sim.entries_mut(dir).remove(&name);
        Ok(())
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut sim = self.sim();
        sim.note(|| format!("mkdir -p {}", path.display()));
        sim.step(Call::Namespace)?;
        let mut at = ROOT;
        for component in path.components() {
            let name = match component {
                Component::RootDir => continue,
                Component::Normal(name) => name.to_string_lossy().into_owned(),
                _ => return Err(io::Error::from(io::ErrorKind::InvalidInput)),
            };
            let existing = match sim.inodes.get(&at) {
                Some(Inode::Dir { entries, .. }) => entries.get(&name).copied(),
                _ => return Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
            };
            at = match existing {
                Some(id) => id,
                None => {
                    let id = sim.new_inode(Inode::Dir {
                        entries: BTreeMap::new(),
                        durable: BTreeMap::new(),
                    });
                    sim.entries_mut(at).insert(name, id);
                    id
                }
            };
        }
        Ok(())
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut sim = self.sim();
        sim.note(|| format!("rm -r {}", path.display()));
        sim.step(Call::Namespace)?;
        let (dir, name) = sim.parent_of(path)?;
        sim.lookup(path)?;
        // The subtree's own entries stay as they are: if the removal is lost in a crash, the
        // directory comes back as its durable entries describe it.
        sim.entries_mut(dir).remove(&name);
        Ok(())
    }
    fn try_lock(&self, path: &Path) -> io::Result<Option<Box<dyn FsLock>>> {
        drop(self.open(path, OpenMode::Create)?);
        let id = self.sim().lookup(path)?;
        Ok(Some(Box::new(self.handle(id))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(fs: &SimFs, path: &str, bytes: &[u8]) -> Box<dyn FsFile> {
        let f = fs.open(Path::new(path), OpenMode::Create).unwrap();
        f.write_all_at(bytes, f.size().unwrap()).unwrap();
        f
    }

    /// Synced data and synced directory entries survive every crash; a file whose creation
    /// was not followed by a sync of its directory may vanish, and unsynced bytes may be lost.
    #[test]
    fn only_synced_state_is_guaranteed_to_survive_a_crash() {
        for seed in 0..64 {
            let fs = SimFs::new(seed);
            fs.create_dir_all(Path::new("/d")).unwrap();
            fs.open_dir(Path::new("/")).unwrap().sync().unwrap();
            let a = write(&fs, "/d/a", b"durable");
            a.sync_data().unwrap();
            fs.open_dir(Path::new("/d")).unwrap().sync().unwrap();
            a.write_all_at(b"+volatile", 7).unwrap();
            let b = write(&fs, "/d/b", b"synced file, unsynced entry");
            b.sync_data().unwrap();
            fs.crash();
            let a = fs.read(Path::new("/d/a")).unwrap();
            assert!(a.starts_with(b"durable") && b"durable+volatile".starts_with(&a[..]));
            if let Ok(b) = fs.read(Path::new("/d/b")) {
                assert_eq!(b, b"synced file, unsynced entry");
            }
            assert!(
                write(&fs, "/d/c", b"x").size().is_ok(),
                "usable after restart"
            );
        }
    }

    /// After the power goes off every call fails, and handles from before a crash stay dead.
    #[test]
    fn power_loss_stops_every_call() {
        let fs = SimFs::new(1);
        fs.create_dir_all(Path::new("/d")).unwrap();
        let f = write(&fs, "/d/a", b"x");
        fs.set_faults(0, Some(1));
        assert!(f.sync_data().is_err());
        assert!(fs.is_powered_off());
        assert!(fs.read(Path::new("/d/a")).is_err());
        fs.crash();
        assert!(f.size().is_err(), "a handle from before the crash is dead");
        assert!(
            !fs.exists(Path::new("/d")),
            "the directory was never synced"
        );
    }
}
