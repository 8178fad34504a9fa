//! Client order ids (binary order entry): a resend is refused with the order it duplicates, the id
//! cancels its order, the window lasts 24 h and survives a snapshot.

mod common;

use common::Engine;
use viaduct_matcher::command::{Amend, IdWindow, PutLimit, PutMarket};
use viaduct_matcher::order::{Side, Source};
use viaduct_matcher::{Command, Events, Matcher, Reply, RpcError, DEDUPE_WINDOW_US};

fn limit(user: u32, side: Side, price: i128, amount: i128, client_id: u64) -> Command {
    Command::PutLimit(PutLimit {
        user,
        market: 0,
        side,
        amount,
        price,
        taker_fee: 0,
        maker_fee: 0,
        source: Source::EMPTY,
        client_id,
        id_window: Default::default(),
        options: Default::default(),
        session: 0,
    })
}

fn apply(e: &mut Engine, cmd: &Command) -> (Result<u64, RpcError>, usize) {
    let mut events = Events::default();
    let before = e.m.state_hash();
    let r = e.m.apply(e.now, cmd, &mut events).map(|_| events.last_order().map_or(0, |o| o.id));
    if r.is_err() {
        assert_eq!(before, e.m.state_hash(), "a refused command changed the state");
        assert!(events.to_vec().is_empty(), "a refused command emitted events");
    }
    (r, events.to_vec().len())
}

fn funded() -> Engine {
    let mut e = Engine::new();
    e.deposit(1, "BTC", "100");
    e.deposit(1, "BCH", "100");
    e.deposit(2, "BTC", "100");
    e
}

#[test]
fn a_resend_is_refused_with_the_order_it_duplicates() {
    let mut e = funded();
    let (first, _) = apply(&mut e, &limit(1, Side::Ask, 100_000_000, 100_000_000, 42));
    let first = first.unwrap();
    let (again, _) = apply(&mut e, &limit(1, Side::Ask, 100_000_000, 100_000_000, 42));
    assert_eq!(again, Err(RpcError::DuplicateClientId { order_id: first }));
    assert_eq!(RpcError::DuplicateClientId { order_id: first }.code(), 13);
    // Another user may use the same id; 0 means none and never collides.
    assert!(apply(&mut e, &limit(2, Side::Ask, 100_000_000, 100_000_000, 42)).0.is_ok());
    assert!(apply(&mut e, &limit(1, Side::Ask, 100_000_000, 100_000_000, 0)).0.is_ok());
    assert!(apply(&mut e, &limit(1, Side::Ask, 100_000_000, 100_000_000, 0)).0.is_ok());
    // A market order's id counts as well, even though the order finished at once.
    let market = Command::PutMarket(PutMarket {
        user: 1,
        market: 0,
        side: Side::Bid,
        amount: 10_000_000,
        stock_amount: false,
        taker_fee: 0,
        source: Source::EMPTY,
        client_id: 7,
        id_window: Default::default(),
        self_trade: Default::default(),
        session: 0,
    });
    let (m, _) = apply(&mut e, &market);
    let m = m.unwrap();
    assert_eq!(apply(&mut e, &market).0, Err(RpcError::DuplicateClientId { order_id: m }));
    e.m.check_invariants().unwrap();
}

#[test]
fn a_resend_after_the_original_took_the_balance_is_still_a_duplicate() {
    let mut e = Engine::new();
    e.deposit(1, "BTC", "1");
    let first = apply(&mut e, &limit(1, Side::Ask, 100_000_000, 100_000_000, 3)).0.unwrap();
    assert_eq!(
        apply(&mut e, &limit(1, Side::Ask, 100_000_000, 100_000_000, 3)).0,
        Err(RpcError::DuplicateClientId { order_id: first })
    );
}

#[test]
fn a_refused_order_leaves_its_id_free() {
    let mut e = funded();
    let (r, _) = apply(&mut e, &limit(3, Side::Ask, 100_000_000, 100_000_000, 9));
    assert_eq!(r, Err(RpcError::BalanceNotEnough));
    e.deposit(3, "BTC", "1");
    assert!(apply(&mut e, &limit(3, Side::Ask, 100_000_000, 100_000_000, 9)).0.is_ok());
}

#[test]
fn cancel_by_client_id_cancels_that_order_only_for_its_owner() {
    let mut e = funded();
    let id = apply(&mut e, &limit(1, Side::Bid, 100_000_000, 100_000_000, 5)).0.unwrap();
    let wrong_user = Command::CancelByClientId { user: 2, market: 0, client_id: 5 };
    assert_eq!(apply(&mut e, &wrong_user).0, Err(RpcError::OrderNotFound));
    let unknown = Command::CancelByClientId { user: 1, market: 0, client_id: 6 };
    assert_eq!(apply(&mut e, &unknown).0, Err(RpcError::OrderNotFound));
    let cancel = Command::CancelByClientId { user: 1, market: 0, client_id: 5 };
    assert!(cancel.is_write());
    let (r, events) = apply(&mut e, &cancel);
    assert_eq!(r, Ok(id));
    assert!(events >= 2, "a cancel emits its finish and level change");
    assert_eq!(e.balance(1, "BCH"), ("100".to_string(), "0".to_string()));
    // The order is gone; its id stays taken for the window.
    assert_eq!(apply(&mut e, &cancel).0, Err(RpcError::OrderNotFound));
    assert_eq!(
        apply(&mut e, &limit(1, Side::Bid, 100_000_000, 100_000_000, 5)).0,
        Err(RpcError::DuplicateClientId { order_id: id })
    );
}

#[test]
fn ids_are_remembered_for_24_hours_and_through_a_snapshot() {
    let mut e = funded();
    let id = apply(&mut e, &limit(1, Side::Ask, 100_000_000, 100_000_000, 11)).0.unwrap();
    let copy = Matcher::from_snapshot(e.m.spec().clone(), &e.m.snapshot()).unwrap();
    assert_eq!(copy.state_hash(), e.m.state_hash());
    let mut restored = Engine::with_matcher(copy, e.now + DEDUPE_WINDOW_US - 1);
    assert_eq!(
        apply(&mut restored, &limit(1, Side::Ask, 100_000_000, 100_000_000, 11)).0,
        Err(RpcError::DuplicateClientId { order_id: id })
    );
    restored.now += 1;
    assert!(apply(&mut restored, &limit(1, Side::Ask, 100_000_000, 100_000_000, 11)).0.is_ok());
}

/// An order under a window of `max` ids and `seconds`.
fn limit_in(max: u32, seconds: u32, user: u32, client_id: u64) -> Command {
    match limit(user, Side::Ask, 100_000_000, 100_000_000, client_id) {
        Command::PutLimit(c) => Command::PutLimit(PutLimit { id_window: IdWindow { max, seconds }, ..c }),
        _ => unreachable!(),
    }
}

#[test]
fn a_full_window_forgets_its_oldest_id_and_refuses_no_order() {
    let mut e = funded();
    let ask = |id| limit_in(2, 86_400, 1, id);
    let first = apply(&mut e, &ask(1)).0.unwrap();
    assert!(apply(&mut e, &ask(2)).0.is_ok());
    // The user's window is full: a third id is taken, and its oldest (1) is forgotten.
    let third = apply(&mut e, &ask(3)).0.unwrap();
    assert_eq!(apply(&mut e, &ask(3)).0, Err(RpcError::DuplicateClientId { order_id: third }));
    assert!(matches!(apply(&mut e, &ask(2)).0, Err(RpcError::DuplicateClientId { .. })));
    // Id 1 names nothing now: a cancel by it finds no order, and a new order may take it.
    let cancel = Command::CancelByClientId { user: 1, market: 0, client_id: 1 };
    assert_eq!(apply(&mut e, &cancel).0, Err(RpcError::OrderNotFound));
    let again = apply(&mut e, &ask(1)).0.unwrap();
    assert_ne!(again, first);
    assert!(apply(&mut e, &ask(0)).0.is_ok());
}

/// One user's traffic never shortens another's protection: user 2's ids stay while user 1 takes
/// many times user 2's bound, each user held to the window its orders carry.
#[test]
fn one_users_ids_never_push_out_anothers() {
    let mut e = funded();
    e.deposit(2, "BTC", "10000");
    e.deposit(1, "BTC", "10000");
    let kept = apply(&mut e, &limit_in(3, 86_400, 2, 77)).0.unwrap();
    for id in 1..=1_000 {
        apply(&mut e, &limit_in(10, 86_400, 1, id)).0.unwrap();
    }
    assert_eq!(apply(&mut e, &limit_in(3, 86_400, 2, 77)).0, Err(RpcError::DuplicateClientId { order_id: kept }));
    assert!(apply(&mut e, &limit_in(10, 86_400, 1, 991)).0.is_err(), "user 1 keeps its own last 10");
    assert!(apply(&mut e, &limit_in(10, 86_400, 1, 990)).0.is_ok(), "and forgot the ones before");
    e.m.check_invariants().unwrap();
}

/// An id lives for the window's seconds from the order that took it; an amend that gives the
/// order a new id moves the client order id to it for the rest of that time; a snapshot keeps it.
#[test]
fn an_id_lives_its_windows_seconds_through_an_amend_and_a_snapshot() {
    let mut e = funded();
    let placed = apply(&mut e, &limit_in(100, 60, 1, 5)).0.unwrap();
    e.now += 30_000_000;
    let amend = Command::Amend(Amend { user: 1, market: 0, order_id: placed, price: Some(200_000_000), left: None });
    apply(&mut e, &amend).0.unwrap();
    let status = |e: &mut Engine| {
        let mut events = Events::default();
        e.m.apply(e.now, &Command::OrderStatus { user: 1, market: 0, order_id: 0, client_id: 5 }, &mut events)
    };
    let Ok(Reply::Status { order_id: amended, open: Some(_) }) = status(&mut e) else { panic!("{:?}", status(&mut e)) };
    assert_ne!(amended, placed, "a new price gives the order a new id");
    assert_eq!(apply(&mut e, &limit_in(100, 60, 1, 5)).0, Err(RpcError::DuplicateClientId { order_id: amended }));
    let copy = Matcher::from_snapshot(e.m.spec().clone(), &e.m.snapshot()).unwrap();
    assert_eq!(copy.state_hash(), e.m.state_hash());
    let mut restored = Engine::with_matcher(copy, e.now + 30_000_000 - 1);
    assert!(status(&mut restored).is_ok());
    restored.now += 1;
    assert_eq!(status(&mut restored), Err(RpcError::OrderNotFound), "60 s after the order that took it");
    assert!(apply(&mut restored, &limit_in(100, 60, 1, 5)).0.is_ok());
}
