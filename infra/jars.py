"""Install step for the Flink Kafka connector jars (Maven is unreachable here).

The jars come from the PyPI wheel ``shigawire-apache-flink-libraries`` (a redistribution of
flink-connector-kafka 4.0.1-2.0 and kafka-clients 3.9.1). Installing that wheel into the
venv would overwrite apache-flink's own ``pyflink/lib``, so we unpack it into a scratch
folder with ``uv pip install --target`` and copy just the two jars, checking their SHA-256.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

WHEEL = "shigawire-apache-flink-libraries==2.0.0.post1"
JARS: dict[str, str] = {
    "flink-connector-kafka.jar": "842885a51c768b2f31c946a2071656c166ee8cc6d3c02fe6c557e134e03bf228",
    "kafka-clients.jar": "7568b998572d256f0b7bc0afdc1b7a2588b8b08415c62ce314c864a6851ae9d9",
}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def jars_present(jars_dir: Path) -> bool:
    return all((jars_dir / n).exists() and _sha256(jars_dir / n) == h for n, h in JARS.items())


def _uv() -> list[str]:
    exe = shutil.which("uv")
    if exe:
        return [exe]
    return [sys.executable, "-m", "uv"]


def ensure_jars(jars_dir: Path) -> list[Path]:
    """Make sure the connector jars are in ``jars_dir``; returns their paths."""
    jars_dir.mkdir(parents=True, exist_ok=True)
    if not jars_present(jars_dir):
        with tempfile.TemporaryDirectory(prefix="candleflow-jars-") as tmp:
            subprocess.run(
                [*_uv(), "pip", "install", "--quiet", "--no-deps", "--target", tmp, WHEEL],
                check=True,
            )
            for name, digest in JARS.items():
                src = Path(tmp) / "pyflink" / "lib" / name
                if _sha256(src) != digest:
                    raise RuntimeError(f"{name}: unexpected SHA-256 {_sha256(src)}")
                shutil.copy2(src, jars_dir / name)
    return [jars_dir / n for n in JARS]


JAVA_SRC = Path(__file__).resolve().parent.parent / "udfs" / "java"
LOOPBACK_SRC = Path(__file__).resolve().parent / "java" / "loopback"
# the one class of LOOPBACK_SRC that is packaged (the rest is a compile-time stand-in)
LOOPBACK_CLASS = "org/apache/beam/sdk/fn/server/ServerFactory$InetSocketAddressServerFactory.class"


def _build_jar(
    jars_dir: Path, stem: str, src: Path, classpath: list[Path], keep: list[str] | None = None
) -> Path:
    """``src``'s Java files compiled (``--release 11``) against ``classpath`` into
    ``<stem>-<source hash>.jar``, once per source version; ``keep``: package only these
    class files (default: all). Needs ``javac`` and ``jar`` (a JDK 11+)."""
    sources = sorted(src.rglob("*.java"))
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:12]
    jar = jars_dir / f"{stem}-{digest}.jar"
    if jar.exists():
        return jar
    javac, jar_tool = shutil.which("javac"), shutil.which("jar")
    if not javac or not jar_tool:
        raise RuntimeError("javac/jar not found: install a JDK 17 (openjdk-17-jdk-headless)")
    jars_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"{stem}-") as tmp:
        subprocess.run(
            [javac, "--release", "11", "-nowarn", "-cp", ":".join(map(str, classpath)), "-d", tmp]
            + [str(p) for p in sources],
            check=True,
        )
        partial = jar.with_suffix(".tmp")
        subprocess.run([jar_tool, "cf", str(partial), "-C", tmp, *(keep or ["."])], check=True)
        partial.replace(jar)
    for old in jars_dir.glob(f"{stem}-*.jar"):
        if old != jar:
            old.unlink()
    return jar


def _pyflink_dir() -> Path:
    import pyflink

    return Path(pyflink.__file__).resolve().parent


def udf_jar(jars_dir: Path) -> Path:
    """The project's Java functions (``udfs/java``, e.g. TRADE_CHECK) compiled against the
    pyflink wheel's own Flink jars into ``candleflow-udfs-<source hash>.jar``."""
    lib = sorted((_pyflink_dir() / "lib").glob("flink-*.jar"))
    return _build_jar(jars_dir, "candleflow-udfs", JAVA_SRC, lib)


def flink_python_jar() -> Path | None:
    """The wheel's flink-python jar (in ``opt/``), if any."""
    found = sorted((_pyflink_dir() / "opt").glob("flink-python-*.jar"))
    return found[-1] if found else None


def loopback_jar(jars_dir: Path) -> Path:
    """``candleflow-loopback-<hash>.jar``: Beam's gRPC server factory, bound to the loopback
    address it announces (``infra/java/loopback``). It must come before the flink-python
    jar on the class path: see :func:`flink_lib_dir` and :func:`pipeline_jars`."""
    fp = flink_python_jar()
    if fp is None:
        raise RuntimeError("the pyflink wheel has no opt/flink-python-*.jar")
    return _build_jar(jars_dir, "candleflow-loopback", LOOPBACK_SRC, [fp], keep=[LOOPBACK_CLASS])


def flink_lib_dir(jars_dir: Path) -> Path:
    """A ``FLINK_LIB_DIR`` for the local MiniCluster JVM: links to the wheel's ``lib/`` jars
    plus :func:`loopback_jar`. PyFlink's gateway puts ``FLINK_LIB_DIR/*.jar`` before the
    flink-python jar, so the fixed class wins there."""
    out = jars_dir / "flink-lib"
    out.mkdir(parents=True, exist_ok=True)
    want = {p.name: p for p in sorted((_pyflink_dir() / "lib").glob("*.jar"))}
    lb = loopback_jar(jars_dir)
    want[lb.name] = lb
    for old in out.iterdir():
        if old.name not in want or old.resolve() != want[old.name].resolve():
            old.unlink()
    for name, target in want.items():
        link = out / name
        if not link.exists():
            link.symlink_to(target.resolve())
    return out


def pipeline_jars(jars_dir: Path) -> str:
    """Value for Flink's ``pipeline.jars`` (``;``-separated file:// URLs): the connectors, our
    Java functions, the loopback fix and then the flink-python jar.

    A standalone cluster started from the pyflink distribution has flink-python in ``opt/``,
    not ``lib/``, so its JobManager cannot load the Python operators
    (ClassNotFoundException: ArrowPythonScalarFunctionOperator) unless the job ships it;
    there the user class loader is child-first, so the loopback jar, listed first, wins. In a
    MiniCluster flink-python is on the JVM's class path already (parent-first; the fix
    comes from :func:`flink_lib_dir` there)."""
    fp = flink_python_jar()
    jars = [*ensure_jars(jars_dir), udf_jar(jars_dir), loopback_jar(jars_dir)]
    jars += [fp] if fp else []
    return ";".join(p.resolve().as_uri() for p in jars)
