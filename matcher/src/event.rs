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

    pub fn clear(&mut self) {
        self.seq.clear();
        self.orders.clear();
        self.deals.clear();
        self.balances.clear();
        self.levels.clear();
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

    /// Appends `other`'s events after these, in their order.
    pub fn append(&mut self, other: &Events) {
        for &(kind, i) in &other.seq {
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

    /// The events in the order they happened.
    pub fn iter(&self) -> impl Iterator<Item = EventRef<'_>> + '_ {
        self.seq.iter().map(move |&(kind, i)| {
            let i = i as usize;
            match kind {
                Kind::Order => EventRef::Order(self.orders[i].0, &self.orders[i].1),
                Kind::Deal => EventRef::Deal(&self.deals[i]),
                Kind::Balance => EventRef::Balance(&self.balances[i]),
                Kind::Level => EventRef::Level(&self.levels[i]),
            }
        })
    }

    /// Owned copies of the events, in order.
    pub fn to_vec(&self) -> Vec<Event> {
        self.iter().map(EventRef::to_owned).collect()
    }
}
