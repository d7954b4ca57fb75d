"""A stand-in for llama.cpp's ``llama-server`` (same flags, same key rule, OpenAI /v1/completions),
so the managed-child guarantees (its own key, loopback, dies with its parent) are tested without
building llama.cpp. Only the standard library: it starts in a fraction of a second."""

from __future__ import annotations

import argparse
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("-m", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--api-key")
    ap.add_argument("-np", type=int, default=1)
    ap.add_argument("-c", type=int)
    ap.add_argument("-t", type=int)
    ap.add_argument("-tb", type=int)
    # llama.cpp takes the word after a flag as its value even when it starts with '-' (a random
    # key may): join them so argparse does too
    joined, i = [], 0
    while i < len(argv):
        if argv[i] in ("--api-key", "-m", "--port", "--host") and i + 1 < len(argv):
            joined.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            joined.append(argv[i])
            i += 1
    args, _ = ap.parse_known_args(joined)

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def reply(self, code: int, body: dict):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            if self.path == "/health":  # public, as in llama-server
                return self.reply(200, {"status": "ok"})
            self.reply(404, {"error": "not found"})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            if args.api_key and self.headers.get("Authorization") != f"Bearer {args.api_key}":
                return self.reply(401, {"error": {"message": "Invalid API Key", "type": "authentication_error"}})
            if self.path != "/v1/completions":
                return self.reply(404, {"error": "not found"})
            n = min(int(body.get("max_tokens") or 4), 4)
            self.reply(
                200,
                {
                    "choices": [{"text": " ok" * n, "finish_reason": "length"}],
                    "usage": {"prompt_tokens": len(body.get("prompt") or []), "completion_tokens": n},
                },
            )

    ThreadingHTTPServer((args.host, args.port), Handler).serve_forever()


if __name__ == "__main__":
    main(sys.argv[1:])
