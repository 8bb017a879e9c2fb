"""Container health probe for the web service: does gunicorn answer /healthz at all?"""

from __future__ import annotations

import argparse
import sys
import urllib.error
import urllib.request


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url", nargs="?", default="http://127.0.0.1:8000/healthz")
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument(
        "--strict",
        action="store_true",
        help="require 200; by default a 503 (the broker or the workers are down) still shows "
        "that this web server is alive, which is all a container restart could fix",
    )
    args = parser.parse_args(argv)
    if not args.url.startswith(("http://", "https://")):
        parser.error("the URL must be http:// or https://")
    try:
        with urllib.request.urlopen(args.url, timeout=args.timeout) as response:  # noqa: S310
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    except OSError as error:
        print(f"{args.url}: {error}", file=sys.stderr)
        return 1
    healthy = status == 200 or (status == 503 and not args.strict)
    print(f"{args.url}: HTTP {status}", file=sys.stdout if healthy else sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
