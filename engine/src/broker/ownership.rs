//! What one broker process must hold alone: its data directory and its listen port.
//!
//! Two brokers on one data directory would each open, append to and truncate the same logs;
//! two on one port would split clients between two clusters without a word (the cores' own
//! listeners set SO_REUSEPORT, which lets a second process bind the port too). So a broker
//! takes an exclusive lock on `<data_dir>/.lock` for its whole life, and checks that its
//! listen port is free before its cores bind it; either failure stops the start with a
//! message that says which.

use std::fs::File;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::path::Path;

/// The lock file's name inside the data directory.
pub const LOCK_FILE_NAME: &str = ".lock";

/// An exclusive lock on a data directory, held until dropped (or the process ends: the kernel
/// releases it even after SIGKILL, so a killed broker never leaves a stale lock behind).
#[derive(Debug)]
pub struct DataDirLock {
    _file: File,
}

/// Locks `dir` (which must exist) for this process, or says who holds it.
pub fn lock_data_dir(dir: &Path) -> Result<DataDirLock, String> {
    let path = dir.join(LOCK_FILE_NAME);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|error| format!("cannot open {}: {error}", path.display()))?;
    // SAFETY: flock only reads its integer arguments; the descriptor is open for the call.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if locked != 0 {
        let error = std::io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(format!(
                "data directory {} is in use by another broker process (it holds {})",
                dir.display(),
                path.display()
            ));
        }
        return Err(format!("cannot lock {}: {error}", path.display()));
    }
    Ok(DataDirLock { _file: file })
}

/// The kernel's tables of TCP sockets, one per address family.
const PROC_NET_TCP: [&str; 2] = ["/proc/net/tcp", "/proc/net/tcp6"];
/// The state column's value for a listening socket (`TCP_LISTEN`).
const STATE_LISTEN: &str = "0A";

/// Fails if another socket listens on `address`'s port at `address` or at an unspecified
/// address (port 0, "any free port", always passes). Run before this broker's cores bind, so
/// any such socket is another process's.
///
/// Why not a trial bind: a plain bind is also refused by the TIME_WAIT sockets a killed
/// broker leaves on its port (its accepted connections did not set SO_REUSEADDR), which
/// would stop a restart on the same port for a minute. The kernel's socket tables tell a
/// listener from a closing connection.
pub fn check_port_free(address: SocketAddr) -> Result<(), String> {
    if address.port() == 0 {
        return Ok(());
    }
    for table in PROC_NET_TCP {
        let text = match std::fs::read_to_string(table) {
            Ok(text) => text,
            Err(error) if error.kind() == ErrorKind::NotFound => continue,
            Err(error) => return Err(format!("cannot read {table}: {error}")),
        };
        let taken = listeners(&text).find(|listener| conflicts(*listener, address));
        if let Some(listener) = taken {
            return Err(format!(
                "cannot listen on {address}: Address already in use \
                 (another process listens on {listener})"
            ));
        }
    }
    Ok(())
}

fn conflicts(listener: SocketAddr, wanted: SocketAddr) -> bool {
    listener.port() == wanted.port()
        && (listener.ip() == wanted.ip()
            || listener.ip().is_unspecified()
            || wanted.ip().is_unspecified())
}

/// The listening sockets' addresses in the text of `/proc/net/tcp` or `/proc/net/tcp6`
/// (a header line, then one socket a line: `sl local_address rem_address st ...`, the local
/// address as hex `ADDRESS:PORT`, the address in the kernel's memory order). Lines that do
/// not parse are skipped.
pub fn listeners(table: &str) -> impl Iterator<Item = SocketAddr> + '_ {
    table.lines().skip(1).filter_map(|line| {
        let mut fields = line.split_whitespace();
        let local = fields.nth(1)?;
        let state = fields.nth(1)?;
        if state != STATE_LISTEN {
            return None;
        }
        let (ip_hex, port_hex) = local.split_once(':')?;
        let port = u16::from_str_radix(port_hex, 16).ok()?;
        let ip = parse_ip(ip_hex)?;
        Some(SocketAddr::new(ip, port))
    })
}

/// An address as `/proc/net/tcp*` prints it: each 32-bit word of it in hex, as the word lies
/// in memory read as a host-order integer.
fn parse_ip(hex: &str) -> Option<IpAddr> {
    let mut bytes = [0u8; 16];
    let words = hex.len() / 8;
    if !hex.len().is_multiple_of(8) || !(words == 1 || words == 4) || !hex.is_ascii() {
        return None;
    }
    for word in 0..words {
        let value = u32::from_str_radix(&hex[word * 8..word * 8 + 8], 16).ok()?;
        bytes[word * 4..word * 4 + 4].copy_from_slice(&value.to_ne_bytes());
    }
    Some(if words == 1 {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(bytes))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_a_data_directory_is_refused_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = lock_data_dir(dir.path()).unwrap();
        let second = lock_data_dir(dir.path()).unwrap_err();
        assert!(
            second.contains("in use by another broker process"),
            "{second}"
        );
        drop(first);
        lock_data_dir(dir.path()).unwrap();
    }

    #[test]
    fn listeners_are_read_from_the_kernels_tables() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue\n\
            0: 0100007F:9A9B 00000000:0000 0A 00000000:00000000 00:00000000\n\
            1: 0100007F:C350 0100007F:9A9B 06 00000000:00000000 03:00000000\n\
            2: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000\n\
            3: garbage\n";
        let found: Vec<SocketAddr> = listeners(table).collect();
        assert_eq!(
            found,
            [
                "127.0.0.1:39579".parse().unwrap(),
                "0.0.0.0:80".parse().unwrap()
            ]
        );
        let table6 = "header\n\
            0: 00000000000000000000000001000000:1F90 00000000000000000000000000000000:0000 0A x\n";
        let found: Vec<SocketAddr> = listeners(table6).collect();
        assert_eq!(found, ["[::1]:8080".parse().unwrap()]);
    }

    #[test]
    fn a_port_another_socket_listens_on_is_refused() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = taken.local_addr().unwrap();
        let refused = check_port_free(address).unwrap_err();
        assert!(refused.contains("in use"), "{refused}");
        drop(taken);
        check_port_free(address).unwrap();
        check_port_free("127.0.0.1:0".parse().unwrap()).unwrap();
    }
}
