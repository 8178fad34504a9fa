//! The state machine: `apply(time, command) -> reply + events`. Matching follows SPEC B5.4–B5.6
//! exactly; every check happens before the first change, so an error changes nothing.
//!
//! Why one file of ~750 lines (and its tests): `apply` and its handler per command are one state
//! machine over the same fields (books, ledger, windows); the books, ledger, orders and replies
//! are files of their own.

use crate::book::Book;
use crate::command::{Amend, Command, PutLimit, PutMarket, SelfTrade, TimeInForce};
use crate::config::{AssetId, Market, MarketId, Spec, SUPPLY_MAX};
use crate::decimal::{pow10, rescale_trunc, rescale_up};
use crate::error::RpcError;
use crate::event::{BalanceChange, Business, Deal, Events, LevelChange, OrderEventKind, Update};
use crate::ledger::{Account, Balance, Ledger};
use crate::order::{Order, OrderKind, Side, Source};
use crate::reply::{AssetSummary, Ended, MarketSummary, Reply};
use crate::window::{ClientIds, Window};

/// How long a `balance.update` (user, asset, business, business_id) is remembered: 24 h. (Client
/// order ids have windows of their own: [`IdWindow`](crate::command::IdWindow).)
pub const DEDUPE_WINDOW_US: u64 = 86_400 * 1_000_000;
/// Most `balance.update` keys remembered at once by default; past it (within 24 h) updates answer
/// error 3, since applying a deposit twice loses money. [`Matcher::set_dedupe_entries_max`]
/// changes it.
pub const DEDUPE_ENTRIES_MAX: usize = 4_000_000;

/// The most deals one order makes (a resting order of its own user that self-trade prevention
/// cancels counts as one). An order that would make more makes this many, and its rest is
/// cancelled: a limit order's rest does not go on the book (it would rest crossing it), a
/// market order's is cancelled as when the book runs out. So one command's work, events, history
/// rows and execution reports stay bounded: a market order that swept 494,555 resting orders held
/// the pipeline for seconds, was answered 504, and took 6 GB of memory. Venues cap one order's
/// fills likewise.
pub const DEALS_PER_ORDER_MAX: u32 = 10_000;

/// The most orders one `order.cancel_all` (or cancel of ended sessions' orders) cancels: one
/// command's work, events and history rows stay bounded, as [`DEALS_PER_ORDER_MAX`] bounds an
/// order's. A reply counting this many means more may remain: the caller sends it again (the
/// binary edge does so for the sessions it cancels as they end).
pub const CANCELS_PER_COMMAND_MAX: u64 = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub(crate) struct DedupeKey {
    pub user: u32,
    pub asset: AssetId,
    pub business: String,
    pub business_id: u64,
}

/// A user's client order id.
pub(crate) type ClientKey = (u32, u64);

/// The whole matcher state.
#[derive(Clone)]
pub struct Matcher {
    pub(crate) spec: Spec,
    pub(crate) ledger: Ledger,
    pub(crate) books: Vec<Book>,
    pub(crate) order_id: u64,
    pub(crate) deal_id: u64,
    pub(crate) dedupe: Window<DedupeKey>,
    /// Each user's client order ids and the orders they name.
    pub(crate) client_ids: ClientIds,
}

type Res = Result<Reply, RpcError>;

impl Matcher {
    pub fn new(spec: Spec) -> Matcher {
        Matcher::with_capacity(spec, 0, 0)
    }

    /// A matcher whose pools are sized for `users` accounts and `orders` resting orders per market.
    pub fn with_capacity(spec: Spec, users: usize, orders: usize) -> Matcher {
        let books = spec.markets.iter().map(|_| Book::with_capacity(orders)).collect();
        let ledger = Ledger::new(&spec, users);
        Matcher {
            spec,
            ledger,
            books,
            order_id: 0,
            deal_id: 0,
            dedupe: Window::default(),
            client_ids: ClientIds::default(),
        }
    }

    /// Sets how many `balance.update` keys are remembered at most (a limit, not state: it is not
    /// in snapshots).
    pub fn set_dedupe_entries_max(&mut self, entries_max: usize) {
        self.dedupe.entries_max = entries_max;
    }

    pub fn spec(&self) -> &Spec {
        &self.spec
    }

    pub fn balance(&self, user: u32, asset: AssetId) -> Balance {
        self.ledger.get(user, asset)
    }

    /// Fees collected in `asset`, at its `prec_save`.
    pub fn fees(&self, asset: AssetId) -> i128 {
        self.ledger.fees[asset as usize]
    }

    pub fn last_order_id(&self) -> u64 {
        self.order_id
    }

    pub fn last_deal_id(&self) -> u64 {
        self.deal_id
    }

    pub fn book(&self, market: MarketId) -> &Book {
        &self.books[market as usize]
    }

    /// Applies one command at `time_us` (microseconds since the epoch). Events are appended to
    /// `events` in the order downstream must see them. On `Err` the state is unchanged.
    pub fn apply(&mut self, time_us: u64, cmd: &Command, events: &mut Events) -> Res {
        match cmd {
            Command::BalanceQuery { user, assets } => Ok(self.balance_query(*user, assets)),
            Command::BalanceUpdate { user, asset, business, business_id, change, detail } => {
                let key =
                    DedupeKey { user: *user, asset: *asset, business: business.clone(), business_id: *business_id };
                self.balance_update(time_us, key, *change, detail, events)
            }
            Command::AssetList => Ok(Reply::AssetList),
            Command::AssetSummary { assets } => Ok(self.asset_summary(assets)),
            Command::PutLimit(c) => self.put_limit(time_us, c, events),
            Command::PutMarket(c) => self.put_market(time_us, c, events),
            Command::Cancel { user, market, order_id } => self.cancel(*user, *market, *order_id, events),
            Command::CancelByClientId { user, market, client_id } => {
                let order_id = self.client_ids.live(*user, *client_id, time_us).ok_or(RpcError::OrderNotFound)?;
                self.cancel(*user, *market, order_id, events)
            }
            Command::CancelAll { user, market, side, session } => {
                Ok(self.cancel_all(*user, *market, *side, *session, events))
            }
            Command::Amend(a) => self.amend(time_us, a, events),
            Command::CancelEndedSessions { before } => self.cancel_ended_sessions(*before, events),
            Command::OrderBook { market, side, offset, limit } => Ok(self.order_book(*market, *side, *offset, *limit)),
            Command::OrderDepth { market, limit, interval } => Ok(self.order_depth(*market, *limit, *interval)),
            Command::OrderPending { user, market, offset, limit } => {
                let (total, orders) = self.books[*market as usize].user_orders(*user);
                let records = orders
                    .skip(usize::try_from(*offset).unwrap_or(usize::MAX))
                    .take(*limit as usize)
                    .copied()
                    .collect();
                Ok(Reply::Pending { offset: *offset, limit: *limit, total, records })
            }
            Command::OrderPendingDetail { market, order_id } => {
                Ok(Reply::MaybeOrder(self.books[*market as usize].get(*order_id).map(|o| Box::new(*o))))
            }
            Command::OrderStatus { user, market, order_id, client_id } => {
                let order_id = match *order_id {
                    0 => self.client_ids.live(*user, *client_id, time_us).ok_or(RpcError::OrderNotFound)?,
                    id if id > self.order_id => return Err(RpcError::OrderNotFound),
                    id => id,
                };
                let open = self.books[*market as usize].get(order_id).filter(|o| o.user == *user).map(|o| Box::new(*o));
                Ok(Reply::Status { order_id, open })
            }
            Command::MarketList => Ok(Reply::MarketList),
            Command::MarketSummary { markets } => Ok(self.market_summary(markets)),
        }
    }

    fn balance_query(&self, user: u32, assets: &[AssetId]) -> Reply {
        let all: Vec<AssetId> = (0..self.spec.assets.len() as AssetId).collect();
        let list = if assets.is_empty() { &all[..] } else { assets };
        let mut rows: Vec<(AssetId, i128, i128)> = Vec::with_capacity(list.len());
        for &a in list {
            if rows.iter().any(|r| r.0 == a) {
                continue;
            }
            let asset = self.spec.asset(a);
            let b = self.ledger.get(user, a);
            let show = |m| rescale_trunc(m, asset.prec_save, asset.prec_show);
            rows.push((a, show(b.available), show(b.freeze)));
        }
        Reply::Balances(rows)
    }

    fn balance_update(&mut self, now: u64, key: DedupeKey, change: i128, detail: &str, events: &mut Events) -> Res {
        if self.dedupe.live(&key, now).is_some() {
            return Err(RpcError::RepeatUpdate);
        }
        let asset = key.asset;
        if change < 0 && self.ledger.get(key.user, asset).available < -change {
            return Err(RpcError::UpdateBalanceNotEnough);
        }
        if self.ledger.supply[asset as usize] + change > SUPPLY_MAX {
            return Err(RpcError::InvalidArgument);
        }
        if self.dedupe.full(now) {
            return Err(RpcError::ServiceUnavailable);
        }
        let balance = self.ledger.deposit(key.user, asset, change);
        events.balance(BalanceChange {
            time_us: now,
            user: key.user,
            asset,
            change_scale: self.spec.asset(asset).prec_save as u8,
            change,
            balance,
            business: Business::Update(Box::new(Update {
                business: key.business.clone(),
                business_id: key.business_id,
                detail: detail.to_string(),
            })),
        });
        self.dedupe.insert(key, 0, now);
        Ok(Reply::Success)
    }

    fn asset_summary(&self, assets: &[AssetId]) -> Reply {
        let list: Vec<AssetId> =
            if assets.is_empty() { (0..self.spec.assets.len() as AssetId).collect() } else { assets.to_vec() };
        let mut rows: Vec<AssetSummary> =
            list.iter().map(|&asset| AssetSummary { asset, ..Default::default() }).collect();
        for (_, balances) in self.ledger.users() {
            for row in rows.iter_mut() {
                let b = balances[row.asset as usize];
                if b.available != 0 {
                    row.available_count += 1;
                    row.available += b.available;
                }
                if b.freeze != 0 {
                    row.freeze_count += 1;
                    row.freeze += b.freeze;
                }
            }
        }
        Reply::AssetSummary(rows)
    }

    fn market_summary(&self, markets: &[MarketId]) -> Reply {
        let list: Vec<MarketId> =
            if markets.is_empty() { (0..self.spec.markets.len() as MarketId).collect() } else { markets.to_vec() };
        let rows = list
            .iter()
            .map(|&market| {
                let book = &self.books[market as usize];
                let (ask_count, ask_amount) = book.side_totals(Side::Ask);
                let (bid_count, bid_amount) = book.side_totals(Side::Bid);
                MarketSummary { market, ask_count, ask_amount, bid_count, bid_amount }
            })
            .collect();
        Reply::MarketSummary(rows)
    }

    fn order_book(&self, market: MarketId, side: Side, offset: u64, limit: u32) -> Reply {
        let book = &self.books[market as usize];
        let total = book.side_totals(side).0;
        let skip = usize::try_from(offset).unwrap_or(usize::MAX);
        let orders = book.side_orders(side).skip(skip).take(limit as usize).copied().collect();
        Reply::Book { offset, limit, total, orders }
    }

    fn order_depth(&self, market: MarketId, limit: u32, interval: i128) -> Reply {
        let book = &self.books[market as usize];
        let merge = |side: Side| -> Vec<(i128, i128)> {
            let mut out: Vec<(i128, i128)> = Vec::new();
            for (price, amount) in book.side_levels(side) {
                let bucket = match (interval, side) {
                    (0, _) => price,
                    // Prices and `interval` are parsed mantissas, each below 10^33.
                    (i, Side::Ask) => (price + i - 1) / i * i,
                    (i, Side::Bid) => price / i * i,
                };
                let full = out.len() == limit as usize;
                match out.last_mut() {
                    Some(last) if last.0 == bucket => last.1 += amount,
                    _ if full => break,
                    _ => out.push((bucket, amount)),
                }
            }
            out
        };
        Reply::Depth { market, asks: merge(Side::Ask), bids: merge(Side::Bid) }
    }

    fn put_limit(&mut self, now: u64, c: &PutLimit, events: &mut Events) -> Res {
        // First, so that a resend is told it is one even when the original took the balance.
        check_client_id(&self.client_ids, c.user, c.client_id, now)?;
        let (spec, ledger) = (&self.spec, &mut self.ledger);
        let mk = spec.market(c.market);
        let (asset, need, scale) = match c.side {
            Side::Ask => (mk.stock, Some(c.amount), mk.stock_prec),
            Side::Bid => (mk.money, c.price.checked_mul(c.amount), mk.money_scale()),
        };
        let account = check_available(spec, ledger, c.user, asset, need, scale)?;
        if c.amount < mk.min_amount {
            return Err(RpcError::AmountTooSmall);
        }
        let options = c.options;
        let book = &self.books[c.market as usize];
        if options.post_only && book.best(c.side.opposite()).is_some_and(|best| crosses(c.side, c.price, best.price)) {
            return Err(RpcError::WouldTake);
        }
        if options.time_in_force == TimeInForce::Fok && !fills_at_once(book, c, options.self_trade) {
            return Err(RpcError::CannotFill);
        }
        self.order_id += 1;
        let mut taker = new_order(
            self.order_id,
            c.market,
            c.side,
            OrderKind::Limit,
            c.user,
            now,
            c.price,
            c.amount,
            c.taker_fee,
            c.maker_fee,
            c.source,
            c.client_id,
            c.session,
        );
        if c.client_id != 0 {
            self.client_ids.insert(c.user, c.client_id, self.order_id, now, c.id_window);
        }
        let book = &mut self.books[c.market as usize];
        let stop = Trades {
            spec,
            mk,
            book: &mut *book,
            ledger: &mut *ledger,
            deal_id: &mut self.deal_id,
            now,
            events: &mut *events,
        }
        .run(&mut taker, true, options.self_trade);
        let ended = match stop {
            _ if taker.left == 0 => None,
            Stop::Capped => Some(Ended::DealCap),
            Stop::SelfTrade => Some(Ended::SelfTrade),
            Stop::Done if options.time_in_force != TimeInForce::Gtc => Some(Ended::ImmediateOrCancel),
            Stop::Done => None,
        };
        if taker.left == 0 || ended.is_some() {
            events.order(OrderEventKind::Finish, taker);
            return Ok(Reply::Order(ended));
        }
        let asset = match taker.side {
            Side::Ask => mk.stock,
            Side::Bid => mk.money,
        };
        ledger.freeze(account, asset, spec.asset(asset).prec_save, taker.frozen(), taker.freeze_scale(mk));
        let level = book.insert(taker);
        events.order(OrderEventKind::Put, taker);
        events.level(LevelChange { market: c.market, side: taker.side, price: taker.price, amount: level });
        Ok(Reply::Order(None))
    }

    fn put_market(&mut self, now: u64, c: &PutMarket, events: &mut Events) -> Res {
        check_client_id(&self.client_ids, c.user, c.client_id, now)?;
        let (spec, ledger) = (&self.spec, &mut self.ledger);
        let mk = spec.market(c.market);
        let book = &mut self.books[c.market as usize];
        let kind = if c.side == Side::Bid && c.stock_amount { OrderKind::MarketStock } else { OrderKind::Market };
        let amount = if kind == OrderKind::MarketStock {
            // What it costs is known only as it trades; it buys what its money pays for, so its
            // money must pay for the minimum amount at the best price.
            let best = book.best(Side::Ask).ok_or(RpcError::NoEnoughTrader)?;
            if c.amount < mk.min_amount {
                return Err(RpcError::AmountTooSmall);
            }
            check_available(spec, ledger, c.user, mk.money, best.price.checked_mul(mk.min_amount), mk.money_scale())?;
            c.amount
        } else {
            let asset = match c.side {
                Side::Ask => mk.stock,
                Side::Bid => mk.money,
            };
            check_available(spec, ledger, c.user, asset, Some(c.amount), mk.stock_prec)?;
            let best = book.best(c.side.opposite()).ok_or(RpcError::NoEnoughTrader)?;
            // A bid's amount is money at `stock_prec`; the matcher keeps it at the money scale
            // (`stock_prec + money_prec`). Both products are checked: the minimum is price ×
            // min_amount, which a price or a configured minimum can make too large to represent
            // (then no amount reaches it).
            let amount = match c.side {
                Side::Ask => Some(c.amount),
                Side::Bid => c.amount.checked_mul(pow10(mk.money_prec)),
            };
            let minimum = match c.side {
                Side::Ask => Some(mk.min_amount),
                Side::Bid => best.price.checked_mul(mk.min_amount),
            };
            match (amount, minimum) {
                (Some(amount), Some(minimum)) if amount >= minimum => amount,
                _ => return Err(RpcError::AmountTooSmall),
            }
        };
        self.order_id += 1;
        let mut taker = new_order(
            self.order_id,
            c.market,
            c.side,
            kind,
            c.user,
            now,
            0,
            amount,
            c.taker_fee,
            0,
            c.source,
            c.client_id,
            c.session,
        );
        if c.client_id != 0 {
            self.client_ids.insert(c.user, c.client_id, self.order_id, now, c.id_window);
        }
        // A market order's rest is cancelled whether the book ran out or it reached the cap.
        let stop = Trades { spec, mk, book, ledger, deal_id: &mut self.deal_id, now, events: &mut *events }.run(
            &mut taker,
            false,
            c.self_trade,
        );
        events.order(OrderEventKind::Finish, taker);
        let ended = match stop {
            _ if taker.left == 0 => None,
            Stop::SelfTrade => Some(Ended::SelfTrade),
            Stop::Capped | Stop::Done => Some(Ended::MarketRest),
        };
        Ok(Reply::Order(ended))
    }

    fn cancel(&mut self, user: u32, market: MarketId, order_id: u64, events: &mut Events) -> Res {
        let (order, level) = match self.books[market as usize].remove_owned(order_id, user) {
            Ok(found) => found,
            Err(None) => return Err(RpcError::OrderNotFound),
            Err(Some(_)) => return Err(RpcError::UserNotMatch),
        };
        let mk = self.spec.market(market);
        release(&self.spec, &mut self.ledger, mk, &order);
        events.level(LevelChange { market, side: order.side, price: order.price, amount: level });
        events.order(OrderEventKind::Finish, order);
        Ok(Reply::Order(Some(Ended::Requested)))
    }

    /// Cancels `user`'s open orders of `market` (or every market), of `side` (or both), of
    /// `session` (or any), oldest first in each market, each as [`Matcher::cancel`] does; the
    /// count.
    fn cancel_all(
        &mut self,
        user: u32,
        market: Option<MarketId>,
        side: Option<Side>,
        session: Option<u64>,
        events: &mut Events,
    ) -> Reply {
        let markets = match market {
            Some(m) => m..m + 1,
            None => 0..self.books.len() as MarketId,
        };
        let mut count = 0u64;
        let mut ids = Vec::new();
        for market in markets {
            ids.clear();
            let (_, orders) = self.books[market as usize].user_orders(user);
            let chosen = |o: &&Order| side.is_none_or(|s| o.side == s) && session.is_none_or(|s| o.session == s);
            ids.extend(orders.filter(chosen).map(|o| o.id));
            // The user's list runs newest first.
            for &id in ids.iter().rev() {
                if count == CANCELS_PER_COMMAND_MAX {
                    return Reply::Cancelled { count };
                }
                let (order, level) =
                    self.books[market as usize].remove_owned(id, user).expect("a listed order of the user rests");
                release(&self.spec, &mut self.ledger, self.spec.market(market), &order);
                events.level(LevelChange { market, side: order.side, price: order.price, amount: level });
                events.order(OrderEventKind::Finish, order);
                count += 1;
            }
        }
        Reply::Cancelled { count }
    }

    /// Cancels, in every market, the resting orders whose session tag is set and below `before`,
    /// in id order. "Order not found" when there is none, so that a start with nothing to cancel
    /// journals nothing.
    fn cancel_ended_sessions(&mut self, before: u64, events: &mut Events) -> Res {
        let ended: Vec<Vec<(u64, u32)>> = self
            .books
            .iter()
            .map(|book| {
                // Filtered in slot order, then the few sorted: a scan, not a sort of the book.
                let mut ended: Vec<(u64, u32)> = (book.orders_with_ids())
                    .filter(|(_, o)| o.session != 0 && o.session < before)
                    .map(|(id, o)| (id, o.user))
                    .collect();
                ended.sort_unstable();
                ended
            })
            .collect();
        if ended.iter().all(Vec::is_empty) {
            return Err(RpcError::OrderNotFound);
        }
        let mut count = 0u64;
        for (market, ended) in ended.into_iter().enumerate() {
            for (id, user) in ended {
                if count == CANCELS_PER_COMMAND_MAX {
                    return Ok(Reply::Cancelled { count });
                }
                let (order, level) = self.books[market].remove_owned(id, user).expect("a listed order rests");
                release(&self.spec, &mut self.ledger, self.spec.market(market as MarketId), &order);
                events.level(LevelChange {
                    market: market as MarketId,
                    side: order.side,
                    price: order.price,
                    amount: level,
                });
                events.order(OrderEventKind::Finish, order);
                count += 1;
            }
        }
        Ok(Reply::Cancelled { count })
    }

    /// `order.amend` ([`Amend`]). Every check comes first: the order and its owner, the new
    /// price (it must not cross the book), the new `left` (at least the market's minimum when it
    /// changes), and the balance (what the order has frozen plus what is available must cover
    /// what the amended order freezes).
    fn amend(&mut self, now: u64, a: &Amend, events: &mut Events) -> Res {
        let (spec, ledger) = (&self.spec, &mut self.ledger);
        let mk = spec.market(a.market);
        let book = &mut self.books[a.market as usize];
        let old = *book.get(a.order_id).ok_or(RpcError::OrderNotFound)?;
        if old.user != a.user {
            return Err(RpcError::UserNotMatch);
        }
        let (price, left) = (a.price.unwrap_or(old.price), a.left.unwrap_or(old.left));
        if left != old.left && left < mk.min_amount {
            return Err(RpcError::AmountTooSmall);
        }
        if price != old.price && book.best(old.side.opposite()).is_some_and(|best| crosses(old.side, price, best.price))
        {
            return Err(RpcError::WouldTake);
        }
        let asset = match old.side {
            Side::Ask => mk.stock,
            Side::Bid => mk.money,
        };
        let prec = spec.asset(asset).prec_save;
        let scale = old.freeze_scale(mk);
        let new_frozen = match old.side {
            Side::Ask => Some(left),
            Side::Bid => price.checked_mul(left),
        };
        // `freeze` rescales exactly (prec_save is at least the freeze scale).
        let need = new_frozen.and_then(|n| n.checked_mul(pow10(prec - scale))).ok_or(RpcError::BalanceNotEnough)?;
        let account = ledger.account(a.user);
        let have = ledger.balance(account, asset).available + old.frozen() * pow10(prec - scale);
        if need > have {
            return Err(RpcError::BalanceNotEnough);
        }
        if price == old.price && left <= old.left {
            if left == old.left {
                return Ok(Reply::MaybeOrder(Some(Box::new(old)))); // nothing to change
            }
            let (order, level) = book.shrink(old.id, left, now).expect("the order rests");
            ledger.freeze(account, asset, prec, order.frozen() - old.frozen(), scale);
            events.order(OrderEventKind::Update, order);
            events.level(LevelChange { market: a.market, side: order.side, price, amount: level });
            return Ok(Reply::Order(None));
        }
        let (gone, level) = book.remove_owned(old.id, a.user).expect("the order rests");
        release(spec, ledger, mk, &gone);
        events.level(LevelChange { market: a.market, side: gone.side, price: gone.price, amount: level });
        events.order(OrderEventKind::Finish, gone);
        self.order_id += 1;
        let order = new_order(
            self.order_id,
            a.market,
            old.side,
            OrderKind::Limit,
            a.user,
            now,
            price,
            left,
            old.taker_fee,
            old.maker_fee,
            old.source,
            old.client_id,
            old.session,
        );
        ledger.freeze(account, asset, prec, order.frozen(), scale);
        let level = book.insert(order);
        if old.client_id != 0 {
            self.client_ids.rename(a.user, old.client_id, old.id, order.id, now);
        }
        events.order(OrderEventKind::Put, order);
        events.level(LevelChange { market: a.market, side: order.side, price, amount: level });
        Ok(Reply::Order(None))
    }
}

/// Whether an order on `side` at `price` trades with a resting order at `resting`.
fn crosses(side: Side, price: i128, resting: i128) -> bool {
    match side {
        Side::Ask => price <= resting,
        Side::Bid => price >= resting,
    }
}

/// Whether limit order `c` would trade its whole amount on arrival: the walk [`Trades::run`]
/// makes, without trading (the same priority order, deal cap and self-trade rule).
fn fills_at_once(book: &Book, c: &PutLimit, self_trade: SelfTrade) -> bool {
    let (mut left, mut work) = (c.amount, 0u32);
    for maker in book.side_orders(c.side.opposite()) {
        if left == 0 || !crosses(c.side, c.price, maker.price) || work == DEALS_PER_ORDER_MAX {
            break;
        }
        work += 1;
        if maker.user == c.user {
            match self_trade {
                SelfTrade::Allow => {}
                SelfTrade::CancelMaker => continue,
                SelfTrade::CancelTaker | SelfTrade::CancelBoth => break,
            }
        }
        left -= left.min(maker.left);
    }
    left == 0
}

/// Refuses with "balance not enough" unless `user`'s available `asset` covers `need` (positive) at
/// `scale` (`None`: a product too large to represent, which no balance covers); returns the
/// user's account.
fn check_available(
    spec: &Spec,
    ledger: &Ledger,
    user: u32,
    asset: AssetId,
    need: Option<i128>,
    scale: u32,
) -> Result<Account, RpcError> {
    let prec = spec.asset(asset).prec_save;
    let need = need.and_then(|n| rescale_up(n, scale, prec)).ok_or(RpcError::BalanceNotEnough)?;
    match ledger.find(user) {
        Some(account) if ledger.balance(account, asset).available >= need => Ok(account),
        _ => Err(RpcError::BalanceNotEnough),
    }
}

/// Refuses a client order id that names a live order of its user.
fn check_client_id(ids: &ClientIds, user: u32, client_id: u64, now: u64) -> Result<(), RpcError> {
    if client_id == 0 {
        return Ok(());
    }
    match ids.live(user, client_id, now) {
        Some(order_id) => Err(RpcError::DuplicateClientId { order_id }),
        None => Ok(()),
    }
}

/// Releases whatever a leaving order still has frozen.
fn release(spec: &Spec, ledger: &mut Ledger, mk: &Market, order: &Order) {
    let frozen = order.frozen();
    if frozen == 0 {
        return;
    }
    let asset = match order.side {
        Side::Ask => mk.stock,
        Side::Bid => mk.money,
    };
    let account = ledger.account(order.user);
    ledger.freeze(account, asset, spec.asset(asset).prec_save, -frozen, order.freeze_scale(mk));
}

#[allow(clippy::too_many_arguments)]
fn new_order(
    id: u64,
    market: MarketId,
    side: Side,
    kind: OrderKind,
    user: u32,
    now: u64,
    price: i128,
    amount: i128,
    taker_fee: u32,
    maker_fee: u32,
    source: Source,
    client_id: u64,
    session: u64,
) -> Order {
    Order {
        id,
        market,
        side,
        kind,
        user,
        ctime_us: now,
        mtime_us: now,
        price,
        amount,
        left: amount,
        taker_fee,
        maker_fee,
        deal_stock: 0,
        deal_money: 0,
        deal_fee: 0,
        source,
        client_id,
        session,
    }
}

/// Why [`Trades::run`] stopped.
enum Stop {
    /// Filled, or nothing more it can trade with.
    Done,
    /// At [`DEALS_PER_ORDER_MAX`], with something left that could still trade.
    Capped,
    /// Self-trade prevention cancelled the taker's rest.
    SelfTrade,
}

/// Matching of one taker against one market's book.
struct Trades<'a> {
    spec: &'a Spec,
    mk: &'a Market,
    book: &'a mut Book,
    ledger: &'a mut Ledger,
    deal_id: &'a mut u64,
    now: u64,
    events: &'a mut Events,
}

impl Trades<'_> {
    /// Trades `taker` against the opposite side in priority order. A limit taker stops where
    /// prices no longer cross; a market taker takes any price. A resting order of the taker's own
    /// user is traded with, or cancelled, as `self_trade` says.
    fn run(&mut self, taker: &mut Order, limit: bool, self_trade: SelfTrade) -> Stop {
        let money_bid = taker.spends_money();
        // A bid by stock amount buys what its available money pays for: its account, looked up once.
        let stock_bid = (taker.kind == OrderKind::MarketStock)
            .then(|| self.ledger.find(taker.user).expect("its money was checked"));
        let money_prec = self.spec.asset(self.mk.money).prec_save;
        let mut work = 0;
        while taker.left > 0 {
            let Some(maker) = self.book.best(taker.side.opposite()) else { break };
            if limit && !crosses(taker.side, taker.price, maker.price) {
                break;
            }
            let amount = if money_bid {
                (taker.left / maker.price).min(maker.left)
            } else if let Some(account) = stock_bid {
                let available = self.ledger.balance(account, self.mk.money).available;
                let money = rescale_trunc(available, money_prec, self.mk.money_scale());
                (money / maker.price).min(taker.left).min(maker.left)
            } else {
                taker.left.min(maker.left)
            };
            if amount == 0 {
                break;
            }
            if work == DEALS_PER_ORDER_MAX {
                return Stop::Capped;
            }
            let maker = *maker;
            work += 1;
            if maker.user == taker.user {
                match self_trade {
                    SelfTrade::Allow => {}
                    SelfTrade::CancelTaker => return Stop::SelfTrade,
                    SelfTrade::CancelMaker => {
                        self.cancel_maker(maker);
                        continue;
                    }
                    SelfTrade::CancelBoth => {
                        self.cancel_maker(maker);
                        return Stop::SelfTrade;
                    }
                }
            }
            self.trade(taker, maker, amount);
        }
        Stop::Done
    }

    /// Cancels `maker`, the head of the best opposite level, for self-trade prevention, as a
    /// cancel by its user would.
    fn cancel_maker(&mut self, maker: Order) {
        let (order, level) = self.book.remove_owned(maker.id, maker.user).expect("the maker rests");
        release(self.spec, self.ledger, self.mk, &order);
        self.events.level(LevelChange { market: order.market, side: order.side, price: order.price, amount: level });
        self.events.order(OrderEventKind::Finish, order);
    }

    /// One trade of `amount` between `taker` and `maker`, the head of the best opposite level,
    /// at the maker's price.
    ///
    /// The products cannot overflow: prices and amounts are at most `ORDER_MANTISSA_MAX`
    /// (2^63, `command::positive`), so `deal` < 2^126 and the bid's money (`deal`) was covered by
    /// a balance: a limit bid's `price × amount` was checked against it at entry (`put_limit`),
    /// a market bid of type 2 trades at most `left / price`, one of type 3 at most what its
    /// available money pays for. A balance is below `SUPPLY_MAX` (10^32) at its
    /// asset's `prec_save`, which is at least the deal's scale (`config`: stock.prec +
    /// money.prec ≤ prec_save), so `deal` < 10^32 and `deal × rate` < 10^38 < 2^127 for a rate
    /// below 10^fee_prec ≤ 10^6 (`command::fee_rate`); `amount × rate` likewise.
    fn trade(&mut self, taker: &mut Order, mut maker: Order, amount: i128) {
        let mk = self.mk;
        let price = maker.price;
        let deal = price * amount;
        *self.deal_id += 1;
        let taker_fee_rate = taker.taker_fee;
        let fee_of = |side: Side, rate: u32| match side {
            Side::Ask => deal * i128::from(rate),
            Side::Bid => amount * i128::from(rate),
        };
        let taker_fee = fee_of(taker.side, taker_fee_rate);
        let maker_fee = fee_of(maker.side, maker.maker_fee);
        fill(taker, amount, deal, taker_fee, self.now);
        fill(&mut maker, amount, deal, maker_fee, self.now);
        let (ask, bid, ask_fee, bid_fee, ask_rate, bid_rate) = match taker.side {
            Side::Ask => (&*taker, &maker, taker_fee, maker_fee, taker_fee_rate, maker.maker_fee),
            Side::Bid => (&maker, &*taker, maker_fee, taker_fee, maker.maker_fee, taker_fee_rate),
        };
        self.events.deal(Deal {
            id: *self.deal_id,
            time_us: self.now,
            market: maker.market,
            ask_order_id: ask.id,
            bid_order_id: bid.id,
            ask_user: ask.user,
            bid_user: bid.user,
            price,
            amount,
            deal,
            ask_fee,
            bid_fee,
            taker_side: taker.side,
            ask_fee_rate: ask_rate,
            bid_fee_rate: bid_rate,
        });
        self.legs(taker, true, amount, deal, taker_fee);
        self.legs(&maker, false, amount, deal, maker_fee);
        let level = self.book.fill_best(maker.side, maker, amount);
        let kind = if maker.left == 0 {
            self.book.pop_best(maker.side);
            release(self.spec, self.ledger, mk, &maker);
            OrderEventKind::Finish
        } else {
            OrderEventKind::Update
        };
        self.events.order(kind, maker);
        self.events.level(LevelChange { market: maker.market, side: maker.side, price, amount: level });
    }

    /// The balance movements of one side of a trade: pay out (from available for the taker, from
    /// frozen for the maker), receive, then pay the fee out of what was received.
    fn legs(&mut self, o: &Order, taker: bool, amount: i128, deal: i128, fee: i128) {
        let mk = self.mk;
        let (out_asset, out, out_scale, in_asset, inc, in_scale) = match o.side {
            Side::Ask => (mk.stock, amount, mk.stock_prec, mk.money, deal, mk.money_scale()),
            Side::Bid => (mk.money, deal, mk.money_scale(), mk.stock, amount, mk.stock_prec),
        };
        let out_prec = self.spec.asset(out_asset).prec_save;
        let in_prec = self.spec.asset(in_asset).prec_save;
        let account = self.ledger.account(o.user);
        let total = if taker {
            self.ledger.sub(account, out_asset, out_prec, out, out_scale).1
        } else {
            self.ledger.sub_frozen(account, out_asset, out_prec, out, out_scale)
        };
        self.balance_event(o, out_asset, -out, out_scale, total, false);
        let total = self.ledger.add(account, in_asset, in_prec, inc, in_scale);
        self.balance_event(o, in_asset, inc, in_scale, total, false);
        if fee > 0 {
            let fee_scale = o.fee_scale(mk);
            let (removed, total) = self.ledger.sub(account, in_asset, in_prec, fee, fee_scale);
            self.ledger.fees[in_asset as usize] += removed;
            self.balance_event(o, in_asset, -fee, fee_scale, total, true);
        }
    }

    fn balance_event(&mut self, o: &Order, asset: AssetId, change: i128, change_scale: u32, balance: i128, fee: bool) {
        self.events.balance(BalanceChange {
            time_us: self.now,
            user: o.user,
            asset,
            change_scale: change_scale as u8,
            change,
            balance,
            business: Business::Trade { deal_id: *self.deal_id, order_id: o.id, fee },
        });
    }
}

fn fill(o: &mut Order, amount: i128, deal: i128, fee: i128, now: u64) {
    o.left -= if o.spends_money() { deal } else { amount };
    o.deal_stock += amount;
    o.deal_money += deal;
    o.deal_fee += fee;
    o.mtime_us = now;
}
