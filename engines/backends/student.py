"""The distilled student on ONNX Runtime: frames plus a prompt-weight vector per frame.

The student's graph (tir.engines.training.models.student, exported by tir.engines.training.distill.export_student)
takes ``input`` float32 N×1×H×W and ``prompt`` float32 N×K (one mixing weight per prompt slot,
the slot names in the model's ``tir.prompts`` metadata) and returns N×1×H×W. Frames are
reflect-padded to the ``tir.multiple`` it states and cropped back, as for every engine.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import numpy as np

from ..bundle import sha256_file
from ..engine import Engine, EngineError, read_multiple

PROMPT_INPUT = "prompt"
#: where ``tir calibrate --bundle B --student --out B/int8`` leaves the CPU INT8 student (``tir build``'s
#: ``--calib`` default too) and its file name there
INT8_DIR, INT8_FILE = "int8", "student.int8-cpu.onnx"


def cpu_int8_student(bundle) -> Path:
    """The bundle's CPU INT8 (U8S8) student, which ``--precision int8`` runs on ONNX Runtime:
    ``<bundle>/int8/student.int8-cpu.onnx``, written by ``tir calibrate --bundle <bundle> --student
    --out <bundle>/int8``, used only when that folder's ``calibration.json`` shows the student's
    ``cpu-u8s8`` gate passed on every prompt slot of the manifest and names the manifest's
    ``student.onnx`` (its sha256, ``student_sha256``) as the fp32 model it was gated against, and
    records this very INT8 file's sha256 (``file_sha256["int8-cpu.onnx"]``): a file replaced or
    edited after the gate passed is refused, as the manifest refuses a changed route.

    Raises:
        EngineError: one line saying which of these is missing or wrong and the command that makes it.
    """
    from tir.edge import jsontext

    calib = Path(bundle.path) / INT8_DIR
    redo = f"run `tir calibrate --bundle {bundle.path} --student --routes student --out {calib}`"
    path, report_path = calib / INT8_FILE, calib / "calibration.json"
    if not path.is_file() or not report_path.is_file():
        raise EngineError(f"--precision int8: bundle {bundle.name!r} has no CPU INT8 student ({path} with its "
                          f"calibration.json); {redo}, or run the fp32 student (no --precision int8)")
    try:
        entry = jsontext.loads(report_path.read_text(encoding="utf-8"))["student"]
        rows = [g for g in entry["gate"] if g["flavour"] == "cpu-u8s8"]
        prompts, sha = list(entry["prompts"]), entry.get("student_sha256")
        int8_sha = (entry.get("file_sha256") or {}).get("int8-cpu.onnx")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise EngineError(f"--precision int8: {report_path} holds no student gate ({type(exc).__name__}: {exc}); "
                          f"{redo}") from None
    expected = list((bundle.student or {}).get("prompts", []))
    if sha != (bundle.student or {}).get("sha256"):
        raise EngineError(f"--precision int8: {report_path} was not made from this bundle's student.onnx "
                          f"(sha256 {sha or 'not recorded'}); {redo}")
    if not int8_sha:
        raise EngineError(f"--precision int8: {report_path} records no sha256 of {path.name} (written before "
                          f"the INT8 file was hashed), so the file the gate passed cannot be told from another; {redo}")
    actual = sha256_file(path)
    if actual != int8_sha:
        raise EngineError(f"--precision int8: {path} is not the file the accuracy gate passed (sha256 {actual[:12]}…, "
                          f"{report_path.name} says {str(int8_sha)[:12]}…): it was changed after calibration; {redo}")
    refused = [g["route"] for g in rows if not g.get("passed")]
    gated = {g["route"].split("/", 1)[-1] for g in rows}
    if prompts != expected or not gated >= set(expected) or refused:
        why = f"refused for {', '.join(refused)}" if refused else f"gated prompts {sorted(gated)}, manifest {expected}"
        raise EngineError(f"--precision int8: the CPU INT8 student in {calib} did not pass the accuracy gate "
                          f"({why}); it stays fp32 (no --precision int8)")
    return path


class StudentEngine(Engine):
    """One student ONNX model in an ``onnxruntime.InferenceSession`` (CPU unless ``providers``).

    ``infer(batch, weights)``: batch N×1×H×W (or H×W, N×H×W) float32; weights a K-vector (used
    for every frame) or N×K. Raises EngineError for a model without the two inputs or weights
    of the wrong length, and for an INT8 student this CPU would run wrongly
    (:func:`~tir.engines.backends.onnxruntime.int8_cpu_problem`).
    """

    backend = "onnxruntime"

    def __init__(self, path, threads: Optional[int] = None, providers=None, name: Optional[str] = None):
        import onnxruntime as ort

        from .onnxruntime import int8_cpu_problem, resolve_providers

        path = Path(path)
        if not path.is_file():
            raise EngineError(f"student model {str(path)!r} does not exist")
        super().__init__(name or path.stem)
        self.path = path
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads is not None:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(path), options, providers=resolve_providers(providers))
        except Exception as exc:  # ORT raises its own exception types for bad files
            raise EngineError(f"ONNX Runtime cannot load {str(path)!r}: {exc}") from exc
        inputs = {i.name: i for i in self.session.get_inputs()}
        if set(inputs) != {"input", PROMPT_INPUT}:
            raise EngineError(f"{path.name}: a student takes inputs 'input' and '{PROMPT_INPUT}', "
                              f"this model takes {sorted(inputs)}; re-export it with `tir distill`")
        self.slots = int(inputs[PROMPT_INPUT].shape[1])
        self.output_name = self.session.get_outputs()[0].name
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.multiple = read_multiple(self.metadata, where=path.name)
        problem = int8_cpu_problem(self.metadata) if self.session.get_providers()[0] == "CPUExecutionProvider" else None
        if problem:
            raise EngineError(f"{path.name}: {problem}")
        self.prompts: List[str] = [p for p in self.metadata.get("tir.prompts", "").split(",") if p]
        self.weights = np.full(self.slots, 1.0 / self.slots, np.float32)
        #: the model takes one frame per run (an INT8 student whose per-prompt output scale is folded
        #: into its quantisation scales, calibration/prompt_scale.py ``fuse_cpu``, or whose FiLM scale is
        #: folded into its convolutions' weight scales, calibration/film_fold.py): batches run frame by frame
        self.one_frame = self.metadata.get("tir.int8.prompt_scale_fused") == "1" or \
            bool(self.metadata.get("tir.int8.film_fold"))

    @property
    def provider(self) -> str:
        """The ONNX Runtime provider that actually runs the student."""
        return self.session.get_providers()[0]

    def _prompt(self, n: int, weights) -> np.ndarray:
        w = np.asarray(self.weights if weights is None else weights, dtype=np.float32)
        if w.ndim == 1:
            w = np.broadcast_to(w, (n, w.shape[0]))
        if w.shape != (n, self.slots):
            raise EngineError(f"{self.name}: prompt weights must be {self.slots} per frame "
                              f"(slots {self.prompts}), got shape {w.shape}")
        return np.ascontiguousarray(w)

    def _run(self, batch: np.ndarray, weights=None) -> np.ndarray:
        w = self._prompt(len(batch), weights)
        if self.one_frame and len(batch) > 1:   # scales folded into the quantisation take one prompt per run
            return np.concatenate([self.session.run([self.output_name], {"input": batch[i:i + 1], PROMPT_INPUT: w[i:i + 1]})[0]
                                   for i in range(len(batch))])
        return self.session.run([self.output_name], {"input": batch, PROMPT_INPUT: w})[0]

    def infer(self, batch, weights=None) -> np.ndarray:
        """Restore ``batch`` with prompt ``weights``.

        Args:
            batch: (H, W), (N, H, W) or (N, 1, H, W) float32 in [0, 1]; padded and cropped as
                :meth:`Engine.infer` does.
            weights: (K,) or (N, K) float32 prompt weights, K = :attr:`slots` (None: :attr:`weights`,
                set by the caller).

        Returns:
            (N, 1, H, W) float32 restored frames.

        Raises:
            EngineError: ``batch`` has another shape, or ``weights`` is not K per frame.
        """
        padded, hw = self._padded(batch)
        return self._cropped(self._run(padded, weights), padded, hw)


def prompt_mix(embedding, codebook, classes, temperature: float, prompts) -> np.ndarray:
    """The student's prompt weights from one router embedding.

    Softmax of cosine/temperature over the router's classes (the router's own confidence,
    engines/router.py ``classify``), each class's probability put on the prompt slot of the same
    name; classes with no slot are dropped and the rest renormalised (uniform when nothing is left).

    Args:
        embedding: (D,) float router embedding (after any adaptation map).
        codebook: (C, D) class prototypes, one row per name in ``classes``.
        temperature: softmax temperature (> 0).
        prompts: the K prompt slot names.

    Returns:
        (K,) float32 weights summing to 1.
    """
    from ..router import cosine_scores

    logits = cosine_scores(np.asarray(embedding, np.float64).reshape(1, -1), codebook)[0] / float(temperature)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    prompts = list(prompts)
    w = np.zeros(len(prompts), np.float64)
    for cls, p in zip(classes, probs):
        if cls in prompts:
            w[prompts.index(cls)] += p
    total = w.sum()
    return (w / total if total > 0 else np.full(len(w), 1.0 / len(w))).astype(np.float32)
