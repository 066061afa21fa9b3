#!/usr/bin/env python3
"""Endpoint changes reaching a real proxy that follows the whole mesh.

Starts a control plane (--insecure), applies --services ServiceEntries of --endpoints
endpoints each (as scripts/cp_scale.py does), starts one `weft proxy` following the
whole mesh, then:

1. --changes single registrations, one at a time, each into a random service, and
   for each the time from the registration's answer to the proxy running its revision
   (`weft_control_plane_revision` on the proxy's /metrics, polled every ~1 ms: the
   gauge moves only once the new routing is swapped in);
2. with --churn RATE, `weft x bench-control-plane --churn RATE` for --churn-duration
   seconds into those services, the proxy's CPU over that time (utime + stime from
   /proc), and how long after the last change it runs the last revision;
3. with --vs-changes N, VirtualServices and DestinationRules (subsets v0, v1) for the
   first --virtual-services services, then N changes of one VirtualService's split, one
   at a time, each timed as the registrations are (applied in place when the proxy's
   `weft_control_plane_routes_in_place_updates_total` moves).

Needs a release build (`cargo build --release`), or --weft PATH.
"""
import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chaos_kill import WEFT, free_port, wait_port  # noqa: E402
from cp_scale import mesh, rss_mb  # noqa: E402


def proxy_revision(admin):
    body = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics").read().decode()
    for line in body.splitlines():
        if line.startswith("weft_control_plane_revision "):
            return int(float(line.split()[1]))
    return 0


def register(cp, service, address):
    req = urllib.request.Request(f"http://127.0.0.1:{cp}/v1/registry", data=json.dumps({"service": service, "address": address}).encode(),
                                 headers={"content-type": "application/json"}, method="POST")
    return json.loads(urllib.request.urlopen(req).read())["revision"]


def wait_revision(admin, rev, timeout=60.0):
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if proxy_revision(admin) >= rev:
            return time.monotonic()
        time.sleep(0.001)
    sys.exit(f"the proxy did not reach revision {rev} within {timeout} s")


def proxy_metric(admin, name):
    body = urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics").read().decode()
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def apply(cp, name, docs):
    body = json.dumps({"files": [{"name": name, "text": "\n---\n".join(json.dumps(d) for d in docs)}]}).encode()
    req = urllib.request.Request(f"http://127.0.0.1:{cp}/v1/apply", data=body, headers={"content-type": "application/json"}, method="POST")
    return json.loads(urllib.request.urlopen(req).read())["revision"]


def destination_rule(i):
    return {"apiVersion": "networking.istio.io/v1", "kind": "DestinationRule", "metadata": {"name": f"svc-{i}"},
            "spec": {"host": f"svc-{i}.mesh", "subsets": [{"name": "v0", "labels": {"version": "v0"}}, {"name": "v1", "labels": {"version": "v1"}}]}}


def virtual_service(i, canary):
    dest = lambda subset, w: {"destination": {"host": f"svc-{i}.mesh", "subset": subset}, "weight": w}  # noqa: E731
    return {"apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": f"svc-{i}"},
            "spec": {"hosts": [f"svc-{i}.mesh"], "http": [{"match": [{"uri": {"prefix": "/canary"}}], "route": [dest("v1", 100)]},
                                                          {"route": [dest("v0", 100 - canary), dest("v1", canary)]}]}}


def vs_changes(a, port, admin):
    """Part 3: one VirtualService change at a time, answer -> the proxy runs it."""
    k = min(a.virtual_services, a.services)
    rev = apply(port, "routes.yaml", [d for i in range(k) for d in (destination_rule(i), virtual_service(i, 10))])
    wait_revision(admin, rev, 120)
    time.sleep(2.0)
    counted = proxy_metric(admin, "weft_control_plane_routes_in_place_updates_total")
    took = []
    for n in range(a.vs_changes):
        i = random.randrange(k)
        rev = apply(port, f"vs-{i}.yaml", [virtual_service(i, 20 + n % 60)])
        answered = time.monotonic()
        took.append((wait_revision(admin, rev) - answered) * 1000)
        time.sleep(0.1)
    in_place = proxy_metric(admin, "weft_control_plane_routes_in_place_updates_total") - counted
    print(f"{k:,} VirtualServices; {a.vs_changes} single VirtualService changes ({in_place:.0f} applied in place), answer -> the proxy runs it:")
    print(f"  p50 {pct(took, 50):.1f} ms, p90 {pct(took, 90):.1f} ms, p99 {pct(took, 99):.1f} ms, max {max(took):.1f} ms")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weft", default=WEFT)
    ap.add_argument("--services", type=int, default=10000)
    ap.add_argument("--endpoints", type=int, default=10)
    ap.add_argument("--changes", type=int, default=50)
    ap.add_argument("--churn", type=int, default=0, help="endpoint changes a second (0: none)")
    ap.add_argument("--churn-duration", type=float, default=10)
    ap.add_argument("--virtual-services", type=int, default=1000)
    ap.add_argument("--vs-changes", type=int, default=0, help="single VirtualService changes (0: none)")
    a = ap.parse_args()
    port, admin, listen = free_port(), free_port(), free_port()
    with tempfile.TemporaryDirectory() as d:
        cp = subprocess.Popen([a.weft, "control-plane", "--data-dir", d, "--listen", f"127.0.0.1:{port}", "--insecure"], stderr=subprocess.DEVNULL)
        wait_port(port)
        env = dict(os.environ, WEFT_SERVER=f"http://127.0.0.1:{port}")
        docs = mesh(a.services, a.endpoints, 9000).split("\n---\n")
        for start in range(0, len(docs), 1000):
            path = os.path.join(d, f"mesh-{start}.yaml")
            with open(path, "w") as f:
                f.write("\n---\n".join(docs[start:start + 1000]).removeprefix("---\n") + "\n")
            out = subprocess.run([a.weft, "apply", "-f", path], env=env, capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"apply failed: {out.stderr[:500]}")
        px = subprocess.Popen([a.weft, "proxy", "--control-plane", f"http://127.0.0.1:{port}", "--node", "incr", "--listen", f"127.0.0.1:{listen}",
                               "--admin", f"127.0.0.1:{admin}", "--discovery", "eager"], stderr=subprocess.DEVNULL)
        wait_port(admin, 120)
        wait_revision(admin, register(port, "svc-0.mesh", "10.250.0.1:9000"), 120)
        time.sleep(2.0)
        took = []
        for i in range(a.changes):
            rev = register(port, f"svc-{random.randrange(a.services)}.mesh", f"10.251.{i // 250}.{i % 250 + 1}:9000")
            answered = time.monotonic()
            took.append((wait_revision(admin, rev) - answered) * 1000)
            time.sleep(0.1)
        print(f"{a.services:,} services x {a.endpoints} endpoints; {a.changes} single registrations, answer -> the proxy runs it:")
        print(f"  p50 {pct(took, 50):.1f} ms, p90 {pct(took, 90):.1f} ms, p99 {pct(took, 99):.1f} ms, max {max(took):.1f} ms")
        print("  proxy RSS %.0f MB (peak %.0f MB)" % rss_mb(px.pid))
        if a.churn:
            time.sleep(2.0)
            cpu0, t0 = cpu_seconds(px.pid), time.monotonic()
            out = subprocess.run([a.weft, "x", "bench-control-plane", "--server", f"http://127.0.0.1:{port}", "--proxies", "1", "--churn", str(a.churn),
                                  "--duration", str(a.churn_duration), "--churn-pattern", "svc-{}.mesh", "--churn-services", str(a.services)],
                                 capture_output=True, text=True)
            ended = time.monotonic()
            last = register(port, "svc-0.mesh", "10.250.0.2:9000")
            caught = wait_revision(admin, last, 120)
            cpu1 = cpu_seconds(px.pid)
            print(f"  churn {a.churn}/s for {a.churn_duration:.0f} s: proxy CPU {(cpu1 - cpu0) / (caught - t0):.2f} cores "
                  f"({cpu1 - cpu0:.1f} s over {caught - t0:.1f} s), running the last revision {(caught - ended) * 1000:.0f} ms after the churn ended")
            print("    " + (out.stdout + out.stderr).strip().replace("\n", "\n    "))
            print("  proxy RSS after the churn %.0f MB (peak %.0f MB)" % rss_mb(px.pid))
        if a.vs_changes:
            vs_changes(a, port, admin)
        px.terminate()
        cp.terminate()


if __name__ == "__main__":
    main()
