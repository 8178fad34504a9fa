//! What a command caused, in order, for the journal's consumers: order events, deals, balance
//! changes and book-level changes.
//!
//! [`Events`] keeps each kind in its own vector (so that recording a small event never copies the
//! size of a large one) and a sequence that restores their order; [`Events::iter`] walks them in
//! the order they happened. The buffer is cleared and reused per command, so recording never
//! allocates once it is warm, except a `balance.update`'s detail.

use crate::config::{AssetId, MarketId};
use crate::order::{Order, Side};

/// ViaBTC's Kafka `orders` event numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderEventKind {
    Put = 1,
    Update = 2,
    Finish = 3,
}

/// One trade: every field of ViaBTC's Kafka `deals` message, plus the money amount and the fee
/// rates. Scales: `price` at `money_prec`, `amount` at `stock_prec`, `deal` at
/// `stock_prec + money_prec`, `ask_fee` at `stock_prec + money_prec + fee_prec` (money), `bid_fee`
/// at `stock_prec + fee_prec` (stock), rates at `fee_prec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deal {
    pub id: u64,
    pub time_us: u64,
    pub market: MarketId,
    pub ask_order_id: u64,
    pub bid_order_id: u64,
    pub ask_user: u32,
    pub bid_user: u32,
    pub price: i128,
    pub amount: i128,
    pub deal: i128,
    pub ask_fee: i128,
    pub bid_fee: i128,
    /// The taker's side.
    pub taker_side: Side,
    pub ask_fee_rate: u32,
    pub bid_fee_rate: u32,
}

/// A `balance.update`'s business name, id and detail object (compact JSON).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    pub business: String,
    pub business_id: u64,
    pub detail: String,
}

/// What a balance change was for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Business {
    /// A leg of deal `deal_id` for order `order_id`; `fee` marks the fee leg. The history detail
    /// `{"a", "i", "m", "p"}` (and `"f"` on the fee leg) comes from that deal: amount, order id,
    /// market, price, and the fee rate of the side `order_id` is on.
    Trade { deal_id: u64, order_id: u64, fee: bool },
    /// `balance.update`.
    Update(Box<Update>),
}

/// A change of one user's balance of one asset. `change` is the exact amount at `change_scale`;
/// `balance` is the user's total (available + freeze) right after it, at the asset's `prec_save`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalanceChange {
    pub time_us: u64,
    pub user: u32,
    pub asset: AssetId,
    pub change_scale: u8,
    pub change: i128,
    pub balance: i128,
    pub business: Business,
}

/// The total `left` now resting at one price level (0 when the level is gone), at `stock_prec`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LevelChange {
    pub market: MarketId,
    pub side: Side,
    pub price: i128,
    pub amount: i128,
}

/// One event, owned: for tests and for consumers that keep events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Order { kind: OrderEventKind, order: Order },
    Deal(Deal),
    Balance(BalanceChange),
    Level(LevelChange),
}

/// One event, borrowed from an [`Events`] buffer.
#[derive(Debug, Clone, Copy)]
pub enum EventRef<'a> {
    Order(OrderEventKind, &'a Order),
    Deal(&'a Deal),
    Balance(&'a BalanceChange),
    Level(&'a LevelChange),
}

impl EventRef<'_> {
    pub fn to_owned(self) -> Event {
        match self {
            EventRef::Order(kind, order) => Event::Order { kind, order: *order },
            EventRef::Deal(d) => Event::Deal(*d),
            EventRef::Balance(b) => Event::Balance(b.clone()),
            EventRef::Level(l) => Event::Level(*l),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Order,
    Deal,
    Balance,
    Level,
}

/// Writes the fields into a fixed-size array at offsets the compiler folds, then appends it: one
/// copy per event rather than a length check per field.
macro_rules! fixed {
    ($out:expr, $n:expr; $($v:expr),* $(,)?) => {{
        let mut b = [0u8; $n];
        let mut at = 0;
        $(
            let bytes = $v.to_le_bytes();
            b[at..at + bytes.len()].copy_from_slice(&bytes);
            at += bytes.len();
        )*
        debug_assert_eq!(at, $n);
        $out.extend_from_slice(&b[..at]);
    }};
}

/// Events a cleared buffer keeps room for: more than a replay batch's buffer is made with
/// (4,096 commands × 4), far more than a command makes but for an order of thousands of deals.
pub const EVENTS_KEPT_MAX: usize = 1 << 15;

/// The events of one command, in order.
#[derive(Debug, Clone, Default)]
pub struct Events {
    seq: Vec<(Kind, u32)>,
    orders: Vec<(OrderEventKind, Order)>,
    deals: Vec<Deal>,
    balances: Vec<BalanceChange>,
    levels: Vec<LevelChange>,
}

impl Events {
    pub fn with_capacity(n: usize) -> Events {
        Events {
            seq: Vec::with_capacity(n),
            orders: Vec::with_capacity(n / 4 + 1),
            deals: Vec::with_capacity(n / 8 + 1),
            balances: Vec::with_capacity(n),
            levels: Vec::with_capacity(n / 4 + 1),
        }
    }

    /// Makes this a copy of `other`, in the capacity it has: a reply path that keeps one
    /// `Events` per slot copies into it without allocating once warm. What grew past
    /// [`EVENTS_KEPT_MAX`] is released first.
    pub fn copy_from(&mut self, other: &Events) {
        self.clear();
        self.seq.extend_from_slice(&other.seq);
        self.orders.extend_from_slice(&other.orders);
        self.deals.extend_from_slice(&other.deals);
        self.balances.extend_from_slice(&other.balances);
        self.levels.extend_from_slice(&other.levels);
    }

    /// Makes this a copy of `other`'s order events and deals alone (in their order), in the
    /// capacity it has: what an edge encodes replies, reports and fills from. Balance and level
    /// changes are left out.
    pub fn copy_trades_from(&mut self, other: &Events) {
        self.clear();
        self.seq.extend(other.seq.iter().filter(|(k, _)| matches!(k, Kind::Order | Kind::Deal)).copied());
        self.orders.extend_from_slice(&other.orders);
        self.deals.extend_from_slice(&other.deals);
    }

    pub fn clear(&mut self) {
        self.seq.clear();
        self.orders.clear();
        self.deals.clear();
        self.balances.clear();
        self.levels.clear();
        if self.seq.capacity() > EVENTS_KEPT_MAX {
            self.release();
        }
    }

    /// Gives back what a spike of events (one order's thousands of deals) made the buffer grow
    /// to, down to [`EVENTS_KEPT_MAX`]: a reused buffer does not keep its high-water size.
    #[cold]
    fn release(&mut self) {
        self.seq.shrink_to(EVENTS_KEPT_MAX);
        self.orders.shrink_to(EVENTS_KEPT_MAX / 4);
        self.deals.shrink_to(EVENTS_KEPT_MAX / 8);
        self.balances.shrink_to(EVENTS_KEPT_MAX);
        self.levels.shrink_to(EVENTS_KEPT_MAX / 4);
    }

    pub fn len(&self) -> usize {
        self.seq.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seq.is_empty()
    }

    pub(crate) fn order(&mut self, kind: OrderEventKind, order: Order) {
        self.seq.push((Kind::Order, self.orders.len() as u32));
        self.orders.push((kind, order));
    }

    pub(crate) fn deal(&mut self, deal: Deal) {
        self.seq.push((Kind::Deal, self.deals.len() as u32));
        self.deals.push(deal);
    }

    pub(crate) fn balance(&mut self, change: BalanceChange) {
        self.seq.push((Kind::Balance, self.balances.len() as u32));
        self.balances.push(change);
    }

    pub(crate) fn level(&mut self, change: LevelChange) {
        self.seq.push((Kind::Level, self.levels.len() as u32));
        self.levels.push(change);
    }

    /// The order of the last order event: what `order.put_limit`, `order.put_market` and
    /// `order.cancel` reply with.
    pub fn last_order(&self) -> Option<&Order> {
        self.orders.last().map(|(_, o)| o)
    }

    /// The kind of the last order event: whether the order it ended with rests (`Put`) or is
    /// finished.
    pub fn last_order_kind(&self) -> Option<OrderEventKind> {
        self.orders.last().map(|(k, _)| *k)
    }

    /// In the events of a new order (`order.put_limit`, `order.put_market`, and only those), the
    /// resting orders that self-trade prevention cancelled: every order event before the last
    /// (which is the new order's) that finishes an order with something left. A resting order
    /// that trades finishes with nothing left; one that keeps some is updated.
    pub fn self_trade_cancels(&self) -> impl Iterator<Item = &Order> + '_ {
        let before_last = self.orders.len().saturating_sub(1);
        self.orders[..before_last]
            .iter()
            .filter(|(kind, o)| *kind == OrderEventKind::Finish && o.left > 0)
            .map(|(_, o)| o)
    }

    /// Appends those of `other`'s events that `keep` takes after these, in their order.
    pub fn append_where(&mut self, other: &Events, keep: impl Fn(EventRef<'_>) -> bool) {
        for (&(kind, i), ev) in other.seq.iter().zip(other.iter()) {
            if !keep(ev) {
                continue;
            }
            let at = match kind {
                Kind::Order => self.orders.len(),
                Kind::Deal => self.deals.len(),
                Kind::Balance => self.balances.len(),
                Kind::Level => self.levels.len(),
            } as u32;
            self.seq.push((kind, at));
            match kind {
                Kind::Order => self.orders.push(other.orders[i as usize]),
                Kind::Deal => self.deals.push(other.deals[i as usize]),
                Kind::Balance => self.balances.push(other.balances[i as usize].clone()),
                Kind::Level => self.levels.push(other.levels[i as usize]),
            }
        }
    }

    /// The deals alone, in order.
    pub fn deals(&self) -> &[Deal] {
        &self.deals
    }

    /// Where the events recorded so far end: the start of the next command's events, for a
    /// buffer that gathers several commands' events ([`Events::between`]).
    pub fn mark(&self) -> Mark {
        Mark { seq: self.seq.len(), deals: self.deals.len() }
    }

    /// Every event held.
    pub fn view(&self) -> EventsView<'_> {
        self.between(Mark::default(), self.mark())
    }

    /// The events recorded between two marks: one command's, when the buffer gathers several.
    pub fn between(&self, from: Mark, to: Mark) -> EventsView<'_> {
        EventsView { events: self, from, to }
    }

    /// The events in the order they happened.
    pub fn iter(&self) -> impl Iterator<Item = EventRef<'_>> + '_ {
        self.view().iter()
    }

    /// Owned copies of the events, in order.
    pub fn to_vec(&self) -> Vec<Event> {
        self.iter().map(EventRef::to_owned).collect()
    }

    /// A digest of the events, in order: what the command did, as a number the journal keeps
    /// beside it, so that a replay (recovery, the snapshot worker's shadow) can prove it did the
    /// same. `scratch` is reused between calls.
    ///
    /// The digest is XXH3-64 of a canonical encoding (every field, little-endian, in declaration
    /// order; a tag byte per event; text as its length then its bytes), independent of Rust's
    /// layout and `Hash`: journals outlive builds. Changing the encoding changes the journal
    /// format version.
    pub fn digest(&self, scratch: &mut Vec<u8>) -> u64 {
        scratch.clear();
        self.encode_canonical(scratch);
        digest_of(scratch)
    }

    /// Appends the canonical encoding that [`Events::digest`] hashes to `out`, so that the hash
    /// can be taken elsewhere ([`digest_of`]).
    pub fn encode_canonical(&self, out: &mut Vec<u8>) {
        self.view().encode_canonical(out);
    }
}

/// A place in an [`Events`] buffer: how many events, and how many deals, precede it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Mark {
    seq: usize,
    deals: usize,
}

/// The events between two [`Mark`]s of one buffer, in order: one command's events where a
/// buffer gathers a batch of commands' (recovery hands its verifier whole batches).
#[derive(Debug, Clone, Copy)]
pub struct EventsView<'a> {
    events: &'a Events,
    from: Mark,
    to: Mark,
}

impl<'a> EventsView<'a> {
    pub fn len(self) -> usize {
        self.to.seq - self.from.seq
    }

    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    /// The deals alone, in order.
    pub fn deals(self) -> &'a [Deal] {
        &self.events.deals[self.from.deals..self.to.deals]
    }

    /// The events in the order they happened.
    pub fn iter(self) -> impl Iterator<Item = EventRef<'a>> + 'a {
        let e = self.events;
        e.seq[self.from.seq..self.to.seq].iter().map(move |&(kind, i)| {
            let i = i as usize;
            match kind {
                Kind::Order => EventRef::Order(e.orders[i].0, &e.orders[i].1),
                Kind::Deal => EventRef::Deal(&e.deals[i]),
                Kind::Balance => EventRef::Balance(&e.balances[i]),
                Kind::Level => EventRef::Level(&e.levels[i]),
            }
        })
    }

    /// Appends the canonical encoding of these events ([`Events::digest`]) to `out`.
    pub fn encode_canonical(self, out: &mut Vec<u8>) {
        for e in self.iter() {
            match e {
                EventRef::Order(kind, o) => put_order(out, kind, o),
                EventRef::Deal(d) => put_deal(out, d),
                EventRef::Balance(b) => put_balance(out, b),
                EventRef::Level(l) => fixed!(out, 36; 4u8, l.market, l.side as u8, l.price, l.amount),
            }
        }
    }
}

/// The digest of a canonical encoding ([`Events::encode_canonical`]): `Events::digest` is
/// `digest_of` its encoding.
pub fn digest_of(canonical: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(canonical)
}

fn put_order(out: &mut Vec<u8>, kind: OrderEventKind, o: &Order) {
    fixed!(out, 146;
        1u8, kind as u8, o.id, o.market, o.side as u8, o.kind as u8, o.user, o.ctime_us, o.mtime_us,
        o.price, o.amount, o.left, o.taker_fee, o.maker_fee, o.deal_stock, o.deal_money, o.deal_fee,
        o.client_id,
    );
    put_text(out, o.source.as_str());
}

fn put_deal(out: &mut Vec<u8>, d: &Deal) {
    fixed!(out, 132;
        2u8, d.id, d.time_us, d.market, d.ask_order_id, d.bid_order_id, d.ask_user, d.bid_user,
        d.price, d.amount, d.deal, d.ask_fee, d.bid_fee, d.taker_side as u8, d.ask_fee_rate,
        d.bid_fee_rate,
    );
}

fn put_balance(out: &mut Vec<u8>, b: &BalanceChange) {
    fixed!(out, 48; 3u8, b.time_us, b.user, b.asset, b.change_scale, b.change, b.balance);
    match &b.business {
        Business::Trade { deal_id, order_id, fee } => fixed!(out, 18; 1u8, *deal_id, *order_id, u8::from(*fee)),
        Business::Update(u) => {
            out.push(2);
            put_text(out, &u.business);
            out.extend_from_slice(&u.business_id.to_le_bytes());
            put_text(out, &u.detail);
        }
    }
}

fn put_text(out: &mut Vec<u8>, text: &str) {
    out.extend_from_slice(&(text.len() as u32).to_le_bytes());
    out.extend_from_slice(text.as_bytes());
}

#[cfg(test)]
mod release_tests {
    use super::*;

    /// A buffer that grew past `EVENTS_KEPT_MAX` gives the room back when cleared; one below it
    /// keeps its room (no reallocation per command).
    #[test]
    fn a_cleared_buffer_does_not_keep_a_spike() {
        let mut e = Events::with_capacity(1024);
        for _ in 0..10 {
            e.level(LevelChange { market: 0, side: crate::order::Side::Ask, price: 1, amount: 1 });
        }
        e.clear();
        assert_eq!(e.seq.capacity(), 1024);
        for _ in 0..3 * EVENTS_KEPT_MAX {
            e.level(LevelChange { market: 0, side: crate::order::Side::Ask, price: 1, amount: 1 });
        }
        assert!(e.seq.capacity() >= 3 * EVENTS_KEPT_MAX);
        e.clear();
        assert!(e.seq.capacity() <= EVENTS_KEPT_MAX && e.levels.capacity() <= EVENTS_KEPT_MAX / 4);
    }
}
