#!/usr/bin/env python3
"""How exactly a RateLimit token bucket admits its rate under a heavier load.

`weft proxy` in front of one `weft backend`, a RateLimit of --limit requests/s
(tokenBucket: a tenth of a second's tokens per fill, every 100 ms, burst the same), and
`weft bench` sending --rate requests/s (open loop) for --duration seconds. Prints the
admitted (200) rate against the limit and the refused (429) count.

Needs a release build (`cargo build --release`).
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chaos_kill import WEFT, free_port, mesh, wait_port  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=500)
    ap.add_argument("--rate", type=int, default=2000)
    ap.add_argument("--duration", type=int, default=10)
    a = ap.parse_args()
    port, listen = free_port(), free_port()
    per_fill = max(1, a.limit // 10)
    config = mesh([port], "{}", f"""---
apiVersion: policy.weft.dev/v1alpha1
kind: RateLimit
metadata: {{name: svc-limit}}
spec:
  host: svc
  tokenBucket: {{maxTokens: {per_fill}, tokensPerFill: {per_fill}, fillInterval: 100ms}}
""")
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "mesh.yaml")
        with open(path, "w") as f:
            f.write(config)
        procs = [subprocess.Popen([WEFT, "backend", "--listen", f"127.0.0.1:{port}"], stderr=subprocess.DEVNULL)]
        wait_port(port)
        procs.append(subprocess.Popen([WEFT, "proxy", "--config", path, "--listen", f"127.0.0.1:{listen}"], stderr=subprocess.DEVNULL))
        wait_port(listen)
        try:
            out = subprocess.run([WEFT, "bench", f"http://127.0.0.1:{listen}/", "--host", "svc", "-q", str(a.rate), "-c", "50", "-z", f"{a.duration}s", "-o", "json"],
                                 check=True, capture_output=True, text=True).stdout
        finally:
            for p in procs:
                p.terminate()
    r = json.loads(out)
    ok, refused = r["status_codes"].get("200", 0), r["status_codes"].get("429", 0)
    seconds = r["requests"] / r["rps"] if r["rps"] else a.duration
    admitted = ok / seconds
    print(f"limit {a.limit}/s, offered {r['rps']:.0f}/s for {seconds:.2f} s: admitted {ok:,} ({admitted:.1f}/s, {100 * (admitted / a.limit - 1):+.2f} % of the limit), refused {refused:,} with 429")
    return 0


if __name__ == "__main__":
    sys.exit(main())
