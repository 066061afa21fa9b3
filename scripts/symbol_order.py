#!/usr/bin/env python3
"""Writes the link order of the weft binary's functions (crates/weft/symbol-order.txt).

A proxy's resident memory is mostly the binary's code that the kernel has mapped, and
the kernel maps 64 KB around every page that runs (fault-around): code that runs
scattered across the 24 MB text maps most of it. Linked in this order, the functions a
proxy runs — its request path first, most instructions first, then its start — sit
together at the front of the text, so what runs maps little else (the linker places the
functions named, in order, before all others; build.rs passes the file to it in release
builds).

Runs the given (release) binary under callgrind: `weft proxy` following a file of config
(start, then HTTP/1.1 and h2c GETs through it to `weft backend`, then clients that hang up
with a request in flight, as load generators do at their end), and takes the functions
of the weft binary that ran, by their symbol names. Names of functions since changed
are ignored by the linker (their code goes to the back), so an old file does no harm but
helps less: regenerate after changes to the request path or start.

  python3 scripts/symbol_order.py --weft target/release/weft
"""
import argparse, glob, os, re, socket, struct, subprocess, tempfile, time

from callgrind_per_request import backend_entry, free_port, wait_port


def costs(path, binary):
    """Self cost of each function of `binary` in one callgrind dump: {symbol: Ir}."""
    names, out = {}, {}
    ob, fn, in_call = None, None, False

    def ref(kind, rest):
        m = re.match(r"\((\d+)\)(?: (.*))?", rest)
        if not m:
            return rest
        key = (kind, m.group(1))
        if m.group(2):
            names[key] = m.group(2)
        return names.get(key, m.group(1))

    def named(fn):
        # callgrind marks a recursive function's inner calls with 'N: the same symbol.
        return re.sub(r"'\d+$", "", fn) if fn else fn

    for line in open(path, errors="replace"):
        if line.startswith("ob="):
            ob = ref("ob", line[3:].strip())
        elif line.startswith("fn="):
            fn = ref("fn", line[3:].strip())
        elif line.startswith(("cob=", "cfi=", "cfl=", "cfn=")):
            kind = line[1:3] if line.startswith("cob") else ("fn" if line.startswith("cfn") else "fl")
            ref({"ob": "ob", "fn": "fn"}.get(kind, "fl"), line.split("=", 1)[1].strip())
        elif line.startswith("calls="):
            in_call = True
        elif line[:1].isdigit() or line[:1] in "+-*":
            parts = line.split()
            if in_call:
                in_call = False
            elif len(parts) >= 2 and ob and os.path.basename(ob) == os.path.basename(binary):
                out[named(fn)] = out.get(named(fn), 0) + int(parts[1])
    return out


# What users' configs hold besides the backend's entry, in the block style most write:
# their parsing runs at every start, so it belongs with the start's code.
TYPICAL_CONFIG = """---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: typical
  namespace: default
spec:
  hosts:
  - typical.bench
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - number: 80
    name: http
    protocol: HTTP
  endpoints:
  - address: 127.0.0.2
    ports:
      http: 9
    labels:
      version: v1
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: typical
spec:
  host: typical.bench
  trafficPolicy:
    loadBalancer:
      simple: LEAST_REQUEST
    connectionPool:
      http:
        http1MaxPendingRequests: 1024
    outlierDetection:
      consecutive5xxErrors: 5
      interval: 10s
      baseEjectionTime: 30s
  subsets:
  - name: v1
    labels:
      version: v1
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: typical
spec:
  hosts:
  - typical.bench
  http:
  - match:
    - uri:
        prefix: /api
    route:
    - destination:
        host: typical.bench
        subset: v1
    timeout: 5s
    retries:
      attempts: 2
      perTryTimeout: 1s
"""


def hang_ups(port, n):
    """Clients that leave with their request in flight (as every load generator's do at its
    end): half close, half reset. The proxy's code for a request dropped midway runs."""
    req = b"GET / HTTP/1.1\r\nHost: backend.bench\r\nx-delay-ms: 2000\r\n\r\n"
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(req)
        # (Long enough for the proxy, slowed by callgrind, to have sent it upstream: the
        # hang-up then drops a request midway, not one it has yet to read.)
        time.sleep(0.3)
        if i % 2:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    time.sleep(1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weft", default="target/release/weft")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "crates", "weft", "symbol-order.txt"))
    ap.add_argument("-n", type=int, default=3000, help="requests of each kind")
    a = ap.parse_args()
    weft = os.path.abspath(a.weft)
    d = tempfile.mkdtemp(prefix="order-")
    bport, pport = free_port(), free_port()
    cfg = os.path.join(d, "mesh.yaml")
    with open(cfg, "w") as f:
        f.write(backend_entry(bport) + TYPICAL_CONFIG)
    backend = subprocess.Popen([weft, "backend", "--listen", f"127.0.0.1:{bport}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    proxy = subprocess.Popen(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={d}/callgrind.out", "--dump-instr=no", "--demangle=no",
         weft, "proxy", "--config", cfg, "--listen", f"127.0.0.1:{pport}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(bport)
        wait_port(pport, 120)
        # The start, dumped apart from the requests.
        subprocess.run(["callgrind_control", "-d", str(proxy.pid)], check=True, stdout=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{pport}/"
        for extra in ([], ["--h2", "-m", "4"]):
            subprocess.run([weft, "bench", "-c", "8", "-n", str(a.n), "--host", "backend.bench", *extra, url],
                           check=True, stdout=subprocess.DEVNULL)
        hang_ups(pport, 40)
    finally:
        proxy.terminate()
        proxy.wait()
        backend.terminate()
        backend.wait()
    dumps = sorted(glob.glob(os.path.join(d, "callgrind.out*")))
    start = next(p for p in dumps if p.endswith(".1"))
    rest = [p for p in dumps if p != start]
    served = {}
    for p in rest:
        for f, c in costs(p, weft).items():
            served[f] = served.get(f, 0) + c
    started = costs(start, weft)
    order = sorted(served, key=lambda f: -served[f])
    order += sorted((f for f in started if f not in served), key=lambda f: -started[f])
    # Only symbol names (callgrind names a function without one by its address).
    order = [f for f in order if re.match(r"^[A-Za-z_][\w.$]*$", f)]
    with open(a.out, "w") as f:
        f.write("".join(s + "\n" for s in order))
    print(f"{len(order)} functions ({sum(1 for s in order if s in served)} run per request) → {os.path.normpath(a.out)}")


if __name__ == "__main__":
    main()
