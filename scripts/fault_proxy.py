#!/usr/bin/env python3
"""Fault-injecting reverse proxy in front of a test registry (stdlib only).

Usage: fault_proxy.py --listen-port P --upstream HOST:PORT [--listen-host 127.0.0.1] [--log FILE]
                      [--tls-cert PEM --tls-key PEM] [--arm JSON ...]

With --tls-cert and --tls-key it serves HTTPS (the upstream stays plain HTTP). --arm arms a fault
at start-up (the same JSON as POST /_fault), for a TLS proxy whose control API a test cannot
easily reach.

Every request is forwarded to the upstream registry unchanged (method, path, query, headers, body;
chunked request bodies are streamed through re-chunked) and the response is streamed back in chunks.
The client's Host header is forwarded, so the registry builds upload Locations that point at the proxy;
an absolute Location that still names the upstream is rewritten to the proxy as well.

Control API on the same port (paths a registry never serves):

  POST /_fault        arm a fault; JSON body:
      {"status": 429, "retryAfter": "1", "count": 2, "pathContains": "/blobs/"}
          the next `count` requests whose path contains `pathContains` are answered by the proxy
          itself with `status`, a `Retry-After: retryAfter` header (none when retryAfter is null or
          absent) and a registry error body {"errors":[{"code": ..., "message": ...}]}.
          Optional: "code" (error code; default from the status), "method" (only that method).
      {"mode": "corrupt", "pathContains": "...", "count": N}
          forwards the request, then flips one byte in the middle of the response body
          (Content-Length unchanged): a digest mismatch for the client.
      {"mode": "truncate", "pathContains": "...", "count": N}
          forwards the request, sends the full Content-Length header but only the first half of the
          body, then closes the connection.
      {"mode": "respond", "pathContains": "...", "count": N, "status": 200,
       "headers": {"Location": "http://{proxy}{path}"}, "bodyBytes": 1073741824, "announce": true,
       "trickleSeconds": 20}
          the proxy answers itself: `status`, `headers` (in values "{proxy}" is this proxy's own
          address as the client named it, "{path}" the request's path and query), then
          `bodyBytes` bytes of "x" (null: endless), announced by Content-Length when `announce`
          (else delimited by the close); with `trickleSeconds`, one byte per that many seconds.
          Hostile registries: floods, trickles, redirect loops, bearer challenges, huge tokens.
      {"mode": "no-range", "pathContains": "...", "count": N}
          forwards a request that has a Range header without it, so the registry answers 200 with
          the whole body: a proxy or storage backend that does not serve ranges. Only requests
          with a Range header use it up.
      corrupt and truncate only fire on responses that have a body (not HEAD, not empty), so a HEAD
      before a GET does not use them up. Faults are checked in the order they were armed; the first
      live one that matches fires. The response is the armed fault as JSON with an "id".
  POST /_link         emulate a network link for every proxied request until reset; JSON body:
      {"bytesPerSecond": 12500000, "latencyMs": 10}
          response bodies share one link of that bandwidth (first come, first served), and each
          request waits `latencyMs` (one round trip) before it is forwarded. null or 0: no limit.
          Benchmarks use it to compare what a scan costs over a real link, not only on loopback.
  GET  /_link         the link in effect.
  POST /_fault/reset  clears every fault, the link and the request log.
  GET  /_fault/log    JSON list of {"t", "method", "path", "status", "fault"} for every proxied or
                      faulted request, in order ("fault" is null or the mode that fired:
                      "status", "corrupt", "truncate", "no-range").
  GET  /_fault        JSON list of the faults still armed.
"""

import argparse
import http.client
import http.server
import json
import socket
import ssl
import sys
import threading
import time
import urllib.parse

CHUNK = 64 * 1024

HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "trailers",
    "transfer-encoding",
    "upgrade",
}

ERROR_CODES = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "DENIED",
    404: "NOT_FOUND",
    429: "TOOMANYREQUESTS",
    500: "UNKNOWN",
    502: "UNAVAILABLE",
    503: "UNAVAILABLE",
    504: "UNAVAILABLE",
}


class State:
    """Armed faults and the request log, shared by all handler threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.faults = []
        self.log = []
        self.next_id = 1
        self.link = {"bytesPerSecond": None, "latencyMs": 0}
        # When the emulated link is next free (time.monotonic()).
        self.link_free_at = 0.0

    def arm(self, spec):
        mode = spec.get("mode", "status")
        if mode not in ("status", "corrupt", "truncate", "respond", "no-range"):
            raise ValueError("mode must be status, corrupt, truncate, respond or no-range")
        fault = {
            "mode": mode,
            "count": int(spec.get("count", 1)),
            "pathContains": str(spec.get("pathContains", "")),
            "method": spec.get("method"),
        }
        if mode == "status":
            fault["status"] = int(spec.get("status", 429))
            retry_after = spec.get("retryAfter")
            fault["retryAfter"] = None if retry_after is None else str(retry_after)
            fault["code"] = spec.get("code") or ERROR_CODES.get(fault["status"], "UNKNOWN")
        if mode == "respond":
            fault["status"] = int(spec.get("status", 200))
            fault["headers"] = {str(k): str(v) for k, v in (spec.get("headers") or {}).items()}
            body_bytes = spec.get("bodyBytes", 0)
            fault["bodyBytes"] = None if body_bytes is None else int(body_bytes)
            fault["announce"] = bool(spec.get("announce", True))
            trickle = spec.get("trickleSeconds")
            fault["trickleSeconds"] = None if trickle is None else float(trickle)
        with self.lock:
            fault["id"] = self.next_id
            self.next_id += 1
            self.faults.append(fault)
        return fault

    def reset(self):
        with self.lock:
            self.faults = []
            self.log = []
            self.link = {"bytesPerSecond": None, "latencyMs": 0}

    def set_link(self, spec):
        rate = spec.get("bytesPerSecond")
        latency = spec.get("latencyMs") or 0
        link = {
            "bytesPerSecond": None if not rate else float(rate),
            "latencyMs": float(latency),
        }
        if (link["bytesPerSecond"] or 1) <= 0 or link["latencyMs"] < 0:
            raise ValueError("bytesPerSecond and latencyMs must not be negative")
        with self.lock:
            self.link = link
        return link

    def latency(self):
        """Sleeps one round trip of the emulated link."""
        with self.lock:
            latency = self.link["latencyMs"]
        if latency:
            time.sleep(latency / 1000.0)

    def transmit(self, n):
        """Sleeps until `n` bytes have crossed the emulated link, shared by every response."""
        with self.lock:
            rate = self.link["bytesPerSecond"]
            if not rate:
                return
            # Up to 20 ms behind is caught up (sleeps overshoot; the link itself never idles).
            start = max(time.monotonic() - 0.02, self.link_free_at)
            self.link_free_at = done = start + n / rate
        delay = done - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def take(self, method, path, modes):
        """Use up one shot of the first live fault of one of `modes` matching this request."""
        with self.lock:
            for fault in self.faults:
                if fault["count"] <= 0 or fault["mode"] not in modes:
                    continue
                if fault["pathContains"] not in path:
                    continue
                if fault["method"] and fault["method"].upper() != method:
                    continue
                fault["count"] -= 1
                return dict(fault)
        return None

    def record(self, method, path, status, fault):
        with self.lock:
            self.log.append(
                {"t": time.time(), "method": method, "path": path, "status": status, "fault": fault}
            )

    def snapshot(self):
        with self.lock:
            return [dict(entry) for entry in self.log], [dict(f) for f in self.faults if f["count"] > 0]


class ProxyHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "imagebloat-fault-proxy"
    # Set on the class by main().
    state = None
    upstream = None
    log_file = None

    # ---- logging -------------------------------------------------------------------------------

    def log_message(self, fmt, *args):
        if self.log_file is not None:
            line = "%s %s %s\n" % (
                time.strftime("%Y-%m-%dT%H:%M:%S"),
                self.address_string(),
                fmt % args,
            )
            with self.state.lock:
                self.log_file.write(line)
                self.log_file.flush()

    # ---- dispatch ------------------------------------------------------------------------------

    def do_GET(self):
        self.dispatch()

    def do_HEAD(self):
        self.dispatch()

    def do_POST(self):
        self.dispatch()

    def do_PUT(self):
        self.dispatch()

    def do_PATCH(self):
        self.dispatch()

    def do_DELETE(self):
        self.dispatch()

    def do_OPTIONS(self):
        self.dispatch()

    def dispatch(self):
        path_only = urllib.parse.urlsplit(self.path).path
        if path_only in ("/_fault", "/_link") or path_only.startswith("/_fault/"):
            self.control(path_only)
        else:
            self.proxy()

    # ---- request bodies ------------------------------------------------------------------------

    def request_body_chunks(self):
        """Yields the request body in pieces (Content-Length or chunked), or None when there is none."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self.read_chunked()
        length = int(self.headers.get("Content-Length") or 0)
        if length <= 0:
            return None
        return self.read_exact(length)

    def read_exact(self, length):
        remaining = length
        while remaining > 0:
            data = self.rfile.read(min(CHUNK, remaining))
            if not data:
                raise ConnectionError("client closed the connection inside the request body")
            remaining -= len(data)
            yield data

    def read_chunked(self):
        while True:
            size_line = self.rfile.readline(65537)
            if not size_line:
                raise ConnectionError("client closed the connection inside a chunked body")
            size = int(size_line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                # Trailers, up to the empty line.
                while self.rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                    pass
                return
            yield from self.read_exact(size)
            self.rfile.readline(65537)  # CRLF after the chunk

    def drain_request_body(self):
        body = self.request_body_chunks()
        if body is not None:
            for _ in body:
                pass

    # ---- control API ---------------------------------------------------------------------------

    def send_json(self, status, obj, extra_headers=()):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in extra_headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def control(self, path):
        body = b"".join(self.request_body_chunks() or [])
        if self.command == "POST" and path == "/_fault":
            try:
                spec = json.loads(body or b"{}")
                if not isinstance(spec, dict):
                    raise ValueError("the fault must be a JSON object")
                fault = self.state.arm(spec)
            except (ValueError, TypeError) as err:
                self.send_json(400, {"error": str(err)})
                return
            self.send_json(200, fault)
        elif self.command == "POST" and path == "/_link":
            try:
                spec = json.loads(body or b"{}")
                if not isinstance(spec, dict):
                    raise ValueError("the link must be a JSON object")
                link = self.state.set_link(spec)
            except (ValueError, TypeError) as err:
                self.send_json(400, {"error": str(err)})
                return
            self.send_json(200, link)
        elif self.command == "GET" and path == "/_link":
            with self.state.lock:
                link = dict(self.state.link)
            self.send_json(200, link)
        elif self.command == "POST" and path == "/_fault/reset":
            self.state.reset()
            self.send_json(200, {"reset": True})
        elif self.command == "GET" and path == "/_fault/log":
            log, _ = self.state.snapshot()
            self.send_json(200, log)
        elif self.command == "GET" and path == "/_fault":
            _, faults = self.state.snapshot()
            self.send_json(200, faults)
        else:
            self.send_json(404, {"error": "unknown control request %s %s" % (self.command, path)})

    # ---- proxying ------------------------------------------------------------------------------

    def proxy(self):
        method = self.command
        fault = self.state.take(method, self.path, ("respond",))
        if fault is not None:
            self.drain_request_body()
            self.state.record(method, self.path, fault["status"], "respond")
            self.respond(method, fault)
            return
        fault = self.state.take(method, self.path, ("status",))
        if fault is not None:
            self.drain_request_body()
            status = fault["status"]
            message = "fault injected by the test proxy (status %d)" % status
            headers = []
            if fault["retryAfter"] is not None:
                headers.append(("Retry-After", fault["retryAfter"]))
            self.send_json(
                status,
                {"errors": [{"code": fault["code"], "message": message, "detail": None}]},
                headers,
            )
            self.state.record(method, self.path, status, "status")
            return

        self.state.latency()
        strip_range = self.headers.get("Range") is not None and (
            self.state.take(method, self.path, ("no-range",)) is not None
        )
        # A list, not a dict: repeated headers (clients send several Accept lines) must all pass.
        headers = []
        for name, value in self.headers.items():
            # The proxy answers Expect: 100-continue itself (BaseHTTPRequestHandler does).
            if name.lower() in HOP_BY_HOP or name.lower() in ("content-length", "expect"):
                continue
            if strip_range and name.lower() == "range":
                continue
            headers.append((name, value))
        chunked_in = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        body = self.request_body_chunks()
        if chunked_in:
            headers.append(("Transfer-Encoding", "chunked"))
        elif self.headers.get("Content-Length") is not None:
            headers.append(("Content-Length", self.headers["Content-Length"].strip()))
        if self.headers.get("Host") is None:
            headers.append(("Host", self.upstream))

        upstream = http.client.HTTPConnection(self.upstream, timeout=300)
        try:
            try:
                upstream.putrequest(method, self.path, skip_host=True, skip_accept_encoding=True)
                for name, value in headers:
                    upstream.putheader(name, value)
                upstream.endheaders()
                if body is not None:
                    for piece in body:
                        if chunked_in:
                            upstream.send(b"%x\r\n%s\r\n" % (len(piece), piece))
                        else:
                            upstream.send(piece)
                    if chunked_in:
                        upstream.send(b"0\r\n\r\n")
                response = upstream.getresponse()
            except (OSError, http.client.HTTPException) as err:
                self.close_connection = True
                self.send_json(502, {"errors": [{"code": "UNAVAILABLE", "message": str(err)}]})
                self.state.record(method, self.path, 502, None)
                return
            self.relay(method, response, "no-range" if strip_range else None)
        finally:
            upstream.close()

    def respond(self, method, fault):
        """Answers with the fault's status, headers and (possibly endless or trickled) body."""
        proxy = self.headers.get("Host") or "%s:%d" % self.server.server_address[:2]
        self.send_response(fault["status"])
        for name, value in fault["headers"].items():
            self.send_header(name, value.replace("{proxy}", proxy).replace("{path}", self.path))
        total = fault["bodyBytes"]
        has_body = method != "HEAD" and total != 0
        if total is not None and (fault["announce"] or not has_body):
            self.send_header("Content-Length", str(total if has_body else 0))
        if has_body and (total is None or not fault["announce"]):
            self.close_connection = True
            self.send_header("Connection", "close")
        self.end_headers()
        if not has_body:
            return
        block = b"x" * CHUNK
        sent = 0
        try:
            while total is None or sent < total:
                if fault["trickleSeconds"] is not None:
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    sent += 1
                    time.sleep(fault["trickleSeconds"])
                    continue
                piece = block if total is None else block[: min(CHUNK, total - sent)]
                self.wfile.write(piece)
                sent += len(piece)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            self.close_connection = True

    def relay(self, method, response, forwarded_fault=None):
        status = response.status
        length_header = response.getheader("Content-Length")
        has_body = method != "HEAD" and status not in (204, 304) and not (100 <= status < 200)
        known_length = int(length_header) if length_header is not None else None

        fault = None
        if has_body and known_length != 0:
            fault = self.state.take(method, self.path, ("corrupt", "truncate"))

        body = None
        if has_body and known_length is None and fault is not None:
            # Unknown length (chunked upstream): read it whole so the middle is known.
            body = response.read()
            known_length = len(body)

        self.send_response(status)
        for name, value in response.getheaders():
            lower = name.lower()
            # Content-Length is set below; Date and Server come from send_response.
            if lower in HOP_BY_HOP or lower in ("content-length", "date", "server"):
                continue
            if lower == "location":
                value = self.rewrite_location(value)
            self.send_header(name, value)
        chunked_out = has_body and known_length is None
        if chunked_out:
            self.send_header("Transfer-Encoding", "chunked")
        elif length_header is not None or body is not None:
            self.send_header("Content-Length", str(known_length))
        elif has_body:
            self.send_header("Content-Length", "0")
        self.end_headers()

        mode = fault["mode"] if fault else forwarded_fault
        self.state.record(method, self.path, status, mode)
        if not has_body:
            return

        source = self.iter_body(response, body)
        try:
            if chunked_out:
                for piece in source:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.write(b"0\r\n\r\n")
            elif mode == "truncate":
                self.send_truncated(source, known_length)
            elif mode == "corrupt":
                self.send_corrupted(source, known_length)
            else:
                for piece in source:
                    self.wfile.write(piece)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def iter_body(self, response, body):
        if body is not None:
            for start in range(0, len(body), CHUNK):
                self.state.transmit(len(body[start : start + CHUNK]))
                yield body[start : start + CHUNK]
            return
        while True:
            piece = response.read(CHUNK)
            if not piece:
                return
            self.state.transmit(len(piece))
            yield piece

    def send_corrupted(self, source, length):
        target = length // 2
        offset = 0
        for piece in source:
            if offset <= target < offset + len(piece):
                mutable = bytearray(piece)
                mutable[target - offset] ^= 0xFF
                piece = bytes(mutable)
            offset += len(piece)
            self.wfile.write(piece)

    def send_truncated(self, source, length):
        remaining = length // 2
        for piece in source:
            if remaining <= 0:
                break
            piece = piece[:remaining]
            remaining -= len(piece)
            self.wfile.write(piece)
        self.wfile.flush()
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def rewrite_location(self, value):
        parts = urllib.parse.urlsplit(value)
        if parts.netloc and parts.netloc == self.upstream:
            host = self.headers.get("Host") or "%s:%d" % self.server.server_address[:2]
            return urllib.parse.urlunsplit(("http", host, parts.path, parts.query, parts.fragment))
        return value


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen-port", type=int, required=True)
    parser.add_argument("--listen-host", default="127.0.0.1")
    parser.add_argument("--upstream", required=True, help="HOST:PORT of the plain-HTTP registry")
    parser.add_argument("--log", help="append an access log line per request to this file")
    parser.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM)")
    parser.add_argument("--tls-key", help="the certificate's private key (PEM)")
    parser.add_argument("--arm", action="append", default=[], help="a fault to arm at start-up (JSON)")
    args = parser.parse_args()

    ProxyHandler.state = State()
    ProxyHandler.upstream = args.upstream
    ProxyHandler.log_file = open(args.log, "a", encoding="utf-8") if args.log else None
    for spec in args.arm:
        ProxyHandler.state.arm(json.loads(spec))

    http.server.ThreadingHTTPServer.daemon_threads = True
    http.server.ThreadingHTTPServer.allow_reuse_address = True
    server = http.server.ThreadingHTTPServer((args.listen_host, args.listen_port), ProxyHandler)
    if args.tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print(
        "fault proxy listening on %s:%d, upstream %s" % (args.listen_host, args.listen_port, args.upstream),
        file=sys.stderr,
        flush=True,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
