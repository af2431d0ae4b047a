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


def udf_jar(jars_dir: Path) -> Path:
    """The project's Java functions (``udfs/java``, e.g. TRADE_CHECK) compiled against the
    pyflink wheel's own Flink jars into ``candleflow-udfs-<source hash>.jar``; built once per
    source version (needs ``javac``, a JDK 11+)."""
    sources = sorted(JAVA_SRC.rglob("*.java"))
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:12]
    jar = jars_dir / f"candleflow-udfs-{digest}.jar"
    if jar.exists():
        return jar
    javac, jar_tool = shutil.which("javac"), shutil.which("jar")
    if not javac or not jar_tool:
        raise RuntimeError("javac/jar not found: install a JDK 17 (openjdk-17-jdk-headless)")
    import pyflink

    lib = Path(pyflink.__file__).parent / "lib"
    classpath = ":".join(str(p) for p in sorted(lib.glob("flink-*.jar")))
    jars_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="candleflow-udfs-") as tmp:
        subprocess.run(
            [javac, "--release", "11", "-nowarn", "-cp", classpath, "-d", tmp]
            + [str(p) for p in sources],
            check=True,
        )
        partial = jar.with_suffix(".tmp")
        subprocess.run([jar_tool, "cf", str(partial), "-C", tmp, "."], check=True)
        partial.replace(jar)
    for old in jars_dir.glob("candleflow-udfs-*.jar"):
        if old != jar:
            old.unlink()
    return jar


def pipeline_jars(jars_dir: Path) -> str:
    """Value for Flink's ``pipeline.jars`` (``;``-separated file:// URLs)."""
    jars = [*ensure_jars(jars_dir), udf_jar(jars_dir)]
    return ";".join(p.resolve().as_uri() for p in jars)
