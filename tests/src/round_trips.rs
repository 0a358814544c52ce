//! A TCP proxy in front of Redis that counts round trips.
//!
//! A round trip starts each time the client sends after Redis last spoke: a
//! pipeline or a script is one, however many commands it carries. Meant for one
//! request at a time (benchmarks and round-trip budget tests).

use std::sync::{
    atomic::{AtomicBool, AtomicU64, Ordering},
    Arc,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{tcp::OwnedReadHalf, tcp::OwnedWriteHalf, TcpListener, TcpStream},
};

/// The proxy; dropping it stops accepting.
pub struct CountingProxy {
    /// Port to point `REDIS_URL` at.
    pub port: u16,
    trips: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CountingProxy {
    /// Proxies 127.0.0.1:<port> to 127.0.0.1:`upstream`.
    pub async fn start(upstream: u16) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let trips = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&trips);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let client_spoke_last = Arc::new(AtomicBool::new(false));
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, Some(Arc::clone(&counter)), Arc::clone(&client_spoke_last)));
                tokio::spawn(pump(sr, cw, None, client_spoke_last));
            }
        });
        Ok(Self { port, trips, task })
    }

    /// Round trips so far.
    pub fn count(&self) -> u64 {
        self.trips.load(Ordering::SeqCst)
    }

    /// Round trips made while `f` runs.
    pub async fn measure<F: std::future::Future>(&self, f: F) -> (F::Output, u64) {
        let before = self.count();
        let out = f.await;
        (out, self.count() - before)
    }
}

async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    trips: Option<Arc<AtomicU64>>,
    client_spoke_last: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        match &trips {
            Some(trips) => {
                if !client_spoke_last.swap(true, Ordering::SeqCst) {
                    trips.fetch_add(1, Ordering::SeqCst);
                }
            }
            None => client_spoke_last.store(false, Ordering::SeqCst),
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
