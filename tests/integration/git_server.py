"""A git repository served over smart HTTP by a test host of ours: ``git http-backend`` behind a
tiny CGI server, in a network namespace the test creates (198.18.<n>.2, the benchmarking range).

Not a container on a Docker network: the egress proxy counts every Docker bridge subnet as the
launcher's own host and never dials it (egress/host_addresses.py), which is right for runs and
means a test host must live elsewhere. Nothing here reaches any other address: the run reaches
the server only through its egress proxy. The server prints one line per request (the peer
address, method, path and status), so a test can tell who fetched what.
"""

from __future__ import annotations

import secrets
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["GitServer", "git", "git_server", "make_repository"]

PORT = 8080
PREFIX = "src-git"  # every container and network here is named with it

# CGI for git http-backend (RFC 3875 variables); HTTP/1.0 replies, one request per connection.
SERVER = textwrap.dedent(
    """
    import http.server, subprocess, sys
    root, address, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    required = sys.argv[4] if len(sys.argv) > 4 else ""  # an Authorization header value

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def _cgi(self):
            path, _, query = self.path.partition("?")
            if required and self.headers.get("Authorization", "") != required:
                self.send_response(401, "Unauthorized")
                self.send_header("WWW-Authenticate", 'Basic realm="test"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                print(self.client_address[0], self.command, path, 401, flush=True)
                return
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            env = {
                "PATH": "/usr/bin:/bin", "GIT_PROJECT_ROOT": root, "GIT_HTTP_EXPORT_ALL": "1",
                "REQUEST_METHOD": self.command, "PATH_INFO": path, "QUERY_STRING": query,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)), "REMOTE_ADDR": self.client_address[0],
                "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
                "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
            }
            done = subprocess.run(["git", "http-backend"], input=body, env=env,
                                  capture_output=True, timeout=60)
            head, _, payload = done.stdout.partition(b"\\r\\n\\r\\n")
            status = "200 OK"
            headers = []
            for line in head.decode("latin-1").split("\\r\\n"):
                name, _, value = line.partition(":")
                if name.lower() == "status":
                    status = value.strip()
                elif name:
                    headers.append((name, value.strip()))
            code, _, text = status.partition(" ")
            self.send_response(int(code), text)
            for name, value in headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            print(self.client_address[0], self.command, path, code, flush=True)

        do_GET = do_POST = _cgi

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer((address, port), Handler)
    print("ready", flush=True)
    server.serve_forever()
    """
)


def git(*args: str, cwd: Path) -> str:
    done = subprocess.run(
        ["git", "-c", "init.defaultBranch=main", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(cwd),
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@example.invalid",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@example.invalid",
            "GIT_CONFIG_NOSYSTEM": "1",
        },
    )
    return done.stdout.strip()


def make_repository(root: Path, name: str, commits: list[dict[str, str]]) -> list[str]:
    """A bare repository ``root/name`` whose ``main`` holds ``commits`` (path → text each, in
    order); returns their ids, oldest first."""
    work = root.parent / f"{name}-work"
    work.mkdir(parents=True)
    git("init", "-q", ".", cwd=work)
    ids: list[str] = []
    for number, files in enumerate(commits):
        for path, text in files.items():
            target = work / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        git("add", "-A", cwd=work)
        git("commit", "-q", "-m", f"commit {number}", cwd=work)
        ids.append(git("rev-parse", "HEAD", cwd=work))
    git("clone", "-q", "--bare", str(work), str(root / name), cwd=root.parent)
    return ids


@dataclass
class GitServer:
    address: str
    process: subprocess.Popen[str]
    lines: list[str]

    @property
    def base_url(self) -> str:
        return f"http://{self.address}:{PORT}"

    def requests(self) -> list[str]:
        """The request lines the server printed so far (``peer METHOD path status``)."""
        return list(self.lines)


def _ip(*args: str, netns: str | None = None) -> None:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    subprocess.run([*prefix, "ip", *args], check=True, capture_output=True, timeout=30)


@contextmanager
def git_server(repositories: Path, *, authorization: str = "") -> Iterator[GitServer]:
    """Serve ``repositories`` at ``http://198.18.<n>.2:8080/<name>`` from a namespace of ours;
    with ``authorization``, only to requests with exactly that Authorization header."""
    tag = secrets.token_hex(3)
    subnet = 1 + secrets.randbelow(250)  # 198.18.0.0/24 is the egress tests' own
    host_ip, server_ip = f"198.18.{subnet}.1", f"198.18.{subnet}.2"
    ns, host_if, ns_if = f"{PREFIX}-{tag}", f"srcgh{tag}", f"srcgn{tag}"
    _ip("netns", "add", ns)
    process: subprocess.Popen[str] | None = None
    try:
        _ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        _ip("link", "set", ns_if, "netns", ns)
        _ip("addr", "add", f"{host_ip}/24", "dev", host_if)
        _ip("link", "set", host_if, "up")
        _ip("addr", "add", f"{server_ip}/24", "dev", ns_if, netns=ns)
        _ip("link", "set", ns_if, "up", netns=ns)
        _ip("link", "set", "lo", "up", netns=ns)
        process = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                ns,
                sys.executable,
                "-c",
                SERVER,
                str(repositories),
                server_ip,
                str(PORT),
                authorization,
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        if process.stdout.readline().strip() != "ready":
            raise RuntimeError("the git server did not start")
        lines: list[str] = []
        reader = threading.Thread(
            target=lambda: lines.extend(iter(process.stdout.readline, "")),  # type: ignore[union-attr]
            daemon=True,
        )
        reader.start()
        yield GitServer(address=server_ip, process=process, lines=lines)
    finally:
        if process is not None:
            process.kill()
            process.wait(timeout=10)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, check=False)
