//! The CPU time processes spent, from `/proc/PID/stat`: the figure that stays comparable
//! on a noisy, shared machine, where throughput does not.

use std::collections::BTreeSet;
use std::net::SocketAddr;

/// The unit of `utime` and `stime` in `/proc/PID/stat`: Linux's USER_HZ, which the
/// kernel fixes at 100 for everything it reports to user space.
const TICKS_PER_S: u64 = 100;

/// CPU time of some processes at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTicks {
    /// User time, in ticks.
    pub user: u64,
    /// System (kernel) time, in ticks.
    pub system: u64,
}

impl CpuTicks {
    /// The time between two samples, in microseconds: (user, system).
    pub fn since_us(self, earlier: CpuTicks) -> (u64, u64) {
        let us = |ticks: u64| ticks.saturating_mul(1_000_000 / TICKS_PER_S);
        (
            us(self.user.saturating_sub(earlier.user)),
            us(self.system.saturating_sub(earlier.system)),
        )
    }
}

/// The user and system time of `pids`, summed over every thread of each (what
/// `/proc/PID/stat` reports); a process that is gone counts nothing.
pub fn sample(pids: &[u32]) -> CpuTicks {
    let mut total = CpuTicks::default();
    for pid in pids {
        if let Some(ticks) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| parse_stat(&stat))
        {
            total.user += ticks.user;
            total.system += ticks.system;
        }
    }
    total
}

/// `utime` and `stime` (fields 14 and 15) of a `/proc/PID/stat` line. The command name
/// (field 2) is in parentheses and may hold spaces, so fields count from its last `)`.
pub fn parse_stat(stat: &str) -> Option<CpuTicks> {
    let after_name = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = after_name.split_whitespace().skip(11);
    let user = fields.next()?.parse().ok()?;
    let system = fields.next()?.parse().ok()?;
    Some(CpuTicks { user, system })
}

/// The processes of this machine that listen on `addr`'s port (any local address), found
/// through the socket's inode in `/proc/net/tcp*` and the descriptors in `/proc/*/fd`.
/// For `ringkv local` this is the whole cluster; a cluster of separate processes needs
/// its PIDs named.
pub fn listeners_of(addr: SocketAddr) -> Vec<u32> {
    let inodes = listening_inodes(addr.port());
    if inodes.is_empty() {
        return Vec::new();
    }
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let owns = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| {
                target
                    .to_str()
                    .and_then(|t| t.strip_prefix("socket:["))
                    .and_then(|t| t.strip_suffix(']'))
                    .and_then(|inode| inode.parse::<u64>().ok())
                    .is_some_and(|inode| inodes.contains(&inode))
            })
        });
        if owns {
            pids.push(pid);
        }
    }
    pids
}

/// The inodes of the sockets listening (state 0A) on `port`, IPv4 and IPv6.
fn listening_inodes(port: u16) -> BTreeSet<u64> {
    let mut inodes = BTreeSet::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        inodes.extend(
            text.lines()
                .skip(1)
                .filter_map(|line| listener_inode(line, port)),
        );
    }
    inodes
}

/// The inode of one `/proc/net/tcp` row if it is a socket listening on `port`.
fn listener_inode(row: &str, port: u16) -> Option<u64> {
    let fields: Vec<&str> = row.split_whitespace().collect();
    let local = fields.get(1)?;
    let state = fields.get(3)?;
    let inode = fields.get(9)?;
    let local_port = u16::from_str_radix(local.rsplit(':').next()?, 16).ok()?;
    (local_port == port && *state == "0A").then(|| inode.parse().ok())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_count_from_the_last_parenthesis() {
        let stat = "4242 (ringkv (x) y) S 1 4242 4242 0 -1 4194560 500 0 0 0 1234 567 0 0 20 0 9 0";
        assert_eq!(
            parse_stat(stat),
            Some(CpuTicks {
                user: 1234,
                system: 567
            })
        );
        assert_eq!(parse_stat("1 (short) S 1 2"), None);
    }

    #[test]
    fn this_process_is_found_listening_and_its_cpu_is_read() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let pids = listeners_of(listener.local_addr().unwrap());
        assert_eq!(pids, vec![std::process::id()]);
        let busy_until = std::time::Instant::now() + std::time::Duration::from_millis(50);
        while std::time::Instant::now() < busy_until {}
        let ticks = sample(&pids);
        assert!(ticks.user + ticks.system > 0, "{ticks:?}");
    }

    #[test]
    fn rows_of_other_ports_or_states_are_not_listeners() {
        let listen =
            "0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 777 1";
        let established =
            "1: 0100007F:1F90 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000 0 0 778 1";
        assert_eq!(listener_inode(listen, 8080), Some(777));
        assert_eq!(listener_inode(listen, 8081), None);
        assert_eq!(listener_inode(established, 8080), None);
    }
}
