"""Data: sources -> rows {id, title, context, question, answers} -> cleaned, sampled, split -> prompts -> features.

squad_format (the official JSON layout) < loading (files and the hub) < splitting (cleaning,
sampling, the train/test split); prompts < features (tokenised windows).
"""
