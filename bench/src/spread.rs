//! Scenario 11: how a Redis Cluster holds many rooms. One instance opens
//! 300 rooms (a member joins each); then, node by node: the room keys it
//! holds, the hash slots they use, and the subscription connections the
//! instance keeps there.

use crate::client;
use crate::lab::Lab;
use crate::measure::Row;
use std::collections::BTreeSet;

const ROOMS: usize = 300;

pub async fn run(lab: &Lab, name: &str, rooms: usize) -> anyhow::Result<Row> {
    let servers = lab.servers(1, name)?;
    let topic = lab.topic(name);
    let before = lab.usage(&servers)?;
    let mut members = Vec::new();
    for i in 0..rooms {
        let mut ws = client::chat(servers[0].http_port, &format!("{topic}-{i}")).await?;
        client::send_join(&mut ws, "member").await?;
        client::await_joined(&mut ws).await?;
        members.push(ws);
    }
    let after = lab.usage(&servers)?;
    let mut keys_per_node = Vec::new();
    let mut slots = BTreeSet::new();
    let mut subscriptions = 0;
    for port in lab.redis.ports() {
        let mut conn =
            redis::Client::open(format!("redis://127.0.0.1:{port}"))?.get_connection()?;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("*:room:{topic}-*"))
            .query(&mut conn)?;
        for key in &keys {
            let slot: u16 = redis::cmd("CLUSTER")
                .arg("KEYSLOT")
                .arg(key)
                .query(&mut conn)?;
            slots.insert(slot);
        }
        keys_per_node.push(keys.len());
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .arg("TYPE")
            .arg("pubsub")
            .query(&mut conn)?;
        subscriptions += list.lines().count();
    }
    let mut row = Row {
        scenario: name.to_owned(),
        // The joins, one per room.
        deliveries: members.len() as u64,
        note: format!(
            "{rooms} rooms: room keys per master {keys_per_node:?} on {} hash slots; the instance holds {subscriptions} subscription connection(s) for {} masters",
            slots.len(),
            keys_per_node.len()
        ),
        ..Row::default()
    };
    lab.spent(&mut row, before, after);
    Ok(row)
}

/// The full run's room count.
pub fn rooms(quick: bool) -> usize {
    if quick {
        20
    } else {
        ROOMS
    }
}
