"""The decision pipeline: resolve the principal, admit, build the Cedar request, evaluate, record."""

from pep.pipeline.pipeline import Pipeline, SnapshotSource
from pep.pipeline.request import Listing, Request, Subject

__all__ = ["Listing", "Pipeline", "Request", "SnapshotSource", "Subject"]
