#!/usr/bin/env python3
"""python-etcd3's Lock, driven by lockbench (benches/lockbench) over stdin/stdout, one word per line.

Modes:
  uncontended --name N --count C --ttl T    acquire + release C times; prints "sample <microseconds>"
  handoff     --name N --ttl T              loop: "trying", acquire, "held", wait for a stdin line,
                                            release, "released", wait for a stdin line (two of these
                                            pass the lock around; the one that let go waits to be
                                            told to queue again, so it cannot barge back in)
  hold        --name N --ttl T              "trying", acquire, "held", refresh the lease every TTL/3
                                            until stdin closes, then release (fail-over, footprint)
  contend     --name N --threads K --ttl T --timeout W --cap S
                                            K threads (and with --own-client K clients) get
                                            ready, print "ready", wait for a stdin line, then
                                            each acquire + release once, calling
                                            acquire(timeout=W) again until it succeeds or S seconds
                                            passed; prints "done ok=<n> failed=<m> lost=<l>
                                            wall=<seconds>": lost = watches that ended by timing
                                            out (no event for W seconds: a lost wake-up)

python-etcd3 0.12 talks to one member (--host/--port). Its Lock puts one key /locks/NAME with a
fresh lease per attempt; waiters watch that key and retry on any event.
"""
import argparse
import sys
import threading
import time

import etcd3


def say(*words):
    print(*words, flush=True)


def uncontended(client, a):
    lock = client.lock(a.name, ttl=a.ttl)
    for _ in range(5):  # warm-up: connection, first lease
        lock.acquire(timeout=10)
        lock.release()
    for _ in range(a.count):
        t = time.perf_counter()
        if not lock.acquire(timeout=10):
            say("failed")
            continue
        lock.release()
        say("sample", int((time.perf_counter() - t) * 1e6))
    say("done")


def handoff(client, a):
    lock = client.lock(a.name, ttl=a.ttl)
    client.get(lock.key)  # connect before the first "trying"
    while True:
        say("trying")
        if not lock.acquire(timeout=60):
            say("timeout")
            continue
        say("held")
        if not sys.stdin.readline():
            lock.release()
            return
        lock.release()
        say("released")
        if not sys.stdin.readline():
            return


def hold(client, a):
    lock = client.lock(a.name, ttl=a.ttl)
    client.get(lock.key)  # connect before "trying"
    say("trying")
    if not lock.acquire(timeout=None):
        say("error acquire returned false")
        return
    say("held")
    stop = threading.Event()

    def refresh():
        # python-etcd3 does not renew on its own: a real holder must call refresh().
        while not stop.wait(a.ttl / 3.0):
            try:
                lock.refresh()
            except Exception as e:  # keep going, like a careful user would
                print("refresh failed:", e, file=sys.stderr, flush=True)

    t = threading.Thread(target=refresh, daemon=True)
    t.start()
    sys.stdin.readline()
    stop.set()
    lock.release()
    say("released")


def contend(client, a):
    # python-etcd3 starts a waiter's watch after its failed transaction, from "now": a delete in
    # between is missed and the waiter sleeps until its watch times out. Count those timeouts.
    lost = [0]
    mu = threading.Lock()
    watch_once = client.watch_once

    def counting_watch_once(*args, **kwargs):
        try:
            return watch_once(*args, **kwargs)
        except etcd3.exceptions.WatchTimedOut:
            with mu:
                lost[0] += 1
            raise

    def instrument(c):
        inner = c.watch_once

        def counting(*args, **kwargs):
            try:
                return inner(*args, **kwargs)
            except etcd3.exceptions.WatchTimedOut:
                with mu:
                    lost[0] += 1
                raise

        c.watch_once = counting
        return c

    if a.own_client:
        # One client (connection, watch stream) per contender, as N separate processes would
        # have. Connect them all before the clock starts.
        clients = [instrument(etcd3.client(host=a.host, port=a.port)) for _ in range(a.threads)]
        for c in clients:
            c.get("/locks/" + a.name)
    else:
        client.watch_once = counting_watch_once
        clients = [client] * a.threads
    results = []  # (got, done_at)
    start = threading.Barrier(a.threads + 1)
    t0 = [0.0]

    def worker(c):
        lock = c.lock(a.name, ttl=a.ttl)
        start.wait()
        got = False
        while not got and time.perf_counter() - t0[0] < a.cap:
            try:
                got = lock.acquire(timeout=a.timeout)
            except Exception as e:
                print("acquire failed:", e, file=sys.stderr, flush=True)
                time.sleep(0.1)
        if got:
            lock.release()
        with mu:
            results.append((got, time.perf_counter()))

    client.get("/locks/" + a.name)  # connect before starting the clock
    threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in clients]
    for t in threads:
        t.start()
    say("ready")
    sys.stdin.readline()  # "go": the benchmark has read etcd's counters
    t0[0] = time.perf_counter()
    start.wait()
    for t in threads:
        t.join()
    ok = sum(1 for r in results if r[0])
    wall = max(r[1] for r in results) - t0[0]
    say("done", "ok=%d" % ok, "failed=%d" % (len(results) - ok), "lost=%d" % lost[0],
        "wall=%.6f" % wall)
    # (The per-thread clients are not closed: closing them makes their watcher threads print
    # errors, and the process exits now anyway.)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["uncontended", "handoff", "hold", "contend"])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=2379)
    p.add_argument("--name", required=True)
    p.add_argument("--ttl", type=int, default=10)
    p.add_argument("--count", type=int, default=100)
    p.add_argument("--threads", type=int, default=10)
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument("--cap", type=float, default=120.0)
    p.add_argument("--own-client", action="store_true",
                   help="contend: one client per thread instead of one shared client")
    a = p.parse_args()
    client = etcd3.client(host=a.host, port=a.port)
    try:
        {"uncontended": uncontended, "handoff": handoff, "hold": hold, "contend": contend}[a.mode](client, a)
    except Exception as e:
        say("error", repr(e).replace("\n", " "))
        raise
    finally:
        client.close()


if __name__ == "__main__":
    main()
