//! A worked example of the test kit: a service of our own on a simulated five-node cluster,
//! called across nodes, cut off by a partition, and replaced after the heal; checked over
//! several seeds. A failing seed is named; `ATOLL_SIM_SEED=<seed>` replays it exactly.

use std::time::Duration;

use atoll::testkit::{ClusterSpec, SimCluster, check_seeds};
use atoll::{Actor, ActorResult, Ctx, Decoder, ReplyTo, Scope, serde, serde_decoder};

/// An account: deposits add up, and anyone on any node can ask the balance.
#[derive(Default)]
struct Account(u64);

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(crate = "atoll::serde")]
enum AccountMsg {
    Deposit(u64, ReplyTo<u64>),
}

impl Actor for Account {
    type Msg = AccountMsg;

    fn remote_decoder() -> Option<Decoder<AccountMsg>> {
        serde_decoder()
    }

    async fn handle(&mut self, msg: AccountMsg, _: &mut Ctx<Self>) -> ActorResult {
        let AccountMsg::Deposit(n, reply) = msg;
        self.0 += n;
        let _ = reply.reply(self.0);
        Ok(())
    }
}

#[test]
fn a_service_survives_a_partition_by_being_replaced() {
    check_seeds(0..3, |seed| async move {
        let sim = SimCluster::start(seed, ClusterSpec::new(5)).unwrap();
        assert!(
            sim.wait_until(Duration::from_secs(30), |s| s.converged())
                .await
        );

        // The account lives on node 3, under a Consistent name.
        let home = sim.node(3).unwrap();
        let account = home.runtime().spawn(Account::default()).pid();
        home.register("account", account, Scope::Consistent)
            .await
            .unwrap();

        // A client on node 4 finds it by name and deposits across the network.
        let client = sim.node(4).unwrap();
        assert!(
            sim.wait_until(Duration::from_secs(5), |_| client
                .whereis("account")
                .is_some())
                .await
        );
        let remote = client.actor_ref::<Account>(account).unwrap();
        let mut balance = 0;
        for _ in 0..10 {
            balance = remote
                .call(|r| AccountMsg::Deposit(1, r), Duration::from_secs(2))
                .await
                .unwrap();
        }
        assert_eq!(balance, 10);

        // Node 3 is cut off: the others declare it lost and release its name.
        sim.partition(&[3], &[0, 1, 2, 4]);
        assert!(
            sim.wait_until(Duration::from_secs(60), |s| {
                [0, 1, 2, 4]
                    .iter()
                    .all(|&i| s.node(i).unwrap().whereis("account").is_none())
            })
            .await,
            "the cut-off node's name was not released"
        );
        // Calls from the majority now fail fast or time out; none is answered.
        let answer = remote
            .call(|r| AccountMsg::Deposit(1, r), Duration::from_millis(500))
            .await;
        assert!(answer.is_err());

        // After the heal a replacement takes the name, and every node agrees on it.
        sim.heal();
        assert!(
            sim.wait_until(Duration::from_secs(60), |s| s.converged())
                .await
        );
        let node = sim.node(2).unwrap();
        let replacement = node.runtime().spawn(Account::default()).pid();
        node.register("account", replacement, Scope::Consistent)
            .await
            .unwrap();
        assert!(
            sim.wait_until(Duration::from_secs(10), |s| {
                s.up()
                    .iter()
                    .all(|&i| s.node(i).unwrap().whereis("account") == Some(replacement))
            })
            .await,
            "nodes disagree on the replacement"
        );
        sim.shutdown().await;
    });
}
