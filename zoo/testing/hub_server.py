"""A loopback Hugging Face Hub: serve repos and plain files from memory on 127.0.0.1.

It speaks the part of the Hub protocol that ``huggingface_hub``'s downloads use (``resolve`` with
``X-Repo-Commit``/``ETag`` headers, the revision and tree APIs, error codes), plus plain URLs with
``Range`` support, and can inject faults (truncated bodies, HTML error pages, server errors, tampered bytes).
Use it to test your own zoo repos without the internet.

Example:
    >>> import json, os
    >>> from zoo.testing import LoopbackHub
    >>> with LoopbackHub() as hub:
    ...     sha = hub.add_repo("org/demo", {"config.json": b"{}"})
    ...     os.environ["HF_ENDPOINT"] = hub.endpoint  # zoo reads it at call time
    ...     len(sha)
    40
    >>> del os.environ["HF_ENDPOINT"]
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

__all__ = ["LoopbackHub"]

Fault = Literal["truncate", "html", "error500", "tamper"]
_BRANCH = "main"


def _git_blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _is_lfs(path: str, data: bytes) -> bool:
    """Store like the Hub: weights and anything large in LFS (ETag = sha256 of the content)."""
    return path.endswith((".safetensors", ".pt", ".pth", ".ckpt", ".bin", ".npy")) or len(data) > 10_000_000


@dataclass
class _Repo:
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)
    gated: bool = False
    granted_tokens: frozenset[str] | None = None


class LoopbackHub:
    """An in-memory Hub on ``127.0.0.1:<free port>``; a context manager.

    Attributes:
        endpoint: base URL to use as ``HF_ENDPOINT``.
        requests: ``(method, path)`` of every request served, in order.
    """

    def __init__(self) -> None:
        self._repos: dict[str, _Repo] = {}
        self._files: dict[str, bytes] = {}
        self._faults: dict[str, tuple[Fault, int]] = {}
        self._lock = threading.Lock()
        self.requests: list[tuple[str, str]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---------------------------------------------------------------------------------------------- content
    def add_repo(
        self,
        repo_id: str,
        files: Mapping[str, bytes] | str | Path,
        *,
        branch: str = _BRANCH,
        gated: bool = False,
        granted_tokens: Iterable[str] | None = None,
    ) -> str:
        """Add a commit to ``repo_id`` (created if new) and point ``branch`` at it; returns the commit sha.

        ``files`` maps repo paths to bytes, or is a local folder whose files are all added. A ``gated`` repo
        answers like the Hub: 401 ``GatedRepo`` without a token; with ``granted_tokens``, 403 ``GatedRepo`` for
        a token not among them (a user who has not been granted access); otherwise any token is accepted.
        """
        if isinstance(files, str | Path):
            folder = Path(files)
            files = {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
        content = dict(files)
        digest = hashlib.sha1(repo_id.encode())
        for path in sorted(content):
            digest.update(path.encode() + b"\0" + content[path])
        with self._lock:
            repo = self._repos.setdefault(repo_id, _Repo())
            digest.update(str(len(repo.commits)).encode())
            commit = digest.hexdigest()
            repo.commits[commit] = content
            repo.refs[branch] = commit
            repo.gated = repo.gated or gated
            if granted_tokens is not None:
                repo.granted_tokens = frozenset(granted_tokens)
        return commit

    def add_file(self, path: str, data: bytes) -> str:
        """Serve ``data`` at ``<endpoint>/<path>`` as a plain URL (with ``Range`` support); returns the URL."""
        path = "/" + path.lstrip("/")
        with self._lock:
            self._files[path] = data
        return self.url(path)

    def set_fault(self, path_contains: str, fault: Fault, times: int = 1) -> None:
        """Make the next ``times`` GET requests whose path contains ``path_contains`` misbehave.

        ``truncate`` sends the full ``Content-Length`` but half the body then closes; ``html`` answers 200 with
        an HTML error page; ``error500`` answers 500; ``tamper`` flips a byte of the body.
        """
        with self._lock:
            self._faults[path_contains] = (fault, times)

    def url(self, path: str) -> str:
        """Absolute URL of ``path`` on this server."""
        return self.endpoint + "/" + path.lstrip("/")

    # ------------------------------------------------------------------------------------------- lifecycle
    @property
    def endpoint(self) -> str:
        if self._server is None:
            raise RuntimeError("the LoopbackHub is not running: use it as a context manager or call start()")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> LoopbackHub:
        """Start serving in a background thread."""
        hub = self

        class Handler(_Handler):
            server_hub = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving; later requests get "connection refused"."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> LoopbackHub:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ---------------------------------------------------------------------------------------------- lookup
    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for key, (fault, times) in list(self._faults.items()):
                if key in path:
                    if times <= 1:
                        del self._faults[key]
                    else:
                        self._faults[key] = (fault, times - 1)
                    return fault
        return None

    def _commit(self, repo_id: str, revision: str) -> tuple[_Repo | None, str | None]:
        repo = self._repos.get(repo_id)
        if repo is None:
            return None, None
        if revision in repo.commits:
            return repo, revision
        return repo, repo.refs.get(revision)


class _Handler(BaseHTTPRequestHandler):
    server_hub: LoopbackHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        return

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def do_GET(self) -> None:
        self._serve(head=False)

    # -------------------------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes = b"", headers: Mapping[str, str] | None = None, head=False) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str, head: bool) -> None:
        body = json.dumps({"error": message}).encode()
        headers = {"X-Error-Code": code, "X-Error-Message": message, "Content-Type": "application/json"}
        self._send(status, body, headers, head)

    def _serve(self, head: bool) -> None:
        hub = self.server_hub
        path = unquote(urlsplit(self.path).path)
        hub.requests.append((self.command, path))
        parts = path.strip("/").split("/")
        if path in hub._files:
            self._serve_bytes(hub._files[path], {"Content-Type": "application/octet-stream"}, head, path)
        elif len(parts) >= 5 and parts[2] == "resolve":
            self._serve_resolve("/".join(parts[:2]), parts[3], "/".join(parts[4:]), head, path)
        elif len(parts) >= 6 and parts[:2] == ["api", "models"] and parts[4] in ("revision", "tree"):
            self._serve_api("/".join(parts[2:4]), parts[4], parts[5], head)
        else:
            self._error(404, "EntryNotFound", f"{path} not found", head)

    def _serve_resolve(self, repo_id: str, revision: str, filename: str, head: bool, path: str) -> None:
        hub = self.server_hub
        repo, commit = hub._commit(repo_id, revision)
        if repo is None:
            self._error(404, "RepoNotFound", f"Repository {repo_id} not found", head)
            return
        if repo.gated:
            token = (self.headers.get("Authorization") or "").removeprefix("Bearer ").strip()
            if not token:
                self._error(401, "GatedRepo", f"Access to {repo_id} is restricted: you must be authenticated", head)
                return
            if repo.granted_tokens is not None and token not in repo.granted_tokens:
                self._error(403, "GatedRepo", f"Access to {repo_id} is restricted: ask for access", head)
                return
        if commit is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head)
            return
        data = repo.commits[commit].get(filename)
        if data is None:
            self._error(404, "EntryNotFound", f"{filename} does not exist at {revision}", head)
            return
        etag = hashlib.sha256(data).hexdigest() if _is_lfs(filename, data) else _git_blob_sha(data)
        headers = {
            "X-Repo-Commit": commit,
            "ETag": f'"{etag}"',
            "Content-Type": "application/octet-stream",
        }
        self._serve_bytes(data, headers, head, path)

    def _serve_bytes(self, data: bytes, headers: dict[str, str], head: bool, path: str) -> None:
        fault = None if head else self.server_hub._take_fault(path)
        if fault == "error500":
            self._error(500, "ServerError", "internal error", head)
            return
        if fault == "html":
            page = b"<!DOCTYPE html><html><body>Sign in to continue</body></html>"
            self._send(200, page, {"Content-Type": "text/html; charset=utf-8"}, head)
            return
        if fault == "tamper":
            data = bytes([data[0] ^ 0xFF]) + data[1:] if data else b"x"
        status, start = 200, 0
        range_header = self.headers.get("Range")
        if range_header and range_header.startswith("bytes="):
            start = int(range_header[6:].split("-")[0] or 0)
            if start >= len(data):
                self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"}, head)
                return
            status = 206
            headers = {**headers, "Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"}
        body = data[start:]
        self.send_response(status)
        for key, value in {**headers, "Accept-Ranges": "bytes"}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if head:
            return
        if fault == "truncate":
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def _serve_api(self, repo_id: str, kind: str, revision: str, head: bool) -> None:
        repo, commit = self.server_hub._commit(repo_id, revision)
        if repo is None:
            self._error(404, "RepoNotFound", f"Repository {repo_id} not found", head)
            return
        if commit is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head)
            return
        files = repo.commits[commit]
        if kind == "revision":
            siblings = [{"rfilename": name} for name in sorted(files)]
            payload: object = {"id": repo_id, "sha": commit, "siblings": siblings}
        else:
            payload = [
                {"type": "file", "path": name, "size": len(data), "oid": _git_blob_sha(data)}
                for name, data in sorted(files.items())
            ]
        self._send(200, json.dumps(payload).encode(), {"Content-Type": "application/json"}, head)
