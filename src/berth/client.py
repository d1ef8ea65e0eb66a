"""The Python client of the control plane; the CLI is one of its users.

    from berth.client import Client
    from berth.config import load_spec
    client = Client.for_home(Path("~/.berth").expanduser())
    client.deploy(load_spec("examples/hello"))
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from berth.backends.base import APIDocument, Change, Deletion
from berth.control.launcher import RESTART_WAIT, StartOptions, daemon_back_or_none, ensure_daemon, supervisor_running
from berth.control.paths import Paths
from berth.errors import (
    BerthError,
    ConfigError,
    Conflict,
    DaemonUnavailable,
    EnvironmentFailed,
    InsufficientCapacity,
    NotFound,
)

if TYPE_CHECKING:
    from berth.config.loader import SpecFile

ERRORS: dict[str, type[BerthError]] = {"NotFound": NotFound, "Conflict": Conflict,
                                       "InsufficientCapacity": InsufficientCapacity,
                                       "EnvironmentFailed": EnvironmentFailed}
DEFAULT_TIMEOUT = 120.0


class Client:
    def __init__(self, paths: Paths, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.paths = paths
        self.timeout = timeout
        self._http: httpx.Client | None = None

    @classmethod
    def for_home(cls, home: Path) -> Client:
        return cls(Paths(home))

    @property
    def http(self) -> httpx.Client:
        if self._http is None:
            transport = httpx.HTTPTransport(uds=str(self.paths.socket))
            self._http = httpx.Client(transport=transport, base_url="http://berth", timeout=self.timeout)
        return self._http

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- calls --------------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        return self._call("GET", "/v1/info")  # type: ignore[no-any-return]

    def list_apis(self, window: float | None = None) -> list[dict[str, Any]]:
        """`window`: request figures over the last `window` seconds (from the history)."""
        return self._call("GET", "/v1/apis", params=_window(window))  # type: ignore[no-any-return]

    def get_api(self, name: str, window: float | None = None) -> dict[str, Any]:
        return self._call("GET", f"/v1/apis/{name}", params=_window(window))  # type: ignore[no-any-return]

    def pin_baseline(self, name: str, since: float | None = None, until: float | None = None) -> dict[str, Any]:
        body = {"since": since, "until": until}
        return self._call("POST", f"/v1/apis/{name}/baseline", json=body)  # type: ignore[no-any-return]

    def unpin_baseline(self, name: str) -> dict[str, Any]:
        return self._call("DELETE", f"/v1/apis/{name}/baseline")  # type: ignore[no-any-return]

    def request_logs(self, name: str, follow: bool = False, tail: int = 200) -> Iterator[dict[str, Any]]:
        """The gateway's request log entries, merged by time."""
        for line in self._stream(f"/v1/apis/{name}/requests", follow, tail, lines=True):
            if line.strip():
                yield json.loads(line)

    def deploy(self, spec: SpecFile, verify: bool = False,
               progress: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
        """`verify`: an API at zero replicas starts one, so that a failing `__init__` shows now.
        `progress` hears each step of building the project's Python environment, as it happens."""
        from berth.pyenv.project import forwarded  # packaging loads for a deploy, not for every command

        body = {"spec_file": str(spec.path), "apis": [api.model_dump(mode="json") for api in spec.apis],
                "verify": verify, "variables": forwarded(os.environ)}
        if spec.splitters:
            body["splitters"] = [splitter.model_dump(mode="json") for splitter in spec.splitters]
        headers = {"Accept": "application/x-ndjson"}
        # Between two lines of a long install (a large download) the daemon may say nothing for minutes.
        timeout = httpx.Timeout(self.timeout, read=None)
        try:
            with self.http.stream("POST", "/v1/apis", json=body, headers=headers, timeout=timeout) as response:
                if response.status_code >= 400:
                    response.read()
                    _raise_for(response)
                if response.headers.get("content-type", "").startswith("application/json"):
                    response.read()  # a daemon started by an older berth answers in one document
                    return response.json()  # type: ignore[no-any-return]
                for line in response.iter_lines():
                    if not line.strip():
                        continue
                    message = json.loads(line)
                    if "progress" in message and progress is not None:
                        progress(message["progress"])
                    elif "error" in message:
                        _raise_body(message["error"])
                    elif "results" in message:
                        return message["results"]  # type: ignore[no-any-return]
        except (httpx.ConnectError, httpx.RemoteProtocolError, FileNotFoundError) as exc:
            raise self._unavailable(exc) from exc
        raise DaemonUnavailable("the berth daemon stopped answering in the middle of the deploy",
                                hint=f"see its log: {self.paths.daemon_log}; `berth get` shows what was deployed")

    def list_splitters(self) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/splitters")  # type: ignore[no-any-return]

    def get_splitter(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"/v1/splitters/{name}")  # type: ignore[no-any-return]

    def refresh(self, name: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/apis/{name}/refresh")  # type: ignore[no-any-return]

    def delete(self, name: str) -> dict[str, Any]:
        return self._call("DELETE", f"/v1/apis/{name}")  # type: ignore[no-any-return]

    # --- API keys (control/keys.py) ---------------------------------------------------------------
    def create_key(self, api: str, name: str | None = None, expires_in: float | None = None,
                   rate: float | None = None) -> dict[str, Any]:
        """The new key is in the answer's "key", and nowhere else ever again."""
        body = {"api": api, "name": name, "expires_in": expires_in, "rate": rate}
        return self._call("POST", "/v1/keys", json=body)  # type: ignore[no-any-return]

    def list_keys(self, api: str | None = None) -> list[dict[str, Any]]:
        return self._call("GET", "/v1/keys", params={"api": api} if api else {})  # type: ignore[no-any-return]

    def revoke_key(self, api: str, name: str) -> dict[str, Any]:
        return self._call("POST", f"/v1/keys/{api}/{name}/revoke")  # type: ignore[no-any-return]

    def shutdown(self) -> None:
        self._call("POST", "/v1/shutdown")

    def logs(self, name: str, follow: bool = False, tail: int = 200) -> Iterator[str]:
        return self._stream(f"/v1/apis/{name}/logs", follow, tail)

    def _stream(self, path: str, follow: bool, tail: int, lines: bool = False) -> Iterator[str]:
        params = {"follow": "1" if follow else "0", "tail": str(tail)}
        try:
            with self.http.stream("GET", path, params=params, timeout=None if follow else self.timeout) as response:
                if response.status_code >= 400:
                    response.read()
                    _raise_for(response)
                yield from (response.iter_lines() if lines else response.iter_text())
        except (httpx.ConnectError, httpx.RemoteProtocolError, FileNotFoundError) as exc:
            raise self._unavailable(exc) from exc

    # --- plumbing -----------------------------------------------------------------------------
    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except (httpx.ConnectError, httpx.RemoteProtocolError, FileNotFoundError) as exc:
            # A read while the supervisor restarts a crashed daemon waits for it (about a second).
            if method != "GET" or daemon_back_or_none(self.paths, RESTART_WAIT) is None:
                raise self._unavailable(exc) from exc
            try:
                response = self.http.request(method, path, **kwargs)
            except (httpx.ConnectError, httpx.RemoteProtocolError, FileNotFoundError) as again:
                raise self._unavailable(again) from again
        except httpx.TimeoutException as exc:
            raise DaemonUnavailable(f"the berth daemon did not answer within {self.timeout:g}s",
                                    hint=f"see its log: {self.paths.daemon_log}") from exc
        if response.status_code >= 400:
            _raise_for(response)
        return response.json()

    def _unavailable(self, exc: Exception) -> DaemonUnavailable:
        if supervisor_running(self.paths):
            return DaemonUnavailable(
                "the berth daemon is restarting (its supervisor restarts it by itself; traffic is not affected)",
                hint=f"retry in a moment; if it keeps failing, see {self.paths.daemon_log}")
        if self.paths.socket.exists():
            return DaemonUnavailable(
                f"the berth daemon is not answering on {self.paths.socket} (stale socket: {exc})",
                hint="start it again with `berth cluster up`; its last log is in " + str(self.paths.daemon_log))
        return DaemonUnavailable(
            f"the berth daemon is not running (home {self.paths.home})",
            hint="start it with `berth cluster up`, or run `berth deploy`, which starts it")


def _window(window: float | None) -> dict[str, str]:
    return {} if window is None else {"since": f"{window:g}"}


def _raise_for(response: httpx.Response) -> None:
    try:
        body = response.json()
    except ValueError:
        raise BerthError(f"the daemon answered {response.status_code}: {response.text[:500]}") from None
    _raise_body(body)


def _raise_body(body: dict[str, Any]) -> None:
    kind = body.get("kind", "")
    if kind == "ConfigError":
        raise ConfigError(body.get("problems") or [body.get("error", "")], hint=body.get("hint"))
    raise ERRORS.get(kind, BerthError)(body.get("error", "unknown error"), hint=body.get("hint"))


class LocalBackend:
    """The local daemon as the CLI's `Backend`: the client's calls, answered with the interface's values."""

    def __init__(self, paths: Paths, host: str = "127.0.0.1", port: int = 8888) -> None:
        self.paths = paths
        self.host = host
        self.port = port  # the gateway's, used only when this starts the daemon
        self._client: Client | None = None

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = Client(self.paths)
        return self._client

    def ensure_running(self, options: StartOptions | None = None) -> str | None:
        started = ensure_daemon(self.paths, self.host, self.port, options)
        if not started.started:
            return None
        info = started.info
        return (f"started the berth daemon (pid {info['pid']}, gateway http://{info['host']}:{info['port']}); "
                f"its log is {self.paths.daemon_log}")

    def deploy(self, spec: SpecFile, verify: bool = False,
               progress: Callable[[str], None] | None = None) -> list[Change]:
        return [Change.from_json(result) for result in self.client.deploy(spec, verify=verify, progress=progress)]

    def list_apis(self, window: float | None = None) -> list[APIDocument]:
        return self.client.list_apis(window)

    def get_api(self, name: str, window: float | None = None) -> APIDocument:
        return self.client.get_api(name, window)

    def request_logs(self, name: str, follow: bool = False, tail: int = 200) -> Iterator[dict[str, Any]]:
        return self.client.request_logs(name, follow=follow, tail=tail)

    def list_splitters(self) -> list[APIDocument]:
        return self.client.list_splitters()

    def get_splitter(self, name: str) -> APIDocument:
        return self.client.get_splitter(name)

    def pin_baseline(self, name: str, since: float | None, until: float | None) -> dict[str, Any]:
        return self.client.pin_baseline(name, since, until)

    def unpin_baseline(self, name: str) -> dict[str, Any]:
        return self.client.unpin_baseline(name)

    def describe(self, name: str) -> APIDocument:
        # The daemon's detail view already carries placement, versions and autoscaler decisions.
        return self.client.get_api(name)

    def url(self, name: str) -> str:
        return str(self.client.get_api(name)["url"])

    def logs(self, name: str, follow: bool = False, tail: int = 200) -> Iterator[str]:
        return self.client.logs(name, follow=follow, tail=tail)

    def refresh(self, name: str) -> Change:
        return Change.from_json(self.client.refresh(name))

    def delete(self, name: str) -> Deletion:
        result = self.client.delete(name)
        return Deletion(api=str(result.get("api", name)), stopped=bool(result.get("stopped")),
                        keys_removed=int(result.get("keys_removed") or 0))

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
