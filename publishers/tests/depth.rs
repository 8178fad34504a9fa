//! The depth view against the matcher's own books: a client that keeps the last full snapshot and
//! applies every diff always holds exactly the matcher's levels.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use viaduct_matcher::command::PutLimit;
use viaduct_matcher::config::embedded;
use viaduct_matcher::event::EventRef;
use viaduct_matcher::order::{Side, Source};
use viaduct_matcher::{Command, Events, Matcher, Spec};
use viaduct_publishers::depth::{DepthUpdate, DepthView, CLEAN_EVERY_S};

/// What a subscriber holds: price → amount per side.
#[derive(Default, Debug, PartialEq)]
struct Client {
    asks: BTreeMap<i128, i128>,
    bids: BTreeMap<i128, i128>,
}

impl Client {
    fn take(&mut self, u: &DepthUpdate) {
        for (side, book) in [(&u.asks, &mut self.asks), (&u.bids, &mut self.bids)] {
            let Some(levels) = side else { continue };
            if u.clean {
                book.clear();
            }
            for &(price, amount) in levels {
                if amount == 0 {
                    book.remove(&price);
                } else {
                    book.insert(price, amount);
                }
            }
        }
    }
}

fn matcher_levels(m: &Matcher) -> Client {
    Client { asks: m.book(0).side_levels(Side::Ask).collect(), bids: m.book(0).side_levels(Side::Bid).collect() }
}

#[test]
fn diffs_applied_to_the_last_snapshot_equal_the_book() {
    let spec = Spec::new(&embedded()).unwrap();
    for seed in 0..3u64 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut m = Matcher::new(spec.clone());
        let mut events = Events::default();
        for user in 1..=20u32 {
            for (asset, id) in [("BTC", 1u64), ("BCH", 2)] {
                let cmd = viaduct_protocol::decode(
                    &spec,
                    "balance.update",
                    &serde_json::json!([user, asset, "deposit", id, "1000000", {}]).as_array().unwrap().clone(),
                )
                .unwrap();
                m.apply(1, &cmd, &mut events).unwrap();
            }
        }
        let mut view = DepthView::from_matcher(&m);
        let mut client = Client::default();
        let mut now = 1_000i64;
        let first = view.update(0, now).expect("the first update");
        assert!(first.clean);
        client.take(&first);
        let (mut diffs, mut cleans) = (0, 1);
        for i in 0..20_000u64 {
            events.clear();
            let cmd = if rng.gen_bool(0.25) && m.last_order_id() > 0 {
                Command::Cancel {
                    user: rng.gen_range(1..=20),
                    market: 0,
                    order_id: rng.gen_range(1..=m.last_order_id()),
                }
            } else {
                Command::PutLimit(PutLimit {
                    user: rng.gen_range(1..=20),
                    market: 0,
                    side: if rng.gen_bool(0.5) { Side::Ask } else { Side::Bid },
                    amount: rng.gen_range(1..50) * 1_000_000,
                    price: rng.gen_range(90..110) * 1_000_000,
                    taker_fee: 0,
                    maker_fee: 0,
                    source: Source::EMPTY,
                    client_id: 0,
                    id_window: Default::default(),
                    options: Default::default(),
                    session: 0,
                })
            };
            let _ = m.apply(i, &cmd, &mut events);
            for ev in events.iter() {
                if let EventRef::Level(l) = ev {
                    view.apply(l);
                }
            }
            if rng.gen_bool(0.1) {
                now += rng.gen_range(0..8);
                let before = now;
                match view.update(0, now) {
                    Some(u) => {
                        if u.clean {
                            cleans += 1;
                        } else {
                            diffs += 1;
                            assert!(u.asks.is_some() || u.bids.is_some(), "a diff without changes");
                        }
                        client.take(&u);
                    }
                    None => assert_eq!(before, now),
                }
                assert_eq!(client, matcher_levels(&m), "seed {seed} command {i}");
                for side in [Side::Ask, Side::Bid] {
                    assert_eq!(view.levels(0, side), m.book(0).side_levels(side).collect::<Vec<_>>(), "best first");
                }
            }
        }
        assert!(diffs > 100 && cleans > 5, "seed {seed}: {diffs} diffs, {cleans} full snapshots");
        // Nothing changed since the last call: nothing to push, however long it has been.
        view.update(0, now);
        assert_eq!(view.update(0, now + 10 * CLEAN_EVERY_S), None);
    }
}

#[test]
fn params_json_has_viabtcs_shape() {
    let spec = Spec::new(&embedded()).unwrap();
    let u = DepthUpdate { clean: false, asks: Some(vec![(150_000_000, 0)]), bids: None };
    assert_eq!(u.params_json(&spec, 0), r#"[false,{"asks":[["1.5","0"]]},"BTCBCH"]"#);
    let u = DepthUpdate { clean: true, asks: Some(vec![]), bids: Some(vec![(100_000_000, 250_000_000)]) };
    assert_eq!(u.params_json(&spec, 0), r#"[true,{"asks":[],"bids":[["1","2.5"]]},"BTCBCH"]"#);
}
