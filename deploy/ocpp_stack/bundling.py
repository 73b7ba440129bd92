"""The processor function's code: ``gateway`` + ``iotshared`` and their dependencies.

``pip install --target`` with ``--platform manylinux2014_<arch> --only-binary=:all:`` fetches
wheels built for Lambda's Python 3.11 runtime (Amazon Linux 2, glibc 2.26) whatever machine runs
the synthesis, so it runs locally when this machine's Python has pip and falls back to CDK's
Docker bundling (the same command in Lambda's build image) when it fails.  boto3 and botocore
are left out: Lambda's runtime has them.
"""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsii
from aws_cdk import BundlingOptions, DockerImage, IgnoreMode, ILocalBundling
from aws_cdk import aws_lambda as lambda_

PACKAGES = ("gateway", "iotshared")
# In Lambda's runtime already; installing them would add some 80 MB for nothing.
RUNTIME_PROVIDED = ("boto3", "botocore")
PYTHON_VERSION = "3.11"


def requirements(repo_root: Path) -> list[str]:
    """The project's install_requires (setup.cfg), less what Lambda's runtime provides."""
    config = configparser.ConfigParser()
    config.read(repo_root / "setup.cfg")
    lines = config["options"]["install_requires"].strip().splitlines()
    return [
        line.strip()
        for line in lines
        if line.strip() and not line.strip().lower().startswith(RUNTIME_PROVIDED)
    ]


def pip_arguments(requirements: list[str], target: str, *, arm64: bool) -> list[str]:
    """``pip install`` arguments that put Lambda-compatible wheels of ``requirements`` in ``target``."""
    platform = "manylinux2014_aarch64" if arm64 else "manylinux2014_x86_64"
    return [
        "install",
        "--quiet",
        "--no-cache-dir",
        "--no-compile",
        "--target",
        target,
        "--platform",
        platform,
        "--implementation",
        "cp",
        "--python-version",
        PYTHON_VERSION,
        "--only-binary=:all:",
        *requirements,
    ]


def asset_excludes() -> list[str]:
    """Only the two packages (no bytecode) and setup.cfg go into the asset's source hash."""
    kept = [f"!{name}" for name in (*PACKAGES, "setup.cfg")]
    return ["*", *kept, "**/__pycache__", "**/*.pyc"]


@jsii.implements(ILocalBundling)
class LocalPip:
    """Bundle with this machine's pip; False (so Docker is used) when that fails."""

    def __init__(self, repo_root: Path, *, arm64: bool) -> None:
        self._repo_root = repo_root
        self._arm64 = arm64

    def try_bundle(self, output_dir: str, *args: Any, **options: Any) -> bool:
        command = [
            sys.executable,
            "-m",
            "pip",
            *pip_arguments(requirements(self._repo_root), output_dir, arm64=self._arm64),
        ]
        try:
            subprocess.run(command, check=True, timeout=600)
        except (OSError, subprocess.SubprocessError) as exc:
            print(f"processor bundling: local pip failed ({exc}); trying Docker", file=sys.stderr)
            return False
        for name in PACKAGES:
            shutil.copytree(
                self._repo_root / name,
                Path(output_dir) / name,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
                dirs_exist_ok=True,
            )
        return True


def processor_code(repo_root: Path, *, arm64: bool) -> lambda_.AssetCode:
    reqs = requirements(repo_root)
    docker_command = " && ".join(
        [
            shlex.join(["pip", *pip_arguments(reqs, "/asset-output", arm64=arm64)]),
            *(f"cp -r /asset-input/{name} /asset-output/" for name in PACKAGES),
            "find /asset-output -name __pycache__ -prune -exec rm -rf {} +",
        ]
    )
    image: DockerImage = lambda_.Runtime.PYTHON_3_11.bundling_image
    return lambda_.Code.from_asset(
        str(repo_root),
        exclude=asset_excludes(),
        ignore_mode=IgnoreMode.DOCKER,
        bundling=BundlingOptions(
            image=image,
            command=["bash", "-c", docker_command],
            local=LocalPip(repo_root, arm64=arm64),
        ),
    )
