"""Batching policies (plain Python; DESIGN §6)."""
from llmsim.scheduling.base import Scheduler, SchedulerOutput
from llmsim.scheduling.policies import (SCHEDULERS, OrcaScheduler, SarathiScheduler,
                                        StaticScheduler, VllmScheduler)

__all__ = ["Scheduler", "SchedulerOutput", "SCHEDULERS", "StaticScheduler", "OrcaScheduler",
           "VllmScheduler", "SarathiScheduler"]
