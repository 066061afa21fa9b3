#!/usr/bin/env python3
"""How far can `weft bench` be trusted? Side by side with wrk and oha against nginx.

One nginx worker on loopback answers every request with a short body. In
interleaved rounds (so that drift of a noisy machine hits every tool alike):

  closed loop   wrk -t1 -cC   vs  weft bench -t1 -cC         requests/s ratio (target >= 0.9)
  open loop     weft bench -q RATE for RATE up to 20,000        achieved / target (within 1 %)
  fixed rate    oha -q RATE --latency-correction vs weft bench -q RATE   p50 and p99 ratios (within 15 %)

Prints the median of each ratio over the rounds. Needs nginx, wrk, oha
(`cargo install oha`) and a release build (`cargo build --release`).
"""
import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

WEFT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "weft")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_nginx(d, port):
    conf = os.path.join(d, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""worker_processes 1; daemon off; pid {d}/nginx.pid; error_log {d}/nginx.err warn;
events {{ worker_connections 8192; }}
http {{ access_log off; keepalive_requests 100000000;
  server {{ listen 127.0.0.1:{port}; location / {{ return 200 "ok\\n"; }} }} }}
""")
    proc = subprocess.Popen(["nginx", "-c", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("bench_accuracy.py: nginx did not start")


def sh(args):
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def wrk_rps(url, conns, secs):
    out = sh(["wrk", "-t1", f"-c{conns}", f"-d{secs}s", url])
    return float(next(l for l in out.splitlines() if l.startswith("Requests/sec:")).split()[1])


def weft(url, *args):
    return json.loads(sh([WEFT, "bench", url, "-o", "json", *args]))


def oha(url, rate, conns, secs):
    out = sh(["oha", "-q", str(rate), "-z", f"{secs}s", "-c", str(conns), "--latency-correction", "--no-tui", "--output-format", "json", url])
    p = json.loads(out)["latencyPercentiles"]
    return p["p50"] * 1e6, p["p99"] * 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5, help="seconds per measurement")
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--rates", default="1000,5000,10000,20000", help="open-loop rates to check")
    ap.add_argument("--latency-rates", default="500,2000,10000", help="rates at which p50/p99 are compared with oha")
    a = ap.parse_args()
    for tool in ("nginx", "wrk", "oha"):
        if not shutil.which(tool):
            sys.exit(f"bench_accuracy.py: {tool} is missing (apt-get install nginx wrk; cargo install oha)")
    if not os.path.exists(WEFT):
        sys.exit("bench_accuracy.py: build first: cargo build --release")
    rates = [int(r) for r in a.rates.split(",")]
    lat_rates = [int(r) for r in a.latency_rates.split(",")]
    c, secs = a.connections, a.duration
    with tempfile.TemporaryDirectory() as d:
        port = free_port()
        nginx = start_nginx(d, port)
        url = f"http://127.0.0.1:{port}/"
        closed, achieved, latency = [], {r: [] for r in rates}, {r: [] for r in lat_rates}
        try:
            for rnd in range(1, a.rounds + 1):
                w = wrk_rps(url, c, secs)
                b = weft(url, "-c", str(c), "-z", f"{secs}s")["rps"]
                closed.append((w, b))
                print(f"round {rnd}: closed loop -c{c}: wrk {w:,.0f} rps, weft bench {b:,.0f} rps ({b / w:.3f}x)", flush=True)
                for r in rates:
                    got = weft(url, "-q", str(r), "-c", str(c), "-z", f"{secs}s")
                    achieved[r].append(got["rps"] / r)
                    print(f"round {rnd}: open loop {r:,} rps: achieved {got['rps']:,.1f} ({100 * got['rps'] / r:.2f} %), unsent {got['unsent']}", flush=True)
                for r in lat_rates:
                    o50, o99 = oha(url, r, c, secs)
                    got = weft(url, "-q", str(r), "-c", str(c), "-z", f"{secs}s")["latency_us"]
                    latency[r].append((o50, o99, got["p50"], got["p99"]))
                    print(f"round {rnd}: {r:,} rps: oha p50 {o50:.0f} µs p99 {o99:.0f} µs; weft bench p50 {got['p50']:.0f} µs p99 {got['p99']:.0f} µs", flush=True)
        finally:
            nginx.terminate()
            nginx.wait()
    med = statistics.median
    print("\nmedians over rounds:")
    print(f"  closed loop -c{c}, one thread: weft bench / wrk requests/s = {med(b / w for w, b in closed):.3f}")
    for r in rates:
        print(f"  open loop at {r:,} rps: achieved {100 * med(achieved[r]):.2f} % of the target (worst {100 * min(achieved[r]):.2f} %)")
    for r in lat_rates:
        rows = latency[r]
        print(f"  at {r:,} rps: weft bench / oha p50 = {med(x[2] / x[0] for x in rows):.3f}, p99 = {med(x[3] / x[1] for x in rows):.3f}")


if __name__ == "__main__":
    main()
