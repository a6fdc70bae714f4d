#!/usr/bin/env python3
"""linkgate's load benchmark: started by `bench/run`, which installs the tools and builds
linkgate first. Python 3 standard library only.

What it does, all on 127.0.0.1:
  1. starts a fast origin (nginx answering `return 200`), Redis, the test OpenID provider
     (tests/support/oidc/provider.mjs), two linkgate gates (session cache on and off) and a
     second nginx as the baseline proxy (plain proxy_pass, and auth_request to linkgate);
  2. signs in once through linkgate the way a browser would (no redirects followed, a cookie
     jar), and has the provider sign a bearer JWT;
  3. checks that every target answers 200 with the origin's body, then drives wrk over each
     with the same connections and duration, round after round (A B C.. A B C..), and reports
     the medians: requests/s, p50/p99 latency, ratios, Redis commands per request, proxy CPU
     per request and linkgate's RSS. Table on stdout, everything in bench/results.json;
  4. the half-load phase: R = half the req/s of the linkgate skip-auth row just measured;
     drives origin, skip-auth, cached session, nginx proxy_pass and nginx auth_request at R
     req/s each (bench/rate.lua: a calibrated delay before each request), alternating
     rounds, and reports achieved rate, p50/p99/p99.9 and the p99 added over skip-auth and
     over the origin: a second table, and "half_load" in bench/results.json.

`--soak` instead signs in as many distinct users as it can in a bounded time, loads each
session once through linkgate (so they are all cached), reports RSS per cached session
(extrapolated to 100k, and said so), then runs a 10-minute load over all those sessions and
samples linkgate's RSS every 10 s.

Every process it starts runs in its own session and is stopped at the end, on success, error,
Ctrl-C or SIGTERM (and gets SIGTERM should this script die without cleaning up).
"""

import argparse
import base64
import concurrent.futures
import ctypes
import datetime
import http.client
import json
import os
import platform
import queue
import re
import secrets
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OIDC_DIR = os.path.join(ROOT, "tests", "support", "oidc")
CLIENT_ID = "linkgate"
CLIENT_SECRET = "linkgate-bench-secret"
COOKIE_NAME = "_linkgate"
ORIGIN_BODY = b"origin ok\n"


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


class BenchError(Exception):
    """A failure with a message meant for the operator."""


# === processes ===


try:
    _LIBC = ctypes.CDLL("libc.so.6", use_errno=True)
except OSError:
    _LIBC = None


def _die_with_parent():
    """Runs in each child before exec: SIGTERM when this driver dies (Linux prctl). libc is
    loaded beforehand, so nothing here imports or allocates much between fork and exec."""
    if _LIBC is not None:
        _LIBC.prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG


class Procs:
    """The processes this run started, stopped in reverse order by stop_all()."""

    def __init__(self, logdir):
        self.logdir = logdir
        self.items = []  # (name, Popen, logpath)

    def spawn(self, name, argv, cwd=None, env=None, stdin=subprocess.DEVNULL, stdout=None):
        logpath = os.path.join(self.logdir, f"{name}.log")
        logf = open(logpath, "ab")
        try:
            p = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdin=stdin,
                stdout=stdout if stdout is not None else logf,
                stderr=logf,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        except FileNotFoundError as e:
            raise BenchError(f"cannot start {name}: {e}") from e
        finally:
            logf.close()
        self.items.append((name, p, logpath))
        return p

    def log_tail(self, name, lines=30):
        for n, _, path in self.items:
            if n == name:
                try:
                    with open(path, "rb") as f:
                        text = f.read().decode("utf-8", "replace").splitlines()
                    return "\n".join(text[-lines:])
                except OSError:
                    return ""
        return ""

    def check_alive(self, name, p):
        if p.poll() is not None:
            raise BenchError(
                f"{name} exited with status {p.returncode}; its log:\n{self.log_tail(name)}"
            )

    def stop(self, p, timeout=5.0):
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                p.kill()
            p.wait(timeout=5)

    def stop_all(self):
        for name, p, _ in reversed(self.items):
            try:
                self.stop(p)
            except Exception as e:  # keep stopping the others
                log(f"stopping {name}: {e}")
        self.items.clear()


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(what, limit, probe, alive=None):
    """Polls `probe` every 20 ms for at most `limit` seconds; `alive` raises if a process died."""
    deadline = time.monotonic() + limit
    while True:
        if probe():
            return
        if alive:
            alive()
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {limit} s waiting for {what}")
        time.sleep(0.02)


def port_open(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def redis_ping(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"PING\r\n")
            return s.recv(7) == b"+PONG\r\n"
    except OSError:
        return False


# === a browser-less HTTP client ===


class Browser:
    """Cookies kept (per host, ports ignored, as browsers do), redirects never followed,
    one keep-alive connection per origin. Not thread-safe: one per thread."""

    def __init__(self, timeout=15):
        self.cookies = {}  # name -> (value, path)
        self.conns = {}
        self.timeout = timeout

    def _conn(self, host, port, fresh=False):
        key = (host, port)
        if fresh and key in self.conns:
            self.conns.pop(key).close()
        if key not in self.conns:
            self.conns[key] = http.client.HTTPConnection(host, port, timeout=self.timeout)
        return self.conns[key]

    def cookie_header(self, path):
        pairs = [f"{n}={v}" for n, (v, p) in self.cookies.items() if path.startswith(p)]
        return "; ".join(pairs)

    def _store_cookies(self, resp):
        for header in resp.msg.get_all("Set-Cookie") or []:
            parts = [p.strip() for p in header.split(";")]
            if "=" not in parts[0]:
                continue
            name, value = parts[0].split("=", 1)
            attrs = {}
            for a in parts[1:]:
                k, _, v = a.partition("=")
                attrs[k.strip().lower()] = v.strip()
            expired = attrs.get("max-age") == "0" or (
                "expires" in attrs and "1970" in attrs["expires"]
            )
            if expired or value == "":
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = (value, attrs.get("path") or "/")

    def request(self, method, url, headers=None, body=None):
        """Returns (status, headers as http.client.HTTPMessage, body bytes)."""
        u = urllib.parse.urlsplit(url)
        if u.hostname != "127.0.0.1":
            raise BenchError(f"refusing traffic off loopback: {url}")
        path = u.path or "/"
        target = path + (f"?{u.query}" if u.query else "")
        h = dict(headers or {})
        cookie = self.cookie_header(path)
        if cookie:
            h["Cookie"] = cookie
        if body is not None and isinstance(body, str):
            body = body.encode()
        for attempt in (0, 1):
            conn = self._conn(u.hostname, u.port, fresh=attempt == 1)
            try:
                conn.request(method, target, body=body, headers=h)
                resp = conn.getresponse()
                data = resp.read()
                break
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # The server closed an idle keep-alive connection: retry once on a new one.
                if attempt == 1:
                    raise
        self._store_cookies(resp)
        if resp.getheader("Connection", "").lower() == "close":
            self.conns.pop((u.hostname, u.port)).close()
        return resp.status, resp.msg, data

    def close(self):
        for c in self.conns.values():
            c.close()
        self.conns.clear()


NAVIGATE = {
    "Accept": "text/html,application/xhtml+xml,*/*;q=0.8",
    "Sec-Fetch-Mode": "navigate",
}


def _origin(url):
    u = urllib.parse.urlsplit(url)
    return (u.scheme, u.hostname, u.port)


def _forms(html):
    """(action, {name: value}) of each <form>, in order; enough for the test provider's pages."""
    out = []
    for m in re.finditer(r"<form\b([^>]*)>(.*?)</form>", html, re.S | re.I):
        action = re.search(r'action="([^"]*)"', m.group(1))
        inputs = {}
        for i in re.finditer(r"<input\b([^>]*)>", m.group(2), re.I):
            name = re.search(r'name="([^"]*)"', i.group(1))
            value = re.search(r'value="([^"]*)"', i.group(1))
            if name:
                inputs[name.group(1)] = _unescape(value.group(1)) if value else ""
        out.append((_unescape(action.group(1)) if action else "", inputs))
    return out


def _unescape(s):
    return (
        s.replace("&quot;", '"')
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
    )


def sign_in(gate_url, login, callback=True):
    """Signs in through linkgate as `login`, as a browser would; returns the session cookie
    value. GET {prefix}/start -> the provider's authorize URL -> its interaction pages (the
    login form is posted) -> the first redirect leaving the provider is linkgate's callback.
    With `callback=False` it stops there (returns None): all of a sign-in's work but
    linkgate's callback, for a control run."""
    b = Browser()
    try:
        status, h, body = b.request("GET", f"{gate_url}/oauth2/start?rd=/", NAVIGATE)
        if status != 302:
            raise BenchError(f"sign-in: start answered {status}: {body[:300]!r}")
        url = urllib.parse.urljoin(gate_url, h["Location"])
        provider = _origin(url)
        method, form = "GET", None
        for _ in range(20):
            hdrs = dict(NAVIGATE)
            if form is not None:
                hdrs["Content-Type"] = "application/x-www-form-urlencoded"
            status, h, body = b.request(method, url, hdrs, form)
            if 300 <= status < 400:
                nxt = urllib.parse.urljoin(url, h["Location"])
                method, form = "GET", None
                if _origin(nxt) != provider:
                    url = nxt
                    break
                url = nxt
                continue
            text = body.decode("utf-8", "replace")
            if status == 200:
                forms = _forms(text)
                login_form = next((f for f in forms if "login" in f[1]), None)
                if login_form:
                    fields = dict(login_form[1], login=login, password="any-password")
                    method, form = "POST", urllib.parse.urlencode(fields)
                    url = urllib.parse.urljoin(url, login_form[0])
                    continue
                if ".submit()" in text and forms:
                    method, form = "POST", urllib.parse.urlencode(forms[0][1])
                    url = urllib.parse.urljoin(url, forms[0][0])
                    continue
            raise BenchError(f"sign-in: unexpected {status} at {url}: {text[:500]}")
        else:
            raise BenchError("sign-in: more than 20 hops at the provider")
        # `url` is linkgate's callback.
        if not callback:
            return None
        status, h, body = b.request("GET", url, NAVIGATE)
        if status != 302 or COOKIE_NAME not in b.cookies:
            raise BenchError(f"sign-in: the callback answered {status}: {body[:500]!r}")
        return b.cookies[COOKIE_NAME][0]
    finally:
        b.close()


def http_get(url, headers=None, timeout=10, cafile=None):
    """(status, body) of one GET; an https URL is verified against `cafile` (the run's
    throwaway certificate)."""
    u = urllib.parse.urlsplit(url)
    if u.scheme == "https":
        conn = http.client.HTTPSConnection(
            u.hostname, u.port, timeout=timeout,
            context=ssl.create_default_context(cafile=cafile))
    else:
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
    try:
        target = (u.path or "/") + (f"?{u.query}" if u.query else "")
        conn.request("GET", target, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def http_status(url):
    try:
        return http_get(url, timeout=1)[0]
    except OSError:
        return None


# === measurements ===


def redis_commandstats(port):
    """{command: calls} from INFO commandstats (via redis-cli)."""
    out = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), "INFO", "commandstats"],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    ).stdout
    stats = {}
    for line in out.splitlines():
        m = re.match(r"cmdstat_([^:]+):calls=(\d+)", line)
        if m:
            stats[m.group(1)] = int(m.group(2))
    return stats


def redis_delta(before, after):
    """Commands run between two snapshots, without our own INFO calls."""
    delta = {}
    for cmd, n in after.items():
        d = n - before.get(cmd, 0)
        if d > 0 and cmd != "info":
            delta[cmd] = d
    return delta


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


CLK_TCK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids):
    """user+system CPU seconds of these processes so far."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            pass
    return total / CLK_TCK


def children_of(pid):
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            out.append(int(entry))
    return out


def metric(admin_port, name, labels):
    """One counter from linkgate's /metrics, or None."""
    try:
        status, body = http_get(f"http://127.0.0.1:{admin_port}/metrics")
    except OSError:
        return None
    if status != 200:
        return None
    for line in body.decode().splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            try:
                return float(line.rsplit(" ", 1)[1])
            except ValueError:
                return None
    return None


def run_wrk(args, url, headers, duration, script="bench/report.lua", script_args=()):
    argv = [
        "wrk",
        "-t",
        str(args.threads),
        "-c",
        str(args.connections),
        "-d",
        f"{duration}s",
        "--timeout",
        "10s",
        "-s",
        script,
    ]
    for k, v in headers.items():
        argv += ["-H", f"{k}: {v}"]
    argv.append(url)
    if script_args:
        argv += ["--", *script_args]
    return argv


def parse_wrk(stdout):
    for line in stdout.splitlines():
        if line.startswith("WRK_JSON "):
            r = json.loads(line[len("WRK_JSON ") :])
            r["rps"] = r["requests"] / (r["duration_us"] / 1e6) if r["duration_us"] else 0.0
            return r
    raise BenchError(f"wrk printed no result:\n{stdout[-2000:]}")


def wrk_once(args, url, headers, duration):
    return wrk_argv_once(run_wrk(args, url, headers, duration), duration)


def wrk_argv_once(argv, duration):
    p = subprocess.run(
        argv, cwd=ROOT, capture_output=True, text=True, timeout=duration + 60, check=False
    )
    if p.returncode != 0:
        raise BenchError(f"wrk failed ({p.returncode}): {p.stderr.strip()}")
    return parse_wrk(p.stdout)


# The HTTP/2 rows are driven by h2load (nghttp2-client) instead of wrk, which speaks only
# HTTP/1.1: the same connections and threads, one request in flight per connection (-m 1,
# as wrk's closed loop), for --duration seconds. Latency percentiles come from its per-request
# log (--log-file), in the shape parse_wrk returns.


def h2load_argv(args, url, headers, duration, log_file, connections=None, requests=None):
    conns = connections or args.connections
    argv = ["h2load", "-c", str(conns), "-t", str(min(args.threads, conns)), "-m", "1"]
    # h2load's -D takes whole seconds or a unit ("1500ms").
    argv += ["-n", str(requests)] if requests else ["-D", f"{round(duration * 1000)}ms"]
    argv += ["--log-file", log_file]
    for k, v in headers.items():
        argv += ["-H", f"{k.lower()}: {v}"]
    return argv + [url]


def parse_h2load(stdout, log_file, url):
    """wrk's result dict from h2load's summary and per-request log; raises unless the
    protocol is h2 (https) or h2c (http)."""
    want = "h2" if url.startswith("https:") else "h2c"
    proto = re.search(r"^Application protocol: (\S+)", stdout, re.M)
    if not proto or proto.group(1) != want:
        raise BenchError(f"h2load did not speak {want} to {url}:\n{stdout[-2000:]}")
    fin = re.search(r"^finished in ([\d.]+)(m?s), ([\d.]+) req/s", stdout, re.M)
    req = re.search(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                    r"(\d+) failed, (\d+) errored, (\d+) timeout", stdout, re.M)
    codes = re.search(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", stdout,
                      re.M)
    traffic = re.search(r"^traffic: .*?\((\d+)\) total", stdout, re.M)
    if not (fin and req and codes):
        raise BenchError(f"h2load printed no result:\n{stdout[-2000:]}")
    secs = float(fin.group(1)) / (1000 if fin.group(2) == "ms" else 1)
    done, failed, errored, timeout = (int(req.group(i)) for i in (3, 5, 6, 7))
    if done == 0:
        # h2load names the protocol it asked for even when no request got an answer.
        raise BenchError(f"h2load: no request to {url} was answered:\n{stdout[-2000:]}")
    lat = []
    with open(log_file) as f:
        for line in f:
            cols = line.split("\t")
            if len(cols) >= 3:
                lat.append(int(cols[2]))
    lat.sort()
    pct = lambda q: lat[min(len(lat) - 1, int(q / 100 * len(lat)))] if lat else 0  # noqa: E731
    tls = re.search(r"^TLS Protocol: (\S+)", stdout, re.M)
    cipher = re.search(r"^Cipher: (\S+)", stdout, re.M)
    return {
        "requests": done,
        "duration_us": int(secs * 1e6),
        "bytes": int(traffic.group(1)) if traffic else 0,
        # wrk's error keys; `failed` (h2load: errored and timed-out requests included) in
        # place of wrk's read/write errors, `status` the 3xx-5xx answers (every target was
        # checked to answer 200).
        "errors": {"connect": 0, "read": 0, "write": 0,
                   "status": sum(int(codes.group(i)) for i in (2, 3, 4)),
                   "timeout": timeout, "failed": failed - timeout},
        "p50_us": pct(50), "p90_us": pct(90), "p99_us": pct(99),
        "max_us": lat[-1] if lat else 0,
        "mean_us": statistics.fmean(lat) if lat else 0.0,
        "rps": float(fin.group(3)),
        "protocol": proto.group(1),
        "tls": f"{tls.group(1)} {cipher.group(1) if cipher else ''}".strip() if tls else None,
        "h2load_errored": errored,
    }


def h2load_once(args, url, headers, duration, connections=None, requests=None):
    fd, log_file = tempfile.mkstemp(prefix="h2load-", suffix=".tsv")
    os.close(fd)
    try:
        argv = h2load_argv(args, url, headers, duration, log_file, connections, requests)
        p = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True,
                           timeout=(duration or 0) + 60, check=False)
        if p.returncode != 0:
            raise BenchError(f"h2load failed ({p.returncode}): {p.stderr.strip()}\n"
                             f"{p.stdout[-2000:]}")
        return parse_h2load(p.stdout, log_file, url)
    finally:
        os.unlink(log_file)


def load_once(args, key, url, headers, duration):
    """One closed-loop run over a row: h2load for the HTTP/2 rows, wrk for the others."""
    if key in H2_ROWS:
        return h2load_once(args, url, headers, duration)
    return wrk_once(args, url, headers, duration)


# === the parts ===


def nginx_conf(tmp, name, workers, servers, upstreams="", connections=4096):
    d = os.path.join(tmp, name)
    os.makedirs(d, exist_ok=True)
    temps = "\n".join(
        f"    {kind}_temp_path {d}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    # As root, nginx workers would switch to `nobody`, which cannot enter the temp dir.
    user = "user root;\n" if os.geteuid() == 0 else ""
    rlimit = f"worker_rlimit_nofile {connections + 100};\n" if connections > 4096 else ""
    conf = f"""# Generated by bench/driver.py: {name}.
{user}daemon off;
master_process on;
worker_processes {workers};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
{rlimit}events {{ worker_connections {connections}; }}
http {{
    access_log off;
{temps}
    keepalive_requests 1000000;
    keepalive_timeout 75s;
{upstreams}
{servers}
}}
"""
    path = os.path.join(d, "nginx.conf")
    with open(path, "w") as f:
        f.write(conf)
    return d, path


def start_nginx(procs, tmp, name, workers, servers, ports, upstreams="", connections=4096):
    d, conf = nginx_conf(tmp, name, workers, servers, upstreams, connections)
    argv = ["nginx", "-p", d, "-c", conf, "-e", os.path.join(d, "error.log")]
    test = subprocess.run(argv + ["-t", "-q"], capture_output=True, text=True, check=False)
    if test.returncode != 0:
        raise BenchError(f"nginx ({name}) refused its config:\n{test.stderr}")
    p = procs.spawn(name, argv)
    for port in ports:
        wait_until(f"{name} on port {port}", 10, lambda: port_open(port),
                   lambda: procs.check_alive(name, p))
    return p


def start_provider(procs, tmp, port, redirect_uris, name="sso", access_ttl=None):
    node_modules = os.path.join(OIDC_DIR, "node_modules", "oidc-provider", "package.json")
    if not os.path.isfile(node_modules):
        raise BenchError(
            "the test OpenID provider is not installed: npm ci --prefix tests/support/oidc"
        )
    issuer = f"http://127.0.0.1:{port}"
    config = {
        "port": port,
        "issuer": issuer,
        "name": name,
        "clients": [
            {
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "redirect_uris": redirect_uris,
                "post_logout_redirect_uris": [],
                "token_endpoint_auth_method": "client_secret_basic",
                "grant_types": ["authorization_code", "refresh_token"],
            }
        ],
        "accounts": {},
        "ttl": {"AccessToken": access_ttl} if access_ttl else {},
        "verbose": False,
    }
    path = os.path.join(tmp, f"provider-{name}.json")
    with open(path, "w") as f:
        json.dump(config, f)
    # stdin stays open: the provider exits when it closes (when this driver dies).
    p = procs.spawn(
        f"provider-{name}",
        ["node", "provider.mjs", path],
        cwd=OIDC_DIR,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    lines = queue.Queue()

    def read():
        for raw in p.stdout:
            lines.put(raw.decode("utf-8", "replace").strip())
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    try:
        first = lines.get(timeout=30)
    except queue.Empty:
        raise BenchError("the OpenID provider printed no READY line within 30 s") from None
    if first != f"READY {issuer}":
        raise BenchError(
            f"the OpenID provider did not start ({first!r}):\n{procs.log_tail(f'provider-{name}')}"
        )
    return p, issuer


def gate_config(tmp, name, port, admin, origin_port, provider_issuer, redis_port, cache_ttl,
                assertion=False, tls=None):
    d = os.path.join(tmp, name)
    # The identity assertion (ES256, the key generated into Redis), on its own gate so the
    # other rows stay as they were.
    server_extra = f'public_url = "http://127.0.0.1:{port}"' if assertion else ""
    if tls:
        # HTTPS with HTTP/2 over ALPN (src/server.rs), the run's throwaway certificate.
        server_extra += f'\n\n[server.tls]\ncert = "{tls[0]}"\nkey = "{tls[1]}"'
    assertion_section = "[assertion]\n" if assertion else ""
    os.makedirs(d, exist_ok=True)
    rlimit = f"worker_rlimit_nofile {connections + 100};\n" if connections > 4096 else ""
    conf = f"""# Generated by bench/driver.py: {name}.
[server]
listen = "127.0.0.1:{port}"
admin_listen = "127.0.0.1:{admin}"
threads = THREADS
pid_file = "{d}/linkgate.pid"
upgrade_sock = "{d}/upgrade.sock"
graceful_shutdown_timeout = "1s"
{server_extra}

[[upstreams]]
name = "origin"
url = "http://127.0.0.1:{origin_port}"

[sso]
issuer = "{provider_issuer}"
client_id = "{CLIENT_ID}"
client_secret_file = "../client_secret"

[session]
cookie_secret_file = "../cookie_secret"
cookie_secure = false
store = "redis"
cache_ttl = "{cache_ttl}"
# Above the soak's 100k sessions, so that every one of them stays cached.
cache_capacity = 150000

[redis]
url = "redis://127.0.0.1:{redis_port}/0"

[authz]
skip_auth_routes = ["^/public/"]
bearer_tokens = true

[log]
level = "warn"

{assertion_section}"""
    path = os.path.join(d, "config.toml")
    return path, conf


def start_gate(procs, args, tmp, name, port, cache_ttl, origin_port, issuer, redis_port,
               assertion=False, tls=None):
    admin = free_port()
    path, conf = gate_config(tmp, name, port, admin, origin_port, issuer, redis_port, cache_ttl,
                             assertion, tls)
    with open(path, "w") as f:
        f.write(conf.replace("THREADS", str(args.gate_threads)))
    check = subprocess.run(
        [args.linkgate, "check", "-c", path], capture_output=True, text=True, check=False
    )
    if check.returncode != 0:
        raise BenchError(f"linkgate check refused {path}:\n{check.stdout}{check.stderr}")
    env = {k: v for k, v in os.environ.items() if k != "RUST_LOG"}
    p = procs.spawn(name, [args.linkgate, "run", "-c", path], env=env)
    wait_until(
        f"{name} /readyz",
        30,
        lambda: http_status(f"http://127.0.0.1:{admin}/readyz") == 200 and port_open(port),
        lambda: procs.check_alive(name, p),
    )
    scheme = "https" if tls else "http"
    return {"name": name, "proc": p, "port": port, "admin": admin,
            "url": f"{scheme}://127.0.0.1:{port}", "cache_ttl": cache_ttl}


def make_cert(tmp):
    """A throwaway self-signed ECDSA P-256 certificate for 127.0.0.1 in the run's temp dir
    (openssl CLI), presented by both the TLS gate and nginx; (cert, key) paths."""
    cert, key = os.path.join(tmp, "tls-cert.pem"), os.path.join(tmp, "tls-key.pem")
    p = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1", "-keyout", key, "-out", cert],
        capture_output=True, text=True, check=False)
    if p.returncode != 0:
        raise BenchError(f"openssl could not make the benchmark's certificate:\n{p.stderr}")
    return cert, key


class Rig:
    """Everything started for a run."""

    def __init__(self, args, procs, tmp):
        self.args, self.procs, self.tmp = args, procs, tmp

    def start(self):
        args, procs, tmp = self.args, self.procs, self.tmp
        with open(os.path.join(tmp, "cookie_secret"), "w") as f:
            f.write(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("="))
        with open(os.path.join(tmp, "client_secret"), "w") as f:
            f.write(CLIENT_SECRET)

        self.origin_port = free_port()
        log(f"origin (nginx, {args.workers} workers) on 127.0.0.1:{self.origin_port}")
        self.origin = start_nginx(
            procs, tmp, "origin", args.workers,
            f"""    server {{
        listen 127.0.0.1:{self.origin_port} backlog=4096;
        location / {{ default_type text/plain; return 200 "{ORIGIN_BODY.decode().strip()}\\n"; }}
    }}""",
            [self.origin_port],
        )

        self.redis_port = free_port()
        log(f"redis-server on 127.0.0.1:{self.redis_port}")
        self.redis = procs.spawn("redis", [
            "redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1",
            "--save", "", "--appendonly", "no", "--dir", tmp,
        ])
        wait_until("redis PING", 10, lambda: redis_ping(self.redis_port),
                   lambda: procs.check_alive("redis", self.redis))

        provider_port = free_port()
        # The gates' ports are chosen now, so the provider can register their callbacks.
        self.gate_ports = (free_port(), free_port())
        log(f"OpenID provider (node) on 127.0.0.1:{provider_port}")
        self.provider, self.issuer = start_provider(
            procs, tmp, provider_port,
            [f"http://127.0.0.1:{p}/oauth2/callback" for p in self.gate_ports],
        )
        # A second provider whose access tokens are short (5 minutes, Keycloak's default;
        # --short-ttl), behind its own linkgate with the defaults (refresh_before = "5m").
        short_port, self.short_gate_port = free_port(), free_port()
        log(f"OpenID provider with {args.short_ttl}s access tokens on 127.0.0.1:{short_port}")
        self.short_provider, self.short_issuer = start_provider(
            procs, tmp, short_port,
            [f"http://127.0.0.1:{self.short_gate_port}/oauth2/callback"],
            name="sso-short", access_ttl=args.short_ttl,
        )

        self.gates = {}
        for (name, ttl), port in zip((("gate-cached", "30s"), ("gate-nocache", "0s")),
                                     self.gate_ports):
            self.gates[name] = start_gate(procs, args, tmp, name, port, ttl, self.origin_port,
                                          self.issuer, self.redis_port)
            log(f"linkgate {name} (cache_ttl {ttl}) on {self.gates[name]['url']}")
        # A third gate with [assertion]: sessions are shared through Redis (same cookie
        # secret), so the cookie signed in through the first gate works here too.
        port = free_port()
        self.gates["gate-assert"] = start_gate(procs, args, tmp, "gate-assert", port, "30s",
                                               self.origin_port, self.issuer, self.redis_port,
                                               assertion=True)
        log(f"linkgate gate-assert (cache_ttl 30s, [assertion]) on {self.gates['gate-assert']['url']}")
        self.gates["gate-short"] = start_gate(procs, args, tmp, "gate-short",
                                              self.short_gate_port, "30s", self.origin_port,
                                              self.short_issuer, self.redis_port)
        log(f"linkgate gate-short (cache_ttl 30s, {args.short_ttl}s tokens) on "
            f"{self.gates['gate-short']['url']}")
        # The TLS rows: a gate like gate-cached on HTTPS (HTTP/1.1 and h2 over ALPN), sharing
        # its sessions through Redis like gate-assert. gate-cached itself serves h2c (prior
        # knowledge) on its plain listener, as every plain linkgate listener does.
        self.cert = make_cert(tmp)
        port = free_port()
        self.gates["gate-tls"] = start_gate(procs, args, tmp, "gate-tls", port, "30s",
                                            self.origin_port, self.issuer, self.redis_port,
                                            tls=self.cert)
        log(f"linkgate gate-tls (cache_ttl 30s, TLS) on {self.gates['gate-tls']['url']}")

        # The floor under linkgate: Pingora with a ProxyHttp that only returns the peer
        # (bench/minimal), same threads.
        self.minimal_port = free_port()
        log(f"minimal Pingora ({args.gate_threads} threads) on 127.0.0.1:{self.minimal_port}")
        self.minimal = procs.spawn("minimal-pingora", [
            args.minimal, f"127.0.0.1:{self.minimal_port}", f"127.0.0.1:{self.origin_port}",
            str(args.gate_threads)])
        wait_until("minimal-pingora", 30, lambda: port_open(self.minimal_port),
                   lambda: procs.check_alive("minimal-pingora", self.minimal))

        a = self.gates["gate-cached"]
        self.nginx_ports = (free_port(), free_port())
        self.nginx_tls_port, self.nginx_h2c_port = free_port(), free_port()
        log(f"nginx baseline ({args.workers} workers) on 127.0.0.1:{self.nginx_ports[0]} "
            f"(proxy_pass) and :{self.nginx_ports[1]} (auth_request); proxy_pass over TLS "
            f"(HTTP/1.1 and h2 over ALPN) on :{self.nginx_tls_port}, over h2c on "
            f":{self.nginx_h2c_port}")
        keep = "proxy_http_version 1.1; proxy_set_header Connection \"\";"
        self.nginx = start_nginx(
            procs, tmp, "nginx", args.workers,
            f"""    server {{
        listen 127.0.0.1:{self.nginx_ports[0]} backlog=4096;
        location / {{ proxy_pass http://origin; {keep} }}
    }}
    server {{
        # The TLS rows: the gate's certificate; `http2` on an ssl listener is h2 over ALPN
        # beside HTTP/1.1 (nginx 1.22's syntax; `http2 on;` from 1.25.1).
        # TLS 1.3 as well (nginx 1.22's default is up to 1.2 only; linkgate offers both).
        listen 127.0.0.1:{self.nginx_tls_port} ssl http2 backlog=4096;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_certificate {self.cert[0]};
        ssl_certificate_key {self.cert[1]};
        location / {{ proxy_pass http://origin; {keep} }}
    }}
    server {{
        # The h2c rows: `http2` on a plain listener is HTTP/2 with prior knowledge only.
        listen 127.0.0.1:{self.nginx_h2c_port} http2 backlog=4096;
        location / {{ proxy_pass http://origin; {keep} }}
    }}
    server {{
        listen 127.0.0.1:{self.nginx_ports[1]} backlog=4096;
        # How oauth2-proxy is usually deployed: a subrequest per request to the gate.
        location = /oauth2/auth {{
            internal;
            proxy_pass http://linkgate;
            {keep}
            proxy_set_header Host $http_host;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header X-Original-URI $request_uri;
        }}
        location / {{
            auth_request /oauth2/auth;
            auth_request_set $user $upstream_http_x_auth_request_user;
            auth_request_set $email $upstream_http_x_auth_request_email;
            proxy_pass http://origin;
            {keep}
            proxy_set_header X-Forwarded-User $user;
            proxy_set_header X-Forwarded-Email $email;
        }}
    }}""",
            [*self.nginx_ports, self.nginx_tls_port, self.nginx_h2c_port],
            upstreams=f"""    upstream origin {{ server 127.0.0.1:{self.origin_port}; keepalive 64; }}
    upstream linkgate {{ server 127.0.0.1:{a['port']}; keepalive 64; }}""",
        )
        return self

    def alive(self):
        for name, p, _ in self.procs.items:
            self.procs.check_alive(name, p)

    def sign_jwt(self, sub):
        now = int(time.time())
        claims = {"iss": self.issuer, "aud": CLIENT_ID, "sub": sub,
                  "email": f"{sub}@example.test", "email_verified": True,
                  "iat": now, "exp": now + 24 * 3600}
        u = urllib.parse.urlsplit(self.issuer)
        conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
        try:
            conn.request("POST", "/__test/sign", body=json.dumps(claims),
                         headers={"Content-Type": "application/json"})
            r = conn.getresponse()
            body = r.read().decode()
        finally:
            conn.close()
        if r.status != 200:
            raise BenchError(f"the provider did not sign a JWT: {r.status} {body}")
        return body.strip()

    def nginx_workers(self):
        return children_of(self.nginx.pid)

    def short_counts(self):
        """The short-token provider's counters (/__test/counts)."""
        status, body = http_get(f"{self.short_issuer}/__test/counts")
        if status != 200:
            raise BenchError(f"the short-token provider's counts: {status}")
        return json.loads(body)


# === the benchmark ===

# The protocol rows (issue 15: production runs TLS): skip-auth, cached session and nginx
# proxy_pass over TLS with HTTP/1.1 (wrk), over TLS with h2 by ALPN and over h2c with prior
# knowledge (h2load). Each group's ×pass and ×nginx are over its own skip-auth and nginx rows.
PROTOCOLS = {
    "_tls": "HTTP/1.1 over TLS",
    "_tls_h2": "h2 over TLS (ALPN)",
    "_h2c": "h2c (prior knowledge)",
}
H2_ROWS = {f"{row}{suffix}" for row in ("skip_auth", "session_cached", "nginx_proxy")
           for suffix in ("_tls_h2", "_h2c")}
# Names --only accepts for several rows at once.
ROW_GROUPS = {
    "tls": [f"{row}{suffix}" for suffix in ("_tls", "_tls_h2")
            for row in ("skip_auth", "session_cached", "nginx_proxy")],
    "h2c": [f"{row}_h2c" for row in ("skip_auth", "session_cached", "nginx_proxy")],
}
ROW_GROUPS["protocols"] = ROW_GROUPS["tls"] + ROW_GROUPS["h2c"]


def protocol_of(key):
    """(suffix, protocol) of a row key: ("", "HTTP/1.1") for the plain rows."""
    for suffix in sorted(PROTOCOLS, key=len, reverse=True):
        if key.endswith(suffix):
            return suffix, PROTOCOLS[suffix]
    return "", "HTTP/1.1"


def scenarios(rig, cookie, jwt, short_cookie):
    """(key, label, url, headers, proxy pids (for CPU), gate (for RSS) or None)."""
    a, b = rig.gates["gate-cached"], rig.gates["gate-nocache"]
    c = rig.gates["gate-short"]
    d = rig.gates["gate-assert"]
    t = rig.gates["gate-tls"]
    cookie_h = {"Cookie": f"{COOKIE_NAME}={cookie}"}
    workers = rig.nginx_workers()
    minutes = f"{rig.args.short_ttl / 60:g}-min"
    rows = [
        ("origin", "origin direct (the limit)", f"http://127.0.0.1:{rig.origin_port}/app",
         {}, [], None),
        ("minimal", "minimal Pingora (a peer, no filters)",
         f"http://127.0.0.1:{rig.minimal_port}/public/app", {}, [rig.minimal.pid],
         {"name": "minimal-pingora", "proc": rig.minimal}),
        ("skip_auth", "linkgate skip-auth route", f"{a['url']}/public/app",
         {}, [a["proc"].pid], a),
        ("session_cached", "linkgate session, cache on (30s)", f"{a['url']}/app",
         cookie_h, [a["proc"].pid], a),
        ("session_cached_short", f"linkgate session, cache on, {minutes} tokens",
         f"{c['url']}/app", {"Cookie": f"{COOKIE_NAME}={short_cookie}"}, [c["proc"].pid], c),
        ("session_nocache", "linkgate session, cache off (0s)", f"{b['url']}/app",
         cookie_h, [b["proc"].pid], b),
        ("session_assertion", "linkgate session, cache on + assertion", f"{d['url']}/app",
         cookie_h, [d["proc"].pid], d),
        ("bearer_jwt", "linkgate bearer JWT (RS256)", f"{a['url']}/api",
         {"Authorization": f"Bearer {jwt}"}, [a["proc"].pid], a),
        ("nginx_proxy", "nginx proxy_pass", f"http://127.0.0.1:{rig.nginx_ports[0]}/app",
         {}, workers, None),
        ("nginx_auth_request", "nginx auth_request -> linkgate /oauth2/auth",
         f"http://127.0.0.1:{rig.nginx_ports[1]}/app", cookie_h, workers + [a["proc"].pid], a),
    ]
    nginx_tls = f"https://127.0.0.1:{rig.nginx_tls_port}/app"
    for suffix, gate, nginx_url in (("_tls", t, nginx_tls), ("_tls_h2", t, nginx_tls),
                                    ("_h2c", a, f"http://127.0.0.1:{rig.nginx_h2c_port}/app")):
        proto = PROTOCOLS[suffix]
        rows += [
            (f"skip_auth{suffix}", f"linkgate skip-auth route, {proto}",
             f"{gate['url']}/public/app", {}, [gate["proc"].pid], gate),
            (f"session_cached{suffix}", f"linkgate session, cache on, {proto}",
             f"{gate['url']}/app", cookie_h, [gate["proc"].pid], gate),
            (f"nginx_proxy{suffix}", f"nginx proxy_pass, {proto}", nginx_url, {}, workers, None),
        ]
    if rig.args.only:
        keep = set()
        for name in rig.args.only.split(","):
            keep.update(ROW_GROUPS.get(name, [name]))
        unknown = keep - {r[0] for r in rows}
        if unknown:
            raise BenchError(f"--only: no such rows {sorted(unknown)}; rows: "
                             f"{', '.join(r[0] for r in rows)}; groups: {', '.join(ROW_GROUPS)}")
        rows = [r for r in rows if r[0] in keep]
    return rows


def check_targets(table, cafile):
    """Every row answers 200 with the origin's body over HTTP/1.1 (TLS verified against the
    run's certificate); an HTTP/2 row answers 2xx over h2 or h2c, as its client will ask. The
    h2c rows only over h2c: nginx's plain `http2` listener speaks nothing else."""
    for key, label, url, headers, _, _ in table:
        status, body = (200, ORIGIN_BODY) if key.endswith("_h2c") else http_get(
            url, headers, cafile=cafile)
        if status != 200 or body != ORIGIN_BODY:
            raise BenchError(
                f"{label}: {url} answered {status} {body[:300]!r}, not the origin's 200"
            )
        if key in H2_ROWS:
            r = h2load_once(ARGS, url, headers, None, connections=1, requests=4)
            if r["requests"] != 4 or sum(r["errors"].values()):
                raise BenchError(f"{label}: {url} over {r['protocol']}: {r}")


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def bench(args, rig):
    log("signing in once through linkgate (browser-less, cookie jar, no redirects followed)")
    cookie = sign_in(rig.gates["gate-cached"]["url"], "bench-user")
    jwt = rig.sign_jwt("bench-api")
    short_cookie = sign_in(rig.gates["gate-short"]["url"], "bench-short-user")
    short_signed_in = time.monotonic()
    short_before = rig.short_counts()
    table = scenarios(rig, cookie, jwt, short_cookie)
    check_targets(table, rig.cert[0])

    log(f"warm-up: {args.warmup}s per target")
    for key, label, url, headers, _, _ in table:
        load_once(args, key, url, headers, args.warmup)

    runs = {key: [] for key, *_ in table}
    n = len(table)
    for rnd in range(args.rounds):
        order = table[rnd % n:] + table[:rnd % n]
        log(f"round {rnd + 1}/{args.rounds}: " + ", ".join(k for k, *_ in order))
        for key, label, url, headers, pids, gate in order:
            rig.alive()
            before = redis_commandstats(rig.redis_port)
            cpu0 = cpu_seconds(pids)
            r = load_once(args, key, url, headers, args.duration)
            cpu1 = cpu_seconds(pids)
            after = redis_commandstats(rig.redis_port)
            delta = redis_delta(before, after)
            reqs = max(r["requests"], 1)
            r["redis_commands"] = delta
            r["redis_per_request"] = sum(delta.values()) / reqs
            r["proxy_cpu_us_per_request"] = (cpu1 - cpu0) * 1e6 / reqs if pids else None
            r["linkgate_rss_kib"] = rss_kib(gate["proc"].pid) if gate else None
            r["round"] = rnd + 1
            bad = sum(r["errors"].values())
            if bad:
                log(f"  {key}: {bad} errors {r['errors']}")
            runs[key].append(r)
    check_targets(table, rig.cert[0])  # still answering 200 after the load

    results = []
    base = {}
    for key, label, url, headers, pids, gate in table:
        rs = runs[key]
        m = {
            "key": key,
            "label": label,
            "url_path": urllib.parse.urlsplit(url).path,
            "protocol": protocol_of(key)[1],
            "client": "h2load" if key in H2_ROWS else "wrk",
            "gate": gate["name"] if gate else None,
            "rps": median([r["rps"] for r in rs]),
            "rps_min": min(r["rps"] for r in rs),
            "rps_max": max(r["rps"] for r in rs),
            "p50_ms": median([r["p50_us"] / 1000 for r in rs]),
            "p99_ms": median([r["p99_us"] / 1000 for r in rs]),
            "redis_per_request": median([r["redis_per_request"] for r in rs]),
            "redis_commands_per_request": {
                c: round(sum(r["redis_commands"].get(c, 0) for r in rs)
                         / max(sum(r["requests"] for r in rs), 1), 4)
                for c in sorted({c for r in rs for c in r["redis_commands"]})
            },
            "proxy_cpu_us_per_request": median([r["proxy_cpu_us_per_request"] for r in rs]),
            "linkgate_rss_kib": median([r["linkgate_rss_kib"] for r in rs]),
            "errors": sum(sum(r["errors"].values()) for r in rs),
            "runs": rs,
        }
        base[key] = m["rps"]
        results.append(m)
    for m in results:
        m["paired_ratios"] = {
            b: dict(zip(("medians", "paired_median", "paired_min", "paired_max"), r))
            for k, b, _ in TARGETS if k == m["key"]
            for r in [paired_ratio(results, k, b)] if r
        }
    for m in results:
        # Over the skip-auth and nginx rows of the same protocol.
        suffix = protocol_of(m["key"])[0]
        pass_rps, nginx_rps = base.get(f"skip_auth{suffix}"), base.get(f"nginx_proxy{suffix}")
        m["vs_passthrough"] = m["rps"] / pass_rps if pass_rps else None
        m["vs_nginx_proxy"] = m["rps"] / nginx_rps if nginx_rps else None

    # The short-token session: its refreshes at the provider over the whole run.
    short_after = rig.short_counts()
    elapsed = time.monotonic() - short_signed_in
    calls = short_after["refresh_token"] - short_before["refresh_token"]
    short = {
        "access_token_ttl_s": rig.args.short_ttl,
        "seconds_since_sign_in": round(elapsed, 1),
        "refresh_calls": calls,
        "refresh_errors": short_after["token_error"] - short_before["token_error"],
        "refresh_calls_per_5_min": calls * 300 / elapsed if elapsed else None,
        "linkgate_refreshes": {
            r: metric(rig.gates["gate-short"]["admin"], "linkgate_token_refreshes_total",
                      {"result": r})
            for r in ("ok", "unavailable", "refused", "superseded")
        },
    }
    for m in results:
        if m["key"] == "session_cached_short":
            m["short_tokens"] = short

    hits = metric(rig.gates["gate-cached"]["admin"], "linkgate_session_cache_total",
                  {"result": "hit"})
    return results, hits, table


# === half load ===
#
# The issue's latency target is "p99 added latency <= 0.5 ms over the passthrough at half of
# peak load". wrk (not wrk2) runs closed-loop: every connection sends its next request as soon
# as the previous answer arrives, so the runs above are all at full load. Here bench/rate.lua
# makes every connection wait a random whole number of milliseconds before each request
# (wrk's delay()), with a mean chosen so that the connections together send R requests per
# second, R being half the req/s of the skip-auth row measured above.

HALF_KEYS = ("origin", "skip_auth", "session_cached", "nginx_proxy", "nginx_auth_request")
HALF_PERIOD_MS = 20.0  # intended time between two requests on one connection
HALF_CALIBRATED = 0.02  # calibration stops once within 2% of R; rounds re-aim beyond 2%
HALF_OFF = 0.10  # a row whose achieved rate is further than 10% from R is flagged


def rate_argv(args, url, headers, duration, conns, delay_ms, period_ms, seed):
    argv = ["wrk", "-t", str(args.threads), "-c", str(conns), "-d", f"{duration}s",
            "--timeout", "10s", "--latency", "-s", "bench/rate.lua"]
    for k, v in headers.items():
        argv += ["-H", f"{k}: {v}"]
    argv += [url, "--", f"{delay_ms:.4f}", f"{period_ms:.4f}", str(seed),
             str(conns // args.threads)]
    return argv


def half_connections(args, rate):
    """Enough connections for one request per HALF_PERIOD_MS on each (or --half-connections),
    a multiple of wrk's threads (wrk gives each thread connections // threads)."""
    t = args.threads
    c = args.half_connections or round(rate * HALF_PERIOD_MS / 1000)
    c = max(2 * t, min(1024, c)) if not args.half_connections else max(t, c)
    return c // t * t


def half_calibrate(args, url, headers, conns, rate, seed):
    """The mean delay (ms) that gets this target to `rate`: a first guess, corrected after
    each of at most 3 short runs by the gap between the period asked for and the period
    achieved (the last correction is not measured: the rounds re-aim if need be). The
    achieved period is the delay plus the response time plus the lateness of wrk's
    millisecond timers, all of which the correction absorbs."""
    period = 1000.0 * conns / rate
    delay = max(0.0, period - 0.5)  # a guess: ~0.5 ms of response time and timer slack
    tries = []
    for _ in range(3):
        r = wrk_argv_once(
            rate_argv(args, url, headers, args.half_calibration, conns, delay, period, seed),
            args.half_calibration)
        tries.append({"delay_ms": round(delay, 4), "rps": round(r["rps"], 1),
                      "p99_us": r["p99_us"]})
        if r["rps"] <= 0 or abs(r["rps"] / rate - 1) <= HALF_CALIBRATED:
            break
        delay = max(0.0, delay + period - 1000.0 * conns / r["rps"])
    return delay, tries


def half_load(args, rig, table, results):
    """Drives the HALF_KEYS targets at R req/s each (R = half the skip-auth row's peak
    req/s of this run, or --half-rate), alternating rounds; returns the results."""
    peak = {m["key"]: m for m in results}
    missing = [k for k in ("origin", "skip_auth", "session_cached") if k not in peak]
    if missing:
        log(f"half load: skipped (rows {', '.join(missing)} not in this run)")
        return None
    pass_peak = peak["skip_auth"]["rps"]
    if args.half_rate:
        rate, source = float(args.half_rate), "--half-rate"
    else:
        rate, source = (pass_peak or 0) / 2, "half the skip-auth row's peak req/s"
    if rate < 10:
        log(f"half load: skipped (R = {rate:.0f} req/s)")
        return None
    conns = half_connections(args, rate)
    period = 1000.0 * conns / rate
    seed = secrets.randbelow(1 << 30)
    rows = [t for t in table if t[0] in HALF_KEYS]
    log(f"half load: R = {rate:,.0f} req/s ({source}); wrk -t{args.threads} -c{conns}, "
        f"one request per {period:.2f} ms per connection")

    delays, calibration = {}, {}
    for key, label, url, headers, _, _ in rows:
        rig.alive()
        delays[key], calibration[key] = half_calibrate(args, url, headers, conns, rate, seed)
        got = ", ".join(f"{t['delay_ms']:.2f} ms -> {t['rps']:,.0f}/s"
                        for t in calibration[key])
        log(f"  calibration {key}: {got}; delay {delays[key]:.2f} ms")

    # The rounds. A run that missed R by more than 2% corrects the delay of the next run of
    # the same target the way the calibration does (the machine is shared: the response time
    # drifts); each run keeps the delay it ran with.
    runs = {key: [] for key, *_ in rows}
    n = len(rows)
    for rnd in range(args.half_rounds):
        order = rows[rnd % n:] + rows[:rnd % n]
        log(f"half load round {rnd + 1}/{args.half_rounds}: " + ", ".join(k for k, *_ in order))
        for key, label, url, headers, _, _ in order:
            rig.alive()
            r = wrk_argv_once(
                rate_argv(args, url, headers, args.half_duration, conns, delays[key], period,
                          seed + rnd + 1),
                args.half_duration)
            r["round"] = rnd + 1
            r["delay_ms"] = round(delays[key], 4)
            r["rate_ratio"] = r["rps"] / rate
            if r["rps"] > 0 and abs(r["rate_ratio"] - 1) > HALF_CALIBRATED:
                delays[key] = max(0.0, delays[key] + period - 1000.0 * conns / r["rps"])
            bad = sum(r["errors"].values())
            if bad:
                log(f"  {key}: {bad} errors {r['errors']}")
            runs[key].append(r)
    check_targets(table, rig.cert[0])  # still answering 200

    out = []
    for key, label, url, headers, _, _ in rows:
        rs = runs[key]
        rps = median([r["rps"] for r in rs])
        out.append({
            "key": key,
            "label": label,
            "url_path": urllib.parse.urlsplit(url).path,
            "delay_ms": median([r["delay_ms"] for r in rs]),
            "calibration": calibration[key],
            "rps": rps,
            "rps_min": min(r["rps"] for r in rs),
            "rps_max": max(r["rps"] for r in rs),
            "rate_ratio": rps / rate,
            "off_target": abs(rps / rate - 1) > HALF_OFF,
            "runs_off_target": sum(abs(r["rate_ratio"] - 1) > HALF_OFF for r in rs),
            "p50_ms": median([r["p50_us"] / 1000 for r in rs]),
            "p90_ms": median([r["p90_us"] / 1000 for r in rs]),
            "p99_ms": median([r["p99_us"] / 1000 for r in rs]),
            "p99_min_ms": min(r["p99_us"] for r in rs) / 1000,
            "p99_max_ms": max(r["p99_us"] for r in rs) / 1000,
            "p999_ms": median([r["p999_us"] / 1000 for r in rs]),
            "max_ms": median([r["max_us"] / 1000 for r in rs]),
            "errors": sum(sum(r["errors"].values()) for r in rs),
            "runs": rs,
        })
    by = {m["key"]: m for m in out}
    base = {r["round"]: r for r in by["skip_auth"]["runs"]}
    for m in out:
        # Paired by round: each target's p99 minus the skip-auth row's p99 of the same round
        # (run minutes apart at most), which cancels most of the drift of a shared machine.
        diffs = [(r["p99_us"] - base[r["round"]]["p99_us"]) / 1000
                 for r in m["runs"] if r["round"] in base]
        m["added_p99_paired_ms"] = median(diffs) if diffs else None
        m["added_p99_paired_range_ms"] = [min(diffs), max(diffs)] if diffs else None
        m["added_p99_vs_passthrough_ms"] = m["p99_ms"] - by["skip_auth"]["p99_ms"]
        m["added_p99_vs_origin_ms"] = m["p99_ms"] - by["origin"]["p99_ms"]
        m["added_p999_vs_passthrough_ms"] = m["p999_ms"] - by["skip_auth"]["p999_ms"]
    return {
        "target_rps": rate,
        "target_from": source,
        "passthrough_peak_rps": pass_peak,
        "fraction_of_peak": rate / pass_peak if pass_peak else None,
        "wrk": {"threads": args.threads, "connections": conns, "duration_s": args.half_duration,
                "rounds": args.half_rounds, "calibration_s": args.half_calibration,
                "period_ms": period, "script": "bench/rate.lua", "seed": seed},
        "off_target_threshold": HALF_OFF,
        "target_added_p99_ms": 0.5,
        "results": out,
    }


def print_half_table(half, args):
    w = half["wrk"]
    cols = ["target", "req/s", "of R", "delay ms", "p50 ms", "p99 ms", "p99 range", "p99.9 ms",
            "+p99 pass", "+p99 origin"]
    rows = []
    for m in half["results"]:
        rows.append([
            m["label"],
            fmt(m["rps"], ",.0f"),
            f"{m['rate_ratio'] * 100:.0f}%" + (" OFF" if m["off_target"] else ""),
            fmt(m["delay_ms"], ".2f"),
            fmt(m["p50_ms"], ".2f"),
            fmt(m["p99_ms"], ".2f"),
            f"{m['p99_min_ms']:.2f}-{m['p99_max_ms']:.2f}",
            fmt(m["p999_ms"], ".2f"),
            fmt(m["added_p99_vs_passthrough_ms"], "+.2f"),
            fmt(m["added_p99_vs_origin_ms"], "+.2f"),
        ])
    widths = [max(len(str(r[i])) for r in rows + [cols]) for i in range(len(cols))]
    line = lambda r: "  ".join(  # noqa: E731
        str(c).ljust(widths[i]) if i == 0 else str(c).rjust(widths[i]) for i, c in enumerate(r)
    )
    frac = half["fraction_of_peak"]
    print()
    print(f"at half load ({half['target_rps']:,.0f} req/s = "
          + (f"{frac:.2f} × " if frac else "")
          + f"the skip-auth row's {fmt(half['passthrough_peak_rps'], ',.0f')} req/s peak"
          + (", set by --half-rate" if half["target_from"] == "--half-rate" else "")
          + f"): wrk -t{w['threads']} -c{w['connections']} -d{w['duration_s']}s with a "
          f"delay before each request (bench/rate.lua), {w['rounds']} alternating rounds, "
          f"medians")
    print(line(cols))
    print(line(["-" * x for x in widths]))
    for r in rows:
        print(line(r))
    print()
    print("req/s: achieved (median); of R: achieved / target, OFF when more than "
          f"{half['off_target_threshold'] * 100:.0f}% away. delay ms: the mean pause before each "
          "request (median over the rounds), calibrated per target.")
    print("Latencies are wrk's, per request (request written -> response read). p99 range: "
          "min-max over the rounds. +p99 pass / +p99 origin: p99 minus the p99 of the "
          "skip-auth row / the origin direct row.")
    for m in half["results"]:
        if m["runs_off_target"] and not m["off_target"]:
            print(f"  NOTE {m['key']}: {m['runs_off_target']} of {len(m['runs'])} runs more "
                  f"than {half['off_target_threshold'] * 100:.0f}% off the target rate")
        if m["errors"]:
            print(f"  WARNING {m['key']}: {m['errors']} wrk errors (see results.json)")
    by = {m["key"]: m for m in half["results"]}
    c, p = by["session_cached"], by["skip_auth"]
    limit = half["target_added_p99_ms"]
    added = c["added_p99_vs_passthrough_ms"]
    if c["off_target"] or p["off_target"]:
        verdict = "not judged: a rate was off target"
    else:
        verdict = "within" if added <= limit else "ABOVE"
        spread = max(c["p99_max_ms"] - c["p99_min_ms"], p["p99_max_ms"] - p["p99_min_ms"])
        if spread > limit:
            verdict += (f", but inconclusive: the p99 of these rows moved by up to "
                        f"{spread:.2f} ms between rounds")
    print(f"Target p99 added <= {limit} ms over the passthrough at half load: linkgate cached "
          f"session {added:+.2f} ms over skip-auth ({verdict}; this run, medians of "
          f"{len(c['runs'])} rounds).")
    if c.get("added_p99_paired_ms") is not None:
        lo, hi = c["added_p99_paired_range_ms"]
        paired = c["added_p99_paired_ms"]
        print(f"Paired by round (cached p99 minus skip-auth p99 of the same round): median "
              f"{paired:+.2f} ms, range {lo:+.2f} to {hi:+.2f} ms over {len(c['runs'])} rounds "
              f"({'within' if paired <= limit else 'ABOVE'} the target).")


def fmt(x, spec, none="-"):
    return none if x is None else format(x, spec)


# The issue-15 targets: (row, base row, at least), ratios of req/s in this run.
TARGETS = (
    ("skip_auth", "nginx_proxy", 0.8),
    ("session_cached", "skip_auth", 0.9),
    ("session_cached_short", "skip_auth", 0.9),
    ("minimal", "nginx_proxy", None),
    ("skip_auth", "minimal", None),
    ("nginx_auth_request", "skip_auth", None),
) + tuple(
    pair for suffix in PROTOCOLS for pair in (
        (f"skip_auth{suffix}", f"nginx_proxy{suffix}", None),
        (f"session_cached{suffix}", f"skip_auth{suffix}", None),
        (f"skip_auth{suffix}", "skip_auth", None),
    )
)


def paired_ratio(results, key, base):
    """(ratio of medians, median of the per-round ratios, min, max) of req/s, key over base:
    each round runs every row once, back to back, so the per-round ratio cancels most of the
    drift between rounds on a shared machine."""
    by_key = {m["key"]: m for m in results}
    if key not in by_key or base not in by_key or not by_key[base]["rps"]:
        return None
    rounds = {r["round"]: r["rps"] for r in by_key[base]["runs"]}
    per = [r["rps"] / rounds[r["round"]] for r in by_key[key]["runs"]
           if rounds.get(r["round"])]
    if not per:
        return None
    return by_key[key]["rps"] / by_key[base]["rps"], statistics.median(per), min(per), max(per)


def target_lines(results):
    out = []
    for key, base, least in TARGETS:
        r = paired_ratio(results, key, base)
        if r is None:
            continue
        verdict = "" if least is None else (
            f" (target >= {least}: {'met' if r[1] >= least else 'NOT met'})")
        out.append(f"  {key} / {base}: {r[0]:.2f}x (medians); paired by round {r[1]:.2f}x, "
                   f"range {r[2]:.2f}-{r[3]:.2f}{verdict}")
    return out


def print_table(results, args, cache_hits):
    cols = ["target", "req/s", "±", "p50 ms", "p99 ms", "×pass", "×nginx", "redis/req",
            "CPU µs/req", "RSS MiB"]
    rows = []
    for m in results:
        spread = (m["rps_max"] - m["rps_min"]) / 2 / m["rps"] * 100 if m["rps"] else 0
        rows.append([
            m["label"],
            fmt(m["rps"], ",.0f"),
            f"{spread:.0f}%",
            fmt(m["p50_ms"], ".2f"),
            fmt(m["p99_ms"], ".2f"),
            fmt(m["vs_passthrough"], ".2f"),
            fmt(m["vs_nginx_proxy"], ".2f"),
            fmt(m["redis_per_request"], ".2f"),
            fmt(m["proxy_cpu_us_per_request"], ".0f"),
            fmt(m["linkgate_rss_kib"] / 1024 if m["linkgate_rss_kib"] else None, ".1f"),
        ])
    widths = [max(len(str(r[i])) for r in rows + [cols]) for i in range(len(cols))]
    line = lambda r: "  ".join(  # noqa: E731
        str(c).ljust(widths[i]) if i == 0 else str(c).rjust(widths[i]) for i, c in enumerate(r)
    )
    print()
    print(f"linkgate benchmark ({args.mode}): wrk -t{args.threads} -c{args.connections} "
          f"-d{args.duration}s, {args.rounds} alternating rounds, medians; "
          f"{os.cpu_count()} CPUs, linkgate threads={args.gate_threads}, "
          f"nginx workers={args.workers}")
    print(line(cols))
    print(line(["-" * w for w in widths]))
    for r in rows:
        print(line(r))
    print()
    print("±: half the min-max spread of req/s over the rounds. ×pass / ×nginx: req/s over the "
          "linkgate skip-auth row / the nginx proxy_pass row of the same protocol.")
    if any(m["key"] in H2_ROWS for m in results):
        print("HTTP/2 rows: h2load (-m 1: one request in flight per connection, as wrk) with "
              "wrk's connections and threads; latencies from its per-request log.")
    print("redis/req: Redis commands per request (INFO commandstats before/after each run). "
          "CPU µs/req: user+system CPU of the proxy processes (linkgate, nginx workers) per "
          "request. RSS: the serving linkgate process after its run.")
    for m in results:
        if m["redis_commands_per_request"]:
            cmds = ", ".join(f"{c} {v:.2f}" for c, v in m["redis_commands_per_request"].items())
            print(f"  redis commands per request, {m['key']}: {cmds}")
        if m["errors"]:
            print(f"  WARNING {m['key']}: {m['errors']} wrk errors (see results.json)")
    by_key = {m["key"]: m for m in results}
    for m in results:
        st = m.get("short_tokens")
        if not st:
            continue
        long = by_key.get("session_cached")
        if long and long["rps"]:
            print(f"  {m['key']}: {m['rps'] / long['rps']:.2f}x the req/s of the 1-hour-token "
                  f"row (session_cached) of this run")
        print(f"  {m['key']}: {st['refresh_calls']} refresh calls at the provider "
              f"({st['refresh_errors']} errors) in {st['seconds_since_sign_in']:.0f} s since its "
              f"sign-in, {st['access_token_ttl_s']} s tokens: "
              f"{st['refresh_calls_per_5_min']:.2f} per session per 5 minutes")
    for line_ in target_lines(results):
        print(line_)
    if not cache_hits:
        print("NOTE: linkgate reported no session-cache hits (linkgate_session_cache_total"
              "{result=\"hit\"}): the in-process session cache is not in effect in this build, "
              "so the cache-on and cache-off rows measure the same code path.")
    else:
        print(f"session cache hits on the cache-on gate: {cache_hits:,.0f}")
    print("The machine is shared and noisy: compare rows of one run, not runs of different "
          "days.")


# === soak ===


def sign_in_many(gate_url, budget_s, cap, workers):
    """Signs in distinct users in parallel until `budget_s` is spent or `cap` are done."""
    cookies = []
    lock = threading.Lock()
    deadline = time.monotonic() + budget_s
    errors = []
    counter = iter(range(cap))

    def worker(w):
        while time.monotonic() < deadline:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            try:
                c = sign_in(gate_url, f"soak-user-{i}")
            except Exception as e:  # noqa: BLE001 (count and go on; reported below)
                with lock:
                    errors.append(str(e))
                    if len(errors) > 50:
                        return
                continue
            with lock:
                cookies.append(c)

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        list(pool.map(worker, range(workers)))
    return cookies, time.monotonic() - started, errors


def touch_all(gate_url, cookies, workers):
    """One request per session through linkgate, so each lands in its session cache."""
    chunks = [cookies[i::workers] for i in range(workers)]
    bad = []

    def run(chunk):
        b = Browser()
        try:
            for c in chunk:
                b.cookies = {COOKIE_NAME: (c, "/")}
                status, _, _ = b.request("GET", f"{gate_url}/app")
                if status != 200:
                    bad.append(status)
        finally:
            b.close()

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        list(pool.map(run, chunks))
    return bad


def soak(args, rig):
    gate = rig.gates["gate-cached"]
    pid = gate["proc"].pid
    idle = rss_kib(pid)
    log(f"signing in distinct users for up to {args.signin_seconds}s "
        f"(cap {args.sessions:,}, {args.signin_workers} in parallel)")
    cookies, took, errors = sign_in_many(gate["url"], args.signin_seconds, args.sessions,
                                         args.signin_workers)
    if not cookies:
        raise BenchError(f"no sign-in succeeded: {errors[:3]}")
    n = len(cookies)
    log(f"{n:,} sessions in {took:.0f}s ({n / took:.0f}/s), {len(errors)} failures")
    after_signin = rss_kib(pid)
    log("loading every session once through linkgate (fills its session cache)")
    bad = touch_all(gate["url"], cookies, args.signin_workers)
    if bad:
        raise BenchError(f"{len(bad)} sessions were not accepted (statuses {sorted(set(bad))})")
    after_touch = rss_kib(pid)
    per_session = (after_touch - after_signin) / n  # KiB per cached session
    extrapolated = after_touch + per_session * (100_000 - n) if n < 100_000 else after_touch
    cookie_file = os.path.join(rig.tmp, "cookies.txt")
    with open(cookie_file, "w") as f:
        f.write("".join(f"{COOKIE_NAME}={c}\n" for c in cookies))

    minutes = args.soak_minutes
    log(f"soak: {minutes} min of wrk over all {n:,} sessions, RSS every {args.sample}s")
    argv = run_wrk(args, f"{gate['url']}/app", {}, int(minutes * 60),
                   script="bench/sessions.lua", script_args=[cookie_file])
    out_path = os.path.join(rig.tmp, "soak-wrk.out")
    samples = []
    redis_before = redis_commandstats(rig.redis_port)
    with open(out_path, "w") as out:
        w = rig.procs.spawn("wrk-soak", argv, cwd=ROOT, stdout=out)
        started = time.monotonic()
        next_at = started
        while True:
            if w.poll() is not None:
                break
            now = time.monotonic()
            if now >= next_at:
                rig.alive()
                t = now - started
                s = {"t_s": round(t), "rss_kib": rss_kib(pid)}
                samples.append(s)
                print(f"  t={s['t_s']:>4}s  linkgate RSS {s['rss_kib'] / 1024:7.1f} MiB",
                      flush=True)
                next_at += args.sample
            time.sleep(min(0.2, max(0.0, next_at - time.monotonic())))
        w.wait(timeout=60)
    s = {"t_s": round(time.monotonic() - started), "rss_kib": rss_kib(pid)}
    samples.append(s)
    print(f"  t={s['t_s']:>4}s  linkgate RSS {s['rss_kib'] / 1024:7.1f} MiB (end)")
    with open(out_path) as f:
        r = parse_wrk(f.read())
    redis_after = redis_commandstats(rig.redis_port)
    delta = redis_delta(redis_before, redis_after)
    r["redis_per_request"] = sum(delta.values()) / max(r["requests"], 1)
    hits = metric(gate["admin"], "linkgate_session_cache_total", {"result": "hit"})

    # Flat: once settled (after the first minute; the first fifth of a shorter soak), the RSS
    # never strays more than 5% (at least 4 MiB) from the first settled sample.
    settle_s = min(60, minutes * 60 / 5)
    settled = [x["rss_kib"] for x in samples if x["t_s"] >= settle_s]
    settled = settled or [x["rss_kib"] for x in samples]
    ref = settled[0]
    tolerance = max(ref * 0.05, 4096)
    growth = settled[-1] - ref
    flat = all(abs(x - ref) <= tolerance for x in settled)
    verdict = "flat" if flat else "NOT flat"

    print()
    print(f"soak ({args.mode}): {minutes} min, wrk -t{args.threads} -c{args.connections}, "
          f"{n:,} distinct sessions in rotation through linkgate (cache on)")
    print(f"  load: {r['rps']:,.0f} req/s, p50 {r['p50_us'] / 1000:.2f} ms, "
          f"p99 {r['p99_us'] / 1000:.2f} ms, {sum(r['errors'].values())} errors, "
          f"{r['redis_per_request']:.2f} Redis commands per request")
    print(f"  RSS: idle {idle / 1024:.1f} MiB; after {n:,} sign-ins {after_signin / 1024:.1f} "
          f"MiB; after loading each session once {after_touch / 1024:.1f} MiB")
    print(f"  RSS over the soak: {verdict} (from t={settle_s:.0f}s: first {ref / 1024:.1f} MiB, "
          f"min {min(settled) / 1024:.1f}, max {max(settled) / 1024:.1f}, "
          f"last {settled[-1] / 1024:.1f}; change {growth / 1024:+.1f} MiB; "
          f"tolerance ±{tolerance / 1024:.1f} MiB)")
    print(f"  per cached session: {per_session:.2f} KiB (RSS after loading each session once "
          f"minus before, over N = {n:,})")
    if n < 100_000:
        print(f"  100k sessions cached: ~{extrapolated / 1024:.1f} MiB RSS — an EXTRAPOLATION "
              f"from N = {n:,} real sessions (the per-session cost times 100,000), not a "
              f"measurement")
    if not hits:
        print("  NOTE: no session-cache hits reported by linkgate: the cache is not in effect "
              "in this build, so the per-session cost above is not a cache cost.")
    return {
        "minutes": minutes,
        "sessions": n,
        "signin_seconds": round(took, 1),
        "signin_failures": len(errors),
        "signin_errors_sample": errors[:5],
        "rss_idle_kib": idle,
        "rss_after_signins_kib": after_signin,
        "rss_after_touch_kib": after_touch,
        "per_session_kib": per_session,
        "rss_100k_kib_extrapolated": extrapolated if n < 100_000 else None,
        "extrapolated_from_n": n if n < 100_000 else None,
        "session_cache_hits": hits,
        "wrk": r,
        "samples": samples,
        "verdict": verdict,
        "tolerance_kib": tolerance,
    }


def refresh_soak(args, rig):
    """Many sessions on short access tokens under load: refreshes counted, none lost."""
    gate = rig.gates["gate-short"]
    n_wanted = args.sessions
    log(f"signing in {n_wanted:,} users at the {args.short_ttl}s-token gate")
    cookies, took, errors = sign_in_many(gate["url"], args.signin_seconds, n_wanted,
                                         args.signin_workers)
    if len(cookies) < n_wanted:
        raise BenchError(f"only {len(cookies)} of {n_wanted} sign-ins: {errors[:3]}")
    n = len(cookies)
    log(f"{n:,} sessions in {took:.0f}s; loading each once")
    bad = touch_all(gate["url"], cookies, args.signin_workers)
    if bad:
        raise BenchError(f"{len(bad)} sessions were not accepted (statuses {sorted(set(bad))})")
    cookie_file = os.path.join(rig.tmp, "cookies.txt")
    with open(cookie_file, "w") as f:
        f.write("".join(f"{COOKIE_NAME}={c}\n" for c in cookies))
    before = rig.short_counts()
    refreshes = lambda: {  # noqa: E731
        r: metric(gate["admin"], "linkgate_token_refreshes_total", {"result": r}) or 0
        for r in ("ok", "unavailable", "refused", "superseded")
    }
    lg_before = refreshes()
    redis_before = redis_commandstats(rig.redis_port)
    minutes = args.soak_minutes
    log(f"refresh soak: {minutes} min of wrk over all {n:,} sessions ({args.short_ttl}s tokens)")
    argv = run_wrk(args, f"{gate['url']}/app", {}, int(minutes * 60),
                   script="bench/sessions.lua", script_args=[cookie_file])
    out_path = os.path.join(rig.tmp, "refresh-soak-wrk.out")
    started = time.monotonic()
    with open(out_path, "w") as out:
        w = rig.procs.spawn("wrk-refresh-soak", argv, cwd=ROOT, stdout=out)
        while w.poll() is None:
            rig.alive()
            time.sleep(1)
    elapsed = time.monotonic() - started
    with open(out_path) as f:
        r = parse_wrk(f.read())
    after = rig.short_counts()
    lg_after = refreshes()
    delta = redis_delta(redis_before, redis_commandstats(rig.redis_port))
    log("checking every session once more")
    lost = touch_all(gate["url"], cookies, args.signin_workers)
    calls = after["refresh_token"] - before["refresh_token"]
    expected = n * elapsed / (args.short_ttl / 2)
    out = {
        "minutes": minutes,
        "sessions": n,
        "access_token_ttl_s": args.short_ttl,
        "wrk": r,
        "redis_per_request": sum(delta.values()) / max(r["requests"], 1),
        "provider_refresh_calls": calls,
        "provider_token_errors": after["token_error"] - before["token_error"],
        "refresh_calls_per_session": calls / n,
        "refresh_calls_expected_at_half_lifetime": round(expected),
        "linkgate_refreshes": {k: lg_after[k] - lg_before[k] for k in lg_after},
        "sessions_lost": len(lost),
        "lost_statuses": sorted(set(lost)),
    }
    print()
    print(f"refresh soak: {minutes} min, wrk -t{args.threads} -c{args.connections}, {n:,} "
          f"sessions on {args.short_ttl} s access tokens through one linkgate (cache on)")
    print(f"  load: {r['rps']:,.0f} req/s, p99 {r['p99_us'] / 1000:.2f} ms, "
          f"{sum(r['errors'].values())} errors, non-2xx {r['errors'].get('status', 0)}, "
          f"{out['redis_per_request']:.3f} Redis commands per request")
    print(f"  refresh calls at the provider: {calls:,} ({calls / n:.1f} per session; "
          f"{expected:,.0f} expected at one per half lifetime), {out['provider_token_errors']} "
          f"token errors; linkgate's count {out['linkgate_refreshes']}")
    print(f"  sessions lost: {len(lost)} of {n:,}")
    return out


# === main ===


def versions():
    def first_line(argv):
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
            return (p.stdout or p.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return None

    commit = first_line(["git", "-C", ROOT, "rev-parse", "HEAD"])
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain"], capture_output=True,
                           text=True, check=False).stdout.strip() != ""
    cpu = None
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")),
                       None)
    except OSError:
        pass
    return {
        "git_commit": commit,
        "git_dirty": dirty,
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "kernel": platform.release(),
        "nginx": first_line(["nginx", "-v"]),
        "redis": first_line(["redis-server", "--version"]),
        "wrk": first_line(["wrk", "-v"]),
        "h2load": first_line(["h2load", "--version"]),
        "openssl": first_line(["openssl", "version"]),
        "node": first_line(["node", "--version"]),
        "linkgate": first_line([ARGS.linkgate, "--version"]) if ARGS else None,
    }


ARGS = None


def parse_args(argv):
    p = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n\n")[0])
    p.add_argument("--linkgate", required=True, help="the linkgate binary (release)")
    p.add_argument("--minimal", required=True,
                   help="the minimal-pingora binary (release; bench/minimal)")
    p.add_argument("--quick", action="store_true", help="short durations: a smoke run")
    p.add_argument("--soak", action="store_true",
                   help="the RSS soak instead of the comparison (10 min, sessions cached)")
    p.add_argument("--duration", type=int, help="seconds per wrk run (10; --quick 1)")
    p.add_argument("--rounds", type=int, help="alternating rounds, at least 3 (5; --quick 3)")
    p.add_argument("--warmup", type=float, help="seconds of warm-up per target (2; --quick 1)")
    p.add_argument("--connections", type=int, default=64, help="wrk connections (64)")
    p.add_argument("--threads", type=int, default=2, help="wrk threads (2)")
    p.add_argument("--gate-threads", type=int, default=2, help="linkgate [server] threads (2)")
    p.add_argument("--workers", type=int, default=2,
                   help="nginx worker_processes, origin and baseline (2, as linkgate's threads)")
    p.add_argument("--half-duration", type=int,
                   help="half-load phase: seconds per wrk run (10; --quick 1)")
    p.add_argument("--half-rounds", type=int,
                   help="half-load phase: alternating rounds, 0 skips the phase (5)")
    p.add_argument("--half-calibration", type=int,
                   help="half-load phase: seconds per calibration run, up to 3 per target "
                        "(2; --quick 1)")
    p.add_argument("--half-connections", type=int,
                   help="half-load phase: wrk connections (enough for one request per "
                        f"{HALF_PERIOD_MS:.0f} ms on each)")
    p.add_argument("--half-rate", type=float,
                   help="half-load phase: target req/s (half the skip-auth row's req/s)")
    p.add_argument("--soak-minutes", type=float, help="soak length (10; --quick 1)")
    p.add_argument("--sessions", type=int, default=None,
                   help="soak: most distinct sessions to sign in (100000)")
    p.add_argument("--signin-seconds", type=float,
                   help="soak: time budget for the sign-ins (600, enough for 100k here; --quick 10)")
    p.add_argument("--signin-workers", type=int, default=16, help="soak: parallel sign-ins (16)")
    p.add_argument("--sample", type=float, default=10, help="soak: RSS sample period, s (10)")
    p.add_argument("--out", help="results file (bench/results.json; --soak: bench/soak.json; "
                   "--refresh-soak: bench/refresh_soak.json)")
    p.add_argument("--short-ttl", type=int, default=300,
                   help="access-token lifetime, s, of the short-token provider (300)")
    p.add_argument("--only", help="comma-separated row keys to run (all), or the groups "
                   "tls (HTTP/1.1 and h2 over TLS), h2c, protocols (both)")
    p.add_argument("--refresh-soak", action="store_true",
                   help="--sessions (1000) signed in at the short-token gate under load for "
                        "--soak-minutes: refresh calls counted, lost sessions counted")
    p.add_argument("--keep", action="store_true", help="keep the temp dir (configs, logs)")
    a = p.parse_args(argv)
    q = a.quick
    a.duration = a.duration or (1 if q else 10)
    a.rounds = a.rounds or (3 if q else 5)
    if a.rounds < 3:
        p.error("--rounds: at least 3 (medians of alternating rounds)")
    a.warmup = a.warmup if a.warmup is not None else (1 if q else 2)
    a.half_duration = a.half_duration or (1 if q else 10)
    a.half_rounds = a.half_rounds if a.half_rounds is not None else 5
    a.half_calibration = a.half_calibration or (1 if q else 2)
    if a.half_rounds < 0:
        p.error("--half-rounds: 0 or more")
    a.soak_minutes = a.soak_minutes or (1 if q else 10)
    a.signin_seconds = a.signin_seconds or (10 if q else 600)
    if a.sessions is None:
        a.sessions = 1000 if a.refresh_soak else 100_000
    name = "soak.json" if a.soak else "refresh_soak.json" if a.refresh_soak else "results.json"
    a.out = a.out or os.path.join(ROOT, "bench", name)
    a.mode = ("soak" if a.soak else "refresh soak" if a.refresh_soak else "comparison") + (
        " --quick" if q else "")
    return a


def main(argv):
    global ARGS
    args = ARGS = parse_args(argv)

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    # Also when started in the background, where SIGINT would be ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    tmp = tempfile.mkdtemp(prefix="linkgate-bench-")
    os.chmod(tmp, 0o755)
    procs = Procs(tmp)
    started = time.monotonic()
    ok = False
    try:
        rig = Rig(args, procs, tmp).start()
        meta = {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "mode": args.mode,
            "wrk": {"threads": args.threads, "connections": args.connections,
                    "duration_s": args.duration, "rounds": args.rounds,
                    "warmup_s": args.warmup},
            "linkgate_threads": args.gate_threads,
            "nginx_workers": args.workers,
            "setup": "origin = nginx `return 200`; linkgate without [account] (plain OIDC gate), "
                     "sessions in Redis; nginx upstream keepalive 64 to origin and linkgate; "
                     "TLS rows: one throwaway self-signed ECDSA P-256 certificate for linkgate "
                     "and nginx; HTTP/2 rows driven by h2load -m 1",
            "versions": versions(),
        }
        if args.soak:
            out = {"meta": meta, "soak": soak(args, rig)}
        elif args.refresh_soak:
            out = {"meta": meta, "refresh_soak": refresh_soak(args, rig)}
        else:
            results, hits, table = bench(args, rig)
            meta["session_cache_hits"] = hits
            out = {"meta": meta, "results": results}
            print_table(results, args, hits)
            sys.stdout.flush()
            half = half_load(args, rig, table, results) if args.half_rounds else None
            if half:
                out["half_load"] = half
                print_half_table(half, args)
        out["meta"]["elapsed_s"] = round(time.monotonic() - started)
        with open(args.out, "w") as f:
            json.dump(out, f, indent=2)
            f.write("\n")
        shown = os.path.relpath(args.out) if args.out.startswith(os.getcwd()) else args.out
        print(f"\nwrote {shown} "
              f"({out['meta']['elapsed_s']} s)")
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
