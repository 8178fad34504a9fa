//! The global checks every test run ends with (and snapshot loading runs): money is conserved,
//! nothing is negative, frozen funds equal what open orders need, books are in priority order.

use std::collections::HashMap;

use crate::decimal::pow10;
use crate::engine::Matcher;
use crate::order::Side;

impl Matcher {
    /// Checks every invariant of the state; the error says which one broke, and where.
    pub fn check_invariants(&self) -> Result<(), String> {
        let spec = &self.spec;
        let assets = spec.assets.len();
        let mut sums = vec![0i128; assets];
        for (user, balances) in self.ledger.users() {
            for (a, b) in balances.iter().enumerate() {
                if b.available < 0 || b.freeze < 0 {
                    return Err(format!("user {user} asset {}: negative balance", spec.assets[a].name));
                }
                sums[a] += b.total();
            }
        }
        for (a, asset) in spec.assets.iter().enumerate() {
            let (fees, supply) = (self.ledger.fees[a], self.ledger.supply[a]);
            if sums[a] + fees != supply {
                return Err(format!("asset {}: balances {} + fees {fees} != supply {supply}", asset.name, sums[a]));
            }
        }
        let mut frozen: HashMap<(u32, usize), i128> = HashMap::new();
        for (mi, book) in self.books.iter().enumerate() {
            let mk = &spec.markets[mi];
            book.check().map_err(|e| format!("market {}: {e}", mk.name))?;
            for o in book.orders_by_id() {
                let (asset, need) = match o.side {
                    Side::Ask => (mk.stock, o.left),
                    Side::Bid => (mk.money, o.price * o.left),
                };
                if o.frozen() != need || o.left > o.amount || o.id > self.order_id || o.market as usize != mi {
                    return Err(format!("market {}: order {} is inconsistent", mk.name, o.id));
                }
                let prec = spec.asset(asset).prec_save;
                *frozen.entry((o.user, asset as usize)).or_default() += need * pow10(prec - o.freeze_scale(mk));
            }
        }
        for (user, balances) in self.ledger.users() {
            for (a, b) in balances.iter().enumerate() {
                let need = frozen.get(&(user, a)).copied().unwrap_or(0);
                if b.freeze != need {
                    return Err(format!(
                        "user {user} asset {}: frozen {} but open orders need {need}",
                        spec.assets[a].name, b.freeze
                    ));
                }
            }
        }
        for ((user, a), _) in frozen.iter().filter(|(_, need)| **need > 0) {
            if self.ledger.get(*user, *a as u16).freeze == 0 {
                return Err(format!("user {user} asset {}: open orders but nothing frozen", spec.assets[*a].name));
            }
        }
        Ok(())
    }
}
