"""Hatchling hooks: the version from Cargo.toml, and an honest platform tag.

* Version: ``SQLITE_HYBRID_VERSION`` if set, else ``version`` under
  ``[workspace.package]`` in the workspace's Cargo.toml (found beside this
  directory, or named by ``SQLITE_HYBRID_CARGO_TOML``).
* Wheel: refuses to build without ``sqlite_hybrid/libhybrid.so``; marks the
  wheel as platform-specific (``Root-Is-Purelib: false``) and tags it
  ``SQLITE_HYBRID_WHEEL_TAG`` (scripts/packaging/wheel.sh sets
  ``py3-none-manylinux_2_17_x86_64.manylinux2014_x86_64`` after checking the
  library's glibc symbol versions), else ``py3-none-<this platform>``.
"""

from __future__ import annotations

import os
import re
import sysconfig
from pathlib import Path

from hatchling.builders.hooks.plugin.interface import BuildHookInterface
from hatchling.metadata.plugin.interface import MetadataHookInterface


def _workspace_version(cargo_toml: Path) -> str:
    text = cargo_toml.read_text(encoding="utf-8")
    section = re.search(r"^\[workspace\.package\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    if section:
        match = re.search(r'^version\s*=\s*"([^"]+)"', section.group(1), re.M)
        if match:
            return match.group(1)
    raise RuntimeError(f"no version under [workspace.package] in {cargo_toml}")


class VersionHook(MetadataHookInterface):
    def update(self, metadata: dict) -> None:
        version = os.environ.get("SQLITE_HYBRID_VERSION")
        if not version:
            cargo = os.environ.get("SQLITE_HYBRID_CARGO_TOML")
            path = Path(cargo) if cargo else Path(self.root).parent / "Cargo.toml"
            version = _workspace_version(path)
        metadata["version"] = version


class PlatformWheelHook(BuildHookInterface):
    def initialize(self, version: str, build_data: dict) -> None:
        if self.target_name != "wheel":
            return
        library = Path(self.root) / "sqlite_hybrid" / "libhybrid.so"
        if not library.is_file():
            raise RuntimeError(
                f"{library} is missing: build the wheel with scripts/packaging/wheel.sh "
                "(it builds, strips and checks the library, then stages it here)"
            )
        tag = os.environ.get("SQLITE_HYBRID_WHEEL_TAG")
        if not tag:
            platform = sysconfig.get_platform().replace("-", "_").replace(".", "_")
            tag = f"py3-none-{platform}"
        build_data["pure_python"] = False
        build_data["tag"] = tag
