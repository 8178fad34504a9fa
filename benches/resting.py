#!/usr/bin/env python3
"""Fills a running `viaduct run` with resting orders over HTTP (loopback only) and prints its
resident set: empty, with 1,000 funded users, with N resting asks, and 5 s later.

    benches/resting.py --http 127.0.0.1:8080 --pid $(pgrep -f 'viaduct run') --orders 1000000

Asks of 0.001 BTC from 1,000 users on 5,000 price levels of BTCBCH, pipelined 2,000 at a time.
"""
import argparse
import json
import socket
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--http", default="127.0.0.1:8080")
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--orders", type=int, default=1_000_000)
    a = ap.parse_args()
    host, port = a.http.split(":")
    s = socket.create_connection((host, int(port)))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    state = {"buf": b""}

    def req(i, method, params):
        body = json.dumps({"id": i, "method": method, "params": params})
        return ("POST / HTTP/1.1\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)).encode()

    def read(k):
        got = 0
        while got < k:
            buf = state["buf"]
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                head = buf[:end].decode()
                length = int([l.split(":")[1] for l in head.split("\r\n") if l.lower().startswith("content-length")][0])
                if len(buf) >= end + 4 + length:
                    body = buf[end + 4:end + 4 + length]
                    state["buf"] = buf[end + 4 + length:]
                    got += 1
                    if b'"error":null' not in body:
                        sys.exit("refused: %r" % body[:200])
                    continue
            state["buf"] += s.recv(1 << 20)

    def rss():
        fields = dict(line.split(":", 1) for line in open("/proc/%d/status" % a.pid))
        return fields["VmRSS"].strip()

    print("empty:", rss())
    users = 1000
    s.sendall(b"".join(req(u, "balance.update", [u, "BTC", "deposit", u, "1000000", {}]) for u in range(1, users + 1)))
    read(users)
    print("%d funded users: %s" % (users, rss()))
    started, batch = time.time(), 2000
    for at in range(0, a.orders, batch):
        n = min(batch, a.orders - at)
        price = lambda i: "100.%04d" % (i % 5000 + 1)
        s.sendall(b"".join(req(i, "order.put_limit", [i % users + 1, "BTCBCH", 1, "0.001", price(i), "0", "0", "r"]) for i in range(at, at + n)))
        read(n)
    print("%d resting orders placed in %.1f s: %s" % (a.orders, time.time() - started, rss()))
    time.sleep(5)
    print("5 s later:", rss())


if __name__ == "__main__":
    main()
