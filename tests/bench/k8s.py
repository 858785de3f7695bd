"""What a Kubernetes lab costs: the lab's Pod (deploy/kubernetes/labs/team-a, played by
podman as tests/k8s does) at idle and through the container tests' client session, next to
the same services in the all-in-one container (the CI sidecar's form), same run.

    python -m tests.bench.k8s [--idle SECONDS]      (as root, with podman: setup.sh)

Prints per container and for the Pod: memory now and at peak (the cgroup's), CPU while idle
(the servers alone), what one `protolab check` probe costs and so what the kubelet's probes
add at the manifests' periods, CPU through one client session; then the all-in-one
container's idle memory and CPU, the ratio, and how many labs nodes of a few sizes carry by
the manifests' requests and by what was measured.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from tests.containers import engine, session
from tests.k8s import kube

NODES = [(2, 8), (4, 16), (8, 32)]  # vCPU, GiB
ALLOCATABLE = 0.9  # what the kubelet, the system and the CNI leave of a node, roughly


def probe_periods(played: kube.Played) -> float:
    """Probes per second per container at the manifests' periods (readiness and liveness;
    the startup probe stops once it has passed)."""
    spec = kube.pod_spec(played.documents)["containers"][0]
    return sum(1 / spec[p]["periodSeconds"] for p in ("readinessProbe", "livenessProbe"))


def cpu(played: kube.Played) -> dict[str, float]:
    return {name: sample.cpu_seconds for name, sample in played.stats().items()}


def all_in_one(services: list[str], idle: float) -> tuple[int, float]:
    """The all-in-one container serving `services`: its memory at idle (bytes) and its idle
    CPU (cores)."""
    name = "protolab-k8s-bench-allinone"
    engine.run("podman", "rm", "-f", name, check=False)
    engine.run("podman", "run", "-d", "--name", name, "--sysctl",
               "net.ipv4.ip_unprivileged_port_start=0", "-e",
               f"PROTOLAB_ONLY={','.join(services)}", engine.IMAGE)
    try:
        deadline = time.monotonic() + 120
        while engine.run("podman", "exec", name, "protolab", "check", "--timeout", "5",
                         check=False).returncode != 0:
            if time.monotonic() > deadline:
                raise SystemExit(engine.run("podman", "logs", name).stdout[-2000:])
            time.sleep(1)
        time.sleep(5)  # start-up's last chores
        before = kube.stats(name)[name]
        time.sleep(idle)
        after = kube.stats(name)[name]
        return after.memory_bytes, (after.cpu_seconds - before.cpu_seconds) / idle
    finally:
        engine.run("podman", "rm", "-f", "-t", "2", name, check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=float, default=60, help="seconds of idle measured")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as directory, kube.lab(Path(directory)) as lab:
        played = lab.played
        time.sleep(5)  # start-up's last chores
        before = cpu(played)
        time.sleep(args.idle)
        idle = {n: (c - before[n]) / args.idle for n, c in cpu(played).items()}
        memory_idle = {n: s.memory_bytes for n, s in played.stats().items()}
        before = cpu(played)
        for name in played.names:
            played.probe(name)
        probe = {n: c - before[n] for n, c in cpu(played).items()}
        before = cpu(played)
        started = time.monotonic()
        session.run_all(lab)
        took = time.monotonic() - started
        used = {n: c - before[n] for n, c in cpu(played).items()}
        memory_now = {n: s.memory_bytes for n, s in played.stats().items()}
        peak = {n: played.peak_memory(n) for n in played.names}
        rate = probe_periods(played)
        print(f"lab Pod of {len(played.names)} containers ({' '.join(played.names)}), "
              f"idle {args.idle:.0f} s, session {took:.1f} s:")
        print(f"{'container':<10} {'idle MB':>8} {'after MB':>9} {'peak MB':>8} "
              f"{'idle mCPU':>10} {'probe CPU s':>12} {'session CPU s':>14}")
        for name in played.names:
            print(f"{name:<10} {memory_idle[name] / 1e6:>8.1f} {memory_now[name] / 1e6:>9.1f} "
                  f"{peak[name] / 1e6:>8.1f} {idle[name] * 1000:>10.1f} {probe[name]:>12.2f} "
                  f"{used[name]:>14.2f}")
        total_memory = sum(memory_idle.values())
        total_idle = sum(idle.values())
        probes = sum(probe.values()) * rate
        print(f"{'Pod':<10} {total_memory / 1e6:>8.1f} {sum(memory_now.values()) / 1e6:>9.1f} "
              f"{sum(peak.values()) / 1e6:>8.1f} {total_idle * 1000:>10.1f} "
              f"{sum(probe.values()):>12.2f} {sum(used.values()):>14.2f}")
        print(f"the kubelet's exec probes ({rate:.3f}/s per container): "
              f"{probes * 1000:.0f} mCPU for the Pod, idle with probes "
              f"{(total_idle + probes) * 1000:.0f} mCPU")
        one_memory, one_cpu = all_in_one(lab.services, args.idle)
        print(f"peer, the all-in-one container ({len(lab.services)} services, one process): "
              f"idle {one_memory / 1e6:.1f} MB, {one_cpu * 1000:.1f} mCPU; Pod / all-in-one: "
              f"memory {total_memory / one_memory:.1f}x")
        spec = kube.pod_spec(played.documents)["containers"]
        request_cpu = sum(_millicores(c["resources"]["requests"]["cpu"]) for c in spec)
        request_memory = sum(_mebibytes(c["resources"]["requests"]["memory"]) for c in spec)
        print(f"the manifests request {request_cpu} mCPU and {request_memory} MiB per lab")
        for cores, gib in NODES:
            cpu_room, memory_room = cores * 1000 * ALLOCATABLE, gib * 1024 * ALLOCATABLE
            by_request = min(cpu_room // request_cpu, memory_room // request_memory)
            by_use = min(cpu_room // ((total_idle + probes) * 1000),
                         memory_room // (sum(peak.values()) / 2**20))
            print(f"node of {cores} vCPU, {gib} GiB ({ALLOCATABLE:.0%} allocatable): "
                  f"{by_request:.0f} labs by requests, {by_use:.0f} by measured idle CPU "
                  f"(with probes) and peak memory")


def _millicores(value: str) -> int:
    return int(value[:-1]) if value.endswith("m") else int(float(value) * 1000)


def _mebibytes(value: str) -> int:
    return int(value[:-2]) * (1024 if value.endswith("Gi") else 1)


if __name__ == "__main__":
    main()
