"""env-check rules, fed with hand-made facts: a healthy GPU node, then one breakage at a time."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from detrdoctor.envcheck import rules
from detrdoctor.envcheck.rules import judge
from detrdoctor.verdict import STATUSES, summarize

FIXTURE = Path(__file__).parents[1] / "fixtures" / "envcheck" / "gpu_node_ok.json"
BASE_FACTS = json.loads(FIXTURE.read_text())["facts"]


@pytest.fixture
def facts() -> dict[str, Any]:
    return copy.deepcopy(BASE_FACTS)


def get(facts: dict[str, Any], check_id: str) -> dict[str, str]:
    matches = [c for c in judge(facts) if c["id"] == check_id]
    assert len(matches) == 1, f"{check_id}: {matches}"
    return matches[0]


def steps(facts: dict[str, Any], probe: str) -> dict[str, Any]:
    return facts["probes"][probe]["steps"]


def set_gpus(facts: dict[str, Any], *gpus: tuple[str, tuple[int, int]]) -> None:
    devices = [{"index": i, "name": n, "capability": list(c)} for i, (n, c) in enumerate(gpus)]
    steps(facts, "nvml")["init"]["devices"] = copy.deepcopy(devices)
    steps(facts, "torch")["cuda"].update(devices=copy.deepcopy(devices), device_count=len(devices))


def no_gpu(facts: dict[str, Any]) -> None:
    steps(facts, "nvml")["init"] = {"ok": False, "error": "NVMLError_LibraryNotFound: NVML Shared Library Not Found"}
    steps(facts, "torch")["cuda"] = {"available": False, "device_count": 0, "devices": [], "bf16": None, "ok": True}
    del steps(facts, "torch")["cuda_kernel"]


# ---------------------------------------------------------------- the healthy node


def test_healthy_gpu_node_passes_every_check(facts):
    checks = judge(facts)
    assert [c for c in checks if c["status"] != "pass"] == []
    assert summarize(checks, strict=True) == {
        "pass": len(checks),
        "warn": 0,
        "fail": 0,
        "skip": 0,
        "total": len(checks),
        "strict": True,
        "ok": True,
        "exit_code": 0,
    }


def test_every_check_has_the_contract_keys_and_string_values(facts):
    for c in judge(facts):
        assert list(c) == ["id", "status", "found", "expected", "fix", "message"]
        assert all(isinstance(v, str) for v in c.values())
        assert c["status"] in STATUSES


def test_empty_or_partial_facts_judge_without_crashing():
    for partial in (
        {"format": 1},
        {"format": 1, "probes": {"torch": {"error": "probe timed out after 180 s", "steps": {}}}},
    ):
        checks = judge(partial)
        assert checks and all(c["status"] in STATUSES for c in checks)


# ---------------------------------------------------------------- versions and pairing


@pytest.mark.parametrize(
    ("torch", "tv"), [("2.14.1", "0.29.1"), ("2.5.1", "0.20.1"), ("2.0.1", "0.15.1"), ("1.13.1", "0.14.1")]
)
def test_release_rule_both_ways(torch, tv):
    assert rules.torchvision_for_torch(torch) == tv
    assert rules.torch_for_torchvision(tv) == torch


def test_version_helpers():
    assert rules.release("2.14.1+cu130") == (2, 14, 1)
    assert rules.release("2.5.0a0+git123") == (2, 5, 0)
    assert rules.meets("0.3.14", ">=0.3.14") and not rules.meets("0.3.9", ">=0.3.14")
    assert rules.meets("13.0", ">=13") and not rules.meets(None, ">=1")
    assert rules.exact_pin("torch (==2.13.0)") == "2.13.0" and rules.exact_pin("torch (>=2.14.0)") is None
    assert rules.cudnn_string(92400) == "9.24.0" and rules.cudnn_string(8902) == "8.9.2"


def test_torch_2_13_with_torchvision_0_29_fails_by_release_rule(facts):
    facts["packages"]["torch"] = "2.13.0"
    steps(facts, "torch")["import"]["version"] = "2.13.0+cu124"
    facts["metadata"]["torchvision_requires_torch"] = "torch (>=2.14.0)"
    c = get(facts, "torchvision.pairs")
    assert c["status"] == "fail"
    assert (
        c["fix"] == "pip install torch==2.13.0 torchvision==0.28.0 --index-url https://download.pytorch.org/whl/cu124"
    )
    assert "pip install torch==2.14.1 torchvision==0.29.1" in c["message"]


def test_torch_2_13_with_torchvision_0_29_fails_by_exact_pin(facts):
    facts["packages"]["torch"] = "2.13.0"
    steps(facts, "torch")["import"]["version"] = "2.13.0"
    c = get(facts, "torchvision.pairs")
    assert c["status"] == "fail"
    assert c["fix"] == "pip install torch==2.13.0 torchvision==0.28.0"
    assert c["expected"].startswith("torch==2.14.1")
    assert "pip install torch==2.14.1 torchvision==0.29.1" in c["message"]


def test_torchvision_missing(facts):
    facts["packages"]["torchvision"] = None
    c = get(facts, "torchvision.pairs")
    assert c["status"] == "fail" and "torchvision==0.29.1" in c["fix"]


def test_torchvision_ops_missing_operator_fails_with_the_pair_fix(facts):
    steps(facts, "torch")["torchvision_ops"] = {
        "ok": False,
        "error": "RuntimeError: operator torchvision::nms does not exist",
    }
    c = get(facts, "torchvision.ops")
    assert c["status"] == "fail"
    assert "don't match this torch" in c["message"]
    assert c["fix"].startswith("pip install torch==2.14.1 torchvision==0.29.1")
    assert get(facts, "torchvision.cuda")["status"] == "skip"


def test_torchvision_cuda_minor_mismatch_warns_major_mismatch_fails(facts):
    steps(facts, "torch")["import"]["cuda"] = "12.4"
    steps(facts, "torch")["torchvision_ops"]["cuda_version"] = 12010
    c = get(facts, "torchvision.cuda")
    assert c["status"] == "warn" and c["fix"].endswith("--index-url https://download.pytorch.org/whl/cu124")
    steps(facts, "torch")["torchvision_ops"]["cuda_version"] = 11080
    assert get(facts, "torchvision.cuda")["status"] == "fail"


def test_torch_not_installed(facts):
    facts["packages"]["torch"] = None
    facts["probes"]["torch"] = {
        "steps": {"import": {"ok": False, "error": "ModuleNotFoundError: No module named 'torch'"}}
    }
    c = get(facts, "torch.version")
    assert c["status"] == "fail" and c["fix"] == "pip install torch==2.14.1 torchvision==0.29.1"
    for dependent in ("torch.build", "torchvision.ops", "cuda.available", "cuda.cudnn"):
        assert get(facts, dependent)["status"] == "skip", dependent


def test_torch_probe_crash_is_reported(facts):
    facts["probes"]["torch"] = {
        "steps": {},
        "error": "probe crashed with signal 11 (SIGSEGV)",
        "stderr": "Segmentation fault",
    }
    c = get(facts, "torch.version")
    assert c["status"] == "fail" and "SIGSEGV" in c["message"]


def test_a_crash_is_blamed_on_the_step_that_started_and_later_steps_skip(facts):
    torch_steps = steps(facts, "torch")
    crashed = {"import": torch_steps["import"], "libs": {"started": True}}
    facts["probes"]["torch"] = {"steps": crashed, "error": "probe crashed with signal 11 (SIGSEGV)"}
    for cid in ("cuda.arch", "torchvision.ops", "torchvision.cuda"):
        assert get(facts, cid)["status"] == "skip", cid
    crashed.update(libs=torch_steps["libs"], torchvision_ops={"started": True})
    c = get(facts, "torchvision.ops")
    assert c["status"] == "fail" and "SIGSEGV" in c["message"]


def test_shadowed_torch_install_warns(facts):
    facts["packages"]["torch"] = "2.13.0"
    c = get(facts, "torch.version")
    assert c["status"] == "warn" and "pip uninstall -y torch" in c["fix"]


def test_python_too_old(facts):
    facts["python"]["version"] = "3.9.18"
    assert get(facts, "python.version")["status"] == "fail"


# ---------------------------------------------------------------- CUDA


def test_cuda_12_4_build_with_driver_470_fails(facts):
    steps(facts, "torch")["import"]["cuda"] = "12.4"
    steps(facts, "nvml")["init"].update(driver_version="470.82.01", cuda_driver_version="11.4")
    c = get(facts, "cuda.driver")
    assert c["status"] == "fail"
    assert c["found"] == "470.82.01 (CUDA ≤ 11.4)" and c["expected"] == "≥ 525 for CUDA 12.4"
    assert "≥ 525" in c["fix"]
    assert "whl/cu118" in c["message"]


@pytest.mark.parametrize(
    ("cuda", "driver", "status"),
    [("11.8", "450.80.02", "pass"), ("12.1", "525.60.13", "pass"), ("13.0", "575.51.03", "fail")],
)
def test_driver_minimums(facts, cuda, driver, status):
    steps(facts, "torch")["import"]["cuda"] = cuda
    steps(facts, "nvml")["init"]["driver_version"] = driver
    assert get(facts, "cuda.driver")["status"] == status


def test_sm_120_gpu_with_sm_90_wheel_fails(facts):
    set_gpus(facts, ("NVIDIA GeForce RTX 5090", (12, 0)))
    steps(facts, "torch")["libs"]["arch_list"] = ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_86", "sm_90"]
    c = get(facts, "cuda.arch")
    assert c["status"] == "fail"
    assert "sm_120" in c["found"] and "sm_120" in c["message"]
    assert c["fix"] == (
        "pip install --force-reinstall torch==2.14.1 torchvision==0.29.1 "
        "--index-url https://download.pytorch.org/whl/cu130"
    )


def test_ptx_only_warns(facts):
    set_gpus(facts, ("NVIDIA GeForce RTX 5090", (12, 0)))
    steps(facts, "torch")["libs"]["arch_list"] = ["sm_80", "sm_90", "compute_90"]
    assert get(facts, "cuda.arch")["status"] == "warn"


@pytest.mark.parametrize(
    ("cap", "arch_list", "verdict"),
    [
        ((8, 6), ["sm_80"], "sass"),  # same major, newer minor: binary compatible
        ((8, 0), ["sm_86"], None),  # older minor can't run newer SASS
        ((9, 0), ["sm_90a"], "sass"),
        ((10, 0), ["sm_90a", "sm_90"], None),
        ((10, 0), ["sm_90", "compute_90"], "ptx"),
    ],
)
def test_arch_support(cap, arch_list, verdict):
    assert rules.arch_support(cap, arch_list) == verdict


def test_no_gpu_skips_cuda_checks_unless_cuda_is_asked_for(facts):
    no_gpu(facts)
    for cid in ("cuda.available", "cuda.driver", "cuda.arch", "cuda.bf16", "cuda.device_order"):
        assert get(facts, cid)["status"] == "skip", cid
    facts["options"]["device"] = "cuda"
    c = get(facts, "cuda.available")
    assert c["status"] == "fail" and "--device cpu" in c["fix"]
    assert get(facts, "cuda.driver")["status"] == "fail"


def test_device_cpu_skips_cuda_checks(facts):
    facts["options"]["device"] = "cpu"
    for cid in ("cuda.available", "cuda.driver", "cuda.arch", "cuda.bf16"):
        assert get(facts, cid)["status"] == "skip", cid


def test_cpu_only_torch_on_a_gpu_machine_fails_with_a_cuda_wheel(facts):
    steps(facts, "torch")["import"].update(cuda=None, version="2.14.1+cpu")
    steps(facts, "torch")["cuda"] = {"available": False, "device_count": 0, "devices": [], "ok": True}
    c = get(facts, "cuda.available")
    assert c["status"] == "fail"
    assert (
        c["fix"]
        == "pip install --force-reinstall torch==2.14.1 torchvision==0.29.1 --index-url https://download.pytorch.org/whl/cu130"
    )


def test_cuda_visible_devices_hiding_every_gpu(facts):
    facts["env"]["CUDA_VISIBLE_DEVICES"] = ""
    steps(facts, "torch")["cuda"] = {"available": False, "device_count": 0, "devices": [], "ok": True}
    c = get(facts, "cuda.available")
    assert c["status"] == "fail" and c["fix"] == "unset CUDA_VISIBLE_DEVICES"


def test_kernel_launch_failure_fails(facts):
    steps(facts, "torch")["cuda_kernel"] = {
        "ok": False,
        "error": "RuntimeError: CUDA error: no kernel image is available for execution on the device",
    }
    c = get(facts, "cuda.available")
    assert c["status"] == "fail" and "--index-url" in c["fix"]


def test_mixed_gpus_without_pci_bus_order_warn(facts):
    set_gpus(facts, ("NVIDIA A100-SXM4-40GB", (8, 0)), ("NVIDIA GeForce RTX 4090", (8, 9)))
    steps(facts, "torch")["cuda"]["devices"].reverse()
    c = get(facts, "cuda.device_order")
    assert c["status"] == "warn" and c["fix"] == "export CUDA_DEVICE_ORDER=PCI_BUS_ID"
    assert "cuda:0 is NVIDIA GeForce RTX 4090" in c["message"]
    facts["env"]["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    assert get(facts, "cuda.device_order")["status"] == "pass"


def test_bf16_needs_ampere(facts):
    set_gpus(facts, ("Tesla T4", (7, 5)))
    c = get(facts, "cuda.bf16")
    assert c["status"] == "warn" and c["fix"] == "--amp fp16"


def test_cudnn_missing_warns(facts):
    steps(facts, "torch")["libs"].update(cudnn_available=False, cudnn_version=None)
    assert get(facts, "cuda.cudnn")["status"] == "warn"


def test_nccl_missing_with_two_gpus_warns(facts):
    steps(facts, "torch")["libs"]["nccl_version"] = None
    assert get(facts, "cuda.nccl")["status"] == "warn"


# ---------------------------------------------------------------- NumPy, pycocotools, scipy


DTYPE_ERROR = (
    "ValueError: numpy.dtype size changed, may indicate binary incompatibility. "
    "Expected 96 from C header, got 88 from PyObject"
)


def test_pycocotools_dtype_size_error_fails_with_fix(facts):
    steps(facts, "numeric")["pycocotools"] = {"ok": False, "error": DTYPE_ERROR}
    del steps(facts, "numeric")["cocoeval"]
    c = get(facts, "pycocotools.cocoeval")
    assert c["status"] == "fail"
    assert "different NumPy" in c["message"]
    assert c["fix"] == 'pip install --force-reinstall --no-cache-dir "pycocotools>=2.0.8"'
    abi = get(facts, "numpy.abi")
    assert abi["status"] == "fail" and abi["found"] == "torch ok, pycocotools rejects" and abi["fix"] == c["fix"]


def test_pycocotools_np_float_fails_with_uninstall(facts):
    steps(facts, "numeric")["cocoeval"] = {
        "ok": False,
        "error": "AttributeError: module 'numpy' has no attribute 'float'.",
    }
    c = get(facts, "pycocotools.cocoeval")
    assert c["status"] == "fail" and c["fix"].startswith("pip uninstall -y pycocotools")


def test_pycocotools_wrong_ap_fails(facts):
    steps(facts, "numeric")["cocoeval"]["ap"] = 0.5
    assert get(facts, "pycocotools.cocoeval")["status"] == "fail"


def test_torch_built_for_numpy_1_fails_numpy_abi(facts):
    steps(facts, "torch")["import"]["warnings"] = ["UserWarning: Failed to initialize NumPy: _ARRAY_API not found"]
    steps(facts, "torch")["numpy"] = {"ok": False, "error": "RuntimeError: Numpy is not available"}
    c = get(facts, "numpy.abi")
    assert c["status"] == "fail" and c["fix"].startswith('pip install "numpy<2"')


def test_numpy_missing_fails(facts):
    facts["packages"]["numpy"] = None
    steps(facts, "numeric")["numpy"] = {"ok": False, "error": "ModuleNotFoundError: No module named 'numpy'"}
    assert get(facts, "numpy.version")["fix"] == "pip install numpy"


def test_scipy_failure(facts):
    steps(facts, "numeric")["scipy"] = {"ok": False, "error": "ImportError: DLL load failed"}
    assert get(facts, "scipy.lsa")["status"] == "fail"
    facts["packages"]["scipy"] = None
    assert get(facts, "scipy.lsa")["fix"] == 'pip install "scipy>=1.10"'


def test_old_typer_fails(facts):
    facts["packages"]["typer"] = "0.9.0"
    c = get(facts, "deps.typer")
    assert c["status"] == "fail" and c["fix"] == 'pip install --upgrade "typer>=0.12"'


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("RuntimeError: operator torchvision::nms does not exist", "torchvision_abi"),
        ("OSError: /x/torchvision/_C.so: undefined symbol: _ZN3c10", "torchvision_abi"),
        (DTYPE_ERROR, "numpy_abi_newer"),
        ("ImportError: numpy.core.multiarray failed to import\n_ARRAY_API not found", "numpy_abi_older"),
        ("AttributeError: module 'numpy' has no attribute 'float'", "numpy_alias"),
        (
            "UserWarning: NVIDIA GeForce RTX 5090 with CUDA capability sm_120 is not compatible with the current "
            "PyTorch installation.",
            "arch",
        ),
        (
            "RuntimeError: The NVIDIA driver on your system is too old (found version 11040). CUDA driver version "
            "is insufficient",
            "driver_old",
        ),
        ("ImportError: libcudnn.so.9: cannot open shared object file: No such file or directory", "cuda_libs"),
        ("ModuleNotFoundError: No module named 'scipy'", "missing"),
    ],
)
def test_known_error_texts(text, key):
    assert rules.classify(text).key == key


# ---------------------------------------------------------------- profiling, NVML, host


def test_both_pynvml_packages_warn_with_uninstall(facts):
    facts["packages"]["pynvml"] = "11.5.3"
    facts["metadata"]["pynvml_ships_module"] = True
    c = get(facts, "nvml.package")
    assert c["status"] == "warn"
    assert c["fix"] == "pip uninstall -y pynvml && pip install --force-reinstall nvidia-ml-py"


def test_pynvml_shim_next_to_nvidia_ml_py_passes(facts):
    facts["packages"]["pynvml"] = "12.0.0"
    facts["metadata"]["pynvml_ships_module"] = False
    assert get(facts, "nvml.package")["status"] == "pass"


def test_only_deprecated_pynvml_warns(facts):
    facts["packages"].update({"pynvml": "11.5.3", "nvidia-ml-py": None})
    assert get(facts, "nvml.package")["status"] == "warn"


def test_py_spy_missing_warns(facts):
    facts["py_spy"] = {"path": None}
    c = get(facts, "profiling.py-spy")
    assert c["status"] == "warn" and c["fix"] == 'pip install "py-spy>=0.3.14"'


def test_ptrace_restricted_in_docker_warns_with_cap_add(facts):
    facts["host"]["cap_sys_ptrace"] = False
    c = get(facts, "profiling.ptrace")
    assert c["status"] == "warn" and "--cap-add SYS_PTRACE" in c["fix"]
    facts["host"]["in_container"] = False
    assert get(facts, "profiling.ptrace")["fix"] == "sudo sysctl kernel.yama.ptrace_scope=0"
    facts["host"]["ptrace_scope"] = 0
    assert get(facts, "profiling.ptrace")["status"] == "pass"


def test_small_shm_warns_with_shm_size(facts):
    facts["host"]["shm"] = {"total_bytes": 64 * 2**20, "free_bytes": 60 * 2**20}
    c = get(facts, "host.shm")
    assert c["status"] == "warn" and c["found"].startswith("64 MiB") and "--shm-size=8g" in c["fix"]
    facts["host"]["shm"] = None
    assert get(facts, "host.shm")["status"] == "skip"


def test_low_open_files_limit_warns(facts):
    facts["host"]["nofile"] = {"soft": 1024, "hard": 1048576}
    c = get(facts, "host.nofile")
    assert c["status"] == "warn" and c["fix"] == "ulimit -n 65536"
    facts["host"]["nofile"] = {"soft": 1024, "hard": 1024}
    assert "--ulimit nofile" in get(facts, "host.nofile")["fix"]


def test_more_workers_than_cpus_warns(facts):
    facts["host"]["cpus"] = {"affinity": 64, "count": 64, "cgroup_quota": 4.0}
    c = get(facts, "host.cpus")
    assert c["status"] == "warn" and c["fix"] == "--num-workers 4"
    facts["options"]["num_workers"] = None  # the trainer's default (2) fits
    assert get(facts, "host.cpus")["status"] == "pass"


def test_cpu_bf16_says_whether_amp_bf16_pays_on_the_cpu(facts):
    facts["options"]["device"] = "cpu"
    facts["host"]["cpus"]["bf16"] = ["avx512_bf16", "amx_bf16"]
    c = get(facts, "host.cpu_bf16")
    assert c["status"] == "pass" and c["found"].startswith("avx512_bf16, amx_bf16") and "pays" in c["found"]
    facts["host"]["cpus"]["bf16"] = []
    c = get(facts, "host.cpu_bf16")
    assert c["status"] == "pass" and "emulated" in c["found"] and "--amp off" in c["message"]
    del facts["host"]["cpus"]["bf16"]  # facts collected by an older version (`--from`)
    assert get(facts, "host.cpu_bf16")["status"] == "skip"


def test_low_disk_warns(facts):
    facts["host"]["disk"]["free_bytes"] = 2**30
    assert get(facts, "host.disk")["status"] == "warn"


# ---------------------------------------------------------------- summary


def test_strict_turns_warnings_into_exit_1(facts):
    facts["host"]["shm"]["total_bytes"] = 64 * 2**20
    checks = judge(facts)
    assert summarize(checks, strict=False)["exit_code"] == 0
    assert summarize(checks, strict=True)["exit_code"] == 1 and not summarize(checks, strict=True)["ok"]


def test_probe_output_parsing():
    from detrdoctor.envcheck.probes import _describe_exit, _parse_steps

    out = (
        '{"step": "import", "started": true}\n{"step": "import", "ok": true}\nnoise\n'
        '{"step": "libs", "started": true}\n'
    )
    assert _parse_steps(out) == {"steps": {"import": {"ok": True}, "libs": {"started": True}}}
    assert _describe_exit(-11) == "probe crashed with signal 11 (SIGSEGV)"
    assert _describe_exit(3) == "probe exited with status 3"
