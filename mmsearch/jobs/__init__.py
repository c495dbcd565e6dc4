"""Background index jobs (:class:`IndexJobs`) and their records in the data directory."""

from mmsearch.jobs.manager import Indexer, IndexJobs
from mmsearch.jobs.records import JobRecords
from mmsearch.types import IndexJobStatus, JobState

__all__ = ["IndexJobStatus", "IndexJobs", "Indexer", "JobRecords", "JobState"]
