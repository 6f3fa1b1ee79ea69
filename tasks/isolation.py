"""The child process in which a task loads and runs its model (docs/security.md).

A model file is untrusted input, and some formats run their author's code when loaded (only
with --trust-model-code). So every step that loads or runs a model runs here rather than in
the flow's process, which holds the storage credentials and does all storage I/O:

- the environment holds no credentials (AWS_*, PREFECT_*, and any variable named like a
  secret, see `child_environment`);
- the working directory is the task's scratch folder;
- no network, where the OS lets this user create a network namespace (`unshare`);
- the address space is capped by the task's memory limit (RLIMIT_AS);
- a time limit or a stop kills it, which also ends native code (an engine build, an
  inference call) that an exception raised in a Python thread cannot interrupt.

The flow's process sends each step as a function and its arguments (a pickle: the child
trusts its parent) and reads back only plain data through a restricted unpickler: the
step's result, a progress line, or its error. The child never imports Prefect.
"""

from __future__ import annotations

import builtins
import dataclasses
import enum
import functools
import importlib
import io
import os
import pickle
import resource
import shutil
import signal
import subprocess
import sys
import traceback
import types
from multiprocessing import Pipe
from multiprocessing.connection import Connection

from accelflow.core.errors import AccelflowError, ModelProcessError

_POLL_SECONDS = 0.2  # how often a waiting flow thread wakes, so that a stop or time limit reaches it
_GIB = 1 << 30
# Variables whose names say they hold a secret, or configure a store's or Prefect's access.
_SECRET_PREFIXES = ("AWS_", "PREFECT_", "FSSPEC_", "AZURE_", "GOOGLE_", "GCS_", "GCLOUD_", "S3_", "MINIO_", "HF_TOKEN",
                    "HUGGING_FACE_HUB_TOKEN")
_SECRET_WORDS = ("SECRET", "TOKEN", "PASSWORD", "PASSWD", "CREDENTIAL", "AUTH", "API_KEY", "ACCESS_KEY", "PRIVATE_KEY",
                 "SESSION_KEY", "SSH_")
# The child imports this module by name (not as __main__), so that its stand-ins are the parent's classes.
_CHILD_MAIN = ("import sys; from accelflow.tasks.isolation import serve; "
               "sys.exit(serve(int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4] == '1'))")
ISOLATE_NETWORK_ENV = "ACCELFLOW_ISOLATE_NETWORK"  # 0: keep the network (an operator's choice)


class _Pool:
    """Stands for the child's RunnerPool among a step's arguments."""


class _Callback:
    """Stands for a progress callback among a step's arguments: the child sends its calls back."""

    def __init__(self, index: int):
        self.index = index


def child_environment(env: dict[str, str]) -> dict[str, str]:
    """`env` without credentials: what the model's process may see."""
    return {k: v for k, v in env.items() if not is_secret_name(k)}


def is_secret_name(name: str) -> bool:
    upper = name.upper()
    return (upper.startswith(_SECRET_PREFIXES) or upper.endswith("_KEY")
            or any(word in upper for word in _SECRET_WORDS))


@functools.cache
def no_network_prefix() -> tuple[str, ...]:
    """The command prefix that starts a process in a network namespace of its own (loopback
    only), or () where this user may not create one."""
    unshare = shutil.which("unshare")
    if os.environ.get(ISOLATE_NETWORK_ENV) == "0" or unshare is None:
        return ()
    for prefix in ((unshare, "--net"), (unshare, "--user", "--map-root-user", "--net")):
        try:
            done = subprocess.run([*prefix, "true"], capture_output=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if done.returncode == 0:
            return prefix
    return ()


class ModelProcess:
    """One task's model process: started on the first step, ended with the task (`with`)."""

    def __init__(self, work_dir: str, device: str = "cpu", memory_gib: float | None = None,
                 trust_model_code: bool = False):
        self.work_dir = work_dir
        self.device = device  # where the baseline is timed (RunnerPool's device)
        self.memory_gib = memory_gib
        self.trust_model_code = trust_model_code
        self._proc: subprocess.Popen | None = None
        self._conn: Connection | None = None
        self._step = ""

    def __enter__(self) -> ModelProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def network_isolated(self) -> bool:
        return bool(no_network_prefix())

    def call(self, fn, *args):
        """`fn(*args)` in the model process, this object among `args` standing for its RunnerPool;
        functions among `args` (progress callbacks) are called here when the child calls them."""
        callbacks = [a for a in args if isinstance(a, (types.FunctionType, types.MethodType))]
        sent = [_Pool() if a is self else _stand_in(a, callbacks) for a in args]
        self._step = getattr(fn, "__name__", str(fn))
        if self._proc is None:
            self._start()
        try:
            self._conn.send((fn.__module__, fn.__qualname__, sent))
            return self._answer(callbacks)
        except BaseException:  # a stop, a time limit, Ctrl-C, a broken pipe: the child's state is unknown
            self.kill()
            raise

    def _answer(self, callbacks: list):
        while True:
            if not self._conn.poll(_POLL_SECONDS):
                if self._proc.poll() is not None:
                    raise self._died()
                continue
            try:
                kind, *body = safe_loads(self._conn.recv_bytes())
            except EOFError:
                raise self._died() from None
            if kind == "progress":
                callbacks[body[0]](*body[1])
            elif kind == "ok":
                return body[0]
            else:
                raise rebuilt_error(*body)

    def _start(self) -> None:
        os.makedirs(self.work_dir, exist_ok=True)
        ours, theirs = Pipe(duplex=True)
        # -P: the scratch folder (its working directory) is not on sys.path, so nothing the model
        # wrote there is imported by a name it chose (MMEngine imports unregistered type names).
        command = [*no_network_prefix(), sys.executable, "-P", "-c", _CHILD_MAIN,
                   str(theirs.fileno()), self.device, str(self.memory_gib or 0), str(int(self.trust_model_code))]
        self._proc = subprocess.Popen(command, env=child_environment(os.environ), cwd=self.work_dir,
                                      pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                                      start_new_session=True)  # its own group: killed with what it starts
        theirs.close()
        self._conn = ours

    def _died(self) -> ModelProcessError:
        code = self._proc.wait()
        self._forget()
        how = f"was killed by {signal.Signals(-code).name}" if code < 0 else f"exited with status {code}"
        memory = (f"; it may have run out of memory (its limit is {self.memory_gib:g} GiB, --memory-limit)"
                  if self.memory_gib else "")
        return ModelProcessError(f"the process running the model {how} during {self._step!r}: the model or an "
                                 f"engine crashed{memory}. Nothing was kept.")

    def kill(self) -> None:
        """End the child and everything it started, now."""
        if self._proc is not None:
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self._proc.wait()
        self._forget()

    def close(self) -> None:
        """Ask the child to exit (it frees its models), then make sure it has."""
        if self._proc is not None and self._proc.poll() is None:
            try:
                self._conn.send(None)
                self._proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.kill()

    def _forget(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._proc = self._conn = None


def _stand_in(arg, callbacks: list):
    index = next((i for i, c in enumerate(callbacks) if c is arg), None)
    return arg if index is None else _Callback(index)


# What the flow's process accepts from the child: builtins, numpy arrays and scalars, and
# accelflow's own data classes and errors; never a function or an arbitrary class.
_SAFE_GLOBALS = {
    "builtins": {"set", "frozenset", "complex", "slice", "range", "bytearray"},
    "collections": {"OrderedDict"},
    "datetime": {"datetime", "date", "time", "timedelta", "timezone"},
    "numpy": {"ndarray", "dtype"},
    "numpy.core.multiarray": {"_reconstruct", "scalar"},
    "numpy._core.multiarray": {"_reconstruct", "scalar"},
    "numpy.core.numeric": {"_frombuffer"},
    "numpy._core.numeric": {"_frombuffer"},
}


class _SafeUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if name in _SAFE_GLOBALS.get(module, ()):
            return super().find_class(module, name)
        if module == "numpy.dtypes" and name.endswith("DType"):
            return super().find_class(module, name)
        if module.startswith("accelflow.") and "." not in name:
            found = getattr(importlib.import_module(module), name, None)
            if _is_plain_data_class(found):
                return found
        raise pickle.UnpicklingError(f"the model process sent a {module}.{name}, which is not plain data")


def _is_plain_data_class(cls) -> bool:
    from pydantic import BaseModel

    return isinstance(cls, type) and (dataclasses.is_dataclass(cls) or issubclass(cls, (BaseModel, enum.Enum)))


def safe_loads(data: bytes):
    """Unpickle what the child sent, refusing anything but plain data."""
    return _SafeUnpickler(io.BytesIO(data)).load()


def rebuilt_error(module: str, qualname: str, message: str, trace: str) -> BaseException:
    """The child's exception as the flow's process raises it: accelflow's own errors keep their
    class and message (a user error); anything else is a bug, carrying the child's traceback."""
    if module.startswith("accelflow.") and "." not in qualname:
        cls = getattr(importlib.import_module(module), qualname, None)
        if isinstance(cls, type) and issubclass(cls, AccelflowError):
            return cls(message)
    builtin = getattr(builtins, qualname, None) if module == "builtins" else None
    if isinstance(builtin, type) and issubclass(builtin, Exception):
        return builtin(f"{message}\n(in the model process) {trace}")
    return RuntimeError(f"{qualname}: {message}\n(in the model process) {trace}")


# --- the child ---

def _limit_memory(gib: float) -> None:
    if gib > 0:
        hard = resource.getrlimit(resource.RLIMIT_AS)[1]
        limit = int(gib * _GIB) if hard == resource.RLIM_INFINITY else min(int(gib * _GIB), hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def _send(conn: Connection, message: tuple) -> None:
    conn.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))


def _run(conn: Connection, pool, module: str, qualname: str, args: list) -> tuple:
    def progress(index):
        return lambda *a: _send(conn, ("progress", index, a))

    real = [pool if isinstance(a, _Pool) else progress(a.index) if isinstance(a, _Callback) else a for a in args]
    try:
        fn = importlib.import_module(module)
        for part in qualname.split("."):
            fn = getattr(fn, part)
        result = fn(*real)
        pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)  # unpicklable: an error, not a dead pipe
        return ("ok", result)
    except BaseException as exc:  # noqa: BLE001 - every failure goes back to the flow's process
        # sent as the nearest class the parent can rebuild: numpy's _ArrayMemoryError is a MemoryError
        cls = next(c for c in type(exc).__mro__ if c.__module__ == "builtins" or c.__module__.startswith("accelflow."))
        return ("error", cls.__module__, cls.__qualname__, str(exc), traceback.format_exc(limit=-8))


def serve(fd: int, device: str, memory_gib: float, trust_model_code: bool) -> int:
    """The child's loop: run each step the parent sends until it sends None or goes away."""
    from accelflow.tasks.runners import RunnerPool

    _limit_memory(memory_gib)
    conn = Connection(fd)
    with RunnerPool(device, trust_model_code) as pool:
        while True:
            try:
                message = conn.recv()
            except EOFError:
                return 0
            if message is None:
                return 0
            _send(conn, _run(conn, pool, *message))

