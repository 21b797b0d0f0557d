//! The watcher against an in-memory chain: depth reporting, catch-up by range, reorgs.

use super::*;
use std::sync::Mutex;

/// A chain of blocks; each block's hash is derived from its number and a branch tag.
#[derive(Default)]
struct FakeChain {
    blocks: Mutex<Vec<(Header, Vec<EscrowEvent>)>>,
}

fn hash(n: u64, branch: u8) -> B256 {
    let mut b = [0u8; 32];
    b[..8].copy_from_slice(&n.to_be_bytes());
    b[8] = branch;
    B256::from(b)
}

impl FakeChain {
    fn new() -> FakeChain {
        let c = FakeChain::default();
        c.mine(0, vec![]);
        c
    }

    fn mine(&self, branch: u8, events: Vec<EscrowEvent>) -> u64 {
        let mut blocks = self.blocks.lock().unwrap();
        let n = blocks.len() as u64;
        let parent = blocks.last().map_or(B256::ZERO, |(h, _)| h.hash);
        blocks.push((
            Header {
                number: n,
                hash: hash(n, branch),
                parent,
                time: 1_000 + n * 12,
            },
            events,
        ));
        n
    }

    /// Drops every block from `n` on.
    fn truncate(&self, n: u64) {
        self.blocks.lock().unwrap().truncate(n as usize);
    }

    fn logs_of(h: &Header, events: &[EscrowEvent]) -> Vec<EscrowLog> {
        events
            .iter()
            .enumerate()
            .map(|(i, e)| EscrowLog {
                block: h.number,
                block_hash: h.hash,
                tx: hash(h.number * 100 + i as u64, 0xaa),
                index: i as u64,
                event: e.clone(),
            })
            .collect()
    }
}

impl ChainSource for FakeChain {
    async fn tip(&self) -> Result<u64, EthError> {
        Ok(self.blocks.lock().unwrap().len() as u64 - 1)
    }

    async fn header(&self, number: u64) -> Result<Option<Header>, EthError> {
        Ok(self
            .blocks
            .lock()
            .unwrap()
            .get(number as usize)
            .map(|(h, _)| *h))
    }

    async fn logs_between(&self, from: u64, to: u64) -> Result<Vec<EscrowLog>, EthError> {
        let blocks = self.blocks.lock().unwrap();
        Ok(blocks
            .iter()
            .filter(|(h, _)| h.number >= from && h.number <= to)
            .flat_map(|(h, e)| FakeChain::logs_of(h, e))
            .collect())
    }

    async fn logs_in(&self, block: B256) -> Result<Vec<EscrowLog>, EthError> {
        let blocks = self.blocks.lock().unwrap();
        Ok(blocks
            .iter()
            .filter(|(h, _)| h.hash == block)
            .flat_map(|(h, e)| FakeChain::logs_of(h, e))
            .collect())
    }
}

fn deposit(id: u8) -> EscrowEvent {
    EscrowEvent::Deposited {
        id: B256::repeat_byte(id),
        payer: Address::repeat_byte(1),
        merchant: Address::repeat_byte(2),
        token: Address::ZERO,
        amount: U256::from(1000u64),
        expiry: 10_000,
        salt: B256::repeat_byte(id ^ 0xff),
    }
}

fn small() -> WatcherConfig {
    WatcherConfig {
        window: 8,
        horizon: 3,
        range: 50,
        start_block: 0,
    }
}

async fn poll_all(w: &mut Watcher, c: &FakeChain) -> Vec<Observation> {
    let mut all = Vec::new();
    loop {
        let up = w.poll(c).await.unwrap();
        all.extend(up.observations);
        if !up.more {
            return all;
        }
    }
}

fn seen(id: u8, confirmations: u32) -> Observation {
    Observation::Seen {
        id: B256::repeat_byte(id),
        confirmations,
    }
}

#[tokio::test]
async fn reports_depth_up_to_the_horizon_then_stops() {
    let chain = FakeChain::new();
    let mut w = Watcher::new(small(), None, vec![]);
    assert!(poll_all(&mut w, &chain).await.is_empty());
    chain.mine(0, vec![deposit(7)]);
    assert_eq!(poll_all(&mut w, &chain).await, vec![seen(7, 1)]);
    assert!(poll_all(&mut w, &chain).await.is_empty(), "nothing new");
    for depth in 2..=3 {
        chain.mine(0, vec![]);
        assert_eq!(poll_all(&mut w, &chain).await, vec![seen(7, depth)]);
    }
    chain.mine(0, vec![]);
    assert!(
        poll_all(&mut w, &chain).await.is_empty(),
        "past the horizon"
    );
}

#[tokio::test]
async fn a_reorg_reverts_the_orphaned_deposit_and_its_return_is_seen_again() {
    let chain = FakeChain::new();
    let mut w = Watcher::new(small(), None, vec![]);
    chain.mine(0, vec![]);
    let at = chain.mine(0, vec![deposit(7)]);
    assert_eq!(poll_all(&mut w, &chain).await, vec![seen(7, 1)]);
    // A competing branch without the deposit, one block longer.
    chain.truncate(at);
    chain.mine(1, vec![]);
    chain.mine(1, vec![]);
    let obs = poll_all(&mut w, &chain).await;
    assert_eq!(
        obs,
        vec![Observation::Reverted {
            id: B256::repeat_byte(7)
        }]
    );
    assert_eq!(w.deposit(&B256::repeat_byte(7)).unwrap().block, None);
    // The deposit is mined again on the new branch.
    chain.mine(1, vec![deposit(7)]);
    assert_eq!(poll_all(&mut w, &chain).await, vec![seen(7, 1)]);
    assert_eq!(w.depth(w.deposit(&B256::repeat_byte(7)).unwrap()), 1);
}

#[tokio::test]
async fn a_branch_switch_within_one_poll_never_reports_the_deposit_reverted() {
    let chain = FakeChain::new();
    let mut w = Watcher::new(small(), None, vec![]);
    let at = chain.mine(0, vec![deposit(7)]);
    assert_eq!(poll_all(&mut w, &chain).await, vec![seen(7, 1)]);
    chain.truncate(at);
    chain.mine(1, vec![]);
    chain.mine(1, vec![deposit(7)]);
    let obs = poll_all(&mut w, &chain).await;
    // Reverted when its block is dropped, then seen again at its new depth: one of each, and
    // the invoice state machine credits it once.
    assert_eq!(
        obs,
        vec![
            Observation::Reverted {
                id: B256::repeat_byte(7)
            },
            seen(7, 1)
        ]
    );
}

#[tokio::test]
async fn catches_up_by_range_and_closes_deposits() {
    let chain = FakeChain::new();
    for i in 0..200u64 {
        let events = if i % 20 == 0 {
            vec![deposit((i / 20) as u8 + 1)]
        } else {
            vec![]
        };
        chain.mine(0, events);
    }
    chain.mine(
        0,
        vec![
            EscrowEvent::Captured {
                id: B256::repeat_byte(1),
                amount: U256::from(1000u64),
                fee: U256::from(7u64),
            },
            EscrowEvent::Refunded {
                id: B256::repeat_byte(1),
                amount: U256::from(300u64),
            },
            EscrowEvent::Settled {
                id: B256::repeat_byte(0x5e),
                merchant: Address::repeat_byte(0x4d),
                token: Address::ZERO,
                amount: U256::from(55u64),
                source_ref: "pi_1".into(),
            },
        ],
    );
    let mut w = Watcher::new(small(), None, vec![]);
    let obs = poll_all(&mut w, &chain).await;
    let seen_ids: BTreeSet<B256> = obs
        .iter()
        .filter_map(|o| match o {
            Observation::Seen { id, .. } => Some(*id),
            _ => None,
        })
        .collect();
    // Every deposit is reported once per range read, before its later capture is.
    assert_eq!(seen_ids.len(), 10);
    assert!(obs.contains(&Observation::Closed {
        id: B256::repeat_byte(1),
        kind: ClosingKind::Captured,
        tx: hash(201 * 100, 0xaa),
        fee: U256::from(7u64),
    }));
    // Refunds and settlements are reported whether or not a deposit is followed.
    assert!(obs
        .iter()
        .any(|o| matches!(o, Observation::Refunded { id, amount, .. }
        if *id == B256::repeat_byte(1) && *amount == U256::from(300u64))));
    assert!(obs.iter().any(
        |o| matches!(o, Observation::Settled { id, source_ref, amount, .. }
        if *id == B256::repeat_byte(0x5e) && source_ref == "pi_1" && *amount == U256::from(55u64))
    ));
    assert_eq!(w.head(), Some(201));
    // Deep deposits are reported at the horizon, not one confirmation at a time.
    assert!(obs.contains(&seen(2, 3)));
}

#[tokio::test]
async fn resumes_from_a_stored_cursor_without_repeating_itself() {
    let chain = FakeChain::new();
    chain.mine(0, vec![deposit(9)]);
    let mut w = Watcher::new(small(), None, vec![]);
    poll_all(&mut w, &chain).await;
    let cursor = w.cursor().clone();
    let deposits: Vec<Deposit> = w.deposits().cloned().collect();
    let mut again = Watcher::new(small(), Some(cursor), deposits);
    assert!(poll_all(&mut again, &chain).await.is_empty());
    chain.mine(0, vec![]);
    assert_eq!(poll_all(&mut again, &chain).await, vec![seen(9, 2)]);
}
