"""KL coefficient β: fixed, or adaptive (Ziegler et al. 2019, "Fine-Tuning Language Models from Human
Preferences", §2.2): β moves toward the value that keeps the per-sequence KL near a target.

    e = clip(KL / target − 1, −0.2, 0.2);   β ← β · (1 + e · n / horizon)     (n = samples in the batch)

Both controllers have ``state_dict``/``load_state_dict`` so a resumed run continues with the same β.
"""

from __future__ import annotations


class FixedKLController:
    def __init__(self, value: float):
        self.value = float(value)

    def update(self, kl: float, n_samples: int) -> None:
        pass

    def state_dict(self) -> dict:
        return {"value": self.value}

    def load_state_dict(self, state: dict) -> None:
        self.value = float(state["value"])


class AdaptiveKLController(FixedKLController):
    def __init__(self, value: float, target: float, horizon: int):
        super().__init__(value)
        self.target, self.horizon = float(target), int(horizon)

    def update(self, kl: float, n_samples: int) -> None:
        error = min(max(kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_samples / self.horizon
