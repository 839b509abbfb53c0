"""Processes of the fault run: a supervisor that restarts whatever exits (as Kubernetes would),
our own broker, our own PostgreSQL and the SMTP sink, each on a free port under the run's
temporary directory. Every child is tracked, so `Harness.close()` stops all of them.
"""

import ctypes
import json
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PR_SET_PDEATHSIG = 1


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port):
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _die_with_parent():
    # A child outlives a SIGKILLed driver otherwise; the kernel sends it SIGKILL instead.
    try:
        ctypes.CDLL("libc.so.6").prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except OSError:
        pass


def http_json(url, method="GET", body=None, timeout=5.0):
    """(status, parsed JSON or None); status 0 when the connection failed."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        try:
            return err.code, json.loads(err.read() or b"null")
        except ValueError:
            return err.code, None
    except (OSError, ValueError):
        return 0, None


class Event:
    """One thing that happened to a process, for the report."""

    def __init__(self, t, name, what):
        self.t, self.name, self.what = t, name, what


class Proc:
    """One supervised process: restarted when it exits unless it was stopped on purpose."""

    def __init__(self, name, argv, env, log_path, cwd=None, restart=True):
        self.name, self.argv, self.env, self.log_path = name, argv, env, log_path
        self.cwd, self.restart = cwd, restart
        self.popen = None
        self.wanted = True  # False once stopped on purpose: no restart
        self.planned_kill = False  # the next exit was ours (kill -9), not a crash
        self.starts = 0

    def start(self):
        log = open(self.log_path, "ab")
        self.popen = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=self.cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # our Ctrl-C is the driver's to handle, not theirs
            preexec_fn=_die_with_parent,
        )
        log.close()
        self.starts += 1

    @property
    def pid(self):
        return self.popen.pid if self.popen else None

    def alive(self):
        return self.popen is not None and self.popen.poll() is None


class Supervisor:
    """Restarts every wanted process that exits, and records each exit with its cause."""

    def __init__(self, t0):
        self.t0 = t0
        self.procs = []
        self.events = []
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def now(self):
        return time.monotonic() - self.t0

    def note(self, name, what):
        with self.lock:
            self.events.append(Event(self.now(), name, what))

    def add(self, proc):
        with self.lock:
            self.procs.append(proc)
        proc.start()

    def begin(self):
        self.thread.start()

    def _run(self):
        while not self.stop.wait(0.2):
            with self.lock:
                procs = list(self.procs)
            for proc in procs:
                if not proc.wanted or proc.popen is None:
                    continue
                code = proc.popen.poll()
                if code is None:
                    continue
                cause = f"signal {-code}" if code < 0 else f"exit {code}"
                if proc.planned_kill:
                    proc.planned_kill = False
                    self.note(proc.name, f"killed ({cause}), restarting")
                else:
                    self.note(proc.name, f"UNPLANNED {cause}, restarting")
                if proc.restart:
                    time.sleep(0.3)
                    proc.start()

    def kill9(self, proc):
        proc.planned_kill = True
        try:
            os.kill(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def terminate(self, proc, timeout=15.0):
        """Stops a process on purpose (SIGTERM, then SIGKILL after timeout); no restart."""
        proc.wanted = False
        if not proc.alive():
            return None
        proc.popen.terminate()
        try:
            return proc.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.popen.kill()
            return proc.popen.wait(5)

    def unplanned(self):
        return [e for e in self.events if e.what.startswith("UNPLANNED")]

    def close(self):
        self.stop.set()
        with self.lock:
            procs = list(self.procs)
        for proc in procs:
            proc.wanted = False
            if proc.alive():
                proc.popen.terminate()
        deadline = time.monotonic() + 10
        for proc in procs:
            if proc.popen is None:
                continue
            try:
                proc.popen.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait(5)


class Broker:
    """Our own tansu (scripts/broker on a private port and state dir): we kill and freeze it."""

    def __init__(self, state, durable):
        self.state, self.durable = state, durable
        self.port = free_port()
        self.env = dict(os.environ, SPINE_BROKER_PORT=str(self.port), SPINE_BROKER_STATE=state)
        self.bootstrap = f"127.0.0.1:{self.port}"

    def _script(self, *args):
        subprocess.run(
            [os.path.join(ROOT, "scripts", "broker"), *args],
            env=self.env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(self.state, "script.log"), "ab"),
        )

    def start(self):
        os.makedirs(self.state, exist_ok=True)
        self._script("start", *(["--durable"] if self.durable else []))

    def pid(self):
        try:
            return int(open(os.path.join(self.state, "pid")).read().strip())
        except (OSError, ValueError):
            return None

    def signal(self, sig):
        pid = self.pid()
        if pid:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass

    def kill9(self):
        pid = self.pid()
        self.signal(signal.SIGKILL)
        for _ in range(100):
            if pid is None or not os.path.exists(f"/proc/{pid}") or _zombie(pid):
                break
            time.sleep(0.05)
        os.remove(os.path.join(self.state, "pid"))

    def health(self):
        """None when the broker runs and its log shows no panic; else what went wrong."""
        pid = self.pid()
        try:
            log = open(os.path.join(self.state, "broker.log"), errors="replace").read()
        except OSError:
            log = ""
        lines = log.splitlines()
        for i, line in enumerate(lines):
            if "panicked at" in line:
                what = lines[i + 1].strip() if i + 1 < len(lines) else ""
                return f"tansu panicked: {what} ({line.split('panicked at')[1].strip()})"
        if pid is None or _zombie(pid):
            return "tansu is not running"
        return None

    def close(self):
        self.signal(signal.SIGCONT)  # a frozen broker does not act on SIGTERM
        try:
            self._script("stop")
        except subprocess.CalledProcessError:
            self.signal(signal.SIGKILL)


def _zombie(pid):
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


class Postgres:
    """Our own PostgreSQL (scripts/postgres on a private port and state dir): we stop it."""

    def __init__(self, state):
        self.state = state
        self.port = free_port()
        self.env = dict(os.environ, SPINE_PG_PORT=str(self.port), SPINE_PG_STATE=state)
        self.url = f"postgres://spine:spine@127.0.0.1:{self.port}"
        self.started = False

    def _script(self, *args):
        subprocess.run(
            [os.path.join(ROOT, "scripts", "postgres"), *args],
            env=self.env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(os.path.dirname(self.state), "postgres-script.log"), "ab"),
        )

    def start(self, fresh=False):
        self._script("start", *(["--fresh"] if fresh else []))
        self.started = True

    def stop(self):
        self._script("stop")

    def create_database(self, name):
        subprocess.run(
            ["psql", "-X", "-q", f"{self.url}/postgres", "-c", f"CREATE DATABASE {name}"],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        return f"{self.url}/{name}"

    def close(self):
        if self.started:
            try:
                self.stop()
            except subprocess.CalledProcessError:
                pass


class Smtp:
    """The SMTP sink as a supervised-by-hand process: stopped and started for the outage."""

    def __init__(self, supervisor, workdir):
        self.supervisor = supervisor
        self.port = free_port()
        self.log = os.path.join(workdir, "smtp.jsonl")
        open(self.log, "a").close()
        self.out = os.path.join(workdir, "smtp.out")
        self.delay_file = os.path.join(workdir, "smtp.delay")
        self.proc = None

    def start(self):
        argv = ["python3", os.path.join(ROOT, "tests", "faults", "smtp_sink.py"),
                "--port", str(self.port), "--log", self.log, "--delay-file", self.delay_file]
        # Not restarted by the supervisor: its outages are ours.
        self.proc = Proc("smtp", argv, dict(os.environ), self.out, restart=False)
        self.supervisor.add(self.proc)
        for _ in range(100):
            if port_open(self.port):
                return
            if not self.proc.alive():
                break
            time.sleep(0.1)
        raise RuntimeError(f"the SMTP sink did not start (see {self.out})")

    def stop(self):
        if self.proc:
            self.supervisor.terminate(self.proc)

    def slow(self, low_ms, high_ms):
        with open(self.delay_file, "w") as f:
            f.write(f"{low_ms} {high_ms}")

    def fast(self):
        if os.path.exists(self.delay_file):
            os.remove(self.delay_file)

    def messages(self):
        out = []
        with open(self.log, encoding="utf-8") as f:
            for line in f:
                if line.endswith("\n"):
                    out.append(json.loads(line))
        return out
