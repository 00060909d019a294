"""Measuring answers: metrics (official SQuAD rules, pure Python) < scoring (rows or files) < the eval run; report (plots)."""
