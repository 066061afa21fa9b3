#!/usr/bin/env python3
"""Real grpcio servers answering grpc.health.v1.Health/Check (raw bytes, no protoc).

One server per --port; each answers for --service with the status written in
STATUS_DIR/<port> (SERVING or NOT_SERVING; read on every call), and NOT_FOUND for
other services. Prints "ready" once listening; runs until killed.
"""
import argparse
import os
import sys
import time
from concurrent import futures

import grpc

STATUS = {"SERVING": b"\x08\x01", "NOT_SERVING": b"\x08\x02"}


def handler(port, service, status_dir):
    def check(req, ctx):
        # HealthCheckRequest { string service = 1 }: b"" or 0x0a len bytes.
        asked = req[2:].decode() if req else ""
        if asked != service:
            ctx.abort(grpc.StatusCode.NOT_FOUND, "unknown service " + asked)
        with open(os.path.join(status_dir, str(port))) as f:
            return STATUS.get(f.read().strip(), b"\x08\x02")

    return grpc.method_handlers_generic_handler(
        "grpc.health.v1.Health", {"Check": grpc.unary_unary_rpc_method_handler(check)}
    )


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, action="append", required=True)
    ap.add_argument("--service", default="")
    ap.add_argument("--status-dir", required=True)
    a = ap.parse_args()
    servers = []
    for port in a.port:
        s = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        s.add_generic_rpc_handlers((handler(port, a.service, a.status_dir),))
        s.add_insecure_port(f"127.0.0.1:{port}")
        s.start()
        servers.append(s)
    print("ready", flush=True)
    deadline = time.time() + 120
    while time.time() < deadline:
        time.sleep(0.5)
    sys.exit(0)


if __name__ == "__main__":
    main()
