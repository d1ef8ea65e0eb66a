"""`berth key create|list|revoke`: API keys of APIs that set `networking.api_keys: required`."""

from __future__ import annotations

import json
import time
from typing import Any

import click
from rich.markup import escape

from berth.cli import render
from berth.cli.context import CLIContext, env_option, pass_context
from berth.core.apikeys import check_name, format_rate, parse_expires, parse_rate


@click.group()
def key() -> None:
    """Create, list and revoke API keys (for APIs with networking.api_keys: required)."""


@key.command()
@click.argument("api")
@click.option("--name", default=None, help="Name of the key, unique per API (default: key-1, key-2, ...).")
@click.option("--expires", default=None, metavar="DURATION", help="Expire the key after 30d, 12h, 90m, 2s ... "
              "(default: never).")
@click.option("--rate", default=None, metavar="N/UNIT", help="Limit the key to 100/s, 600/m, 1000/h ...; over it: "
              "429 with Retry-After (default: no limit).")
@click.option("-o", "--output", type=click.Choice(["pretty", "json"]), default="pretty")
@env_option
@pass_context
def create(obj: CLIContext, api: str, name: str | None, expires: str | None, rate: str | None, output: str) -> None:
    """Create a key for API and print it, once: berth keeps only a salted hash of it."""
    # Checked before the daemon is asked, so a typo changes nothing (exit 2).
    expires_in = parse_expires(expires) if expires is not None else None
    per_second = parse_rate(rate) if rate is not None else None
    if name is not None:
        check_name(name)
    client = obj.local().client
    created = client.create_key(api, name, expires_in, per_second)
    if output == "json":
        click.echo(json.dumps(created, indent=2))
        return
    limits = [f"expires {_when(created['expires_at'])}" if created.get("expires_at") else "never expires"]
    if created.get("rate"):
        limits.append(f"rate {format_rate(created['rate'])}")
    obj.err.print(f"created key {escape(created['name'])!r} for {escape(api)} ({', '.join(limits)}); this is "
                  "the only time it is shown, store it now:")
    click.echo(created["key"])
    url = _url(client, api)
    obj.err.print(f"[dim]use it: curl -H 'Authorization: Bearer {created['key']}' {url}  "
                  "(or the header X-API-Key: <key>)[/dim]")
    if not created.get("required", True):
        obj.err.print(f"[yellow]{escape(api)} does not ask for keys yet (networking.api_keys: none): set "
                      "networking.api_keys: required in its spec and deploy to make them count[/yellow]")
    if not created.get("effective", True):
        obj.err.print("[yellow]the gateway workers have not confirmed the new key yet; it works within seconds"
                      "[/yellow]")


@key.command(name="list")
@click.argument("api", required=False)
@click.option("-o", "--output", type=click.Choice(["pretty", "json"]), default="pretty")
@env_option
@pass_context
def list_keys(obj: CLIContext, api: str | None, output: str) -> None:
    """List the keys (of API, or of every API): name, id, expiry, revocation, rate, requests; never the key."""
    keys = obj.local().client.list_keys(api)
    if output == "json":
        click.echo(json.dumps(keys, indent=2))
        return
    if not keys:
        obj.err.print(f"no API keys{f' for {escape(api)}' if api else ''}; create one with `berth key create "
                      f"{escape(api or '<api>')}`")
        return
    now = time.time()
    rows = [[escape(k["name"]), escape(k["api"]), k["id"], f"{render.age(now - k['created_at'])} ago",
             _expiry(k.get("expires_at"), now), f"{render.age(now - k['revoked_at'])} ago" if k.get("revoked_at")
             else "-", format_rate(k.get("rate")), str(k.get("requests", 0))] for k in keys]
    obj.console.print(render.table("name", "api", "id", "created", "expires", "revoked", "rate", "requests",
                                   rows=rows, width=obj.console.width))


@key.command()
@click.argument("api")
@click.argument("name")
@env_option
@pass_context
def revoke(obj: CLIContext, api: str, name: str) -> None:
    """Revoke API's key NAME: refused by every gateway worker once this returns."""
    revoked = obj.local().client.revoke_key(api, name)
    if revoked.get("effective", True):
        obj.console.print(f"revoked key {escape(name)!r} of {escape(api)}")
    else:
        obj.console.print(f"revoked key {escape(name)!r} of {escape(api)}; [yellow]not every gateway worker has "
                          "confirmed yet (it is refused within seconds)[/yellow]")


def _url(client: Any, api: str) -> str:
    try:
        return str(client.get_api(api)["url"])
    except Exception:  # only a hint: the key is already made
        return f"<url of {api}>"


def _when(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))


def _expiry(at: float | None, now: float) -> str:
    if at is None:
        return "never"
    return "expired" if at <= now else f"in {render.age(at - now)}"
