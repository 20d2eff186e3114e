//! Scenario 10: back to normal after Redis returns. Two instances; Redis
//! is stopped for a few seconds and started again, empty. From the moment
//! the new Redis answers, how long until a chat message is accepted (and
//! echoed) again, and until a relay frame crosses from one instance to the
//! other.

use crate::client::{self, Ws};
use crate::lab::Lab;
use crate::measure::Row;
use app::protocol::{ClientMessage, ServerEvent};
use futures::SinkExt;
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

const DOWN_FOR: Duration = Duration::from_secs(3);
/// How often each side tries again.
const RETRY: Duration = Duration::from_millis(10);
const GIVE_UP: Duration = Duration::from_secs(30);

pub async fn run(lab: &mut Lab, name: &str) -> anyhow::Result<Row> {
    let servers = lab.servers(2, name)?;
    let topic = lab.topic(name);
    let mut speaker = client::chat(servers[0].http_port, &topic).await?;
    client::send_join(&mut speaker, "speaker").await?;
    client::await_joined(&mut speaker).await?;
    let mut sender = client::relay(servers[0].relay_port, &topic).await?;
    let mut receiver = client::relay(servers[1].relay_port, &topic).await?;
    let before = lab.usage(&servers)?;

    let (redis, dir) = (&mut lab.redis, lab.dir.clone());
    tokio::task::block_in_place(|| redis.restart(&dir, DOWN_FOR))?;
    let back = Instant::now();
    let (chat, relay) = tokio::join!(
        chat_accepted(&mut speaker, back),
        relay_crossed(&mut sender, &mut receiver, back)
    );
    let (chat, relay) = (chat?, relay?);
    let after = lab.usage(&servers)?;
    let mut row = Row {
        scenario: name.to_owned(),
        // The chat message and the relay frame that got through.
        deliveries: 2,
        note: format!(
            "Redis down {} s, then answering: chat messages accepted again after {} ms, relay frames crossing instances after {} ms",
            DOWN_FOR.as_secs(),
            chat.as_millis(),
            relay.as_millis()
        ),
        ..Row::default()
    };
    lab.spent(&mut row, before, after);
    Ok(row)
}

/// Says something until a message is echoed rather than refused.
async fn chat_accepted(ws: &mut Ws, back: Instant) -> anyhow::Result<Duration> {
    while back.elapsed() < GIVE_UP {
        let say = ClientMessage::Say {
            text: "are you back?".into(),
            id: None,
        };
        ws.send(Message::text(client::to_json(&say))).await?;
        loop {
            let text = client::next_text(ws).await?;
            match serde_json::from_str(&text) {
                Ok(ServerEvent::Message(_)) => return Ok(back.elapsed()),
                Ok(ServerEvent::Error { .. }) => break,
                _ => continue,
            }
        }
        tokio::time::sleep(RETRY).await;
    }
    anyhow::bail!(
        "chat messages still refused {} s after Redis returned",
        GIVE_UP.as_secs()
    )
}

/// Sends relay frames until one reaches the other instance's client.
async fn relay_crossed(
    sender: &mut Ws,
    receiver: &mut Ws,
    back: Instant,
) -> anyhow::Result<Duration> {
    while back.elapsed() < GIVE_UP {
        sender.send(Message::text("{\"back\":true}")).await?;
        if tokio::time::timeout(RETRY, client::next_text(receiver))
            .await
            .is_ok()
        {
            return Ok(back.elapsed());
        }
    }
    anyhow::bail!(
        "relay frames still lost {} s after Redis returned",
        GIVE_UP.as_secs()
    )
}
