"""The API's contract as tests: routes, ownership, auth, validation, errors, configuration,
deployment.

SQLite by default; on PostgreSQL when TEST_DATABASE_URL is set (the tests make their own database
there).
"""

import asyncio
import base64
import hashlib
import hmac
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from datetime import UTC, datetime, timedelta
from functools import partialmethod
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from types import SimpleNamespace

import httpx2
import hypothesis
import jwt
import psycopg
import pytest
import schemathesis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, delete, text
from sqlalchemy.engine import make_url
from sqlmodel import Session, SQLModel, select

import main

SECRET = "test-secret-that-is-long-enough-for-hs256"
TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL")
PREFIXES = ["/api/tasks", "/api/alice/tasks"]
needs_postgres = pytest.mark.skipif(
    not TEST_DATABASE_URL, reason="needs PostgreSQL (TEST_DATABASE_URL)"
)


# --- Fixtures and helpers ---


@contextmanager
def new_postgres_database(server_url: str):
    """A database of our own on that server, dropped afterwards: no test touches data there."""
    server = make_url(server_url).set(drivername="postgresql+psycopg")
    name = f"todo_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield server.set(database=name)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def engine(tmp_path_factory):
    if not TEST_DATABASE_URL:
        engine = main.create_db_engine(f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}")
        yield engine
        engine.dispose()
        return
    with new_postgres_database(TEST_DATABASE_URL) as url:
        engine = main.create_db_engine(url.render_as_string(hide_password=False))
        yield engine
        engine.dispose()


@pytest.fixture(autouse=True)
def configured(engine, monkeypatch):
    """Every test starts from empty tables and a known configuration, whatever `.env` says."""
    monkeypatch.setattr(main, "engine", engine)
    known = {
        "database_url": "sqlite:///unused.db",
        "better_auth_secret": SECRET,
        "better_auth_url": None,
        "better_auth_jwks_url": None,
        "jwt_issuer": None,
        "jwt_audience": None,
    }
    for name, value in known.items():
        monkeypatch.setattr(main.settings, name, value)
    monkeypatch.setattr(main, "key_set", main.KeySet())  # no keys from another test's JWKS
    SQLModel.metadata.create_all(engine)
    yield
    with Session(engine) as session:
        for table in reversed(SQLModel.metadata.sorted_tables):
            session.exec(delete(table))


@pytest.fixture
def client():
    with TestClient(main.app) as client:
        yield client


def make_token(
    user_id: str | None = "alice", key=SECRET, algorithm="HS256", headers=None, **claims
) -> str:
    """A token; a claim given as None is left out."""
    payload = {"sub": user_id, "exp": datetime.now(UTC) + timedelta(hours=1)} | claims
    payload = {name: value for name, value in payload.items() if value is not None}
    return jwt.encode(payload, key, algorithm=algorithm, headers=headers)


class User:
    """Someone signed in: `alice.get(path)` sends her token along (flaskr's `auth` fixture)."""

    def __init__(self, client: TestClient, user_id: str):
        self.client = client
        self.id = user_id

    def request(self, method: str, path: str, **kwargs) -> httpx2.Response:
        headers = {"Authorization": f"Bearer {make_token(self.id)}"} | kwargs.pop("headers", {})
        return self.client.request(method, path, headers=headers, **kwargs)

    get = partialmethod(request, "GET")
    post = partialmethod(request, "POST")
    put = partialmethod(request, "PUT")
    patch = partialmethod(request, "PATCH")
    delete = partialmethod(request, "DELETE")

    def create(self, title: str = "Buy milk", **fields) -> dict:
        r = self.post("/api/tasks", json={"title": title, **fields})
        assert r.status_code == 201, r.text
        return r.json()

    def titles(self, path: str = "/api/tasks", **params) -> list[str]:
        r = self.get(path, params=params)
        assert r.status_code == 200, r.text
        return [task["title"] for task in r.json()]


@pytest.fixture
def alice(client):
    return User(client, "alice")


@pytest.fixture
def bob(client):
    return User(client, "bob")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- Tasks: every operation under both prefixes ---


@pytest.mark.parametrize("prefix", PREFIXES)
def test_create_returns_the_task_and_its_location(alice, prefix):
    r = alice.post(prefix, json={"title": "  Buy milk  ", "description": "2 litres"})
    assert r.status_code == 201, r.text
    task = r.json()
    assert task == {
        "id": task["id"],
        "user_id": "alice",
        "title": "Buy milk",
        "description": "2 litres",
        "completed": False,
        "created_at": task["created_at"],
        "updated_at": task["created_at"],
    }
    assert r.headers["Location"] == f"{prefix}/{task['id']}"
    assert alice.get(r.headers["Location"]).json() == task


def test_create_without_description(alice):
    assert alice.create("Call mum")["description"] is None


def test_create_ignores_fields_the_caller_must_not_set(alice):
    sent = {
        "title": "Mine",
        "id": 999,
        "user_id": "bob",
        "completed": True,
        "created_at": "2000-01-01T00:00:00Z",
    }
    task = alice.post("/api/tasks", json=sent).json()
    assert task["id"] != 999
    assert task["user_id"] == "alice"
    assert task["completed"] is False
    assert task["created_at"].startswith(str(datetime.now(UTC).year))


@pytest.mark.parametrize("prefix", PREFIXES)
def test_list_is_mine_and_newest_first(alice, bob, prefix):
    for title in ["first", "second", "third"]:
        alice.create(title)
    bob.create("bob's")
    assert alice.titles(prefix) == ["third", "second", "first"]


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("all", ["done", "open"]),
        ("pending", ["open"]),
        ("completed", ["done"]),
        (None, ["done", "open"]),
    ],
)
def test_list_filters_by_status(alice, prefix, status, expected):
    alice.create("open")
    done = alice.create("done")
    alice.patch(f"/api/tasks/{done['id']}/complete")
    assert alice.titles(prefix, **({"status": status} if status else {})) == expected


@pytest.mark.parametrize("prefix", PREFIXES)
def test_list_pages_with_limit_and_offset(alice, prefix):
    for n in range(5):
        alice.create(f"task {n}")
    assert alice.titles(prefix, limit=2, offset=1) == ["task 3", "task 2"]


@pytest.mark.parametrize("prefix", PREFIXES)
def test_list_sorts_by_title_a_to_z_then_newest_first(alice, prefix):
    for title in ["banana", "Apple", "cherry", "apple"]:
        alice.create(title)
    assert alice.titles(prefix, sort="title") == ["apple", "Apple", "banana", "cherry"]
    assert alice.titles(prefix, sort="created") == ["apple", "cherry", "Apple", "banana"]
    assert alice.titles(prefix, sort="title", status="pending", limit=2, offset=1) == [
        "Apple",
        "banana",
    ]


def test_list_orders_same_instant_by_id(alice, engine):
    same = datetime(2030, 1, 1, tzinfo=UTC)
    with Session(engine) as session:
        session.add(main.User(id="alice", created_at=same))
        session.commit()
        for title in ["a", "b", "c"]:
            session.add(main.Task(title=title, user_id="alice", created_at=same, updated_at=same))
            session.commit()
    assert alice.titles() == ["c", "b", "a"]
    assert alice.titles(limit=1, offset=1) == ["b"]


@pytest.mark.parametrize("prefix", PREFIXES)
def test_get_one_task(alice, prefix):
    task = alice.create()
    r = alice.get(f"{prefix}/{task['id']}")
    assert r.status_code == 200, r.text
    assert r.json() == task


@pytest.mark.parametrize("prefix", PREFIXES)
def test_update_changes_only_what_is_sent(alice, prefix):
    task = alice.create("Old", description="keep me")
    r = alice.put(f"{prefix}/{task['id']}", json={"title": " New "})
    assert r.status_code == 200, r.text
    updated = r.json()
    assert updated == task | {"title": "New", "updated_at": updated["updated_at"]}
    assert updated["updated_at"] > task["updated_at"]
    assert alice.get(f"/api/tasks/{task['id']}").json() == updated


def test_update_every_field(alice):
    task = alice.create("Old", description="old")
    changes = {"title": "New", "description": None, "completed": True}
    r = alice.put(f"/api/tasks/{task['id']}", json=changes)
    assert r.status_code == 200, r.text
    assert {name: r.json()[name] for name in changes} == changes


def test_update_with_nothing_changes_nothing(alice):
    task = alice.create()
    r = alice.put(f"/api/tasks/{task['id']}", json={})
    assert r.status_code == 200, r.text
    assert r.json() == task


def test_update_ignores_fields_the_caller_must_not_set(alice):
    task = alice.create()
    sent = {"id": 999, "user_id": "bob", "created_at": "2000-01-01T00:00:00Z", "title": "Mine"}
    r = alice.put(f"/api/tasks/{task['id']}", json=sent)
    assert r.status_code == 200, r.text
    assert r.json() | {"title": "Buy milk", "updated_at": task["updated_at"]} == task


@pytest.mark.parametrize("prefix", PREFIXES)
def test_delete_returns_204_and_the_task_is_gone(alice, prefix):
    task = alice.create()
    r = alice.delete(f"{prefix}/{task['id']}")
    assert r.status_code == 204, r.text
    assert r.content == b""
    assert alice.get(f"/api/tasks/{task['id']}").status_code == 404
    assert alice.delete(f"{prefix}/{task['id']}").status_code == 404


@pytest.mark.parametrize("prefix", PREFIXES)
def test_complete_without_body_toggles(alice, prefix):
    task = alice.create()
    first = alice.patch(f"{prefix}/{task['id']}/complete")
    assert first.status_code == 200, first.text
    assert first.json()["completed"] is True
    assert first.json()["updated_at"] > task["updated_at"]
    second = alice.patch(f"{prefix}/{task['id']}/complete")
    assert second.json()["completed"] is False
    assert second.json()["updated_at"] > first.json()["updated_at"]
    assert second.json()["created_at"] == task["created_at"]


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("value", [True, False])
def test_complete_with_body_sets_the_value(alice, prefix, value):
    task = alice.create()
    for _ in range(2):
        r = alice.patch(f"{prefix}/{task['id']}/complete", json={"completed": value})
        assert r.status_code == 200, r.text
        assert r.json()["completed"] is value


def test_timestamps_are_utc_iso_8601_with_an_offset(alice):
    task = alice.create()
    for name in ["created_at", "updated_at"]:
        stamp = datetime.fromisoformat(task[name])
        assert stamp.utcoffset() == timedelta(0)
        assert abs(stamp - datetime.now(UTC)) < timedelta(minutes=1)


# --- Data ---


def test_first_write_creates_the_user_and_deleting_the_user_deletes_their_tasks(alice, bob, engine):
    alice.create()
    bob.create()
    with Session(engine) as session:
        assert sorted(session.exec(select(main.User.id)).all()) == ["alice", "bob"]
        session.exec(delete(main.User).where(main.User.id == "alice"))
    assert alice.titles() == []
    assert bob.titles() == ["Buy milk"]
    alice.create()  # and a returning user gets their row back


def test_reading_creates_no_user(alice, engine):
    alice.get("/api/tasks")
    with Session(engine) as session:
        assert session.get(main.User, "alice") is None


def test_a_deleted_tasks_id_is_never_given_again(alice, bob):
    alice.create("first")
    newest = alice.create("second")
    assert alice.delete(f"/api/tasks/{newest['id']}").status_code == 204
    assert bob.create()["id"] > newest["id"]
    assert alice.get(f"/api/tasks/{newest['id']}").status_code == 404  # not bob's new task: a 403


# --- Ownership ---

ITEM_ROUTES = [("GET", "/{id}"), ("PUT", "/{id}"), ("DELETE", "/{id}"), ("PATCH", "/{id}/complete")]
OPERATIONS = [("GET", ""), ("POST", ""), *ITEM_ROUTES]
BODIES = {"PUT": {"title": "mine now"}, "POST": {"title": "x"}}


@pytest.mark.parametrize("prefix", ["/api/tasks", "/api/bob/tasks"])
@pytest.mark.parametrize(("method", "route"), ITEM_ROUTES)
def test_someone_elses_task_is_403_and_unchanged(alice, bob, prefix, method, route):
    task = alice.create()
    r = bob.request(method, prefix + route.format(id=task["id"]), json=BODIES.get(method))
    assert r.status_code == 403, r.text
    assert r.json() == {"detail": "You do not own this task"}
    assert alice.get(f"/api/tasks/{task['id']}").json() == task


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize(("method", "route"), ITEM_ROUTES)
def test_a_task_that_does_not_exist_is_404(alice, prefix, method, route):
    r = alice.request(method, prefix + route.format(id=424242), json=BODIES.get(method))
    assert r.status_code == 404, r.text
    assert r.json() == {"detail": "Task not found"}


@pytest.mark.parametrize("status", ["all", "pending", "completed"])
def test_no_status_filter_shows_someone_elses_tasks(alice, bob, status):
    for completed in [False, True]:
        task = alice.create()
        alice.patch(f"/api/tasks/{task['id']}/complete", json={"completed": completed})
    assert bob.titles(status=status) == []


@pytest.mark.parametrize(("method", "route"), OPERATIONS)
def test_another_user_id_in_the_path_is_403(alice, bob, method, route):
    task = alice.create()
    r = bob.request(
        method, "/api/alice/tasks" + route.format(id=task["id"]), json=BODIES.get(method)
    )
    assert r.status_code == 403, r.text
    assert r.json() == {"detail": "The user id in the path is not yours"}
    assert alice.get("/api/tasks").json() == [task]


# --- Auth ---

ALL_ROUTES = [
    (method, prefix + route.format(id=1)) for prefix in PREFIXES for method, route in OPERATIONS
]


@pytest.mark.parametrize(("method", "path"), ALL_ROUTES)
@pytest.mark.parametrize("header", [None, "Basic YWxpY2U6cHc=", "Bearer", "Bearer not-a-jwt"])
def test_every_route_refuses_a_missing_or_malformed_token(client, method, path, header):
    headers = {"Authorization": header} if header else {}
    r = client.request(method, path, json=BODIES.get(method), headers=headers)
    assert r.status_code == 401, r.text
    assert r.headers["WWW-Authenticate"] == "Bearer"
    assert r.json()["detail"]


class JWKSServer:
    """Better Auth's /api/auth/jwks on loopback, with keys made in the test. It can be made to
    misbehave: answer late, send another body (`answer`), or send its body a byte every `trickle`
    seconds."""

    def __init__(self):
        self.private_keys: dict[str, object] = {}
        self.requests = 0
        self.delay = 0.0
        self.answer: bytes | None = None
        self.trickle = 0.0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests += 1
                time.sleep(server.delay)
                if self.path != "/api/auth/jwks":
                    self.send_error(404)
                    return
                body = server.answer or json.dumps({"keys": server.public_jwks()}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                chunk = 1 if server.trickle else len(body)
                with suppress(OSError):  # the API hung up on a trickle
                    for n in range(0, len(body), chunk):
                        self.wfile.write(body[n : n + chunk])
                        time.sleep(server.trickle)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        Thread(target=self.httpd.serve_forever, daemon=True).start()

    ALGORITHMS = {
        "EdDSA": (ed25519.Ed25519PrivateKey.generate, jwt.algorithms.OKPAlgorithm),
        "ES256": (lambda: ec.generate_private_key(ec.SECP256R1()), jwt.algorithms.ECAlgorithm),
        "RS256": (
            lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
            jwt.algorithms.RSAAlgorithm,
        ),
        "PS256": (
            lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
            jwt.algorithms.RSAPSSAlgorithm,
        ),
    }

    def add_key(self, algorithm="EdDSA") -> str:
        kid = f"{algorithm}-{uuid.uuid4().hex[:8]}"
        self.private_keys[kid] = (algorithm, self.ALGORITHMS[algorithm][0]())
        return kid

    def public_jwks(self) -> list[dict]:
        keys = []
        for kid, (algorithm, private_key) in list(self.private_keys.items()):
            to_jwk = self.ALGORITHMS[algorithm][1].to_jwk
            keys.append(
                to_jwk(private_key.public_key(), as_dict=True) | {"kid": kid, "alg": algorithm}
            )
        return keys

    def token(self, kid: str, user_id="alice", **claims) -> str:
        algorithm, private_key = self.private_keys[kid]
        claims = {"iss": self.url, "aud": self.url} | claims
        return make_token(
            user_id, key=private_key, algorithm=algorithm, headers={"kid": kid}, **claims
        )


@pytest.fixture
def jwks(monkeypatch):
    server = JWKSServer()
    monkeypatch.setattr(
        main.settings, "better_auth_url", server.url + "/"
    )  # a trailing slash changes nothing
    monkeypatch.setattr(main.settings, "better_auth_secret", None)
    monkeypatch.setattr(
        main.settings, "database_url", "postgresql://db.example/todo"
    )  # no local secret either
    yield server
    server.httpd.shutdown()
    server.httpd.server_close()


def get_tasks(client, token: str):
    return client.get("/api/tasks", headers={"Authorization": f"Bearer {token}"})


@pytest.mark.parametrize("algorithm", ["EdDSA", "ES256", "RS256", "PS256"])
def test_better_auth_jwks_tokens_are_accepted(client, jwks, algorithm):
    kid = jwks.add_key(algorithm)
    r = get_tasks(client, jwks.token(kid))
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("path", ["", "/api/auth", "/api/auth/"])
def test_better_auth_url_is_read_as_better_auth_reads_it(client, jwks, monkeypatch, path):
    """Better Auth reads a BETTER_AUTH_URL with a path as its API's address; `iss`/`aud` are its
    origin."""
    monkeypatch.setattr(main.settings, "better_auth_url", jwks.url + path)
    r = get_tasks(client, jwks.token(jwks.add_key()))
    assert r.status_code == 200, r.text


def test_hs256_token_is_accepted(client):
    assert get_tasks(client, make_token()).status_code == 200


def expired():
    return datetime.now(UTC) - timedelta(minutes=5)


def unsigned_token():
    return jwt.encode(
        {"sub": "alice", "exp": datetime.now(UTC) + timedelta(hours=1)}, None, algorithm="none"
    )


def segment(data: dict | bytes) -> bytes:
    data = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=")


def hs256_signed_with(key_bytes: bytes, **header) -> str:
    """What an attacker builds by hand: an HS256 token keyed with a public key (PyJWT won't)."""
    claims = {"sub": "alice", "exp": int(time.time()) + 3600}
    signing_input = segment({"alg": "HS256", "typ": "JWT", **header}) + b"." + segment(claims)
    signature = segment(hmac.new(key_bytes, signing_input, hashlib.sha256).digest())
    return (signing_input + b"." + signature).decode()


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (lambda: "a.b.c", "Invalid token"),
        (
            lambda: make_token(key="another-secret-that-is-long-enough-too"),
            "Signature verification failed",
        ),
        (lambda: make_token()[:-4] + "AAAA", "Signature verification failed"),
        (lambda: make_token(exp=expired()), "Signature has expired"),
        (lambda: make_token(exp=None), 'missing the "exp" claim'),
        (lambda: make_token(user_id=None), 'missing the "sub" claim'),
        (lambda: make_token(user_id=""), "sub must be 1-255 characters"),
        (lambda: make_token(user_id=42), "Subject must be a string"),
        (lambda: make_token(user_id="x" * 256), "sub must be 1-255 characters"),
        (lambda: make_token(user_id="nul\x00"), "no NUL or lone surrogate"),
        (lambda: make_token(user_id="\ud800"), "no NUL or lone surrogate"),
        (lambda: make_token(exp="9999999999"), "exp must be a number"),
        (lambda: make_token(exp=[1]), "Expiration Time claim (exp) must be an integer"),
        (unsigned_token, "Tokens signed with 'none' are not accepted"),
    ],
    ids=[
        "garbage",
        "wrong-secret",
        "tampered",
        "expired",
        "no-exp",
        "no-sub",
        "empty-sub",
        "int-sub",
        "long-sub",
        "nul-sub",
        "surrogate-sub",
        "string-exp",
        "list-exp",
        "alg-none",
    ],
)
def test_bad_hs256_tokens_are_401_saying_why(client, token, reason):
    r = get_tasks(client, token())
    assert r.status_code == 401, r.text
    assert reason in r.json()["detail"]
    assert r.headers["WWW-Authenticate"] == "Bearer"


@pytest.mark.parametrize("prefix", ["/api/tasks", "/api/{}/tasks"])
def test_any_user_id_a_token_may_carry_can_write(client, prefix):
    for user_id in ["x" * 255, "üñí©ødé 🙂", "日本", "user@example.com", "'; DROP TABLE tasks; --"]:
        user = User(client, user_id)
        r = user.post(prefix.format(user_id), json={"title": "mine"})
        assert r.status_code == 201, r.text
        assert r.json()["user_id"] == user_id
        assert user.get(r.headers["Location"]).json() == r.json()


def test_a_little_clock_skew_is_tolerated(client):
    assert (
        get_tasks(client, make_token(exp=datetime.now(UTC) - timedelta(seconds=5))).status_code
        == 200
    )


def test_hs256_issuer_and_audience_are_checked_when_configured(client, monkeypatch):
    assert get_tasks(client, make_token(iss="someone", aud="anything")).status_code == 200
    monkeypatch.setattr(main.settings, "jwt_issuer", "https://todo.example")
    monkeypatch.setattr(main.settings, "jwt_audience", "todo-api")
    good = {"iss": "https://todo.example", "aud": "todo-api"}
    assert get_tasks(client, make_token(**good)).status_code == 200
    for wrong, reason in [
        ({"iss": "evil"}, "Invalid issuer"),
        ({"aud": "other"}, "Audience doesn't match"),
    ]:
        r = get_tasks(client, make_token(**good | wrong))
        assert r.status_code == 401, r.text
        assert reason in r.json()["detail"]


def public_pem(kid, jwks) -> bytes:
    return (
        jwks.private_keys[kid][1]
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (lambda jwks, kid: jwks.token(kid, iss="https://evil.example"), "Invalid issuer"),
        (lambda jwks, kid: jwks.token(kid, aud="https://evil.example"), "Audience doesn't match"),
        (lambda jwks, kid: jwks.token(kid, iss=None), 'missing the "iss" claim'),
        (lambda jwks, kid: jwks.token(kid, aud=None), 'missing the "aud" claim'),
        (lambda jwks, kid: jwks.token(kid, exp=expired()), "Signature has expired"),
        (lambda jwks, kid: jwks.token(kid, user_id=None), 'missing the "sub" claim'),
        (lambda jwks, kid: jwks.token(kid)[:-4] + "AAAA", "Signature verification failed"),
        (
            lambda jwks, kid: hs256_signed_with(public_pem(kid, jwks), kid=kid),
            "'HS256' are not accepted",
        ),
        (
            lambda jwks, kid: hs256_signed_with(
                json.dumps(jwks.public_jwks()[0]).encode(), kid=kid
            ),
            "HS256",
        ),
        (lambda jwks, kid: unsigned_token(), "'none' are not accepted"),
        (lambda jwks, kid: make_token(headers={"kid": kid}), "'HS256' are not accepted"),
    ],
    ids=[
        "wrong-iss",
        "wrong-aud",
        "no-iss",
        "no-aud",
        "expired",
        "no-sub",
        "tampered",
        "hs256-public-pem",
        "hs256-jwk",
        "none",
        "hs256",
    ],
)
def test_bad_jwks_tokens_are_401_saying_why(client, jwks, token, reason):
    kid = jwks.add_key("RS256")
    r = get_tasks(client, token(jwks, kid))
    assert r.status_code == 401, r.text
    assert reason in r.json()["detail"]


def test_a_token_signed_by_another_key_with_a_known_kid_is_401(client, jwks):
    kid = jwks.add_key("EdDSA")
    forged = make_token(
        key=ed25519.Ed25519PrivateKey.generate(),
        algorithm="EdDSA",
        headers={"kid": kid},
        iss=jwks.url,
        aud=jwks.url,
    )
    r = get_tasks(client, forged)
    assert r.status_code == 401, r.text
    assert "Signature verification failed" in r.json()["detail"]


def test_a_token_whose_algorithm_does_not_fit_the_key_is_401(client, jwks):
    kid = jwks.add_key("EdDSA")
    other = jwks.add_key("ES256")
    algorithm, es_key = jwks.private_keys[other]
    token = make_token(
        key=es_key, algorithm=algorithm, headers={"kid": kid}, iss=jwks.url, aud=jwks.url
    )
    assert get_tasks(client, token).status_code == 401


def test_asymmetric_tokens_without_a_jwks_configured_are_401(client):
    private_key = ed25519.Ed25519PrivateKey.generate()
    r = get_tasks(client, make_token(key=private_key, algorithm="EdDSA", headers={"kid": "k"}))
    assert r.status_code == 401, r.text
    assert (
        r.json()["detail"]
        == "Tokens signed with 'EdDSA' need BETTER_AUTH_URL set to the Better Auth server"
    )


@pytest.mark.parametrize(
    "token", ["Hd8sNcQ4rW2xT7vLp9KmZ3bYf6GjA1uE", "Hd8sNcQ4rW2xT7vLp9KmZ3bYf6GjA1uE.c2lnbmF0dXJl"]
)
def test_a_better_auth_session_token_is_401_saying_how_to_get_a_jwt(client, token):
    r = get_tasks(client, token)
    assert r.status_code == 401, r.text
    assert "session token" in r.json()["detail"]
    assert "authClient.token()" in r.json()["detail"]


def test_hs256_tokens_are_still_accepted_beside_the_jwks(client, jwks, monkeypatch):
    monkeypatch.setattr(main.settings, "better_auth_secret", SECRET)
    kid = jwks.add_key()
    assert get_tasks(client, jwks.token(kid)).status_code == 200
    assert get_tasks(client, make_token()).status_code == 200


def test_jwks_overrides(client, jwks, monkeypatch):
    monkeypatch.setattr(main.settings, "better_auth_url", None)
    monkeypatch.setattr(main.settings, "better_auth_jwks_url", f"{jwks.url}/api/auth/jwks")
    monkeypatch.setattr(main.settings, "jwt_issuer", "issuer")
    monkeypatch.setattr(main.settings, "jwt_audience", "audience")
    kid = jwks.add_key()
    assert get_tasks(client, jwks.token(kid, iss="issuer", aud="audience")).status_code == 200
    assert get_tasks(client, jwks.token(kid)).status_code == 401


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({}, None),
        ({"aud": "https://another-app.example"}, "Audience doesn't match"),
        ({"iss": "https://another-auth.example"}, "Invalid issuer"),
        ({"aud": None}, 'missing the "aud" claim'),
        ({"iss": None}, 'missing the "iss" claim'),
    ],
    ids=["its-origin", "other-aud", "other-iss", "no-aud", "no-iss"],
)
def test_with_only_a_jwks_url_tokens_must_name_its_origin_as_iss_and_aud(
    client, jwks, monkeypatch, claims, reason
):
    monkeypatch.setattr(main.settings, "better_auth_url", None)
    monkeypatch.setattr(main.settings, "better_auth_jwks_url", f"{jwks.url}/api/auth/jwks")
    r = get_tasks(
        client, jwks.token(jwks.add_key(), **claims)
    )  # iss and aud are jwks.url unless given
    if reason is None:
        assert r.status_code == 200, r.text
    else:
        assert r.status_code == 401, r.text
        assert reason in r.json()["detail"]


@pytest.fixture
def clock(monkeypatch):
    """Moves the API's clock for key fetches forward without waiting."""
    clock = SimpleNamespace(offset=0.0)
    later = SimpleNamespace(
        monotonic=lambda: time.monotonic() + clock.offset, time=lambda: time.time() + clock.offset
    )
    monkeypatch.setattr(main, "time", later)
    return clock


def jwks_token_with_kid(jwks, signing_kid, claimed_kid):
    algorithm, private_key = jwks.private_keys[signing_kid]
    return make_token(
        key=private_key,
        algorithm=algorithm,
        headers={"kid": claimed_kid},
        iss=jwks.url,
        aud=jwks.url,
    )


def test_an_unknown_kid_after_a_fetch_is_401_and_cannot_flood_the_auth_server(client, jwks, clock):
    kid = jwks.add_key()
    assert get_tasks(client, jwks.token(kid)).status_code == 200
    for n in range(20):  # made up, or from another auth server: the set just fetched decides
        r = get_tasks(client, jwks_token_with_kid(jwks, kid, f"random-{n}"))
        assert r.status_code == 401, r.text
        assert r.json()["detail"] == f"Invalid token: The auth server has no key 'random-{n}'"
    assert jwks.requests == 1  # all within the 10 s after the first fetch
    clock.offset = 11
    r = get_tasks(client, jwks_token_with_kid(jwks, kid, "still-unknown"))
    assert r.status_code == 401, r.text
    assert jwks.requests == 2


@pytest.mark.parametrize("algorithm", ["\udfff", "\x00", ["HS256"], {"a": 1}, 42, None])
def test_an_odd_algorithm_in_the_header_is_401_never_500(client, algorithm):
    header = {"typ": "JWT"} | ({"alg": algorithm} if algorithm is not None else {})
    claims = {"sub": "alice", "exp": int(time.time()) + 3600}
    r = get_tasks(client, b".".join([segment(header), segment(claims), segment(b"sig")]).decode())
    assert r.status_code == 401, r.text
    assert r.json()["detail"]


@pytest.mark.parametrize(
    ("kid", "reason"),
    [
        (None, "No kid in the header"),
        (42, "must be a string"),
        (["a"], "must be a string"),
        ({}, "must be a string"),
    ],
)
def test_a_token_that_names_no_key_is_401_without_a_fetch(client, jwks, kid, reason):
    jwks.add_key()
    header = {"alg": "EdDSA", "typ": "JWT"} | ({"kid": kid} if kid is not None else {})
    claims = {"sub": "alice", "exp": int(time.time()) + 3600, "iss": jwks.url, "aud": jwks.url}
    r = get_tasks(
        client, b".".join([segment(header), segment(claims), segment(b"signature")]).decode()
    )
    assert r.status_code == 401, r.text
    assert reason in r.json()["detail"]
    assert jwks.requests == 0


def test_a_rotated_key_is_accepted_after_one_fetch(client, jwks, clock):
    old = jwks.add_key()
    assert get_tasks(client, jwks.token(old)).status_code == 200
    new = jwks.add_key()
    clock.offset = 11
    assert get_tasks(client, jwks.token(new)).status_code == 200
    assert get_tasks(client, jwks.token(old)).status_code == 200
    assert jwks.requests == 2


def test_a_withdrawn_key_stops_working_as_soon_as_a_key_set_without_it_is_seen(client, jwks, clock):
    leaked = jwks.add_key()
    forged = jwks.token(
        leaked, exp=datetime.now(UTC) + timedelta(days=3650)
    )  # the forger picks `exp`
    assert get_tasks(client, forged).status_code == 200
    del jwks.private_keys[leaked]  # withdrawn by Better Auth, and a new key made
    replacement = jwks.add_key()
    clock.offset = 11
    assert get_tasks(client, jwks.token(replacement)).status_code == 200  # a fetch without it
    r = get_tasks(client, forged)
    assert r.status_code == 401, r.text
    assert "has no key" in r.json()["detail"]


def test_an_unreachable_jwks_is_a_clear_error_never_acceptance(client, jwks):
    kid = jwks.add_key()
    token = jwks.token(kid)
    jwks.httpd.shutdown()
    jwks.httpd.server_close()
    started = time.monotonic()
    r = get_tasks(client, token)
    assert r.status_code == 503, r.text
    assert "keys are unavailable" in r.json()["detail"]
    assert 1 <= int(r.headers["Retry-After"]) <= 11  # when the next fetch is allowed
    assert time.monotonic() - started < 6


def test_a_jwks_address_that_serves_no_keys_is_logged_with_the_address(
    client, jwks, monkeypatch, caplog
):
    monkeypatch.setattr(
        main.settings, "better_auth_url", jwks.url + "/auth"
    )  # where nothing is served
    assert get_tasks(client, jwks.token(jwks.add_key())).status_code == 503
    [warning] = fetch_warnings(caplog)  # one line, though the client's message has several
    assert warning.startswith(f"Cannot fetch the token keys from {jwks.url}/auth/jwks: ")
    assert "404" in warning
    assert "\n" not in warning


def fetch_warnings(caplog) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if "Cannot fetch the token keys" in record.getMessage()
    ]


def without_kids(jwks) -> bytes:
    return json.dumps(
        {"keys": [{k: v for k, v in key.items() if k != "kid"} for key in jwks.public_jwks()]}
    ).encode()


@pytest.mark.parametrize(
    "answer",
    [
        pytest.param(lambda jwks: b"{}", id="empty-object"),
        pytest.param(lambda jwks: b'{"keys": []}', id="no-keys"),
        pytest.param(lambda jwks: b"[]", id="a-list"),
        pytest.param(lambda jwks: b'{"keys": "x"}', id="keys-not-a-list"),
        pytest.param(lambda jwks: b'{"keys": [1, "x", null]}', id="keys-not-objects"),
        pytest.param(
            lambda jwks: b'{"keys": [{"kty": "RSA", "alg": ["x"], "kid": "k"}]}', id="odd-alg"
        ),
        pytest.param(without_kids, id="keys-without-kid"),
        pytest.param(lambda jwks: b"<html>Sign in</html>", id="html"),
        pytest.param(lambda jwks: b"[" * 100_000, id="deep-json"),
    ],
)
def test_a_jwks_answer_without_usable_keys_is_503_and_one_warning_until_fixed(
    client, jwks, clock, caplog, answer
):
    kid = jwks.add_key()
    jwks.answer = answer(jwks)
    for _ in range(10):
        r = get_tasks(client, jwks.token(kid))
        assert r.status_code == 503, r.text
        assert r.headers["Retry-After"]
    assert jwks.requests == 1
    [warning] = fetch_warnings(caplog)
    assert warning.startswith(f"Cannot fetch the token keys from {jwks.url}/api/auth/jwks: ")
    jwks.answer = None  # fixed: tokens work again once the 10 s are over
    clock.offset = 11
    assert get_tasks(client, jwks.token(kid)).status_code == 200
    assert jwks.requests == 2


@pytest.mark.parametrize(
    "odd_key",
    [
        pytest.param({"kty": "RSA", "n": "AQAB", "e": "AQAB", "alg": "RS256"}, id="bad-rsa"),
        pytest.param({"kty": ["OKP"], "crv": "Ed25519", "x": 5}, id="odd-fields"),
        pytest.param("not a key", id="a-string"),
        pytest.param("private", id="a-private-key"),
    ],
)
def test_keys_that_cannot_verify_are_left_out_and_the_others_kept(client, jwks, clock, odd_key):
    good = jwks.add_key()
    published = jwks.public_jwks()
    if odd_key == "private":  # a private key published by mistake: its tokens are not accepted
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        odd_key = jwt.algorithms.RSAAlgorithm.to_jwk(private, as_dict=True) | {"alg": "PS256"}
        jwks.private_keys["odd"] = ("PS256", private)
    if isinstance(odd_key, dict):
        odd_key = odd_key | {"kid": "odd"}
    jwks.answer = json.dumps({"keys": [*published, odd_key]}).encode()
    assert get_tasks(client, jwks.token(good)).status_code == 200
    if "odd" in jwks.private_keys:
        clock.offset = 11  # the set fetched then lacks it too
        r = get_tasks(client, jwks.token("odd"))
        assert r.status_code == 401, r.text
        assert "has no key 'odd'" in r.json()["detail"]


def test_a_token_of_megabytes_is_401_at_once(client):
    token = make_token(pad="x" * 2_000_000)
    started = time.monotonic()
    r = get_tasks(client, token)
    assert r.status_code == 401, r.text
    assert "longer than 8192 characters" in r.json()["detail"]
    assert time.monotonic() - started < 1


def test_a_bad_answer_never_replaces_good_keys(client, jwks, clock):
    kid = jwks.add_key()
    assert get_tasks(client, jwks.token(kid)).status_code == 200
    jwks.answer = b'{"keys": []}'
    clock.offset = 11
    assert (
        get_tasks(client, jwks_token_with_kid(jwks, kid, "unknown")).status_code == 503
    )  # fetched: bad
    assert jwks.requests == 2
    assert get_tasks(client, jwks.token(kid)).status_code == 200


def timed(request, *args) -> tuple[int, float]:
    started = time.monotonic()
    return request(*args).status_code, time.monotonic() - started


def test_requests_that_need_the_first_key_fetch_wait_for_it(client, jwks):
    """A page firing several calls at a cold worker (after a deploy or restart)."""
    kid = jwks.add_key()
    jwks.delay = 0.5  # each request below arrives while the fetch is under way
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda _: get_tasks(client, jwks.token(kid)), range(10)))
    assert [r.status_code for r in answers] == [200] * 10, [r.text for r in answers][:3]
    assert jwks.requests == 1


def test_a_stalled_key_fetch_holds_up_only_the_requests_that_need_it_and_only_5_s(
    client, jwks, clock, caplog
):
    cached = jwks.add_key()
    assert get_tasks(client, jwks.token(cached)).status_code == 200
    rotated = jwks.add_key()
    jwks.trickle = 3  # a byte every 3 s: each read is quick, the whole answer never comes
    clock.offset = 11
    with ThreadPoolExecutor(16) as pool:
        waiting = [pool.submit(timed, get_tasks, client, jwks.token(rotated)) for _ in range(10)]
        time.sleep(0.5)  # the fetch has begun
        cached_users = [pool.submit(timed, get_tasks, client, jwks.token(cached)) for _ in range(3)]
        health = pool.submit(timed, client.get, "/health")
        assert [future.result()[0] for future in cached_users] == [200] * 3
        assert health.result()[0] == 200
        assert max(future.result()[1] for future in [*cached_users, health]) < 1
        answers = [future.result() for future in waiting]
    assert [status for status, _ in answers] == [503] * 10
    assert all(4.5 < seconds < 6 for _, seconds in answers)  # the whole answer's deadline
    assert jwks.requests == 2
    assert fetch_warnings(caplog) == [
        f"Cannot fetch the token keys from {jwks.url}/api/auth/jwks: no whole answer within 5 s"
    ]


def test_the_user_is_attached_to_the_request():
    """The seed asks for the caller's id on `request.state.user` too."""
    request = SimpleNamespace(state=SimpleNamespace())
    credentials = SimpleNamespace(credentials=make_token("carol"))
    assert asyncio.run(main.get_current_user(request, credentials)) == "carol"
    assert request.state.user == "carol"


# --- Validation ---


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({}, id="no-title"),
        pytest.param({"title": ""}, id="empty-title"),
        pytest.param({"title": "   "}, id="blank-title"),
        pytest.param({"title": "x" * 201}, id="long-title"),
        pytest.param({"title": None}, id="null-title"),
        pytest.param({"title": 42}, id="number-title"),
        pytest.param({"title": ["a"]}, id="list-title"),
        pytest.param({"title": "nul \x00 inside"}, id="nul-title"),
        pytest.param({"title": "ok", "description": "x" * 1001}, id="long-description"),
        pytest.param({"title": "ok", "description": 7}, id="number-description"),
        pytest.param({"title": "ok", "description": "nul \x00"}, id="nul-description"),
    ],
)
def test_create_rejects_bad_fields_with_422(alice, body):
    r = alice.post("/api/tasks", json=body)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"][0] == "body"
    assert alice.titles() == []


def test_create_accepts_the_limits(alice):
    task = alice.create("  " + "x" * 200 + "  ", description="y" * 1000)
    assert len(task["title"]) == 200


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"title": None}, id="null-title"),
        pytest.param({"completed": None}, id="null-completed"),
        pytest.param({"title": ""}, id="empty-title"),
        pytest.param({"completed": "yes"}, id="string-completed"),
        pytest.param({"completed": 1}, id="number-completed"),
        pytest.param({"description": "x" * 1001}, id="long-description"),
    ],
)
def test_update_rejects_bad_fields_with_422(alice, body):
    task = alice.create()
    r = alice.put(f"/api/tasks/{task['id']}", json=body)
    assert r.status_code == 422, r.text
    assert alice.get(f"/api/tasks/{task['id']}").json() == task


@pytest.mark.parametrize("body", ['{"completed": null}', '{"completed": "true"}', "[]", "{"])
def test_complete_rejects_a_bad_body_with_422(alice, body):
    task = alice.create()
    r = alice.patch(
        f"/api/tasks/{task['id']}/complete",
        content=body,
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 422, r.text
    assert alice.get(f"/api/tasks/{task['id']}").json() == task


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
@pytest.mark.parametrize("body", [b"\xff\xfe", b"title=x", "caf\u00e9".encode()])
def test_a_body_that_is_not_json_is_422_never_500(alice, content_type, body):
    task = alice.create()
    for method, path in [("POST", "/api/tasks"), ("PUT", f"/api/tasks/{task['id']}")]:
        r = alice.request(method, path, content=body, headers={"Content-Type": content_type})
        assert r.status_code == 422, (method, r.text)
        assert r.json()["detail"]
    assert alice.get(f"/api/tasks/{task['id']}").json() == task


def test_a_json_body_that_is_not_utf_8_is_400(alice):
    r = alice.post("/api/tasks", content=b"\x80", headers={"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json() == {"detail": "There was an error parsing the body"}


@pytest.mark.parametrize(
    "raw", ['{"title": "\\ud800"}', '{"title": "ok", "description": "\\udfff"}', "{not json"]
)
def test_text_no_database_can_store_and_broken_json_are_422(alice, raw):
    r = alice.post("/api/tasks", content=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"]


@pytest.mark.parametrize(
    "params",
    [
        {"status": "done"},
        {"sort": "newest"},
        {"limit": 0},
        {"limit": 1001},
        {"limit": "ten"},
        {"offset": -1},
        {"offset": 2**31},
        {"offset": 2**63},
    ],
)
def test_bad_list_parameters_are_422(alice, params):
    r = alice.get("/api/tasks", params=params)
    assert r.status_code == 422, r.text


@pytest.mark.parametrize("task_id", ["abc", "1.5", "0", "-1", str(2**31), str(2**63), "9" * 40])
@pytest.mark.parametrize(("method", "route"), ITEM_ROUTES)
def test_task_ids_that_cannot_exist_are_422(alice, task_id, method, route):
    r = alice.request(method, "/api/tasks" + route.format(id=task_id), json=BODIES.get(method))
    assert r.status_code == 422, r.text


# --- Errors ---


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_over_64_kib_is_413_and_nothing_is_stored(alice, chunked):
    body = json.dumps({"title": "x", "description": "y" * 65536}).encode()
    content = iter([body[:1000], body[1000:]]) if chunked else body
    r = alice.post("/api/tasks", content=content, headers={"Content-Type": "application/json"})
    assert r.status_code == 413, r.text
    assert alice.titles() == []


def test_a_body_of_exactly_64_kib_is_read(alice):
    body = json.dumps({"title": "x", "description": ""}).encode()
    body = body[:-1] + b" " * (65536 - len(body)) + b"}"
    r = alice.post("/api/tasks", content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 201, r.text


def test_unknown_route_and_wrong_method_are_json(alice):
    r = alice.get("/api/nothing-here")
    assert r.status_code == 404
    assert r.json() == {"detail": "Not Found"}
    for method, path in [("POST", "/health"), ("PATCH", "/api/tasks"), ("POST", "/api/tasks/1")]:
        r = alice.request(method, path)
        assert r.status_code == 405, (method, path)
        assert r.json() == {"detail": "Method Not Allowed"}
        assert r.headers["Allow"]


def test_an_unexpected_error_is_500_without_internals_that_a_browser_can_read(monkeypatch):
    def broken(*args):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(main, "get_owned_task", broken)
    with TestClient(main.app, raise_server_exceptions=False) as client:
        r = User(client, "alice").get("/api/tasks/1", headers={"Origin": "http://localhost:3000"})
    assert r.status_code == 500
    assert r.json() == {"detail": "Internal server error"}
    assert r.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"


def test_health(client):
    r = client.get("/health")
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ok", "database": "ok"}


@pytest.mark.parametrize("path", ["/health", "/api/tasks", "/api/tasks/1"])
def test_database_unreachable_is_503(monkeypatch, path):
    nobody_listens = f"postgresql://postgres@127.0.0.1:{free_port()}/todo"
    monkeypatch.setattr(main, "engine", main.create_db_engine(nobody_listens))
    r = User(TestClient(main.app), "alice").get(
        path
    )  # not entered: the lifespan would need the database
    assert r.status_code == 503, r.text
    assert r.json() == {"detail": "Database unavailable, try again shortly"}


# --- Docs and CORS ---


def test_openapi_documents_auth_errors_and_readable_operation_ids(client):
    spec = client.get("/openapi.json").json()
    assert spec["info"]["description"]
    assert spec["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": main.bearer.model.description,
    }
    operations = [
        (path, method, op) for path, item in spec["paths"].items() for method, op in item.items()
    ]
    names = ["list_tasks", "create_task", "get_task", "update_task", "delete_task", "complete_task"]
    assert sorted(op["operationId"] for _, _, op in operations) == sorted(
        ["health", *names, *(f"{name}_for_user" for name in names)]
    )
    task_operations = [
        (path, method, op) for path, method, op in operations if path.startswith("/api")
    ]
    for path, method, operation in task_operations:
        assert {"HTTPBearer": []} in operation["security"], (path, method)
        assert {"401", "503"} <= operation["responses"].keys(), (path, method)
        if "{task_id}" in path:
            assert {"403", "404", "422"} <= operation["responses"].keys(), (path, method)
        if method in ("post", "put", "patch"):  # 400: a JSON body that is not even UTF-8
            assert {"400", "413"} <= operation["responses"].keys(), (path, method)
        assert operation["summary"] and operation["description"], (path, method)


def test_openapi_is_exact_for_client_generators(client):
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    task = schemas["TaskPublic"]
    assert set(task["required"]) == {
        "id",
        "user_id",
        "title",
        "description",
        "completed",
        "created_at",
        "updated_at",
    }
    assert {"type": "null"} in task["properties"]["description"]["anyOf"]  # always sent, maybe null
    for prefix in ["/api/tasks", "/api/{user_id}/tasks"]:
        created = spec["paths"][prefix]["post"]["responses"]["201"]
        assert created["headers"]["Location"]["schema"] == {"type": "string"}
        assert created["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/TaskPublic"
        }
    health = spec["paths"]["/health"]["get"]["responses"]
    assert health["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Health"
    }
    assert set(schemas["Health"]["required"]) == {"status", "database"}
    assert "auth" not in health["503"]["description"].lower()


def test_docs_offer_a_realistic_example_and_the_root_leads_there(client):
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    assert schemas["TaskCreate"]["examples"] == [
        {"title": "Buy milk", "description": "Two litres, oat"}
    ]
    assert schemas["TaskUpdate"]["examples"] == [{"title": "Buy oat milk", "completed": True}]
    r = client.get("/", follow_redirects=False)
    assert r.status_code == 307
    assert r.headers["Location"] == "/docs"
    assert "swagger-ui" in client.get("/").text


def test_cors_lets_the_frontend_send_a_token_and_read_the_headers(alice):
    preflight = {
        "Origin": "http://localhost:3000",
        "Access-Control-Request-Method": "PUT",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    r = alice.client.options("/api/tasks/1", headers=preflight)
    assert r.status_code == 200, r.text
    assert r.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert {"authorization", "content-type"} <= set(
        r.headers["Access-Control-Allow-Headers"].lower().split(", ")
    )
    r = alice.get("/api/tasks", headers={"Origin": "http://localhost:3000"})
    assert r.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert r.headers["Access-Control-Expose-Headers"] == "Location"


def test_cors_ignores_other_origins(alice):
    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
    assert (
        "Access-Control-Allow-Origin"
        not in alice.client.options("/api/tasks", headers=preflight).headers
    )
    r = alice.get("/api/tasks", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in r.headers


# --- Configuration and startup ---


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_neon_urls_run_with_psycopg_and_keep_their_parameters(scheme):
    query = "sslmode=require&channel_binding=require"
    url = f"{scheme}://user:pw@ep-example-pooler.example/neondb?{query}"
    engine = main.create_db_engine(url)
    assert engine.url.drivername == "postgresql+psycopg"
    assert engine.dialect.driver == "psycopg"
    assert dict(engine.url.query) == {"sslmode": "require", "channel_binding": "require"}


def test_local_secret_serves_sqlite_only(client, monkeypatch, tmp_path):
    monkeypatch.setattr(main, "HERE", tmp_path)
    monkeypatch.setattr(main.settings, "better_auth_secret", None)
    main.hs256_secret()  # made on first use
    token = make_token(key=(tmp_path / ".dev-secret").read_text())
    assert get_tasks(client, token).status_code == 200
    if os.name == "posix":
        assert (tmp_path / ".dev-secret").stat().st_mode & 0o077 == 0
    monkeypatch.setattr(main.settings, "database_url", "postgresql://db.example/todo")
    monkeypatch.setattr(main.settings, "better_auth_url", "http://127.0.0.1:9")
    assert get_tasks(client, token).status_code == 401


VARIABLES = [
    "DATABASE_URL",
    "BETTER_AUTH_SECRET",
    "BETTER_AUTH_URL",
    "BETTER_AUTH_JWKS_URL",
    "JWT_ISSUER",
]


@pytest.fixture
def fresh_checkout(tmp_path):
    """main.py alone in a folder, and an environment with none of its variables set."""
    shutil.copy(Path(main.__file__), tmp_path / "main.py")
    unset = {*VARIABLES, "JWT_AUDIENCE", "CORS_ORIGINS"}
    env = {name: value for name, value in os.environ.items() if name not in unset}
    return SimpleNamespace(path=tmp_path, env=env)


def start(checkout, env: dict, *options: str) -> subprocess.CompletedProcess:
    """`uvicorn main:app` that is expected to refuse to start; what it printed."""
    command = [sys.executable, "-m", "uvicorn", "main:app", "--port", str(free_port()), *options]
    return subprocess.run(
        command, cwd=checkout.path, env=env, capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    "where", ["environment", "environment, secrets empty", ".env, secrets empty"]
)
def test_a_deployment_that_cannot_verify_tokens_refuses_to_start(fresh_checkout, where):
    variables = {"DATABASE_URL": "postgresql://user:pw@db.example/todo"}
    if "empty" in where:
        variables |= {"BETTER_AUTH_SECRET": "", "BETTER_AUTH_URL": ""}
    env = fresh_checkout.env
    if where.startswith(".env"):
        (fresh_checkout.path / ".env").write_text(
            "".join(f"{name}={value}\n" for name, value in variables.items())
        )
    else:
        env = env | variables
    r = start(fresh_checkout, env)
    assert r.returncode == 3  # uvicorn's startup failure: no worker is restarted
    assert r.stderr.strip().splitlines() == [
        "CRITICAL: Refusing to start: DATABASE_URL is a deployment database but neither"
        " BETTER_AUTH_SECRET nor BETTER_AUTH_URL is set, so no token could be verified"
    ]


@pytest.mark.parametrize(
    ("variables", "says"),
    [
        pytest.param(
            {"DATABASE_URL": "postgresq://user:pw@db.example/todo"},
            "DATABASE_URL is not a database URL: paste the whole postgresql://… string",
            id="misspelt-scheme",
        ),
        pytest.param(
            {"DATABASE_URL": "user:pw@ep-example-pooler.example/neondb?sslmode=require"},
            "DATABASE_URL is not a database URL: paste the whole postgresql://… string",
            id="no-scheme",
        ),
        pytest.param(
            {"DATABASE_URL": "sqlite://"},
            "DATABASE_URL is SQLite in memory, which each thread sees empty: name a file",
            id="sqlite-in-memory",
        ),
        pytest.param(
            {"CORS_ORIGINS": "http://localhost:3000,localhost:3001"},
            "CORS_ORIGINS is 'http://localhost:3000,localhost:3001':"
            " write each as scheme://host:port",
            id="not-an-origin",
        ),
        pytest.param(
            {"BETTER_AUTH_URL": "localhost:3000"},
            "BETTER_AUTH_URL or BETTER_AUTH_JWKS_URL is not a URL: start it with http://",
            id="auth-url-without-scheme",
        ),
        pytest.param(
            {"BETTER_AUTH_SECRET": main.PLACEHOLDER_SECRET},
            "BETTER_AUTH_SECRET is .env.example's placeholder: use the frontend's secret",
            id="placeholder-secret",
        ),
    ],
)
def test_a_configuration_mistake_ends_startup_with_one_line_saying_what_to_do(
    fresh_checkout, variables, says
):
    r = start(fresh_checkout, fresh_checkout.env | {"BETTER_AUTH_SECRET": SECRET} | variables)
    assert r.returncode == 3
    assert r.stderr.strip().splitlines() == [f"CRITICAL: Refusing to start: {says}"]


def test_a_refusal_stops_every_worker(fresh_checkout):
    env = fresh_checkout.env | {"CORS_ORIGINS": "localhost:3000"}
    r = start(fresh_checkout, env, "--workers", "2")  # within its 60 s, else TimeoutExpired
    refusals = [line for line in r.stderr.splitlines() if "Refusing" in line]
    assert set(refusals) == {
        "CRITICAL: Refusing to start: CORS_ORIGINS is 'localhost:3000':"
        " write each as scheme://host:port"
    }
    assert len(refusals) <= 2  # once per worker: none was restarted
    assert "Traceback" not in r.stderr


def test_a_dot_env_saved_by_notepad_is_read(fresh_checkout):
    # CRLF endings, and a BOM:
    lines = f"CORS_ORIGINS=https://app.example\r\nBETTER_AUTH_SECRET={SECRET}\r\n"
    (fresh_checkout.path / ".env").write_text(lines, encoding="utf-8-sig", newline="")
    with serving(fresh_checkout, fresh_checkout.env) as (_, log):
        pass
    assert "Allowing browser origins: https://app.example" in log.text
    assert "HS256 (BETTER_AUTH_SECRET)" in log.text


def test_a_dot_env_written_by_windows_powershell_refuses_to_start_in_one_line(fresh_checkout):
    (fresh_checkout.path / ".env").write_text(
        f"BETTER_AUTH_SECRET={SECRET}\n", encoding="utf-16"
    )  # `echo … > .env`
    r = start(fresh_checkout, fresh_checkout.env)
    assert r.returncode == 3
    assert r.stderr.strip().splitlines() == [
        "CRITICAL: Refusing to start: .env is not UTF-8 (Windows PowerShell's > writes UTF-16): "
        "save it as UTF-8"
    ]


def test_env_example_holds_the_placeholder_the_api_refuses():
    env_example = (Path(main.__file__).parent / ".env.example").read_text()
    assert f"BETTER_AUTH_SECRET={main.PLACEHOLDER_SECRET}\n" in env_example


def unreachable_databases() -> list:
    cases = [
        pytest.param(
            "sqlite:////no/such/folder/todo.db",
            "unable to open database file",
            id="sqlite-no-folder",
        )
    ]
    if TEST_DATABASE_URL:
        server = make_url(TEST_DATABASE_URL)
        nobody_listens = server.set(host="127.0.0.1", port=free_port())
        cases += [
            pytest.param(nobody_listens, "Connection refused", id="postgres-unreachable-host"),
            pytest.param(
                server.set(database="no_such_db"),
                'database "no_such_db" does not exist',
                id="no-database",
            ),
        ]
    return cases


@pytest.mark.parametrize(("url", "reason"), unreachable_databases())
def test_a_database_that_cannot_be_reached_ends_startup_with_one_line(fresh_checkout, url, reason):
    database_url = url if isinstance(url, str) else url.render_as_string(hide_password=False)
    r = start(
        fresh_checkout,
        fresh_checkout.env | {"DATABASE_URL": database_url, "BETTER_AUTH_SECRET": SECRET},
    )
    assert r.returncode == 3
    assert "Traceback" not in r.stderr
    [line] = [line for line in r.stderr.splitlines() if "DATABASE_URL" in line]
    assert line.startswith("CRITICAL: Refusing to start: DATABASE_URL (")
    assert reason in line
    assert line.endswith("Check it and retry")


@contextmanager
def serving(checkout, env: dict, *options: str, workers: int = 1):
    """`uvicorn main:app` running until the block ends; yields its address and what it logged."""
    port = free_port()
    command = [sys.executable, "-m", "uvicorn", "main:app", "--port", str(port), *options]
    server = subprocess.Popen(
        command, cwd=checkout.path, env=env, stderr=subprocess.PIPE, text=True
    )
    log = SimpleNamespace(text="")
    try:
        while (
            log.text.count("Application startup complete") < workers or "running on" not in log.text
        ):
            line = server.stderr.readline()
            assert line, f"uvicorn exited: {log.text}"
            log.text += line
        yield f"http://127.0.0.1:{port}", log
    finally:
        server.terminate()
        log.text += server.communicate(timeout=30)[1]


def test_quickstart_serves_on_sqlite_with_a_local_token(fresh_checkout):
    with serving(fresh_checkout, fresh_checkout.env) as (url, log):
        token = subprocess.run(
            [sys.executable, "main.py", "token", "alice"],
            cwd=fresh_checkout.path,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        r = httpx2.post(
            f"{url}/api/tasks",
            json={"title": "hello"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 201, r.text
        assert (fresh_checkout.path / "todo.db").exists()
    assert "sqlite:///" in log.text
    assert "(tasks kept in a local file; a deployment sets DATABASE_URL)" in log.text
    assert "HS256 (local secret" in log.text
    assert "Allowing browser origins: http://localhost:3000" in log.text
    assert (fresh_checkout.path / ".dev-secret").read_text() not in log.text


def test_the_token_command_refuses_an_empty_user_id(fresh_checkout):
    r = subprocess.run(
        [sys.executable, "main.py", "token", ""],
        cwd=fresh_checkout.path,
        env=fresh_checkout.env,
        capture_output=True,
    )
    assert r.returncode != 0
    assert b"non-empty user id" in r.stderr


def test_cors_origins_is_a_list_written_as_copied_from_the_address_bar(fresh_checkout):
    env = fresh_checkout.env | {"CORS_ORIGINS": "https://app.example/, https://admin.example"}
    with serving(fresh_checkout, env) as (url, log):
        for origin, allowed in [("https://app.example", True), ("https://admin.example", True)]:
            preflight = {"Origin": origin, "Access-Control-Request-Method": "GET"}
            r = httpx2.options(f"{url}/api/tasks", headers=preflight)
            assert (r.headers.get("Access-Control-Allow-Origin") == origin) is allowed, (
                origin,
                r.headers,
            )
        r = httpx2.options(f"{url}/api/tasks", headers={"Origin": "http://localhost:3000"})
        assert "Access-Control-Allow-Origin" not in r.headers
    assert "Allowing browser origins: https://app.example, https://admin.example" in log.text


def test_a_short_secret_starts_with_one_warning(fresh_checkout):
    short = "only-twenty-chars-xx"
    with serving(fresh_checkout, fresh_checkout.env | {"BETTER_AUTH_SECRET": short}) as (url, log):
        with pytest.warns(
            jwt.InsecureKeyLengthWarning
        ):  # what PyJWT says on every use of such a key
            token = make_token(key=short)
        assert (
            httpx2.get(f"{url}/api/tasks", headers={"Authorization": f"Bearer {token}"}).status_code
            == 200
        )
    warnings = [line for line in log.text.splitlines() if "WARNING" in line or "Warning" in line]
    assert warnings == [
        "WARNING:  BETTER_AUTH_SECRET is under 32 characters: use openssl rand -base64 32"
    ]


@needs_postgres
def test_startup_log_masks_the_password_and_never_shows_the_secret(fresh_checkout, engine):
    url = engine.url.set(password="hunter2-password")
    env = fresh_checkout.env | {
        "DATABASE_URL": url.render_as_string(hide_password=False),
        "BETTER_AUTH_SECRET": SECRET,
        "BETTER_AUTH_URL": "http://localhost:3000",
    }
    with serving(fresh_checkout, env) as (_, log):
        pass
    assert "postgresql+psycopg://postgres:***@" in log.text
    assert "HS256 (BETTER_AUTH_SECRET)" in log.text
    assert "http://localhost:3000/api/auth/jwks" in log.text
    assert "hunter2" not in log.text
    assert SECRET not in log.text


@needs_postgres
def test_with_only_better_auth_url_the_startup_log_names_the_keys_alone(fresh_checkout, engine):
    database = engine.url.render_as_string(hide_password=False)
    env = fresh_checkout.env | {
        "DATABASE_URL": database,
        "BETTER_AUTH_URL": "http://localhost:3000",
    }
    with serving(fresh_checkout, env) as (_, log):
        pass
    [line] = [line for line in log.text.splitlines() if "Accepting tokens" in line]
    assert (
        line == "INFO:     Accepting tokens: EdDSA/ES256/RS256/PS256"
        " (keys from http://localhost:3000/api/auth/jwks)"
    )


# --- Deployment: several workers, many connections, a pooler ---


@contextmanager
def empty_database():
    """The URL of a database with no tables yet, of the kind the tests run on."""
    if TEST_DATABASE_URL:
        with new_postgres_database(TEST_DATABASE_URL) as url:
            yield url.render_as_string(hide_password=False)
    else:
        with tempfile.TemporaryDirectory() as folder:
            yield f"sqlite:///{Path(folder) / 'todo.db'}"


@pytest.mark.parametrize("attempt", range(5))
def test_four_workers_starting_together_on_an_empty_database_all_serve(fresh_checkout, attempt):
    with empty_database() as url:
        env = fresh_checkout.env | {"DATABASE_URL": url, "BETTER_AUTH_SECRET": SECRET}
        with serving(fresh_checkout, env, "--workers", "4", workers=4) as (address, log):
            headers = {"Authorization": f"Bearer {make_token()}"}
            with httpx2.Client(base_url=address, headers=headers) as http:
                created = [http.post("/api/tasks", json={"title": f"t{n}"}) for n in range(8)]
                assert [r.status_code for r in created] == [201] * 8, [r.text for r in created]
                assert len(http.get("/api/tasks").json()) == 8
        assert "Traceback" not in log.text
        assert "died" not in log.text


@pytest.mark.skipif(
    os.name != "posix", reason="raises the open-files limit with `resource`, which is Unix-only"
)
def test_every_request_is_answered_with_ten_thousand_idle_clients_connected(fresh_checkout):
    """Browsers keep connections open and load balancers hold pools; a database connection opened
    then has a descriptor past 1023, which select() cannot watch."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 16_384 if hard == resource.RLIM_INFINITY else min(hard, 16_384)
    if wanted < 10_500:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run this test: the open-files hard limit is {hard}, under 10,500")
        pytest.skip(f"needs an open-files hard limit of 10,500 (ulimit -Hn says {hard})")
    resource.setrlimit(
        resource.RLIMIT_NOFILE, (wanted, hard)
    )  # the server started below inherits it
    idle: list[socket.socket] = []
    try:
        with empty_database() as url:
            env = fresh_checkout.env | {"DATABASE_URL": url, "BETTER_AUTH_SECRET": SECRET}
            with serving(fresh_checkout, env) as (address, log):
                idle += [
                    socket.create_connection(("127.0.0.1", int(address.rsplit(":", 1)[1])))
                    for _ in range(10_000)
                ]
                headers = {"Authorization": f"Bearer {make_token()}"}
                with httpx2.Client(base_url=address, headers=headers, timeout=30) as http:
                    created = at_once(
                        100, lambda n: http.post("/api/tasks", json={"title": f"t{n}"})
                    )
                    assert [r.status_code for r in created] == [201] * 100, [
                        r.text for r in created
                    ][:3]
                    read = at_once(200, lambda n: http.get(created[n % 100].headers["Location"]))
                    assert [r.status_code for r in read] == [200] * 200, [r.text for r in read][:3]
                    assert len(http.get("/api/tasks").json()) == 100
        assert "Traceback" not in log.text
    finally:
        for connection in idle:
            connection.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


class Proxy:
    """A TCP proxy to the database that a test can cut, as if the database had gone, and restore."""

    def __init__(self, host: str, port: int):
        self.target = (host, port)
        self.port = free_port()
        self.sockets: list[socket.socket] = []
        self.restore()

    def restore(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", self.port))
        Thread(target=self.accept, args=[self.listener], daemon=True).start()

    def accept(self, listener: socket.socket) -> None:
        with suppress(OSError):
            while True:
                client = listener.accept()[0]
                server = socket.create_connection(self.target)
                self.sockets += [client, server]
                Thread(target=self.pipe, args=[client, server], daemon=True).start()
                Thread(target=self.pipe, args=[server, client], daemon=True).start()

    @staticmethod
    def pipe(source: socket.socket, sink: socket.socket) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
            sink.shutdown(socket.SHUT_WR)

    def cut(self) -> None:
        for s in [self.listener, *self.sockets]:
            with suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        self.sockets.clear()


@pytest.fixture
def pgbouncer(engine):
    """PgBouncer in transaction mode before the test database, with fewer server connections than
    clients."""
    binary = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("CI must run the pooler tests: .ci/run installs pgbouncer")
        pytest.skip("needs pgbouncer (apt-get install pgbouncer)")
    folder = Path(tempfile.mkdtemp())
    port = free_port()
    (folder / "users.txt").write_text(f'"{engine.url.username}" ""\n')
    (folder / "pgbouncer.ini").write_text(
        f"[databases]\n* = host={engine.url.host} port={engine.url.port or 5432}\n"
        f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n"
        f"auth_type = trust\nauth_file = {folder / 'users.txt'}\n"
        "pool_mode = transaction\ndefault_pool_size = 4\n"
    )
    for path in [folder, *folder.iterdir()]:
        path.chmod(0o755)  # PgBouncer will not run as root: it reads these as another user
    as_user = ["-u", "postgres"] if os.geteuid() == 0 else []
    with open(folder / "log", "w") as log:
        process = subprocess.Popen([binary, *as_user, str(folder / "pgbouncer.ini")], stderr=log)
    while "listening on" not in (folder / "log").read_text():
        assert process.poll() is None, (folder / "log").read_text()
        time.sleep(0.05)
    yield engine.url.set(host="127.0.0.1", port=port)
    process.terminate()
    process.wait()
    shutil.rmtree(folder)


def mixed_traffic(client: TestClient, users: list[str]) -> list[list]:
    """Each user, in a thread of their own, creates, reads, renames, toggles, lists and deletes;
    what each saw, with ids numbered per user and times left out, so that runs can be compared."""

    def one_user(user_id: str) -> list:
        user, ids, seen = User(client, user_id), {}, []

        def record(r) -> None:
            body = r.json() if r.content else None
            for task in body if isinstance(body, list) else [body] if body else []:
                task["id"] = ids.setdefault(task["id"], len(ids))
                for name in ["user_id", "created_at", "updated_at"]:
                    task.pop(name, None)
            seen.append((r.status_code, body))

        for n in range(6):
            record(user.post("/api/tasks", json={"title": f"task {n}"}))
        mine = sorted(ids)
        for task_id in mine:
            record(user.get(f"/api/tasks/{task_id}"))
            record(user.put(f"/api/tasks/{task_id}", json={"title": f"renamed {ids[task_id]}"}))
            record(user.patch(f"/api/tasks/{task_id}/complete"))
            record(user.get("/api/tasks", params={"status": "completed"}))
        for task_id in mine[::2]:
            record(user.delete(f"/api/tasks/{task_id}"))
        record(user.get("/api/tasks"))
        return seen

    with ThreadPoolExecutor(len(users)) as pool:
        return list(pool.map(one_user, users))


@needs_postgres
def test_every_request_works_through_a_transaction_pooler_as_it_does_directly(
    client, pgbouncer, monkeypatch
):
    direct = mixed_traffic(client, [f"direct-{n}" for n in range(16)])
    assert all(status < 300 for seen in direct for status, _ in seen)
    pooled_engine = main.create_db_engine(pgbouncer.render_as_string(hide_password=False))
    monkeypatch.setattr(main, "engine", pooled_engine)
    try:
        assert mixed_traffic(client, [f"pooled-{n}" for n in range(16)]) == direct
    finally:
        pooled_engine.dispose()


# --- Generated requests ---

schema = schemathesis.openapi.from_asgi("/openapi.json", main.app)


@schema.parametrize()
@hypothesis.settings(
    max_examples=50,
    deadline=None,
    database=None,
    suppress_health_check=list(hypothesis.HealthCheck),
)
def test_generated_requests_get_no_5xx_and_only_documented_responses(case):
    if "user_id" in (case.path_parameters or {}):
        case.path_parameters["user_id"] = "alice"  # else every request is a 403
    # Every check on what the API answers; not the two that judge which requests it should
    # accept, as JSON Schema cannot say "1–200 characters once trimmed" and unknown query
    # parameters are ignored; nor the `Allow` of a 405, where Starlette names the methods of the
    # first route on that path only.
    excluded = [
        schemathesis.checks.positive_data_acceptance,
        schemathesis.checks.negative_data_rejection,
        schemathesis.checks.allow_header_conformance,
    ]
    case.call_and_validate(
        headers={"Authorization": f"Bearer {make_token()}"}, excluded_checks=excluded
    )


# --- Concurrency and database faults (PostgreSQL) ---


def at_once(count: int, request) -> list:
    """`request(n)` for n in range(count), from 16 threads at once."""
    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(request, range(count)))


@needs_postgres
def test_concurrent_toggles_lose_no_update(alice):
    task = alice.create()
    toggles = at_once(101, lambda _: alice.patch(f"/api/tasks/{task['id']}/complete"))
    succeeded = sum(r.status_code == 200 for r in toggles)
    assert succeeded == 101, [r.text for r in toggles if r.status_code != 200][:3]
    assert alice.get(f"/api/tasks/{task['id']}").json()["completed"] is (succeeded % 2 == 1)


@needs_postgres
def test_concurrent_first_writes_by_many_users_are_all_kept_once(client):
    users = [User(client, f"user-{n}") for n in range(20)]
    created = at_once(100, lambda n: users[n % 20].post("/api/tasks", json={"title": f"t{n}"}))
    assert [r.status_code for r in created] == [201] * 100
    for n, user in enumerate(users):
        assert sorted(user.titles()) == sorted(f"t{k}" for k in range(n, 100, 20))


@needs_postgres
def test_concurrent_updates_of_one_task_never_fail(alice):
    task = alice.create()
    path = f"/api/tasks/{task['id']}"
    updates = at_once(
        60, lambda n: alice.put(path, json={"title": f"v{n}", "completed": n % 2 == 0})
    )
    assert [r.status_code for r in updates] == [200] * 60
    final = alice.get(path).json()
    assert final["title"] in {f"v{n}" for n in range(60)}
    assert final["completed"] is (
        int(final["title"][1:]) % 2 == 0
    )  # one update's values, not a mix


def kill_every_connection_to(url) -> None:
    """pg_terminate_backend on every session of that database but ours, as a restart or Neon's
    suspend would."""
    with psycopg.connect(
        url.set(drivername="postgresql").render_as_string(hide_password=False)
    ) as admin:
        admin.autocommit = True
        others = "datname = current_database() AND pid <> pg_backend_pid()"
        killed = admin.execute(
            f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE {others}"
        )
        assert killed.fetchone()[0] > 1
        while admin.execute(f"SELECT count(*) FROM pg_stat_activity WHERE {others}").fetchone()[0]:
            time.sleep(0.05)


@needs_postgres
def test_connections_the_server_closed_are_replaced_unnoticed(alice, engine):
    at_once(16, lambda _: alice.get("/api/tasks"))  # fill the pool
    kill_every_connection_to(engine.url)
    assert [r.status_code for r in at_once(32, lambda _: alice.get("/api/tasks"))] == [200] * 32


def survives_an_outage(http, proxy: Proxy) -> None:
    """Writes, an outage (quick 503s), recovery within 2 s, then every acknowledged write and
    nothing else."""
    kept = []
    for n in range(5):
        r = http.post("/api/tasks", json={"title": f"before {n}"})
        assert r.status_code == 201, r.text
        kept.append(r.json()["id"])
    proxy.cut()
    for method, path in [
        ("GET", "/api/tasks"),
        ("POST", "/api/tasks"),
        ("PATCH", f"/api/tasks/{kept[0]}/complete"),
    ]:
        started = time.monotonic()
        r = http.request(method, path, json={"title": "lost?"} if method == "POST" else None)
        assert time.monotonic() - started < 2
        assert r.status_code == 503, r.text
        assert r.json() == {"detail": "Database unavailable, try again shortly"}
    assert http.get("/health").status_code == 503

    proxy.restore()
    started = time.monotonic()
    while http.get("/health").status_code != 200:
        assert time.monotonic() - started < 2, "not back within 2 s"
        time.sleep(0.05)
    for _ in range(8):  # every worker, every connection
        tasks = http.get("/api/tasks").json()
        assert sorted(task["id"] for task in tasks) == sorted(
            kept
        )  # every acknowledged write, nothing else
        assert not any(task["completed"] for task in tasks)


@needs_postgres
def test_an_unreachable_database_is_503_quickly_and_recovered_from_with_no_write_lost(
    alice, engine, monkeypatch
):
    proxy = Proxy(engine.url.host, engine.url.port or 5432)
    proxied_url = engine.url.set(host="127.0.0.1", port=proxy.port)
    proxied = main.create_db_engine(proxied_url.render_as_string(hide_password=False))
    monkeypatch.setattr(main, "engine", proxied)
    try:
        survives_an_outage(alice, proxy)
    finally:
        proxy.cut()
        proxied.dispose()


@needs_postgres
def test_two_workers_ride_out_killed_connections_and_an_outage(fresh_checkout, engine):
    proxy = Proxy(engine.url.host, engine.url.port or 5432)
    proxied = engine.url.set(host="127.0.0.1", port=proxy.port).render_as_string(
        hide_password=False
    )
    env = fresh_checkout.env | {"DATABASE_URL": proxied, "BETTER_AUTH_SECRET": SECRET}
    try:
        with serving(fresh_checkout, env, "--workers", "2", workers=2) as (address, _):
            headers = {"Authorization": f"Bearer {make_token()}"}
            with httpx2.Client(base_url=address, headers=headers, timeout=10) as http:
                at_once(32, lambda _: http.get("/api/tasks"))  # connections open in both workers
                kill_every_connection_to(engine.url)
                assert [r.status_code for r in at_once(32, lambda _: http.get("/api/tasks"))] == [
                    200
                ] * 32
                survives_an_outage(http, proxy)
    finally:
        proxy.cut()
