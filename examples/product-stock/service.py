#!/usr/bin/env python3
"""A product and stock service that emits its events through outboxd.

It owns its tables (products, with a price in cents and a stock count) in
its own database. Every change writes the row and calls outboxd.emit in the
same transaction, so the event exists exactly when the change does: a
rollback leaves neither. outboxd, run as a relay with routes
(relay.conf: product = product-events, stock = stock-events), publishes
what commits, each aggregate's events in commit order.

    python3 service.py --dsn postgresql://outboxd@127.0.0.1:55432/servicedb init
    python3 service.py --dsn ... serve --port 8088   # POST /products/<sku>/reprice {"price_cents": 990, "stock_delta": -2}
    python3 service.py --dsn ... demo                # a scripted run; prints one JSON line per event it tried

Money is an integer number of cents, never a float.
"""
import argparse
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg
from psycopg.types.json import Jsonb

SCHEMA = """
CREATE TABLE IF NOT EXISTS products (
    sku         text PRIMARY KEY,
    name        text NOT NULL,
    price_cents bigint NOT NULL CHECK (price_cents >= 0),
    stock       integer NOT NULL CHECK (stock >= 0)
)
"""


class Refused(Exception):
    """A change the rules refuse; nothing was written."""


def emit(cur, log, aggregate_type, aggregate_id, event_type, payload, headers=None):
    """outboxd.emit in the caller's transaction; notes (type, event id) in log."""
    cur.execute("SELECT outboxd.emit(%s, %s, %s, %s, %s)",
                (aggregate_type, aggregate_id, event_type, Jsonb(payload),
                 Jsonb(headers) if headers is not None else None))
    log.append((aggregate_type, str(cur.fetchone()[0])))


def create_product(conn, log, sku, name, price_cents, stock):
    """One transaction: the product row, a product event and a stock event."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("INSERT INTO products (sku, name, price_cents, stock) VALUES (%s, %s, %s, %s)",
                    (sku, name, price_cents, stock))
        emit(cur, log, "product", sku, "product.created", {"sku": sku, "name": name, "price_cents": price_cents})
        emit(cur, log, "stock", sku, "stock.set", {"sku": sku, "on_hand": stock})


def reprice_and_restock(conn, log, sku, price_cents, stock_delta, headers=None):
    """
    One transaction touching the price and then the stock: two events, or
    none. A stock that would go negative fails the second update after the
    product event was emitted, and the rollback takes that event too.
    """
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("UPDATE products SET price_cents = %s WHERE sku = %s", (price_cents, sku))
        if cur.rowcount != 1:
            raise Refused(f"no product {sku}")
        emit(cur, log, "product", sku, "product.repriced", {"sku": sku, "price_cents": price_cents}, headers)
        try:
            cur.execute("UPDATE products SET stock = stock + %s WHERE sku = %s RETURNING stock", (stock_delta, sku))
        except psycopg.errors.CheckViolation:
            raise Refused(f"not enough stock of {sku} for {stock_delta}") from None
        on_hand = cur.fetchone()[0]
        emit(cur, log, "stock", sku, "stock.changed", {"sku": sku, "delta": stock_delta, "on_hand": on_hand}, headers)


def attempt(conn, fn, *args):
    """Runs one change; returns (type, event id, committed) for each event it emitted."""
    log = []
    try:
        fn(conn, log, *args)
        return [(t, e, True) for t, e in log]
    except Refused:
        return [(t, e, False) for t, e in log]


class Handler(BaseHTTPRequestHandler):
    dsn = None

    def reply(self, code, body):
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        parts = self.path.strip("/").split("/")
        if len(parts) != 3 or parts[0] != "products" or parts[2] != "reprice":
            return self.reply(404, {"error": "POST /products/<sku>/reprice"})
        try:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
            price, delta = body["price_cents"], body.get("stock_delta", 0)
            if not isinstance(price, int) or not isinstance(delta, int) or isinstance(price, bool):
                raise ValueError("price_cents and stock_delta are whole numbers")
        except (ValueError, KeyError, TypeError) as e:
            return self.reply(400, {"error": f"bad body: {e}"})
        trace = self.headers.get("traceparent")
        log = []
        with psycopg.connect(self.dsn) as conn:
            try:
                reprice_and_restock(conn, log, parts[1], price, delta, {"traceparent": trace} if trace else None)
            except Refused as e:
                return self.reply(409, {"error": str(e)})
        self.reply(200, {"events": [e for _, e in log]})


def demo(conn, out):
    """A scripted run with rollbacks among the commits, each event tried printed as a JSON line."""
    steps = [(create_product, "sku-1", "kettle", 2990, 10),
             (create_product, "sku-2", "teapot", 1890, 4),
             (reprice_and_restock, "sku-1", 2790, -3),
             (reprice_and_restock, "sku-2", 1990, -9),     # not enough stock: its product event rolls back
             (reprice_and_restock, "sku-2", 1790, 2),
             (reprice_and_restock, "sku-1", 2590, -7),
             (reprice_and_restock, "sku-1", 2490, -1)]     # the same, on the other product
    for fn, *args in steps:
        for typ, event_id, committed in attempt(conn, fn, *args):
            out.write(json.dumps({"aggregate_type": typ, "aggregate_id": args[0], "event_id": event_id,
                                  "committed": committed}) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dsn", required=True)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("init")
    sub.add_parser("demo")
    sp = sub.add_parser("serve")
    sp.add_argument("--port", type=int, default=8088)
    a = ap.parse_args()
    with psycopg.connect(a.dsn, autocommit=True) as conn:
        conn.execute(SCHEMA)
        if a.cmd == "demo":
            demo(conn, sys.stdout)
    if a.cmd == "serve":
        Handler.dsn = a.dsn
        ThreadingHTTPServer(("127.0.0.1", a.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
