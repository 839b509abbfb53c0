"""A test SMTP server on aiosmtpd: stores each accepted message as DIR/<n>.eml (with an
X-Envelope-To header line first, then X-TLS: the TLS version or "none", and X-Auth-User: the
authenticated user or "none"), answers 451 to the first --fail-first attempts of each recipient
(appending a line to DIR/<recipient>.451 each time), and 550 to recipients starting with
"bounce".

--tls starttls|implicit (with --cert and --key, PEM files) serves STARTTLS (required before
MAIL) or TLS from the first byte; --user and --password require AUTH (PLAIN/LOGIN) with exactly
that pair, offered only over TLS, and append "ok USER" or "rejected USER" to DIR/auth.log for
each attempt (never the password). Prints READY once listening; runs until killed."""

import argparse
import os
import ssl
import sys
import threading
import time

try:
    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult
except ImportError:
    print("aiosmtpd is missing: python3 -m pip install aiosmtpd", file=sys.stderr)
    sys.exit(3)


class Handler:
    def __init__(self, directory, fail_first):
        self.directory = directory
        self.fail_first = fail_first
        self.failed = {}
        self.count = 0
        self.lock = threading.Lock()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.lower().startswith("bounce"):
            return "550 5.1.1 no such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            key = ",".join(envelope.rcpt_tos)
            if self.failed.get(key, 0) < self.fail_first:
                self.failed[key] = self.failed.get(key, 0) + 1
                with open(os.path.join(self.directory, key + ".451"), "a") as f:
                    f.write("451\n")
                return "451 4.3.0 try again later"
            self.count += 1
            n = self.count
        tmp = os.path.join(self.directory, f".{n}.tmp")
        ssl_object = server.transport.get_extra_info("ssl_object")
        tls = ssl_object.version() if ssl_object is not None else "none"
        user = session.auth_data if session.authenticated else "none"
        with open(tmp, "wb") as f:
            f.write(("X-Envelope-To: " + ",".join(envelope.rcpt_tos) + "\r\n").encode())
            f.write(f"X-TLS: {tls}\r\nX-Auth-User: {user}\r\n".encode())
            f.write(envelope.original_content or envelope.content)
        os.rename(tmp, os.path.join(self.directory, f"{n}.eml"))
        return "250 OK"


class Authenticator:
    """Accepts one user and password; logs each attempt's outcome and user to DIR/auth.log."""

    def __init__(self, directory, user, password):
        self.log = os.path.join(directory, "auth.log")
        self.user = user.encode()
        self.password = password.encode()

    def __call__(self, server, session, envelope, mechanism, auth_data):
        ok = auth_data.login == self.user and auth_data.password == self.password
        user = auth_data.login.decode(errors="replace")
        with open(self.log, "a") as f:
            f.write(("ok " if ok else "rejected ") + user + "\n")
        # handled=False: aiosmtpd answers a failure itself, "535 5.7.8 Authentication
        # credentials invalid" (handled=True would leave the client waiting for an answer).
        return AuthResult(success=ok, handled=False, auth_data=user if ok else None)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--fail-first", type=int, default=0)
    parser.add_argument("--tls", choices=["none", "starttls", "implicit"], default="none")
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--user")
    parser.add_argument("--password")
    args = parser.parse_args()
    options = {}
    if args.tls != "none":
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)
        if args.tls == "starttls":
            options.update(tls_context=context, require_starttls=True)
        else:
            options.update(ssl_context=context)
    if args.user is not None:
        options.update(
            authenticator=Authenticator(args.dir, args.user, args.password),
            auth_required=True,
            # aiosmtpd only knows of TLS it negotiated itself (STARTTLS): on an implicit-TLS
            # port every byte is encrypted already, so AUTH must not wait for a STARTTLS.
            auth_require_tls=args.tls != "implicit",
        )
    controller = Controller(
        Handler(args.dir, args.fail_first), hostname="127.0.0.1", port=args.port, **options
    )
    controller.start()
    print("READY", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
