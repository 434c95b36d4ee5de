//! Start a pgmux instance: bind the listener, spawn the accept loop and the janitor.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::client::{self, Shared};
use crate::config::Config;

/// A running pgmux (in this process).
pub struct Running {
    /// The address it listens on (port 0 in the config picks a free one).
    pub addr: SocketAddr,
    pub shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stop accepting and stop the janitor (clients already connected keep their tasks).
    pub fn stop(self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Bind `listen_addr:listen_port` and start serving. Must run inside a Tokio runtime.
pub async fn start(config: Config) -> std::io::Result<Running> {
    let g = &config.general;
    let host = if g.listen_addr == "*" {
        "0.0.0.0"
    } else {
        g.listen_addr.as_str()
    };
    let listener = TcpListener::bind((host, g.listen_port)).await?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared::new(Arc::new(config)));
    let accept = tokio::spawn(client::serve(listener, shared.clone()));
    let janitor = tokio::spawn(crate::pool::run_janitor(
        shared.registry.clone(),
        Duration::from_millis(500),
    ));
    tracing::info!(%addr, "pgmux listening");
    Ok(Running {
        addr,
        shared,
        tasks: vec![accept, janitor],
    })
}
