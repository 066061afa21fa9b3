#!/usr/bin/env python3
"""A fake control plane that serves one good mesh, then a mesh that does not
compile, then bytes that are not YAML, and logs every ACK/NACK a proxy sends (on its
next watch, or posted to /v1/ack).

usage: fake_control_plane.py PORT BACKEND_PORT LOG_FILE
"""
import http.server
import sys
import time
import urllib.parse

PORT, BACKEND, LOG = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]

GOOD = (
    '---\n{"apiVersion":"networking.istio.io/v1","kind":"ServiceEntry","metadata":{"name":"reviews"},'
    '"spec":{"hosts":["reviews"],"resolution":"STATIC","ports":[{"number":80,"name":"http","protocol":"HTTP"}],'
    '"endpoints":[{"address":"127.0.0.1","ports":{"http":%d}}]}}\n' % BACKEND
)
INVALID = GOOD + (
    '---\n{"apiVersion":"networking.istio.io/v1","kind":"VirtualService","metadata":{"name":"broken"},'
    '"spec":{"hosts":["reviews"],"http":[{"route":[{"destination":{"host":"reviews"},"weight":-1}]}]}}\n'
)
GARBAGE = b"\x00\xff\xfe not yaml: [ { ]"


class H(http.server.BaseHTTPRequestHandler):
    def send(self, code, body, rev=None):
        if isinstance(body, str):
            body = body.encode()
        self.send_response(code)
        if rev is not None:
            self.send_header("x-weft-revision", str(rev))
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        u = urllib.parse.urlparse(self.path)
        q = urllib.parse.parse_qs(u.query)
        if u.path == "/v1/mesh":
            self.send(200, GOOD, 1)
        elif u.path == "/v1/watch":
            if "ack" in q or "nack" in q:
                with open(LOG, "a") as f:
                    f.write(self.path + "\n")
            since = int(q.get("since", ["0"])[0])
            if since < 2:
                self.send(200, INVALID, 2)
            elif since < 3:
                self.send(200, GARBAGE, 3)
            else:
                time.sleep(0.5)
                self.send(304, b"")
        else:
            self.send(404, b"")

    def do_POST(self):
        with open(LOG, "a") as f:
            f.write(self.path + "\n")
        self.send(200, b"{}")

    def log_message(self, *a):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", PORT), H).serve_forever()
