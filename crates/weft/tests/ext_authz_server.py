"""An external authorizer as Istio's ext-authz sample behaves (HTTP): a request with
`x-ext-authz: allow` is allowed (200, `x-ext-authz-check-result: allowed`), anything
else is denied (403, with the sample's message). It also says which of the checked
request's headers it saw, so a test can tell that only the chosen ones were sent.
Prints `ready <port>` once listening."""

import http.server
import sys


class Check(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def handle_one(self):
        seen = ",".join(sorted(k.lower() for k in self.headers.keys()))
        allowed = self.headers.get("x-ext-authz") == "allow"
        body = b"" if allowed else b"denied by ext_authz for not found header `x-ext-authz: allow` in the request"
        if self.headers.get("x-ext-authz") == "huge":
            # A hostile answer: far past what the proxy reads of one.
            body = b"x" * (1 << 20)
        self.send_response(200 if allowed else 403)
        self.send_header("x-ext-authz-check-result", "allowed" if allowed else "denied")
        self.send_header("x-ext-authz-seen", seen)
        self.send_header("x-ext-authz-path", self.path)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = handle_one

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Check)
print("ready", server.server_address[1], flush=True)
server.serve_forever()
