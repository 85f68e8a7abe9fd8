"""Unit tests of dask_polar.serverless that need no server: the signed wire format, the
handler run in-process against moto's in-memory S3, the cancel flag, limits, packaging, CLI.

The end-to-end tests against the local Lambda service and SeaweedFS are in
``test_serverless_local.py``.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import io
import pickle
import threading
import time
import zipfile

import cloudpickle
import numpy as np
import pytest

pytest.importorskip("boto3")
moto = pytest.importorskip("moto")

from dask_polar import RemoteDecodeError  # noqa: E402
from dask_polar.codes import PolarCode  # noqa: E402
from dask_polar.codes.certify import certify  # noqa: E402
from dask_polar.executors import WorkOutcome  # noqa: E402
from dask_polar.serverless import (  # noqa: E402
    LambdaCrashError,
    LambdaExecutor,
    LambdaFunctionError,
    LambdaTimeoutError,
    PayloadRejectedError,
    RemoteError,
    S3AccessError,
    S3CancelFlag,
    S3Reference,
    build_package,
    config,
    handler,
    protocol,
    results,
)

KEY = b"unit-test-key-0123456789abcdef"
BUCKET = "unit-bucket"


@pytest.fixture
def s3(monkeypatch):
    """moto's in-memory S3, a bucket, and a fresh handler state with the signing key."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1", config.KEY_ENV: KEY.decode(),
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv(config.KEY_PARAMETER_ENV, raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    monkeypatch.setattr(handler, "_STATE", {"cold": True})
    with moto.mock_aws():
        import boto3

        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client
        client.close()


def call(fn, *args, body_key=None, inline_limit=config.INLINE_PAYLOAD_BYTES, **kwargs):
    body = cloudpickle.dumps((fn, args, kwargs))
    return protocol.encode_call(
        KEY, task="t1", bucket=BUCKET, body=body, body_key=body_key,
        result_key="jobs/t1.out", inline_limit=inline_limit,
    )


def run(event, s3=None):
    """Run the handler and decode its verified result (value, ok)."""
    answer = handler.handle(event)
    result = protocol.verify_result(KEY, answer, "t1")
    data = result.value
    if result.value_key is not None:
        data = s3.get_object(Bucket=BUCKET, Key=result.value_key)["Body"].read()
        protocol.check_digest(data, result.value_sha256, "result")
    return cloudpickle.loads(data), result


# -- signing ---------------------------------------------------------------------------------


def test_call_roundtrip_and_field_tampering():
    event = call(sum, [1, 2])
    assert protocol.verify_call(KEY, event).body == cloudpickle.dumps((sum, ([1, 2],), {}))
    # every signed field is covered: change one, the signature fails
    for field, value in [("task", "t2"), ("bucket", "other"), ("result_key", "x"),
                         ("inline_limit", 1), ("body_key", "k"), ("call_id", "other"),
                         ("expires", event["expires"] + 3600)]:
        tampered = dict(event, **{field: value})
        with pytest.raises(PayloadRejectedError, match="bad signature"):
            protocol.verify_call(KEY, tampered)
    # the inline body is covered by its signed digest
    tampered = dict(event, body=protocol._inline(cloudpickle.dumps((max, ([1, 2],), {}))))
    with pytest.raises(PayloadRejectedError, match="digest"):
        protocol.verify_call(KEY, tampered)


@pytest.mark.parametrize(
    "payload, match",
    [
        ({"hello": "world"}, "not a dask_polar call"),
        ("a string", "not a dask_polar call"),
        ({"dask_polar": 1, "kind": "call"}, "not a dask_polar call"),  # before replay checks
        ({"dask_polar": protocol.VERSION, "kind": "result"}, "expected a 'call'"),
        ({"dask_polar": protocol.VERSION, "kind": "call"}, "unsigned"),
    ],
)
def test_malformed_or_unsigned_calls_are_rejected(payload, match):
    with pytest.raises(PayloadRejectedError, match=match):
        protocol.verify_call(KEY, payload)


def test_wrong_key_and_swapped_results_are_rejected():
    with pytest.raises(PayloadRejectedError, match="bad signature"):
        protocol.verify_call(b"another-key-0123456789", call(sum, [1]))
    answer = protocol.encode_result(KEY, task="t7", ok=True, value=b"x")
    with pytest.raises(PayloadRejectedError, match="returned for 't1'"):
        protocol.verify_result(KEY, answer, "t1")
    with pytest.raises(PayloadRejectedError, match="expected a 'result'"):
        protocol.verify_result(KEY, call(sum, [1]), "t1")


def test_signing_key_checks(monkeypatch):
    monkeypatch.delenv(config.KEY_ENV, raising=False)
    with pytest.raises(ValueError, match=config.KEY_ENV):
        protocol.as_key(None)
    with pytest.raises(ValueError, match="at least 16 bytes"):
        protocol.as_key("short")
    with pytest.raises(TypeError, match="str or bytes"):
        protocol.as_key(1234567890123456789)
    monkeypatch.setenv(config.KEY_ENV, "k" * 20)
    assert protocol.as_key(None) == b"k" * 20


# -- the handler, in process --------------------------------------------------------------------


def test_handler_runs_a_call(s3):
    value, result = run(call(np.add, np.arange(3), 1))
    assert result.ok and result.stats["cold"] is True
    np.testing.assert_array_equal(value, [1, 2, 3])
    assert run(call(sum, [1, 2]))[1].stats["cold"] is False  # a warm environment


def test_handler_verifies_before_unpickling(s3, tmp_path):
    marker = tmp_path / "ran"
    event = call(marker.touch)
    event["sig"] = "0" * 64
    with pytest.raises(PayloadRejectedError, match="bad signature"):
        handler.handle(event)
    del event["sig"]
    with pytest.raises(PayloadRejectedError, match="unsigned"):
        handler.handle(event)
    assert not marker.exists()


def test_calls_carry_a_unique_id_and_an_expiry():
    first, second = call(sum, [1]), call(sum, [1])
    assert first["call_id"] != second["call_id"]
    now = time.time()
    assert now < first["expires"] <= now + config.CALL_LIFETIME + 1e-3  # rounded to ms
    verified = protocol.verify_call(KEY, first)
    assert (verified.call_id, verified.expires) == (first["call_id"], first["expires"])
    with pytest.raises(ValueError, match="lifetime must be <= 3600"):
        protocol.encode_call(KEY, task="t", bucket=BUCKET, body=b"", result_key="r", lifetime=1e6)


def test_expired_calls_are_rejected(s3, tmp_path):
    event = call(sum, [1])
    with pytest.raises(PayloadRejectedError, match=r"expired .* ago"):
        protocol.verify_call(KEY, event, now=event["expires"] + 5)
    marker = tmp_path / "ran"
    stale = protocol.encode_call(
        KEY, task="t1", bucket=BUCKET, body=cloudpickle.dumps((marker.touch, (), {})),
        result_key="jobs/t1.out", lifetime=0.001,
    )
    time.sleep(0.01)
    with pytest.raises(PayloadRejectedError, match="expired"):
        handler.handle(stale)
    assert not marker.exists()
    # a signed expiry too far ahead would pin the replay cache: rejected too
    far = dict(event, expires=time.time() + 10 * config.MAX_CALL_LIFETIME)
    far["sig"] = protocol._signature(KEY, far)
    with pytest.raises(PayloadRejectedError, match="too far in the future"):
        protocol.verify_call(KEY, far)


def test_replayed_calls_are_rejected(s3, tmp_path):
    marker = tmp_path / "ran"
    event = call(marker.touch)
    run(event)
    marker.unlink()
    with pytest.raises(PayloadRejectedError, match="replayed call"):
        handler.handle(event)  # a captured payload, sent again
    assert not marker.exists()
    assert run(call(marker.touch))[1].ok  # a new call of the same function still runs
    # a payload that fails verification is not remembered: its valid original still runs
    fresh = call(sum, [2])
    with pytest.raises(PayloadRejectedError, match="bad signature"):
        handler.handle(dict(fresh, sig="0" * 64))
    assert run(fresh)[0] == 2


def test_replay_cache_is_bounded_and_stays_sound():
    cache = handler.ReplayCache(capacity=2)
    cache.admit("a", expires=100.0, now=0.0)
    cache.admit("b", expires=101.0, now=0.0)
    with pytest.raises(PayloadRejectedError, match="replayed call 'a'"):
        cache.admit("a", expires=100.0, now=1.0)
    cache.admit("c", expires=102.0, now=1.0)  # evicts "a" before it expired
    assert len(cache) == 2
    # "a" is forgotten, but nothing expiring as early as it did is admitted any more
    with pytest.raises(PayloadRejectedError, match="cannot be checked for replay"):
        cache.admit("a", expires=100.0, now=2.0)
    cache.admit("d", expires=103.0, now=2.0)
    cache.admit("e", expires=205.0, now=150.0)  # "c" and "d" expired: dropped, not evicted
    assert len(cache) == 1


def test_handler_without_a_key_rejects_everything(s3, monkeypatch):
    monkeypatch.delenv(config.KEY_ENV)
    with pytest.raises(PayloadRejectedError, match="no usable signing key"):
        handler.handle(call(sum, [1]))


def test_handler_returns_the_exception_with_its_traceback(s3):
    def fails(x):
        raise KeyError(f"no {x}")

    value, result = run(call(fails, "such key"))
    assert not result.ok
    assert isinstance(value, KeyError) and value.args == ("no such key",)
    assert "fails" in result.traceback and "KeyError" in result.error


class Unpicklable(Exception):
    def __init__(self, a, b):
        super().__init__(f"{a} {b}")
        # a lock does not pickle (a class whose __init__ does not round-trip would, once
        # distributed's import has installed tblib's exception pickling)
        self.lock = threading.Lock()


def test_unpicklable_exception_becomes_remote_error(s3):
    def fails():
        raise Unpicklable(1, 2)

    value, result = run(call(fails))
    assert isinstance(value, RemoteError)
    assert value.type_name.endswith("Unpicklable") and value.message == "1 2"


def test_large_bodies_results_and_references_go_through_s3(s3):
    block = np.arange(1000.0)
    data = cloudpickle.dumps(block)
    s3.put_object(Bucket=BUCKET, Key="refs/block", Body=data)
    ref = S3Reference(BUCKET, "refs/block", protocol.digest(data), len(data))
    body = cloudpickle.dumps((np.multiply, (ref, 2.0), {}))
    s3.put_object(Bucket=BUCKET, Key="jobs/t1.in", Body=body)
    event = protocol.encode_call(
        KEY, task="t1", bucket=BUCKET, body=body, body_key="jobs/t1.in",
        result_key="jobs/t1.out", inline_limit=100,
    )
    assert event["body"] is None
    value, result = run(event, s3)
    assert result.value_key == "jobs/t1.out"  # 8 kB result > inline_limit: written to S3
    np.testing.assert_array_equal(value, 2 * block)
    # the reference's bytes are cached per environment: a warm call does not download them
    s3.delete_object(Bucket=BUCKET, Key="refs/block")
    s3.put_object(Bucket=BUCKET, Key="jobs/t1.in", Body=body)
    again = protocol.encode_call(  # a new call: the same envelope again would be a replay
        KEY, task="t1", bucket=BUCKET, body=body, body_key="jobs/t1.in",
        result_key="jobs/t1.out", inline_limit=100,
    )
    assert run(again, s3)[1].stats["downloaded"] == len(body)


def test_tampered_s3_objects_are_rejected_before_unpickling(s3, tmp_path):
    marker = tmp_path / "ran"
    body = cloudpickle.dumps((sum, ([1, 2],), {}))
    event = protocol.encode_call(
        KEY, task="t1", bucket=BUCKET, body=body, body_key="jobs/t1.in", result_key="jobs/t1.out",
    )
    s3.put_object(Bucket=BUCKET, Key="jobs/t1.in", Body=cloudpickle.dumps((marker.touch, (), {})))
    value, result = run(event)
    assert isinstance(value, PayloadRejectedError) and "digest" in str(value)
    # a referenced object replaced after the call was signed
    good = cloudpickle.dumps(np.ones(3))
    ref = S3Reference(BUCKET, "refs/r", protocol.digest(good), len(good))
    s3.put_object(Bucket=BUCKET, Key="refs/r", Body=cloudpickle.dumps((marker.touch, (), {})))
    value, _ = run(call(np.sum, ref))
    assert isinstance(value, PayloadRejectedError)
    assert not marker.exists()


def test_function_without_s3_access_reports_s3_access_error(s3):
    ref = S3Reference("bucket-of-someone-else", "k", "0" * 64, 1)
    value, _ = run(call(np.sum, ref))
    # moto answers NoSuchBucket here, not a credential error: the original error travels
    assert not isinstance(value, S3AccessError) and "NoSuchBucket" in str(value)
    error = type("E", (Exception,), {"response": {"Error": {"Code": "SignatureDoesNotMatch"}}})()
    mapped = protocol.s3_error(error, "GetObject", "b", "k", "function")
    assert isinstance(mapped, S3AccessError) and isinstance(mapped, PermissionError)
    assert "execution role" in str(mapped)


# -- references and the cancel flag ------------------------------------------------------------


def test_references_and_flags_pickle_to_their_address():
    ref = S3Reference(BUCKET, "refs/x", "ab" * 32, 10)
    back = pickle.loads(pickle.dumps(ref))  # outside a handler: still a reference
    assert isinstance(back, S3Reference) and (back.key, back.size) == ("refs/x", 10)
    assert len(cloudpickle.dumps(ref)) < 300
    flag = S3CancelFlag(BUCKET, "jobs/j/cancel", 0.5, on_set=lambda f: None)
    flag.set()
    remote = pickle.loads(pickle.dumps(flag))
    assert (remote.bucket, remote.key, remote.poll_interval) == (BUCKET, "jobs/j/cancel", 0.5)
    assert repr(flag).endswith("set>")


def test_cancel_flag_polls_s3_throttled(s3):
    flag = S3CancelFlag(BUCKET, "jobs/j/cancel", poll_interval=0.05, s3=s3)
    assert not flag.is_set() and not flag.is_set()
    assert flag.polls == 1  # the second look came within the poll interval: no request
    assert not flag.wait(0.12)
    assert 2 <= flag.polls <= 4
    S3CancelFlag(BUCKET, "jobs/j/cancel", s3=s3).set()  # a writer without an executor
    assert flag.wait(1.0)
    polls = flag.polls
    assert flag.is_set() and flag.polls == polls  # remembered


# -- limits, exceptions, validation, packaging ---------------------------------------------------


@pytest.mark.parametrize(
    "check, value, error, match",
    [
        (config.check_timeout, 901, ValueError, "900"),
        (config.check_timeout, 0, ValueError, ">= 1"),
        (config.check_timeout, 1.5, TypeError, "integer"),
        (config.check_memory, 64, ValueError, ">= 128"),
        (config.check_memory, 20000, ValueError, "10240"),
    ],
)
def test_limits(check, value, error, match):
    with pytest.raises(error, match=match):
        check(value)


@pytest.mark.parametrize(
    "exc",
    [
        LambdaTimeoutError("f", "timed out", error_type="Sandbox.Timedout", request_id="r"),
        LambdaCrashError("f", "exit status 3", error_type="Runtime.ExitError"),
        LambdaFunctionError(
            "f", "no module", error_type="Runtime.ImportModuleError", stack_trace=["x"]
        ),
        PayloadRejectedError("bad signature"),
        S3AccessError("PutObject", "b", "k", "SignatureDoesNotMatch", "executor"),
        RemoteError("m.T", "message"),
    ],
)
def test_exceptions_pickle(exc):
    back = pickle.loads(pickle.dumps(exc))
    assert type(back) is type(exc) and str(back) == str(exc)
    assert vars(back) == vars(exc)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"function_name": 3}, TypeError, "function_name must be a string"),
        ({"bucket": ""}, ValueError, "bucket must not be empty"),
        ({"prefix": "/"}, ValueError, "prefix must not be empty"),
        ({"max_concurrency": 0}, ValueError, "max_concurrency must be >= 1"),
        ({"key": "short"}, ValueError, "at least 16 bytes"),
        ({"inline_payload_bytes": 5 << 20}, ValueError, "inline_payload_bytes must be <="),
        ({"poll_interval": 0}, ValueError, "poll_interval must be > 0"),
        ({"retry_mode": "legacy"}, ValueError, "retry_mode must be"),
        ({"endpoint_urls": {"sqs": "x"}}, ValueError, "endpoint_urls takes"),
        ({"decode": "server"}, ValueError, "decode must be 'functions' or 'client'"),
        ({"decode_panel_bytes": 0}, ValueError, "decode_panel_bytes must be >= 1"),
    ],
)
def test_executor_validates_before_connecting(kwargs, error, match):
    arguments = {"function_name": "f", "bucket": "b", "key": KEY, **kwargs}
    with pytest.raises(error, match=match):
        LambdaExecutor(arguments.pop("function_name"), arguments.pop("bucket"), **arguments)


def test_package_has_the_handler_and_cloudpickle(tmp_path):
    from dask_polar.__main__ import main

    path = tmp_path / "function.zip"
    assert main(["lambda", "deploy", "--zip", str(path)]) == 0
    names = zipfile.ZipFile(path).namelist()
    assert "dask_polar/serverless/handler.py" in names and "cloudpickle/cloudpickle.py" in names
    assert not any("__pycache__" in name for name in names)
    assert path.read_bytes() == build_package()
    assert zipfile.ZipFile(io.BytesIO(build_package(include=()))).namelist() == [
        n for n in names if n.startswith("dask_polar/")
    ]


def test_handler_reads_its_key_from_ssm(s3, monkeypatch):
    import boto3

    ssm = boto3.client("ssm", region_name="us-east-1")
    ssm.put_parameter(Name="/dask-polar/key", Value=KEY.decode(), Type="SecureString")
    ssm.close()
    monkeypatch.delenv(config.KEY_ENV)
    monkeypatch.setenv(config.KEY_PARAMETER_ENV, "/dask-polar/key")
    assert run(call(sum, [1, 2]))[0] == 3


def test_deploy_cli_without_a_key_says_how_to_make_one(monkeypatch, capsys):
    from dask_polar.__main__ import main

    monkeypatch.delenv(config.KEY_ENV, raising=False)
    assert main(["lambda", "deploy", "--role", "arn:aws:iam::1:role/r"]) == 1
    assert "secrets.token_hex" in capsys.readouterr().err


# -- results kept in S3, decoded in functions ---------------------------------------------------


def _product(value):
    return WorkOutcome(value, 0.0, 0.0)


class InProcessFunctions(cf.ThreadPoolExecutor):
    """Runs calls as the handler would: pickled, unpickled, in another thread (moto's S3);
    the submissions numbered in ``faults`` raise the given exception instead."""

    def __init__(self, faults=None):
        super().__init__(4)
        self.faults = dict(faults or {})
        self.submitted = 0
        self.stats = collections.Counter()  # what the decode step counted

    def submit(self, fn, /, *args):
        number, self.submitted = self.submitted, self.submitted + 1
        fault = self.faults.get(number, self.faults.get(None))
        if fault is not None:
            return super().submit(_raise, fault)
        return super().submit(_run_pickled, cloudpickle.dumps((fn, args)))


def decoding(functions, store, release=lambda: None):
    """The decode step of a job kept in ``store``, run by ``functions``."""
    return results.FunctionDecode(
        functions, store, retries=2, release=release, count=functions.stats.update
    )


def _raise(exc):
    raise exc


def _run_pickled(body):
    fn, args = cloudpickle.loads(body)
    return fn(*args)


@pytest.fixture
def kept(s3):
    """A polar job's coded products kept in moto's S3: (code, store, receipts, expected)."""
    code = PolarCode(8, 4)
    rng = np.random.default_rng(5)
    data, rhs = rng.standard_normal((4, 10, 6)), rng.standard_normal((6, 3))
    products = code.encode(data) @ rhs
    splits = results.panel_splits(10, 4 * 3 * 8, 250, 8)  # 96 bytes a decoded row: 4 panels
    store = results.S3ResultStore(BUCKET, "jobs/j1", (10, 3), np.float64, splits, s3=s3)
    receipts = {
        j: results.keep_result(store, f"task-{j}", _product, products[j]).value for j in range(8)
    }
    return code, store, receipts, data @ rhs


def test_results_stay_in_s3_and_functions_decode_them_by_panels(s3, kept):
    code, store, receipts, expected = kept
    assert store.splits == (0, 2, 5, 7, 10)
    receipt = receipts[0]
    assert receipt.shape == (10, 3) and receipt.dtype == np.float64 and len(receipt.digests) == 4
    assert receipt.key.startswith("jobs/j1/results/task-0-")
    stored = s3.get_object(Bucket=BUCKET, Key=receipt.key)["Body"].read()
    assert len(stored) == 10 * 3 * 8  # raw C-order bytes: rows are ranges
    assert len(cloudpickle.dumps(receipt)) < 700  # what the client receives per task
    # one panel, decoded from ranged reads of a decodable subset
    used = {j: receipts[j] for j in (1, 3, 4, 5, 6, 7)}
    sources = {j: (r.key, r.digests[1]) for j, r in used.items()}
    panel = results.decode_panel(pickle.loads(pickle.dumps(store)), code, 1, sources)
    np.testing.assert_allclose(panel, expected[:, 2:5])
    # the whole product through the decode step; results known without work travel as
    # their rows (zeros as None)
    functions = InProcessFunctions()
    decode = decoding(functions, store)
    np.testing.assert_allclose(decode.decode(code, used), expected)
    assert functions.submitted == 4 and functions.stats["decode_panels"] == 4
    known = dict(used)
    known[3] = code.encode(expected)[3]
    np.testing.assert_allclose(decode.decode(code, known), expected)
    zeros = results.decode_panel(store, code, 0, dict.fromkeys(used))
    assert zeros.shape == (4, 2, 3) and not zeros.any()


def test_functions_certify_their_decode_and_the_client_computes_the_suspects(s3):
    # issue 21: mixed magnitudes inside rows; the functions return each panel's suspect
    # entries with its values, the client computes those from its data blocks
    code = PolarCode(8, 4)
    rng = np.random.default_rng(23)
    data = rng.standard_normal((4, 10, 16)) * 10.0 ** rng.integers(-4, 5, (4, 10, 16))
    rhs = rng.standard_normal((16, 3)) * 10.0 ** rng.integers(-4, 5, (16, 3))
    products = code.encode(data) @ rhs
    splits = results.panel_splits(10, 4 * 3 * 8, 250, 8)
    store = results.S3ResultStore(BUCKET, "jobs/j2", (10, 3), np.float64, splits, s3=s3)
    used = {
        j: results.keep_result(store, f"task-{j}", _product, products[j]).value
        for j in (1, 3, 4, 5, 6, 7)
    }
    functions = InProcessFunctions()
    decoded = decoding(functions, store).decode(code, used, inner=16)
    exact = data.astype(np.longdouble) @ rhs.astype(np.longdouble)
    bound = 16 * np.finfo(float).eps * (np.abs(data).astype(np.longdouble) @ np.abs(rhs))
    assert np.max(np.abs(decoded.values - exact) / bound) > 16  # the decode alone lost digits
    certified = np.stack([
        certify(decoded.values[i], decoded.suspects[i], data[i], rhs) for i in range(4)
    ])
    assert np.max(np.abs(certified - exact) / bound) <= 16
    np.testing.assert_array_equal(decoding(functions, store).decode(code, used), decoded.values)


def test_a_result_of_another_shape_or_dtype_is_not_stored(s3, kept):
    _, store, _, _ = kept
    for value in (np.zeros((9, 3)), np.zeros((10, 3), dtype=np.float32)):
        receipt = results.keep_result(store, "bad", _product, value).value
        assert receipt.key == "" and receipt.digests == ()
        assert (receipt.shape, receipt.dtype) == (value.shape, value.dtype)
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix="jobs/j1/results/bad")
    assert listed["KeyCount"] == 0
    stopped = WorkOutcome(None, 0.0, 0.0, cancelled=True)  # a stopped task stores nothing
    assert store.keep("x", stopped) is stopped


def test_tampered_result_is_a_precise_error_not_a_wrong_array(s3, kept):
    code, store, receipts, _ = kept
    key = receipts[5].key
    s3.put_object(Bucket=BUCKET, Key=key, Body=np.ones((10, 3)).tobytes())
    with pytest.raises(PayloadRejectedError, match=r"rows 0:2 of s3://.*does not match"):
        results.decode_panel(store, code, 0, {5: (key, receipts[5].digests[0])})
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"short")
    with pytest.raises(PayloadRejectedError, match=r"rows 2:5 of .* got 0 bytes, expected 72"):
        results.decode_panel(store, code, 1, {5: (key, receipts[5].digests[1])})
    functions = InProcessFunctions()
    decode = decoding(functions, store)
    with pytest.raises(RemoteDecodeError, match=r"panel \d \(rows \d+:\d+\) failed after 1 "
                       r"attempt\(s\): PayloadRejectedError") as info:
        decode.decode(code, receipts)
    assert isinstance(info.value.__cause__, PayloadRejectedError)  # not retried: it cannot help


def test_a_failing_decode_function_is_retried_then_raises(s3, kept):
    code, store, receipts, expected = kept
    crash = LambdaCrashError("f", "Runtime exited", error_type="Runtime.ExitError")
    functions = InProcessFunctions({0: crash, 2: LambdaTimeoutError("f", "timed out")})
    closed = []
    decode = decoding(functions, store, release=lambda: closed.append(1))
    np.testing.assert_allclose(decode.decode(code, receipts), expected)
    assert functions.submitted == 6 and functions.stats["decode_retries"] == 2
    decode.close()
    decode.close()
    assert closed == [1]  # released once
    functions = InProcessFunctions({None: crash})
    decode = decoding(functions, store)
    with pytest.raises(RemoteDecodeError, match=r"after 3 attempt\(s\): LambdaCrashError") as info:
        decode.decode(code, receipts)
    assert info.value.attempts == 3 and isinstance(info.value.__cause__, LambdaCrashError)
    assert pickle.loads(pickle.dumps(info.value)).rows == info.value.rows


def test_a_malformed_decoded_panel_is_an_error(s3, kept, monkeypatch):
    code, store, receipts, _ = kept
    monkeypatch.setattr(results, "decode_panel", lambda *args: np.zeros((4, 1, 3)))
    decode = decoding(InProcessFunctions(), store)
    with pytest.raises(RemoteDecodeError, match=r"malformed panel: shape \(4, 1, 3\)"):
        decode.decode(code, receipts)


def test_result_store_pickles_to_its_address_and_checks_splits():
    store = results.S3ResultStore(BUCKET, "jobs/j", (6, 2), "f8", (0, 3, 6))
    assert len(pickle.dumps(store)) < 300
    back = pickle.loads(pickle.dumps(store))
    assert (back.prefix, back.shape, back.dtype, back.splits) == ("jobs/j", (6, 2), np.float64, (0, 3, 6))
    assert repr(store).endswith("panels=2>") and back.rows(1) == (3, 6)
    with pytest.raises(ValueError, match="splits must rise strictly from 0 to 6"):
        results.S3ResultStore(BUCKET, "jobs/j", (6, 2), "f8", (0, 3, 3, 6))


def test_a_call_runs_once_across_environments(s3, tmp_path, monkeypatch):
    # issue 21, point 10: copies of one signed call ran once in each execution environment;
    # an environment is a fresh handler state (its own replay cache), sharing only S3
    counter = tmp_path / "runs"
    event = call(_append_line, str(counter))
    outcomes = []
    for _ in range(4):
        monkeypatch.setattr(handler, "_STATE", {"cold": True})
        try:
            handler.handle(event)
            outcomes.append("ran")
        except PayloadRejectedError as error:
            outcomes.append(str(error))
    assert outcomes[0] == "ran" and counter.read_text() == "ran\n"
    assert all("another environment of the function ran it" in o for o in outcomes[1:])
    assert s3.head_object(Bucket=BUCKET, Key=protocol.claim_key(event["result_key"], event["call_id"]))


def _append_line(path: str) -> None:
    with open(path, "a") as f:
        f.write("ran\n")
