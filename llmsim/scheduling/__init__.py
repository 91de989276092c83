"""Batching policies (plain Python; DESIGN §6)."""
from llmsim.scheduling.base import Scheduler, SchedulerOutput
from llmsim.scheduling.policies import (SCHEDULERS, OrcaScheduler, SarathiScheduler,
                                        StaticScheduler, TokenBudgetScheduler, VllmScheduler,
                                        VllmV1Scheduler)
from llmsim.scheduling.predictor import OutputLengthPredictor, sjf_length_key
from llmsim.scheduling.speculative import (SpeculativeMixin, expected_tokens_per_step,
                                           speculative_class)

__all__ = ["Scheduler", "SchedulerOutput", "SCHEDULERS", "StaticScheduler", "OrcaScheduler",
           "VllmScheduler", "VllmV1Scheduler", "SarathiScheduler", "TokenBudgetScheduler",
           "OutputLengthPredictor", "sjf_length_key", "SpeculativeMixin",
           "expected_tokens_per_step", "speculative_class"]
