#!/usr/bin/env python3
"""Serves one file over HTTP/1.1 on 127.0.0.1 with single-range GET support (206 + Content-Range),
keep-alive, and os.sendfile for the body, so the server is not the bottleneck for either client.
(python3 -m http.server ignores Range.)  Usage: range_server.py FILE PORT   (PORT 0: any; the
chosen port is printed on the first line of stdout)."""
import http.server
import os
import re
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_HEAD(self):
        self.answer(send_body=False)

    def do_GET(self):
        self.answer(send_body=True)

    def answer(self, send_body):
        size = os.path.getsize(self.server.path)
        start, end, status = 0, size - 1, 200
        rng = self.headers.get("Range")
        if rng:
            m = re.fullmatch(r"bytes=(\d+)-(\d*)", rng.strip())
            if not m or int(m.group(1)) >= size:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start = int(m.group(1))
            end = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
            status = 206
        length = end - start + 1
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(length))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        self.wfile.flush()
        if not send_body:
            return
        with open(self.server.path, "rb") as f:
            sent = 0
            while sent < length:
                n = os.sendfile(self.connection.fileno(), f.fileno(), start + sent, length - sent)
                if n == 0:
                    break
                sent += n


def main():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), Handler)
    server.path = sys.argv[1]
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
