"""The dataset download code, run for real against a loopback HTTP server (never the internet)."""

from __future__ import annotations

import functools
import hashlib
import http.server
import socket
import threading
from pathlib import Path

import pytest

import rnnkit.data.datasets as datasets
from rnnkit.data import build_vocab
from rnnkit.data.datasets import RemoteFile, cache_dir, download, resolve_corpus
from rnnkit.errors import CorpusError, DownloadError

SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
PAYLOAD = ("Ünïcode payload 🦀\n" * 5000).encode()  # ~100 KB: several reads of the 64 KiB download loop


class Server:
    """A ThreadingHTTPServer on 127.0.0.1 serving ``root``; ``requests`` lists every path asked for."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[str] = []
        requests = self.requests

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(root))
        )
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


@pytest.fixture
def server(tmp_path, monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    root = tmp_path / "served"
    root.mkdir()
    (root / "payload.txt").write_bytes(PAYLOAD)
    srv = Server(root)
    yield srv
    srv.close()


@pytest.fixture
def closed_port_url():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/payload.txt"


def _remote(url: str, sha256: str = hashlib.sha256(PAYLOAD).hexdigest(), filename: str = "payload.txt"):
    return RemoteFile(filename, url, sha256, "a test payload")


def _leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# -- download ------------------------------------------------------------------------------------------------
def test_download_with_right_checksum(server):
    directory = cache_dir() / "sub"  # created on demand
    path = download(_remote(server.url("payload.txt")), directory)
    assert path == directory / "payload.txt"
    assert path.read_bytes() == PAYLOAD
    assert server.requests == ["/payload.txt"]
    assert _leftovers(directory) == ["payload.txt"]  # no .part file left behind


def test_cached_file_is_used_without_a_request(server):
    remote = _remote(server.url("payload.txt"))
    first = download(remote, cache_dir())
    second = download(remote, cache_dir())
    assert first == second
    assert second.read_bytes() == PAYLOAD
    assert len(server.requests) == 1
    # Even with the server's copy gone, a verified cached file is enough.
    (server.root / "payload.txt").unlink()
    assert download(remote, cache_dir()).read_bytes() == PAYLOAD
    assert len(server.requests) == 1


def test_url_argument_overrides_the_remote_url(server, closed_port_url):
    remote = _remote(closed_port_url)
    path = download(remote, cache_dir(), url=server.url("payload.txt"))
    assert path.read_bytes() == PAYLOAD
    assert server.requests == ["/payload.txt"]


def test_wrong_checksum_saves_nothing(server):
    directory = cache_dir()
    remote = _remote(server.url("payload.txt"), sha256="0" * 64)
    with pytest.raises(DownloadError) as info:
        download(remote, directory)
    message = str(info.value)
    assert server.url("payload.txt") in message
    assert "sha256" in message
    assert hashlib.sha256(PAYLOAD).hexdigest()[:12] in message
    assert "nothing was saved" in message
    assert "\n" not in message
    assert _leftovers(directory) == []  # neither the target nor a .part file
    assert server.requests == ["/payload.txt"]


def test_unreachable_url(closed_port_url):
    directory = cache_dir()
    with pytest.raises(DownloadError) as info:
        download(_remote(closed_port_url), directory, timeout=5)
    message = str(info.value)
    assert closed_port_url in message
    assert "could not download" in message
    assert str(directory / "payload.txt") in message  # says where to put the file by hand
    assert _leftovers(directory) == []


def test_missing_file_on_the_server(server):
    directory = cache_dir()
    with pytest.raises(DownloadError, match="could not download"):
        download(_remote(server.url("absent.txt")), directory)
    assert _leftovers(directory) == []
    assert server.requests == ["/absent.txt"]


def test_corrupt_cached_file_is_replaced(server):
    directory = cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "payload.txt").write_bytes(b"truncated or tampered")
    path = download(_remote(server.url("payload.txt")), directory)
    assert path.read_bytes() == PAYLOAD
    assert server.requests == ["/payload.txt"]
    assert _leftovers(directory) == ["payload.txt"]


def test_cache_dir_settings(monkeypatch, tmp_path):
    monkeypatch.setenv("RNNKIT_CACHE", str(tmp_path / "a"))
    assert cache_dir() == tmp_path / "a"
    monkeypatch.delenv("RNNKIT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "rnnkit"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "rnnkit"


# -- resolve_corpus ------------------------------------------------------------------------------------------
@pytest.fixture
def served_shakespeare(shakespeare, server, monkeypatch):
    """The real Tiny Shakespeare served on loopback, with REMOTE["shakespeare"] pointing there."""
    (server.root / "input.txt").write_bytes(shakespeare.read_bytes())
    remote = RemoteFile(
        "tinyshakespeare.txt", server.url("input.txt"), SHAKESPEARE_SHA256, datasets.SHAKESPEARE.about
    )
    monkeypatch.setitem(datasets.REMOTE, "shakespeare", remote)
    return server


def test_shakespeare_remote_is_the_real_one():
    remote = datasets.REMOTE["shakespeare"]
    assert remote.sha256 == SHAKESPEARE_SHA256
    assert remote.url.startswith("https://")
    assert remote.filename == "tinyshakespeare.txt"


def test_shakespeare_from_local_data_dir(shakespeare, served_shakespeare, monkeypatch):
    monkeypatch.setenv("RNNKIT_DATA", str(shakespeare.parent))
    path, about = resolve_corpus("shakespeare")
    assert path == shakespeare.parent / "tinyshakespeare.txt"
    assert str(path) in about
    assert "Tiny Shakespeare" in about
    assert served_shakespeare.requests == []
    assert not (cache_dir() / "tinyshakespeare.txt").exists()


def test_shakespeare_downloaded_and_verified(shakespeare, served_shakespeare):
    path, about = resolve_corpus("shakespeare")
    assert path == cache_dir() / "tinyshakespeare.txt"
    assert path.read_bytes() == shakespeare.read_bytes()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == SHAKESPEARE_SHA256
    assert "cached in" in about
    assert str(cache_dir()) in about
    assert served_shakespeare.requests == ["/input.txt"]
    vocab, n = build_vocab(path)
    assert (len(vocab), n) == (65, 1_115_394)
    again, _ = resolve_corpus("shakespeare")
    assert again == path
    assert served_shakespeare.requests == ["/input.txt"]  # the second call reads the cache


def test_shakespeare_downloads_when_data_dir_lacks_it(shakespeare, served_shakespeare, monkeypatch, tmp_path):
    monkeypatch.setenv("RNNKIT_DATA", str(tmp_path / "empty"))
    path, _ = resolve_corpus("shakespeare")
    assert path == cache_dir() / "tinyshakespeare.txt"
    assert served_shakespeare.requests == ["/input.txt"]


def test_shakespeare_download_with_changed_content_fails(served_shakespeare):
    (served_shakespeare.root / "input.txt").write_bytes(b"not shakespeare")
    with pytest.raises(DownloadError, match="sha256"):
        resolve_corpus("shakespeare")
    assert _leftovers(cache_dir()) == []


def test_offline_shakespeare_says_how_to_use_a_local_copy(closed_port_url, monkeypatch):
    remote = RemoteFile("tinyshakespeare.txt", closed_port_url, SHAKESPEARE_SHA256, datasets.SHAKESPEARE.about)
    monkeypatch.setitem(datasets.REMOTE, "shakespeare", remote)
    monkeypatch.delenv("RNNKIT_DATA", raising=False)
    with pytest.raises(DownloadError) as info:
        resolve_corpus("shakespeare")
    message = str(info.value)
    assert "could not download" in message and "\n" not in message
    assert message.endswith("or set RNNKIT_DATA to a folder that holds tinyshakespeare.txt")


@pytest.mark.parametrize("name", [None, "builtin"])
def test_builtin_corpus(name):
    import pydoc_data.topics

    path, about = resolve_corpus(name)
    assert path.parent == cache_dir()
    assert "built-in corpus" in about
    assert "pydoc_data" in about
    expected = "\n\n".join(pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics))
    assert path.read_text(encoding="utf-8") == expected
    assert f"{path.stat().st_size:,} bytes" in about
    vocab, n = build_vocab(path)
    assert n == len(expected) > 100_000


def test_builtin_corpus_is_rewritten_when_damaged():
    path, _ = resolve_corpus(None)
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    again, _ = resolve_corpus(None)
    assert again == path
    assert path.read_bytes() == good


def test_local_path(small_corpus):
    path, about = resolve_corpus(str(small_corpus))
    assert path == small_corpus
    assert str(small_corpus) in about
    assert f"{small_corpus.stat().st_size:,} bytes" in about


def test_missing_local_path(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(CorpusError) as info:
        resolve_corpus(str(missing))
    message = str(info.value)
    assert str(missing) in message
    assert "does not exist" in message
    assert "builtin" in message
    assert "shakespeare" in message
