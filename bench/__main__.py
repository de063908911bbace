"""Benchmark: round trips, latency and throughput of every operation, against two baselines.

    python -m bench                     # local PostgreSQL, 10 ms added round-trip time,
                                        # 5 s per operation
    python -m bench --smoke             # a few seconds in all (CI)
    python -m bench --pgbouncer         # the same through PgBouncer in transaction mode
    python -m bench --soak --workers 2  # 30 s of mixed load by 32 clients on 2 workers,
                                        # then every write checked

Runs main.py, "naive" (the SQLModel tutorial's way: a transaction per request, get-modify-commit-
refresh, its token decoded with PyJWT) and "raw" (a sync FastAPI route, a psycopg_pool connection,
one SELECT, a dict; no auth) under uvicorn, in a database of its own on the server named by
--database-url. Round trips are counted at the wire by a TCP proxy it runs in a child process: one
is each burst the client sends after the server has answered. The proxy also adds --rtt-ms to
each, as Neon would. Throughput and the scale checks go straight to the database.
"""

import argparse
import asyncio
import http.client
import itertools
import json
import multiprocessing
import os
import random
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Annotated

import jwt
import psycopg
from fastapi import Depends, FastAPI, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import ConnectionPool
from sqlalchemy.engine import make_url
from sqlmodel import Session, SQLModel, create_engine, select

from main import Task, TaskCreate, TaskPublic, TaskUpdate, settings

# --- The naive baseline ---


@cache
def naive_engine():
    return create_engine(make_url(settings.database_url).set(drivername="postgresql+psycopg"))


def naive_session() -> Iterator[Session]:
    with Session(naive_engine()) as session:
        yield session


def naive_user(
    credentials: Annotated[HTTPAuthorizationCredentials, Depends(HTTPBearer())],
) -> str:
    try:
        claims = jwt.decode(
            credentials.credentials, settings.better_auth_secret, algorithms=["HS256"]
        )
    except jwt.PyJWTError as error:
        raise HTTPException(401, str(error)) from error
    return claims["sub"]


NaiveSession = Annotated[Session, Depends(naive_session)]
NaiveUser = Annotated[str, Depends(naive_user)]
naive = FastAPI()


def naive_owned(session: Session, user_id: str, task_id: int) -> Task:
    task = session.get(Task, task_id)
    if task is None or task.user_id != user_id:
        raise HTTPException(404)
    return task


@naive.get("/api/tasks")
def naive_list(user_id: NaiveUser, session: NaiveSession, limit: int = 20) -> list[TaskPublic]:
    query = (
        select(Task).where(Task.user_id == user_id).order_by(Task.created_at.desc(), Task.id.desc())
    )
    return session.exec(query.limit(limit)).all()


@naive.post("/api/tasks", status_code=201)
def naive_create(user_id: NaiveUser, task_in: TaskCreate, session: NaiveSession) -> TaskPublic:
    now = datetime.now(UTC)
    task = Task.model_validate(
        task_in, update={"user_id": user_id, "created_at": now, "updated_at": now}
    )
    session.add(task)
    session.commit()
    session.refresh(task)
    return task


@naive.get("/api/tasks/{task_id}")
def naive_get(user_id: NaiveUser, task_id: int, session: NaiveSession) -> TaskPublic:
    return naive_owned(session, user_id, task_id)


@naive.put("/api/tasks/{task_id}")
def naive_update(
    user_id: NaiveUser, task_id: int, task_in: TaskUpdate, session: NaiveSession
) -> TaskPublic:
    task = naive_owned(session, user_id, task_id)
    task.sqlmodel_update(task_in.model_dump(exclude_unset=True) | {"updated_at": datetime.now(UTC)})
    session.add(task)
    session.commit()
    session.refresh(task)
    return task


@naive.delete("/api/tasks/{task_id}", status_code=204)
def naive_delete(user_id: NaiveUser, task_id: int, session: NaiveSession) -> None:
    session.delete(naive_owned(session, user_id, task_id))
    session.commit()


@naive.patch("/api/tasks/{task_id}/complete")
def naive_toggle(user_id: NaiveUser, task_id: int, session: NaiveSession) -> TaskPublic:
    task = naive_owned(session, user_id, task_id)
    task.completed = not task.completed
    task.updated_at = datetime.now(UTC)
    session.add(task)
    session.commit()
    session.refresh(task)
    return task


# --- The raw baseline ---

COLUMNS = ["id", "user_id", "title", "description", "completed", "created_at", "updated_at"]


@cache
def raw_pool() -> ConnectionPool:
    url = (
        make_url(settings.database_url)
        .set(drivername="postgresql")
        .render_as_string(hide_password=False)
    )
    return ConnectionPool(url, min_size=10, max_size=10, kwargs={"autocommit": True}, open=False)


@asynccontextmanager
async def raw_lifespan(app: FastAPI) -> AsyncIterator[None]:
    with raw_pool():  # opened, and closed before the process exits
        yield


raw = FastAPI(lifespan=raw_lifespan)


@raw.get("/{user_id}/tasks/{task_id}")
def raw_get(user_id: str, task_id: int) -> dict:
    with raw_pool().connection() as connection:
        query = f"SELECT {', '.join(COLUMNS)} FROM tasks WHERE id = %s AND user_id = %s"
        row = connection.execute(query, [task_id, user_id]).fetchone()
    if row is None:
        raise HTTPException(404)
    return dict(zip(COLUMNS, row, strict=True))


# --- The proxy ---


class Proxy:
    """A TCP proxy on loopback that delays every chunk by `delay` seconds each way, counts round
    trips (a burst from the client that follows an answer from the server), and can be cut."""

    def __init__(
        self, target_host: str, target_port: int, delay: float = 0.0, counter=None
    ) -> None:
        self.target = (target_host, target_port)
        self.delay = delay
        self.counter = counter if counter is not None else multiprocessing.Value("q", 0, lock=False)
        self.connections: set[asyncio.StreamWriter] = set()
        self.loop = asyncio.new_event_loop()
        self.server = self.loop.run_until_complete(
            asyncio.start_server(self.handle, "127.0.0.1", 0)
        )
        self.port = self.server.sockets[0].getsockname()[1]
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    @property
    def round_trips(self) -> int:
        return self.counter.value

    async def handle(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        try:
            server_reader, server_writer = await asyncio.open_connection(*self.target)
        except OSError:
            client_writer.close()
            return
        self.connections |= {client_writer, server_writer}
        awaiting_answer = False

        async def pump(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, from_client: bool
        ) -> None:
            nonlocal awaiting_answer
            while data := await reader.read(65536):
                if from_client and not awaiting_answer:
                    self.counter.value += 1
                awaiting_answer = from_client
                self.loop.call_later(self.delay, writer.write, data)
            await asyncio.sleep(self.delay)
            writer.close()

        try:
            await asyncio.gather(
                pump(client_reader, server_writer, True),
                pump(server_reader, client_writer, False),
                return_exceptions=True,
            )
        finally:
            client_writer.close()
            server_writer.close()
            self.connections -= {client_writer, server_writer}

    def cut(self) -> None:
        """Close every connection and refuse new ones, as if the database had gone away."""

        async def cut() -> None:
            self.server.close()
            for writer in list(self.connections):
                writer.transport.abort()

        asyncio.run_coroutine_threadsafe(cut(), self.loop).result()

    def restore(self) -> None:
        async def restore() -> None:
            self.server = await asyncio.start_server(self.handle, "127.0.0.1", self.port)

        asyncio.run_coroutine_threadsafe(restore(), self.loop).result()

    def close(self) -> None:
        async def close() -> None:
            self.server.close()
            handlers = asyncio.all_tasks() - {asyncio.current_task()}
            for task in handlers:
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)
            await asyncio.sleep(
                0.05
            )  # the transports they closed finish closing before the loop stops

        asyncio.run_coroutine_threadsafe(close(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


def proxy_process(
    target_host: str, target_port: int, delay: float
) -> tuple[int, multiprocessing.Value]:
    """A Proxy in a child process, so that its work does not slow the benchmark's clients."""
    counter = multiprocessing.Value("q", 0, lock=False)
    port = multiprocessing.Value("i", 0)
    started = multiprocessing.Event()

    def run() -> None:
        port.value = Proxy(target_host, target_port, delay, counter).port
        started.set()
        threading.Event().wait()

    multiprocessing.Process(target=run, daemon=True).start()
    started.wait()
    return port.value, counter


# --- Servers and data ---


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def pgbouncer(host: str, port: int, user: str) -> Iterator[int]:
    """PgBouncer in transaction mode (no protocol-level prepared statements before 1.21);
    yields its port."""
    folder, listen = tempfile.mkdtemp(), free_port()
    with open(f"{folder}/users.txt", "w") as users, open(f"{folder}/pgbouncer.ini", "w") as config:
        users.write(f'"{user}" ""\n')
        config.write(
            "[databases]\n"
            f"* = host={host} port={port}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {listen}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {folder}/users.txt\n"
            "pool_mode = transaction\n"
            "default_pool_size = 10\n"
            "max_client_conn = 200\n"
        )
    for path in [folder, f"{folder}/users.txt", f"{folder}/pgbouncer.ini"]:
        os.chmod(path, 0o755)  # PgBouncer will not run as root: it reads these as postgres
    as_user = ["-u", "postgres"] if os.geteuid() == 0 else []
    process = subprocess.Popen(
        ["pgbouncer", *as_user, f"{folder}/pgbouncer.ini"], stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(listen)
        yield listen
    finally:
        process.terminate()
        process.wait()


def wait_for_port(port: int) -> None:
    for _ in range(100):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}")


@contextmanager
def server(app: str, database_url: str, secret: str, workers: int = 1) -> Iterator[int]:
    """`app` under uvicorn; yields its port."""
    port = free_port()
    env = os.environ | {"DATABASE_URL": database_url, "BETTER_AUTH_SECRET": secret}
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        app,
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    command += ["--workers", str(workers)]
    process = subprocess.Popen(command, env=env)
    try:
        wait_for_port(port)
        yield port
    finally:
        process.terminate()
        process.wait()


def seed(database: str, user_id: str, count: int) -> list[int]:
    """`count` tasks for `user_id`, one millisecond apart; their ids, newest first."""
    with psycopg.connect(database, autocommit=True) as connection:
        connection.execute(
            "INSERT INTO users (id, created_at) VALUES (%s, now()) ON CONFLICT DO NOTHING",
            [user_id],
        )
        rows = connection.execute(
            """INSERT INTO tasks (user_id, title, completed, created_at, updated_at)
               SELECT %s, 'task ' || n, n %% 2 = 0,
                      now() - n * interval '1 ms', now() - n * interval '1 ms'
               FROM generate_series(1, %s) AS n RETURNING id""",
            [user_id, count],
        ).fetchall()
        connection.execute("ANALYZE tasks")
    return sorted((row[0] for row in rows), reverse=True)


def fill_table(database: str, rows: int) -> None:
    """Grow `tasks` to `rows` rows with other users' tasks (1,000 users)."""
    with psycopg.connect(database, autocommit=True) as connection:
        missing = rows - connection.execute("SELECT count(*) FROM tasks").fetchone()[0]
        connection.execute(
            "INSERT INTO users (id, created_at)"
            " SELECT 'filler-' || n, now() FROM generate_series(0, 999) AS n"
            " ON CONFLICT DO NOTHING"
        )
        connection.execute(
            """INSERT INTO tasks (user_id, title, completed, created_at, updated_at)
               SELECT 'filler-' || n %% 1000, 'filler', false,
                      now() - n * interval '1 s', now() - n * interval '1 s'
               FROM generate_series(1, %s) AS n""",
            [max(missing, 0)],
        )
        connection.execute("VACUUM ANALYZE tasks")


def explain(database: str, query: str) -> str:
    with psycopg.connect(database, autocommit=True) as connection:
        plan = connection.execute("EXPLAIN (ANALYZE, COSTS OFF) " + query)
        return "\n".join("    " + row[0] for row in plan)


# --- Load ---


class Client:
    """One keep-alive connection, as one user; remembers how long each request took."""

    def __init__(self, port: int, token: str) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.latencies: list[float] = []

    def request(self, method: str, path: str, body: dict | None = None) -> tuple[int, object]:
        started = time.perf_counter()
        self.connection.request(method, path, json.dumps(body) if body else None, self.headers)
        response = self.connection.getresponse()
        data = response.read()
        self.latencies.append(time.perf_counter() - started)
        return response.status, json.loads(data) if data else None


def token(secret: str, user_id: str) -> str:
    return jwt.encode(
        {"sub": user_id, "exp": datetime.now(UTC) + timedelta(hours=1)}, secret, "HS256"
    )


def run_clients(
    clients: list[Client], work: Callable[[int, Client, float], None], seconds: float
) -> dict:
    """Each client runs `work(number, client, deadline)` in its own thread;
    latency percentiles and rate."""
    deadline = time.perf_counter() + seconds
    failures: list[BaseException] = []

    def run(number: int, client: Client) -> None:
        try:
            work(number, client, deadline)
        except BaseException as error:  # noqa: BLE001 - reported below, in the main thread
            failures.append(error)

    started = time.perf_counter()
    threads = [threading.Thread(target=run, args=(n, c)) for n, c in enumerate(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if failures:
        raise failures[0]
    latencies = sorted(latency for client in clients for latency in client.latencies)
    for client in clients:
        client.latencies.clear()

    def milliseconds_at(quantile: float) -> float:
        return latencies[min(int(len(latencies) * quantile), len(latencies) - 1)] * 1000

    percentiles = {"p50": 0.5, "p95": 0.95, "p99": 0.99, "max": 1}
    return {name: milliseconds_at(q) for name, q in percentiles.items()} | {
        "requests": len(latencies),
        "rate": len(latencies) / elapsed,
    }


def repeat(requests: Callable[[int], Iterator[tuple]]) -> Callable[[int, Client, float], None]:
    """Work that sends client n's requests until the deadline; any error stops the benchmark."""

    def work(number: int, client: Client, deadline: float) -> None:
        for method, path, body in requests(number):
            if time.perf_counter() > deadline:
                return
            status, answer = client.request(method, path, body)
            if status >= 400:
                raise SystemExit(f"{method} {path}: {status} {answer}")

    return work


def get_repeatedly(path: str) -> Callable[[int, Client, float], None]:
    return repeat(lambda number: itertools.repeat(("GET", path, None)))


def operations(prefix: str, ids: list[int], doomed: list[int], clients: int) -> dict[str, Callable]:
    """Each operation's endless requests;
    client n works on its own tasks, so rows are not contended."""
    doomed_ids = iter(doomed)
    lock = threading.Lock()

    def own(n: int) -> Iterator[int]:
        return itertools.cycle(ids[n::clients])

    def next_doomed() -> int:
        with lock:
            return next(doomed_ids)

    return {
        "get": lambda n: (("GET", f"{prefix}/{i}", None) for i in own(n)),
        "list 20": lambda n: itertools.repeat(("GET", f"{prefix}?limit=20", None)),
        "create": lambda n: (("POST", prefix, {"title": f"new {k}"}) for k in itertools.count()),
        "update": lambda n: (("PUT", f"{prefix}/{i}", {"title": f"renamed {i}"}) for i in own(n)),
        "toggle": lambda n: (("PATCH", f"{prefix}/{i}/complete", None) for i in own(n)),
        "delete": lambda n: (
            ("DELETE", f"{prefix}/{next_doomed()}", None) for _ in itertools.count()
        ),
    }


# --- Reports ---


def compare(args, database: str, server_url, secret: str) -> None:
    """Every operation, ours against naive: round trips at the wire, latency, rate."""
    target = (server_url.host or "127.0.0.1", server_url.port or 5432)
    with (
        pgbouncer(*target, server_url.username or "postgres")
        if args.pgbouncer
        else nullcontext() as pooler_port
    ):
        if pooler_port:
            target = ("127.0.0.1", pooler_port)
            print("Through PgBouncer 1.18 in transaction mode")
        compare_through(args, database, server_url, secret, target)


def compare_through(args, database: str, server_url, secret: str, target: tuple[str, int]) -> None:
    proxy_port, round_trips = proxy_process(*target, args.rtt_ms / 2000)
    proxied = server_url.set(
        host="127.0.0.1", port=proxy_port, database="todo_bench"
    ).render_as_string(hide_password=False)
    ids = seed(database, "bench", 1000)
    print(
        f"Through the proxy: +{args.rtt_ms:g} ms a round trip, {args.clients} clients,"
        f" {args.seconds:g} s each"
    )
    print(
        f"{'operation':10} {'app':>6} {'round trips':>12} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8}"
    )
    rows: dict[str, list[str]] = {}
    apps = [("main:app", "/api/tasks"), ("bench.__main__:naive", "/api/tasks")]
    for app, prefix in (
        apps[:1] if args.pgbouncer else apps
    ):  # naive's prepared statements break there
        label = "ours" if app == "main:app" else "naive"
        doomed = seed(database, "bench", 2000 if args.smoke else 50_000)
        with server(app, proxied, secret) as port:
            clients = [Client(port, token(secret, "bench")) for _ in range(args.clients)]
            run_clients(
                clients, repeat(operations(prefix, ids, doomed, args.clients)["get"]), 0.5
            )  # warm up
            for name, requests in operations(prefix, ids, doomed, args.clients).items():
                before = round_trips.value
                r = run_clients(clients, repeat(requests), args.seconds)
                trips = (round_trips.value - before) / r["requests"]
                latency = f"{r['p50']:8.1f} {r['p99']:8.1f}"
                line = f"{name:10} {label:>6} {trips:12.2f} {latency} {r['rate']:8.0f}"
                rows.setdefault(name, []).append(line)
    print("\n".join(line for lines in rows.values() for line in lines))


def throughput(args, database: str, secret: str) -> None:
    """GET one task straight to PostgreSQL: ours and naive (with a token) against raw (no auth),
    alternating."""
    ids = seed(database, "bench", 1000)
    clients = args.clients * 2
    print(
        f"\nGET one task straight to PostgreSQL, {clients} clients,"
        f" {args.rounds} rounds of {args.seconds:g} s"
    )
    apps = {
        "ours (with a token)": "main:app",
        "naive (with a token)": "bench.__main__:naive",
        "raw (no auth)": "bench.__main__:raw",
    }
    rates: dict[str, list[float]] = {label: [] for label in apps}
    with (
        server(apps["ours (with a token)"], database, secret) as ours,
        server(apps["naive (with a token)"], database, secret) as naive,
        server(apps["raw (no auth)"], database, secret) as raw_port,
    ):
        ports = {
            "ours (with a token)": (ours, "/api/tasks"),
            "naive (with a token)": (naive, "/api/tasks"),
        }
        ports["raw (no auth)"] = (raw_port, "/bench/tasks")
        for _ in range(args.rounds):
            for label, (port, prefix) in ports.items():
                pool = [Client(port, token(secret, "bench")) for _ in range(clients)]
                r = run_clients(
                    pool, repeat(operations(prefix, ids, [], clients)["get"]), args.seconds
                )
                rates[label].append(r["rate"])
    medians = {label: statistics.median(values) for label, values in rates.items()}
    for label, values in rates.items():
        rounds = ", ".join(f"{value:.0f}" for value in values)
        print(f"  {label:20} median {medians[label]:6.0f} req/s   rounds: {rounds}")
    ours = medians["ours (with a token)"]
    over_raw, over_naive = ours / medians["raw (no auth)"], ours / medians["naive (with a token)"]
    print(f"  ours ÷ raw {over_raw:.2f}, ours ÷ naive {over_naive:.2f}")


def scale(args, database: str, secret: str) -> None:
    """Listing 20 tasks as the table grows, and paging by offset to the end of a long list."""
    with server("main:app", database, secret) as port:
        seed(database, "scale", 100)
        print(
            "\nList 20 of a user's 100 tasks as the table grows (straight to PostgreSQL, 1 client)"
        )
        for size in [int(size) for size in args.table_sizes.split(",")]:
            fill_table(database, size)
            client = Client(
                port, token(secret, "scale")
            )  # a new connection: the last one may have timed out
            r = run_clients([client], get_repeatedly("/api/tasks?limit=20"), args.seconds)
            print(
                f"  {size:>9,} tasks in the table: p50 {r['p50']:6.2f} ms  p99 {r['p99']:6.2f} ms"
            )
        order = "ORDER BY created_at DESC, id DESC LIMIT 20"
        print(explain(database, f"SELECT * FROM tasks WHERE user_id = 'scale' {order}"))

        deep = args.deep_user_tasks
        seed(database, "deep", deep)
        client = Client(port, token(secret, "deep"))
        print(
            f"\nPaging by offset through a user with {deep:,} tasks, 20 a page"
            " (straight to PostgreSQL, 1 client)"
        )
        pages = {
            "first page": "/api/tasks?limit=20",
            "second page": "/api/tasks?limit=20&offset=20",
            "middle page": f"/api/tasks?limit=20&offset={deep // 2}",
            "last page": f"/api/tasks?limit=20&offset={deep - 20}",
        }
        for label, path in pages.items():
            r = run_clients([client], get_repeatedly(path), args.seconds)
            print(f"  {label:12} p50 {r['p50']:7.2f} ms  p99 {r['p99']:7.2f} ms")
        print(
            explain(
                database, f"SELECT * FROM tasks WHERE user_id = 'deep' {order} OFFSET {deep - 20}"
            )
        )


def expect(answer: tuple[int, object], status: int, **fields) -> dict:
    """The answer's JSON if it has `status` and these field values;
    else stop the run, saying what came."""
    code, body = answer
    if code != status or any(body[name] != value for name, value in fields.items()):
        raise SystemExit(f"expected {status} {fields}, got {code} {body}")
    return body


def soak(args, database: str, secret: str) -> None:
    """Mixed reads and writes by several users at once;
    then every acknowledged write must be there."""
    users = [f"soak-{n}" for n in range(8)]
    # What each client knows it wrote: task id -> (title, completed), or None once deleted. A client
    # only changes tasks it created, so its ledger is exact; reads cover all of its user's tasks.
    ledgers: list[dict[int, tuple[str, bool] | None]] = [{} for _ in range(args.clients)]
    weights = {"list": 30, "get": 20, "create": 20, "update": 10, "toggle": 15, "delete": 5}

    def work(number: int, client: Client, deadline: float) -> None:
        choose, ledger = random.Random(number), ledgers[number]
        for n in itertools.count():
            if time.perf_counter() > deadline:
                return
            mine = [task_id for task_id, state in ledger.items() if state]
            action = choose.choices(list(weights), list(weights.values()))[0] if mine else "create"
            task_id = choose.choice(mine) if mine else None
            title, completed = ledger[task_id] if mine else (None, False)
            if action == "list":
                expect(client.request("GET", "/api/tasks?limit=50"), 200)
            elif action == "get":
                expect(
                    client.request("GET", f"/api/tasks/{task_id}"),
                    200,
                    title=title,
                    completed=completed,
                )
            elif action == "create":
                task = expect(client.request("POST", "/api/tasks", {"title": f"{number}.{n}"}), 201)
                ledger[task["id"]] = (task["title"], False)
            elif action == "update":
                expect(
                    client.request("PUT", f"/api/tasks/{task_id}", {"title": f"{number}.{n}"}), 200
                )
                ledger[task_id] = (f"{number}.{n}", completed)
            elif action == "toggle":
                expect(
                    client.request("PATCH", f"/api/tasks/{task_id}/complete"),
                    200,
                    completed=not completed,
                )
                ledger[task_id] = (title, not completed)
            else:
                expect(client.request("DELETE", f"/api/tasks/{task_id}"), 204)
                ledger[task_id] = None

    with server("main:app", database, secret, args.workers) as port:
        clients = [Client(port, token(secret, users[n % len(users)])) for n in range(args.clients)]
        result = run_clients(clients, work, args.seconds)
        lost = 0
        for user in users:
            actual = {
                t["id"]: (t["title"], t["completed"])
                for t in Client(port, token(secret, user)).request("GET", "/api/tasks")[1]
            }
            expected = {
                task_id: state
                for n, ledger in enumerate(ledgers)
                if users[n % len(users)] == user
                for task_id, state in ledger.items()
                if state
            }
            lost += len(expected.items() - actual.items()) + len(actual.keys() - expected.keys())
    percentiles = "  ".join(f"{name} {result[name]:.1f}" for name in ["p50", "p95", "p99", "max"])
    print(
        f"Soak: {args.clients} clients as {len(users)} users on {args.workers} worker(s),"
        f" {args.seconds:g} s, mixed {weights}\n"
        f"  {result['requests']} requests, {result['rate']:.0f} req/s, 0 errors,"
        f" {lost} lost or unexpected writes\n"
        f"  latency ms: {percentiles}"
    )
    if lost:
        raise SystemExit(f"{lost} writes lost or unexpected")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--rtt-ms", type=float, default=10.0, help="round-trip time the proxy adds")
    parser.add_argument("--seconds", type=float, default=5.0, help="per measurement")
    parser.add_argument("--clients", type=int, default=4, help="concurrent keep-alive clients")
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating rounds of the throughput check"
    )
    parser.add_argument("--table-sizes", default="1000,1000000")
    parser.add_argument("--deep-user-tasks", type=int, default=100_000)
    parser.add_argument("--smoke", action="store_true", help="a few seconds in all, for CI")
    parser.add_argument(
        "--pgbouncer", action="store_true", help="round trips through PgBouncer, transaction mode"
    )
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers for the soak")
    parser.add_argument(
        "--soak",
        action="store_true",
        help="mixed load (default 30 s, 32 clients), then check writes",
    )
    args = parser.parse_args()
    if args.smoke:
        args.seconds, args.rounds, args.table_sizes, args.deep_user_tasks = (
            0.3,
            1,
            "1000,5000",
            2000,
        )
    if args.soak and "--seconds" not in sys.argv:
        args.seconds = 30
    if args.soak and "--clients" not in sys.argv:
        args.clients = 32

    server_url = make_url(args.database_url).set(drivername="postgresql")
    with psycopg.connect(
        server_url.render_as_string(hide_password=False), autocommit=True
    ) as connection:
        connection.execute("DROP DATABASE IF EXISTS todo_bench WITH (FORCE)")
        connection.execute("CREATE DATABASE todo_bench")
    database = server_url.set(database="todo_bench").render_as_string(hide_password=False)
    SQLModel.metadata.create_all(
        create_engine(server_url.set(drivername="postgresql+psycopg", database="todo_bench"))
    )
    secret = secrets.token_urlsafe(32)
    if args.soak:
        return soak(args, database, secret)
    compare(args, database, server_url, secret)
    if args.pgbouncer:
        return
    throughput(args, database, secret)
    scale(args, database, secret)


if __name__ == "__main__":
    main()
