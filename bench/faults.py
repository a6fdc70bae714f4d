#!/usr/bin/env python3
"""The heavy fault scenarios of issue 14, started by `bench/faults SCENARIO` (which builds
linkgate in release mode first). Python 3 standard library only; the parts and helpers are
bench/driver.py's. Everything runs on 127.0.0.1 and is stopped at the end, however it ends.

Scenarios (figures in bench/README.md, "Faults"):
  cluster   Redis Cluster (3 masters + 3 replicas): throughput of one gate on standalone
            Redis, one and two gates on the cluster; a slot migration under load; the
            SIGKILL of one master under load.
  upgrade   wrk over cached sessions and the skip route while linkgate upgrades itself.
  floods    10,000 idle keep-alive connections, 10,000 silent ones, slowloris on 1,000,
            1 GiB bodies (upstream route and linkgate's own endpoints), a storm of 1,000
            sign-ins, each burst and the storm also as a control that spares linkgate;
            cached sessions' p99, linkgate's CPU share and RSS throughout.
  outage    the OpenID provider frozen (SIGSTOP) for a minute under load.
  soak      all of the above at low intensity for --minutes (30).

Each prints `FAULTS name: ...` lines and writes bench/faults-SCENARIO.json.
"""

import argparse
import base64
import concurrent.futures
import json
import os
import re
import resource
import secrets
import shutil
import signal
import socket
import socketserver
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import driver as d  # noqa: E402  (bench/driver.py: processes, sign-in, wrk, /proc)

ROOT = d.ROOT
log = d.log
BenchError = d.BenchError


def say(line):
    print(f"FAULTS {line}", flush=True)


# === parts ===


class Sink(socketserver.ThreadingTCPServer):
    """An upstream that reads each request's whole body (Content-Length or chunked) before
    it answers `200 sink N` (N: body bytes): a 1 GiB upload really goes through."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), SinkHandler)
        self.port = self.server_address[1]
        self.received = 0
        threading.Thread(target=self.serve_forever, daemon=True).start()


class SinkHandler(socketserver.StreamRequestHandler):
    def handle(self):
        while True:
            head = b""
            while not head.endswith(b"\r\n\r\n"):
                line = self.rfile.readline(65536)
                if not line:
                    return
                head += line
            text = head.decode("latin-1").lower()
            n = 0
            m = re.search(r"\ncontent-length:\s*(\d+)", text)
            buf = bytearray(1 << 20)
            if m:
                left = int(m.group(1))
                while left:
                    k = self.rfile.readinto(memoryview(buf)[: min(left, len(buf))])
                    if not k:
                        return
                    left -= k
                    n += k
            elif "transfer-encoding: chunked" in text:
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        self.rfile.readline()
                        break
                    left = size
                    while left:
                        k = self.rfile.readinto(memoryview(buf)[: min(left, len(buf))])
                        if not k:
                            return
                        left -= k
                    n += size
                    self.rfile.readline()
            self.server.received += n
            body = f"sink {n}\n".encode()
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                             + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            self.wfile.flush()


def secrets_files(tmp):
    with open(os.path.join(tmp, "cookie_secret"), "w") as f:
        f.write(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("="))
    with open(os.path.join(tmp, "client_secret"), "w") as f:
        f.write(d.CLIENT_SECRET)


def start_origin(procs, tmp):
    port = d.free_port()
    d.start_nginx(procs, tmp, "origin", 1, f"""    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{ default_type text/plain; return 200 "origin ok\\n"; }}
    }}""", [port])
    return port


def start_redis(procs, tmp, name, port, extra=()):
    p = procs.spawn(name, ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                           "--save", "", "--appendonly", "no", "--dir", tmp, *extra])
    d.wait_until(f"{name} PING", 10, lambda: d.redis_ping(port),
                 lambda: procs.check_alive(name, p))
    return p


def cli(port, *args):
    return subprocess.run(["redis-cli", "-p", str(port), "--raw", *args], capture_output=True,
                          text=True, timeout=60, check=False).stdout.strip()


def start_gate(procs, args, tmp, name, port, issuer, store, origin_port, sink_port=None,
               cache_ttl="30s", server_extra="", extra=""):
    admin = d.free_port()
    gd = os.path.join(tmp, name)
    os.makedirs(gd, exist_ok=True)
    sink = (f'\n[[upstreams]]\nname = "sink"\nurl = "http://127.0.0.1:{sink_port}"\n'
            f'path_prefix = "/upload"\n') if sink_port else ""
    conf = f"""# Generated by bench/faults.py: {name}.
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"
threads = {args.gate_threads}
pid_file = "{gd}/linkgate.pid"
upgrade_sock = "{gd}/upgrade.sock"
{server_extra}

[[upstreams]]
name = "origin"
url = "http://127.0.0.1:{origin_port}"
{sink}
[sso]
issuer = "{issuer}"
client_id = "{d.CLIENT_ID}"
client_secret_file = "../client_secret"

[session]
cookie_secret_file = "../cookie_secret"
cookie_secure = false
store = "redis"
cache_ttl = "{cache_ttl}"
cache_capacity = 150000

{store}

[authz]
skip_auth_routes = ["^/public/", "^/upload"]

[log]
level = "warn"
{extra}
"""
    path = os.path.join(gd, "config.toml")
    with open(path, "w") as f:
        f.write(conf)
    check = subprocess.run([args.linkgate, "check", "-c", path], capture_output=True,
                           text=True, check=False)
    if check.returncode != 0:
        raise BenchError(f"linkgate check refused {path}:\n{check.stdout}{check.stderr}")
    env = {k: v for k, v in os.environ.items() if k != "RUST_LOG"}
    argv = [args.linkgate, "run", "-c", path]
    if args.pin is not None:
        # The gate alone on its CPUs (taskset execs it: the pid stays linkgate's).
        argv = ["taskset", "-c", args.pin, *argv]
    p = procs.spawn(name, argv, env=env)
    d.wait_until(f"{name} /readyz", 30,
                 lambda: d.http_status(f"http://127.0.0.1:{admin}/readyz") == 200
                 and d.port_open(port),
                 lambda: procs.check_alive(name, p))
    return {"name": name, "proc": p, "pid": p.pid, "port": port, "admin": admin,
            "url": f"http://127.0.0.1:{port}", "config": path}


def gate_on_redis(args, procs, tmp, sink_port=None, access_ttl=None):
    """What the upgrade, floods, outage and soak scenarios stand on: the origin, one Redis,
    the test provider (`access_ttl`: its access tokens' lifetime) and one linkgate in front
    of the origin (and of `sink_port` under /upload). Returns the gate, the provider's
    process and its issuer."""
    origin = start_origin(procs, tmp)
    rport = d.free_port()
    start_redis(procs, tmp, "redis", rport)
    port = d.free_port()
    provider, issuer = d.start_provider(procs, tmp, d.free_port(),
                                        [f"http://127.0.0.1:{port}/oauth2/callback"],
                                        access_ttl=access_ttl)
    g = start_gate(procs, args, tmp, "gate", port, issuer,
                   f'[redis]\nurl = "redis://127.0.0.1:{rport}/0"\n', origin, sink_port)
    return g, provider, issuer


def signed_in(g, tmp, seconds, n):
    """`n` people signed in through gate `g` (within `seconds`): their cookies, and the
    file wrk's script reads them from."""
    cookies, _, errs = d.sign_in_many(g["url"], seconds, n, 4)
    if errs:
        raise BenchError(f"sign-ins failed: {errs[:3]}")
    return cookies, cookie_file(tmp, "gate", cookies)


def cookie_file(tmp, name, cookies):
    path = os.path.join(tmp, f"{name}.cookies")
    with open(path, "w") as f:
        for c in cookies:
            f.write(f"{d.COOKIE_NAME}={c}\n")
    return path


def wrk_argv(url, cookies_path, duration, conns, threads=1, pause_ms=0):
    return ["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{duration}s", "--timeout",
            "10s", "--latency", "-s", "bench/faults.lua", url, "--", cookies_path,
            str(pause_ms)]


class Wrk:
    """wrk in the background; result() waits and parses its WRK_JSON line."""

    def __init__(self, argv):
        self.duration = int(argv[argv.index("-d") + 1].rstrip("s"))
        self.p = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True,
                                  preexec_fn=d._die_with_parent)

    def result(self):
        out, err = self.p.communicate(timeout=self.duration + 60)
        if self.p.returncode != 0:
            raise BenchError(f"wrk failed ({self.p.returncode}): {err.strip()}")
        r = d.parse_wrk(out)
        r["non2xx"] = r["errors"]["status"]
        r["socket_errors"] = sum(v for k, v in r["errors"].items() if k != "status")
        return r


def wrk_line(r):
    e = r["errors"]
    return (f"{r['requests']:,} requests ({r['rps']:,.0f}/s), p50 {r['p50_us'] / 1000:.2f} ms, "
            f"p99 {r['p99_us'] / 1000:.2f} ms, non-2xx {e['status']}, connect {e['connect']}, "
            f"read {e['read']}, write {e['write']}, timeout {e['timeout']}")


def fds(pid):
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return None
    sockets = 0
    for n in names:
        try:
            if os.readlink(f"/proc/{pid}/fd/{n}").startswith("socket:"):
                sockets += 1
        except OSError:
            pass
    return len(names), sockets


class Sampler:
    """Samples a process's RSS (KiB) every `every` seconds in a thread."""

    def __init__(self, pid, every=0.1):
        self.pid, self.every = pid, every
        self.samples = []  # (t, rss)
        self.stop_flag = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        t0 = time.monotonic()
        while not self.stop_flag.is_set():
            r = d.rss_kib(self.pid)
            if r is not None:
                self.samples.append((time.monotonic() - t0, r))
            time.sleep(self.every)

    def peak_since(self, t):
        vals = [r for (s, r) in self.samples if s >= t]
        return max(vals) if vals else None

    def now(self):
        return self.samples[-1][0] if self.samples else 0.0

    def stop(self):
        self.stop_flag.set()
        self.t.join()


def mib(kib):
    return f"{kib / 1024:.1f}" if kib is not None else "-"


def status_with_cookie(url, cookie, timeout=10):
    try:
        s, _ = d.http_get(url, {"Cookie": f"{d.COOKIE_NAME}={cookie}"}, timeout=timeout)
        return s
    except OSError:
        return 0


def begin_sign_in(gate_url, login):
    """Runs a sign-in up to (not including) linkgate's callback; returns (browser, url)."""
    b = d.Browser()
    status, h, body = b.request("GET", f"{gate_url}/oauth2/start?rd=/", d.NAVIGATE)
    if status != 302:
        raise BenchError(f"start answered {status}")
    url = urllib.parse.urljoin(gate_url, h["Location"])
    provider = d._origin(url)
    method, form = "GET", None
    for _ in range(20):
        hdrs = dict(d.NAVIGATE)
        if form is not None:
            hdrs["Content-Type"] = "application/x-www-form-urlencoded"
        status, h, body = b.request(method, url, hdrs, form)
        if 300 <= status < 400:
            nxt = urllib.parse.urljoin(url, h["Location"])
            method, form = "GET", None
            url = nxt
            if d._origin(nxt) != provider:
                return b, url
            continue
        text = body.decode("utf-8", "replace")
        forms = d._forms(text)
        login_form = next((f for f in forms if "login" in f[1]), None)
        if status == 200 and login_form:
            fields = dict(login_form[1], login=login, password="any-password")
            method, form = "POST", urllib.parse.urlencode(fields)
            url = urllib.parse.urljoin(url, login_form[0])
            continue
        if status == 200 and ".submit()" in text and forms:
            method, form = "POST", urllib.parse.urlencode(forms[0][1])
            url = urllib.parse.urljoin(url, forms[0][0])
            continue
        raise BenchError(f"sign-in: unexpected {status} at {url}")
    raise BenchError("sign-in: more than 20 hops")


def sign_in_loop(gate_url, stop, tally, prefix, pause=0.0):
    """Signs in fresh users one after another until `stop`; counts outcomes."""
    i = 0
    while not stop.is_set():
        i += 1
        t = time.monotonic()
        try:
            d.sign_in(gate_url, f"{prefix}-{i}")
            tally["ok"] += 1
        except Exception as e:  # noqa: BLE001 (counted)
            tally["failed"] += 1
            tally.setdefault("samples", []).append(f"{time.monotonic() - t:.1f}s {str(e)[:160]}")
            time.sleep(0.2)
        if pause:
            time.sleep(pause)


# === scenario: Redis Cluster ===


def cluster_nodes(procs, tmp, n, node_timeout_ms):
    ports = [d.free_port() for _ in range(n)]
    for p in ports:
        start_redis(procs, tmp, f"cluster-{p}", p, ["--cluster-enabled", "yes",
                    "--cluster-config-file", os.path.join(tmp, f"nodes-{p}.conf"),
                    # Its default, port + 10,000, can be past 65,535 for an ephemeral port.
                    "--cluster-port", str(d.free_port()),
                    "--cluster-node-timeout", str(node_timeout_ms)])
    out = subprocess.run(["redis-cli", "--cluster", "create",
                          *[f"127.0.0.1:{p}" for p in ports],
                          "--cluster-replicas", "1", "--cluster-yes"],
                         capture_output=True, text=True, timeout=120, check=False)
    if out.returncode != 0:
        raise BenchError(f"redis-cli --cluster create failed:\n{out.stdout}{out.stderr}")
    d.wait_until("cluster_state:ok", 60,
                 lambda: all("cluster_state:ok" in cli(p, "CLUSTER", "INFO") for p in ports))
    return ports


def masters(ports):
    """{node id: port} of the masters, from CLUSTER NODES."""
    out = {}
    for line in cli(ports[0], "CLUSTER", "NODES").splitlines():
        f = line.split()
        if "master" in f[2] and "fail" not in f[2]:
            out[f[0]] = int(f[1].split(":")[1].split("@")[0])
    return out


def cpu_us_per_req(pids, before, reqs):
    return (d.cpu_seconds(pids) - before) / reqs * 1e6 if reqs else 0.0


def scenario_cluster(args, procs, tmp):
    results = {}
    origin = start_origin(procs, tmp)
    std_port = d.free_port()
    start_redis(procs, tmp, "redis", std_port)
    ports = cluster_nodes(procs, tmp, 6, args.node_timeout)
    log(f"cluster: 3 masters + 3 replicas on {ports}, cluster-node-timeout {args.node_timeout} ms")
    gate_ports = {n: d.free_port() for n in ("std", "c1", "c2", "c3")}
    provider, issuer = d.start_provider(procs, tmp, d.free_port(), [
        f"http://127.0.0.1:{p}/oauth2/callback" for p in gate_ports.values()])
    nodes = ", ".join(f'"127.0.0.1:{p}"' for p in ports)
    cluster_store = f'[redis]\nmode = "cluster"\nnodes = [{nodes}]\n'
    std_store = f'[redis]\nurl = "redis://127.0.0.1:{std_port}/0"\n'
    g = {
        "std": start_gate(procs, args, tmp, "std", gate_ports["std"], issuer, std_store, origin,
                          cache_ttl="0s"),
        "c1": start_gate(procs, args, tmp, "c1", gate_ports["c1"], issuer, cluster_store, origin,
                         cache_ttl="0s"),
        "c2": start_gate(procs, args, tmp, "c2", gate_ports["c2"], issuer, cluster_store, origin,
                         cache_ttl="0s"),
        "c3": start_gate(procs, args, tmp, "c3", gate_ports["c3"], issuer, cluster_store, origin,
                         cache_ttl="30s"),
    }
    log("signing in users on standalone and on the cluster")
    std_cookies, _, e1 = d.sign_in_many(g["std"]["url"], 120, 50, 8)
    cl_cookies, _, e2 = d.sign_in_many(g["c1"]["url"], 300, args.cluster_sessions, 8)
    if e1 or e2 or not std_cookies or not cl_cookies:
        raise BenchError(f"sign-ins failed: {(e1 + e2)[:3]}")
    std_file = cookie_file(tmp, "std", std_cookies)
    cl_file = cookie_file(tmp, "cluster", cl_cookies)

    # 1. Throughput: cache off (every request reads its session from the store), rounds.
    rows = {"std": [], "c1": [], "pair": []}
    for rnd in range(args.rounds):
        for key in ("std", "c1", "pair"):
            if key == "pair":
                pids = [g["c1"]["pid"], g["c2"]["pid"]]
                cpu0 = d.cpu_seconds(pids)
                w1 = Wrk(wrk_argv(g["c1"]["url"] + "/app", cl_file, args.duration, 16))
                w2 = Wrk(wrk_argv(g["c2"]["url"] + "/app", cl_file, args.duration, 16))
                r1, r2 = w1.result(), w2.result()
                reqs = r1["requests"] + r2["requests"]
                rows["pair"].append({"rps_each": [r1["rps"], r2["rps"]],
                                     "rps": r1["rps"] + r2["rps"],
                                     "errors": r1["non2xx"] + r2["non2xx"] + r1["socket_errors"]
                                     + r2["socket_errors"],
                                     "cpu_us": cpu_us_per_req(pids, cpu0, reqs)})
            else:
                pids = [g[key]["pid"]]
                cpu0 = d.cpu_seconds(pids)
                f = std_file if key == "std" else cl_file
                r = Wrk(wrk_argv(g[key]["url"] + "/app", f, args.duration, 32, threads=2)).result()
                rows[key].append({"rps": r["rps"], "errors": r["non2xx"] + r["socket_errors"],
                                  "cpu_us": cpu_us_per_req(pids, cpu0, r["requests"])})
        log(f"round {rnd + 1}/{args.rounds} done")
    med = lambda xs: statistics.median(xs)  # noqa: E731
    std_rps = med([r["rps"] for r in rows["std"]])
    c1_rps = med([r["rps"] for r in rows["c1"]])
    pair_rps = med([r["rps"] for r in rows["pair"]])
    std_cpu = med([r["cpu_us"] for r in rows["std"]])
    c1_cpu = med([r["cpu_us"] for r in rows["c1"]])
    pair_cpu = med([r["cpu_us"] for r in rows["pair"]])
    errs = sum(r["errors"] for k in rows for r in rows[k])
    say(f"cluster-throughput (cache off, wrk {args.rounds}x{args.duration}s, medians): "
        f"standalone 1 gate {std_rps:,.0f} req/s {std_cpu:.0f} CPU us/req; "
        f"cluster 1 gate {c1_rps:,.0f} req/s {c1_cpu:.0f} CPU us/req ({c1_rps / std_rps:.2f}x); "
        f"cluster 2 gates {pair_rps:,.0f} req/s together, {pair_rps / 2:,.0f} each, "
        f"{pair_cpu:.0f} CPU us/req ({pair_cpu / std_cpu:.2f}x the CPU of standalone); "
        f"errors {errs}")
    results["throughput"] = {"rows": rows, "std_rps": std_rps, "c1_rps": c1_rps,
                             "pair_rps": pair_rps, "std_cpu_us": std_cpu, "c1_cpu_us": c1_cpu,
                             "pair_cpu_us": pair_cpu, "errors": errs}

    # 2. Slot migration under load.
    m = masters(ports)
    ids = sorted(m, key=lambda i: m[i])
    keys_before = sum(int(cli(p, "DBSIZE") or 0) for p in m.values())
    stop = threading.Event()
    tally = {"ok": 0, "failed": 0}
    t_sign = threading.Thread(target=sign_in_loop, args=(g["c2"]["url"], stop, tally, "reshard"),
                              daemon=True)
    w_off = Wrk(wrk_argv(g["c1"]["url"] + "/app", cl_file, args.migrate_seconds, 8))
    w_on = Wrk(wrk_argv(g["c3"]["url"] + "/app", cl_file, args.migrate_seconds, 8))
    t_sign.start()
    time.sleep(3)
    t0 = time.monotonic()
    out = subprocess.run(["redis-cli", "--cluster", "reshard", f"127.0.0.1:{m[ids[0]]}",
                          "--cluster-from", ids[0], "--cluster-to", ids[1],
                          "--cluster-slots", str(args.slots), "--cluster-yes",
                          "--cluster-pipeline", "10"],
                         capture_output=True, text=True, timeout=600, check=False)
    migrate_s = time.monotonic() - t0
    if out.returncode != 0:
        raise BenchError(f"reshard failed:\n{out.stdout[-2000:]}{out.stderr}")
    r_off, r_on = w_off.result(), w_on.result()
    stop.set()
    t_sign.join()
    d.wait_until("cluster_state:ok", 30,
                 lambda: all("cluster_state:ok" in cli(p, "CLUSTER", "INFO") for p in ports))
    keys_after = sum(int(cli(p, "DBSIZE") or 0) for p in masters(ports).values())
    say(f"cluster-reshard: {args.slots} slots from one master to "
        f"another in {migrate_s:.1f} s, {keys_before:,} keys before, {keys_after:,} after; "
        f"gate cache off: {wrk_line(r_off)}; gate cache on: {wrk_line(r_on)}; "
        f"sign-ins during: ok {tally['ok']} failed {tally['failed']} {tally.get('samples', [])[:3]}")
    results["reshard"] = {"slots": args.slots, "seconds": migrate_s, "keys_before": keys_before,
                          "keys_after": keys_after, "cache_off": r_off, "cache_on": r_on,
                          "sign_ins": tally}

    # 3. Failover of one master under load (SIGKILL), with a prober for the window.
    m = masters(ports)
    victim_id = max(m, key=lambda i: int(cli(m[i], "DBSIZE") or 0))
    victim = m[victim_id]
    victim_proc = next(p for n, p, _ in procs.items if n == f"cluster-{victim}")
    w_off = Wrk(wrk_argv(g["c1"]["url"] + "/app", cl_file, args.failover_seconds, 8))
    w_on = Wrk(wrk_argv(g["c3"]["url"] + "/app", cl_file, args.failover_seconds, 8))
    stop = threading.Event()
    tally = {"ok": 0, "failed": 0}
    t_sign = threading.Thread(target=sign_in_loop, args=(g["c2"]["url"], stop, tally, "failover"),
                              daemon=True)
    t_sign.start()
    fails = []
    probe_stop = threading.Event()

    def prober():
        i = 0
        while not probe_stop.is_set():
            c = cl_cookies[i % len(cl_cookies)]
            i += 1
            s = status_with_cookie(g["c1"]["url"] + "/probe", c, timeout=5)
            if s != 200:
                fails.append((time.monotonic(), s))
            time.sleep(0.01)

    t_probe = threading.Thread(target=prober, daemon=True)
    t_probe.start()
    time.sleep(5)
    killed = time.monotonic()
    os.killpg(victim_proc.pid, signal.SIGKILL)
    victim_proc.wait()
    survivors = [p for p in ports if p != victim]

    def promoted_ok():
        now = masters(survivors)
        return (len(now) == 3 and victim not in now.values()
                and all("cluster_state:ok" in cli(p, "CLUSTER", "INFO") for p in survivors))

    d.wait_until("a replica promoted, cluster_state:ok", 60, promoted_ok)
    promoted = time.monotonic() - killed
    r_off, r_on = w_off.result(), w_on.result()
    probe_stop.set()
    t_probe.join()
    stop.set()
    t_sign.join()
    after = [f for f in fails if f[0] >= killed]
    window = (after[-1][0] - killed) if after else 0.0
    statuses = sorted({s for _, s in after})
    # Sessions lost: every session still answers 200 on the cache-off gate.
    lost = sum(1 for c in cl_cookies if status_with_cookie(g["c1"]["url"] + "/after", c) != 200)
    say(f"cluster-failover: SIGKILL of the master with the most keys; its replica promoted "
        f"and cluster_state:ok after {promoted:.1f} s (cluster-node-timeout {args.node_timeout} ms); gate cache off: "
        f"{wrk_line(r_off)}; prober: {len(after)} failed requests {statuses} over {window:.1f} s; "
        f"gate cache on (30s): {wrk_line(r_on)}; sign-ins during: ok {tally['ok']} failed "
        f"{tally['failed']}; sessions lost {lost}/{len(cl_cookies)}")
    results["failover"] = {"promoted_s": promoted, "cache_off": r_off, "cache_on": r_on,
                           "probe_failures": len(after), "window_s": window,
                           "statuses": statuses, "sign_ins": tally, "sessions_lost": lost,
                           "sessions": len(cl_cookies)}
    return results


# === scenario: graceful upgrade under wrk ===


def scenario_upgrade(args, procs, tmp):
    g, _, _ = gate_on_redis(args, procs, tmp)
    port = g["port"]
    cookies, f = signed_in(g, tmp, 60, 20)
    results = []
    for rnd in range(args.rounds):
        w_s = Wrk(wrk_argv(g["url"] + "/app", f, args.upgrade_seconds, 32, threads=1))
        w_p = Wrk(d.run_wrk(argparse.Namespace(threads=1, connections=32), g["url"] + "/public/x",
                            {}, args.upgrade_seconds))
        time.sleep(args.upgrade_seconds / 4)
        old = g["proc"]
        env = {k: v for k, v in os.environ.items() if k != "RUST_LOG"}
        new = procs.spawn(f"gate-{rnd + 1}", [args.linkgate, "run", "--upgrade", "-c",
                                             g["config"]], env=env)
        sock = os.path.join(tmp, "gate", "upgrade.sock")
        d.wait_until("the upgrade socket", 20, lambda: os.path.exists(sock))
        t0 = time.monotonic()
        old.send_signal(signal.SIGQUIT)
        old.wait(timeout=60)
        exited = time.monotonic() - t0
        if os.path.exists(sock):
            os.unlink(sock)
        g["proc"], g["pid"] = new, new.pid
        r_s, r_p = w_s.result(), w_p.result()
        say(f"upgrade round {rnd + 1}: old process exit {old.returncode} {exited:.1f} s after "
            f"SIGQUIT; sessions: {wrk_line(r_s)}; skip route: {wrk_line(r_p)}")
        results.append({"exit": old.returncode, "exit_s": exited, "sessions": r_s, "skip": r_p})
    return results


# === scenario: floods and slow clients ===


def raise_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(max(n, soft), hard) if hard != resource.RLIM_INFINITY else max(n, soft)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(n, hard), hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def open_idle(port, n, request):
    """n connections; each sends one request (when `request`) and reads its answer, then
    stays open. Returns the sockets and how many failed."""
    socks, failed = [], 0
    req = b"GET /public/idle HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    for _ in range(n):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            if request:
                s.sendall(req)
                got = b""
                while b"\r\n\r\n" not in got or not got.endswith(b"origin ok\n"):
                    part = s.recv(4096)
                    if not part:
                        raise OSError("closed")
                    got += part
            socks.append(s)
        except OSError:
            failed += 1
    return socks, failed


def still_open(socks):
    """How many of these sockets the server has not closed (non-blocking read: EAGAIN)."""
    n = 0
    for s in socks:
        s.setblocking(False)
        try:
            if s.recv(1) == b"":
                continue
        except BlockingIOError:
            n += 1
        except OSError:
            continue
    return n


def slowloris(port, n, seconds):
    """n connections trickling a head one byte a second; returns (cut by the server, when)."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.setblocking(False)
        socks.append(s)
    head = b"GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\nX-A: " + b"a" * 200
    cut = {}
    t0 = time.monotonic()
    i = 0
    while time.monotonic() - t0 < seconds and len(cut) < n:
        for k, s in enumerate(socks):
            if k in cut:
                continue
            try:
                try:
                    if s.recv(4096) == b"":
                        raise OSError("closed")
                except BlockingIOError:
                    pass
                s.send(head[i % len(head): i % len(head) + 1])
            except OSError:
                cut[k] = time.monotonic() - t0
        i += 1
        time.sleep(1)
    for s in socks:
        s.close()
    times = sorted(cut.values())
    return len(cut), (times[0], times[-1]) if times else (None, None)


def big_body(port, target, size, headers=b"", read_first=False):
    """Sends a request with a `size`-byte body (Content-Length); returns (status, bytes the
    client had sent when the answer came, seconds)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=60)
    s.sendall(f"POST {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {size}\r\n"
              .encode() + headers + b"\r\n")
    sent = [0]
    done = threading.Event()

    def writer():
        chunk = b"a" * (1 << 20)
        try:
            while sent[0] < size and not done.is_set():
                n = s.send(chunk[: min(len(chunk), size - sent[0])])
                sent[0] += n
        except OSError:
            pass

    t0 = time.monotonic()
    t = threading.Thread(target=writer, daemon=True)
    t.start()
    got = b""
    at = None
    try:
        while b"\r\n" not in got:
            part = s.recv(4096)
            if not part:
                break
            got += part
        at = sent[0]
    except OSError:
        pass
    elapsed = time.monotonic() - t0
    done.set()
    s.close()
    t.join(timeout=5)
    m = re.match(rb"HTTP/1\.1 (\d+)", got)
    return (int(m.group(1)) if m else 0), at, elapsed


def scenario_floods(args, procs, tmp):
    have = raise_nofile(args.idle + 5000)
    log(f"RLIMIT_NOFILE {have} (for this driver and what it starts)")
    if have < args.idle + 2000:
        raise BenchError(f"RLIMIT_NOFILE is {have}: cannot open {args.idle} connections")
    sink = Sink()
    g, _, _ = gate_on_redis(args, procs, tmp, sink_port=sink.port)
    port = g["port"]
    cookies, f = signed_in(g, tmp, 60, 20)
    sampler = Sampler(g["pid"])
    out = {}

    def probe(seconds):
        # ~400 req/s over the cached sessions: 8 connections, 20 ms pause.
        return Wrk(wrk_argv(g["url"] + "/app", f, seconds, 8, pause_ms=20))

    base = probe(args.phase_seconds).result()
    base_p99 = base["p99_us"] / 1000
    rss_base = d.rss_kib(g["pid"])
    say(f"floods-baseline: cached sessions at ~400 req/s: {wrk_line(base)}; RSS {mib(rss_base)} MiB")
    out["baseline"] = {"wrk": base, "rss_kib": rss_base}

    def phase(name, action):
        t = sampler.now()
        cpu0, wall0 = d.cpu_seconds([g["pid"]]), time.monotonic()
        w = probe(args.phase_seconds)
        detail = action()
        r = w.result()
        cpu = (d.cpu_seconds([g["pid"]]) - cpu0) / max(time.monotonic() - wall0, 1e-9)
        peak = sampler.peak_since(t)
        time.sleep(1)
        after = d.rss_kib(g["pid"])
        alive = g["proc"].poll() is None
        ratio = (r["p99_us"] / 1000) / base_p99 if base_p99 else 0
        say(f"floods-{name}: {detail}; cached sessions meanwhile: {wrk_line(r)} "
            f"(p99 {ratio:.2f}x the baseline); linkgate CPU {cpu:.0%} of one core; "
            f"RSS peak {mib(peak)} MiB, after {mib(after)} MiB; "
            f"linkgate {'alive' if alive else 'DEAD'}")
        out[name] = {"detail": detail, "wrk": r, "p99_ratio": ratio, "rss_peak_kib": peak,
                     "rss_after_kib": after, "alive": alive, "gate_cpu_share": cpu}
        if not alive:
            raise BenchError(f"linkgate died during {name}")

    def idle_keepalive():
        socks, failed = open_idle(port, args.idle, True)
        fdn = fds(g["pid"])
        time.sleep(max(1, args.phase_seconds - 8))
        alive = still_open(socks)
        for s in socks:
            s.close()
        return (f"{len(socks):,} idle keep-alive connections after one request each "
                f"({failed} failed to open); linkgate fds {fdn[0] if fdn else '-'}; "
                f"still open after the phase {alive:,}")

    phase("idle", idle_keepalive)

    # The control: the same 10,000 connections opened by the same driver on the same CPUs,
    # to an nginx beside linkgate instead of to linkgate. What the probe's p99 does then is
    # the generator's share (it runs beside wrk), not linkgate's.
    control_port = d.free_port()
    d.start_nginx(procs, tmp, "idle-control", 1, f"""    server {{
        listen 127.0.0.1:{control_port} backlog=4096;
        location / {{ default_type text/plain; return 200 "origin ok\\n"; }}
    }}""", [control_port], connections=args.idle + 1000)

    def idle_control():
        socks, failed = open_idle(control_port, args.idle, True)
        time.sleep(max(1, args.phase_seconds - 8))
        for s in socks:
            s.close()
        return (f"control: the same {len(socks):,} idle keep-alive connections opened to an "
                f"nginx beside linkgate ({failed} failed to open)")

    phase("idle-control", idle_control)

    def silent():
        socks, failed = open_idle(port, args.idle, False)
        time.sleep(12)  # header_read_timeout (10 s) + a margin
        alive = still_open(socks)
        for s in socks:
            s.close()
        no_req = d.metric(g["admin"], "linkgate_refused_heads_total", {"reason": "no_request"})
        return (f"{len(socks):,} connections that send nothing ({failed} failed to open): "
                f"{len(socks) - alive:,} closed by linkgate within 12 s, no_request counter "
                f"{no_req:.0f}")

    phase("silent", silent)

    def loris():
        n, (first, last) = slowloris(port, args.slowloris, 15)
        slow = d.metric(g["admin"], "linkgate_refused_heads_total", {"reason": "too_slow"})
        return (f"slowloris on {args.slowloris:,} connections (1 byte/s): {n:,} cut, "
                f"between {first and round(first, 1)} and {last and round(last, 1)} s; too_slow "
                f"counter {slow:.0f}")

    phase("slowloris", loris)

    def gigabyte_upstream():
        before = sink.received
        status, _, secs = big_body(port, "/upload/big", 1 << 30)
        got = sink.received - before
        return (f"1 GiB POST to an upstream route: {status} after {secs:.1f} s "
                f"({(1 << 30) / secs / 1e6:.0f} MB/s), the upstream received {got:,} bytes")

    phase("gigabyte-upstream", gigabyte_upstream)

    def gigabyte_own():
        parts = []
        for target in ("/oauth2/sign_out", "/oauth2/start", "/oauth2/auth"):
            status, at, secs = big_body(
                port, target, 1 << 30,
                b"Content-Type: application/x-www-form-urlencoded\r\n"
                + f"Cookie: {d.COOKIE_NAME}={cookies[0]}\r\n".encode())
            parts.append(f"{target} {status} after {secs:.2f} s, "
                         f"{(at or 0) / (1 << 20):.1f} MiB sent by then")
        return "1 GiB POST to linkgate's own endpoints: " + "; ".join(parts)

    phase("gigabyte-own", gigabyte_own)

    def storm(callback=True):
        t0 = time.monotonic()
        ok, failed, samples = 0, 0, []
        lock = threading.Lock()

        def one(i):
            nonlocal ok, failed
            try:
                d.sign_in(g["url"], f"storm-{i}", callback=callback)
                with lock:
                    ok += 1
            except Exception as e:  # noqa: BLE001 (counted)
                with lock:
                    failed += 1
                    if len(samples) < 3:
                        samples.append(str(e)[:200])

        with concurrent.futures.ThreadPoolExecutor(args.storm_workers) as pool:
            list(pool.map(one, range(args.storm)))
        secs = time.monotonic() - t0
        steps = "start, provider login, callback" if callback else (
            "control: start and provider login, no callback")
        return (f"sign-in storm: {args.storm:,} sign-ins ({steps}), "
                f"{args.storm_workers} at a time: ok {ok:,}, failed {failed} {samples}, "
                f"{secs:.1f} s ({ok / secs:.0f}/s)")

    phase("storm", storm)
    # The control: the same storm without linkgate's callback (the step that exchanges the
    # code, verifies the id_token and writes the session); the driver's 100 threads and the
    # provider still run beside wrk.
    phase("storm-control", lambda: storm(callback=False))
    sampler.stop()
    out["rss_peak_kib"] = max(r for _, r in sampler.samples)
    return out


# === scenario: provider outage ===


def scenario_outage(args, procs, tmp):
    g, provider, _ = gate_on_redis(args, procs, tmp, access_ttl=args.token_ttl)
    cookies, f = signed_in(g, tmp, 60, 20)
    # Sign-ins begun before the outage, stopped just before linkgate's callback.
    pending = [begin_sign_in(g["url"], f"pending-{i}") for i in range(args.pending)]
    refresh0 = {r: d.metric(g["admin"], "linkgate_token_refreshes_total", {"result": r}) or 0
                for r in ("ok", "unavailable", "refused")}
    total = args.outage_seconds + 40
    w = Wrk(wrk_argv(g["url"] + "/app", f, total, 4, pause_ms=10))
    time.sleep(10)
    t_stop = time.monotonic()
    provider.send_signal(signal.SIGSTOP)
    log(f"provider frozen (SIGSTOP) for {args.outage_seconds} s")
    # During the outage: the pending callbacks, spread over it, each in its own thread (a
    # callback waits for the provider's http_timeout); and fresh starts.
    callbacks = [None] * len(pending)
    starts = [None] * len(pending)

    def attempt(i, b, url):
        time.sleep(i * args.outage_seconds / max(1, len(pending)) * 0.8)
        t0 = time.monotonic()
        try:
            status, h, body = b.request("GET", url, d.NAVIGATE)
            title = re.search(rb"<title>(.*?)</title>", body or b"", re.S)
            callbacks[i] = (status, round(time.monotonic() - t0, 2), h.get("Retry-After"),
                            title.group(1).decode()[:60] if title else None)
        except Exception as e:  # noqa: BLE001 (reported)
            callbacks[i] = (0, round(time.monotonic() - t0, 2), None, str(e)[:80])
        b.close()
        t0 = time.monotonic()
        try:
            s, _ = d.http_get(f"{g['url']}/oauth2/start?rd=/", d.NAVIGATE, timeout=30)
        except OSError as e:
            s = str(e)
        starts[i] = (s, round(time.monotonic() - t0, 2))

    threads = [threading.Thread(target=attempt, args=(i, b, url), daemon=True)
               for i, (b, url) in enumerate(pending)]
    for t in threads:
        t.start()
    time.sleep(max(0, args.outage_seconds - (time.monotonic() - t_stop)))
    refresh_mid = {r: (d.metric(g["admin"], "linkgate_token_refreshes_total", {"result": r}) or 0)
                   - refresh0[r] for r in refresh0}
    provider.send_signal(signal.SIGCONT)
    t_cont = time.monotonic()
    log("provider resumed (SIGCONT)")
    for t in threads:
        t.join()
    recovered = None
    while time.monotonic() - t_cont < 60:
        try:
            d.sign_in(g["url"], f"after-{int(time.monotonic())}")
            recovered = time.monotonic() - t_cont
            break
        except Exception:  # noqa: BLE001 (retried)
            time.sleep(0.2)
    r = w.result()
    refresh_end = {k: (d.metric(g["admin"], "linkgate_token_refreshes_total", {"result": k}) or 0)
                   - refresh0[k] for k in refresh0}
    lost = sum(1 for c in cookies if status_with_cookie(g["url"] + "/after", c) != 200)
    alive = g["proc"].poll() is None
    say(f"outage: provider frozen {args.outage_seconds} s under load ({args.token_ttl} s access "
        f"tokens, 20 sessions): cached sessions {wrk_line(r)}; callbacks during the outage "
        f"(status, seconds, Retry-After, page title): {callbacks}; {{prefix}}/start during the "
        f"outage: {starts}; token refreshes during the outage {refresh_mid}, by the end "
        f"{refresh_end}; first full sign-in {recovered and round(recovered, 2)} s after "
        f"SIGCONT; sessions lost {lost}/{len(cookies)}; linkgate {'alive' if alive else 'DEAD'} "
        f"(no restart)")
    return {"wrk": r, "callbacks": callbacks, "starts": starts, "refresh_during": refresh_mid,
            "refresh_end": refresh_end, "recovered_s": recovered, "sessions_lost": lost,
            "alive": alive}


# === scenario: soak ===


def scenario_soak(args, procs, tmp):
    raise_nofile(8192)
    sink = Sink()
    g, provider, issuer = gate_on_redis(args, procs, tmp, sink_port=sink.port,
                                        access_ttl=args.token_ttl)
    port = g["port"]
    # Links: imported through the operator's CLI, counted at the end.
    links = os.path.join(tmp, "links.jsonl")
    with open(links, "w") as fh:
        for i in range(args.links):
            fh.write(json.dumps({"account": {"issuer": "https://accounts.example",
                                             "subject": f"acct-{i}"},
                                 "sso": {"issuer": issuer, "subject": f"soak-sso-{i}"},
                                 "created_at": 1_700_000_000 + i}) + "\n")
    imp = subprocess.run([args.linkgate, "links", "-c", g["config"], "import", links],
                         capture_output=True, text=True, check=False)
    if imp.returncode != 0:
        raise BenchError(f"links import: {imp.stdout}{imp.stderr}")
    cookies, f = signed_in(g, tmp, 120, args.soak_sessions)
    pid = g["pid"]
    samples = []
    t0 = time.monotonic()
    end = t0 + args.minutes * 60
    cycle = 0
    counts = {"sign_ins_ok": 0, "sign_ins_failed": 0, "uploads_ok": 0, "own_413": 0,
              "slow_cut": 0, "idle_opened": 0, "outages": 0, "non2xx": 0, "socket_errors": 0,
              "requests": 0}
    new_cookies = []

    def sample(label):
        fd = fds(pid)
        samples.append({"t_s": round(time.monotonic() - t0), "rss_kib": d.rss_kib(pid),
                        "fds": fd[0] if fd else None, "sockets": fd[1] if fd else None,
                        "label": label})
        s = samples[-1]
        log(f"soak {s['t_s']:>5} s: RSS {mib(s['rss_kib'])} MiB, fds {s['fds']}, "
            f"sockets {s['sockets']} ({label})")

    sample("start")
    while time.monotonic() < end:
        secs = int(min(60, end - time.monotonic()))
        if secs < 5:
            break
        cycle += 1
        w = Wrk(wrk_argv(g["url"] + "/app", f, secs, 4, pause_ms=20))
        c_start = time.monotonic()
        # 200 idle keep-alive connections, 20 slow heads, 10 sign-ins, a 100 MiB upload, a
        # 1 GiB form to an own endpoint; every 5th cycle a 10 s provider outage.
        socks, _ = open_idle(port, 200, True)
        counts["idle_opened"] += len(socks)
        lor = threading.Thread(target=lambda: counts.__setitem__(
            "slow_cut", counts["slow_cut"] + slowloris(port, 20, 14)[0]), daemon=True)
        lor.start()
        for i in range(10):
            try:
                new_cookies.append(d.sign_in(g["url"], f"soak-{cycle}-{i}"))
                counts["sign_ins_ok"] += 1
            except Exception:  # noqa: BLE001 (counted)
                counts["sign_ins_failed"] += 1
        status, _, _ = big_body(port, "/upload/soak", 100 << 20)
        counts["uploads_ok"] += status == 200
        status, _, _ = big_body(port, "/oauth2/sign_out", 1 << 30,
                                b"Content-Type: application/x-www-form-urlencoded\r\n")
        counts["own_413"] += status == 413
        if cycle % 5 == 0:
            provider.send_signal(signal.SIGSTOP)
            time.sleep(10)
            provider.send_signal(signal.SIGCONT)
            counts["outages"] += 1
        lor.join()
        time.sleep(max(0, 20 - (time.monotonic() - c_start)))
        for s in socks:
            s.close()
        r = w.result()
        counts["requests"] += r["requests"]
        counts["non2xx"] += r["non2xx"]
        counts["socket_errors"] += r["socket_errors"]
        if g["proc"].poll() is not None:
            raise BenchError(f"linkgate exited during the soak: {g['proc'].returncode}")
        sample(f"cycle {cycle}: {wrk_line(r)}")
    time.sleep(2)
    sample("end")
    every = cookies + new_cookies
    lost = sum(1 for c in every if status_with_cookie(g["url"] + "/end", c) != 200)
    lst = subprocess.run([args.linkgate, "links", "-c", g["config"], "list"],
                         capture_output=True, text=True, check=False)
    links_after = len([line for line in lst.stdout.splitlines() if line.strip()])
    rss = [s["rss_kib"] for s in samples if s["rss_kib"]]
    after_first = [s["rss_kib"] for s in samples if s["t_s"] >= 120 and s["rss_kib"]]
    fd_list = [s["fds"] for s in samples if s["fds"] is not None]
    elapsed = time.monotonic() - t0
    say(f"soak: {elapsed / 60:.1f} minutes, {cycle} cycles; {counts}; RSS start "
        f"{mib(rss[0])} MiB, min/max after 2 min {mib(min(after_first or rss))}-"
        f"{mib(max(after_first or rss))} MiB, end {mib(rss[-1])} MiB; fds start {fd_list[0]}, "
        f"max {max(fd_list)}, end {fd_list[-1]}; sessions lost {lost}/{len(every)}; links "
        f"{links_after}/{args.links}; linkgate pid {pid} never restarted")
    return {"minutes": elapsed / 60, "cycles": cycle, "counts": counts, "samples": samples,
            "sessions": len(every), "sessions_lost": lost, "links": args.links,
            "links_after": links_after}


SCENARIOS = {"cluster": scenario_cluster, "upgrade": scenario_upgrade,
             "floods": scenario_floods, "outage": scenario_outage, "soak": scenario_soak}


def parse_cpus(spec):
    """A taskset CPU list ("0", "0,2", "0-1") as numbers."""
    cpus = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus


def parse_args(argv):
    p = argparse.ArgumentParser(prog="bench/faults", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("scenario", choices=[*SCENARIOS, "all"])
    p.add_argument("--linkgate", required=True)
    p.add_argument("--gate-threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=3, help="cluster throughput / upgrade rounds")
    p.add_argument("--duration", type=int, default=10, help="cluster throughput run, s")
    p.add_argument("--node-timeout", type=int, default=2000, help="cluster-node-timeout, ms")
    p.add_argument("--cluster-sessions", type=int, default=300)
    p.add_argument("--slots", type=int, default=2000, help="slots the reshard moves")
    p.add_argument("--migrate-seconds", type=int, default=40)
    p.add_argument("--failover-seconds", type=int, default=30)
    p.add_argument("--upgrade-seconds", type=int, default=12)
    p.add_argument("--phase-seconds", type=int, default=20, help="floods: each phase, s")
    p.add_argument("--idle", type=int, default=10000)
    p.add_argument("--slowloris", type=int, default=1000)
    p.add_argument("--storm", type=int, default=1000)
    p.add_argument("--storm-workers", type=int, default=100)
    p.add_argument("--outage-seconds", type=int, default=60)
    p.add_argument("--pending", type=int, default=10, help="sign-ins waiting at the callback")
    p.add_argument("--token-ttl", type=int, default=30, help="access token lifetime, s")
    p.add_argument("--minutes", type=float, default=30, help="soak length")
    p.add_argument("--soak-sessions", type=int, default=200)
    p.add_argument("--links", type=int, default=100)
    p.add_argument("--pin", metavar="CPUS",
                   help="run linkgate on these CPUs (taskset list, e.g. 0) and this driver, "
                        "wrk, Redis, the provider and the origin on the others, so a flood's "
                        "generator does not take the gate's CPU")
    p.add_argument("--keep", action="store_true", help="keep configs and logs")
    return p.parse_args(argv)


def main(argv):
    args = parse_args(argv)
    if args.pin is not None:
        gate_cpus = set(parse_cpus(args.pin))
        rest = os.sched_getaffinity(0) - gate_cpus
        if not gate_cpus or not rest:
            raise SystemExit(f"--pin {args.pin}: needs a CPU for linkgate and one for the rest "
                             f"(this process may use {sorted(os.sched_getaffinity(0))})")
        # Everything this driver starts from now on inherits the other CPUs.
        os.sched_setaffinity(0, rest)
        log(f"linkgate on CPU {sorted(gate_cpus)}, the rest on CPU {sorted(rest)}")
    tmp = tempfile.mkdtemp(prefix="linkgate-faults-")
    procs = d.Procs(tmp)
    ok = False

    def on_term(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        secrets_files(tmp)
        names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
        for name in names:
            log(f"scenario {name}")
            started = time.monotonic()
            result = SCENARIOS[name](args, procs, tmp)
            procs.stop_all()
            out = os.path.join(ROOT, "bench", f"faults-{name}.json")
            with open(out, "w") as fh:
                json.dump({"scenario": name, "elapsed_s": round(time.monotonic() - started),
                           "date": time.strftime("%Y-%m-%d %H:%M:%S"), "result": result},
                          fh, indent=2, default=str)
                fh.write("\n")
            log(f"wrote bench/faults-{name}.json")
        ok = True
        return 0
    except BenchError as e:
        log(f"FAILED: {e}")
        return 1
    except KeyboardInterrupt:
        log("interrupted")
        return 130
    finally:
        procs.stop_all()
        if args.keep or not ok:
            log(f"configs and logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
