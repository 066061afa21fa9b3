#!/usr/bin/env python3
"""Chaos: one of three endpoints accepts connections and never answers.

Three `weft backend`s behind `weft proxy`, one of them answering only after an hour
(it accepts and reads, then holds the request). A constant open-loop load runs through
a route with `perTryTimeout` and retries, and outlier detection (a per-try timeout
counts as the endpoint's failure). Prints what the client saw: failures, p99 and the
slowest request against perTryTimeout, and the proxy's retries and ejections.

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
from chaos_kill import WEFT, free_port, mesh, metric, route, wait_port  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=int, default=2000)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--per-try-timeout", default="100ms")
    a = ap.parse_args()
    ports = [free_port() for _ in range(3)]
    listen, admin = free_port(), free_port()
    policy = "{outlierDetection: {consecutive5xxErrors: 3, interval: 1s, baseEjectionTime: 30s, maxEjectionPercent: 34}}"
    config = mesh(ports, policy, route(f'{{attempts: 2, perTryTimeout: {a.per_try_timeout}, retryOn: "5xx,reset,connect-failure"}}'))
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "mesh.yaml")
        with open(path, "w") as f:
            f.write(config)
        procs = [subprocess.Popen([WEFT, "backend", "--listen", f"127.0.0.1:{p}", "--name", f"b{i}", "--latency", "1h" if i == 0 else "0s"],
                                  stderr=subprocess.DEVNULL) for i, p in enumerate(ports)]
        for p in ports:
            wait_port(p)
        procs.append(subprocess.Popen([WEFT, "proxy", "--config", path, "--listen", f"127.0.0.1:{listen}", "--admin", f"127.0.0.1:{admin}"],
                                      stderr=subprocess.DEVNULL))
        wait_port(listen)
        try:
            out = subprocess.run([WEFT, "bench", f"http://127.0.0.1:{listen}/", "--host", "svc", "-q", str(a.rate), "-c", "200", "-z", f"{a.duration}s",
                                  "--timeout", "5s", "-o", "json"], check=True, capture_output=True, text=True).stdout
            r = json.loads(out)
            lat = r["latency_us"]
            print(f"client: {r['requests']:,} requests at {r['rps']:.0f}/s, failed {r['errors']}, status codes {r['status_codes']}, "
                  f"p50 {lat['p50']:.0f} µs, p99 {lat['p99']:.0f} µs, p99.9 {lat['p999']:.0f} µs, max {lat['max'] / 1000:.1f} ms (perTryTimeout {a.per_try_timeout})")
            print(f"proxy: retries {metric(admin, 'weft_upstream_retries_total'):.0f}, ejections {metric(admin, 'weft_outlier_ejections_total'):.0f}, "
                  f"upstream timeouts {metric(admin, 'weft_upstream_timeout_total'):.0f}")
            clusters = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{admin}/clusters").read())
            for e in clusters["clusters"][0]["endpoints"]:
                print(f"  {e['address']}: {e['health']} {e.get('ejection') or ''}")
        finally:
            for p in procs:
                p.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
