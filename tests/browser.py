"""Headless Chromium driven over the DevTools protocol, for the gallery's tests and its benchmark.

The protocol runs over a pipe (`--remote-debugging-pipe`: Chromium reads commands on fd 3 and writes
replies on fd 4, each a JSON message ended by a NUL byte), so no port and no websocket library are
needed. One browser serves many page loads, which is what makes a warm measurement possible.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync", "--disable-quic",
         "--disable-background-networking", "--disable-component-update", "--window-size=1280,800"]


class Chromium:
    """`with Chromium() as browser: browser.open(url); browser.evaluate("document.title")`."""

    def __init__(self, timeout: float = 60.0):
        self.timeout = timeout
        self.events: List[Dict[str, Any]] = []  # events of the page, oldest first
        self._profile = tempfile.mkdtemp(prefix="lcm-chromium-")
        self._buffer = b""
        self._next_id = 0
        commands_read, self._commands = os.pipe()
        self._replies, replies_written = os.pipe()

        def onto_fds_3_and_4():  # in the child, before exec: the pipe ends where Chromium looks for them
            # copies above 3 and 4 first, so that moving one end cannot close the other
            read, write = (fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (commands_read, replies_written))
            os.dup2(read, 3)  # inheritable: the copy survives the exec
            os.dup2(write, 4)

        self._process = subprocess.Popen(
            [str(CHROMIUM), *FLAGS, "--remote-debugging-pipe", f"--user-data-dir={self._profile}", "about:blank"],
            preexec_fn=onto_fds_3_and_4, close_fds=False, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(commands_read)
        os.close(replies_written)
        target = next(t for t in self._call("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self._session = self._call("Target.attachToTarget", targetId=target["targetId"], flatten=True)["sessionId"]
        for domain in ("Page", "Network", "Runtime"):
            self.call(f"{domain}.enable")

    def __enter__(self) -> "Chromium":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=30)
        for fd in (self._commands, self._replies):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self._profile, ignore_errors=True)

    def call(self, method: str, **params: Any) -> Dict[str, Any]:
        """A command to the page."""
        return self._call(method, self._session, **params)

    def open(self, url: str) -> float:
        """Load `url` afresh (from about:blank, so that a change of hash alone reloads too) and wait
        for its load event; the seconds from the navigation to that event."""
        self.events.clear()
        self.call("Page.navigate", url="about:blank")
        self.wait_for("Page.frameStoppedLoading")
        self.events.clear()
        started = time.perf_counter()
        self.call("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")
        return time.perf_counter() - started

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (a promise is awaited)."""
        reply = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in reply:
            raise RuntimeError(f"{expression!r} raised in the page: {reply['exceptionDetails']}")
        return reply["result"].get("value")

    def requested(self) -> List[str]:
        """The URLs the page asked for since it was opened."""
        return [e["params"]["request"]["url"] for e in self.events if e["method"] == "Network.requestWillBeSent"]

    def wait_for(self, method: str) -> Dict[str, Any]:
        while True:
            for event in self.events:
                if event["method"] == method:
                    return event
            self._receive()

    def _call(self, method: str, session: Optional[str] = None, **params: Any) -> Dict[str, Any]:
        self._next_id += 1
        message: Dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._receive()
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply["result"]

    def _receive(self) -> Dict[str, Any]:
        """The next message; events are kept in self.events."""
        deadline = time.monotonic() + self.timeout
        while b"\0" not in self._buffer:
            if time.monotonic() > deadline:
                raise TimeoutError(f"Chromium sent nothing for {self.timeout} s")
            chunk = os.read(self._replies, 1 << 16)
            if not chunk:
                raise RuntimeError(f"Chromium exited (code {self._process.poll()})")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message = json.loads(raw)
        if "method" in message:
            self.events.append(message)
        return message
