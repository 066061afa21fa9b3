#!/usr/bin/env python3
"""Control plane at scale: --services ServiceEntries of --endpoints endpoints each.

Applies them in one `weft apply` (timed: validation by the config compiler plus one
durable commit), then reports the control plane's memory, how long it takes to build
the whole mesh for a proxy (the first, uncached `/v1/mesh`), and the memory of three
proxies following it: one with the whole mesh (`--discovery eager`), one scoped by a
Sidecar to --scoped services (eager), and one on demand (the default) that calls --calls
services: how long its first request to each took against its second (the cost of
asking the control plane), and its memory after. Endpoints are loopback addresses
(127.x.y.z) on one port where one `weft x backend` listens on 0.0.0.0: every request is
answered, and nothing leaves the machine. With --churn RATE it then runs `weft bench-control-plane --churn RATE`:
RATE endpoint registrations and deregistrations a second into those services while
--churn-proxies simulated proxy streams follow, and how long each change takes to
reach every stream, while the whole-mesh proxy follows them too (its memory after).

The control plane runs with --insecure (plain HTTP, no tokens): `weft bench-control-plane`
speaks no TLS, and the API's TLS and tokens are not what this measures.

Needs a release build (`cargo build --release`).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chaos_kill import WEFT, free_port, wait_port  # noqa: E402


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        fields = dict(l.split(":", 1) for l in f if ":" in l)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def mesh(n, e, port):
    docs = []
    for i in range(n):
        eps = [{"address": f"127.{(i >> 8) & 255}.{i & 255}.{k + 1}", "ports": {"http": port}, "labels": {"version": f"v{k % 3}"}} for k in range(e)]
        docs.append(json.dumps({"apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry", "metadata": {"name": f"svc-{i}"},
                                "spec": {"hosts": [f"svc-{i}.mesh"], "resolution": "STATIC", "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}], "endpoints": eps}}))
    return "---\n" + "\n---\n".join(docs) + "\n"


def proxy(cp_port, node, namespace, d, discovery="eager"):
    listen = free_port()
    p = subprocess.Popen([WEFT, "proxy", "--control-plane", f"http://127.0.0.1:{cp_port}", "--node", node, "--namespace", namespace, "--listen", f"127.0.0.1:{listen}",
                          "--discovery", discovery], stderr=subprocess.DEVNULL)
    wait_port(listen, 60)
    time.sleep(1.0)
    p.listen = listen
    return p


def timed_get(port, host):
    import http.client
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    t = time.monotonic()
    c.request("GET", "/", headers={"Host": host})
    status = c.getresponse().status
    took = time.monotonic() - t
    c.close()
    return took, status


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--services", type=int, default=10000)
    ap.add_argument("--endpoints", type=int, default=10)
    ap.add_argument("--scoped", type=int, default=10)
    ap.add_argument("--calls", type=int, default=10, help="services the on-demand proxy calls")
    ap.add_argument("--churn", type=int, default=0, help="endpoint changes a second (0: none)")
    ap.add_argument("--churn-proxies", type=int, default=100)
    ap.add_argument("--churn-duration", type=float, default=10)
    a = ap.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as d:
        cp = subprocess.Popen([WEFT, "control-plane", "--data-dir", d, "--listen", f"127.0.0.1:{port}", "--insecure"], stderr=subprocess.DEVNULL)
        wait_port(port)
        env = dict(os.environ, WEFT_SERVER=f"http://127.0.0.1:{port}")
        bport = free_port()
        backend = subprocess.Popen([WEFT, "x", "backend", "--listen", f"0.0.0.0:{bport}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(bport)
        # In files of 1,000 services (a request body is capped at 8 MiB), one apply each.
        docs = mesh(a.services, a.endpoints, bport).split("\n---\n")
        applies = []
        for start in range(0, len(docs), 1000):
            path = os.path.join(d, f"mesh-{start}.yaml")
            with open(path, "w") as f:
                f.write("\n---\n".join(docs[start:start + 1000]).removeprefix("---\n") + "\n")
            t = time.monotonic()
            out = subprocess.run([WEFT, "apply", "-f", path], env=env, capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"apply failed: {out.stderr[:500]}")
            applies.append(time.monotonic() - t)
        apply_s = sum(applies)
        hosts = ", ".join(f'"./svc-{i}.mesh"' for i in range(a.scoped))
        sc = os.path.join(d, "sidecar.yaml")
        with open(sc, "w") as f:
            f.write(f"apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: default, namespace: scoped}}\nspec:\n  egress: [{{hosts: [{hosts.replace('./', 'default/')}]}}]\n")
        subprocess.run([WEFT, "apply", "-f", sc], env=env, check=True, capture_output=True)
        t = time.monotonic()
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/mesh").read()
        build_s = time.monotonic() - t
        t = time.monotonic()
        urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/mesh").read()
        cached_s = time.monotonic() - t
        cp_rss = rss_mb(cp.pid)
        full = proxy(port, "full", "default", d)
        scoped = proxy(port, "scoped", "scoped", d)
        full_rss, scoped_rss = rss_mb(full.pid), rss_mb(scoped.pid)
        scoped.terminate()
        if not a.churn:
            full.terminate()
        lazy = proxy(port, "on-demand", "default", d, "on-demand")
        firsts, seconds, statuses = [], [], set()
        for i in range(a.calls):
            took, status = timed_get(lazy.listen, f"svc-{i}.mesh")
            firsts.append(took)
            statuses.add(status)
            seconds.append(timed_get(lazy.listen, f"svc-{i}.mesh")[0])
        lazy_rss = rss_mb(lazy.pid)
        lazy.terminate()
        churn = None
        if a.churn:
            churn = subprocess.run([WEFT, "bench-control-plane", "--server", f"http://127.0.0.1:{port}", "--proxies", str(a.churn_proxies),
                                    "--churn", str(a.churn), "--duration", str(a.churn_duration), "--churn-pattern", "svc-{}.mesh",
                                    "--churn-services", str(a.services)], capture_output=True, text=True)
            churn_rss = rss_mb(cp.pid)
            full_churn_rss = rss_mb(full.pid)
            full.terminate()
        cp.terminate()
        backend.terminate()
    print(f"{a.services:,} services x {a.endpoints} endpoints = {a.services * a.endpoints:,} endpoints")
    print(f"  weft apply in {len(applies)} files of <= 1,000 services (each validated with everything stored, one durable commit): {apply_s:.2f} s in all, the last {applies[-1]:.2f} s")
    print(f"  full mesh for a proxy: built in {build_s * 1000:.0f} ms ({len(body) / 1e6:.1f} MB), cached {cached_s * 1000:.0f} ms")
    print(f"  control plane RSS {cp_rss[0]:.0f} MB (peak {cp_rss[1]:.0f} MB)")
    print(f"  proxy with the whole mesh: RSS {full_rss[0]:.1f} MB (peak {full_rss[1]:.1f}); scoped to {a.scoped} services by a Sidecar: {scoped_rss[0]:.1f} MB (peak {scoped_rss[1]:.1f})")
    print(f"  proxy on demand, {a.calls} services called: RSS {lazy_rss[0]:.1f} MB (peak {lazy_rss[1]:.1f}); first request p50 {pct(firsts, .5) * 1000:.1f} ms,"
          f" p99 {pct(firsts, .99) * 1000:.1f} ms; second p50 {pct(seconds, .5) * 1000:.1f} ms, p99 {pct(seconds, .99) * 1000:.1f} ms (statuses {sorted(statuses)})")
    if churn is not None:
        print(f"  churn ({a.churn}/s into those services, {a.churn_proxies} streams of the whole mesh):")
        print("    " + (churn.stdout + churn.stderr).strip().replace("\n", "\n    "))
        print(f"    control plane RSS after: {churn_rss[0]:.0f} MB (peak {churn_rss[1]:.0f} MB)")
        print(f"    proxy with the whole mesh (eager, following all along) RSS after: {full_churn_rss[0]:.1f} MB (peak {full_churn_rss[1]:.1f} MB)")


if __name__ == "__main__":
    main()
