"""`leadrelay dead-letters list|show|replay|purge SERVICE`: a service's dead letters through its
admin API (`shared.dead_letters`), with the admin token.

    leadrelay dead-letters list scorer              newest first
    leadrelay dead-letters show scorer 12           the message and the whole error
    leadrelay dead-letters replay scorer 12 13      or --all (oldest first)
    leadrelay dead-letters purge scorer 12          or --all (up to the newest listed)

A service that cannot be reached or refuses the token is one line and exit status 2; a dead
letter that still fails on replay is one line each and exit status 1.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

from leadrelay.catalog import SERVICES
from leadrelay.preflight import StartupError
from shared.settings import DEFAULT_DATA_DIR

PAGE_SIZE = 500


class DeadLetterClient:
    """A service's dead-letter routes; `StartupError` (one line) when it cannot be used."""

    def __init__(self, service: str, base_url: str, token: str) -> None:
        self.service = service
        self.base_url = base_url
        self.http = httpx.Client(base_url=base_url, timeout=30.0,
                                 headers={"Authorization": f"Bearer {token}"})

    def close(self) -> None:
        self.http.close()

    def request(self, method: str, path: str, **options: Any) -> httpx.Response:
        try:
            response = self.http.request(method, f"/v1/dead-letters{path}", **options)
        except httpx.HTTPError as error:
            raise StartupError(
                f"cannot reach {self.service} at {self.base_url} ({type(error).__name__}): is "
                "it running? Give its address with --url") from None
        if response.status_code in {401, 403}:
            raise StartupError(
                f"{self.service} at {self.base_url} refused the admin token "
                f"({response.status_code}): give an admin token with --admin-token or "
                "LEADRELAY_ADMIN_TOKEN")
        return response

    def every_id(self) -> Iterator[int]:
        """Every dead letter's id, newest first."""
        before: int | None = None
        while True:
            params: dict[str, int] = {"limit": PAGE_SIZE}
            if before is not None:
                params["before"] = before
            page = _json(self.request("GET", "", params=params))
            yield from (letter["id"] for letter in page["dead_letters"])
            before = page["next_before"]
            if before is None:
                return


def run_dead_letters(args: argparse.Namespace) -> int:
    base_url = args.url or f"http://127.0.0.1:{SERVICES[args.service].port}"
    client = DeadLetterClient(args.service, base_url, _admin_token(args.admin_token))
    try:
        action = {"list": _list, "show": _show, "replay": _replay, "purge": _purge}
        code: int = action[args.action](client, args)
        return code
    finally:
        client.close()


def _list(client: DeadLetterClient, args: argparse.Namespace) -> int:
    page = _json(client.request("GET", "", params={"limit": args.limit}))
    letters = page["dead_letters"]
    if not letters:
        print(f"no dead letters in {client.service}")
    for letter in letters:
        print(f"{letter['id']:>6}  {letter['failed_at']}  "
              f"{letter['topic']}[{letter['partition']}]@{letter['offset']}  "
              f"{letter['event_type'] or '?'}  key={letter['key'] or '-'}  {letter['error']}")
    if page["next_before"] is not None:
        print(f"(more: --limit above {args.limit})")
    return 0


def _show(client: DeadLetterClient, args: argparse.Namespace) -> int:
    code = 0
    for letter_id in args.ids:
        response = client.request("GET", f"/{letter_id}")
        if response.status_code == 404:
            print(f"{letter_id}: no such dead letter")
            code = 1
            continue
        print(json.dumps(_json(response), indent=2))
    return code


def _replay(client: DeadLetterClient, args: argparse.Namespace) -> int:
    ids = sorted(client.every_id()) if args.all else args.ids
    code = 0
    for letter_id in ids:
        response = client.request("POST", f"/{letter_id}/replay")
        body = _json(response)
        if response.status_code == 200:
            print(f"{letter_id}: {body['outcome']} ({body['event_type']} {body['event_id']})")
        else:
            print(f"{letter_id}: {body.get('detail') or body.get('title')}")
            code = 1
    if not ids:
        print(f"no dead letters in {client.service}")
    return code


def _purge(client: DeadLetterClient, args: argparse.Namespace) -> int:
    if args.all:
        newest = next(client.every_id(), None)
        if newest is None:
            print(f"no dead letters in {client.service}")
            return 0
        body = _json(client.request("DELETE", "", params={"up_to": newest}))
        print(f"purged {body['purged']} dead letter(s) from {client.service}")
        return 0
    code = 0
    for letter_id in args.ids:
        response = client.request("DELETE", f"/{letter_id}")
        if response.status_code == 404:
            print(f"{letter_id}: no such dead letter")
            code = 1
        else:
            _json(response)
            print(f"{letter_id}: purged")
    return code


def _json(response: httpx.Response) -> Any:
    """The answer's body; an answer no dead-letter route gives is a one-line error."""
    if response.status_code >= 500 or response.status_code == 422:
        raise StartupError(f"{response.request.method} {response.request.url.path} answered "
                           f"{response.status_code}: {response.text[:200]}")
    return response.json() if response.content else None


def _admin_token(given: str | None) -> str:
    """--admin-token, else the first of LEADRELAY_ADMIN_TOKEN, else what `leadrelay up` kept."""
    if given:
        return given
    configured = os.environ.get("LEADRELAY_ADMIN_TOKEN", "").split(",")[0].strip()
    if configured:
        return configured
    kept = Path(os.environ.get("LEADRELAY_DATA_DIR", DEFAULT_DATA_DIR)) / "admin-token"
    if kept.exists():
        return kept.read_text().strip()
    raise StartupError("no admin token: give one with --admin-token or LEADRELAY_ADMIN_TOKEN")


def add_parser(commands: Any) -> None:
    """`leadrelay dead-letters ...` on the command line's subcommands."""
    parser = commands.add_parser(
        "dead-letters", help="list, show, replay or purge a service's dead letters (admin)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = parser.add_subparsers(dest="action", required=True)
    for name, text in (("list", "newest first"), ("show", "the message and the whole error"),
                       ("replay", "apply again, through the consumer's idempotent path"),
                       ("purge", "drop")):
        action = actions.add_parser(name, help=text)
        action.add_argument("service", choices=sorted(SERVICES))
        action.add_argument("--url", default=None,
                            help="the service's base URL (default: its local port)")
        action.add_argument("--admin-token", default=None,
                            help="default: LEADRELAY_ADMIN_TOKEN, or the token `leadrelay up` "
                                 "kept in the data directory")
        if name == "list":
            action.add_argument("--limit", type=int, default=50)
        elif name == "show":
            action.add_argument("ids", nargs="+", type=int, metavar="ID")
        else:
            which = action.add_mutually_exclusive_group(required=True)
            which.add_argument("ids", nargs="*", type=int, metavar="ID", default=[])
            which.add_argument("--all", action="store_true")
    parser.set_defaults(run=run_dead_letters)
