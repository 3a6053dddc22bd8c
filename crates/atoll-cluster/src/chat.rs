//! A chat room whose members may sit on any node: the service `atoll demo` runs, and a
//! small model of an OTP-style stateful server. The `chat` example runs its rooms as
//! grains instead (`atoll_grain::chat`), with the same [`Member`]s and [`Line`]s.
//!
//! A [`Room`] keeps the members (monitored, so a member whose process or node goes away
//! leaves by itself) and the last [`HISTORY`] lines. [`Member`]s hear every line posted and
//! every join and leave. Everything is request/reply over `call`, across nodes like
//! locally.

use std::collections::{BTreeMap, VecDeque};

use atoll_actor::{
    Actor, ActorRef, ActorResult, Ctx, Decoder, Down, MonitorRef, ReplyTo, serde_decoder,
};
use atoll_core::Pid;
use serde::{Deserialize, Serialize};

/// How many lines a room remembers.
pub const HISTORY: usize = 100;
/// The longest line (in bytes) a room accepts; longer ones are cut.
pub const MAX_LINE: usize = 1024;

/// One line said in a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    /// Its number in the room, from 1.
    pub seq: u64,
    /// Who said it.
    pub from: String,
    /// What was said.
    pub text: String,
}

/// What a [`Room`] understands.
#[derive(Debug, Serialize, Deserialize)]
pub enum RoomMsg {
    /// `member` joins as `nick`; answers with the nicks present (itself included).
    Join {
        /// Its nick.
        nick: String,
        /// The member process (a [`Member`]).
        member: Pid,
        /// Gets the nicks present.
        reply: ReplyTo<Vec<String>>,
    },
    /// `member` leaves; answers whether it was there.
    Leave {
        /// The member process.
        member: Pid,
        /// Gets whether it was a member.
        reply: ReplyTo<bool>,
    },
    /// Says `text` as `nick` to every member; answers with the line's number.
    Post {
        /// Who says it.
        nick: String,
        /// What is said.
        text: String,
        /// Gets the line number.
        reply: ReplyTo<u64>,
    },
    /// Answers with the last `last` lines, oldest first.
    History {
        /// How many lines.
        last: usize,
        /// Gets them.
        reply: ReplyTo<Vec<Line>>,
    },
    /// Answers with the nicks present, in order.
    Members(ReplyTo<Vec<String>>),
}

/// A chat room.
#[derive(Debug)]
pub struct Room {
    name: String,
    members: BTreeMap<Pid, (String, MonitorRef)>,
    history: VecDeque<Line>,
    next_seq: u64,
}

impl Room {
    /// An empty room called `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Room {
            name: name.into(),
            members: BTreeMap::new(),
            history: VecDeque::new(),
            next_seq: 1,
        }
    }

    fn nicks(&self) -> Vec<String> {
        let mut nicks: Vec<String> = self.members.values().map(|(n, _)| n.clone()).collect();
        nicks.sort();
        nicks
    }

    /// Tells every member (but `except`) something.
    fn tell(&self, ctx: &Ctx<Self>, except: Option<Pid>, msg: impl Fn() -> MemberMsg) {
        for pid in self.members.keys().filter(|p| Some(**p) != except) {
            let _ = member_ref(ctx, *pid).send(msg());
        }
    }
}

fn member_ref<A: Actor>(ctx: &Ctx<A>, pid: Pid) -> ActorRef<Member> {
    let rt = ctx.runtime();
    if pid.node == rt.node() {
        rt.actor_ref(pid).unwrap_or_else(|_| rt.remote_ref(pid))
    } else {
        rt.remote_ref(pid)
    }
}

/// `text` cut to at most [`MAX_LINE`] bytes, on a character boundary.
pub fn cut(mut text: String) -> String {
    if text.len() > MAX_LINE {
        let mut end = MAX_LINE;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

impl Actor for Room {
    type Msg = RoomMsg;

    fn remote_decoder() -> Option<Decoder<RoomMsg>> {
        serde_decoder()
    }

    async fn handle(&mut self, msg: RoomMsg, ctx: &mut Ctx<Self>) -> ActorResult {
        match msg {
            RoomMsg::Join {
                nick,
                member,
                reply,
            } => {
                let nick = cut(nick);
                if let std::collections::btree_map::Entry::Vacant(entry) =
                    self.members.entry(member)
                {
                    entry.insert((nick.clone(), ctx.monitor(member)));
                    let notice = format!("{nick} joined {}", self.name);
                    self.tell(ctx, Some(member), || MemberMsg::Notice(notice.clone()));
                }
                let _ = reply.reply(self.nicks());
            }
            RoomMsg::Leave { member, reply } => {
                let left = self.members.remove(&member);
                if let Some((nick, monitor)) = &left {
                    ctx.demonitor(*monitor);
                    let notice = format!("{nick} left {}", self.name);
                    self.tell(ctx, None, || MemberMsg::Notice(notice.clone()));
                }
                let _ = reply.reply(left.is_some());
            }
            RoomMsg::Post { nick, text, reply } => {
                let line = Line {
                    seq: self.next_seq,
                    from: cut(nick),
                    text: cut(text),
                };
                self.next_seq += 1;
                self.tell(ctx, None, || MemberMsg::Said(line.clone()));
                if self.history.len() == HISTORY {
                    self.history.pop_front();
                }
                let _ = reply.reply(line.seq);
                self.history.push_back(line);
            }
            RoomMsg::History { last, reply } => {
                let skip = self.history.len().saturating_sub(last);
                let _ = reply.reply(self.history.iter().skip(skip).cloned().collect());
            }
            RoomMsg::Members(reply) => drop(reply.reply(self.nicks())),
        }
        Ok(())
    }

    async fn handle_down(&mut self, down: Down, ctx: &mut Ctx<Self>) -> ActorResult {
        if let Some((nick, _)) = self.members.remove(&down.pid) {
            let notice = format!("{nick} left {} ({})", self.name, down.reason);
            self.tell(ctx, None, || MemberMsg::Notice(notice.clone()));
        }
        Ok(())
    }
}

/// What a [`Member`] understands.
#[derive(Debug, Serialize, Deserialize)]
pub enum MemberMsg {
    /// A line said in the room.
    Said(Line),
    /// Someone joined or left.
    Notice(String),
    /// Answers with everything heard so far, as text (`#SEQ FROM: TEXT` or `* NOTICE`).
    Heard(ReplyTo<Vec<String>>),
}

/// Called with each thing a [`Member`] hears, as text.
pub type Listener = Box<dyn Fn(&str) + Send>;

/// A member of a chat room: remembers what it hears (the last [`HISTORY`] items) and, if
/// given a listener, hands each item to it as it arrives.
#[derive(Default)]
pub struct Member {
    heard: VecDeque<String>,
    listener: Option<Listener>,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("heard", &self.heard)
            .finish()
    }
}

impl Member {
    /// A member that also calls `listener` with everything it hears (to print it, say).
    pub fn with_listener(listener: impl Fn(&str) + Send + 'static) -> Self {
        Member {
            heard: VecDeque::new(),
            listener: Some(Box::new(listener)),
        }
    }

    fn remember(&mut self, what: String) {
        if let Some(listener) = &self.listener {
            listener(&what);
        }
        if self.heard.len() == HISTORY {
            self.heard.pop_front();
        }
        self.heard.push_back(what);
    }
}

impl Actor for Member {
    type Msg = MemberMsg;

    fn remote_decoder() -> Option<Decoder<MemberMsg>> {
        serde_decoder()
    }

    async fn handle(&mut self, msg: MemberMsg, _ctx: &mut Ctx<Self>) -> ActorResult {
        match msg {
            MemberMsg::Said(line) => {
                self.remember(format!("#{} {}: {}", line.seq, line.from, line.text))
            }
            MemberMsg::Notice(text) => self.remember(format!("* {text}")),
            MemberMsg::Heard(reply) => drop(reply.reply(self.heard.iter().cloned().collect())),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use atoll_actor::{ExitReason, Runtime};

    use super::*;

    const T: Duration = Duration::from_secs(5);

    async fn join(room: &ActorRef<Room>, nick: &str, member: Pid) -> Vec<String> {
        let nick = nick.to_string();
        room.call(
            |reply| RoomMsg::Join {
                nick,
                member,
                reply,
            },
            T,
        )
        .await
        .unwrap()
    }

    async fn heard(m: &ActorRef<Member>) -> Vec<String> {
        m.call(MemberMsg::Heard, T).await.unwrap()
    }

    #[tokio::test]
    async fn members_hear_posts_and_joins_history_keeps_order_and_a_dead_member_leaves() {
        let rt = Runtime::new();
        let room = rt.spawn(Room::new("lobby"));
        let ann = rt.spawn(Member::default());
        let bob = rt.spawn(Member::default());
        assert_eq!(join(&room, "ann", ann.pid()).await, ["ann"]);
        assert_eq!(join(&room, "bob", bob.pid()).await, ["ann", "bob"]);
        for text in ["hi", "hello"] {
            let seq = room
                .call(
                    |reply| RoomMsg::Post {
                        nick: "ann".into(),
                        text: text.into(),
                        reply,
                    },
                    T,
                )
                .await
                .unwrap();
            assert!(seq >= 1);
        }
        let history = room
            .call(|reply| RoomMsg::History { last: 1, reply }, T)
            .await
            .unwrap();
        assert_eq!(
            history,
            [Line {
                seq: 2,
                from: "ann".into(),
                text: "hello".into()
            }]
        );
        assert_eq!(
            heard(&ann).await,
            ["* bob joined lobby", "#1 ann: hi", "#2 ann: hello"]
        );
        assert_eq!(heard(&bob).await, ["#1 ann: hi", "#2 ann: hello"]);

        rt.exit(bob.pid(), ExitReason::Error("gone".into()));
        let deadline = tokio::time::Instant::now() + T;
        loop {
            let members = room.call(RoomMsg::Members, T).await.unwrap();
            if members == ["ann"] {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "{members:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let last = heard(&ann).await.pop().unwrap();
        assert!(last.starts_with("* bob left lobby ("), "{last}");

        let left = room
            .call(
                |reply| RoomMsg::Leave {
                    member: ann.pid(),
                    reply,
                },
                T,
            )
            .await
            .unwrap();
        assert!(left);
        assert!(room.call(RoomMsg::Members, T).await.unwrap().is_empty());
    }

    #[test]
    fn overlong_lines_are_cut_on_a_character_boundary() {
        let text = "é".repeat(MAX_LINE);
        let cut = cut(text);
        assert!(cut.len() <= MAX_LINE);
        assert!(cut.chars().all(|c| c == 'é'));
    }
}
