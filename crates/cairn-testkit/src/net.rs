//! Network helpers.

use std::io;
use std::net::{Ipv4Addr, TcpListener};

/// Asks the kernel for a currently free TCP port on 127.0.0.1.
///
/// The port is free when this returns, but nothing reserves it: another
/// process may take it before the caller binds it, so callers that start
/// servers on it should retry with a fresh port when binding fails (as
/// [`PgCluster::start`](crate::PgCluster::start) does).
pub fn try_free_port() -> io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// Like [`try_free_port`], for tests.
///
/// # Panics
///
/// Panics if no port can be bound on 127.0.0.1.
pub fn free_port() -> u16 {
    try_free_port().unwrap_or_else(|e| panic!("cannot bind a TCP port on 127.0.0.1: {e}"))
}
