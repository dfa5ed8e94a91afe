"""Where checkpoints come from: model cards -> local files (Hub, URL, embedded), verified and cached.

A name given to :func:`zoo.load` resolves to a local zoo checkpoint directory by one of four routes:

* a local directory holding ``config.json`` and ``model.safetensors``;
* ``hf-hub:org/name[@revision]`` — any zoo-format repo on the Hugging Face Hub;
* a card name or alias whose source is a zoo-format Hub repo pinned to a commit, each file checked against
  the sha256 in the card;
* a card whose source is an upstream checkpoint (URL or Hub file): downloaded once (atomic, resumable,
  HTML error pages refused), checked against the card's sha256, converted by the card's converter once,
  and the converted checkpoint cached;
* a card whose weights are embedded in the package.

Hub files live in the ordinary Hugging Face cache (``HF_HOME``/``HF_HUB_CACHE`` or ``cache_dir``), so
``HF_HUB_OFFLINE=1`` and ``local_files_only=True`` behave as in ``huggingface_hub``. zoo's own files
(upstream downloads and converted checkpoints) live in :func:`zoo_cache_dir`. ``HF_ENDPOINT`` and
``HF_HUB_OFFLINE`` are read at call time.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import huggingface_hub
from huggingface_hub import constants as hf_constants
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from zoo.checkpoint import CARD_NAME, CONFIG_NAME, WEIGHTS_NAME, replace_directory, save_pretrained
from zoo.registry import Card, EmbeddedSource, HubSource, UpstreamSource, get_card

logger = logging.getLogger(__name__)

__all__ = [
    "DownloadError",
    "IntegrityError",
    "download_url",
    "resolve",
    "sha256_file",
    "zoo_cache_dir",
]

HF_PREFIX = "hf-hub:"
_CHUNK = 1 << 20


class DownloadError(OSError):
    """A file could not be fetched (network, missing file, refused body, not in the offline cache)."""


class IntegrityError(OSError):
    """A downloaded file whose sha256 differs from the one the card pins; the file has been deleted."""


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def zoo_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """zoo's own cache: ``<cache_dir>/zoo`` if given, else ``$ZOO_CACHE``, else ``$HF_HOME/zoo``."""
    if cache_dir is not None:
        return Path(cache_dir) / "zoo"
    if os.environ.get("ZOO_CACHE"):
        return Path(os.environ["ZOO_CACHE"])
    return Path(os.environ.get("HF_HOME", hf_constants.HF_HOME)) / "zoo"


def offline(local_files_only: bool = False) -> bool:
    """True when nothing may be downloaded: the argument, or ``HF_HUB_OFFLINE`` (set now or at import) or
    ``ZOO_OFFLINE`` set to a true value (``1``, ``on``, ``yes``, ``true``)."""
    env = any(
        os.environ.get(name, "").upper() in {"1", "ON", "YES", "TRUE"} for name in ("HF_HUB_OFFLINE", "ZOO_OFFLINE")
    )
    return local_files_only or env or bool(hf_constants.HF_HUB_OFFLINE)


def _endpoint() -> str | None:
    return os.environ.get("HF_ENDPOINT") or None


@dataclass(frozen=True)
class Resolved:
    """A local checkpoint directory and the card it came from (``None`` for paths and ``hf-hub:``)."""

    directory: Path
    card: Card | None


# ------------------------------------------------------------------------------------------ Hugging Face
def _hub_error(exc: Exception, repo_id: str, revision: str | None, filename: str, no_downloads: bool) -> DownloadError:
    where = f"{repo_id}@{revision or 'main'}/{filename}"
    if isinstance(exc, LocalEntryNotFoundError):
        why = (
            "downloads are off (HF_HUB_OFFLINE or local_files_only)"
            if no_downloads
            else f"the Hub ({_endpoint() or hf_constants.ENDPOINT}) could not be reached"
        )
        return DownloadError(
            f"{where} is not in the local cache and {why}: run `zoo download` on a machine with internet "
            "and copy the cache over, or unset HF_HUB_OFFLINE"
        )
    if isinstance(exc, GatedRepoError):
        return DownloadError(
            f"{repo_id} is gated: request access at https://huggingface.co/{repo_id}, then log in with "
            "`hf auth login` or set HF_TOKEN (or pass token=...)"
        )
    if isinstance(exc, RevisionNotFoundError):
        return DownloadError(f"revision {revision!r} does not exist in {repo_id}: check the commit sha or branch")
    if isinstance(exc, RepositoryNotFoundError):
        return DownloadError(
            f"repository {repo_id!r} not found (or private: log in or set HF_TOKEN) while fetching {where}"
        )
    if isinstance(exc, EntryNotFoundError):
        return DownloadError(f"{filename!r} is not in {repo_id}@{revision or 'main'}: not a zoo checkpoint repo?")
    return DownloadError(f"could not download {where}: {exc}")


def _delete_cached(path: Path) -> None:
    """Remove a cached Hub file: the snapshot link and the blob it points to."""
    blob = path.resolve()
    path.unlink(missing_ok=True)
    blob.unlink(missing_ok=True)


def _hub_file(
    repo_id: str,
    filename: str,
    *,
    revision: str | None,
    cache_dir: str | os.PathLike[str] | None,
    local_files_only: bool,
    token: str | bool | None,
    sha256: str | None = None,
) -> Path:
    """Download (or find in the cache) one Hub file and verify it.

    With ``sha256`` the file must match it. Without, a file stored in LFS is checked against its blob name
    (the LFS object id is the sha256 of the content). A mismatch deletes the cached file and raises.
    """
    no_downloads = offline(local_files_only)
    try:
        path = Path(
            huggingface_hub.hf_hub_download(
                repo_id,
                filename,
                revision=revision,
                cache_dir=cache_dir,
                local_files_only=no_downloads,
                token=token,
                endpoint=_endpoint(),
                library_name="zoo",
            )
        )
    except Exception as exc:  # OSError/ValueError subclasses, plus its HTTP client's transport errors
        raise _hub_error(exc, repo_id, revision, filename, no_downloads) from exc
    blob_name = path.resolve().name
    expected = sha256 or (blob_name if len(blob_name) == 64 and _is_hex(blob_name) else None)
    if expected is not None:
        actual = sha256_file(path)
        if actual != expected:
            _delete_cached(path)
            raise IntegrityError(
                f"{repo_id}@{revision}/{filename}: sha256 {actual} does not match the expected {expected}; "
                "the cached file was deleted. If the card is right the download was corrupted or tampered "
                "with: try again"
            )
    return path


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text)


def _resolve_hf_spec(
    spec: str,
    *,
    revision: str | None,
    cache_dir: str | os.PathLike[str] | None,
    local_files_only: bool,
    token: str | bool | None,
) -> Path:
    """``hf-hub:org/name[@revision]`` -> the snapshot directory holding config.json + model.safetensors."""
    repo_id, _, at_revision = spec[len(HF_PREFIX) :].partition("@")
    if repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise ValueError(f"{spec!r} is not of the form 'hf-hub:org/name' or 'hf-hub:org/name@revision'")
    if at_revision and revision and at_revision != revision:
        raise ValueError(f"{spec!r} names revision {at_revision!r} but revision={revision!r} was passed")
    revision = at_revision or revision
    kwargs: dict[str, Any] = dict(
        revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token
    )
    config = _hub_file(repo_id, CONFIG_NAME, **kwargs)
    _hub_file(repo_id, WEIGHTS_NAME, **kwargs)
    try:
        _hub_file(repo_id, CARD_NAME, **kwargs)
    except DownloadError as exc:
        logger.info("no model card in %s (%s)", repo_id, exc)
    return config.parent


def _resolve_hub_source(
    source: HubSource,
    *,
    revision: str | None,
    cache_dir: str | os.PathLike[str] | None,
    local_files_only: bool,
    token: str | bool | None,
) -> Path:
    if revision is not None and revision != source.revision:
        raise ValueError(
            f"this card pins {source.repo_id}@{source.revision}; to load another revision use "
            f"zoo.load('hf-hub:{source.repo_id}@{revision}') (its files are then not checked against the card)"
        )
    paths = [
        _hub_file(
            source.repo_id,
            filename,
            revision=source.revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            token=token,
            sha256=sha,
        )
        for filename, sha in source.files.items()
    ]
    return paths[0].parent


# -------------------------------------------------------------------------------------------------- URLs
def _looks_like_html(head: bytes) -> bool:
    start = head.lstrip()[:64].lower()
    return start.startswith((b"<!doctype html", b"<html", b"<?xml", b"<head"))


def download_url(
    url: str,
    destination: str | os.PathLike[str],
    *,
    sha256: str | None = None,
    token: str | None = None,
    timeout: float = 60.0,
) -> Path:
    """Download ``url`` to ``destination`` atomically, resuming an interrupted download.

    Bytes go to ``<destination>.part`` (kept after an interruption so the next call resumes it with an HTTP
    ``Range`` request) and are renamed to ``destination`` only once complete and, with ``sha256``, verified.
    HTML pages and HTTP errors are refused. Returns the destination path.
    """
    destination = Path(destination)
    if destination.is_file():
        if sha256 is not None and sha256_file(destination) != sha256.lower():
            # a file left by an earlier download whose card has since pinned (or changed) the sha256
            raise DownloadError(
                f"{destination} (from {url}) does not match the expected sha256 {sha256}; delete it to download "
                "the file again"
            )
        return destination
    destination.parent.mkdir(parents=True, exist_ok=True)
    part = destination.with_name(destination.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "zoo"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the partial file is already complete or stale: start afresh
            part.unlink()
            return download_url(url, destination, sha256=sha256, token=token, timeout=timeout)
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}; check the URL or your access") from exc
    except (urllib.error.URLError, OSError) as exc:
        raise DownloadError(f"could not reach {url}: {exc}; check the network or use a pre-filled cache") from exc
    with response:
        content_type = response.headers.get("Content-Type", "")
        if "text/html" in content_type:
            raise DownloadError(f"{url} returned an HTML page, not the file (a login or error page?); check the URL")
        resumed = response.status == 206
        if not resumed:
            offset = 0
        length = response.headers.get("Content-Length")
        expected_total = offset + int(length) if length is not None else None
        first = response.read(_CHUNK)
        if not resumed and _looks_like_html(first):
            raise DownloadError(f"{url} returned an HTML page, not the file (a login or error page?)")
        with open(part, "ab" if resumed else "wb") as handle:
            chunk = first
            try:
                while chunk:
                    handle.write(chunk)
                    chunk = response.read(_CHUNK)
            except (OSError, http.client.HTTPException) as exc:
                raise DownloadError(
                    f"download of {url} was interrupted ({exc}); run again to resume from {part.stat().st_size} bytes"
                ) from exc
    size = part.stat().st_size
    if expected_total is not None and size != expected_total:
        raise DownloadError(f"download of {url} stopped at {size} of {expected_total} bytes; run again to resume")
    if sha256 is not None:
        actual = sha256_file(part)
        if actual != sha256:
            part.unlink()
            raise IntegrityError(f"{url}: sha256 {actual} does not match the card's {sha256}; the download was deleted")
    os.replace(part, destination)
    return destination


# --------------------------------------------------------------------------------------- upstream sources
def _fetch_upstream(
    card: Card,
    source: UpstreamSource,
    *,
    cache_dir: str | os.PathLike[str] | None,
    local_files_only: bool,
    token: str | bool | None,
) -> Path:
    if source.kind == "hub-file":
        assert source.repo_id is not None  # checked by the card schema
        return _hub_file(
            source.repo_id,
            source.filename,
            revision=source.revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            token=token,
            sha256=source.sha256,
        )
    assert source.url is not None
    destination = zoo_cache_dir(cache_dir) / "downloads" / card.name / source.filename
    if not destination.is_file() and offline(local_files_only):
        raise DownloadError(
            f"{card.name}: {source.url} is not cached and downloads are off (HF_HUB_OFFLINE or "
            f"local_files_only); run `zoo download {card.name}` where there is internet, or place the file "
            f"at {destination}"
        )
    bearer = token if isinstance(token, str) else None
    return download_url(source.url, destination, sha256=source.sha256, token=bearer)


def converted_dir(card: Card, cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where the converted checkpoint of an upstream-source card is cached."""
    return zoo_cache_dir(cache_dir) / "converted" / card.name


def _resolve_upstream(
    card: Card,
    source: UpstreamSource,
    *,
    cache_dir: str | os.PathLike[str] | None,
    local_files_only: bool,
    token: str | bool | None,
) -> Path:
    from zoo.converters import get_converter

    target = converted_dir(card, cache_dir)
    record = target / "source.json"
    if (target / WEIGHTS_NAME).is_file() and record.is_file():
        recorded = json.loads(record.read_text())
        if source.sha256 is None or recorded.get("sha256") == source.sha256:
            return target
        logger.warning("%s: cached conversion is of another upstream file; converting again", card.name)
    upstream = _fetch_upstream(card, source, cache_dir=cache_dir, local_files_only=local_files_only, token=token)
    digest = sha256_file(upstream)
    if source.sha256 is None:
        logger.warning(
            "%s: upstream file %s has sha256 %s (the card does not pin one yet: record it there)",
            card.name,
            source.filename,
            digest,
        )
    model = get_converter(source.converter)(upstream, **source.converter_args)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{card.name}.", dir=target.parent))
    try:
        save_pretrained(model, staging / "checkpoint", card=card)
        origin = {"url": source.url, "repo_id": source.repo_id, "filename": source.filename, "sha256": digest}
        (staging / "checkpoint" / "source.json").write_text(json.dumps(origin, indent=2) + "\n")
        replace_directory(staging / "checkpoint", target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def embedded_dir(source: EmbeddedSource) -> Path:
    """Directory of weights shipped inside the package."""
    path = Path(__file__).resolve().parent / "weights" / source.path
    if not (path / CONFIG_NAME).is_file():
        raise DownloadError(f"embedded checkpoint {path} is missing from this installation; reinstall zoo")
    return path


# ------------------------------------------------------------------------------------------------ resolve
def resolve(
    name: str | os.PathLike[str],
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> Resolved:
    """Turn a model name, alias, ``hf-hub:`` spec or local path into a local checkpoint directory."""
    text = os.fspath(name)
    options: dict[str, Any] = dict(cache_dir=cache_dir, local_files_only=local_files_only, token=token)
    if text.startswith(HF_PREFIX):
        return Resolved(_resolve_hf_spec(text, revision=revision, **options), None)
    path = Path(text).expanduser()
    if path.is_dir():
        return Resolved(path, None)
    card = get_card(text)
    source = card.spec.source
    if isinstance(source, HubSource):
        return Resolved(_resolve_hub_source(source, revision=revision, **options), card)
    if revision is not None:
        raise ValueError(f"{card.name} is not a zoo Hub repo: revision={revision!r} does not apply")
    if isinstance(source, UpstreamSource):
        return Resolved(_resolve_upstream(card, source, **options), card)
    return Resolved(embedded_dir(source), card)


# -------------------------------------------------------------------------------------------------- cache
@dataclass(frozen=True)
class CacheState:
    """What of a card's files is on this machine: ``complete`` when ``zoo.load`` would work offline."""

    complete: bool
    paths: tuple[Path, ...]

    @property
    def size(self) -> int:
        return sum(_tree_size(p) for p in self.paths)


def _tree_size(path: Path) -> int:
    if path.is_file():
        return path.resolve().stat().st_size
    return sum(p.resolve().stat().st_size for p in path.rglob("*") if p.is_file())


def cache_state(card: Card, cache_dir: str | os.PathLike[str] | None = None) -> CacheState:
    """Which files of ``card`` are cached (Hub cache, zoo downloads, converted checkpoints)."""
    source = card.spec.source
    if isinstance(source, EmbeddedSource):
        path = Path(__file__).resolve().parent / "weights" / source.path
        return CacheState(path.is_dir(), (path,) if path.is_dir() else ())
    if isinstance(source, HubSource):
        found = [
            huggingface_hub.try_to_load_from_cache(
                source.repo_id, filename, revision=source.revision, cache_dir=cache_dir
            )
            for filename in source.files
        ]
        paths = tuple(Path(p) for p in found if isinstance(p, str))
        return CacheState(len(paths) == len(source.files), paths)
    converted = converted_dir(card, cache_dir)
    download = zoo_cache_dir(cache_dir) / "downloads" / card.name
    complete = (converted / WEIGHTS_NAME).is_file()
    return CacheState(complete, tuple(p for p in (converted, download) if p.exists()))


def clear_cache(card: Card, cache_dir: str | os.PathLike[str] | None = None) -> int:
    """Delete every cached file of ``card`` (embedded weights are never touched); returns bytes freed."""
    source = card.spec.source
    if isinstance(source, EmbeddedSource):
        return 0
    state = cache_state(card, cache_dir)
    freed = state.size
    for path in state.paths:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            _delete_cached(path)
    return freed
