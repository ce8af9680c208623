"""COMODO video-to-IMU distillation: the student matches the teacher's similarity distribution over a queue.

Chen et al. 2025, "COMODO: Cross-Modal Video-to-IMU Distillation for Efficient Egocentric Human
Activity Recognition". Reference code: https://github.com/Breezelled/COMODO, ``comodo/loss.py``
(``COMODOLoss``, ``info_nce``) and ``comodo/train.py`` (queue seeding and size).

The paper's defining idea: instead of pulling each IMU embedding onto its paired video embedding
(InfoNCE), the IMU student is trained to reproduce the frozen video teacher's *distribution of
similarities* to a queue of video embeddings ("instance queue"), so that the student inherits the
teacher's semantic neighbourhood structure, not only the pairing. DESIGN 5.2: keys
K = [FIFO queue of past teacher embeddings; current teacher batch], teacher temperature 0.1,
student temperature 0.05, queue size 16384 (insensitive from 256 to 65536), seeded with held-out
clips' teacher embeddings.

``info_nce_loss`` is the contrastive baseline of the paper's comparison, CLIP-style as in
IMU2CLIP (Moon et al. 2022, "IMU2CLIP: Multimodal Contrastive Learning for IMU Motion Sensors from
Egocentric Videos and Text", arXiv:2210.14395).

Functional core: ``queue_distillation_loss`` and ``info_nce_loss`` are pure; the queue's state
lives in :class:`FeatureQueue`, which the training step updates *after* the loss (the reference
does ``Q = cat(queue, z_v)``, computes the loss, then keeps ``Q[batch:]``).

Differences from the reference, on purpose:
- Inputs are taken as given: the caller L2-normalises both embeddings (the reference normalises
  the student output inside the loss; here the loss is a function of embeddings, not of a model).
- The teacher side (``teacher_emb`` and the queue) is detached explicitly, not only by the
  teacher being frozen, and the loss is computed in at least float32.
- ``info_nce_loss(symmetric=True)`` averages the two directions (CLIP, IMU2CLIP); the reference's
  ``info_nce(symmetric_loss=True)`` sums them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def queue_distillation_loss(
    student_emb: torch.Tensor,
    teacher_emb: torch.Tensor,
    queue: torch.Tensor,
    teacher_temp: float = 0.1,
    student_temp: float = 0.05,
) -> torch.Tensor:
    """Cross-entropy from the teacher's to the student's softmax similarity over the keys.

    K = cat([queue, teacher_emb]) (Q + B keys, all without gradient);
    p[b] = softmax(teacher_emb[b] K^T / teacher_temp) (no gradient);
    loss = -sum_{b,k} p[b, k] * log_softmax(student_emb[b] K^T / student_temp)[k] / B.

    Args:
        student_emb: (B, D) L2-normalised IMU student embeddings (gradient flows through these only).
        teacher_emb: (B, D) L2-normalised teacher (video) embeddings of the same windows, row b
            paired with student row b.
        queue: (Q, D) past teacher embeddings (:meth:`FeatureQueue.tensor`); Q = 0 is allowed
            (the keys are then the current teacher batch only).
        teacher_temp: teacher softmax temperature (0.1 in COMODO).
        student_temp: student softmax temperature (0.05 in COMODO).

    Returns:
        Scalar tensor (dtype at least float32).

    Raises:
        ValueError: on shapes other than the above, an empty batch or D, or a temperature <= 0.
    """
    if student_emb.ndim != 2 or teacher_emb.ndim != 2 or student_emb.shape != teacher_emb.shape:
        raise ValueError(f"student_emb and teacher_emb must both be (B, D) with the same shape; got "
                         f"{tuple(student_emb.shape)} and {tuple(teacher_emb.shape)}")
    batch, dim = student_emb.shape
    if batch == 0 or dim == 0:
        raise ValueError(f"empty batch or embedding: student_emb has shape {tuple(student_emb.shape)}")
    if queue.ndim != 2 or queue.shape[1] != dim:
        raise ValueError(f"queue must be (Q, D={dim}) past teacher embeddings (Q may be 0); got "
                         f"{tuple(queue.shape)}")
    _check_temperature("teacher_temp", teacher_temp)
    _check_temperature("student_temp", student_temp)
    acc = torch.promote_types(torch.promote_types(student_emb.dtype, teacher_emb.dtype), torch.float32)
    with torch.no_grad():
        teacher = teacher_emb.detach().to(acc)
        keys = torch.cat([queue.detach().to(device=teacher.device, dtype=acc), teacher], dim=0)  # (Q + B, D)
        teacher_probs = torch.softmax(teacher @ keys.T / teacher_temp, dim=1)
    student_logp = torch.log_softmax(student_emb.to(acc) @ keys.T / student_temp, dim=1)
    return -(teacher_probs * student_logp).sum() / batch


def info_nce_loss(
    student_emb: torch.Tensor,
    teacher_emb: torch.Tensor,
    temperature: float = 0.07,
    symmetric: bool = True,
) -> torch.Tensor:
    """CLIP-style InfoNCE over the batch: row b's positive is teacher row b, the others are negatives.

    logits[i, j] = student_emb[i] . teacher_emb[j] / temperature;
    student->teacher = mean_i CE(logits[i, :], i); teacher->student = mean_j CE(logits[:, j], j).
    ``symmetric=True`` returns the mean of the two directions (CLIP, IMU2CLIP), ``False`` the first only.
    Gradient flows into both arguments; detach the teacher to keep it frozen.

    Args:
        student_emb: (B, D) L2-normalised IMU embeddings.
        teacher_emb: (B, D) L2-normalised paired teacher (video) embeddings.
        temperature: softmax temperature (> 0); 0.07 is CLIP's initial value.
        symmetric: average both directions.

    Raises:
        ValueError: on mismatched or non-2-D shapes, an empty batch, or a temperature <= 0.
    """
    if student_emb.ndim != 2 or teacher_emb.ndim != 2 or student_emb.shape != teacher_emb.shape:
        raise ValueError(f"student_emb and teacher_emb must both be (B, D) with the same shape; got "
                         f"{tuple(student_emb.shape)} and {tuple(teacher_emb.shape)}")
    if student_emb.shape[0] == 0 or student_emb.shape[1] == 0:
        raise ValueError(f"empty batch or embedding: shape {tuple(student_emb.shape)}")
    _check_temperature("temperature", temperature)
    acc = torch.promote_types(torch.promote_types(student_emb.dtype, teacher_emb.dtype), torch.float32)
    logits = student_emb.to(acc) @ teacher_emb.to(acc).T / temperature  # (B, B)
    targets = torch.arange(logits.shape[0], device=logits.device)
    loss = F.cross_entropy(logits, targets)
    if symmetric:
        loss = 0.5 * (loss + F.cross_entropy(logits.T, targets))
    return loss


class FeatureQueue:
    """FIFO ring buffer of the last ``size`` teacher embeddings (detached), COMODO's instance queue.

    ``seed`` fills it from held-out clips before training (the reference samples ``queue_size``
    clips and keeps them out of the training set); ``enqueue`` pushes each training batch after
    its loss, the oldest rows dropping out once full. ``tensor()`` returns the contents oldest first.
    The buffer lives on the device and dtype of the first embeddings it receives (or ``to``).

    Args:
        size: capacity in embeddings (16384 in COMODO).
        dim: embedding width D.
    """

    def __init__(self, size: int, dim: int):
        if size < 1 or dim < 1:
            raise ValueError(f"FeatureQueue: size and dim must be >= 1; got size={size}, dim={dim}")
        self.size, self.dim = int(size), int(dim)
        self._buffer = torch.zeros(self.size, self.dim)
        self._next = 0  # row the next embedding goes to
        self._count = 0  # rows filled (<= size)

    def __len__(self) -> int:
        return self._count

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> FeatureQueue:
        """Moves the buffer in place; returns self."""
        self._buffer = self._buffer.to(device=device, dtype=dtype)
        return self

    def seed(self, emb: torch.Tensor) -> None:
        """Empties the queue and fills it with ``emb`` (N, D), keeping the last ``size`` rows if N > size."""
        self._check(emb, "seed")
        self._next, self._count = 0, 0
        self.enqueue(emb)

    def enqueue(self, emb: torch.Tensor) -> None:
        """Appends ``emb`` (N, D) in row order; the oldest rows are overwritten once the queue is full."""
        self._check(emb, "enqueue")
        if self._count == 0:
            self._buffer = self._buffer.to(device=emb.device, dtype=emb.dtype)
        emb = emb.detach()[-self.size:].to(device=self._buffer.device, dtype=self._buffer.dtype)
        n = emb.shape[0]
        first = min(n, self.size - self._next)  # rows up to the end of the buffer, then wrap to row 0
        self._buffer[self._next: self._next + first] = emb[:first]
        self._buffer[: n - first] = emb[first:]
        self._next = (self._next + n) % self.size
        self._count = min(self._count + n, self.size)

    def tensor(self) -> torch.Tensor:
        """The (len(self), D) contents, oldest first (a copy: later enqueues do not change it)."""
        if self._count < self.size:
            return self._buffer[: self._count].clone()
        return torch.cat([self._buffer[self._next:], self._buffer[: self._next]], dim=0)

    def state_dict(self) -> dict:
        """Plain tensors and ints (``torch.load(weights_only=True)`` reads it): size, dim, contents oldest first."""
        return {"size": self.size, "dim": self.dim, "embeddings": self.tensor().cpu()}

    def load_state_dict(self, state: dict) -> None:
        """Restores contents saved by :meth:`state_dict`; size and dim must match this queue."""
        if int(state["size"]) != self.size or int(state["dim"]) != self.dim:
            raise ValueError(f"FeatureQueue state is for size={state['size']}, dim={state['dim']}; this queue has "
                             f"size={self.size}, dim={self.dim}")
        emb = state["embeddings"]
        if emb.ndim != 2 or emb.shape[1] != self.dim or emb.shape[0] > self.size:
            raise ValueError(f"FeatureQueue state embeddings must be (<= {self.size}, {self.dim}); "
                             f"got {tuple(emb.shape)}")
        device = self._buffer.device
        self._buffer = torch.zeros(self.size, self.dim, dtype=emb.dtype, device=device)
        self._next, self._count = 0, 0
        if emb.shape[0]:
            self._buffer[: emb.shape[0]] = emb.to(device)
            self._count = emb.shape[0]
            self._next = emb.shape[0] % self.size

    def _check(self, emb: torch.Tensor, what: str) -> None:
        if emb.ndim != 2 or emb.shape[1] != self.dim:
            raise ValueError(f"FeatureQueue.{what}: expected (N, {self.dim}) embeddings, got {tuple(emb.shape)}")


def _check_temperature(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0; got {value}")
