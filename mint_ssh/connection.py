"""The SSH adapter: one paramiko connection, host key checks, authentication, exec channels.

paramiko is imported here and nowhere else (its ssh_config parser included); its exceptions
become mint errors at this boundary (AuthError 77, UnavailableError 69, TransferError 74,
ConfigError 78 for an ssh_config it cannot read).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import getpass
import hashlib
import logging
import os
import select
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Optional, Protocol

from mint_common.errors import AuthError, ConfigError, TransferError, UnavailableError
from mint_ssh import protocol
from mint_ssh.hosts import DEFAULT_IDENTITIES, NO_SUCH_NAME, HostSpec, no_such_name, parse_jump
from mint_ssh.lazyimport import defer_import

if TYPE_CHECKING:
    import paramiko

# paramiko.config imports invoke (about 50 ms of start-up) only to run `Match exec` lines.
defer_import("invoke")

log = logging.getLogger(__name__)

# A moderate window: paramiko copies its receive buffer on every read, so a huge one
# slows downloads (measured on loopback; see docs/benchmarks.md).
WINDOW_SIZE = 4 * 1024 * 1024
MAX_PACKET_SIZE = 32768
FAST_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr")
CHUNK = 1024 * 1024
GATE_REFUSED = 77
CLIENT_REKEY_LIMIT = 2**34
STDERR_TAIL = 4096
# Bounds on what a remote side may send where we expect little (a hostile host may send
# endless bytes): the exit status line, any other reply on stdout ("removed", `df`, `pwd`,
# tar's end padding), and the stderr we keep for messages (the rest is counted, not kept).
MAX_STATUS_LINE = 1024
MAX_REPLY = 64 * 1024
STDERR_KEEP = 64 * 1024


class ConnectionLost(UnavailableError):
    """The connection dropped while a remote operation was under way."""


@dataclasses.dataclass(frozen=True)
class ExecResult:
    """A remote command's end, under the field names of `mint_common.proc.CommandResult`."""

    return_code: int
    stdout: bytes
    stderr: bytes
    # A request that printed its first stdout line and now waits for its next step on stdin
    # (a start waits for `fetch`): still open, to be handed to `fetch`. None once it ended.
    pending: object = dataclasses.field(default=None, compare=False)

    @property
    def ok(self) -> bool:
        return self.return_code == 0

    @property
    def failed(self) -> bool:
        return not self.ok

    @property
    def text(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    def error_text(self) -> str:
        return self.stderr.decode("utf-8", "replace").strip()


def refused_by_gate(result: ExecResult) -> None:
    """Raise AuthError (77) when the remote `mint-ssh gate` refused the request."""
    text = result.error_text()
    if result.return_code == GATE_REFUSED and "refused by the mint-ssh gate" in text:
        line = text.splitlines()[-1].removeprefix("mint-ssh: error: ")
        if protocol.GATE_VERSION_MARK not in line:
            # Gates of protocol 1 did not know versions: every request of ours looks foreign
            raise AuthError(protocol.mismatch_message(client=protocol.VERSION, gate=1))
        raise AuthError(line)


class _Tail:
    """The last `size` bytes of a stream, and how many came before them."""

    def __init__(self, size: int = STDERR_KEEP, note: bool = True) -> None:
        self.size = size
        self.note = note
        self.data = bytearray()
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        excess = len(self.data) - self.size
        if excess > 0:
            del self.data[:excess]
            self.dropped += excess

    def value(self) -> bytes:
        if not (self.dropped and self.note):
            return bytes(self.data)
        return b"[%d earlier bytes of remote stderr not kept]\n" % self.dropped + self.data


class RemoteHost(Protocol):
    """What the run logic needs from a connection to the external computer."""

    def execute(self, command: str, *, timeout: float = ...) -> ExecResult: ...

    def upload(
        self, command: str, blocks: Iterable[bytes], advance: Callable[[int], None]
    ) -> ExecResult: ...

    def fetch(
        self, command: str, unpack: Callable[[BinaryIO], bool], opened: object = None
    ) -> ExecResult: ...

    def watch(
        self,
        command: str,
        on_output: Callable[[bytes], None],
        blocks: Iterable[bytes] = (),
        on_sent: Callable[[], None] = ...,
        on_stdout: Callable[[bytes], None] = ...,
        end_mark: str = ...,
    ) -> ExecResult: ...

    def close(self) -> None: ...


def read_ssh_config(path: Path, alias: str) -> dict[str, Any]:
    """What the ssh_config file at `path` says for `alias` (paramiko's lower-case keys)."""
    import paramiko

    try:
        return dict(paramiko.SSHConfig.from_path(str(path)).lookup(alias))
    except (paramiko.SSHException, OSError, ValueError) as exc:
        raise ConfigError(f"cannot read ssh config {path}: {exc}") from exc


def fingerprint(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def _key_types_for(known_types: set[str]) -> list[str]:
    """Negotiation names for the key types we already know (RSA has three)."""
    names: list[str] = []
    for key_type in sorted(known_types):
        if key_type == "ssh-rsa":
            names += ["rsa-sha2-512", "rsa-sha2-256", "ssh-rsa"]
        else:
            names.append(key_type)
    return names


class _UntilMark:
    """Passes a stream on to `sink` until `mark`; what follows the mark is handed back.
    The last bytes that could begin the mark are held until the next chunk tells."""

    def __init__(self, mark: bytes, sink: Callable[[bytes], None]) -> None:
        self.mark = mark
        self.sink = sink
        self.held = b""
        self.seen = False

    def feed(self, chunk: bytes) -> bytes:
        data = self.held + chunk
        at = data.find(self.mark)
        if at >= 0:
            self.held, self.seen = b"", True
            if at:
                self.sink(data[:at])
            return data[at + len(self.mark) :]
        keep = len(self.mark) - 1
        safe, self.held = data[: max(0, len(data) - keep)], data[max(0, len(data) - keep) :]
        if safe:
            self.sink(safe)
        return b""

    def flush(self) -> None:
        """The stream ended without the mark: what was held is output too."""
        if self.held:
            self.sink(self.held)
            self.held = b""


class _ChannelReader:
    """A read()-able view of a channel's stdout, for the tar reader.

    Stderr is drained into `stderr` as it comes: the channel's window is shared, so unread
    stderr would stop the stream for good. Silence is handed to `wait` (which probes the link).
    """

    def __init__(self, channel: paramiko.Channel, wait: Callable[[paramiko.Channel], None]) -> None:
        self.channel = channel
        self.wait = wait
        self.stderr = _Tail()

    def read(self, size: int = CHUNK) -> bytes:
        channel = self.channel
        while True:
            if channel.recv_ready():
                return bytes(channel.recv(size if size > 0 else CHUNK))
            if channel.recv_stderr_ready():
                self.stderr.add(channel.recv_stderr(CHUNK))
            elif channel.eof_received or channel.closed:
                return b""
            else:
                self.wait(channel)


# Linux only; elsewhere the socket keeps the system's delayed acknowledgements.
_TCP_QUICKACK: Optional[int] = getattr(socket, "TCP_QUICKACK", None)


class _PromptAckSocket(socket.socket):
    """A TCP socket that acknowledges what it receives at once.

    OpenSSH leaves Nagle's algorithm on for sessions without a terminal, so a short message
    sent while an earlier one is unacknowledged waits for our ACK, which Linux delays by up to
    40 ms (measured: every first channel open, every request's end). Linux falls back to
    delayed ACKs on its own, hence the option is set again before each read.
    """

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        self.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK or 0, 1)
        return super().recv(bufsize, flags)


def _prompt(sock: socket.socket) -> socket.socket:
    """`sock` with Nagle's algorithm off (our short messages go at once) and prompt ACKs."""
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if _TCP_QUICKACK is None:
        return sock
    timeout = sock.gettimeout()
    prompt = _PromptAckSocket(fileno=sock.detach())
    prompt.settimeout(timeout)
    return prompt


def _tune(transport: paramiko.Transport, known_types: set[str]) -> None:
    """Rekeying, ciphers and host key types of a transport not yet started."""
    # paramiko's own rekey after 512 MiB can stall channel opens (paramiko issue 822);
    # OpenSSH servers rekey on their own schedule (RekeyLimit 1-4 GiB), so let them lead.
    transport.packetizer.REKEY_BYTES = transport.packetizer.REKEY_PACKETS = CLIENT_REKEY_LIMIT
    options = transport.get_security_options()
    options.ciphers = tuple(
        [c for c in FAST_CIPHERS if c in options.ciphers]
        + [c for c in options.ciphers if c not in FAST_CIPHERS]
    )
    if known_types:
        # the key types the host is already known by first, so it shows a key we can check
        preferred = [t for t in _key_types_for(known_types) if t in options.key_types]
        options.key_types = tuple(preferred + [t for t in options.key_types if t not in preferred])


class SshConnection:
    """One authenticated SSH connection (plus any ProxyJump hops or ProxyCommand process)."""

    def __init__(
        self,
        spec: HostSpec,
        *,
        resolve: Callable[[str], HostSpec],
        connect_timeout: float,
        accept_new_host_key: bool = False,
        interactive: Optional[bool] = None,
        sock: Any = None,
    ) -> None:
        self.spec = spec
        self.connect_timeout = connect_timeout
        self.accept_new_host_key = accept_new_host_key
        self.interactive = sys.stdin.isatty() if interactive is None else interactive
        self._resolve = resolve
        self._hops: list[SshConnection] = []
        self._proxy: Optional[subprocess.Popen[bytes]] = None
        self.host_key_fingerprint = ""
        self.host_key_status = ""
        self.missing_identities: list[Path] = []
        try:
            self.transport = self._handshake(sock if sock is not None else self._open_socket())
        except BaseException:
            self._close_helpers()
            raise

    # --- connecting -------------------------------------------------------------------

    def _open_socket(self) -> Any:
        spec = self.spec
        if spec.proxy_command:
            return self._proxy_socket(spec.proxy_command)
        if spec.proxy_jump:
            return self._jump_channel()
        try:
            address = (spec.hostname, spec.port)
            return _prompt(socket.create_connection(address, timeout=self.connect_timeout))
        except socket.gaierror as exc:
            # "no such name" does not heal by retrying; a resolver that is down may
            if exc.errno in NO_SUCH_NAME:
                raise no_such_name(spec.alias, spec.hostname, spec.source) from exc
            raise UnavailableError(
                f"cannot look up {spec.hostname}: {exc.strerror or exc}"
            ) from exc
        except OSError as exc:
            raise UnavailableError(
                f"cannot connect to {spec.hostname} port {spec.port}: {exc}"
            ) from exc

    def _proxy_socket(self, command: str) -> socket.socket:
        # OpenSSH runs ProxyCommand through the shell and talks to it over its stdin/stdout;
        # a socketpair gives paramiko a real socket with real EOF semantics.
        ours, theirs = socket.socketpair()
        try:
            self._proxy = subprocess.Popen(
                ["/bin/sh", "-c", f"exec {command}"],
                stdin=theirs.fileno(),
                stdout=theirs.fileno(),
                start_new_session=True,
            )
        except OSError as exc:
            ours.close()
            raise UnavailableError(f"cannot start ProxyCommand {command!r}: {exc}") from exc
        finally:
            theirs.close()
        return ours

    def _jump_channel(self) -> Any:
        previous: Optional[SshConnection] = None
        for hop in self.spec.proxy_jump:
            user, host, port = parse_jump(hop)
            resolved = self._resolve(host)
            hop_spec = dataclasses.replace(
                resolved, user=user or resolved.user, port=port or resolved.port, proxy_jump=()
            )
            sock = None
            if previous is not None:
                hop_spec = dataclasses.replace(hop_spec, proxy_command=None)
                sock = previous.direct_tcpip(hop_spec.hostname, hop_spec.port)
            previous = SshConnection(
                hop_spec,
                resolve=self._resolve,
                connect_timeout=self.connect_timeout,
                accept_new_host_key=self.accept_new_host_key,
                interactive=self.interactive,
                sock=sock,
            )
            self._hops.append(previous)
        assert previous is not None
        return previous.direct_tcpip(self.spec.hostname, self.spec.port)

    def direct_tcpip(self, host: str, port: int) -> Any:
        import paramiko

        try:
            return self.transport.open_channel(
                "direct-tcpip", (host, port), ("127.0.0.1", 0), timeout=self.connect_timeout
            )
        except (paramiko.SSHException, OSError) as exc:
            raise UnavailableError(
                f"jump host {self.spec.alias} cannot reach {host} port {port}: {exc}"
            ) from exc

    def _handshake(self, sock: Any) -> paramiko.Transport:
        import paramiko

        spec = self.spec
        host_keys = self._load_host_keys()
        known: dict[str, Any] = dict(host_keys.lookup(spec.known_hosts_name) or {})
        transport = paramiko.Transport(
            sock, default_window_size=WINDOW_SIZE, default_max_packet_size=MAX_PACKET_SIZE
        )
        _tune(transport, set(known.keys()))
        try:
            transport.start_client(timeout=self.connect_timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            transport.close()
            raise UnavailableError(
                f"SSH handshake with {spec.hostname} port {spec.port} failed:"
                f" {exc or type(exc).__name__}"
            ) from exc
        try:
            self._verify_host_key(transport.get_remote_server_key(), host_keys)
            self._authenticate(transport)
        except BaseException:
            transport.close()
            raise
        if spec.server_alive_interval > 0:
            transport.set_keepalive(spec.server_alive_interval)
        return transport

    # --- host keys --------------------------------------------------------------------

    def _load_host_keys(self) -> paramiko.HostKeys:
        import paramiko

        keys = paramiko.HostKeys()
        for path in self.spec.known_hosts_files:
            if path.is_file():
                try:
                    keys.load(str(path))
                except (OSError, paramiko.SSHException) as exc:
                    log.warning("cannot read known_hosts file %s: %s", path, exc)
        return keys

    def _verify_host_key(self, key: paramiko.PKey, host_keys: paramiko.HostKeys) -> None:
        spec = self.spec
        name = spec.known_hosts_name
        self.host_key_fingerprint = f"{key.get_name()} {fingerprint(key)}"
        known: dict[str, Any] = dict(host_keys.lookup(name) or {})
        pinned = known.get(key.get_name())
        if pinned is not None and pinned == key:
            self.host_key_status = "pinned"
            return
        files = ", ".join(str(p) for p in spec.known_hosts_files)
        if pinned is not None:
            holder = self._file_pinning(name) or spec.known_hosts_files[0]
            raise AuthError(
                f"the host key of {name} has CHANGED: it now presents {self.host_key_fingerprint},"
                f" which does not match {holder}; refusing to connect (possible"
                " man-in-the-middle attack)",
                hint="if the host was really re-installed, confirm the new fingerprint with its"
                f" admin, remove the old line with `ssh-keygen -R {shlex.quote(name)}"
                f" -f {shlex.quote(str(holder))}` and run again with --accept-new-host-key",
            )
        if not self.accept_new_host_key:
            raise AuthError(
                f"the host key of {name} is unknown ({self.host_key_fingerprint}); not in {files}",
                hint="confirm the fingerprint with the host's admin, then run again with"
                f" --accept-new-host-key to record it in {spec.known_hosts_files[0]}",
            )
        self._record_host_key(name, key)
        self.host_key_status = "recorded now"

    def _file_pinning(self, name: str) -> Optional[Path]:
        """The first known_hosts file that holds a key for `name`."""
        import paramiko

        for path in self.spec.known_hosts_files:
            if not path.is_file():
                continue
            keys = paramiko.HostKeys()
            with contextlib.suppress(OSError, paramiko.SSHException):
                keys.load(str(path))
            if keys.lookup(name):
                return path
        return None

    def _record_host_key(self, name: str, key: paramiko.PKey) -> None:
        path = self.spec.known_hosts_files[0]
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        line = f"{name} {key.get_name()} {key.get_base64()}\n"
        with open(path, "a", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(line)
        log.warning(
            "recorded the new host key of %s (%s) in %s", name, self.host_key_fingerprint, path
        )

    # --- authentication ---------------------------------------------------------------

    def _authenticate(self, transport: paramiko.Transport) -> None:
        import paramiko

        user = self.spec.user
        tried: list[str] = []
        for label, key in self._candidate_keys(tried):
            try:
                transport.auth_publickey(user, key)
            except paramiko.BadAuthenticationType as exc:
                raise AuthError(
                    f"{self.spec.hostname} does not accept public keys for {user}"
                    f" (it allows: {', '.join(exc.allowed_types)})"
                ) from exc
            except paramiko.AuthenticationException:
                tried.append(f"{label} (refused)")
                continue
            except (paramiko.SSHException, OSError, EOFError) as exc:
                raise UnavailableError(f"connection lost during authentication: {exc}") from exc
            if transport.is_authenticated():
                log.debug("authenticated as %s with %s", user, label)
                return
        if self.missing_identities:
            named = ", ".join(str(p) for p in self.missing_identities)
            raise ConfigError(
                f"authentication as {user} on {self.spec.hostname} failed: the identity file"
                f" {named} (from {self.spec.source}) does not exist"
                + (f"; also tried: {'; '.join(tried)}" if tried else ""),
                hint="correct IdentityFile / identity_file, or load the key into ssh-agent",
            )
        raise AuthError(
            f"authentication as {user} on {self.spec.hostname} failed; tried: "
            + ("; ".join(tried) or "no keys (no agent, no identity file found)"),
            hint="check IdentityFile and the remote authorized_keys; load passphrase-protected"
            " keys into ssh-agent",
        )

    def _candidate_keys(self, tried: list[str]) -> Iterator[tuple[str, paramiko.PKey]]:
        import paramiko

        if os.environ.get("SSH_AUTH_SOCK"):
            try:
                agent_keys = paramiko.Agent().get_keys()
            except paramiko.SSHException as exc:
                log.warning("cannot use ssh-agent: %s", exc)
                agent_keys = ()
            for key in agent_keys:
                yield f"agent key {fingerprint(key)}", key
        defaults = {Path.home() / ".ssh" / name for name in DEFAULT_IDENTITIES}
        for path in self.spec.identity_files:
            if not path.is_file():
                if path not in defaults:
                    self.missing_identities.append(path)
                continue
            _refuse_unprotected(path)
            file_key = self._load_key(path, tried)
            if file_key is not None:
                yield f"key file {path}", file_key

    def _load_key(self, path: Path, tried: list[str]) -> Optional[paramiko.PKey]:
        import paramiko

        try:
            return paramiko.PKey.from_path(str(path))
        # cryptography reports an encrypted OpenSSH-format key as a TypeError
        except (paramiko.PasswordRequiredException, TypeError):
            if not self.interactive:
                tried.append(f"{path} (needs a passphrase; not asking without a terminal)")
                return None
        except (paramiko.SSHException, OSError, ValueError) as exc:
            tried.append(f"{path} (unreadable: {exc})")
            return None
        passphrase = getpass.getpass(f"Passphrase for {path}: ")
        try:
            return paramiko.PKey.from_path(str(path), password=passphrase)
        except (paramiko.SSHException, ValueError, TypeError) as exc:
            tried.append(f"{path} (wrong passphrase: {exc})")
            return None

    # --- channels ---------------------------------------------------------------------

    def _open(self, command: str) -> paramiko.Channel:
        import paramiko

        try:
            channel = self.transport.open_session(timeout=self.connect_timeout)
            channel.exec_command(protocol.versioned(command))
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ConnectionLost(f"connection to {self.spec.alias} lost: {exc}") from exc
        return channel

    def _wait(self, channel: paramiko.Channel, seconds: Optional[float] = None) -> None:
        """Wait for something to read on `channel`; a link silent for the keepalive interval
        must answer a probe."""
        interval = self.spec.server_alive_interval or 30
        if not select.select([channel], [], [], min(interval, seconds or interval))[0]:
            self._probe(self._probe_timeout())

    def _probe_timeout(self) -> float:
        return (self.spec.server_alive_interval or 30) * max(1, self.spec.server_alive_count_max)

    def _finish(
        self,
        channel: paramiko.Channel,
        stdout: bytes = b"",
        stderr: Optional[_Tail] = None,
        timeout: Optional[float] = None,
    ) -> ExecResult:
        """Read the rest of stdout (at most MAX_REPLY bytes) and stderr (its tail kept) to
        their end, both as they come; then the exit status."""
        out, err = bytearray(stdout), stderr or _Tail()
        self._drain(channel, out, err, timeout)
        while channel.recv_stderr_ready():
            err.add(channel.recv_stderr(CHUNK))
        return ExecResult(self._exit_status(channel), bytes(out), err.value())

    def _drain(
        self, channel: paramiko.Channel, out: bytearray, err: _Tail, timeout: Optional[float]
    ) -> None:
        """Read stdout into `out` and stderr into `err` until the remote side ends them."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not (channel.eof_received or channel.closed) or channel.recv_ready():
            if channel.recv_stderr_ready():
                err.add(channel.recv_stderr(CHUNK))
            elif channel.recv_ready():
                out += channel.recv(CHUNK)
                if len(out) > MAX_REPLY:
                    channel.close()
                    raise TransferError(
                        f"{self.spec.alias} sent more than {MAX_REPLY} bytes where a short"
                        " reply was expected; refusing the rest"
                    )
            elif deadline is not None and time.monotonic() > deadline:
                channel.close()
                raise ConnectionLost(f"no reply from {self.spec.alias} within {timeout:g} s")
            else:
                self._wait(channel, None if deadline is None else deadline - time.monotonic())

    def _exit_status(self, channel: paramiko.Channel) -> int:
        """The status the remote side sent, probing a silent link while it is awaited."""
        while not channel.status_event.wait(self.spec.server_alive_interval or 30):
            self._probe(self._probe_timeout())
        status = channel.recv_exit_status()
        channel.close()
        if status == -1:
            raise ConnectionLost(f"connection to {self.spec.alias} lost before the command ended")
        return status

    def execute(self, command: str, *, timeout: float = 120.0) -> ExecResult:
        channel = self._open(command)
        channel.shutdown_write()
        return self._finish(channel, timeout=timeout)

    def upload(
        self, command: str, blocks: Iterable[bytes], advance: Callable[[int], None]
    ) -> ExecResult:
        """Send `blocks` as the command's stdin, then wait for it to end."""
        channel = self._open(command)
        try:
            for block in blocks:
                # sendall slices off each packet it sends: a view makes that free of copies
                # (paramiko passes any buffer through; its type stubs say bytes only)
                channel.sendall(memoryview(block))  # type: ignore[arg-type]
                advance(len(block))
            channel.shutdown_write()
        except (OSError, EOFError) as exc:
            raise ConnectionLost(
                f"connection to {self.spec.alias} lost during upload: {exc}"
            ) from exc
        return self._finish(channel)

    def fetch(
        self, command: str, unpack: Callable[[BinaryIO], bool], opened: object = None
    ) -> ExecResult:
        """Hand the command's stdout to `unpack`; its answer (remove or keep) goes back on stdin.

        `opened` is a start request paused after its exit status (`ExecResult.pending` of
        `watch`): the fetch it ends with begins on the line `fetch`. If it has ended instead,
        `command` is sent afresh.
        """
        import paramiko

        if isinstance(opened, paramiko.Channel) and opened.exit_status_ready():
            opened.close()
        elif isinstance(opened, paramiko.Channel):
            channel = opened
            try:
                channel.sendall(b"fetch\n")
            except (OSError, EOFError) as exc:
                if not self.transport.is_active():
                    raise ConnectionLost(f"connection to {self.spec.alias} lost: {exc}") from exc
                channel.close()  # it ended just now: as above
            else:
                return self._fetch_on(channel, unpack)
        return self._fetch_on(self._open(command), unpack)

    def _fetch_on(
        self, channel: paramiko.Channel, unpack: Callable[[BinaryIO], bool]
    ) -> ExecResult:
        reader = _ChannelReader(channel, self._wait)
        try:
            remove = unpack(reader)  # type: ignore[arg-type]
        except Exception as exc:
            channel.close()
            if not self.transport.is_active():
                raise ConnectionLost(f"connection to {self.spec.alias} lost: {exc}") from exc
            raise
        with contextlib.suppress(OSError, EOFError):
            channel.sendall(b"remove\n" if remove else b"keep\n")
            channel.shutdown_write()
        return self._finish(channel, stderr=reader.stderr)

    def watch(
        self,
        command: str,
        on_output: Callable[[bytes], None],
        blocks: Iterable[bytes] = (),
        on_sent: Callable[[], None] = lambda: None,
        on_stdout: Callable[[bytes], None] = lambda chunk: None,
        end_mark: str = protocol.END_MARK,
    ) -> ExecResult:
        """Run `command` with `blocks` as its stdin (`on_sent` is called once they are all
        sent), passing its stderr to `on_output` and its stdout up to `end_mark` to
        `on_stdout` as they come, until it ends or has printed a line after the mark: then
        it is returned `pending`, still open. Probes a silent link."""
        channel = self._open(command)
        try:
            # stdin stays open: the request reads its next step there later
            for block in blocks:
                channel.sendall(memoryview(block))  # type: ignore[arg-type]
        except (OSError, EOFError) as exc:
            # The remote side may have stopped reading (a refused or failed request): its exit
            # status tells why. Only a dead connection is a loss.
            if not self.transport.is_active():
                raise ConnectionLost(
                    f"connection to {self.spec.alias} lost during upload: {exc}"
                ) from exc
        on_sent()
        stdout = bytearray()
        last = _Tail(STDERR_TAIL, note=False)  # already shown as it came
        passing = _UntilMark(end_mark.encode(), on_stdout)
        while True:
            if channel.recv_stderr_ready():
                chunk = channel.recv_stderr(CHUNK)
                last.add(chunk)
                on_output(bytes(chunk))
            elif channel.recv_ready():
                chunk = channel.recv(CHUNK)
                stdout += chunk if passing.seen else passing.feed(chunk)
                if b"\n" in stdout:
                    return ExecResult(0, bytes(stdout), last.value(), pending=channel)
                if len(stdout) > MAX_STATUS_LINE:
                    channel.close()
                    raise TransferError(
                        f"{self.spec.alias} sent more than {MAX_STATUS_LINE} bytes without a"
                        " line end where the exit status line was expected; refusing it"
                    )
            elif channel.eof_received or channel.closed:
                break
            else:
                self._wait(channel)
        passing.flush()
        return self._finish(channel, bytes(stdout), stderr=last)

    def _probe(self, timeout: float) -> None:
        """Open and close a channel: the server must answer within `timeout` seconds."""
        import paramiko

        try:
            probe = self.transport.open_session(timeout=timeout)
            probe.close()
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise ConnectionLost(
                f"no answer from {self.spec.alias} for {timeout:.0f} s: {exc}"
            ) from exc

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.transport.close()
        self._close_helpers()

    def _close_helpers(self) -> None:
        for hop in reversed(self._hops):
            hop.close()
        if self._proxy is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proxy.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proxy.wait(timeout=5)


def _refuse_unprotected(path: Path) -> None:
    """Refuse a private key that others may read, as OpenSSH does ("UNPROTECTED PRIVATE KEY
    FILE"): the key may already be copied, and using it silently hides that."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077:
        raise AuthError(
            f"the private key {path} is readable by others (mode {mode:04o});"
            " refusing to use it, as OpenSSH does",
            hint=f"chmod 600 {shlex.quote(str(path))}",
        )


def connect(
    spec: HostSpec,
    *,
    resolve: Callable[[str], HostSpec],
    connect_timeout: float,
    accept_new_host_key: bool = False,
) -> SshConnection:
    return SshConnection(
        spec,
        resolve=resolve,
        connect_timeout=connect_timeout,
        accept_new_host_key=accept_new_host_key,
    )
