"""Side by side: peers measured in alternating rounds of one run, each keeping its best."""

from __future__ import annotations

from collections.abc import Callable


def best_of_rounds(peers: dict[str, Callable[[], float]], rounds: int, what: str
                   ) -> dict[str, float]:
    """Bytes/s of each peer's best round; rounds alternate so load hits all of them alike."""
    best = {name: 0.0 for name in peers}
    for round_ in range(1, rounds + 1):
        for name, measure in peers.items():
            speed = measure()
            best[name] = max(best[name], speed)
            print(f"round {round_} {name:<8} {speed / 1e6:8.1f} MB/s ({what})")
    return best


def report_ratio(best: dict[str, float], ours: str, peer: str, goal: str) -> None:
    ratio = best[ours] / best[peer]
    print(f"best: {ours} {best[ours] / 1e6:.1f} MB/s, {peer} {best[peer] / 1e6:.1f} MB/s, "
          f"ratio {ratio:.2f}x ({goal})")
