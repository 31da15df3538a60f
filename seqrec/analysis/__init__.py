"""The sequentiality audit: does a dataset's order carry signal? (see :mod:`seqrec.analysis.audit`)."""

from seqrec.analysis.audit import AUDIT_MODELS, VERDICTS, Audit, AuditOptions, analyze
from seqrec.analysis.rules import count_rules, rules_test
from seqrec.analysis.statistics import dataset_statistics, shuffle_within_users, timestamps_are_positions

__all__ = ["analyze", "Audit", "AuditOptions", "AUDIT_MODELS", "VERDICTS", "count_rules", "rules_test",
           "dataset_statistics", "shuffle_within_users", "timestamps_are_positions"]
