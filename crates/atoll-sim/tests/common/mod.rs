//! What the simulator's fencing tests share: a process that keeps the fence notices it is
//! told.

use std::sync::{Arc, Mutex};

use atoll_actor::{Actor, ActorResult, Ctx};
use atoll_cluster::{FenceNotice, Node};
use atoll_core::Pid;

/// A process that keeps what it is told when its node is fenced.
pub struct Holder {
    told: Arc<Mutex<Vec<FenceNotice>>>,
}

pub enum HolderMsg {
    Fenced(FenceNotice),
}

impl From<FenceNotice> for HolderMsg {
    fn from(notice: FenceNotice) -> Self {
        HolderMsg::Fenced(notice)
    }
}

impl Actor for Holder {
    type Msg = HolderMsg;
    async fn handle(&mut self, msg: HolderMsg, _: &mut Ctx<Self>) -> ActorResult {
        let HolderMsg::Fenced(notice) = msg;
        self.told.lock().unwrap().push(notice);
        Ok(())
    }
}

/// Spawns a [`Holder`] on `node`, asked to be told of fencing; returns it and what it is told.
pub fn spawn_holder(node: &Node) -> (Pid, Arc<Mutex<Vec<FenceNotice>>>) {
    let told = Arc::default();
    let holder = node
        .runtime()
        .spawn(Holder {
            told: Arc::clone(&told),
        })
        .pid();
    node.notify_fenced::<Holder>(holder).unwrap();
    (holder, told)
}
