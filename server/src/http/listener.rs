//! Listening sockets. With SO_REUSEPORT a new process can bind the port
//! while the old one still drains its connections: the kernel spreads new
//! connections over both until the old one closes its socket, so a reload
//! refuses no connection.

use std::net::SocketAddr;
use tokio::net::TcpListener;

const BACKLOG: i32 = 4096;

pub fn bind(addr: SocketAddr, reuse_port: bool) -> std::io::Result<TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    // Room for a crowd connecting at once: connections beyond the backlog
    // are dropped and their clients retry a second later. The kernel caps
    // it at net.core.somaxconn (4096 by default).
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn two_processes_worth_of_listeners_share_a_port_only_with_reuse_port() {
        let first = bind("127.0.0.1:0".parse().unwrap(), true).unwrap();
        let addr = first.local_addr().unwrap();
        assert!(bind(addr, true).is_ok());
        let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = plain.local_addr().unwrap();
        let err = bind(taken, true).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
    }
}
