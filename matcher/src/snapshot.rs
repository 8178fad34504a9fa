//! Snapshots of the whole matcher state and the state hash.
//!
//! A snapshot is canonical: accounts sorted by user, orders by id, the dedupe window in arrival
//! order. So equal states give equal bytes, and the state hash is the hash of those bytes. Loading
//! maps assets and markets by name and refuses a config that dropped or changed one.

use serde::{Deserialize, Serialize};

use crate::config::{AssetId, MarketId, Spec};
use crate::engine::{DedupeKey, Matcher};
use crate::ledger::Balance;
use crate::order::Order;
use crate::window::{IdEntry, UserIds};

const VERSION: u32 = 4;

#[derive(Serialize, Deserialize)]
struct AssetRecord {
    name: String,
    prec_save: u32,
    prec_show: u32,
}

#[derive(Serialize, Deserialize)]
struct MarketRecord {
    name: String,
    stock: String,
    money: String,
    stock_prec: u32,
    money_prec: u32,
    fee_prec: u32,
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    version: u32,
    assets: Vec<AssetRecord>,
    markets: Vec<MarketRecord>,
    order_id: u64,
    deal_id: u64,
    fees: Vec<i128>,
    supply: Vec<i128>,
    accounts: Vec<(u32, Vec<Balance>)>,
    orders: Vec<Order>,
    dedupe: Vec<(u64, DedupeKey)>,
    /// Each user's client order ids, users ascending, each's in arrival order as (expiry, client
    /// order id, order id or 0 for an entry that names nothing).
    client_ids: Vec<(u32, Vec<IdEntry>)>,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot is not readable: {0}")]
    Decode(String),
    #[error("snapshot version {0} is not supported (this build reads version {VERSION})")]
    Version(u32),
    #[error("snapshot holds asset {0:?}, which the config no longer has or has with other precisions; restore it to the config")]
    Asset(String),
    #[error("snapshot holds market {0:?}, which the config no longer has or has with other settings; restore it to the config")]
    Market(String),
    #[error("snapshot is inconsistent: {0}")]
    Invalid(String),
}

/// What [`Snapshot`] holds, borrowed from the matcher: the same fields in the same order, so
/// that it encodes to the same bytes, with the large sequences written straight from the
/// matcher's own structures instead of first being copied into vectors (4 M client order ids
/// are over 100 MB).
#[derive(Serialize)]
struct SnapshotOut<'a> {
    version: u32,
    assets: Vec<AssetRecord>,
    markets: Vec<MarketRecord>,
    order_id: u64,
    deal_id: u64,
    fees: &'a [i128],
    supply: &'a [i128],
    accounts: Vec<(u32, &'a [Balance])>,
    orders: Seq<OrdersIter<'a>>,
    dedupe: Seq<DedupeIter<'a>>,
    client_ids: Vec<(u32, UserIds<'a>)>,
}

/// The `balance.update` window's (time, key) pairs, without their unused value.
type DedupeIter<'a> = std::iter::Map<std::collections::vec_deque::Iter<'a, (u64, DedupeKey, u64)>, DedupeOut>;
type DedupeOut = for<'b> fn(&'b (u64, DedupeKey, u64)) -> (u64, &'b DedupeKey);

/// The resting orders, from (id, order) pairs sorted by id.
type OrdersIter<'a> = std::iter::Map<std::slice::Iter<'a, (u64, &'a Order)>, fn(&(u64, &'a Order)) -> &'a Order>;

/// A sequence serialized from an iterator that knows its length (postcard writes the length
/// first).
struct Seq<I>(I);

impl<I> Serialize for Seq<I>
where
    I: Iterator + ExactSizeIterator + Clone,
    I::Item: Serialize,
{
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.clone())
    }
}

/// How many encoded bytes [`Matcher::snapshot_to`] gathers before it hands them to its writer.
const SNAPSHOT_CHUNK: usize = 256 * 1024;

/// A postcard flavor that encodes into a buffer of [`SNAPSHOT_CHUNK`] and hands each full one to
/// a writer: the encoder's many small writes (a field at a time) stay pushes onto a `Vec`, and the
/// writer sees a call per chunk. The first error the writer gives is kept, since postcard would
/// report only its own.
struct ChunkFlavor<'e, W> {
    buf: Vec<u8>,
    out: W,
    error: &'e mut Option<std::io::Error>,
}

impl<W: std::io::Write> ChunkFlavor<'_, W> {
    fn hand_over(&mut self) -> postcard::Result<()> {
        match self.out.write_all(&self.buf) {
            Ok(()) => {
                self.buf.clear();
                Ok(())
            }
            Err(e) => {
                self.error.get_or_insert(e);
                Err(postcard::Error::SerializeBufferFull)
            }
        }
    }
}

impl<W: std::io::Write> postcard::ser_flavors::Flavor for ChunkFlavor<'_, W> {
    type Output = W;

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.buf.push(data);
        if self.buf.len() >= SNAPSHOT_CHUNK {
            self.hand_over()?;
        }
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= SNAPSHOT_CHUNK {
            self.hand_over()?;
        }
        Ok(())
    }

    fn finalize(mut self) -> postcard::Result<W> {
        self.hand_over()?;
        Ok(self.out)
    }
}

/// The state hash's hasher, fed as a writer.
struct HashWriter(xxhash_rust::xxh3::Xxh3);

impl std::io::Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Matcher {
    /// The whole state as canonical bytes.
    pub fn snapshot(&self) -> Vec<u8> {
        let mut orders = Vec::new();
        postcard::to_stdvec(&self.snapshot_out(&mut orders)).expect("snapshot always serializes")
    }

    /// Writes [`Matcher::snapshot`]'s bytes to `w` as they are encoded, without holding them all:
    /// a snapshot of millions of orders is hundreds of MB, which a `Vec` reaches by doubling,
    /// copying and touching fresh memory each time. Returns `w`.
    pub fn snapshot_to<W: std::io::Write>(&self, w: W) -> std::io::Result<W> {
        let mut error = None;
        let flavor = ChunkFlavor { buf: Vec::with_capacity(SNAPSHOT_CHUNK + 1024), out: w, error: &mut error };
        let mut orders = Vec::new();
        match postcard::serialize_with_flavor(&self.snapshot_out(&mut orders), flavor) {
            Ok(w) => Ok(w),
            Err(e) => Err(error.unwrap_or_else(|| std::io::Error::other(format!("encoding the snapshot: {e}")))),
        }
    }

    /// What a snapshot encodes, borrowed; `orders` holds the resting orders sorted by id while
    /// it is encoded.
    fn snapshot_out<'a>(&'a self, orders: &'a mut Vec<(u64, &'a Order)>) -> SnapshotOut<'a> {
        orders.extend(self.books.iter().flat_map(|b| b.orders_with_ids()));
        orders.sort_unstable_by_key(|&(id, _)| id);
        let orders: &'a Vec<(u64, &'a Order)> = orders;
        let spec = &self.spec;
        SnapshotOut {
            version: VERSION,
            assets: spec
                .assets
                .iter()
                .map(|a| AssetRecord { name: a.name.clone(), prec_save: a.prec_save, prec_show: a.prec_show })
                .collect(),
            markets: spec.markets.iter().map(|m| market_record(spec, m)).collect(),
            order_id: self.order_id,
            deal_id: self.deal_id,
            fees: &self.ledger.fees,
            supply: &self.ledger.supply,
            accounts: self.ledger.accounts_sorted(),
            orders: Seq(orders.iter().map((|&(_, o)| o) as fn(&(u64, &'a Order)) -> &'a Order)),
            dedupe: Seq(self.dedupe.order.iter().map((|(t, k, _)| (*t, k)) as DedupeOut)),
            client_ids: self.client_ids.by_user(),
        }
    }

    /// A 64-bit hash of the whole state (xxh3 of the canonical snapshot, hashed as it is encoded).
    pub fn state_hash(&self) -> u64 {
        let hasher = self.snapshot_to(HashWriter(xxhash_rust::xxh3::Xxh3::new())).expect("hashing never fails");
        hasher.0.digest()
    }

    /// Rebuilds a matcher from `bytes` under `spec`, which may add assets and markets but not
    /// remove or change any the snapshot uses.
    pub fn from_snapshot(spec: Spec, bytes: &[u8]) -> Result<Matcher, SnapshotError> {
        let snap: Snapshot = postcard::from_bytes(bytes).map_err(|e| SnapshotError::Decode(e.to_string()))?;
        if snap.version != VERSION {
            return Err(SnapshotError::Version(snap.version));
        }
        let asset_map = map_assets(&spec, &snap.assets)?;
        let market_map = map_markets(&spec, &snap.markets)?;
        let mut m = Matcher::new(spec);
        m.order_id = snap.order_id;
        m.deal_id = snap.deal_id;
        let invalid = |what: &str| SnapshotError::Invalid(what.to_string());
        if snap.fees.len() != asset_map.len() || snap.supply.len() != asset_map.len() {
            return Err(invalid("per-asset totals do not match its asset list"));
        }
        for (i, &a) in asset_map.iter().enumerate() {
            m.ledger.fees[a as usize] = snap.fees[i];
            m.ledger.supply[a as usize] = snap.supply[i];
        }
        for (user, balances) in snap.accounts {
            if balances.len() != asset_map.len() {
                return Err(invalid("an account does not match its asset list"));
            }
            let mut mapped = vec![Balance::default(); m.spec.assets.len()];
            for (i, b) in balances.into_iter().enumerate() {
                mapped[asset_map[i] as usize] = b;
            }
            m.ledger.set(user, &mapped);
        }
        for mut order in snap.orders {
            let market = *market_map.get(order.market as usize).ok_or_else(|| invalid("an order names no market"))?;
            if order.id > snap.order_id || m.books[market as usize].get(order.id).is_some() {
                return Err(invalid("order ids are out of range or repeated"));
            }
            order.market = market;
            m.books[market as usize].insert(order);
        }
        for (time, mut key) in snap.dedupe {
            key.asset = *asset_map.get(key.asset as usize).ok_or_else(|| invalid("a dedupe entry names no asset"))?;
            m.dedupe.insert(key, 0, time);
        }
        let mut last_user = None;
        for (user, ids) in snap.client_ids {
            if last_user.is_some_and(|last| last >= user) {
                return Err(invalid("client order ids are not in user order"));
            }
            last_user = Some(user);
            for (expires, client_id, order_id) in ids {
                if client_id == 0 || order_id > snap.order_id {
                    return Err(invalid("a client order id names an order out of range"));
                }
                m.client_ids.restore(user, expires, client_id, order_id);
            }
        }
        m.check_invariants().map_err(SnapshotError::Invalid)?;
        Ok(m)
    }
}

fn market_record(spec: &Spec, m: &crate::config::Market) -> MarketRecord {
    MarketRecord {
        name: m.name.clone(),
        stock: spec.asset(m.stock).name.clone(),
        money: spec.asset(m.money).name.clone(),
        stock_prec: m.stock_prec,
        money_prec: m.money_prec,
        fee_prec: m.fee_prec,
    }
}

fn map_assets(spec: &Spec, assets: &[AssetRecord]) -> Result<Vec<AssetId>, SnapshotError> {
    assets
        .iter()
        .map(|r| match spec.asset_id(&r.name) {
            Some(id) if spec.asset(id).prec_save == r.prec_save && spec.asset(id).prec_show == r.prec_show => Ok(id),
            _ => Err(SnapshotError::Asset(r.name.clone())),
        })
        .collect()
}

fn map_markets(spec: &Spec, markets: &[MarketRecord]) -> Result<Vec<MarketId>, SnapshotError> {
    markets
        .iter()
        .map(|r| {
            let id = spec.market_id(&r.name).ok_or_else(|| SnapshotError::Market(r.name.clone()))?;
            let now = market_record(spec, spec.market(id));
            let same = (&now.stock, &now.money, now.stock_prec, now.money_prec, now.fee_prec)
                == (&r.stock, &r.money, r.stock_prec, r.money_prec, r.fee_prec);
            if same {
                Ok(id)
            } else {
                Err(SnapshotError::Market(r.name.clone()))
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{IdWindow, PutLimit};
    use crate::config::embedded;
    use crate::order::{Side, Source};
    use crate::{Command, Events};

    /// The borrowed encoding and the owned one the loader reads are the same bytes, with every
    /// part of the state present: accounts, orders, `balance.update` keys and client order ids,
    /// one of them taken again once it expired.
    #[test]
    fn the_borrowed_encoding_is_the_owned_one() {
        let spec = Spec::new(&embedded()).unwrap();
        let mut m = Matcher::new(spec.clone());
        let mut events = Events::default();
        let t0 = 1_700_000_000_000_000;
        for (i, user) in [1u32, 2, 3].into_iter().enumerate() {
            let cmd = Command::BalanceUpdate {
                user,
                asset: spec.asset_id("BTC").unwrap(),
                business: "deposit".into(),
                business_id: i as u64,
                change: 10 * 10i128.pow(spec.asset(spec.asset_id("BTC").unwrap()).prec_save),
                detail: r#"{"k":"v"}"#.into(),
            };
            m.apply(t0, &cmd, &mut events).unwrap();
        }
        let order = |client_id| {
            Command::PutLimit(PutLimit {
                user: 1,
                market: 0,
                side: Side::Ask,
                amount: 100_000,
                price: 100_000_000,
                taker_fee: 0,
                maker_fee: 0,
                source: Source::EMPTY,
                client_id,
                id_window: IdWindow { max: 10, seconds: 60 },
                options: Default::default(),
                session: 0,
            })
        };
        let s = 1_000_000;
        for (t, id) in [(t0, 7), (t0 + 1, 8), (t0 + 60 * s, 7)] {
            m.apply(t, &order(id), &mut events).unwrap();
        }
        let bytes = m.snapshot();
        let owned: Snapshot = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(owned.client_ids.len(), 1);
        assert_eq!(
            owned.client_ids[0].1,
            vec![(t0 + 1 + 60 * s, 8, 2), (t0 + 120 * s, 7, 3)],
            "the expired entry went when id 7 was taken again"
        );
        assert_eq!((owned.orders.len(), owned.accounts.len(), owned.dedupe.len()), (3, 3, 3));
        assert_eq!(postcard::to_stdvec(&owned).unwrap(), bytes);
        let back = Matcher::from_snapshot(spec, &bytes).unwrap();
        assert_eq!(back.snapshot(), bytes);
        // Streamed, the same bytes; and the state hash, taken as they are encoded, is theirs.
        assert_eq!(m.snapshot_to(Vec::new()).unwrap(), bytes);
        assert_eq!(m.state_hash(), xxhash_rust::xxh3::xxh3_64(&bytes));
    }
}
