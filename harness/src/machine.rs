//! What machine a result was measured on, saved beside every result.

use std::path::Path;
use std::process::Command;

use serde::Serialize;

#[derive(Serialize, Debug)]
pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub memory_bytes: u64,
    pub kernel: String,
    /// The file system and device under the data directory.
    pub data_dir_mount: String,
    pub git_commit: String,
    pub git_dirty: bool,
}

fn first_line_with(path: &str, prefix: &str) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|line| line.starts_with(prefix))?;
    Some(line.split_once(':')?.1.trim().to_string())
}

/// The /proc/mounts line of the mount that holds `dir` (longest matching mount point).
fn mount_of(dir: &Path) -> String {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (device, point, kind) = (fields.next()?, fields.next()?, fields.next()?);
            dir.starts_with(point)
                .then(|| (point.len(), format!("{device} on {point} ({kind})")))
        })
        .max_by_key(|(length, _)| *length)
        .map(|(_, described)| described)
        .unwrap_or_else(|| "unknown".to_string())
}

fn git(arguments: &[&str]) -> String {
    Command::new("git")
        .args(arguments)
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string())
        .unwrap_or_default()
}

pub fn describe(data_dir: &Path) -> Machine {
    let memory_kib: u64 = first_line_with("/proc/meminfo", "MemTotal")
        .and_then(|value| value.trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0);
    Machine {
        cpu_model: first_line_with("/proc/cpuinfo", "model name").unwrap_or_default(),
        cores: std::thread::available_parallelism().map_or(1, |cores| cores.get()),
        memory_bytes: memory_kib * 1024,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string(),
        data_dir_mount: mount_of(data_dir.parent().unwrap_or(data_dir)),
        git_commit: git(&["rev-parse", "HEAD"]),
        git_dirty: !git(&["status", "--porcelain", "--untracked-files=no"]).is_empty(),
    }
}

/// Bytes an unprivileged process may still write on the file system holding `dir`.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stats = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string and `stats` is writable memory for one
    // statvfs, which the call fills in when it returns 0.
    if unsafe { libc::statvfs(path.as_ptr(), stats.as_mut_ptr()) } != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it initialised `stats`.
    let stats = unsafe { stats.assume_init() };
    // The fields are narrower than u64 on 32-bit targets.
    #[allow(clippy::unnecessary_cast)]
    Some(stats.f_bavail as u64 * stats.f_frsize as u64)
}
