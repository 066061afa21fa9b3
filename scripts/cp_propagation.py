#!/usr/bin/env python3
"""Control-plane push propagation: from `weft apply` returning to every proxy stream
having the new revision (and having ACKed it).

Starts `weft control-plane` on a fresh data dir, opens --proxies simulated proxy
streams in this one process (asyncio; each long-polls /v1/watch and ACKs what it gets,
as `weft proxy --control-plane` does, without compiling it), then --rounds times
applies a changed DestinationRule with the real `weft apply` and records, for every
stream, how long after `weft apply` returned the new revision arrived and was ACKed.
Prints p50 / p99 / max over all streams and rounds, and the control plane's own
commit→ACK histogram.

Needs a release build (`cargo build --release`).
"""
import argparse
import asyncio
import os
import resource
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chaos_kill import WEFT, free_port, wait_port  # noqa: E402

SE = """apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: reviews}
spec:
  hosts: [reviews]
  resolution: STATIC
  ports: [{number: 80, name: http, protocol: HTTP}]
  endpoints: [{address: 127.0.0.1, ports: {http: 9001}}]
"""


def dr(i):
    lb = "ROUND_ROBIN" if i % 2 else "RANDOM"
    return f"""apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews}}
spec:
  host: reviews
  trafficPolicy: {{loadBalancer: {{simple: {lb}}}, connectionPool: {{http: {{maxRetries: {i + 3}}}}}}}
"""


async def request(port, method, path):
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(f"{method} {path} HTTP/1.1\r\nhost: cp\r\nconnection: close\r\ncontent-length: 0\r\n\r\n".encode())
    await w.drain()
    data = await r.read()
    w.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {l.split(":", 1)[0].lower(): l.split(":", 1)[1].strip() for l in lines[1:] if ":" in l}
    return status, headers, body


async def stream(port, node, seen, stop):
    rev = 0
    while not stop.is_set():
        try:
            status, headers, _ = await request(port, "GET", f"/v1/watch?node={node}&since={rev}&wait=20000")
        except OSError:
            await asyncio.sleep(0.1)
            continue
        if status == 200:
            rev = int(headers.get("x-weft-revision", rev))
            seen[node] = (rev, time.monotonic())
            await request(port, "POST", f"/v1/ack?node={node}&revision={rev}")
            seen[node] = (rev, seen[node][1], time.monotonic())


def metric(port, name):
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    return [l for l in text.splitlines() if l.startswith(name)]


async def main_async(a):
    port = free_port()
    with tempfile.TemporaryDirectory() as d:
        cp = subprocess.Popen([WEFT, "control-plane", "--data-dir", d, "--listen", f"127.0.0.1:{port}"], stderr=subprocess.DEVNULL)
        wait_port(port)
        env = dict(os.environ, WEFT_SERVER=f"http://127.0.0.1:{port}")
        path = os.path.join(d, "m.yaml")

        def apply(text):
            with open(path, "w") as f:
                f.write(text)
            subprocess.run([WEFT, "apply", "-f", path], env=env, check=True, capture_output=True)

        apply(SE)
        seen, stop = {}, asyncio.Event()
        tasks = [asyncio.create_task(stream(port, f"sim-{i}", seen, stop)) for i in range(a.proxies)]
        # Everyone has revision 1 and is waiting again.
        while len([v for v in seen.values() if len(v) == 3]) < a.proxies:
            await asyncio.sleep(0.05)
        while True:
            c = metric(port, "weft_control_proxies_connected")
            if c and float(c[0].split()[-1]) >= a.proxies:
                break
            await asyncio.sleep(0.05)
        recv, acked = [], []
        for i in range(a.rounds):
            await asyncio.to_thread(apply, dr(i))
            done = time.monotonic()
            want = i + 2
            deadline = time.monotonic() + 30
            while min((v[0] if len(v) == 3 else 0) for v in seen.values()) < want:
                if time.monotonic() > deadline:
                    sys.exit(f"round {i}: not every stream got revision {want} within 30 s")
                await asyncio.sleep(0.002)
            recv += [(v[1] - done) * 1000 for v in seen.values()]
            acked += [(v[2] - done) * 1000 for v in seen.values()]
            await asyncio.sleep(0.3)
        stop.set()
        for t in tasks:
            t.cancel()
        hist = metric(port, "weft_control_push_latency_ms")
        cp.terminate()

    def pct(v, p):
        v = sorted(v)
        return v[min(len(v) - 1, int(p / 100 * len(v)))]

    print(f"{a.proxies} streams x {a.rounds} applies: from `weft apply` returning")
    print(f"  to the new revision received: p50 {pct(recv, 50):.1f} ms, p99 {pct(recv, 99):.1f} ms, max {max(recv):.1f} ms")
    print(f"  to its ACK sent:              p50 {pct(acked, 50):.1f} ms, p99 {pct(acked, 99):.1f} ms, max {max(acked):.1f} ms")
    print("  control plane commit->ACK histogram: " + ", ".join(l.split("{")[-1].replace('"}', "").replace("le=", "<=") for l in hist if "bucket" in l))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--proxies", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=10)
    a = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * a.proxies + 256)), hard))
    asyncio.run(main_async(a))


if __name__ == "__main__":
    main()
