"""A small HTTP app on static_base() with Debian's python3 as packages.

It uses one pure-Python dependency (six) and one with a C extension
(markupsafe's speedups), installed in the builder from the wheels kept
beside it. `python3 app.py` serves on :8080; `--self-test` serves on a
free loopback port, asks itself once, prints the answer and exits.
"""

import http.server
import sys
import threading
import urllib.request

import markupsafe
import six
from markupsafe import _speedups  # the C extension: fails if it cannot load


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = str(markupsafe.escape("<hello from python3 on static_base()>"))
        body += " six %s, speedups %s\n" % (six.__version__, _speedups.__name__)
        data = body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def main():
    if "--self-test" in sys.argv:
        server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = "http://127.0.0.1:%d/" % server.server_address[1]
        with urllib.request.urlopen(url, timeout=10) as r:
            sys.stdout.write(r.read().decode())
        server.shutdown()
        return
    http.server.HTTPServer(("0.0.0.0", 8080), Handler).serve_forever()


if __name__ == "__main__":
    main()
