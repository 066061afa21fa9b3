#!/usr/bin/env python3
"""User-space instructions per proxied request, under callgrind.

Starts `weft backend`, then the proxy under `valgrind --tool=callgrind` (one worker)
with a ServiceEntry for the backend, sends N1 and then N2 keep-alive GETs with
`weft bench`, dumping the counts after each batch (callgrind_control; a dump resets
them). The second dump holds the N2 requests alone: divided by N2, it is the cost of one
request, start-up and the first batch's warm-up excluded (connection set-up of the
second batch's 8 connections included: negligible).

(Until 2026-11-30 this subtracted the first dump — start-up and N1 requests — from the
second, as if dumps were cumulative: it reported 0.8 × the true count minus ~300, so
figures from before then are ~21 % low; differences between builds kept their sign.)

  python3 scripts/callgrind_per_request.py --weft target/release/weft [--extra 'FILE']
  python3 scripts/callgrind_per_request.py --weft /tmp/weft-base --weft target/release/weft

With several --weft binaries they are measured in turn, interleaved over --rounds.
"""
import argparse, glob, os, re, socket, subprocess, sys, tempfile, time


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, timeout=60):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"port {port} never opened")


def total_ir(outdir):
    # The latest dump's totals line.
    files = sorted(glob.glob(os.path.join(outdir, "callgrind.out.*")), key=os.path.getmtime)
    for line in open(files[-1]):
        if line.startswith("totals:") or line.startswith("summary:"):
            return int(line.split()[1])
    raise SystemExit("no totals in callgrind output")


def backend_entry(port):
    """A ServiceEntry for `backend.bench` (port 80, name http) at 127.0.0.1:`port`."""
    return f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: backend}}
spec:
  hosts: [backend.bench]
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {port}}}}}]
"""


def measure(weft, bench, extra, n1, n2, args=()):
    d = tempfile.mkdtemp(prefix="cg-")
    bport, pport = free_port(), free_port()
    cfg = os.path.join(d, "mesh.yaml")
    with open(cfg, "w") as f:
        f.write(backend_entry(bport))
        if extra:
            f.write("---\n" + open(extra).read())
    backend = subprocess.Popen([bench, "backend", "--listen", f"127.0.0.1:{bport}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proxy = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={d}/callgrind.out.%p", "--dump-instr=no",
         weft, "proxy", "--config", cfg, "--listen", f"127.0.0.1:{pport}", *args],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(bport)
        wait_port(pport, 120)
        counts = []
        for n in (n1, n2):
            subprocess.run([bench, "bench", "-c", "8", "-n", str(n), "--host", "backend.bench", f"http://127.0.0.1:{pport}/"],
                           check=True, stdout=subprocess.DEVNULL)
            for old in glob.glob(os.path.join(d, "callgrind.out.*")):
                os.remove(old)
            subprocess.run(["callgrind_control", "-d", str(proxy.pid)], check=True, stdout=subprocess.DEVNULL)
            time.sleep(1)
            counts.append(total_ir(d))
        return counts[1] / n2
    finally:
        proxy.terminate()
        backend.terminate()
        proxy.wait()
        backend.wait()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weft", action="append", required=True, help="proxy binary (repeatable)")
    ap.add_argument("--bench", default=None, help="binary for `backend` and `bench` (default: the first --weft)")
    ap.add_argument("--extra", default=None, help="more YAML appended to the generated config (e.g. filters)")
    ap.add_argument("--args", action="append", default=None,
                    help="proxy flags for one --weft, in order (repeatable; e.g. '--otlp-endpoint http://127.0.0.1:9/v1/traces')")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("-n1", type=int, default=2000)
    ap.add_argument("-n2", type=int, default=10000)
    a = ap.parse_args()
    bench = a.bench or a.weft[0]
    if a.args is not None and len(a.args) != len(a.weft):
        raise SystemExit("give one --args per --weft (an empty string for none)")
    variants = [(w, (a.args[i].split() if a.args else [])) for i, w in enumerate(a.weft)]
    labels = [w + (f" {' '.join(args)}" if args else "") for w, args in variants]
    res = {label: [] for label in labels}
    for r in range(a.rounds):
        for (w, args), label in zip(variants, labels):
            v = measure(w, bench, a.extra, a.n1, a.n2, args)
            res[label].append(v)
            print(f"round {r + 1}: {label}: {v:,.0f} instructions/request", flush=True)
    base = None
    for label, vs in res.items():
        med = sorted(vs)[len(vs) // 2]
        note = "" if base is None else f"  ({(med / base - 1) * 100:+.2f} % vs {labels[0]})"
        base = base or med
        print(f"median {label}: {med:,.0f}{note}")


if __name__ == "__main__":
    main()
