#!/usr/bin/env python3
"""Instruction counts per request, by function, of the proxy path (callgrind).

    python3 bench/profile.py --linkgate target/release/linkgate \
        --minimal target/release/minimal-pingora [--requests 2000] [--log-level warn,info]

Starts, all on 127.0.0.1: an nginx origin (`return 200`), Redis, the test OpenID provider,
and under `valgrind --tool=callgrind --instr-atstart=no`: the minimal Pingora proxy
(bench/minimal) and linkgate with `[server] threads = 1` and a skip-auth route, once per
`--log-level`. Signs in once, then for each target: a warm-up, `callgrind_control -z`,
`--requests` GETs on one keep-alive connection (a Python client, outside valgrind),
`callgrind_control -d`. Prints instructions per request and the top functions (exclusive
and inclusive) of each dump; the dumps and `callgrind_annotate` outputs stay in --out.

Instruction counts are user space only (the kernel's share of each syscall is not in them)
and do not depend on the neighbours' load, which is why they are used for attribution on a
shared machine; throughput is bench/run's.
"""

import argparse
import http.client
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import driver  # noqa: E402  (bench/driver.py: the rig's parts)


def callgrind(out_dir, name, argv):
    return [
        "valgrind", "--tool=callgrind", "--instr-atstart=no",
        f"--callgrind-out-file={out_dir}/callgrind.{name}",
        *argv,
    ]


def drive(port, path, headers, n):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        for _ in range(n):
            conn.request("GET", path, headers=headers)
            r = conn.getresponse()
            body = r.read()
            if r.status != 200 or body != driver.ORIGIN_BODY:
                raise driver.BenchError(f":{port}{path} answered {r.status} {body[:200]!r}")
    finally:
        conn.close()


def control(pid, *flags):
    subprocess.run(["callgrind_control", *flags, str(pid)], check=True,
                   capture_output=True, timeout=120)


def measure(out_dir, name, pid, port, path, headers, n, warmup):
    drive(port, path, headers, warmup)
    control(pid, "-z")
    before = set(os.listdir(out_dir))
    drive(port, path, headers, n)
    control(pid, "-d")
    deadline = time.monotonic() + 60
    while True:
        new = [f for f in os.listdir(out_dir) if f not in before and f.startswith("callgrind.")]
        if new:
            break
        if time.monotonic() > deadline:
            raise driver.BenchError(f"no callgrind dump for {name}")
        time.sleep(0.2)
    time.sleep(1)
    dump = os.path.join(out_dir, sorted(new)[-1])
    final = os.path.join(out_dir, f"{name}.callgrind")
    os.rename(dump, final)
    report = {}
    for mode in ("self", "inclusive"):
        argv = ["callgrind_annotate", "--threshold=99"]
        if mode == "inclusive":
            argv.append("--inclusive=yes")
        text = subprocess.run(argv + [final], check=True, capture_output=True,
                              text=True).stdout
        with open(os.path.join(out_dir, f"{name}.{mode}.txt"), "w") as f:
            f.write(text)
        report[mode] = text
    total = re.search(r"^([\d,]+) \(100\.0%\)\s+PROGRAM TOTALS", report["self"], re.M)
    if not total:
        raise driver.BenchError(f"no program total in {name}'s dump")
    ir = int(total.group(1).replace(",", ""))
    return ir / n, report


def top(report, k):
    rows = []
    for line in report.splitlines():
        m = re.match(r"^\s*([\d,]+) \(\s*([\d.]+)%\)\s+(\S.*)$", line)
        if m and "PROGRAM TOTALS" not in line:
            rows.append((int(m.group(1).replace(",", "")), m.group(3)))
        if len(rows) >= k:
            break
    return rows


def short(name):
    name = re.sub(r"^[^:]*:", "", name, count=1) if name.startswith("/") or name.startswith("???") else name
    name = re.sub(r" \[[^\]]*\]$", "", name)
    return name[:150]


def main(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--linkgate", required=True)
    p.add_argument("--minimal", required=True)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--log-level", default="warn,info",
                   help="linkgate [log] level, one profile each (warn,info)")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--out", default=None, help="where the dumps go (a temp dir)")
    p.add_argument("--only", default="minimal,skip_auth,session_cached")
    args = p.parse_args(argv)
    for tool in ("valgrind", "callgrind_control", "callgrind_annotate", "nginx", "redis-server",
                 "node"):
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            raise SystemExit(f"bench/profile.py: {tool} is missing (apt-get install valgrind nginx "
                             "redis-server nodejs)")
    os.environ["PATH"] += ":/usr/sbin"
    only = set(args.only.split(","))
    out_dir = os.path.abspath(args.out or tempfile.mkdtemp(prefix="linkgate-profile-"))
    os.makedirs(out_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="linkgate-profile-rig-")
    os.chmod(tmp, 0o755)
    procs = driver.Procs(tmp)
    results = []
    try:
        with open(os.path.join(tmp, "cookie_secret"), "w") as f:
            import base64, secrets
            f.write(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode().rstrip("="))
        with open(os.path.join(tmp, "client_secret"), "w") as f:
            f.write(driver.CLIENT_SECRET)
        origin = driver.free_port()
        driver.start_nginx(procs, tmp, "origin", 1, f"""    server {{
        listen 127.0.0.1:{origin} backlog=4096;
        location / {{ default_type text/plain; return 200 "origin ok\\n"; }}
    }}""", [origin])

        if "minimal" in only:
            port = driver.free_port()
            m = procs.spawn("minimal", callgrind(out_dir, "minimal",
                            [args.minimal, f"127.0.0.1:{port}", f"127.0.0.1:{origin}", "1"]))
            driver.wait_until("minimal-pingora", 120, lambda: driver.port_open(port),
                              lambda: procs.check_alive("minimal", m))
            control(m.pid, "-i", "on")
            ir, rep = measure(out_dir, "minimal", m.pid, port, "/public/app", {}, args.requests,
                              args.warmup)
            results.append(("minimal Pingora", ir, rep))
            procs.stop(m, timeout=60)

        levels = [lv for lv in args.log_level.split(",") if lv]
        if only & {"skip_auth", "session_cached"}:
            redis = driver.free_port()
            r = procs.spawn("redis", ["redis-server", "--port", str(redis), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no", "--dir", tmp])
            driver.wait_until("redis", 10, lambda: driver.redis_ping(redis),
                              lambda: procs.check_alive("redis", r))
            gate_ports = [driver.free_port() for _ in levels]
            provider_port = driver.free_port()
            _, issuer = driver.start_provider(
                procs, tmp, provider_port,
                [f"http://127.0.0.1:{gp}/oauth2/callback" for gp in gate_ports])
            for level, port in zip(levels, gate_ports):
                name = f"gate-{level}"
                admin = driver.free_port()
                path, conf = driver.gate_config(tmp, name, port, admin, origin, issuer, redis,
                                                "30s")
                conf = conf.replace("THREADS", "1").replace('level = "warn"',
                                                            f'level = "{level}"')
                with open(path, "w") as f:
                    f.write(conf)
                env = {k: v for k, v in os.environ.items() if k != "RUST_LOG"}
                g = procs.spawn(name, callgrind(out_dir, name, [args.linkgate, "run", "-c", path]),
                                env=env)
                driver.wait_until(f"{name} /readyz", 180,
                                  lambda: driver.http_status(f"http://127.0.0.1:{admin}/readyz")
                                  == 200 and driver.port_open(port),
                                  lambda: procs.check_alive(name, g))
                cookie = driver.sign_in(f"http://127.0.0.1:{port}", "profile-user")
                control(g.pid, "-i", "on")
                if "skip_auth" in only:
                    ir, rep = measure(out_dir, f"skip_auth-{level}", g.pid, port, "/public/app",
                                      {}, args.requests, args.warmup)
                    results.append((f"linkgate skip-auth, log {level}", ir, rep))
                if "session_cached" in only:
                    ir, rep = measure(out_dir, f"session_cached-{level}", g.pid, port, "/app",
                                      {"Cookie": f"{driver.COOKIE_NAME}={cookie}"},
                                      args.requests, args.warmup)
                    results.append((f"linkgate cached session, log {level}", ir, rep))
                procs.stop(g, timeout=60)
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"callgrind, {args.requests} keep-alive GETs per target after {args.warmup} of "
          f"warm-up, one connection; dumps in {out_dir}")
    for label, ir, _ in results:
        print(f"  {label:40} {ir:10,.0f} instructions/request")
    for label, ir, rep in results:
        for mode in ("self", "inclusive"):
            print(f"\n{label}: {ir:,.0f} instructions/request; top {args.top} ({mode}), per request")
            for n, fn in top(rep[mode], args.top):
                print(f"  {n / args.requests:9,.0f}  {short(fn)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
