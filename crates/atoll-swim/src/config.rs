use std::num::{NonZeroU8, NonZeroUsize};
use std::time::Duration;

/// Bytes the membership envelope adds around a foca packet (version, kind, load summary).
pub(crate) const ENVELOPE_OVERHEAD: usize = 24;

/// A suspicion timeout that does not run out (a year) when membership does not down by
/// itself.
const NEVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// SWIM settings. The defaults are the product's: probe every second, wait 500 ms for a
/// direct answer, ask 3 witnesses to probe indirectly, and declare a suspect unreachable after
/// 5 s without a refutation.
#[derive(Clone, Debug, PartialEq)]
pub struct SwimConfig {
    /// How often a random member is probed.
    pub probe_interval: Duration,
    /// How long to wait for a direct answer before asking witnesses.
    pub ping_timeout: Duration,
    /// How long a member stays `Suspect` before it is declared `Unreachable`.
    pub suspect_timeout: Duration,
    /// How many witnesses probe a member that did not answer directly.
    pub indirect_probes: usize,
    /// The largest datagram this node sends (the transport's limit, envelope included).
    pub max_datagram: usize,
    /// How many times each membership update is piggybacked before it is dropped.
    pub max_transmissions: u8,
    /// How long members that left or were declared unreachable stay listed.
    pub forget_down_after: Duration,
    /// How often a node with no live member (or still joining) retries its seeds.
    pub rejoin_interval: Duration,
    /// Whether a suspect that does not refute within `suspect_timeout` is declared
    /// unreachable by membership itself (true, the default). False leaves suspects suspect
    /// until [`Membership::declare_down`](crate::Membership::declare_down) says otherwise: a
    /// split-brain policy decides who is down.
    pub auto_down: bool,
}

impl Default for SwimConfig {
    fn default() -> Self {
        SwimConfig {
            probe_interval: Duration::from_millis(1000),
            ping_timeout: Duration::from_millis(500),
            suspect_timeout: Duration::from_millis(5000),
            indirect_probes: 3,
            max_datagram: 1100,
            max_transmissions: 10,
            forget_down_after: Duration::from_secs(3600),
            rejoin_interval: Duration::from_millis(2000),
            auto_down: true,
        }
    }
}

impl SwimConfig {
    /// Settings for a cluster of about `nodes` members: updates are piggybacked
    /// `4·log10(nodes+1)` times (at least 6), enough for gossip to reach everyone.
    pub fn for_cluster_size(nodes: usize) -> Self {
        let tx = (4.0 * ((nodes as f64) + 1.0).log10())
            .ceil()
            .clamp(6.0, 255.0) as u8;
        SwimConfig {
            max_transmissions: tx,
            ..SwimConfig::default()
        }
    }

    pub(crate) fn foca(&self) -> foca::Config {
        let mut c = foca::Config::simple();
        c.probe_period = self.probe_interval;
        // foca needs the round trip to fit inside the period.
        c.probe_rtt = self.ping_timeout.min(self.probe_interval.mul_f32(0.9));
        c.num_indirect_probes = NonZeroUsize::new(self.indirect_probes.max(1)).expect("max(1)");
        c.max_transmissions = NonZeroU8::new(self.max_transmissions.max(1)).expect("max(1)");
        c.suspect_to_down_after = if self.auto_down {
            self.suspect_timeout
        } else {
            // Never, in practice: someone else downs.
            NEVER
        };
        c.remove_down_after = Some(self.forget_down_after);
        c.max_packet_size =
            NonZeroUsize::new(self.max_datagram.saturating_sub(ENVELOPE_OVERHEAD).max(256))
                .expect("max(256)");
        // Tell a member that talks to us after it was declared down, so it rejoins as a new
        // generation instead of lingering.
        c.notify_down_members = true;
        c.periodic_gossip = Some(foca::PeriodicParams {
            frequency: self.probe_interval / 5,
            num_members: NonZeroUsize::new(3).expect("3"),
        });
        // Down members are asked now and then whether they are back: this is how the two
        // sides of a healed partition find each other.
        c.periodic_announce_to_down_members = Some(foca::PeriodicParams {
            frequency: self.suspect_timeout,
            num_members: NonZeroUsize::new(2).expect("2"),
        });
        c.periodic_announce = Some(foca::PeriodicParams {
            frequency: self.probe_interval * 30,
            num_members: NonZeroUsize::new(1).expect("1"),
        });
        c
    }
}
