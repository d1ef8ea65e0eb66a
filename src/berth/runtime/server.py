"""The replica process: `python -m berth.runtime`. Process 0 also starts and watches its siblings."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import traceback
from pathlib import Path
from types import FrameType

import uvicorn

from berth.config.schema import RealtimeAPI
from berth.runtime.app import ReplicaApp, ReplicaSettings
from berth.runtime.concurrency import limit_from
from berth.runtime.contract import EXIT_INIT_FAILED, EXIT_SIBLING_DIED, Failure, ReplicaArgs, socket_path, write_failure


class ReplicaServer(uvicorn.Server):
    """uvicorn's server, forwarding the stop signal to sibling processes so they drain too."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.children: list[subprocess.Popen[bytes]] = []
        self.exit_code = 0

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        for child in self.children:
            if child.poll() is None:
                child.send_signal(sig)
        super().handle_exit(sig, frame)

    def fail(self, code: int) -> None:
        """Stop the replica and exit with `code`: the siblings get SIGTERM, but unlike a stop signal
        received, uvicorn must not re-raise it on this process, or it would die of SIGTERM instead."""
        self.exit_code = code
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        self.should_exit = True


def main(argv: list[str] | None = None) -> int:
    args = ReplicaArgs.parse(argv)
    api = RealtimeAPI.model_validate(json.loads(args.spec.read_text()))
    logging.basicConfig(
        level=api.predictor.log_level.upper(), stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s [{args.replica_id}/{args.process_index}] %(message)s",
    )
    settings = ReplicaSettings(api=api, project=args.project, replica_id=args.replica_id,
                               process_index=args.process_index, model_cache=args.model_cache,
                               version=args.version, max_concurrency=limit_from(os.environ))
    sockets: list[socket.socket] | None = None
    listen: dict[str, object] = {}
    if args.port is not None and args.process_index == 0:
        listen = {"host": args.host, "port": args.port}
    else:
        sockets = [bind_private_socket(socket_path(args.socket_dir, args.process_index))]
    holder: list[ReplicaServer] = []
    app = ReplicaApp(settings, on_fatal=lambda exc: _init_failed(args.socket_dir, exc, holder[0],
                                                                 app.init_failure(exc)))
    config = uvicorn.Config(
        app, loop=_loop(), http="httptools", lifespan="on", log_level="warning", access_log=False,
        timeout_keep_alive=3600, **listen,  # type: ignore[arg-type]
    )
    server = ReplicaServer(config)
    holder.append(server)
    if args.process_index == 0 and api.predictor.processes_per_replica > 1:
        _start_siblings(server, args, api.predictor.processes_per_replica)
    server.run(sockets=sockets)
    return server.exit_code


def bind_private_socket(path: Path) -> socket.socket:
    """A unix socket only this user can connect to, never briefly open to others.

    Bound here rather than by uvicorn, which chmods the sockets it binds to 0666. Setting the umask
    is safe here: it is process-wide, but no other thread runs yet.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(str(path))
    except OSError:
        sock.close()
        raise
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    return sock


def _loop() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def _init_failed(socket_dir: Path, exc: BaseException, server: ReplicaServer, message: str) -> None:
    # The control plane reads this to show why the API is in error without parsing logs.
    write_failure(socket_dir, Failure(message, user_traceback(exc)))
    server.fail(EXIT_INIT_FAILED)


def user_traceback(exc: BaseException) -> str:
    """The traceback from the first frame outside berth and the thread pool: the user's code."""
    tb = exc.__traceback__
    while tb is not None and _internal(tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next  # None when nothing of the user's is on the stack: the message says it all
    return "".join(traceback.format_exception(type(exc), exc, tb))


def _internal(filename: str) -> bool:
    berth = str(Path(__file__).resolve().parent.parent)
    return filename.startswith(berth) or "/concurrent/futures/" in filename or "/asyncio/" in filename


def _start_siblings(server: ReplicaServer, args: ReplicaArgs, processes: int) -> None:
    for index in range(1, processes):
        server.children.append(subprocess.Popen(args.for_process(index).command(sys.executable)))
    threading.Thread(target=_watch_siblings, args=(server,), daemon=True).start()


def _watch_siblings(server: ReplicaServer) -> None:
    """A replica is all its processes: when one dies unasked, the whole replica stops and restarts."""
    while not server.should_exit:
        for child in server.children:
            try:
                code = child.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                continue
            if not server.should_exit:
                logging.getLogger("berth.replica").error(
                    "process %s exited with code %s; stopping the replica", child.pid, code)
                # Killed by a signal: exit as a shell reports it (128 + the signal), so the control
                # plane names the signal that killed it, not the SIGTERM that stopped the others.
                server.fail(128 - code if code < 0 else
                            EXIT_INIT_FAILED if code == EXIT_INIT_FAILED else EXIT_SIBLING_DIED)
            return
