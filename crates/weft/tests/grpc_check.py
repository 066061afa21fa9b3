#!/usr/bin/env python3
"""A real grpcio server and client with weft in between.

Starts a server on --port (raw-bytes methods, no protoc needed), then calls it through
the proxy at --proxy with authority `echo`: unary, server streaming, bidirectional
streaming, trailing metadata, and an error status. Exits 0 when every check passes.
"""
import argparse
import sys
from concurrent import futures

import grpc

SVC = "demo.Echo"


def unary(req, ctx):
    ctx.set_trailing_metadata((("x-trailer", "kept"),))
    return b"echo:" + req


def fail(req, ctx):
    ctx.abort(grpc.StatusCode.NOT_FOUND, "no such thing: " + req.decode())


def server_stream(req, ctx):
    n = int(req.decode())
    for i in range(n):
        yield f"part {i}".encode()


def bidi(it, ctx):
    for msg in it:
        yield b"re:" + msg


def serve(port):
    s = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    h = grpc.method_handlers_generic_handler(SVC, {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
    })
    s.add_generic_rpc_handlers((h,))
    s.add_insecure_port(f"127.0.0.1:{port}")
    s.start()
    return s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--proxy", required=True)
    a = ap.parse_args()
    srv = serve(a.port)
    ch = grpc.insecure_channel(a.proxy, options=[("grpc.default_authority", "echo")])
    grpc.channel_ready_future(ch).result(timeout=10)
    failures = []

    def check(name, cond, detail=""):
        print(("ok   " if cond else "FAIL ") + name + (f": {detail}" if detail and not cond else ""))
        if not cond:
            failures.append(name)

    resp, call = ch.unary_unary(f"/{SVC}/Unary").with_call(b"hello", timeout=5)
    check("unary", resp == b"echo:hello", resp)
    check("trailing metadata", ("x-trailer", "kept") in tuple(call.trailing_metadata() or ()), call.trailing_metadata())
    check("unary status OK", call.code() == grpc.StatusCode.OK, call.code())

    parts = list(ch.unary_stream(f"/{SVC}/ServerStream")(b"50", timeout=5))
    check("server streaming", parts == [f"part {i}".encode() for i in range(50)], len(parts))

    out = list(ch.stream_stream(f"/{SVC}/Bidi")(iter([b"a", b"b", b"c"] * 20), timeout=5))
    check("bidirectional streaming", out == [b"re:" + m for m in [b"a", b"b", b"c"] * 20], len(out))

    try:
        ch.unary_unary(f"/{SVC}/Fail")(b"widget", timeout=5)
        check("error status", False, "no error raised")
    except grpc.RpcError as e:
        check("error status", e.code() == grpc.StatusCode.NOT_FOUND and "no such thing: widget" in e.details(), (e.code(), e.details()))

    for i in range(100):
        if ch.unary_unary(f"/{SVC}/Unary")(str(i).encode(), timeout=5) != b"echo:" + str(i).encode():
            check("100 unary calls", False, i)
            break
    else:
        check("100 unary calls", True)

    ch.close()
    srv.stop(0)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
