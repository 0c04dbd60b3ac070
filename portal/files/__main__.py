"""`python -m portal.files copy …`: one copy of a model's files into a store, as a cluster region's Job
runs it (`fleet.files_job`) and as ops may run it by hand.

Hub tokens come from `HF_TOKEN` / `MODELSCOPE_API_TOKEN`, store keys from boto3's chain
(`AWS_ACCESS_KEY_ID`, …), never from argv. Progress is printed as JSON lines and, with
`--report-url`, sent to the portal (`MODELFLEET_REPORT_TOKEN`), which answers whether ops cancelled
the copy. Exit status: 0 ready, 1 failed, 2 bad arguments, 3 cancelled.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import httpx

from portal.files.bucket import Bucket
from portal.files.copy import MiB, Tuning
from portal.files.download import Request, run
from portal.files.errors import Cancelled, FilesError
from portal.files.huggingface import DEFAULT_ENDPOINT as HF_DEFAULT
from portal.files.huggingface import HuggingFace
from portal.files.modelscope import DEFAULT_ENDPOINT as MS_DEFAULT
from portal.files.modelscope import ModelScope
from portal.files.progress import Progress
from portal.files.s3source import S3Folder
from portal.files.source import Source
from portal.files.web import WebFile

REPORT_SECONDS = 2.0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m portal.files", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("copy", help="copy a repository's files into an S3-compatible store")
    c.add_argument("--source", choices=("hf", "modelscope", "s3", "https"), required=True)
    c.add_argument("--repository", required=True, help="org/name, s3://bucket/prefix or an https URL")
    c.add_argument("--revision", default="", help="branch, tag or commit; for https the file's sha256")
    c.add_argument(
        "--endpoint", default=None, help="the hub or its mirror (HF_ENDPOINT, MODELSCOPE_ENDPOINT)"
    )
    c.add_argument("--store-endpoint", required=True)
    c.add_argument("--bucket", required=True)
    c.add_argument("--prefix", default="")
    c.add_argument("--include", action="append", default=[])
    c.add_argument("--exclude", action="append", default=[])
    c.add_argument("--part-size-mib", type=int, default=8)
    c.add_argument("--parts", type=int, default=8)
    c.add_argument("--files", type=int, default=4)
    c.add_argument("--report-url", default=None, help="the portal's base URL")
    c.add_argument("--files-id", type=int, default=None)
    c.add_argument("--region", default=None)
    return p


def _source(args: argparse.Namespace) -> Source:
    if args.source == "hf":
        endpoint = args.endpoint or os.environ.get("HF_ENDPOINT") or HF_DEFAULT
        return HuggingFace(args.repository, args.revision or "main", endpoint, os.environ.get("HF_TOKEN"))
    if args.source == "modelscope":
        endpoint = args.endpoint or os.environ.get("MODELSCOPE_ENDPOINT") or MS_DEFAULT
        token = os.environ.get("MODELSCOPE_API_TOKEN")
        return ModelScope(args.repository, args.revision or "master", endpoint, token)
    if args.source == "https":
        return WebFile(args.repository, args.revision or None)
    name, _, prefix = args.repository.removeprefix("s3://").partition("/")
    return S3Folder(Bucket(args.store_endpoint, name, prefix.strip("/")))


class Reporter:
    """Sends the latest progress to the portal every REPORT_SECONDS; learns of a cancel from its answer."""

    def __init__(self, base: str, files_id: int, region: str, token: str, cancel: threading.Event) -> None:
        self.url = f"{base.rstrip('/')}/api/model-files/{files_id}/regions/{region}:report"
        self.headers = {"authorization": f"Bearer {token}"}
        self.cancel = cancel
        self.latest: Progress | None = None
        self.last = 0.0

    def take(self, p: Progress) -> None:
        self.latest = p
        if time.monotonic() - self.last >= REPORT_SECONDS:
            self.send("verifying" if p.phase == "verifying" else "downloading")

    def send(self, state: str, reason: str | None = None, commit: str | None = None) -> None:
        self.last = time.monotonic()
        body: dict[str, Any] = {"state": state, "reason": reason, "commit": commit}
        if self.latest is not None:
            body.update(self.latest.as_dict())
            body.pop("phase")
        try:
            answer = httpx.post(self.url, json=body, headers=self.headers, timeout=10)
        except httpx.HTTPError as exc:  # the copy goes on; the next report may get through
            print(json.dumps({"warning": f"progress report failed: {exc}"}), file=sys.stderr)
            return
        if answer.status_code == 200 and answer.json().get("cancel_requested"):
            self.cancel.set()


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    cancel = threading.Event()
    reporter: Reporter | None = None
    if args.report_url:
        token = os.environ.get("MODELFLEET_REPORT_TOKEN")
        if not token or args.files_id is None or not args.region:
            print("--report-url needs --files-id, --region and MODELFLEET_REPORT_TOKEN", file=sys.stderr)
            return 2
        reporter = Reporter(args.report_url, args.files_id, args.region, token, cancel)

    def progress(p: Progress) -> None:
        print(json.dumps(p.as_dict()), flush=True)
        if reporter is not None:
            reporter.take(p)

    tuning = Tuning(part_size=args.part_size_mib * MiB, parts=args.parts, files=args.files)
    request = Request(
        _source(args),
        Bucket(args.store_endpoint, args.bucket, args.prefix.strip("/")),
        tuple(args.include),
        tuple(args.exclude),
    )
    try:
        listing = run(request, tuning=tuning, cancel=cancel, progress=progress)
    except Cancelled:
        if reporter is not None:
            reporter.send("cancelled", "cancelled by request")
        return 3
    except FilesError as exc:
        print(json.dumps({"state": "failed", "reason": str(exc)}), flush=True)
        if reporter is not None:
            reporter.send("failed", str(exc))
        return 1
    print(json.dumps({"state": "ready", "commit": listing.commit, "files": len(listing.files)}), flush=True)
    if reporter is not None:
        reporter.send("ready", commit=listing.commit)
    return 0


if __name__ == "__main__":
    sys.exit(main())
