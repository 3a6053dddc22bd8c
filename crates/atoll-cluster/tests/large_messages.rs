//! Large messages between nodes: they keep their place in a process's order while they
//! travel on a stream of their own, and one beyond the frame limit is refused at the
//! sender without costing the messages after it.

mod common;

use atoll_cluster::Node;
use common::*;

/// A text `len` bytes long that names `i`.
fn large(i: usize, len: usize) -> String {
    let mut s = format!("{i}:");
    s.extend(std::iter::repeat_n('x', len - s.len()));
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_and_small_messages_to_one_process_arrive_in_order() {
    init_logs();
    let cluster = Cluster::new();
    let (a, b) = (cluster.node("alpha"), cluster.node("beta"));
    a.connect(b.local_addr()).await.unwrap();
    let (first, mut seen_first) = probe(&b);
    let (second, mut seen_second) = probe(&b);
    let to_first = a.actor_ref::<Probe>(first.pid()).unwrap();
    let to_second = a.actor_ref::<Probe>(second.pid()).unwrap();

    // Every third message to `first` is large (over the bulk threshold); `second` gets
    // small ones in between, on the same connection.
    let expected: Vec<String> = (0..30)
        .map(|i| {
            if i % 3 == 0 {
                large(i, 300_000 + i)
            } else {
                i.to_string()
            }
        })
        .collect();
    for (i, text) in expected.iter().enumerate() {
        to_first.send(ProbeMsg::Text(text.clone())).unwrap();
        to_second.send(ProbeMsg::Text(format!("s{i}"))).unwrap();
    }
    for text in &expected {
        assert_eq!(
            next(&mut seen_first, "in order").await,
            Seen::Text(text.clone())
        );
    }
    for i in 0..expected.len() {
        assert_eq!(
            next(&mut seen_second, "the other process's").await,
            Seen::Text(format!("s{i}"))
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_beyond_the_frame_limit_is_refused_and_the_stream_goes_on() {
    init_logs();
    let cluster = Cluster::new();
    let limited = |name: &str| {
        let mut config = cluster.config(name);
        config.max_frame_len = 1 << 20;
        Node::start(config).unwrap()
    };
    let (a, b) = (limited("alpha"), limited("beta"));
    a.connect(b.local_addr()).await.unwrap();
    let (p, mut seen) = probe(&b);
    let to_p = a.actor_ref::<Probe>(p.pid()).unwrap();

    to_p.send(ProbeMsg::Text(large(0, 900_000))).unwrap();
    assert!(
        to_p.send(ProbeMsg::Text(large(1, 2 << 20))).is_err(),
        "a message over the limit is refused at the sender"
    );
    to_p.send(ProbeMsg::Text("after".into())).unwrap();
    assert_eq!(
        next(&mut seen, "under the limit").await,
        Seen::Text(large(0, 900_000))
    );
    assert_eq!(next(&mut seen, "after").await, Seen::Text("after".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_payloads_come_back_from_a_remote_echo_intact() {
    use atoll_cluster::Payload;
    use atoll_cluster::builtin::{self, Echo, EchoMsg};
    init_logs();
    let cluster = Cluster::new();
    let (a, b) = (cluster.node("alpha"), cluster.node("beta"));
    builtin::install(&b);
    let remote = a.connect(b.local_addr()).await.unwrap();
    let echo = a
        .actor_ref::<Echo>(remote.spawn("echo", &()).await.unwrap())
        .unwrap();
    // Sizes on both sides of the shared-frame threshold, each with its own contents; the
    // calls overlap, so replies share streams with each other's frames.
    let sizes = [10, 64 * 1024 - 40, 64 * 1024, 300_000, 1 << 20];
    let calls = sizes.iter().enumerate().map(|(i, &len)| {
        let sent: Vec<u8> = (0..len).map(|j| (i * 31 + j * 7) as u8).collect();
        let echo = echo.clone();
        async move {
            let back = echo
                .call(
                    |r| EchoMsg::Bytes(Payload::from(sent.clone()), r),
                    std::time::Duration::from_secs(20),
                )
                .await
                .unwrap();
            assert_eq!(&back[..], &sent[..], "payload {i} of {len} bytes");
        }
    });
    futures_join_all(calls).await;
}

/// Runs the futures concurrently on this task and waits for all.
async fn futures_join_all<F: std::future::Future<Output = ()>>(futures: impl Iterator<Item = F>) {
    let mut set = Vec::new();
    for f in futures {
        set.push(Box::pin(f));
    }
    std::future::poll_fn(|cx| {
        set.retain_mut(|f| f.as_mut().poll(cx).is_pending());
        if set.is_empty() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
}
