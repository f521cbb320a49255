"""Corpora by name: the built-in one (ships with CPython) and Tiny Shakespeare (local copy or verified download)."""

from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from rnnkit.errors import CorpusError, DownloadError

BUILTIN = "builtin"


@dataclass(frozen=True)
class RemoteFile:
    filename: str
    url: str
    sha256: str
    about: str


SHAKESPEARE = RemoteFile(
    "tinyshakespeare.txt",
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
    "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
    "Tiny Shakespeare (karpathy/char-rnn), 1.1 MB, public domain",
)
REMOTE = {"shakespeare": SHAKESPEARE}


def cache_dir() -> Path:
    """``$RNNKIT_CACHE``, else ``$XDG_CACHE_HOME/rnnkit``, else ``~/.cache/rnnkit``."""
    if os.environ.get("RNNKIT_CACHE"):
        return Path(os.environ["RNNKIT_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rnnkit"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def download(remote: RemoteFile, directory: Path, url: str | None = None, timeout: float = 60.0) -> Path:
    """Fetch ``remote`` into ``directory`` unless a copy with the right sha256 is there; return its path.

    The bytes go to a temporary file that is renamed into place only after the checksum matches, so a failed or
    tampered download never leaves a file that looks good.
    """
    target = directory / remote.filename
    if target.exists() and sha256_file(target) == remote.sha256:
        return target
    url = url or remote.url
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{remote.filename}.", suffix=".part")
    try:
        h = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            while block := response.read(1 << 16):
                h.update(block)
                out.write(block)
        if h.hexdigest() != remote.sha256:
            raise DownloadError(
                f"{url} does not have the expected sha256 ({h.hexdigest()[:12]}... instead of "
                f"{remote.sha256[:12]}...) — the file changed or the download was corrupted; nothing was saved"
            )
        os.replace(tmp, target)
        return target
    except (urllib.error.URLError, OSError) as e:
        raise DownloadError(
            f"could not download {url} ({getattr(e, 'reason', e)}) — check the network, or place the file at "
            f"{target} yourself"
        ) from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def builtin_corpus_path() -> Path:
    """The built-in corpus: CPython's own documentation prose (``pydoc_data.topics``), written once to the cache."""
    import pydoc_data.topics

    text = "\n\n".join(pydoc_data.topics.topics[k] for k in sorted(pydoc_data.topics.topics))
    path = cache_dir() / "builtin-pydoc-topics.txt"
    data = text.encode("utf-8")
    if not path.exists() or path.stat().st_size != len(data):
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
    return path


def resolve_corpus(data: str | None) -> tuple[Path, str]:
    """Turn ``--data`` into a file path and a description: ``None``/``builtin``, ``shakespeare``, or a path."""
    if data is None or data == BUILTIN:
        path = builtin_corpus_path()
        return path, f"built-in corpus: CPython's pydoc_data.topics documentation ({path.stat().st_size:,} bytes)"
    if data in REMOTE:
        remote = REMOTE[data]
        local = Path(os.environ.get("RNNKIT_DATA", "")) / remote.filename
        if os.environ.get("RNNKIT_DATA") and local.exists():
            return local, f"{remote.about}, from {local}"
        try:
            return download(remote, cache_dir()), f"{remote.about}, cached in {cache_dir()}"
        except DownloadError as e:
            raise DownloadError(f"{e}, or set RNNKIT_DATA to a folder that holds {remote.filename}") from None
    path = Path(data)
    if not path.exists():
        raise CorpusError(
            f"{data} does not exist — pass a UTF-8 text file, 'builtin', or one of: {', '.join(REMOTE)}"
        )
    return path, f"{path} ({path.stat().st_size:,} bytes)"
