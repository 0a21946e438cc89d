"""docker-entrypoint.sh, run by /bin/sh with a fake ``kong`` on PATH (there is no Docker engine)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile

from twisted.trial.unittest import SynchronousTestCase

ENTRYPOINT = os.path.join(os.path.dirname(__file__), "..", "..", "docker-entrypoint.sh")

#: Reports how it was run: its pid, its arguments and the KONG_* it sees.
FAKE_KONG = """#!/bin/sh
printf '{"pid": %s, "args": "%s", "prefix": "%s", "pg_host": "%s"}\\n' \
    "$$" "$*" "${KONG_PREFIX:-}" "${KONG_PG_HOST:-}"
"""


class EntrypointTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="kongtx-entrypoint-")
        self.addCleanup(shutil.rmtree, self.tmp, True)
        bin_dir = os.path.join(self.tmp, "bin")
        os.mkdir(bin_dir)
        fake = os.path.join(bin_dir, "kong")
        with open(fake, "w") as f:
            f.write(FAKE_KONG)
        os.chmod(fake, 0o755)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("KONG_")}
        self.env["PATH"] = f"{bin_dir}:{self.env.get('PATH', '/usr/bin:/bin')}"
        self.prefix = os.path.join(self.tmp, "prefix")
        self.env["KONG_PREFIX"] = self.prefix

    def run_entrypoint(self, *args: str) -> tuple[int, str]:
        """Run the script; return its own pid and what it printed."""
        process = subprocess.Popen(
            ["/bin/sh", ENTRYPOINT, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self.env,
        )
        out, err = process.communicate(timeout=30)
        self.assertEqual(process.returncode, 0, err)
        return process.pid, out

    def test_kong_command_is_execed(self) -> None:
        """``kong ...`` replaces the shell (same pid), so signals reach the node."""
        pid, out = self.run_entrypoint("kong", "start", "--foreground")
        report = json.loads(out)
        self.assertEqual(report["pid"], pid)
        self.assertEqual(report["args"], "start --foreground")

    def test_flags_go_to_kong(self) -> None:
        """A first argument starting with ``-`` runs ``kong`` with the arguments."""
        _, out = self.run_entrypoint("--vv", "health")
        self.assertEqual(json.loads(out)["args"], "--vv health")

    def test_prefix_prepared_and_stale_pid_removed(self) -> None:
        """The prefix is created and a pid file left by an earlier container is removed."""
        os.makedirs(os.path.join(self.prefix, "pids"))
        stale = os.path.join(self.prefix, "pids", "kong.pid")
        with open(stale, "w") as f:
            f.write("1")
        self.run_entrypoint("kong", "start")
        self.assertFalse(os.path.exists(stale))
        self.assertTrue(os.path.isdir(os.path.join(self.prefix, "logs")))

    def test_default_prefix(self) -> None:
        """Without KONG_PREFIX the kong command sees /usr/local/kong."""
        del self.env["KONG_PREFIX"]
        self.env["HOME"] = self.tmp
        # The default prefix may not be writable here: check the script's choice only.
        with open(ENTRYPOINT) as f:
            script = f.read().replace("mkdir -p", ": mkdir -p").replace("rm -f", ": rm -f")
        patched = os.path.join(self.tmp, "entrypoint.sh")
        with open(patched, "w") as f:
            f.write(script)
        out = subprocess.run(
            ["/bin/sh", patched, "kong", "version"],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=30,
            check=True,
        ).stdout
        self.assertEqual(json.loads(out)["prefix"], "/usr/local/kong")

    def test_kong_variables_pass_through(self) -> None:
        """KONG_* variables reach the command unchanged."""
        self.env["KONG_PG_HOST"] = "db.internal"
        _, out = self.run_entrypoint("kong", "start")
        self.assertEqual(json.loads(out)["pg_host"], "db.internal")

    def test_other_commands_untouched(self) -> None:
        """Any other command runs as given, without preparing a prefix."""
        _, out = self.run_entrypoint("echo", "hello")
        self.assertEqual(out, "hello\n")
        self.assertFalse(os.path.exists(self.prefix))

    def test_posix_syntax(self) -> None:
        """The script parses under a strict POSIX shell (dash) with -n."""
        subprocess.run(["/bin/sh", "-n", ENTRYPOINT], check=True, timeout=30)
        with open(ENTRYPOINT) as f:
            self.assertEqual(f.readline().strip(), "#!/bin/sh")
        self.assertTrue(os.access(ENTRYPOINT, os.X_OK))


class DockerfileTests(SynchronousTestCase):
    """The Dockerfile's contract, read statically (there is no Docker engine to build it)."""

    def setUp(self) -> None:
        self.root = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
        with open(os.path.join(self.root, "Dockerfile")) as f:
            text = f.read().replace("\\\n", " ")
        self.instructions = [
            line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")
        ]

    def values(self, keyword: str) -> list[str]:
        return [i.split(None, 1)[1] for i in self.instructions if i.split()[0] == keyword]

    def test_base_ports_and_command(self) -> None:
        """Two stages on python:3.11-slim (a build stage with the compiler, the image on
        the same interpreter so the venv runs as copied), the five ports, the entrypoint
        and ``kong start --foreground``."""
        self.assertEqual(self.values("FROM"), ["python:3.11-slim AS build", "python:3.11-slim"])
        self.assertEqual(self.values("EXPOSE"), ["8000 8443 8001 7946 7946/udp"])
        self.assertEqual(self.values("ENTRYPOINT"), ['["/docker-entrypoint.sh"]'])
        self.assertEqual(self.values("CMD"), ['["kong", "start", "--foreground"]'])

    def test_copied_sources_exist(self) -> None:
        """Every path the image copies from the repository exists (the build would fail
        otherwise); the venv is copied from the build stage."""
        from_build = []
        for value in self.values("COPY"):
            words = value.split()
            if words[0].startswith("--from="):
                from_build.append(words)
                continue
            for source in words[:-1]:
                self.assertTrue(os.path.exists(os.path.join(self.root, source)), source)
        self.assertEqual(from_build, [["--from=build", "/opt/kongtx/.venv", "/opt/kongtx/.venv"]])

    def test_install_steps_match_make_install(self) -> None:
        """The build stage runs ``make install`` itself (deps, pinned mypy, the compiled
        package) into the venv and checks the whole hot path compiled; the image proves
        the copied install complete: the twisted plugin cache, ``twistd kong``."""
        (build,) = [v for v in self.values("RUN") if "make install" in v]
        self.assertIn("VENV=/opt/kongtx/.venv", build)
        self.assertIn("compiled_modules() == list(HOT_PATH)", build)
        self.assertTrue(any("gcc" in v for v in self.values("RUN")))
        (image,) = [v for v in self.values("RUN") if "getPlugins(IPlugin)" in v]
        self.assertIn("twistd kong --help", image)
        self.assertIn("useradd", image)
