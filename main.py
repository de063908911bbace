"""Todo API: the FastAPI backend for a Next.js + Better Auth todo app.

Tasks live in SQLite by default or in PostgreSQL (Neon) via DATABASE_URL; callers send a
Better Auth JWT as `Authorization: Bearer …`. Run `uvicorn main:app`, get a local token with
`python main.py token alice`, then try the routes at http://localhost:8000/docs.
"""

import json
import logging
import os
import pathlib
import secrets
import sys
import time
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime, timedelta
from functools import cache, lru_cache
from select import select as select_fds
from typing import Annotated, Literal
from urllib.parse import urlsplit

import jwt
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AwareDatetime, StrictBool, StringConstraints
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import Delete, Engine, Index, Update, delete, event, exc, insert, not_, tuple_, update
from sqlalchemy.engine import make_url
from sqlalchemy.types import DateTime, TypeDecorator
from sqlmodel import Field, Session, SQLModel, create_engine, select
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

HERE = pathlib.Path(__file__).parent
MAX_BODY = 64 * 1024
LEEWAY = 30
MAX_INT = 2**31 - 1  # PostgreSQL `integer`: larger ids and offsets are a 422, not a database error
ASYMMETRIC_ALGORITHMS = ["EdDSA", "ES256", "RS256", "PS256"]
METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
PLACEHOLDER_SECRET = "replace-with-the-frontend-secret"  # the value in .env.example
logger = logging.getLogger("uvicorn.error")


# --- Settings ---


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=HERE / ".env", env_file_encoding="utf-8", env_ignore_empty=True, extra="ignore"
    )

    database_url: str = f"sqlite:///{HERE / 'todo.db'}"
    better_auth_secret: str | None = None
    better_auth_url: str | None = None
    better_auth_jwks_url: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    cors_origins: str = "http://localhost:3000"

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def jwks_url(self) -> str | None:
        base = self.better_auth_url and self.better_auth_url.rstrip("/")
        api = base and (base if urlsplit(base).path else f"{base}/api/auth")  # a path is the API's, as for Better Auth
        return self.better_auth_jwks_url or (api and f"{api}/jwks")


try:
    settings = Settings()
except UnicodeDecodeError:  # else Windows would read it in its legacy code page: as garbage, silently
    sys.exit("Refusing to start: .env is not UTF-8 (Windows PowerShell's > writes UTF-16): save it as UTF-8")
allowed_origins = [origin.strip().rstrip("/") for origin in settings.cors_origins.split(",") if origin.strip()]
for origin in allowed_origins:  # written as copied from the address bar: a trailing slash is fine
    url = urlsplit(origin)
    if url.scheme not in ("http", "https") or not url.hostname or url.path or url.query or url.fragment:
        sys.exit(f"Refusing to start: CORS_ORIGINS has {origin!r}, which is not an origin: write scheme://host[:port]")
if settings.better_auth_secret == PLACEHOLDER_SECRET:  # no secret that ships with the repository verifies a token
    sys.exit("Refusing to start: BETTER_AUTH_SECRET is the placeholder from .env.example: use the frontend's secret")
if not settings.is_sqlite and not (settings.better_auth_secret or settings.jwks_url):
    sys.exit("Refusing to start: DATABASE_URL is a deployment database but neither BETTER_AUTH_SECRET"
             " nor BETTER_AUTH_URL is set, so no token could be verified")


# --- Models ---


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that always comes back timezone-aware in UTC (SQLite drops the offset)."""
    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: object) -> datetime | None:
        return value and value.astimezone(UTC)  # SQLite keeps no offset: store every time in UTC

    def process_result_value(self, value: datetime | None, dialect: object) -> datetime | None:
        return value and (value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC))


NO_NUL = r"^[^\x00]*$"  # PostgreSQL text cannot hold NUL characters
Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=NO_NUL)]
Description = Annotated[str, StringConstraints(max_length=1000, pattern=NO_NUL)]


class User(SQLModel, table=True):
    """A row per user, added on their first write: deleting it deletes their tasks (ON DELETE CASCADE)."""
    __tablename__ = "users"

    id: str = Field(primary_key=True)
    created_at: datetime = Field(sa_type=UTCDateTime, sa_column_kwargs={"default": utcnow})


class TaskBase(SQLModel):
    title: Title
    description: Description | None = None


class Task(TaskBase, table=True):
    __tablename__ = "tasks"
    # AUTOINCREMENT: without it SQLite hands a deleted task's id to the next new task.
    __table_args__ = (Index("ix_tasks_user_newest", "user_id", "created_at", "id"), {"sqlite_autoincrement": True})

    id: int | None = Field(default=None, primary_key=True)
    user_id: str = Field(foreign_key="users.id", ondelete="CASCADE")
    completed: bool = False
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime, sa_column_kwargs={"onupdate": utcnow})


class TaskCreate(TaskBase):
    model_config = {"json_schema_extra": {"examples": [{"title": "Buy milk", "description": "Two litres, oat"}]}}


class TaskPublic(TaskBase):
    id: int
    user_id: str
    completed: bool
    created_at: datetime
    updated_at: datetime


class TaskUpdate(SQLModel):
    model_config = {"json_schema_extra": {"examples": [{"title": "Buy oat milk", "completed": True}]}}

    # Omitted means "leave as is"; an explicit null is a 422 because defaults are not validated.
    title: Title = None  # type: ignore[assignment]
    description: Description | None = None
    completed: StrictBool = None  # type: ignore[assignment]


class TaskComplete(SQLModel):
    completed: StrictBool


class ErrorMessage(SQLModel):
    detail: str


# --- Database ---


def enable_foreign_keys(dbapi_connection, connection_record) -> None:
    dbapi_connection.execute("PRAGMA foreign_keys = ON")  # SQLite has them off, per connection


def discard_closed(dbapi_connection, connection_record, connection_proxy) -> None:
    # Cheaper than pre-ping, a round trip: a connection the server closed (restart, Neon suspend) has EOF waiting.
    if select_fds([dbapi_connection], [], [], 0)[0]:
        raise exc.DisconnectionError  # the pool replaces it and tries again


def create_db_engine(url: str) -> Engine:
    db_url = make_url(url)
    if db_url.drivername in ("postgres", "postgresql"):  # the URL as Neon hands it out
        db_url = db_url.set(drivername="postgresql+psycopg")
    sqlite = db_url.get_backend_name() == "sqlite"
    engine = create_engine(
        db_url,
        isolation_level="AUTOCOMMIT",  # every request is one statement: no BEGIN/COMMIT, two round trips saved
        hide_parameters=True,  # keeps users' task text out of error logs
        # No prepared statements: a pooler in transaction mode may run the next statement on another connection.
        connect_args={"check_same_thread": False} if sqlite else {"connect_timeout": 5, "prepare_threshold": None},
        # Connections stay open: waiting for one to come back beats opening another (TCP, TLS, auth).
        pool_size=10, max_overflow=0,
    )
    event.listen(engine, "connect" if sqlite else "checkout", enable_foreign_keys if sqlite else discard_closed)
    return engine


try:
    engine = create_db_engine(settings.database_url)
except (exc.ArgumentError, ValueError):  # a misspelt scheme, or a Neon string pasted without `postgresql://`
    sys.exit("Refusing to start: DATABASE_URL is not a database URL: paste the whole postgresql://… string")


def create_tables() -> None:
    """`create_all`, one process at a time: several workers or replicas may start on an empty database."""
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as connection:
        connection.exec_driver_sql("BEGIN IMMEDIATE" if sqlite else "BEGIN")  # SQLite: the write lock, held to COMMIT
        if not sqlite:  # held to COMMIT too, within one transaction, so that it works through a transaction pooler
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7162534)")
        SQLModel.metadata.create_all(connection)
        connection.exec_driver_sql("COMMIT")


async def get_session() -> AsyncIterator[Session]:
    # async, yet it never blocks (the connection is checked out in the endpoint's thread): two thread hops saved.
    with Session(engine) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


# --- Auth ---


@cache
def local_secret() -> str:
    """A random HS256 secret for this checkout, so that no secret ships with the repository."""
    path = HERE / ".dev-secret"
    if not path.exists():
        draft = path.with_name(f".dev-secret-{os.getpid()}")
        draft.touch(mode=0o600)  # readable by you alone before it holds anything
        draft.write_text(secrets.token_urlsafe(32))
        with suppress(FileExistsError):  # workers starting together: the first secret written wins
            path.hardlink_to(draft)
        draft.unlink()
    return path.read_text().strip()


def hs256_secret() -> str | None:
    return settings.better_auth_secret or (local_secret() if settings.is_sqlite else None)


class KeySet(jwt.PyJWKClient):
    """Better Auth's public keys, cached; refetched for a new `kid` at most every 10 s, not for 10 s after a failure."""
    retry_after = 0.0

    def fetch_data(self) -> dict:
        # Requests that queued behind a fetch that timed out fail fast instead of each waiting 5 s.
        if time.monotonic() < self.retry_after:
            raise jwt.PyJWKClientConnectionError("The last fetch failed moments ago")
        try:
            return super().fetch_data()
        except (jwt.PyJWKClientConnectionError, ValueError) as error:  # unreachable, or not JSON
            self.retry_after = time.monotonic() + 10
            logger.warning("Cannot fetch the token keys from %s: %s", self.uri, error)
            raise jwt.PyJWKClientConnectionError(str(error)) from error


@cache
def jwks_client(url: str) -> KeySet:
    return KeySet(url, timeout=5, cooldown_duration=10)  # one per process, shared by all requests


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


@lru_cache(maxsize=1024)
def verified_claims(token: str) -> tuple[str, float]:
    """The user id and expiry of a valid token, 401 saying why not; cached, as a frontend resends its token."""
    if token.count(".") != 2:
        raise unauthorized("Not a JWT but a Better Auth session token? Get a JWT: authClient.token() (see the README)")
    try:
        algorithm = jwt.get_unverified_header(token).get("alg")
        # The key decides the algorithm, never the token: HS256 only with the shared secret,
        # asymmetric algorithms only with a key from the JWKS.
        if algorithm == "HS256" and (secret := hs256_secret()):
            key, algorithms, issuer, audience = secret, ["HS256"], settings.jwt_issuer, settings.jwt_audience
        elif algorithm in ASYMMETRIC_ALGORITHMS and settings.jwks_url:
            key = jwks_client(settings.jwks_url).get_signing_key_from_jwt(token)  # bound to the key's `alg`
            origin = settings.better_auth_url and "{0.scheme}://{0.netloc}".format(urlsplit(settings.better_auth_url))
            algorithms = ASYMMETRIC_ALGORITHMS
            issuer, audience = settings.jwt_issuer or origin, settings.jwt_audience or origin
        elif algorithm in ASYMMETRIC_ALGORITHMS:
            raise unauthorized(f"Tokens signed with {algorithm} need BETTER_AUTH_URL set to the Better Auth server")
        else:
            raise unauthorized(f"Tokens signed with {algorithm} are not accepted here")
        options = {"require": ["exp", "sub"], "verify_aud": audience is not None}
        claims = jwt.decode(token, key, algorithms, issuer=issuer, audience=audience, leeway=LEEWAY, options=options)
    except jwt.PyJWKClientConnectionError:
        raise HTTPException(503, "Cannot verify the token: the auth server's keys are unavailable") from None
    except jwt.PyJWTError as error:
        raise unauthorized(f"Invalid token: {error}") from None
    if not claims["sub"]:
        raise unauthorized("Invalid token: empty subject")
    return claims["sub"], claims["exp"]


bearer = HTTPBearer(auto_error=False, description="A Better Auth JWT, or one from `python main.py token <user>`")


async def get_current_user(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> str:
    """The caller's user id (the token's `sub`); 401 saying what is wrong with a missing or bad token."""
    if credentials is None:
        raise unauthorized("Not authenticated: send 'Authorization: Bearer <token>'")
    # async: an HS256 check takes microseconds, less than a hop to a thread; a JWKS token may need a
    # (blocking) fetch of the auth server's keys, so where a JWKS is configured the check goes to a thread.
    token = credentials.credentials
    user_id, expires = await run_in_threadpool(verified_claims, token) if settings.jwks_url else verified_claims(token)
    if time.time() > expires + LEEWAY:  # checked on every request: the signature check is cached
        raise unauthorized("Invalid token: Signature has expired")
    request.state.user = user_id
    return user_id


CurrentUser = Annotated[str, Depends(get_current_user)]


def check_path_user(user_id: Annotated[str, Path(description="Must be the caller's id")], current_user: CurrentUser):
    """The hackathon's `/api/{user_id}/tasks` shape: the path must name the caller."""
    if user_id != current_user:
        raise HTTPException(403, "The user id in the path is not yours")


def create_token(user_id: str, lifetime: timedelta = timedelta(days=1)) -> str:
    """An HS256 token this configuration accepts, for curl and the Authorize button in /docs."""
    secret = hs256_secret()
    if secret is None:
        sys.exit("No HS256 secret is configured: get a token from your Better Auth frontend instead")
    claims = {"sub": user_id, "iat": utcnow(), "exp": utcnow() + lifetime}
    claims |= {"iss": settings.jwt_issuer, "aud": settings.jwt_audience}
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, secret, algorithm="HS256")


# --- Routes ---


def error_responses(*codes: int) -> dict[int | str, dict]:
    descriptions = {
        400: "Body is not UTF-8 JSON",
        401: "Missing or invalid token",
        403: "Not your task, or not your user id in the path",
        404: "Task not found",
        413: "Request body over 64 KiB",
        503: "Database or auth server unavailable",
    }
    return {code: {"model": ErrorMessage, "description": descriptions[code]} for code in codes}


def get_owned_task(session: Session, task_id: int, owner: str) -> Task:
    """The ownership rule, in one place: 404 if the task does not exist, 403 if it is not yours."""
    task = session.get(Task, task_id)
    if task is None:
        raise HTTPException(404, "Task not found")
    if task.user_id != owner:
        raise HTTPException(403, "You do not own this task")
    return task


def write_owned_task(session: Session, task_id: int, owner: str, statement: Update | Delete) -> Task:
    """Run an UPDATE or DELETE on the owner's task in one round trip; 404 or 403 if it is not theirs."""
    owned = statement.where(Task.id == task_id, Task.user_id == owner).returning(Task)
    task = session.exec(owned).scalar_one_or_none()
    return task or get_owned_task(session, task_id, owner)


TaskId = Annotated[int, Path(ge=1, le=MAX_INT)]
router = APIRouter(responses=error_responses(401, 503))
item_errors = error_responses(403, 404)


@router.get("")
def list_tasks(
    current_user: CurrentUser,
    session: SessionDep,
    request: Request,
    response: Response,
    status: Literal["all", "pending", "completed"] = "all",
    limit: Annotated[int | None, Query(ge=1, le=1000)] = None,
    offset: Annotated[int, Query(ge=0, le=MAX_INT)] = 0,
    after: Annotated[AwareDatetime | None, Query(description="Set by the `Link` header: tasks created before")] = None,
    after_id: Annotated[int, Query(ge=0, le=MAX_INT, description="Set by the `Link` header")] = MAX_INT,
) -> list[TaskPublic]:
    """List your tasks, newest first; when `limit` leaves some out, `Link: <…>; rel="next"` has the next page."""
    statement = select(Task).where(Task.user_id == current_user)
    if status != "all":
        statement = statement.where(Task.completed == (status == "completed"))
    if after:  # keyset paging: a deep page costs what the first does, and needs no task to still exist
        statement = statement.where(tuple_(Task.created_at, Task.id) < (after, after_id))
    statement = statement.order_by(Task.created_at.desc(), Task.id.desc()).offset(offset)
    tasks = session.exec(statement.limit(limit and limit + 1)).all()  # one more: is there a next page?
    if limit and len(tasks) > limit:
        tasks = tasks[:limit]
        position = {"after": tasks[-1].created_at.isoformat(), "after_id": tasks[-1].id}
        next_page = request.url.remove_query_params("offset").include_query_params(**position)
        response.headers["Link"] = f'<{next_page.path}?{next_page.query}>; rel="next"'
    return tasks


@router.post("", status_code=201, responses=error_responses(400, 413))
def create_task(
    task_in: TaskCreate, current_user: CurrentUser, session: SessionDep, request: Request, response: Response
) -> TaskPublic:
    """Create a task."""
    now = utcnow()
    new_task = insert(Task).values(**task_in.model_dump(), user_id=current_user, created_at=now, updated_at=now)
    try:
        task = session.exec(new_task.returning(Task)).scalar_one()
    except exc.IntegrityError:  # a first write: no users row yet (in autocommit the failed insert left nothing)
        with suppress(exc.IntegrityError):  # a concurrent first write may have just added it
            session.exec(insert(User).values(id=current_user))
        task = session.exec(new_task.returning(Task)).scalar_one()
    response.headers["Location"] = f"{request.url.path}/{task.id}"
    return task


@router.get("/{task_id}", responses=item_errors)
def get_task(task_id: TaskId, current_user: CurrentUser, session: SessionDep) -> TaskPublic:
    """Get one of your tasks."""
    return get_owned_task(session, task_id, current_user)


@router.put("/{task_id}", responses=item_errors | error_responses(400, 413))
def update_task(task_id: TaskId, task_in: TaskUpdate, current_user: CurrentUser, session: SessionDep) -> TaskPublic:
    """Change any of a task's title, description and completed flag."""
    changes = task_in.model_dump(exclude_unset=True)
    if not changes:
        return get_owned_task(session, task_id, current_user)
    return write_owned_task(session, task_id, current_user, update(Task).values(**changes))


@router.delete("/{task_id}", status_code=204, responses=item_errors)
def delete_task(task_id: TaskId, current_user: CurrentUser, session: SessionDep) -> None:
    """Delete a task."""
    write_owned_task(session, task_id, current_user, delete(Task))


@router.patch("/{task_id}/complete", responses=item_errors | error_responses(400, 413))
def complete_task(
    task_id: TaskId, current_user: CurrentUser, session: SessionDep, task_in: TaskComplete | None = None
) -> TaskPublic:
    """Toggle a task's completed flag, or set it with `{"completed": true|false}`."""
    completed = not_(Task.completed) if task_in is None else task_in.completed
    return write_owned_task(session, task_id, current_user, update(Task).values(completed=completed))


# --- App ---


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    database = engine.url.render_as_string(hide_password=True)
    try:
        create_tables()
    except exc.DBAPIError as error:
        reason = " ".join(str(error.orig).split())
        logger.critical("Refusing to start: DATABASE_URL (%s) cannot be used: %s. Check it and retry", database, reason)
        os._exit(1)  # an exception would add a traceback below the one line that says what to do
    logger.info("Database: %s", database)
    hs256 = "BETTER_AUTH_SECRET" if settings.better_auth_secret else "local secret in .dev-secret: python main.py token"
    jwks = f"; {'/'.join(ASYMMETRIC_ALGORITHMS)} (keys from {settings.jwks_url})" if settings.jwks_url else ""
    logger.info("Accepting tokens: %s%s", f"HS256 ({hs256})" if hs256_secret() else "", jwks)
    logger.info("Allowing browser origins: %s", ", ".join(allowed_origins) or "none")
    if settings.better_auth_secret and len(settings.better_auth_secret) < 32:
        logger.warning("BETTER_AUTH_SECRET is under 32 characters, easily guessed: openssl rand -base64 32 makes one")
        warnings.filterwarnings("ignore", category=jwt.InsecureKeyLengthWarning)  # said once, not per token
    yield


def limit_body(app: ASGIApp) -> ASGIApp:
    """Answer 413 to a request body over MAX_BODY bytes, counted as it is read (chunked or not)."""
    async def limited_app(scope: Scope, receive: Receive, send: Send) -> None:
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > MAX_BODY:
                raise HTTPException(413, f"Request body is larger than {MAX_BODY} bytes")
            return message

        await app(scope, limited_receive, send)

    return limited_app


app = FastAPI(  # operationIds are the function names, for TypeScript client generators
    title="Todo API", version="1.0.0", lifespan=lifespan, generate_unique_id_function=lambda route: route.name,
    description="Your tasks, behind a Better Auth token: click **Authorize**, paste `python main.py token alice`.",
)
app.include_router(router, prefix="/api/tasks", tags=["tasks"])
app.include_router(  # the hackathon's shape, for the same routes
    router, prefix="/api/{user_id}/tasks", tags=["tasks under a user id"], dependencies=[Depends(check_path_user)],
    responses=error_responses(403), generate_unique_id_function=lambda route: f"{route.name}_for_user",
)
app.add_middleware(limit_body)  # not FastAPI's max_body_size: its 413 can be plain text, without CORS headers
app.add_middleware(
    CORSMiddleware,
    allow_origins=allowed_origins,
    allow_credentials=True,  # for fetch(…, {credentials: "include"}); safe, as no cookie is ever read
    allow_methods=METHODS,
    allow_headers=["Authorization", "Content-Type"],
    expose_headers=["Location", "Link"],
)


@app.exception_handler(RequestValidationError)
async def validation_failed(request: Request, error: RequestValidationError) -> Response:
    # ASCII-escaped: the echoed input may hold a lone surrogate, which UTF-8 cannot encode.
    return Response(json.dumps({"detail": jsonable_encoder(error.errors())}), 422, media_type="application/json")


@app.exception_handler(405)
async def method_not_allowed(request: Request, error: HTTPException) -> Response:
    # Starlette's `Allow` names the methods of the first route that matched the path; name them all.
    served = [route for route in app.routes if route.matches(request.scope)[0] == Match.PARTIAL]
    allowed = [m for m in METHODS if any(r.matches({**request.scope, "method": m})[0] == Match.FULL for r in served)]
    return JSONResponse({"detail": error.detail}, 405, headers={"Allow": ", ".join(allowed)})


@app.exception_handler(exc.OperationalError)
@app.exception_handler(exc.TimeoutError)
async def database_unavailable(request: Request, error: Exception) -> Response:
    logger.warning("Database unavailable: %s", getattr(error, "orig", error))
    return JSONResponse({"detail": "Database unavailable, try again shortly"}, 503)


@app.exception_handler(Exception)
async def unexpected_error(request: Request, error: Exception) -> Response:
    return JSONResponse({"detail": "Internal server error"}, 500)


app.add_api_route("/", lambda: RedirectResponse("/docs"), include_in_schema=False)  # the docs are the front page


@app.get("/health", responses=error_responses(503))
def health(session: SessionDep) -> dict[str, str]:
    """Liveness and database reachability: `{"status": "ok", "database": "ok"}`; no token needed."""
    session.exec(select(1))
    return {"status": "ok", "database": "ok"}


# --- The token command ---

if __name__ == "__main__":
    match sys.argv[1:]:
        case ["token", user_id] if user_id.strip():
            print(create_token(user_id))
        case _:
            sys.exit("usage: python main.py token <user_id>, with a non-empty user id (e.g. alice)")
