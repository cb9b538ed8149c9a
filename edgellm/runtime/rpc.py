"""llama.cpp's RPC backend (ggml-rpc): a worker lends its CPU (or GPU) to a model loaded elsewhere.

llama-cpp-python binds none of libggml-rpc, so this module does, with ctypes: the worker side
(`ggml_backend_rpc_start_server`) and the client side (`ggml_backend_rpc_add_server` +
`ggml_backend_register`, whose devices go into `llama_model_params.devices`).

llama.cpp's client aborts the whole process (GGML_ABORT) when a worker is unreachable or speaks
another protocol version, and hangs when a worker is busy with another client (a worker serves
one client at a time). So before llama.cpp ever connects, :func:`probe` does the same HELLO
handshake in Python, with a timeout, and asks for the worker's devices and free memory (the
numbers llama.cpp itself splits layers by): every fault at start becomes one line naming the
endpoint. The wire format is llama.cpp's (ggml/src/ggml-rpc/ggml-rpc.cpp): a request is
``cmd (u8) | size (u64) | payload``, a reply ``size (u64) | payload``, all little-endian."""

from __future__ import annotations

import ctypes
import functools
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

from edgellm.errors import BadOption, EdgeLLMError

DEFAULT_PORT = 50052
MAX_WORKERS = 16  # GGML_RPC_MAX_SERVERS
# The protocol of the libggml-rpc this edgellm pins (llama-cpp-python 0.3.36: RPC_PROTO_*_VERSION in
# include/ggml-rpc.h; tests/rpc checks it against a live worker). llama.cpp's client accepts a worker
# with the same major version and a minor version no newer than its own.
PROTOCOL = (7, 0, 0)
SAFE_CROSSING = (
    "the RPC protocol has no authentication and no encryption: anyone who reaches this port can run "
    "code on this machine's backend and read what it computes. Across machines, bind 127.0.0.1 and "
    "use an SSH tunnel (`ssh -N -L 50052:127.0.0.1:50052 worker-host` on the client) or a VPN such as "
    "WireGuard or Tailscale"
)

_CMD_GET_DEVICE_MEMORY = 11
_CMD_HELLO = 14
_CMD_DEVICE_COUNT = 15
_CONN_CAPS = 24  # RPC_CONN_CAPS_SIZE: transport capabilities (RDMA), all zero here
_HELLO_REPLY = struct.Struct("<BBBB24s")
DEVICE_TYPES = {"cpu": (0,), "gpu": (1, 2)}  # enum ggml_backend_dev_type: CPU, GPU, iGPU


class WorkerError(EdgeLLMError):
    """A worker that cannot be used: unreachable, busy, another version."""


class VersionMismatch(WorkerError):
    """A worker speaking another RPC protocol version than this llama.cpp build."""


# -- endpoints ----------------------------------------------------------------------------------
@dataclass(frozen=True, order=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> Endpoint:
        """``HOST[:PORT]`` (port 50052 when left out). llama.cpp splits an endpoint at its first
        colon, so an IPv6 literal cannot be written: use a host name."""
        text = text.strip()
        host, sep, port_text = text.partition(":")
        if not host:
            raise BadOption(f"worker endpoint {text!r} has no host: write HOST:PORT, e.g. 192.168.1.20:{DEFAULT_PORT}")
        if ":" in port_text or host.startswith("["):
            raise BadOption(f"worker endpoint {text!r}: llama.cpp cannot address IPv6 literals; use a host name")
        if not sep:
            return cls(host, DEFAULT_PORT)
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise BadOption(f"worker endpoint {text!r}: the port must be a number from 1 to 65535")
        return cls(host, int(port_text))


def parse_endpoints(text: str | tuple[str, ...] | list[str]) -> tuple[Endpoint, ...]:
    """``--rpc HOST:PORT[,HOST:PORT...]`` (also repeatable): each worker once, at most 16."""
    items = [text] if isinstance(text, str) else list(text)
    found: list[Endpoint] = []
    for item in items:
        for part in item.split(","):
            if not part.strip():
                continue
            ep = Endpoint.parse(part)
            if ep in found:
                raise BadOption(f"worker {ep} is listed twice in --rpc")
            found.append(ep)
    if not found:
        raise BadOption("--rpc needs at least one HOST:PORT")
    if len(found) > MAX_WORKERS:
        raise BadOption(f"--rpc lists {len(found)} workers; llama.cpp takes at most {MAX_WORKERS}")
    return tuple(found)


# -- the handshake, in Python -------------------------------------------------------------------
@dataclass(frozen=True)
class WorkerDevice:
    index: int
    free: int  # bytes, as the worker's backend reports them (what llama.cpp splits layers by)
    total: int


@dataclass(frozen=True)
class Worker:
    endpoint: Endpoint
    version: tuple[int, int, int]
    devices: tuple[WorkerDevice, ...]

    @property
    def free(self) -> int:
        return sum(d.free for d in self.devices)


def compatible(version: tuple[int, int, int], ours: tuple[int, int, int] = PROTOCOL) -> bool:
    """llama.cpp's own rule (negotiate_hello): same major version, minor no newer than ours."""
    return version[0] == ours[0] and version[1] <= ours[1]


def _request(sock: socket.socket, cmd: int, payload: bytes = b"") -> None:
    sock.sendall(struct.pack("<BQ", cmd, len(payload)) + payload)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        chunk = sock.recv(n - got)
        if not chunk:
            raise ConnectionResetError("the worker closed the connection")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _reply(sock: socket.socket, size: int) -> bytes:
    (n,) = struct.unpack("<Q", _recv_exact(sock, 8))
    if n != size:
        raise ConnectionResetError(f"a {n}-byte reply where {size} bytes were expected")
    return _recv_exact(sock, n)


def probe(endpoint: Endpoint, timeout: float = 5.0) -> Worker:
    """Handshake with a worker as llama.cpp would, and read its devices' free memory; raise
    WorkerError (one line naming the endpoint) where llama.cpp would abort or hang."""
    how = f"start one there with `edgellm worker --host HOST --port {endpoint.port}`"
    try:
        sock = socket.create_connection((endpoint.host, endpoint.port), timeout=timeout)
    except socket.gaierror as err:
        raise WorkerError(f"worker {endpoint}: cannot resolve host {endpoint.host!r} ({err.strerror})") from None
    except TimeoutError:
        raise WorkerError(f"worker {endpoint} did not answer within {timeout:g} s (firewall? wrong address?)") from None
    except OSError as err:
        raise WorkerError(f"worker {endpoint} is not reachable ({err.strerror or err}); {how}") from None
    with sock:
        try:
            _request(sock, _CMD_HELLO, bytes(_CONN_CAPS))
            major, minor, patch, _pad, _caps = _HELLO_REPLY.unpack(_reply(sock, _HELLO_REPLY.size))
        except TimeoutError:
            raise WorkerError(
                f"worker {endpoint} accepted the connection but did not answer within {timeout:g} s: it is "
                "serving another client (a worker serves one at a time) or is not an edgellm/llama.cpp worker"
            ) from None
        except OSError as err:
            raise VersionMismatch(
                f"worker {endpoint} closed the connection at the handshake ({err}): it is not an RPC worker "
                f"or it speaks an older RPC protocol than {_v(PROTOCOL)}; install the same edgellm version there"
            ) from None
        version = (major, minor, patch)
        if not compatible(version):
            raise VersionMismatch(
                f"worker {endpoint} speaks RPC protocol {_v(version)} but this llama.cpp build speaks "
                f"{_v(PROTOCOL)}; install the same edgellm version (same llama-cpp-python) on both machines"
            )
        try:
            _request(sock, _CMD_DEVICE_COUNT)
            (count,) = struct.unpack("<I", _reply(sock, 4))
            devices = []
            for i in range(count):
                _request(sock, _CMD_GET_DEVICE_MEMORY, struct.pack("<I", i))
                free, total = struct.unpack("<QQ", _reply(sock, 16))
                devices.append(WorkerDevice(i, free, total))
        except OSError as err:
            raise WorkerError(f"worker {endpoint} broke off after the handshake ({err})") from None
    if not devices:
        raise WorkerError(f"worker {endpoint} offers no devices")
    return Worker(endpoint, version, tuple(devices))


def probe_all(endpoints: tuple[Endpoint, ...] | tuple[str, ...], timeout: float = 5.0) -> tuple[Worker, ...]:
    eps = parse_endpoints(tuple(str(e) for e in endpoints)) if endpoints else ()
    return tuple(probe(ep, timeout) for ep in eps)


def _v(version: tuple[int, int, int]) -> str:
    return ".".join(map(str, version))


# -- ctypes: libggml-rpc and the parts of ggml's backend registry it needs -----------------------
@functools.cache
def _lib() -> ctypes.CDLL:
    import llama_cpp

    lib_dir = Path(llama_cpp.__file__).parent / "lib"
    candidates = sorted(lib_dir.glob("libggml-rpc.*")) or sorted(lib_dir.glob("ggml-rpc.*"))
    if not candidates:
        raise EdgeLLMError(
            "this llama.cpp build has no RPC backend (libggml-rpc): rebuild with `rm .venv/.llama-cpp-build && "
            "make setup` (scripts/setup.sh builds it with -DGGML_RPC=ON)"
        )
    from edgellm.runtime.backends import _ggml

    _ggml()  # libggml first: libggml-rpc resolves its symbols from it
    lib = ctypes.CDLL(str(candidates[0]))
    vp, sz = ctypes.c_void_p, ctypes.c_size_t
    lib.ggml_backend_rpc_start_server.argtypes = [ctypes.c_char_p, ctypes.c_char_p, sz, sz, ctypes.POINTER(vp)]
    lib.ggml_backend_rpc_start_server.restype = None
    lib.ggml_backend_rpc_add_server.argtypes = [ctypes.c_char_p]
    lib.ggml_backend_rpc_add_server.restype = vp
    return lib


@functools.cache
def _registry() -> ctypes.CDLL:
    """libggml's registry calls used here (backends._ggml declares the device queries)."""
    from edgellm.runtime.backends import _ggml

    lib = _ggml()
    vp = ctypes.c_void_p
    lib.ggml_backend_register.argtypes, lib.ggml_backend_register.restype = [vp], None
    lib.ggml_backend_reg_dev_count.argtypes, lib.ggml_backend_reg_dev_count.restype = [vp], ctypes.c_size_t
    lib.ggml_backend_reg_dev_get.argtypes, lib.ggml_backend_reg_dev_get.restype = [vp, ctypes.c_size_t], vp
    return lib


def require() -> None:
    """Raise the rebuild advice unless this llama.cpp build has the RPC backend."""
    try:
        _lib()
    except OSError as err:
        raise EdgeLLMError(
            f"libggml-rpc does not load ({err}); rebuild with `rm .venv/.llama-cpp-build && make setup`"
        ) from None


def available() -> bool:
    """Whether this llama.cpp build has the RPC backend."""
    try:
        require()
    except EdgeLLMError:
        return False
    return True


# -- worker side --------------------------------------------------------------------------------
def local_devices(kind: str) -> list[tuple[int, object]]:
    """(ggml device pointer, backends.Device) of this build for ``--device cpu|gpu``."""
    import llama_cpp

    from edgellm.runtime import backends

    llama_cpp.llama_backend_init()
    lib = backends._ggml()
    chosen = []
    for i, dev in enumerate(backends.devices()):
        if lib.ggml_backend_dev_type(lib.ggml_backend_dev_get(i)) in DEVICE_TYPES[kind]:
            chosen.append((lib.ggml_backend_dev_get(i), dev))
    if not chosen:
        raise EdgeLLMError(
            f"this llama.cpp build has no {kind.upper()} device; for a GPU worker rebuild with "
            "`EDGELLM_GPU=cuda make setup` (or metal / vulkan)"
        )
    return chosen


_GET_MEMORY = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t))


_INIT_BACKEND = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p)


class OfferedDevice:
    """A copy of a ggml device whose ``get_memory`` reports what this worker offers.

    A client splits layers by each device's free memory, asked over RPC; ggml's CPU device
    answers with the machine's total RAM as "free", so every CPU worker would look empty. The
    copy answers with RAM available now (psutil), capped by ``--memory``; a GPU keeps its own
    free VRAM, capped the same way. Everything else (name, backend, buffers) is the original's:
    the copy shares its function table, registry and context."""

    _WORDS = 32  # ggml_backend_device: an interface of ~15 function pointers, then reg, then context

    def __init__(self, dev: int, is_cpu: bool, cap: int | None = None) -> None:
        from edgellm.runtime.backends import _ggml

        lib = _ggml()
        lib.ggml_backend_dev_backend_reg.argtypes = [ctypes.c_void_p]
        lib.ggml_backend_dev_backend_reg.restype = ctypes.c_void_p
        reg = lib.ggml_backend_dev_backend_reg(dev)
        words = (ctypes.c_void_p * self._WORDS).from_address(dev)
        n_iface = next((i for i in range(3, self._WORDS - 1) if words[i] == reg), None)
        if n_iface is None:
            raise EdgeLLMError("this llama.cpp build lays out ggml_backend_device differently; cannot report memory")
        self._struct = (ctypes.c_void_p * (n_iface + 2))(*words[: n_iface + 2])
        self._original = _GET_MEMORY(words[2])
        self._original_init = _INIT_BACKEND(words[5])
        self._callbacks = (_GET_MEMORY(self._get_memory), _INIT_BACKEND(self._init_backend))
        self._struct[2] = ctypes.cast(self._callbacks[0], ctypes.c_void_p).value
        self._struct[5] = ctypes.cast(self._callbacks[1], ctypes.c_void_p).value
        self.pointer: int = ctypes.addressof(self._struct)
        self._real = dev
        self.is_cpu, self.cap = is_cpu, cap

    def memory(self) -> tuple[int, int]:
        """(free, total) bytes as clients will see them."""
        free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
        self._original(self.pointer, ctypes.byref(free), ctypes.byref(total))
        free_b, total_b = free.value, total.value
        if self.is_cpu:
            import psutil

            free_b = psutil.virtual_memory().available
        if self.cap is not None:
            free_b, total_b = min(free_b, self.cap), min(total_b, self.cap)
        return free_b, total_b

    def _init_backend(self, _dev: int, params: bytes | None) -> int | None:
        """The original backend, pointed at this copy: the RPC server asks a backend's device
        (not the device it was given) for the memory it reports."""
        backend = self._original_init(self._real, params)
        if backend:
            words = (ctypes.c_void_p * self._WORDS).from_address(backend)
            hits = [i for i in range(1, self._WORDS) if words[i] == self._real]
            if len(hits) == 1:  # struct ggml_backend: guid, interface, device, context
                words[hits[0]] = self.pointer
        return backend

    def _get_memory(self, _dev: int, free, total) -> None:  # noqa: ANN001 - size_t* from C
        try:
            free[0], total[0] = self.memory()
        except Exception:  # a callback from C must not raise; report nothing rather than garbage
            free[0] = total[0] = 0


def serve(endpoint: Endpoint, device_ptrs: list[int], n_threads: int, cache_dir: Path | None) -> None:
    """Run llama.cpp's RPC server; returns only if it could not start (it printed why)."""
    array = (ctypes.c_void_p * len(device_ptrs))(*device_ptrs)
    cache = str(cache_dir).encode() if cache_dir else None
    _lib().ggml_backend_rpc_start_server(str(endpoint).encode(), cache, n_threads, len(device_ptrs), array)


# -- client side --------------------------------------------------------------------------------
_registered: dict[Endpoint, list[int]] = {}


def client_devices(endpoints: tuple[Endpoint, ...] | tuple[str, ...], timeout: float = 5.0) -> list[int]:
    """The ggml devices of these workers, in order, registered with llama.cpp once per process:
    each worker is probed first (so that llama.cpp, which aborts on an unreachable or
    incompatible worker and hangs on a busy one, only ever connects to one that answered)."""
    eps = parse_endpoints(tuple(str(e) for e in endpoints))
    for ep in eps:
        probe(ep, timeout)
    lib, reg_lib = _lib(), _registry()
    devices: list[int] = []
    for ep in eps:
        if ep not in _registered:
            reg = lib.ggml_backend_rpc_add_server(str(ep).encode())
            if not reg:
                raise WorkerError(f"worker {ep} offers no devices")
            reg_lib.ggml_backend_register(reg)
            count = reg_lib.ggml_backend_reg_dev_count(reg)
            _registered[ep] = [reg_lib.ggml_backend_reg_dev_get(reg, i) for i in range(count)]
        devices.extend(_registered[ep])
    return devices


def device_array(devices: list[int]) -> ctypes.Array:
    """A NULL-terminated ``ggml_backend_dev_t[]`` for ``llama_model_params.devices`` (keep it alive
    until the model is loaded). Left NULL, llama.cpp keeps every layer on the local CPU."""
    return (ctypes.c_void_p * (len(devices) + 1))(*devices, None)
