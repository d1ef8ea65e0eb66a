"""A project's code as a reproducible tar.gz, small enough for a ConfigMap.

The same files always give the same bytes: members sorted by path, fixed mtime, uid/gid 0, no owner
names, modes 0644 or 0755, gzip without a timestamp or file name. The digest is taken over the
uncompressed tar, so a different zlib (which may compress differently) does not change it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from berth.config.project import ROOT_DOTFILES, ProjectFile, scan_project
from berth.config.units import format_bytes
from berth.errors import BerthError, ConfigError

# The API server refuses a ConfigMap whose data and binaryData (decoded) exceed 1 MiB together.
MAX_CONFIGMAP_BYTES = 1024 * 1024
# Left for spec.json next to the code in the same ConfigMap.
SPEC_ROOM = 64 * 1024
MAX_BUNDLE_BYTES = MAX_CONFIGMAP_BYTES - SPEC_ROOM


@dataclass(frozen=True)
class CodeBundle:
    name: str  # "code-<hash10>": the project's; each API's ConfigMap is named "<api>-code-<hash10>"
    digest: str  # sha256 (hex) of the uncompressed tar
    data: bytes  # tar.gz; empty when `baked`
    # The project's `.env` (its bytes, for the API's Secret), None without one. Never shown (repr=False).
    dotenv: bytes | None = field(default=None, repr=False)
    # The code is over what a ConfigMap holds and the environment names an image: the pods serve the project
    # `berth build` baked into it, and the ConfigMap carries spec.json only.
    baked: bool = False
    size: int = 0  # bytes of the tar.gz, also when `baked` (for the message that says so)


def bundle_project(root: Path, spec_file: Path, *, image: bool = False) -> CodeBundle:
    """The project's files (as a deploy snapshots them) as a reproducible tar.gz.

    `.env` is left out of the tarball: a ConfigMap is not a secret, and `berth export` output often lands
    in git. Its bytes travel apart (`CodeBundle.dotenv`), for a Secret. `image`: the environment names an
    image (`berth build`'s); code over the ConfigMap limit is then not an error but a `baked` bundle.
    """
    scan = scan_project(root, spec_file)
    if scan.problems:
        raise ConfigError(scan.problems)
    files = sorted((f for f in scan.files if not _secret(f)), key=lambda f: f.relative.as_posix())
    dotenv = next((f.source.read_bytes() for f in scan.files if _secret(f) and f.relative.name == ".env"), None)
    tar = _tar(files)
    data = _gzip(tar)
    digest = hashlib.sha256(tar).hexdigest()
    if len(data) > MAX_BUNDLE_BYTES and image:
        return CodeBundle(name=f"code-{digest[:10]}", digest=digest, data=b"", dotenv=dotenv, baked=True,
                          size=len(data))
    if len(data) > MAX_BUNDLE_BYTES:
        raise BerthError(
            f"the project's code is {format_bytes(len(data))} compressed ({len(data)} bytes), more than a "
            f"Kubernetes ConfigMap holds (at most {format_bytes(MAX_BUNDLE_BYTES)} with the spec): {root}",
            hint="bake the project into an image with `berth build` and set it with "
                 "`berth env configure NAME --image IMAGE`, or leave large files (models, data) out with "
                 ".berthignore and load them from remote storage",
        )
    return CodeBundle(name=f"code-{digest[:10]}", digest=digest, data=data, dotenv=dotenv, size=len(data))


def _secret(file: ProjectFile) -> bool:
    return len(file.relative.parts) == 1 and file.relative.name in ROOT_DOTFILES


def _tar(files: list[ProjectFile]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for file in files:
            data = file.source.read_bytes()
            info = tarfile.TarInfo(file.relative.as_posix())
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o755 if os.access(file.source, os.X_OK) else 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _gzip(data: bytes) -> bytes:
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as out:
        out.write(data)
    return buffer.getvalue()
