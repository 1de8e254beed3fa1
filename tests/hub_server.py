"""A loopback Hub for tests: the part of the Hugging Face Hub HTTP API that huggingface_hub and diffusers use to
create a repo (a model, or a Space), commit files (`upload_folder`, "regular" upload mode: content inline, no
LFS/xet), read repo info and download files (`hf_hub_download`, `snapshot_download`). Standard library only; state
lives in memory (models in `HubState.repos`, Spaces in `HubState.spaces`).

Tokens: "write-token" may write; "read-token" gets 403 on writes; no token gets 401 on writes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

WRITE_TOKEN, READ_TOKEN = "write-token", "read-token"
# prepended to a script run as plain diffusers would run it: importing diffit_hf fails
BLOCK_DIFFIT = """
import importlib.abc, sys
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == "diffit_hf" or name.startswith("diffit_hf."):
            raise ImportError("diffit_hf is not installed here")
sys.meta_path.insert(0, _Block())
"""


class HubState:
    def __init__(self):
        self.repos: dict[str, dict] = {}  # model repo_id -> {"files": {path: bytes}, "sha": str}
        self.spaces: dict[str, dict] = {}  # Space repo_id -> the same, and "sdk"
        self.lock = threading.Lock()


def _git_blob_sha(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubHandler(BaseHTTPRequestHandler):
    state: HubState
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    # -- helpers --------------------------------------------------------------------------------------------
    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, content_type="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, payload, headers: dict | None = None):
        self._send(status, json.dumps(payload).encode(), headers)

    def _error(self, status: int, message: str, code: str | None = None):
        self._json(status, {"error": message}, {"X-Error-Code": code} if code else None)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def _can_write(self) -> bool:
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer "):
            self._error(401, "Invalid credentials in Authorization header")
            return False
        if auth[len("Bearer "):] != WRITE_TOKEN:
            self._error(403, "You don't have the rights to write to this repo")
            return False
        return True

    def _repo(self, repo_id: str, kind: str = "models"):
        repo = (self.state.spaces if kind == "spaces" else self.state.repos).get(repo_id)
        if repo is None:
            self._error(404, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    # -- routes ---------------------------------------------------------------------------------------------
    def do_POST(self):
        path = urlparse(self.path).path
        if path == "/api/repos/create":
            if not self._can_write():
                return
            body = json.loads(self._body() or b"{}")
            repo_id = f"{body['organization']}/{body['name']}" if body.get("organization") else body["name"]
            space = body.get("type") == "space"
            repos, url = (self.state.spaces, f"spaces/{repo_id}") if space else (self.state.repos, repo_id)
            with self.state.lock:
                if repo_id in repos:
                    return self._json(409, {"error": f"You already created this {'space' if space else 'model'} "
                                                     "repo", "url": f"http://{self.headers['Host']}/{url}"})
                repos[repo_id] = {"files": {}, "sha": "0" * 40, **({"sdk": body.get("sdk")} if space else {})}
            return self._json(200, {"url": f"http://{self.headers['Host']}/{url}", "name": repo_id})
        if path == "/api/validate-yaml":  # model card metadata check before a commit that adds README.md
            self._body()
            return self._json(200, {"errors": [], "warnings": []})
        match = re.fullmatch(r"/api/(models|spaces)/(.+?)/(preupload|commit)/([^/]+)", path)
        if match is None:
            return self._error(404, f"no route {path}")
        kind, repo_id, action = match.group(1), match.group(2), match.group(3)
        if not self._can_write():
            return
        repo = self._repo(repo_id, kind)
        if repo is None:
            return
        body = self._body()
        if action == "preupload":
            files = json.loads(body)["files"]
            return self._json(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                                              for f in files]})
        with self.state.lock:
            for line in body.splitlines():
                item = json.loads(line)
                if item["key"] == "file":
                    value = item["value"]
                    repo["files"][value["path"]] = base64.b64decode(value["content"])
                elif item["key"] == "deletedFile":
                    repo["files"].pop(item["value"]["path"], None)
                elif item["key"] not in ("header",):
                    return self._error(400, f"unsupported commit operation {item['key']} (LFS is not served here)")
            digest = hashlib.sha1(repo["sha"].encode() + body).hexdigest()
            repo["sha"] = digest
        return self._json(200, {"commitUrl": f"http://{self.headers['Host']}/{repo_id}/commit/{digest}",
                                "commitOid": digest, "pullRequestUrl": None})

    def do_GET(self):
        path = urlparse(self.path).path
        match = re.fullmatch(r"/api/(models|spaces)/([^/]+/[^/]+)/tree/([^/]+)(?:/(.*))?", path)
        if match:  # recursive listing (snapshot_download)
            repo = self._repo(match.group(2), match.group(1))
            if repo is None:
                return
            prefix = (unquote(match.group(4)) + "/") if match.group(4) else ""
            names = sorted(n for n in repo["files"] if n.startswith(prefix))
            folders = sorted({"/".join(n.split("/")[:i]) for n in names for i in range(1, n.count("/") + 1)})
            entries = [{"type": "directory", "path": d, "oid": "0" * 40, "size": 0} for d in folders]
            entries += [{"type": "file", "path": n, "oid": _git_blob_sha(repo["files"][n]),
                         "size": len(repo["files"][n])} for n in names]
            return self._json(200, entries)
        match = re.fullmatch(r"/api/(models|spaces)/([^/]+/[^/]+)(?:/revision/([^/]+))?", path)
        if match:
            repo = self._repo(match.group(2), match.group(1))
            if repo is None:
                return
            return self._json(200, {
                "id": match.group(2), "modelId": match.group(2), "sha": repo["sha"], "private": False,
                "siblings": [{"rfilename": name} for name in sorted(repo["files"])], "tags": [],
                "lastModified": "2026-01-01T00:00:00.000Z",
            })
        match = re.fullmatch(r"/(spaces/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if match:
            repo = self._repo(match.group(2), "spaces" if match.group(1) else "models")
            if repo is None:
                return
            name = unquote(match.group(4))
            data = repo["files"].get(name)
            if data is None:
                return self._error(404, f"{name} not found", "EntryNotFound")
            headers = {"X-Repo-Commit": repo["sha"], "ETag": f'"{_git_blob_sha(data)}"'}
            return self._send(200, data, headers, content_type="application/octet-stream")
        return self._error(404, f"no route {path}")

    do_HEAD = do_GET


def start_hub() -> tuple[ThreadingHTTPServer, HubState]:
    """A running loopback Hub on a free port; stop it with `server.shutdown()`."""
    state = HubState()
    handler = type("Handler", (HubHandler,), {"state": state})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, state


def run_against(endpoint: str, code: str, cwd, block_diffit: bool = False) -> str:
    """Runs `code` (dedented) in a fresh Python in `cwd` against the Hub at `endpoint` (huggingface_hub reads
    HF_ENDPOINT at import), online, with its own HF_HOME; without diffit_hf with `block_diffit`. Asserts that it
    exits 0 (its output in the message) and returns its stdout."""
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    env.update(HF_ENDPOINT=endpoint, HF_HOME=os.path.join(cwd, "hf_home"), HF_HUB_DISABLE_TELEMETRY="1",
               HF_HUB_DISABLE_XET="1", DIFFUSERS_VERBOSITY="error", GRADIO_ANALYTICS_ENABLED="False")
    script = (BLOCK_DIFFIT if block_diffit else "") + textwrap.dedent(code)
    os.makedirs(cwd, exist_ok=True)
    proc = subprocess.run([sys.executable, "-c", script], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


GENERATE = """
import numpy as np, torch
pipe.set_progress_bar_config(disable=True)
images = pipe([7, "Bag"], num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="np").images
np.save(OUT, images)
"""


def run_and_sample(endpoint: str, code: str, cwd, block_diffit: bool = False) -> str:
    """`run_against`, and a code that sets `OUT` then samples `pipe` into it (`GENERATE`)."""
    return run_against(endpoint, textwrap.dedent(code) + (GENERATE if "OUT =" in code else ""), cwd, block_diffit)


def card_meta(path) -> dict:
    """The YAML front matter of a model card file."""
    import yaml

    with open(path) as f:
        return yaml.safe_load(f.read().split("---")[1])
