#!/usr/bin/env python3
"""An origin for the Compression and ResponseCache end-to-end tests (tests/filters/).

Every response is shaped by the request's query:
  size=N        body length in bytes (default 2000); the body is text made from the path
  ct=TYPE       Content-Type (default text/plain; "none" leaves it out)
  cc=VALUE      Cache-Control
  etag=TAG      ETag "TAG"; a request whose If-None-Match names it gets 304
  vary=NAME     Vary: NAME, and the body starts with the request's value of NAME
  ce=CODING     Content-Encoding (the body is sent as it is)
  status=N      the status (204 and 304 without a body)
  delay_ms=N    wait before the response head
  chunks=K      send the body in K chunks (chunked, unless cl=1: then Content-Length)
  gap_ms=N      wait between chunks
  hold=1        hold the last chunk until GET /_release/PATH (at most 10 s)
A request with "x-uncounted: 1" is answered but not counted. Control paths (not counted): GET /_hits/PATH (requests seen for PATH), GET /_last/PATH
(the last request's headers as JSON), GET /_release/PATH. Prints "listening on ADDR".
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

LOCK = threading.Lock()
HITS = {}
LAST = {}
RELEASE = {}


def release_event(path):
    with LOCK:
        return RELEASE.setdefault(path, threading.Event())


def body_for(path, size, prefix=b""):
    line = ("%s: the quick brown fox jumps over the lazy dog %s\n" % (path, "0123456789" * 3)).encode()
    out = bytearray(prefix)
    i = 0
    while len(out) < size:
        out += b"%06d " % i + line
        i += 1
    return bytes(out[:size])


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def control(self, path):
        for name in ("/_hits", "/_last", "/_release"):
            if path.startswith(name + "/"):
                target = path[len(name):]
                with LOCK:
                    if name == "/_hits":
                        out = str(HITS.get(target, 0)).encode()
                    elif name == "/_last":
                        out = json.dumps(LAST.get(target, {})).encode()
                    else:
                        out = b"released"
                if name == "/_release":
                    release_event(target).set()
                self.send_response(200)
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)
                return True
        return False

    def do_HEAD(self):
        self.serve(head=True)

    def do_GET(self):
        self.serve(head=False)

    def serve(self, head):
        url = urlsplit(self.path)
        path = url.path
        if self.control(path):
            return
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        if self.headers.get("x-uncounted") != "1":
            with LOCK:
                HITS[path] = HITS.get(path, 0) + 1
                LAST[path] = {k.lower(): v for k, v in self.headers.items()}
        if "delay_ms" in q:
            time.sleep(int(q["delay_ms"]) / 1000)
        status = int(q.get("status", "200"))
        prefix = b""
        if "vary" in q:
            prefix = ("variant=%s\n" % self.headers.get(q["vary"], "-")).encode()
        body = body_for(path, int(q.get("size", "2000")), prefix)
        etag = q.get("etag")
        if etag is not None and ('"%s"' % etag) in self.headers.get("If-None-Match", ""):
            status = 304
        headers = []
        if q.get("ct", "text/plain") != "none":
            headers.append(("Content-Type", q.get("ct", "text/plain")))
        for key, name in (("cc", "Cache-Control"), ("vary", "Vary"), ("ce", "Content-Encoding")):
            if key in q:
                headers.append((name, q[key]))
        if etag is not None:
            headers.append(("ETag", '"%s"' % etag))
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        if status in (204, 304):
            self.end_headers()
            return
        chunks = int(q.get("chunks", "1"))
        if chunks <= 1:
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)
            return
        cl = q.get("cl") == "1"
        if cl:
            self.send_header("Content-Length", str(len(body)))
        else:
            self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if head:
            if not cl:
                self.wfile.write(b"0\r\n\r\n")
            return
        gap = int(q.get("gap_ms", "0")) / 1000
        step = (len(body) + chunks - 1) // chunks
        pieces = [body[i:i + step] for i in range(0, len(body), step)]
        try:
            for i, piece in enumerate(pieces):
                if i > 0 and gap:
                    time.sleep(gap)
                if i == len(pieces) - 1 and q.get("hold") == "1":
                    release_event(path).wait(10)
                if cl:
                    self.wfile.write(piece)
                else:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.flush()
            if not cl:
                self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print("origin listening on 127.0.0.1:%d" % server.server_address[1], file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
