//! The two history stores behind one interface: SQLite (`sqlite://<path>`, the embedded
//! default) and MySQL or MariaDB (`mysql://user:pass@host:port/db`). Tables are created when
//! missing; every statement is parameterised.
//!
//! Why one file of ~650 lines: the two stores' statements sit side by side, so that they stay the
//! same rows and the same answers.

use mysql::prelude::Queryable;

use super::{Rows, SHARDS};

/// How a store splits each kind of row into tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// ViaBTC's: [`SHARDS`] tables of each kind, `<kind>_<key % 100>` (the key is the user id, or
    /// the order id for `order_detail` and `deal_history`). MySQL's always, so that ViaBTC's tools
    /// read it; and SQLite files written by a build before the single layout.
    Sharded,
    /// One table of each kind, named as the kind: a new SQLite file. A transaction then touches
    /// the last page of five tables and their indexes rather than of up to five hundred, so each
    /// commit writes (and each checkpoint copies and syncs) a fraction of the pages.
    Single,
}

impl Layout {
    /// The table of `kind` that holds the rows of `key`.
    pub fn table(self, kind: &str, key: u64) -> String {
        match self {
            Layout::Sharded => format!("{kind}_{}", key % SHARDS),
            Layout::Single => kind.to_string(),
        }
    }

    /// Tables of each kind.
    pub fn shards(self) -> u64 {
        match self {
            Layout::Sharded => SHARDS,
            Layout::Single => 1,
        }
    }
}

/// The client's `max_allowed_packet` on a connection that writes rows with `LOAD DATA`: the
/// size of the packets its rows go in (see [`Mysql::open_with`]).
const LOAD_PACKET_BYTES: usize = 1 << 20;

/// Values one INSERT binds, at most: below both SQLite's limit (32,766) and MySQL's (65,535).
const VALUES_PER_INSERT: usize = 30_000;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("history url {0:?} is neither sqlite://<path> nor mysql://…")]
    Url(String),
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("mysql: {0}")]
    Mysql(#[from] mysql::Error),
    #[error("mysql: {sql}: {loaded} of {rows} rows loaded, {warnings} warnings")]
    Load { sql: String, rows: usize, loaded: u64, warnings: u16 },
    #[error("mysql url: {0}")]
    MysqlUrl(#[from] mysql::UrlError),
}

/// A value bound to or read from a statement.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Null,
    Int(i64),
    Float(f64),
    Text(String),
}

impl SqlValue {
    pub fn as_i64(&self) -> i64 {
        match self {
            SqlValue::Int(v) => *v,
            SqlValue::Float(v) => *v as i64,
            SqlValue::Text(t) => t.parse().unwrap_or(0),
            SqlValue::Null => 0,
        }
    }

    pub fn as_f64(&self) -> f64 {
        match self {
            SqlValue::Int(v) => *v as f64,
            SqlValue::Float(v) => *v,
            SqlValue::Text(t) => t.parse().unwrap_or(0.0),
            SqlValue::Null => 0.0,
        }
    }

    pub fn as_text(&self) -> String {
        match self {
            SqlValue::Text(t) => t.clone(),
            SqlValue::Int(v) => v.to_string(),
            SqlValue::Float(v) => v.to_string(),
            SqlValue::Null => String::new(),
        }
    }
}

/// Where history lives.
pub trait Store: Send {
    /// Creates whatever table is missing.
    fn create_tables(&mut self) -> Result<(), StoreError>;
    /// The sequence of the last command whose rows are committed (0 for none).
    fn committed_seq(&mut self) -> Result<u64, StoreError>;
    /// Commits `rows` and `seq` in one transaction.
    fn write(&mut self, rows: &Rows, seq: u64) -> Result<(), StoreError>;
    /// Runs one SELECT.
    fn select(&mut self, sql: &str, params: &[SqlValue]) -> Result<Vec<Vec<SqlValue>>, StoreError>;
    /// Opens the connection again after a failure (a MySQL server that restarted).
    fn reconnect(&mut self) -> Result<(), StoreError>;
    /// How its tables are split.
    fn layout(&self) -> Layout;
}

/// Opens the store `url` names.
/// Whether `url` can name a store at all (its syntax), without reaching it.
pub fn check_url(url: &str) -> Result<(), StoreError> {
    match url.strip_prefix("sqlite://") {
        Some("") => Err(StoreError::Url(url.to_string())),
        Some(_) => Ok(()),
        None if url.starts_with("mysql://") => mysql::Opts::from_url(url).map(drop).map_err(StoreError::from),
        None => Err(StoreError::Url(url.to_string())),
    }
}

pub fn open(url: &str) -> Result<Box<dyn Store>, StoreError> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        return Ok(Box::new(Sqlite::open(path)?));
    }
    if url.starts_with("mysql://") {
        return Ok(Box::new(Mysql::open(url)?));
    }
    Err(StoreError::Url(url.to_string()))
}

#[derive(Clone, Copy, PartialEq)]
enum Dialect {
    Sqlite,
    Mysql,
}

/// A column: its name and its logical type.
enum Col {
    Id,
    Time,
    U32,
    U64,
    U8,
    Str,
    Text,
    /// DECIMAL(30, scale); TEXT in SQLite, whose DECIMAL would turn it into a float.
    Dec(u32),
}

struct Table {
    name: &'static str,
    columns: &'static [(&'static str, Col)],
    indexes: &'static [&'static [&'static str]],
}

const TABLES: [Table; 5] = [
    Table {
        name: "balance_history",
        columns: &[
            ("id", Col::Id),
            ("time", Col::Time),
            ("user_id", Col::U32),
            ("asset", Col::Str),
            ("business", Col::Str),
            ("change", Col::Dec(8)),
            ("balance", Col::Dec(16)),
            ("detail", Col::Text),
        ],
        indexes: &[&["user_id", "asset"], &["user_id", "asset", "business"]],
    },
    Table { name: "order_history", columns: &ORDER_COLUMNS, indexes: &[&["user_id", "market"]] },
    Table { name: "order_detail", columns: &ORDER_COLUMNS, indexes: &[&["user_id", "market"]] },
    Table {
        name: "deal_history",
        columns: &[
            ("id", Col::Id),
            ("time", Col::Time),
            ("user_id", Col::U32),
            ("deal_id", Col::U64),
            ("order_id", Col::U64),
            ("deal_order_id", Col::U64),
            ("role", Col::U8),
            ("price", Col::Dec(8)),
            ("amount", Col::Dec(8)),
            ("deal", Col::Dec(16)),
            ("fee", Col::Dec(16)),
            ("deal_fee", Col::Dec(16)),
        ],
        indexes: &[&["order_id"]],
    },
    Table {
        name: "user_deal_history",
        columns: &[
            ("id", Col::Id),
            ("time", Col::Time),
            ("user_id", Col::U32),
            ("market", Col::Str),
            ("deal_id", Col::U64),
            ("order_id", Col::U64),
            ("deal_order_id", Col::U64),
            ("side", Col::U8),
            ("role", Col::U8),
            ("price", Col::Dec(8)),
            ("amount", Col::Dec(8)),
            ("deal", Col::Dec(16)),
            ("fee", Col::Dec(16)),
            ("deal_fee", Col::Dec(16)),
        ],
        indexes: &[&["user_id", "market"]],
    },
];

const ORDER_COLUMNS: [(&str, Col); 15] = [
    ("id", Col::U64),
    ("create_time", Col::Time),
    ("finish_time", Col::Time),
    ("user_id", Col::U32),
    ("market", Col::Str),
    ("source", Col::Str),
    ("t", Col::U8),
    ("side", Col::U8),
    ("price", Col::Dec(8)),
    ("amount", Col::Dec(8)),
    ("taker_fee", Col::Dec(4)),
    ("maker_fee", Col::Dec(4)),
    ("deal_stock", Col::Dec(8)),
    ("deal_money", Col::Dec(16)),
    ("deal_fee", Col::Dec(16)),
];

/// Every CREATE statement of `t`'s table `name`.
fn create_sql(d: Dialect, t: &Table, name: &str) -> Vec<String> {
    let mut cols = Vec::new();
    for (col, kind) in t.columns {
        let ty = match (kind, d) {
            (Col::Id, Dialect::Mysql) => "BIGINT UNSIGNED NOT NULL AUTO_INCREMENT PRIMARY KEY".to_string(),
            // The rowid itself, without AUTOINCREMENT: rows are never deleted, so a new row's id is
            // still one past the largest. AUTOINCREMENT made every INSERT statement scan the
            // `sqlite_sequence` table, one row per table of the 300 with an `id` (names compared
            // one by one): the most of the writer's time under crossing orders.
            (Col::Id, Dialect::Sqlite) => "INTEGER PRIMARY KEY".to_string(),
            (Col::U64, _) if *col == "id" => "BIGINT UNSIGNED NOT NULL PRIMARY KEY".to_string(),
            (Col::Time, _) => "DOUBLE NOT NULL".to_string(),
            (Col::U32, _) => "INT UNSIGNED NOT NULL".to_string(),
            (Col::U64, _) => "BIGINT UNSIGNED NOT NULL".to_string(),
            (Col::U8, _) => "TINYINT UNSIGNED NOT NULL".to_string(),
            (Col::Str, _) => "VARCHAR(30) NOT NULL".to_string(),
            (Col::Text, _) => "TEXT NOT NULL".to_string(),
            (Col::Dec(s), Dialect::Mysql) => format!("DECIMAL(30,{s}) NOT NULL"),
            (Col::Dec(_), Dialect::Sqlite) => "TEXT NOT NULL".to_string(),
        };
        cols.push(format!("`{col}` {ty}"));
    }
    let mut out = Vec::new();
    match d {
        Dialect::Mysql => {
            for (i, idx) in t.indexes.iter().enumerate() {
                let list: Vec<String> = idx.iter().map(|c| format!("`{c}`")).collect();
                cols.push(format!("INDEX `idx_{i}` ({})", list.join(", ")));
            }
            out.push(format!(
                "CREATE TABLE IF NOT EXISTS `{name}` ({}) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4",
                cols.join(", ")
            ));
        }
        Dialect::Sqlite => {
            out.push(format!("CREATE TABLE IF NOT EXISTS `{name}` ({})", cols.join(", ")));
            for (i, idx) in t.indexes.iter().enumerate() {
                let list: Vec<String> = idx.iter().map(|c| format!("`{c}`")).collect();
                out.push(format!("CREATE INDEX IF NOT EXISTS `{name}_idx_{i}` ON `{name}` ({})", list.join(", ")));
            }
        }
    }
    out
}

fn state_sql() -> [&'static str; 2] {
    [
        "CREATE TABLE IF NOT EXISTS `history_state` (`id` INT NOT NULL PRIMARY KEY, `seq` BIGINT UNSIGNED NOT NULL)",
        "INSERT INTO `history_state` (`id`, `seq`) SELECT 1, 0 WHERE NOT EXISTS (SELECT 1 FROM `history_state` WHERE `id` = 1)",
    ]
}

/// One multi-row INSERT: its SQL and its values.
struct Insert {
    sql: String,
    values: Vec<SqlValue>,
}

/// The rows of one table and shard: (index into [`TABLES`], shard) → rows of values, every
/// column but an auto-increment id.
type Groups = std::collections::BTreeMap<(usize, u64), Vec<Vec<SqlValue>>>;

/// `rows` grouped by table and shard of `layout`.
fn groups(rows: &Rows, layout: Layout) -> Groups {
    let shards = layout.shards();
    let mut groups = Groups::new();
    let (int, float, text) =
        (|v: u64| SqlValue::Int(v as i64), SqlValue::Float, |s: &String| SqlValue::Text(s.clone()));
    for b in &rows.balances {
        let v = vec![
            float(b.time),
            int(u64::from(b.user)),
            text(&b.asset),
            text(&b.business),
            text(&b.change),
            text(&b.balance),
            text(&b.detail),
        ];
        groups.entry((0, u64::from(b.user) % shards)).or_default().push(v);
    }
    for o in &rows.orders {
        let v = vec![
            int(o.id),
            float(o.create_time),
            float(o.finish_time),
            int(u64::from(o.user)),
            text(&o.market),
            text(&o.source),
            int(u64::from(o.kind)),
            int(u64::from(o.side)),
            text(&o.price),
            text(&o.amount),
            text(&o.taker_fee),
            text(&o.maker_fee),
            text(&o.deal_stock),
            text(&o.deal_money),
            text(&o.deal_fee),
        ];
        groups.entry((1, u64::from(o.user) % shards)).or_default().push(v.clone());
        groups.entry((2, o.id % shards)).or_default().push(v);
    }
    for d in &rows.deals {
        let tail = [text(&d.price), text(&d.amount), text(&d.deal), text(&d.fee), text(&d.deal_fee)];
        let mut deal =
            vec![float(d.time), int(u64::from(d.user)), int(d.deal_id), int(d.order_id), int(d.deal_order_id)];
        deal.push(int(u64::from(d.role)));
        deal.extend(tail.iter().cloned());
        groups.entry((3, d.order_id % shards)).or_default().push(deal);
        let mut user = vec![float(d.time), int(u64::from(d.user)), text(&d.market), int(d.deal_id), int(d.order_id)];
        user.extend([int(d.deal_order_id), int(u64::from(d.side)), int(u64::from(d.role))]);
        user.extend(tail);
        groups.entry((4, u64::from(d.user) % shards)).or_default().push(user);
    }
    groups
}

/// The written columns of `t` (every one but an auto-increment id), quoted and comma-separated.
fn column_list(t: &Table) -> String {
    let cols: Vec<String> =
        t.columns.iter().filter(|(_, k)| !matches!(k, Col::Id)).map(|(c, _)| format!("`{c}`")).collect();
    cols.join(", ")
}

/// The INSERT of one row into `t`'s table `name`.
fn single_insert(t: &Table, name: &str) -> String {
    let width = t.columns.iter().filter(|(_, k)| !matches!(k, Col::Id)).count();
    format!("INSERT INTO `{name}` ({}) VALUES ({})", column_list(t), vec!["?"; width].join(", "))
}

/// The INSERTs that write `rows` into MySQL, grouped by table shard, each binding at most
/// [`VALUES_PER_INSERT`] values.
fn inserts(rows: &Rows) -> Vec<Insert> {
    let mut out = Vec::new();
    for ((table, shard), all) in groups(rows, Layout::Sharded) {
        let t = &TABLES[table];
        let cols = column_list(t);
        let width = all.first().map_or(0, Vec::len);
        let one = format!("({})", vec!["?"; width].join(", "));
        for chunk in all.chunks((VALUES_PER_INSERT / width.max(1)).max(1)) {
            let mut sql = format!("INSERT INTO `{}` ({cols}) VALUES ", Layout::Sharded.table(t.name, shard));
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push_str(", ");
                }
                sql.push_str(&one);
            }
            out.push(Insert { sql, values: chunk.iter().flatten().cloned().collect() });
        }
    }
    out
}

/// One `LOAD DATA LOCAL INFILE` of a table shard: its statement (which holds no value) and the
/// rows it reads, tab-separated.
struct Load {
    sql: String,
    rows: usize,
    data: Vec<u8>,
}

/// The load of one table shard's rows (a group of [`groups`]); built only when its statement
/// runs, so that one shard's stream is in memory at a time.
fn load((table, shard): (usize, u64), all: &[Vec<SqlValue>]) -> Load {
    let t = &TABLES[table];
    let sql = format!(
        "LOAD DATA LOCAL INFILE 'viaduct-rows' INTO TABLE `{}` CHARACTER SET utf8mb4 \
         FIELDS TERMINATED BY '\\t' ESCAPED BY '\\\\' LINES TERMINATED BY '\\n' ({})",
        Layout::Sharded.table(t.name, shard),
        column_list(t)
    );
    let mut data = Vec::with_capacity(all.len() * 128);
    for row in all {
        for (i, v) in row.iter().enumerate() {
            if i > 0 {
                data.push(b'\t');
            }
            tsv_field(&mut data, v);
        }
        data.push(b'\n');
    }
    Load { sql, rows: all.len(), data }
}

/// One field as `LOAD DATA` reads it with `ESCAPED BY '\\'`: NULL as `\N`, and in text every
/// backslash, tab, newline, carriage return and NUL escaped, so no value can end a field or a row.
fn tsv_field(out: &mut Vec<u8>, v: &SqlValue) {
    match v {
        SqlValue::Null => out.extend_from_slice(b"\\N"),
        SqlValue::Int(i) => {
            let _ = std::io::Write::write_fmt(out, format_args!("{i}"));
        }
        // Rust prints an f64 in plain decimal notation with the fewest digits that read back as
        // the same number.
        SqlValue::Float(f) => {
            let _ = std::io::Write::write_fmt(out, format_args!("{f}"));
        }
        SqlValue::Text(t) => {
            for &b in t.as_bytes() {
                match b {
                    b'\\' => out.extend_from_slice(b"\\\\"),
                    b'\t' => out.extend_from_slice(b"\\t"),
                    b'\n' => out.extend_from_slice(b"\\n"),
                    b'\r' => out.extend_from_slice(b"\\r"),
                    0 => out.extend_from_slice(b"\\0"),
                    _ => out.push(b),
                }
            }
        }
    }
}

/// SQLite, in WAL mode: a reader never waits for the writer.
pub struct Sqlite {
    conn: rusqlite::Connection,
    layout: Layout,
}

impl Sqlite {
    /// Opens (or creates) the file at `path`: a file with ViaBTC's shard tables keeps them
    /// ([`Layout::Sharded`]); any other is [`Layout::Single`].
    pub fn open(path: &str) -> Result<Sqlite, StoreError> {
        let conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        let sharded: i64 = conn.query_row(
            "SELECT COUNT(*) FROM `sqlite_master` WHERE `type` = 'table' AND `name` = ?1",
            [Layout::Sharded.table(TABLES[0].name, 0)],
            |r| r.get(0),
        )?;
        let layout = if sharded > 0 { Layout::Sharded } else { Layout::Single };
        // Room for the INSERT of every table, and the readers' queries.
        conn.set_prepared_statement_cache_capacity(TABLES.len() * layout.shards() as usize + 64);
        Ok(Sqlite { conn, layout })
    }

    /// A new file at `path` in ViaBTC's shard tables, as a build before [`Layout::Single`] wrote
    /// it (for the tests that an old file goes on being read and written as it is).
    pub fn create_sharded(path: &str) -> Result<Sqlite, StoreError> {
        let mut store = Sqlite::open(path)?;
        store.layout = Layout::Sharded;
        store.create_tables()?;
        Sqlite::open(path)
    }
}

/// A value bound as it is, text included, without a copy.
impl rusqlite::ToSql for SqlValue {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::ValueRef;
        Ok(rusqlite::types::ToSqlOutput::Borrowed(match self {
            SqlValue::Null => ValueRef::Null,
            SqlValue::Int(i) => ValueRef::Integer(*i),
            SqlValue::Float(f) => ValueRef::Real(*f),
            SqlValue::Text(t) => ValueRef::Text(t.as_bytes()),
        }))
    }
}

impl Store for Sqlite {
    fn create_tables(&mut self) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        for t in &TABLES {
            for shard in 0..self.layout.shards() {
                for sql in create_sql(Dialect::Sqlite, t, &self.layout.table(t.name, shard)) {
                    tx.execute(&sql, [])?;
                }
            }
        }
        for sql in state_sql() {
            tx.execute(sql, [])?;
        }
        tx.commit()?;
        Ok(())
    }

    fn committed_seq(&mut self) -> Result<u64, StoreError> {
        let seq: i64 = self.conn.query_row("SELECT `seq` FROM `history_state` WHERE `id` = 1", [], |r| r.get(0))?;
        Ok(seq as u64)
    }

    /// One single-row INSERT per row, prepared once per table shard and kept: multi-row INSERTs
    /// (as into MySQL) differ in their text with their row count, so nearly every one was parsed
    /// afresh, and each kept a statement journal to undo it alone; the two were 30 % of the
    /// writer's thread.
    fn write(&mut self, rows: &Rows, seq: u64) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        for ((table, shard), all) in groups(rows, self.layout) {
            let t = &TABLES[table];
            let mut insert = tx.prepare_cached(&single_insert(t, &self.layout.table(t.name, shard)))?;
            for row in &all {
                insert.execute(rusqlite::params_from_iter(row.iter()))?;
            }
        }
        tx.execute("UPDATE `history_state` SET `seq` = ?1 WHERE `id` = 1", [seq as i64])?;
        tx.commit()?;
        Ok(())
    }

    fn select(&mut self, sql: &str, params: &[SqlValue]) -> Result<Vec<Vec<SqlValue>>, StoreError> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let n = stmt.column_count();
        let mut rows = stmt.query(rusqlite::params_from_iter(params))?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            let mut r = Vec::with_capacity(n);
            for i in 0..n {
                r.push(match row.get_ref(i)? {
                    rusqlite::types::ValueRef::Null => SqlValue::Null,
                    rusqlite::types::ValueRef::Integer(v) => SqlValue::Int(v),
                    rusqlite::types::ValueRef::Real(v) => SqlValue::Float(v),
                    rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => {
                        SqlValue::Text(String::from_utf8_lossy(t).into_owned())
                    }
                });
            }
            out.push(r);
        }
        Ok(out)
    }

    fn reconnect(&mut self) -> Result<(), StoreError> {
        Ok(())
    }

    fn layout(&self) -> Layout {
        self.layout
    }
}

/// MySQL or MariaDB, over one connection. Rows go in with `LOAD DATA LOCAL INFILE` (one statement
/// per table shard, its rows streamed after it: the server parses no SQL per row, about three
/// times the rows per second of prepared multi-row INSERTs here) where the server allows it
/// (`local_infile`), and with prepared INSERTs where it does not.
pub struct Mysql {
    opts: mysql::Opts,
    conn: mysql::Conn,
    /// The rows the next `LOAD DATA` statement reads; the only thing the connection ever sends
    /// the server for a file it asks for, whatever name it asks by.
    staged: std::sync::Arc<std::sync::Mutex<Option<Vec<u8>>>>,
    load: bool,
}

impl Mysql {
    pub fn open(url: &str) -> Result<Mysql, StoreError> {
        Mysql::open_with(url, true)
    }

    /// [`Mysql::open`]; `load: false` writes with INSERTs even where `LOAD DATA` is allowed.
    pub fn open_with(url: &str, load: bool) -> Result<Mysql, StoreError> {
        let staged = std::sync::Arc::new(std::sync::Mutex::new(None::<Vec<u8>>));
        let handler = {
            let staged = std::sync::Arc::clone(&staged);
            mysql::LocalInfileHandler::new(move |_name, out| {
                let data = staged.lock().unwrap_or_else(|p| p.into_inner()).take();
                match data {
                    Some(data) => std::io::Write::write_all(out, &data),
                    None => Err(std::io::Error::other("the server asked for a file no statement named")),
                }
            })
        };
        let builder = mysql::OptsBuilder::from_opts(mysql::Opts::from_url(url)?).local_infile_handler(Some(handler));
        let mut conn = mysql::Conn::new(builder.clone())?;
        let allowed: Option<i64> = conn.query_first("SELECT @@local_infile")?;
        let load = load && allowed == Some(1);
        if !load {
            return Ok(Mysql { opts: builder.into(), conn, staged, load });
        }
        // The client library gives every `LOAD DATA` a zeroed buffer of the connection's
        // `max_allowed_packet` (the server's, 16 MiB, unless the client sets its own): a
        // transaction writes one statement per table shard, hundreds, so zeroing those buffers
        // took more of the writer than anything else. Its rows go in packets of this size
        // instead; nothing else this connection sends or reads comes near it (the statements
        // are short, the replies single rows).
        let opts: mysql::Opts = builder.max_allowed_packet(Some(LOAD_PACKET_BYTES)).into();
        let conn = mysql::Conn::new(opts.clone())?;
        Ok(Mysql { opts, conn, staged, load })
    }
}

fn to_mysql(v: &SqlValue) -> mysql::Value {
    match v {
        SqlValue::Null => mysql::Value::NULL,
        SqlValue::Int(i) => mysql::Value::Int(*i),
        SqlValue::Float(f) => mysql::Value::Double(*f),
        SqlValue::Text(t) => mysql::Value::Bytes(t.as_bytes().to_vec()),
    }
}

impl Store for Mysql {
    fn create_tables(&mut self) -> Result<(), StoreError> {
        // One round trip per missing table: a restart finds them all and creates nothing.
        let existing: Vec<String> = self.conn.query("SHOW TABLES")?;
        for t in &TABLES {
            for shard in 0..SHARDS {
                let name = Layout::Sharded.table(t.name, shard);
                if existing.contains(&name) {
                    continue;
                }
                for sql in create_sql(Dialect::Mysql, t, &name) {
                    self.conn.query_drop(sql)?;
                }
            }
        }
        for sql in state_sql() {
            self.conn.query_drop(sql)?;
        }
        Ok(())
    }

    fn committed_seq(&mut self) -> Result<u64, StoreError> {
        let seq: Option<u64> = self.conn.query_first("SELECT `seq` FROM `history_state` WHERE `id` = 1")?;
        Ok(seq.unwrap_or(0))
    }

    fn write(&mut self, rows: &Rows, seq: u64) -> Result<(), StoreError> {
        let mut tx = self.conn.start_transaction(mysql::TxOpts::default())?;
        if self.load {
            for (key, all) in groups(rows, Layout::Sharded) {
                let load = load(key, &all);
                *self.staged.lock().unwrap_or_else(|p| p.into_inner()) = Some(load.data);
                let result = tx.query_iter(&load.sql)?;
                let (loaded, warnings) = (result.affected_rows(), result.warnings());
                drop(result);
                // LOCAL turns a value the server cannot take into a warning; here it is an error,
                // so that no row goes in altered.
                if loaded != load.rows as u64 || warnings != 0 {
                    return Err(StoreError::Load { sql: load.sql, rows: load.rows, loaded, warnings });
                }
            }
        } else {
            for ins in inserts(rows) {
                let values: Vec<mysql::Value> = ins.values.iter().map(to_mysql).collect();
                tx.exec_drop(&ins.sql, mysql::Params::Positional(values))?;
            }
        }
        tx.exec_drop("UPDATE `history_state` SET `seq` = ? WHERE `id` = 1", (seq,))?;
        tx.commit()?;
        Ok(())
    }

    fn select(&mut self, sql: &str, params: &[SqlValue]) -> Result<Vec<Vec<SqlValue>>, StoreError> {
        let values: Vec<mysql::Value> = params.iter().map(to_mysql).collect();
        let params = if values.is_empty() { mysql::Params::Empty } else { mysql::Params::Positional(values) };
        let rows: Vec<mysql::Row> = self.conn.exec(sql, params)?;
        Ok(rows
            .into_iter()
            .map(|row| {
                row.unwrap()
                    .into_iter()
                    .map(|v| match v {
                        mysql::Value::NULL => SqlValue::Null,
                        mysql::Value::Int(i) => SqlValue::Int(i),
                        mysql::Value::UInt(u) => SqlValue::Int(u as i64),
                        mysql::Value::Float(f) => SqlValue::Float(f64::from(f)),
                        mysql::Value::Double(f) => SqlValue::Float(f),
                        mysql::Value::Bytes(b) => SqlValue::Text(String::from_utf8_lossy(&b).into_owned()),
                        other => SqlValue::Text(other.as_sql(true)),
                    })
                    .collect()
            })
            .collect())
    }

    fn reconnect(&mut self) -> Result<(), StoreError> {
        self.conn = mysql::Conn::new(self.opts.clone())?;
        Ok(())
    }

    fn layout(&self) -> Layout {
        Layout::Sharded
    }
}
