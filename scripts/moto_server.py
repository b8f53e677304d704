"""moto server with DynamoDB's atomicity: one DynamoDB request at a time.

moto 5.2.5 serves requests on threads and its DynamoDB backend does not
lock around a conditional write, so two concurrent conditional UpdateItems
on one item can both succeed. DynamoDB refuses the second one, and the
delivery lease depends on that. This launcher builds moto's app the way
`moto/server.py` does, wraps it in a WSGI middleware that holds one lock
while it handles a DynamoDB (or DynamoDB Streams) request, and serves it
threaded, so an SQS long poll never waits for the lock and never holds it.

The integration test `open_work::conditional_writes_on_one_item_never_both_win`
fails when this wrapper is missing.

Usage: moto_server.py [-H host] [-p port]
"""

import argparse
import os
import signal
import sys
import threading

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    create_backend_app,
)
from moto.server import MotoRequestHandler
from werkzeug.serving import run_simple


class SerializedDynamoDB:
    """WSGI middleware: DynamoDB requests run one at a time, whole."""

    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        target = environ.get("HTTP_X_AMZ_TARGET", "")
        if not target.startswith("DynamoDB"):
            return self.app(environ, start_response)
        with self.lock:
            captured = {}

            def capture(status, headers, exc_info=None):
                captured["args"] = (status, headers, exc_info)
                return lambda _data: None

            result = self.app(environ, capture)
            try:
                # The body is computed inside the lock, so the write and the
                # answer that reports it are one step.
                body = b"".join(result)
            finally:
                close = getattr(result, "close", None)
                if close:
                    close()
        status, headers, exc_info = captured["args"]
        start_response(status, headers, exc_info)
        return [body]


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument(
        "-p", "--port", type=int, default=int(os.environ.get("MOTO_PORT", 4566))
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(args.port))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    app = DomainDispatcherApplication(create_backend_app)
    app.debug = True
    run_simple(
        args.host,
        args.port,
        SerializedDynamoDB(app),
        threaded=True,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()
