"""TensorBoard: each job a run (a folder of event files) with its images as image summaries and its
timings and scores as scalars; the sweep's contact sheets in a run of their own, `sweep`.

Written with TensorBoard's own event writer and protobufs (no torch, no TensorFlow): a PNG goes in
as it is on disk. A job's folder keeps a note of what was logged (`lcm-job.json`), so that a resumed
sweep or a later push does not log a job twice; a job logged as failed and since redone is rewritten.
"""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from runner.tracking import jobs as tracked
from runner.tracking import missing_library

NOTE = "lcm-job.json"
SWEEP_RUN = "sweep"


class TensorboardTracker:
    kind = "tensorboard"
    concurrent = True  # one folder per job: workers never share a file

    def __init__(self, uri: Optional[str], experiment: str, timeout: float, out_dir: Path) -> None:
        self.logdir = Path(uri) if uri else Path(out_dir) / "tensorboard"
        try:
            from tensorboard.compat.proto import event_pb2, summary_pb2
            from tensorboard.summary.writer.event_file_writer import EventFileWriter
        except ImportError:
            raise missing_library("tensorboard") from None
        self._event, self._summary, self._writer = event_pb2, summary_pb2, EventFileWriter

    def describe(self) -> str:
        return f"tensorboard in {self.logdir}"

    def start_sweep(self, out_dir: Path, experiment: Optional[str]) -> None:
        self.logdir.mkdir(parents=True, exist_ok=True)

    def log_job(self, job: tracked.TrackedJob) -> bool:
        folder = self.logdir / job.name
        note = {"id": job.identity, "status": "ok" if job.succeeded else job.status, "error": job.error}
        try:
            if json.loads((folder / NOTE).read_text(encoding="utf-8")) == note:
                return False
        except (OSError, ValueError):
            pass
        if folder.exists():  # an earlier attempt of this job: replaced, not added to
            shutil.rmtree(folder)
        values = [self._scalar(key, value) for key, value in job.metrics.items()]
        values.append(self._scalar("status/ok", 1.0 if job.succeeded else 0.0))
        values += [self._image(f"images/{path.stem}", path) for path in job.images]
        per_image = [(index, [self._scalar(f"{name}/image", value) for name, value in scores.items()])
                     for index, scores in enumerate(job.image_metrics) if scores]
        self._write(folder, [(0, values), *per_image])
        (folder / NOTE).write_text(json.dumps(note), encoding="utf-8")
        return True

    def finish_sweep(self, out_dir: Path, files: List[Path], statuses: Dict[str, int]) -> None:
        sheets = [path for path in files if path.suffix == ".png"]
        folder = self.logdir / SWEEP_RUN
        if folder.exists():  # the report is rebuilt at every end of the sweep: so is its run
            shutil.rmtree(folder)
        values = [self._image(path.stem, path) for path in sheets]
        values += [self._scalar(f"jobs/{status}", n) for status, n in statuses.items()]
        self._write(folder, [(0, values)])

    def close(self) -> None:
        pass

    # -- protobufs ------------------------------------------------------------------------------
    def _scalar(self, tag: str, value: float):
        return self._summary.Summary.Value(tag=tag, simple_value=float(value))

    def _image(self, tag: str, path: Path):
        from PIL import Image

        with Image.open(path) as image:  # reads the header only
            width, height, channels = image.width, image.height, len(image.getbands())
        picture = self._summary.Summary.Image(height=height, width=width, colorspace=channels,
                                              encoded_image_string=path.read_bytes())
        return self._summary.Summary.Value(tag=tag, image=picture)

    def _write(self, folder: Path, events: List[Tuple[int, list]]) -> None:
        """One event per (step, values): step 0 the job's images and scalars, step i image i's scores."""
        folder.mkdir(parents=True, exist_ok=True)
        writer = self._writer(str(folder))
        try:
            for step, values in events:
                writer.add_event(self._event.Event(wall_time=time.time(), step=step,
                                                   summary=self._summary.Summary(value=values)))
        finally:
            writer.close()
