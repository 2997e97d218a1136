"""Open a page in headless Chromium (command line only) and report what a reader would see.

:func:`render` runs Chromium twice on a local HTML file, with the network blocked (so a page
that needs it fails the check):

1. ``--dump-dom`` on a temporary copy of the page, written next to it (so relative links
   resolve) and removed afterwards, with a probe script inserted first in ``<head>``. The
   probe records ``console.error`` calls, uncaught exceptions, unhandled rejections and
   resources that fail to load, and after ``load`` writes them, with the image counts
   (``img.complete && img.naturalWidth > 0``), into an attribute of ``<html>`` that is read
   back from the dumped DOM. Console lines on stderr (``--enable-logging=stderr``) are parsed
   too: Chromium 150 prints ``[pid:tid:time:INFO:CONSOLE:LINE] "message", source: URL (LINE)``
   for every console message without its level, and nothing for a missing ``<img>``, hence
   the probe; uncaught exceptions also show there as ``"Uncaught ..."``.
2. ``--screenshot`` of the page itself when a screenshot path is given.
"""

from __future__ import annotations

import html
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")
"""The executables :func:`find_chromium` looks for on PATH, in order."""
BUDGET_MS = 5000
"""Chromium's ``--virtual-time-budget``: virtual milliseconds the page gets to settle."""
_ATTR = "data-hwbed-render"
_PROBE = (
    '<script id="hwbed-render-probe">(function(){"use strict";'
    "var errs=[],me=document.currentScript;"
    "function add(m){errs.push(String(m));}"
    "var ce=console.error;console.error=function(){"
    'add("console.error: "+Array.prototype.map.call(arguments,String).join(" "));'
    "return ce.apply(console,arguments);};"
    'window.addEventListener("error",function(ev){var t=ev.target;'
    "if(t&&t!==window&&t.tagName){"
    'add("Failed to load resource: <"+t.tagName.toLowerCase()+"> "'
    '+(t.getAttribute("src")||t.getAttribute("href")||t.currentSrc||""));}'
    "else{add(ev.message||String(ev.error));}},true);"
    'window.addEventListener("unhandledrejection",function(ev){'
    'add("Uncaught (in promise) "+String(ev.reason));});'
    'window.addEventListener("load",function(){setTimeout(function(){'
    "var im=document.images,n=0;for(var i=0;i<im.length;i++){"
    "if(im[i].complete&&im[i].naturalWidth>0)n++;}"
    "if(me&&me.parentNode)me.parentNode.removeChild(me);"
    f'document.documentElement.setAttribute("{_ATTR}",'
    "JSON.stringify({images:im.length,loaded:n,errors:errs}));},0);});"
    "})();</script>"
).encode()
_CONSOLE = re.compile(
    r'^\[[^\]\n]*?:(?P<level>[A-Z]+):CONSOLE[^\]\n]*\] "(?P<msg>.*?)", source: (?P<src>[^\n]*?)'
    r" \((?P<line>\d+)\)[ \t]*$",
    re.M | re.S,
)
_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--enable-logging=stderr",
    "--v=0",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--mute-audio",
    "--hide-scrollbars",
    "--host-resolver-rules=MAP * ~NOTFOUND",  # offline: any network reference fails to load
)


@dataclass
class Rendered:
    """What :func:`render` saw."""

    console_errors: list[str]
    """Uncaught exceptions, ``console.error`` calls and resources that failed to load."""
    images: int
    """``<img>`` elements in the page after ``load``."""
    images_loaded: int
    """Of those, how many loaded (``complete`` with a non-zero natural width)."""
    dom: str
    """The serialized DOM after scripts ran (the probe and its attribute removed)."""
    screenshot: Path | None
    """The PNG screenshot, when one was asked for."""
    console: list[str] = field(default_factory=list)
    """Every console message Chromium logged (``message (source:line)``), errors or not."""

    @property
    def ok(self) -> bool:
        """No console errors and every image loaded."""
        return not self.console_errors and self.images == self.images_loaded


def find_chromium() -> str | None:
    """The path of the first of :data:`CANDIDATES` on PATH, or None."""
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _tail(text: str, lines: int = 15) -> str:
    kept = [ln for ln in text.splitlines() if "dbus" not in ln and ln.strip()]
    return "\n".join(kept[-lines:])


def _run(exe: str, args: list[str], url: str, timeout: float, page: Path) -> tuple[str, str]:
    """Run Chromium once with a fresh profile; (stdout, stderr). RuntimeError on failure."""
    with tempfile.TemporaryDirectory(prefix="hwbed-chromium-", ignore_cleanup_errors=True) as tmp:
        cmd = [exe, *_FLAGS, f"--user-data-dir={tmp}", f"--virtual-time-budget={BUDGET_MS}"]
        cmd += [*args, url]
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            errors="replace",
            start_new_session=True,  # its own process group, so a timeout ends all of it
        )
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            out, err = proc.communicate()
            raise RuntimeError(
                f"chromium timed out after {timeout:g} s on {page}\n{_tail(err)}"
            ) from None
        finally:
            if proc.poll() is None:  # e.g. KeyboardInterrupt while waiting
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"chromium exited with {proc.returncode} on {page}\n{_tail(err)}")
    return out, err


def _with_probe(source: bytes) -> bytes:
    """The page with the probe inserted as early as possible (after ``<head>``)."""
    charset = re.search(rb"<meta\s[^>]*charset[^>]*>", source[:1024], re.I)
    if charset:  # keep the charset declaration within the first 1024 bytes
        return source[: charset.end()] + _PROBE + source[charset.end() :]
    for pattern in (rb"<head\b[^>]*>", rb"<html\b[^>]*>", rb"<!doctype[^>]*>"):
        m = re.search(pattern, source, re.I)
        if m:
            return source[: m.end()] + _PROBE + source[m.end() :]
    return _PROBE + source


def console_messages(stderr: str) -> list[tuple[str, str, str]]:
    """(level, message, ``source:line``) for each console line in Chromium's stderr log."""
    return [(m["level"], m["msg"], f"{m['src']}:{m['line']}") for m in _CONSOLE.finditer(stderr)]


def _is_error(level: str, message: str) -> bool:
    return (
        level in ("ERROR", "FATAL")
        or message.startswith("Uncaught")
        or "Failed to load resource" in message
    )


def render(
    page: Path,
    screenshot: Path | None = None,
    width: int = 1280,
    height: int = 2000,
    timeout: float = 60,
) -> Rendered:
    """Render a local HTML file in headless Chromium: errors, image counts, DOM, screenshot.

    ``timeout`` (seconds) bounds each of the two Chromium runs. RuntimeError when Chromium is
    not installed, fails or times out.
    """
    exe = find_chromium()
    if exe is None:
        raise RuntimeError(
            "chromium not found on PATH (looked for " + ", ".join(CANDIDATES) + "); "
            "install Debian's chromium package"
        )
    page = Path(page).resolve()
    if not page.is_file():
        raise FileNotFoundError(page)
    size = f"--window-size={int(width)},{int(height)}"
    probe = page.with_name(f".{page.stem}.render-{secrets.token_hex(4)}.html")
    try:
        probe.write_bytes(_with_probe(page.read_bytes()))
        dom, err = _run(exe, [size, "--dump-dom"], probe.as_uri(), timeout, page)
    finally:
        probe.unlink(missing_ok=True)

    found = re.search(rf'\s{_ATTR}="([^"]*)"', dom)
    if found:
        result = json.loads(html.unescape(found[1]))
        dom = dom[: found.start()] + dom[found.end() :]
        errors = [str(e) for e in result["errors"]]
        images, loaded = int(result["images"]), int(result["loaded"])
    else:
        errors = ["page did not finish loading (no load event within the time budget)"]
        images, loaded = len(re.findall(r"<img\b", dom, re.I)), 0
    dom = dom.replace(probe.name, page.name)

    messages = console_messages(err)
    seen = {e.removeprefix("console.error: ") for e in errors}
    for level, message, _ in messages:
        if _is_error(level, message) and message not in seen:
            errors.append(message)
            seen.add(message)
    console = [f"{msg} ({src.replace(probe.name, page.name)})" for _, msg, src in messages]

    shot = None
    if screenshot is not None:
        shot = Path(screenshot).resolve()
        shot.parent.mkdir(parents=True, exist_ok=True)
        shot.unlink(missing_ok=True)
        _run(exe, [size, f"--screenshot={shot}"], page.as_uri(), timeout, page)
        if not shot.is_file() or shot.stat().st_size == 0:
            raise RuntimeError(f"chromium wrote no screenshot to {shot}")
    return Rendered(errors, images, loaded, dom, shot, console)
