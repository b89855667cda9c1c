"""The runner daemon (`stask worker`)."""

from stask.runner.daemon import Runner, RunnerOptions

__all__ = ["Runner", "RunnerOptions"]
