#!/usr/bin/env python3
"""One order that sweeps the book, against a running `viaduct run` (loopback only).

Places N resting asks of 0.001 BTC at 1 BCH (pipelined HTTP), then one market bid that would take
them all, while a probe client sends `balance.query` on its own connection every 5 ms. Prints the
sweep's reply time and deals, the probe's latency percentiles during the sweep against before it,
and the server's resident set (VmRSS) before, at its peak (VmHWM) and settled.

    benches/sweep.py --http 127.0.0.1:8080 --pid $(pidof viaduct) --resting 20000
"""
import argparse
import json
import socket
import threading
import time


def request(i, method, params):
    body = json.dumps({"id": i, "method": method, "params": params})
    return ("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)).encode()


class Conn:
    def __init__(self, addr):
        host, port = addr.split(":")
        self.s = socket.create_connection((host, int(port)))
        self.s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def read(self):
        while True:
            head_end = self.buf.find(b"\r\n\r\n")
            if head_end >= 0:
                head = self.buf[:head_end].decode()
                length = int([l.split(":")[1] for l in head.split("\r\n") if l.lower().startswith("content-length")][0])
                if len(self.buf) >= head_end + 4 + length:
                    body = self.buf[head_end + 4:head_end + 4 + length]
                    self.buf = self.buf[head_end + 4 + length:]
                    return int(head.split(" ")[1]), json.loads(body)
            chunk = self.s.recv(1 << 20)
            if not chunk:
                raise RuntimeError("closed")
            self.buf += chunk

    def call(self, i, method, params):
        self.s.sendall(request(i, method, params))
        return self.read()


def rss(pid):
    fields = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, v = line.split(":", 1)
            fields[k] = v.strip()
    return fields["VmRSS"], fields["VmHWM"]


def percentiles(xs):
    xs = sorted(xs)
    if not xs:
        return "none"
    at = lambda p: xs[min(len(xs) - 1, int(p * len(xs)))]
    return "p50 %.2f ms, p99 %.2f ms, max %.2f ms (%d)" % (at(0.5) * 1e3, at(0.99) * 1e3, xs[-1] * 1e3, len(xs))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--http", default="127.0.0.1:8080")
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--resting", type=int, default=20000)
    a = ap.parse_args()
    c = Conn(a.http)
    stamp = int(time.time())
    print("deposit:", c.call(1, "balance.update", [1, "BTC", "deposit", stamp, "100000", {}])[1]["error"])
    print("deposit:", c.call(2, "balance.update", [2, "BCH", "deposit", stamp, "10000000", {}])[1]["error"])
    batch = 500
    for start in range(0, a.resting, batch):
        n = min(batch, a.resting - start)
        c.s.sendall(b"".join(request(start + k, "order.put_limit", [1, "BTCBCH", 1, "0.001", "1", "0", "0", "r"]) for k in range(n)))
        for _ in range(n):
            status, reply = c.read()
            assert status == 200 and reply["error"] is None, reply
    print("resting asks placed:", a.resting, "RSS %s (peak %s)" % rss(a.pid))

    stop = threading.Event()
    probes = []

    def probe():
        p = Conn(a.http)
        i = 0
        while not stop.is_set():
            i += 1
            t = time.perf_counter()
            p.call(i, "balance.query", [1, "BTC"])
            probes.append((t, time.perf_counter() - t))
            time.sleep(0.005)

    th = threading.Thread(target=probe)
    th.start()
    time.sleep(1.0)
    sweeper = Conn(a.http)
    t0 = time.perf_counter()
    status, reply = sweeper.call(9, "order.put_market", [2, "BTCBCH", 2, "1000000", "0", "sweep"])
    t1 = time.perf_counter()
    time.sleep(1.0)
    stop.set()
    th.join()
    r = reply.get("result") or {}
    print("sweep: HTTP %d in %.1f ms, deal_stock %s (%s deals of 0.001), error %s" % (
        status, (t1 - t0) * 1e3, r.get("deal_stock"), int(float(r.get("deal_stock", "0")) * 1000), reply.get("error")))
    before = [d for (t, d) in probes if t < t0]
    during = [d for (t, d) in probes if t0 <= t <= t1 + 0.2]
    print("probe before:", percentiles(before))
    print("probe during the sweep (to 200 ms after its reply):", percentiles(during))
    print("RSS after the sweep: %s (peak %s)" % rss(a.pid))
    time.sleep(5)
    print("RSS settled, 5 s later: %s (peak %s)" % rss(a.pid))


if __name__ == "__main__":
    main()
