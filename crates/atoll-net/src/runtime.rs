//! The runtime quinn runs a node's endpoint and connections on.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::runtime::{Handle, RuntimeFlavor};

/// A task quinn runs in the background: the endpoint's driver or a connection's.
type Driver = Pin<Box<dyn Future<Output = ()> + Send>>;

/// quinn's tokio runtime, except that on a multi-thread runtime its drivers (the
/// endpoint's and each connection's) go to the back of the run queue when woken instead of
/// running next.
///
/// A tokio multi-thread worker runs a task woken by another task on the same worker next,
/// ahead of everything queued (its "LIFO slot"). A process writing a frame wakes its
/// connection's driver, which then sent that one frame in a packet of its own before the
/// processes queued behind it wrote theirs. Under load that turned about seven messages per
/// datagram into two, and halved throughput even with a single worker. Queued behind them,
/// the driver finds their frames written and sends them together, as a current-thread
/// runtime (first in, first out) does anyway.
#[derive(Debug)]
pub(crate) struct QueuedDrivers;

impl quinn::Runtime for QueuedDrivers {
    fn new_timer(&self, at: Instant) -> Pin<Box<dyn quinn::AsyncTimer>> {
        quinn::TokioRuntime.new_timer(at)
    }

    fn spawn(&self, driver: Driver) {
        let multi_thread = Handle::try_current()
            .is_ok_and(|h| matches!(h.runtime_flavor(), RuntimeFlavor::MultiThread));
        if multi_thread {
            tokio::spawn(QueuedWhenWoken {
                driver,
                requeued: false,
            });
        } else {
            tokio::spawn(driver);
        }
    }

    fn wrap_udp_socket(
        &self,
        socket: std::net::UdpSocket,
    ) -> std::io::Result<Arc<dyn quinn::AsyncUdpSocket>> {
        quinn::TokioRuntime.wrap_udp_socket(socket)
    }
}

/// Polls its driver only on every second poll: the first one after a wake-up wakes the
/// task again from inside its own poll, which tokio takes as a yield (to the back of the
/// queue).
struct QueuedWhenWoken {
    driver: Driver,
    requeued: bool,
}

impl Future for QueuedWhenWoken {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if !self.requeued {
            self.requeued = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.requeued = false;
        self.driver.as_mut().poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quinn::Runtime as _;
    use std::sync::Mutex;
    use tokio::sync::Notify;

    /// On one multi-thread worker: a task wakes three others, then a driver. tokio would
    /// run the driver first (the last woken runs next); queued, it runs after them.
    #[test]
    fn a_woken_driver_runs_after_the_tasks_queued_before_it() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        rt.block_on(async {
            let driver_wake = Arc::new(Notify::new());
            let (wait, record) = (driver_wake.clone(), order.clone());
            let driver: Driver = Box::pin(async move {
                wait.notified().await;
                record.lock().unwrap().push("driver");
            });
            let mut tasks = Vec::new();
            let mut wakes = Vec::new();
            for name in ["a", "b", "c"] {
                let wake = Arc::new(Notify::new());
                let (wait, record) = (wake.clone(), order.clone());
                tasks.push(tokio::spawn(async move {
                    wait.notified().await;
                    record.lock().unwrap().push(name);
                }));
                wakes.push(wake);
            }
            let waker = tokio::spawn(async move {
                // Everyone is parked on its notification before the wakes go out.
                tokio::task::yield_now().await;
                QueuedDrivers.spawn(driver);
                tokio::task::yield_now().await;
                for wake in &wakes {
                    wake.notify_one();
                }
                driver_wake.notify_one();
            });
            waker.await.unwrap();
            for t in tasks {
                t.await.unwrap();
            }
            while order.lock().unwrap().len() < 4 {
                tokio::task::yield_now().await;
            }
        });
        assert_eq!(*order.lock().unwrap(), ["a", "b", "c", "driver"]);
    }

    /// The wrapper itself: a wake-up costs one extra poll, and the driver still finishes.
    #[test]
    fn the_driver_is_polled_on_every_second_poll() {
        let polls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = polls.clone();
        let mut task = QueuedWhenWoken {
            driver: Box::pin(std::future::poll_fn(move |_| {
                let n = counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if n == 1 {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })),
            requeued: false,
        };
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut poll = || Pin::new(&mut task).poll(&mut cx);
        assert!(poll().is_pending());
        assert_eq!(polls.load(std::sync::atomic::Ordering::Relaxed), 0);
        assert!(poll().is_pending());
        assert!(poll().is_pending());
        assert_eq!(polls.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert!(poll().is_ready());
        assert_eq!(polls.load(std::sync::atomic::Ordering::Relaxed), 2);
    }
}
