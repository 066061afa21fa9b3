#!/usr/bin/env python3
"""Chaos: a backend pushed past its capacity, with and without adaptive concurrency.

One `weft backend --capacity N --latency L` serves N requests at a time (N / L per
second); an open-loop load well above that runs through `weft proxy` twice: without a
limit (every request queues at the backend and latency grows with the queue), and with
a RateLimit `adaptiveConcurrency` (the excess is shed with 503 and the admitted requests
stay near the backend's own latency). Prints, for each: answered and shed requests,
and the latency percentiles of the successful ones' run.

Needs a release build (`cargo build --release`).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chaos_kill import WEFT, free_port, mesh, metric, route, wait_port  # noqa: E402

LIMIT = """---
apiVersion: policy.weft.dev/v1alpha1
kind: RateLimit
metadata: {name: svc-concurrency}
spec:
  host: svc
  adaptiveConcurrency: {}
"""


def run(limited, a):
    port, listen, admin = free_port(), free_port(), free_port()
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "mesh.yaml")
        with open(path, "w") as f:
            f.write(mesh([port], "{}", route("{attempts: 0}") + (LIMIT if limited else "")))
        procs = [subprocess.Popen([WEFT, "backend", "--listen", f"127.0.0.1:{port}", "--latency", a.latency, "--capacity", str(a.capacity)],
                                  stderr=subprocess.DEVNULL)]
        wait_port(port)
        procs.append(subprocess.Popen([WEFT, "proxy", "--config", path, "--listen", f"127.0.0.1:{listen}", "--admin", f"127.0.0.1:{admin}"],
                                      stderr=subprocess.DEVNULL))
        wait_port(listen)
        try:
            out = subprocess.run([WEFT, "bench", f"http://127.0.0.1:{listen}/", "--host", "svc", "-q", str(a.rate), "-c", "1000", "-z", f"{a.duration}s",
                                  "--timeout", "30s", "-o", "json"], check=True, capture_output=True, text=True).stdout
            shed = metric(admin, "weft_adaptive_concurrency_shed_total")
        finally:
            for p in procs:
                p.terminate()
    return json.loads(out), shed


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=int, default=1000)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--capacity", type=int, default=4)
    ap.add_argument("--latency", default="10ms")
    a = ap.parse_args()
    print(f"backend: {a.capacity} at a time, {a.latency} each; offered {a.rate}/s (open loop) for {a.duration} s")
    for limited in (False, True):
        r, shed = run(limited, a)
        lat = r["latency_us"]
        ok = r["status_codes"].get("200", 0)
        how = "adaptive concurrency" if limited else "no limit"
        print(f"{how:>20}: {ok:,} answered 200 ({ok / a.duration:.0f}/s), shed {shed:.0f}, transport errors {r['errors']}, unsent {r.get('unsent', 0)}, "
              f"p50 {lat['p50'] / 1000:.1f} ms, p99 {lat['p99'] / 1000:.1f} ms, max {lat['max'] / 1000:.1f} ms")


if __name__ == "__main__":
    sys.exit(main())
