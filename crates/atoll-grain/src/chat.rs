//! Chat rooms as grains: a room is addressed by its name from any node
//! (`node.grain::<ChatRoom>("lobby")`), the first message activates it somewhere in the
//! cluster, and its members and history are its state.
//!
//! A room keeps its members ([`atoll_cluster::chat::Member`] processes, on any node) and
//! the last [`HISTORY`] lines in a [`RoomState`], and pushes every line, join and leave to
//! its members. The state is [`Durability::Replicated`]: a chat history is what the room
//! is for, and it should outlive the node the room happens to run on. Every join, leave
//! and post is saved (to the host's store and `GrainsConfig::replicas` other nodes) before
//! its members hear of it, so a room reactivated after idleness, a migration or the loss
//! of its host has every acknowledged line and still pushes to its members. An activation
//! watches its members ([`GrainCtx::monitor`]); one whose process or node is gone leaves
//! by itself, and the others hear why.
//!
//! [`RoomState`] is the room's logic as a plain state machine (state in, who to tell
//! out); [`ChatRoom`] is the grain around it.

use std::collections::{BTreeMap, VecDeque};

use atoll_actor::{ActorRef, ExitReason};
use atoll_cluster::chat::{HISTORY, Line, Member, MemberMsg, cut};
use atoll_core::Pid;
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::{Durability, Grain, GrainCtx};

/// The most members a room takes.
pub const MAX_MEMBERS: usize = 1000;

/// A room's members and its last [`HISTORY`] lines.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomState {
    members: BTreeMap<Pid, String>,
    history: VecDeque<Line>,
    /// The number of the last line said.
    last_seq: u64,
}

/// Something a room tells members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heard {
    /// A line said.
    Said(Line),
    /// Someone joined or left.
    Notice(String),
}

/// Who a room tells what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tell {
    /// The members to tell, in pid order.
    pub to: Vec<Pid>,
    /// What they hear.
    pub what: Heard,
}

impl RoomState {
    /// The nicks present, sorted.
    pub fn nicks(&self) -> Vec<String> {
        let mut nicks: Vec<String> = self.members.values().cloned().collect();
        nicks.sort();
        nicks
    }

    /// The member processes.
    pub fn members(&self) -> impl Iterator<Item = Pid> + '_ {
        self.members.keys().copied()
    }

    /// The last `last` lines, oldest first.
    pub fn history(&self, last: usize) -> Vec<Line> {
        let skip = self.history.len().saturating_sub(last);
        self.history.iter().skip(skip).cloned().collect()
    }

    /// `member` joins room `room` as `nick`: the nicks present (itself included), and the
    /// notice for the others if it was not there yet. `None` if the room is full.
    pub fn join(
        &mut self,
        room: &str,
        nick: String,
        member: Pid,
    ) -> Option<(Vec<String>, Option<Tell>)> {
        if self.members.contains_key(&member) {
            return Some((self.nicks(), None));
        }
        if self.members.len() >= MAX_MEMBERS {
            return None;
        }
        let nick = cut(nick);
        let to = self.members().collect();
        let notice = format!("{nick} joined {room}");
        self.members.insert(member, nick);
        let tell = Tell {
            to,
            what: Heard::Notice(notice),
        };
        Some((self.nicks(), Some(tell)))
    }

    /// `member` leaves room `room` (`why`: it went away rather than said so): the notice
    /// for those who stay, or `None` if it was not a member.
    pub fn leave(&mut self, room: &str, member: Pid, why: Option<&str>) -> Option<Tell> {
        let nick = self.members.remove(&member)?;
        let notice = match why {
            Some(why) => format!("{nick} left {room} ({why})"),
            None => format!("{nick} left {room}"),
        };
        Some(Tell {
            to: self.members().collect(),
            what: Heard::Notice(notice),
        })
    }

    /// Says `text` as `nick`: the line gets the next number and goes to every member.
    pub fn post(&mut self, nick: String, text: String) -> Tell {
        // A state read back from a store is not trusted to leave room for more numbers.
        self.last_seq = self.last_seq.saturating_add(1);
        let line = Line {
            seq: self.last_seq,
            from: cut(nick),
            text: cut(text),
        };
        // `>=` and a loop: nor is its history trusted to be within the limit.
        while self.history.len() >= HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(line.clone());
        Tell {
            to: self.members().collect(),
            what: Heard::Said(line),
        }
    }
}

/// What a [`ChatRoom`] understands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ChatMsg {
    /// `member` (a [`Member`] process) joins as `nick`: [`ChatReply::Joined`] or
    /// [`ChatReply::Full`].
    Join {
        /// Its nick.
        nick: String,
        /// The member process.
        member: Pid,
    },
    /// `member` leaves: [`ChatReply::Left`].
    Leave {
        /// The member process.
        member: Pid,
    },
    /// Says `text` as `nick` to every member: [`ChatReply::Posted`].
    Post {
        /// Who says it.
        nick: String,
        /// What is said.
        text: String,
    },
    /// The last `last` lines, oldest first: [`ChatReply::History`].
    History {
        /// How many lines (at most [`HISTORY`] are kept).
        last: usize,
    },
    /// The nicks present: [`ChatReply::Members`].
    Members,
}

/// What a [`ChatRoom`] answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChatReply {
    /// Joined; the nicks present, sorted.
    Joined(Vec<String>),
    /// The room has [`MAX_MEMBERS`] members already.
    Full,
    /// Whether the process was a member.
    Left(bool),
    /// The line's number, and whether it was stored (acknowledged by the replicas) before
    /// the members heard it. A line not stored is lost if the room's host is.
    Posted {
        /// Its number in the room.
        seq: u64,
        /// Whether the save succeeded.
        stored: bool,
    },
    /// Lines, oldest first.
    History(Vec<Line>),
    /// The nicks present, sorted.
    Members(Vec<String>),
}

/// A chat room grain; its key is the room's name.
#[derive(Debug)]
pub struct ChatRoom {
    name: String,
}

impl ChatRoom {
    /// The room called `key` (the factory to register with [`crate::Grains::register`]).
    pub fn new(key: &str) -> Self {
        ChatRoom {
            name: key.to_string(),
        }
    }

    /// Saves, then tells: members never hear of a change that a newer activation of the
    /// room could be missing. Returns whether the save succeeded.
    async fn save_and_tell(&self, tell: Option<Tell>, ctx: &mut GrainCtx<Self>) -> bool {
        let stored = match ctx.save().await {
            Ok(()) => true,
            Err(e) => {
                warn!(room = %self.name, "room state not saved: {e}");
                false
            }
        };
        // A fenced activation's changes belong to no room: a newer activation exists.
        if let Some(tell) = tell.filter(|_| !ctx.is_fenced()) {
            for pid in tell.to {
                let msg = match &tell.what {
                    Heard::Said(line) => MemberMsg::Said(line.clone()),
                    Heard::Notice(text) => MemberMsg::Notice(text.clone()),
                };
                // A member gone meanwhile is dropped when its monitor fires.
                if let Some(member) = member_ref(ctx, pid) {
                    let _ = member.send(msg);
                }
            }
        }
        stored
    }
}

fn member_ref(ctx: &GrainCtx<ChatRoom>, pid: Pid) -> Option<ActorRef<Member>> {
    let rt = ctx.runtime();
    if pid.node == rt.node() {
        rt.actor_ref(pid).ok()
    } else {
        Some(rt.remote_ref(pid))
    }
}

impl Grain for ChatRoom {
    const TYPE: &'static str = "chat_room";
    const DURABILITY: Durability = Durability::Replicated;
    type State = RoomState;
    type Msg = ChatMsg;
    type Reply = ChatReply;

    async fn on_activate(
        &mut self,
        ctx: &mut GrainCtx<Self>,
    ) -> Result<(), crate::ActivationFailed> {
        let members: Vec<Pid> = ctx.state().members().collect();
        for pid in members {
            ctx.monitor(pid);
        }
        Ok(())
    }

    async fn handle(&mut self, msg: ChatMsg, ctx: &mut GrainCtx<Self>) -> ChatReply {
        match msg {
            ChatMsg::Join { nick, member } => {
                let Some((present, tell)) = ctx.state_mut().join(&self.name, nick, member) else {
                    return ChatReply::Full;
                };
                ctx.monitor(member);
                if tell.is_some() {
                    self.save_and_tell(tell, ctx).await;
                }
                ChatReply::Joined(present)
            }
            ChatMsg::Leave { member } => {
                let tell = ctx.state_mut().leave(&self.name, member, None);
                let left = tell.is_some();
                if left {
                    self.save_and_tell(tell, ctx).await;
                }
                ChatReply::Left(left)
            }
            ChatMsg::Post { nick, text } => {
                let tell = ctx.state_mut().post(nick, text);
                let seq = ctx.state().last_seq;
                let stored = self.save_and_tell(Some(tell), ctx).await;
                ChatReply::Posted { seq, stored }
            }
            ChatMsg::History { last } => ChatReply::History(ctx.state().history(last)),
            ChatMsg::Members => ChatReply::Members(ctx.state().nicks()),
        }
    }

    async fn on_down(&mut self, pid: Pid, reason: ExitReason, ctx: &mut GrainCtx<Self>) {
        let why = reason.to_string();
        if let Some(tell) = ctx.state_mut().leave(&self.name, pid, Some(&why)) {
            self.save_and_tell(Some(tell), ctx).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use atoll_core::NodeId;

    use super::*;

    fn pid(n: u64) -> Pid {
        Pid::new(NodeId::from_bytes([1; 16]), 1, n)
    }

    #[test]
    fn joins_posts_and_leaves_tell_the_right_members_in_order() {
        let mut room = RoomState::default();
        let (present, tell) = room.join("lobby", "ann".into(), pid(1)).unwrap();
        assert_eq!(present, ["ann"]);
        assert_eq!(tell.unwrap().to, []);
        let (present, tell) = room.join("lobby", "bob".into(), pid(2)).unwrap();
        assert_eq!(present, ["ann", "bob"]);
        assert_eq!(
            tell,
            Some(Tell {
                to: vec![pid(1)],
                what: Heard::Notice("bob joined lobby".into())
            })
        );
        // Joining again changes nothing and tells no one.
        assert_eq!(
            room.join("lobby", "bob".into(), pid(2)),
            Some((vec!["ann".into(), "bob".into()], None))
        );

        let first = room.post("ann".into(), "hi".into());
        let second = room.post("bob".into(), "hello".into());
        assert_eq!(first.to, [pid(1), pid(2)]);
        let Heard::Said(line) = second.what else {
            panic!("a line");
        };
        assert_eq!(line.seq, 2);
        assert_eq!(
            room.history(10)
                .iter()
                .map(|l| (l.seq, l.from.as_str()))
                .collect::<Vec<_>>(),
            [(1, "ann"), (2, "bob")]
        );
        assert_eq!(room.history(1)[0].text, "hello");

        let tell = room.leave("lobby", pid(2), Some("noconnection")).unwrap();
        assert_eq!(tell.to, [pid(1)]);
        assert_eq!(
            tell.what,
            Heard::Notice("bob left lobby (noconnection)".into())
        );
        assert_eq!(room.leave("lobby", pid(2), None), None);
        assert_eq!(room.nicks(), ["ann"]);
    }

    #[test]
    fn history_keeps_the_last_lines_and_numbers_keep_growing() {
        let mut room = RoomState::default();
        for i in 0..HISTORY + 5 {
            room.post("ann".into(), format!("line {i}"));
        }
        let history = room.history(usize::MAX);
        assert_eq!(history.len(), HISTORY);
        assert_eq!(history[0].seq, 6);
        assert_eq!(history.last().unwrap().seq, (HISTORY + 5) as u64);
        // A state that comes back from a store round-trips.
        let bytes = postcard::to_allocvec(&room).unwrap();
        let back: RoomState = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back, room);
    }

    #[test]
    fn a_full_room_refuses_a_newcomer() {
        let mut room = RoomState::default();
        for n in 0..MAX_MEMBERS as u64 {
            assert!(room.join("big", format!("m{n}"), pid(n)).is_some());
        }
        assert_eq!(room.join("big", "late".into(), pid(u64::MAX)), None);
        assert!(
            room.join("big", "m0".into(), pid(0)).is_some(),
            "a member rejoining"
        );
    }
}
