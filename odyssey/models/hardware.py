"""The hardware a job plans for: this machine's, or one written down ("cpu:2,ram:24gb"), and how much of its
memory a job may use. Shared by the planner (:mod:`odyssey.select.planner`), ``odyssey run``'s
pre-check and the align stage's memory check, so all three read a hardware string the same way."""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass

from odyssey.errors import OdysseyError
from odyssey.models.memory import GB, proc_kb_field_gb

USABLE_FRACTION = 0.9  # of RAM/VRAM a job may plan to use; the OS and other processes hold the rest


@dataclass
class Hardware:
    device: str  # cpu | cuda
    cores: int
    memory_gb: float  # RAM for cpu, VRAM for cuda
    gpus: int = 0
    tflops: float | None = None  # declared peak, for hardware other than this machine
    spec: str = "auto"

    @classmethod
    def detect(cls) -> Hardware:
        try:
            import torch

            if torch.cuda.is_available():
                props = torch.cuda.get_device_properties(0)
                return cls("cuda", os.cpu_count() or 1, props.total_memory / GB, torch.cuda.device_count(), spec="auto")
        except ImportError:
            pass
        return cls("cpu", os.cpu_count() or 1, _ram_gb(), spec="auto")

    @classmethod
    def parse(cls, text: str | None) -> Hardware:
        """'auto', 'cpu', 'cuda', or comma-separated key:value pairs, e.g. 'cpu:2,ram:24gb' or 'gpu:1,vram:24gb'."""
        text = (text or "auto").strip().lower()
        if text in {"", "auto"}:
            return cls.detect()
        detected = cls.detect()
        hw = cls("cpu", detected.cores if detected.device == "cpu" else os.cpu_count() or 1, _ram_gb(), spec=text)
        for part in [p.strip() for p in text.split(",") if p.strip()]:
            key, _, value = part.partition(":")
            key = key.strip()
            try:
                if key == "cpu":
                    hw.device = "cpu"
                    hw.cores = int(value) if value else hw.cores
                elif key in {"cuda", "gpu"}:
                    hw.device, hw.gpus = "cuda", int(value) if value else 1
                    if detected.device == "cuda":
                        hw.memory_gb = detected.memory_gb
                elif key in {"ram", "vram", "memory", "mem"}:
                    hw.memory_gb = _size_gb(value)
                elif key == "tflops":
                    hw.tflops = float(value)
                else:
                    raise ValueError(f"unknown key {key!r}")
            except ValueError as exc:
                raise OdysseyError(
                    f"--hardware {text!r}: cannot read {part!r} ({exc})",
                    hint="write e.g. 'cpu:2,ram:24gb' or 'gpu:1,vram:24gb,tflops:312' "
                    "(keys: cpu, gpu, ram, vram, tflops)",
                ) from None
        if hw.memory_gb <= 0:
            raise OdysseyError(f"--hardware {text!r}: memory must be positive", hint="e.g. ram:16gb")
        return hw

    def as_dict(self) -> dict:
        return asdict(self)


def _size_gb(value: str) -> float:
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(tb|gb|g|mb|m|gib|mib)?\s*", value)
    if not match:
        raise ValueError(f"{value!r} is not a size like 24gb or 512mb")
    number, unit = float(match.group(1)), match.group(2) or "gb"
    return number * {"tb": 1024, "gb": 1, "g": 1, "gib": 1, "mb": 1 / 1024, "m": 1 / 1024, "mib": 1 / 1024}[unit]


def _ram_gb() -> float:
    total = proc_kb_field_gb("/proc/meminfo", "MemTotal")
    return 8.0 if total is None else total  # no /proc (macOS, Windows): assume a common laptop
