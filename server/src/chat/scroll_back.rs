//! Reading a room's earlier events (`older`), for anybody reading it,
//! joined or not: from the data file in the embedded default, else from
//! the history the broker keeps.

use super::ChatSession;
use app::protocol::{ErrorCode, MAX_PAGE};

impl ChatSession {
    /// Scroll-back: the newest `limit` events below `before`, for anybody
    /// reading the room.
    pub(super) async fn older(&self, before: u64, limit: u32) {
        if !(1..=MAX_PAGE).contains(&limit) || before == 0 {
            let message =
                format!("older needs a before offset of 1 or more and a limit of 1 to {MAX_PAGE}");
            return self.refuse(ErrorCode::InvalidMessage, message);
        }
        match self.chat.page(self.room(), before, limit as usize).await {
            Ok(page) => {
                self.peer.send(super::super::resume::page_frame(&page));
            }
            Err(err) => {
                let message = format!(
                    "earlier messages cannot be read right now ({err}): try again in a moment"
                );
                self.refuse(ErrorCode::Unavailable, message);
            }
        }
    }
}
