//! The smallest relay the load generator can drive: one process, in
//! memory, no checks (no JSON validation, limits, tokens or Redis). The
//! benchmark runs the same load through it and through the server, so the
//! server's relay figure reads as a share of what this machine allows.
//!
//!     minrelay PORT

use app::relay::{registration_action, RelayReply};
use futures::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio_tungstenite::tungstenite::Message;
use uuid::Uuid;

/// Per action, each client's outbound queue.
type Clients = Arc<Mutex<HashMap<String, HashMap<Uuid, UnboundedSender<Message>>>>>;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("usage: minrelay PORT"))?;
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let clients = Clients::default();
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(serve(stream, clients.clone()));
    }
}

async fn serve(stream: TcpStream, clients: Clients) -> Option<()> {
    stream.set_nodelay(true).ok()?;
    let (mut sink, mut stream) = tokio_tungstenite::accept_async(stream).await.ok()?.split();
    let first = stream.next().await?.ok()?;
    let action = registration_action(first.to_text().ok()?).ok()?;
    let id = Uuid::new_v4();
    let (queue, mut queued) = unbounded_channel();
    let reply = RelayReply::Registered {
        id,
        action: action.clone(),
    };
    queue.send(Message::text(reply.encode())).ok()?;
    clients
        .lock()
        .ok()?
        .entry(action.clone())
        .or_default()
        .insert(id, queue);
    tokio::spawn(async move {
        // Whatever queued meanwhile goes out in one write.
        while let Some(message) = queued.recv().await {
            sink.feed(message).await?;
            while let Ok(message) = queued.try_recv() {
                sink.feed(message).await?;
            }
            sink.flush().await?;
        }
        anyhow::Ok(())
    });
    while let Some(Ok(message)) = stream.next().await {
        if !message.is_text() {
            continue;
        }
        let clients = clients.lock().ok()?;
        for (other, queue) in clients.get(&action)? {
            if *other != id {
                let _ = queue.send(message.clone());
            }
        }
    }
    clients.lock().ok()?.get_mut(&action)?.remove(&id);
    Some(())
}
