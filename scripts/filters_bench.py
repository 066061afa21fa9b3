#!/usr/bin/env python3
"""weft's response filters against nginx doing the same, side by side.

Two comparisons, each over --rounds interleaved rounds (weft, nginx, weft, …) of a
closed-loop wrk run (one thread, --connections) through the proxy to one nginx
backend on loopback serving a 10 KiB JSON document (`Cache-Control: max-age=3600`):

  cache  weft `kind: ResponseCache` vs nginx `proxy_cache`: every request a hit
  gzip   weft `kind: Compression` (gzip only, level 6) vs nginx `gzip on`
         (gzip_comp_level 6, gzip_proxied any); wrk sends Accept-Encoding: gzip

Reported per target: median requests/s and the proxy's CPU time per request (user +
sys of every process and thread, from /proc), and the ratios weft/nginx.

  python3 scripts/filters_bench.py --weft target/release/weft [--rounds 5] [--duration 5]
"""
import argparse, json, os, re, shutil, signal, socket, statistics, subprocess, sys, tempfile, time

BACKEND, NGINX, WEFT = 18381, 18382, 18383
HOST = "data.bench"


def wait_port(port, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"port {port} never opened")


def cpu(pids):
    total = 0.0
    for pid in pids:
        try:
            parts = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            total += (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return total


def family(pid):
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    return [pid] + [int(p) for p in out]


def wrk(port, conns, dur, headers):
    cmd = ["wrk", "-t1", f"-c{conns}", f"-d{dur}s", "-H", f"Host: {HOST}"]
    for h in headers:
        cmd += ["-H", h]
    out = subprocess.run(cmd + [f"http://127.0.0.1:{port}/data.json"], capture_output=True, text=True).stdout
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return float(m.group(1)) if m else 0.0, int(bad.group(1)) if bad else 0, int(re.search(r"(\d+) requests in", out).group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weft", required=True, help="the weft binary")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--connections", type=int, default=50)
    a = ap.parse_args()
    for t in ("nginx", "wrk"):
        if not shutil.which(t):
            raise SystemExit(f"needs {t}")
    d = tempfile.mkdtemp(prefix="filters-bench-")
    os.chmod(d, 0o755)  # nginx's workers run as another user
    os.makedirs(f"{d}/www")
    os.makedirs(f"{d}/cache", mode=0o777)
    os.chmod(f"{d}/cache", 0o777)
    doc = json.dumps([{"id": i, "name": f"item {i}", "tags": ["alpha", "beta"], "ok": i % 3 == 0} for i in range(170)])
    open(f"{d}/www/data.json", "w").write(doc[: 10 * 1024 - 2] + "]\n" if len(doc) > 10 * 1024 else doc)
    open(f"{d}/backend.conf", "w").write(f"""
worker_processes 1; daemon off; pid {d}/backend.pid; error_log {d}/backend.err warn;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 100000000; include /etc/nginx/mime.types;
  server {{ listen 127.0.0.1:{BACKEND}; root {d}/www; location / {{ add_header Cache-Control "max-age=3600"; }} }} }}
""")
    shared = f"""worker_processes 1; daemon off; error_log {d}/nginx.err warn;
events {{ worker_connections 4096; }}"""
    upstream = f"""upstream be {{ server 127.0.0.1:{BACKEND}; keepalive 256; }}"""
    proxy = """proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection "";"""
    nginx_conf = {
        "cache": f"""{shared} pid {d}/nginx-cache.pid;
http {{ access_log off; keepalive_requests 100000000; {upstream}
  proxy_cache_path {d}/cache levels=1:2 keys_zone=c:10m max_size=64m;
  server {{ listen 127.0.0.1:{NGINX}; location / {{ {proxy} proxy_cache c; add_header X-Cache $upstream_cache_status; }} }} }}""",
        "gzip": f"""{shared} pid {d}/nginx-gzip.pid;
http {{ access_log off; keepalive_requests 100000000; {upstream}
  gzip on; gzip_comp_level 6; gzip_proxied any; gzip_types application/json; gzip_min_length 30;
  server {{ listen 127.0.0.1:{NGINX}; location / {{ {proxy} }} }} }}""",
    }
    se = f"""apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: data}}
spec:
  hosts: [{HOST}]
  resolution: STATIC
  ports: [{{number: 80, name: http, protocol: HTTP}}]
  endpoints: [{{address: 127.0.0.1, ports: {{http: {BACKEND}}}}}]
"""
    weft_conf = {
        "cache": se + f"""---
apiVersion: policy.weft.dev/v1alpha1
kind: ResponseCache
metadata: {{name: data}}
spec: {{host: {HOST}, maxBytes: 67108864}}
""",
        "gzip": se + f"""---
apiVersion: policy.weft.dev/v1alpha1
kind: Compression
metadata: {{name: data}}
spec: {{host: {HOST}, encodings: [gzip], level: 6}}
""",
    }
    headers = {"cache": [], "gzip": ["Accept-Encoding: gzip"]}
    backend = subprocess.Popen(["nginx", "-c", f"{d}/backend.conf"], start_new_session=True)
    wait_port(BACKEND)
    results = {}
    try:
        for case in ("cache", "gzip"):
            for name in ("weft", "nginx"):
                results[(case, name)] = []
            for r in range(a.rounds):
                for name in ("weft", "nginx"):
                    if name == "nginx":
                        conf = f"{d}/nginx-{case}.conf"
                        open(conf, "w").write(nginx_conf[case])
                        p = subprocess.Popen(["nginx", "-c", conf], start_new_session=True)
                        port = NGINX
                    else:
                        conf = f"{d}/weft-{case}.yaml"
                        open(conf, "w").write(weft_conf[case])
                        p = subprocess.Popen([a.weft, "proxy", "--config", conf, "--listen", f"127.0.0.1:{WEFT}"],
                                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
                        port = WEFT
                    wait_port(port)
                    wrk(port, 4, 1, headers[case])  # warm: fills the cache, opens upstream connections
                    pids = family(p.pid)
                    c0 = cpu(pids)
                    rps, bad, n = wrk(port, a.connections, a.duration, headers[case])
                    used = cpu(pids) - c0
                    os.killpg(p.pid, signal.SIGTERM)
                    p.wait()
                    results[(case, name)].append((rps, used / max(n, 1) * 1e6, bad))
                    if bad:
                        raise SystemExit(f"{case}/{name}: {bad} non-2xx answers: the comparison is void (see {d})")
                    print(f"{case} round {r + 1} {name}: {rps:,.0f} req/s, {used / max(n, 1) * 1e6:.1f} µs CPU/request, {bad} non-2xx", flush=True)
    finally:
        os.killpg(backend.pid, signal.SIGTERM)
    print()
    for case in ("cache", "gzip"):
        w, n = results[(case, "weft")], results[(case, "nginx")]
        med = lambda xs, i: statistics.median(x[i] for x in xs)
        print(f"{case}: weft {med(w, 0):,.0f} req/s, {med(w, 1):.1f} µs/req; nginx {med(n, 0):,.0f} req/s, {med(n, 1):.1f} µs/req;"
              f" weft/nginx: {med(w, 0) / med(n, 0):.2f}x req/s, {med(w, 1) / med(n, 1):.2f}x CPU/request")


if __name__ == "__main__":
    main()
