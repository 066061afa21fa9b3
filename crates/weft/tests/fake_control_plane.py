#!/usr/bin/env python3
"""A fake control plane speaking weft's control protocol (weft-api's JSON messages):
it serves one good mesh, then a mesh that does not compile, then a document that does
not load, then bytes that are no answer at all; and logs every watch request that
carries an outcome (ACK/NACK) and every POST /v1/ack, one JSON body a line.

usage: fake_control_plane.py PORT BACKEND_PORT LOG_FILE
"""
import http.server
import json
import sys
import time

PORT, BACKEND, LOG = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]

GOOD = {
    "ServiceEntry/default/reviews": {
        "apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry", "metadata": {"name": "reviews"},
        "spec": {"hosts": ["reviews"], "resolution": "STATIC", "ports": [{"number": 80, "name": "http", "protocol": "HTTP"}],
                 "endpoints": [{"address": "127.0.0.1", "ports": {"http": BACKEND}}]},
    }
}
INVALID = {
    "VirtualService/default/broken": {
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService", "metadata": {"name": "broken"},
        "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}, "weight": -1}]}]},
    }
}
BAD_DOC = {
    "ServiceEntry/default/odd": {
        "apiVersion": "networking.istio.io/v1", "kind": "ServiceEntry", "metadata": {"name": "odd"},
        "spec": {"hosts": "not a list"},
    }
}
GARBAGE = b"\x00\xff\xfe not json: [ { ]"
garbage_sent = 0


def answer(nonce, revision, kind, docs):
    return json.dumps({"nonce": nonce, "revision": revision, "mesh": kind, "documents": docs, "removed": []})


class H(http.server.BaseHTTPRequestHandler):
    def send(self, code, body):
        global garbage_sent
        if isinstance(body, str):
            body = body.encode()
        self.send_response(code)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        global garbage_sent
        raw = self.rfile.read(int(self.headers.get("content-length", "0")))
        req = json.loads(raw or b"{}")
        if self.path == "/v1/ack" or "last" in req:
            with open(LOG, "a") as f:
                f.write(json.dumps({"path": self.path, **req}) + "\n")
        if self.path == "/v1/mesh":
            self.send(200, answer(1, 1, "full", GOOD))
        elif self.path == "/v1/watch":
            since = req.get("since", 0)
            if since < 2:
                self.send(200, answer(2, 2, "delta", INVALID))
            elif since < 3:
                self.send(200, answer(3, 3, "delta", BAD_DOC))
            elif garbage_sent < 2:
                garbage_sent += 1
                self.send(200, GARBAGE)
            else:
                time.sleep(0.5)
                self.send(304, b"")
        else:
            self.send(200, b"{}")

    def log_message(self, *a):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", PORT), H).serve_forever()
