//! The binary order entry on the server's side (`edges/PROTOCOL.md` is its reference): the
//! commands its messages ask for, and the execution reports built from what a command caused; the
//! TCP edge ([`crate::tcp`]) runs the sessions. The messages themselves, and their encoding, are
//! `viaduct_client::wire` (shared with the clients), re-exported here.

pub use viaduct_client::wire::*;
use viaduct_matcher::command::{Amend, IdWindow, OrderOptions, PutLimit, PutMarket, SelfTrade, TimeInForce};
use viaduct_matcher::config::MarketId;
use viaduct_matcher::event::{Deal, EventRef, OrderEventKind};
use viaduct_matcher::order::{Order, Side, Source};
use viaduct_matcher::reply::Ended;
use viaduct_matcher::{Command, Events, Reply, RpcError, Spec};

/// The market a NUL-padded name names.
pub fn market_of(spec: &Spec, bytes: &[u8; MARKET_BYTES]) -> Option<MarketId> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(MARKET_BYTES);
    if bytes[end..].iter().any(|&b| b != 0) {
        return None;
    }
    spec.market_id(std::str::from_utf8(&bytes[..end]).ok()?)
}

/// What a session trades as: its user, fee rates per market (at each market's `fee_prec`),
/// `source` text, the self-trade prevention its orders have unless they say otherwise, and the
/// window of its client order ids.
#[derive(Debug, Clone)]
pub struct Trader {
    pub user: u32,
    pub taker_fee: Vec<u32>,
    pub maker_fee: Vec<u32>,
    pub source: Source,
    pub self_trade: SelfTrade,
    /// How long, and how many, of its user's client order ids the engine remembers.
    pub id_window: IdWindow,
}

/// A `self_trade` byte ([`LimitOptions`]) with the key's default for 0.
fn self_trade_of(byte: u8, default: SelfTrade) -> Result<SelfTrade, u16> {
    Ok(match byte {
        0 => default,
        1 => SelfTrade::Allow,
        2 => SelfTrade::CancelTaker,
        3 => SelfTrade::CancelMaker,
        4 => SelfTrade::CancelBoth,
        _ => return Err(reason::BAD_OPTION),
    })
}

/// NEW_LIMIT's option bytes as the matcher's options.
fn limit_options(o: LimitOptions, default: SelfTrade) -> Result<OrderOptions, u16> {
    let time_in_force = match o.time_in_force {
        0 => TimeInForce::Gtc,
        1 => TimeInForce::Ioc,
        2 => TimeInForce::Fok,
        _ => return Err(reason::BAD_OPTION),
    };
    if o.flags & !LimitOptions::POST_ONLY != 0 {
        return Err(reason::BAD_OPTION);
    }
    let options = OrderOptions {
        time_in_force,
        post_only: o.flags & LimitOptions::POST_ONLY != 0,
        self_trade: self_trade_of(o.self_trade, default)?,
    };
    if !options.consistent() {
        return Err(reason::BAD_OPTION);
    }
    Ok(options)
}

/// The command an order-entry message asks for, or the REJECTED reason. `session` tags the
/// orders it places (0: none; see `Order::session`).
pub fn command(spec: &Spec, trader: &Trader, session: u64, msg: &ClientMsg) -> Result<Command, u16> {
    let market = |m: &[u8; MARKET_BYTES]| market_of(spec, m).ok_or(reason::UNKNOWN_MARKET);
    let side = |s: u8| Side::from_code(i64::from(s)).ok_or(reason::BAD_SIDE);
    let positive = |v: i64| if v > 0 { Ok(i128::from(v)) } else { Err(reason::BAD_NUMBER) };
    let user = trader.user;
    Ok(match *msg {
        ClientMsg::NewLimit { client_id, market: m, side: s, options, price, amount } => {
            let market = market(&m)?;
            let options = limit_options(options, trader.self_trade)?;
            Command::PutLimit(PutLimit {
                user,
                market,
                side: side(s)?,
                amount: positive(amount)?,
                price: positive(price)?,
                taker_fee: trader.taker_fee[market as usize],
                maker_fee: trader.maker_fee[market as usize],
                source: trader.source,
                client_id,
                id_window: trader.id_window,
                options,
                session,
            })
        }
        ClientMsg::NewMarket { client_id, market: m, side: s, self_trade, flags, amount } => {
            let self_trade = self_trade_of(self_trade, trader.self_trade)?;
            if flags & !MARKET_STOCK_AMOUNT != 0 {
                return Err(reason::BAD_OPTION);
            }
            let market = market(&m)?;
            Command::PutMarket(PutMarket {
                user,
                market,
                side: side(s)?,
                amount: positive(amount)?,
                stock_amount: flags & MARKET_STOCK_AMOUNT != 0,
                taker_fee: trader.taker_fee[market as usize],
                source: trader.source,
                client_id,
                id_window: trader.id_window,
                self_trade,
                session,
            })
        }
        ClientMsg::Cancel { market: m, order_id } => Command::Cancel { user, market: market(&m)?, order_id },
        ClientMsg::CancelByClientId { market: m, client_id } => {
            Command::CancelByClientId { user, market: market(&m)?, client_id }
        }
        ClientMsg::MassCancel { market: m, side: s } => Command::CancelAll {
            user,
            market: if m == [0; MARKET_BYTES] { None } else { Some(market(&m)?) },
            side: if s == 0 { None } else { Some(side(s)?) },
            session: None,
        },
        ClientMsg::Amend { market: m, order_id, price, left } => {
            let unchanged_or = |v: i64| if v == 0 { Ok(None) } else { positive(v).map(Some) };
            let (price, left) = (unchanged_or(price)?, unchanged_or(left)?);
            if price.is_none() && left.is_none() {
                return Err(reason::BAD_NUMBER);
            }
            Command::Amend(Amend { user, market: market(&m)?, order_id, price, left })
        }
        ClientMsg::OrderStatus { market: m, order_id, client_id } => {
            Command::OrderStatus { user, market: market(&m)?, order_id, client_id }
        }
        ClientMsg::Hello { .. } | ClientMsg::Login { .. } | ClientMsg::LoginReplay { .. } | ClientMsg::Heartbeat => {
            return Err(reason::NOT_EXPECTED)
        }
    })
}

/// The REJECTED reason for a matcher error.
pub fn reason_of(e: RpcError) -> u16 {
    match e {
        RpcError::InvalidArgument => reason::INVALID_ARGUMENT,
        RpcError::ServiceUnavailable | RpcError::ServiceTimeout => reason::SERVICE_UNAVAILABLE,
        RpcError::BalanceNotEnough | RpcError::UpdateBalanceNotEnough => reason::BALANCE_NOT_ENOUGH,
        RpcError::AmountTooSmall => reason::AMOUNT_TOO_SMALL,
        RpcError::NoEnoughTrader => reason::NO_ENOUGH_TRADER,
        RpcError::DuplicateClientId { .. } => reason::DUPLICATE_CLIENT_ID,
        RpcError::WouldTake => reason::WOULD_TAKE,
        RpcError::CannotFill => reason::CANNOT_FILL,
        RpcError::OrderNotFound => reason::ORDER_NOT_FOUND,
        RpcError::UserNotMatch => reason::USER_NOT_MATCH,
        RpcError::Internal | RpcError::MethodNotFound | RpcError::RequireAuthentication | RpcError::RepeatUpdate => {
            reason::INTERNAL
        }
    }
}

/// The message type a command came from, for REJECTED.
fn request_type(cmd: &Command) -> u8 {
    match cmd {
        Command::PutLimit(_) => client_type::NEW_LIMIT,
        Command::PutMarket(_) => client_type::NEW_MARKET,
        Command::CancelByClientId { .. } => client_type::CANCEL_BY_CLIENT_ID,
        Command::CancelAll { .. } => client_type::MASS_CANCEL,
        Command::Amend(_) => client_type::AMEND,
        Command::OrderStatus { .. } => client_type::ORDER_STATUS,
        _ => client_type::CANCEL,
    }
}

/// The user whose order a command places or cancels; `None` for any other command.
pub fn order_user(cmd: &Command) -> Option<u32> {
    match cmd {
        Command::PutLimit(c) => Some(c.user),
        Command::PutMarket(c) => Some(c.user),
        Command::Cancel { user, .. } | Command::CancelByClientId { user, .. } | Command::CancelAll { user, .. } => {
            Some(*user)
        }
        Command::Amend(a) => Some(a.user),
        _ => None,
    }
}

/// A rejection of a request that never reached the matcher.
pub fn rejected(msg_type: u8, client_id: u64, order_id: u64, reason: u16) -> ServerMsg {
    ServerMsg::Rejected { seq: 0, client_id, order_id, reason, request_type: msg_type }
}

/// Execution reports for the caller of `cmd`: ACCEPTED and its own fills (or REJECTED) for a new
/// order, then CANCELLED if it ended with something left; CANCELLED or REJECTED for a cancel.
pub fn reports(
    spec: &Spec,
    cmd: &Command,
    outcome: &Result<Reply, RpcError>,
    events: &Events,
    out: &mut Vec<ServerMsg>,
) {
    let client_id = match cmd {
        Command::PutLimit(c) => c.client_id,
        Command::PutMarket(c) => c.client_id,
        Command::CancelByClientId { client_id, .. } | Command::OrderStatus { client_id, .. } => *client_id,
        _ => 0,
    };
    let order_id = match cmd {
        Command::Cancel { order_id, .. } | Command::OrderStatus { order_id, .. } => *order_id,
        Command::Amend(a) => a.order_id,
        _ => 0,
    };
    if let Err(e) = outcome {
        let order_id = match e {
            RpcError::DuplicateClientId { order_id } => *order_id,
            _ => order_id,
        };
        out.push(rejected(request_type(cmd), client_id, order_id, reason_of(*e)));
        return;
    }
    if let (Command::OrderStatus { market, .. }, Ok(Reply::Status { order_id, open })) = (cmd, outcome) {
        out.push(match open {
            Some(order) => order_state(spec, order, STATE_OPEN),
            // The TCP edge puts in how it ended when it kept that (`tcp::Finished`).
            None => ServerMsg::OrderState {
                seq: 0,
                time_us: 0,
                client_id,
                order_id: *order_id,
                market: market_bytes(&spec.market(*market).name),
                side: 0,
                kind: 0,
                state: STATE_UNKNOWN,
                fee_scale: 0,
                price: 0,
                amount: 0,
                left: 0,
                deal_stock: 0,
                deal_money: 0,
                deal_fee: 0,
            },
        });
        return;
    }
    if let (Command::CancelAll { market, side, .. }, Ok(Reply::Cancelled { count })) = (cmd, outcome) {
        let market = market.map_or([0; MARKET_BYTES], |m| market_bytes(&spec.market(m).name));
        out.push(ServerMsg::MassCancelled { seq: 0, count: *count, market, side: side.map_or(0, Side::code) });
        return;
    }
    let order = match (cmd, outcome) {
        // An amend that changed nothing: the order as it is.
        (Command::Amend(_), Ok(Reply::MaybeOrder(Some(order)))) => order,
        _ => match events.last_order() {
            Some(order) => order,
            None => return,
        },
    };
    let mk = spec.market(order.market);
    let market = market_bytes(&mk.name);
    let narrow = |v: i128, scale_down: u32| carried(v / 10i128.pow(scale_down));
    if let Command::Amend(a) = cmd {
        out.push(ServerMsg::Amended {
            seq: 0,
            time_us: order.mtime_us,
            client_id: order.client_id,
            order_id: order.id,
            old_order_id: a.order_id,
            market,
            side: order.side.code(),
            price: carried(order.price),
            left: carried(order.left),
        });
        return;
    }
    if matches!(cmd, Command::Cancel { .. } | Command::CancelByClientId { .. }) {
        let down = if order.spends_money() { mk.money_prec } else { 0 };
        out.push(cancelled(order, market, CANCEL_REQUESTED, narrow(order.left, down)));
        return;
    }
    let money_bid = order.spends_money();
    let amount_down = if money_bid { mk.money_prec } else { 0 };
    out.push(ServerMsg::Accepted {
        seq: 0,
        time_us: order.ctime_us,
        client_id: order.client_id,
        order_id: order.id,
        market,
        side: order.side.code(),
        kind: order.kind as u8,
        price: narrow(order.price, 0),
        amount: narrow(order.amount, amount_down),
    });
    let mut left = order.amount;
    for ev in events.iter() {
        let EventRef::Deal(d) = ev else { continue };
        left -= if money_bid { d.deal } else { d.amount };
        let fee = if order.side == Side::Ask { d.ask_fee } else { d.bid_fee };
        out.push(filled(spec, d, order, ROLE_TAKER, narrow(left, amount_down), fee));
    }
    let why = match outcome {
        Ok(Reply::Order(Some(Ended::MarketRest))) => CANCEL_MARKET_REMAINDER,
        Ok(Reply::Order(Some(Ended::DealCap))) => CANCEL_DEAL_CAP,
        Ok(Reply::Order(Some(Ended::ImmediateOrCancel))) => CANCEL_IOC,
        Ok(Reply::Order(Some(Ended::SelfTrade))) => CANCEL_SELF_TRADE,
        _ => return,
    };
    out.push(cancelled(order, market, why, narrow(order.left, amount_down)));
}

/// A price, amount or remainder in a report's 64-bit field. Every order's price and amount is at
/// most `ORDER_MANTISSA_MAX` (`i64::MAX`) at entry on every edge
/// (`viaduct_matcher::command::ORDER_MANTISSA_MAX`), and a market bid's money amount is reported
/// back at the scale it was given in, so each fits; an order a build before that bound accepted
/// may not, and is reported at `i64::MAX` with an error logged.
fn carried(v: i128) -> i64 {
    i64::try_from(v).unwrap_or_else(|_| {
        tracing::error!("binary edge: {v} does not fit a report's 64-bit field (an order from before the entry bound); sent as i64::MAX");
        i64::MAX
    })
}

/// ORDER_STATE for `order` as it is (`STATE_OPEN`) or as it ended (`STATE_FINISHED`): amounts as
/// ACCEPTED and FILLED carry them (a market bid of kind 2 in money at `stock.prec`).
pub fn order_state(spec: &Spec, order: &Order, state: u8) -> ServerMsg {
    let mk = spec.market(order.market);
    let down = if order.spends_money() { 10i128.pow(mk.money_prec) } else { 1 };
    ServerMsg::OrderState {
        seq: 0,
        time_us: order.mtime_us,
        client_id: order.client_id,
        order_id: order.id,
        market: market_bytes(&mk.name),
        side: order.side.code(),
        kind: order.kind as u8,
        state,
        fee_scale: order.fee_scale(mk) as u8,
        price: carried(order.price),
        amount: carried(order.amount / down),
        left: carried(order.left / down),
        deal_stock: carried(order.deal_stock),
        deal_money: order.deal_money,
        deal_fee: order.deal_fee,
    }
}

fn cancelled(order: &Order, market: [u8; MARKET_BYTES], why: u8, left: i64) -> ServerMsg {
    ServerMsg::Cancelled {
        seq: 0,
        time_us: order.mtime_us,
        client_id: order.client_id,
        order_id: order.id,
        market,
        why,
        side: order.side.code(),
        left,
        price: carried(order.price),
    }
}

fn filled(spec: &Spec, d: &Deal, order: &Order, role: u8, left: i64, fee: i128) -> ServerMsg {
    let mk = spec.market(d.market);
    ServerMsg::Filled {
        seq: 0,
        time_us: d.time_us,
        client_id: order.client_id,
        order_id: order.id,
        deal_id: d.id,
        market: market_bytes(&mk.name),
        side: order.side.code(),
        role,
        fee_scale: viaduct_matcher::order::fee_scale(order.side, mk) as u8,
        price: carried(d.price),
        amount: carried(d.amount),
        left,
        fee,
    }
}

/// What `cmd`'s `events` tell the sessions of a user that `watched` says yes to about their
/// resting orders, with the user they are for, in order: FILLED for the resting side of every
/// deal, and CANCELLED (why 5) for each resting order that self-trade prevention cancelled
/// when another order of the same user met it ([`Events::self_trade_cancels`]).
pub fn maker_fills(
    spec: &Spec,
    cmd: &Command,
    events: &Events,
    watched: impl Fn(u32) -> bool,
    out: &mut Vec<(u32, ServerMsg)>,
) {
    let new_order = matches!(cmd, Command::PutLimit(_) | Command::PutMarket(_));
    let taker = events.last_order().map(|o| o.id);
    let mut deal: Option<Deal> = None;
    for ev in events.iter() {
        match ev {
            EventRef::Deal(d) => deal = Some(*d),
            EventRef::Order(kind @ (OrderEventKind::Update | OrderEventKind::Finish), order) => {
                let Some(d) = deal.take() else {
                    let cancelled_for_self_trade =
                        new_order && kind == OrderEventKind::Finish && order.left > 0 && Some(order.id) != taker;
                    if cancelled_for_self_trade && watched(order.user) {
                        let market = market_bytes(&spec.market(order.market).name);
                        out.push((order.user, cancelled(order, market, CANCEL_SELF_TRADE, carried(order.left))));
                    }
                    continue;
                };
                let maker_id = if d.taker_side == Side::Ask { d.bid_order_id } else { d.ask_order_id };
                if order.id != maker_id || !watched(order.user) {
                    continue;
                }
                let fee = if order.side == Side::Ask { d.ask_fee } else { d.bid_fee };
                let left = carried(order.left);
                out.push((order.user, filled(spec, &d, order, ROLE_MAKER, left, fee)));
            }
            _ => {}
        }
    }
}
