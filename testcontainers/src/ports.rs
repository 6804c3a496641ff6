//! Free loopback ports for the brokers' listeners.

use std::net::TcpListener;

use crate::error::{Error, Result};

/// Asks the kernel for `n` distinct free ports on 127.0.0.1.
///
/// All sockets stay open until every port is chosen, so the kernel cannot hand the same port
/// out twice; they are closed on return, and the broker binds them a moment later. Another
/// process could take one in that gap: the cluster start retries with fresh ports when a
/// broker reports "Address already in use".
pub(crate) fn free_ports(n: usize) -> Result<Vec<u16>> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let l = TcpListener::bind(("127.0.0.1", 0))
            .map_err(|e| Error::io("binding 127.0.0.1:0 to find a free port", e))?;
        held.push(l);
    }
    held.iter()
        .map(|l| {
            l.local_addr()
                .map(|a| a.port())
                .map_err(|e| Error::io("reading a bound port", e))
        })
        .collect()
}
