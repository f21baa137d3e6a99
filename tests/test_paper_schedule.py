"""`make paper`'s scheduler: every job starts once the exports it reads are written, the longest chain of
work first, and a failure stops the study."""

from __future__ import annotations

from pathlib import Path

import pytest

from xmod_lab import paper


def name(job: paper.Job) -> str:
    return job.log.stem


class FakeRun:
    """A stand-in for an xmod-train process: at the scheduler's second look it has written its runs (each
    ``run_complete``, unless ``writes`` is false) and ends with ``code``."""

    def __init__(self, job: paper.Job, log: list, code: int = 0, writes: bool = True) -> None:
        self.job, self.log, self.code, self.writes, self.looks, self.killed = job, log, code, writes, 0, False

    def poll(self) -> int | None:
        self.looks += 1
        if self.looks < 2:
            return None
        for run in self.job.runs if self.writes else ():
            run.mkdir(parents=True, exist_ok=True)
            (run / "run_complete").write_text("ok\n")
        self.log.append(("end", name(self.job)))
        return self.code

    @property
    def returncode(self) -> int:
        return self.code

    def kill(self) -> None:
        self.killed = True

    def wait(self) -> int:
        return self.code


def study(tmp: Path) -> list[paper.Job]:
    """One seed: pre-training at K = 8 then 1 in one job, their fine-tuning, a post-hoc job on the K = 8 export;
    and a second, shorter pre-training job."""
    mlm8, mlm1, other = tmp / "mlm" / "k8", tmp / "mlm" / "k1", tmp / "mlm" / "other"
    return [
        paper.Job((tmp / "nli" / "k8", tmp / "nli" / "k1"), ("experiment=paper_nli",), tmp / "nli.log", 70.0,
                  (mlm8, mlm1)),
        paper.Job((mlm8, mlm1), ("experiment=paper_mlm",), tmp / "mlm.log", 360.0),
        paper.Job((tmp / "posthoc" / "k8",), ("experiment=paper_posthoc_modular",), tmp / "posthoc.log", 40.0, (mlm8,)),
        paper.Job((other,), ("experiment=paper_mlm",), tmp / "other.log", 100.0),
    ]  # fmt: skip


@pytest.fixture
def events(monkeypatch):
    log: list = []
    monkeypatch.setattr(paper.time, "sleep", lambda s: None)
    monkeypatch.setattr(paper, "_launch", lambda job: log.append(("start", name(job))) or FakeRun(job, log))
    return log


def test_critical_paths_add_the_costliest_chain_that_waits():
    jobs = study(Path("/s"))
    by_log = paper.critical_paths(jobs)
    assert {name(job): by_log[job.log] for job in jobs} == {"mlm": 360.0 + 70.0, "nli": 70.0, "posthoc": 40.0,
                                                            "other": 100.0}  # fmt: skip


@pytest.mark.parametrize("n_jobs", [1, 2, 3])
def test_each_job_starts_after_the_exports_it_reads_longest_chain_first(tmp_path, events, n_jobs):
    jobs = study(tmp_path)
    paper.run_parallel(jobs, n_jobs)
    starts = [n for what, n in events if what == "start"]
    assert sorted(starts) == sorted(map(name, jobs)) and starts[0] == "mlm"  # each once; the longest chain first
    assert events.index(("end", "mlm")) < min(events.index(("start", n)) for n in ("nli", "posthoc"))
    running = 0
    for what, _ in events:
        running += 1 if what == "start" else -1
        assert 0 <= running <= n_jobs
    if n_jobs == 1:
        assert starts == ["mlm", "other", "nli", "posthoc"]


def test_a_job_starts_as_soon_as_its_runs_are_written_even_while_their_job_goes_on(tmp_path, monkeypatch):
    jobs = study(tmp_path)
    started: list[str] = []

    def launch(job):
        started.append(name(job))
        if name(job) == "mlm":  # the K = 8 run has finished; the job goes on with K = 1
            (tmp_path / "mlm" / "k8").mkdir(parents=True)
            (tmp_path / "mlm" / "k8" / "run_complete").write_text("ok\n")
            run = FakeRun(job, [])
            run.looks = -3
            return run
        return FakeRun(job, [])

    monkeypatch.setattr(paper.time, "sleep", lambda s: None)
    monkeypatch.setattr(paper, "_launch", launch)
    paper.run_parallel(jobs[1:3], 2)  # pre-training and the post-hoc job on its K = 8 export
    assert started == ["mlm", "posthoc"]


def test_a_job_that_reads_an_export_nobody_writes_is_refused(tmp_path, events):
    jobs = study(tmp_path)[2:3]  # the post-hoc job without the pre-training, which has not finished
    with pytest.raises(ValueError, match=r"posthoc needs .*mlm/k8, which is neither finished nor among the runs"):
        paper.run_parallel(jobs, 2)
    assert events == []  # refused before anything ran
    (tmp_path / "mlm" / "k8").mkdir(parents=True)
    (tmp_path / "mlm" / "k8" / "run_complete").write_text("ok\n")  # a resumed study: that export exists
    paper.run_parallel(jobs, 2)
    assert events == [("start", "posthoc"), ("end", "posthoc")]


@pytest.mark.parametrize("code, writes", [(1, True), (0, False)])
def test_a_failed_job_stops_the_study_and_the_jobs_beside_it(tmp_path, monkeypatch, code, writes):
    """A non-zero exit, or an exit 0 that left a run unfinished (a multirun that went on past a failure)."""
    runs: list[FakeRun] = []

    def launch(job):
        runs.append(FakeRun(job, [], *((code, writes) if name(job) == "other" else (0, True))))
        runs[-1].looks = -5 if name(job) == "mlm" else 0  # the long job is still going
        return runs[-1]

    monkeypatch.setattr(paper.time, "sleep", lambda s: None)
    monkeypatch.setattr(paper, "_launch", launch)
    (tmp_path / "other.log").write_text("Traceback: the run broke\n")
    unfinished = "none" if writes else rf"\['{tmp_path / 'mlm' / 'other'}'\]"
    with pytest.raises(RuntimeError, match=rf"failed \(exit {code}; unfinished runs: {unfinished}\); log .*other.log:"
                                           r"\nTraceback: the run broke"):  # fmt: skip
        paper.run_parallel(study(tmp_path), 2)
    assert [name(r.job) for r in runs] == ["mlm", "other"] and runs[0].killed and not runs[1].killed
