"""A tiny Hugging Face Hub on 127.0.0.1 for tests: the endpoints huggingface_hub (2.x) and
transformers use to fetch a model, served from a folder.

  GET  /api/models/{repo}[/revision/{rev}]   model info: id, sha (the commit), siblings
  GET  /api/models/{repo}/tree/{rev}[/path]  the top-level listing (a sub-folder: 404 EntryNotFound)
  HEAD /{repo}/resolve/{rev}/{file}          X-Repo-Commit, ETag (git blob sha1; sha256 for
                                              .safetensors as for LFS files, also X-Linked-Etag/-Size)
  GET  same                                   the bytes; `Range: bytes=N-` answers 206 from N
Unknown repos answer 404 with X-Error-Code: RepoNotFound, as the hub does. Every request is
recorded (method, path, Range header); `throttle` seconds of sleep per 64 KiB slow a download
down so a test can cancel it mid-file.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


class HubServer:
    def __init__(self, repos: dict[str, Path], throttle: float = 0.0):
        self.repos = {name: {p.name: p.read_bytes() for p in Path(folder).iterdir() if p.is_file()}
                      for name, folder in repos.items()}
        self.throttle = throttle
        self.requests: list[tuple[str, str, str | None]] = []
        self.served = 0  # body bytes sent
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                server._handle(self, body=False)

            def do_GET(self):
                server._handle(self, body=True)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)

    @staticmethod
    def etag(name: str, data: bytes) -> str:
        return hashlib.sha256(data).hexdigest() if name.endswith(".safetensors") else git_sha1(data)

    def _send(self, h, status: int, headers: dict, body: bytes = b"", send_body: bool = True):
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, str(v))
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if send_body and body:
            step = 64 * 1024
            for i in range(0, len(body), step):
                if self.throttle:
                    import time

                    time.sleep(self.throttle)
                try:
                    h.wfile.write(body[i:i + step])
                except (BrokenPipeError, ConnectionResetError):  # the client cancelled
                    return
                self.served += len(body[i:i + step])

    def _not_found(self, h, code: str = "RepoNotFound"):
        body = json.dumps({"error": "Repository not found"}).encode()
        self._send(h, 404, {"X-Error-Code": code, "Content-Type": "application/json"}, body, h.command != "HEAD")

    def _handle(self, h, body: bool):
        path = h.path.split("?")[0]
        self.requests.append((h.command, path, h.headers.get("Range")))
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"]:
            repo = "/".join(parts[2:4]) if "revision" not in parts[2:4] else parts[2]
            if repo not in self.repos:
                return self._not_found(h)
            files = self.repos[repo]
            if "tree" in parts:  # a listing: the top level only (no sub-folders here)
                if len(parts) > parts.index("tree") + 2:
                    return self._not_found(h, "EntryNotFound")
                tree = [{"type": "file", "path": n, "size": len(d), "oid": git_sha1(d)} for n, d in sorted(files.items())]
                return self._send(h, 200, {"Content-Type": "application/json"}, json.dumps(tree).encode(), body)
            info = {"id": repo, "modelId": repo, "sha": COMMIT, "private": False, "tags": [],
                    "siblings": [{"rfilename": n, "size": len(d)} for n, d in sorted(files.items())]}
            return self._send(h, 200, {"Content-Type": "application/json"}, json.dumps(info).encode(), body)
        if "resolve" in parts:
            at = parts.index("resolve")
            repo, name = "/".join(parts[:at]), "/".join(parts[at + 2:])
            if repo not in self.repos:
                return self._not_found(h)
            data = self.repos[repo].get(name)
            if data is None:
                return self._not_found(h, "EntryNotFound")
            tag = self.etag(name, data)
            headers = {"X-Repo-Commit": COMMIT, "ETag": f'"{tag}"', "Accept-Ranges": "bytes",
                       "Content-Type": "application/octet-stream"}
            if name.endswith(".safetensors"):
                headers.update({"X-Linked-Etag": f'"{tag}"', "X-Linked-Size": len(data)})
            rng = h.headers.get("Range")
            if body and rng and rng.startswith("bytes="):
                start = int(rng[6:].split("-")[0])
                if start >= len(data):
                    return self._send(h, 416, {"Content-Range": f"bytes */{len(data)}"}, b"", body)
                headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
                return self._send(h, 206, headers, data[start:])
            return self._send(h, 200, headers, data, body)
        self._send(h, 404, {}, b"not found", body)
