"""``seqrec serve``: the HTTP service (FastAPI + uvicorn) and its page; see docs/service.md.

    from seqrec.service import ServeOptions, create_app, serve
    serve("runs/beauty", ServeOptions(port=8000, backend="onnx"))
"""

from __future__ import annotations

import logging
import socket
import sys

from seqrec.service.options import ServeOptions

log = logging.getLogger(__name__)

__all__ = ["ServeOptions", "create_app", "serve"]


def __getattr__(name: str):
    if name == "create_app":  # FastAPI is imported only by what serves
        from seqrec.service.app import create_app
        return create_app
    raise AttributeError(name)


def serve(run_dir, options: ServeOptions | None = None) -> None:
    """Serve ``run_dir`` until interrupted (SIGINT / SIGTERM stop it gracefully; SIGHUP reloads the run
    directory). Prints the address it listens on (``--port 0`` picks a free one)."""
    import uvicorn

    from seqrec.service.app import create_app

    options = options or ServeOptions()
    app = create_app(run_dir, options)
    family = socket.AF_INET6 if ":" in options.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((options.host, options.port))
    sock.listen(2048)  # connections wait in the backlog until the server accepts them
    host, port = sock.getsockname()[:2]
    service = app.state.service
    config = uvicorn.Config(app, log_level="warning", access_log=False, loop="uvloop", http="httptools",
                            timeout_graceful_shutdown=10)
    server = uvicorn.Server(config)
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    print(f"seqrec: serving {service.served.model_id} ({options.backend}) on http://{shown}:{port} "
          f"(page /, API docs /docs; events in {service.store.path})", file=sys.stderr, flush=True)
    server.run(sockets=[sock])
