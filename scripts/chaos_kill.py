#!/usr/bin/env python3
"""Chaos: kill -9 one of three endpoints under a constant open-loop load, bring it back.

Three `weft backend`s behind one `weft proxy` with retries (connect-failure, reset,
5xx) and outlier detection; `weft bench` sends a constant rate (open loop) for the
whole run. At --kill-at seconds one backend is killed with SIGKILL; at --revive-at it
is started again on the same port. Prints what the client saw (failed requests,
status codes, p99), the proxy's retries and ejections, and how many requests the
revived endpoint served after its ejection ended.

Needs a release build (`cargo build --release`).
"""
import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

WEFT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "weft")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=5.0):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"chaos_kill.py: nothing listens on {port}")


def mesh(ports, traffic_policy, extra=""):
    """A ServiceEntry `svc` over loopback ports and its DestinationRule (YAML flow text)."""
    eps = "\n".join(f"  - {{address: 127.0.0.1, ports: {{http: {p}}}}}" for p in ports)
    return f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: svc}}
spec:
  hosts: [svc]
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints:
{eps}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: svc}}
spec:
  host: svc
  trafficPolicy: {traffic_policy}
{extra}"""


def route(retries):
    """A VirtualService for `svc` with the given `retries` (YAML flow text)."""
    return f"""---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: svc}}
spec:
  hosts: [svc]
  http:
  - route: [{{destination: {{host: svc}}}}]
    retries: {retries}
"""


def backend(port, name):
    return subprocess.Popen([WEFT, "backend", "--listen", f"127.0.0.1:{port}", "--name", name], stderr=subprocess.DEVNULL)


def metric(admin, name):
    text = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics").read().decode()
    return sum(float(l.split()[-1]) for l in text.splitlines() if l.startswith(name))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=int, default=2000)
    ap.add_argument("--duration", type=int, default=12)
    ap.add_argument("--kill-at", type=float, default=3.0)
    ap.add_argument("--revive-at", type=float, default=6.0)
    ap.add_argument("--base-ejection", default="2s")
    a = ap.parse_args()
    ports = [free_port() for _ in range(3)]
    listen, admin = free_port(), free_port()
    policy = f"{{outlierDetection: {{consecutive5xxErrors: 3, interval: 1s, baseEjectionTime: {a.base_ejection}, maxEjectionPercent: 34}}}}"
    config = mesh(ports, policy, route('{attempts: 2, perTryTimeout: 1s, retryOn: "connect-failure,reset,5xx"}'))
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "mesh.yaml")
        with open(path, "w") as f:
            f.write(config)
        backends = [backend(p, f"b{i}") for i, p in enumerate(ports)]
        for p in ports:
            wait_port(p)
        proxy = subprocess.Popen([WEFT, "proxy", "--config", path, "--listen", f"127.0.0.1:{listen}", "--admin", f"127.0.0.1:{admin}"], stderr=subprocess.DEVNULL)
        wait_port(listen)
        try:
            bench = subprocess.Popen(
                [WEFT, "bench", f"http://127.0.0.1:{listen}/", "--host", "svc", "-q", str(a.rate), "-c", "50", "-z", f"{a.duration}s", "--timeout", "5s", "-o", "json"],
                stdout=subprocess.PIPE,
            )
            t0 = time.time()
            time.sleep(a.kill_at)
            backends[0].send_signal(signal.SIGKILL)
            backends[0].wait()
            print(f"{time.time() - t0:5.2f} s: kill -9 b0 (port {ports[0]})", flush=True)
            time.sleep(max(0.0, a.revive_at - (time.time() - t0)))
            backends[0] = backend(ports[0], "b0")
            wait_port(ports[0])
            print(f"{time.time() - t0:5.2f} s: b0 back", flush=True)
            out, _ = bench.communicate()
            report = json.loads(out)
            served = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{ports[0]}/_served").read())
            print(f"client: {report['requests']:,} requests at {report['rps']:.0f}/s, failed {report['errors']}, "
                  f"status codes {report['status_codes']}, p50 {report['latency_us']['p50']:.0f} µs, p99 {report['latency_us']['p99']:.0f} µs, max {report['latency_us']['max']:.0f} µs")
            print(f"proxy: retries {metric(admin, 'weft_upstream_retries_total'):.0f}, ejections {metric(admin, 'weft_outlier_ejections_total'):.0f}, "
                  f"retry limit reached {metric(admin, 'weft_retry_limit_reached_total'):.0f}")
            print(f"revived b0 served {served} requests after it came back")
        finally:
            proxy.terminate()
            for b in backends:
                b.terminate()
    return 0


if __name__ == "__main__":
    sys.exit(main())
