#!/usr/bin/env python3
"""What anonymous sign-in starts cost (issue 10, class 2): starts Redis, the test OpenID
provider and linkgate on 127.0.0.1, sends N anonymous `GET /oauth2/start` requests (a
quarter plain, a quarter with a 2000-byte rd, a quarter with a 4 KB rd, an eighth with a
500 KB Host, an eighth with a foreign short Host) and reports the growth of Redis'
`used_memory` and key count and of linkgate's RSS. Targets: Redis < 1 MiB, RSS < 8 MiB.

    bench/anonymous_starts.py --linkgate target/release/linkgate [--requests 10000]

Python 3 standard library only; reuses bench/driver.py's process handling (every process
started is stopped at the end, however the script ends). Exit status 1 when a target is
missed.
"""

import argparse
import base64
import concurrent.futures
import http.client
import json
import os
import secrets
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import driver  # noqa: E402


def redis_info(port, section):
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(f"INFO {section}\r\n".encode())
        data = b""
        while True:
            data += s.recv(65536)
            head, _, rest = data.partition(b"\r\n")
            if head.startswith(b"$") and len(rest) >= int(head[1:]):
                break
    text = rest.decode()
    return dict(
        line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#")
    )


def dbsize(port):
    keyspace = redis_info(port, "keyspace")
    db0 = keyspace.get("db0", "keys=0")
    return int(db0.split(",")[0].split("=")[1])


def one_start(port, kind):
    """Sends one start request on a fresh connection; returns the status."""
    rd = {"long": "/" + "a" * 1999, "huge_rd": "/" + "b" * 4096}.get(kind, "/orders?id=7")
    host = {"huge_host": "h" * (500 * 1024) + ".example", "foreign": "evil.example"}.get(
        kind, f"127.0.0.1:{port}"
    )
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest("GET", "/oauth2/start?rd=" + driver.urllib.parse.quote(rd, safe=""),
                        skip_host=True)
        conn.putheader("Host", host)
        conn.putheader("Accept", "text/html")
        conn.putheader("Sec-Fetch-Mode", "navigate")
        conn.endheaders()
        resp = conn.getresponse()
        resp.read()
        return resp.status
    except (ConnectionError, http.client.HTTPException, OSError):
        return 0  # the gate closed the connection (a header over its limit)
    finally:
        conn.close()


KINDS = ["plain", "long", "huge_rd", "plain", "long", "huge_rd", "huge_host", "foreign"]


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--linkgate", required=True)
    ap.add_argument("--requests", type=int, default=10_000)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=400,
                    help="requests sent before the first measurement")
    ap.add_argument("--kinds", default="plain,long,huge_rd,huge_host,foreign",
                    help="which requests to send (comma-separated subset)")
    args = ap.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="linkgate-anon-")
    procs = driver.Procs(tmp)
    ok = False
    try:
        redis_port = driver.free_port()
        procs.spawn("redis", ["redis-server", "--port", str(redis_port), "--bind", "127.0.0.1",
                              "--save", "", "--appendonly", "no", "--dir", tmp])
        driver.wait_until("redis", 10, lambda: driver.redis_ping(redis_port))
        port, admin, provider_port = driver.free_port(), driver.free_port(), driver.free_port()
        _, issuer = driver.start_provider(procs, tmp, provider_port,
                                          [f"http://127.0.0.1:{port}/oauth2/callback"])
        with open(os.path.join(tmp, "cookie_secret"), "w") as f:
            f.write(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("="))
        with open(os.path.join(tmp, "client_secret"), "w") as f:
            f.write(driver.CLIENT_SECRET)
        path, conf = driver.gate_config(tmp, "gate", port, admin, driver.free_port(), issuer,
                                        redis_port, "30s")
        with open(path, "w") as f:
            f.write(conf.replace("THREADS", "2"))
        gate = procs.spawn("gate", [args.linkgate, "run", "-c", path])
        driver.wait_until(
            "linkgate /readyz", 30,
            lambda: driver.http_status(f"http://127.0.0.1:{admin}/readyz") == 200,
            lambda: procs.check_alive("gate", gate),
        )
        pool = concurrent.futures.ThreadPoolExecutor(args.concurrency)
        # Warm-up: provider discovery, allocator arenas, connection pools.
        kinds = [k for k in KINDS if k in args.kinds.split(",")]
        list(pool.map(lambda i: one_start(port, kinds[i % len(kinds)]), range(args.warmup)))
        mem0 = int(redis_info(redis_port, "memory")["used_memory"])
        keys0 = dbsize(redis_port)
        rss0 = driver.rss_kib(gate.pid)
        started = time.monotonic()
        statuses = {}
        samples = []  # RSS (KiB) after each tenth of the requests: growth, or a plateau?
        step = max(1, args.requests // 10)
        for done in range(0, args.requests, step):
            batch = range(done, min(done + step, args.requests))
            for status in pool.map(lambda i: one_start(port, kinds[i % len(kinds)]), batch):
                statuses[status] = statuses.get(status, 0) + 1
            samples.append(driver.rss_kib(gate.pid))
        elapsed = time.monotonic() - started
        pool.shutdown()
        mem1 = int(redis_info(redis_port, "memory")["used_memory"])
        keys1 = dbsize(redis_port)
        rss1 = driver.rss_kib(gate.pid)
        result = {
            "requests": args.requests,
            "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "elapsed_s": round(elapsed, 1),
            "redis_used_memory_growth_bytes": mem1 - mem0,
            "redis_keys_before": keys0,
            "redis_keys_after": keys1,
            "linkgate_rss_kib_before": rss0,
            "linkgate_rss_kib_after": rss1,
            "linkgate_rss_growth_kib": rss1 - rss0,
            "linkgate_rss_kib_every_tenth": samples,
        }
        print(json.dumps(result, indent=2))
        ok = (mem1 - mem0) < 1024 * 1024 and (rss1 - rss0) < 8 * 1024 and keys1 == 0
        print("targets met" if ok else "TARGETS MISSED", file=sys.stderr)
        return 0 if ok else 1
    except driver.BenchError as e:
        print(f"FAILED: {e}", file=sys.stderr)
        return 1
    finally:
        procs.stop_all()
        if ok:
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"logs kept in {tmp}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
