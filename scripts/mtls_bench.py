#!/usr/bin/env python3
"""The mTLS pair's cost, side by side in one run (issue 13's benchmark shape).

Three paths to the same nginx (1 KiB answers), at a fixed request rate (open loop,
`weft bench -q`), interleaved round by round so that machine drift hits all alike:

  direct   client -> nginx
  plain    client -> weft (outbound) -> plaintext -> weft (inbound) -> nginx
  mtls     client -> weft (outbound) -> mTLS (auto, h2) -> weft (inbound) -> nginx

Both pairs follow one control plane; the mTLS callee registered itself with its
workload token (so it is in the mesh), the plaintext one was registered by the admin
(so it is not). Reports, as medians over rounds: p50/p99 latency, the p99 the pair adds
over direct, and the pair's CPU (both proxies, user+sys) per request; then the
inbound listener's full and resumed TLS handshakes per second (openssl s_time with a
mesh certificate obtained through a CSR, as a proxy does).

  python3 scripts/mtls_bench.py --weft target/release/weft --rounds 5 --duration 10
"""
import argparse
import json
import os
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, what, proc=None, limit=15):
    deadline = time.time() + limit
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            sys.exit(f"{what} exited early (status {proc.returncode})")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{what} did not listen on {port} within {limit}s")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Run:
    def __init__(self, tmp):
        self.tmp = tmp
        self.procs = []

    def start(self, args, name, **kw):
        log = open(os.path.join(self.tmp, name + ".log"), "w")
        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kw)
        self.procs.append(p)
        return p

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weft", default="target/release/weft")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=10, help="seconds per load run")
    ap.add_argument("--rate", type=int, default=1000, help="requests/s (open loop)")
    ap.add_argument("--body", type=int, default=1024, help="response body bytes")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--plain-h2", action="store_true",
                    help="also a plaintext pair speaking HTTP/2 between the proxies (a DestinationRule with "
                         "h2UpgradePolicy: UPGRADE), to tell TLS's cost from HTTP/2's")
    a = ap.parse_args()
    weft = os.path.abspath(a.weft)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx):
        sys.exit("needs nginx (apt-get install nginx)")
    tmp = tempfile.mkdtemp(prefix="weft-mtls-bench-")
    run = Run(tmp)
    try:
        results = bench(a, weft, nginx, tmp, run)
    finally:
        run.stop()
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)


def bench(a, weft, nginx, tmp, run):
    # nginx: one worker, 1 KiB answers.
    np = free_port()
    body = "x" * a.body
    conf = os.path.join(tmp, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""worker_processes 1; daemon off; pid {tmp}/nginx.pid; error_log {tmp}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{np}; location / {{ default_type text/plain; return 200 "{body}"; }} }} }}
""")
    run.start([nginx, "-c", conf, "-p", tmp], "nginx")
    wait_port(np, "nginx")

    cpp = free_port()
    cpdir = os.path.join(tmp, "cp")
    run.start([weft, "control-plane", "--data-dir", cpdir, "--listen", f"127.0.0.1:{cpp}"], "control-plane")
    wait_port(cpp, "control plane")
    url = f"https://127.0.0.1:{cpp}"  # the API is HTTPS, verified with the mesh root
    admin = os.path.join(cpdir, "admin-token")
    root = os.path.join(cpdir, "ca", "root-cert.pem")
    env = dict(os.environ, WEFT_SERVER=url, WEFT_TOKEN_FILE=admin, WEFT_CA_FILE=root)

    def weft_cli(args, token=admin):
        e = dict(env, WEFT_TOKEN_FILE=token)
        return subprocess.run([weft] + args, env=e, check=True, capture_output=True, text=True).stdout.strip()

    def workload_token(sa):
        path = os.path.join(tmp, sa + ".token")
        with open(path, "w") as f:
            f.write(weft_cli(["token", "create", "--namespace", "default", "--service-account", sa]))
        return path

    # The two callees' sidecars, in front of the same nginx.
    sidecars = {}
    svcs = ["echo", "plain"] + (["plainh2"] if a.plain_h2 else [])
    for svc in svcs:
        tok = workload_token(svc)
        inbound, listen = free_port(), free_port()
        p = run.start([weft, "proxy", "--control-plane", url, "--ca-file", root, "--token-file", tok, "--node", svc, "--listen", f"127.0.0.1:{listen}",
                       "--inbound", f"127.0.0.1:{inbound}", "--app", f"127.0.0.1:{np}", "--service", svc], "sidecar-" + svc)
        wait_port(inbound, "sidecar " + svc, p)
        sidecars[svc] = (p, inbound, tok)
    # In the mesh: registered by its own workload. Not in the mesh: registered by the admin.
    weft_cli(["register", "--service", "echo", "--address", f"127.0.0.1:{sidecars['echo'][1]}"], token=sidecars["echo"][2])
    weft_cli(["register", "--service", "plain", "--address", f"127.0.0.1:{sidecars['plain'][1]}"])
    if a.plain_h2:
        weft_cli(["register", "--service", "plainh2", "--address", f"127.0.0.1:{sidecars['plainh2'][1]}"])
        dr = os.path.join(tmp, "h2.yaml")
        with open(dr, "w") as f:
            f.write("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: plainh2}\n"
                    "spec: {host: plainh2, trafficPolicy: {connectionPool: {http: {h2UpgradePolicy: UPGRADE}}}}\n")
        weft_cli(["apply", "-f", dr])
    client_tok = workload_token("client")
    cl = free_port()
    client = run.start([weft, "proxy", "--control-plane", url, "--ca-file", root, "--token-file", client_tok, "--node", "client", "--listen", f"127.0.0.1:{cl}",
                        "--service", "client", "--service-account", "client"], "client")
    wait_port(cl, "client proxy", client)
    for host in svcs:
        deadline = time.time() + 15
        while time.time() < deadline:
            r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-H", f"Host: {host}", f"http://127.0.0.1:{cl}/"],
                               capture_output=True, text=True)
            if r.stdout == "200":
                break
            time.sleep(0.1)
        else:
            sys.exit(f"the client proxy does not route {host}")

    targets = {
        "direct": (f"http://127.0.0.1:{np}/", None, []),
        "plain": (f"http://127.0.0.1:{cl}/", "plain", [client.pid, sidecars["plain"][0].pid]),
        "mtls": (f"http://127.0.0.1:{cl}/", "echo", [client.pid, sidecars["echo"][0].pid]),
    }
    if a.plain_h2:
        targets["plainh2"] = (f"http://127.0.0.1:{cl}/", "plainh2", [client.pid, sidecars["plainh2"][0].pid])
    rows = {k: [] for k in targets}
    for rnd in range(a.rounds):
        for name, (u, host, pids) in targets.items():
            cmd = [weft, "bench", u, "-q", str(a.rate), "-z", f"{a.duration}s", "-c", "32", "-o", "json"]
            if host:
                cmd += ["--host", host]
            before = sum(cpu_seconds(p) for p in pids)
            out = subprocess.run(cmd, capture_output=True, text=True)
            spent = sum(cpu_seconds(p) for p in pids) - before
            try:
                j = json.loads(out.stdout)
            except json.JSONDecodeError:
                sys.exit(f"weft bench: {out.stdout}\n{out.stderr}")
            n = max(j["requests"], 1)
            row = {"p50_us": j["latency_us"]["p50"], "p99_us": j["latency_us"]["p99"], "requests": j["requests"],
                   "ok": j.get("success_rate", 1.0), "cpu_us": spent * 1e6 / n if pids else 0.0}
            rows[name].append(row)
            print(f"round {rnd + 1} {name:6}: p50 {row['p50_us'] / 1000:.3f} ms  p99 {row['p99_us'] / 1000:.3f} ms  "
                  f"pair CPU {row['cpu_us']:.1f} us/request  ({j['requests']} requests)", flush=True)

    med = {k: {m: statistics.median(r[m] for r in v) for m in ["p50_us", "p99_us", "cpu_us"]} for k, v in rows.items()}
    print(f"\nmedians over {a.rounds} rounds at {a.rate} requests/s, {a.body}-byte answers:")
    for k, m in med.items():
        print(f"  {k:6}: p50 {m['p50_us'] / 1000:.3f} ms  p99 {m['p99_us'] / 1000:.3f} ms  pair CPU {m['cpu_us']:.1f} us/request")
    added = {k: (med[k]["p99_us"] - med["direct"]["p99_us"]) / 1000 for k in ["plain", "mtls"]}
    print(f"  added p99 over direct: plaintext pair {added['plain']:+.3f} ms, mTLS pair {added['mtls']:+.3f} ms")
    ratio = med["mtls"]["cpu_us"] / max(med["plain"]["cpu_us"], 1e-9)
    print(f"  CPU per request, mTLS pair / plaintext pair: {ratio:.2f}x")
    if a.plain_h2:
        print(f"  CPU per request, plaintext h2 pair / plaintext pair: {med['plainh2']['cpu_us'] / max(med['plain']['cpu_us'], 1e-9):.2f}x, "
              f"mTLS pair / plaintext h2 pair: {med['mtls']['cpu_us'] / max(med['plainh2']['cpu_us'], 1e-9):.2f}x")

    hs = handshakes(weft_cli, tmp, sidecars["echo"][1], cpdir, url)
    return {"medians": med, "added_p99_ms": added, "cpu_ratio_mtls_over_plain": ratio, "rounds": rows, "handshakes_per_s": hs}


def handshakes(weft_cli, tmp, inbound, cpdir, url):
    """Full and resumed mTLS handshakes/s of the inbound listener (openssl s_time, 5 s each)."""
    key, csr, cert = (os.path.join(tmp, f) for f in ["bench.key", "bench.csr", "bench.pem"])
    spiffe = "spiffe://cluster.local/ns/default/sa/bench"
    subprocess.run(["openssl", "ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", key], check=True)
    subprocess.run(["openssl", "req", "-new", "-key", key, "-subj", "/", "-addext", f"subjectAltName=URI:{spiffe}", "-out", csr],
                   check=True, capture_output=True)
    token = weft_cli(["token", "create", "--namespace", "default", "--service-account", "bench"])
    req = urllib.request.Request(f"{url}/v1/certificate",
                                 data=json.dumps({"csr": open(csr).read()}).encode(), headers={"authorization": f"Bearer {token}"})
    ctx = ssl.create_default_context(cafile=os.path.join(cpdir, "ca", "root-cert.pem")) if url.startswith("https") else None
    answer = json.load(urllib.request.urlopen(req, timeout=10, context=ctx))
    with open(cert, "w") as f:
        f.write(answer["cert_pem"] + answer["chain_pem"])
    root = os.path.join(cpdir, "ca", "root-cert.pem")
    out = {}
    for kind, flag in [("full", "-new"), ("resumed", "-reuse")]:
        r = subprocess.run(["openssl", "s_time", "-connect", f"127.0.0.1:{inbound}", "-cert", cert, "-key", key, "-CAfile", root,
                            flag, "-time", "5"], capture_output=True, text=True)
        m = re.findall(r"([\d.]+) connections/user sec", r.stdout)
        conns = re.findall(r"(\d+) connections in (\d+) real seconds", r.stdout)
        out[kind] = {"connections_per_user_sec": float(m[0]) if m else None,
                     "connections_per_real_sec": (int(conns[0][0]) / max(int(conns[0][1]), 1)) if conns else None}
        print(f"  inbound {kind} handshakes: {out[kind]['connections_per_real_sec']} per second (real), "
              f"{out[kind]['connections_per_user_sec']} per second of openssl's CPU", flush=True)
        if not m and not conns:
            print(r.stdout[-800:], r.stderr[-800:])
    return out

if __name__ == "__main__":
    main()
