//! `HOST:PORT` arguments: resolved once at startup, so that a typo fails with a clear
//! message before anything listens, and a wildcard listen address still gives something
//! a client on this machine can dial.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};

/// Resolves a listen address (`127.0.0.1:8080`, `localhost:0`, `[::]:9090`) to the first
/// address it names.
pub fn resolve_listen(flag: &str, text: &str) -> Result<SocketAddr, String> {
    let mut addrs = text
        .to_socket_addrs()
        .map_err(|err| format!("{flag} {text:?} is not a usable HOST:PORT: {err}"))?;
    addrs
        .next()
        .ok_or_else(|| format!("{flag} {text:?} resolves to no address"))
}

/// The address a local client dials to reach a listener bound to `bound`: a wildcard
/// (0.0.0.0 or ::) is reached through loopback of the same family.
pub fn dialable(bound: SocketAddr) -> SocketAddr {
    let ip = match bound.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, bound.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_are_dialed_through_loopback() {
        let any = SocketAddr::from(([0, 0, 0, 0], 8080));
        assert_eq!(dialable(any).to_string(), "127.0.0.1:8080");
        let any6: SocketAddr = "[::]:9090".parse().unwrap();
        assert_eq!(dialable(any6).to_string(), "[::1]:9090");
        let fixed = SocketAddr::from(([10, 1, 2, 3], 1));
        assert_eq!(dialable(fixed), fixed);
    }

    #[test]
    fn bad_addresses_are_clear_errors() {
        assert!(resolve_listen("--listen", "127.0.0.1:0").is_ok());
        let err = resolve_listen("--listen", "127.0.0.1").unwrap_err();
        assert!(err.starts_with("--listen \"127.0.0.1\""), "{err}");
        assert!(resolve_listen("--listen", "127.0.0.1:99999").is_err());
    }
}
