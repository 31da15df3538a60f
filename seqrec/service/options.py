"""The service's options, declared once (CLI flags, help lines and defaults come from here)."""

from __future__ import annotations

from seqrec.options import Options, between, option

BACKENDS = ("torch", "onnx")
SYNC_MODES = ("full", "normal")


class ServeOptions(Options):
    """``seqrec serve RUN_DIR`` options (see docs/service.md)."""

    host: str = option("127.0.0.1", "address to listen on (loopback by default; 0.0.0.0 exposes the service)",
                       group="server")
    port: int = option(8000, "port to listen on (0: a free port, printed at start)", check=between(0, 65535),
                       group="server")
    backend: str = option("torch", "torch: the saved model; onnx: its ONNX export (RUN_DIR/onnx, exported when "
                                   "missing or stale)", choices=BACKENDS, group="server")
    state: str | None = option(None, "SQLite file of the appended events (default: RUN_DIR.events.sqlite beside the run "
                            "directory)", group="server")
    sync: str = option("full", "event durability: full (fsync per append; survives a power cut) or normal "
                               "(survives a killed server)", choices=SYNC_MODES, group="server")
    items: str | None = option(None, "CSV or Parquet of item metadata (an item_id column, else the first; any other "
                            "columns), shown and searched by the page", group="server")
    threads: int = option(0, "PyTorch / onnxruntime threads (0: their default, the cores); a PyTorch pass "
                             "over fewer than 4 histories uses one", check=between(0), group="server")
    admin_token_env: str = option("SEQREC_ADMIN_TOKEN", "environment variable holding the admin token of "
                                                        "POST /v1/admin/reload (unset: reload only by SIGHUP)",
                                  group="server")
    max_batch: int = option(64, "most histories ranked in one forward pass by the micro-batcher", check=between(1),
                            group="limits")
    max_wait_ms: float = option(5.0, "longest a request waits for others to join its batch (only while more "
                                     "are arriving)", check=between(0), group="limits")
    max_k: int = option(1000, "largest k a request may ask for (a larger k is refused; a k above the "
                              "catalogue size is clamped to it)", check=between(1), group="limits")
    max_histories: int = option(256, "most histories in one batch request", check=between(1), group="limits")
    max_history: int = option(10000, "most items in one history (older ones than the model's window are "
                                     "excluded from the results but not read)", check=between(1), group="limits")
    max_events: int = option(1000, "most events appended by one request", check=between(1), group="limits")
    max_body: int = option(1 << 20, "largest request body in bytes", check=between(1), group="limits")
