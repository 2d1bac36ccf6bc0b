# sovereign-tui recipes. `just` itself comes from the dev extra (rust-just), nothing else to install.

set shell := ["bash", "-euo", "pipefail", "-c"]

venv := ".venv"
py := venv / "bin/python"

# List the recipes.
default:
    @just --list

# Create the virtualenv and install the project with its dev tools (idempotent).
install:
    test -x {{py}} || python3 -m venv {{venv}}
    {{py}} -m pip install -q --upgrade pip
    {{py}} -m pip install -q -e '.[dev]'

# The whole test suite.
test *ARGS:
    {{py}} -m pytest {{ARGS}}

# Format, lint, types, import contracts, then the tests: the gate before every commit.
check: fmt-check lint types contracts test

fmt:
    {{py}} -m ruff format .
    {{py}} -m ruff check --fix .

fmt-check:
    {{py}} -m ruff format --check .

lint:
    {{py}} -m ruff check .

types:
    {{py}} -m mypy

contracts:
    {{venv}}/bin/lint-imports

# The console on the embedded lab.
demo *ARGS:
    {{venv}}/bin/sovereign-tui demo {{ARGS}}

# Every benchmark; figures land in bench-results/.
bench: bench-poller bench-lab bench-kube bench-gpu bench-ssh

# 20 SSH console sessions on one daemon against the lab (OpenStack only): the lab's API requests
# per poll cycle with 20 sessions equal those with one, and the daemon stays under 400 MB RSS.
bench-ssh *ARGS:
    {{py}} -m bench.ssh_bench {{ARGS}}

# The GPU collectors at fleet size: nvidia-smi over SSH on 500 hosts of 8 GPUs (connections
# reused) and 2,000 dcgm-exporter endpoints, each lab in a process of its own.
bench-gpu *ARGS:
    {{py}} -m bench.gpu_bench {{ARGS}}

# On a machine with an NVIDIA driver: nvml and nvidia-smi (locally and over SSH) against the real
# GPU, idle and under a CUDA load, compared field by field; figures in bench-results/gpu-real.json.
gpu-real *ARGS:
    {{py}} -m bench.gpu_real {{ARGS}}

# The kubernetes collector against the lab Kubernetes API at 1,000 nodes and 30,000 pods:
# the first list, then its CPU while watching 100 pod changes a second.
bench-kube *ARGS:
    {{py}} -m bench.kube_bench {{ARGS}}

# The embedded lab at 1,000 hosts and 10,000 servers polled end to end, and the tables' update.
bench-lab *ARGS:
    {{py}} -m bench.lab_bench {{ARGS}}

# The poller against N loopback endpoints, compared with a 32-thread requests pool.
bench-poller *ARGS:
    {{py}} -m bench.poller_bench {{ARGS}}

# Regenerate the checked-in export JSON Schema from the model (review the diff).
schema:
    {{venv}}/bin/sovereign-tui export --schema > sovereign_tui/schema/export.schema.json

# The appliance ISO: the wheelhouse (no root), then the image (root).
iso:
    appliance/iso/wheelhouse.sh
    if [ "$(id -u)" = 0 ]; then appliance/iso/build.sh; else sudo appliance/iso/build.sh; fi

# Boot the ISO under qemu (BIOS, then UEFI) and check it over SSH; not part of `just test`.
iso-test *ARGS:
    {{py}} appliance/iso/smoke_test.py {{ARGS}}
