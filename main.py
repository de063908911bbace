"""Todo API: the FastAPI backend for a Next.js + Better Auth todo app, in one module.

Tasks live in SQLite by default or in PostgreSQL (Neon) via DATABASE_URL; callers send a Better
Auth JWT as `Authorization: Bearer …`. Run `uvicorn main:app`, get a token with `python main.py
token alice`, and try the routes at http://localhost:8000/docs. The app first, the machinery after.
The database engine autocommits: each statement is saved as it runs, so no route calls `commit()`.
"""

import asyncio
import json
import logging
import os
import pathlib
import re
import secrets
import selectors
import sys
import time
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal, NoReturn
from urllib.parse import quote

import httpx2
import jwt
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator, StrictBool, StringConstraints
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy import DateTime, Delete, Index, Update, delete, event, exc, insert, not_, update
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Field, Session, SQLModel, create_engine, func, select
from starlette.middleware.errors import ServerErrorMiddleware

# --- Models ---


def utcnow() -> datetime:
    return datetime.now(UTC)


TIMESTAMP = DateTime(timezone=True)
NO_NUL = r"^[^\x00]*$"  # PostgreSQL text cannot hold a NUL character
Title = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=NO_NUL)
]
Description = Annotated[str, StringConstraints(max_length=1000, pattern=NO_NUL)]


class User(SQLModel, table=True):
    """A row per user, added on their first write: deleting it deletes their tasks."""
    __tablename__ = "users"

    id: str = Field(primary_key=True)
    created_at: datetime = Field(sa_type=TIMESTAMP)


class TaskBase(SQLModel):
    title: Title
    description: Description | None = None


class Task(TaskBase, table=True):
    __tablename__ = "tasks"
    __table_args__ = (
        Index("ix_tasks_user_newest", "user_id", "created_at", "id"),
        {"sqlite_autoincrement": True},  # else SQLite gives a deleted task's id to the next one
    )

    id: int | None = Field(default=None, primary_key=True)
    user_id: str = Field(foreign_key="users.id", ondelete="CASCADE")
    completed: bool = False
    created_at: datetime = Field(sa_type=TIMESTAMP)  # set by create_task, with updated_at
    updated_at: datetime = Field(sa_type=TIMESTAMP, sa_column_kwargs={"onupdate": utcnow})


class TaskCreate(TaskBase):
    model_config = {
        "json_schema_extra": {"examples": [{"title": "Buy milk", "description": "Two litres, oat"}]}
    }


def in_utc(moment: datetime) -> datetime:  # SQLite keeps no offset: every time is written in UTC
    return moment.replace(tzinfo=moment.tzinfo or UTC).astimezone(UTC)


UTCTime = Annotated[datetime, AfterValidator(in_utc)]


class TaskPublic(TaskBase):
    model_config = {"json_schema_serialization_defaults_required": True}  # all are always sent

    id: int
    user_id: str
    completed: bool
    created_at: UTCTime
    updated_at: UTCTime


class TaskUpdate(SQLModel):
    """Any of the fields; those left out stay as they are."""
    model_config = {
        "json_schema_extra": {"examples": [{"title": "Buy oat milk", "completed": True}]}
    }

    # None is the default but not in the type: `{"completed": true}` keeps the title, while
    # `{"title": null}` is a 422, as a value sent is validated and a default is not.
    title: Title = None  # type: ignore[assignment]
    description: Description | None = None
    completed: StrictBool = None  # type: ignore[assignment]


class TaskComplete(SQLModel):
    completed: StrictBool


class ErrorMessage(SQLModel):
    detail: str


# --- Dependencies: the session and the current user ---


async def get_session() -> AsyncIterator[Session]:
    # async: no thread of its own. The connection is taken by the endpoint's first query.
    with Session(engine) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]
bearer = HTTPBearer(auto_error=False, description="A Better Auth JWT, or `python main.py token me`")


async def get_current_user(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> str:
    """The caller's user id: the `sub` of a valid token; 401 saying what is wrong otherwise."""
    if credentials is None:
        raise unauthorized("Not authenticated: send 'Authorization: Bearer <token>'")
    # async: checking a token takes microseconds, and fetching keys awaits without a thread.
    request.state.user = await verified_user(credentials.credentials)
    return request.state.user  # on request.state for middleware or logs you add: none here reads it


CurrentUser = Annotated[str, Depends(get_current_user)]


# --- The ownership rule and the six routes ---


def get_owned_task(session: Session, task_id: int, owner: str) -> Task:
    """The ownership rule, in one place: 404 if the task does not exist, 403 if it is not yours."""
    task = session.get(Task, task_id)
    if task is None:
        raise HTTPException(404, "Task not found")
    if task.user_id != owner:
        raise HTTPException(403, "You do not own this task")
    return task


def write_owned_task(session: Session, task_id: int, owner: str, change: Update | Delete) -> Task:
    """Run an UPDATE or DELETE on the owner's task in one round trip; 404 or 403 if not theirs."""
    owned = change.where(Task.id == task_id, Task.user_id == owner).returning(Task)
    task = session.exec(owned).scalar_one_or_none()
    return task or get_owned_task(session, task_id, owner)  # None: find out why, 404 or 403


def error_responses(*codes: int) -> dict[int | str, dict]:
    return {code: {"model": ErrorMessage} for code in codes}  # described by their status in /docs


INT_MAX = 2**31 - 1  # PostgreSQL's integer: a larger id or offset is a 422, not a database error
TaskId = Annotated[int, Path(ge=1, le=INT_MAX)]
router = APIRouter(responses=error_responses(401, 503))
ITEM_ERRORS = error_responses(403, 404)
BODY_ERRORS = error_responses(400, 413)  # 400: a JSON body that is not UTF-8
LOCATION = {"Location": {"description": "The task's address", "schema": {"type": "string"}}}


@router.get("")
def list_tasks(
    current_user: CurrentUser,
    session: SessionDep,
    status: Literal["all", "pending", "completed"] = "all",
    sort: Literal["created", "title"] = "created",
    limit: Annotated[int | None, Query(ge=1, le=1000)] = None,
    offset: Annotated[int, Query(ge=0, le=INT_MAX)] = 0,
) -> list[TaskPublic]:
    """List your tasks, newest first, or by title (A→Z, newest first among equal titles)."""
    statement = select(Task).where(Task.user_id == current_user)
    if status != "all":
        statement = statement.where(Task.completed == (status == "completed"))
    if sort == "title":
        statement = statement.order_by(func.lower(Task.title))
    statement = statement.order_by(Task.created_at.desc(), Task.id.desc())
    return session.exec(statement.offset(offset).limit(limit)).all()


@router.post("", status_code=201, responses=BODY_ERRORS | {201: {"headers": LOCATION}})
def create_task(
    task_in: TaskCreate,
    current_user: CurrentUser,
    session: SessionDep,
    request: Request,
    response: Response,
) -> TaskPublic:
    """Create a task; the `Location` header has its address."""
    now = utcnow()
    values = task_in.model_dump() | {"user_id": current_user, "created_at": now, "updated_at": now}
    new_task = insert(Task).values(values).returning(Task)
    try:
        task = session.exec(new_task).scalar_one()
    except exc.IntegrityError:  # a first write: no users row yet (the failed insert left nothing)
        with suppress(exc.IntegrityError):  # a concurrent first write may have just added it
            session.exec(insert(User).values(id=current_user, created_at=now))
        task = session.exec(new_task).scalar_one()
    response.headers["Location"] = quote(f"{request.url.path}/{task.id}")  # a user id may be "日本"
    return task


@router.get("/{task_id}", responses=ITEM_ERRORS)
def get_task(task_id: TaskId, current_user: CurrentUser, session: SessionDep) -> TaskPublic:
    """Get one of your tasks."""
    return get_owned_task(session, task_id, current_user)


@router.put("/{task_id}", responses=ITEM_ERRORS | BODY_ERRORS)
def update_task(
    task_id: TaskId, task_in: TaskUpdate, current_user: CurrentUser, session: SessionDep
) -> TaskPublic:
    """Change any of a task's title, description and completed flag."""
    changes = task_in.model_dump(exclude_unset=True)
    if not changes:
        return get_owned_task(session, task_id, current_user)
    return write_owned_task(session, task_id, current_user, update(Task).values(changes))


@router.delete("/{task_id}", status_code=204, responses=ITEM_ERRORS)
def delete_task(task_id: TaskId, current_user: CurrentUser, session: SessionDep) -> None:
    """Delete a task."""
    write_owned_task(session, task_id, current_user, delete(Task))


@router.patch("/{task_id}/complete", responses=ITEM_ERRORS | BODY_ERRORS)
def complete_task(
    task_id: TaskId,
    current_user: CurrentUser,
    session: SessionDep,
    task_in: TaskComplete | None = None,
) -> TaskPublic:
    """Toggle a task's completed flag, or set it with `{"completed": true|false}`."""
    completed = not_(Task.completed) if task_in is None else task_in.completed
    change = update(Task).values(completed=completed)
    return write_owned_task(session, task_id, current_user, change)


# === What keeps it right in production ===
# --- Settings, checked at startup ---

HERE = pathlib.Path(__file__).parent
PLACEHOLDER_SECRET = "replace-with-the-frontend-secret"  # the value in .env.example
WEB_ORIGIN = re.compile(r"https?://[^/?#\s]+")  # scheme://host[:port]
logger = logging.getLogger("uvicorn.error")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(  # UTF-8 on every OS: Windows would use its legacy code page
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
        if self.better_auth_jwks_url:
            return self.better_auth_jwks_url
        if not self.better_auth_url:
            return None
        api = self.better_auth_url.rstrip("/")
        if WEB_ORIGIN.fullmatch(api):  # Better Auth reads a URL with a path as its API's address
            api += "/api/auth"
        return f"{api}/jwks"


def refuse_to_start(reason: str) -> NoReturn:
    # Status 3 is uvicorn's "startup failed": workers stop, not restart. os._exit: no traceback.
    logger.critical("Refusing to start: %s", reason)
    os._exit(3)


try:
    settings = Settings()
except UnicodeDecodeError:
    refuse_to_start(".env is not UTF-8 (Windows PowerShell's > writes UTF-16): save it as UTF-8")
# Origins as copied from the address bar: a trailing slash is fine.
allowed_origins = [o.strip().rstrip("/") for o in settings.cors_origins.split(",") if o.strip()]
if not all(WEB_ORIGIN.fullmatch(origin) for origin in allowed_origins):
    refuse_to_start(f"CORS_ORIGINS is {settings.cors_origins!r}: write each as scheme://host:port")
if not all(WEB_ORIGIN.match(url) for url in [settings.better_auth_url, settings.jwks_url] if url):
    refuse_to_start("BETTER_AUTH_URL or BETTER_AUTH_JWKS_URL is not a URL: start it with http://")
if settings.database_url in ("sqlite://", "sqlite:///:memory:"):
    refuse_to_start("DATABASE_URL is SQLite in memory, which each thread sees empty: name a file")
if settings.better_auth_secret == PLACEHOLDER_SECRET:  # no secret that ships with the code works
    refuse_to_start("BETTER_AUTH_SECRET is .env.example's placeholder: use the frontend's secret")
if not settings.is_sqlite and not (settings.better_auth_secret or settings.jwks_url):
    refuse_to_start(
        "DATABASE_URL is a deployment database but neither BETTER_AUTH_SECRET nor BETTER_AUTH_URL"
        " is set, so no token could be verified"
    )


# --- The database engine ---


def discard_closed(dbapi_connection, connection_record, connection_proxy) -> None:
    """Replace a connection the server closed (a restart, Neon's suspend): it has EOF waiting."""
    # Pre-ping would cost a round trip per request; this costs none. A selector: select() fails
    # once a descriptor passes 1023 (many open client connections).
    with selectors.DefaultSelector() as selector:
        selector.register(dbapi_connection, selectors.EVENT_READ)
        if selector.select(timeout=0):
            raise exc.DisconnectionError  # the pool replaces it and tries again


def create_db_engine(url: str) -> Engine:
    db_url = make_url(url)
    if db_url.drivername in ("postgres", "postgresql"):  # the URL as Neon hands it out
        db_url = db_url.set(drivername="postgresql+psycopg")
    sqlite = db_url.get_backend_name() == "sqlite"
    engine = create_engine(
        db_url,
        # No prepared statements: a pooler in transaction mode may run the next one elsewhere.
        connect_args={} if sqlite else {"connect_timeout": 5, "prepare_threshold": None},
        isolation_level="AUTOCOMMIT",  # each statement commits itself: no BEGIN/COMMIT round trips
        hide_parameters=True,  # keeps users' task text out of error logs
        pool_size=10,  # kept open: waiting for a connection beats opening one (TCP, TLS, auth)
        max_overflow=0,
    )
    if sqlite:  # SQLite has foreign keys off, on every connection
        event.listen(engine, "connect", lambda dbapi, _: dbapi.execute("PRAGMA foreign_keys = ON"))
    else:
        event.listen(engine, "checkout", discard_closed)
    return engine


try:
    engine = create_db_engine(settings.database_url)
except (exc.ArgumentError, ValueError):  # a misspelt scheme, or a Neon string without postgresql://
    refuse_to_start("DATABASE_URL is not a database URL: paste the whole postgresql://… string")


def create_tables() -> None:
    """`create_all`, one process at a time: several workers or replicas may start together."""
    # One transaction, begun by hand as the engine autocommits, holding a lock to its COMMIT:
    # SQLite's write lock, or PostgreSQL's transaction lock, which holds through a pooler too.
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            connection.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            connection.exec_driver_sql("BEGIN")
            connection.exec_driver_sql("SELECT pg_advisory_xact_lock(7162534)")  # any unused key
        SQLModel.metadata.create_all(connection)
        connection.exec_driver_sql("COMMIT")


# --- Tokens ---

ASYMMETRIC_ALGORITHMS = ["EdDSA", "ES256", "RS256", "PS256"]  # what Better Auth's JWT plugin signs


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


async def verified_user(token: str) -> str:
    """The `sub` of a valid token; 401 saying why not, 503 while the keys are unavailable."""
    if token.count(".") != 2:
        raise unauthorized("Not a JWT but a Better Auth session token? Get one: authClient.token()")
    if len(token) > 8192:  # tokens are read on the event loop: no megabytes there
        raise unauthorized("Invalid token: longer than 8192 characters")
    try:
        header = jwt.get_unverified_header(token)
        algorithm = header.get("alg")
        # The key decides the algorithm, never the token: HS256 only with the shared secret,
        # asymmetric algorithms only with a key from the JWKS, made for that algorithm.
        if algorithm == "HS256" and (secret := hs256_secret()):
            key, issuer, audience = secret, settings.jwt_issuer, settings.jwt_audience
        elif algorithm in ASYMMETRIC_ALGORITHMS and settings.jwks_url:
            # Better Auth's JWT plugin puts its server's origin in `iss` and `aud`.
            origin = WEB_ORIGIN.match(settings.better_auth_url or settings.better_auth_jwks_url)[0]
            issuer, audience = settings.jwt_issuer or origin, settings.jwt_audience or origin
            key = await key_set.get(header.get("kid"))
        elif algorithm in ASYMMETRIC_ALGORITHMS:
            hint = "need BETTER_AUTH_URL set to the Better Auth server"
            raise unauthorized(f"Tokens signed with {algorithm!r} {hint}")
        else:
            raise unauthorized(f"Tokens signed with {algorithm!r} are not accepted here")
        options = {"require": ["exp", "sub"], "verify_aud": audience is not None}
        # leeway: the seconds of clock difference tolerated between Better Auth and us
        claims = jwt.decode(
            token, key, [algorithm], options, issuer=issuer, audience=audience, leeway=30
        )
    except jwt.PyJWTError as error:
        raise unauthorized(f"Invalid token: {error}") from None
    if not isinstance(claims["exp"], int | float):  # PyJWT takes "9999999999" too
        raise unauthorized("Invalid token: exp must be a number")
    # Our limit, which users.id can store: PostgreSQL text holds no NUL, UTF-8 no lone surrogate.
    if not re.fullmatch(r"[^\x00\ud800-\udfff]{1,255}", claims["sub"]):
        raise unauthorized("Invalid token: sub must be 1-255 characters, no NUL or lone surrogate")
    return claims["sub"]


class KeySet:
    """Better Auth's public keys by `kid`. A token naming a key not held has them all fetched anew,
    at most every 10 s, so made-up `kid`s cannot flood the auth server. Until the next fetch, the
    set fetched last decides: a key it lacks (withdrawn, or never made) is a 401."""

    def __init__(self) -> None:
        self.keys: dict[str, jwt.PyJWK] = {}
        self.unavailable = False  # the last fetch failed: a key not held is a 503, not a 401
        self.next_fetch = 0.0
        self.fetching = asyncio.Lock()

    async def get(self, kid: object) -> jwt.PyJWK:
        if not isinstance(kid, str):
            raise jwt.InvalidTokenError("No kid in the header: which key signed it?")
        if kid not in self.keys:  # a user whose key is held never waits
            async with self.fetching:  # one fetch at a time; who needs it waits, 5 s at most
                if kid not in self.keys and time.monotonic() >= self.next_fetch:
                    await self.fetch()
        if kid in self.keys:
            return self.keys[kid]
        if self.unavailable:
            retry_after = str(int(self.next_fetch - time.monotonic()) + 1)
            detail = "Cannot verify the token now: the auth server's keys are unavailable"
            raise HTTPException(503, detail, headers={"Retry-After": retry_after})
        raise jwt.InvalidTokenError(f"The auth server has no key {kid!r}")

    async def fetch(self) -> None:
        """All of the auth server's keys; a bad answer is a warning and never replaces them."""
        self.next_fetch = time.monotonic() + 10
        try:
            async with asyncio.timeout(5), httpx2.AsyncClient() as client:
                answer = (await client.get(settings.jwks_url)).raise_for_status()
            keys = {  # keys PyJWT cannot read are left out by PyJWKSet, then those we cannot use
                key.key_id: key
                for key in jwt.PyJWKSet.from_dict(answer.json())
                if isinstance(key.key_id, str)
                and key.algorithm_name in ASYMMETRIC_ALGORITHMS
                and not hasattr(key.key, "private_bytes")  # a private key published by mistake
            }
            if not keys:
                raise ValueError(f"no public key with a kid and one of {ASYMMETRIC_ALGORITHMS}")
        except Exception as error:  # whatever is wrong with the answer, or its absence
            reason = " ".join(str(error).split()) or "no whole answer within 5 s"
            logger.warning("Cannot fetch the token keys from %s: %s", settings.jwks_url, reason)
            self.unavailable = True
        else:
            self.keys, self.unavailable = keys, False


key_set = KeySet()  # one per process, shared by all requests


def hs256_secret() -> str | None:
    """BETTER_AUTH_SECRET, else on SQLite alone a random secret made for this checkout."""
    if settings.better_auth_secret or not settings.is_sqlite:
        return settings.better_auth_secret
    path = HERE / ".dev-secret"
    if not path.exists():
        draft = path.with_name(f".dev-secret-{os.getpid()}")
        draft.touch(mode=0o600)  # readable by you alone before it holds anything
        draft.write_text(secrets.token_urlsafe(32))
        with suppress(FileExistsError):  # workers starting together: the first secret written wins
            path.hardlink_to(draft)
        draft.unlink()
    return path.read_text().strip()


# --- The app: lifespan, routers, middleware, error handlers ---


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    database = engine.url.render_as_string(hide_password=True)
    try:
        create_tables()
    except exc.DBAPIError as error:
        reason = " ".join(str(error.orig).split())
        refuse_to_start(f"DATABASE_URL ({database}) cannot be used: {reason}. Check it and retry")
    if settings.is_sqlite:
        database += " (tasks kept in a local file; a deployment sets DATABASE_URL)"
    logger.info("Database: %s", database)
    hs256 = "BETTER_AUTH_SECRET" if settings.better_auth_secret else "local secret in .dev-secret"
    accepted = [f"HS256 ({hs256})"] if hs256_secret() else []
    if settings.jwks_url:
        accepted.append(f"{'/'.join(ASYMMETRIC_ALGORITHMS)} (keys from {settings.jwks_url})")
    logger.info("Accepting tokens: %s", "; ".join(accepted))
    logger.info("Allowing browser origins: %s", ", ".join(allowed_origins) or "none")
    if settings.better_auth_secret and len(settings.better_auth_secret) < 32:
        logger.warning("BETTER_AUTH_SECRET is under 32 characters: use openssl rand -base64 32")
        warnings.filterwarnings("ignore", category=jwt.InsecureKeyLengthWarning)  # said once
    yield


def check_path_user(
    user_id: Annotated[str, Path(description="Must be the caller's id")], current_user: CurrentUser
) -> None:
    """The hackathon's `/api/{user_id}/tasks` shape: the path must name the caller."""
    if user_id != current_user:
        raise HTTPException(403, "The user id in the path is not yours")


app = FastAPI(  # operationIds are the function names, for TypeScript client generators
    title="Todo API",
    version="1.0.0",
    description="Your tasks, behind a Better Auth token: **Authorize**, `python main.py token me`",
    lifespan=lifespan,
    generate_unique_id_function=lambda route: route.name,
    max_body_size=64 * 1024,
)
app.include_router(router, prefix="/api/tasks", tags=["tasks"])
app.include_router(  # the hackathon's shape, for the same routes
    router,
    prefix="/api/{user_id}/tasks",
    tags=["tasks under a user id"],
    dependencies=[Depends(check_path_user)],
    responses=error_responses(403),
    generate_unique_id_function=lambda route: f"{route.name}_for_user",
)
# A JSON 500 inside CORS, so that a browser can read it (Starlette's own is sent outside CORS).
app.add_middleware(
    ServerErrorMiddleware, handler=lambda *_: JSONResponse({"detail": "Internal server error"}, 500)
)
app.add_middleware(
    CORSMiddleware,
    allow_origins=allowed_origins,
    allow_credentials=True,  # for fetch(…, {credentials: "include"}); safe, as no cookie is read
    allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
    allow_headers=["Authorization", "Content-Type"],
    expose_headers=["Location"],
)


@app.exception_handler(RequestValidationError)
async def validation_failed(request: Request, error: RequestValidationError) -> Response:
    # The input is echoed: bytes as their repr, lone surrogates ASCII-escaped (not UTF-8 text).
    content = json.dumps({"detail": jsonable_encoder(error.errors(), custom_encoder={bytes: repr})})
    return Response(content, 422, media_type="application/json")


@app.exception_handler(exc.OperationalError)
@app.exception_handler(exc.TimeoutError)
async def database_unavailable(request: Request, error: Exception) -> Response:
    logger.warning("Database unavailable: %s", getattr(error, "orig", error))
    return JSONResponse({"detail": "Database unavailable, try again shortly"}, 503)


class Health(SQLModel):
    status: Literal["ok"]
    database: Literal["ok"]


app.add_api_route("/", lambda: RedirectResponse("/docs"), include_in_schema=False)


@app.get("/health", responses=error_responses(503))
def health(session: SessionDep) -> Health:
    """Liveness and database reachability, for the host's health check; no token needed."""
    session.exec(select(1))
    return Health(status="ok", database="ok")


# --- The token command: a token for curl and the Authorize button in /docs ---

if __name__ == "__main__":
    match sys.argv[1:]:
        case ["token", user_id] if user_id.strip():
            secret = hs256_secret() or sys.exit("No HS256 secret: get a token from your frontend")
            claims = {"sub": user_id, "iat": utcnow(), "exp": utcnow() + timedelta(days=1)}
            claims |= {"iss": settings.jwt_issuer, "aud": settings.jwt_audience}
            print(jwt.encode({k: v for k, v in claims.items() if v is not None}, secret, "HS256"))
        case _:
            sys.exit("usage: python main.py token <user_id>, with a non-empty user id (e.g. alice)")
