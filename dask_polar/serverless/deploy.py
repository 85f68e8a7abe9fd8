"""Deploying the handler: ``python -m dask_polar lambda deploy`` and ``lambda remove``.

`build_package` zips the *installed* ``dask_polar`` package together with cloudpickle (pure
Python, and pickles need the same cloudpickle on both ends); `deploy_function` creates the
function, or updates its code (only if the zip changed) and configuration, waits until it is
active, and says what it did; `remove_function` deletes it.

The function's environment gets the signing key (``DASK_POLAR_LAMBDA_KEY``, read from the
deployer's environment or a key file, never from the command line). The runtime follows
this interpreter (``python3.11`` here): pickled calls must load on the other side.

Dependencies: the zip holds pure Python only. numpy, scipy and dask are compiled and large;
on AWS either add them as layers (for a small footprint, e.g. a layer built with ``pip
install --target python/ --platform manylinux2014_x86_64 --only-binary=:all: numpy scipy
dask``), or use the **container-image route**, which has room for all of them (10 GB)::

    # Dockerfile
    FROM public.ecr.aws/lambda/python:3.11
    RUN pip install --no-cache-dir "dask_polar[aws]"      # or: COPY . /src && pip install /src
    CMD ["dask_polar.serverless.handler.handle"]

    $ docker build -t ACCOUNT.dkr.ecr.REGION.amazonaws.com/dask-polar:latest .
    $ docker push ACCOUNT.dkr.ecr.REGION.amazonaws.com/dask-polar:latest
    $ python -m dask_polar lambda deploy --role arn:aws:iam::ACCOUNT:role/dask-polar-lambda \\
          --image-uri ACCOUNT.dkr.ecr.REGION.amazonaws.com/dask-polar:latest

Permissions of the deployer: ``lambda:CreateFunction``, ``lambda:UpdateFunctionCode``,
``lambda:UpdateFunctionConfiguration``, ``lambda:GetFunction``, ``lambda:DeleteFunction``,
``lambda:PutFunctionConcurrency`` on ``arn:aws:lambda:REGION:ACCOUNT:function:dask-polar``,
and ``iam:PassRole`` on the execution role (whose policy is in
`dask_polar.serverless.executor`).

Examples
--------
>>> import io, zipfile
>>> names = zipfile.ZipFile(io.BytesIO(build_package())).namelist()
>>> "dask_polar/serverless/handler.py" in names, "cloudpickle/__init__.py" in names
(True, True)
>>> build_package() == build_package()   # deterministic: unchanged code is not re-uploaded
True
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import io
import zipfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from .._validation import check_int
from . import config, protocol

__all__ = ["build_package", "deploy_function", "remove_function"]

#: Pure-Python packages shipped in the zip next to dask_polar.
BUNDLED = ("cloudpickle",)
_EPOCH = (1980, 1, 1, 0, 0, 0)


def _package_files(name: str) -> Iterable[tuple[str, Path]]:
    module = importlib.import_module(name)
    origin = Path(module.__file__ or "")
    if origin.name != "__init__.py":  # a single-module distribution
        yield origin.name, origin
        return
    root = origin.parent
    for path in sorted(root.rglob("*")):
        if path.is_dir() or "__pycache__" in path.parts or path.suffix in (".pyc", ".pyo"):
            continue
        yield f"{name}/{path.relative_to(root).as_posix()}", path


def build_package(path: str | Path | None = None, *, include: Iterable[str] = BUNDLED) -> bytes:
    """The function's zip: the installed ``dask_polar`` package and the ``include`` packages.

    Deterministic (sorted entries, fixed timestamps), so an unchanged package has an
    unchanged ``CodeSha256`` and `deploy_function` skips the upload.

    Parameters
    ----------
    path : str or Path, optional
        Also write the zip there.
    include : iterable of str
        Importable pure-Python packages to bundle (default: cloudpickle).

    Returns
    -------
    bytes
    """
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in ("dask_polar", *include):
            for arcname, file in _package_files(name):
                info = zipfile.ZipInfo(arcname, date_time=_EPOCH)
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, file.read_bytes())
    data = buffer.getvalue()
    if path is not None:
        Path(path).write_bytes(data)
    return data


def _client(session: Any, region: str | None, endpoint_url: str | None) -> Any:
    from botocore.config import Config

    from .executor import _boto3

    session = session if session is not None else _boto3().Session(region_name=region)
    return session.client(
        "lambda", endpoint_url=endpoint_url,
        config=Config(region_name=region or session.region_name or "us-east-1",
                      retries={"mode": "standard", "total_max_attempts": 5}),
    )


def _code_sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def deploy_function(
    function_name: str = config.DEFAULT_FUNCTION_NAME,
    *,
    role: str | None = None,
    key: str | bytes | None = None,
    timeout: int = config.DEFAULT_TIMEOUT,
    memory: int = config.DEFAULT_MEMORY,
    environment: Mapping[str, str] | None = None,
    image_uri: str | None = None,
    layers: Iterable[str] = (),
    concurrency: int | None = None,
    region: str | None = None,
    session: Any = None,
    endpoint_url: str | None = None,
    echo: Callable[[str], Any] | None = print,
) -> dict[str, Any]:
    """Create or update the Lambda function that runs `dask_polar.serverless.handler`.

    Parameters
    ----------
    function_name : str
    role : str, optional
        ARN of the execution role; required to create a function (an update keeps it).
    key : str or bytes, optional
        The signing key (default: ``DASK_POLAR_LAMBDA_KEY``), stored in the function's
        environment, unless ``environment`` names an SSM SecureString holding it
        (``DASK_POLAR_LAMBDA_KEY_PARAMETER``; the role then needs ``ssm:GetParameter``).
    timeout : int
        Seconds, 1 to 900.
    memory : int
        MB, 128 to 10240.
    environment : mapping, optional
        More environment variables for the function.
    image_uri : str, optional
        Deploy this container image instead of a zip of the installed package.
    layers : iterable of str
        Layer ARNs (zip route), e.g. for numpy and dask.
    concurrency : int, optional
        Reserved concurrency of the function.
    region, session, endpoint_url : optional
        Where to deploy (boto3 also honours ``AWS_ENDPOINT_URL_LAMBDA``).
    echo : callable or None
        Receives one line per step (default ``print``).

    Returns
    -------
    dict
        ``action`` (``"created"`` or ``"updated"``), ``function_name``, ``arn``,
        ``code_sha256``, ``code_size``, ``code_changed``, ``timeout``, ``memory``.

    Raises
    ------
    ValueError
        Bad limits, no key, no role for a new function, a zip over 50 MB.
    botocore.exceptions.ClientError
        Whatever Lambda refuses.
    """
    from botocore.exceptions import ClientError

    say = echo or (lambda line: None)
    timeout = config.check_timeout(timeout)
    memory = config.check_memory(memory)
    if concurrency is not None:
        concurrency = check_int("concurrency", concurrency, minimum=0)
    variables = dict(environment or {})
    if config.KEY_PARAMETER_ENV not in variables:  # else the function reads the key from SSM
        variables = {config.KEY_ENV: protocol.as_key(key).decode(), **variables}
    layers = list(layers)
    if image_uri is None:
        package = build_package()
        if len(package) > config.ZIP_UPLOAD_LIMIT:
            raise ValueError(
                f"the package is {len(package)} bytes, over Lambda's "
                f"{config.ZIP_UPLOAD_LIMIT}-byte direct upload limit: use the container-image "
                f"route (--image-uri)"
            )
        code: dict[str, Any] = {"ZipFile": package}
        sha, size = _code_sha256(package), len(package)
    else:
        code, sha, size = {"ImageUri": image_uri}, None, None
    settings: dict[str, Any] = {
        "Timeout": timeout,
        "MemorySize": memory,
        "Environment": {"Variables": variables},
        "Description": "dask_polar coded products (dask_polar.serverless.handler)",
    }
    if image_uri is None:
        settings.update(Runtime=config.RUNTIME, Handler=config.HANDLER, Layers=layers)
    client = _client(session, region, endpoint_url)
    try:
        try:
            current = client.get_function(FunctionName=function_name)["Configuration"]
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceNotFoundException":
                raise
            current = None
        waiter_config = {"Delay": 1, "MaxAttempts": 600}
        if current is None:
            if not role:
                raise ValueError(
                    "role is required to create a function: the ARN of its execution role "
                    "(see dask_polar.serverless.executor for a least-privilege policy)"
                )
            extra = {"PackageType": "Image"} if image_uri else {"PackageType": "Zip"}
            made = client.create_function(
                FunctionName=function_name, Role=role, Code=code, **extra, **settings
            )
            client.get_waiter("function_active_v2").wait(
                FunctionName=function_name, WaiterConfig=waiter_config
            )
            action, changed, arn = "created", True, made["FunctionArn"]
            say(f"created Lambda function {function_name} ({arn})")
        else:
            arn = current["FunctionArn"]
            changed = image_uri is not None or current.get("CodeSha256") != sha
            if changed:
                client.update_function_code(FunctionName=function_name, **code)
                client.get_waiter("function_updated_v2").wait(
                    FunctionName=function_name, WaiterConfig=waiter_config
                )
                say(f"updated the code of Lambda function {function_name} ({arn})")
            else:
                say(f"code of Lambda function {function_name} unchanged ({arn})")
            if role:
                settings["Role"] = role
            client.update_function_configuration(FunctionName=function_name, **settings)
            client.get_waiter("function_updated_v2").wait(
                FunctionName=function_name, WaiterConfig=waiter_config
            )
            action = "updated"
        what = f"image {image_uri}" if image_uri else f"zip of {size} bytes, sha256 {sha}"
        say(
            f"  {what}; handler {config.HANDLER}; timeout {timeout} s; memory {memory} MB; "
            f"environment: {', '.join(sorted(variables))}"
        )
        if concurrency is not None:
            client.put_function_concurrency(
                FunctionName=function_name, ReservedConcurrentExecutions=concurrency
            )
            say(f"  reserved concurrency {concurrency}")
    finally:
        client.close()
    return {
        "action": action, "function_name": function_name, "arn": arn, "code_sha256": sha,
        "code_size": size, "code_changed": changed, "timeout": timeout, "memory": memory,
    }


def remove_function(
    function_name: str = config.DEFAULT_FUNCTION_NAME,
    *,
    region: str | None = None,
    session: Any = None,
    endpoint_url: str | None = None,
    echo: Callable[[str], Any] | None = print,
) -> bool:
    """Delete the function; returns False (and says so) if there was none."""
    from botocore.exceptions import ClientError

    say = echo or (lambda line: None)
    client = _client(session, region, endpoint_url)
    try:
        client.delete_function(FunctionName=function_name)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "ResourceNotFoundException":
            raise
        say(f"no Lambda function {function_name}: nothing to remove")
        return False
    finally:
        client.close()
    say(f"deleted Lambda function {function_name}")
    return True
