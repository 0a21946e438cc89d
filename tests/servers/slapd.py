"""A private OpenLDAP server for the ldap-auth tests (Debian's ``slapd``, a temp directory).

``server()`` starts it once per process: a ``slapd.conf`` (mdb backend, the core,
cosine and inetOrgPerson schemas) in a temporary directory, the directory tree
loaded with ``slapadd`` before start, ``slapd`` in the foreground on a free
127.0.0.1 port with a self-signed certificate for StartTLS, and it is removed at
exit.  The tree holds ``ou=people,dc=kongtx,dc=test`` with the test users of
:data:`USERS`.  When ``slapd`` is not installed (``.ci/install-ldap`` installs it)
the tests that need it are skipped loudly, unless ``KONG_TEST_REQUIRE`` contains
``ldap``, which turns the skip into a failure.
"""

from __future__ import annotations

import atexit
import datetime
import os
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.servers import free_port, port_open, unavailable, wait_until

BASE_DN = "dc=kongtx,dc=test"
PEOPLE_DN = f"ou=people,{BASE_DN}"
ROOT_DN = f"cn=admin,{BASE_DN}"
ROOT_PASSWORD = "admin-secret"
#: uid -> password of the users in ``ou=people``
USERS = {"einstein": "password", "curie": "rad:ium", "tesla": "AC/DC 1890"}
SCHEMA_DIR = "/etc/ldap/schema"
MODULE_DIR = "/usr/lib/ldap"


def find_slapd() -> str | None:
    """Debian's ``/usr/sbin/slapd``, or one on PATH."""
    for candidate in ("/usr/sbin/slapd", shutil.which("slapd")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@dataclass
class SlapdServer:
    """A running slapd: where it listens and what it holds."""

    host: str
    port: int
    root: str
    process: subprocess.Popen[bytes]
    base_dn: str = PEOPLE_DN
    attribute: str = "uid"

    @property
    def url(self) -> str:
        return f"ldap://{self.host}:{self.port}"

    def log(self) -> str:
        try:
            with open(os.path.join(self.root, "slapd.log"), errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def destroy(self) -> None:
        """Stop slapd and remove its directory."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        shutil.rmtree(self.root, ignore_errors=True)


def _certificate(root: str) -> tuple[str, str]:
    """A self-signed RSA certificate for 127.0.0.1/localhost (cert path, key path)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = os.path.join(root, "cert.pem"), os.path.join(root, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
    return cert_path, key_path


def _config(root: str, cert: str, key: str) -> str:
    data = os.path.join(root, "data")
    os.makedirs(data)
    conf = os.path.join(root, "slapd.conf")
    with open(conf, "w") as f:
        f.write(
            f"""include {SCHEMA_DIR}/core.schema
include {SCHEMA_DIR}/cosine.schema
include {SCHEMA_DIR}/inetorgperson.schema
modulepath {MODULE_DIR}
moduleload back_mdb
pidfile {root}/slapd.pid
argsfile {root}/slapd.args
TLSCertificateFile {cert}
TLSCertificateKeyFile {key}
database mdb
maxsize 10485760
suffix "{BASE_DN}"
rootdn "{ROOT_DN}"
rootpw {ROOT_PASSWORD}
directory {data}
access to attrs=userPassword by anonymous auth by self write by * none
access to * by * read
"""
        )
    return conf


def _ldif() -> str:
    entries = [
        f"dn: {BASE_DN}\nobjectClass: dcObject\nobjectClass: organization\ndc: kongtx\no: kongtx",
        f"dn: {PEOPLE_DN}\nobjectClass: organizationalUnit\nou: people",
    ]
    for uid, password in USERS.items():
        entries.append(
            f"dn: uid={uid},{PEOPLE_DN}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid}\n"
            f"sn: {uid}\nuserPassword: {password}"
        )
    return "\n\n".join(entries) + "\n"


def _start() -> SlapdServer:
    slapd = find_slapd()
    if slapd is None:
        unavailable("ldap", "slapd is not installed (run .ci/install-ldap)")
    root = tempfile.mkdtemp(prefix="kongtx-slapd-")
    try:
        cert, key = _certificate(root)
        conf = _config(root, cert, key)
        ldif = os.path.join(root, "init.ldif")
        with open(ldif, "w") as f:
            f.write(_ldif())
        slapadd = os.path.join(os.path.dirname(slapd), "slapadd")
        if not os.access(slapadd, os.X_OK):
            slapadd = shutil.which("slapadd") or "slapadd"
        out = subprocess.run(
            [slapadd, "-f", conf, "-l", ldif], capture_output=True, text=True, timeout=60
        )
        if out.returncode != 0:
            raise RuntimeError(f"slapadd failed: {out.stderr}")
        port = free_port()
        log = open(os.path.join(root, "slapd.log"), "wb")
        process = subprocess.Popen(
            [slapd, "-f", conf, "-h", f"ldap://127.0.0.1:{port}/", "-d", "256"],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        server = SlapdServer("127.0.0.1", port, root, process)
        if not wait_until(
            lambda: port_open("127.0.0.1", port), 30, alive=lambda: process.poll() is None
        ):
            text = server.log()
            server.destroy()
            raise RuntimeError(f"slapd did not start:\n{text}")
        return server
    except BaseException:
        shutil.rmtree(root, ignore_errors=True)
        raise


_lock = threading.Lock()
_server: SlapdServer | None = None
_failure: str | None = None


def server() -> SlapdServer:
    """The session's slapd (started on first use, removed at exit); skips or fails if absent."""
    global _server, _failure
    with _lock:
        if _server is not None and _server.process.poll() is None:
            return _server
        if _failure is not None:
            unavailable("ldap", _failure)
        try:
            _server = _start()
        except (OSError, RuntimeError, subprocess.SubprocessError) as e:
            _failure = str(e)
            unavailable("ldap", _failure)
        atexit.register(_server.destroy)
        return _server
