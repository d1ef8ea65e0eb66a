"""What a kubernetes environment says about its cluster: names only, never credentials.

`environments.json` keeps, per kubernetes environment, the `settings` object `ClusterSettings.to_settings()`
writes: the kube context (credentials stay in the user's kubeconfig), the namespace, Prometheus' address
(for KEDA's trigger), the runtime image, and the Gateway API Gateway that routes to the APIs.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from berth import __version__
from berth.errors import ConfigError

DEFAULT_NAMESPACE = "default"
DEFAULT_KUBECONFIG = Path("~/.kube/config")
RUNTIME_REPOSITORY = "berth/runtime"

DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")

# The distribution project's reference grammar (github.com/distribution/reference), without IPv6 hosts:
# [host[:port]/]path[:tag][@digest].
_HOST_PART = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"{_HOST_PART}(?:\.{_HOST_PART})*(?::[0-9]+)?"
_PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
IMAGE_REFERENCE = re.compile(rf"(?:{_HOST}/)?{_PATH_PART}(?:/{_PATH_PART})*(?::{_TAG})?(?:@{_DIGEST})?")
_IMAGE_NAME_MAX = 255


@dataclass(frozen=True)
class ClusterSettings:
    """Where and how a kubernetes environment runs its APIs. Invalid values raise ConfigError on construction."""

    context: str | None = None  # None: the kubeconfig's current context
    namespace: str = DEFAULT_NAMESPACE
    prometheus: str | None = None  # http(s) URL KEDA's trigger queries; None: no KEDA (HPA fallback in export)
    image: str | None = None  # None: the runtime image of this berth's version (see `runtime_image`)
    gateway: str | None = None  # a Gateway as `name` or `namespace/name`; None: no HTTPRoute

    def __post_init__(self) -> None:
        problems = _problems({f.name: getattr(self, f.name) for f in fields(self)})
        if problems:
            raise ConfigError(problems, hint=_HINT)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> ClusterSettings:
        """The settings an environment stores, validated: every problem reported at once."""
        known = {f.name for f in fields(cls)}
        problems = [f"unknown setting {key!r} (known: {', '.join(sorted(known))})"
                    for key in settings if key not in known]
        values: dict[str, Any] = {}
        for key in (f.name for f in fields(cls) if f.name in settings):
            value = settings[key]
            if value is None and key != "namespace":
                continue
            if not isinstance(value, str):
                problems.append(f"{key}: expected a string, got {type(value).__name__}")
                continue
            values[key] = value
        problems += _problems(values)
        if problems:
            raise ConfigError(problems, hint=_HINT)
        return cls(**values)

    def to_settings(self) -> dict[str, str]:
        """What `environments.json` keeps: the values set, names and addresses only."""
        return {f.name: value for f in fields(self) if (value := getattr(self, f.name)) is not None}

    @property
    def gateway_ref(self) -> tuple[str, str | None] | None:
        """(name, namespace or None for the API's own) of the Gateway, or None when there is none."""
        if self.gateway is None:
            return None
        namespace, _, name = self.gateway.rpartition("/")
        return name, namespace or None


_HINT = "change it with `berth env configure NAME --<setting> VALUE` (an empty value unsets it)"


def runtime_image(settings: ClusterSettings, gpu: bool) -> str:
    """The image an API's pods run: the environment's own, else berth's runtime image for this version
    (`-cuda` for an API with compute.gpu > 0, `-cpu` otherwise)."""
    if settings.image is not None:
        return settings.image
    return f"{RUNTIME_REPOSITORY}:{__version__}-{'cuda' if gpu else 'cpu'}"


_CHECKS: dict[str, Callable[[str], list[str]]] = {}  # filled below, by setting


def _problems(values: Mapping[str, Any]) -> list[str]:
    """What is wrong with the values set (None: unset), in the order of the fields."""
    return [problem for key, check in _CHECKS.items() if values.get(key) is not None
            for problem in check(values[key])]


def _context_problems(context: str) -> list[str]:
    if not context.strip():
        return ["context: must not be empty (leave it out to use the kubeconfig's current context)"]
    if any(not char.isprintable() for char in context):
        return [f"context: {context!r} contains control characters"]
    return []


def _namespace_problems(namespace: str) -> list[str]:
    if not isinstance(namespace, str) or len(namespace) > 63 or not DNS1123_LABEL.fullmatch(namespace):
        return [f"namespace: {namespace!r} is not a valid namespace name (a DNS-1123 label: at most 63 "
                "lowercase letters, digits and -, starting and ending with a letter or digit)"]
    return []


def _prometheus_problems(url: str) -> list[str]:
    what = f"prometheus: {url!r}"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (parsed for its ValueError: a port out of range or not a number)
    except ValueError as exc:
        return [f"{what} is not a valid URL ({exc})"]
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return [f"{what} is not an http(s) URL such as http://prometheus.monitoring:9090"]
    if parts.username is not None or parts.password is not None:
        return [f"{what} holds credentials: berth stores only addresses; give KEDA credentials through its "
                "TriggerAuthentication instead"]
    if parts.query or parts.fragment:
        return [f"{what}: give the server's address without a query or fragment"]
    return []


def _image_problems(image: str) -> list[str]:
    name = image.split("@", 1)[0]
    if image != image.strip() or not IMAGE_REFERENCE.fullmatch(image) or len(name) > _IMAGE_NAME_MAX:
        return [f"image: {image!r} is not an image reference such as registry.example/team/runtime:1.0 "
                "([registry/]repository[:tag][@sha256:digest], lowercase repository)"]
    return []


def _gateway_problems(gateway: str) -> list[str]:
    parts = gateway.split("/")
    ok = len(parts) <= 2 and len(parts[-1]) <= 253 and bool(DNS1123_SUBDOMAIN.fullmatch(parts[-1]))
    if len(parts) == 2:
        ok = ok and not _namespace_problems(parts[0])
    if not ok:
        return [f"gateway: {gateway!r} is not a Gateway name: give `name` (in the API's namespace) or "
                "`namespace/name`, lowercase DNS names"]
    return []


_CHECKS.update(context=_context_problems, namespace=_namespace_problems, prometheus=_prometheus_problems,
               image=_image_problems, gateway=_gateway_problems)


# --- the user's kubeconfig (read only to check a context name; nothing of it is stored) ----------------
@dataclass(frozen=True)
class KubeContexts:
    """The contexts the user's kubeconfig files define, and what could not be read."""

    files: tuple[Path, ...]  # the files read
    contexts: frozenset[str] = frozenset()
    current: str | None = None
    problems: tuple[str, ...] = field(default=())  # files named but missing or unreadable

    @property
    def found(self) -> bool:
        return bool(self.files)


def kubeconfig_paths(environ: Mapping[str, str] | None = None) -> list[Path]:
    """The files kubectl reads: KUBECONFIG's (a list like PATH) or ~/.kube/config."""
    environ = os.environ if environ is None else environ
    listed = [Path(item).expanduser() for item in environ.get("KUBECONFIG", "").split(os.pathsep) if item]
    return listed or [DEFAULT_KUBECONFIG.expanduser()]


def read_contexts(paths: Iterable[Path]) -> KubeContexts:
    """Context names across the files (the first file's current-context wins, as kubectl merges them)."""
    import yaml
    from lightkube import KubeConfig
    from lightkube.core.exceptions import ConfigError as KubeConfigError

    files: list[Path] = []
    contexts: set[str] = set()
    current: str | None = None
    problems: list[str] = []
    for path in paths:
        if not path.is_file():
            problems.append(f"{path} does not exist")
            continue
        try:
            config = KubeConfig.from_file(path)
        except (KubeConfigError, yaml.YAMLError, OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            problems.append(f"{path} cannot be read as a kubeconfig: {exc}")
            continue
        files.append(path)
        contexts |= set(config.contexts)
        current = current or config.current_context
    return KubeContexts(tuple(files), frozenset(contexts), current, tuple(problems))
