"""The endpoint each API of a spec file is served at, with where the file sets it.

Two APIs sharing an endpoint, in one file or with an API already deployed, are then reported at
the line that sets it: `networking.endpoint`, or the API's name when the endpoint is the default
/<name>.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from berth.config.positions import Marks, where
from berth.config.schema import NAME_PATTERN, Networking

if TYPE_CHECKING:
    from berth.config.loader import SpecFile

MAX_NAME = 63  # RealtimeAPI.name's max_length


@dataclass(frozen=True)
class EndpointSite:
    api: str
    endpoint: str
    name_at: str  # file:line:col of the API's name
    endpoint_at: str  # of networking.endpoint, or of the name when the endpoint is the default
    explicit: bool  # False: the default /<name>

    def shown(self) -> str:
        return self.endpoint if self.explicit else f"{self.endpoint} (the default, /<name>)"


def endpoint_sites(items: Sequence[tuple[int, dict[str, Any]]], marks: Marks, label: str) -> list[EndpointSite]:
    """The site of every raw API whose name and endpoint are valid, whether or not the rest of it is."""
    sites = []
    for index, item in items:
        name = item.get("name")
        if not (isinstance(name, str) and len(name) <= MAX_NAME and NAME_PATTERN.match(name)):
            continue
        name_at = where(label, marks, (index, "name"))
        networking = item.get("networking")
        raw = networking.get("endpoint") if isinstance(networking, dict) else None
        if raw is None:
            sites.append(EndpointSite(name, "/" + name, name_at, name_at, explicit=False))
            continue
        try:
            endpoint = Networking.model_validate({"endpoint": raw}).endpoint
        except ValidationError:
            continue  # reported as a field error
        if endpoint is not None:
            sites.append(EndpointSite(name, endpoint, name_at, where(label, marks, (index, "networking", "endpoint")),
                                      explicit=True))
    return sites


def duplicates(sites: Sequence[EndpointSite]) -> list[str]:
    """Two APIs of one file with the same name, or the same endpoint."""
    problems: list[str] = []
    names: set[str] = set()
    endpoints: dict[str, str] = {}
    for site in sites:
        if site.api in names:
            problems.append(f"{site.name_at}: name: API {site.api!r} is defined twice in this file")
        elif site.endpoint in endpoints:
            problems.append(f"{site.endpoint_at}: networking.endpoint: {site.shown()} is also the endpoint of "
                            f"{endpoints[site.endpoint]!r}; give each API its own endpoint")
        names.add(site.api)
        endpoints.setdefault(site.endpoint, site.api)
    return problems


def taken(sites: Sequence[EndpointSite], deployed: Mapping[str, str]) -> list[str]:
    """Endpoints that deployed APIs of other names own. `deployed`: {endpoint: API name}.

    An API keeps its own endpoint across deploys, so only an owner of another name is a clash (the
    daemon's rule too; it checks again, under its lock, for deploys racing this one).
    """
    problems = []
    for site in sites:
        owner = deployed.get(site.endpoint, site.api)
        if owner != site.api:
            problems.append(f"{site.endpoint_at}: networking.endpoint: {site.shown()} is already used by the "
                            f"deployed API {owner!r} (set networking.endpoint to another path, or delete "
                            f"{owner!r} first)")
    return problems


def taken_endpoints(spec: SpecFile, deployed: Mapping[str, str]) -> list[str]:
    """`taken` for a loaded spec file."""
    label = spec.path.name
    sites = spec.sites or [EndpointSite(api.name, api.endpoint, label, label, explicit=True) for api in spec.apis]
    return taken(sites, deployed)


def owners(documents: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """{endpoint: name} of the deployed APIs, from a backend's API list."""
    return {str(doc["endpoint"]): str(doc["name"]) for doc in documents
            if doc.get("endpoint") and doc.get("name")}
