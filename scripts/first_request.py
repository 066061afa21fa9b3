#!/usr/bin/env python3
"""On-demand discovery's first request, over the control plane's real API (HTTPS, tokens).

For each binary given (rounds interleaved): a control plane with N ServiceEntries of 10
endpoints (`cp_scale.mesh`), applied in files of 1,000; one proxy following it on demand
with the admin token and the mesh CA; then, CALLS times, a first request to a service
the proxy has not asked for and a second one right after (0.15 s apart between
services). Prints, per binary, the first and second requests' p50/p90/p99 and the
slowest first requests.

  python3 scripts/first_request.py --services 10000 --calls 20 --rounds 3 OLD_BINARY target/release/weft

Needs release builds. Loopback only: the endpoints are 127.x.y.z on one port where one
`weft x backend` listens.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cp_scale  # noqa: E402
from chaos_kill import free_port, wait_port  # noqa: E402


def run(weft, services, calls):
    port, d = free_port(), tempfile.mkdtemp(prefix="first-request-")
    cp = subprocess.Popen([weft, "control-plane", "--data-dir", d, "--listen", f"127.0.0.1:{port}"], stderr=subprocess.DEVNULL)
    procs = [cp]
    try:
        wait_port(port, 60)
        time.sleep(0.5)
        ca, token = f"{d}/ca/root-cert.pem", f"{d}/admin-token"
        env = dict(os.environ, WEFT_SERVER=f"https://127.0.0.1:{port}", WEFT_CA_FILE=ca, WEFT_TOKEN_FILE=token)
        bport = free_port()
        procs.append(subprocess.Popen([weft, "x", "backend", "--listen", f"0.0.0.0:{bport}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        docs = cp_scale.mesh(services, 10, bport).split("\n---\n")
        for s in range(0, len(docs), 1000):
            f = os.path.join(d, f"mesh-{s}.yaml")
            with open(f, "w") as out:
                out.write("\n---\n".join(docs[s:s + 1000]).removeprefix("---\n") + "\n")
            subprocess.run([weft, "apply", "-f", f], env=env, check=True, capture_output=True)
        listen = free_port()
        procs.append(subprocess.Popen([weft, "proxy", "--control-plane", f"https://127.0.0.1:{port}", "--ca-file", ca, "--token-file", token,
                                       "--node", "first-request", "--listen", f"127.0.0.1:{listen}"], stderr=subprocess.DEVNULL))
        wait_port(listen, 60)
        time.sleep(1.5)
        firsts, seconds = [], []
        for i in range(calls):
            took, status = cp_scale.timed_get(listen, f"svc-{i}.mesh")
            again, _ = cp_scale.timed_get(listen, f"svc-{i}.mesh")
            if status != 200:
                raise SystemExit(f"svc-{i}.mesh answered {status}")
            firsts.append(took * 1000)
            seconds.append(again * 1000)
            time.sleep(0.15)
        return firsts, seconds
    finally:
        for p in procs:
            p.terminate()
            p.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("weft", nargs="+", help="weft binaries to compare")
    ap.add_argument("--services", type=int, default=10000)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    res = {w: ([], []) for w in a.weft}
    for _ in range(a.rounds):
        for w in a.weft:
            f, s = run(w, a.services, a.calls)
            res[w][0].extend(f)
            res[w][1].extend(s)
    for w, (f, s) in res.items():
        pc = lambda v, q: sorted(v)[min(len(v) - 1, int(q * len(v)))]  # noqa: E731
        print(f"{w}: first request p50 {pc(f, .5):.2f} p90 {pc(f, .9):.2f} p99 {pc(f, .99):.2f} ms; "
              f"second p50 {pc(s, .5):.2f} p99 {pc(s, .99):.2f} ms ({len(f)} services); slowest firsts: "
              + " ".join(f"{x:.1f}" for x in sorted(f)[-5:]))


if __name__ == "__main__":
    main()
