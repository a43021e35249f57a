"""Build the fraud-bento container image: `bentoml build` of the pinned model, then
`bentoml containerize` with whichever backend runs on this machine. Prints the image tag last.

    python ops/container/image.py build [--tag fraud-bento:VERSION] [--state DIR]
    python ops/container/image.py podman run --rm -p 3000:3000 -p 3001:3001 IMAGE

The `podman` form runs podman with the same configuration (the image lives in its storage).

Backends, in order: docker (where an engine answers `docker info`), then buildah/podman without
any daemon. For buildah/podman the script writes its own containers.conf and storage.conf under
--state: the runc runtime (crun refuses hybrid cgroups), cgroupfs, file events, ulimits no higher
than the caller's hard limits, overlay storage in the state folder. When the default base image
(python:3.11-slim) cannot be pulled (no registry access), it builds a local stand-in once with
debootstrap (Debian bookworm: python3 3.11, pip, CA certificates, and this machine's extra CAs
so the image's pip can reach the index through an intercepting proxy) and builds on that.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_BASE = "docker.io/library/python:3.11-slim"
LOCAL_BASE = "localhost/fraud-bento-base:bookworm-py3.11"
DEBIAN_SUITE = "bookworm"  # its python3 is 3.11, the version the Bento is built with
EXTRA_CAS = Path("/usr/local/share/ca-certificates")
BIN = Path(sys.executable).parent


class ContainerError(RuntimeError):
    pass


def _run(command: list[str], env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, env=env, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise ContainerError(
            f"{' '.join(command[:4])} failed ({result.returncode}):\n{result.stderr[-4000:]}"
            f"{result.stdout[-2000:]}"
        )
    return result


def _ok(command: list[str], env: dict | None = None, timeout: float = 60) -> bool:
    try:
        return (
            subprocess.run(command, env=env, capture_output=True, timeout=timeout).returncode == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def podman_env(state: Path) -> dict[str, str]:
    """Environment for podman/buildah with this project's own configuration under `state`."""
    config = state / "config"
    for folder in (config, state / "tmp", state / "run"):
        folder.mkdir(parents=True, exist_ok=True)
    (config / "storage.conf").write_text(
        f'[storage]\ndriver = "overlay"\nrunroot = "{state}/run"\ngraphroot = "{state}/storage"\n'
    )
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    nproc = 32768 if nproc == resource.RLIM_INFINITY else min(nproc, 32768)
    (config / "containers.conf").write_text(
        "[containers]\n"
        f'default_ulimits = ["nofile={nofile}:{nofile}", "nproc={nproc}:{nproc}"]\n'
        "[engine]\n"
        'runtime = "runc"\n'
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "file"\n'
        f'events_logfile_path = "{state}/run/events.log"\n'
    )
    return {
        **os.environ,
        # every step's layer is kept and reused while its inputs are the same: the Bento's
        # requirements are the lock's export, so the packages' layer is rebuilt only with the lock
        "BUILDAH_LAYERS": "true",
        "CONTAINERS_CONF": str(config / "containers.conf"),
        "CONTAINERS_STORAGE_CONF": str(config / "storage.conf"),
        "TMPDIR": str(state / "tmp"),
    }


def choose_backend() -> str:
    if shutil.which("docker") and _ok(["docker", "info"], timeout=20):
        return "docker"
    if shutil.which("buildah") and shutil.which("podman"):
        return "buildah"
    raise ContainerError(
        "no container backend: install Docker, or buildah and podman "
        "(apt-get install buildah podman runc fuse-overlayfs slirp4netns uidmap debootstrap; "
        "`make container-deps` does it)"
    )


def local_base_image(state: Path, env: dict[str, str]) -> str:
    """A Debian base image with Python 3.11 and pip, built once with debootstrap."""
    if _ok(["podman", "image", "exists", LOCAL_BASE], env=env):
        return LOCAL_BASE
    if sys.version_info[:2] != (3, 11):
        raise ContainerError("the local base image has Python 3.11: build with Python 3.11")
    rootfs = state / "rootfs"
    shutil.rmtree(rootfs, ignore_errors=True)
    print(f"building {LOCAL_BASE} with debootstrap (about a minute)", file=sys.stderr)
    _run(
        [
            "debootstrap",
            "--variant=minbase",
            "--include=python3,python3-pip,python3-venv,ca-certificates",
            DEBIAN_SUITE,
            str(rootfs),
        ],
        timeout=900,
    )
    for cached in (rootfs / "var/cache/apt/archives").glob("*.deb"):
        cached.unlink()
    extra = sorted(EXTRA_CAS.glob("*.crt")) if EXTRA_CAS.is_dir() else []
    for certificate in extra:
        shutil.copy(certificate, rootfs / "usr/local/share/ca-certificates" / certificate.name)
    if extra:
        _run(["chroot", str(rootfs), "update-ca-certificates"])
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    changes = [
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV PIP_BREAK_SYSTEM_PACKAGES=1",
        "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
        "ENV UV_NATIVE_TLS=1",
    ]
    command = ["podman", "import"]
    for change in changes:
        command += ["--change", change]
    imported = subprocess.run(
        [*command, "-", LOCAL_BASE], stdin=tar.stdout, env=env, capture_output=True, text=True
    )
    tar.wait()
    if imported.returncode != 0:
        raise ContainerError(f"podman import failed:\n{imported.stderr[-3000:]}")
    shutil.rmtree(rootfs, ignore_errors=True)
    return LOCAL_BASE


def base_image(backend: str, state: Path, env: dict[str, str]) -> str | None:
    """None: the Bento's default base image is reachable; else the local stand-in's name."""
    pull = ["docker", "pull", DEFAULT_BASE] if backend == "docker" else None
    pull = pull or ["podman", "pull", "--quiet", DEFAULT_BASE]
    if _ok(pull, env=env, timeout=120):
        return None
    if backend == "docker":
        raise ContainerError(f"cannot pull {DEFAULT_BASE} with docker")
    return local_base_image(state, env)


def build_bento(base: str | None, env: dict[str, str]) -> str:
    """`bentoml build` of the pinned model; with `base`, on that base image instead."""
    bentofile = yaml.safe_load((REPO_ROOT / "bentofile.yaml").read_text())
    if base is not None:
        bentofile.setdefault("docker", {})["base_image"] = base
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", dir=REPO_ROOT, delete=False) as file:
        yaml.safe_dump(bentofile, file)
    try:
        output = _run(
            [str(BIN / "bentoml"), "build", "-f", file.name, str(REPO_ROOT), "--output", "tag"],
            env={**env, "PATH": f"{BIN}:{env['PATH']}"},
            cwd=REPO_ROOT,
            timeout=600,
        ).stdout
    finally:
        os.unlink(file.name)
    return output.strip().splitlines()[-1].removeprefix("__tag__:")


def containerize(bento: str, image: str, backend: str, env: dict[str, str]) -> None:
    # BentoML refuses a Dockerfile template outside its working directory, and it copies the
    # Bento into a temporary folder: run it from there.
    scratch = Path(env.get("TMPDIR") or tempfile.gettempdir())
    _run(
        [str(BIN / "bentoml"), "containerize", bento, "--backend", backend, "-t", image],
        env={**env, "PATH": f"{BIN}:{env['PATH']}", "TMPDIR": str(scratch)},
        cwd=scratch,
        timeout=1800,
    )


def build(tag: str | None, state: Path) -> str:
    backend = choose_backend()
    env = dict(os.environ) if backend == "docker" else podman_env(state)
    base = base_image(backend, state, env)
    bento = build_bento(base, env)
    image = tag or f"fraud-bento:{bento.split(':')[1]}"
    print(f"containerizing {bento} with {backend} as {image}", file=sys.stderr)
    containerize(bento, image, backend, env)
    return image if backend == "docker" or "/" in image else f"localhost/{image}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state", type=Path, default=REPO_ROOT / "runs" / "container")
    commands = parser.add_subparsers(dest="command", required=True)
    build_command = commands.add_parser("build", help="build the image; prints its tag last")
    build_command.add_argument("--tag", help="name:tag (default fraud-bento:<bento version>)")
    podman = commands.add_parser("podman", help="podman with this project's configuration")
    podman.add_argument("arguments", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    state = args.state.resolve()
    if args.command == "podman":
        os.execvpe("podman", ["podman", *args.arguments], podman_env(state))  # noqa: S606
    try:
        print(build(args.tag, state))
    except ContainerError as error:
        sys.exit(f"image: {error}")


if __name__ == "__main__":
    main()
