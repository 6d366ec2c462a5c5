"""Fetch a file named by a path or an http(s)/file URL, downloading URLs once into a cache.

The cache is ``$STICA_CACHE`` (default ``$XDG_CACHE_HOME/stica``, i.e. ``~/.cache/stica``), one
file per URL under ``downloads/``. A download goes to a temporary file that is renamed only when
complete, so a killed download is never mistaken for a cached file.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from stica.errors import SticaError
from stica.logs import get_logger

log = get_logger("download")

URL_SCHEMES = ("http", "https", "file")
CHUNK = 1 << 20


def default_cache_dir() -> Path:
    if os.environ.get("STICA_CACHE"):
        return Path(os.environ["STICA_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "stica"


@dataclass(frozen=True)
class Fetched:
    path: Path  # the local file
    sha256: str
    downloaded: bool  # False: a local path, or a URL already in the cache


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def is_url(source: str) -> bool:
    return urllib.parse.urlparse(source).scheme in URL_SCHEMES


def cache_path(url: str, cache_dir: str | Path | None = None) -> Path:
    """Where ``url`` is cached: its file name, prefixed by a hash of the whole URL."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    name = Path(urllib.parse.urlparse(url).path).name or "download"
    name = re.sub(r"[^A-Za-z0-9._-]", "_", name)
    digest = hashlib.sha256(url.encode()).hexdigest()[:16]
    return root / "downloads" / f"{digest}-{name}"


def fetch(source: str, sha256: str | None = None, cache_dir: str | Path | None = None) -> Fetched:
    """The local file of ``source`` and its sha256, checked against ``sha256`` when given.

    A URL is downloaded once; later calls use the cached copy. A cached download whose sha256
    does not match is deleted (the next call downloads it again); a local file is never touched.
    """
    if sha256 is not None:
        sha256 = sha256.strip().lower()
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise SticaError(f"--sha256 {sha256!r}: expected 64 hexadecimal digits")
    if is_url(source):
        path = cache_path(source, cache_dir)
        downloaded = not path.is_file()
        if downloaded:
            _download(source, path)
        else:
            log.info(f"{source}: using the cached copy {path}")
    else:
        path = Path(source)
        if not path.is_file():
            raise SticaError(f"no such file: {source}")
        downloaded = False
    digest = sha256_of(path)
    if sha256 is not None and digest != sha256:
        where = ""
        if is_url(source):
            path.unlink()
            where = " (the cached download was deleted)"
        raise SticaError(f"{source}: sha256 is {digest}, expected {sha256}{where}")
    return Fetched(path, digest, downloaded)


def _download(url: str, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.part-{os.getpid()}")
    log.info(f"downloading {url} -> {path}")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
            shutil.copyfileobj(response, out, CHUNK)
        os.replace(tmp, path)
    except (urllib.error.URLError, OSError, ValueError) as e:
        tmp.unlink(missing_ok=True)
        reason = getattr(e, "reason", None) or e
        raise SticaError(f"{url}: download failed ({reason})") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
