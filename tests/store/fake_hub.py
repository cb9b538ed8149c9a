"""A loopback HTTP server that answers like the Hugging Face Hub, for the real huggingface_hub client.

It speaks the parts of the protocol a download uses:
- `GET /api/models/{repo}[/revision/{rev}]` -> model info JSON with `sha` and `siblings`;
- `GET /api/models/{repo}/tree/{rev}` -> the file listing snapshot_download reads;
- `HEAD|GET /{repo}/resolve/{rev}/{file}` -> small files served directly (`ETag` = git blob id), large
  (LFS) files redirected to a CDN origin (a second port) with `X-Linked-Etag` / `X-Linked-Size`;
  `X-Repo-Commit` on every answer; errors with the `X-Error-Code` header the Hub sends
  (RepoNotFound 401, GatedRepo 401/403, EntryNotFound 404);
- the CDN honours `Range: bytes=N-` (206), and can cut the connection mid-file once per file.
Every request is logged so tests can check what the client asked for."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".gguf", ".safetensors", ".bin", ".pth", ".model")
GOOD_TOKEN = "hf_granted"


@dataclass
class Repo:
    files: dict[str, bytes]
    gated: bool = False
    commit: str = ""

    def __post_init__(self) -> None:
        digest = hashlib.sha1()
        for name in sorted(self.files):
            digest.update(name.encode() + hashlib.sha256(self.files[name]).digest())
        self.commit = digest.hexdigest()


def _blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _is_lfs(name: str) -> bool:
    return name.endswith(LFS_SUFFIXES)


@dataclass
class Request:
    method: str
    path: str
    range: str | None
    authorization: str | None


@dataclass
class FakeHub:
    repos: dict[str, Repo] = field(default_factory=dict)
    cut_once: set[str] = field(default_factory=set)  # file names whose first CDN transfer is cut
    stall: set[str] = field(default_factory=set)  # file names whose CDN transfer stops halfway until release()
    log: list[Request] = field(default_factory=list)
    _released: threading.Event = field(default_factory=threading.Event)

    def release(self) -> None:
        self._released.set()

    def add(self, repo_id: str, files: dict[str, bytes], *, gated: bool = False) -> Repo:
        self.repos[repo_id] = Repo(files, gated)
        return self.repos[repo_id]

    def blob(self, sha256: str) -> tuple[str, bytes] | None:
        for repo in self.repos.values():
            for name, data in repo.files.items():
                if hashlib.sha256(data).hexdigest() == sha256:
                    return name, data
        return None

    def start(self) -> FakeHub:
        self._hub = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self, cdn=False))
        self._cdn = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self, cdn=True))
        for server in (self._hub, self._cdn):
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self.release()
        for server in (self._hub, self._cdn):
            server.shutdown()
            server.server_close()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._hub.server_address[1]}"

    @property
    def cdn(self) -> str:
        return f"http://127.0.0.1:{self._cdn.server_address[1]}"

    def requests(self, method: str | None = None, contains: str = "") -> list[Request]:
        return [r for r in self.log if (method is None or r.method == method) and contains in r.path]


def _handler(hub: FakeHub, *, cdn: bool) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # quiet
            pass

        # -- plumbing ------------------------------------------------------------------------
        def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _error(self, status: int, code: str, message: str, commit: str | None = None) -> None:
            headers = {"X-Error-Code": code, "X-Error-Message": message, "Content-Type": "application/json"}
            if commit:
                headers["X-Repo-Commit"] = commit
            self._send(status, json.dumps({"error": message}).encode(), headers)

        def _json(self, data: object, commit: str) -> None:
            self._send(200, json.dumps(data).encode(), {"Content-Type": "application/json", "X-Repo-Commit": commit})

        def do_HEAD(self) -> None:  # noqa: N802
            self._route()

        def do_GET(self) -> None:  # noqa: N802
            self._route()

        def _route(self) -> None:
            url = urlsplit(self.path)
            path = unquote(url.path)
            hub.log.append(
                Request(self.command, self.path, self.headers.get("Range"), self.headers.get("Authorization"))
            )
            if cdn:
                return self._cdn_get(path.removeprefix("/cdn/"))
            parts = path.strip("/").split("/")
            if parts[:2] == ["api", "models"] and len(parts) >= 4:
                return self._api("/".join(parts[2:4]), parts[4:], url.query)
            if len(parts) >= 5 and parts[2] == "resolve":
                return self._resolve("/".join(parts[:2]), parts[3], "/".join(parts[4:]))
            self._send(404, b"not found")

        # -- the API -------------------------------------------------------------------------
        def _repo(self, repo_id: str) -> Repo | None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._error(401, "RepoNotFound", "Repository not found")
            return repo

        def _api(self, repo_id: str, rest: list[str], query: str) -> None:
            repo = self._repo(repo_id)
            if repo is None:
                return
            blobs = "blobs=" in query
            if not rest or rest[0] == "revision":
                siblings = []
                for name, data in sorted(repo.files.items()):
                    sib: dict[str, object] = {"rfilename": name}
                    if blobs:
                        sib.update(size=len(data), blobId=_blob_id(data))
                        if _is_lfs(name):
                            sha = hashlib.sha256(data).hexdigest()
                            sib["lfs"] = {"size": len(data), "sha256": sha, "pointerSize": 134}
                    siblings.append(sib)
                info = {
                    "_id": repo.commit[:24],
                    "id": repo_id,
                    "modelId": repo_id,
                    "sha": repo.commit,
                    "private": False,
                    "disabled": False,
                    "gated": "manual" if repo.gated else False,
                    "downloads": 0,
                    "likes": 0,
                    "tags": [],
                    "siblings": siblings,
                    "createdAt": "2024-02-01T00:00:00.000Z",
                    "lastModified": "2024-02-01T00:00:00.000Z",
                }
                return self._json(info, repo.commit)
            if rest[0] == "tree":
                entries = []
                for name, data in sorted(repo.files.items()):
                    entry: dict[str, object] = {"type": "file", "oid": _blob_id(data), "size": len(data), "path": name}
                    if _is_lfs(name):
                        entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134}
                    entries.append(entry)
                return self._json(entries, repo.commit)
            self._send(404, b"not found")

        # -- downloads -----------------------------------------------------------------------
        def _resolve(self, repo_id: str, revision: str, filename: str) -> None:
            repo = self._repo(repo_id)
            if repo is None:
                return
            if revision not in ("main", repo.commit):
                return self._error(404, "RevisionNotFound", "Invalid rev id: " + revision)
            if repo.gated:
                auth = self.headers.get("Authorization")
                if auth is None:
                    return self._error(
                        401,
                        "GatedRepo",
                        f"Access to model {repo_id} is restricted. You must have access to it and be authenticated "
                        "to access it. Please log in.",
                    )
                if auth != f"Bearer {GOOD_TOKEN}":
                    return self._error(
                        403,
                        "GatedRepo",
                        f"Access to model {repo_id} is restricted and you are not in the authorized list. "
                        f"Visit https://huggingface.co/{repo_id} to ask for access.",
                    )
            data = repo.files.get(filename)
            if data is None:
                return self._error(404, "EntryNotFound", "Entry not found", commit=repo.commit)
            if _is_lfs(filename):
                sha = hashlib.sha256(data).hexdigest()
                return self._send(
                    302,
                    b"",
                    {
                        "Location": f"{hub.cdn}/cdn/{sha}",
                        "X-Repo-Commit": repo.commit,
                        "X-Linked-Etag": f'"{sha}"',
                        "X-Linked-Size": str(len(data)),
                        "ETag": f'"{_blob_id(data)}"',
                    },
                )
            headers = {"X-Repo-Commit": repo.commit, "ETag": f'"{_blob_id(data)}"', "Accept-Ranges": "bytes"}
            self._send(200, data, headers)

        def _cdn_get(self, sha256: str) -> None:
            found = hub.blob(sha256)
            if found is None:
                return self._send(404, b"no such blob")
            name, data = found
            start = 0
            rng = self.headers.get("Range")
            if rng and rng.startswith("bytes="):
                start = int(rng.removeprefix("bytes=").split("-")[0] or 0)
            body = data[start:]
            status = 206 if start else 200
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", f'"{sha256}"')
            self.send_header("Accept-Ranges", "bytes")
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if self.command == "HEAD":
                return
            if name in hub.stall and len(body) > 1:
                hub.stall.discard(name)
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                hub._released.wait(60)
                self.close_connection = True
                return
            if name in hub.cut_once and len(body) > 1:
                hub.cut_once.discard(name)
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(body)

    return Handler
