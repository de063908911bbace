"""The contract (CONTRACT.md) as tests: routes, ownership, auth, validation, errors, configuration.

SQLite by default; on PostgreSQL when TEST_DATABASE_URL is set (the tests make their own database there).
"""

import base64
import hashlib
import hmac
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from functools import cache
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

import bench
import main

SECRET = "test-secret-that-is-long-enough-for-hs256"
TEST_DATABASE_URL = os.environ.get("TEST_DATABASE_URL")
PREFIXES = ["/api/tasks", "/api/alice/tasks"]
needs_postgres = pytest.mark.skipif(not TEST_DATABASE_URL, reason="needs PostgreSQL (TEST_DATABASE_URL)")


# --- Fixtures and helpers ---


@pytest.fixture(scope="session")
def engine(tmp_path_factory):
    if not TEST_DATABASE_URL:
        engine = main.create_db_engine(f"sqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}")
        yield engine
        engine.dispose()
        return
    # A database of our own, so that tests never touch the data behind TEST_DATABASE_URL.
    server_url = make_url(TEST_DATABASE_URL).set(drivername="postgresql+psycopg")
    name = f"todo_test_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    engine = main.create_db_engine(server_url.set(database=name).render_as_string(hide_password=False))
    yield engine
    engine.dispose()
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


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
    main.verified_claims.cache_clear()  # tokens verified under another test's configuration
    SQLModel.metadata.create_all(engine)
    yield
    with Session(engine) as session:
        for table in reversed(SQLModel.metadata.sorted_tables):
            session.exec(delete(table))


@pytest.fixture
def client():
    with TestClient(main.app) as client:
        yield client


def make_token(user_id: str | None = "alice", key=SECRET, algorithm="HS256", headers=None, **claims) -> str:
    """A token; a claim given as None is left out."""
    payload = {"sub": user_id, "exp": datetime.now(UTC) + timedelta(hours=1)} | claims
    payload = {name: value for name, value in payload.items() if value is not None}
    return jwt.encode(payload, key, algorithm=algorithm, headers=headers)


def auth_header(user_id: str = "alice", **token_args) -> dict[str, str]:
    return {"Authorization": f"Bearer {make_token(user_id, **token_args)}"}


def create(client, title="Buy milk", user_id="alice", **fields) -> dict:
    r = client.post("/api/tasks", json={"title": title, **fields}, headers=auth_header(user_id))
    assert r.status_code == 201, r.text
    return r.json()


def titles(response) -> list[str]:
    assert response.status_code == 200, response.text
    return [task["title"] for task in response.json()]


# --- Tasks: every operation under both prefixes ---


@pytest.mark.parametrize("prefix", PREFIXES)
def test_create_returns_the_task_and_its_location(client, prefix):
    r = client.post(prefix, json={"title": "  Buy milk  ", "description": "2 litres"}, headers=auth_header())
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
    assert client.get(r.headers["Location"], headers=auth_header()).json() == task


def test_create_without_description(client):
    assert create(client, "Call mum")["description"] is None


def test_create_ignores_fields_the_caller_must_not_set(client):
    sent = {"title": "Mine", "id": 999, "user_id": "bob", "completed": True, "created_at": "2000-01-01T00:00:00Z"}
    task = client.post("/api/tasks", json=sent, headers=auth_header("alice")).json()
    assert task["id"] != 999
    assert task["user_id"] == "alice"
    assert task["completed"] is False
    assert task["created_at"].startswith(str(datetime.now(UTC).year))


@pytest.mark.parametrize("prefix", PREFIXES)
def test_list_is_mine_and_newest_first(client, prefix):
    for title in ["first", "second", "third"]:
        create(client, title)
    create(client, "bob's", user_id="bob")
    assert titles(client.get(prefix, headers=auth_header())) == ["third", "second", "first"]


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize(
    ("status", "expected"),
    [("all", ["done", "open"]), ("pending", ["open"]), ("completed", ["done"]), (None, ["done", "open"])],
)
def test_list_filters_by_status(client, prefix, status, expected):
    create(client, "open")
    done = create(client, "done")
    client.patch(f"/api/tasks/{done['id']}/complete", headers=auth_header())
    params = {"status": status} if status else {}
    assert titles(client.get(prefix, params=params, headers=auth_header())) == expected


@pytest.mark.parametrize("prefix", PREFIXES)
def test_list_pages_with_limit_and_offset(client, prefix):
    for n in range(5):
        create(client, f"task {n}")
    page = client.get(prefix, params={"limit": 2, "offset": 1}, headers=auth_header())
    assert titles(page) == ["task 3", "task 2"]


@pytest.mark.parametrize("prefix", PREFIXES)
def test_list_pages_after_a_task(client, prefix):
    for n in range(5):
        create(client, f"task {n}")
    first = client.get(prefix, params={"limit": 2}, headers=auth_header()).json()
    second = client.get(prefix, params={"limit": 2, "starting_after": first[-1]["id"]}, headers=auth_header())
    assert titles(second) == ["task 2", "task 1"]
    last = client.get(prefix, params={"starting_after": second.json()[-1]["id"]}, headers=auth_header())
    assert titles(last) == ["task 0"]


def test_list_after_an_unknown_task_is_404(client):
    r = client.get("/api/tasks", params={"starting_after": 12345}, headers=auth_header())
    assert r.status_code == 404, r.text
    assert r.json() == {"detail": "Task not found"}


def test_list_orders_same_instant_by_id(client, engine):
    same = datetime(2030, 1, 1, tzinfo=UTC)
    with Session(engine) as session:
        session.add(main.User(id="alice", created_at=same))
        session.commit()
        for title in ["a", "b", "c"]:
            session.add(main.Task(title=title, user_id="alice", created_at=same, updated_at=same))
            session.commit()
    assert titles(client.get("/api/tasks", headers=auth_header())) == ["c", "b", "a"]


@pytest.mark.parametrize("prefix", PREFIXES)
def test_get_one_task(client, prefix):
    task = create(client)
    r = client.get(f"{prefix}/{task['id']}", headers=auth_header())
    assert r.status_code == 200, r.text
    assert r.json() == task


@pytest.mark.parametrize("prefix", PREFIXES)
def test_update_changes_only_what_is_sent(client, prefix):
    task = create(client, "Old", description="keep me")
    r = client.put(f"{prefix}/{task['id']}", json={"title": " New "}, headers=auth_header())
    assert r.status_code == 200, r.text
    updated = r.json()
    assert updated == task | {"title": "New", "updated_at": updated["updated_at"]}
    assert updated["updated_at"] > task["updated_at"]
    assert client.get(f"/api/tasks/{task['id']}", headers=auth_header()).json() == updated


def test_update_every_field(client):
    task = create(client, "Old", description="old")
    changes = {"title": "New", "description": None, "completed": True}
    r = client.put(f"/api/tasks/{task['id']}", json=changes, headers=auth_header())
    assert r.status_code == 200, r.text
    assert {name: r.json()[name] for name in changes} == changes


def test_update_with_nothing_changes_nothing(client):
    task = create(client)
    r = client.put(f"/api/tasks/{task['id']}", json={}, headers=auth_header())
    assert r.status_code == 200, r.text
    assert r.json() == task


def test_update_ignores_fields_the_caller_must_not_set(client):
    task = create(client)
    sent = {"id": 999, "user_id": "bob", "created_at": "2000-01-01T00:00:00Z", "title": "Mine"}
    r = client.put(f"/api/tasks/{task['id']}", json=sent, headers=auth_header())
    assert r.status_code == 200, r.text
    assert r.json() | {"title": "Buy milk", "updated_at": task["updated_at"]} == task


@pytest.mark.parametrize("prefix", PREFIXES)
def test_delete_returns_204_and_the_task_is_gone(client, prefix):
    task = create(client)
    r = client.delete(f"{prefix}/{task['id']}", headers=auth_header())
    assert r.status_code == 204, r.text
    assert r.content == b""
    assert client.get(f"/api/tasks/{task['id']}", headers=auth_header()).status_code == 404
    assert client.delete(f"{prefix}/{task['id']}", headers=auth_header()).status_code == 404


@pytest.mark.parametrize("prefix", PREFIXES)
def test_complete_without_body_toggles(client, prefix):
    task = create(client)
    first = client.patch(f"{prefix}/{task['id']}/complete", headers=auth_header())
    assert first.status_code == 200, first.text
    assert first.json()["completed"] is True
    assert first.json()["updated_at"] > task["updated_at"]
    second = client.patch(f"{prefix}/{task['id']}/complete", headers=auth_header())
    assert second.json()["completed"] is False
    assert second.json()["updated_at"] > first.json()["updated_at"]
    assert second.json()["created_at"] == task["created_at"]


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize("value", [True, False])
def test_complete_with_body_sets_the_value(client, prefix, value):
    task = create(client)
    for _ in range(2):
        r = client.patch(f"{prefix}/{task['id']}/complete", json={"completed": value}, headers=auth_header())
        assert r.status_code == 200, r.text
        assert r.json()["completed"] is value


def test_timestamps_are_utc_iso_8601_with_an_offset(client):
    task = create(client)
    for name in ["created_at", "updated_at"]:
        stamp = datetime.fromisoformat(task[name])
        assert stamp.utcoffset() == timedelta(0)
        assert abs(stamp - datetime.now(UTC)) < timedelta(minutes=1)


# --- Data ---


def test_first_write_creates_the_user_and_deleting_the_user_deletes_their_tasks(client, engine):
    create(client, user_id="alice")
    create(client, user_id="bob")
    with Session(engine) as session:
        assert sorted(session.exec(select(main.User.id)).all()) == ["alice", "bob"]
        session.exec(delete(main.User).where(main.User.id == "alice"))
    assert client.get("/api/tasks", headers=auth_header("alice")).json() == []
    assert titles(client.get("/api/tasks", headers=auth_header("bob"))) == ["Buy milk"]
    create(client, user_id="alice")  # and a returning user gets their row back


def test_reading_creates_no_user(client, engine):
    client.get("/api/tasks", headers=auth_header("reader"))
    with Session(engine) as session:
        assert session.get(main.User, "reader") is None


# --- Ownership ---

ITEM_ROUTES = [("GET", ""), ("PUT", ""), ("DELETE", ""), ("PATCH", "/complete")]
OPERATIONS = [("GET", ""), ("POST", "")] + [(method, "/1" + suffix) for method, suffix in ITEM_ROUTES]
BODIES = {"PUT": {"title": "mine now"}, "POST": {"title": "x"}}


@pytest.mark.parametrize("prefix", ["/api/tasks", "/api/bob/tasks"])
@pytest.mark.parametrize(("method", "suffix"), ITEM_ROUTES)
def test_someone_elses_task_is_403_and_unchanged(client, prefix, method, suffix):
    task = create(client, user_id="alice")
    r = client.request(method, f"{prefix}/{task['id']}{suffix}", json=BODIES.get(method), headers=auth_header("bob"))
    assert r.status_code == 403, r.text
    assert r.json() == {"detail": "You do not own this task"}
    assert client.get(f"/api/tasks/{task['id']}", headers=auth_header("alice")).json() == task


@pytest.mark.parametrize("prefix", PREFIXES)
@pytest.mark.parametrize(("method", "suffix"), ITEM_ROUTES)
def test_a_task_that_does_not_exist_is_404(client, prefix, method, suffix):
    r = client.request(method, f"{prefix}/424242{suffix}", json=BODIES.get(method), headers=auth_header())
    assert r.status_code == 404, r.text
    assert r.json() == {"detail": "Task not found"}


@pytest.mark.parametrize("status", ["all", "pending", "completed"])
def test_no_status_filter_shows_someone_elses_tasks(client, status):
    for completed in [False, True]:
        task = create(client, user_id="alice")
        client.patch(f"/api/tasks/{task['id']}/complete", json={"completed": completed}, headers=auth_header())
    r = client.get("/api/tasks", params={"status": status}, headers=auth_header("bob"))
    assert r.status_code == 200, r.text
    assert r.json() == []


def test_paging_after_someone_elses_task_is_403(client):
    task = create(client, user_id="alice")
    r = client.get("/api/tasks", params={"starting_after": task["id"]}, headers=auth_header("bob"))
    assert r.status_code == 403, r.text


@pytest.mark.parametrize(("method", "suffix"), OPERATIONS)
def test_another_user_id_in_the_path_is_403(client, method, suffix):
    task = create(client, user_id="alice")
    path = f"/api/alice/tasks{suffix}".replace("/1", f"/{task['id']}")
    r = client.request(method, path, json=BODIES.get(method), headers=auth_header("bob"))
    assert r.status_code == 403, r.text
    assert r.json() == {"detail": "The user id in the path is not yours"}
    assert titles(client.get("/api/tasks", headers=auth_header("alice"))) == ["Buy milk"]


# --- Auth ---

ALL_ROUTES = [(method, prefix + suffix) for prefix in PREFIXES for method, suffix in OPERATIONS]


@pytest.mark.parametrize(("method", "path"), ALL_ROUTES)
@pytest.mark.parametrize("header", [None, "Basic YWxpY2U6cHc=", "Bearer", "Bearer not-a-jwt"])
def test_every_route_refuses_a_missing_or_malformed_token(client, method, path, header):
    headers = {"Authorization": header} if header else {}
    r = client.request(method, path, json=BODIES.get(method), headers=headers)
    assert r.status_code == 401, r.text
    assert r.headers["WWW-Authenticate"] == "Bearer"
    assert r.json()["detail"]


class JWKSServer:
    """Better Auth's /api/auth/jwks on loopback, with keys made in the test."""

    def __init__(self):
        self.private_keys: dict[str, object] = {}
        self.requests = 0
        self.delay = 0.0
        self.failing = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests += 1
                time.sleep(server.delay)
                if self.path != "/api/auth/jwks" or server.failing:
                    self.send_error(404 if not server.failing else 500)
                    return
                body = json.dumps({"keys": server.public_jwks()}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        Thread(target=self.httpd.serve_forever, daemon=True).start()

    ALGORITHMS = {
        "EdDSA": (ed25519.Ed25519PrivateKey.generate, jwt.algorithms.OKPAlgorithm),
        "ES256": (lambda: ec.generate_private_key(ec.SECP256R1()), jwt.algorithms.ECAlgorithm),
        "RS256": (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), jwt.algorithms.RSAAlgorithm),
        "PS256": (
            lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
            jwt.algorithms.RSAPSSAlgorithm,
        ),
    }

    def add_key(self, algorithm="EdDSA") -> str:
        kid = f"{algorithm}-{len(self.private_keys)}"
        self.private_keys[kid] = (algorithm, self.ALGORITHMS[algorithm][0]())
        return kid

    def public_jwks(self) -> list[dict]:
        keys = []
        for kid, (algorithm, private_key) in list(self.private_keys.items()):
            to_jwk = self.ALGORITHMS[algorithm][1].to_jwk
            keys.append(to_jwk(private_key.public_key(), as_dict=True) | {"kid": kid, "alg": algorithm})
        return keys

    def token(self, kid: str, user_id="alice", **claims) -> str:
        algorithm, private_key = self.private_keys[kid]
        claims = {"iss": self.url, "aud": self.url} | claims
        return make_token(user_id, key=private_key, algorithm=algorithm, headers={"kid": kid}, **claims)


@pytest.fixture
def jwks(monkeypatch):
    server = JWKSServer()
    monkeypatch.setattr(main.settings, "better_auth_url", server.url + "/")  # a trailing slash changes nothing
    monkeypatch.setattr(main.settings, "better_auth_secret", None)
    monkeypatch.setattr(main.settings, "database_url", "postgresql://db.example/todo")  # no local secret either
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


def test_hs256_token_is_accepted(client):
    assert get_tasks(client, make_token()).status_code == 200


def expired():
    return datetime.now(UTC) - timedelta(minutes=5)


def unsigned_token():
    return jwt.encode({"sub": "alice", "exp": datetime.now(UTC) + timedelta(hours=1)}, None, algorithm="none")


def hs256_signed_with(key_bytes: bytes, **header) -> str:
    """What an attacker builds by hand: an HS256 token keyed with a public key (PyJWT refuses to)."""

    def segment(data: dict) -> bytes:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=")

    claims = {"sub": "alice", "exp": int(time.time()) + 3600}
    signing_input = segment({"alg": "HS256", "typ": "JWT", **header}) + b"." + segment(claims)
    signature = base64.urlsafe_b64encode(hmac.new(key_bytes, signing_input, hashlib.sha256).digest()).rstrip(b"=")
    return (signing_input + b"." + signature).decode()


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (lambda: "a.b.c", "Invalid token"),
        (lambda: make_token(key="another-secret-that-is-long-enough-too"), "Signature verification failed"),
        (lambda: make_token()[:-4] + "AAAA", "Signature verification failed"),
        (lambda: make_token(exp=expired()), "Signature has expired"),
        (lambda: make_token(exp=None), 'missing the "exp" claim'),
        (lambda: make_token(user_id=None), 'missing the "sub" claim'),
        (lambda: make_token(user_id=""), "empty subject"),
        (lambda: make_token(user_id=42), "Subject must be a string"),
        (unsigned_token, "Tokens signed with none are not accepted"),
    ],
    ids=["garbage", "wrong-secret", "tampered", "expired", "no-exp", "no-sub", "empty-sub", "int-sub", "alg-none"],
)
def test_bad_hs256_tokens_are_401_saying_why(client, token, reason):
    r = get_tasks(client, token())
    assert r.status_code == 401, r.text
    assert reason in r.json()["detail"]
    assert r.headers["WWW-Authenticate"] == "Bearer"


def test_a_token_seen_before_still_expires(client, monkeypatch):
    token = make_token(exp=datetime.now(UTC) + timedelta(minutes=1))
    assert get_tasks(client, token).status_code == 200
    monkeypatch.setattr(main, "time", SimpleNamespace(time=lambda: time.time() + 120))
    r = get_tasks(client, token)
    assert r.status_code == 401, r.text
    assert "Signature has expired" in r.json()["detail"]


def test_a_little_clock_skew_is_tolerated(client):
    assert get_tasks(client, make_token(exp=datetime.now(UTC) - timedelta(seconds=5))).status_code == 200


def test_hs256_issuer_and_audience_are_checked_when_configured(client, monkeypatch):
    assert get_tasks(client, make_token(iss="someone", aud="anything")).status_code == 200
    monkeypatch.setattr(main.settings, "jwt_issuer", "https://todo.example")
    monkeypatch.setattr(main.settings, "jwt_audience", "todo-api")
    good = {"iss": "https://todo.example", "aud": "todo-api"}
    assert get_tasks(client, make_token(**good)).status_code == 200
    for wrong, reason in [({"iss": "evil"}, "Invalid issuer"), ({"aud": "other"}, "Audience doesn't match")]:
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
        (lambda jwks, kid: hs256_signed_with(public_pem(kid, jwks), kid=kid), "HS256 are not accepted"),
        (lambda jwks, kid: hs256_signed_with(json.dumps(jwks.public_jwks()[0]).encode(), kid=kid), "HS256"),
        (lambda jwks, kid: unsigned_token(), "none are not accepted"),
        (lambda jwks, kid: make_token(headers={"kid": kid}), "HS256 are not accepted"),
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
        key=ed25519.Ed25519PrivateKey.generate(), algorithm="EdDSA", headers={"kid": kid}, iss=jwks.url, aud=jwks.url
    )
    r = get_tasks(client, forged)
    assert r.status_code == 401, r.text
    assert "Signature verification failed" in r.json()["detail"]


def test_a_token_whose_algorithm_does_not_fit_the_key_is_401(client, jwks):
    kid = jwks.add_key("EdDSA")
    other = jwks.add_key("ES256")
    algorithm, es_key = jwks.private_keys[other]
    token = make_token(key=es_key, algorithm=algorithm, headers={"kid": kid}, iss=jwks.url, aud=jwks.url)
    assert get_tasks(client, token).status_code == 401


def test_asymmetric_tokens_without_a_jwks_configured_are_401(client):
    private_key = ed25519.Ed25519PrivateKey.generate()
    r = get_tasks(client, make_token(key=private_key, algorithm="EdDSA", headers={"kid": "k"}))
    assert r.status_code == 401, r.text
    assert "EdDSA are not accepted" in r.json()["detail"]


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


@pytest.fixture
def clock(monkeypatch):
    """Moves the JWKS client's clock forward without waiting."""
    clock = SimpleNamespace(offset=0.0)
    monkeypatch.setattr(jwt.jwks_client, "time", SimpleNamespace(monotonic=lambda: time.monotonic() + clock.offset))
    return clock


def test_unknown_kid_is_401_and_random_kids_do_not_flood_the_auth_server(client, jwks, clock):
    kid = jwks.add_key()
    assert get_tasks(client, jwks.token(kid)).status_code == 200
    fetches = jwks.requests
    for n in range(20):
        r = get_tasks(client, jwks_token_with_kid(jwks, kid, f"random-{n}"))
        assert r.status_code == 401, r.text
        assert "Unable to find a signing key" in r.json()["detail"]
    assert jwks.requests - fetches == 0  # all within the cooldown after the first fetch
    clock.offset = 11
    get_tasks(client, jwks_token_with_kid(jwks, kid, "one-more"))
    assert jwks.requests - fetches == 1


def jwks_token_with_kid(jwks, signing_kid, claimed_kid):
    algorithm, private_key = jwks.private_keys[signing_kid]
    return make_token(key=private_key, algorithm=algorithm, headers={"kid": claimed_kid}, iss=jwks.url, aud=jwks.url)


def test_a_rotated_key_is_accepted_within_a_minute(client, jwks, clock):
    old = jwks.add_key()
    assert get_tasks(client, jwks.token(old)).status_code == 200
    new = jwks.add_key()
    clock.offset = 60
    assert get_tasks(client, jwks.token(new)).status_code == 200
    assert get_tasks(client, jwks.token(old)).status_code == 200


def test_an_unreachable_jwks_is_a_clear_error_never_acceptance(client, jwks):
    kid = jwks.add_key()
    token = jwks.token(kid)
    jwks.httpd.shutdown()
    jwks.httpd.server_close()
    started = time.monotonic()
    r = get_tasks(client, token)
    assert r.status_code == 503, r.text
    assert "keys are unavailable" in r.json()["detail"]
    assert time.monotonic() - started < 6


def test_a_slow_jwks_never_hangs_requests(client, jwks):
    kid = jwks.add_key()
    jwks.delay = 8  # longer than the 5 s the API waits
    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        responses = list(pool.map(lambda _: get_tasks(client, jwks.token(kid)), range(4)))
    assert [r.status_code for r in responses] == [503] * 4
    assert time.monotonic() - started < 7  # one 5 s wait, not four in a row
    assert jwks.requests == 1


def test_a_failing_jwks_is_asked_again_only_after_ten_seconds(client, jwks, monkeypatch):
    kid = jwks.add_key()
    jwks.failing = True
    for _ in range(10):
        r = get_tasks(client, jwks.token(kid))
        assert r.status_code == 503, r.text
    assert jwks.requests == 1
    jwks.failing = False
    later = SimpleNamespace(monotonic=lambda: time.monotonic() + 11, time=time.time)
    monkeypatch.setattr(main, "time", later)
    assert get_tasks(client, jwks.token(kid)).status_code == 200
    assert jwks.requests == 2


def test_the_user_is_attached_to_the_request(client):
    request = SimpleNamespace(state=SimpleNamespace())
    credentials = SimpleNamespace(credentials=make_token("carol"))
    assert main.get_current_user(request, credentials) == "carol"
    assert request.state.user == "carol"


# --- Validation ---


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"title": ""},
        {"title": "   "},
        {"title": "x" * 201},
        {"title": None},
        {"title": 42},
        {"title": ["a"]},
        {"title": "nul \x00 inside"},
        {"title": "ok", "description": "x" * 1001},
        {"title": "ok", "description": 7},
        {"title": "ok", "description": "nul \x00"},
    ],
)
def test_create_rejects_bad_fields_with_422(client, body):
    r = client.post("/api/tasks", json=body, headers=auth_header())
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"][0] == "body"
    assert client.get("/api/tasks", headers=auth_header()).json() == []


def test_create_accepts_the_limits(client):
    task = create(client, "  " + "x" * 200 + "  ", description="y" * 1000)
    assert len(task["title"]) == 200


@pytest.mark.parametrize(
    "body",
    [
        {"title": None},
        {"completed": None},
        {"title": ""},
        {"completed": "yes"},
        {"completed": 1},
        {"description": "x" * 1001},
    ],
)
def test_update_rejects_bad_fields_with_422(client, body):
    task = create(client)
    r = client.put(f"/api/tasks/{task['id']}", json=body, headers=auth_header())
    assert r.status_code == 422, r.text
    assert client.get(f"/api/tasks/{task['id']}", headers=auth_header()).json() == task


@pytest.mark.parametrize("body", ['{"completed": null}', '{"completed": "true"}', "[]", "{"])
def test_complete_rejects_a_bad_body_with_422(client, body):
    task = create(client)
    headers = auth_header() | {"Content-Type": "application/json"}
    r = client.patch(f"/api/tasks/{task['id']}/complete", content=body, headers=headers)
    assert r.status_code == 422, r.text


@pytest.mark.parametrize("raw", ['{"title": "\\ud800"}', '{"title": "ok", "description": "\\udfff"}', "{not json"])
def test_text_no_database_can_store_and_broken_json_are_422(client, raw):
    headers = auth_header() | {"Content-Type": "application/json"}
    r = client.post("/api/tasks", content=raw, headers=headers)
    assert r.status_code == 422, r.text
    assert r.json()["detail"]


@pytest.mark.parametrize(
    "params",
    [
        {"status": "done"},
        {"limit": 0},
        {"limit": 1001},
        {"limit": "ten"},
        {"offset": -1},
        {"offset": 2**31},
        {"offset": 2**63},
        {"starting_after": 2**31},
    ],
)
def test_bad_list_parameters_are_422(client, params):
    r = client.get("/api/tasks", params=params, headers=auth_header())
    assert r.status_code == 422, r.text


@pytest.mark.parametrize("task_id", ["abc", "1.5", "0", "-1", str(2**31), str(2**63), "9" * 40])
@pytest.mark.parametrize(("method", "suffix"), ITEM_ROUTES)
def test_task_ids_that_cannot_exist_are_422(client, task_id, method, suffix):
    r = client.request(method, f"/api/tasks/{task_id}{suffix}", json=BODIES.get(method), headers=auth_header())
    assert r.status_code == 422, r.text


# --- Errors ---


@pytest.mark.parametrize("chunked", [False, True])
def test_a_body_over_64_kib_is_413(client, chunked):
    body = json.dumps({"title": "x", "description": "y" * 65536}).encode()
    content = iter([body[:1000], body[1000:]]) if chunked else body
    headers = auth_header() | {"Content-Type": "application/json"}
    r = client.post("/api/tasks", content=content, headers=headers)
    assert r.status_code == 413, r.text
    assert r.json() == {"detail": "Request body is larger than 65536 bytes"}
    assert client.get("/api/tasks", headers=auth_header()).json() == []


def test_a_body_of_exactly_64_kib_is_read(client):
    body = json.dumps({"title": "x", "description": ""}).encode()
    body = body[:-1] + b" " * (65536 - len(body)) + b"}"
    r = client.post("/api/tasks", content=body, headers=auth_header() | {"Content-Type": "application/json"})
    assert r.status_code == 201, r.text


def test_unknown_route_and_wrong_method_are_json(client):
    assert client.get("/api/nothing-here", headers=auth_header()).json() == {"detail": "Not Found"}
    r = client.post("/health")
    assert r.status_code == 405
    assert r.json() == {"detail": "Method Not Allowed"}


def test_an_unexpected_error_is_500_without_internals(monkeypatch):
    def broken(*args):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(main, "get_owned_task", broken)
    with TestClient(main.app, raise_server_exceptions=False) as client:
        r = client.get("/api/tasks/1", headers=auth_header())
    assert r.status_code == 500
    assert r.json() == {"detail": "Internal server error"}


@pytest.fixture
def unreachable_database(monkeypatch):
    nobody_listens = bench.free_port()
    monkeypatch.setattr(main, "engine", main.create_db_engine(f"postgresql://postgres@127.0.0.1:{nobody_listens}/todo"))


def test_health(client):
    r = client.get("/health")
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ok", "database": "ok"}


@pytest.mark.parametrize("path", ["/health", "/api/tasks", "/api/tasks/1"])
def test_database_unreachable_is_503(path, unreachable_database):
    client = TestClient(main.app)  # not entered: the lifespan would need the database
    r = client.get(path, headers=auth_header())
    assert r.status_code == 503, r.text
    assert r.json() == {"detail": "Database unavailable, try again shortly"}


# --- Docs and CORS ---


def test_openapi_documents_auth_and_errors(client):
    spec = client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["HTTPBearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": main.bearer.model.description,
    }
    operations = [(path, method, op) for path, item in spec["paths"].items() for method, op in item.items()]
    task_operations = [(path, method, op) for path, method, op in operations if path.startswith("/api")]
    assert len(task_operations) == 12
    for path, method, operation in task_operations:
        assert {"HTTPBearer": []} in operation["security"], (path, method)
        assert {"401", "503"} <= operation["responses"].keys(), (path, method)
        if "{task_id}" in path:
            assert {"403", "404", "422"} <= operation["responses"].keys(), (path, method)
        if method in ("post", "put", "patch"):
            assert "413" in operation["responses"], (path, method)
        assert operation["summary"] and operation["description"], (path, method)
    assert client.get("/docs").status_code == 200


def test_cors_lets_the_frontend_send_a_token(client):
    preflight = {
        "Origin": "http://localhost:3000",
        "Access-Control-Request-Method": "PUT",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    r = client.options("/api/tasks/1", headers=preflight)
    assert r.status_code == 200, r.text
    assert r.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"
    assert {"authorization", "content-type"} <= set(r.headers["Access-Control-Allow-Headers"].lower().split(", "))
    r = client.get("/api/tasks", headers=auth_header() | {"Origin": "http://localhost:3000"})
    assert r.headers["Access-Control-Allow-Origin"] == "http://localhost:3000"


def test_cors_ignores_other_origins(client):
    preflight = {"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"}
    assert "Access-Control-Allow-Origin" not in client.options("/api/tasks", headers=preflight).headers
    r = client.get("/api/tasks", headers=auth_header() | {"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in r.headers


# --- Configuration and startup ---


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_neon_urls_run_with_psycopg_and_keep_their_parameters(scheme):
    url = f"{scheme}://user:pw@ep-example-pooler.example/neondb?sslmode=require&channel_binding=require"
    engine = main.create_db_engine(url)
    assert engine.url.drivername == "postgresql+psycopg"
    assert engine.dialect.driver == "psycopg"
    assert dict(engine.url.query) == {"sslmode": "require", "channel_binding": "require"}


def test_local_secret_serves_sqlite_only(client, monkeypatch, tmp_path):
    monkeypatch.setattr(main, "HERE", tmp_path)
    monkeypatch.setattr(main, "local_secret", cache(main.local_secret.__wrapped__))  # not the cached one
    monkeypatch.setattr(main.settings, "better_auth_secret", None)
    token = main.create_token("alice")
    assert get_tasks(client, token).status_code == 200
    assert (tmp_path / ".dev-secret").stat().st_mode & 0o077 == 0
    monkeypatch.setattr(main.settings, "database_url", "postgresql://db.example/todo")
    monkeypatch.setattr(main.settings, "better_auth_url", "http://127.0.0.1:9")
    main.verified_claims.cache_clear()  # as in a new process with that configuration
    assert get_tasks(client, token).status_code == 401


@pytest.fixture
def fresh_checkout(tmp_path):
    """main.py alone in a folder, and an environment with none of its variables set."""
    shutil.copy(Path(main.__file__), tmp_path / "main.py")
    names = {
        "DATABASE_URL",
        "BETTER_AUTH_SECRET",
        "BETTER_AUTH_URL",
        "BETTER_AUTH_JWKS_URL",
        "JWT_ISSUER",
        "JWT_AUDIENCE",
    }
    env = {name: value for name, value in os.environ.items() if name not in names and name != "CORS_ORIGINS"}
    return SimpleNamespace(path=tmp_path, env=env)


@pytest.mark.parametrize("where", ["environment", "environment, secrets empty", ".env, secrets empty"])
def test_a_deployment_that_cannot_verify_tokens_refuses_to_start(fresh_checkout, where):
    variables = {"DATABASE_URL": "postgresql://user:pw@db.example/todo"}
    if "empty" in where:
        variables |= {"BETTER_AUTH_SECRET": "", "BETTER_AUTH_URL": ""}
    env = fresh_checkout.env
    if where.startswith(".env"):
        (fresh_checkout.path / ".env").write_text("".join(f"{name}={value}\n" for name, value in variables.items()))
    else:
        env = env | variables
    r = subprocess.run(
        [sys.executable, "-m", "uvicorn", "main:app"],
        cwd=fresh_checkout.path,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode != 0
    assert r.stderr.strip().splitlines() == [
        "Refusing to start: DATABASE_URL is a deployment database but neither BETTER_AUTH_SECRET"
        " nor BETTER_AUTH_URL is set, so no token could be verified"
    ]


def serve(checkout, env) -> tuple[subprocess.Popen, str, str]:
    port = bench.free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "main:app", "--port", str(port)],
        cwd=checkout.path,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    log = ""
    while "Application startup complete" not in log:
        line = server.stderr.readline()
        assert line, f"uvicorn exited: {log}"
        log += line
    return server, f"http://127.0.0.1:{port}", log


def test_quickstart_serves_on_sqlite_with_a_local_token(fresh_checkout):
    server, url, log = serve(fresh_checkout, fresh_checkout.env)
    try:
        token = subprocess.run(
            [sys.executable, "main.py", "token", "alice"],
            cwd=fresh_checkout.path,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        r = httpx2.post(f"{url}/api/tasks", json={"title": "hello"}, headers={"Authorization": f"Bearer {token}"})
        assert r.status_code == 201, r.text
        assert (fresh_checkout.path / "todo.db").exists()
    finally:
        server.terminate()
        log += server.communicate()[1]
    assert "sqlite:///" in log
    assert "HS256 (local secret" in log
    assert (fresh_checkout.path / ".dev-secret").read_text() not in log


def test_cors_origins_is_a_comma_separated_list(fresh_checkout):
    env = fresh_checkout.env | {"CORS_ORIGINS": "https://app.example, https://admin.example"}
    server, url, _ = serve(fresh_checkout, env)
    try:
        for origin, allowed in [("https://admin.example", True), ("http://localhost:3000", False)]:
            preflight = {"Origin": origin, "Access-Control-Request-Method": "GET"}
            r = httpx2.options(f"{url}/api/tasks", headers=preflight)
            assert (r.headers.get("Access-Control-Allow-Origin") == origin) is allowed, (origin, r.headers)
    finally:
        server.terminate()
        server.communicate()


@needs_postgres
def test_startup_log_masks_the_password_and_never_shows_the_secret(fresh_checkout, engine):
    url = engine.url.set(password="hunter2-password")
    env = fresh_checkout.env | {
        "DATABASE_URL": url.render_as_string(hide_password=False),
        "BETTER_AUTH_SECRET": SECRET,
        "BETTER_AUTH_URL": "http://localhost:3000",
    }
    server, _, log = serve(fresh_checkout, env)
    server.terminate()
    log += server.communicate()[1]
    assert "postgresql+psycopg://postgres:***@" in log
    assert "HS256 (BETTER_AUTH_SECRET)" in log
    assert "http://localhost:3000/api/auth/jwks" in log
    assert "hunter2" not in log
    assert SECRET not in log


# --- Generated requests ---

schema = schemathesis.openapi.from_asgi("/openapi.json", main.app)


@schema.parametrize()
@hypothesis.settings(max_examples=50, deadline=None, database=None, suppress_health_check=list(hypothesis.HealthCheck))
def test_generated_requests_get_no_5xx_and_only_documented_responses(case):
    if "user_id" in (case.path_parameters or {}):
        case.path_parameters["user_id"] = "alice"  # else every request is a 403
    # Every check on what the API answers; not the two that judge which requests it should accept, as
    # JSON Schema cannot say "1–200 characters once trimmed" and unknown query parameters are ignored.
    case.call_and_validate(
        headers=auth_header(),
        excluded_checks=[schemathesis.checks.positive_data_acceptance, schemathesis.checks.negative_data_rejection],
    )


# --- Concurrency and database faults (PostgreSQL) ---


def at_once(count: int, request) -> list:
    """`request(n)` for n in range(count), from 16 threads at once."""
    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(request, range(count)))


@needs_postgres
def test_concurrent_toggles_lose_no_update(client):
    task = create(client)
    toggles = at_once(101, lambda _: client.patch(f"/api/tasks/{task['id']}/complete", headers=auth_header()))
    succeeded = sum(r.status_code == 200 for r in toggles)
    assert succeeded == 101, [r.text for r in toggles if r.status_code != 200][:3]
    assert client.get(f"/api/tasks/{task['id']}", headers=auth_header()).json()["completed"] is (succeeded % 2 == 1)


@needs_postgres
def test_concurrent_first_writes_by_many_users_are_all_kept_once(client):
    users = [f"user-{n}" for n in range(20)]
    created = at_once(
        100, lambda n: client.post("/api/tasks", json={"title": f"t{n}"}, headers=auth_header(users[n % 20]))
    )
    assert [r.status_code for r in created] == [201] * 100
    for n, user in enumerate(users):
        assert sorted(titles(client.get("/api/tasks", headers=auth_header(user)))) == sorted(
            f"t{k}" for k in range(n, 100, 20)
        )


@needs_postgres
def test_concurrent_updates_of_one_task_never_fail(client):
    task = create(client)
    path = f"/api/tasks/{task['id']}"
    updates = at_once(
        60, lambda n: client.put(path, json={"title": f"v{n}", "completed": n % 2 == 0}, headers=auth_header())
    )
    assert [r.status_code for r in updates] == [200] * 60
    final = client.get(path, headers=auth_header()).json()
    assert final["title"] in {f"v{n}" for n in range(60)}
    assert final["completed"] is (int(final["title"][1:]) % 2 == 0)  # one update's values, not a mix


@needs_postgres
def test_connections_the_server_closed_are_replaced_unnoticed(client, engine):
    at_once(16, lambda _: client.get("/api/tasks", headers=auth_header()))  # fill the pool
    admin_url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(admin_url, autocommit=True) as admin:
        others = "datname = current_database() AND pid <> pg_backend_pid()"
        killed = admin.execute(
            f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE {others}"
        ).fetchone()
        assert killed[0] > 1
        while admin.execute(f"SELECT count(*) FROM pg_stat_activity WHERE {others}").fetchone()[0]:
            time.sleep(0.05)
    responses = at_once(32, lambda _: client.get("/api/tasks", headers=auth_header()))
    assert [r.status_code for r in responses] == [200] * 32


@pytest.fixture
def database_proxy(engine, monkeypatch):
    """The app reaches PostgreSQL through a proxy the test can cut."""
    proxy = bench.Proxy(engine.url.host, engine.url.port or 5432)
    proxied = main.create_db_engine(
        engine.url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    )
    monkeypatch.setattr(main, "engine", proxied)
    yield proxy
    proxied.dispose()
    proxy.close()


@needs_postgres
def test_an_unreachable_database_is_503_quickly_and_recovered_from_with_no_write_lost(client, database_proxy):
    kept = [create(client, f"before {n}")["id"] for n in range(5)]
    database_proxy.cut()
    for method, path in [("GET", "/api/tasks"), ("POST", "/api/tasks"), ("PATCH", f"/api/tasks/{kept[0]}/complete")]:
        started = time.monotonic()
        r = client.request(method, path, json={"title": "lost?"} if method == "POST" else None, headers=auth_header())
        assert time.monotonic() - started < 2
        assert r.status_code == 503, r.text
        assert r.json() == {"detail": "Database unavailable, try again shortly"}
    assert client.get("/health").status_code == 503

    database_proxy.restore()
    started = time.monotonic()
    while client.get("/health").status_code != 200:
        assert time.monotonic() - started < 2, "not back within 2 s"
        time.sleep(0.05)
    tasks = client.get("/api/tasks", headers=auth_header()).json()
    assert sorted(task["id"] for task in tasks) == sorted(kept)  # every acknowledged write, nothing else
    assert not any(task["completed"] for task in tasks)
