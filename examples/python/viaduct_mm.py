#!/usr/bin/env python3
"""A market maker's client for viaduct's binary order entry, written from edges/PROTOCOL.md alone
(standard library only). Import `Session` to trade; run the file to walk every message of the
protocol against a running server:

    python3 examples/python/viaduct_mm.py --addr 127.0.0.1:7316 \\
        --maker mm-alpha:SECRET --taker mm-beta:SECRET --market BTCBCH

Each step prints one JSON line; the run exits 0 when every reply was what the document says.
The two keys must belong to different users, the maker's user holding at least 3 of the stock
and the taker's at least 1 of the money (at the default price, 0.1)."""

import argparse
import hashlib
import hmac
import json
import socket
import struct
import sys
import time
from decimal import Decimal

VERSION = 1

# Client → server types and their lengths (PROTOCOL.md, "Client → server").
(HELLO, LOGIN, LOGIN_REPLAY, NEW_LIMIT, NEW_MARKET, CANCEL, CANCEL_BY_CLIENT_ID, MASS_CANCEL, AMEND, ORDER_STATUS,
 CLIENT_HEARTBEAT) = (0x01, 0x03, 0x06, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x20)
# Server → client.
CHALLENGE, LOGIN_ACK, LOGIN_REJECT, SESSION_ACK, SERVER_HEARTBEAT = 0x02, 0x04, 0x05, 0x07, 0x21
ACCEPTED, REJECTED, FILLED, CANCELLED, MASS_CANCELLED, AMENDED, ORDER_STATE = 0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36
# ORDER_STATE `state` (PROTOCOL.md, "Order status").
OPEN, FINISHED, NOT_KEPT = 1, 2, 3

# NEW_LIMIT's option bytes (PROTOCOL.md, "Order options").
GTC, IOC, FOK = 0, 1, 2
POST_ONLY = 1
STP_KEY_DEFAULT, STP_NONE, STP_CANCEL_TAKER, STP_CANCEL_MAKER, STP_CANCEL_BOTH = 0, 1, 2, 3, 4
# NEW_MARKET's flags: a bid's amount is the stock to buy.
STOCK_AMOUNT = 1

# Body layouts after the 4-byte header (little-endian), and each message's field names.
SERVER = {
    CHALLENGE: ("CHALLENGE", "<32s", ["nonce"]),
    LOGIN_ACK: ("LOGIN_ACK", "<QII", ["seq", "user", "heartbeat_ms"]),
    LOGIN_REJECT: ("LOGIN_REJECT", "<H2x", ["reason"]),
    SESSION_ACK: ("SESSION_ACK", "<QQII", ["session", "last_seq", "user", "heartbeat_ms"]),
    SERVER_HEARTBEAT: ("SERVER_HEARTBEAT", "<Q", ["last_seq"]),
    ACCEPTED: ("ACCEPTED", "<QQQQ16sBB2xqq",
               ["seq", "time_us", "client_id", "order_id", "market", "side", "kind", "price", "amount"]),
    REJECTED: ("REJECTED", "<QQQHBx", ["seq", "client_id", "order_id", "reason", "request_type"]),
    FILLED: ("FILLED", "<QQQQQ16sBBBxqqq16s",
             ["seq", "time_us", "client_id", "order_id", "deal_id", "market", "side", "role", "fee_scale",
              "price", "amount", "left", "fee"]),
    CANCELLED: ("CANCELLED", "<QQQQ16sBB2xqq",
                ["seq", "time_us", "client_id", "order_id", "market", "why", "side", "left", "price"]),
    MASS_CANCELLED: ("MASS_CANCELLED", "<QQ16sB3x", ["seq", "count", "market", "side"]),
    AMENDED: ("AMENDED", "<QQQQQ16sB3xqq",
              ["seq", "time_us", "client_id", "order_id", "old_order_id", "market", "side", "price", "left"]),
    ORDER_STATE: ("ORDER_STATE", "<QQQQ16sBBBBqqqq16s16s",
                  ["seq", "time_us", "client_id", "order_id", "market", "side", "kind", "state", "fee_scale",
                   "price", "amount", "left", "deal_stock", "deal_money", "deal_fee"]),
}


def field16(name):
    """A market or key name, NUL-padded to 16 bytes."""
    raw = name.encode("ascii")
    if len(raw) > 16:
        raise ValueError(f"{name!r} is longer than 16 bytes")
    return raw.ljust(16, b"\0")


def frame(msg_type, body=b""):
    return struct.pack("<HBB", 4 + len(body), msg_type, VERSION) + body


class Rejected(Exception):
    pass


class Session:
    """One connection: login, orders, cancels, heartbeats, and the server's messages in order,
    each checked against the session sequence."""

    def __init__(self, addr, timeout=10.0):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.next_seq = None

    def close(self):
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data)

    def read(self):
        """The next server message as a dict with its `type` name; heartbeats included."""
        while True:
            if len(self.buf) >= 4:
                length, msg_type, version = struct.unpack_from("<HBB", self.buf)
                if length < 4 or length > 128:
                    raise ValueError(f"a frame length of {length}: the stream cannot be trusted")
                if len(self.buf) >= length:
                    body, self.buf = self.buf[4:length], self.buf[length:]
                    if msg_type not in SERVER or version != VERSION:
                        raise ValueError(f"an unknown message type {msg_type:#x} or version {version}")
                    name, layout, fields = SERVER[msg_type]
                    if struct.calcsize(layout) != len(body):
                        raise ValueError(f"{name} of {length} bytes")
                    msg = dict(zip(fields, struct.unpack(layout, body)))
                    msg["type"] = name
                    for key in ("market",):
                        if key in msg:
                            msg[key] = msg[key].rstrip(b"\0").decode("ascii")
                    for key in ("fee", "deal_money", "deal_fee"):  # i128
                        if key in msg:
                            msg[key] = int.from_bytes(msg[key], "little", signed=True)
                    if "nonce" in msg:
                        msg["nonce"] = msg["nonce"]
                    self._check_seq(msg)
                    return msg
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the server closed the connection")
            self.buf += chunk

    def _check_seq(self, msg):
        if msg["type"] == "LOGIN_ACK":
            self.next_seq = msg["seq"] + 1
        elif msg["type"] == "SERVER_HEARTBEAT":
            if self.next_seq is not None and msg["last_seq"] != self.next_seq - 1:
                raise ValueError(f"a gap: heartbeat says {msg['last_seq']}, we have {self.next_seq - 1}")
        elif "seq" in msg:
            if msg["seq"] != self.next_seq:
                raise ValueError(f"a gap: {msg['type']} has seq {msg['seq']}, expected {self.next_seq}")
            self.next_seq += 1

    def next(self):
        """The next message other than a heartbeat."""
        while True:
            msg = self.read()
            if msg["type"] != "SERVER_HEARTBEAT":
                return msg

    def _challenge(self, key, secret):
        """HELLO, CHALLENGE: the login signature over the nonce, or raises Rejected."""
        key_field = field16(key)
        self.send(frame(HELLO, key_field))
        reply = self.next()
        if reply["type"] != "CHALLENGE":
            raise Rejected(reply)
        return hmac.new(secret.encode(), reply["nonce"] + key_field, hashlib.sha256).digest()

    def login_replay(self, key, secret, session=0, from_seq=1):
        """HELLO, CHALLENGE, LOGIN_REPLAY: a new resumable session (`session` 0) or `session`
        resumed, its reports from `from_seq` on replayed next. Returns SESSION_ACK (keep its
        `session` to resume with) or raises Rejected with LOGIN_REJECT."""
        mac = self._challenge(key, secret)
        self.send(frame(LOGIN_REPLAY, mac + struct.pack("<QQ", session, from_seq)))
        self.next_seq = 1 if session == 0 else from_seq
        reply = self.next()
        if reply["type"] != "SESSION_ACK":
            raise Rejected(reply)
        return reply

    def login(self, key, secret):
        """HELLO, CHALLENGE, LOGIN; returns LOGIN_ACK or raises Rejected with LOGIN_REJECT."""
        self.send(frame(LOGIN, self._challenge(key, secret)))
        reply = self.next()
        if reply["type"] != "LOGIN_ACK":
            raise Rejected(reply)
        return reply

    def new_limit(self, client_id, market, side, price, amount, time_in_force=GTC, flags=0,
                  self_trade=STP_KEY_DEFAULT):
        body = struct.pack("<Q16sBBBBqq", client_id, field16(market), side, time_in_force, flags, self_trade,
                           price, amount)
        self.send(frame(NEW_LIMIT, body))

    def new_market(self, client_id, market, side, amount, self_trade=STP_KEY_DEFAULT, flags=0):
        body = struct.pack("<Q16sBBBxq", client_id, field16(market), side, self_trade, flags, amount)
        self.send(frame(NEW_MARKET, body))

    def order_status(self, market, order_id=0, client_id=0):
        """Where an order stands: by order id, or with order_id 0 by client order id."""
        self.send(frame(ORDER_STATUS, struct.pack("<16sQQ", field16(market), order_id, client_id)))

    def mass_cancel(self, market=None, side=0):
        """Every open order of the user, in `market` (None: every market), on `side` (0: both)."""
        self.send(frame(MASS_CANCEL, struct.pack("<16sB3x", field16(market) if market else b"\0" * 16, side)))

    def amend(self, market, order_id, price=0, left=0):
        """A new price and/or amount left (0 keeps either)."""
        self.send(frame(AMEND, struct.pack("<16sQqq", field16(market), order_id, price, left)))

    def cancel(self, market, order_id):
        self.send(frame(CANCEL, struct.pack("<16sQ", field16(market), order_id)))

    def cancel_by_client_id(self, market, client_id):
        self.send(frame(CANCEL_BY_CLIENT_ID, struct.pack("<16sQ", field16(market), client_id)))

    def heartbeat(self):
        self.send(frame(CLIENT_HEARTBEAT))


def mantissa(text, prec):
    """A decimal as the integer the protocol carries at `prec` decimals."""
    value = Decimal(text).scaleb(prec)
    if value != value.to_integral_value():
        raise ValueError(f"{text} has more than {prec} decimals")
    return int(value)


def expect(msg, **want):
    for key, value in want.items():
        if msg.get(key) != value:
            raise AssertionError(f"{msg['type']}: {key} is {msg.get(key)!r}, expected {value!r} in {msg}")
    print(json.dumps({k: v for k, v in msg.items() if k != "nonce"}))
    return msg


def walk(args):
    """Every message of the document, in a session a market maker would run."""
    maker_key, maker_secret = args.maker.split(":", 1)
    taker_key, taker_secret = args.taker.split(":", 1)
    m, sp, mp = args.market, args.stock_prec, args.money_prec
    price = mantissa(args.price, mp)
    one = mantissa("1", sp)
    run = int(time.time() * 1000) % 10**9 * 1000  # client ids of this run, apart from earlier runs'

    # A wrong signature: LOGIN_REJECT 51, and the server closes the connection.
    s = Session(args.addr)
    try:
        s.login(maker_key, maker_secret + "x")
        raise AssertionError("a wrong secret logged in")
    except Rejected as e:
        expect(e.args[0], type="LOGIN_REJECT", reason=51)
    s.close()

    maker, taker = Session(args.addr), Session(args.addr)
    ack = expect(maker.login(maker_key, maker_secret), type="LOGIN_ACK", seq=1)
    expect(taker.login(taker_key, taker_secret), type="LOGIN_ACK", seq=1)

    # The maker offers 2; the taker buys 1 of it: ACCEPTED, the taker's FILLED, the maker's.
    maker.new_limit(run + 1, m, 1, price, 2 * one)
    ask = expect(maker.next(), type="ACCEPTED", client_id=run + 1, side=1, kind=1, price=price, amount=2 * one)
    taker.new_limit(run + 2, m, 2, price, one)
    expect(taker.next(), type="ACCEPTED", client_id=run + 2, side=2)
    expect(taker.next(), type="FILLED", role=1, amount=one, left=0, price=price)
    expect(maker.next(), type="FILLED", role=2, order_id=ask["order_id"], amount=one, left=one)

    # A resend of the maker's client order id changes nothing: REJECTED 13 names the order.
    maker.new_limit(run + 1, m, 1, price, 2 * one)
    expect(maker.next(), type="REJECTED", reason=13, order_id=ask["order_id"], request_type=NEW_LIMIT)

    # A market bid spending half of what the rest costs (money at the stock's precision).
    spend = mantissa(str(Decimal(args.price) / 2), sp)
    taker.new_market(run + 3, m, 2, spend)
    expect(taker.next(), type="ACCEPTED", kind=2, amount=spend)
    expect(taker.next(), type="FILLED", role=1, left=0)
    expect(maker.next(), type="FILLED", role=2, left=one // 2)
    # A market bid by stock amount (flags bit 0, kind 3): a quarter of the stock, whatever it costs.
    taker.new_market(run + 10, m, 2, one // 4, flags=STOCK_AMOUNT)
    expect(taker.next(), type="ACCEPTED", kind=3, amount=one // 4)
    expect(taker.next(), type="FILLED", role=1, amount=one // 4, left=0)
    expect(maker.next(), type="FILLED", role=2, left=one // 4)

    # Order status: the ask is open with a quarter left, by its client order id.
    maker.order_status(m, client_id=run + 1)
    expect(maker.next(), type="ORDER_STATE", state=OPEN, order_id=ask["order_id"], left=one // 4,
           deal_stock=one + 3 * (one // 4))

    # The rest of the ask, cancelled by its client order id; then by order id: not found.
    maker.cancel_by_client_id(m, run + 1)
    expect(maker.next(), type="CANCELLED", why=1, order_id=ask["order_id"], side=1, price=price, left=one // 4)
    maker.cancel(m, ask["order_id"])
    expect(maker.next(), type="REJECTED", reason=20, order_id=ask["order_id"], request_type=CANCEL)
    # Now finished, as it ended; an order id no order has is refused.
    maker.order_status(m, ask["order_id"])
    expect(maker.next(), type="ORDER_STATE", state=FINISHED, order_id=ask["order_id"], left=one // 4)
    maker.order_status(m, ask["order_id"] + 10**9)
    expect(maker.next(), type="REJECTED", reason=20, request_type=ORDER_STATUS)

    # Options: an IOC bid with nothing to meet is cancelled at once (why 4); a post-only ask rests,
    # a post-only bid that would take it and a FOK bid for more than there is are refused.
    taker.new_limit(run + 6, m, 2, price, one, time_in_force=IOC)
    ioc = expect(taker.next(), type="ACCEPTED", client_id=run + 6)
    expect(taker.next(), type="CANCELLED", why=4, order_id=ioc["order_id"], left=one)
    maker.new_limit(run + 7, m, 1, price, one, flags=POST_ONLY)
    quote = expect(maker.next(), type="ACCEPTED", client_id=run + 7)
    taker.new_limit(run + 8, m, 2, price, one, flags=POST_ONLY)
    expect(taker.next(), type="REJECTED", reason=14, client_id=run + 8)
    taker.new_limit(run + 9, m, 2, price, 2 * one, time_in_force=FOK)
    expect(taker.next(), type="REJECTED", reason=15, client_id=run + 9)

    # Amend: half as much at the same price keeps the order (and its place); a new price
    # replaces it with a new order id.
    maker.amend(m, quote["order_id"], left=one // 2)
    expect(maker.next(), type="AMENDED", order_id=quote["order_id"], old_order_id=quote["order_id"], left=one // 2)
    maker.amend(m, quote["order_id"], price=2 * price)
    moved = expect(maker.next(), type="AMENDED", old_order_id=quote["order_id"], price=2 * price, left=one // 2)
    if moved["order_id"] == quote["order_id"]:
        raise AssertionError("a new price kept the order id")

    # Mass cancel: the maker's one open order in the market.
    maker.mass_cancel(m)
    expect(maker.next(), type="MASS_CANCELLED", count=1, side=0)

    # A resumable session (LOGIN_REPLAY): its connection is lost with an order resting; the next
    # connection resumes it from sequence 1 and gets the ACCEPTED again, then the MASS_CANCELLED
    # of its orders cancelled on disconnect (the taker's key keeps the default), sequence 2.
    t = Session(args.addr)
    first = expect(t.login_replay(taker_key, taker_secret), type="SESSION_ACK", last_seq=0)
    t.new_limit(run + 20, m, 2, price // 2, one // 4)
    bid = expect(t.next(), type="ACCEPTED", seq=1, client_id=run + 20)
    t.close()
    t = Session(args.addr)
    expect(t.login_replay(taker_key, taker_secret, first["session"], 1), type="SESSION_ACK", session=first["session"])
    expect(t.next(), type="ACCEPTED", seq=1, order_id=bid["order_id"])
    expect(t.next(), type="MASS_CANCELLED", seq=2, count=1)
    t.close()

    # A market order with nothing to meet, an unknown market, a bad message: each refused, the
    # session goes on.
    maker.new_market(run + 4, m, 1, one)
    expect(maker.next(), type="REJECTED", reason=12, client_id=run + 4)
    maker.new_limit(run + 5, "NOSUCHMARKET", 1, price, one)
    expect(maker.next(), type="REJECTED", reason=30, client_id=run + 5)
    maker.send(frame(0x7E, b"\0" * 4))
    expect(maker.next(), type="REJECTED", reason=41, request_type=0x7E)

    # Heartbeats: the client's every second; the server's after heartbeat_ms of quiet, carrying
    # the last sequence it sent.
    maker.heartbeat()
    beat = maker.read()
    expect(beat, type="SERVER_HEARTBEAT", last_seq=maker.next_seq - 1)
    if ack["heartbeat_ms"] <= 0:
        raise AssertionError("no heartbeat interval")
    maker.close()
    taker.close()
    print(json.dumps({"done": True}))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--addr", default="127.0.0.1:7316")
    p.add_argument("--maker", required=True, help="KEY:SECRET of the maker's key")
    p.add_argument("--taker", required=True, help="KEY:SECRET of the taker's key")
    p.add_argument("--market", default="BTCBCH")
    p.add_argument("--stock-prec", type=int, default=8)
    p.add_argument("--money-prec", type=int, default=8)
    p.add_argument("--price", default="0.1")
    try:
        walk(p.parse_args())
    except (AssertionError, ValueError, ConnectionError, OSError) as e:
        print(f"viaduct_mm: {e}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
