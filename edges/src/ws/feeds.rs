//! The WebSocket edge's subscriptions and what it pushes through them: feeds polled for all
//! their subscribers and written a slice of connections at a time, the users the engine follows
//! for their connections, the balances asked for `asset.update` (what to push is made in
//! `push.rs`).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tungstenite::Message;
use viaduct_matcher::config::{AssetId, Spec};
use viaduct_matcher::RpcError;
use viaduct_protocol::{self as protocol, Routed};

use super::push::{self, Feed, FeedKind, FeedState, Mine};
use super::{Conn, Server};
use crate::Backend;
use std::collections::HashMap;

/// The bit that marks the tag of a request the edge made itself (a feed's poll, the balances of
/// an `asset.update`) rather than a client.
pub(super) const OWN: u64 = 1 << 63;

/// One feed push on its way to its subscribers, written [`FANOUT_SLICE`] connections at a time
/// so that a user's `order.update` never waits behind a whole fan-out.
pub(super) struct Fanout {
    /// Not polled again until this is written: a feed the edge cannot write as fast as it
    /// changes is polled less often, its pushes carrying more each (a bound of one push per feed
    /// on its way).
    feed: Feed,
    msg: Message,
    /// (connection index, generation), in index order: pushes on their way together reach a
    /// connection in the same turn, and go out in one write.
    to: Vec<(usize, u64)>,
    next: usize,
}

/// Connections a turn of the loop writes the oldest feed push to before it takes replies and the
/// users' pushes again; the other pushes on their way are written to the same connections (up to
/// those of index at most the slice's last), at most [`FANOUT_TURN`] writes in all. A write to a
/// loopback client costs about 20 µs of the edge's thread (the kernel's send and receive paths),
/// so a slice bounds how long a user's `order.update` waits behind a fan-out: at 10,000
/// subscribers and 1,000 orders/s (`benches/README.md`, "WebSocket fan-out"), 16 instead of 64
/// took the push's p50 from 2.7 to 0.64 ms and its p99 from 16.9 to 9.6 ms (arrivals stamped by
/// the kernel), and fed 14 % more feed pushes a second; 8 changed little more.
const FANOUT_SLICE: usize = 16;

/// Feed pushes a turn writes, at most (past the oldest push's slice, pushes that lag it catch
/// up by this much less the slice).
const FANOUT_TURN: usize = 4 * FANOUT_SLICE;

/// What the edge asked for itself.
pub(super) enum Own {
    Feed(Feed),
    Balances(u32),
}

impl<B: Backend> Server<B> {
    /// Replaces connection `index`'s feeds of `kind` with `feeds`; a new subscriber gets what the
    /// feed has at once, a new feed is polled at once.
    pub(super) fn subscribe_feeds(&mut self, index: usize, kind: FeedKind, feeds: Vec<Feed>) {
        let Some(c) = self.conns[index].as_mut() else { return };
        let gen = c.gen;
        let (old, kept): (Vec<Feed>, Vec<Feed>) =
            std::mem::take(&mut c.feeds).into_iter().partition(|f| f.kind() == kind);
        c.feeds = kept;
        c.feeds.extend(feeds.iter().cloned());
        for feed in old {
            self.leave_feed(index, &feed);
        }
        let mut greetings = Vec::new();
        let mut new = Vec::new();
        for feed in feeds {
            let state = self.feeds.entry(feed.clone()).or_insert_with(|| {
                new.push(feed.clone());
                FeedState::default()
            });
            if state.subscribers.insert(index, gen).is_none() {
                self.cfg.stats.subscriptions.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            greetings.extend(state.greeting(&feed));
        }
        for text in greetings {
            self.send(index, text);
        }
        for feed in new {
            self.poll_feed(feed);
        }
    }

    pub(super) fn leave_feed(&mut self, index: usize, feed: &Feed) {
        if let Some(state) = self.feeds.get_mut(feed) {
            if state.subscribers.remove(&index).is_some() {
                self.cfg.stats.subscriptions.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            }
            if state.subscribers.is_empty() {
                self.feeds.remove(feed);
            }
        }
    }

    /// Changes connection `index`'s subscriptions to `user`'s orders and assets; the engine is
    /// asked to follow a user while any connection subscribes to something of theirs.
    pub(super) fn subscribe_mine(&mut self, index: usize, user: Option<u32>, change: impl FnOnce(&mut Mine)) {
        let (Some(user), Some(c)) = (user, self.conns[index].as_mut()) else { return };
        change(&mut c.mine);
        let wants = !c.mine.is_empty();
        let conns = self.followers.entry(user).or_default();
        let had = !conns.is_empty();
        conns.retain(|&i| i != index);
        if wants {
            conns.push(index);
        }
        let has = !conns.is_empty();
        if !has {
            self.followers.remove(&user);
        }
        if had != has {
            self.backend.follow(user, has);
        }
    }

    /// Writes the next slice of the feed pushes waiting: the oldest push's next
    /// [`FANOUT_SLICE`] subscribers, and every other push's subscribers up to the same
    /// connection index, so that a connection subscribed to several feeds gets what they push
    /// together in one write (the loop flushes each connection once a turn). If more wait, the
    /// loop comes round again at once (after the replies and users' pushes that came meanwhile).
    pub(super) fn fan_out(&mut self) {
        // Out of the queue while they are written (sending needs the whole server).
        let mut fanouts = std::mem::take(&mut self.fanout);
        let Some(head) = fanouts.front() else { return };
        // The oldest push's slice ends at this connection (a push in the queue has a subscriber
        // left to write: none is queued without one, and a finished one leaves).
        let last = head.to[head.to.len().min(head.next + FANOUT_SLICE) - 1].0;
        let mut budget = FANOUT_TURN;
        for f in fanouts.iter_mut() {
            while budget > 0 && f.next < f.to.len() && f.to[f.next].0 <= last {
                let (index, gen) = f.to[f.next];
                if self.conns[index].as_ref().is_some_and(|c| c.gen == gen) {
                    self.send_message(index, f.msg.clone());
                    budget -= 1;
                }
                f.next += 1;
            }
        }
        for f in fanouts {
            if f.next < f.to.len() {
                self.fanout.push_back(f);
            } else if let Some(state) = self.feeds.get_mut(&f.feed) {
                state.polling = false;
            }
        }
        if !self.fanout.is_empty() {
            (self.wake)();
        }
    }

    /// Asks a feed's owner for its state; the answer comes back marked with an own tag.
    pub(super) fn poll_feed(&mut self, feed: Feed) {
        let Some(state) = self.feeds.get_mut(&feed) else { return };
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let (method, params) = feed.poll(now, state.last_deal_id, self.cfg.push_interval);
        let tag = OWN | self.next_tag;
        self.next_tag += 1;
        let sent = match protocol::route(self.backend.spec(), method, &params) {
            Ok(Routed::Command(cmd)) => self.backend.submit(tag, 0, cmd).map_err(|_| RpcError::ServiceUnavailable),
            Ok(Routed::Query(_)) => self.backend.query(tag, 0, method, params),
            Err(e) => Err(e),
        };
        match sent {
            Ok(()) => {
                state.polling = true;
                self.own.insert(tag, Own::Feed(feed));
            }
            // Busy: the next tick tries again.
            Err(RpcError::ServiceUnavailable) => {}
            Err(e) => self.feed_failed(&feed, e),
        }
    }

    /// A feed its owner refuses (a kline interval it does not keep) is dropped for everyone who
    /// subscribed to it (SPEC B3.4), with a log line.
    fn feed_failed(&mut self, feed: &Feed, e: RpcError) {
        tracing::info!("ws: the feed {feed:?} was refused ({e}); its subscriptions are dropped");
        if let Some(state) = self.feeds.remove(feed) {
            for (index, gen) in state.subscribers {
                if let Some(c) = self.conns[index].as_mut().filter(|c| c.gen == gen) {
                    c.feeds.retain(|f| f != feed);
                }
            }
        }
    }

    /// Takes the answer to a request the edge made itself.
    pub(super) fn own_answered(&mut self, tag: u64, json: &str) {
        let Some(own) = self.own.remove(&tag) else { return };
        let Ok(Value::Object(mut reply)) = serde_json::from_str::<Value>(json) else { return };
        let error = reply.get("error").and_then(|e| e.get("code")).and_then(Value::as_u64);
        let result = reply.remove("result").unwrap_or(Value::Null);
        match own {
            Own::Feed(feed) => {
                let Some(state) = self.feeds.get_mut(&feed) else { return };
                state.polling = false;
                match error {
                    None => {
                        if let Some(text) = state.answered(&feed, result, Instant::now()) {
                            let mut to: Vec<(usize, u64)> = state.subscribers.iter().map(|(i, g)| (*i, *g)).collect();
                            if !to.is_empty() {
                                to.sort_unstable();
                                state.polling = true; // until the push is written
                                self.fanout.push_back(Fanout { feed, msg: Message::text(text), to, next: 0 });
                            }
                        }
                    }
                    Some(1) => self.feed_failed(&feed, RpcError::InvalidArgument),
                    Some(_) => {} // busy or timed out: polled again next time
                }
            }
            Own::Balances(user) if error.is_none() => {
                self.asking.remove(&user);
                let spec = self.backend.spec();
                let mut sends = Vec::new();
                for &index in self.followers.get(&user).into_iter().flatten() {
                    let Some(c) = self.conns[index].as_ref() else { continue };
                    if let Some(text) = push::asset_update(spec, &result, &c.mine.assets) {
                        sends.push((index, text));
                    }
                }
                for (index, text) in sends {
                    self.send(index, text);
                }
            }
            Own::Balances(user) => {
                self.asking.remove(&user);
            }
        }
    }

    /// Asks the matcher for the balances that changed for users whose connections subscribe to
    /// them, one query per user and at most one out per user: changes while one is out wait for
    /// its answer and go together in the next (under load, fewer and larger queries). What the
    /// engine cannot take now waits for the next tick.
    pub(super) fn query_balances(&mut self) {
        if self.dirty.is_empty() {
            return;
        }
        let mut dirty = std::mem::take(&mut self.dirty);
        dirty.sort_unstable();
        dirty.dedup();
        let mut left = Vec::new();
        for group in dirty.chunk_by(|a, b| a.0 == b.0) {
            let user = group[0].0;
            if self.asking.contains(&user) {
                left.extend_from_slice(group);
                continue;
            }
            let spec = self.backend.spec();
            let mut params = vec![Value::from(user)];
            params.extend(group.iter().map(|(_, a)| Value::from(spec.asset(*a).name.as_str())));
            let Ok(Routed::Command(cmd)) = protocol::route(spec, "balance.query", &params) else { continue };
            let tag = OWN | self.next_tag;
            self.next_tag += 1;
            if self.backend.submit(tag, 0, cmd).is_ok() {
                self.own.insert(tag, Own::Balances(user));
                self.asking.insert(user);
            } else {
                left.extend_from_slice(group);
            }
        }
        self.dirty = left;
    }
}

/// The pushes of a followed user's `events`: `order.update` to each of the user's connections
/// subscribed to the order's market, and the (user, asset) balances to query for `asset.update`
/// where a connection subscribes to the asset.
pub(super) fn user_pushes(
    spec: &Spec,
    events: &viaduct_matcher::Events,
    followers: &HashMap<u32, Vec<usize>>,
    conns: &[Option<Conn>],
    pushes: &mut Vec<(usize, Message)>,
    dirty: &mut Vec<(u32, AssetId)>,
) {
    let mine = |index: usize| conns.get(index).and_then(Option::as_ref).map(|c| &c.mine);
    let subscribed = |user: u32, market| {
        followers.get(&user).into_iter().flatten().any(|&i| mine(i).is_some_and(|m| m.markets.contains(&market)))
    };
    push::order_updates(spec, events, subscribed, |user, market, text| {
        let msg = Message::text(text);
        for &index in followers.get(&user).into_iter().flatten() {
            if mine(index).is_some_and(|m| m.markets.contains(&market)) {
                pushes.push((index, msg.clone()));
            }
        }
    });
    let mut touched = Vec::new();
    push::touched_assets(spec, events, &mut touched);
    dirty.extend(touched.into_iter().filter(|(user, asset)| {
        followers.get(user).into_iter().flatten().any(|&i| mine(i).is_some_and(|m| m.assets.contains(asset)))
    }));
}
