#!/usr/bin/env python3
"""What authorization costs a sidecar, side by side in one run (issue 14's benchmark).

Three sidecars (`weft proxy --inbound`, plaintext, config from files) in front of one
nginx (1 KiB answers), each loaded in turn by `weft bench` (closed loop, 32 connections),
interleaved round by round so that machine drift hits all alike:

  none    no policy
  authz   100 AuthorizationPolicies of 10 rules each (exact principals, methods, paths,
          a header condition), and one ALLOW that lets the request in
  jwt     a RequestAuthentication (inline JWKS, RS256) and an AuthorizationPolicy
          requiring a request principal: every request's token is verified

Every request carries the same valid RS256 token (signed here with openssl), so the
three differ only in what the sidecar does with it. Reports, as medians over rounds:
requests/s, p99, and the sidecar's CPU (user+sys) per request.
"""

import argparse
import base64
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mtls_bench import Run, cpu_seconds, free_port, wait_port  # noqa: E402


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def rsa_key_and_token(tmp):
    """An RSA key made by openssl, its JWKS, and an RS256 token signed with it."""
    key = os.path.join(tmp, "jwt-key.pem")
    subprocess.run(["openssl", "genrsa", "-out", key, "2048"], check=True, capture_output=True)
    modulus = subprocess.run(["openssl", "rsa", "-in", key, "-noout", "-modulus"], check=True, capture_output=True, text=True).stdout
    n = bytes.fromhex(modulus.strip().split("=", 1)[1])
    jwks = json.dumps({"keys": [{"kty": "RSA", "kid": "bench", "alg": "RS256", "n": b64url(n), "e": "AQAB"}]})
    header = b64url(json.dumps({"alg": "RS256", "kid": "bench", "typ": "JWT"}).encode())
    claims = {"iss": "testing@secure.istio.io", "sub": "testing@secure.istio.io", "exp": int(time.time()) + 86400}
    payload = b64url(json.dumps(claims).encode())
    signing_input = f"{header}.{payload}".encode()
    sig = subprocess.run(["openssl", "dgst", "-sha256", "-sign", key], input=signing_input, check=True, capture_output=True).stdout
    return jwks, f"{header}.{payload}.{b64url(sig)}"


def policies_100x10():
    docs = []
    for p in range(100):
        action = "DENY" if p % 2 == 0 else "ALLOW"
        rules = []
        for r in range(10):
            rules.append({
                "from": [{"source": {"principals": [f"cluster.local/ns/ns{p}/sa/sa{r}"]}}],
                "to": [{"operation": {"methods": ["GET", "POST"], "paths": [f"/api/v{r}/*", f"/p{p}/{{*}}/items"]}}],
                "when": [{"key": "request.headers[x-tenant]", "values": [f"tenant-{p}-{r}"]}],
            })
        docs.append({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                     "metadata": {"name": f"p{p}", "namespace": "default"}, "spec": {"action": action, "rules": rules}})
    docs.append({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                 "metadata": {"name": "let-in", "namespace": "default"},
                 "spec": {"rules": [{"to": [{"operation": {"methods": ["GET"]}}]}]}})
    return "".join("---\n" + json.dumps(d) + "\n" for d in docs)


def jwt_policies(jwks):
    ra = {"apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
          "metadata": {"name": "jwt", "namespace": "default"},
          "spec": {"jwtRules": [{"issuer": "testing@secure.istio.io", "jwks": jwks}]}}
    ap = {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
          "metadata": {"name": "require-jwt", "namespace": "default"},
          "spec": {"rules": [{"from": [{"source": {"requestPrincipals": ["*"]}}]}]}}
    return "---\n" + json.dumps(ra) + "\n---\n" + json.dumps(ap) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weft", default="target/release/weft")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=int, default=5, help="seconds per load run")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args()
    weft = os.path.abspath(a.weft)
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    if not os.path.exists(nginx):
        sys.exit("needs nginx (apt-get install nginx)")
    tmp = tempfile.mkdtemp(prefix="weft-authz-bench-")
    run = Run(tmp)
    try:
        results = bench(a, weft, nginx, tmp, run)
    finally:
        run.stop()
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)


def bench(a, weft, nginx, tmp, run):
    np = free_port()
    conf = os.path.join(tmp, "nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""worker_processes 1; daemon off; pid {tmp}/nginx.pid; error_log {tmp}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{ access_log off; keepalive_requests 1000000;
  server {{ listen 127.0.0.1:{np}; location / {{ default_type text/plain; return 200 "{'x' * 1024}"; }} }} }}
""")
    run.start([nginx, "-c", conf, "-p", tmp], "nginx")
    wait_port(np, "nginx")
    jwks, token = rsa_key_and_token(tmp)
    configs = {"none": "", "authz": policies_100x10(), "jwt": jwt_policies(jwks)}
    sidecars = {}
    for name, text in configs.items():
        path = os.path.join(tmp, name + ".yaml")
        with open(path, "w") as f:
            f.write(text)
        inbound, listen = free_port(), free_port()
        p = run.start([weft, "proxy", "--config", path, "--listen", f"127.0.0.1:{listen}", "--inbound", f"127.0.0.1:{inbound}",
                       "--app", f"127.0.0.1:{np}", "--service", "httpbin"], "sidecar-" + name)
        wait_port(inbound, "sidecar " + name, p)
        sidecars[name] = (p, inbound)
    rows = {k: [] for k in sidecars}
    for rnd in range(a.rounds):
        for name, (p, inbound) in sidecars.items():
            cmd = [weft, "bench", f"http://127.0.0.1:{inbound}/api/v1/x", "-c", "32", "-z", f"{a.duration}s", "-o", "json",
                   "-H", f"authorization: Bearer {token}", "-H", "x-tenant: someone"]
            before = cpu_seconds(p.pid)
            out = subprocess.run(cmd, capture_output=True, text=True)
            spent = cpu_seconds(p.pid) - before
            try:
                j = json.loads(out.stdout)
            except json.JSONDecodeError:
                sys.exit(f"weft bench: {out.stdout}\n{out.stderr}")
            n = max(j["requests"], 1)
            codes = j.get("status_codes") or j.get("codes")
            row = {"rps": j["requests"] / a.duration, "p99_us": j["latency_us"]["p99"], "cpu_us": spent * 1e6 / n, "codes": codes}
            rows[name].append(row)
            print(f"round {rnd + 1} {name:5}: {row['rps']:8.0f} requests/s  p99 {row['p99_us'] / 1000:.3f} ms  "
                  f"sidecar CPU {row['cpu_us']:.1f} us/request  codes {codes}", flush=True)
    med = {k: {m: statistics.median(r[m] for r in v) for m in ["rps", "p99_us", "cpu_us"]} for k, v in rows.items()}
    print(f"\nmedians over {a.rounds} rounds (closed loop, 32 connections, 1 KiB answers):")
    for k, m in med.items():
        print(f"  {k:5}: {m['rps']:8.0f} requests/s  p99 {m['p99_us'] / 1000:.3f} ms  sidecar CPU {m['cpu_us']:.1f} us/request  "
              f"(rps {m['rps'] / med['none']['rps']:.2f}x, CPU {m['cpu_us'] / med['none']['cpu_us']:.2f}x of none)")
    return {"medians": med, "rounds": rows}


if __name__ == "__main__":
    main()
