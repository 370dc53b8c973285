"""ClickHouse 26 for the tests: chdb (ClickHouse embedded in a Python process, PyPI
`chdb-core`) behind the part of ClickHouse's HTTP interface that the engine and the gateways
use, so that their unchanged statements run on a current engine.

What it serves (ClickHouse's HTTP interface, https://clickhouse.com/docs/interfaces/http):
- `POST /?query=…` (body: the data of an INSERT, else the rest of the query) and `POST /`
  (body: the query, an INSERT's data after its `FORMAT` line). `database`, `user`,
  `password`, `default_format` and every other URL parameter as a setting.
- Errors as ClickHouse gives them: status 500, `Code: N. DB::Exception: …` in the body and
  `X-ClickHouse-Exception-Code`.

The one thing it changes: chdb has no request body, so an INSERT's data is written to a file
and read with `FROM INFILE` (the statement's own columns and format, otherwise as sent).

`GET /report` counts the requests served; `/dual/…` also sends the request, unchanged, to the server given by `--compare-with`
(Debian's 18.16), and records whether the two answers are equal: rows compared as multisets,
floats within 1e-9 relative, `meta` (types such as LowCardinality differ) not compared. The
client gets chdb's answer. `GET /report` returns what was recorded.

Not a ClickHouse server: no compression, sessions, query ids, progress headers or
authentication; requests run one at a time. A real 24-26 server's HTTP behaviour is not
exercised by it.
"""

import argparse
import json
import sys
import traceback
import math
import os
import re
import tempfile
import threading
import urllib.error
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import chdb

# URL parameters that are not settings.
# (`compress`/`decompress` would change the bodies: refused below, never ignored.)
NOT_SETTINGS = {
    "query", "database", "user", "password", "default_format", "query_id", "session_id",
    "session_timeout", "session_check", "compress", "decompress", "enable_http_compression",
    "wait_end_of_query", "buffer_size",
}
INSERT_WITH_FORMAT = re.compile(r"^\s*(INSERT\s+INTO\s.*?)\s+FORMAT\s+(\w+)\s*$", re.I | re.S)
FORMAT_CLAUSE = re.compile(r"\bFORMAT\s+(\w+)\s*;?\s*$", re.I)
JSON_FORMATS = {"JSON", "JSONCompact", "JSONStrings", "JSONCompactStrings"}
ERROR_CODE = re.compile(r"Code: (\d+)\.")


class Engine:
    """One chdb connection, reopened when a request's settings or database differ from the
    previous one's (settings such as `readonly` cannot be unset once set)."""

    def __init__(self, path, config):
        self.path, self.config = path, config
        self.lock = threading.Lock()
        self.connection, self.signature = None, None
        self.spool = tempfile.mkdtemp(prefix="chdb-insert-")

    def _connect(self, signature):
        if self.connection is not None and self.signature == signature:
            return self.connection
        if self.connection is not None:
            self.connection.close()
        uri = f"file:{self.path}"
        if self.config:
            uri += f"?config-file={self.config}"
        self.connection, self.signature = chdb.connect(uri), None
        database, settings = signature
        # `readonly` last: once set, it refuses changes of other settings.
        for name, value in sorted(settings, key=lambda setting: setting[0] == "readonly"):
            literal = value if re.fullmatch(r"-?\d+(\.\d+)?", value) else "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
            self.connection.query(f"SET {name} = {literal}")
        if database:
            self.connection.query(f"USE {database}")
        self.signature = signature
        return self.connection

    def run(self, sql, data, database, settings, default_format):
        """Runs one statement; returns its output bytes or raises chdb's error."""
        with self.lock:
            connection = self._connect((database, tuple(sorted(settings.items()))))
            if data:
                match = INSERT_WITH_FORMAT.match(sql)
                if not match:
                    raise ValueError("Code: 62. DB::Exception: data sent with a statement that is not INSERT … FORMAT …")
                spooled = os.path.join(self.spool, "data")
                with open(spooled, "wb") as file:
                    file.write(data)
                sql = f"{match.group(1)} FROM INFILE '{spooled}' FORMAT {match.group(2)}"
            return repair_empty_totals(connection.query(sql, default_format).bytes())


# chdb 26.9's own defect (not ClickHouse's): a JSON answer with `WITH TOTALS` and no rows
# comes out with its totals block first: `\n\t],\n\n\t"totals": […]{"meta" … "data":\n\t[\n,…`.
CHDB_EMPTY_TOTALS = re.compile(r'^(\n\t\],\n\n\t"totals": [^\n]*?)(\{\n\t"meta".*?"data":\n\t\[)\n,(.*)$', re.S)


def repair_empty_totals(output):
    """Puts the blocks of a JSON answer that chdb wrote out of order back in ClickHouse's
    order, so that the client reads what a ClickHouse 26 server sends."""
    if not output.startswith(b'\n\t],\n\n\t"totals"'):
        return output
    match = CHDB_EMPTY_TOTALS.match(output.decode(errors="replace"))
    if not match:
        return output
    return (match.group(2) + "\n" + match.group(1) + "," + match.group(3)).encode()


def split_request(params, body):
    """The statement and an INSERT's data, as ClickHouse's HTTP interface reads a request."""
    if "query" in params:
        query = params["query"]
        if INSERT_WITH_FORMAT.match(query) or re.match(r"^\s*INSERT\b", query, re.I):
            return query, body
        return query + ("\n" + body.decode() if body else ""), b""
    text = body.decode()
    match = re.match(r"^(\s*INSERT\s+INTO\s[^\n]*?\bFORMAT\s+\w+)[ \t]*\n(.*)$", text, re.I | re.S)
    if match and not re.search(r"\bFORMAT\s+Values\b", match.group(1), re.I):
        return match.group(1), match.group(2).encode()
    return text, b""


def sort_key(row):
    def rounded(value):
        if isinstance(value, float) and math.isfinite(value):
            return float(f"{value:.9g}")
        if isinstance(value, list):
            return [rounded(v) for v in value]
        return value
    return json.dumps(rounded(row), sort_keys=True)


def values_equal(a, b):
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        if isinstance(a, float) or isinstance(b, float):
            if math.isnan(a) and math.isnan(b):
                return True
            return a == b or abs(a - b) <= 1e-9 * max(abs(a), abs(b))
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(values_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(values_equal(a[k], b[k]) for k in a)
    return a == b


def is_numeric(kind):
    return re.match(r"^(Nullable\()?(U?Int|Float|Decimal)", kind) is not None


def aggregates_of(totals, meta):
    """A `WITH TOTALS` row without its key columns: ClickHouse leaves their values
    unspecified (documented as defaults; 18.16 evaluates the key expression over default
    inputs, so a time bucket's key reads "0" there and "" on 26). Keys are never numbers
    in the project's statements, so the numeric columns are the aggregates."""
    if isinstance(totals, dict):
        return {column["name"]: totals[column["name"]] for column in meta if is_numeric(column["type"])}
    return [value for value, column in zip(totals, meta) if is_numeric(column["type"])]


def rows_of(output, fmt):
    """The answer's rows, in an order that does not depend on the server: sorted by every
    column. `None` for formats read as bytes."""
    if fmt in JSON_FORMATS:
        document = json.loads(output)
        parts = {"data": sorted(document.get("data", []), key=sort_key)}
        if "totals" in document:
            parts["totals"] = aggregates_of(document["totals"], document.get("meta", []))
        return parts
    if fmt == "JSONEachRow":
        return sorted((json.loads(line) for line in output.splitlines() if line.strip()), key=sort_key)
    if fmt in ("TabSeparated", "TSV", "CSV", "TabSeparatedWithNames"):
        return sorted(output.decode().splitlines())
    return None


def compare(statement, fmt, left, right):
    """`None` when the answers are equal, else what differs."""
    (left_ok, left_output), (right_ok, right_output) = left, right
    if left_ok != right_ok:
        return "only one server refused it"
    if not left_ok and left_output.startswith(b"the reference server did not answer"):
        return left_output.decode()
    if not left_ok:
        return None  # both refused: refusals are compared by the tests that expect them
    try:
        left_rows, right_rows = rows_of(left_output, fmt), rows_of(right_output, fmt)
    except ValueError as error:
        return f"an answer is not valid {fmt}: {error}"
    if left_rows is None:
        return None if left_output == right_output else "the answers' bytes differ"
    return None if values_equal(left_rows, right_rows) else "the rows differ"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path.startswith("/report"):
            with self.server.report_lock:
                body = json.dumps(self.server.report).encode()
            return self.reply(200, body, {"Content-Type": "application/json"})
        if self.path in ("/", "/ping"):
            return self.reply(200, b"Ok.\n")
        self.do_POST()

    def do_POST(self):
        try:
            self.serve()
        except Exception as error:  # a request the script cannot read: say so, as ClickHouse would
            traceback.print_exc(file=sys.stderr)
            self.reply(500, f"Code: 1000. DB::Exception: chdb server: {error!r}".encode(), {"X-ClickHouse-Exception-Code": "1000"})

    def serve(self):
        url = urllib.parse.urlsplit(self.path)
        params = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = self.read_chunked()
        database = params.get("database") or self.headers.get("X-ClickHouse-Database") or ""
        settings = {k: v for k, v in params.items() if k not in NOT_SETTINGS and not k.startswith("param_")}
        default_format = params.get("default_format") or self.headers.get("X-ClickHouse-Format") or "TabSeparated"
        if params.get("compress") == "1" or params.get("decompress") == "1":
            return self.reply(501, b"Code: 1000. DB::Exception: the chdb server does not compress", {"X-ClickHouse-Exception-Code": "1000"})
        statement, data = split_request(params, body)
        try:
            output = self.server.engine.run(statement, data, database, settings, default_format)
            result = (True, output)
        except Exception as error:  # chdb raises its own error type with ClickHouse's text
            print(f"refused: {statement[:300]!r}: {error}", file=sys.stderr, flush=True)
            result = (False, str(error).encode())
        with self.server.report_lock:
            self.server.report["served"] += 1
        if url.path.startswith("/dual"):
            self.record(url.query, body, statement, default_format, result)
        ok, output = result
        if ok:
            return self.reply(200, output, {"X-ClickHouse-Server-Display-Name": "chdb"})
        code = ERROR_CODE.search(output.decode(errors="replace"))
        return self.reply(500, output, {"X-ClickHouse-Exception-Code": code.group(1) if code else "1000"})

    def read_chunked(self):
        body = bytearray()
        while True:
            size = int(self.rfile.readline().strip().split(b";")[0], 16)
            if size == 0:
                while self.rfile.readline().strip():  # trailers, then the blank line
                    pass
                return bytes(body)
            body += self.rfile.read(size)
            self.rfile.readline()

    def record(self, query_string, body, statement, default_format, result):
        request = urllib.request.Request(self.server.compare_with + "/?" + query_string, data=body, method="POST")
        for header in ("X-ClickHouse-User", "X-ClickHouse-Key", "X-ClickHouse-Database", "X-ClickHouse-Format"):
            if self.headers.get(header):
                request.add_header(header, self.headers[header])
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                other = (True, response.read())
        except urllib.error.HTTPError as error:
            other = (False, error.read())
        except OSError as error:  # unreachable, timed out: a difference, not a crash
            other = (False, f"the reference server did not answer: {error}".encode())
        match = FORMAT_CLAUSE.search(statement)
        fmt = match.group(1) if match else default_format
        difference = compare(statement, fmt, other, result)
        with self.server.report_lock:
            report = self.server.report
            report["statements"] += 1
            if difference is None:
                report["equal"] += 1
            else:
                report["differences"].append({
                    "statement": statement,
                    "settings": query_string,
                    "difference": difference,
                    "reference": other[1].decode(errors="replace")[:4000],
                    "chdb": result[1].decode(errors="replace")[:4000],
                })

    def reply(self, status, body, headers=None):
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", required=True, help="chdb's data directory")
    parser.add_argument("--config", help="a ClickHouse server configuration file (storage policies)")
    parser.add_argument("--compare-with", default="", help="the server /dual requests also go to")
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.engine = Engine(args.path, args.config)
    server.compare_with = args.compare_with.rstrip("/")
    server.report = {"served": 0, "statements": 0, "equal": 0, "differences": []}
    server.report_lock = threading.Lock()
    print(f"chdb {chdb.__version__} serving on 127.0.0.1:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
