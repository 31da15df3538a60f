"""Start ``seqrec serve`` on a free loopback port in a child process, and stop it (tests of the service)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time

import httpx

TOKEN = "test-admin-token"


class LiveServer:
    def __init__(self, run_dir, *flags, state=None, token: str | None = TOKEN):
        env = {k: v for k, v in os.environ.items() if k != "SEQREC_ADMIN_TOKEN"}
        if token:
            env["SEQREC_ADMIN_TOKEN"] = token
        args = [sys.executable, "-m", "seqrec.cli", "serve", str(run_dir), "--host", "127.0.0.1", "--port", "0",
                "--threads", "1", *flags]
        if state is not None:
            args += ["--state", str(state)]
        self.process = subprocess.Popen(args, stderr=subprocess.PIPE, text=True, env=env)
        self.log: list[str] = []
        deadline = time.monotonic() + 120
        while True:
            line = self.process.stderr.readline()
            if not line:
                raise RuntimeError(f"seqrec serve exited with {self.process.wait()}: {''.join(self.log)}")
            self.log.append(line)
            found = re.search(r"on http://127\.0\.0\.1:(\d+)", line)
            if found:
                self.url = f"http://127.0.0.1:{found.group(1)}"
                break
            if time.monotonic() > deadline:
                raise RuntimeError("seqrec serve did not start")
        self.reader = threading.Thread(target=lambda: self.log.extend(self.process.stderr), daemon=True)
        self.reader.start()
        self.client = httpx.Client(base_url=self.url, timeout=60)
        while self.client.get("/readyz").status_code != 200:
            time.sleep(0.05)

    def stop(self, sig=signal.SIGTERM) -> int:
        """Stop the server; a request that failed inside it (a 500, logged with its traceback) fails the test:
        no test of the suite may make the server fail."""
        self.client.close()
        if self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(30)
        self.reader.join(10)
        text = "".join(self.log)
        assert "unhandled error" not in text and "Traceback" not in text, text
        return code

    def __enter__(self) -> "LiveServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
