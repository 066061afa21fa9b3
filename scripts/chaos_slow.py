#!/usr/bin/env python3
"""Chaos: one endpoint 20x slower than its two peers, under a constant open-loop load.

Runs the same load through `weft proxy` with `loadBalancer: PEAK_EWMA`: first with
three healthy endpoints (the baseline p99), then with one of them answering 20x slower,
then the same with latency outlier detection added (`latencyMadFactor: 3`, 250 ms interval),
then with a Hedging policy instead (`delayPercentile: 90`).
Prints the slow endpoint's share of requests and the client p99 against the baseline.
Needs a release build (`cargo build --release`).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chaos_kill import WEFT, free_port, mesh, wait_port  # noqa: E402


HEDGE = """---
apiVersion: policy.weft.dev/v1alpha1
kind: Hedging
metadata: {name: svc}
spec: {host: svc, delayPercentile: 90, delay: 10ms}
"""


def run(latencies, rate, duration, detect=False, hedge=False):
    ports = [free_port() for _ in latencies]
    listen = free_port()
    detection = ", outlierDetection: {consecutive5xxErrors: 0, latencyMadFactor: 3, interval: 250ms, baseEjectionTime: 30s, maxEjectionPercent: 34}" if detect else ""
    config = mesh(ports, "{loadBalancer: {simple: PEAK_EWMA}" + detection + "}", HEDGE if hedge else "")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "mesh.yaml")
        with open(path, "w") as f:
            f.write(config)
        procs = [subprocess.Popen([WEFT, "backend", "--listen", f"127.0.0.1:{p}", "--name", f"b{i}", "--latency", lat], stderr=subprocess.DEVNULL)
                 for i, (p, lat) in enumerate(zip(ports, latencies))]
        for p in ports:
            wait_port(p)
        procs.append(subprocess.Popen([WEFT, "proxy", "--config", path, "--listen", f"127.0.0.1:{listen}"], stderr=subprocess.DEVNULL))
        wait_port(listen)
        try:
            out = subprocess.run([WEFT, "bench", f"http://127.0.0.1:{listen}/", "--host", "svc", "-q", str(rate), "-c", "100", "-z", f"{duration}s", "-o", "json"],
                                 check=True, capture_output=True, text=True).stdout
            served = [int(urllib.request.urlopen(f"http://127.0.0.1:{p}/_served").read()) for p in ports]
        finally:
            for p in procs:
                p.terminate()
    return json.loads(out), served


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=int, default=2000)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--latency", default="2ms", help="the healthy endpoints' added latency")
    ap.add_argument("--slow", default="40ms", help="the slow endpoint's (20x by default)")
    a = ap.parse_args()
    base, _ = run([a.latency] * 3, a.rate, a.duration)
    b99 = base["latency_us"]["p99"]
    print(f"baseline (3 healthy): p50 {base['latency_us']['p50']:.0f} µs, p99 {b99:.0f} µs, errors {base['errors']}")
    for detect, hedge in ((False, False), (True, False), (False, True)):
        slow, served = run([a.slow, a.latency, a.latency], a.rate, a.duration, detect, hedge)
        share = served[0] / max(1, sum(served))
        s99 = slow["latency_us"]["p99"]
        how = "PEAK_EWMA + latency outlier detection" if detect else "PEAK_EWMA + Hedging at p90" if hedge else "PEAK_EWMA"
        print(f"{how}, one endpoint at {a.slow} (others {a.latency}): it got {served[0]} of {sum(served)} requests ({100 * share:.2f} %), "
              f"p50 {slow['latency_us']['p50']:.0f} µs, p99 {s99:.0f} µs ({s99 / b99:.2f}x the baseline), errors {slow['errors']}")


if __name__ == "__main__":
    main()
